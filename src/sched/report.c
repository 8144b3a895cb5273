/*
 * Reporting a task's outcome: the one place a callback is made, so the one
 * place the exactly-once rule lives.  A task is reported by unlinking it
 * from every index first (detach), so that nothing that names it later, a
 * cancel from inside its callback or a late frame from any backend, can
 * find it again.  Retries are decided here too: a retried task goes back
 * to pending with a new dispatch number, which makes every copy of its old
 * ticket stale.
 */
#include "internal.h"

void invoker__report_release(invoker *inv, invoker__task *t)
{
    bool in_arena = !t->arg && t->arg_len;
    if (in_arena)
        invoker__arena_free(&inv->arena, t->arg_off, t->arg_len);
    invoker__tasks_release(&inv->tasks, t);
    /* Only a freed block or a mapping kept for a callback gives the arena
     * anything to settle: most tasks skip the call. */
    if (inv->depth == 0 && (in_arena || inv->arena.nretired))
        invoker__arena_settle(&inv->arena);
}

static void fill_view(const invoker *inv, const invoker__task *t, invoker_task *v)
{
    v->id = t->id;
    v->tag = t->tag;
    v->arg = invoker__task_arg(inv, t);
    v->arg_len = t->arg_len;
    v->attempts = t->attempts;
    v->worker = t->worker;
    v->run_seconds = t->run_seconds;
    v->cpu_seconds = t->cpu_seconds;
    v->max_rss_kib = t->max_rss_kib;
    v->stderr_tail = t->err_len ? (const char *)t->err_tail : NULL;
    v->stderr_tail_len = t->err_len;
    v->cached = t->cached;
    if (t->cached) {
        /* Another evaluation's outcome: none of this task's own. */
        v->attempts = 0;
        v->worker = -1;
        v->run_seconds = 0;
        v->cpu_seconds = 0;
        v->max_rss_kib = -1;
        v->stderr_tail = NULL;
        v->stderr_tail_len = 0;
    }
}

static void leave_flight(invoker *inv, invoker__task *t)
{
    invoker__list_unlink(&inv->inflight, t);
    if (invoker__task_timed(t))
        inv->inflight_timeouts--;
    if (t->batched) {
        t->batched = false;
        inv->batched_out--;
    }
}

/* Takes t out of every index, so that nothing (a cancel from inside the
 * callback, a late frame) can find it again. */
static void detach(invoker *inv, invoker__task *t)
{
    switch (t->state) {
    case INVOKER__TASK_PENDING:
        invoker__list_unlink(&inv->pending, t);
        break;
    case INVOKER__TASK_INFLIGHT:
        leave_flight(inv, t);
        break;
    case INVOKER__TASK_DONE:
        invoker__list_unlink(&inv->done, t);
        return;   /* already out of the id table */
    case INVOKER__TASK_TWIN:
        invoker__list_unlink(&t->leader->twins, t);
        t->leader = NULL;
        break;
    default:
        break;
    }
    invoker__tasks_remove(&inv->tasks, t);
    t->state = INVOKER__TASK_DONE;
}

/* The tasks that waited for t get its outcome, after t's own callback
 * (which may cancel some of them: those are gone from the list). */
static void serve_twins(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                        const void *data, size_t len);

void invoker__report_result(invoker *inv, invoker__task *t, const void *data, size_t len)
{
    invoker_task v;
    detach(inv, t);
    /* Journaled before the callback: a kill inside it loses nothing. */
    if (inv->cache.merging)
        invoker__cache_record(inv, t, 0, 0, data, len);
    fill_view(inv, t, &v);
    inv->stats.succeeded++;
    inv->stats.cached += t->cached;
    /* A cached outcome ran 0 s here: it would drag the median down. */
    if (inv->cfg.timeout_factor > 0 && !t->cached)
        invoker__adapt_note(inv, invoker__to_ns(t->run_seconds));
    inv->outstanding--;
    inv->depth++;
    inv->cfg.on_result(&v, len ? data : NULL, len, inv->cfg.user);
    inv->depth--;
    inv->calls++;
    if (t->twins.head)
        serve_twins(inv, t, 0, 0, data, len);
    invoker__report_release(inv, t);
}

void invoker__report_error(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    invoker_task v;
    detach(inv, t);
    if (inv->cache.merging)
        invoker__cache_record(inv, t, fail, code, NULL, 0);
    fill_view(inv, t, &v);
    inv->stats.failed++;
    inv->stats.cached += t->cached;
    if (fail == INVOKER_FAIL_TIMEOUT)
        inv->stats.timed_out++;
    else if (fail == INVOKER_FAIL_CRASH || fail == INVOKER_FAIL_EXIT)
        inv->stats.crashed++;
    else if (fail == INVOKER_FAIL_CANCELLED)
        inv->stats.cancelled++;
    inv->outstanding--;
    inv->depth++;
    inv->cfg.on_error(&v, fail, code, inv->cfg.user);
    inv->depth--;
    inv->calls++;
    if (t->twins.head)
        serve_twins(inv, t, fail, code, NULL, 0);
    invoker__report_release(inv, t);
}

static void serve_twins(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                        const void *data, size_t len)
{
    invoker__task *d;
    while ((d = t->twins.head) != NULL) {
        d->cached = true;
        if (fail)
            invoker__report_error(inv, d, fail, code);
        else
            invoker__report_result(inv, d, data, len);
    }
}

/* Decides t's fate now but leaves the callback to the next poll: for calls
 * made outside one (invoker_cancel, a submit that cannot run). */
void invoker__report_later(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    if (t->leads || t->twins.head)   /* its twins run on their own from now */
        invoker__cache_record(inv, t, fail, code, NULL, 0);
    detach(inv, t);
    t->fail = fail;
    t->code = code;
    invoker__list_push_back(&inv->done, t);
    invoker__wake_kick(inv);
}

void invoker__report_deliver(invoker *inv)
{
    invoker__task *t;
    while ((t = inv->done.head) != NULL) {
        if (t->fail == 0)   /* a cached success */
            invoker__report_result(inv, t, t->cached_res, t->cached_len);
        else
            invoker__report_error(inv, t, t->fail, t->code);
    }
}

void invoker__report_requeue(invoker *inv, invoker__task *t)
{
    if (t->state == INVOKER__TASK_INFLIGHT)
        leave_flight(inv, t);
    t->gen++;           /* any copy of the old ticket is now stale */
    t->start_ns = 0;
    if (t->err_tail || t->err_marked)
        invoker__err_forget(t);   /* the next attempt writes its own */
    t->state = INVOKER__TASK_PENDING;
    invoker__list_push_front(&inv->pending, t);
}

/* A worker died, timed out or failed under t: retry while retries last. */
void invoker__report_fail_or_retry(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    bool retryable = fail == INVOKER_FAIL_TIMEOUT || fail == INVOKER_FAIL_CRASH ||
                     fail == INVOKER_FAIL_EXIT || fail == INVOKER_FAIL_LOST;
    if (retryable && t->attempts <= inv->cfg.retries && !inv->destroying) {
        inv->stats.retried++;
        invoker__report_requeue(inv, t);
        return;
    }
    invoker__report_error(inv, t, fail, code);
}

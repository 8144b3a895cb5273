/*
 * The parent's side of the loop: stock the queue, read frames, call the
 * callbacks, enforce deadlines, notice deaths, replace workers.
 *
 * The task record is the single authority on a task's fate: whatever a
 * worker sends or leaves behind is checked against it, a task is reported
 * by unlinking it from every index first, and anything that names a task
 * no longer in flight (a late result, a dead worker's stale ticket) is
 * dropped.  That is how every task gets exactly one callback.
 */
#include "internal.h"
#include "sched/invoker_sched.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RX_CAP          (64u << 10)
/* A big payload's buffer is kept for the worker's next one up to this
 * size: freed and allocated anew, every payload is read into pages the
 * kernel must fault in and zero (1 MiB results: 256 faults each). */
#define RX_KEEP_MAX     ((size_t)4 << 20)
#define FAIL_WINDOW_NS  (5ull * 1000000000ull)   /* start-up failures counted over */
#define COOLDOWN_NS     (1000000000ull)          /* a tripped guard rests this long */
#define BACKOFF_MAX_NS  (1000000000ull)
#define STALL_AUDIT_NS  (1000000000ull)          /* idle time before an orphan sweep */
#define SWEEP_AGAIN_NS  (10000000ull)
#define EOF_GRACE_NS    (100000000ull)   /* a worker whose pipe closed gets this long to exit */
#define SPARE_AFTER_ADOPT_NS (1000000ull)  /* a slot's next spare, after it took one */
#define GATHER_RESULTS  8u                /* results one gather aims to take */
#define GATHER_MIN_NS   (200000ull)
#define GATHER_PIPE_BYTES (32u << 10)     /* half a result pipe at its smallest */
/* A worker's stderr read per event: a flood gets its share of each pass,
 * like results (read_worker's budget), and deadlines come between. */
#define ERR_PASS_BYTES  (64u << 10)
#define ERR_DRAIN_BYTES INVOKER__ERR_DRAIN

static uint64_t to_ns(double seconds)
{
    double ns = seconds * 1e9;
    return ns >= 1.8e19 ? UINT64_MAX / 2 : (uint64_t)ns;
}

/* ---- reporting ---------------------------------------------------------- */

void invoker__dispatch_release(invoker *inv, invoker__task *t)
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

/* Whether t may have a deadline in flight: the same answer all its life. */
static bool timed(const invoker__task *t)
{
    return t->timeout > 0 || t->adaptive;
}

static void leave_flight(invoker *inv, invoker__task *t)
{
    invoker__list_unlink(&inv->inflight, t);
    if (timed(t))
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

static void call_error(invoker *inv, invoker__task *t, invoker_failure fail, int code);

/* The tasks that waited for t get its outcome, after t's own callback
 * (which may cancel some of them: those are gone from the list). */
static void serve_twins(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                        const void *data, size_t len);

static void call_result(invoker *inv, invoker__task *t, const void *data, size_t len)
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
        invoker__adapt_note(inv, (uint64_t)(t->run_seconds * 1e9));
    inv->outstanding--;
    inv->depth++;
    inv->cfg.on_result(&v, len ? data : NULL, len, inv->cfg.user);
    inv->depth--;
    inv->calls++;
    if (t->twins.head)
        serve_twins(inv, t, 0, 0, data, len);
    invoker__dispatch_release(inv, t);
}

static void call_error(invoker *inv, invoker__task *t, invoker_failure fail, int code)
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
    invoker__dispatch_release(inv, t);
}

static void serve_twins(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                        const void *data, size_t len)
{
    invoker__task *d;
    while ((d = t->twins.head) != NULL) {
        d->cached = true;
        if (fail)
            call_error(inv, d, fail, code);
        else
            call_result(inv, d, data, len);
    }
}

/* Decides t's fate now but leaves the callback to the next poll: for calls
 * made outside one (invoker_cancel, a submit that cannot run). */
void invoker__dispatch_report(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    if (t->leads)   /* its twins run on their own from now */
        invoker__cache_record(inv, t, fail, code, NULL, 0);
    detach(inv, t);
    t->fail = fail;
    t->code = code;
    invoker__list_push_back(&inv->done, t);
    invoker__dispatch_kick(inv);
}

void invoker__dispatch_kick(invoker *inv)
{
    if (!inv->kicked) {
        uint64_t one = 1;
        inv->kicked = invoker__fd_write(inv->kickfd, &one, sizeof one) == (ssize_t)sizeof one;
    }
}

static void deliver_done(invoker *inv)
{
    invoker__task *t;
    while ((t = inv->done.head) != NULL) {
        if (t->fail == 0)   /* a cached success */
            call_result(inv, t, t->cached_res, t->cached_len);
        else
            call_error(inv, t, t->fail, t->code);
    }
}

static void requeue(invoker *inv, invoker__task *t)
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
static void fail_or_retry(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    bool retryable = fail == INVOKER_FAIL_TIMEOUT || fail == INVOKER_FAIL_CRASH ||
                     fail == INVOKER_FAIL_EXIT || fail == INVOKER_FAIL_LOST;
    if (retryable && t->attempts <= inv->cfg.retries && !inv->destroying) {
        inv->stats.retried++;
        requeue(inv, t);
        return;
    }
    call_error(inv, t, fail, code);
}

/* t starts (or started) in process record k. */
static void note_start(const invoker *inv, invoker__task *t, unsigned k, uint64_t start_ns)
{
    if (t->counted_gen != t->gen || t->attempts == 0) {
        t->attempts++;
        t->counted_gen = t->gen;
    }
    t->worker = (int)invoker__slot_number(inv, k);
    t->start_ns = start_ns;
}

/* The in-flight task with this id and dispatch, or NULL: the one check
 * every word from a worker goes through before it may touch a task. */
static invoker__task *current(invoker *inv, uint64_t id, uint32_t gen)
{
    invoker__task *t = invoker__tasks_find(&inv->tasks, id);
    if (!t || t->state != INVOKER__TASK_INFLIGHT || t->gen != gen)
        return NULL;
    return t;
}

/* ---- the queue ----------------------------------------------------------- */

/* How many tickets the next packet may carry.  Batching saves a write and
 * a read per task, but binds the batch to one worker: worth it only for
 * short tasks with a backlog deep enough to keep every worker fed.  The
 * backlog counts what waits in the queue as well as what waits here: a
 * window topped up from callbacks keeps the queue full and little pending. */
static unsigned batch_limit(const invoker *inv)
{
    if (inv->avg_run_ns == 0 || inv->avg_run_ns > INVOKER__BATCH_RUN_NS)
        return 1;
    size_t backlog = inv->pending.count + inv->inflight.count;
    size_t per_worker = backlog / (2 * (size_t)inv->nworkers);
    if (per_worker < 2)
        return 1;
    return per_worker > INVOKER__BATCH_MAX ? INVOKER__BATCH_MAX : (unsigned)per_worker;
}

static void dispatched(invoker *inv, invoker__task *t, uint64_t end)
{
    invoker__list_unlink(&inv->pending, t);
    t->state = INVOKER__TASK_INFLIGHT;
    t->start_ns = 0;
    t->suspect = 0;
    t->queue_end = end;
    invoker__list_push_back(&inv->inflight, t);
    if (timed(t)) {
        inv->inflight_timeouts++;
        /* It may start at any instant from now on: make sure the
         * descriptor wakes an event loop by its earliest deadline (an
         * adaptive one's as it would be now: it is fixed once seen). */
        double timeout = t->timeout;
        if (t->adaptive) {
            t->run_timeout = 0;
            timeout = invoker__adapt_timeout(inv, false);
        }
        if (timeout > 0)
            invoker__dispatch_arm_timer(inv, invoker__now_ns() + to_ns(timeout));
    }
}

/* When to look next at results workers hold: on a grid, so that the
 * timer is re-armed once a period, not once a pass. */
static uint64_t held_look_at(uint64_t now)
{
    return (now / INVOKER__HOLD_WAKE_NS + 1) * INVOKER__HOLD_WAKE_NS;
}

int invoker__dispatch_refill(invoker *inv)
{
    static const unsigned char zeros[16];
    invoker__ticket tks[INVOKER__BATCH_MAX];
    struct iovec iov[3 * INVOKER__BATCH_MAX];

    bool batched = false;
    while (inv->pending.head && !inv->queue_full && inv->live > 0) {
        unsigned limit = batch_limit(inv), count = 0, niov = 0;
        size_t bytes = 0;
        for (invoker__task *t = inv->pending.head; t && count < limit; t = t->next) {
            bool big = t->arg_len > INVOKER__INLINE_MAX;
            /* A task once lost with its worker's slot runs alone: batched
             * again, the packet-mates of a task that scribbles its slot
             * would be lost with it again, and failed as the culprit. */
            bool alone = big || t->orphaned;
            size_t inline_len = big ? 0 : t->arg_len;
            size_t size = INVOKER__TICKET_HDR + ((inline_len + 15u) & ~(size_t)15u);
            if (count > 0 && (alone || bytes + size > INVOKER__PACKET))
                break;
            invoker__ticket *tk = &tks[count];
            memset(tk, 0, sizeof *tk);
            tk->id = t->id;
            tk->gen = t->gen;
            tk->arg_len = t->arg_len;
            /* The attempt it will be, if it starts: a requeue that never
             * started is no attempt, so a later dispatch may repeat it. */
            unsigned attempt = t->attempts < INVOKER__TICKET_ATTEMPT_MAX ? t->attempts + 1 : 0;
            tk->flags = (big ? INVOKER__TICKET_BIG : 0) |
                        (uint32_t)attempt << INVOKER__TICKET_ATTEMPT_SHIFT;
            tk->arg_off = big ? t->arg_off : 0;
            invoker__proto_ticket_seal(tk, inv->key);   /* resealed below for the first */
            iov[niov++] = (struct iovec){ tk, sizeof *tk };
            if (inline_len) {
                iov[niov++] = (struct iovec){ t->arg, inline_len };
                if (size - INVOKER__TICKET_HDR > inline_len)
                    iov[niov++] = (struct iovec){ (void *)zeros, size - INVOKER__TICKET_HDR - inline_len };
            }
            bytes += size;
            count++;
            if (alone)
                break;
        }
        tks[0].batch = count;
        invoker__proto_ticket_seal(&tks[0], inv->key);
        /* Packet mode: one writev is one packet, never merged or split. */
        ssize_t n;
        do
            n = writev(inv->queue_wr, iov, (int)niov);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                inv->queue_full = true;
                break;
            }
            return -errno;
        }
        inv->queue_written += (uint64_t)n;
        batched |= count > 1;
        for (unsigned i = 0; i < count; i++) {
            inv->pending.head->batched = count > 1;
            inv->batched_out += count > 1;
            dispatched(inv, inv->pending.head, inv->queue_written);
        }
    }
    if (batched) {
        /* Its results may be held: make sure someone looks (see
         * look_at_held), even if no other event ever wakes the loop. */
        invoker__dispatch_arm_timer(inv, held_look_at(invoker__now_ns()));
    }
    return 0;
}

void invoker__dispatch_arm_timer(invoker *inv, uint64_t at_ns)
{
    if (at_ns >= inv->timer_armed_ns && inv->timer_armed_ns != 0)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (at_ns == 0)
        at_ns = 1;
    its.it_value.tv_sec = (time_t)(at_ns / 1000000000ull);
    its.it_value.tv_nsec = (long)(at_ns % 1000000000ull);
    if (timerfd_settime(inv->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        inv->timer_armed_ns = at_ns;
}

static void disarm_timer(invoker *inv)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (inv->timer_armed_ns && timerfd_settime(inv->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        inv->timer_armed_ns = 0;
}

/* ---- frames from a worker ------------------------------------------------- */

/* A frame of worker k says t ran, for f->run_ns. */
static void note_ran(const invoker *inv, invoker__task *t, unsigned k, const invoker__frame *f)
{
    note_start(inv, t, k, t->start_ns);
    t->run_seconds = (double)f->run_ns / 1e9;
    t->cpu_seconds = (double)f->cpu_ns / 1e9;
    t->max_rss_kib = (long)f->max_rss_kib;
}

/* What a worker still running (about to be killed) spent on t so far. */
static void note_usage_alive(const invoker *inv, invoker__task *t, unsigned k)
{
    double cpu;
    long rss;
    invoker__worker_usage(inv, k, &cpu, &rss);
    t->cpu_seconds = cpu >= 0 ? cpu : 0;
    t->max_rss_kib = rss;
}

/* The outcome a frame of worker k reports for t. */
static void deliver(invoker *inv, unsigned k, invoker__task *t, const invoker__frame *f,
                    const void *payload)
{
    note_ran(inv, t, k, f);
    if (inv->workers[k].err)
        invoker__err_claim(inv, k, t);   /* unless its mark was read */
    inv->avg_run_ns = inv->avg_run_ns ? inv->avg_run_ns - inv->avg_run_ns / 8 + f->run_ns / 8
                                      : f->run_ns + 1;
    inv->avg_result_bytes = inv->avg_result_bytes - inv->avg_result_bytes / 8 + f->len / 8;
    switch (f->kind & ~INVOKER__FRAME_HELD) {
    case INVOKER__FRAME_RESULT:
        call_result(inv, t, payload, (size_t)f->len);
        break;
    case INVOKER__FRAME_OBJECTIVE:
        call_error(inv, t, INVOKER_FAIL_OBJECTIVE, f->code);
        break;
    default: /* INVOKER__FRAME_TOO_LARGE */
        call_error(inv, t, INVOKER_FAIL_TOO_LARGE, 0);
        break;
    }
}

static void handle_frame(invoker *inv, unsigned k, const invoker__frame *f, const void *payload)
{
    invoker__worker *w = &inv->workers[k];
    if (f->kind == INVOKER__FRAME_INIT_FAILED) {
        w->init_code = f->code ? f->code : -1;
        return;
    }
    w->took_task = true;
    invoker__task *t = current(inv, f->id, f->gen);
    if (w->garbage) {
        /* The bytes before this frame were written while its task ran: that
         * task fails, the worker goes, and its other tasks are innocent.
         * Before a held frame they were written by one of the tasks sent
         * with it, which one is not known: the worker goes, and every one
         * of those tasks, intact, is delivered. */
        w->garbage = false;
        w->blame = INVOKER__BLAME_NONE;
        invoker__worker_kill(inv, k, INVOKER_FAIL_PROTOCOL);
        if (t && (f->kind & INVOKER__FRAME_HELD)) {
            deliver(inv, k, t, f, payload);
        } else if (t) {
            note_ran(inv, t, k, f);
            call_error(inv, t, INVOKER_FAIL_PROTOCOL, 0);
        }
        return;
    }
    /* A skip only wakes us (the queue moved): its task was cancelled, and
     * one still in flight is found by the ticket accounting if lost. */
    if (!t || f->kind == INVOKER__FRAME_SKIPPED)
        return;   /* cancelled or timed out meanwhile: its callback is made */
    if (f->kind == INVOKER__FRAME_PROTOCOL) {   /* it found its slot scribbled */
        invoker__worker_kill(inv, k, INVOKER_FAIL_PROTOCOL);   /* no longer one of the pool */
        w->blame = INVOKER__BLAME_NONE;
        note_ran(inv, t, k, f);
        call_error(inv, t, INVOKER_FAIL_PROTOCOL, 0);
        return;
    }
    deliver(inv, k, t, f, payload);
}

/* The frames worker k holds and has not sent (see child_loop): after its
 * death, or while it runs when they have waited too long.  A frame is
 * delivered only when its hash holds, so a copy torn by the worker
 * writing meanwhile, or bytes an objective scribbled, are never taken for
 * a result; and one that the pipe brings too (before, or later) finds its
 * task reported and is dropped, like any late frame. */
static void deliver_held(invoker *inv, unsigned k)
{
    const invoker__slot *slot = invoker__table_slot(&inv->table, k);
    uint64_t held = atomic_load(&slot->held);
    if (held > INVOKER__HELD_MAX)
        return;   /* scribbled: its tasks are found in its tickets instead */
    _Alignas(16) unsigned char copy[INVOKER__HELD_MAX];
    memcpy(copy, slot->held_frames, (size_t)held);
    size_t off = 0;
    while (held - off >= INVOKER__FRAME_HDR + INVOKER__HELD_TRAILER) {
        invoker__frame f;
        memcpy(&f, copy + off, sizeof f);
        if (invoker__proto_frame_check(&f, inv->key, inv->cfg.max_result_bytes) != 0 ||
            f.kind == INVOKER__FRAME_PROTOCOL || f.kind == INVOKER__FRAME_INIT_FAILED ||
            f.kind == INVOKER__FRAME_SKIPPED)   /* only outcomes are held */
            return;
        size_t size = invoker__proto_frame_size(f.len);
        if (size > held - off - INVOKER__HELD_TRAILER)
            return;
        uint64_t hash;
        memcpy(&hash, copy + off + size, sizeof hash);
        if (hash != invoker__proto_held_hash(copy + off, size, inv->key))
            return;   /* this and what follows run again: none is trusted */
        invoker__task *t = current(inv, f.id, f.gen);
        if (t) {
            inv->held_delivered++;
            deliver(inv, k, t, &f, copy + off + INVOKER__FRAME_HDR);
        }
        off += size + INVOKER__HELD_TRAILER;
    }
}

/* While tasks sent in packets of several are in flight, look every HOLD_WAKE_NS
 * for results a worker has held that long: behind a task much longer than
 * its packet-mates they would wait for it.  Returns when to look next. */
static uint64_t look_at_held(invoker *inv, uint64_t now)
{
    if (!inv->batched_out)
        return UINT64_MAX;
    for (unsigned k = 0; k < inv->nrecords; k++) {
        if (inv->workers[k].state != INVOKER__WORKER_LIVE)
            continue;
        const invoker__slot *slot = invoker__table_slot(&inv->table, k);
        uint64_t since = atomic_load(&slot->held_since);
        if (atomic_load(&slot->held) && since <= now && now - since >= INVOKER__HOLD_WAKE_NS) {
            (void)invoker__err_read(inv, k, ERR_DRAIN_BYTES);   /* their marks */
            deliver_held(inv, k);
        }
    }
    return held_look_at(now);
}

#define GARBAGE_MAX (1u << 20)   /* bytes of garbage before a flood is declared */

static void protocol_violation(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    w->rx.len = 0;
    free(w->rx.big);
    w->rx.big = NULL;
    invoker__worker_kill(inv, k, INVOKER_FAIL_PROTOCOL);
}

/* Bytes at off are not a frame.  Rather than drop the whole buffer (and
 * with it results of innocent tasks already behind the garbage), find the
 * next valid header: a random match of magic and check word is 2^-64. */
static size_t resync(invoker *inv, unsigned k, size_t off)
{
    invoker__worker *w = &inv->workers[k];
    invoker__rx *rx = &w->rx;
    size_t at = off + 1;
    for (; rx->len - at >= INVOKER__FRAME_HDR; at++) {
        invoker__frame f;
        memcpy(&f, rx->buf + at, sizeof f);
        if (invoker__proto_frame_check(&f, inv->key, inv->cfg.max_result_bytes) == 0)
            break;
    }
    if (rx->len - at < INVOKER__FRAME_HDR && rx->len - off >= INVOKER__FRAME_HDR)
        at = rx->len - (INVOKER__FRAME_HDR - 1);   /* keep a possible partial header */
    w->garbage = true;
    w->garbage_bytes += at - off;
    return at;
}

/* With a journal: the outcomes of the whole frames at the head of the
 * buffer are written in one go before the first of their callbacks, not
 * one write each.  Up to the first bytes that are not a valid frame: what
 * follows them may yet fail its task (see handle_frame), and is journaled
 * one by one, after the verdict. */
static void journal_ahead(invoker *inv, unsigned k)
{
    const invoker__rx *rx = &inv->workers[k].rx;
    invoker__task *staged[INVOKER__JOURNAL_STAGE];
    unsigned n = 0;
    size_t off = 0;
    while (rx->len - off >= INVOKER__FRAME_HDR) {
        if (n == INVOKER__JOURNAL_STAGE) {
            invoker__cache_flush(inv, staged, n);
            n = 0;
        }
        invoker__frame f;
        memcpy(&f, rx->buf + off, sizeof f);
        size_t size;
        if (invoker__proto_frame_check(&f, inv->key, inv->cfg.max_result_bytes) != 0 ||
            (size = invoker__proto_frame_size(f.len)) > rx->len - off)
            break;
        uint32_t kind = f.kind & ~INVOKER__FRAME_HELD;
        invoker__task *t = current(inv, f.id, f.gen);
        if (t && (kind == INVOKER__FRAME_RESULT || kind == INVOKER__FRAME_OBJECTIVE) &&
            invoker__cache_stage(inv, t, kind == INVOKER__FRAME_RESULT ? 0 : INVOKER_FAIL_OBJECTIVE,
                                 f.code, rx->buf + off + INVOKER__FRAME_HDR, (size_t)f.len))
            staged[n++] = t;
        off += size;
    }
    if (n)
        invoker__cache_flush(inv, staged, n);
}

/* Parses whole frames out of the worker's buffer.  Returns false when the
 * worker was found breaking the protocol. */
static bool parse_frames(invoker *inv, unsigned k)
{
    invoker__rx *rx = &inv->workers[k].rx;
    size_t off = 0;
    if (inv->journal.fd >= 0 && !inv->journal.error && !inv->workers[k].garbage)
        journal_ahead(inv, k);
    while (rx->len - off >= INVOKER__FRAME_HDR) {
        invoker__frame f;
        memcpy(&f, rx->buf + off, sizeof f);
        if (invoker__proto_frame_check(&f, inv->key, inv->cfg.max_result_bytes) != 0) {
            off = resync(inv, k, off);
            if (inv->workers[k].garbage_bytes > GARBAGE_MAX) {
                protocol_violation(inv, k);   /* a flood: its running task pays */
                return false;
            }
            /* Realign, so that payloads stay 16-byte aligned. */
            memmove(rx->buf, rx->buf + off, rx->len - off);
            rx->len -= off;
            off = 0;
            continue;
        }
        size_t size = invoker__proto_frame_size(f.len);
        if (size <= rx->len - off) {
            off += size;
            /* The callback may kill this worker (a cancel), never free rx. */
            handle_frame(inv, k, &f, rx->buf + off - size + INVOKER__FRAME_HDR);
            continue;
        }
        if (size <= rx->cap)
            break;   /* fits once the rest arrives */
        /* Larger than the buffer: read the payload straight into its own. */
        size_t padded = size - INVOKER__FRAME_HDR;
        if (rx->kept && rx->kept_cap >= padded) {
            rx->big = rx->kept, rx->big_cap = rx->kept_cap;
            rx->kept = NULL;
        } else if ((rx->big = malloc(padded)) != NULL) {
            rx->big_cap = padded;
        } else {
            protocol_violation(inv, k);   /* cannot hold it: fail only this worker's task */
            return false;
        }
        rx->big_hdr = f;
        rx->big_have = rx->len - off - INVOKER__FRAME_HDR;
        memcpy(rx->big, rx->buf + off + INVOKER__FRAME_HDR, rx->big_have);
        off = rx->len;
    }
    if (off) {
        memmove(rx->buf, rx->buf + off, rx->len - off);
        rx->len -= off;
    }
    return true;
}

/* Reads what the worker has written, up to a budget so one flooding worker
 * cannot starve the others.  Returns false at end of file. */
static bool read_worker(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    invoker__rx *rx = &w->rx;
    /* Its stderr first: the marks of the tasks whose frames follow. */
    if (w->err)
        (void)invoker__err_read(inv, k, ERR_DRAIN_BYTES);
    if (!rx->buf && !(rx->buf = malloc(RX_CAP)))
        return true;   /* try again on the next event */
    rx->cap = RX_CAP;
    for (int budget = 64; budget > 0 && w->result_rd >= 0; budget--) {
        ssize_t n;
        if (rx->big) {
            size_t padded = invoker__proto_frame_size(rx->big_hdr.len) - INVOKER__FRAME_HDR;
            n = invoker__fd_read(w->result_rd, rx->big + rx->big_have, padded - rx->big_have);
            if (n > 0 && (rx->big_have += (size_t)n) == padded) {
                unsigned char *big = rx->big;
                invoker__frame f = rx->big_hdr;
                rx->big = NULL;
                handle_frame(inv, k, &f, big);
                if (rx->big_cap <= RX_KEEP_MAX) {
                    free(rx->kept);   /* NULL, or too small for this one */
                    rx->kept = big, rx->kept_cap = rx->big_cap;
                } else {
                    free(big);
                }
            }
        } else {
            size_t room = rx->cap - rx->len;
            n = invoker__fd_read(w->result_rd, rx->buf + rx->len, room);
            if (n > 0) {
                rx->len += (size_t)n;
                if (!parse_frames(inv, k))
                    return true;
                /* A short read emptied the pipe: epoll (level-triggered)
                 * says when there is more, so spare the EAGAIN read. */
                if ((size_t)n < room)
                    return true;
            }
        }
        if (n == 0)
            return false;
        if (n < 0)
            return true;   /* EAGAIN: all read */
    }
    return true;
}

/* ---- deaths --------------------------------------------------------------- */

/* The wait before the next try after the nth failure in a row. */
static uint64_t backoff_ns(unsigned nth)
{
    uint64_t backoff = 1000000ull << (nth < 11 ? nth - 1 : 10);
    return backoff < BACKOFF_MAX_NS ? backoff : BACKOFF_MAX_NS;
}

static void startup_failed(invoker *inv, int cause)
{
    uint64_t now = invoker__now_ns();
    inv->fail_times[inv->fail_count++ % 16] = now;
    inv->last_spawn_error = cause;
    unsigned recent = 0;
    unsigned n = inv->fail_count < 16 ? inv->fail_count : 16;
    for (unsigned i = 0; i < n; i++)
        if (now - inv->fail_times[i] <= FAIL_WINDOW_NS)
            recent++;
    if (recent >= inv->fail_limit && !inv->spawn_tripped) {
        /* Stop trying for a while: a crash loop costs nothing meanwhile,
         * and a shortage that passes (EAGAIN from fork) heals. */
        inv->spawn_tripped = true;
        inv->untrip_at = now + COOLDOWN_NS;
    }
}

/* With no worker left and none to come, nothing queued can ever run. */
static void fail_unrunnable(invoker *inv)
{
    if (!inv->spawn_tripped || inv->live > 0)
        return;
    invoker__task *t;
    while ((t = inv->inflight.head) != NULL)
        call_error(inv, t, INVOKER_FAIL_NO_WORKER, inv->last_spawn_error);
    while ((t = inv->pending.head) != NULL)
        call_error(inv, t, INVOKER_FAIL_NO_WORKER, inv->last_spawn_error);
}

/* Reaps worker k, which is gone or going: one that is somehow still alive
 * is killed first.  Returns its wait status. */
static int reap(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    pid_t r;
    do
        r = wait4(w->pid, &status, WNOHANG, &ru);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        invoker__worker_kill(inv, k, w->kill_reason ? w->kill_reason : INVOKER_FAIL_PROTOCOL);
        (void)kill(-w->pid, SIGKILL);
        do
            r = wait4(w->pid, &status, 0, &ru);
        while (r < 0 && errno == EINTR);
    } else {
        (void)kill(-w->pid, SIGKILL);   /* its children: the group lives on while they do */
    }
    /* Its CPU, its children's included, over its life; its peak RSS since
     * its last task began (the worker resets it then, see reset_peak) or
     * of a child it reaped. */
    w->reaped_cpu_ns = (uint64_t)ru.ru_utime.tv_sec * 1000000000ull +
                       (uint64_t)ru.ru_utime.tv_usec * 1000ull +
                       (uint64_t)ru.ru_stime.tv_sec * 1000000000ull +
                       (uint64_t)ru.ru_stime.tv_usec * 1000ull;
    w->reaped_rss_kib = r == w->pid ? ru.ru_maxrss : -1;
    if (r != w->pid)
        status = SIGKILL;   /* someone else reaped it: all we know is that it is gone */
    return status;
}

static void classify(invoker *inv, int status, invoker_failure *fail, int *code)
{
    if (WIFSIGNALED(status)) {
        *code = WTERMSIG(status);
        *fail = (*code == SIGXCPU && inv->cfg.cpu_limit > 0) ? INVOKER_FAIL_CPU
                                                              : INVOKER_FAIL_CRASH;
    } else {
        *code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
        *fail = *code == INVOKER__EXIT_PROTOCOL ? INVOKER_FAIL_PROTOCOL : INVOKER_FAIL_EXIT;
    }
    if (inv->cfg.memory_limit && *fail == INVOKER_FAIL_CRASH &&
        (*code == SIGSEGV || *code == SIGABRT || *code == SIGBUS))
        *fail = INVOKER_FAIL_MEMORY;
}

static void worker_gone(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    if (w->state == INVOKER__WORKER_EMPTY)
        return;
    if (w->err)   /* its last words, even when its result pipe closed long ago */
        (void)invoker__err_read(inv, k, ERR_DRAIN_BYTES);
    if (w->result_rd >= 0)
        (void)read_worker(inv, k);   /* what it finished before is delivered */
    bool spare = w->go >= 0;   /* never let go: it took no task, failed no start-up */
    int cpu = spare || inv->destroying ? -1 : invoker__worker_last_cpu(inv, k);
    int status = reap(inv, k);
    /* Reaped: its pid may be anyone's now, so no callback below may have
     * it killed (a cancel of the task it ran). */
    w->state = INVOKER__WORKER_DYING;
    uint64_t now = invoker__now_ns();
    deliver_held(inv, k);

    /* Post-mortem: the slot can no longer change.  Of the tickets in the
     * packet it took, the one named running is its casualty; the others
     * still in flight go back to the queue: those after it never started,
     * and those before it (run in order) ran, but their held results were
     * spoiled, so they run again, the attempt counted. */
    invoker__slot *slot = invoker__table_slot(&inv->table, k);
    uint64_t running = invoker__proto_running_id(atomic_load(&slot->running), inv->key);
    uint64_t start = atomic_load(&slot->start_ns);
    invoker__ticket tk;
    size_t off;
    unsigned i = 0, running_at = 0;   /* its place; 0 also when it is not known */
    for (unsigned j = 0; running && invoker__proto_packet_ticket(slot->ticket, INVOKER__PACKET, j,
                                                                 inv->key, inv->cfg.max_arg_bytes,
                                                                 &tk, &off); j++)
        if (tk.id == running) {
            running_at = j;
            break;
        }
    for (; invoker__proto_packet_ticket(slot->ticket, INVOKER__PACKET, i, inv->key,
                                        inv->cfg.max_arg_bytes, &tk, &off); i++) {
        w->took_task = true;
        /* A program's work directory that its dead worker could not
         * remove; the group is gone (reap). */
        if (running == tk.id && inv->cfg.objective == invoker_command_objective)
            invoker__command_cleanup(inv, tk.id, tk.flags >> INVOKER__TICKET_ATTEMPT_SHIFT);
        invoker__task *t = current(inv, tk.id, tk.gen);
        if (!t)
            continue;
        /* Killed for a timeout or a cancel, it was reported then: a task
         * it took between our verdict and its death is no casualty of
         * ours, unless that task ended the worker before our SIGKILL did. */
        bool reported = w->kill_reason == INVOKER_FAIL_TIMEOUT ||
                        w->kill_reason == INVOKER_FAIL_CANCELLED;
        bool own_end = reported && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        bool casualty = w->kill_reason == INVOKER_FAIL_PROTOCOL
                            ? (w->blame == INVOKER__BLAME_FIRST ||
                               (w->blame == INVOKER__BLAME_RUNNING && running == tk.id))
                            : running == tk.id && (!reported || own_end);
        if (w->blame == INVOKER__BLAME_FIRST)
            w->blame = INVOKER__BLAME_NONE;   /* only the first one pays */
        if (casualty && (!start || start > now))
            start = now;
        if (casualty) {
            note_start(inv, t, k, start);
            t->run_seconds = (double)(now - start) / 1e9;
            if (w->err)
                invoker__err_claim(inv, k, t);
            uint64_t cpu0 = atomic_load(&slot->cpu_start_ns);
            t->cpu_seconds = w->reaped_cpu_ns > cpu0 ? (double)(w->reaped_cpu_ns - cpu0) / 1e9 : 0;
            t->max_rss_kib = w->reaped_rss_kib;
            invoker_failure fail;
            int code;
            classify(inv, status, &fail, &code);
            if (w->kill_reason && !own_end)   /* ours: protocol or shutdown
                                                 (timeouts and cancels were
                                                 reported when we killed) */
                fail = w->kill_reason, code = 0;
            fail_or_retry(inv, t, fail, code);
        } else {
            if (i < running_at)
                note_start(inv, t, k, now);
            requeue(inv, t);   /* not its fault */
        }
    }
    /* A scribbled slot, or results lost with a worker that broke the
     * protocol: find its tasks by accounting. */
    if ((i == 0 && slot->ticket[0] | slot->ticket[1] | slot->ticket[2] | slot->ticket[3]) ||
        w->kill_reason == INVOKER_FAIL_PROTOCOL)
        inv->sweep_at = now;

    bool startup = !spare && !w->took_task && !w->kill_reason;
    int cause = w->init_code;
    if (startup && !cause) {
        invoker_failure f;
        classify(inv, status, &f, &cause);
        cause = f == INVOKER_FAIL_EXIT ? cause : -cause;  /* a signal as -signo */
    }
    invoker__worker_close(inv, k);
    invoker__seat *seat = &inv->seats[invoker__slot_number(inv, k)];
    if (spare) {
        /* Lost before it was needed: killed by someone, or it could not
         * set itself up.  The slot's next spare waits a while. */
        if (!w->kill_reason)
            seat->spare_at = now + backoff_ns(++seat->spare_streak);
        return;
    }
    inv->live--;
    seat->free_cpu = cpu;
    if (startup) {
        seat->respawn_at = now + backoff_ns(++seat->fail_streak);
        startup_failed(inv, cause);
    } else {
        seat->fail_streak = 0;
        seat->respawn_at = now;
        if (!inv->destroying && inv->cfg.spares == INVOKER_SPARES_AUTO)
            inv->want_spares = true;   /* workers die here: keep the next one ready */
    }
    inv->queue_full = false;
}

static void on_result_eof(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    /* The pidfd (or, without one, service_time looking every millisecond)
     * tells when it is gone; stop this descriptor's endless hang-up events
     * meanwhile.  A worker exiting is gone within microseconds; one still
     * alive after EOF_GRACE_NS closed its pipe itself and is killed from
     * service_time, without the parent waiting for it. */
    invoker__unwatch(inv, w->result_rd);
    invoker__fd_close(&w->result_rd);
    w->eof_at = invoker__now_ns();
}

/* ---- time: deadlines, respawns, audits ------------------------------------ */

static void timeout_task(invoker *inv, unsigned k, invoker__task *t, uint64_t now)
{
    invoker_id id = t->id;
    uint32_t gen = t->gen;
    /* It may have finished just now: a result in the pipe wins. */
    if (inv->workers[k].result_rd >= 0)
        (void)read_worker(inv, k);
    if (!(t = current(inv, id, gen)))
        return;
    if (inv->workers[k].err)
        invoker__err_claim(inv, k, t);   /* what it wrote until now */
    /* Signalled at the end of this pass, once the task is reported and a
     * spare has its word: a process woken to die runs its exit where it
     * is woken, often on this CPU, ahead of both. */
    invoker__worker_kill_soon(inv, k, INVOKER_FAIL_TIMEOUT);
    t->run_seconds = (double)(now - t->start_ns) / 1e9;
    note_usage_alive(inv, t, k);
    fail_or_retry(inv, t, INVOKER_FAIL_TIMEOUT, 0);
}

/* Which task each live worker runs, from the table.  A word that names no
 * task we sent is a scribble: that worker goes. */
static uint64_t check_running(invoker *inv, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (unsigned k = 0; k < inv->nrecords; k++) {
        invoker__worker *w = &inv->workers[k];
        if (w->state != INVOKER__WORKER_LIVE)
            continue;
        invoker__slot *slot = invoker__table_slot(&inv->table, k);
        uint64_t tag = atomic_load(&slot->running);
        if (tag == 0)
            continue;
        uint64_t id = invoker__proto_running_id(tag, inv->key);
        uint64_t start = atomic_load(&slot->start_ns);
        /* now was read before this load: a task may have started since. */
        if (id == 0 || start == 0 || (start > now && start > invoker__now_ns())) {
            invoker__worker_kill(inv, k, INVOKER_FAIL_PROTOCOL);
            w->blame = INVOKER__BLAME_FIRST;
            continue;
        }
        invoker__task *t = invoker__tasks_find(&inv->tasks, id);
        if (!t || t->state != INVOKER__TASK_INFLIGHT)
            continue;   /* finished a moment ago, or cancelled */
        if (t->start_ns != start) {
            note_start(inv, t, k, start);
            if (t->adaptive)   /* fixed for this attempt from now on */
                t->run_timeout = invoker__adapt_timeout(inv, true);
        }
        if (t->run_timeout <= 0 || start > now)
            continue;
        uint64_t deadline = start + to_ns(t->run_timeout);
        if (now >= deadline)
            timeout_task(inv, k, t, now);
        else if (deadline < next)
            next = deadline;
    }
    /* Tasks not yet seen started may start any moment: an adaptive one
     * with the timeout it would be given now. */
    double adaptive = inv->cfg.timeout_factor > 0 ? -1 : 0;
    for (invoker__task *t = inv->inflight.head; t; t = t->next) {
        if (!timed(t) || t->start_ns != 0)
            continue;
        double timeout = t->timeout;
        if (t->adaptive) {
            if (adaptive < 0)
                adaptive = invoker__adapt_timeout(inv, false);
            timeout = adaptive;
        }
        if (timeout > 0 && now + to_ns(timeout) < next)
            next = now + to_ns(timeout);
    }
    return next;
}

/* A task can vanish without a trace only when a worker steals a ticket
 * (reads the queue itself) or scribbles the slot it read it into.  Then
 * accounting finds it: the pipe is FIFO, so every ticket that ends before
 * (bytes written - bytes unread) was taken, and a taken task that is in no
 * live worker's slot, twice in a row with the result pipes drained in
 * between, is lost.  Twice, because a worker may finish a task and take
 * the next one between one look and the other. */
/* A live worker's slot may change under us: a torn copy fails its check
 * words and counts as not holding, which only delays a verdict. */
static bool slot_holds(const invoker *inv, unsigned k, const invoker__task *t)
{
    unsigned char copy[INVOKER__PACKET];
    memcpy(copy, invoker__table_slot(&inv->table, k)->ticket, sizeof copy);
    invoker__ticket tk;
    size_t off;
    for (unsigned i = 0; invoker__proto_packet_ticket(copy, sizeof copy, i, inv->key,
                                                      inv->cfg.max_arg_bytes, &tk, &off); i++)
        if (tk.id == t->id && tk.gen == t->gen)
            return true;
    return false;
}

static void sweep(invoker *inv, uint64_t now)
{
    inv->sweep_at = 0;
    int unread = 0;
    if (ioctl(inv->queue_rd, FIONREAD, &unread) != 0)
        return;
    uint64_t consumed = inv->queue_written - (uint64_t)unread;
    for (unsigned k = 0; k < inv->nrecords; k++)
        if (inv->workers[k].state == INVOKER__WORKER_LIVE && inv->workers[k].result_rd >= 0)
            (void)read_worker(inv, k);

    bool suspects = false;
    for (invoker__task *t = inv->inflight.head; t; t = t->next) {
        bool held = false;
        for (unsigned k = 0; k < inv->nrecords && !held; k++) {
            if (inv->workers[k].state == INVOKER__WORKER_EMPTY)
                continue;
            held = slot_holds(inv, k, t);
        }
        if (t->queue_end > consumed || held)
            t->suspect = 0;
        else if (t->suspect)
            t->suspect = 2;
        else
            t->suspect = 1, suspects = true;
    }
    /* Act after the scan: a callback may reorder the list.  A lost task may
     * be innocent (its result went down with a garbled pipe): it runs
     * again once; lost twice, it is the one breaking things. */
    for (;;) {
        invoker__task *t = inv->inflight.head;
        while (t && t->suspect != 2)
            t = t->next;
        if (!t)
            break;
        if (t->orphaned++ == 0)
            requeue(inv, t);
        else
            call_error(inv, t, INVOKER_FAIL_PROTOCOL, 0);
    }
    if (suspects)
        inv->sweep_at = now + SWEEP_AGAIN_NS;
}

/* Gives every slot without a live worker one: its spare at once, else a
 * fork, without waiting for the worker it replaces to be dead (that one
 * keeps its own record and table slot until it is read post-mortem).
 * Then, where spares are wanted, forks each slot's spare.  Returns when
 * to try again. */
static uint64_t staff_slots(invoker *inv, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    if (inv->spawn_tripped || inv->destroying)
        return next;
    for (unsigned s = 0; s < inv->nworkers; s++) {
        invoker__seat *seat = &inv->seats[s];
        bool live = false, grace = false;
        int spare = -1, empty = -1;
        for (unsigned k = s; k < inv->nrecords; k += inv->nworkers) {
            int state = inv->workers[k].state;
            /* Killed with a grace: the slot is taken again once its group
             * is gone, not while a program of it may still be flushing. */
            grace |= state == INVOKER__WORKER_DYING && inv->workers[k].term_at;
            live |= state == INVOKER__WORKER_LIVE;
            spare = state == INVOKER__WORKER_SPARE ? (int)k : spare;
            empty = state == INVOKER__WORKER_EMPTY ? (int)k : empty;
        }
        if (grace && !live)
            continue;   /* invoker__workers_grace times it */
        if (!live && spare >= 0) {
            /* With its predecessor gone (not still dying), the CPU it
             * left is free. */
            invoker__worker_adopt(inv, (unsigned)spare, empty >= 0 ? seat->free_cpu : -1);
            seat->free_cpu = -1;
            seat->spare_streak = 0;
            inv->queue_full = false;
            /* With its predecessor already reaped, the next spare comes by
             * the timer, not at whatever pass comes next: invoker_wait may
             * gather for milliseconds, and a second death in the slot would
             * find none.  Not at once: its fork would take CPU from the
             * spare that has just taken the slot. */
            seat->spare_at = now + SPARE_AFTER_ADOPT_NS;
            live = true;
        }
        if (empty < 0 || (live && !inv->want_spares))
            continue;   /* both records taken (or both going: the first gone is refilled) */
        uint64_t at = live ? seat->spare_at : seat->respawn_at;
        if (at > now) {
            next = at < next ? at : next;
            continue;
        }
        if (live) {
            /* A spare that cannot be had is no failure: the slot is served. */
            if (invoker__worker_spawn_spare(inv, (unsigned)empty) != 0) {
                seat->spare_at = now + backoff_ns(++seat->spare_streak);
                next = seat->spare_at < next ? seat->spare_at : next;
            }
            continue;
        }
        int rc = invoker__worker_spawn(inv, (unsigned)empty);
        if (rc == 0) {
            inv->queue_full = false;
            continue;
        }
        seat->respawn_at = now + backoff_ns(++seat->fail_streak);
        startup_failed(inv, rc);
        next = seat->respawn_at < next ? seat->respawn_at : next;
        if (inv->spawn_tripped)
            return next;
    }
    return next;
}

static void service_time(invoker *inv)
{
    uint64_t now = invoker__now_ns();
    uint64_t next = UINT64_MAX;

    if (inv->spawn_tripped && now >= inv->untrip_at && !inv->destroying) {
        inv->spawn_tripped = false;
        inv->fail_count = 0;
    }
    /* Deaths seen by looking first, so that a slot they empty is refilled
     * (or timed) below in this same pass: nothing else would wake us. */
    for (unsigned k = 0; k < inv->nrecords; k++) {
        invoker__worker *w = &inv->workers[k];
        if (w->state == INVOKER__WORKER_EMPTY || !w->eof_at)
            continue;
        if (w->pidfd < 0) {
            /* WNOWAIT: only look; worker_gone reaps it. */
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == w->pid) {
                worker_gone(inv, k);
                continue;
            }
            next = now + 1000000ull < next ? now + 1000000ull : next;
        }
        if (w->state != INVOKER__WORKER_LIVE)
            continue;
        if (now - w->eof_at >= EOF_GRACE_NS)
            invoker__worker_kill(inv, k, INVOKER_FAIL_PROTOCOL);
        else if (w->eof_at + EOF_GRACE_NS < next)
            next = w->eof_at + EOF_GRACE_NS;
    }

    if (inv->inflight_timeouts > 0) {
        uint64_t due = check_running(inv, now);
        next = due < next ? due : next;
    }
    if (inv->cfg.kill_grace > 0) {
        uint64_t due = invoker__workers_grace(inv, now);
        next = due < next ? due : next;
    }
    uint64_t look = look_at_held(inv, now);
    next = look < next ? look : next;
    uint64_t sync = invoker__journal_tick(&inv->journal, now);
    next = sync < next ? sync : next;
    /* After the kills above: their slots are refilled in this same pass. */
    uint64_t staff = staff_slots(inv, now);
    next = staff < next ? staff : next;
    if (inv->spawn_tripped && inv->outstanding > 0 && inv->untrip_at < next)
        next = inv->untrip_at;
    fail_unrunnable(inv);
    /* The audit clock moves in whole periods, so the timer is not re-armed
     * on every event. */
    if (inv->inflight.count == 0) {
        inv->audit_at = 0;
    } else if (!inv->audit_at) {
        inv->audit_at = now + STALL_AUDIT_NS;
    } else if (now >= inv->audit_at) {
        if (now - inv->last_event_ns >= STALL_AUDIT_NS && !inv->sweep_at)
            inv->sweep_at = now;
        inv->audit_at = now + STALL_AUDIT_NS;
    }
    if (inv->sweep_at && inv->sweep_at <= now)
        sweep(inv, now);
    if (inv->sweep_at && inv->sweep_at < next)
        next = inv->sweep_at;
    if (inv->audit_at && inv->audit_at < next)
        next = inv->audit_at;

    invoker__workers_kill_due(inv);
    if (next == UINT64_MAX)
        disarm_timer(inv);
    else if (next != inv->timer_armed_ns) {
        inv->timer_armed_ns = 0;   /* re-arm even when later than before */
        invoker__dispatch_arm_timer(inv, next);
    }
}

/* Workers running a task still in flight: one whose result is already
 * reported, while the worker finishes writing it, does not count. */
unsigned invoker__dispatch_busy(const invoker *inv)
{
    unsigned busy = 0;
    for (unsigned k = 0; k < inv->nrecords; k++) {
        if (inv->workers[k].state != INVOKER__WORKER_LIVE)
            continue;
        uint64_t tag = atomic_load(&invoker__table_slot(&inv->table, k)->running);
        uint64_t id = tag ? invoker__proto_running_id(tag, inv->key) : 0;
        const invoker__task *t = id ? invoker__tasks_find(&inv->tasks, id) : NULL;
        busy += t && t->state == INVOKER__TASK_INFLIGHT;
    }
    return busy;
}

/* ---- the loop -------------------------------------------------------------- */

/* How long invoker_wait may let results gather before it takes them, or 0.
 * Woken once per result, the parent takes a worker's CPU twice per task
 * (the switch between processes is the cost, far more than the syscalls):
 * with tasks of a millisecond on two CPUs, 1.5% of the machine.  Nothing
 * needs a result at once while every worker has queued tickets for a good
 * while yet; only the callback waits, and deadlines, deaths and kicks still
 * wake the parent at once (they are in the urgent set), as does a worker
 * that finds the queue empty (the tasks were shorter than their average
 * said: see note_if_idle). */
static uint64_t gather_ns(const invoker *inv)
{
    if (inv->urgent_fd < 0 || inv->live == 0 || inv->avg_run_ns == 0)
        return 0;
    uint64_t gap = inv->avg_run_ns / inv->live;   /* between results, all busy */
    size_t queued = inv->inflight.count > inv->live ? inv->inflight.count - inv->live : 0;
    uint64_t ns = GATHER_RESULTS * gap;
    uint64_t fed = queued * gap / 2;              /* half the time the queue lasts */
    ns = ns < fed ? ns : fed;
    ns = ns < inv->gather_max_ns ? ns : inv->gather_max_ns;
    /* Each worker's results must fit its pipe meanwhile, or it blocks. */
    uint64_t bytes = (ns / inv->avg_run_ns + 1) * (INVOKER__FRAME_HDR + inv->avg_result_bytes);
    /* Worth a timed sleep only if it saves a wake or more. */
    if (ns < GATHER_MIN_NS || ns < 2 * gap || bytes > GATHER_PIPE_BYTES)
        return 0;
    return ns;
}

/* Sleeps on the urgent set while results gather, if gather_ns says so. */
static void gather_results(invoker *inv)
{
    uint64_t ns = gather_ns(inv);
    if (!ns)
        return;
    /* Raised before we look at the queue, so that a worker that finds it
     * empty later sees it and wakes us (note_if_idle). */
    atomic_store(inv->table.gathering, 1);
    int unread = 0;
    if (ioctl(inv->queue_rd, FIONREAD, &unread) == 0 && unread > 0)
        invoker__fd_epoll_sleep(inv->urgent_fd, ns);
    atomic_store(inv->table.gathering, 0);
}

static void handle_event(invoker *inv, const struct epoll_event *ev)
{
    unsigned type = (unsigned)(ev->data.u64 >> 32);
    unsigned k = (unsigned)(ev->data.u64 & 0xffffffffu);
    uint64_t scratch;
    switch (type) {
    case INVOKER__EV_RESULT:
        if (k < inv->nrecords && inv->workers[k].state != INVOKER__WORKER_EMPTY &&
            inv->workers[k].result_rd >= 0 && !read_worker(inv, k))
            on_result_eof(inv, k);
        break;
    case INVOKER__EV_PIDFD:
        if (k < inv->nrecords && inv->workers[k].state != INVOKER__WORKER_EMPTY)
            worker_gone(inv, k);
        break;
    case INVOKER__EV_TIMER:
        (void)invoker__fd_read(inv->timerfd, &scratch, sizeof scratch);
        inv->timer_armed_ns = 0;
        break;
    case INVOKER__EV_KICK:
        (void)invoker__fd_read(inv->kickfd, &scratch, sizeof scratch);
        inv->kicked = false;
        break;
    case INVOKER__EV_IDLE: {   /* it only ended a gather */
        char notes[256];
        while (invoker__fd_read(inv->idle_rd, notes, sizeof notes) == (ssize_t)sizeof notes)
            ;
        break;
    }
    case INVOKER__EV_SERVER:
        invoker__forkserver_stop(inv);   /* killed by someone: reaped; we fork from now on */
        break;
    case INVOKER__EV_STDERR:
        if (k < inv->nrecords && inv->workers[k].err)
            (void)invoker__err_read(inv, k, ERR_PASS_BYTES);
        break;
    default:
        break;
    }
}

int invoker__dispatch_run(invoker *inv, int timeout_ms, bool gather)
{
    uint64_t calls0 = inv->calls;
    uint64_t until = timeout_ms > 0 ? invoker__now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    struct epoll_event evs[64];

    for (;;) {
        deliver_done(inv);
        if (inv->outstanding == 0) {
            /* Nothing to wait for, but reap and replace workers that died
             * while idle, so the pool is whole before the next submit. */
            int n = epoll_wait(inv->epfd, evs, 64, 0);
            for (int i = 0; i < n; i++)
                handle_event(inv, &evs[i]);
            service_time(inv);
            deliver_done(inv);
            break;
        }
        int wait_ms = 0;
        if (inv->calls == calls0 && timeout_ms != 0) {
            if (timeout_ms < 0) {
                wait_ms = -1;
            } else {
                uint64_t now = invoker__now_ns();
                wait_ms = now >= until ? 0 : (int)((until - now + 999999) / 1000000);
            }
        }
        if (gather && wait_ms < 0)
            gather_results(inv);
        int n = epoll_wait(inv->epfd, evs, 64, wait_ms);
        if (n < 0 && errno != EINTR)
            return -errno;
        for (int i = 0; i < n; i++) {
            /* Only workers' own events count as progress for the audit. */
            unsigned type = (unsigned)(evs[i].data.u64 >> 32);
            if (type == INVOKER__EV_RESULT || type == INVOKER__EV_PIDFD)
                inv->last_event_ns = invoker__now_ns();
            handle_event(inv, &evs[i]);
        }
        service_time(inv);
        inv->queue_full = false;
        int rc = invoker__dispatch_refill(inv);
        if (rc)
            return rc;
        deliver_done(inv);
        if (inv->calls != calls0 || timeout_ms == 0 || inv->outstanding == 0)
            break;
        if (timeout_ms > 0 && invoker__now_ns() >= until)
            break;
    }
    /* What the last callbacks submitted goes out before we return: the
     * caller may block on invoker_fd next. */
    if (inv->pending.head) {
        inv->queue_full = false;
        (void)invoker__dispatch_refill(inv);   /* on error it waits for the next poll */
    }
    return (int)(inv->calls - calls0);
}

/* With a grace, the workers signalled (SIGTERM) by invoker_destroy get
 * up to kill_grace to exit before worker_gone kills what is left.  Their
 * stderr is read meanwhile: a program flushing more than a pipe holds
 * would otherwise block on it until the SIGKILL. */
static void wait_for_grace(invoker *inv)
{
    for (;;) {
        uint64_t now = invoker__now_ns(), until = 0;
        for (unsigned k = 0; k < inv->nrecords; k++) {
            invoker__worker *w = &inv->workers[k];
            if (w->state == INVOKER__WORKER_EMPTY || !w->term_at || w->term_at <= now)
                continue;
            if (w->err)
                (void)invoker__err_read(inv, k, ERR_PASS_BYTES);
            siginfo_t si;
            memset(&si, 0, sizeof si);
            /* WNOWAIT: only look; worker_gone reaps it. */
            if (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == w->pid)
                continue;
            until = w->term_at > until ? w->term_at : until;
        }
        if (!until)
            return;
        struct timespec ms = { 0, 1000000L };
        (void)nanosleep(&ms, NULL);
    }
}

/* invoker_destroy's half: every worker killed and reaped, results already
 * written delivered, everything else reported as SHUTDOWN. */
void invoker__dispatch_shutdown(invoker *inv)
{
    inv->destroying = true;
    for (unsigned k = 0; k < inv->nrecords; k++)
        invoker__worker_kill(inv, k, INVOKER_FAIL_SHUTDOWN);
    if (inv->cfg.kill_grace > 0)
        wait_for_grace(inv);
    for (unsigned k = 0; k < inv->nrecords; k++)
        if (inv->workers[k].state != INVOKER__WORKER_EMPTY)
            worker_gone(inv, k);
    /* A callback may cancel others (invoker_cancel_tag): those go to the
     * done list, delivered before the rest. */
    for (;;) {
        deliver_done(inv);
        invoker__task *t = inv->inflight.head ? inv->inflight.head : inv->pending.head;
        if (!t)
            break;
        call_error(inv, t, INVOKER_FAIL_SHUTDOWN, 0);
    }
}

/* invoker_cancel's half.  The worker side pairs with this (see the worker
 * loop): we publish the id, then look for it running; it publishes that it
 * runs, then looks for the id.  One of the two sees the other. */
void invoker__dispatch_cancel(invoker *inv, invoker__task *t)
{
    if (t->state == INVOKER__TASK_INFLIGHT && !inv->cfg.inline_mode) {
        atomic_store(&inv->table.cancelled[t->id % INVOKER__CANCEL_RING], t->id);
        for (unsigned k = 0; k < inv->nrecords; k++) {
            if (inv->workers[k].state != INVOKER__WORKER_LIVE)
                continue;
            invoker__slot *slot = invoker__table_slot(&inv->table, k);
            if (invoker__proto_running_id(atomic_load(&slot->running), inv->key) != t->id)
                continue;
            uint64_t start = atomic_load(&slot->start_ns);
            uint64_t now = invoker__now_ns();
            if (start && start <= now) {
                note_start(inv, t, k, start);
                t->run_seconds = (double)(now - start) / 1e9;
                note_usage_alive(inv, t, k);
            }
            if (inv->workers[k].err)   /* what it wrote until now (makes no callback) */
                invoker__err_claim(inv, k, t);
            invoker__worker_kill(inv, k, INVOKER_FAIL_CANCELLED);
        }
    }
    invoker__dispatch_report(inv, t, INVOKER_FAIL_CANCELLED, 0);
}

static double tv_seconds(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* Inline mode: one task in this process per call, same callbacks. */
int invoker__dispatch_inline(invoker *inv)
{
    uint64_t calls0 = inv->calls;
    deliver_done(inv);
    invoker__task *t = inv->pending.head;
    if (inv->calls == calls0 && t) {
        struct invoker_result *out = &inv->inline_out;
        out->len = 0;
        out->too_large = false;
        out->max = inv->cfg.max_result_bytes;
        t->attempts++;
        t->worker = 0;
        out->task_id = t->id;
        out->attempt = t->attempts;
        out->worker = 0;
        out->dir_tag = invoker__command_dir_tag(inv->key);
        out->child_rss_kib = -1;
        out->cpu_limit = 0;   /* limits do not apply inline */
        /* This thread's CPU and its reaped children's; the caller's peak
         * RSS is the caller's, not reset for it: only a child's is known. */
        struct rusage self0, kids0, self1, kids1;
        bool timed = getrusage(RUSAGE_THREAD, &self0) == 0 &&
                     getrusage(RUSAGE_CHILDREN, &kids0) == 0;
        uint64_t start = invoker__now_ns();
        int rc = invoker__result_reserve(out, 0);
        if (rc == 0) {
            inv->depth++;   /* the objective is no place for invoker_poll either */
            rc = inv->cfg.objective(invoker__task_arg(inv, t), t->arg_len, out,
                                    inv->cfg.objective_ctx);
            inv->depth--;
        }
        t->run_seconds = (double)(invoker__now_ns() - start) / 1e9;
        if (timed && getrusage(RUSAGE_THREAD, &self1) == 0 &&
            getrusage(RUSAGE_CHILDREN, &kids1) == 0)
            t->cpu_seconds = tv_seconds(&self1.ru_utime) - tv_seconds(&self0.ru_utime) +
                             tv_seconds(&self1.ru_stime) - tv_seconds(&self0.ru_stime) +
                             tv_seconds(&kids1.ru_utime) - tv_seconds(&kids0.ru_utime) +
                             tv_seconds(&kids1.ru_stime) - tv_seconds(&kids0.ru_stime);
        t->max_rss_kib = out->child_rss_kib;
        if (out->too_large)
            call_error(inv, t, INVOKER_FAIL_TOO_LARGE, 0);
        else if (rc != 0)
            call_error(inv, t, INVOKER_FAIL_OBJECTIVE, rc);
        else
            call_result(inv, t, out->buf + INVOKER__FRAME_HDR, out->len);
    }
    (void)invoker__journal_tick(&inv->journal, invoker__now_ns());
    uint64_t scratch;
    if (!inv->pending.head && !inv->done.head && inv->kicked) {
        (void)invoker__fd_read(inv->kickfd, &scratch, sizeof scratch);
        inv->kicked = false;
    }
    return (int)(inv->calls - calls0);
}

/* ---- the scheduler's side of the seam, for other backends (invoker_sched.h) ------ */

invoker__task *invoker__sched_find(invoker *inv, invoker_id id)
{
    return invoker__tasks_find(&inv->tasks, id);
}

const void *invoker__sched_arg(const invoker *inv, const invoker__task *t)
{
    return invoker__task_arg(inv, t);
}

void invoker__sched_start(invoker *inv, invoker__task *t)
{
    invoker__list_unlink(&inv->pending, t);
    t->state = INVOKER__TASK_INFLIGHT;
    t->start_ns = 0;
    invoker__list_push_back(&inv->inflight, t);
    if (timed(t))
        inv->inflight_timeouts++;   /* leave_flight counts it out */
}

void invoker__sched_result(invoker *inv, invoker__task *t, const void *data, size_t len)
{
    call_result(inv, t, data, len);
}

void invoker__sched_error(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    call_error(inv, t, fail, code);
}

void invoker__sched_fail_or_retry(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    fail_or_retry(inv, t, fail, code);
}

void invoker__sched_report(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    invoker__dispatch_report(inv, t, fail, code);
}

void invoker__sched_deliver(invoker *inv)
{
    deliver_done(inv);
}

void invoker__sched_kick(invoker *inv)
{
    invoker__dispatch_kick(inv);
}

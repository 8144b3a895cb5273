/*
 * Keeping every slot staffed: a worker's death read post-mortem (its
 * casualty failed or retried, its packet-mates requeued), spares adopted,
 * replacements forked, and the start-up guard that stops a crash loop
 * from forking without end.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define FAIL_WINDOW_NS  (5ull * 1000000000ull)   /* start-up failures counted over */
#define COOLDOWN_NS     (1000000000ull)          /* a tripped guard rests this long */
#define BACKOFF_MAX_NS  (1000000000ull)
#define SPARE_AFTER_ADOPT_NS (1000000ull)  /* a slot's next spare, after it took one */

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
void invoker__staff_fail_unrunnable(invoker *inv)
{
    if (!inv->spawn_tripped || inv->live > 0)
        return;
    for (unsigned k = 0; k < inv->nrecords; k++)   /* one asked of the server may come */
        if (inv->workers[k].state == INVOKER__WORKER_SPAWNING && !inv->workers[k].spawn_spare)
            return;
    invoker__task *t;
    while ((t = inv->inflight.head) != NULL)
        invoker__report_error(inv, t, INVOKER_FAIL_NO_WORKER, inv->last_spawn_error);
    while ((t = inv->pending.head) != NULL)
        invoker__report_error(inv, t, INVOKER_FAIL_NO_WORKER, inv->last_spawn_error);
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

void invoker__staff_worker_gone(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    if (w->state == INVOKER__WORKER_EMPTY)
        return;
    if (w->err)   /* its last words, even when its result pipe closed long ago */
        (void)invoker__err_read(inv, k, INVOKER__ERR_DRAIN);
    if (w->result_rd >= 0)
        (void)invoker__frames_read(inv, k);   /* what it finished before is delivered */
    bool spare = w->go >= 0;   /* never let go: it took no task, failed no start-up */
    int cpu = spare || inv->destroying ? -1 : invoker__worker_last_cpu(inv, k);
    int status = reap(inv, k);
    /* Reaped: its pid may be anyone's now, so no callback below may have
     * it killed (a cancel of the task it ran). */
    w->state = INVOKER__WORKER_DYING;
    uint64_t now = invoker__now_ns();
    invoker__frames_deliver_held(inv, k);

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
        invoker__task *t = invoker__frames_current(inv, tk.id, tk.gen);
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
            invoker__frames_note_start(inv, t, k, start);
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
            invoker__report_fail_or_retry(inv, t, fail, code);
        } else {
            if (i < running_at)
                invoker__frames_note_start(inv, t, k, now);
            invoker__report_requeue(inv, t);   /* not its fault */
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

void invoker__staff_result_eof(invoker *inv, unsigned k)
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

void invoker__staff_spawn_failed(invoker *inv, unsigned k, bool spare, int rc, uint64_t now)
{
    invoker__seat *seat = &inv->seats[invoker__slot_number(inv, k)];
    if (spare) {   /* a spare that cannot be had is no failure: the slot is served */
        seat->spare_at = now + backoff_ns(++seat->spare_streak);
        return;
    }
    seat->respawn_at = now + backoff_ns(++seat->fail_streak);
    startup_failed(inv, rc);
}

/* Gives every slot without a live worker one: its spare at once, else a
 * fork, without waiting for the worker it replaces to be dead (that one
 * keeps its own record and table slot until it is read post-mortem).
 * Then, where spares are wanted, forks each slot's spare.  Returns when
 * to try again. */
uint64_t invoker__staff_slots(invoker *inv, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    if (inv->spawn_tripped || inv->destroying)
        return next;
    for (unsigned s = 0; s < inv->nworkers; s++) {
        invoker__seat *seat = &inv->seats[s];
        bool live = false, grace = false, coming = false;
        int spare = -1, empty = -1;
        for (unsigned k = s; k < inv->nrecords; k += inv->nworkers) {
            int state = inv->workers[k].state;
            /* Killed with a grace: the slot is taken again once its group
             * is gone, not while a program of it may still be flushing. */
            grace |= state == INVOKER__WORKER_DYING && inv->workers[k].term_at;
            live |= state == INVOKER__WORKER_LIVE;
            coming |= state == INVOKER__WORKER_SPAWNING;
            spare = state == INVOKER__WORKER_SPARE ? (int)k : spare;
            empty = state == INVOKER__WORKER_EMPTY ? (int)k : empty;
        }
        if (grace && !live)
            continue;   /* invoker__workers_grace times it */
        if (coming)
            continue;   /* the server's answer brings the slot's worker or spare */
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
            int rc = invoker__worker_spawn_spare(inv, (unsigned)empty);
            if (rc != 0 && rc != -EBUSY) {   /* busy: the server's next answer brings us back */
                invoker__staff_spawn_failed(inv, (unsigned)empty, true, rc, now);
                next = seat->spare_at < next ? seat->spare_at : next;
            }
            continue;
        }
        int rc = invoker__worker_spawn(inv, (unsigned)empty);
        if (rc == 0) {
            inv->queue_full = false;
            continue;
        }
        if (rc == -EBUSY)
            continue;   /* the server's next answer brings us back */
        invoker__staff_spawn_failed(inv, (unsigned)empty, false, rc, now);
        next = seat->respawn_at < next ? seat->respawn_at : next;
        if (inv->spawn_tripped)
            return next;
    }
    return next;
}

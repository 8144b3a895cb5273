/*
 * Time against running tasks: the timeouts of tasks seen started in the
 * table, and the sweep that finds a task lost without a trace (a stolen
 * ticket, a scribbled slot) by accounting.
 */
#include "internal.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>

#define SWEEP_AGAIN_NS  (10000000ull)
/* How long before a deadline the parent reads the worker's /proc once,
 * discarding it.  Read again at the deadline for the report (the figures
 * must be those of then), that text costs 10-25 us instead of the
 * 60-130 us it costs the parent waking from a long sleep, with nothing of
 * the kernel's for that process in its caches: most of a timeout's report
 * (bench/NOTES.md).  A wake-up more for each task that runs that close to
 * its deadline; none for a timeout under 8 times as long. */
#define PREWARM_NS      (250000ull)

static void timeout_task(invoker *inv, unsigned k, invoker__task *t, uint64_t now)
{
    invoker_id id = t->id;
    uint32_t gen = t->gen;
    /* It may have finished just now: a result in the pipe wins. */
    if (inv->workers[k].result_rd >= 0)
        (void)invoker__frames_read(inv, k);
    if (!(t = invoker__frames_current(inv, id, gen)))
        return;
    if (inv->workers[k].err)
        invoker__err_claim(inv, k, t);   /* what it wrote until now */
    /* Signalled at the end of this pass, once the task is reported and a
     * spare has its word: a process woken to die runs its exit where it
     * is woken, often on this CPU, ahead of both. */
    invoker__worker_kill_soon(inv, k, INVOKER_FAIL_TIMEOUT);
    t->run_seconds = (double)(now - t->start_ns) / 1e9;
    invoker__frames_usage_alive(inv, t, k);
    invoker__report_fail_or_retry(inv, t, INVOKER_FAIL_TIMEOUT, 0);
}

/* Which task each live worker runs, from the table.  A word that names no
 * task we sent is a scribble: that worker goes. */
uint64_t invoker__deadlines_check_running(invoker *inv, uint64_t now)
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
            invoker__frames_note_start(inv, t, k, start);
            if (t->adaptive)   /* fixed for this attempt from now on */
                t->run_timeout = invoker__adapt_timeout(inv, true);
        }
        if (t->run_timeout <= 0 || start > now)
            continue;
        uint64_t span = invoker__to_ns(t->run_timeout);
        uint64_t deadline = start + span, due = deadline;
        if (now >= deadline) {
            timeout_task(inv, k, t, now);
            continue;
        }
        if (span >= 8 * PREWARM_NS && t->warmed_ns != start) {
            if (now >= deadline - PREWARM_NS) {
                double cpu;
                long rss;
                invoker__worker_usage(inv, k, &cpu, &rss);
                t->warmed_ns = start;
            } else {
                due = deadline - PREWARM_NS;
            }
        }
        if (due < next)
            next = due;
    }
    /* Tasks not yet seen started may start any moment: an adaptive one
     * with the timeout it would be given now. */
    double adaptive = inv->cfg.timeout_factor > 0 ? -1 : 0;
    for (invoker__task *t = inv->inflight.head; t; t = t->next) {
        if (!invoker__task_timed(t) || t->start_ns != 0)
            continue;
        double timeout = t->timeout;
        if (t->adaptive) {
            if (adaptive < 0)
                adaptive = invoker__adapt_timeout(inv, false);
            timeout = adaptive;
        }
        if (timeout > 0 && now + invoker__to_ns(timeout) < next)
            next = now + invoker__to_ns(timeout);
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

void invoker__deadlines_sweep(invoker *inv, uint64_t now)
{
    inv->sweep_at = 0;
    int unread = 0;
    if (ioctl(inv->queue_rd, FIONREAD, &unread) != 0)
        return;
    uint64_t consumed = inv->queue_written - (uint64_t)unread;
    for (unsigned k = 0; k < inv->nrecords; k++)
        if (inv->workers[k].state == INVOKER__WORKER_LIVE && inv->workers[k].result_rd >= 0)
            (void)invoker__frames_read(inv, k);

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
            invoker__report_requeue(inv, t);
        else
            invoker__report_error(inv, t, INVOKER_FAIL_PROTOCOL, 0);
    }
    if (suspects)
        inv->sweep_at = now + SWEEP_AGAIN_NS;
}

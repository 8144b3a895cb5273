/*
 * The task queue: pending tasks become tickets in one pipe opened in
 * packet mode, several to a packet for short tasks with a deep backlog.
 * Workers pull from it; the parent keeps it stocked.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

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
    if (invoker__task_timed(t)) {
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
            invoker__wake_arm_timer(inv, invoker__now_ns() + invoker__to_ns(timeout));
    }
}

/* When to look next at results workers hold: on a grid, so that the
 * timer is re-armed once a period, not once a pass. */
uint64_t invoker__queue_held_look_at(uint64_t now)
{
    return (now / INVOKER__HOLD_WAKE_NS + 1) * INVOKER__HOLD_WAKE_NS;
}

int invoker__queue_refill(invoker *inv)
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
         * invoker__frames_look_at_held), even if no other event ever wakes the loop. */
        invoker__wake_arm_timer(inv, invoker__queue_held_look_at(invoker__now_ns()));
    }
    return 0;
}

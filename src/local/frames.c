/*
 * Frames from the workers: reading each worker's result pipe within a
 * budget, parsing and checking frames, resynchronising after garbage, and
 * the frames a worker holds in its slot.  Every word from a worker goes
 * through invoker__frames_current before it may touch a task: whatever a
 * worker sends is checked against the task record, and anything that
 * names a task no longer in flight is dropped.
 */
#include "internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RX_CAP          (64u << 10)
/* A big payload's buffer is kept for the worker's next one up to this
 * size: freed and allocated anew, every payload is read into pages the
 * kernel must fault in and zero (1 MiB results: 256 faults each). */
#define RX_KEEP_MAX     ((size_t)4 << 20)

/* t starts (or started) in process record k. */
void invoker__frames_note_start(const invoker *inv, invoker__task *t, unsigned k, uint64_t start_ns)
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
invoker__task *invoker__frames_current(invoker *inv, uint64_t id, uint32_t gen)
{
    invoker__task *t = invoker__tasks_find(&inv->tasks, id);
    if (!t || t->state != INVOKER__TASK_INFLIGHT || t->gen != gen)
        return NULL;
    return t;
}

/* A frame of worker k says t ran, for f->run_ns. */
static void note_ran(const invoker *inv, invoker__task *t, unsigned k, const invoker__frame *f)
{
    invoker__frames_note_start(inv, t, k, t->start_ns);
    t->run_seconds = (double)f->run_ns / 1e9;
    t->cpu_seconds = (double)f->cpu_ns / 1e9;
    t->max_rss_kib = (long)f->max_rss_kib;
}

/* What a worker still running (about to be killed) spent on t so far. */
void invoker__frames_usage_alive(const invoker *inv, invoker__task *t, unsigned k)
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
        invoker__report_result(inv, t, payload, (size_t)f->len);
        break;
    case INVOKER__FRAME_OBJECTIVE:
        invoker__report_error(inv, t, INVOKER_FAIL_OBJECTIVE, f->code);
        break;
    default: /* INVOKER__FRAME_TOO_LARGE */
        invoker__report_error(inv, t, INVOKER_FAIL_TOO_LARGE, 0);
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
    invoker__task *t = invoker__frames_current(inv, f->id, f->gen);
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
            invoker__report_error(inv, t, INVOKER_FAIL_PROTOCOL, 0);
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
        invoker__report_error(inv, t, INVOKER_FAIL_PROTOCOL, 0);
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
void invoker__frames_deliver_held(invoker *inv, unsigned k)
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
        invoker__task *t = invoker__frames_current(inv, f.id, f.gen);
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
uint64_t invoker__frames_look_at_held(invoker *inv, uint64_t now)
{
    if (!inv->batched_out)
        return UINT64_MAX;
    for (unsigned k = 0; k < inv->nrecords; k++) {
        if (inv->workers[k].state != INVOKER__WORKER_LIVE)
            continue;
        const invoker__slot *slot = invoker__table_slot(&inv->table, k);
        uint64_t since = atomic_load(&slot->held_since);
        if (atomic_load(&slot->held) && since <= now && now - since >= INVOKER__HOLD_WAKE_NS) {
            (void)invoker__err_read(inv, k, INVOKER__ERR_DRAIN);   /* their marks */
            invoker__frames_deliver_held(inv, k);
        }
    }
    return invoker__queue_held_look_at(now);
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
        invoker__task *t = invoker__frames_current(inv, f.id, f.gen);
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
bool invoker__frames_read(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    invoker__rx *rx = &w->rx;
    /* Its stderr first: the marks of the tasks whose frames follow. */
    if (w->err)
        (void)invoker__err_read(inv, k, INVOKER__ERR_DRAIN);
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

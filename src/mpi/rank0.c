/*
 * Rank 0's backend: the scheduler's tasks go to endpoints (each serving
 * rank over MPI, and rank 0's own agent over its socket) and their
 * outcomes come back through the scheduler (invoker_sched.h), which keeps
 * ids, retries, stats and the exactly-once callbacks.
 *
 * Everything an endpoint sends is checked before it touches a task: the
 * size of each message (MPI_Improbe and MPI_Get_count, against a bound
 * from max_result_bytes, before any buffer is allocated), each record's
 * length, type, worker and (id, dispatch).  An endpoint that breaks the
 * protocol is retired and its tasks go elsewhere; an answer for a task
 * already reported, cancelled or sent elsewhere since is dropped.
 *
 * Flow control: each endpoint holds at most its workers plus a prefetch
 * that grows as its tasks get shorter, so that a relay round trip (a
 * millisecond or two) never starves its workers, and long tasks are not
 * bound to one rank more than needed.
 */
#include "mpi_internal.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "internal.h"
#include "sched/invoker_sched.h"

#define EV_TICK   0xfff1u   /* epoll types of our own, beside the core's */
#define EV_AGENT  0xfff2u
#define PREFETCH_NS   4000000.0     /* work each endpoint keeps queued */
#define PREFETCH_MAX  256u          /* per worker */
#define DEAF_NS       50000000ull   /* a pass of callbacks this long is not listening */

enum { EP_OFF = 0, EP_LIVE, EP_RETIRED, EP_STUCK };

typedef struct endpoint {
    int            state;
    bool           bye;           /* its relay said its last word */
    unsigned       workers;
    int            offset;        /* its first global worker slot */
    size_t         inflight;
    uint64_t       heard_ns;
    double         avg_run;       /* seconds, moving average; 0: none seen */
    unsigned       beat_workers, beat_busy;
    uint64_t       beat_started;
    pid_t          pid;           /* its relay's, when on rank 0's node; else 0 */
    unsigned char *batch;         /* records waiting to leave */
    size_t         len, cap;
    bool           unsent;        /* a batch could not leave: lost at the next pump */
} endpoint;

typedef struct sendreq {
    MPI_Request    req;
    unsigned char *buf;
    int            rank;
} sendreq;

typedef struct rank0 {
    invoker__mpi_env env;
    invoker       *inv;
    endpoint      *eps;           /* [0]: own agent; [r]: rank r */
    int            neps;
    invoker__link  agent;         /* own agent's socket */
    sendreq       *reqs;
    size_t         nreqs, capreqs;
    int            tickfd;
    bool           ticking;
    bool           any_stuck;
    size_t         max_msg;       /* bound on a data message from an endpoint */
    bool           traffic;       /* something moved in this pass */
    uint64_t       nap_ns;
} rank0;

static rank0 *state(const invoker *inv)
{
    return inv->backend;
}

/* ---- sending -------------------------------------------------------------- */

static void test_reqs(rank0 *r)
{
    size_t j = 0;
    for (size_t i = 0; i < r->nreqs; i++) {
        int done = 0;
        if (MPI_Test(&r->reqs[i].req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            done = 0;
        if (done)
            free(r->reqs[i].buf);
        else
            r->reqs[j++] = r->reqs[i];
    }
    r->nreqs = j;
}

/* Hands buf (malloc'd, len bytes) to MPI; it is freed once sent. */
static int isend(rank0 *r, int rank, int tag, unsigned char *buf, size_t len)
{
    if (r->nreqs == r->capreqs) {
        size_t cap = r->capreqs ? 2 * r->capreqs : 64;
        sendreq *p = realloc(r->reqs, cap * sizeof *p);
        if (!p) {
            free(buf);
            return -ENOMEM;
        }
        r->reqs = p;
        r->capreqs = cap;
    }
    sendreq *s = &r->reqs[r->nreqs];
    if (MPI_Isend(buf, (int)len, MPI_BYTE, rank, tag, r->env.comm, &s->req) != MPI_SUCCESS) {
        free(buf);
        return -EPROTO;
    }
    s->buf = buf;
    s->rank = rank;
    r->nreqs++;
    return 0;
}

static void flush_ep(rank0 *r, int e)
{
    endpoint *ep = &r->eps[e];
    if (!ep->len)
        return;
    r->traffic = true;
    /* Its tasks are in flight there but never reach it: the endpoint is
     * lost (they go elsewhere or fail LOST), not here, where a submit or
     * a cancel may be running, but in the next pump, with callbacks. */
    if (e == 0) {
        if (invoker__link_send(&r->agent, ep->batch, ep->len) != 0)
            ep->unsent = true;
        ep->len = 0;
        return;
    }
    unsigned char *buf = ep->batch;
    size_t len = ep->len;
    ep->batch = NULL;
    ep->len = ep->cap = 0;
    if (isend(r, e, INVOKER__TAG_DATA, buf, len) != 0)
        ep->unsent = true;
}

static int put(rank0 *r, int e, const invoker__mpi_rec *rec, const void *data, size_t len)
{
    endpoint *ep = &r->eps[e];
    size_t size = invoker__mpi_rec_size(len);
    if (ep->len && ep->len + size > INVOKER__MPI_BATCH)
        flush_ep(r, e);
    if (ep->len + size > ep->cap) {
        size_t cap = ep->cap ? ep->cap : 16384;
        while (cap < ep->len + size)
            cap *= 2;
        unsigned char *p = realloc(ep->batch, cap);
        if (!p)
            return -ENOMEM;
        ep->batch = p;
        ep->cap = cap;
    }
    memcpy(ep->batch + ep->len, rec, sizeof *rec);
    if (len)
        memcpy(ep->batch + ep->len + sizeof *rec, data, len);
    memset(ep->batch + ep->len + sizeof *rec + len, 0, size - sizeof *rec - len);
    ep->len += size;
    return 0;
}

/* ---- endpoints lost ------------------------------------------------------ */

/* Its tasks in flight go elsewhere (or fail LOST); nothing more goes to it. */
static void lose(rank0 *r, int e, int how)
{
    invoker *inv = r->inv;
    endpoint *ep = &r->eps[e];
    if (ep->state != EP_LIVE)
        return;
    ep->state = how;
    ep->len = 0;
    if (how == EP_STUCK)
        r->any_stuck = true;
    else if (e > 0)
        (void)isend(r, e, INVOKER__TAG_RETIRE, NULL, 0);
    if (e == 0 && r->env.agent_pid > 0) {   /* never kill(-1) */
        invoker__link_close(&r->agent);
        (void)kill(r->env.agent_pid, SIGKILL);
        invoker__agent_end(r->env.agent_pid, 1000);
        r->env.agent_pid = -1;
    }
    ep->inflight = 0;
    /* From the list's head each time: a callback (a task failed LOST)
     * may cancel any other task, the walk's next one included.  Each
     * turn takes one task off the in-flight list, and none joins it for
     * e, which is no longer live. */
    for (;;) {
        invoker__task *t = inv->inflight.head;
        while (t && t->queue_end != (uint64_t)e)
            t = t->next;
        if (!t)
            break;
        t->attempts++;   /* it may have run there: the lost attempt counts */
        invoker__sched_fail_or_retry(inv, t, INVOKER_FAIL_LOST, e);
    }
}

/* ---- receiving ------------------------------------------------------------ */

static bool known_failure(int32_t fail)
{
    return fail >= INVOKER_FAIL_OBJECTIVE && fail <= INVOKER_FAIL_CPU &&
           fail != INVOKER_FAIL_SHUTDOWN;
}

/* One outcome record from endpoint e; false if it breaks the protocol. */
static bool outcome(rank0 *r, int e, const invoker__mpi_rec *rec, const unsigned char *data)
{
    invoker *inv = r->inv;
    endpoint *ep = &r->eps[e];
    uint32_t attempts = rec->flags & 0xffffu, tail = rec->flags >> 16;
    if (rec->id == 0 || rec->id > inv->next_id || rec->gen > 0xffffu ||
        rec->worker < -1 || rec->worker >= (int32_t)ep->workers ||
        tail > INVOKER__MPI_TAIL_MAX || tail > rec->len ||
        !isfinite(rec->value) || rec->value < 0 || !isfinite(rec->cpu_seconds) ||
        rec->cpu_seconds < 0 || rec->max_rss_kib < -1)
        return false;
    size_t len = (size_t)rec->len - tail;   /* the result's bytes */
    if (rec->type == INVOKER__MPI_RESULT ? len > inv->cfg.max_result_bytes
                                         : len != 0 || !known_failure(rec->fail))
        return false;
    invoker__task *t = invoker__sched_find(inv, rec->id);
    if (!t || (t->gen & 0xffffu) != rec->gen)
        return true;   /* reported, cancelled or sent again since: late */
    if (t->state != INVOKER__TASK_INFLIGHT || t->queue_end != (uint64_t)e)
        return false;  /* this dispatch never went to e */
    ep->inflight -= ep->inflight > 0;
    t->attempts += attempts;
    free(t->err_tail);   /* this attempt's own, as locally (tasks.c frees it) */
    t->err_tail = NULL;
    t->err_len = 0;
    if (tail && (t->err_tail = malloc(tail)) != NULL) {
        memcpy(t->err_tail, data + len, tail);
        t->err_len = (uint16_t)tail;
    }
    if (rec->worker >= 0)
        t->worker = ep->offset + rec->worker;
    t->run_seconds = rec->value;
    t->cpu_seconds = rec->cpu_seconds;
    t->max_rss_kib = (long)rec->max_rss_kib;
    if (rec->type == INVOKER__MPI_RESULT) {
        ep->avg_run = ep->avg_run > 0 ? 0.9 * ep->avg_run + 0.1 * rec->value : rec->value;
        invoker__sched_result(inv, t, data, len);
    } else {
        invoker__sched_fail_or_retry(inv, t, (invoker_failure)rec->fail, rec->code);
    }
    return true;
}

/* The records of one message from endpoint e; false at the first that
 * breaks the protocol (those before it stand). */
static bool take(rank0 *r, int e, const unsigned char *msg, size_t len)
{
    size_t off = 0;
    while (off < len) {
        invoker__mpi_rec rec;
        if (len - off < sizeof rec)
            return false;
        memcpy(&rec, msg + off, sizeof rec);
        if (rec.len > len - off - sizeof rec || invoker__mpi_rec_size(rec.len) > len - off)
            return false;
        const unsigned char *data = msg + off + sizeof rec;
        off += invoker__mpi_rec_size(rec.len);
        if (r->eps[e].state != EP_LIVE)
            return true;   /* a callback's doing, or lost meanwhile */
        switch (rec.type) {
        case INVOKER__MPI_RESULT:
        case INVOKER__MPI_ERROR:
            if (!outcome(r, e, &rec, data))
                return false;
            break;
        case INVOKER__MPI_BEAT:
            if (rec.code < 0 || rec.fail < 0 || rec.len)
                return false;
            r->eps[e].beat_workers = (unsigned)rec.code;
            r->eps[e].beat_busy = (unsigned)rec.fail;
            r->eps[e].beat_started = rec.id;
            break;
        default:
            return false;
        }
    }
    return true;
}

/* Drops a probed message over its bound.  Received truncated into a small
 * buffer it should be cut short with an error (MPI_ERR_TRUNCATE), but Open
 * MPI 4.1's shared-memory single copy (CMA) writes the whole message past
 * such a buffer: it goes to a mapping of its full size instead, whose
 * pages the kernel gives only as the message fills them, unmapped at once. */
static void drop(MPI_Message *m, int count)
{
    size_t size = count > 0 ? (size_t)count : 1;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        unsigned char small[64];
        (void)MPI_Mrecv(small, (int)sizeof small, MPI_BYTE, m, MPI_STATUS_IGNORE);
        return;
    }
    (void)MPI_Mrecv(p, count, MPI_BYTE, m, MPI_STATUS_IGNORE);
    munmap(p, size);
}

/* Receives one probed message into a buffer of its size, or drops it:
 * -EMSGSIZE over max_len, -ENOMEM. */
static int receive(MPI_Message *m, const MPI_Status *st, size_t max_len, unsigned char **buf,
                   size_t *len)
{
    int count = 0;
    *buf = NULL;
    *len = 0;
    if (MPI_Get_count(st, MPI_BYTE, &count) != MPI_SUCCESS || count < 0 ||
        (size_t)count > max_len) {
        drop(m, count);
        return -EMSGSIZE;
    }
    unsigned char *p = count ? malloc((size_t)count) : NULL;
    if (count && !p) {
        drop(m, count);
        return -ENOMEM;
    }
    if (MPI_Mrecv(p, count, MPI_BYTE, m, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        free(p);
        return -EPROTO;
    }
    *buf = p;
    *len = (size_t)count;
    return 0;
}

/* Every message waiting from the ranks. */
static void pump_mpi(rank0 *r)
{
    for (;;) {
        int flag = 0;
        MPI_Message m;
        MPI_Status st;
        if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, r->env.comm, &flag, &m, &st) != MPI_SUCCESS ||
            !flag)
            return;
        int e = st.MPI_SOURCE;
        if (e <= 0 || e >= r->neps) {   /* not a rank we serve with: drop it */
            int count = 0;
            (void)MPI_Get_count(&st, MPI_BYTE, &count);
            drop(&m, count);
            continue;
        }
        endpoint *ep = &r->eps[e];
        size_t bound = st.MPI_TAG == INVOKER__TAG_DATA ? r->max_msg : 64;
        unsigned char *buf;
        size_t len;
        int rc = receive(&m, &st, bound, &buf, &len);
        /* Now, not when the pass began: a long pass (callbacks, a slow
         * host) must not make a rank that spoke during it look silent. */
        ep->heard_ns = invoker__now_ns();
        r->traffic |= st.MPI_TAG == INVOKER__TAG_DATA;
        if (st.MPI_TAG == INVOKER__TAG_BYE)
            ep->bye = true;
        if (rc != 0) {   /* -ENOMEM too: its outcomes are gone with it */
            lose(r, e, EP_RETIRED);
        } else if (rc == 0 && ep->state == EP_LIVE) {
            if (st.MPI_TAG == INVOKER__TAG_DATA) {
                if (!take(r, e, buf, len))
                    lose(r, e, EP_RETIRED);
            } else if (st.MPI_TAG == INVOKER__TAG_AGENT_LOST) {
                lose(r, e, EP_RETIRED);
            }
        }
        free(buf);
    }
}

static void pump_agent(rank0 *r)
{
    endpoint *ep = &r->eps[0];
    if (ep->state != EP_LIVE)
        return;
    if (invoker__link_flush(&r->agent) != 0 || invoker__link_read(&r->agent, r->max_msg) < 0) {
        lose(r, 0, EP_RETIRED);
        return;
    }
    size_t len;
    bool bad = false;
    const unsigned char *msg;
    while (ep->state == EP_LIVE &&
           (msg = invoker__link_next(&r->agent, &len, r->max_msg, &bad)) != NULL) {
        r->traffic = true;
        if (!take(r, 0, msg, len))
            bad = true;
        if (bad)
            break;
    }
    if (ep->state == EP_LIVE && (bad || r->agent.eof))
        lose(r, 0, EP_RETIRED);
    ep->heard_ns = r->agent.heard_ns;
}

static void check_silence(rank0 *r, uint64_t now)
{
    uint64_t limit = (uint64_t)(r->env.rank_timeout * 1e9);
    for (int e = 0; e < r->neps; e++) {
        endpoint *ep = &r->eps[e];
        if (ep->state == EP_LIVE && now > ep->heard_ns && now - ep->heard_ns > limit)
            lose(r, e, e == 0 ? EP_RETIRED : EP_STUCK);
    }
}

static void pump(rank0 *r)
{
    uint64_t start = invoker__now_ns(), calls = r->inv->calls;
    pump_mpi(r);
    pump_agent(r);
    uint64_t now = invoker__now_ns();
    for (int e = 0; e < r->neps; e++) {
        endpoint *ep = &r->eps[e];
        if (ep->unsent) {
            ep->unsent = false;
            lose(r, e, EP_RETIRED);
        }
        /* Callbacks ran in this pass: rank 0 was not listening while they
         * did, and what a rank said meanwhile may only be received in the
         * next pass.  That time counts for no one's silence. */
        uint64_t deaf = r->inv->calls != calls ? now - start : 0;
        if (deaf > DEAF_NS && ep->state == EP_LIVE && ep->heard_ns < now)
            ep->heard_ns = now - ep->heard_ns > deaf ? ep->heard_ns + deaf : now;
    }
    check_silence(r, now);
    test_reqs(r);
}

/* ---- ops ----------------------------------------------------------------- */

static size_t window(const endpoint *ep)
{
    size_t per = 2;
    if (ep->avg_run > 0) {
        double want = PREFETCH_NS / 1e9 / ep->avg_run + 1;   /* rounded up */
        per = want > PREFETCH_MAX ? PREFETCH_MAX : (size_t)want;
    }
    return ep->workers + ep->workers * per;
}

static void tick(rank0 *r)
{
    size_t out = 0;
    for (int e = 1; e < r->neps; e++)
        out += r->eps[e].state == EP_LIVE ? r->eps[e].inflight : 0;
    bool want = out > 0;
    if (want == r->ticking)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (want) {
        its.it_value.tv_nsec = (long)INVOKER__MPI_TICK_NS;
        its.it_interval.tv_nsec = (long)INVOKER__MPI_TICK_NS;
    }
    if (timerfd_settime(r->tickfd, 0, &its, NULL) == 0)
        r->ticking = want;
}

static int mpi_refill(invoker *inv)
{
    rank0 *r = state(inv);
    bool any = false;
    for (int e = 0; e < r->neps; e++)
        any |= r->eps[e].state == EP_LIVE;
    invoker__task *t;
    if (!any) {
        while ((t = inv->pending.head) != NULL)
            invoker__sched_report(inv, t, INVOKER_FAIL_NO_WORKER, 0);
        return 0;
    }
    int rc = 0;
    while ((t = inv->pending.head) != NULL) {
        int best = -1;
        size_t room = 0;
        for (int e = 0; e < r->neps; e++) {
            endpoint *ep = &r->eps[e];
            size_t w = window(ep);
            if (ep->state == EP_LIVE && ep->inflight < w && w - ep->inflight > room) {
                room = w - ep->inflight;
                best = e;
            }
        }
        if (best < 0)
            break;
        invoker__mpi_rec rec;
        memset(&rec, 0, sizeof rec);
        rec.type = INVOKER__MPI_TASK;
        rec.id = t->id;
        rec.gen = t->gen & 0xffffu;
        rec.flags = t->adaptive ? INVOKER__MPI_ADAPTIVE : 0;
        rec.value = t->timeout;
        rec.len = t->arg_len;
        if ((rc = put(r, best, &rec, invoker__sched_arg(inv, t), t->arg_len)) != 0)
            break;
        invoker__sched_start(inv, t);
        t->queue_end = (uint64_t)best;
        r->eps[best].inflight++;
    }
    for (int e = 0; e < r->neps; e++)
        flush_ep(r, e);
    tick(r);
    return rc;
}

/* Whether every endpoint with tasks holds more than twice its workers:
 * then none waits on us, and a millisecond's sleep costs nothing but a
 * little latency, where shorter ones would cost its workers' CPUs. */
static bool stocked(const rank0 *r)
{
    for (int e = 0; e < r->neps; e++) {
        const endpoint *ep = &r->eps[e];
        if (ep->state == EP_LIVE && ep->inflight && ep->inflight <= 2 * (size_t)ep->workers)
            return false;
    }
    return true;
}

static int mpi_run(invoker *inv, int timeout_ms, bool gather)
{
    (void)gather;
    rank0 *r = state(inv);
    uint64_t calls0 = inv->calls;
    uint64_t until = timeout_ms > 0 ? invoker__now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    for (;;) {
        invoker__sched_deliver(inv);
        pump(r);
        invoker__sched_deliver(inv);
        (void)mpi_refill(inv);
        if (inv->calls != calls0 || timeout_ms == 0 || inv->outstanding == 0)
            break;
        uint64_t now = invoker__now_ns();
        if (timeout_ms > 0 && now >= until)
            break;
        /* MPI has no descriptor: with tasks out, look again within a
         * tick, sooner right after traffic (see invoker__mpi_nap). */
        if (r->traffic && !stocked(r))
            r->nap_ns = INVOKER__MPI_NAP_NS;
        r->traffic = false;
        if (timeout_ms > 0 && until - now < r->nap_ns)
            r->nap_ns = until - now;
        invoker__mpi_nap(inv->epfd, POLLIN, &r->nap_ns);
        struct epoll_event evs[16];
        int n = epoll_wait(inv->epfd, evs, 16, 0);
        for (int i = 0; i < n; i++) {
            uint64_t scratch;
            unsigned type = (unsigned)(evs[i].data.u64 >> 32);
            if (type == INVOKER__EV_KICK) {
                (void)invoker__fd_read(inv->kickfd, &scratch, sizeof scratch);
                inv->kicked = false;
            } else if (type == INVOKER__EV_TIMER) {
                (void)invoker__fd_read(inv->timerfd, &scratch, sizeof scratch);
            } else if (type == EV_TICK) {
                (void)invoker__fd_read(r->tickfd, &scratch, sizeof scratch);
            }
        }
    }
    if (inv->pending.head)
        (void)mpi_refill(inv);
    tick(r);
    return (int)(inv->calls - calls0);
}

static void mpi_cancel(invoker *inv, invoker__task *t)
{
    rank0 *r = state(inv);
    if (t->state == INVOKER__TASK_INFLIGHT) {
        int e = (int)t->queue_end;
        endpoint *ep = &r->eps[e];
        ep->inflight -= ep->inflight > 0;
        if (ep->state == EP_LIVE) {
            invoker__mpi_rec rec;
            memset(&rec, 0, sizeof rec);
            rec.type = INVOKER__MPI_CANCEL;
            rec.id = t->id;
            rec.gen = t->gen & 0xffffu;
            if (put(r, e, &rec, NULL, 0) == 0 && inv->depth == 0)
                flush_ep(r, e);   /* from a callback: at the end of the round */
        }
    }
    invoker__sched_report(inv, t, INVOKER_FAIL_CANCELLED, 0);
}

static unsigned mpi_busy(const invoker *inv)
{
    const rank0 *r = state(inv);
    unsigned busy = 0;
    for (int e = 0; e < r->neps; e++) {
        const endpoint *ep = &r->eps[e];
        if (ep->state == EP_LIVE)
            busy += (unsigned)(ep->inflight < ep->workers ? ep->inflight : ep->workers);
    }
    return busy;
}

static void mpi_stats(const invoker *inv, invoker_stats *out)
{
    const rank0 *r = state(inv);
    for (int e = 0; e < r->neps; e++) {
        const endpoint *ep = &r->eps[e];
        out->workers_started += ep->beat_started;
        if (ep->state == EP_LIVE)
            out->workers += ep->beat_workers;
    }
}

/* STOP to every rank that can hear it, then their BYE, draining what
 * they still send; up to rank_timeout. */
static void stop_ranks(rank0 *r)
{
    for (int e = 1; e < r->neps; e++)
        if (r->eps[e].state != EP_STUCK)
            (void)isend(r, e, INVOKER__TAG_STOP, NULL, 0);
    uint64_t until = invoker__now_ns() + (uint64_t)(r->env.rank_timeout * 1e9);
    for (;;) {
        bool waiting = false;
        for (int e = 1; e < r->neps; e++)
            waiting |= r->eps[e].state != EP_STUCK && !r->eps[e].bye;
        if (!waiting)
            break;
        uint64_t now = invoker__now_ns();
        if (now >= until) {
            for (int e = 1; e < r->neps; e++)
                if (!r->eps[e].bye)
                    r->any_stuck = true;
            break;
        }
        int flag = 0;
        MPI_Message m;
        MPI_Status st;
        if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, r->env.comm, &flag, &m, &st) != MPI_SUCCESS) {
            r->any_stuck = true;
            break;
        }
        if (!flag) {
            test_reqs(r);
            usleep(500);
            continue;
        }
        unsigned char *buf;
        size_t len;
        (void)receive(&m, &st, r->max_msg, &buf, &len);
        free(buf);
        if (st.MPI_SOURCE > 0 && st.MPI_SOURCE < r->neps && st.MPI_TAG == INVOKER__TAG_BYE)
            r->eps[st.MPI_SOURCE].bye = true;
    }
}

static void mpi_shutdown(invoker *inv)
{
    rank0 *r = state(inv);
    inv->destroying = true;
    /* Outcomes already here count; the rest are SHUTDOWN. */
    if (inv->depth == 0)
        pump(r);
    for (;;) {
        invoker__sched_deliver(inv);
        invoker__task *t = inv->inflight.head ? inv->inflight.head : inv->pending.head;
        if (!t)
            break;
        invoker__sched_error(inv, t, INVOKER_FAIL_SHUTDOWN, 0);
    }
}

static void finish(rank0 *r)
{
    invoker__link_close(&r->agent);
    invoker__agent_end(r->env.agent_pid, 2000);
    r->env.agent_pid = -1;
    stop_ranks(r);
    if (r->any_stuck) {
        /* A stuck relay cannot be ended through MPI: the launcher ends the
         * job (see invoker_mpi.h).  Every callback has been made.  One on
         * this node is killed first: a stopped process never ends on
         * SIGTERM, and MPICH's hydra then waits for it without end. */
        for (int e = 1; e < r->neps; e++)
            if (r->eps[e].state == EP_STUCK && r->eps[e].pid > 1)
                (void)kill(r->eps[e].pid, SIGKILL);
        fflush(NULL);
        MPI_Abort(r->env.comm, 1);
    }
    uint64_t until = invoker__now_ns() + 5000000000ull;
    while (r->nreqs && invoker__now_ns() < until) {
        test_reqs(r);
        if (r->nreqs)
            usleep(500);
    }
    test_reqs(r);
    MPI_Comm_free(&r->env.comm);
    MPI_Finalize();
}

static void mpi_release(invoker *inv)
{
    rank0 *r = state(inv);
    finish(r);
    invoker__fd_close(&r->tickfd);   /* inv's epoll set closes after us */
    for (int e = 0; e < r->neps; e++)
        free(r->eps[e].batch);
    for (size_t i = 0; i < r->nreqs; i++)
        free(r->reqs[i].buf);
    free(r->reqs);
    free(r->eps);
    free(r);
    inv->backend = NULL;
}

static const invoker__backend_ops mpi_ops = {
    .refill = mpi_refill,
    .run = mpi_run,
    .cancel = mpi_cancel,
    .busy = mpi_busy,
    .stats = mpi_stats,
    .shutdown = mpi_shutdown,
    .release = mpi_release,
};

/* ---- creation -------------------------------------------------------------- */

static int own_agent(rank0 *r)
{
    endpoint *ep = &r->eps[0];
    int workers = invoker__link_start_agent(&r->agent, r->env.agent_workers,
                                            r->env.rank_timeout / 4,
                                            (int)(r->env.rank_timeout * 1000));
    if (workers <= 0) {
        invoker__link_close(&r->agent);
        invoker__agent_end(r->env.agent_pid, 1000);
        r->env.agent_pid = -1;
        return 0;
    }
    ep->state = EP_LIVE;
    ep->workers = ep->beat_workers = (unsigned)workers;
    ep->heard_ns = invoker__now_ns();
    struct epoll_event ev = { .events = EPOLLIN };
    ev.data.u64 = (uint64_t)EV_AGENT << 32;
    if (epoll_ctl(r->inv->epfd, EPOLL_CTL_ADD, r->agent.fd, &ev) != 0)
        return -errno;
    return 0;
}

/* Every rank's HELLO, up to rank_timeout; those silent are stuck. */
static void hellos(rank0 *r)
{
    int missing = r->neps - 1;
    char host[64] = "";
    (void)gethostname(host, sizeof host - 1);
    uint64_t until = invoker__now_ns() + (uint64_t)(r->env.rank_timeout * 1e9);
    while (missing > 0 && invoker__now_ns() < until) {
        int flag = 0;
        MPI_Message m;
        MPI_Status st;
        if (MPI_Improbe(MPI_ANY_SOURCE, INVOKER__TAG_HELLO, r->env.comm, &flag, &m, &st) != MPI_SUCCESS)
            break;
        if (!flag) {
            usleep(200);
            continue;
        }
        unsigned char *buf;
        size_t len;
        int rc = receive(&m, &st, sizeof(invoker__mpi_hello), &buf, &len);
        int e = st.MPI_SOURCE;
        invoker__mpi_hello hello;
        memset(&hello, 0, sizeof hello);
        if (rc == 0 && len == sizeof hello)
            memcpy(&hello, buf, sizeof hello);
        hello.host[sizeof hello.host - 1] = 0;
        int32_t workers = hello.workers;
        free(buf);
        if (e <= 0 || e >= r->neps || r->eps[e].heard_ns)
            continue;
        missing--;
        endpoint *ep = &r->eps[e];
        ep->heard_ns = invoker__now_ns();
        if (hello.pid > 1 && !strcmp(hello.host, host))
            ep->pid = (pid_t)hello.pid;
        if (workers > 0) {
            ep->state = EP_LIVE;
            ep->workers = ep->beat_workers = (unsigned)workers;
        } else {
            ep->state = EP_RETIRED;   /* no agent: it only waits for STOP */
        }
    }
    for (int e = 1; e < r->neps; e++)
        if (!r->eps[e].heard_ns) {
            r->eps[e].state = EP_STUCK;
            r->any_stuck = true;
        }
    int offset = 0;
    for (int e = 0; e < r->neps; e++) {
        r->eps[e].offset = offset;
        offset += (int)r->eps[e].workers;
    }
}

int invoker__rank0_create(invoker **out, const invoker_config *cfg, invoker__mpi_env *env)
{
    rank0 *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->env = *env;
    r->neps = env->size;
    r->tickfd = -1;
    r->max_msg = INVOKER__MPI_BATCH + invoker__mpi_rec_size(env->max_result);
    invoker__link_init(&r->agent, env->agent_fd);
    int rc = -ENOMEM;
    if (!(r->eps = calloc((size_t)r->neps, sizeof *r->eps))) {
        r->neps = 0;
        for (int e = 1; e < env->size; e++)   /* small: sent eagerly */
            (void)MPI_Send(NULL, 0, MPI_BYTE, e, INVOKER__TAG_STOP, env->comm);
        goto fail;
    }
    rc = invoker__sched_create(&r->inv, cfg, &mpi_ops, r);
    if (rc)
        goto fail;
    r->tickfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN };
    ev.data.u64 = (uint64_t)EV_TICK << 32;
    if (r->tickfd < 0 || epoll_ctl(r->inv->epfd, EPOLL_CTL_ADD, r->tickfd, &ev) != 0) {
        rc = -errno;
        goto fail_inv;
    }
    if ((rc = own_agent(r)) != 0)
        goto fail_inv;
    hellos(r);
    *out = r->inv;
    return 0;

fail_inv:
    /* Nothing was submitted: destroy stops the ranks and finalises. */
    (void)invoker_destroy(r->inv);
    return rc;
fail:
    finish(r);
    invoker__link_close(&r->agent);
    free(r->eps);
    free(r);
    return rc;
}

/*
 * The node agent: a process forked from the application before MPI_Init,
 * that runs an ordinary local invoker for its MPI process.  The MPI
 * process never forks after MPI_Init (RDMA stacks break on it) and never
 * runs the objective: all of that happens here, through the public API.
 *
 * Rank 0 decides retries (the local invoker has none); each task carries
 * its rank-0 id and dispatch number in its tag, so that a cancel can find
 * it (invoker_cancel_tag) and its outcome can name it.
 */
#include "mpi_internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define GEN_BITS 16u

typedef struct agent {
    invoker__link  link;
    invoker       *inv;
    unsigned char *out;           /* outcome records not yet sent */
    size_t         len, cap;
    bool           broken;        /* out of memory: the outcomes are lost */
    uint64_t       since;         /* when the oldest unsent outcome came; 0: none */
    unsigned       workers;
} agent;

#define HOLD_NS 1000000ull

/* Every worker has at least one task queued behind the one it runs. */
static bool deep(const agent *a)
{
    invoker_stats st;
    invoker_get_stats(a->inv, &st);
    return st.queued >= a->workers;
}

/* The tag is never dereferenced (the core's promise): it only names the
 * rank-0 task, so that invoker_cancel_tag finds it with no table here. */
static void *tag_of(uint64_t id, uint32_t gen)
{
    uintptr_t v = (uintptr_t)(id << GEN_BITS | (gen & ((1u << GEN_BITS) - 1)));
    return (void *)v;   // NOLINT(performance-no-int-to-ptr): a name, never a pointer
}

/* One record, its payload data (len bytes) then more (more_len bytes). */
static void put2(agent *a, const invoker__mpi_rec *r, const void *data, size_t len,
                 const void *more, size_t more_len)
{
    size_t size = invoker__mpi_rec_size(len + more_len);
    /* A message holds a batch's worth, or one record larger than that:
     * rank 0 bounds what it receives by it. */
    if (a->len && a->len + size > INVOKER__MPI_BATCH) {
        if (invoker__link_send(&a->link, a->out, a->len) != 0)
            a->broken = true;
        a->len = 0;
    }
    if (a->len + size > a->cap) {
        size_t cap = a->cap ? a->cap : 65536;
        while (cap < a->len + size)
            cap *= 2;
        unsigned char *p = realloc(a->out, cap);
        if (!p) {
            a->broken = true;
            return;
        }
        a->out = p;
        a->cap = cap;
    }
    memcpy(a->out + a->len, r, sizeof *r);
    if (len)
        memcpy(a->out + a->len + sizeof *r, data, len);
    if (more_len)
        memcpy(a->out + a->len + sizeof *r + len, more, more_len);
    memset(a->out + a->len + sizeof *r + len + more_len, 0, size - sizeof *r - len - more_len);
    a->len += size;
}

static void put(agent *a, const invoker__mpi_rec *r, const void *data, size_t len)
{
    put2(a, r, data, len, NULL, 0);
}

static void outcome(agent *a, const invoker_task *task, uint32_t type, int fail, int code,
                    const void *data, size_t len)
{
    uintptr_t tag = (uintptr_t)task->tag;
    invoker__mpi_rec r;
    memset(&r, 0, sizeof r);
    r.type = type;
    r.id = (uint64_t)tag >> GEN_BITS;
    r.gen = (uint32_t)(tag & ((1u << GEN_BITS) - 1));
    /* The stderr tail (capture_stderr) follows the result bytes. */
    size_t tail = task->stderr_tail ? task->stderr_tail_len : 0;
    if (tail > INVOKER__MPI_TAIL_MAX)
        tail = INVOKER__MPI_TAIL_MAX;
    r.flags = (task->attempts < 0xffffu ? task->attempts : 0xffffu) | (uint32_t)tail << 16;
    r.worker = task->worker;
    r.value = task->run_seconds;
    r.cpu_seconds = task->cpu_seconds;
    r.max_rss_kib = task->max_rss_kib;
    r.fail = fail;
    r.code = code;
    r.len = len + tail;
    put2(a, &r, data, len, task->stderr_tail, tail);
}

static void on_result(const invoker_task *task, const void *result, size_t len, void *user)
{
    outcome(user, task, INVOKER__MPI_RESULT, 0, 0, result, len);
}

static void on_error(const invoker_task *task, invoker_failure fail, int code, void *user)
{
    outcome(user, task, INVOKER__MPI_ERROR, (int)fail, code, NULL, 0);
}

/* A task the local invoker refused: rank 0 hears it as no worker. */
static void refused(agent *a, const invoker__mpi_rec *in, int rc)
{
    invoker__mpi_rec r;
    memset(&r, 0, sizeof r);
    r.type = INVOKER__MPI_ERROR;
    r.id = in->id;
    r.gen = in->gen & ((1u << GEN_BITS) - 1);
    r.worker = -1;
    r.max_rss_kib = -1;
    r.fail = INVOKER_FAIL_NO_WORKER;
    r.code = rc;
    put(a, &r, NULL, 0);
}

/* The records of one message from the relay; false if it is malformed. */
static bool take(agent *a, const unsigned char *msg, size_t len)
{
    size_t off = 0;
    while (off < len) {
        invoker__mpi_rec r;
        if (len - off < sizeof r)
            return false;
        memcpy(&r, msg + off, sizeof r);
        if (r.len > len - off - sizeof r)
            return false;
        const unsigned char *data = msg + off + sizeof r;
        off += invoker__mpi_rec_size(r.len);
        if (off > len)
            return false;
        int rc = 0;
        if (r.type == INVOKER__MPI_TASK) {
            void *tag = tag_of(r.id, r.gen);
            rc = (r.flags & INVOKER__MPI_ADAPTIVE)
                     ? invoker_submit(a->inv, data, (size_t)r.len, tag, NULL)
                     : invoker_submit_timeout(a->inv, data, (size_t)r.len, tag, r.value, NULL);
            if (rc)
                refused(a, &r, rc);
        } else if (r.type == INVOKER__MPI_CANCEL) {
            (void)invoker_cancel_tag(a->inv, tag_of(r.id, r.gen));
        } else {
            return false;
        }
    }
    return true;
}

static void beat(agent *a)
{
    invoker_stats st;
    invoker_get_stats(a->inv, &st);
    invoker__mpi_rec r;
    memset(&r, 0, sizeof r);
    r.type = INVOKER__MPI_BEAT;
    r.code = (int32_t)st.workers;
    r.fail = (int32_t)st.busy;
    r.id = st.workers_started;
    put(a, &r, NULL, 0);
}

/* Blocks for the relay's START; false if the socket ends first. */
static bool await_start(agent *a, invoker__mpi_rec *start)
{
    for (;;) {
        size_t len;
        bool bad;
        const unsigned char *msg = invoker__link_next(&a->link, &len, 4096, &bad);
        if (msg) {
            if (len < sizeof *start)
                return false;
            memcpy(start, msg, sizeof *start);
            return start->type == INVOKER__MPI_START;
        }
        if (bad || a->link.eof || a->link.fd < 0)
            return false;
        struct pollfd p = { .fd = a->link.fd, .events = POLLIN };
        (void)poll(&p, 1, -1);
        if (invoker__link_read(&a->link, 4096) < 0)
            return false;
    }
}

static void send_ready(agent *a, int workers)
{
    invoker__mpi_rec r;
    memset(&r, 0, sizeof r);
    r.type = INVOKER__MPI_READY;
    r.code = workers;
    (void)invoker__link_send(&a->link, &r, sizeof r);
    (void)invoker__link_drain(&a->link, 5000);
}

void invoker__agent_main(int fd, const invoker_config *cfg, const invoker_mpi_options *opt)
{
    (void)opt;
    agent a;
    memset(&a, 0, sizeof a);
    invoker__link_init(&a.link, fd);
    invoker__mpi_rec start;
    if (!await_start(&a, &start) || start.code <= 0)
        _exit(0);

    invoker_config c;
    size_t size = cfg->size ? cfg->size : sizeof *cfg;
    memset(&c, 0, sizeof c);
    memcpy(&c, cfg, size < sizeof c ? size : sizeof c);
    c.size = sizeof c;
    c.workers = (unsigned)start.code;
    c.retries = 0;                /* rank 0 decides */
    c.max_queued = 0;             /* rank 0's flow control bounds what comes */
    c.journal = NULL;             /* journal and cache are rank 0's */
    c.cache = 0;
    c.on_result = on_result;
    c.on_error = on_error;
    c.user = &a;
    if (invoker_create(&a.inv, &c) != 0) {
        send_ready(&a, 0);
        _exit(0);
    }
    invoker_stats st;
    invoker_get_stats(a.inv, &st);
    a.workers = c.workers;
    send_ready(&a, (int)c.workers);

    uint64_t period = start.value > 0 ? (uint64_t)(start.value * 1e9) : 1000000000ull;
    uint64_t next_beat = invoker__now_ns();
    size_t max_msg = (c.max_arg_bytes ? c.max_arg_bytes : INVOKER__DEFAULT_MAX) + ((size_t)64 << 20);
    for (;;) {
        uint64_t now = invoker__now_ns();
        if (now >= next_beat) {
            beat(&a);
            next_beat = now + period;
        }
        /* Outcomes leave at once, unless every worker has tasks queued
         * behind it: then rank 0 is in no hurry, and those of a
         * millisecond leave together (one wake of the relay and of rank 0
         * rather than one each). */
        if (a.len && !a.since)
            a.since = now;
        if (a.len && (now - a.since >= HOLD_NS || !deep(&a))) {
            if (a.broken || invoker__link_send(&a.link, a.out, a.len) != 0)
                break;   /* the relay is gone, or its outcomes are: end */
            a.len = 0;
            a.since = 0;
        }
        struct pollfd p[2] = {
            { .fd = a.link.fd, .events = POLLIN | (a.link.out_len ? POLLOUT : 0) },
            { .fd = invoker_fd(a.inv), .events = POLLIN },
        };
        int wait_ms = (int)((next_beat - now) / 1000000ull) + 1;
        if (a.len)
            wait_ms = 1;
        (void)poll(p, 2, wait_ms);
        if (invoker__link_flush(&a.link) != 0)
            break;
        if (invoker__link_read(&a.link, max_msg) < 0)
            break;
        size_t len;
        bool bad;
        const unsigned char *msg;
        while ((msg = invoker__link_next(&a.link, &len, max_msg, &bad)) != NULL)
            if (!take(&a, msg, len))
                goto out;
        if (bad || a.link.eof)
            break;
        if (invoker_poll(a.inv, 0) < 0)
            break;
    }
out:
    (void)invoker_destroy(a.inv);
    invoker__link_close(&a.link);
    free(a.out);
    _exit(0);
}

void invoker__agent_end(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return;
    uint64_t until = invoker__now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return;
        if (invoker__now_ns() >= until) {
            (void)kill(pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
            return;
        }
        usleep(2000);
    }
}

/*
 * A serving rank's MPI process: a relay between rank 0 and its node agent.
 * Batches of records from rank 0 go to the agent's socket as they are;
 * what the agent sends goes to rank 0, several of its messages to one MPI
 * message when they come together.  It beats to rank 0 on its own, so
 * that rank 0 tells a stuck relay from a stopped agent, and reports its
 * agent lost when the socket ends or the agent is silent past
 * rank_timeout.  It sleeps in poll() on the agent's socket, at most a
 * millisecond between looks at MPI, so it never takes a CPU from the
 * workers of its node.
 */
#include "mpi_internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

typedef struct relay {
    invoker__mpi_env *env;
    invoker__link     link;
    bool              agent_ok;   /* serving; false once lost or retired */
    bool              unwritable; /* a write to the agent failed: read, then lose it */
    unsigned char    *batch;      /* agent messages for rank 0 */
    size_t            len, cap;
    size_t            max_in;     /* bound on a message from rank 0 */
    bool              traffic;    /* something moved in this pass */
    int64_t           backlog;    /* tasks sent to the agent, less outcomes back */
    int32_t           workers;    /* the agent's */
    uint64_t          nap_ns;
} relay;

static int send0(relay *r, int tag, const void *buf, size_t len)
{
    return MPI_Send(buf, (int)len, MPI_BYTE, 0, tag, r->env->comm) == MPI_SUCCESS ? 0 : -EPROTO;
}

static void agent_lost(relay *r)
{
    if (!r->agent_ok)
        return;
    r->agent_ok = false;
    invoker__link_close(&r->link);
    invoker__agent_end(r->env->agent_pid, 0);
    r->env->agent_pid = -1;
    (void)send0(r, INVOKER__TAG_AGENT_LOST, NULL, 0);
}

#ifdef INVOKER_MPI_TEST_HOOKS
/* Test builds only: replaces a batch for rank 0 with what the test asks
 * for (INVOKER_MPI_TEST_GARBAGE), to show rank 0 retiring the rank (or,
 * mode 5, keeping it). */
static void spoil(relay *r)
{
    int mode = invoker__mpi_test_garbage(r->env->rank);
    if (mode <= 0 || r->len < sizeof(invoker__mpi_rec))
        return;
    invoker__mpi_rec rec;
    memcpy(&rec, r->batch, sizeof rec);
    switch (mode) {
    case 1:   /* a record longer than its message */
        rec.len = r->len;
        break;
    case 2:   /* an id never issued, in an outcome */
        if (rec.type != INVOKER__MPI_RESULT && rec.type != INVOKER__MPI_ERROR)
            return;
        rec.id = UINT64_MAX / 2;
        break;
    case 3:   /* garbage */
        for (size_t i = 0; i < sizeof rec; i++)
            ((unsigned char *)&rec)[i] = (unsigned char)(i * 37u + 11u);
        break;
    case 5:   /* not garbage: an outcome of a task the agent ran twice (its
               * packet-mate spoiled what it held), which rank 0 must take */
        if (rec.type != INVOKER__MPI_RESULT && rec.type != INVOKER__MPI_ERROR)
            return;
        rec.flags = (rec.flags & ~0xffffu) | 2u;
        break;
    case 4: { /* a message over any bound rank 0 sets */
        size_t big = r->max_in + ((size_t)1 << 20);
        unsigned char *p = calloc(1, big);
        if (p) {
            (void)send0(r, INVOKER__TAG_DATA, p, big);
            free(p);
        }
        return;
    }
    default:
        return;
    }
    memcpy(r->batch, &rec, sizeof rec);
}
#endif

static int forward(relay *r)
{
    if (!r->len)
        return 0;
#ifdef INVOKER_MPI_TEST_HOOKS
    spoil(r);
#endif
    int rc = send0(r, INVOKER__TAG_DATA, r->batch, r->len);
    r->len = 0;
    r->traffic = true;
    return rc;
}

static int gather(relay *r, const unsigned char *msg, size_t len)
{
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 65536;
        while (cap < r->len + len)
            cap *= 2;
        unsigned char *p = realloc(r->batch, cap);
        if (!p)
            return -ENOMEM;
        r->batch = p;
        r->cap = cap;
    }
    memcpy(r->batch + r->len, msg, len);
    r->len += len;
    return 0;
}

/* The records of type in a message, counted from their headers. */
static int64_t count(const unsigned char *msg, size_t len, uint32_t type, uint32_t type2)
{
    int64_t n = 0;
    for (size_t off = 0; off <= len && len - off >= sizeof(invoker__mpi_rec);) {
        invoker__mpi_rec rec;
        memcpy(&rec, msg + off, sizeof rec);
        n += rec.type == type || rec.type == type2;
        if (rec.len > len - off - sizeof rec)
            break;
        off += invoker__mpi_rec_size(rec.len);
    }
    return n;
}

/* What rank 0 sent; 1 at STOP, or -errno. */
static int from_rank0(relay *r)
{
    for (;;) {
        int flag = 0;
        MPI_Message m;
        MPI_Status st;
        if (MPI_Improbe(0, MPI_ANY_TAG, r->env->comm, &flag, &m, &st) != MPI_SUCCESS)
            return -EPROTO;
        if (!flag)
            return 0;
        int count_bytes = 0;
        if (MPI_Get_count(&st, MPI_BYTE, &count_bytes) != MPI_SUCCESS || count_bytes < 0)
            return -EPROTO;
        unsigned char *buf = count_bytes ? malloc((size_t)count_bytes) : NULL;
        if (count_bytes && !buf)
            return -ENOMEM;
        if (MPI_Mrecv(buf, count_bytes, MPI_BYTE, &m, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
            free(buf);
            return -EPROTO;
        }
        int rc = 0;
        switch (st.MPI_TAG) {
        case INVOKER__TAG_DATA:
            r->traffic = true;
            r->backlog += count(buf, (size_t)count_bytes, INVOKER__MPI_TASK, INVOKER__MPI_TASK);
            /* A failed write loses the agent, but only after what it sent
             * before is read (from_agent): finished tasks stay finished. */
            if (r->agent_ok && !r->unwritable &&
                invoker__link_send(&r->link, buf, (size_t)count_bytes) != 0)
                r->unwritable = true;
            break;
        case INVOKER__TAG_RETIRE:
            if (r->agent_ok && r->env->agent_pid > 0) {   /* never kill(-1) */
                r->agent_ok = false;
                invoker__link_close(&r->link);
                (void)kill(r->env->agent_pid, SIGKILL);
                invoker__agent_end(r->env->agent_pid, 1000);
                r->env->agent_pid = -1;
            }
            break;
        case INVOKER__TAG_STOP:
            rc = 1;
            break;
        default:
            break;
        }
        free(buf);
        if (rc)
            return rc;
    }
}

/* What the agent sent, for rank 0; -errno if MPI failed. */
static int from_agent(relay *r, uint64_t now)
{
    if (!r->agent_ok)
        return 0;
    if (!r->unwritable && invoker__link_flush(&r->link) != 0)
        r->unwritable = true;
    if (invoker__link_read(&r->link, r->max_in) < 0) {
        agent_lost(r);
        return 0;
    }
    size_t len;
    bool bad;
    const unsigned char *msg;
    while ((msg = invoker__link_next(&r->link, &len, r->max_in, &bad)) != NULL) {
        if (r->len + len > INVOKER__MPI_BATCH && forward(r) != 0)
            return -EPROTO;
        if (gather(r, msg, len) != 0)
            return -ENOMEM;
        r->backlog -= count(msg, len, INVOKER__MPI_RESULT, INVOKER__MPI_ERROR);
    }
    if (forward(r) != 0)
        return -EPROTO;
    uint64_t silent = now > r->link.heard_ns ? now - r->link.heard_ns : 0;
    if (bad || r->link.eof || r->unwritable || silent > (uint64_t)(r->env->rank_timeout * 1e9))
        agent_lost(r);
    return 0;
}

int invoker__relay_main(invoker__mpi_env *env)
{
    relay r;
    memset(&r, 0, sizeof r);
    r.env = env;
    r.max_in = env->max_arg + env->max_result + INVOKER__MPI_BATCH + ((size_t)4 << 20);
    invoker__link_init(&r.link, env->agent_fd);
    int32_t workers = invoker__link_start_agent(&r.link, env->agent_workers,
                                                env->rank_timeout / 4,
                                                (int)(env->rank_timeout * 1000));
    r.agent_ok = workers > 0;
    r.workers = workers;
    if (!r.agent_ok) {
        invoker__link_close(&r.link);
        invoker__agent_end(env->agent_pid, 1000);
        env->agent_pid = -1;
    }
    invoker__mpi_hello hello;
    memset(&hello, 0, sizeof hello);
    hello.workers = workers;
    hello.pid = (int32_t)getpid();
    (void)gethostname(hello.host, sizeof hello.host - 1);
    int rc = send0(&r, INVOKER__TAG_HELLO, &hello, sizeof hello);
    uint64_t beat_ns = (uint64_t)(env->rank_timeout / 4 * 1e9);
    uint64_t next_beat = invoker__now_ns() + beat_ns;
    while (rc == 0) {
        if ((rc = from_rank0(&r)) != 0)
            break;
        uint64_t now = invoker__now_ns();
        if ((rc = from_agent(&r, now)) != 0)
            break;
        if (now >= next_beat) {
            rc = send0(&r, INVOKER__TAG_BEAT, NULL, 0);
            next_beat = now + beat_ns;
        }
        /* Short naps only while the agent may run dry: with more than
         * twice its workers' tasks in hand, rank 0's next ones can wait a
         * millisecond, and the CPUs are its workers'. */
        if (r.traffic && r.backlog <= 2 * (int64_t)r.workers)
            r.nap_ns = INVOKER__MPI_NAP_NS;
        else if (r.backlog > 2 * (int64_t)r.workers)
            r.nap_ns = 2 * INVOKER__MPI_TICK_NS;
        r.traffic = false;
        invoker__mpi_nap(r.agent_ok ? r.link.fd : -1,
                         (short)(POLLIN | (r.link.out_len ? POLLOUT : 0)), &r.nap_ns);
    }
    /* STOP (rc 1) or MPI failing: either way the agent goes first. */
    invoker__link_close(&r.link);
    invoker__agent_end(env->agent_pid, 2000);
    env->agent_pid = -1;
    if (rc == 1)
        (void)send0(&r, INVOKER__TAG_BYE, NULL, 0);
    free(r.batch);
    return rc == 1 ? 0 : rc;
}

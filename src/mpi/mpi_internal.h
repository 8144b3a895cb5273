/*
 * libinvoker_mpi's internal interfaces.
 *
 *   rank 0                               serving rank r
 *   scheduler + MPI backend (rank0.c)    relay (relay.c), the MPI process
 *     |  TAG_DATA: records, batched  <->   |  the same records, framed, over
 *     |  (MPI_Isend / MPI_Mprobe)          |  a socketpair
 *     +-- its own agent, over a socket     agent (agent.c): a local invoker
 *
 * Every hop carries the same records (struct invoker__mpi_rec, then len
 * bytes padded to 16, so that a result received into malloc'd memory is
 * 16-byte aligned for its callback, as locally).  On a socket a message is a 64-bit length, then its
 * records; over MPI one message is one batch of records.
 */
#ifndef INVOKER_MPI_INTERNAL_H
#define INVOKER_MPI_INTERNAL_H

#include "invoker_mpi.h"

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum invoker__mpi_type {
    INVOKER__MPI_TASK = 1,    /* rank 0 -> agent: id, gen, value = timeout,
                                 flags ADAPTIVE; len argument bytes */
    INVOKER__MPI_CANCEL,      /* rank 0 -> agent: id, gen */
    INVOKER__MPI_RESULT,      /* agent -> rank 0: id, gen, worker, value = run
                                 seconds, flags = attempts | tail bytes << 16;
                                 len result bytes, then the stderr tail */
    INVOKER__MPI_ERROR,       /* agent -> rank 0: as RESULT, fail and code */
    INVOKER__MPI_BEAT,        /* agent -> rank 0: code = workers, fail = busy,
                                 id = workers started */
    INVOKER__MPI_START,       /* relay -> agent: code = workers (0: exit),
                                 value = heartbeat period in seconds */
    INVOKER__MPI_READY,       /* agent -> relay: code = its workers (0: none) */
    INVOKER__MPI_TYPE_MAX
};
enum { INVOKER__MPI_ADAPTIVE = 1u };

typedef struct invoker__mpi_rec {   /* 64 bytes, then len bytes padded to 16 */
    uint32_t type;
    uint32_t flags;
    uint64_t id;
    uint32_t gen;
    int32_t  code;
    int32_t  fail;
    int32_t  worker;
    uint64_t len;
    double   value;
    double   cpu_seconds;         /* outcomes: the attempt's forensics */
    int64_t  max_rss_kib;
} invoker__mpi_rec;

typedef struct invoker__mpi_hello {
    int32_t  workers;             /* its agent's (0: none) */
    int32_t  pid;                 /* the relay's */
    char     host[64];            /* gethostname, NUL-terminated */
} invoker__mpi_hello;

/* MPI tags between rank 0 and a relay. */
enum {
    INVOKER__TAG_HELLO = 1,   /* relay -> 0: struct invoker__mpi_hello */
    INVOKER__TAG_DATA,        /* either way: records */
    INVOKER__TAG_BEAT,        /* relay -> 0: the relay lives */
    INVOKER__TAG_AGENT_LOST,  /* relay -> 0: its agent died or went silent */
    INVOKER__TAG_RETIRE,      /* 0 -> relay: end your agent, ignore data */
    INVOKER__TAG_STOP,        /* 0 -> relay: finish */
    INVOKER__TAG_BYE          /* relay -> 0: the last message it sends */
};

#define INVOKER__MPI_BATCH      ((size_t)256 << 10)  /* a batch's records, past one big one */
#define INVOKER__MPI_TAIL_MAX   4096u                /* a stderr tail (invoker_task's) */
#define INVOKER__MPI_TICK_NS    1000000ull           /* longest sleep with tasks out */
#define INVOKER__MPI_NAP_NS     50000ull             /* first sleep after traffic */

/* Sleeps in ppoll on fd (or just sleeps when fd < 0) for *nap_ns, then
 * lengthens *nap_ns by a quarter, up to INVOKER__MPI_TICK_NS: MPI has no descriptor, so
 * the MPI processes look at it often right after traffic (a round trip
 * costs no whole millisecond) and every millisecond when idle. */
void invoker__mpi_nap(int fd, short events, uint64_t *nap_ns);

static inline size_t invoker__mpi_rec_size(uint64_t len)
{
    return sizeof(invoker__mpi_rec) + (size_t)((len + 15u) & ~(uint64_t)15u);
}

/* ---- link.c: a framed, non-blocking socket ------------------------------ */

typedef struct invoker__link {
    int            fd;            /* -1: closed */
    unsigned char *in;            /* bytes read, not yet taken */
    size_t         in_len, in_cap;
    size_t         taken;         /* the message link_next handed out last */
    unsigned char *out;           /* bytes to write */
    size_t         out_off, out_len, out_cap;
    bool           eof;
    uint64_t       heard_ns;      /* when it last read anything */
} invoker__link;

void invoker__link_init(invoker__link *l, int fd);
void invoker__link_close(invoker__link *l);
/* Queues one message (the records at buf); 0 or -ENOMEM. */
int  invoker__link_send(invoker__link *l, const void *buf, size_t len);
/* Writes what it can without blocking; 0, or -errno (the peer is gone). */
int  invoker__link_flush(invoker__link *l);
/* Reads what it can without blocking; sets eof at the end.  Returns the
 * bytes read (>= 0) or -errno. */
ssize_t invoker__link_read(invoker__link *l, size_t max_msg);
/* The next whole message, or NULL; *len its bytes.  Valid until the next
 * call on l.  A length over max_msg sets *bad. */
const unsigned char *invoker__link_next(invoker__link *l, size_t *len, size_t max_msg, bool *bad);
/* Blocks until every queued byte is written (or the peer is gone). */
int  invoker__link_drain(invoker__link *l, int timeout_ms);
/* Sends START (workers, heartbeat period) and waits up to timeout_ms for
 * READY: the agent's workers, 0 when it has none or did not answer. */
int  invoker__link_start_agent(invoker__link *l, unsigned workers, double beat_s, int timeout_ms);

/* ---- agent.c: the node agent, forked before MPI_Init -------------------- */

/* Runs in the forked agent: waits for START on fd, serves, exits. */
void invoker__agent_main(int fd, const invoker_config *cfg, const invoker_mpi_options *opt)
    __attribute__((noreturn));
/* In the MPI process: reaps the agent (its socket already closed, the
 * word to finish), SIGKILLing it after timeout_ms. */
void invoker__agent_end(pid_t pid, int timeout_ms);

/* ---- relay.c: a serving rank ------------------------------------------- */

struct invoker__mpi_env;
int  invoker__relay_main(struct invoker__mpi_env *env);

/* ---- rank0.c: the backend on rank 0 ------------------------------------ */

int  invoker__rank0_create(invoker **out, const invoker_config *cfg,
                           struct invoker__mpi_env *env);

/* What invoker_mpi_create hands on (create.c). */
typedef struct invoker__mpi_env {
    MPI_Comm       comm;          /* a dup of MPI_COMM_WORLD, MPI_ERRORS_RETURN */
    int            rank, size;
    pid_t          agent_pid;     /* -1: none */
    int            agent_fd;      /* the relay's end of the agent's socket */
    unsigned       agent_workers; /* START's count for this rank's agent */
    double         rank_timeout;
    size_t         max_arg, max_result;
} invoker__mpi_env;

/* Test builds only (INVOKER_MPI_TEST_HOOKS): how the relay of this rank
 * breaks the protocol (INVOKER_MPI_TEST_GARBAGE=mode, on the rank
 * INVOKER_MPI_TEST_GARBAGE_RANK, 2 by default); 0: it does not. */
int  invoker__mpi_test_garbage(int rank);

#endif

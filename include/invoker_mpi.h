/*
 * invoker_mpi — the invoker API over the ranks of an MPI job
 * (libinvoker_mpi; link it with invoker::invoker_mpi or
 * `pkg-config invoker-mpi`).
 *
 * The same program runs on every rank (mpirun -np N ./app, or srun).  Each
 * calls invoker_mpi_create first in main().  Rank 0 gets an invoker: the
 * whole core API works on it, and its tasks run in the workers of every
 * serving rank.  The other ranks serve until rank 0 destroys its invoker,
 * then return INVOKER_MPI_SERVED, and main() returns.
 *
 * Process layout.  Before MPI_Init, every rank forks a node agent: an
 * ordinary local invoker (the config's objective, worker_init, limits,
 * timeouts, stderr capture) that does all the forking, killing and
 * replacing of workers.  The MPI process only relays tasks and outcomes
 * between rank 0 and its agent: it never forks after MPI_Init (RDMA stacks
 * break on it) and never runs the objective, so an objective that crashes
 * or hangs costs its task, not the rank.  Rank 0's own agent serves too
 * when rank0_workers says so.
 *
 * Guarantees, as locally: one callback per task, on rank 0; failures and
 * codes as the local invoker gives them (a remote timeout is
 * INVOKER_FAIL_TIMEOUT, a crash INVOKER_FAIL_CRASH with the signal, ...);
 * retries decided on rank 0 (cfg.retries), a retry going to any rank;
 * run_seconds, cpu_seconds, max_rss_kib and (with capture_stderr) the
 * stderr tail of the remote attempt, except for a task cancelled while it
 * ran: reported on rank 0 at once, it gets no remote tail.  The journal
 * and the cache (cfg.journal, cfg.cache) are rank 0's.
 * invoker_task.worker is a global slot: the workers of rank 0's agent
 * first, then each serving rank's in rank order.  invoker_get_stats counts
 * every rank's workers (as their last heartbeat said).
 *
 * Lost ranks.  A rank is lost when its agent dies (an objective that kills
 * it, the OOM killer), when its agent is silent past rank_timeout (stopped),
 * or when its relay is silent past rank_timeout (stuck), or retired when it
 * sends anything that breaks the protocol.  Its tasks in flight are retried
 * elsewhere while cfg.retries allows (the lost attempt counts), else fail
 * with INVOKER_FAIL_LOST, code = the rank; its late answers are dropped.
 * When no serving rank is left, tasks fail INVOKER_FAIL_NO_WORKER, code 0.
 *
 * What MPI cannot do.  A relay that is stuck cannot be ended by rank 0
 * alone, and an MPI job whose process died is ended by the launcher: both
 * are MPI's rules.  So when a relay was lost by silence, invoker_destroy
 * first makes every callback (each task reported once, as always), then
 * ends the whole job with MPI_Abort(comm, 1): the program does not return
 * from invoker_destroy, and the launcher exits non-zero.  A stuck relay on
 * rank 0's own node is SIGKILLed first (a stopped process ignores the
 * launcher's SIGTERM, and MPICH's launcher then waits for ever).  A rank
 * lost only through its agent is not stuck: the job ends normally.
 *
 * invoker_fd on rank 0 is readable when there is work for invoker_poll,
 * and at least every millisecond while tasks are out on other ranks (MPI
 * has no descriptor to wait on); rank 0 waiting in invoker_wait or
 * invoker_poll sleeps between those looks rather than spinning.
 */
#ifndef INVOKER_MPI_H
#define INVOKER_MPI_H

#include "invoker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct invoker_mpi_options {
    unsigned workers_per_rank; /* local workers on each serving rank; 0: its CPUs */
    int      rank0_workers;    /* rank 0 serves too: -1 auto (when it is alone on its
                                  node with spare CPUs: its CPUs less one), 0 never,
                                  N workers */
    double   rank_timeout;     /* seconds without a word from a rank before it is
                                  lost; 0: 30; over 24 days: 24 days.  Finite and
                                  >= 0, else -EINVAL.  Time rank 0 spends in a
                                  pass of callbacks longer than 50 ms counts for
                                  no rank's silence */
} invoker_mpi_options;

/* Sets the defaults: workers_per_rank 0, rank0_workers -1, rank_timeout 0
 * (30 s).  NULL is a no-op. */
INVOKER_API void invoker_mpi_options_init(invoker_mpi_options *opt);

/* Called first in main() on every rank, before any MPI call and once per
 * process: it initialises MPI itself (MPI_Init with argc and argv, which
 * may be NULL).  opt NULL means the defaults.
 *
 * On rank 0: 0 and *out is an invoker (the config's rules hold, all of the
 * core API works on it) whose workers live on every serving rank; its
 * invoker_destroy stops every rank and finalises MPI.
 * On the other ranks: serves tasks until rank 0 destroys its invoker,
 * then finalises MPI and returns INVOKER_MPI_SERVED (> 0): return from main.
 *
 * Errors, as negative errno, before any MPI call and on every rank:
 * -EINVAL (out, cfg or a required callback NULL, cfg.size out of range,
 * cfg.inline_mode set, an option out of range, cfg.max_arg_bytes or
 * cfg.max_result_bytes over INVOKER_MPI_MAX_BYTES), -EALREADY (MPI already
 * initialised), or what socketpair and fork return.  After MPI_Init, on
 * rank 0 only (the serving ranks then return INVOKER_MPI_SERVED, and MPI
 * is finalised everywhere): -EINVAL (anything else invoker_create
 * rejects), -ENOMEM, -EPROTO (an MPI call failed).  cfg.workers is
 * ignored (workers_per_rank and rank0_workers count the workers). */
INVOKER_API int invoker_mpi_create(invoker **out, const invoker_config *cfg,
                                   const invoker_mpi_options *opt, int *argc, char ***argv);
#define INVOKER_MPI_SERVED 1

/* The largest cfg.max_arg_bytes and cfg.max_result_bytes invoker_mpi_create
 * takes (an MPI message counts its bytes in an int): 1 GiB. */
#define INVOKER_MPI_MAX_BYTES ((size_t)1 << 30)

#ifdef __cplusplus
}
#endif
#endif /* INVOKER_MPI_H */

/*
 * invoker_mpi_create: fork the node agent, then initialise MPI, then
 * serve (ranks > 0) or build rank 0's invoker.
 */
#include "mpi_internal.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_RANK_TIMEOUT 30.0
#define MAX_RANK_TIMEOUT     (24.0 * 24 * 3600)   /* 24 days: forever, as an int of ms */

void invoker_mpi_options_init(invoker_mpi_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->rank0_workers = -1;
}

#ifdef INVOKER_MPI_TEST_HOOKS
int invoker__mpi_test_garbage(int rank)
{
    const char *s = getenv("INVOKER_MPI_TEST_GARBAGE");
    const char *at = getenv("INVOKER_MPI_TEST_GARBAGE_RANK");
    if (!s || rank != (at ? atoi(at) : 2))
        return 0;
    return atoi(s);
}

/* INVOKER_MPI_TEST_ALONE=1: rank 0 counts itself alone on its node, as it
 * would be with a node of its own; a test machine has only one. */
static int test_ranks_here(int rank, int here)
{
    const char *s = getenv("INVOKER_MPI_TEST_ALONE");
    return rank == 0 && s && !strcmp(s, "1") ? 1 : here;
}
#else
static int test_ranks_here(int rank, int here)
{
    (void)rank;
    return here;
}
#endif

static unsigned cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* How many ranks share this node.  Collective: every rank calls it. */
static int ranks_here(MPI_Comm comm)
{
    MPI_Comm node;
    int n = 0;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return 0;
    (void)MPI_Comm_size(node, &n);
    (void)MPI_Comm_free(&node);
    return n;
}

int invoker_mpi_create(invoker **out, const invoker_config *cfg, const invoker_mpi_options *opt,
                       int *argc, char ***argv)
{
    invoker_mpi_options o;
    invoker_mpi_options_init(&o);
    if (opt)
        o = *opt;
    if (!out || !cfg || !cfg->objective || !cfg->on_result || !cfg->on_error ||
        (cfg->size && cfg->size < offsetof(invoker_config, max_queued)) ||
        (cfg->size && cfg->size > sizeof *cfg) ||
        !isfinite(o.rank_timeout) || o.rank_timeout < 0 || o.rank0_workers < -1 ||
        o.workers_per_rank > 4096 || o.rank0_workers > 4096 ||
        cfg->max_arg_bytes > INVOKER_MPI_MAX_BYTES || cfg->max_result_bytes > INVOKER_MPI_MAX_BYTES)
        return -EINVAL;
    size_t size = cfg->size ? cfg->size : sizeof *cfg;
    if (size >= offsetof(invoker_config, inline_mode) + sizeof cfg->inline_mode &&
        cfg->inline_mode)
        return -EINVAL;   /* nothing would run on the ranks */
    int inited = 0;
    if (MPI_Initialized(&inited) != MPI_SUCCESS || inited)
        return -EALREADY;

    /* The agent first: nothing may fork once MPI is initialised. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        close(sv[0]);
        close(sv[1]);
        return rc;
    }
    if (pid == 0) {
        close(sv[0]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(0);
        if (invoker__fd_set_blocking(sv[1], false) != 0)
            _exit(0);
        invoker__agent_main(sv[1], cfg, &o);
    }
    close(sv[1]);
    (void)invoker__fd_set_blocking(sv[0], false);

    invoker__mpi_env env;
    memset(&env, 0, sizeof env);
    env.agent_pid = pid;
    env.agent_fd = sv[0];
    env.rank_timeout = o.rank_timeout > 0 ? o.rank_timeout : DEFAULT_RANK_TIMEOUT;
    if (env.rank_timeout > MAX_RANK_TIMEOUT)
        env.rank_timeout = MAX_RANK_TIMEOUT;   /* in int milliseconds below */
    env.max_arg = cfg->max_arg_bytes ? cfg->max_arg_bytes : INVOKER__DEFAULT_MAX;
    env.max_result = cfg->max_result_bytes ? cfg->max_result_bytes : INVOKER__DEFAULT_MAX;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        close(sv[0]);
        invoker__agent_end(pid, 0);
        return -EPROTO;
    }
    if (MPI_Comm_dup(MPI_COMM_WORLD, &env.comm) != MPI_SUCCESS ||
        MPI_Comm_set_errhandler(env.comm, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(env.comm, &env.rank) != MPI_SUCCESS ||
        MPI_Comm_size(env.comm, &env.size) != MPI_SUCCESS) {
        close(sv[0]);
        invoker__agent_end(pid, 0);
        MPI_Abort(MPI_COMM_WORLD, 1);
        return -EPROTO;
    }
    int here = test_ranks_here(env.rank, ranks_here(env.comm));
    if (env.rank != 0) {
        env.agent_workers = o.workers_per_rank ? o.workers_per_rank : cpus();
        (void)invoker__relay_main(&env);
        MPI_Comm_free(&env.comm);
        MPI_Finalize();
        return INVOKER_MPI_SERVED;
    }
    if (o.rank0_workers > 0)
        env.agent_workers = (unsigned)o.rank0_workers;
    else if (o.rank0_workers < 0 && here == 1) {
        /* Alone on its node: its agent serves, leaving a CPU to rank 0
         * (all of them when it is the whole job). */
        unsigned c = cpus();
        env.agent_workers = env.size == 1 ? c : c - (c > 1);
        if (env.size > 1 && c == 1)
            env.agent_workers = 0;
    }
    return invoker__rank0_create(out, cfg, &env);
}

/*
 * Rank 0's own agent dies, and the caller submits before it polls again:
 * the batch for the dead agent cannot leave, and the tasks it held, the
 * new one included, are retried on the serving ranks at the next poll
 * (they were stranded there, and invoker_wait never returned).
 */
#include "mpi_kill_common.h"

#include <dirent.h>

#define TASKS 3u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t x;
    if (!arg_u64(arg, len, &x))
        return 99;
    usleep(300000);
    x *= 7;
    return invoker_result_write(out, &x, sizeof x);
}

/* Rank 0's agent: its child that runs this program (forked before
 * MPI_Init, as its agent is); -1 if none. */
static pid_t own_agent(void)
{
    DIR *d = opendir("/proc");
    CHECK(d != NULL);
    pid_t found = -1;
    struct dirent *e;
    while (found < 0 && (e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid > 0 && parent_of(pid) == getpid())
            found = pid;
    }
    closedir(d);
    return found;
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS];
    invoker_config cfg;
    scenario_config(&cfg, objective, outs, 1);
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.rank0_workers = 2;   /* the most room: new tasks go there first */
    opt.workers_per_rank = 1;
    opt.rank_timeout = 5;
    invoker *inv = NULL;
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    for (uint64_t i = 0; i < TASKS - 1; i++)
        CHECK(invoker_submit(inv, &i, sizeof i, (void *)(uintptr_t)i, NULL) == 0);
    CHECK(invoker_poll(inv, 100) >= 0);
    pid_t agent = own_agent();
    CHECK(agent > 0);
    CHECK(kill(agent, SIGKILL) == 0);
    usleep(200000);   /* gone: the next write to it fails */
    uint64_t last = TASKS - 1;
    CHECK(invoker_submit(inv, &last, sizeof last, (void *)(uintptr_t)last, NULL) == 0);
    double until = now_s() + 20;
    invoker_stats st;
    do {
        CHECK(invoker_poll(inv, 100) >= 0);
        invoker_get_stats(inv, &st);
    } while (st.succeeded + st.failed < TASKS && now_s() < until);
    for (uint64_t i = 0; i < TASKS; i++) {
        if (outs[i].calls && !outs[i].ok)
            fprintf(stderr, "task %llu: %s\n", (unsigned long long)i,
                    invoker_failure_name(outs[i].fail));
        CHECK(outs[i].calls == 1 && outs[i].ok && outs[i].value == i * 7);
        CHECK(outs[i].worker >= 2);   /* on a serving rank: slots 0-1 were rank 0's */
    }
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

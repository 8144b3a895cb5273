/*
 * A callback longer than rank_timeout loses no rank: rank 0 does not
 * listen while it runs, so that time counts for no one's silence.  One
 * callback for a task of rank 0's own agent and one for a serving rank's
 * each sleep 3.5 s against a rank_timeout of 2 s: every task succeeds,
 * every worker stays, and the job ends normally (no MPI_Abort).
 */
#include "mpi_common.h"

#include <unistd.h>

#define TASKS 40u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t x;
    if (!arg_u64(arg, len, &x))
        return 99;
    usleep(20000);
    x += 5;
    return invoker_result_write(out, &x, sizeof x);
}

static int slept[3];

static void slow_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    rec_result(t, res, len, user);
    /* Slot 0 is rank 0's own agent's worker, slot 1 rank 1's. */
    if (t->worker >= 0 && t->worker < 2 && !slept[t->worker]) {
        slept[t->worker] = 1;
        usleep(3500000);
    }
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS];
    invoker_config cfg;
    scenario_config(&cfg, objective, outs, 0);
    cfg.on_result = slow_result;
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.rank0_workers = 1;
    opt.workers_per_rank = 1;
    opt.rank_timeout = 2;
    invoker *inv = NULL;
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    for (uint64_t i = 0; i < TASKS; i++)
        CHECK(invoker_submit(inv, &i, sizeof i, (void *)(uintptr_t)i, NULL) == 0);
    CHECK(invoker_wait(inv) == 0);
    CHECK(slept[0] && slept[1]);
    for (uint64_t i = 0; i < TASKS; i++) {
        if (!outs[i].ok)
            fprintf(stderr, "task %llu: %s\n", (unsigned long long)i,
                    invoker_failure_name(outs[i].fail));
        CHECK(outs[i].calls == 1 && outs[i].ok && outs[i].value == i + 5);
    }
    invoker_stats st;
    invoker_get_stats(inv, &st);
    CHECK(st.workers == 3);
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

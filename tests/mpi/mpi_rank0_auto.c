/*
 * rank0_workers = -1 (the default) decides by where rank 0 runs.  With
 * other ranks on its node it does not serve: only the serving ranks'
 * workers, global slots 0 and 1.  Alone on its node
 * (INVOKER_MPI_TEST_ALONE=1 makes it count itself so: this machine is
 * one node) its agent serves with its CPUs less one, in the first global
 * slots, and tasks run there too.
 */
#include "mpi_common.h"

#include <sched.h>

#define TASKS 2000u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t x;
    if (!arg_u64(arg, len, &x))
        return 99;
    x = x * 3 + 1;
    /* Long enough that every worker takes some. */
    struct timespec ts = { 0, 200000 };
    nanosleep(&ts, NULL);
    return invoker_result_write(out, &x, sizeof x);
}

static unsigned cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    return 1;
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS];
    const char *alone_env = getenv("INVOKER_MPI_TEST_ALONE");
    int alone = alone_env && !strcmp(alone_env, "1");
    unsigned own = alone ? cpus() - (cpus() > 1) : 0;   /* rank 0's workers */
    invoker_config cfg;
    scenario_config(&cfg, objective, outs, 0);
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.workers_per_rank = 1;
    invoker *inv = NULL;
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    if (rc != 0) {
        fprintf(stderr, "invoker_mpi_create: %s\n", invoker_strerror(rc));
        return 1;
    }
    CHECK(opt.rank0_workers == -1);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    printf("alone=%d: %u workers, %u of them rank 0's\n", alone, st.workers, own);
    CHECK(st.workers == own + 2);

    for (uint64_t i = 0; i < TASKS; i++)
        CHECK(invoker_submit(inv, &i, sizeof i, (void *)(uintptr_t)i, NULL) == 0);
    CHECK(invoker_wait(inv) == 0);
    unsigned on_rank0 = 0, on_others = 0;
    for (uint64_t i = 0; i < TASKS; i++) {
        CHECK(outs[i].calls == 1);
        CHECK(outs[i].ok);
        CHECK(outs[i].value == i * 3 + 1);
        CHECK(outs[i].worker >= 0 && (unsigned)outs[i].worker < own + 2);
        if ((unsigned)outs[i].worker < own)
            on_rank0++;
        else
            on_others++;
    }
    printf("rank 0's workers ran %u, the serving ranks' %u\n", on_rank0, on_others);
    CHECK(on_others > 0);
    CHECK(own == 0 || on_rank0 > 0);
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

/*
 * Bad input from a rank retires it and costs nothing else: the relay of
 * rank 2 (test build, INVOKER_MPI_TEST_GARBAGE=mode) spoils what it sends;
 * rank 0 retires it, its tasks run on rank 1, every task is reported once
 * with the right result, and the job ends normally.  Mode 5 is no breach
 * (outcomes of tasks its agent ran twice): rank 2 stays.
 */
#include "mpi_common.h"

#include <unistd.h>

#define TASKS 2000u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t x;
    if (!arg_u64(arg, len, &x))
        return 99;
    x ^= 0x5555;
    return invoker_result_write(out, &x, sizeof x);
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS];
    invoker_config cfg;
    scenario_config(&cfg, objective, outs, 3);
    invoker *inv = NULL;
    int rc = scenario_create(&inv, &cfg, 1, 5, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    const char *mode = getenv("INVOKER_MPI_TEST_GARBAGE");
    CHECK(mode && atoi(mode) > 0);
    for (uint64_t i = 0; i < TASKS; i++)
        CHECK(invoker_submit(inv, &i, sizeof i, (void *)(uintptr_t)i, NULL) == 0);
    CHECK(invoker_wait(inv) == 0);
    unsigned lost = 0;
    for (uint64_t i = 0; i < TASKS; i++) {
        CHECK(outs[i].calls == 1);
        CHECK(outs[i].ok);
        CHECK(outs[i].value == (i ^ 0x5555));
        lost += outs[i].attempts > 1;
    }
    invoker_stats st;
    invoker_get_stats(inv, &st);
    printf("mode %s: %u tasks ran more than once; workers %u\n", mode, lost, st.workers);
    if (atoi(mode) == 5) {
        CHECK(st.workers == 2);   /* a second attempt is no breach: rank 2 stays */
        CHECK(lost > 0);          /* and its attempts are counted */
    } else {
        CHECK(st.workers == 1);   /* rank 2 retired */
        CHECK(lost > 0);          /* what it held ran again */
    }
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

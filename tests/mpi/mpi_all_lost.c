/*
 * Without retries, a task whose rank is lost fails INVOKER_FAIL_LOST with
 * code = that rank; once every serving rank is lost, the tasks left fail
 * INVOKER_FAIL_NO_WORKER (code 0), and later submits too.  The job still
 * ends normally: agents died, no relay is stuck.
 */
#include "mpi_kill_common.h"

#define TASKS 40u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    if (len != sizeof(harm_arg))
        return 99;
    const harm_arg *a = arg;
    if (a->harm) {
        kill(getppid(), SIGKILL);   /* every harming task kills its agent */
        pause();
    }
    return compute(a, out);
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS + 1];
    invoker_config cfg;
    scenario_config(&cfg, objective, outs, 0);
    invoker *inv = NULL;
    int rc = scenario_create(&inv, &cfg, 1, 5, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    harm_arg a;
    memset(&a, 0, sizeof a);
    for (unsigned i = 0; i < TASKS; i++) {
        a.x = i;
        a.harm = 1;
        CHECK(invoker_submit(inv, &a, sizeof a, (void *)(uintptr_t)i, NULL) == 0);
    }
    CHECK(invoker_wait(inv) == 0);
    unsigned lost[3] = { 0, 0, 0 }, no_worker = 0;
    for (unsigned i = 0; i < TASKS; i++) {
        CHECK(outs[i].calls == 1);
        CHECK(!outs[i].ok);
        if (outs[i].fail == INVOKER_FAIL_LOST) {
            CHECK(outs[i].code == 1 || outs[i].code == 2);
            CHECK(outs[i].attempts == 1);
            lost[outs[i].code]++;
        } else {
            CHECK(outs[i].fail == INVOKER_FAIL_NO_WORKER && outs[i].code == 0);
            no_worker++;
        }
    }
    printf("lost on rank 1: %u, on rank 2: %u; no worker: %u\n", lost[1], lost[2], no_worker);
    CHECK(lost[1] >= 1 && lost[2] >= 1);   /* each rank's agent killed by its first */
    CHECK(no_worker >= 1);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    CHECK(st.workers == 0);
    /* Nothing left to run it: a later task fails at once, not never. */
    a.harm = 0;
    CHECK(invoker_submit(inv, &a, sizeof a, (void *)(uintptr_t)TASKS, NULL) == 0);
    CHECK(invoker_wait(inv) == 0);
    CHECK(outs[TASKS].calls == 1 && outs[TASKS].fail == INVOKER_FAIL_NO_WORKER);
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

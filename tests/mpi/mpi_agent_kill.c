/*
 * An objective that SIGKILLs its node agent (its worker's parent) costs
 * that rank only: its tasks in flight run again elsewhere (retries), every
 * task is reported once and succeeds, the run goes on with the other rank
 * and the job ends normally (mpirun exits 0: ctest checks it).
 */
#include "mpi_kill_common.h"

#define TASKS 600u
#define HARM_AT 100u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    if (len != sizeof(harm_arg))
        return 99;
    const harm_arg *a = arg;
    if (first_to_harm(a)) {
        kill(getppid(), SIGKILL);
        pause();   /* dies with its agent */
    }
    usleep(2000);
    return compute(a, out);
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS];
    invoker_config cfg;
    scenario_config(&cfg, objective, outs, 2);
    invoker *inv = NULL;
    int rc = scenario_create(&inv, &cfg, 2, 5, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    harm_run(inv, "kill", TASKS, HARM_AT);
    unsigned retried = 0;
    for (unsigned i = 0; i < TASKS; i++) {
        if (!outs[i].ok)
            printf("task %u: %s %d after %u attempts\n", i, invoker_failure_name(outs[i].fail),
                   outs[i].code, outs[i].attempts);
        CHECK(outs[i].calls == 1);
        CHECK(outs[i].ok);
        CHECK(outs[i].value == (uint64_t)i * 3 + 1);
        retried += outs[i].attempts > 1;
    }
    CHECK(outs[HARM_AT].attempts >= 2);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    printf("retried %u tasks; workers now %u; retried stat %llu\n", retried, st.workers,
           (unsigned long long)st.retried);
    CHECK(st.workers == 2);   /* one rank of two workers left */
    CHECK(st.retried >= 1 && st.succeeded == TASKS);
    /* The run goes on: more tasks, all on the rank left. */
    harm_arg a;
    memset(&a, 0, sizeof a);
    for (unsigned i = 0; i < 50; i++) {
        a.x = i;
        CHECK(invoker_submit(inv, &a, sizeof a, (void *)(uintptr_t)i, NULL) == 0);
    }
    CHECK(invoker_wait(inv) == 0);
    CHECK(outs[0].calls == 2 && outs[0].ok);
    CHECK(invoker_destroy(inv) == 0);
    printf("done\n");
    return 0;
}

/*
 * An objective that SIGSTOPs its node agent: that rank is lost within
 * rank_timeout plus the task's timeout (its relay reports the silent
 * agent), its tasks run elsewhere, every task is reported once, and the
 * job ends normally.
 */
#include "mpi_kill_common.h"

#define TASKS 300u
#define HARM_AT 40u
#define RANK_TIMEOUT 2.0
#define TASK_TIMEOUT 1.0

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    if (len != sizeof(harm_arg))
        return 99;
    const harm_arg *a = arg;
    if (first_to_harm(a))
        kill(getppid(), SIGSTOP);   /* its result now goes nowhere */
    usleep(2000);
    return compute(a, out);
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS];
    invoker_config cfg;
    scenario_config(&cfg, objective, outs, 2);
    cfg.timeout = TASK_TIMEOUT;
    invoker *inv = NULL;
    int rc = scenario_create(&inv, &cfg, 1, RANK_TIMEOUT, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    double t0 = now_s();
    harm_run(inv, "stop", TASKS, HARM_AT);
    for (unsigned i = 0; i < TASKS; i++) {
        CHECK(outs[i].calls == 1);
        CHECK(outs[i].ok);
        CHECK(outs[i].value == (uint64_t)i * 3 + 1);
    }
    double lost_after = outs[HARM_AT].at - t0;
    printf("the stopping task came back after %.2f s (attempts %u)\n", lost_after,
           outs[HARM_AT].attempts);
    CHECK(outs[HARM_AT].attempts >= 2);
    /* Lost within rank_timeout + the task's timeout; the rest of the
     * margin is the run of 300 x 2 ms tasks and the load of this host. */
    CHECK(lost_after < RANK_TIMEOUT + TASK_TIMEOUT + 3.0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    CHECK(st.workers == 1);
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

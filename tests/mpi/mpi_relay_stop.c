/*
 * A stopped relay rank (an objective SIGSTOPs its agent's parent): rank 0
 * loses it after rank_timeout, still reports every task once (retried on
 * the other rank), then invoker_destroy ends the job with MPI_Abort, as
 * invoker_mpi.h documents.  relay_stop.sh checks the report and that the
 * launcher exits non-zero.
 */
#include "mpi_kill_common.h"

#define TASKS 300u
#define HARM_AT 40u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    if (len != sizeof(harm_arg))
        return 99;
    const harm_arg *a = arg;
    if (first_to_harm(a)) {
        pid_t relay = parent_of(getppid());
        if (relay > 1)
            kill(relay, SIGSTOP);
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
    int rc = scenario_create(&inv, &cfg, 1, 2, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    harm_run(inv, "relay", TASKS, HARM_AT);
    unsigned once = 0;
    for (unsigned i = 0; i < TASKS; i++)
        once += outs[i].calls == 1 && outs[i].ok && outs[i].value == (uint64_t)i * 3 + 1;
    CHECK(outs[HARM_AT].attempts >= 2);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    CHECK(st.workers == 1);
    printf("REPORTED-ONCE %u of %u\n", once, TASKS);
    printf("DESTROYING\n");
    fflush(stdout);
    invoker_destroy(inv);
    printf("RETURNED-FROM-DESTROY\n");   /* must not happen */
    return 0;
}

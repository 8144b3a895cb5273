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
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.on_result = rec_result;
    cfg.on_error = rec_error;
    cfg.user = outs;
    cfg.retries = 2;
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.workers_per_rank = 1;
    opt.rank0_workers = 0;
    opt.rank_timeout = 2;
    invoker *inv = NULL;
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    harm_arg a;
    memset(&a, 0, sizeof a);
    snprintf(a.marker, sizeof a.marker, "/tmp/invoker-mpi-relay-%d", (int)getpid());
    unlink(a.marker);
    for (unsigned i = 0; i < TASKS; i++) {
        a.x = i;
        a.harm = i == HARM_AT;
        CHECK(invoker_submit(inv, &a, sizeof a, (void *)(uintptr_t)i, NULL) == 0);
    }
    CHECK(invoker_wait(inv) == 0);
    CHECK(access(a.marker, F_OK) == 0);
    unlink(a.marker);
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

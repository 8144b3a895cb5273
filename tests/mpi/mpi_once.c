/*
 * Exactly once over 3 ranks: thousands of tasks, each result checked
 * against its argument, none missing, none twice, and tasks ran on both
 * serving ranks (their global worker slots say which).
 */
#include "mpi_common.h"

#include <errno.h>
#include <unistd.h>

#define TASKS 5000u

static int square(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t x;
    if (!arg_u64(arg, len, &x))
        return 99;
    x = x * x + 7;
    return invoker_result_write(out, &x, sizeof x);
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS];
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = square;
    cfg.on_result = rec_result;
    cfg.on_error = rec_error;
    cfg.user = outs;
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.workers_per_rank = 1;
    opt.rank0_workers = 0;
    invoker *inv = NULL;
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    if (rc != 0) {
        fprintf(stderr, "invoker_mpi_create: %s\n", invoker_strerror(rc));
        return 1;
    }
    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECK(size == 3);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    CHECK(st.workers == 2);

    /* Half submitted at once, half from a window kept by polling. */
    for (uint64_t i = 0; i < TASKS; i++) {
        uint64_t x = i * 1000003u;
        CHECK(invoker_submit(inv, &x, sizeof x, (void *)(uintptr_t)i, NULL) == 0);
        if (i % 500 == 499)
            CHECK(invoker_poll(inv, 0) >= 0);
    }
    CHECK(invoker_wait(inv) == 0);
    unsigned on[2] = { 0, 0 };
    for (uint64_t i = 0; i < TASKS; i++) {
        uint64_t x = i * 1000003u;
        CHECK(outs[i].calls == 1);
        CHECK(outs[i].ok);
        CHECK(outs[i].value == x * x + 7);
        CHECK(outs[i].attempts == 1);
        CHECK(outs[i].worker == 0 || outs[i].worker == 1);
        on[outs[i].worker]++;
    }
    printf("rank 1 ran %u, rank 2 ran %u\n", on[0], on[1]);
    CHECK(on[0] > 0 && on[1] > 0);
    invoker_get_stats(inv, &st);
    CHECK(st.submitted == TASKS && st.succeeded == TASKS && st.failed == 0);
    CHECK(st.workers_started >= 2);
    /* Bad arguments change nothing, as locally. */
    CHECK(invoker_submit(inv, NULL, 4, NULL, NULL) == -EINVAL);
    CHECK(invoker_cancel(inv, 123456789) == -ENOENT);
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

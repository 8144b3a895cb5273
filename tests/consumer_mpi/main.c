/* Squares 100 numbers over the ranks of the job; exits non-zero on rank 0
 * if any result is wrong or missing. */
#include <invoker_mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int square(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t x;
    if (len != sizeof x)
        return 1;
    memcpy(&x, arg, sizeof x);
    x *= x;
    return invoker_result_write(out, &x, sizeof x);
}

static void on_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    uint64_t y, x = (uint64_t)(uintptr_t)t->tag;
    memcpy(&y, res, sizeof y);
    if (len == sizeof y && y == x * x)
        ++*(unsigned *)user;
}

static void on_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    (void)t;
    (void)user;
    fprintf(stderr, "task failed: %s %d\n", invoker_failure_name(f), code);
}

int main(int argc, char **argv)
{
    unsigned ok = 0;
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = square;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &ok;
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.workers_per_rank = 1;
    invoker *inv;
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    if (rc != 0)
        return 1;
    for (uint64_t i = 0; i < 100; i++)
        if (invoker_submit(inv, &i, sizeof i, (void *)(uintptr_t)i, NULL) != 0)
            return 1;
    if (invoker_wait(inv) != 0)
        return 1;
    invoker_destroy(inv);
    printf("consumer_mpi: %u of 100\n", ok);
    return ok == 100 ? 0 : 1;
}

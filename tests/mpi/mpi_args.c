/*
 * Bad arguments to invoker_mpi_create give -EINVAL before any MPI call;
 * a second call gives -EALREADY.  With rank0_workers = 1, rank 0's own
 * agent serves too: its worker is global slot 0, the serving ranks' come
 * after, and tasks run on all three.  With max_arg_bytes 0 (the default),
 * an argument of the default's full size reaches a worker on any rank.
 */
#include "mpi_common.h"

#include <errno.h>
#include <math.h>
#include <poll.h>

#define TASKS 3000u

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t x;
    if (!arg_u64(arg, len, &x))
        return 99;
    x += 11;
    return invoker_result_write(out, &x, sizeof x);
}

int main(int argc, char **argv)
{
    static outcome outs[TASKS + 1];
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.on_result = rec_result;
    cfg.on_error = rec_error;
    cfg.user = outs;
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    invoker *inv = NULL;

    /* Every one of these fails before MPI_Init: MPI stays uninitialised. */
    CHECK(opt.rank0_workers == -1 && opt.workers_per_rank == 0 && opt.rank_timeout == 0);
    CHECK(invoker_mpi_create(NULL, &cfg, &opt, &argc, &argv) == -EINVAL);
    CHECK(invoker_mpi_create(&inv, NULL, &opt, &argc, &argv) == -EINVAL);
    invoker_config bad = cfg;
    bad.objective = NULL;
    CHECK(invoker_mpi_create(&inv, &bad, &opt, &argc, &argv) == -EINVAL);
    bad = cfg;
    bad.inline_mode = 1;
    CHECK(invoker_mpi_create(&inv, &bad, &opt, &argc, &argv) == -EINVAL);
    bad = cfg;
    bad.size = 3;
    CHECK(invoker_mpi_create(&inv, &bad, &opt, &argc, &argv) == -EINVAL);
    invoker_mpi_options o = opt;
    o.rank_timeout = -1;
    CHECK(invoker_mpi_create(&inv, &cfg, &o, &argc, &argv) == -EINVAL);
    o.rank_timeout = NAN;
    CHECK(invoker_mpi_create(&inv, &cfg, &o, &argc, &argv) == -EINVAL);
    o = opt;
    o.rank0_workers = -2;
    CHECK(invoker_mpi_create(&inv, &cfg, &o, &argc, &argv) == -EINVAL);
    bad = cfg;
    bad.max_arg_bytes = INVOKER_MPI_MAX_BYTES + 1;   /* an MPI count is an int */
    CHECK(invoker_mpi_create(&inv, &bad, &opt, &argc, &argv) == -EINVAL);
    bad = cfg;
    bad.max_result_bytes = INVOKER_MPI_MAX_BYTES + 1;
    CHECK(invoker_mpi_create(&inv, &bad, &opt, &argc, &argv) == -EINVAL);
    CHECK(inv == NULL);
    int inited = 1;
    MPI_Initialized(&inited);
    CHECK(!inited);

    opt.workers_per_rank = 1;
    opt.rank0_workers = 1;
    opt.rank_timeout = 1e9;   /* forever: counted as 24 days, not overflowed */
    cfg.max_arg_bytes = 0;    /* the default, 64 MiB, on every rank */
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    invoker *again = NULL;
    CHECK(invoker_mpi_create(&again, &cfg, &opt, &argc, &argv) == -EALREADY);
    CHECK(again == NULL);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    CHECK(st.workers == 3);
    /* Driven from an event loop on invoker_fd, as event_loop.c does: the
     * descriptor must wake it while tasks are out on other ranks. */
    for (uint64_t i = 0; i < TASKS; i++)
        CHECK(invoker_submit(inv, &i, sizeof i, (void *)(uintptr_t)i, NULL) == 0);
    int fd = invoker_fd(inv);
    CHECK(fd >= 0);
    double t0 = now_s();
    invoker_get_stats(inv, &st);
    while (st.succeeded + st.failed < TASKS) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        CHECK(poll(&p, 1, 5000) == 1);   /* never a 5 s silence */
        CHECK(invoker_poll(inv, 0) >= 0);
        invoker_get_stats(inv, &st);
        CHECK(now_s() - t0 < 60);
    }
    CHECK(invoker_wait(inv) == 0);
    unsigned on[3] = { 0, 0, 0 };
    for (uint64_t i = 0; i < TASKS; i++) {
        CHECK(outs[i].calls == 1 && outs[i].ok && outs[i].value == i + 11);
        CHECK(outs[i].worker >= 0 && outs[i].worker < 3);
        on[outs[i].worker]++;
    }
    printf("slot 0 (rank 0's agent) %u, slot 1 (rank 1) %u, slot 2 (rank 2) %u\n", on[0],
           on[1], on[2]);
    CHECK(on[0] > 0 && on[1] > 0 && on[2] > 0);

    /* An argument as large as the default allows reaches a worker (the
     * objective refuses it: code 99) and costs no rank. */
    size_t big_len = (size_t)64 << 20;
    unsigned char *big = calloc(1, big_len);
    CHECK(big != NULL);
    CHECK(invoker_submit(inv, big, big_len + 1, (void *)(uintptr_t)TASKS, NULL) == -EMSGSIZE);
    CHECK(invoker_submit(inv, big, big_len, (void *)(uintptr_t)TASKS, NULL) == 0);
    free(big);
    CHECK(invoker_wait(inv) == 0);
    CHECK(outs[TASKS].calls == 1 && !outs[TASKS].ok);
    CHECK(outs[TASKS].fail == INVOKER_FAIL_OBJECTIVE && outs[TASKS].code == 99);
    invoker_get_stats(inv, &st);
    CHECK(st.workers == 3);
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

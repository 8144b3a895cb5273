/*
 * Timeouts, crashes, exits, objective errors, too-large results and
 * cancels on remote ranks reach rank 0 as the same failures, with the same
 * codes, as a local invoker gives them (run first, before MPI, on the same
 * objective), and the remote workers are replaced: later tasks run on both
 * ranks.  With capture_stderr, each failure's stderr tail comes back as
 * locally.
 */
#include "mpi_common.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

enum { OP_OK, OP_HANG, OP_CRASH, OP_EXIT, OP_ERROR, OP_BIG, OP_CANCEL, OPS };

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t op;
    if (len != sizeof op)
        return 99;
    memcpy(&op, arg, sizeof op);
    static unsigned char big[4096];
    if (op != OP_OK)
        fprintf(stderr, "op %u says goodbye\n", (unsigned)op);
    switch (op) {
    case OP_HANG:
    case OP_CANCEL:
        sleep(30);
        return 0;
    case OP_CRASH:
        raise(SIGSEGV);
        return 0;
    case OP_EXIT:
        _exit(7);
    case OP_ERROR:
        return 42;
    case OP_BIG:
        (void)invoker_result_write(out, big, sizeof big);
        return 0;
    default:
        return invoker_result_write(out, &op, sizeof op);
    }
}

static void config(invoker_config *cfg, outcome *outs)
{
    invoker_config_init(cfg);
    cfg->objective = objective;
    cfg->on_result = rec_result;
    cfg->on_error = rec_error;
    cfg->user = outs;
    cfg->max_result_bytes = 1024;
    cfg->capture_stderr = INVOKER_STDERR_TAIL;
}

/* Every failing op once, the cancel 300 ms after it started. */
static void run_ops(invoker *inv, outcome *outs)
{
    invoker_id cancel_id = 0;
    for (uint64_t op = OP_HANG; op < OPS; op++) {
        double timeout = op == OP_HANG ? 0.5 : 0;
        invoker_id id;
        CHECK(invoker_submit_timeout(inv, &op, sizeof op, (void *)(uintptr_t)op, timeout, &id) == 0);
        if (op == OP_CANCEL)
            cancel_id = id;
    }
    double t0 = now_s();
    while (now_s() - t0 < 0.3)
        CHECK(invoker_poll(inv, 50) >= 0);
    CHECK(invoker_cancel(inv, cancel_id) == 0);
    CHECK(invoker_wait(inv) == 0);
}

int main(int argc, char **argv)
{
    /* The reference: a local invoker, before any MPI call. */
    static outcome local[OPS], remote[OPS + 200];
    invoker_config cfg;
    config(&cfg, local);
    cfg.workers = 6;
    invoker *loc;
    if (invoker_create(&loc, &cfg) != 0)
        return 1;
    run_ops(loc, local);
    invoker_destroy(loc);

    config(&cfg, remote);
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.workers_per_rank = 3;   /* every op at once: 6 workers */
    opt.rank0_workers = 0;
    invoker *inv = NULL;
    int rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
    if (rc == INVOKER_MPI_SERVED)
        return 0;
    CHECK(rc == 0);
    double t0 = now_s();
    run_ops(inv, remote);
    for (int op = OP_HANG; op < OPS; op++) {
        printf("op %d: local %s %d, remote %s %d (worker %d)\n", op,
               invoker_failure_name(local[op].fail), local[op].code,
               invoker_failure_name(remote[op].fail), remote[op].code, remote[op].worker);
        CHECK(local[op].calls == 1 && !local[op].ok);
        CHECK(remote[op].calls == 1 && !remote[op].ok);
        CHECK(remote[op].fail == local[op].fail);
        CHECK(remote[op].code == local[op].code);
        CHECK(remote[op].worker >= -1 && remote[op].worker < 6);
        printf("  tails: local '%.*s' (%zu), remote '%.*s' (%zu)\n", 20, local[op].tail,
               local[op].tail_len, 20, remote[op].tail, remote[op].tail_len);
        /* A cancel is reported on rank 0 before the remote worker's bytes
         * could travel: its tail may be empty there. */
        if (op != OP_CANCEL) {
            CHECK(remote[op].tail_len == local[op].tail_len);
            CHECK(strcmp(remote[op].tail, local[op].tail) == 0);
            CHECK(strstr(remote[op].tail, "says goodbye") != NULL);
        }
    }
    CHECK(remote[OP_HANG].fail == INVOKER_FAIL_TIMEOUT);
    CHECK(remote[OP_CRASH].fail == INVOKER_FAIL_CRASH && remote[OP_CRASH].code == SIGSEGV);
    CHECK(remote[OP_EXIT].fail == INVOKER_FAIL_EXIT && remote[OP_EXIT].code == 7);
    CHECK(remote[OP_ERROR].fail == INVOKER_FAIL_OBJECTIVE && remote[OP_ERROR].code == 42);
    CHECK(remote[OP_BIG].fail == INVOKER_FAIL_TOO_LARGE);
    CHECK(remote[OP_CANCEL].fail == INVOKER_FAIL_CANCELLED);
    /* Neither the hang nor the cancelled sleep holds a worker: the
     * replaced workers take the next tasks at once, on both ranks. */
    for (uint64_t i = 0; i < 200; i++) {
        uint64_t op = OP_OK;
        CHECK(invoker_submit(inv, &op, sizeof op, (void *)(uintptr_t)(OPS + i), NULL) == 0);
    }
    CHECK(invoker_wait(inv) == 0);
    unsigned on[2] = { 0, 0 };
    for (unsigned i = OPS; i < OPS + 200; i++) {
        CHECK(remote[i].calls == 1 && remote[i].ok);
        on[remote[i].worker >= 3]++;
    }
    printf("after: rank 1 ran %u, rank 2 ran %u, in %.2f s\n", on[0], on[1], now_s() - t0);
    CHECK(on[0] > 0 && on[1] > 0);
    CHECK(now_s() - t0 < 20);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    CHECK(st.timed_out == 1 && st.crashed == 2 && st.cancelled == 1);
    CHECK(invoker_destroy(inv) == 0);
    return 0;
}

/*
 * libinvoker_mpi on three workloads, for bench/mpi.sh:
 *
 *   bench_mpi cpu     [--local] [--tasks N]  1 ms CPU-bound tasks
 *   bench_mpi trivial [--local] [--tasks N]  tasks that do nothing
 *   bench_mpi idle    [--local] [--tasks N]  100 ms sleeping tasks: rank 0's CPU
 *
 * Under `mpirun -np 3` rank 0 coordinates and ranks 1 and 2 serve with one
 * worker each; --local runs the same on a plain local invoker of two
 * workers (no MPI), the reference.  Prints one RESULT line.
 */
#include <invoker_mpi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

typedef struct ctx {
    uint64_t iters;               /* busy loop for ~1 ms */
    int      kind;                /* 0 trivial, 1 cpu, 2 idle */
} ctx;

typedef struct state {
    uint64_t done, bad;
    double   busy_s;              /* tasks' run time, summed */
} state;

static int objective(const void *arg, size_t len, invoker_result *out, void *c)
{
    const ctx *x = c;
    uint64_t v = 0;
    if (len == sizeof v)
        memcpy(&v, arg, sizeof v);
    if (x->kind == 1) {
        double d = busy_loop(x->iters);
        v += d > 0 ? 1 : 2;   /* the result depends on the loop: not optimised out */
    } else if (x->kind == 2) {
        usleep(100000);
        v += 1;
    } else {
        v += 1;
    }
    return invoker_result_write(out, &v, sizeof v);
}

static void on_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    state *s = user;
    uint64_t v = 0;
    if (len == sizeof v)
        memcpy(&v, res, sizeof v);
    s->done++;
    s->busy_s += t->run_seconds;
    s->bad += v != (uint64_t)(uintptr_t)t->tag + 1 && v != (uint64_t)(uintptr_t)t->tag + 2;
}

static void on_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    (void)t;
    (void)f;
    (void)code;
    ((state *)user)->bad++;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s cpu|trivial|idle [--local] [--tasks N]\n", argv[0]);
        return 2;
    }
    static ctx x;
    const char *wl = argv[1];
    x.kind = !strcmp(wl, "cpu") ? 1 : !strcmp(wl, "idle") ? 2 : 0;
    int local = 0;
    uint64_t tasks = x.kind == 1 ? 4000 : x.kind == 2 ? 40 : 300000;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--local"))
            local = 1;
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            tasks = strtoull(argv[++i], NULL, 10);
    }
    if (x.kind == 1)
        x.iters = calibrate_busy(1.0);
    state s;
    memset(&s, 0, sizeof s);
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.objective_ctx = &x;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &s;
    invoker *inv;
    int rc;
    if (local) {
        cfg.workers = 2;
        rc = invoker_create(&inv, &cfg);
    } else {
        invoker_mpi_options opt;
        invoker_mpi_options_init(&opt);
        opt.workers_per_rank = 1;
        opt.rank0_workers = 0;
        rc = invoker_mpi_create(&inv, &cfg, &opt, &argc, &argv);
        if (rc == INVOKER_MPI_SERVED)
            return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "create: %s\n", invoker_strerror(rc));
        return 1;
    }
    /* A window of tasks kept in flight, topped up as results come. */
    uint64_t window = x.kind == 0 ? 8192 : 64, next = 0;
    double c0 = cpu_s();
    int64_t t0 = now_ns();
    while (s.done + s.bad < tasks) {
        while (next < tasks && next - s.done - s.bad < window) {
            if (invoker_submit(inv, &next, sizeof next, (void *)(uintptr_t)next, NULL) != 0)
                return 1;
            next++;
        }
        if (invoker_poll(inv, -1) < 0)
            return 1;
    }
    double wall = ns_to_s(now_ns() - t0);
    double cpu = cpu_s() - c0;
    invoker_destroy(inv);
    printf("RESULT workload=%s impl=%s tasks=%llu bad=%llu seconds=%.4f tasks_per_s=%.1f "
           "busy=%.4f rank0_cpu=%.4f\n",
           wl, local ? "local" : "mpi", (unsigned long long)tasks, (unsigned long long)s.bad,
           wall, (double)tasks / wall, s.busy_s / (2 * wall), cpu / wall);
    return s.bad ? 1 : 0;
}

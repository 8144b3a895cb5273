/*
 * quickstart.c — the shortest complete use of invoker: evaluate
 * f(x) = (x - 3)^2 on a grid of points over [0, 6] in parallel worker
 * processes, print each result as it arrives, and report the best point.
 */
#define _GNU_SOURCE
#include "common.h"

/* Runs in a worker process: arg holds one double (16-byte aligned). */
static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)len, (void)ctx;
    double x = *(const double *)arg;
    double y = (x - 3.0) * (x - 3.0);
    return invoker_result_write(out, &y, sizeof y);
}

typedef struct summary {
    unsigned done;
    double best_x, best_y;
} summary;

/* Runs in this process, inside invoker_wait(). */
static void on_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    summary *s = user;
    if (len != sizeof(double))
        return;
    double x = *(const double *)t->arg, y = *(const double *)res;
    printf("task %3" PRIu64 ": f(%6.3f) = %7.4f   (worker %d)\n", t->id, x, y, t->worker);
    if (s->done++ == 0 || y < s->best_y) {
        s->best_x = x;
        s->best_y = y;
    }
}

static void on_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    (void)user;
    fprintf(stderr, "task %" PRIu64 " failed: %s (%d)\n", t->id, invoker_failure_name(f), code);
}

int main(int argc, char **argv)
{
    unsigned evals = 13, workers = 0;
    ex_opt opts[] = {
        { "evals", EX_UINT, &evals, "grid points to evaluate, at least 2" },
        { "workers", EX_UINT, &workers, "worker processes, 0 = one per CPU" },
    };
    ex_parse_args(argc, argv, "Evaluates (x-3)^2 on a grid over [0, 6].", opts, EX_COUNT(opts));
    if (evals < 2)
        evals = 2;

    summary s = { 0, 0.0, 0.0 };
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &s;
    cfg.workers = workers;
    invoker *inv;
    ex_check(invoker_create(&inv, &cfg), "invoker_create");
    for (unsigned i = 0; i < evals; i++) {
        double x = 6.0 * i / (evals - 1); /* copied: reuse at once */
        ex_check(invoker_submit(inv, &x, sizeof x, NULL, NULL), "invoker_submit");
    }
    ex_check(invoker_wait(inv), "invoker_wait"); /* callbacks run here */
    ex_check(invoker_destroy(inv), "invoker_destroy");

    double half_step = 3.0 / (evals - 1), tol = half_step * half_step;
    printf("%u of %u evaluations; best f(%g) = %g (tolerance %g)\n", s.done, evals, s.best_x,
           s.best_y, tol);
    return s.done == evals && s.best_y <= tol ? 0 : 1;
}

/*
 * async_de.c — asynchronous steady-state differential evolution
 * (DE/rand/1/bin) minimising the Rastrigin function.
 *
 * There are no generations: on_result compares the returned trial with
 * its target, keeps the better one, and submits the next trial at once,
 * from inside the callback.  A fixed number of trials stays in flight, so
 * a worker that finishes never waits for slower evaluations elsewhere.
 *
 * The evaluation cost varies from candidate to candidate: one in 20 takes
 * 10 times as long as the others (a simulation that needs a finer mesh,
 * say), the mean being --cost-ms.  That is exactly when waiting for a
 * whole generation hurts.
 * Run it with --sync to get the same DE, generation by generation with
 * invoker_wait(), and compare the "workers idle" figure printed at the end.
 */
#define _GNU_SOURCE
#include "common.h"

#define MAX_DIM 64

typedef struct problem {
    unsigned dim;
    uint64_t spin_iters; /* busy-loop rounds costing --cost-ms */
    uint64_t seed;
} problem;

static double rastrigin(const double *x, unsigned n)
{
    const double two_pi = 6.283185307179586;
    double f = 10.0 * n;
    for (unsigned i = 0; i < n; i++)
        f += x[i] * x[i] - 10.0 * cos(two_pi * x[i]);
    return f;
}

/* Runs in a worker.  A hash of the candidate makes one evaluation in 20
 * cost 10 units and the others 0.5 / 0.95 units, a mean of 1 unit, which
 * is --cost-ms. */
static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    const problem *p = ctx;
    if (len != p->dim * sizeof(double))
        return 1;
    double u = (double)(ex_hash(arg, len, p->seed) >> 11) * 0x1.0p-53;
    double factor = u < 0.05 ? 10.0 : 0.5 / 0.95;
    ex_spin((uint64_t)(factor * (double)p->spin_iters));
    double f = rastrigin(arg, p->dim);
    return invoker_result_write(out, &f, sizeof f);
}

/* ---- the optimizer state, owned by the parent ------------------------------ */

typedef struct de {
    invoker *inv;
    unsigned dim, np, inflight_max;
    int async; /* submit the next trial from on_result */
    double F, CR, lo, hi;
    double *x, *fx;       /* population: np vectors and their values */
    unsigned next_target; /* round-robin target of the next trial */
    ex_rng rng;
    uint64_t budget, submitted, evals, failures, outstanding;
    double tol, best_f, run_seconds;
    ex_progress progress;
} de;

static int de_done(const de *d)
{
    return d->submitted >= d->budget || d->best_f <= d->tol;
}

/* A random population index other than a, b and c. */
static unsigned pick_other(ex_rng *rng, unsigned np, unsigned a, unsigned b, unsigned c)
{
    unsigned r;
    do {
        r = ex_rng_below(rng, np);
    } while (r == a || r == b || r == c);
    return r;
}

/* Builds a DE/rand/1/bin trial for the next target and submits it; the
 * target's index travels as the tag. */
static void de_submit_trial(de *d)
{
    unsigned n = d->dim, np = d->np, i = d->next_target;
    d->next_target = (i + 1) % np;
    unsigned r1 = pick_other(&d->rng, np, i, i, i);
    unsigned r2 = pick_other(&d->rng, np, i, r1, r1);
    unsigned r3 = pick_other(&d->rng, np, i, r1, r2);
    const double *xi = d->x + (size_t)i * n, *a = d->x + (size_t)r1 * n;
    const double *b = d->x + (size_t)r2 * n, *c = d->x + (size_t)r3 * n;
    double trial[MAX_DIM];
    unsigned jrand = ex_rng_below(&d->rng, n);
    for (unsigned j = 0; j < n; j++) {
        if (j == jrand || ex_rng_uniform(&d->rng) < d->CR) {
            double v = a[j] + d->F * (b[j] - c[j]);
            if (v < d->lo || v > d->hi) /* out of bounds: resample */
                v = d->lo + (d->hi - d->lo) * ex_rng_uniform(&d->rng);
            trial[j] = v;
        } else {
            trial[j] = xi[j];
        }
    }
    ex_check(invoker_submit(d->inv, trial, n * sizeof(double), (void *)(uintptr_t)i, NULL),
             "invoker_submit");
    d->submitted++;
    d->outstanding++;
}

/* Tops the in-flight trials up to inflight_max, within the budget. */
static void de_refill(de *d)
{
    while (d->outstanding < d->inflight_max && !de_done(d))
        de_submit_trial(d);
}

static void on_result(const invoker_task *task, const void *result, size_t len, void *user)
{
    de *d = user;
    unsigned i = (unsigned)(uintptr_t)task->tag;
    double f = len == sizeof(double) ? *(const double *)result : HUGE_VAL;
    d->outstanding--;
    d->evals++;
    d->run_seconds += task->run_seconds;
    if (f <= d->fx[i]) { /* one-to-one selection */
        d->fx[i] = f;
        memcpy(d->x + (size_t)i * d->dim, task->arg, d->dim * sizeof(double));
    }
    if (f < d->best_f)
        d->best_f = f;
    ex_progress_update(&d->progress, d->evals, d->best_f, NULL);
    if (d->async)
        de_refill(d); /* re-entrant submission */
}

static void on_error(const invoker_task *task, invoker_failure failure, int code, void *user)
{
    de *d = user;
    d->outstanding--;
    d->failures++;
    d->run_seconds += task->run_seconds;
    fprintf(stderr, "\ntrial %" PRIu64 " failed: %s (%d)\n", task->id,
            invoker_failure_name(failure), code);
    if (d->async)
        de_refill(d);
}

int main(int argc, char **argv)
{
    unsigned dim = 8, workers = 0, np = 0, inflight = 0;
    uint64_t evals = 40000, seed = 1;
    double cost_ms = 0.5, tol = 1e-6;
    int sync = 0, use_mpi = 0;
    ex_opt opts[] = {
        { "dim", EX_UINT, &dim, "dimension of the Rastrigin function (4..64)" },
        { "evals", EX_U64, &evals, "evaluation budget" },
        { "workers", EX_UINT, &workers, "worker processes, 0 = one per CPU" },
        { "pop", EX_UINT, &np, "population size, 0 = 5 * dim" },
        { "inflight", EX_UINT, &inflight, "trials kept in flight, 0 = 2 * workers" },
        { "cost-ms", EX_DOUBLE, &cost_ms, "mean CPU milliseconds per evaluation" },
        { "tol", EX_DOUBLE, &tol, "success: best f(x) <= tol (the optimum is 0)" },
        { "seed", EX_U64, &seed, "random seed" },
        { "sync", EX_FLAG, &sync, "generational DE instead, for comparison" },
        EX_MPI_OPT(&use_mpi)
    };
    ex_parse_args(argc, argv,
                  "Asynchronous steady-state differential evolution on the Rastrigin function.",
                  opts, EX_COUNT(opts));
    if (dim < 4 || dim > MAX_DIM) {
        fprintf(stderr, "--dim must be in 4..%d\n", MAX_DIM);
        return 2;
    }
    if (np < 4)
        np = 5 * dim;

    problem prob = { dim, ex_spin_calibrate(cost_ms), seed };
    de d;
    memset(&d, 0, sizeof d);
    d.dim = dim;
    d.np = np;
    d.async = !sync;
    d.F = 0.5;
    d.CR = 0.2; /* low: Rastrigin is separable */
    d.lo = -5.12;
    d.hi = 5.12;
    d.budget = evals;
    d.tol = tol;
    d.best_f = HUGE_VAL;
    d.x = calloc((size_t)np * dim, sizeof *d.x);
    d.fx = calloc(np, sizeof *d.fx);
    if (!d.x || !d.fx) {
        fprintf(stderr, "out of memory\n");
        free(d.x);
        free(d.fx);
        return 1;
    }
    ex_rng_seed(&d.rng, seed);

    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.objective_ctx = &prob;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &d;
    cfg.workers = workers;
    if (ex_create(&d.inv, &cfg, use_mpi, &argc, &argv)) {
        free(d.x);
        free(d.fx);
        return 0;   /* a serving rank */
    }
    invoker_stats st;
    invoker_get_stats(d.inv, &st);
    d.inflight_max = inflight ? inflight : 2 * st.workers;
    printf("%s DE on Rastrigin-%u: %u workers, population %u, %.3g ms mean per "
           "evaluation, budget %" PRIu64 " evaluations, target f <= %g\n",
           sync ? "generational" : "asynchronous", dim, st.workers, np, cost_ms, evals, tol);
    if (!sync)
        printf("%u trials in flight\n", d.inflight_max);

    /* The random initial population: every member starts at +inf and is
     * replaced by its own evaluation like any other trial. */
    for (unsigned i = 0; i < np; i++) {
        d.fx[i] = HUGE_VAL;
        for (unsigned j = 0; j < dim; j++)
            d.x[(size_t)i * dim + j] = d.lo + (d.hi - d.lo) * ex_rng_uniform(&d.rng);
    }
    ex_progress_init(&d.progress);
    double t0 = ex_now();
    for (unsigned i = 0; i < np; i++) {
        ex_check(invoker_submit(d.inv, d.x + (size_t)i * dim, dim * sizeof(double),
                                (void *)(uintptr_t)i, NULL),
                 "invoker_submit");
        d.submitted++;
        d.outstanding++;
    }
    if (sync) {
        ex_check(invoker_wait(d.inv), "invoker_wait");
        while (!de_done(&d)) { /* one generation per wait */
            for (unsigned i = 0; i < np && !de_done(&d); i++)
                de_submit_trial(&d);
            ex_check(invoker_wait(d.inv), "invoker_wait");
        }
    } else {
        ex_check(invoker_wait(d.inv), "invoker_wait"); /* until the callbacks stop */
    }
    double wall = ex_now() - t0;
    ex_progress_end(&d.progress, d.evals, d.best_f, NULL);
    ex_check(invoker_destroy(d.inv), "invoker_destroy");

    double busy = d.run_seconds / (wall * st.workers);
    int ok = d.best_f <= tol;
    printf("evaluations      %" PRIu64 " (%" PRIu64 " failed)\n", d.evals, d.failures);
    printf("best f(x)        %.3e  (target f <= %g: %s)\n", d.best_f, tol,
           ok ? "reached" : "NOT reached");
    printf("wall time        %.3f s  (%.0f evaluations/s)\n", wall, (double)d.evals / wall);
    printf("workers idle     %.1f %%  (1 - task run time %.3f s / (wall time x %u workers))\n",
           100.0 * (1.0 - busy), d.run_seconds, st.workers);
    free(d.x);
    free(d.fx);
    return ok ? 0 : 1;
}

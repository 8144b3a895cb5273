/*
 * cmaes.c — CMA-ES minimising the Rosenbrock function, one population at a
 * time: submit every candidate of a generation, invoker_wait() for all of
 * them, update the search distribution, repeat.
 *
 * The objective is made expensive on purpose: each evaluation spins a busy
 * loop calibrated at start-up to cost --cost-ms milliseconds of CPU, so
 * the parallel speedup is real and measurable.  At the end the program
 * prints the evaluations, failures, best value, wall time and the speedup
 * over one worker (the sum of the tasks' run times over the wall time), and
 * exits 0 only if the best value is within --tol of the optimum, 0 at
 * x = (1, ..., 1).
 *
 * --journal FILE keeps every evaluation in FILE (see invoker_config.journal):
 * kill the run at any moment and start it again with the same options, and
 * the evaluations it already paid for are answered from the journal (the
 * run is deterministic for a seed, so it proposes the same candidates
 * again) without running; it reports how many.
 *
 * The CMA-ES is the standard one (Hansen's tutorial: weighted
 * recombination, cumulative step-size adaptation, rank-one and rank-mu
 * covariance updates) with a small Jacobi eigen-solver, and restarts with
 * a doubled population (IPOP) should it stall in a local minimum.
 */
#define _GNU_SOURCE
#include "common.h"

#define MAX_DIM 64

/* What the workers need, set before invoker_create and never changed:
 * each forked worker has its own copy. */
typedef struct problem {
    unsigned dim;
    uint64_t spin_iters; /* busy-loop rounds costing --cost-ms */
} problem;

static double rosenbrock(const double *x, unsigned n)
{
    double f = 0.0;
    for (unsigned i = 0; i + 1 < n; i++) {
        double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        f += 100.0 * a * a + b * b;
    }
    return f;
}

/* Runs in a worker: arg is the candidate, dim doubles. */
static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    const problem *p = ctx;
    if (len != p->dim * sizeof(double))
        return 1;
    ex_spin(p->spin_iters);
    double f = rosenbrock(arg, p->dim);
    return invoker_result_write(out, &f, sizeof f);
}

/* ---- CMA-ES --------------------------------------------------------------- */

typedef struct cmaes {
    unsigned n, lambda, mu, gen;
    double mueff, cc, cs, c1, cmu, damps, chin, sigma;
    double *w;               /* mu recombination weights */
    double *m, *pc, *ps, *D; /* mean, paths, sqrt of C's eigenvalues (n) */
    double *t1, *t2;         /* scratch (n) */
    double *C, *B, *A;       /* covariance, its eigenvectors, scratch (n*n) */
    double *y, *x;           /* steps and candidates (lambda*n) */
    double *f;               /* fitness of each candidate (lambda) */
    unsigned *rank;          /* candidates, best first (lambda) */
} cmaes;

static void cmaes_free(cmaes *es)
{
    free(es->w);
    free(es->rank);
}

/* Hands out the next count doubles of one allocation. */
static double *carve(double **p, size_t count)
{
    double *q = *p;
    *p += count;
    return q;
}

static int cmaes_init(cmaes *es, unsigned n, unsigned lambda, const double *m0, double sigma0)
{
    memset(es, 0, sizeof *es);
    es->n = n;
    es->lambda = lambda;
    es->mu = lambda / 2;
    size_t count = es->mu + 6 * (size_t)n + 3 * (size_t)n * n + 2 * (size_t)lambda * n + lambda;
    double *p = calloc(count, sizeof *p);
    es->rank = calloc(lambda, sizeof *es->rank);
    if (!p || !es->rank) {
        free(p);
        free(es->rank);
        return -1;
    }
    es->w = carve(&p, es->mu);
    es->m = carve(&p, n);
    es->pc = carve(&p, n);
    es->ps = carve(&p, n);
    es->D = carve(&p, n);
    es->t1 = carve(&p, n);
    es->t2 = carve(&p, n);
    es->C = carve(&p, (size_t)n * n);
    es->B = carve(&p, (size_t)n * n);
    es->A = carve(&p, (size_t)n * n);
    es->y = carve(&p, (size_t)lambda * n);
    es->x = carve(&p, (size_t)lambda * n);
    es->f = carve(&p, lambda);

    double sum = 0.0, sum2 = 0.0;
    for (unsigned i = 0; i < es->mu; i++) {
        es->w[i] = log(es->mu + 0.5) - log(i + 1.0);
        sum += es->w[i];
    }
    for (unsigned i = 0; i < es->mu; i++) {
        es->w[i] /= sum;
        sum2 += es->w[i] * es->w[i];
    }
    double nn = n, mueff = 1.0 / sum2;
    es->mueff = mueff;
    es->cc = (4.0 + mueff / nn) / (nn + 4.0 + 2.0 * mueff / nn);
    es->cs = (mueff + 2.0) / (nn + mueff + 5.0);
    es->c1 = 2.0 / ((nn + 1.3) * (nn + 1.3) + mueff);
    es->cmu = fmin(1.0 - es->c1,
                   2.0 * (mueff - 2.0 + 1.0 / mueff) / ((nn + 2.0) * (nn + 2.0) + mueff));
    es->damps = 1.0 + 2.0 * fmax(0.0, sqrt((mueff - 1.0) / (nn + 1.0)) - 1.0) + es->cs;
    es->chin = sqrt(nn) * (1.0 - 1.0 / (4.0 * nn) + 1.0 / (21.0 * nn * nn));
    es->sigma = sigma0;
    for (unsigned i = 0; i < n; i++) {
        es->m[i] = m0[i];
        es->D[i] = 1.0;
        es->C[i * n + i] = es->B[i * n + i] = 1.0;
    }
    return 0;
}

/* Eigen-decomposition of the symmetric n*n matrix A (destroyed) by cyclic
 * Jacobi rotations: eigenvalues in d, eigenvectors in the columns of V. */
static void jacobi_eigen(unsigned n, double *A, double *d, double *V)
{
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < n; j++)
            V[i * n + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0, diag = 0.0;
        for (unsigned p = 0; p < n; p++) {
            diag += A[p * n + p] * A[p * n + p];
            for (unsigned q = p + 1; q < n; q++)
                off += A[p * n + q] * A[p * n + q];
        }
        if (off <= 1e-30 * diag)
            break;
        for (unsigned p = 0; p < n; p++) {
            for (unsigned q = p + 1; q < n; q++) {
                double apq = A[p * n + q];
                if (apq == 0.0)
                    continue;
                double theta = (A[q * n + q] - A[p * n + p]) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (unsigned k = 0; k < n; k++) { /* A = A J */
                    double akp = A[k * n + p], akq = A[k * n + q];
                    A[k * n + p] = c * akp - s * akq;
                    A[k * n + q] = s * akp + c * akq;
                }
                for (unsigned k = 0; k < n; k++) { /* A = J^T A */
                    double apk = A[p * n + k], aqk = A[q * n + k];
                    A[p * n + k] = c * apk - s * aqk;
                    A[q * n + k] = s * apk + c * aqk;
                }
                for (unsigned k = 0; k < n; k++) { /* V = V J */
                    double vkp = V[k * n + p], vkq = V[k * n + q];
                    V[k * n + p] = c * vkp - s * vkq;
                    V[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    for (unsigned i = 0; i < n; i++)
        d[i] = A[i * n + i];
}

/* Draws the next population: x_k = m + sigma * B D z_k, z_k ~ N(0, I). */
static void cmaes_sample(cmaes *es, ex_rng *rng)
{
    unsigned n = es->n;
    for (unsigned k = 0; k < es->lambda; k++) {
        double *y = es->y + (size_t)k * n, *x = es->x + (size_t)k * n;
        for (unsigned j = 0; j < n; j++)
            es->t1[j] = es->D[j] * ex_rng_normal(rng);
        for (unsigned i = 0; i < n; i++) {
            double s = 0.0;
            for (unsigned j = 0; j < n; j++)
                s += es->B[i * n + j] * es->t1[j];
            y[i] = s;
            x[i] = es->m[i] + es->sigma * s;
        }
        es->f[k] = HUGE_VAL;
    }
}

/* Moves the distribution towards the best mu candidates of es->f. */
static void cmaes_update(cmaes *es)
{
    unsigned n = es->n, mu = es->mu;
    for (unsigned k = 0; k < es->lambda; k++) { /* insertion sort by f */
        unsigned j = k;
        for (; j > 0 && es->f[es->rank[j - 1]] > es->f[k]; j--)
            es->rank[j] = es->rank[j - 1];
        es->rank[j] = k;
    }
    double *ymean = es->t2;
    for (unsigned i = 0; i < n; i++) {
        double s = 0.0;
        for (unsigned r = 0; r < mu; r++)
            s += es->w[r] * es->y[(size_t)es->rank[r] * n + i];
        ymean[i] = s;
        es->m[i] += es->sigma * s;
    }
    for (unsigned j = 0; j < n; j++) { /* t1 = D^-1 B^T ymean */
        double s = 0.0;
        for (unsigned i = 0; i < n; i++)
            s += es->B[i * n + j] * ymean[i];
        es->t1[j] = s / es->D[j];
    }
    double cs_fac = sqrt(es->cs * (2.0 - es->cs) * es->mueff), psnorm2 = 0.0;
    for (unsigned i = 0; i < n; i++) { /* ps += C^-1/2 ymean */
        double s = 0.0;
        for (unsigned j = 0; j < n; j++)
            s += es->B[i * n + j] * es->t1[j];
        es->ps[i] = (1.0 - es->cs) * es->ps[i] + cs_fac * s;
        psnorm2 += es->ps[i] * es->ps[i];
    }
    double psnorm = sqrt(psnorm2);
    double hsig = psnorm / sqrt(1.0 - pow(1.0 - es->cs, 2.0 * (es->gen + 1))) / es->chin <
                  1.4 + 2.0 / (n + 1.0);
    double cc_fac = sqrt(es->cc * (2.0 - es->cc) * es->mueff);
    for (unsigned i = 0; i < n; i++)
        es->pc[i] = (1.0 - es->cc) * es->pc[i] + hsig * cc_fac * ymean[i];
    double c1 = es->c1, cmu = es->cmu;
    double keep = 1.0 - c1 - cmu + (1.0 - hsig) * c1 * es->cc * (2.0 - es->cc);
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = 0; j <= i; j++) {
            double rmu = 0.0;
            for (unsigned r = 0; r < mu; r++) {
                const double *y = es->y + (size_t)es->rank[r] * n;
                rmu += es->w[r] * y[i] * y[j];
            }
            double c = keep * es->C[i * n + j] + c1 * es->pc[i] * es->pc[j] + cmu * rmu;
            es->C[i * n + j] = es->C[j * n + i] = c;
        }
    }
    es->sigma *= exp(fmin(1.0, (es->cs / es->damps) * (psnorm / es->chin - 1.0)));
    memcpy(es->A, es->C, (size_t)n * n * sizeof *es->A);
    jacobi_eigen(n, es->A, es->D, es->B);
    for (unsigned i = 0; i < n; i++)
        es->D[i] = sqrt(fmax(es->D[i], 1e-300));
    es->gen++;
}

/* True when the search has collapsed: steps too small to change x, or the
 * covariance too ill-conditioned to be trusted. */
static int cmaes_stalled(const cmaes *es)
{
    double dmin = es->D[0], dmax = es->D[0];
    for (unsigned i = 1; i < es->n; i++) {
        dmin = fmin(dmin, es->D[i]);
        dmax = fmax(dmax, es->D[i]);
    }
    return es->sigma * dmax < 1e-12 || dmax > 1e7 * dmin;
}

/* ---- the run: bookkeeping in the callbacks -------------------------------- */

typedef struct run {
    cmaes *es;
    unsigned dim;
    uint64_t evals, failures;
    double run_seconds; /* sum of the tasks' run times */
    double best_f;
    double best_x[MAX_DIM];
    ex_progress progress;
} run;

static void on_result(const invoker_task *task, const void *result, size_t len, void *user)
{
    run *r = user;
    unsigned k = (unsigned)(uintptr_t)task->tag;
    double f = len == sizeof(double) ? *(const double *)result : HUGE_VAL;
    r->es->f[k] = f;
    r->evals++;
    r->run_seconds += task->run_seconds;
    if (f < r->best_f) {
        r->best_f = f;
        memcpy(r->best_x, task->arg, r->dim * sizeof(double));
    }
    ex_progress_update(&r->progress, r->evals, r->best_f, NULL);
}

static void on_error(const invoker_task *task, invoker_failure failure, int code, void *user)
{
    run *r = user;
    r->failures++; /* the candidate keeps f = HUGE_VAL: ranked last */
    r->run_seconds += task->run_seconds;
    fprintf(stderr, "\nevaluation %" PRIu64 " failed: %s (%d)\n", task->id,
            invoker_failure_name(failure), code);
}

int main(int argc, char **argv)
{
    unsigned dim = 10, workers = 0, lambda = 0;
    uint64_t evals = 50000, seed = 1;
    double cost_ms = 1.0, tol = 1e-10;
    int use_mpi = 0;
    const char *journal = NULL;
    ex_opt opts[] = {
        { "dim", EX_UINT, &dim, "dimension of the Rosenbrock function (2..64)" },
        { "evals", EX_U64, &evals, "evaluation budget" },
        { "workers", EX_UINT, &workers, "worker processes, 0 = one per CPU" },
        { "lambda", EX_UINT, &lambda, "population size, 0 = max(4 + 3 ln dim, workers)" },
        { "cost-ms", EX_DOUBLE, &cost_ms, "CPU milliseconds each evaluation burns" },
        { "tol", EX_DOUBLE, &tol, "success: best f(x) <= tol (the optimum is 0)" },
        { "seed", EX_U64, &seed, "random seed" },
        { "journal", EX_STR, &journal, "file of paid evaluations: a rerun resumes from it" },
        EX_MPI_OPT(&use_mpi)
    };
    ex_parse_args(argc, argv,
                  "CMA-ES on the Rosenbrock function, one generation per invoker_wait().", opts,
                  EX_COUNT(opts));
    if (dim < 2 || dim > MAX_DIM) {
        fprintf(stderr, "--dim must be in 2..%d\n", MAX_DIM);
        return 2;
    }

    problem prob = { dim, ex_spin_calibrate(cost_ms) };
    run r;
    memset(&r, 0, sizeof r);
    r.dim = dim;
    r.best_f = HUGE_VAL;

    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.objective_ctx = &prob;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &r;
    cfg.workers = workers;
    /* The key names the objective: a journal of another one is never
     * taken for this one's.  (Its cost does not change its values.) */
    cfg.journal = journal;
    cfg.journal_key = "cmaes rosenbrock v1";
    invoker *inv;
    if (ex_create(&inv, &cfg, use_mpi, &argc, &argv))
        return 0;   /* a serving rank */
    invoker_stats st;
    invoker_get_stats(inv, &st);

    if (lambda == 0) {
        lambda = 4 + (unsigned)(3.0 * log(dim));
        if (lambda < st.workers)
            lambda = st.workers; /* one candidate per worker at least */
    }
    if (lambda < 4)
        lambda = 4;
    printf("CMA-ES on Rosenbrock-%u: %u workers, population %u, %.3g ms per evaluation, "
           "budget %" PRIu64 " evaluations, target f <= %g\n",
           dim, st.workers, lambda, cost_ms, evals, tol);

    ex_rng rng;
    ex_rng_seed(&rng, seed);
    double m0[MAX_DIM];
    for (unsigned i = 0; i < dim; i++)
        m0[i] = 4.0 * ex_rng_uniform(&rng) - 2.0; /* start in [-2, 2]^dim */
    cmaes es;
    if (cmaes_init(&es, dim, lambda, m0, 0.5) < 0) {
        fprintf(stderr, "out of memory\n");
        invoker_destroy(inv);
        return 1;
    }
    r.es = &es;
    unsigned restarts = 0, generations = 0;
    uint64_t submitted = 0;
    ex_progress_init(&r.progress);
    double t0 = ex_now();

    while (submitted < evals && !(r.best_f <= tol)) {
        cmaes_sample(&es, &rng);
        for (unsigned k = 0; k < es.lambda; k++)
            ex_check(invoker_submit(inv, es.x + (size_t)k * dim, dim * sizeof(double),
                                    (void *)(uintptr_t)k, NULL),
                     "invoker_submit");
        submitted += es.lambda;
        ex_check(invoker_wait(inv), "invoker_wait"); /* the whole generation */
        cmaes_update(&es);
        generations++;
        if (cmaes_stalled(&es) && !(r.best_f <= tol)) {
            unsigned next = es.lambda * 2; /* IPOP restart */
            for (unsigned i = 0; i < dim; i++)
                m0[i] = 4.0 * ex_rng_uniform(&rng) - 2.0;
            cmaes_free(&es);
            if (cmaes_init(&es, dim, next, m0, 0.5) < 0) {
                fprintf(stderr, "out of memory\n");
                invoker_destroy(inv);
                return 1;
            }
            restarts++;
        }
    }
    double wall = ex_now() - t0;
    ex_progress_end(&r.progress, r.evals, r.best_f, NULL);
    invoker_get_stats(inv, &st);
    ex_check(invoker_destroy(inv), "invoker_destroy");

    double dist = 0.0;
    for (unsigned i = 0; i < dim; i++)
        dist += (r.best_x[i] - 1.0) * (r.best_x[i] - 1.0);
    int ok = r.best_f <= tol;
    printf("evaluations      %" PRIu64 " (%u generations, %u restarts)\n", r.evals, generations,
           restarts);
    printf("failures         %" PRIu64 "\n", r.failures);
    if (journal)
        printf("from the journal %" PRIu64 " evaluations answered without running (cached), "
               "%" PRIu64 " written%s%s\n", st.cached, st.journaled,
               st.journal_error ? "; journal stopped: " : "",
               st.journal_error ? invoker_strerror(st.journal_error) : "");
    printf("best f(x)        %.3e  (|x - optimum| = %.2e; target f <= %g: %s)\n", r.best_f,
           sqrt(dist), tol, ok ? "reached" : "NOT reached");
    printf("wall time        %.3f s  (%.0f evaluations/s)\n", wall, (double)r.evals / wall);
    printf("speedup          %.2fx over one worker  (task run time %.3f s / wall time)\n",
           wall > 0 ? r.run_seconds / wall : 0.0, r.run_seconds);
    cmaes_free(&es);
    return ok ? 0 : 1;
}

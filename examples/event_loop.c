/*
 * event_loop.c — invoker embedded in a program's own poll() loop, the way a
 * GUI or a server would use it: nothing ever blocks in invoker_wait().
 *
 * The loop watches two descriptors: invoker_fd(), readable whenever the
 * invoker has something to do (a result to read, a deadline due), and a
 * timerfd that ticks every 100 ms and redraws a status line.  When the
 * invoker's descriptor is readable the loop calls invoker_poll(inv, 0),
 * which runs the callbacks without waiting.
 *
 * The optimizer is written the event-driven way too: a (mu/mu, lambda)
 * evolution strategy with self-adaptive step sizes whose on_result, on the
 * last result of a generation, does the selection and submits the next
 * generation itself.  It minimises a shifted ellipsoid and exits 0 when it
 * gets within --tol of the optimum, 0.
 */
#define _GNU_SOURCE
#include "common.h"

#include <poll.h>
#include <sys/timerfd.h>

#define MAX_DIM 64

typedef struct problem {
    unsigned dim;
    uint64_t spin_iters; /* busy-loop rounds costing --cost-ms */
} problem;

/* f(x) = sum_i (1 + i) (x_i - i/4)^2: minimum 0, mildly ill-conditioned. */
static double ellipsoid(const double *x, unsigned n)
{
    double f = 0.0;
    for (unsigned i = 0; i < n; i++) {
        double d = x[i] - 0.25 * i;
        f += (1.0 + i) * d * d;
    }
    return f;
}

/* The task argument: the candidate's step size, then x. */
typedef struct candidate {
    double sigma;
    double x[MAX_DIM];
} candidate;

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    const problem *p = ctx;
    const candidate *c = arg;
    if (len != sizeof *c)
        return 1;
    ex_spin(p->spin_iters);
    double f = ellipsoid(c->x, p->dim);
    return invoker_result_write(out, &f, sizeof f);
}

/* ---- a (mu/mu, lambda)-sigmaSA-ES driven by its callbacks ------------------ */

typedef struct es {
    invoker *inv;
    unsigned n, mu, lambda, gen, reported;
    double sigma, tau, tol;
    double m[MAX_DIM];
    candidate *pop; /* this generation's candidates (lambda) */
    double *f;      /* and their values */
    ex_rng rng;
    uint64_t budget, submitted, evals, failures;
    double best_f;
    int finished; /* no more generations: the loop may end */
} es;

static void es_submit_generation(es *s)
{
    for (unsigned k = 0; k < s->lambda; k++) {
        candidate *c = &s->pop[k];
        memset(c, 0, sizeof *c);
        c->sigma = s->sigma * exp(s->tau * ex_rng_normal(&s->rng));
        for (unsigned i = 0; i < s->n; i++)
            c->x[i] = s->m[i] + c->sigma * ex_rng_normal(&s->rng);
        s->f[k] = HUGE_VAL;
        ex_check(invoker_submit(s->inv, c, sizeof *c, (void *)(uintptr_t)k, NULL),
                 "invoker_submit");
    }
    s->submitted += s->lambda;
    s->reported = 0;
}

/* Called after each report: on the generation's last one, select the best
 * mu, recombine mean and step size, and go on or finish. */
static void es_account(es *s)
{
    if (++s->reported < s->lambda)
        return;
    double sum_x[MAX_DIM] = { 0 }, log_sigma = 0.0;
    unsigned chosen = 0;
    for (unsigned r = 0; r < s->mu; r++) { /* mu passes of selection */
        unsigned best = s->lambda;
        for (unsigned k = 0; k < s->lambda; k++)
            if (s->f[k] < HUGE_VAL && (best == s->lambda || s->f[k] < s->f[best]))
                best = k;
        if (best == s->lambda)
            break; /* fewer than mu succeeded */
        for (unsigned i = 0; i < s->n; i++)
            sum_x[i] += s->pop[best].x[i];
        log_sigma += log(s->pop[best].sigma);
        s->f[best] = HUGE_VAL; /* taken */
        chosen++;
    }
    if (chosen > 0) {
        for (unsigned i = 0; i < s->n; i++)
            s->m[i] = sum_x[i] / chosen;
        s->sigma = exp(log_sigma / chosen);
    }
    s->gen++;
    if (s->best_f <= s->tol || s->submitted + s->lambda > s->budget)
        s->finished = 1;
    else
        es_submit_generation(s); /* from inside the callback */
}

static void on_result(const invoker_task *task, const void *result, size_t len, void *user)
{
    es *s = user;
    unsigned k = (unsigned)(uintptr_t)task->tag;
    double f = len == sizeof(double) ? *(const double *)result : HUGE_VAL;
    s->f[k] = f;
    s->evals++;
    if (f < s->best_f)
        s->best_f = f;
    es_account(s);
}

static void on_error(const invoker_task *task, invoker_failure failure, int code, void *user)
{
    es *s = user;
    s->failures++;
    fprintf(stderr, "\nevaluation %" PRIu64 " failed: %s (%d)\n", task->id,
            invoker_failure_name(failure), code);
    es_account(s);
}

int main(int argc, char **argv)
{
    unsigned dim = 10, workers = 0, lambda = 0;
    uint64_t evals = 50000, seed = 1;
    double cost_ms = 1.0, tol = 1e-8;
    ex_opt opts[] = {
        { "dim", EX_UINT, &dim, "dimension of the ellipsoid (1..64)" },
        { "evals", EX_U64, &evals, "evaluation budget" },
        { "workers", EX_UINT, &workers, "worker processes, 0 = one per CPU" },
        { "lambda", EX_UINT, &lambda, "offspring per generation, 0 = max(12, workers)" },
        { "cost-ms", EX_DOUBLE, &cost_ms, "CPU milliseconds each evaluation burns" },
        { "tol", EX_DOUBLE, &tol, "success: best f(x) <= tol (the optimum is 0)" },
        { "seed", EX_U64, &seed, "random seed" },
    };
    ex_parse_args(argc, argv,
                  "A self-adaptive ES driven from a poll() loop beside a 100 ms timerfd.", opts,
                  EX_COUNT(opts));
    if (dim < 1 || dim > MAX_DIM) {
        fprintf(stderr, "--dim must be in 1..%d\n", MAX_DIM);
        return 2;
    }

    problem prob = { dim, ex_spin_calibrate(cost_ms) };
    es s;
    memset(&s, 0, sizeof s);
    s.n = dim;
    s.tau = 1.0 / sqrt(2.0 * dim);
    s.sigma = 1.0;
    s.tol = tol;
    s.budget = evals;
    s.best_f = HUGE_VAL;
    ex_rng_seed(&s.rng, seed);
    for (unsigned i = 0; i < dim; i++)
        s.m[i] = 4.0 * ex_rng_uniform(&s.rng) - 2.0;

    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.objective_ctx = &prob;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &s;
    cfg.workers = workers;
    ex_check(invoker_create(&s.inv, &cfg), "invoker_create");
    invoker_stats st;
    invoker_get_stats(s.inv, &st);
    s.lambda = lambda ? lambda : st.workers > 12 ? st.workers : 12;
    s.mu = s.lambda / 4 > 0 ? s.lambda / 4 : 1;
    s.pop = calloc(s.lambda, sizeof *s.pop);
    s.f = calloc(s.lambda, sizeof *s.f);
    if (!s.pop || !s.f) {
        fprintf(stderr, "out of memory\n");
        free(s.pop);
        free(s.f);
        invoker_destroy(s.inv);
        return 1;
    }
    printf("(%u/%u,%u)-ES on a %u-D ellipsoid in a poll() loop: %u workers, %.3g ms per "
           "evaluation, budget %" PRIu64 " evaluations, target f <= %g\n",
           s.mu, s.mu, s.lambda, dim, st.workers, cost_ms, evals, tol);

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec every_100ms = { { 0, 100000000 }, { 0, 100000000 } };
    if (tfd < 0 || timerfd_settime(tfd, 0, &every_100ms, NULL) < 0) {
        perror("timerfd");
        return 1;
    }
    int ifd = invoker_fd(s.inv);
    ex_check(ifd, "invoker_fd");
    struct pollfd fds[2] = { { ifd, POLLIN, 0 }, { tfd, POLLIN, 0 } };

    ex_progress progress;
    ex_progress_init(&progress);
    uint64_t ticks = 0;
    char status[128];
    double t0 = ex_now();
    es_submit_generation(&s);
    while (!s.finished) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        if (fds[0].revents & POLLIN) /* results, deadlines */
            ex_check(invoker_poll(s.inv, 0), "invoker_poll");
        if (fds[1].revents & POLLIN) { /* the 100 ms tick */
            uint64_t n;
            if (read(tfd, &n, sizeof n) == (ssize_t)sizeof n)
                ticks += n;
            invoker_get_stats(s.inv, &st);
            snprintf(status, sizeof status, "gen %u  sigma %.2e  busy %u/%u  queued %u", s.gen,
                     s.sigma, st.busy, st.workers, st.queued);
            /* Every tick on a terminal; once a second otherwise. */
            ex_progress_update(&progress, s.evals, s.best_f, status);
        }
    }
    double wall = ex_now() - t0;
    snprintf(status, sizeof status, "gen %u  sigma %.2e", s.gen, s.sigma);
    ex_progress_end(&progress, s.evals, s.best_f, status);
    close(tfd);
    ex_check(invoker_destroy(s.inv), "invoker_destroy");

    int ok = s.best_f <= tol;
    printf("evaluations      %" PRIu64 " (%u generations, %" PRIu64 " failed)\n", s.evals, s.gen,
           s.failures);
    printf("timer ticks      %" PRIu64 " (the loop stayed responsive throughout)\n", ticks);
    printf("best f(x)        %.3e  (target f <= %g: %s)\n", s.best_f, tol,
           ok ? "reached" : "NOT reached");
    printf("wall time        %.3f s  (%.0f evaluations/s)\n", wall, (double)s.evals / wall);
    free(s.pop);
    free(s.f);
    return ok ? 0 : 1;
}

/*
 * flaky.c — an optimizer that keeps going while its objective misbehaves.
 *
 * A (1+lambda) evolution strategy with a success-based step size
 * minimises a shifted sphere in 4 dimensions, but the objective is
 * flaky: a hash of each candidate (and --seed) decides whether it
 *   - returns normally                                   (most of them),
 *   - returns an error code                              -> objective error,
 *   - hangs forever                                      -> timeout,
 *   - dies of SIGSEGV or abort()                         -> crash,
 *   - calls _exit(3)                                     -> exit,
 *   - crashes on its first attempt only                  -> saved by a retry.
 * The config's timeout and retries contain the damage; on_error just
 * drops the candidate.  Because the fate is a function of the argument,
 * and retries re-run the same argument, the parent can predict every
 * outcome: the program checks each report against its prediction, checks
 * that successes + failures == submitted, cross-checks invoker_get_stats,
 * and exits non-zero if anything does not add up.
 *
 * "Crashes on its first attempt only" needs memory that outlives the
 * worker, since a retry runs in a fresh worker: a MAP_SHARED page mapped
 * before invoker_create, one byte per candidate, set atomically.  It is the
 * only state the workers share with anyone.
 */
#define _GNU_SOURCE
#include "common.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define DIM        4
#define ERROR_CODE 7
#define EXIT_CODE  3

/* The task argument: a serial number (unique per candidate) and x. */
typedef struct candidate {
    uint64_t serial;
    double x[DIM];
} candidate;

typedef enum fate {
    FATE_OK,
    FATE_ERROR,
    FATE_HANG,
    FATE_SEGV,
    FATE_ABORT,
    FATE_EXIT,
    FATE_TRANSIENT,
    FATE_COUNT
} fate;

static const char *const fate_names[FATE_COUNT] = {
    "ok", "error code", "hang", "SIGSEGV", "abort()", "_exit(3)", "crash once",
};

/* Which candidates misbehave, by percent: 2 hang, 3 SIGSEGV, 2 abort(),
 * 2 _exit(3), 4 error code, 4 crash once; the other 83 are fine. */
static fate fate_of(const candidate *c, uint64_t seed)
{
    unsigned r = (unsigned)(ex_hash(c, sizeof *c, seed) % 100);
    return r < 2    ? FATE_HANG
           : r < 5  ? FATE_SEGV
           : r < 7  ? FATE_ABORT
           : r < 9  ? FATE_EXIT
           : r < 13 ? FATE_ERROR
           : r < 17 ? FATE_TRANSIENT
                    : FATE_OK;
}

typedef struct problem {
    uint64_t seed, spin_iters;
    atomic_uchar *tried; /* shared: tried[serial] set by the first attempt */
    uint64_t slots;
} problem;

static double sphere(const double *x)
{
    double f = 0.0;
    for (int i = 0; i < DIM; i++)
        f += (x[i] - 0.5 * (i + 1)) * (x[i] - 0.5 * (i + 1)); /* optimum 0 at (0.5, 1, 1.5, 2) */
    return f;
}

/* Runs once in each new worker: a worker that crashes on purpose should
 * not leave a core file behind. */
static int worker_init(unsigned worker, void *ctx)
{
    (void)worker, (void)ctx;
    struct rlimit no_core = { 0, 0 };
    return setrlimit(RLIMIT_CORE, &no_core) < 0 ? 1 : 0;
}

/* Dies of sig, even where a runtime (a sanitizer, say) installed a handler. */
static void die_of(int sig)
{
    signal(sig, SIG_DFL);
    raise(sig);
}

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    const problem *p = ctx;
    const candidate *c = arg;
    if (len != sizeof *c)
        return 1;
    ex_spin(p->spin_iters);
    switch (fate_of(c, p->seed)) {
    case FATE_ERROR:
        return ERROR_CODE;
    case FATE_HANG:
        for (;;)
            pause();
    case FATE_SEGV:
        die_of(SIGSEGV);
        break;
    case FATE_ABORT:
        abort();
    case FATE_EXIT:
        _exit(EXIT_CODE);
    case FATE_TRANSIENT:
        if (c->serial < p->slots && atomic_exchange(&p->tried[c->serial], 1) == 0)
            die_of(SIGSEGV);
        break;
    default:
        break;
    }
    double f = sphere(c->x);
    return invoker_result_write(out, &f, sizeof f);
}

/* ---- the parent: the ES and the books -------------------------------------- */

typedef struct tally {
    unsigned retries;
    uint64_t seed;
    uint64_t succeeded, retried_ok, by_failure[INVOKER_FAIL_CPU + 1];
    uint64_t predicted[FATE_COUNT], attempts_extra, mismatches;
    /* this generation's best success */
    double gen_best_f;
    candidate gen_best;
    unsigned gen_successes;
    double best_f;
    ex_progress progress;
} tally;

/* What a candidate of this fate should end as, given the retries. */
static void expected_outcome(fate f, unsigned retries, int *ok, invoker_failure *failure, int *code,
                             unsigned *attempts)
{
    *ok = 0;
    *code = 0;
    *attempts = retries + 1;
    switch (f) {
    case FATE_OK:
        *ok = 1;
        *attempts = 1;
        break;
    case FATE_ERROR:
        *failure = INVOKER_FAIL_OBJECTIVE;
        *code = ERROR_CODE;
        *attempts = 1;
        break;
    case FATE_HANG:
        *failure = INVOKER_FAIL_TIMEOUT;
        break;
    case FATE_SEGV:
        *failure = INVOKER_FAIL_CRASH;
        *code = SIGSEGV;
        break;
    case FATE_ABORT:
        *failure = INVOKER_FAIL_CRASH;
        *code = SIGABRT;
        break;
    case FATE_EXIT:
        *failure = INVOKER_FAIL_EXIT;
        *code = EXIT_CODE;
        break;
    default: /* FATE_TRANSIENT: the retry succeeds, if there is one */
        *ok = retries > 0;
        *failure = INVOKER_FAIL_CRASH;
        *code = SIGSEGV;
        *attempts = retries > 0 ? 2 : 1;
        break;
    }
}

/* Counts the report and compares it with the prediction. */
static void book(tally *t, const invoker_task *task, int ok, invoker_failure failure, int code)
{
    fate f = fate_of(task->arg, t->seed);
    int want_ok, want_code;
    invoker_failure want_failure = 0;
    unsigned want_attempts;
    expected_outcome(f, t->retries, &want_ok, &want_failure, &want_code, &want_attempts);
    t->predicted[f]++;
    t->attempts_extra += task->attempts > 0 ? task->attempts - 1 : 0;
    if (ok != want_ok || task->attempts != want_attempts ||
        (!ok && (failure != want_failure || code != want_code))) {
        t->mismatches++;
        fprintf(stderr,
                "\ncandidate %" PRIu64 " (%s): got %s code %d after %u attempts, "
                "expected %s code %d after %u\n",
                ((const candidate *)task->arg)->serial, fate_names[f],
                ok ? "success" : invoker_failure_name(failure), code, task->attempts,
                want_ok ? "success" : invoker_failure_name(want_failure), want_code, want_attempts);
    }
}

static void on_result(const invoker_task *task, const void *result, size_t len, void *user)
{
    tally *t = user;
    book(t, task, 1, 0, 0);
    t->succeeded++;
    if (task->attempts > 1)
        t->retried_ok++;
    double f = len == sizeof(double) ? *(const double *)result : HUGE_VAL;
    t->gen_successes++;
    if (f < t->gen_best_f) {
        t->gen_best_f = f;
        memcpy(&t->gen_best, task->arg, sizeof t->gen_best);
    }
    if (f < t->best_f)
        t->best_f = f;
    ex_progress_update(&t->progress, t->succeeded, t->best_f, NULL);
}

static void on_error(const invoker_task *task, invoker_failure failure, int code, void *user)
{
    tally *t = user;
    book(t, task, 0, failure, code);
    if ((unsigned)failure <= INVOKER_FAIL_CPU)
        t->by_failure[failure]++;
    else
        t->mismatches++;
}

int main(int argc, char **argv)
{
    unsigned workers = 0, lambda = 8, retries = 1;
    uint64_t evals = 1000, seed = 1;
    double cost_ms = 0.5, timeout = 0.1, tol = 1e-6;
    ex_opt opts[] = {
        { "evals", EX_U64, &evals, "evaluation budget (candidates submitted)" },
        { "workers", EX_UINT, &workers, "worker processes, 0 = one per CPU" },
        { "lambda", EX_UINT, &lambda, "candidates per generation" },
        { "timeout", EX_DOUBLE, &timeout, "seconds before a hung evaluation is killed" },
        { "retries", EX_UINT, &retries, "re-runs of a crashed, exited or timed-out task" },
        { "cost-ms", EX_DOUBLE, &cost_ms, "CPU milliseconds each evaluation burns" },
        { "tol", EX_DOUBLE, &tol, "success: best f(x) <= tol (the optimum is 0)" },
        { "seed", EX_U64, &seed, "random seed (also picks which candidates misbehave)" },
    };
    ex_parse_args(argc, argv, "A (1+lambda)-ES on a flaky objective that hangs, crashes and fails.",
                  opts, EX_COUNT(opts));
    if (lambda < 1 || evals < 1 || !(timeout > 0)) {
        fprintf(stderr, "--lambda and --evals must be >= 1, --timeout > 0\n");
        return 2;
    }

    problem prob = { seed, ex_spin_calibrate(cost_ms), NULL, evals };
    void *shared = mmap(NULL, evals, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    prob.tried = shared;
    for (uint64_t i = 0; i < evals; i++)
        atomic_init(&prob.tried[i], 0);

    tally t;
    memset(&t, 0, sizeof t);
    t.retries = retries;
    t.seed = seed;
    t.best_f = HUGE_VAL;

    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = objective;
    cfg.objective_ctx = &prob;
    cfg.worker_init = worker_init;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &t;
    cfg.workers = workers;
    cfg.timeout = timeout;
    cfg.retries = retries;
    invoker *inv;
    ex_check(invoker_create(&inv, &cfg), "invoker_create");
    invoker_stats st;
    invoker_get_stats(inv, &st);
    printf("(1+%u)-ES on a flaky 4-D sphere: %u workers, timeout %g s, %u retries, "
           "budget %" PRIu64 " evaluations, target f <= %g\n",
           lambda, st.workers, timeout, retries, evals, tol);

    ex_rng rng;
    ex_rng_seed(&rng, seed);
    candidate parent = { 0, { 0 } };
    double parent_f = sphere(parent.x), sigma = 0.5;
    t.best_f = parent_f; /* the start point counts as found */
    uint64_t submitted = 0;
    ex_progress_init(&t.progress);
    double t0 = ex_now();
    while (submitted < evals && !(parent_f <= tol)) {
        t.gen_best_f = HUGE_VAL;
        t.gen_successes = 0;
        unsigned n = 0;
        for (; n < lambda && submitted < evals; n++) {
            candidate c = { submitted, { 0 } };
            for (int i = 0; i < DIM; i++)
                c.x[i] = parent.x[i] + sigma * ex_rng_normal(&rng);
            ex_check(invoker_submit(inv, &c, sizeof c, NULL, NULL), "invoker_submit");
            submitted++;
        }
        ex_check(invoker_wait(inv), "invoker_wait");
        /* Step-size rule over the candidates that came back: double the
         * step when the best beat the parent, halve it otherwise.  Failed
         * candidates simply do not count. */
        if (t.gen_best_f < parent_f) {
            memcpy(parent.x, t.gen_best.x, sizeof parent.x);
            parent_f = t.gen_best_f;
            sigma *= 2.0;
        } else if (t.gen_successes > 0) {
            sigma *= 0.5;
        }
    }
    double wall = ex_now() - t0;
    ex_progress_end(&t.progress, t.succeeded, t.best_f, NULL);
    invoker_get_stats(inv, &st);
    ex_check(invoker_destroy(inv), "invoker_destroy");
    munmap(shared, evals);

    uint64_t failed = 0;
    for (int k = 0; k <= INVOKER_FAIL_CPU; k++)
        failed += t.by_failure[k];
    printf("outcome                   count   predicted from the hash\n");
    printf("succeeded                 %5" PRIu64 "   %5" PRIu64 "\n", t.succeeded,
           t.predicted[FATE_OK] + (retries ? t.predicted[FATE_TRANSIENT] : 0));
    printf("  of which after a retry  %5" PRIu64 "   %5" PRIu64 "\n", t.retried_ok,
           retries ? t.predicted[FATE_TRANSIENT] : 0);
    printf("objective error           %5" PRIu64 "   %5" PRIu64 "\n",
           t.by_failure[INVOKER_FAIL_OBJECTIVE], t.predicted[FATE_ERROR]);
    printf("timeout                   %5" PRIu64 "   %5" PRIu64 "\n",
           t.by_failure[INVOKER_FAIL_TIMEOUT], t.predicted[FATE_HANG]);
    printf("crash (signal)            %5" PRIu64 "   %5" PRIu64 "\n",
           t.by_failure[INVOKER_FAIL_CRASH],
           t.predicted[FATE_SEGV] + t.predicted[FATE_ABORT] +
               (retries ? 0 : t.predicted[FATE_TRANSIENT]));
    printf("exit                      %5" PRIu64 "   %5" PRIu64 "\n",
           t.by_failure[INVOKER_FAIL_EXIT], t.predicted[FATE_EXIT]);
    uint64_t other = failed - t.by_failure[INVOKER_FAIL_OBJECTIVE] -
                     t.by_failure[INVOKER_FAIL_TIMEOUT] - t.by_failure[INVOKER_FAIL_CRASH] -
                     t.by_failure[INVOKER_FAIL_EXIT];
    printf("other failures            %5" PRIu64 "       0\n", other);
    printf("successes + failures      %5" PRIu64 "   submitted %" PRIu64 "\n", t.succeeded + failed,
           submitted);
    printf("extra attempts (retries)  %5" PRIu64 "\n", t.attempts_extra);
    printf("invoker_get_stats         submitted %" PRIu64 ", succeeded %" PRIu64 ", failed %" PRIu64
           ", timed out %" PRIu64 ", crashed %" PRIu64 ", retried %" PRIu64
           ", workers started %" PRIu64 "\n",
           st.submitted, st.succeeded, st.failed, st.timed_out, st.crashed, st.retried,
           st.workers_started);
    printf("best f(x)                 %.3e  (target f <= %g)\n", t.best_f, tol);
    printf("wall time                 %.3f s\n", wall);

    /* The library's own books must agree with ours: timed_out counts the
     * final timeouts, crashed the final crashes and exits, retried the
     * re-runs (the extra attempts). */
    int stats_agree = st.submitted == submitted && st.succeeded == t.succeeded &&
                      st.failed == failed && st.timed_out == t.by_failure[INVOKER_FAIL_TIMEOUT] &&
                      st.crashed ==
                          t.by_failure[INVOKER_FAIL_CRASH] + t.by_failure[INVOKER_FAIL_EXIT] &&
                      st.retried == t.attempts_extra;
    printf("invoker_get_stats         %s our counts\n", stats_agree ? "matches" : "DOES NOT match");
    int adds_up = t.succeeded + failed == submitted && other == 0 && t.mismatches == 0 &&
                  stats_agree;
    int ok = adds_up && t.best_f <= tol;
    printf("%s\n", !adds_up ? "FAIL: the counts do not add up"
                   : ok     ? "OK: every outcome as predicted, counts add up, target reached"
                            : "FAIL: target not reached");
    return ok ? 0 : 1;
}

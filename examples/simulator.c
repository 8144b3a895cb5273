/*
 * simulator.c — an optimizer driving an external program as its objective.
 *
 * Most expensive objectives are programs, not C functions.  Here a
 * (1+lambda) evolution strategy minimises a 2-D ellipsoid that
 * only the program "simulate" (examples/simulate.c, built next to this
 * one) knows: each evaluation is one run of it, through the built-in
 * invoker_command_objective:
 *   - the point goes to its stdin as text, its stdout is the cost;
 *   - each attempt runs in a fresh work directory under a root this
 *     example makes; keep_workdir = 1 keeps those of failed attempts, so
 *     their logs (sim.log) can be read afterwards;
 *   - the program hangs, crashes or diverges now and then: the timeout
 *     kills a hung one (after kill_grace, in which it writes "interrupted"
 *     to its log) and the retry hangs again; a crash (SIGSEGV: code 139)
 *     or a divergence (exit status 2) is the objective's own verdict, not
 *     retried (retries are for the worker's deaths and timeouts).
 *   - capture_stderr (INVOKER_STDERR_TAIL): what the program writes to
 *     stderr is kept per task, not printed; a failure's callback gets it.
 * The summary lists every failure with its forensics (code, attempt, wall
 * and CPU time, peak memory, the last line of its stderr and of its log)
 * and the kept work
 * directories; the program checks that the counts add up and that the
 * optimum was approached, and exits non-zero otherwise.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>

#define DIM       2
#define MAX_FAILS 4096

typedef struct failure_rec {
    invoker_id      id;
    unsigned        attempts;
    int             worker;
    invoker_failure failure;
    int             code;
    double          run_seconds, cpu_seconds;
    long            max_rss_kib;
    char            said[64];   /* the last line of its stderr tail */
} failure_rec;

typedef struct run {
    double       x[1024][DIM];     /* candidates of the generation, by slot */
    double       f[1024];
    int          ok[1024];
    failure_rec  fails[MAX_FAILS];
    size_t       nfails;
    uint64_t     succeeded, failed;
    double       cpu_total;
    long         rss_max;
} run;

static void on_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    run *r = user;
    size_t slot = (size_t)(uintptr_t)t->tag;
    char text[64];
    size_t n = len < sizeof text - 1 ? len : sizeof text - 1;
    memcpy(text, res, n);
    text[n] = 0;
    char *end;
    double f = strtod(text, &end);
    r->succeeded++;
    r->cpu_total += t->cpu_seconds;
    r->rss_max = t->max_rss_kib > r->rss_max ? t->max_rss_kib : r->rss_max;
    if (end != text) {
        r->f[slot] = f;
        r->ok[slot] = 1;
    }
}

/* The last line of a stderr tail (its final newline dropped), or "-". */
static void last_line(const char *tail, size_t len, char *out, size_t size)
{
    if (len && tail[len - 1] == '\n')
        len--;
    size_t start = len;
    while (start > 0 && tail[start - 1] != '\n')
        start--;
    size_t n = len - start < size - 1 ? len - start : size - 1;
    memcpy(out, tail + start, n);
    out[n] = 0;
    if (!n)
        snprintf(out, size, "-");
}

static void on_error(const invoker_task *t, invoker_failure failure, int code, void *user)
{
    run *r = user;
    r->failed++;
    r->cpu_total += t->cpu_seconds;
    if (r->nfails < MAX_FAILS) {
        failure_rec *f = &r->fails[r->nfails++];
        *f = (failure_rec){ t->id, t->attempts, t->worker, failure, code,
                            t->run_seconds, t->cpu_seconds, t->max_rss_kib, "" };
        last_line(t->stderr_tail, t->stderr_tail_len, f->said, sizeof f->said);
    }
}

/* What an exit code of invoker_command_objective says. */
static const char *meaning(invoker_failure failure, int code)
{
    if (failure == INVOKER_FAIL_TIMEOUT)
        return "past its timeout: group killed";
    if (failure != INVOKER_FAIL_OBJECTIVE)
        return invoker_failure_name(failure);
    if (code == 127)
        return "program not found";
    if (code == 126)
        return "program not executable";
    if (code > 128)
        return "killed by a signal (code - 128)";
    if (code < 0)
        return "could not be set up (-errno)";
    return "exit status";
}

/* The kept work directory of task id's attempt, under root. */
static int workdir_of(const char *root, invoker_id id, unsigned attempt, char *out, size_t size)
{
    char suffix[64];
    snprintf(suffix, sizeof suffix, "-%" PRIu64 "-%u", (uint64_t)id, attempt);
    DIR *d = opendir(root);
    if (!d)
        return 0;
    const struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name), s = strlen(suffix);
        if (n > s && !strcmp(e->d_name + n - s, suffix)) {
            snprintf(out, size, "%s/%s", root, e->d_name);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

/* The last line of a kept attempt's sim.log, or "". */
static void last_log_line(const char *dir, char *out, size_t size)
{
    char path[PATH_MAX + 16];
    out[0] = 0;
    if (snprintf(path, sizeof path, "%s/sim.log", dir) >= (int)sizeof path)
        return;   /* no such file could be opened */
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        snprintf(out, size, "%s", line);
    }
    fclose(f);
}

static int count_dirs(const char *root)
{
    DIR *d = opendir(root);
    if (!d)
        return -1;
    int n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    unsigned workers = 0, lambda = 8, retries = 1, fail_pct = 3;
    uint64_t evals = 400, seed = 1;
    double cost_ms = 2, timeout = 1.0, grace = 0.2, tol = 1e-2;
    int keep = 0;
    ex_opt opts[] = {
        { "evals", EX_U64, &evals, "evaluation budget (candidates submitted)" },
        { "workers", EX_UINT, &workers, "worker processes, 0 = one per CPU" },
        { "lambda", EX_UINT, &lambda, "candidates per generation (at most 1024)" },
        { "timeout", EX_DOUBLE, &timeout, "seconds before a hung run is killed" },
        { "grace", EX_DOUBLE, &grace, "kill_grace: seconds between SIGTERM and SIGKILL" },
        { "retries", EX_UINT, &retries, "re-runs of a crashed or hung run" },
        { "cost-ms", EX_DOUBLE, &cost_ms, "CPU milliseconds each run of simulate burns" },
        { "fail-pct", EX_UINT, &fail_pct, "percent of runs that crash, and that diverge; half as many hang" },
        { "tol", EX_DOUBLE, &tol, "success: best cost <= tol (the optimum is 0)" },
        { "seed", EX_U64, &seed, "random seed of the optimizer" },
        { "keep", EX_FLAG, &keep, "leave the work directories of failures behind" },
    };
    ex_parse_args(argc, argv,
                  "A (1+lambda)-ES whose objective is an external program that hangs, crashes "
                  "and diverges now and then.",
                  opts, EX_COUNT(opts));
    if (lambda < 1 || lambda > 1024 || evals < 1 || !(timeout > 0) || fail_pct > 20) {
        fprintf(stderr, "--lambda in 1..1024, --evals >= 1, --timeout > 0, --fail-pct <= 20\n");
        return 2;
    }

    /* The program: simulate, next to this executable. */
    char self[PATH_MAX], sim[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        perror("/proc/self/exe");
        return 1;
    }
    self[n] = 0;
    *strrchr(self, '/') = 0;
    snprintf(sim, sizeof sim, "%s/simulate", self);
    char cost_arg[32], pct_arg[16];
    snprintf(cost_arg, sizeof cost_arg, "%g", cost_ms);
    snprintf(pct_arg, sizeof pct_arg, "%u", fail_pct);
    const char *const sim_argv[] = { sim, cost_arg, pct_arg, NULL };

    const char *tmp = getenv("TMPDIR");
    char root[PATH_MAX];
    snprintf(root, sizeof root, "%s/invoker-simulator-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }

    invoker_command cmd;
    invoker_command_init(&cmd);
    cmd.argv = sim_argv;
    cmd.workdir_root = root;
    cmd.keep_workdir = 1;   /* failed attempts' directories stay, for their logs */

    static run r;
    r.rss_max = -1;
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = workers;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = &cmd;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &r;
    cfg.timeout = timeout;
    cfg.kill_grace = grace;
    cfg.capture_stderr = INVOKER_STDERR_TAIL;
    cfg.retries = retries;
    invoker *inv;
    ex_check(invoker_create(&inv, &cfg), "invoker_create");

    printf("simulator: a (1+%u)-ES driving %s, work directories under %s\n", lambda, sim, root);
    ex_rng rng;
    ex_rng_seed(&rng, seed);
    double best[DIM] = { -1.5, 2.0 }, best_f = INFINITY, sigma = 1.0;
    uint64_t submitted = 0;
    ex_progress prog;
    ex_progress_init(&prog);
    while (submitted < evals) {
        unsigned count = evals - submitted < lambda ? (unsigned)(evals - submitted) : lambda;
        for (unsigned i = 0; i < count; i++) {
            char text[128];
            int len = 0;
            for (int d = 0; d < DIM; d++) {
                r.x[i][d] = best[d] + (isfinite(best_f) || i ? sigma * ex_rng_normal(&rng) : 0);
                len += snprintf(text + len, sizeof text - (size_t)len, "%.17g ", r.x[i][d]);
            }
            r.ok[i] = 0;
            ex_check(invoker_submit(inv, text, (size_t)len, (void *)(uintptr_t)i, NULL),
                     "invoker_submit");
        }
        submitted += count;
        ex_check(invoker_wait(inv), "invoker_wait");
        int improved = 0;
        for (unsigned i = 0; i < count; i++)
            if (r.ok[i] && r.f[i] < best_f) {
                best_f = r.f[i];
                memcpy(best, r.x[i], sizeof best);
                improved = 1;
            }
        sigma *= improved ? 1.5 : 0.82;   /* the one-fifth rule, roughly */
        char extra[64];
        snprintf(extra, sizeof extra, "%" PRIu64 " failed", r.failed);
        ex_progress_update(&prog, submitted, best_f, extra);
    }
    ex_progress_end(&prog, submitted, best_f, NULL);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    ex_check(invoker_destroy(inv), "invoker_destroy");

    printf("\nbest cost %.6g at (%.5f, %.5f); the optimum is 0 at (0.5, 0.5)\n", best_f, best[0],
           best[1]);
    printf("%" PRIu64 " evaluations: %" PRIu64 " succeeded, %" PRIu64 " failed, %" PRIu64
           " retried; %.2f CPU seconds in all, peak RSS of one run %ld KiB\n",
           submitted, r.succeeded, r.failed, st.retried, r.cpu_total, r.rss_max);
    if (r.nfails)
        printf("\nfailures (the work directory of each failed attempt is kept):\n"
               "  %6s %3s %-9s %5s %-38s %7s %7s %8s  %-34s %s\n", "task", "try", "failure",
               "code", "meaning", "wall s", "cpu s", "rss KiB", "its stderr's last line",
               "its log's last line");
    for (size_t i = 0; i < r.nfails; i++) {
        const failure_rec *f = &r.fails[i];
        char dir[PATH_MAX + 64], line[256] = "(no directory)";
        if (workdir_of(root, f->id, f->attempts, dir, sizeof dir))
            last_log_line(dir, line, sizeof line);
        printf("  %6" PRIu64 " %3u %-9s %5d %-38s %7.3f %7.3f %8ld  %-34s %s\n", (uint64_t)f->id,
               f->attempts, invoker_failure_name(f->failure), f->code,
               meaning(f->failure, f->code), f->run_seconds, f->cpu_seconds, f->max_rss_kib,
               f->said, line);
    }
    int kept = count_dirs(root);
    printf("\n%d work directories kept under %s (failed attempts, retried ones included)%s\n",
           kept, root, keep ? "" : "; removed now (--keep leaves them)");
    if (!keep) {
        char rm[PATH_MAX + 32];
        snprintf(rm, sizeof rm, "rm -rf '%s'", root);
        if (system(rm) != 0)
            fprintf(stderr, "could not remove %s\n", root);
    }

    int ok = 1;
    if (r.succeeded + r.failed != submitted || st.succeeded != r.succeeded ||
        st.failed != r.failed) {
        fprintf(stderr, "FAIL: the counts do not add up\n");
        ok = 0;
    }
    if ((uint64_t)kept < r.failed) {
        fprintf(stderr, "FAIL: %d directories kept for %" PRIu64 " failures\n", kept, r.failed);
        ok = 0;
    }
    size_t silent = 0;   /* simulate says why before each failure */
    for (size_t i = 0; i < r.nfails; i++)
        silent += !strcmp(r.fails[i].said, "-");
    if (silent) {
        fprintf(stderr, "FAIL: %zu failures without their stderr\n", silent);
        ok = 0;
    }
    if (!(best_f <= tol)) {
        fprintf(stderr, "FAIL: best cost %g > %g\n", best_f, tol);
        ok = 0;
    }
    return ok ? 0 : 1;
}

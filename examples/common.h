/*
 * common.h — small helpers shared by the invoker examples: a clock, a
 * seeded random generator, a calibrated busy loop that makes a cheap test
 * function cost real CPU time, a one-line progress display and a tiny
 * "--name value" option parser.  Nothing here touches the invoker API
 * except ex_check(), which names a failed call's error.
 *
 * Everything is static inline, so each example stays a single translation
 * unit and unused helpers cost nothing.  No helper keeps global state.
 */
#ifndef INVOKER_EXAMPLES_COMMON_H
#define INVOKER_EXAMPLES_COMMON_H

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "invoker.h"

/* Seconds on the monotonic clock. */
static inline double ex_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Exits with status 1, naming the call, when an invoker call failed. */
static inline void ex_check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "\n%s failed: %s\n", what, invoker_strerror(rc));
        exit(1);
    }
}

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---------- */

typedef struct ex_rng {
    uint64_t s[4];
    int has_spare;
    double spare;
} ex_rng;

static inline uint64_t ex_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void ex_rng_seed(ex_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = ex_splitmix64(&seed);
    r->has_spare = 0;
    r->spare = 0.0;
}

static inline uint64_t ex_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t ex_rng_next(ex_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = ex_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ex_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static inline double ex_rng_uniform(ex_rng *r)
{
    return (double)(ex_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, n), n > 0. */
static inline unsigned ex_rng_below(ex_rng *r, unsigned n)
{
    return (unsigned)(ex_rng_uniform(r) * n);
}

/* Standard normal (Marsaglia's polar method). */
static inline double ex_rng_normal(ex_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * ex_rng_uniform(r) - 1.0;
        v = 2.0 * ex_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    s = sqrt(-2.0 * log(s) / s);
    r->spare = v * s;
    r->has_spare = 1;
    return u * s;
}

/* A 64-bit hash of some bytes and a seed (FNV-1a, then a mixer): lets an
 * objective decide something deterministically from its argument. */
static inline uint64_t ex_hash(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = 0xCBF29CE484222325ull ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001B3ull;
    }
    return ex_splitmix64(&h);
}

/* ---- a busy loop that costs a known amount of CPU time ---------------- */

/* Spins for iters rounds of a dependent xorshift chain (the compiler can
 * neither skip nor shorten it). */
static inline void ex_spin(uint64_t iters)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    volatile uint64_t sink = x;
    (void)sink;
}

/* Measures how many ex_spin rounds take `ms` milliseconds on this core:
 * the best of a few timed runs of at least 20 ms each.  Call it in the
 * parent before invoker_create, so every forked worker inherits the
 * number.  Returns 0 for ms <= 0. */
static inline uint64_t ex_spin_calibrate(double ms)
{
    if (!(ms > 0.0))
        return 0;
    uint64_t n = 1u << 14;
    double per_ms = 0.0;
    for (int round = 0; round < 3;) {
        double t0 = ex_now();
        ex_spin(n);
        double dt = ex_now() - t0;
        if (dt < 0.02) {
            n *= 2;
            continue;
        }
        double rate = (double)n / (dt * 1e3);
        if (rate > per_ms)
            per_ms = rate;
        round++;
    }
    double iters = per_ms * ms;
    return iters < 1.0 ? 1 : (uint64_t)iters;
}

/* ---- progress line ----------------------------------------------------- */

/* On a terminal: one line rewritten in place with '\r', at most about 10
 * times a second.  Otherwise (a pipe, a log file): a plain line at most
 * once a second, and no more than 5 of them. */
typedef struct ex_progress {
    int tty;
    double t0, last;
    int lines; /* plain lines printed so far */
} ex_progress;

static inline void ex_progress_init(ex_progress *p)
{
    p->tty = isatty(STDOUT_FILENO);
    p->t0 = p->last = ex_now();
    p->lines = 0;
}

static inline void ex_progress_print(ex_progress *p, double now, uint64_t done, double best,
                                     const char *extra)
{
    double dt = now - p->t0;
    printf("%s%8" PRIu64 " evals  best %-12.6g %8.0f evals/s%s%s%s", p->tty ? "\r" : "", done, best,
           dt > 0 ? (double)done / dt : 0.0, extra ? "  " : "", extra ? extra : "",
           p->tty ? "  " : "\n");
    fflush(stdout);
}

/* Shows the progress if it is time to; extra (may be NULL) is appended. */
static inline void ex_progress_update(ex_progress *p, uint64_t done, double best, const char *extra)
{
    double now = ex_now();
    if (now - p->last < (p->tty ? 0.09 : 1.0) || (!p->tty && p->lines >= 5))
        return;
    p->last = now;
    p->lines++;
    ex_progress_print(p, now, done, best, extra);
}

/* Ends the progress display: on a terminal, a last refresh and a newline. */
static inline void ex_progress_end(ex_progress *p, uint64_t done, double best, const char *extra)
{
    if (p->tty) {
        ex_progress_print(p, ex_now(), done, best, extra);
        putchar('\n');
        fflush(stdout);
    }
}

/* ---- options ------------------------------------------------------------ */

typedef enum ex_opt_type { EX_UINT, EX_U64, EX_DOUBLE, EX_FLAG, EX_STR } ex_opt_type;

typedef struct ex_opt {
    const char *name; /* without the leading "--" */
    ex_opt_type type;
    void *value; /* unsigned *, uint64_t *, double *, int * (flag) or const char ** */
    const char *help;
} ex_opt;

static inline void ex_usage(FILE *f, const char *prog, const char *summary, const ex_opt *opts,
                            size_t n)
{
    fprintf(f, "usage: %s [options]\n%s\n\noptions (default in brackets):\n", prog, summary);
    for (size_t i = 0; i < n; i++) {
        char def[64];
        switch (opts[i].type) {
        case EX_UINT:
            snprintf(def, sizeof def, "%u", *(unsigned *)opts[i].value);
            break;
        case EX_U64:
            snprintf(def, sizeof def, "%" PRIu64, *(uint64_t *)opts[i].value);
            break;
        case EX_DOUBLE:
            snprintf(def, sizeof def, "%g", *(double *)opts[i].value);
            break;
        case EX_STR: {
            const char *v = *(const char **)opts[i].value;
            snprintf(def, sizeof def, "%s", v ? v : "none");
            break;
        }
        default:
            snprintf(def, sizeof def, "off");
            break;
        }
        fprintf(f, "  --%-12s %s [%s]\n", opts[i].name, opts[i].help, def);
    }
    fprintf(f, "  --%-12s %s\n", "help", "show this help and exit");
}

static inline int ex_parse_value(const ex_opt *o, const char *s)
{
    char *end = NULL;
    errno = 0;
    if (o->type == EX_STR) {
        *(const char **)o->value = s;
        return 0;
    }
    if (o->type == EX_DOUBLE) {
        double v = strtod(s, &end);
        if (errno || end == s || *end || !isfinite(v) || v < 0)
            return -1;
        *(double *)o->value = v;
        return 0;
    }
    if (*s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end)
        return -1;
    if (o->type == EX_UINT) {
        if (v > 0xFFFFFFFFull)
            return -1;
        *(unsigned *)o->value = (unsigned)v;
    } else {
        *(uint64_t *)o->value = (uint64_t)v;
    }
    return 0;
}

/* Parses "--name value", "--name=value" and "--flag".  --help prints the
 * usage and exits 0; a bad option prints it to stderr and exits 2. */
static inline void ex_parse_args(int argc, char **argv, const char *summary, const ex_opt *opts,
                                 size_t n)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ex_usage(stdout, argv[0], summary, opts, n);
            exit(0);
        }
        const ex_opt *o = NULL;
        const char *val = NULL;
        if (a[0] == '-' && a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            for (size_t k = 0; k < n; k++)
                if (strlen(opts[k].name) == len && !strncmp(opts[k].name, a + 2, len))
                    o = &opts[k];
            if (o && eq)
                val = eq + 1;
        }
        if (!o) {
            fprintf(stderr, "%s: unknown option '%s'\n", argv[0], a);
            ex_usage(stderr, argv[0], summary, opts, n);
            exit(2);
        }
        if (o->type == EX_FLAG) {
            if (val) {
                fprintf(stderr, "%s: --%s takes no value\n", argv[0], o->name);
                exit(2);
            }
            *(int *)o->value = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --%s needs a value\n", argv[0], o->name);
                exit(2);
            }
            val = argv[++i];
        }
        if (ex_parse_value(o, val) < 0) {
            fprintf(stderr, "%s: bad value '%s' for --%s\n", argv[0], val, o->name);
            exit(2);
        }
    }
}

#define EX_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* --mpi, in the examples built with libinvoker_mpi: the same program
 * under `mpirun -np N`, its evaluations spread over every rank's workers
 * (--workers of them per serving rank). */
#ifdef INVOKER_EXAMPLE_MPI
#include <invoker_mpi.h>
#define EX_MPI_OPT(flag) \
    { "mpi", EX_FLAG, (flag), "run over the ranks of an MPI job (under mpirun)" },
#else
#define EX_MPI_OPT(flag)
#endif

/* The invoker: a local one, or with use_mpi one over the MPI job.  0 on
 * the process that drives the search; 1 on a serving rank, which has
 * served until the driver destroyed its invoker: return from main. */
static inline int ex_create(invoker **inv, const invoker_config *cfg, int use_mpi, int *argc,
                            char ***argv)
{
#ifdef INVOKER_EXAMPLE_MPI
    if (use_mpi) {
        invoker_mpi_options opt;
        invoker_mpi_options_init(&opt);
        opt.workers_per_rank = cfg->workers;
        int rc = invoker_mpi_create(inv, cfg, &opt, argc, argv);
        if (rc == INVOKER_MPI_SERVED)
            return 1;
        ex_check(rc, "invoker_mpi_create");
        return 0;
    }
#endif
    (void)use_mpi;
    (void)argc;
    (void)argv;
    ex_check(invoker_create(inv, cfg), "invoker_create");
    return 0;
}

#endif /* INVOKER_EXAMPLES_COMMON_H */

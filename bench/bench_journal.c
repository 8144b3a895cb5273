/*
 * The journal's and the cache's own costs, apart from the workloads of
 * bench_invoker (whose --journal runs give the journal's cost per task):
 *
 *   bench_journal cache  [--tasks N]   ns a submit takes with the cache on
 *                                      and off (inline mode: no syscalls,
 *                                      so the difference is the lookup and
 *                                      the twin bookkeeping), N new distinct
 *                                      arguments after N others ran, and a
 *                                      submit answered from memory
 *   bench_journal replay [--tasks N]   writes a journal of N records, then
 *                                      times invoker_create reading it (and
 *                                      answering every task from it)
 *
 * RESULT lines as in common.h.  --journal DIR says where the journal goes
 * (default /tmp).
 */
#include "common.h"

#include <invoker.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bench_opts opt;

static int echo8(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    double v[8];
    if (len != sizeof v)
        return 1;
    memcpy(v, arg, sizeof v);
    double s = trivial_sum(v);
    return invoker_result_write(out, &s, sizeof s);
}

static size_t calls, answered;

static void on_result(const invoker_task *t, const void *r, size_t len, void *user)
{
    (void)r;
    (void)len;
    (void)user;
    calls++;
    answered += t->cached != 0;
}

static void on_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    (void)t;
    (void)f;
    (void)code;
    (void)user;
    calls++;
}

static invoker *make(int cache, int inline_mode, const char *journal, int sync)
{
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = echo8;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.workers = opt.workers;
    cfg.inline_mode = inline_mode;
    cfg.cache = cache;
    cfg.journal = journal;
    cfg.journal_sync = sync;
    invoker *inv;
    int rc = invoker_create(&inv, &cfg);
    if (rc) {
        fprintf(stderr, "invoker_create: %s\n", invoker_strerror(rc));
        exit(1);
    }
    return inv;
}

/* ns per submit of n distinct arguments. */
static double time_submits(invoker *inv, size_t n, size_t first)
{
    int64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        double v[8];
        trivial_arg(first + i, v);
        if (invoker_submit(inv, v, sizeof v, NULL, NULL) != 0) {
            fprintf(stderr, "invoker_submit failed\n");
            exit(1);
        }
    }
    return (double)(now_ns() - t0) / (double)n;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ns per submit of n new distinct arguments into an invoker that has
 * already run n others: its tables grown, its memory faulted in (a page
 * fault costs this VM ~10 µs, more than everything measured here). */
static double steady_submits(invoker *inv, size_t n)
{
    time_submits(inv, n, n);
    invoker_wait(inv);
    return time_submits(inv, n, 0);
}

static int cache_main(void)
{
    enum { REPS = 5 };
    double off[REPS], on[REPS], hit[REPS];
    size_t n = opt.tasks;
    /* Freed memory stays in the heap: the runs after the first fault
     * nothing in. */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    for (int r = 0; r < REPS; r++) {
        /* Interleaved, so a slow spell of the machine hits both. */
        invoker *a = make(0, 1, NULL, 0);
        off[r] = steady_submits(a, n);
        invoker_destroy(a);
        invoker *b = make(1, 1, NULL, 0);
        on[r] = steady_submits(b, n);
        invoker_destroy(b);
        /* Answers: one evaluated, then submitted again and again. */
        invoker *c = make(1, 1, NULL, 0);
        time_submits(c, 1, 7);
        invoker_wait(c);
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            double v[8];
            trivial_arg(7, v);
            invoker_submit(c, v, sizeof v, NULL, NULL);
        }
        hit[r] = (double)(now_ns() - t0) / (double)n;
        invoker_wait(c);
        invoker_destroy(c);
    }
    qsort(off, REPS, sizeof *off, cmp_dbl);
    qsort(on, REPS, sizeof *on, cmp_dbl);
    qsort(hit, REPS, sizeof *hit, cmp_dbl);
    printf("RESULT workload=cache impl=invoker rep=%d tasks=%zu submit_ns_off=%.1f "
           "submit_ns_on=%.1f lookup_ns=%.1f answered_submit_ns=%.1f\n", opt.rep, n,
           off[REPS / 2], on[REPS / 2], on[REPS / 2] - off[REPS / 2], hit[REPS / 2]);
    return 0;
}

static int replay_main(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-replay-%d.journal", opt.journal ? opt.journal : "/tmp",
             (int)getpid());
    unlink(path);
    size_t n = opt.tasks;
    /* Written by workers: results are journaled a read at a time. */
    invoker *w = make(0, 0, path, INVOKER_SYNC_NONE);
    int64_t t0 = now_ns();
    time_submits(w, n, 0);
    invoker_wait(w);
    invoker_stats st;
    invoker_get_stats(w, &st);
    invoker_destroy(w);
    double write_s = ns_to_s(now_ns() - t0);
    if (st.journaled != n) {
        fprintf(stderr, "journaled %llu of %zu\n", (unsigned long long)st.journaled, n);
        unlink(path);
        return 1;
    }
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        int64_t c0 = now_ns();
        invoker *inv = make(0, 1, path, 0);
        double s = ns_to_s(now_ns() - c0);
        best = s < best ? s : best;
        if (r == 2) {
            /* Resume: every task answered from the journal. */
            calls = answered = 0;
            int64_t a0 = now_ns();
            time_submits(inv, n, 0);
            invoker_wait(inv);
            double as = ns_to_s(now_ns() - a0);
            printf("RESULT workload=replay impl=invoker rep=%d records=%zu write_s=%.3f "
                   "create_s=%.4f create_us_per_record=%.3f answer_us_per_task=%.3f "
                   "answered=%zu\n", opt.rep, n, write_s, best, best * 1e6 / (double)n,
                   as * 1e6 / (double)n, answered);
        }
        invoker_destroy(inv);
    }
    unlink(path);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s cache|replay [options]\n", argv[0]);
        return 2;
    }
    parse_opts(argc, argv, 2, &opt);
    if (!strcmp(argv[1], "cache"))
        return cache_main();
    if (!strcmp(argv[1], "replay"))
        return replay_main();
    fprintf(stderr, "%s: unknown workload %s\n", argv[0], argv[1]);
    return 2;
}

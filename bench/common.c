#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double ns_to_s(int64_t ns)
{
    return (double)ns / 1e9;
}

static void usage_exit(const char *what)
{
    fprintf(stderr, "bad option: %s\n", what);
    exit(2);
}

static unsigned long long num_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        usage_exit(argv[*i]);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[*i + 1], &end, 10);
    if (errno || *end)
        usage_exit(argv[*i + 1]);
    ++*i;
    return v;
}

static double dbl_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        usage_exit(argv[*i]);
    char *end;
    double v = strtod(argv[*i + 1], &end);
    if (*end)
        usage_exit(argv[*i + 1]);
    ++*i;
    return v;
}

void parse_opts(int argc, char **argv, int first, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->workers = 2;
    o->tasks = 1000;
    o->iters = 0;
    o->bytes = MIB;
    o->timeout = 0.1;
    o->crashes = 20;
    o->depth = 1;
    o->rep = 1;
    o->bound = 5.0;
    o->warm_iters = -1;
    o->passes = 3;
    o->spares = "auto";
    o->fork_server = "auto";
    o->capture_stderr = "off";
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--workers"))
            o->workers = (unsigned)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--tasks"))
            o->tasks = (size_t)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--iters"))
            o->iters = (uint64_t)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--bytes"))
            o->bytes = (size_t)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--timeout"))
            o->timeout = dbl_arg(argc, argv, &i);
        else if (!strcmp(a, "--crashes"))
            o->crashes = (size_t)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--mem-mib"))
            o->mem_mib = (size_t)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--depth"))
            o->depth = (unsigned)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--pipe-size"))
            o->pipe_size = (size_t)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--rep"))
            o->rep = (int)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--bound"))
            o->bound = dbl_arg(argc, argv, &i);
        else if (!strcmp(a, "--passes"))
            o->passes = (unsigned)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--control"))
            o->control = 1;
        else if (!strcmp(a, "--warm-iters"))
            o->warm_iters = (long long)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--spares") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "auto") || !strcmp(argv[i + 1], "never") ||
                  !strcmp(argv[i + 1], "always")))
            o->spares = argv[++i];
        else if (!strcmp(a, "--fork-server") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "auto") || !strcmp(argv[i + 1], "never")))
            o->fork_server = argv[++i];
        else if (!strcmp(a, "--timeout-factor"))
            o->timeout_factor = dbl_arg(argc, argv, &i);
        else if (!strcmp(a, "--capture-stderr") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "off") || !strcmp(argv[i + 1], "prefix") ||
                  !strcmp(argv[i + 1], "tail")))
            o->capture_stderr = argv[++i];
        else if (!strcmp(a, "--journal") && i + 1 < argc)
            o->journal = argv[++i];
        else if (!strcmp(a, "--label") && i + 1 < argc)
            o->label = argv[++i];
        else
            usage_exit(a);
    }
    if (o->workers == 0 || o->depth == 0 || o->passes == 0)
        usage_exit("--workers/--depth/--passes must be > 0");
    if (o->iters == 0)
        o->iters = calibrate_busy(1.0);
}

double trivial_sum(const double *v)
{
    double s = 0;
    for (int i = 0; i < 8; i++)
        s += v[i];
    return s;
}

double busy_loop(uint64_t iters)
{
    /* A dependent chain the compiler can neither vectorize nor drop. */
    volatile double seed = 1.0;
    double x = seed;
    for (uint64_t i = 0; i < iters; i++)
        x = x * 0.9999999 + 1e-7;
    return x;
}

uint64_t calibrate_busy(double ms)
{
    /* The fastest of several timed runs: the machine is shared and noisy,
     * and noise only ever makes a run slower. */
    const uint64_t probe = 200000;
    double best = 1e30;
    for (int r = 0; r < 15; r++) {
        int64_t t0 = now_ns();
        volatile double sink = busy_loop(probe);
        (void)sink;
        double dt = ns_to_s(now_ns() - t0);
        if (dt < best)
            best = dt;
    }
    double per_iter = best / (double)probe;
    uint64_t it = (uint64_t)(ms / 1000.0 / per_iter);
    return it ? it : 1;
}

void trivial_arg(size_t i, double *v)
{
    for (int k = 0; k < 8; k++)
        v[k] = (double)(i % 1000) + 0.125 * k;
    /* Every task's argument its own: with a journal or a cache, equal
     * ones would be answered, not run. */
    v[7] += (double)(i / 1000) * 1024.0;
}

double trivial_expect(size_t i)
{
    double v[8];
    trivial_arg(i, v);
    return trivial_sum(v);
}

task_rec *recs_map(size_t n)
{
    size_t len = (n ? n : 1) * sizeof(task_rec);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

void recs_unmap(task_rec *r, size_t n)
{
    munmap(r, (n ? n : 1) * sizeof(task_rec));
}

double run_mixed(const task_hdr *h, task_rec *recs, size_t nrecs, int slot)
{
    if (recs && h->idx < nrecs) {
        recs[h->idx].pid = (int32_t)getpid();
        recs[h->idx].slot = slot;
        __atomic_store_n(&recs[h->idx].start_ns, now_ns(), __ATOMIC_RELEASE);
    }
    switch (h->kind) {
    case KIND_HANG:
        for (;;)
            pause();
    case KIND_KILL:
        raise(SIGKILL);
        _exit(99); /* not reached */
    case KIND_EXIT:
        _exit(3);
    default: {
        double x = busy_loop(h->iters);
        if (recs && h->idx < nrecs)
            recs[h->idx].end_ns = now_ns();
        return x;
    }
    }
}

double busy_fraction(const task_rec *recs, size_t n, unsigned workers, double wall)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if (recs[i].start_ns && recs[i].end_ns > recs[i].start_ns)
            sum += ns_to_s(recs[i].end_ns - recs[i].start_ns);
    return wall > 0 ? sum / ((double)workers * wall) : 0;
}

void *touch_memory(size_t mib)
{
    if (mib == 0)
        return NULL;
    size_t len = mib * MIB;
    /* MAP_POPULATE faults the pages in far faster than one fault per page;
     * the writes then make sure every page is the parent's own. */
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    long pg = sysconf(_SC_PAGESIZE);
    for (size_t off = 0; off < len; off += (size_t)pg)
        p[off] = (char)(off >> 12);
    return p;
}

size_t mem_available_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "MemAvailable: %llu kB", &v) == 1) {
            kib = (size_t)v;
            break;
        }
    }
    fclose(f);
    return kib / 1024;
}

void result_line(const char *workload, const char *impl, const bench_opts *o,
                 const char *fmt, ...)
{
    printf("RESULT workload=%s impl=%s workers=%u rep=%d ", workload, impl,
           o->workers, o->rep);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_dbl);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double max_of(const double *v, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || v[i] > m)
            m = v[i];
    return m;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

spawn_log *spawn_map(void)
{
    void *p = mmap(NULL, sizeof(spawn_log), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

void spawn_note(spawn_log *l, int slot)
{
    int64_t i = __atomic_fetch_add(&l->count, 1, __ATOMIC_RELAXED);
    if (i < SPAWN_MAX) {
        l->e[i].pid = (int32_t)getpid();
        l->e[i].slot = slot;
        __atomic_store_n(&l->e[i].start_ns, now_ns(), __ATOMIC_RELEASE);
    }
}

size_t restart_latencies(const task_rec *recs, size_t n, const uint8_t *is_crash,
                         double offset_s, const spawn_log *log, double *out)
{
    size_t cap = n + SPAWN_MAX + 1;
    int64_t *crash = calloc(cap, sizeof *crash);
    int64_t *first = calloc(cap, sizeof *first);
    int32_t *pids = calloc(cap, sizeof *pids);
    uint8_t *orig = calloc(cap, 1);
    int64_t *repl = calloc(cap, sizeof *repl);
    size_t nc = 0, np = 0, nf = 0, m = 0;
    if (!crash || !first || !pids || !orig || !repl)
        goto out;
    int64_t off = (int64_t)(offset_s * 1e9);
    int64_t first_crash = INT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (is_crash[i] && recs[i].start_ns && recs[i].start_ns + off < first_crash)
            first_crash = recs[i].start_ns + off;
    /* Every process seen, its first task start and whether it is one of
     * the original workers. */
    for (size_t i = 0; i < n; i++) {
        if (!recs[i].start_ns)
            continue;
        if (is_crash[i])
            crash[nc++] = recs[i].start_ns + off;
        size_t k;
        for (k = 0; k < np; k++)
            if (pids[k] == recs[i].pid)
                break;
        if (k == np) {
            pids[np] = recs[i].pid;
            first[np] = recs[i].start_ns;
            np++;
        } else if (recs[i].start_ns < first[k]) {
            first[k] = recs[i].start_ns;
        }
        if (!log && recs[i].start_ns < first_crash)
            orig[k] = 1;
    }
    if (log) {
        size_t ne = log->count < SPAWN_MAX ? (size_t)log->count : SPAWN_MAX;
        for (size_t j = 0; j < ne; j++)
            if (log->e[j].start_ns && log->e[j].start_ns < first_crash)
                for (size_t k = 0; k < np; k++)
                    if (pids[k] == log->e[j].pid)
                        orig[k] = 1;
    }
    for (size_t k = 0; k < np; k++)
        if (!orig[k])
            repl[nf++] = first[k];
    qsort(crash, nc, sizeof *crash, cmp_i64);
    qsort(repl, nf, sizeof *repl, cmp_i64);
    m = nc < nf ? nc : nf;
    for (size_t i = 0; i < m; i++)
        out[i] = ns_to_s(repl[i] - crash[i]);
out:
    free(crash), free(first), free(pids), free(orig), free(repl);
    return m;
}

uint32_t crash_kind(size_t i, size_t total, size_t crashes)
{
    if (crashes == 0 || total == 0)
        return KIND_CPU;
    size_t step = total / crashes;
    if (step == 0)
        step = 1;
    if (i % step == step / 2 && i / step < crashes)
        return (i / step) % 2 ? KIND_EXIT : KIND_KILL;
    return KIND_CPU;
}

void report_hang(const char *impl, const bench_opts *o, const task_rec *recs,
                 const spawn_log *log, const int64_t *report_ns, size_t nhang,
                 int64_t t0, int64_t t1, int whole)
{
    report_hang_extra(impl, o, recs, log, report_ns, nhang, t0, t1, whole, NULL);
}

/* Field 0 (time on a CPU) or 1 (time runnable, waiting for one) of
 * /proc/thread-self/schedstat, in ns; -1 if unknown.  The file stays open,
 * one per thread: read after each report of the hang workload, it must
 * cost little (a fopen and a scanf of /proc/stat took tens of
 * microseconds, which the next report in the same pass waited for). */
static int64_t thread_schedstat(int field)
{
    static _Thread_local int fd = -1;
    if (fd < 0 && (fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *end;
    unsigned long long run = strtoull(buf, &end, 10);
    unsigned long long wait = strtoull(end, NULL, 10);
    return (int64_t)(field ? wait : run);
}

int64_t thread_run_delay_ns(void)
{
    return thread_schedstat(1);
}

int64_t thread_oncpu_ns(void)
{
    return thread_schedstat(0);
}

int64_t steal_ns(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8];
    int ok = f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                         &v[3], &v[4], &v[5], &v[6], &v[7]) == 8;
    if (f)
        fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return ok && hz > 0 ? (int64_t)(v[7] * (1000000000ull / (unsigned long long)hz)) : -1;
}

void report_hang_extra(const char *impl, const bench_opts *o, const task_rec *recs,
                       const spawn_log *log, const int64_t *report_ns, size_t nhang,
                       int64_t t0, int64_t t1, int whole, const char *extra)
{
    size_t n = nhang + o->workers;
    double *rep = calloc(n, sizeof *rep);
    double *rst = calloc(n, sizeof *rst);
    uint8_t *is_hang = calloc(n, 1);
    if (!rep || !rst || !is_hang) {
        perror("calloc");
        exit(1);
    }
    size_t nrep = 0;
    for (size_t i = 0; i < nhang; i++) {
        is_hang[i] = 1;
        if (report_ns[i] && recs[i].start_ns)
            rep[nrep++] = ns_to_s(report_ns[i] - recs[i].start_ns) - o->timeout;
    }
    size_t nrst = restart_latencies(recs, n, is_hang, o->timeout, log, rst);
    double total = ns_to_s(t1 - t0);
    double ideal = (double)((nhang + o->workers - 1) / o->workers) * o->timeout;
    double rep_max = max_of(rep, nrep), rst_max = max_of(rst, nrst);
    double rep_med = median(rep, nrep), rst_med = median(rst, nrst);
    result_line("hang", impl, o,
                "outcome=reports tasks=%zu timeout=%.3f reported=%zu seconds=%.6f "
                "ideal=%.6f excess_ms=%.3f report_ms_med=%.3f report_ms_max=%.3f "
                "restart_ms_med=%.3f restart_ms_max=%.3f restarts=%zu whole=%d%s%s",
                nhang, o->timeout, nrep, total, ideal, (total - ideal) * 1e3,
                rep_med * 1e3, rep_max * 1e3, rst_med * 1e3, rst_max * 1e3, nrst, whole,
                extra ? " " : "", extra ? extra : "");
    free(rep), free(rst), free(is_hang);
}

/*
 * The C alternatives to invoker, on the same workloads:
 *
 *   serial    an in-process loop (for efficiency figures)
 *   fork      a naive fork-per-task loop: what a user writes without a
 *             library (a pipe per child, poll(), kill at the deadline)
 *   pthread   a thread pool with a mutex and condition variables (no
 *             isolation)
 *   pipe      the pipe's own limit: pre-forked workers exchanging
 *             fixed-size messages over pipes, --depth tasks in flight per
 *             worker (1: ping-pong), --pipe-size for F_SETPIPE_SZ
 *
 * Usage: bench_baselines WORKLOAD IMPL [options]   (see common.h)
 *        bench_baselines calibrate                  (iterations for 1 ms)
 * Workloads: trivial cpu payload hang crash restart; bigarg (the pipe
 * only: payload under that name, beside bench_invoker bigarg).
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bench_opts opt;
static const char *g_workload;
/* The workload named in RESULT lines: "bigarg" runs the pipe on the
 * payload workload under its own name, beside bench_invoker bigarg. */
static const char *g_label;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Reads exactly len bytes; 0 on EOF before the first byte, 1 when done. */
static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (n == 0) {
            if (got == 0)
                return 0;
            fprintf(stderr, "short read\n");
            exit(1);
        }
        got += (size_t)n;
    }
    return 1;
}

static unsigned char *payload_buf(size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    if (!p)
        die("malloc");
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 131u + 7u);
    return p;
}

/* ---------------------------------------------------------------------
 * serial
 * ------------------------------------------------------------------- */

static int serial_main(void)
{
    size_t n = opt.tasks;
    if (!strcmp(g_workload, "trivial")) {
        double v[8], acc = 0;
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            trivial_arg(i, v);
            acc += trivial_sum(v);
        }
        double s = ns_to_s(now_ns() - t0);
        volatile double sink = acc;
        (void)sink;
        result_line(g_workload, "serial", &opt, "tasks=%zu seconds=%.6f tasks_per_s=%.1f us_per_task=%.4f",
                    n, s, (double)n / s, s * 1e6 / (double)n);
    } else if (!strcmp(g_workload, "cpu")) {
        double acc = 0;
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            acc += busy_loop(opt.iters);
        double s = ns_to_s(now_ns() - t0);
        volatile double sink = acc;
        (void)sink;
        result_line(g_workload, "serial", &opt, "tasks=%zu iters=%llu seconds=%.6f ms_per_task=%.4f",
                    n, (unsigned long long)opt.iters, s, s * 1e3 / (double)n);
    } else if (!strcmp(g_workload, "payload")) {
        unsigned char *arg = payload_buf(opt.bytes), *res = malloc(opt.bytes);
        if (!res)
            die("malloc");
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            arg[0] = (unsigned char)i;
            memcpy(res, arg, opt.bytes);
        }
        double s = ns_to_s(now_ns() - t0);
        double mib = (double)n * (double)opt.bytes / (double)MIB;
        result_line(g_workload, "serial", &opt, "tasks=%zu bytes=%zu seconds=%.6f mib_per_s=%.1f",
                    n, opt.bytes, s, mib / s);
        free(arg), free(res);
    } else {
        fprintf(stderr, "serial: no workload %s\n", g_workload);
        return 2;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * fork: a naive fork-per-task loop
 * ------------------------------------------------------------------- */

typedef struct child {
    pid_t   pid;
    int     fd;
    size_t  idx;
    int64_t start_ns, deadline_ns;
    char   *buf;
    size_t  len, cap;
    int     killed;
} child;

typedef struct fork_job {
    size_t n;
    /* Runs in the child: computes task i and writes its result to fd. */
    void (*run)(size_t i, int fd);
    /* Runs in the parent when task i is over. */
    void (*done)(size_t i, int status, int timed_out, const char *res, size_t len);
    double (*timeout)(size_t i); /* seconds, 0: none; NULL: none */
    int64_t *fork_ns;            /* when non-NULL: time of each fork() call */
} fork_job;

static void fork_run(const fork_job *job)
{
    unsigned w = opt.workers;
    child *ch = calloc(w, sizeof *ch);
    struct pollfd *pf = calloc(w, sizeof *pf);
    if (!ch || !pf)
        die("calloc");
    size_t next = 0, finished = 0;
    unsigned active = 0;
    while (finished < job->n) {
        while (active < w && next < job->n) {
            child *c = &ch[active];
            int p[2];
            if (pipe2(p, O_CLOEXEC) < 0)
                die("pipe2");
            memset(c, 0, sizeof *c);
            c->idx = next;
            c->start_ns = now_ns();
            if (job->fork_ns)
                job->fork_ns[next] = c->start_ns;
            double to = job->timeout ? job->timeout(next) : 0;
            c->deadline_ns = to > 0 ? c->start_ns + (int64_t)(to * 1e9) : 0;
            pid_t pid = fork();
            if (pid < 0)
                die("fork");
            if (pid == 0) {
                close(p[0]);
                job->run(c->idx, p[1]);
                _exit(0);
            }
            close(p[1]);
            c->pid = pid;
            c->fd = p[0];
            next++;
            active++;
        }
        int64_t now = now_ns(), first = 0;
        for (unsigned k = 0; k < active; k++) {
            pf[k].fd = ch[k].fd;
            pf[k].events = POLLIN;
            pf[k].revents = 0;
            if (ch[k].deadline_ns && !ch[k].killed &&
                (!first || ch[k].deadline_ns < first))
                first = ch[k].deadline_ns;
        }
        int tmo = -1;
        if (first) {
            int64_t d = first - now;
            tmo = d <= 0 ? 0 : (int)((d + 999999) / 1000000);
        }
        int r = poll(pf, active, tmo);
        if (r < 0 && errno != EINTR)
            die("poll");
        now = now_ns();
        for (unsigned k = 0; k < active; k++) {
            child *c = &ch[k];
            if (c->deadline_ns && !c->killed && now >= c->deadline_ns) {
                kill(c->pid, SIGKILL);
                c->killed = 1;
            }
        }
        for (unsigned k = 0; k < active;) {
            child *c = &ch[k];
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR))) {
                k++;
                continue;
            }
            if (c->cap - c->len < 65536) {
                c->cap = c->cap ? c->cap * 2 : 65536;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf)
                    die("realloc");
            }
            ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len);
            if (got > 0) {
                c->len += (size_t)got;
                k++;
                continue;
            }
            if (got < 0 && errno == EINTR) {
                k++;
                continue;
            }
            /* EOF: the child is over. */
            int st;
            while (waitpid(c->pid, &st, 0) < 0)
                if (errno != EINTR)
                    die("waitpid");
            close(c->fd);
            job->done(c->idx, st, c->killed, c->buf, c->len);
            free(c->buf);
            finished++;
            /* Swap the last child into this slot, and its revents too. */
            active--;
            if (k != active) {
                ch[k] = ch[active];
                pf[k] = pf[active];
            }
        }
    }
    free(ch);
    free(pf);
}

/* ---------------------------------------------------------------------
 * pthread: a pool with a mutex and condition variables
 * ------------------------------------------------------------------- */

typedef struct tpool {
    pthread_mutex_t mu;
    pthread_cond_t  has_task, all_done;
    size_t         *queue; /* task indices */
    size_t          head, tail, cap;
    size_t          done, expected;
    int             stop;
    void (*run)(size_t i);
    pthread_t      *threads;
    unsigned        nthreads;
} tpool;

static void *tpool_thread(void *arg)
{
    tpool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->head == p->tail && !p->stop)
            pthread_cond_wait(&p->has_task, &p->mu);
        if (p->head == p->tail) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        size_t i = p->queue[p->head++];
        pthread_mutex_unlock(&p->mu);
        p->run(i);
        pthread_mutex_lock(&p->mu);
        if (++p->done == p->expected)
            pthread_cond_broadcast(&p->all_done);
        pthread_mutex_unlock(&p->mu);
    }
}

static void tpool_start(tpool *p, unsigned n, size_t cap, void (*run)(size_t))
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->has_task, NULL);
    pthread_cond_init(&p->all_done, NULL);
    p->queue = malloc((cap ? cap : 1) * sizeof *p->queue);
    p->threads = calloc(n, sizeof *p->threads);
    if (!p->queue || !p->threads)
        die("malloc");
    p->cap = cap;
    p->run = run;
    p->nthreads = n;
    for (unsigned k = 0; k < n; k++)
        if (pthread_create(&p->threads[k], NULL, tpool_thread, p))
            die("pthread_create");
}

static void tpool_submit(tpool *p, size_t i)
{
    pthread_mutex_lock(&p->mu);
    p->queue[p->tail++] = i;
    p->expected++;
    pthread_cond_signal(&p->has_task);
    pthread_mutex_unlock(&p->mu);
}

/* Waits until every submitted task is done; 0, or -1 past the deadline
 * (CLOCK_REALTIME seconds from now; 0: none). */
static int tpool_wait(tpool *p, double bound)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)bound;
    dl.tv_nsec += (long)((bound - (double)(time_t)bound) * 1e9);
    if (dl.tv_nsec >= 1000000000L)
        dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    while (p->done < p->expected && rc == 0) {
        if (bound > 0)
            rc = pthread_cond_timedwait(&p->all_done, &p->mu, &dl);
        else
            pthread_cond_wait(&p->all_done, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return rc ? -1 : 0;
}

static void tpool_stop(tpool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->has_task);
    pthread_mutex_unlock(&p->mu);
    for (unsigned k = 0; k < p->nthreads; k++)
        pthread_join(p->threads[k], NULL);
    free(p->queue);
    free(p->threads);
}

/* ---------------------------------------------------------------------
 * Per-workload task bodies shared by fork and pthread
 * ------------------------------------------------------------------- */

static double *g_res;            /* results by task index */
static size_t g_bad;             /* wrong results */
static unsigned char *g_payload; /* payload workload: the argument */
static unsigned char **g_outs;   /* payload workload (pthread): results */
static task_hdr *g_hdrs;         /* mixed workloads: the task headers */
static task_rec *g_recs;
static size_t g_nrecs;
static int64_t *g_report_ns;     /* when the parent learned each task's fate */
static int *g_status;            /* fork: wait status per task */
static int *g_timed_out;

static void trivial_run_fd(size_t i, int fd)
{
    double v[8];
    trivial_arg(i, v);
    double s = trivial_sum(v);
    write_all(fd, &s, sizeof s);
}

static void mixed_run_fd(size_t i, int fd)
{
    double s = run_mixed(&g_hdrs[i], g_recs, g_nrecs, -1);
    write_all(fd, &s, sizeof s);
}

static void payload_run_fd(size_t i, int fd)
{
    /* The child has the argument already (it is a fork of the parent);
     * it sends its 1 MiB result back. */
    (void)i;
    write_all(fd, g_payload, opt.bytes);
}

static void fork_done(size_t i, int status, int timed_out, const char *res, size_t len)
{
    g_report_ns[i] = now_ns();
    g_status[i] = status;
    g_timed_out[i] = timed_out;
    if (!strcmp(g_workload, "trivial")) {
        double s;
        if (len != sizeof s) {
            g_bad++;
            return;
        }
        memcpy(&s, res, sizeof s);
        if (s != trivial_expect(i))
            g_bad++;
    } else if (!strcmp(g_workload, "payload")) {
        if (len != opt.bytes || memcmp(res, g_payload, len) != 0)
            g_bad++;
    }
}

static double hang_timeout(size_t i)
{
    return g_hdrs[i].kind == KIND_HANG ? opt.timeout : 0;
}

static void trivial_run_thread(size_t i)
{
    double v[8];
    trivial_arg(i, v);
    g_res[i] = trivial_sum(v);
}

static void mixed_run_thread(size_t i)
{
    g_res[i] = run_mixed(&g_hdrs[i], g_recs, g_nrecs, -1);
}

static void payload_run_thread(size_t i)
{
    unsigned char *out = malloc(opt.bytes);
    if (!out)
        die("malloc");
    memcpy(out, g_payload, opt.bytes);
    g_outs[i] = out;
}

static void alloc_common(size_t n)
{
    g_res = calloc(n ? n : 1, sizeof *g_res);
    g_report_ns = calloc(n ? n : 1, sizeof *g_report_ns);
    g_status = calloc(n ? n : 1, sizeof *g_status);
    g_timed_out = calloc(n ? n : 1, sizeof *g_timed_out);
    if (!g_res || !g_report_ns || !g_status || !g_timed_out)
        die("calloc");
}

/* The hang workload's tasks: nhang hanging ones, then `workers` probes. */
static size_t setup_hang(void)
{
    size_t nhang = opt.tasks, n = nhang + opt.workers;
    g_hdrs = calloc(n, sizeof *g_hdrs);
    if (!g_hdrs)
        die("calloc");
    for (size_t i = 0; i < n; i++) {
        g_hdrs[i].kind = i < nhang ? KIND_HANG : KIND_PROBE;
        g_hdrs[i].idx = (uint32_t)i;
        g_hdrs[i].iters = 0;
    }
    g_recs = recs_map(n);
    g_nrecs = n;
    return n;
}

/* The crash workload: `normal` 1 ms tasks with `crashes` crashing ones
 * spread among them. */
static size_t setup_crash(size_t crashes)
{
    size_t n = opt.tasks + crashes;
    g_hdrs = calloc(n, sizeof *g_hdrs);
    if (!g_hdrs)
        die("calloc");
    for (size_t i = 0; i < n; i++) {
        g_hdrs[i].kind = crash_kind(i, n, crashes);
        g_hdrs[i].idx = UINT32_MAX;
        g_hdrs[i].iters = opt.iters;
    }
    return n;
}

/* ---------------------------------------------------------------------
 * fork
 * ------------------------------------------------------------------- */

static int fork_main(void)
{
    const char *w = g_workload;
    if (!strcmp(w, "trivial") || !strcmp(w, "cpu") || !strcmp(w, "payload")) {
        size_t n = opt.tasks;
        alloc_common(n);
        fork_job job = {.n = n, .done = fork_done};
        if (!strcmp(w, "trivial")) {
            job.run = trivial_run_fd;
        } else if (!strcmp(w, "cpu")) {
            g_hdrs = calloc(n, sizeof *g_hdrs);
            if (!g_hdrs)
                die("calloc");
            for (size_t i = 0; i < n; i++)
                g_hdrs[i] = (task_hdr){KIND_CPU, (uint32_t)i, opt.iters};
            g_recs = recs_map(n);
            g_nrecs = n;
            job.run = mixed_run_fd;
        } else {
            g_payload = payload_buf(opt.bytes);
            job.run = payload_run_fd;
        }
        int64_t t0 = now_ns();
        fork_run(&job);
        double s = ns_to_s(now_ns() - t0);
        if (!strcmp(w, "trivial"))
            result_line(w, "fork", &opt, "tasks=%zu seconds=%.6f tasks_per_s=%.1f us_per_task=%.3f bad=%zu",
                        n, s, (double)n / s, s * 1e6 / (double)n, g_bad);
        else if (!strcmp(w, "cpu"))
            result_line(w, "fork", &opt, "tasks=%zu iters=%llu seconds=%.6f busy=%.4f bad=%zu", n,
                        (unsigned long long)opt.iters, s,
                        busy_fraction(g_recs, n, opt.workers, s), g_bad);
        else
            result_line(w, "fork", &opt, "tasks=%zu bytes=%zu seconds=%.6f mib_per_s=%.1f bad=%zu",
                        n, opt.bytes, s, (double)n * (double)opt.bytes / (double)MIB / s, g_bad);
        return 0;
    }
    if (!strcmp(w, "hang")) {
        size_t n = setup_hang();
        alloc_common(n);
        fork_job job = {.n = n, .run = mixed_run_fd, .done = fork_done, .timeout = hang_timeout};
        int64_t t0 = now_ns();
        fork_run(&job);
        int64_t t1 = now_ns();
        report_hang("fork", &opt, g_recs, NULL, g_report_ns, opt.tasks, t0, t1, 1);
        return 0;
    }
    if (!strcmp(w, "crash")) {
        /* (normal, crashing) pairs of runs; medians of each and of the
         * per-pair differences. */
        unsigned np = opt.passes;
        double *clean = calloc(np, sizeof *clean), *dirty = calloc(np, sizeof *dirty);
        double *extra = calloc(np, sizeof *extra);
        if (!clean || !dirty || !extra)
            die("calloc");
        size_t reported = 0, crashed = 0;
        for (unsigned k = 0; k < 2 * np; k++) {
            int pass = (int)(k % 2);
            size_t crashes = pass ? opt.crashes : 0;
            size_t n = setup_crash(crashes);
            alloc_common(n);
            fork_job job = {.n = n, .run = mixed_run_fd, .done = fork_done};
            int64_t t0 = now_ns();
            fork_run(&job);
            double s = ns_to_s(now_ns() - t0);
            if (pass) {
                dirty[k / 2] = s;
                extra[k / 2] = (s - clean[k / 2]) * 1e3 / (double)(opt.crashes ? opt.crashes : 1);
                reported = crashed = 0;
                for (size_t i = 0; i < n; i++) {
                    if (g_report_ns[i])
                        reported++;
                    if (g_hdrs[i].kind != KIND_CPU &&
                        !(WIFEXITED(g_status[i]) && WEXITSTATUS(g_status[i]) == 0))
                        crashed++;
                }
            } else {
                clean[k / 2] = s;
            }
            free(g_hdrs), free(g_res), free(g_report_ns), free(g_status), free(g_timed_out);
        }
        result_line(w, "fork", &opt,
                    "outcome=reports tasks=%zu crashes=%zu reported=%zu crashes_reported=%zu "
                    "passes=%u clean_seconds=%.6f seconds=%.6f extra_ms_per_crash=%.4f",
                    opt.tasks, opt.crashes, reported, crashed, np, median(clean, np),
                    median(dirty, np), median(extra, np));
        free(clean), free(dirty), free(extra);
        return 0;
    }
    if (!strcmp(w, "restart")) {
        /* Every task is a new process: the cost of a replacement is the
         * time from fork() to the child running its task. */
        void *mem = touch_memory(opt.mem_mib);
        if (opt.mem_mib && !mem)
            die("mmap");
        size_t n = opt.crashes ? opt.crashes : 20;
        g_hdrs = calloc(n, sizeof *g_hdrs);
        int64_t *fork_ns = calloc(n, sizeof *fork_ns);
        double *lat = calloc(n, sizeof *lat);
        if (!g_hdrs || !fork_ns || !lat)
            die("calloc");
        for (size_t i = 0; i < n; i++)
            g_hdrs[i] = (task_hdr){KIND_PROBE, (uint32_t)i, 0};
        g_recs = recs_map(n);
        g_nrecs = n;
        alloc_common(n);
        fork_job job = {.n = n, .run = mixed_run_fd, .done = fork_done, .fork_ns = fork_ns};
        int64_t t0 = now_ns();
        fork_run(&job);
        double s = ns_to_s(now_ns() - t0);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (g_recs[i].start_ns)
                lat[m++] = ns_to_s(g_recs[i].start_ns - fork_ns[i]);
        double mx = max_of(lat, m), md = median(lat, m);
        result_line(w, "fork", &opt,
                    "mem_mib=%zu restarts=%zu restart_ms_med=%.3f restart_ms_max=%.3f "
                    "ms_per_task=%.3f",
                    opt.mem_mib, m, md * 1e3, mx * 1e3, s * 1e3 / (double)n);
        free(g_hdrs), free(fork_ns), free(lat);
        free(g_res), free(g_report_ns), free(g_status), free(g_timed_out);
        recs_unmap(g_recs, n);
        if (mem)
            munmap(mem, opt.mem_mib * MIB);
        return 0;
    }
    fprintf(stderr, "fork: no workload %s\n", w);
    return 2;
}

/* ---------------------------------------------------------------------
 * pthread
 * ------------------------------------------------------------------- */

static volatile size_t *g_shared_done; /* crash: results before the kill */

static void crash_count_run_thread(size_t i)
{
    mixed_run_thread(i);
    __atomic_add_fetch(g_shared_done, 1, __ATOMIC_RELAXED);
}

static int pthread_main(void)
{
    const char *w = g_workload;
    tpool p;
    if (!strcmp(w, "trivial") || !strcmp(w, "cpu") || !strcmp(w, "payload")) {
        size_t n = opt.tasks;
        alloc_common(n);
        void (*run)(size_t);
        if (!strcmp(w, "trivial")) {
            run = trivial_run_thread;
        } else if (!strcmp(w, "cpu")) {
            g_hdrs = calloc(n, sizeof *g_hdrs);
            if (!g_hdrs)
                die("calloc");
            for (size_t i = 0; i < n; i++)
                g_hdrs[i] = (task_hdr){KIND_CPU, (uint32_t)i, opt.iters};
            g_recs = recs_map(n);
            g_nrecs = n;
            run = mixed_run_thread;
        } else {
            g_payload = payload_buf(opt.bytes);
            g_outs = calloc(n, sizeof *g_outs);
            if (!g_outs)
                die("calloc");
            run = payload_run_thread;
        }
        tpool_start(&p, opt.workers, n, run);
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            tpool_submit(&p, i);
        tpool_wait(&p, 0);
        /* Consuming the results is part of the work, as in the others. */
        if (!strcmp(w, "trivial")) {
            for (size_t i = 0; i < n; i++)
                if (g_res[i] != trivial_expect(i))
                    g_bad++;
        } else if (!strcmp(w, "payload")) {
            for (size_t i = 0; i < n; i++) {
                if (memcmp(g_outs[i], g_payload, opt.bytes))
                    g_bad++;
                free(g_outs[i]);
            }
        }
        double s = ns_to_s(now_ns() - t0);
        tpool_stop(&p);
        if (!strcmp(w, "trivial"))
            result_line(w, "pthread", &opt, "tasks=%zu seconds=%.6f tasks_per_s=%.1f us_per_task=%.4f bad=%zu",
                        n, s, (double)n / s, s * 1e6 / (double)n, g_bad);
        else if (!strcmp(w, "cpu"))
            result_line(w, "pthread", &opt, "tasks=%zu iters=%llu seconds=%.6f busy=%.4f bad=%zu", n,
                        (unsigned long long)opt.iters, s,
                        busy_fraction(g_recs, n, opt.workers, s), g_bad);
        else
            result_line(w, "pthread", &opt, "tasks=%zu bytes=%zu seconds=%.6f mib_per_s=%.1f bad=%zu",
                        n, opt.bytes, s, (double)n * (double)opt.bytes / (double)MIB / s, g_bad);
        return 0;
    }
    if (!strcmp(w, "hang")) {
        /* A thread cannot be killed: the pool has no way to time a task
         * out.  We wait `bound` seconds and report what came back. */
        size_t n = setup_hang();
        alloc_common(n);
        tpool_start(&p, opt.workers, n, mixed_run_thread);
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            tpool_submit(&p, i);
        int rc = tpool_wait(&p, opt.bound);
        double s = ns_to_s(now_ns() - t0);
        pthread_mutex_lock(&p.mu);
        size_t done = p.done;
        pthread_mutex_unlock(&p.mu);
        result_line(w, "pthread", &opt,
                    "outcome=%s tasks=%zu reported=%zu seconds=%.6f whole=0 "
                    "note=threads_cannot_be_killed;_gave_up_after_bound",
                    rc ? "hangs" : "reports", opt.tasks, done, s);
        _exit(0); /* the stuck threads cannot be joined */
    }
    if (!strcmp(w, "crash")) {
        /* The clean pass in this process, the crashing pass in a child:
         * a task that kills "its worker" kills the whole process. */
        size_t n = setup_crash(0);
        alloc_common(n);
        tpool_start(&p, opt.workers, n, mixed_run_thread);
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            tpool_submit(&p, i);
        tpool_wait(&p, 0);
        double clean = ns_to_s(now_ns() - t0);
        tpool_stop(&p);
        free(g_hdrs);
        n = setup_crash(opt.crashes);
        g_shared_done = (volatile size_t *)recs_map(1);
        t0 = now_ns();
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            tpool_start(&p, opt.workers, n, crash_count_run_thread);
            for (size_t i = 0; i < n; i++)
                tpool_submit(&p, i);
            tpool_wait(&p, 0);
            _exit(0);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR)
                die("waitpid");
        double s = ns_to_s(now_ns() - t0);
        size_t done = *g_shared_done;
        if (WIFSIGNALED(st))
            result_line(w, "pthread", &opt,
                        "outcome=killed tasks=%zu crashes=%zu reported=%zu clean_seconds=%.6f "
                        "seconds=%.6f note=first_crash_killed_the_whole_process_(signal_%d)",
                        opt.tasks, opt.crashes, done, clean, s, WTERMSIG(st));
        else
            result_line(w, "pthread", &opt,
                        "outcome=breaks tasks=%zu crashes=%zu reported=%zu clean_seconds=%.6f "
                        "seconds=%.6f note=first_crash_ended_the_whole_process_(exit_%d)",
                        opt.tasks, opt.crashes, done, clean, s, WEXITSTATUS(st));
        return 0;
    }
    fprintf(stderr, "pthread: no workload %s\n", w);
    return 2;
}

/* ---------------------------------------------------------------------
 * pipe: the pipe's own limit
 * ------------------------------------------------------------------- */

typedef struct pworker {
    pid_t  pid;
    int    req, resp;   /* parent's ends */
    char  *buf;         /* partial responses */
    size_t have, cap;
    unsigned inflight;
} pworker;

static size_t g_req_sz, g_resp_sz;

/* A request: 8-byte id, then the task's bytes.  A response: 8-byte id,
 * then the result.  Payload requests and responses are the bare bytes. */
static void pipe_serve(const char *req, char *resp)
{
    if (!strcmp(g_workload, "trivial")) {
        double v[8], s;
        memcpy(resp, req, 8);
        memcpy(v, req + 8, sizeof v);
        s = trivial_sum(v);
        memcpy(resp + 8, &s, sizeof s);
    } else if (!strcmp(g_workload, "cpu")) {
        task_hdr h;
        memcpy(resp, req, 8);
        memcpy(&h, req + 8, sizeof h);
        double s = run_mixed(&h, g_recs, g_nrecs, -1);
        memcpy(resp + 8, &s, sizeof s);
    } else {
        memcpy(resp, req, g_req_sz);
    }
}

static void pipe_worker(int rfd, int wfd)
{
    size_t cap = g_req_sz * opt.depth, have = 0;
    char *buf = malloc(cap), *resp = malloc(g_resp_sz);
    if (!buf || !resp)
        _exit(1);
    for (;;) {
        ssize_t n = read(rfd, buf + have, cap - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);
        have += (size_t)n;
        size_t off = 0;
        while (have - off >= g_req_sz) {
            pipe_serve(buf + off, resp);
            write_all(wfd, resp, g_resp_sz);
            off += g_req_sz;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
}

static void set_pipe_size(int fd)
{
    if (opt.pipe_size && fcntl(fd, F_SETPIPE_SZ, (int)opt.pipe_size) < 0)
        die("F_SETPIPE_SZ");
}

static char *g_req_tmp;

static void pipe_send(pworker *pw, size_t i)
{
    if (!strcmp(g_workload, "payload")) {
        g_payload[0] = (unsigned char)i;
        write_all(pw->req, g_payload, g_req_sz);
    } else {
        uint64_t id = i;
        memcpy(g_req_tmp, &id, 8);
        if (!strcmp(g_workload, "trivial")) {
            double v[8];
            trivial_arg(i, v);
            memcpy(g_req_tmp + 8, v, sizeof v);
        } else {
            task_hdr h = {KIND_CPU, (uint32_t)i, opt.iters};
            memcpy(g_req_tmp + 8, &h, sizeof h);
        }
        write_all(pw->req, g_req_tmp, g_req_sz);
    }
    pw->inflight++;
}

static int pipe_main(void)
{
    const char *w = g_workload;
    if (!strcmp(w, "trivial")) {
        g_req_sz = 8 + 8 * sizeof(double);
        g_resp_sz = 16;
    } else if (!strcmp(w, "cpu")) {
        g_req_sz = 8 + sizeof(task_hdr);
        g_resp_sz = 16;
        g_recs = recs_map(opt.tasks);
        g_nrecs = opt.tasks;
    } else if (!strcmp(w, "payload")) {
        g_req_sz = g_resp_sz = opt.bytes;
        g_payload = payload_buf(opt.bytes);
        opt.depth = 1;
    } else {
        fprintf(stderr, "pipe: no workload %s\n", w);
        return 2;
    }
    g_req_tmp = malloc(g_req_sz);
    unsigned nw = opt.workers;
    pworker *pw = calloc(nw, sizeof *pw);
    struct pollfd *pf = calloc(nw, sizeof *pf);
    if (!pw || !pf || !g_req_tmp)
        die("calloc");
    for (unsigned k = 0; k < nw; k++) {
        int a[2], b[2];
        if (pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0)
            die("pipe2");
        set_pipe_size(a[1]);
        set_pipe_size(b[1]);
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            for (unsigned j = 0; j < k; j++)
                close(pw[j].req), close(pw[j].resp);
            close(a[1]);
            close(b[0]);
            pipe_worker(a[0], b[1]);
        }
        close(a[0]);
        close(b[1]);
        pw[k].pid = pid;
        pw[k].req = a[1];
        pw[k].resp = b[0];
        pw[k].cap = g_resp_sz * opt.depth;
        pw[k].buf = malloc(pw[k].cap);
        if (!pw[k].buf)
            die("malloc");
    }
    /* Warm up: one round trip per worker. */
    for (unsigned k = 0; k < nw; k++)
        pipe_send(&pw[k], 0);
    for (unsigned k = 0; k < nw; k++) {
        read_all(pw[k].resp, pw[k].buf, g_resp_sz);
        pw[k].inflight = 0;
    }

    size_t n = opt.tasks, next = 0, done = 0;
    int64_t t0 = now_ns();
    for (unsigned k = 0; k < nw; k++)
        while (pw[k].inflight < opt.depth && next < n)
            pipe_send(&pw[k], next++);
    while (done < n) {
        for (unsigned k = 0; k < nw; k++) {
            pf[k].fd = pw[k].resp;
            pf[k].events = POLLIN;
            pf[k].revents = 0;
        }
        if (poll(pf, nw, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        for (unsigned k = 0; k < nw; k++) {
            if (!pf[k].revents)
                continue;
            pworker *p = &pw[k];
            ssize_t got = read(p->resp, p->buf + p->have, p->cap - p->have);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                die("worker gone");
            p->have += (size_t)got;
            size_t off = 0;
            while (p->have - off >= g_resp_sz) {
                const char *r = p->buf + off;
                if (!strcmp(w, "trivial")) {
                    uint64_t id;
                    double s;
                    memcpy(&id, r, 8);
                    memcpy(&s, r + 8, 8);
                    if (s != trivial_expect((size_t)id))
                        g_bad++;
                } else if (!strcmp(w, "payload")) {
                    if (memcmp(r + 1, g_payload + 1, g_resp_sz - 1))
                        g_bad++;
                }
                off += g_resp_sz;
                done++;
                p->inflight--;
            }
            memmove(p->buf, p->buf + off, p->have - off);
            p->have -= off;
            while (p->inflight < opt.depth && next < n)
                pipe_send(p, next++);
        }
    }
    double s = ns_to_s(now_ns() - t0);
    for (unsigned k = 0; k < nw; k++) {
        close(pw[k].req);
        close(pw[k].resp);
        waitpid(pw[k].pid, NULL, 0);
        free(pw[k].buf);
    }
    char impl[64];
    if (!strcmp(w, "payload")) {
        snprintf(impl, sizeof impl, "pipe-%zuk", opt.pipe_size ? opt.pipe_size / 1024 : 64);
        result_line(g_label, impl, &opt, "tasks=%zu bytes=%zu seconds=%.6f mib_per_s=%.1f bad=%zu",
                    n, opt.bytes, s, (double)n * (double)opt.bytes / (double)MIB / s, g_bad);
    } else {
        snprintf(impl, sizeof impl, "pipe-depth%u", opt.depth);
        if (!strcmp(w, "trivial"))
            result_line(w, impl, &opt, "tasks=%zu seconds=%.6f tasks_per_s=%.1f us_per_task=%.4f bad=%zu",
                        n, s, (double)n / s, s * 1e6 / (double)n, g_bad);
        else
            result_line(w, impl, &opt, "tasks=%zu iters=%llu seconds=%.6f busy=%.4f bad=%zu", n,
                        (unsigned long long)opt.iters, s,
                        busy_fraction(g_recs, n, opt.workers, s), g_bad);
    }
    free(pw), free(pf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "calibrate")) {
        /* The median of several calibrations. */
        double v[5];
        for (int i = 0; i < 5; i++)
            v[i] = (double)calibrate_busy(1.0);
        printf("%llu\n", (unsigned long long)median(v, 5));
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: %s WORKLOAD IMPL [options] | calibrate\n", argv[0]);
        return 2;
    }
    g_workload = g_label = argv[1];
    const char *impl = argv[2];
    parse_opts(argc, argv, 3, &opt);
    if (!strcmp(g_workload, "bigarg")) {
        if (strcmp(impl, "pipe")) {
            fprintf(stderr, "bigarg: only the pipe\n");
            return 2;
        }
        g_workload = "payload";
    }
    if (!strcmp(impl, "serial"))
        return serial_main();
    if (!strcmp(impl, "fork"))
        return fork_main();
    if (!strcmp(impl, "pthread"))
        return pthread_main();
    if (!strcmp(impl, "pipe"))
        return pipe_main();
    fprintf(stderr, "unknown implementation %s\n", impl);
    return 2;
}

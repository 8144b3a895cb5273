/*
 * invoker on the benchmark workloads, through its public API only.
 *
 * Usage: bench_invoker WORKLOAD [IMPL] [options]   (options: common.h)
 * Workloads: trivial cpu payload hang crash restart bigarg argmem.
 * IMPL: "invoker" (the default): submit every task, then invoker_wait;
 *       "invoker-window": keep --depth tasks per worker submitted, topping
 *       the window up from on_result (trivial, cpu, payload).
 * The payload workload always uses a window (2 per worker unless --depth
 * says otherwise): queueing hundreds of 1 MiB copies up front measures
 * malloc, not invoker.
 *
 * bigarg [invoker|invoker-zerocopy]: --tasks arguments of --bytes echoed
 * back, as a new user writes it: every argument in a buffer of its own,
 * all submitted, then invoker_wait, timed from the first submit.
 * "invoker" copies each from a fresh malloc'd buffer filled before the
 * clock starts; "invoker-zerocopy" writes each in place with
 * invoker_arg_alloc (a memcpy from a pattern, inside the clock) and hands
 * it over with invoker_submit_arg.
 * argmem [invoker|invoker-zerocopy]: --tasks arguments of --bytes queued
 * at once (the workers wait for every submit; each argument's own buffer
 * is freed after its submit), then the parent's VmHWM against the bytes
 * queued.
 */
#include "common.h"

#include <invoker.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { MODE_TRIVIAL = 1, MODE_PAYLOAD, MODE_MIXED, MODE_GATED };

static bench_opts opt;
static const char *g_workload;
static const char *g_impl = "invoker";

/* Inherited by the workers at their fork. */
static int g_mode;
static task_rec *g_recs;
static size_t g_nrecs;
static int g_slot = -1;
static spawn_log *g_spawn; /* hang, restart: worker start-ups */
static volatile int *g_gate; /* argmem: shared, non-zero once every task is queued */

/* Parent-side state, reached through the callbacks' user pointer. */
typedef struct bench {
    invoker       *inv;
    size_t         n;          /* tasks of the current batch */
    size_t         next;       /* window mode: next task index to submit */
    size_t         window;     /* 0: everything was submitted up front */
    size_t         ok, failed, bad;
    size_t         by_fail[16];
    int64_t       *report_ns;  /* per task, when its callback came (or NULL) */
    int64_t       *rq_ns;      /* hang: per task, this thread's run-queue wait and */
    int64_t       *steal;      /* the machine's steal time since the last callback */
    int64_t       *gap_ns;     /* and the time since that callback, */
    int64_t       *cpu_ns;     /* of which this thread ran this much */
    int64_t        rq_last, steal_last, cb_last, cpu_last;
    const task_hdr *hdrs;      /* mixed workloads: per task */
    unsigned char *payload;    /* payload workload: the argument */
    int            submit_err;
    double         parent_cpu_s; /* the last batch's CPU time in this thread */
} bench;

static void die_err(const char *what, int err)
{
    fprintf(stderr, "bench_invoker: %s: %s (%d)\n", what, invoker_strerror(err), err);
    exit(1);
}

static int worker_init(unsigned worker, void *ctx)
{
    g_slot = (int)worker;
    if (g_spawn)
        spawn_note(g_spawn, g_slot);
    return 0;
}

static int objective(const void *arg, size_t arg_len, invoker_result *out, void *ctx)
{
    double s;
    switch (g_mode) {
    case MODE_TRIVIAL: {
        double v[8];
        if (arg_len != sizeof v)
            return 1;
        memcpy(v, arg, sizeof v);
        s = trivial_sum(v);
        break;
    }
    case MODE_PAYLOAD:
        return invoker_result_write(out, arg, arg_len) ? 2 : 0;
    case MODE_GATED:
        while (!*g_gate)
            nanosleep(&(struct timespec){ 0, 100000 }, NULL);
        s = (double)arg_len;
        break;
    default: {
        task_hdr h;
        if (arg_len != sizeof h)
            return 1;
        memcpy(&h, arg, sizeof h);
        s = run_mixed(&h, g_recs, g_nrecs, g_slot);
        break;
    }
    }
    return invoker_result_write(out, &s, sizeof s) ? 2 : 0;
}

static size_t tag_index(const invoker_task *t)
{
    return (size_t)(uintptr_t)t->tag - 1;
}

/* Submits task i of the current batch. */
static void submit_one(bench *b, size_t i)
{
    void *tag = (void *)(uintptr_t)(i + 1);
    int rc;
    if (g_mode == MODE_TRIVIAL) {
        double v[8];
        trivial_arg(i, v);
        rc = invoker_submit(b->inv, v, sizeof v, tag, NULL);
    } else if (g_mode == MODE_PAYLOAD) {
        b->payload[0] = (unsigned char)i;
        rc = invoker_submit(b->inv, b->payload, opt.bytes, tag, NULL);
    } else {
        const task_hdr *h = &b->hdrs[i];
        if (h->kind == KIND_HANG)
            rc = invoker_submit_timeout(b->inv, h, sizeof *h, tag, opt.timeout, NULL);
        else
            rc = invoker_submit(b->inv, h, sizeof *h, tag, NULL);
    }
    if (rc < 0) {
        if (!b->submit_err)
            b->submit_err = rc;
        return;
    }
}

static void refill(bench *b)
{
    if (b->window)
        while (b->next < b->n && b->next - (b->ok + b->failed) < b->window)
            submit_one(b, b->next++);
}

static void on_result(const invoker_task *task, const void *result, size_t result_len,
                      void *user)
{
    bench *b = user;
    size_t i = tag_index(task);
    if (b->report_ns)
        b->report_ns[i] = now_ns();
    if (b->rq_ns) {
        b->rq_last = thread_run_delay_ns();
        b->steal_last = opt.control ? steal_ns() : 0;
        b->cpu_last = thread_oncpu_ns();
        b->cb_last = b->report_ns[i];
    }
    if (g_mode == MODE_TRIVIAL) {
        double s;
        if (result_len != sizeof s)
            b->bad++;
        else if (memcpy(&s, result, sizeof s), s != trivial_expect(i))
            b->bad++;
    } else if (g_mode == MODE_PAYLOAD) {
        const unsigned char *r = result;
        if (result_len != opt.bytes || memcmp(r + 1, b->payload + 1, result_len - 1) ||
            r[0] != (unsigned char)i)
            b->bad++;
    } else if (result_len != sizeof(double)) {
        b->bad++;
    }
    b->ok++;
    refill(b);
}

static void on_error(const invoker_task *task, invoker_failure failure, int code, void *user)
{
    bench *b = user;
    size_t i = tag_index(task);
    if (b->report_ns)
        b->report_ns[i] = now_ns();
    if (b->rq_ns) {   /* after the report's time: these reads do not delay it */
        int64_t rq = thread_run_delay_ns(), cpu = thread_oncpu_ns();
        int64_t st = opt.control ? steal_ns() : 0;   /* /proc/stat is slow to read */
        b->rq_ns[i] = rq - b->rq_last;
        b->steal[i] = st - b->steal_last;
        b->gap_ns[i] = b->report_ns[i] - b->cb_last;
        b->cpu_ns[i] = cpu - b->cpu_last;
        b->rq_last = rq;
        b->steal_last = st;
        b->cb_last = b->report_ns[i];
        b->cpu_last = cpu;
    }
    b->failed++;
    if ((unsigned)failure < 16)
        b->by_fail[failure]++;
    refill(b);
}

/* --journal: a fresh journal file per run (an old one would answer every
 * task without running it). */
static char g_journal[4096];

static void journal_path(void)
{
    snprintf(g_journal, sizeof g_journal, "%s/bench-%d.journal", opt.journal, (int)getpid());
    (void)unlink(g_journal);
}

static double journal_bytes(void)
{
    struct stat st;
    return stat(g_journal, &st) == 0 ? (double)st.st_size : 0;
}

static void make(bench *b)
{
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = opt.workers;
    cfg.objective = objective;
    cfg.worker_init = worker_init;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = b;
    cfg.spares = !strcmp(opt.spares, "always") ? INVOKER_SPARES_ALWAYS
                 : !strcmp(opt.spares, "never")  ? INVOKER_SPARES_NEVER
                                                 : INVOKER_SPARES_AUTO;
    cfg.fork_server = !strcmp(opt.fork_server, "never") ? INVOKER_FORK_SERVER_NEVER
                                                        : INVOKER_FORK_SERVER_AUTO;
    cfg.timeout_factor = opt.timeout_factor;
    cfg.capture_stderr = !strcmp(opt.capture_stderr, "prefix") ? INVOKER_STDERR_PREFIX
                         : !strcmp(opt.capture_stderr, "tail") ? INVOKER_STDERR_TAIL
                                                               : INVOKER_STDERR_OFF;
    if (opt.journal) {
        journal_path();
        cfg.journal = g_journal;
        cfg.journal_key = g_workload;
    }
    int rc = invoker_create(&b->inv, &cfg);
    if (rc < 0)
        die_err("invoker_create", rc);
}

/* Runs tasks 0..n-1 of the current mode to completion; seconds taken. */
static double run_batch(bench *b, size_t n, size_t window)
{
    b->n = n;
    b->next = 0;
    b->ok = b->failed = b->bad = 0;
    memset(b->by_fail, 0, sizeof b->by_fail);
    b->window = window;
    int64_t t0 = now_ns();
    int64_t c0 = thread_cpu_ns();
    if (window)
        refill(b);
    else
        for (size_t i = 0; i < n; i++)
            submit_one(b, i);
    int rc = invoker_wait(b->inv);
    double s = ns_to_s(now_ns() - t0);
    b->parent_cpu_s = ns_to_s(thread_cpu_ns() - c0);
    if (rc < 0)
        die_err("invoker_wait", rc);
    if (b->submit_err)
        die_err("invoker_submit", b->submit_err);
    if (b->ok + b->failed != n) {
        fprintf(stderr, "bench_invoker: %zu callbacks for %zu tasks\n", b->ok + b->failed, n);
        exit(1);
    }
    return s;
}

/* A few tasks first, so that every worker is up and warm.  The workers
 * were forked in the current mode, so the warm-up tasks are of that mode. */
static void warm_up(bench *b)
{
    size_t n = 4 * (size_t)opt.workers;
    const task_hdr *saved = b->hdrs;
    int64_t *saved_ns = b->report_ns;
    task_hdr warm[256];
    if (n > 256)
        n = 256;
    /* Like the workload's own tasks, so that what invoker learns from the
     * warm-up (its batching follows the tasks' average run time) holds for
     * the measured run; --warm-iters overrides. */
    uint64_t wi = opt.warm_iters >= 0 ? (uint64_t)opt.warm_iters : opt.iters;
    for (size_t i = 0; i < n; i++)
        warm[i] = (task_hdr){KIND_PROBE, UINT32_MAX, wi};
    b->hdrs = warm;
    b->report_ns = NULL;
    run_batch(b, n, g_mode == MODE_PAYLOAD ? 2 * (size_t)opt.workers : 0);
    b->hdrs = saved;
    b->report_ns = saved_ns;
}

/* For looking into a run: BENCH_DUMP_RECS=FILE writes the task records
 * ("index pid slot start_ns end_ns") there. */
static void dump_recs(void)
{
    const char *path = getenv("BENCH_DUMP_RECS");
    if (!path || !g_recs)
        return;
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    for (size_t i = 0; i < g_nrecs; i++)
        fprintf(f, "%zu %d %d %lld %lld\n", i, (int)g_recs[i].pid, (int)g_recs[i].slot,
                (long long)g_recs[i].start_ns, (long long)g_recs[i].end_ns);
    /* then the worker start-ups, as "spawn pid slot time_ns" */
    for (int64_t i = 0; g_spawn && i < g_spawn->count && i < SPAWN_MAX; i++)
        fprintf(f, "spawn %d %d %lld\n", (int)g_spawn->e[i].pid, (int)g_spawn->e[i].slot,
                (long long)g_spawn->e[i].start_ns);
    fclose(f);
}

static task_hdr *hdrs_new(size_t n)
{
    task_hdr *h = calloc(n ? n : 1, sizeof *h);
    if (!h) {
        perror("calloc");
        exit(1);
    }
    return h;
}

static const char *impl_name(void)
{
    if (opt.label)
        return opt.label;
    if (opt.journal)
        return strcmp(g_impl, "invoker") ? "invoker-window-journal" : "invoker-journal";
    return g_impl;
}

static int throughput_main(void)
{
    bench b = {0};
    size_t n = opt.tasks, window = 0;
    int windowed = !strcmp(g_impl, "invoker-window");
    if (!strcmp(g_workload, "trivial")) {
        g_mode = MODE_TRIVIAL;
        if (windowed)
            window = (size_t)opt.depth * opt.workers;
    } else if (!strcmp(g_workload, "cpu")) {
        g_mode = MODE_MIXED;
        task_hdr *h = hdrs_new(n);
        for (size_t i = 0; i < n; i++)
            h[i] = (task_hdr){KIND_CPU, (uint32_t)i, opt.iters};
        b.hdrs = h;
        g_recs = recs_map(n);
        g_nrecs = n;
        if (windowed)
            window = (size_t)opt.depth * opt.workers;
    } else {
        g_mode = MODE_PAYLOAD;
        b.payload = malloc(opt.bytes);
        if (!b.payload) {
            perror("malloc");
            return 1;
        }
        for (size_t i = 0; i < opt.bytes; i++)
            b.payload[i] = (unsigned char)(i * 131u + 7u);
        window = (size_t)(windowed ? opt.depth : 2) * opt.workers;
    }
    make(&b);
    warm_up(&b);
    invoker_stats warm;
    invoker_get_stats(b.inv, &warm);
    double bytes0 = opt.journal ? journal_bytes() : 0;
    double s = run_batch(&b, n, window);
    invoker_stats st;
    invoker_get_stats(b.inv, &st);
    invoker_destroy(b.inv);
    dump_recs();
    size_t bad = b.bad + b.failed;
    if (opt.journal) {
        /* Every task journaled but those the warm-up ran already (in the
         * trivial workload, its tasks are the first ones): else the rate
         * is not the journal's cost. */
        size_t arg = g_mode == MODE_TRIVIAL ? 8 * sizeof(double) : sizeof(task_hdr);
        uint64_t journaled = st.journaled - warm.journaled;
        if (journaled + (st.cached - warm.cached) != n || st.cached - warm.cached > 256 ||
            st.journal_error) {
            fprintf(stderr, "journaled %llu of %zu, cached %llu (warm-up %llu), error %d\n",
                    (unsigned long long)journaled, n, (unsigned long long)st.cached,
                    (unsigned long long)warm.cached, st.journal_error);
            bad++;
        }
        double per = journaled ? (journal_bytes() - bytes0) / (double)journaled : 0;
        fprintf(stdout, "RESULT workload=journal-size impl=%s rep=%d tasks=%zu "
                "journaled=%llu bytes_per_task=%.1f overhead_bytes=%.1f arg_bytes=%zu "
                "result_bytes=%zu\n", g_workload, opt.rep, n, (unsigned long long)journaled,
                per, per - (double)(arg + sizeof(double)), arg, sizeof(double));
        (void)unlink(g_journal);
    }
    if (g_mode == MODE_TRIVIAL)
        result_line(g_workload, impl_name(), &opt,
                    "tasks=%zu seconds=%.6f tasks_per_s=%.1f us_per_task=%.4f window=%zu bad=%zu",
                    n, s, (double)n / s, s * 1e6 / (double)n, window, bad);
    else if (g_mode == MODE_MIXED)
        result_line(g_workload, impl_name(), &opt,
                    "tasks=%zu iters=%llu seconds=%.6f busy=%.4f parent_us_per_task=%.2f "
                    "window=%zu bad=%zu", n, (unsigned long long)opt.iters, s,
                    busy_fraction(g_recs, n, opt.workers, s),
                    b.parent_cpu_s * 1e6 / (double)n, window, bad);
    else
        result_line(g_workload, impl_name(), &opt,
                    "tasks=%zu bytes=%zu seconds=%.6f mib_per_s=%.1f window=%zu bad=%zu", n,
                    opt.bytes, s, (double)n * (double)opt.bytes / (double)MIB / s, window, bad);
    free((void *)b.hdrs);
    free(b.payload);
    return 0;
}

/* --control: a thread that sleeps (clock_nanosleep, absolute) to each hung
 * task's deadline, taken from the start the task recorded, and notes how
 * late it woke and how long it then waited for a CPU.  A report late with
 * its control on time was held up by something of the parent's own; late
 * together, by the machine. */
typedef struct control {
    const task_rec *recs;
    size_t          n;
    int64_t         timeout_ns;
    int64_t        *late_ns, *rq_ns;
    int            *running;   /* procs_running (/proc/stat) when it woke */
    atomic_int      stop;
} control;

/* Threads runnable on the whole machine right now, this one included. */
static int procs_running(void)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "procs_running ", 14))
            n = atoi(line + 14);
    if (f)
        fclose(f);
    return n;
}

static void *control_main(void *arg)
{
    control *c = arg;
    uint8_t *done = calloc(c->n, 1);
    if (!done)
        return NULL;
    while (!atomic_load(&c->stop)) {
        size_t best = SIZE_MAX;
        int64_t due = INT64_MAX;
        for (size_t i = 0; i < c->n; i++) {
            int64_t start = ((const volatile task_rec *)c->recs)[i].start_ns;
            if (!done[i] && start && start + c->timeout_ns < due) {
                due = start + c->timeout_ns;
                best = i;
            }
        }
        if (best == SIZE_MAX) {
            nanosleep(&(struct timespec){ 0, 200000 }, NULL);
            continue;
        }
        int64_t rq = thread_run_delay_ns();
        struct timespec at = { (time_t)(due / 1000000000), (long)(due % 1000000000) };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
            ;
        c->late_ns[best] = now_ns() - due;
        c->rq_ns[best] = thread_run_delay_ns() - rq;
        c->running[best] = procs_running();
        done[best] = 1;
    }
    free(done);
    return NULL;
}

/* What each late report (over 1 ms) came with, in ms:
 * "task:lateness/rq/gap/oncpu[/steal/control/control_rq/running]": the
 * parent thread's run-queue wait since the callback before it, the time
 * since that callback (a report made in the same pass as the one before it
 * shows a gap near 0 and that one's delay as its own) and the parent
 * thread's time on a CPU in it (the rest of the gap it slept: in epoll, or
 * blocked on something); with --control, the machine's steal time in it,
 * the control thread's lateness, its run-queue wait and the threads
 * runnable on the machine when it woke. */
static void late_detail(char *out, size_t cap, const bench *b, const task_rec *recs,
                        size_t nhang, const control *c)
{
    size_t len = 0, late = 0;
    int64_t ctl_max = 0;
    out[0] = 0;
    for (size_t i = 0; i < nhang && c; i++)
        if (c->late_ns[i] > ctl_max)
            ctl_max = c->late_ns[i];
    char list[1500] = "-";
    size_t ll = 0;
    for (size_t i = 0; i < nhang; i++) {
        if (!b->report_ns[i] || !recs[i].start_ns)
            continue;
        double rep = ns_to_s(b->report_ns[i] - recs[i].start_ns) - opt.timeout;
        if (rep <= 1e-3)
            continue;
        late++;
        int n = snprintf(list + ll, sizeof list - ll, "%s%zu:%.2f/%.2f/%.2f/%.2f",
                         ll ? "," : "", i, rep * 1e3, (double)b->rq_ns[i] / 1e6,
                         (double)b->gap_ns[i] / 1e6, (double)b->cpu_ns[i] / 1e6);
        if (n > 0 && (size_t)n < sizeof list - ll)
            ll += (size_t)n;
        if (c) {
            n = snprintf(list + ll, sizeof list - ll, "/%.2f/%.2f/%.2f/%d",
                         (double)b->steal[i] / 1e6, (double)c->late_ns[i] / 1e6,
                         (double)c->rq_ns[i] / 1e6, c->running[i]);
            if (n > 0 && (size_t)n < sizeof list - ll)
                ll += (size_t)n;
        }
    }
    int n = snprintf(out + len, cap - len, "late_reports=%zu late_detail=%s", late, list);
    if (n > 0 && (size_t)n < cap - len)
        len += (size_t)n;
    if (c)
        snprintf(out + len, cap - len, " control_ms_max=%.3f", (double)ctl_max / 1e6);
}

static int hang_main(void)
{
    bench b = {0};
    size_t nhang = opt.tasks, n = nhang + opt.workers;
    task_hdr *h = hdrs_new(n);
    for (size_t i = 0; i < n; i++)
        h[i] = (task_hdr){i < nhang ? KIND_HANG : KIND_PROBE, (uint32_t)i, 0};
    b.hdrs = h;
    g_recs = recs_map(n);
    g_nrecs = n;
    g_spawn = spawn_map();
    int64_t *report_ns = calloc(n, sizeof *report_ns);
    int64_t *rq = calloc(n, sizeof *rq), *steal = calloc(n, sizeof *steal);
    int64_t *ctl_late = calloc(n, sizeof *ctl_late), *ctl_rq = calloc(n, sizeof *ctl_rq);
    int64_t *gap = calloc(n, sizeof *gap);
    int *running = calloc(n, sizeof *running);
    int64_t *oncpu = calloc(n, sizeof *oncpu);
    if (!report_ns || !rq || !steal || !ctl_late || !ctl_rq || !gap || !running || !oncpu)
        return 1;
    g_mode = MODE_MIXED;
    make(&b);
    warm_up(&b);
    b.report_ns = report_ns;
    b.rq_ns = rq;
    b.steal = steal;
    b.gap_ns = gap;
    b.cpu_ns = oncpu;
    control ctl = { g_recs, nhang, (int64_t)(opt.timeout * 1e9), ctl_late, ctl_rq, running, 0 };
    pthread_t th;
    int with_control = opt.control && pthread_create(&th, NULL, control_main, &ctl) == 0;
    b.rq_last = thread_run_delay_ns();
    b.steal_last = steal_ns();
    b.cpu_last = thread_oncpu_ns();
    int64_t t0 = now_ns();
    b.cb_last = t0;
    run_batch(&b, n, 0);
    /* The last probes may all have run on one replacement while another
     * slot's killed worker is still being reaped: "whole again" is when
     * every slot serves, and counts in the time (bounded at 1 s). */
    invoker_stats st;
    invoker_get_stats(b.inv, &st);
    for (int64_t until = now_ns() + 1000000000; st.workers < opt.workers && now_ns() < until;) {
        invoker_poll(b.inv, 0);
        invoker_get_stats(b.inv, &st);
        if (st.workers < opt.workers)
            nanosleep(&(struct timespec){ 0, 20000 }, NULL);
    }
    int64_t t1 = now_ns();
    if (with_control) {
        atomic_store(&ctl.stop, 1);
        pthread_join(th, NULL);
    }
    int whole = st.workers == opt.workers && b.ok == opt.workers &&
                b.by_fail[INVOKER_FAIL_TIMEOUT] == nhang;
    if (!whole)
        fprintf(stderr, "bench_invoker hang: workers=%u ok=%zu timeouts=%zu failed=%zu\n",
                st.workers, b.ok, b.by_fail[INVOKER_FAIL_TIMEOUT], b.failed);
    char extra[2048];
    late_detail(extra, sizeof extra, &b, g_recs, nhang, with_control ? &ctl : NULL);
    report_hang_extra(impl_name(), &opt, g_recs, g_spawn, report_ns, nhang, t0, t1, whole,
                      extra);
    invoker_destroy(b.inv);
    dump_recs();
    free(report_ns), free(h), free(rq), free(steal), free(ctl_late), free(ctl_rq), free(gap), free(running), free(oncpu);
    return 0;
}

static int crash_main(void)
{
    bench b = {0};
    g_mode = MODE_MIXED;
    size_t total = opt.tasks + opt.crashes;
    task_hdr *clean = hdrs_new(opt.tasks), *mixed = hdrs_new(total);
    for (size_t i = 0; i < opt.tasks; i++)
        clean[i] = (task_hdr){KIND_CPU, UINT32_MAX, opt.iters};
    for (size_t i = 0; i < total; i++)
        mixed[i] = (task_hdr){crash_kind(i, total, opt.crashes), (uint32_t)i, opt.iters};
    g_recs = recs_map(total);   /* the crashing runs' tasks, for BENCH_DUMP_RECS */
    g_nrecs = total;
    make(&b);
    warm_up(&b);
    /* (normal, crashing) pairs of runs on the same invoker; medians of
     * each and of the per-pair differences. */
    unsigned np = opt.passes;
    double *s_clean = calloc(np, sizeof(double)), *s_dirty = calloc(np, sizeof(double));
    double *extra = calloc(np, sizeof(double));
    if (!s_clean || !s_dirty || !extra)
        return 1;
    size_t clean_bad = 0, crashed = 0, exited = 0, bad = 0, reported = 0;
    int right = 1;
    for (unsigned p = 0; p < np; p++) {
        b.hdrs = clean;
        s_clean[p] = run_batch(&b, opt.tasks, 0);
        clean_bad += b.failed + b.bad;
        b.hdrs = mixed;
        s_dirty[p] = run_batch(&b, total, 0);
        extra[p] = (s_dirty[p] - s_clean[p]) * 1e3 / (double)(opt.crashes ? opt.crashes : 1);
        crashed = b.by_fail[INVOKER_FAIL_CRASH];
        exited = b.by_fail[INVOKER_FAIL_EXIT];
        bad += b.bad;
        reported = b.ok + b.failed;
        if (b.ok != opt.tasks || crashed + exited != opt.crashes)
            right = 0;
    }
    dump_recs();
    invoker_stats st;
    invoker_get_stats(b.inv, &st);
    if (clean_bad || bad)
        right = 0;
    result_line("crash", impl_name(), &opt,
                "outcome=%s tasks=%zu crashes=%zu reported=%zu crashes_reported=%zu "
                "crash_signal=%zu crash_exit=%zu passes=%u clean_seconds=%.6f seconds=%.6f "
                "extra_ms_per_crash=%.4f workers_started=%llu live_workers=%u",
                right ? "reports" : "wrong", opt.tasks, opt.crashes, reported,
                crashed + exited, crashed, exited, np, median(s_clean, np),
                median(s_dirty, np), median(extra, np),
                (unsigned long long)st.workers_started, st.workers);
    free(s_clean), free(s_dirty), free(extra);
    invoker_destroy(b.inv);
    free(clean), free(mixed);
    return 0;
}

static int restart_main(void)
{
    bench b = {0};
    g_mode = MODE_MIXED;
    /* per: ~1 ms probes between two crashes, ~50 ms of work for each
     * worker: more than a fork of a 4 GiB parent takes here, so that one
     * replacement is timed at a time, not queued behind another. */
    size_t k = opt.crashes ? opt.crashes : 10, per = 50 * (size_t)opt.workers;
    size_t warmn = 4 * (size_t)opt.workers;
    size_t n = warmn + k * (per + 1) + per;
    task_hdr *h = hdrs_new(n);
    uint8_t *is_crash = calloc(n, 1);
    double *lat = calloc(n, sizeof *lat);
    if (!is_crash || !lat)
        return 1;
    /* Each crash comes after `per` probes, so that it happens once
     * every task has been submitted, and `per` more close the run: the
     * replacement of the last crash finds a task to take. */
    size_t m = 0;
    for (size_t i = 0; i < warmn; i++, m++)
        h[m] = (task_hdr){KIND_PROBE, (uint32_t)m, opt.iters};
    for (size_t c = 0; c <= k; c++) {
        for (size_t i = 0; i < per; i++, m++)
            h[m] = (task_hdr){KIND_PROBE, (uint32_t)m, opt.iters};
        if (c == k)
            break;
        is_crash[m] = 1;
        h[m] = (task_hdr){KIND_KILL, (uint32_t)m, 0};
        m++;
    }
    g_recs = recs_map(n);
    g_nrecs = n;
    g_spawn = spawn_map();
    make(&b);
    warm_up(&b);
    b.hdrs = h;
    run_batch(&b, warmn, 0);
    /* The parent grows after the invoker exists, as an optimizer does. */
    void *mem = touch_memory(opt.mem_mib);
    if (opt.mem_mib && !mem) {
        fprintf(stderr, "bench_invoker restart: cannot map %zu MiB\n", opt.mem_mib);
        return 1;
    }
    b.hdrs = h + warmn;
    /* Tags index h + warmn; the records carry absolute indices. */
    double s = run_batch(&b, n - warmn, 0);
    size_t got = restart_latencies(g_recs, n, is_crash, 0.0, g_spawn, lat);
    double mx = max_of(lat, got), md = median(lat, got);
    invoker_stats st;
    invoker_get_stats(b.inv, &st);
    result_line("restart", impl_name(), &opt,
                "mem_mib=%zu restarts=%zu restart_ms_med=%.3f restart_ms_max=%.3f seconds=%.6f "
                "crashes_reported=%zu workers_started=%llu",
                opt.mem_mib, got, md * 1e3, mx * 1e3, s,
                b.by_fail[INVOKER_FAIL_CRASH] + b.by_fail[INVOKER_FAIL_EXIT],
                (unsigned long long)st.workers_started);
    invoker_destroy(b.inv);
    dump_recs();
    free(h), free(is_crash), free(lat);
    return 0;
}

/* The parent's minor page faults so far. */
static long minor_faults(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

/* A field of /proc/self/status in KiB ("VmHWM", "VmRSS"); 0 if unknown. */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* The memory the argument arena's file holds (KiB), found by its name
 * among our descriptors: what the queued arguments cost, mapped or not. */
static long arena_kib(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long kib = 0;
    while (d && (e = readdir(d))) {
        char path[300], link[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        struct stat st;
        if (n <= 0)
            continue;
        link[n] = 0;
        if (strstr(link, "memfd:invoker-args") && stat(path, &st) == 0) {
            kib = (long)st.st_blocks / 2;
            break;   /* a worker's read-only descriptor is the same file */
        }
    }
    if (d)
        closedir(d);
    return kib;
}

/* The pattern every argument of bigarg/argmem starts from; byte 0 is the
 * task's index, so the echo check tells the tasks apart. */
static unsigned char *pattern_new(size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    if (!p) {
        perror("malloc");
        exit(1);
    }
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 131u + 7u);
    return p;
}

static void big_submit(bench *b, size_t i, const unsigned char *src, int zerocopy)
{
    void *tag = (void *)(uintptr_t)(i + 1);
    int rc;
    if (zerocopy) {
        void *buf;
        rc = invoker_arg_alloc(b->inv, opt.bytes, &buf);
        if (rc == 0) {
            memcpy(buf, src, opt.bytes);
            ((unsigned char *)buf)[0] = (unsigned char)i;
            if ((rc = invoker_submit_arg(b->inv, buf, opt.bytes, tag, NULL)) != 0)
                invoker_arg_free(b->inv, buf);
        }
    } else {
        rc = invoker_submit(b->inv, src, opt.bytes, tag, NULL);
    }
    if (rc < 0)
        die_err(zerocopy ? "invoker_submit_arg" : "invoker_submit", rc);
}

static int bigarg_main(void)
{
    bench b = {0};
    int zerocopy = !strcmp(g_impl, "invoker-zerocopy");
    size_t n = opt.tasks;
    g_mode = MODE_PAYLOAD;
    if (opt.bytes < 2) {
        fprintf(stderr, "bigarg: --bytes must be 2 or more\n");
        return 2;
    }
    b.payload = pattern_new(opt.bytes);
    make(&b);
    warm_up(&b);
    /* A fresh buffer per task, filled before the clock starts: the copy
     * path is timed from cold, never-reused user memory. */
    unsigned char **bufs = calloc(n ? n : 1, sizeof *bufs);
    if (!bufs)
        return 1;
    for (size_t i = 0; !zerocopy && i < n; i++) {
        if (!(bufs[i] = malloc(opt.bytes))) {
            perror("malloc");
            return 1;
        }
        memcpy(bufs[i], b.payload, opt.bytes);
        bufs[i][0] = (unsigned char)i;
    }
    /* --passes batches on one invoker: the first is the new user's, the
     * later ones an optimizer's next generations. */
    double first = 0, submit_s = 0, wait_cpu = 0;
    double *again = calloc(opt.passes, sizeof *again);
    long faults = 0;
    if (!again)
        return 1;
    size_t bad = 0;
    for (unsigned p = 0; p < opt.passes; p++) {
        b.n = n;
        b.next = b.window = 0;   /* the warm-up's window submits nothing more */
        b.ok = b.failed = b.bad = 0;
        long f0 = minor_faults();
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            big_submit(&b, i, zerocopy ? b.payload : bufs[i], zerocopy);
        int64_t t1 = now_ns();
        long f1 = minor_faults();
        int64_t c1 = thread_cpu_ns();
        int rc = invoker_wait(b.inv);
        int64_t t2 = now_ns();
        if (rc < 0)
            die_err("invoker_wait", rc);
        bad += b.bad + b.failed + (b.ok + b.failed != n);
        if (p == 0) {
            first = ns_to_s(t2 - t0);
            submit_s = ns_to_s(t1 - t0);
            faults = f1 - f0;
            wait_cpu = ns_to_s(thread_cpu_ns() - c1);
        } else {
            again[p - 1] = ns_to_s(t2 - t0);
        }
    }
    double later = opt.passes > 1 ? median(again, opt.passes - 1) : 0;
    result_line("bigarg", impl_name(), &opt,
                "tasks=%zu bytes=%zu seconds=%.6f mib_per_s=%.1f submit_s=%.6f "
                "submit_faults=%ld wait_cpu_s=%.6f passes=%u later_seconds=%.6f hwm_mib=%.1f "
                "bad=%zu", n, opt.bytes, first,
                (double)n * (double)opt.bytes / (double)MIB / first, submit_s, faults,
                wait_cpu, opt.passes, later, (double)status_kib("VmHWM") / 1024.0, bad);
    free(again);
    invoker_destroy(b.inv);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(b.payload);
    return 0;
}

static int argmem_main(void)
{
    bench b = {0};
    int zerocopy = !strcmp(g_impl, "invoker-zerocopy");
    size_t n = opt.tasks;
    g_gate = mmap(NULL, sizeof *g_gate, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_gate == MAP_FAILED)
        return 1;
    *g_gate = 1;   /* the warm-up's tasks pass */
    g_mode = MODE_GATED;
    unsigned char *pattern = pattern_new(opt.bytes);
    make(&b);
    warm_up(&b);
    *g_gate = 0;
    long base = status_kib("VmRSS");
    b.n = n;
    b.next = b.window = 0;
    b.ok = b.failed = b.bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (zerocopy) {
            big_submit(&b, i, pattern, 1);
        } else {
            /* A new user's buffer: allocated, filled, submitted, freed. */
            unsigned char *a = malloc(opt.bytes);
            if (!a)
                return 1;
            memcpy(a, pattern, opt.bytes);
            big_submit(&b, i, a, 0);
            free(a);
        }
    }
    long hwm = status_kib("VmHWM"), arena = arena_kib();
    *g_gate = 1;
    int rc = invoker_wait(b.inv);
    if (rc < 0)
        die_err("invoker_wait", rc);
    double queued = (double)n * (double)opt.bytes / (double)MIB;
    result_line("argmem", impl_name(), &opt,
                "tasks=%zu bytes=%zu queued_mib=%.1f base_mib=%.1f hwm_mib=%.1f "
                "hwm_over_queued=%.3f arena_mib=%.1f bad=%zu", n, opt.bytes, queued,
                (double)base / 1024.0, (double)hwm / 1024.0,
                ((double)(hwm - base) / 1024.0) / queued, (double)arena / 1024.0,
                b.failed + (b.ok != n));
    invoker_destroy(b.inv);
    free(pattern);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s WORKLOAD [invoker|invoker-window|invoker-zerocopy] [options]\n", argv[0]);
        return 2;
    }
    g_workload = argv[1];
    int first = 2;
    if (argc > 2 && strncmp(argv[2], "--", 2) != 0) {
        g_impl = argv[2];
        first = 3;
    }
    if (strcmp(g_impl, "invoker") && strcmp(g_impl, "invoker-window") &&
        strcmp(g_impl, "invoker-zerocopy")) {
        fprintf(stderr, "unknown implementation %s\n", g_impl);
        return 2;
    }
    parse_opts(argc, argv, first, &opt);
    if (!strcmp(g_workload, "trivial") || !strcmp(g_workload, "cpu") ||
        !strcmp(g_workload, "payload"))
        return throughput_main();
    if (!strcmp(g_workload, "hang"))
        return hang_main();
    if (!strcmp(g_workload, "crash"))
        return crash_main();
    if (!strcmp(g_workload, "restart"))
        return restart_main();
    if (!strcmp(g_workload, "bigarg"))
        return bigarg_main();
    if (!strcmp(g_workload, "argmem"))
        return argmem_main();
    fprintf(stderr, "unknown workload %s\n", g_workload);
    return 2;
}

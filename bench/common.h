/*
 * Shared pieces of the C benchmark programs: clocks, the workloads'
 * objectives, the shared-memory timing records and the RESULT lines.
 *
 * Every C program (bench_invoker, bench_baselines) runs one workload with
 * one implementation per invocation and prints lines of the form
 *   RESULT workload=W impl=I key=value ...
 * that bench/report.py gathers; values never contain spaces.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MIB ((size_t)1 << 20)

/* Task kinds of the "mixed" workloads (cpu, hang, crash, restart). */
enum task_kind {
    KIND_CPU = 1,  /* calibrated busy loop, 8-byte result */
    KIND_HANG,     /* records its start, then sleeps forever */
    KIND_KILL,     /* records its start, then raise(SIGKILL) */
    KIND_EXIT,     /* records its start, then _exit(3) */
    KIND_PROBE     /* records its start, then the busy loop */
};

/* The argument of a mixed-workload task (16 bytes). */
typedef struct task_hdr {
    uint32_t kind;
    uint32_t idx;   /* index into the shared records, or UINT32_MAX */
    uint64_t iters; /* busy-loop iterations */
} task_hdr;

/* Written by the task itself, in whichever process runs it, into a
 * MAP_SHARED mapping made before any worker is forked.  CLOCK_MONOTONIC
 * is system-wide, so the parent compares these with its own clock. */
typedef struct task_rec {
    int64_t start_ns; /* 0 until the task starts */
    int32_t pid;
    int32_t slot;     /* worker slot where known, else -1 */
    int64_t end_ns;   /* CPU and PROBE tasks: when the busy loop ended */
} task_rec;

/* Options common to every sub-command. */
typedef struct bench_opts {
    unsigned workers;   /* --workers, default 2 */
    size_t   tasks;     /* --tasks: task count of the workload */
    uint64_t iters;     /* --iters: busy-loop iterations for ~1 ms */
    size_t   bytes;     /* --bytes: payload size, default 1 MiB */
    double   timeout;   /* --timeout: per-task timeout (hang), default 0.1 */
    size_t   crashes;   /* --crashes: crashing tasks (crash, restart) */
    size_t   mem_mib;   /* --mem-mib: parent memory for "restart" */
    unsigned depth;     /* --depth: tasks in flight per worker (pipe) */
    size_t   pipe_size; /* --pipe-size: F_SETPIPE_SZ for "pipe", 0: default */
    int      rep;       /* --rep: repetition number, echoed in RESULT */
    double   bound;     /* --bound: seconds an alternative may take before it
                           is declared hanging (hang, crash) */
    unsigned passes;    /* --passes: crash workload, (normal, crashing) pairs
                           of runs; the extra time is their median */
    long long warm_iters; /* --warm-iters: busy-loop iterations of the
                           warm-up tasks (bench_invoker); -1: as --iters */
    const char *spares; /* --spares auto|never|always (bench_invoker):
                           invoker_config.spares, default auto */
    const char *fork_server; /* --fork-server auto|never (bench_invoker):
                                invoker_config.fork_server, default auto */
    double   timeout_factor; /* --timeout-factor (bench_invoker):
                                invoker_config.timeout_factor, default 0 */
    const char *capture_stderr; /* --capture-stderr off|prefix|tail
                                   (bench_invoker), default off */
    const char *journal; /* --journal DIR (bench_invoker): a fresh journal in
                            DIR (SYNC_BATCH); NULL: none */
    int      control;   /* --control (bench_invoker hang): a thread of the
                           bench sleeps to each hung task's deadline too,
                           and its own lateness is printed beside the
                           report's */
    const char *label;   /* --label NAME (bench_invoker): the impl printed,
                            for a variant run.sh tells apart (the journal on
                            a disk, say); NULL: the usual name */
} bench_opts;

int64_t now_ns(void);
int64_t thread_cpu_ns(void);  /* the calling thread's CPU time */
double  ns_to_s(int64_t ns);

/* Parses argv[first..] into *o (defaults first).  Exits on a bad option. */
void parse_opts(int argc, char **argv, int first, bench_opts *o);

/* The workloads' objectives, as pure functions. */
double trivial_sum(const double *v); /* sum of 8 doubles */
double busy_loop(uint64_t iters);    /* ~iters dependent FP operations */
/* Iterations of busy_loop that take about `ms` milliseconds here. */
uint64_t calibrate_busy(double ms);

/* Fills the 8 doubles of trivial task i. */
void trivial_arg(size_t i, double *v);
/* The expected sum of trivial task i (checked by every implementation). */
double trivial_expect(size_t i);

/* The shared records (n entries, zeroed), mapped MAP_SHARED|MAP_ANONYMOUS. */
task_rec *recs_map(size_t n);
void      recs_unmap(task_rec *r, size_t n);

/* Runs a mixed task in the calling process: records its start into
 * recs[h->idx] (when recs is non-NULL and idx is in range), then does what
 * its kind says.  Returns the busy loop's value for CPU/PROBE; never
 * returns for HANG/KILL/EXIT. */
double run_mixed(const task_hdr *h, task_rec *recs, size_t nrecs, int slot);

/* The fraction of the workers' time spent inside tasks: the sum of the
 * recorded task durations / (workers * wall).  Unlike serial time /
 * (workers * wall), it does not move when the machine is slower for a
 * while: noise stretches tasks and wall alike. */
double busy_fraction(const task_rec *recs, size_t n, unsigned workers, double wall);

/* Allocates and touches mib MiB (one write per page); NULL for 0. */
void *touch_memory(size_t mib);
/* MemAvailable from /proc/meminfo in MiB, or 0 if unknown. */
size_t mem_available_mib(void);

/* Prints "RESULT workload=<w> impl=<i> workers=<n> rep=<r>" followed by
 * the formatted rest and a newline, then flushes stdout. */
void result_line(const char *workload, const char *impl, const bench_opts *o,
                 const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Median of n doubles (sorts v in place); 0 for n == 0. */
double median(double *v, size_t n);
double max_of(const double *v, size_t n);

/* Worker start-ups, noted by the workers themselves (worker_init), in a
 * MAP_SHARED mapping: which processes are the original workers and which
 * their replacements. */
#define SPAWN_MAX 4096
typedef struct spawn_log {
    int64_t  count;
    task_rec e[SPAWN_MAX];   /* start_ns: when the worker came up */
} spawn_log;
spawn_log *spawn_map(void);
void       spawn_note(spawn_log *l, int slot);

/* Per-crash restart latencies from the shared records: each crash event
 * (a task flagged in is_crash; its start plus offset_s, which is the
 * timeout for hung tasks) is paired, in time order, with the first task of
 * a replacement process.  A replacement is a process that came up (in
 * log) after the first crash event; without a log, one that ran no task
 * before it.  Writes up to n latencies in seconds to out, returns the
 * count. */
size_t restart_latencies(const task_rec *recs, size_t n, const uint8_t *is_crash,
                         double offset_s, const spawn_log *log, double *out);

/* Kind of task i of the crash workload: `crashes` of the `total` tasks,
 * spread evenly, alternately KIND_KILL and KIND_EXIT; the rest KIND_CPU. */
uint32_t crash_kind(size_t i, size_t total, size_t crashes);

/* Prints the RESULT line of the hang workload: tasks 0..nhang-1 hung and
 * were reported at report_ns (0: never), the `workers` probes after them
 * ran; t0..t1 is the whole run.  whole: the pool was whole again after. */
void report_hang(const char *impl, const bench_opts *o, const task_rec *recs,
                 const spawn_log *log, const int64_t *report_ns, size_t nhang,
                 int64_t t0, int64_t t1, int whole);
/* As report_hang, with more key=value fields at the end of the line
 * (extra, or NULL). */
void report_hang_extra(const char *impl, const bench_opts *o, const task_rec *recs,
                       const spawn_log *log, const int64_t *report_ns, size_t nhang,
                       int64_t t0, int64_t t1, int whole, const char *extra);

/* The calling thread's time spent runnable but waiting for a CPU
 * (/proc/thread-self/schedstat), in ns; -1 if unknown. */
int64_t thread_run_delay_ns(void);
/* The calling thread's time on a CPU (the same file), in ns; -1 if unknown. */
int64_t thread_oncpu_ns(void);
/* Steal time of the whole machine so far (/proc/stat: the hypervisor ran
 * something else while a CPU of ours had work), in ns; -1 if unknown. */
int64_t steal_ns(void);

#endif

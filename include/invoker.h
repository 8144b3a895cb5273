/*
 * invoker — parallel objective evaluation in fork()ed worker processes.
 *
 * An optimizer submits tasks (argument bytes and a tag); pre-forked worker
 * processes run the objective on them; the optimizer gets exactly one
 * callback per task, on_result or on_error, inside invoker_poll(),
 * invoker_wait() or invoker_destroy().  A worker that crashes, hangs, exits
 * or misbehaves costs the task it was running, never the caller.
 *
 * Platform: Linux 3.17+ (epoll, timerfd, eventfd, packet-mode pipes, memfd, prctl).
 *
 * Conventions for every function below:
 *   - Functions that can fail return 0 (or a count) on success and a
 *     negative errno value on failure; a failed call changes nothing and
 *     is followed by no callback.  invoker_strerror() names the values.
 *   - An invoker is used from one thread at a time.  Callbacks run in that
 *     thread, inside invoker_poll(), invoker_wait() or invoker_destroy()
 *     only: never from a signal handler or a hidden thread.
 *   - The library installs no signal handler, changes no signal
 *     disposition and never calls waitpid(-1): several invokers, and the
 *     program's own children, coexist in one process.
 */
#ifndef INVOKER_H
#define INVOKER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define INVOKER_API __attribute__((visibility("default")))
#else
#define INVOKER_API
#endif

#define INVOKER_VERSION_MAJOR 1
#define INVOKER_VERSION_MINOR 0
#define INVOKER_VERSION_PATCH 0
/* One number that grows with every release: 10000*major + 100*minor + patch. */
#define INVOKER_VERSION \
    (INVOKER_VERSION_MAJOR * 10000 + INVOKER_VERSION_MINOR * 100 + INVOKER_VERSION_PATCH)

/* The version of the library linked at run time, as INVOKER_VERSION. */
INVOKER_API int invoker_version(void);
/* The same as "major.minor.patch"; a constant string. */
INVOKER_API const char *invoker_version_string(void);

typedef struct invoker invoker;   /* opaque handle */
typedef uint64_t invoker_id;      /* task id: unique within one invoker, never 0 */

/* ------------------------------------------------------------------------
 * Worker side: runs inside a fork()ed worker process.
 * ---------------------------------------------------------------------- */

/* Opaque result sink, valid during one objective call. */
typedef struct invoker_result invoker_result;

/* Appends len bytes at data to the task's result (data may be NULL when
 * len is 0).  Returns 0, -EINVAL (out or data NULL with len > 0),
 * -EMSGSIZE (the result would pass max_result_bytes: the task then fails
 * with INVOKER_FAIL_TOO_LARGE whatever the objective returns) or -ENOMEM
 * (the bytes written so far stay). */
INVOKER_API int invoker_result_write(invoker_result *out, const void *data, size_t len);

/* The objective, called in a worker with the task's argument bytes (arg is
 * valid, and 16-byte aligned, during the call; NULL only when arg_len is
 * 0).  The bytes are read-only: an argument larger than 4048 bytes is
 * mapped read-only from shared memory, and writing to it kills the worker
 * (INVOKER_FAIL_CRASH, SIGSEGV).  Returns 0 on success, the result being what it wrote to out; or a
 * non-zero code, which reaches on_error as INVOKER_FAIL_OBJECTIVE with that
 * code, and whatever it wrote is dropped.
 *
 * What is safe in an objective: the worker is a fork() without exec of the
 * parent as it was at invoker_create, made by the fork server that
 * invoker_create forks (see invoker_config.fork_server); without one, a
 * fork of the parent when the worker is needed, by the thread that runs
 * invoker_create, invoker_poll, invoker_wait or invoker_submit.  It has
 * that copy of the parent's memory with only the forking thread.  malloc
 * and stdio work (glibc resets their locks in the child); a mutex that
 * another parent thread held at the fork stays locked forever, so an
 * objective must not take locks that other parent threads use.  Anything
 * needing its own state (a connection, an interpreter, a random seed)
 * belongs in worker_init.  Workers die with the thread that forked them or
 * the fork server (PR_SET_PDEATHSIG names a thread): create and use the
 * invoker from a thread that lives as long as it. */
typedef int (*invoker_objective_fn)(const void *arg, size_t arg_len,
                                    invoker_result *out, void *objective_ctx);

/* Inside an objective: the running task's id, its attempt (1 the first
 * time a worker starts it, 2 for its first retry...; 0 when unknown) and
 * the worker slot running it (0 in inline_mode), each where the pointer is
 * not NULL.  0, or -EINVAL (out NULL). */
INVOKER_API int invoker_current_task(const invoker_result *out, invoker_id *id,
                                     unsigned *attempt, unsigned *worker);

/* ------------------------------------------------------------------------
 * Parent side.
 * ---------------------------------------------------------------------- */

/* What a callback learns about its task.  Valid during the callback only;
 * arg points to the library's copy of the argument bytes. */
typedef struct invoker_task {
    invoker_id  id;
    void       *tag;          /* as given to invoker_submit, never dereferenced */
    const void *arg;          /* the argument bytes, valid during the callback */
    size_t      arg_len;
    unsigned    attempts;     /* times a worker started it; 0 if it never ran */
    int         worker;       /* worker slot of its last attempt, -1 if none */
    double      run_seconds;  /* wall time of its last attempt in a worker */
    int         cached;       /* 1: the outcome came from the cache, the
                                 journal or an identical task's evaluation,
                                 not this task's own: attempts 0, worker -1,
                                 run_seconds and cpu_seconds 0, max_rss_kib
                                 -1, no stderr_tail; it never counts toward
                                 adaptive timeouts */
    /* Forensics of its last attempt (0 and -1 when it never ran).
     * cpu_seconds: user + system CPU, the children the worker reaped during
     * the attempt included (a program run by invoker_command_objective is).
     * The worker reads the kernel's clock of its CPU only after it was
     * switched out: while it runs on, the only thread of its process
     * (glibc tells; elsewhere it always reads the clock), its CPU grows
     * with the wall clock, and is counted so (steal time of a virtual
     * machine included), so that no read between two tasks hands the
     * scheduler a point to preempt it with a result not yet sent.
     * max_rss_kib: the peak resident set of the attempt in KiB: the
     * worker's own peak since the attempt began (Linux resets the kernel's
     * lifetime peak through /proc/self/clear_refs before each task) or the
     * peak of a child reaped during it, whichever is larger; -1 when the
     * kernel cannot tell (no /proc/self/clear_refs).  A child's peak counts
     * the worker's pages it was forked with until it exec'd.
     * Tasks of microseconds sent to a worker together (see invoker_submit)
     * share one reset, at their packet's start; one whose result waits for
     * its packet-mates (it ran under 20 us) is not measured, so as to cost
     * no syscall: its cpu_seconds is its run time and its max_rss_kib -1
     * (or the peak of a child it reaped).
     * For an attempt cut short: a worker that died by itself (CRASH, EXIT,
     * CPU, MEMORY) is measured at its reaping (wait4): its CPU since the
     * attempt began and its peak since then, with the children it had
     * reaped (over its whole life, for their peak).  TIMEOUT and CANCELLED
     * are reported at once, while the worker still runs: its CPU since the
     * attempt began, from the kernel's clock of the process, and its own
     * peak (VmHWM, from /proc).  When its objective has child processes to
     * account for (invoker_command_objective's program, or children an
     * objective has reaped before in that worker), both come from /proc,
     * the CPU in clock ticks, with the children it reaped during the
     * attempt and those still running (a program still running: its
     * whole CPU and its peak; Linux 4.2+, where /proc lists a process's
     * children); the first children of a worker's objective of your own
     * are not seen at a timeout.  SHUTDOWN, PROTOCOL and NO_WORKER: 0
     * and -1. */
    double      cpu_seconds;
    long        max_rss_kib;
    /* With invoker_config.capture_stderr: the last bytes (4 KiB at most)
     * that its last attempt wrote to stderr, the objective's own and its
     * child processes' (see capture_stderr for which bytes count as the
     * attempt's).  Not NUL-terminated; valid during the callback.  NULL and
     * 0 when it wrote nothing, never ran, or capture is off. */
    const char *stderr_tail;
    size_t      stderr_tail_len;
} invoker_task;

typedef enum invoker_failure {
    INVOKER_FAIL_OBJECTIVE = 1, /* objective returned non-zero: code = that value */
    INVOKER_FAIL_TIMEOUT,       /* ran past its timeout: worker killed and replaced */
    INVOKER_FAIL_CRASH,         /* worker died by a signal: code = the signal number */
    INVOKER_FAIL_EXIT,          /* worker exited during the task: code = exit status */
    INVOKER_FAIL_CANCELLED,     /* invoker_cancel */
    INVOKER_FAIL_SHUTDOWN,      /* invoker_destroy came before it finished */
    INVOKER_FAIL_TOO_LARGE,     /* result over max_result_bytes */
    INVOKER_FAIL_PROTOCOL,      /* the worker sent or wrote something malformed */
    INVOKER_FAIL_NO_WORKER,     /* no worker could be started (worker_init failed,
                                   fork failed or workers died before taking a
                                   task, past the respawn limit) and none is
                                   left: code = the worker_init return value,
                                   the exit status, or a negative errno or
                                   signal number.  Respawning rests 1 s, then
                                   tries again. */
    INVOKER_FAIL_MEMORY,        /* the worker passed memory_limit: code = the
                                   signal that ended it, or 0 */
    INVOKER_FAIL_CPU,           /* the task passed cpu_limit (SIGXCPU) */
    INVOKER_FAIL_LOST           /* libinvoker_mpi only (see invoker_mpi.h): the
                                   rank running the task stopped answering or
                                   its node's processes died; code = that rank.
                                   Retried elsewhere while retries allow */
} invoker_failure;

/* Called once for each task that succeeded.  result (result_len bytes,
 * 16-byte aligned, NULL when result_len is 0) and task are valid until the
 * callback returns. */
typedef void (*invoker_result_fn)(const invoker_task *task, const void *result,
                                  size_t result_len, void *user);
/* Called once for each task that failed; see invoker_failure for code. */
typedef void (*invoker_error_fn)(const invoker_task *task, invoker_failure failure,
                                 int code, void *user);

/* Configuration.  Fill it with invoker_config_init(), then set the fields
 * you need.  A zeroed struct with objective, on_result and on_error set
 * works too: 0 in a numeric field means its default. */
typedef struct invoker_config {
    unsigned             workers;       /* 0: the CPUs in this process's affinity mask */
    invoker_objective_fn objective;     /* required */
    void                *objective_ctx; /* passed to objective and worker_init */
    /* Called once in each new worker before it takes a task, with its slot
     * number.  Non-zero: that worker is not used (it exits); repeated
     * failures trip the respawn guard (see INVOKER_FAIL_NO_WORKER). */
    int (*worker_init)(unsigned worker, void *objective_ctx);
    invoker_result_fn    on_result;     /* required */
    invoker_error_fn     on_error;      /* required */
    void                *user;          /* passed to both callbacks */
    double               timeout;       /* seconds a task may run in a worker; 0: no limit */
    unsigned             retries;       /* re-runs of a task whose worker crashed, exited
                                           or timed out (or whose rank was lost),
                                           before on_error */
    unsigned             max_tasks_per_worker; /* replace a worker after this many tasks; 0: never */
    size_t               max_arg_bytes;    /* 0: 64 MiB.  Arguments over 4048
                                              bytes wait in shared memory that
                                              the invoker keeps once they are
                                              done, for the next ones: what a
                                              burst of them used stays until a
                                              burst that uses less ends (down
                                              to 16 MiB) or invoker_destroy */
    size_t               max_result_bytes; /* 0: 64 MiB.  The parent keeps the
                                              buffer of each worker's last result
                                              over 64 KiB, up to 4 MiB, to read its
                                              next one into */

    /* Additions to the contract. */
    size_t               max_queued;    /* tasks submitted and not yet started; past
                                           it invoker_submit gives -EAGAIN; 0: no bound */
    int                  inline_mode;   /* non-zero: no workers; invoker_poll runs one
                                           task at a time in the calling process, with
                                           the same callbacks (for gdb and valgrind);
                                           timeouts and limits do not apply and a
                                           crash in the objective is the caller's */
    size_t               memory_limit;  /* bytes of address space per worker
                                           (RLIMIT_AS), the task's own argument
                                           included; 0: no limit */
    double               cpu_limit;     /* CPU seconds per task (RLIMIT_CPU, whole
                                           seconds, rounded up, as the kernel
                                           counts CPU time: sampled at clock
                                           ticks); 0: no limit */
    size_t               size;          /* sizeof(invoker_config), set by
                                           invoker_config_init; 0 means the same.
                                           Later versions add fields below it. */
    /* Spare workers: a process per slot forked and set up ahead (all but
     * worker_init, which it runs once it takes the slot), so that a worker
     * that dies, hangs or is recycled is replaced without waiting for a
     * fork.  INVOKER_SPARES_AUTO (0): once workers may need replacing, that
     * is from the first task with a timeout or the first worker that had
     * to be replaced; _ALWAYS: from the start; _NEVER: none (a replacement
     * is forked when needed, still without waiting for its predecessor to
     * be reaped).  A spare costs an idle process whose pages are mostly
     * shared with the parent; it is counted in workers_started only once
     * it takes a slot.  Other values: -EINVAL. */
    int                  spares;
    /* Who forks the workers.  INVOKER_FORK_SERVER_AUTO (0): a fork server,
     * a process forked once by invoker_create, before any worker, which
     * forks every worker (replacements and spares included) as the
     * parent's own child.  A fork costs in proportion to the forking
     * process's memory: forked from the server, a replacement costs what
     * the parent weighed at invoker_create however it has grown since,
     * and every worker starts from the parent's memory as it was then
     * (as the first ones always did).  The server holds the parent's
     * pages as they were at create (shared until the parent writes them).
     * The parent never waits for the server in invoker_poll or
     * invoker_wait: it sends a request and reads the answer when it comes.
     * Where it cannot be had (not Linux with glibc 2.34 or later, no fork
     * to spare at create, or the server killed or silent for 2 s while it
     * owes an answer), the parent forks them itself, from its memory of
     * the moment.
     * _NEVER: the parent always does.  Other values: -EINVAL. */
    int                  fork_server;
    /* Journal, resume and cache: arguments are keyed by their bytes, and
     * identical bytes are evaluated once.
     *
     * journal: path of an append-only file of outcomes; NULL: none.
     * invoker_create opens it (created with mode 0600; a symlink at the
     * last component is refused with -ELOOP; a directory -EISDIR; any
     * other file that is not a regular one -EINVAL, looked at without
     * being opened: a device or a FIFO there is left alone)
     * and reads it: a later submit whose argument bytes and journal_key
     * match a journaled success or INVOKER_FAIL_OBJECTIVE gets that same
     * outcome (identical result bytes, or the same code) with cached = 1,
     * from the next invoker_poll/invoker_wait, without running.  Other
     * failures are never journaled: those tasks run again.  Bytes are
     * compared, not only hashes.  Every such outcome is written (write(2)
     * returned) before its callback runs, so killing the program at any
     * instant loses no outcome a callback reported.  A torn last record
     * (a death mid-write) is cut off at open; a record that fails its
     * checksum ends the replay there, and the file from it on is moved to
     * "<journal>.corrupt.<n>" (the first n free), create succeeding.  A
     * new journal, or a corrupt tail's file, is made durable with its
     * directory's fsync (which failing fails create) before the journal
     * is cut.  A
     * file that is not a journal of this version: -EBADMSG, the file
     * untouched.  A journal another live invoker holds (this process or
     * another): -EBUSY (an OFD lock, gone when its holder is; advisory,
     * so a file cut short by someone else while create reads it is a torn
     * tail, and a read that fails is create's -errno, -EIO say: never a
     * signal).  A failed write (ENOSPC...) stops the journal: callbacks
     * still come, the records written before it are still synced as
     * journal_sync says, and invoker_stats.journal_error says why.  The journal implies the
     * merging of identical tasks in flight (see cache), and also answers
     * identical arguments evaluated during this run.  journal and
     * journal_key are read during invoker_create only. */
    const char          *journal;
    /* INVOKER_SYNC_BATCH (0): fdatasync at least every 100 ms while
     * invoker_poll/invoker_wait run, and before invoker_wait and
     * invoker_destroy return; INVOKER_SYNC_EACH: before each callback of an
     * outcome written; INVOKER_SYNC_NONE: the kernel decides.  The sync
     * says what survives a power cut; a kill of the program loses nothing
     * either way.  Other values: -EINVAL. */
    int                  journal_sync;
    /* Names the objective and its version: records written under another
     * key are kept but never replayed.  NULL: "". */
    const char          *journal_key;
    /* Non-zero: identical argument bytes are evaluated once per invoker.
     * A submit equal to a finished task (success or objective failure) is
     * answered from memory, cached = 1, from the next poll; one equal to
     * a task queued or running waits for it and gets its outcome, one
     * evaluation for both.  If that task is cancelled, times out, crashes,
     * is shut down or fails otherwise, each task waiting for it runs on
     * its own, with its own timeout and retries; cancelling a waiting task
     * cancels only it. */
    int                  cache;
    /* Memory the cache may hold (arguments, results and bookkeeping); the
     * least recently used goes first, and an outcome bigger than all of it
     * is not kept.  0: 256 MiB.  Answers waiting for their callback (from
     * memory or the journal) share one copy of an outcome however many
     * there are; an outcome evicted while some wait goes when they have
     * been delivered. */
    size_t               cache_max_bytes;

    /* Seconds between SIGTERM and SIGKILL when a worker is killed for a
     * timeout, a cancel or invoker_destroy; 0: SIGKILL at once.  Its whole
     * process group gets SIGTERM first, so that a program it runs (see
     * invoker_command) can flush and exit; SIGKILL follows after the grace
     * if the worker still lives, and the group gets SIGKILL once the
     * worker is reaped.  The task is reported at its deadline (or cancel)
     * all the same; its slot takes a new worker only once the old one is
     * gone.  invoker_destroy waits up to kill_grace for the workers it
     * signalled, reading their captured stderr meanwhile (see
     * capture_stderr).  A worker killed for breaking the protocol gets no
     * grace.
     * Finite and >= 0, else -EINVAL. */
    double               kill_grace;
    /* Capture of the workers' stderr (descriptor 2: the objective's, and
     * that of every program it starts).  INVOKER_STDERR_OFF (0): workers
     * write to the parent's stderr directly.  Otherwise each worker's
     * descriptor 2 is a pipe to the parent, which
     *   - forwards the bytes to its own stderr (descriptor 2 as it was at
     *     invoker_create) as they come, each line prefixed "[worker N] " (N
     *     the slot): always with INVOKER_STDERR_PREFIX, only when that
     *     stderr is a terminal with INVOKER_STDERR_TTY, never (the bytes as
     *     written) with INVOKER_STDERR_PLAIN; INVOKER_STDERR_TAIL forwards
     *     nothing.  Workers' lines come whole, unless one is written in
     *     pieces or outruns the parent's reads (a flood): then another
     *     worker's lines may come between its pieces.  Forwarding never
     *     blocks the parent:
     *     what its stderr (a pipe, terminal or socket) would not take at
     *     once is dropped and counted in invoker_stats.stderr_dropped;
     *   - gives each task's callback the last 4 KiB its last attempt wrote
     *     (invoker_task.stderr_tail).  At the end of each task the worker
     *     writes a 24-byte mark to its descriptor 2 (never forwarded), so
     *     a task's bytes are its own exactly, two workers writing at once
     *     or a batch of short tasks alike.  What worker_init writes is no
     *     task's; what a process left behind by a task writes after that
     *     task ended counts toward the worker's next task.  A task that
     *     times out, is cancelled or whose worker dies gets what was read
     *     by then: with kill_grace, what the worker and its program write
     *     during the grace (the task already reported) is forwarded but in
     *     no task's tail, the next task's in that slot included.  A
     *     program run by invoker_command_objective inherits the pipe as its
     *     descriptor 2: its bytes are its task's.  An objective that puts
     *     another file at descriptor 2 writes there, and its bytes go to no
     *     tail.
     * The parent reads a worker's pipe 64 KiB per pass at most (and before
     * its results), so a worker flooding stderr slows only itself (it
     * blocks on its full pipe) and its own task: the others' results and
     * every deadline are served meanwhile.  Inline mode captures nothing.
     * Other values: -EINVAL. */
    int                  capture_stderr;
    /* Adaptive timeouts.  0: off.  Otherwise, once 10 tasks have succeeded,
     * a task submitted with invoker_submit (not invoker_submit_timeout,
     * whose timeout always wins) gets the timeout timeout_factor times the
     * median run time of the last 100 successes, never under timeout_min
     * and never over timeout when that is set (before the 10th success it
     * has timeout).  A task's timeout is fixed when the parent first sees
     * it running (within milliseconds of its start, or at the latest by
     * the deadline the last estimate gave it), counted from its start in
     * the worker; a retry gets a new one.  Finite and >= 0, else -EINVAL. */
    double               timeout_factor;
    double               timeout_min;   /* seconds; 0: 1 s.  Finite and >= 0,
                                           else -EINVAL */
} invoker_config;

enum { INVOKER_SPARES_AUTO = 0, INVOKER_SPARES_NEVER = 1, INVOKER_SPARES_ALWAYS = 2 };
enum { INVOKER_FORK_SERVER_AUTO = 0, INVOKER_FORK_SERVER_NEVER = 1 };
enum { INVOKER_STDERR_OFF = 0, INVOKER_STDERR_PREFIX = 1, INVOKER_STDERR_TTY = 2,
       INVOKER_STDERR_PLAIN = 3, INVOKER_STDERR_TAIL = 4 };
enum { INVOKER_SYNC_BATCH = 0, INVOKER_SYNC_EACH = 1, INVOKER_SYNC_NONE = 2 };

/* ------------------------------------------------------------------------
 * The external-program objective: each task runs a program, safely.
 *
 *   invoker_command cmd;
 *   invoker_command_init(&cmd);
 *   static const char *const argv[] = { "./simulate", "--quiet", NULL };
 *   cmd.argv = argv;
 *   cfg.objective = invoker_command_objective;
 *   cfg.objective_ctx = &cmd;
 *
 * Each attempt of a task (a retry is another attempt) runs in a fresh work
 * directory, WORKDIR_ROOT/invoker-TAG-ID-ATTEMPT (TAG: 8 hex digits drawn
 * per invoker, ID the task id, ATTEMPT the attempt), made with mode 0700
 * and the program's current directory (a relative workdir_root, and the
 * TMPDIR a NULL one uses, are taken as they are at invoker_create; in
 * inline mode, at each call).  Names are unique, not secret: on a /tmp
 * shared with other users, one who saw a name could make a later attempt
 * fail (-EEXIST) by taking its name first; give such a run a workdir_root
 * of its own.  Whatever the program leaves there, read-only directories
 * included, is removed (keep_workdir).  The program is started with
 * execvp (PATH searched when argv[0] has no '/'; a relative path with a
 * '/', "./sim", is taken from the worker's current directory, not the
 * work directory), never through a shell,
 * in the worker's process group (a timeout or a cancel kills it and
 * everything it started), with only descriptors 0, 1 and 2 open: 0 as
 * input says, 1 a pipe to the worker when output_name is NULL (else the
 * worker's stdout), 2 the worker's stderr (with capture_stderr, the
 * capture pipe: what the program writes is its task's stderr_tail).  Its
 * environment is the worker's, then envp, then INVOKER_TASK_ID, INVOKER_ATTEMPT,
 * INVOKER_WORKER (the slot) and INVOKER_WORKDIR (the work directory's
 * absolute path); those four win over envp's.  While it runs, the worker
 * blocks SIGPIPE (a program that does not read its input) and SIGTERM (so
 * that, with kill_grace, it waits for its program to flush, then dies of
 * the pending SIGTERM); the program starts with the worker's mask as it
 * was and SIGPIPE and SIGTERM at their defaults.
 *
 * Outcome: exit status 0 is success, the result being the program's
 * stdout or the output file.  Otherwise the task fails with
 * INVOKER_FAIL_OBJECTIVE and code:
 *   1..125   the program's exit status
 *   126      the program was found but could not be executed
 *   127      the program was not found
 *   128 + N  the program was killed by signal N (SIGSEGV: 139)
 *   < 0      -errno: the attempt could not be set up (work directory,
 *            input file, pipes, fork) or, after exit 0, output_name could
 *            not be read (-ENOENT: the program did not write it; -EINVAL:
 *            not a regular file)
 * and with INVOKER_FAIL_TOO_LARGE when the output passes max_result_bytes
 * (the program is then killed with SIGKILL at once).  invoker_config's
 * timeout, kill_grace and retries apply as to any objective; the program
 * inherits memory_limit, and gets cpu_limit (whole seconds, rounded up) as
 * its own RLIMIT_CPU: a program past it dies of SIGXCPU, code 152.
 * ---------------------------------------------------------------------- */
enum { INVOKER_INPUT_STDIN = 0, INVOKER_INPUT_FILE = 1, INVOKER_INPUT_NONE = 2 };

typedef struct invoker_command {
    const char *const *argv;   /* program and arguments, NULL-terminated; run
                                  with execvp, never through a shell */
    const char *workdir_root;  /* each attempt runs in a fresh directory made
                                  under it (mode 0700); NULL: $TMPDIR or /tmp */
    int         input;         /* INVOKER_INPUT_STDIN (0): argument bytes on
                                  stdin; INVOKER_INPUT_FILE: in input_name in
                                  the work directory (stdin /dev/null);
                                  INVOKER_INPUT_NONE: stdin /dev/null */
    const char *input_name;    /* NULL: "input" */
    const char *output_name;   /* NULL: the result is the program's stdout;
                                  else that file of the work directory, read
                                  after the program exited 0 */
    int         keep_workdir;  /* 0: removed after every attempt (when the
                                  worker died during it, by the parent: renamed
                                  to NAME.trash at once, emptied a slice of
                                  0.2 ms every 2 ms, the rest at destroy); 1:
                                  kept when the attempt failed; 2: always kept */
    const char *const *envp;   /* extra NAME=value entries; NULL: none */
} invoker_command;

/* Zeroes *cmd (stdin input, stdout output, nothing kept, root $TMPDIR or
 * /tmp).  NULL: no-op. */
INVOKER_API void invoker_command_init(invoker_command *cmd);

/* An invoker_objective_fn: set cfg.objective = invoker_command_objective and
 * cfg.objective_ctx = &cmd (the struct and what it points to must outlive
 * the invoker; workers see it as it was when they were forked: change it
 * only before invoker_create).  Runs one attempt as described above.  An
 * objective of your own may call it too, but the parent removes the work
 * directory of a worker killed mid-attempt only when it is the config's
 * objective itself.  A bad command (cmd, argv or argv[0] NULL or empty,
 * input or keep_workdir out of range, input_name or output_name empty,
 * "." or "..", or containing '/') fails the task with code -EINVAL. */
INVOKER_API int invoker_command_objective(const void *arg, size_t arg_len,
                                          invoker_result *out, void *cmd);

/* Zeroes *cfg, then sets the defaults (max_arg_bytes, max_result_bytes and
 * size).  cfg NULL is a no-op. */
INVOKER_API void invoker_config_init(invoker_config *cfg);

/* Creates an invoker and forks its workers.  The config is copied.
 * 0 and *out set, or -EINVAL (out or cfg NULL, a required callback NULL,
 * a timeout, cpu_limit, timeout_factor or timeout_min negative or not
 * finite, an unknown spares, fork_server, capture_stderr or journal_sync,
 * size unknown, journal not a regular file), the journal's errors (-EBUSY,
 * -EBADMSG, -ELOOP, -ENOENT, -EACCES, -EROFS...: see journal), -ENOMEM,
 * -EMFILE/-ENFILE, -EAGAIN (a worker could not be forked), or another
 * negative errno from the system.  On failure *out is untouched and no
 * process or descriptor is left behind. */
INVOKER_API int invoker_create(invoker **out, const invoker_config *cfg);

/* Queues one task with the config's timeout.  Copies the arg_len bytes at
 * arg (reuse them at once; arg may be NULL when arg_len is 0); tag is never
 * dereferenced and comes back in the callback.  May be called inside a
 * callback: tasks submitted there leave for the workers together, once
 * the round of callbacks is over (before invoker_poll returns at the
 * latest).  0 and *id set (id
 * may be NULL), or -EINVAL, -EMSGSIZE (arg_len > max_arg_bytes), -EAGAIN
 * (max_queued reached), -ENOMEM.  On failure nothing is queued and no
 * callback will follow.  With a cache or a journal (see
 * invoker_config.journal), a task may be answered without running: its
 * callback still comes from the next invoker_poll/invoker_wait.
 *
 * Tasks that run in microseconds go to a worker several at a time, and
 * their results come back together once the group is done; a result never
 * waits for its group much more than a millisecond (behind a task of the
 * group that runs long, say). */
INVOKER_API int invoker_submit(invoker *inv, const void *arg, size_t arg_len,
                               void *tag, invoker_id *id);

/* As invoker_submit, with this task's own timeout in seconds (0: none),
 * counted from the moment a worker starts it.  -EINVAL if timeout is
 * negative or not finite. */
INVOKER_API int invoker_submit_timeout(invoker *inv, const void *arg, size_t arg_len,
                                       void *tag, double timeout, invoker_id *id);

/* Zero-copy arguments: a buffer the caller writes the argument into, then
 * hands over, instead of invoker_submit copying it.  Worth it for
 * arguments of a few pages or more: the bytes are written once, straight
 * into the shared memory the workers read them from.
 *
 * invoker_arg_alloc sets *buf to a writable buffer of len bytes (16-byte
 * aligned; page aligned over 4048 bytes; its contents are unspecified).
 * The buffer is the caller's until it is submitted or freed; the caller
 * may hold many at once.  0, or -EINVAL (inv or buf NULL, len 0),
 * -EMSGSIZE (len > max_arg_bytes), -ECANCELED (invoker_destroy is under
 * way), -ENOMEM; on failure *buf is untouched.  May be called inside a
 * callback. */
INVOKER_API int invoker_arg_alloc(invoker *inv, size_t len, void **buf);

/* Queues one task whose argument is the first len bytes of buf (len at
 * most the length buf was allocated with; 0 is allowed), with the
 * config's timeout, as invoker_submit does.  On success the buffer
 * belongs to the invoker: the caller must not touch it again (an
 * argument over 4048 bytes is unmapped from the caller and read where it
 * lies; a smaller one is copied into the task and its buffer freed).
 * On failure nothing changes and the buffer is still the caller's, its
 * bytes as they were, to submit again or free.  0 and *id set (id may be
 * NULL), or -EINVAL (inv NULL, buf not a buffer of this invoker's that the
 * caller holds, len too long, a timeout negative or not finite),
 * -ECANCELED, -EAGAIN (max_queued reached), -ENOMEM.  May be called
 * inside a callback, like invoker_submit.  Otherwise the task is one of
 * invoker_submit's: timeout_factor's adaptive timeout applies to it, and
 * the cache and the journal key it by its len bytes, so that it may be
 * answered without running or wait for an identical task in flight (its
 * buffer is the invoker's all the same). */
INVOKER_API int invoker_submit_arg(invoker *inv, void *buf, size_t len, void *tag,
                                   invoker_id *id);

/* As invoker_submit_arg, with this task's own timeout (see
 * invoker_submit_timeout): never adaptive. */
INVOKER_API int invoker_submit_arg_timeout(invoker *inv, void *buf, size_t len, void *tag,
                                           double timeout, invoker_id *id);

/* Gives back a buffer from invoker_arg_alloc that was never submitted.
 * buf NULL is a no-op.  0, or -EINVAL (inv NULL, or buf not a buffer of
 * this invoker's that the caller holds: already submitted or freed, say),
 * with nothing changed.  invoker_destroy frees every buffer still held. */
INVOKER_API int invoker_arg_free(invoker *inv, void *buf);

/* Cancels a task: one not yet started never runs; a running one has its
 * worker killed (with its process group) and replaced.  Its on_error
 * (INVOKER_FAIL_CANCELLED) comes from the next invoker_poll/invoker_wait,
 * not from inside this call.  May be called inside a callback.
 * 0, or -EINVAL (inv NULL), -ENOENT (unknown id, or the task was already
 * reported or cancelled, or answered at its submit from the cache or the
 * journal).  A task waiting for an identical one (see
 * invoker_config.cache) is cancelled alone. */
INVOKER_API int invoker_cancel(invoker *inv, invoker_id id);

/* Cancels, as invoker_cancel does, every task submitted with this tag and
 * not yet reported (nor already cancelled): queued ones never run, running
 * ones have their workers killed and replaced; each gets its on_error
 * (INVOKER_FAIL_CANCELLED) from the next invoker_poll/invoker_wait.  May be
 * called inside a callback.  Tasks of other tags are untouched: a task of
 * the tag waiting for an identical one (see invoker_config.cache) is
 * cancelled alone, its twin running on for its other waiters, and a task
 * already answered from the cache or the journal is decided and not
 * counted (invoker_cancel gives -ENOENT for it).  Looks at every
 * unreported task once (no index by tag, so that submit costs nothing
 * more).  Returns how many it cancelled (>= 0; 0 for a tag no
 * unreported task has), or -EINVAL (inv NULL). */
INVOKER_API int invoker_cancel_tag(invoker *inv, void *tag);

/* Runs what is due: reads results, enforces deadlines, replaces dead
 * workers and calls the callbacks.  Waits up to timeout_ms for at least one
 * callback (-1: without limit; 0: not at all).  Returns the number of
 * callbacks dispatched (>= 0); 0 at once when no task is outstanding (after
 * reaping and replacing workers that died meanwhile, without waiting); or
 * -EINVAL, -EBUSY (called inside a callback).  Workers are only reaped
 * inside this library's calls: an idle invoker keeps a dead worker a
 * zombie until the next invoker_poll, invoker_wait or invoker_destroy. */
INVOKER_API int invoker_poll(invoker *inv, int timeout_ms);

/* Polls until every submitted task, including those submitted by callbacks
 * meanwhile, has been reported.  0, or -EINVAL, -EBUSY (inside a callback).
 *
 * Unlike invoker_poll, it may let results wait a few milliseconds before
 * their callbacks (one wait lasts 4 ms at most): only while the queue holds
 * enough tasks to keep every worker busy meanwhile, when tasks are short
 * enough for one wake of the parent to take two results or more, and when
 * results are small enough to wait in their pipes (a few KiB).  Each wake
 * costs the workers' CPUs a switch to the parent and back; with 1 ms tasks
 * on two CPUs, waking once per result cost 1.5% of the machine.  Deadlines,
 * deaths, cancels and a worker finding the queue empty end a wait at once.
 * To take each result as soon as it comes, loop on invoker_poll(inv, -1). */
INVOKER_API int invoker_wait(invoker *inv);

/* A descriptor that is readable whenever invoker_poll has work, deadlines
 * included: put it in your own poll/epoll/select loop and call
 * invoker_poll(inv, 0) when it is readable.  Owned by the invoker: do not
 * read from or close it.  -EINVAL if inv is NULL. */
INVOKER_API int invoker_fd(const invoker *inv);

typedef struct invoker_stats {
    /* succeeded: on_result calls; failed: on_error calls, of which timed_out
     * (TIMEOUT), crashed (CRASH or EXIT) and cancelled (CANCELLED); retried:
     * re-runs after a crash, exit or timeout. */
    uint64_t submitted, succeeded, failed, timed_out, crashed, cancelled, retried;
    uint64_t workers_started;        /* every worker that took a slot, restarts
                                        included (a spare counts once it does) */
    unsigned workers, busy, queued;  /* right now: workers able to take a task
                                        (not killed, not exiting; one the fork
                                        server is making counts), workers
                                        running a task, tasks waiting to start */
    unsigned spares;                 /* right now: spares ready (see
                                        invoker_config.spares) */
    unsigned fork_server;            /* right now: 1 while a fork server forks
                                        the workers (see invoker_config.fork_server) */
    uint64_t cached;                 /* callbacks whose outcome came from the
                                        cache, the journal or a twin (cached = 1) */
    uint64_t journaled;              /* records this invoker wrote to its journal */
    int      journal_error;          /* 0, or the negative errno (-ENOSPC, -EIO...)
                                        that stopped the journal: nothing is
                                        written after it, callbacks still come */
    uint64_t stderr_dropped;         /* bytes of the workers' stderr not forwarded
                                        because the parent's would have blocked */
} invoker_stats;

/* Fills *out (zeroes it when inv is NULL).  May be called inside a callback. */
INVOKER_API void invoker_get_stats(const invoker *inv, invoker_stats *out);

/* Reports every unfinished task as INVOKER_FAIL_SHUTDOWN, kills (with
 * their process groups) and reaps every worker, frees every buffer from
 * invoker_arg_alloc still held, closes every descriptor and frees inv.  NULL is a no-op returning 0.  -EBUSY, and nothing done,
 * inside a callback. */
INVOKER_API int invoker_destroy(invoker *inv);

/* A constant string for a negative errno returned by this library
 * ("unknown error" for any other value). */
INVOKER_API const char *invoker_strerror(int err);

/* A constant name such as "timeout" ("unknown" for other values). */
INVOKER_API const char *invoker_failure_name(invoker_failure failure);

#ifdef __cplusplus
}
#endif
#endif /* INVOKER_H */

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
    INVOKER_FAIL_CPU            /* the task passed cpu_limit (SIGXCPU) */
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
                                           or timed out, before on_error */
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
     * Where it cannot be had (not Linux with glibc 2.34 or later, no fork
     * to spare at create, or the server killed or stalled), the parent
     * forks them itself, from its memory of the moment.
     * _NEVER: the parent always does.  Other values: -EINVAL. */
    int                  fork_server;
} invoker_config;

enum { INVOKER_SPARES_AUTO = 0, INVOKER_SPARES_NEVER = 1, INVOKER_SPARES_ALWAYS = 2 };
enum { INVOKER_FORK_SERVER_AUTO = 0, INVOKER_FORK_SERVER_NEVER = 1 };

/* Zeroes *cfg, then sets the defaults (max_arg_bytes, max_result_bytes and
 * size).  cfg NULL is a no-op. */
INVOKER_API void invoker_config_init(invoker_config *cfg);

/* Creates an invoker and forks its workers.  The config is copied.
 * 0 and *out set, or -EINVAL (out or cfg NULL, a required callback NULL,
 * a timeout or cpu_limit negative or not finite, size unknown), -ENOMEM,
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
 * callback will follow.
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
 * inside a callback, like invoker_submit. */
INVOKER_API int invoker_submit_arg(invoker *inv, void *buf, size_t len, void *tag,
                                   invoker_id *id);

/* As invoker_submit_arg, with this task's own timeout (see
 * invoker_submit_timeout). */
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
 * reported or cancelled). */
INVOKER_API int invoker_cancel(invoker *inv, invoker_id id);

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
                                        (not killed, not exiting), workers
                                        running a task, tasks waiting to start */
    unsigned spares;                 /* right now: spares ready (see
                                        invoker_config.spares) */
    unsigned fork_server;            /* right now: 1 while a fork server forks
                                        the workers (see invoker_config.fork_server) */
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

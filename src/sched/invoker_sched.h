/*
 * What the scheduler offers a backend that lives outside libinvoker
 * (libinvoker_mpi).  These functions are exported from the shared library
 * with default visibility so that libinvoker_mpi can call them, but this
 * header is not installed: they are no part of the public API and change
 * with the library.  Callable only from the thread that owns the invoker,
 * outside callbacks unless said otherwise.
 */
#ifndef INVOKER_SCHED_H
#define INVOKER_SCHED_H

#include "internal.h"

#if defined(__GNUC__) || defined(__clang__)
#define INVOKER__SCHED_API __attribute__((visibility("default")))
#else
#define INVOKER__SCHED_API
#endif

/* An invoker with no local workers whose tasks ops run; state is theirs
 * (inv->backend).  cfg is checked and copied as by invoker_create, but
 * cfg.workers is ignored.  0 and *out, or a negative errno. */
INVOKER__SCHED_API int invoker__sched_create(invoker **out, const invoker_config *cfg,
                                             const invoker__backend_ops *ops, void *state);
/* The unreported task with this id, or NULL. */
INVOKER__SCHED_API invoker__task *invoker__sched_find(invoker *inv, invoker_id id);
/* The argument bytes of t (NULL when it has none). */
INVOKER__SCHED_API const void *invoker__sched_arg(const invoker *inv, const invoker__task *t);
/* Pending task t leaves for a backend: it is in flight from now on. */
INVOKER__SCHED_API void invoker__sched_start(invoker *inv, invoker__task *t);
/* Outcomes of an in-flight task, its callback made now (t is gone after):
 * a success with len bytes at data; a failure as given; or, for TIMEOUT,
 * CRASH, EXIT and LOST, a retry (back to the front of pending) while
 * cfg.retries allows.  Set t->worker, t->attempts and t->run_seconds first. */
INVOKER__SCHED_API void invoker__sched_result(invoker *inv, invoker__task *t, const void *data,
                                              size_t len);
INVOKER__SCHED_API void invoker__sched_error(invoker *inv, invoker__task *t,
                                             invoker_failure fail, int code);
INVOKER__SCHED_API void invoker__sched_fail_or_retry(invoker *inv, invoker__task *t,
                                                     invoker_failure fail, int code);
/* Decides t's fate now, its callback at the next poll (inside callbacks too). */
INVOKER__SCHED_API void invoker__sched_report(invoker *inv, invoker__task *t,
                                              invoker_failure fail, int code);
/* Makes the callbacks of the tasks reported so far. */
INVOKER__SCHED_API void invoker__sched_deliver(invoker *inv);
/* Wakes invoker_fd. */
INVOKER__SCHED_API void invoker__sched_kick(invoker *inv);

#endif

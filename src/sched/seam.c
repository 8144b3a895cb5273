/*
 * The scheduler's side of the seam, for backends outside libinvoker
 * (sched/invoker_sched.h), exported: mostly thin wrappers over the
 * functions the local backend calls directly.
 */
#include "internal.h"
#include "sched/invoker_sched.h"

invoker__task *invoker__sched_find(invoker *inv, invoker_id id)
{
    return invoker__tasks_find(&inv->tasks, id);
}

const void *invoker__sched_arg(const invoker *inv, const invoker__task *t)
{
    return invoker__task_arg(inv, t);
}

void invoker__sched_start(invoker *inv, invoker__task *t)
{
    invoker__list_unlink(&inv->pending, t);
    t->state = INVOKER__TASK_INFLIGHT;
    t->start_ns = 0;
    invoker__list_push_back(&inv->inflight, t);
    if (invoker__task_timed(t))
        inv->inflight_timeouts++;   /* report.c's leave_flight counts it out */
}

void invoker__sched_result(invoker *inv, invoker__task *t, const void *data, size_t len)
{
    invoker__report_result(inv, t, data, len);
}

void invoker__sched_error(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    invoker__report_error(inv, t, fail, code);
}

void invoker__sched_fail_or_retry(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    invoker__report_fail_or_retry(inv, t, fail, code);
}

void invoker__sched_report(invoker *inv, invoker__task *t, invoker_failure fail, int code)
{
    invoker__report_later(inv, t, fail, code);
}

void invoker__sched_deliver(invoker *inv)
{
    invoker__report_deliver(inv);
}

void invoker__sched_kick(invoker *inv)
{
    invoker__wake_kick(inv);
}

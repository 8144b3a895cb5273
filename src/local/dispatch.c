/*
 * The parent's side of the loop: wait on the epoll set, hand each event to
 * its file (frames, deaths, the timer), then service time (deadlines,
 * respawns, audits), stock the queue and make the callbacks.  Also the
 * backend's cancel and shutdown, and inline mode, which runs tasks in this
 * process with the same callbacks.
 *
 * The task record is the single authority on a task's fate: whatever a
 * worker sends or leaves behind is checked against it, a task is reported
 * by unlinking it from every index first, and anything that names a task
 * no longer in flight (a late result, a dead worker's stale ticket) is
 * dropped.  That is how every task gets exactly one callback.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STALL_AUDIT_NS  (1000000000ull)          /* idle time before an orphan sweep */
#define EOF_GRACE_NS    (100000000ull)   /* a worker whose pipe closed gets this long to exit */
#define GATHER_RESULTS  8u                /* results one gather aims to take */
#define GATHER_MIN_NS   (200000ull)
#define GATHER_PIPE_BYTES (32u << 10)     /* half a result pipe at its smallest */
/* A worker's stderr read per event: a flood gets its share of each pass,
 * like results (invoker__frames_read's budget), and deadlines come between. */
#define ERR_PASS_BYTES  (64u << 10)

static void service_time(invoker *inv)
{
    uint64_t now = invoker__now_ns();
    uint64_t next = UINT64_MAX;

    if (inv->spawn_tripped && now >= inv->untrip_at && !inv->destroying) {
        inv->spawn_tripped = false;
        inv->fail_count = 0;
    }
    /* Deaths seen by looking first, so that a slot they empty is refilled
     * (or timed) below in this same pass: nothing else would wake us. */
    for (unsigned k = 0; k < inv->nrecords; k++) {
        invoker__worker *w = &inv->workers[k];
        if (w->state == INVOKER__WORKER_EMPTY || !w->eof_at)
            continue;
        if (w->pidfd < 0) {
            /* WNOWAIT: only look; invoker__staff_worker_gone reaps it. */
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == w->pid) {
                invoker__staff_worker_gone(inv, k);
                continue;
            }
            next = now + 1000000ull < next ? now + 1000000ull : next;
        }
        if (w->state != INVOKER__WORKER_LIVE)
            continue;
        if (now - w->eof_at >= EOF_GRACE_NS)
            invoker__worker_kill(inv, k, INVOKER_FAIL_PROTOCOL);
        else if (w->eof_at + EOF_GRACE_NS < next)
            next = w->eof_at + EOF_GRACE_NS;
    }

    if (inv->inflight_timeouts > 0) {
        uint64_t due = invoker__deadlines_check_running(inv, now);
        next = due < next ? due : next;
    }
    if (inv->cfg.kill_grace > 0) {
        uint64_t due = invoker__workers_grace(inv, now);
        next = due < next ? due : next;
    }
    uint64_t look = invoker__frames_look_at_held(inv, now);
    next = look < next ? look : next;
    uint64_t sync = invoker__journal_tick(&inv->journal, now);
    next = sync < next ? sync : next;
    /* A silent fork server given up on: its requests fall back to our
     * own forks, before the slots are looked at. */
    if (inv->fs.pending)
        (void)invoker__forkserver_check(inv, now);
    /* After the kills above: their slots are refilled in this same pass. */
    uint64_t staff = invoker__staff_slots(inv, now);
    next = staff < next ? staff : next;
    if (inv->ntrash) {
        uint64_t tidy = invoker__command_tidy(inv, now);
        next = tidy < next ? tidy : next;
    }
    if (inv->fs.pending && inv->fs.due_ns < next)   /* asked just now, or before */
        next = inv->fs.due_ns;
    if (inv->spawn_tripped && inv->outstanding > 0 && inv->untrip_at < next)
        next = inv->untrip_at;
    invoker__staff_fail_unrunnable(inv);
    /* The audit clock moves in whole periods, so the timer is not re-armed
     * on every event. */
    if (inv->inflight.count == 0) {
        inv->audit_at = 0;
    } else if (!inv->audit_at) {
        inv->audit_at = now + STALL_AUDIT_NS;
    } else if (now >= inv->audit_at) {
        if (now - inv->last_event_ns >= STALL_AUDIT_NS && !inv->sweep_at)
            inv->sweep_at = now;
        inv->audit_at = now + STALL_AUDIT_NS;
    }
    if (inv->sweep_at && inv->sweep_at <= now)
        invoker__deadlines_sweep(inv, now);
    if (inv->sweep_at && inv->sweep_at < next)
        next = inv->sweep_at;
    if (inv->audit_at && inv->audit_at < next)
        next = inv->audit_at;

    invoker__workers_kill_due(inv);
    if (next == UINT64_MAX)
        invoker__wake_disarm_timer(inv);
    else if (next != inv->timer_armed_ns) {
        inv->timer_armed_ns = 0;   /* re-arm even when later than before */
        invoker__wake_arm_timer(inv, next);
    }
}

/* Workers running a task still in flight: one whose result is already
 * reported, while the worker finishes writing it, does not count. */
unsigned invoker__dispatch_busy(const invoker *inv)
{
    unsigned busy = 0;
    for (unsigned k = 0; k < inv->nrecords; k++) {
        if (inv->workers[k].state != INVOKER__WORKER_LIVE)
            continue;
        uint64_t tag = atomic_load(&invoker__table_slot(&inv->table, k)->running);
        uint64_t id = tag ? invoker__proto_running_id(tag, inv->key) : 0;
        const invoker__task *t = id ? invoker__tasks_find(&inv->tasks, id) : NULL;
        busy += t && t->state == INVOKER__TASK_INFLIGHT;
    }
    return busy;
}

/* How long invoker_wait may let results gather before it takes them, or 0.
 * Woken once per result, the parent takes a worker's CPU twice per task
 * (the switch between processes is the cost, far more than the syscalls):
 * with tasks of a millisecond on two CPUs, 1.5% of the machine.  Nothing
 * needs a result at once while every worker has queued tickets for a good
 * while yet; only the callback waits, and deadlines, deaths and kicks still
 * wake the parent at once (they are in the urgent set), as does a worker
 * that finds the queue empty (the tasks were shorter than their average
 * said: see note_if_idle). */
static uint64_t gather_ns(const invoker *inv)
{
    if (inv->urgent_fd < 0 || inv->live == 0 || inv->avg_run_ns == 0)
        return 0;
    uint64_t gap = inv->avg_run_ns / inv->live;   /* between results, all busy */
    size_t queued = inv->inflight.count > inv->live ? inv->inflight.count - inv->live : 0;
    uint64_t ns = GATHER_RESULTS * gap;
    uint64_t fed = queued * gap / 2;              /* half the time the queue lasts */
    ns = ns < fed ? ns : fed;
    ns = ns < inv->gather_max_ns ? ns : inv->gather_max_ns;
    /* Each worker's results must fit its pipe meanwhile, or it blocks. */
    uint64_t bytes = (ns / inv->avg_run_ns + 1) * (INVOKER__FRAME_HDR + inv->avg_result_bytes);
    /* Worth a timed sleep only if it saves a wake or more. */
    if (ns < GATHER_MIN_NS || ns < 2 * gap || bytes > GATHER_PIPE_BYTES)
        return 0;
    return ns;
}

/* Sleeps on the urgent set while results gather, if gather_ns says so. */
static void gather_results(invoker *inv)
{
    uint64_t ns = gather_ns(inv);
    if (!ns)
        return;
    /* Raised before we look at the queue, so that a worker that finds it
     * empty later sees it and wakes us (note_if_idle). */
    atomic_store(inv->table.gathering, 1);
    int unread = 0;
    if (ioctl(inv->queue_rd, FIONREAD, &unread) == 0 && unread > 0)
        invoker__fd_epoll_sleep(inv->urgent_fd, ns);
    atomic_store(inv->table.gathering, 0);
}

static void handle_event(invoker *inv, const struct epoll_event *ev)
{
    unsigned type = (unsigned)(ev->data.u64 >> 32);
    unsigned k = (unsigned)(ev->data.u64 & 0xffffffffu);
    uint64_t scratch;
    switch (type) {
    case INVOKER__EV_RESULT:
        if (k < inv->nrecords && inv->workers[k].state != INVOKER__WORKER_EMPTY &&
            inv->workers[k].result_rd >= 0 && !invoker__frames_read(inv, k))
            invoker__staff_result_eof(inv, k);
        break;
    case INVOKER__EV_PIDFD:
        if (k < inv->nrecords && inv->workers[k].state != INVOKER__WORKER_EMPTY)
            invoker__staff_worker_gone(inv, k);
        break;
    case INVOKER__EV_TIMER:
        (void)invoker__fd_read(inv->timerfd, &scratch, sizeof scratch);
        inv->timer_armed_ns = 0;
        break;
    case INVOKER__EV_KICK:
        (void)invoker__fd_read(inv->kickfd, &scratch, sizeof scratch);
        inv->kicked = false;
        break;
    case INVOKER__EV_IDLE: {   /* it only ended a gather */
        char notes[256];
        while (invoker__fd_read(inv->idle_rd, notes, sizeof notes) == (ssize_t)sizeof notes)
            ;
        break;
    }
    case INVOKER__EV_SERVER:
        invoker__forkserver_stop(inv);   /* killed by someone: reaped; we fork from now on */
        break;
    case INVOKER__EV_FORKED:
        invoker__forkserver_answers(inv);
        break;
    case INVOKER__EV_STDERR:
        if (k < inv->nrecords && inv->workers[k].err)
            (void)invoker__err_read(inv, k, ERR_PASS_BYTES);
        break;
    default:
        break;
    }
}

int invoker__dispatch_run(invoker *inv, int timeout_ms, bool gather)
{
    uint64_t calls0 = inv->calls;
    uint64_t until = timeout_ms > 0 ? invoker__now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    struct epoll_event evs[64];

    for (;;) {
        invoker__report_deliver(inv);
        if (inv->outstanding == 0) {
            /* Nothing to wait for, but reap and replace workers that died
             * while idle, so the pool is whole before the next submit. */
            int n = epoll_wait(inv->epfd, evs, 64, 0);
            for (int i = 0; i < n; i++)
                handle_event(inv, &evs[i]);
            service_time(inv);
            invoker__report_deliver(inv);
            break;
        }
        int wait_ms = 0;
        if (inv->calls == calls0 && timeout_ms != 0) {
            if (timeout_ms < 0) {
                wait_ms = -1;
            } else {
                uint64_t now = invoker__now_ns();
                wait_ms = now >= until ? 0 : (int)((until - now + 999999) / 1000000);
            }
        }
        if (gather && wait_ms < 0)
            gather_results(inv);
        int n = epoll_wait(inv->epfd, evs, 64, wait_ms);
        if (n < 0 && errno != EINTR)
            return -errno;
        for (int i = 0; i < n; i++) {
            /* Only workers' own events count as progress for the audit. */
            unsigned type = (unsigned)(evs[i].data.u64 >> 32);
            if (type == INVOKER__EV_RESULT || type == INVOKER__EV_PIDFD)
                inv->last_event_ns = invoker__now_ns();
            handle_event(inv, &evs[i]);
        }
        service_time(inv);
        inv->queue_full = false;
        int rc = invoker__queue_refill(inv);
        if (rc)
            return rc;
        invoker__report_deliver(inv);
        if (inv->calls != calls0 || timeout_ms == 0 || inv->outstanding == 0)
            break;
        if (timeout_ms > 0 && invoker__now_ns() >= until)
            break;
    }
    /* What the last callbacks submitted goes out before we return: the
     * caller may block on invoker_fd next. */
    if (inv->pending.head) {
        inv->queue_full = false;
        (void)invoker__queue_refill(inv);   /* on error it waits for the next poll */
    }
    return (int)(inv->calls - calls0);
}

/* With a grace, the workers signalled (SIGTERM) by invoker_destroy get
 * up to kill_grace to exit before invoker__staff_worker_gone kills what is left.  Their
 * stderr is read meanwhile: a program flushing more than a pipe holds
 * would otherwise block on it until the SIGKILL. */
static void wait_for_grace(invoker *inv)
{
    for (;;) {
        uint64_t now = invoker__now_ns(), until = 0;
        for (unsigned k = 0; k < inv->nrecords; k++) {
            invoker__worker *w = &inv->workers[k];
            if (w->state == INVOKER__WORKER_EMPTY || !w->term_at || w->term_at <= now)
                continue;
            if (w->err)
                (void)invoker__err_read(inv, k, ERR_PASS_BYTES);
            siginfo_t si;
            memset(&si, 0, sizeof si);
            /* WNOWAIT: only look; invoker__staff_worker_gone reaps it. */
            if (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == w->pid)
                continue;
            until = w->term_at > until ? w->term_at : until;
        }
        if (!until)
            return;
        struct timespec ms = { 0, 1000000L };
        (void)nanosleep(&ms, NULL);
    }
}

/* invoker_destroy's half: every worker killed and reaped, results already
 * written delivered, everything else reported as SHUTDOWN. */
void invoker__dispatch_shutdown(invoker *inv)
{
    inv->destroying = true;
    /* Workers still asked of the fork server: the server and whatever it
     * made for them go (killed and reaped with its group), and their
     * records with their descriptors; nothing to wait for. */
    if (inv->fs.pending)
        invoker__forkserver_stop(inv);
    for (unsigned k = 0; k < inv->nrecords; k++)
        invoker__worker_kill(inv, k, INVOKER_FAIL_SHUTDOWN);
    if (inv->cfg.kill_grace > 0)
        wait_for_grace(inv);
    for (unsigned k = 0; k < inv->nrecords; k++)
        if (inv->workers[k].state != INVOKER__WORKER_EMPTY)
            invoker__staff_worker_gone(inv, k);
    invoker__command_tidy_all(inv);   /* nothing of theirs left behind */
    /* A callback may cancel others (invoker_cancel_tag): those go to the
     * done list, delivered before the rest. */
    for (;;) {
        invoker__report_deliver(inv);
        invoker__task *t = inv->inflight.head ? inv->inflight.head : inv->pending.head;
        if (!t)
            break;
        invoker__report_error(inv, t, INVOKER_FAIL_SHUTDOWN, 0);
    }
}

/* invoker_cancel's half.  The worker side pairs with this (see the worker
 * loop): we publish the id, then look for it running; it publishes that it
 * runs, then looks for the id.  One of the two sees the other. */
void invoker__dispatch_cancel(invoker *inv, invoker__task *t)
{
    if (t->state == INVOKER__TASK_INFLIGHT && !inv->cfg.inline_mode) {
        atomic_store(&inv->table.cancelled[t->id % INVOKER__CANCEL_RING], t->id);
        for (unsigned k = 0; k < inv->nrecords; k++) {
            if (inv->workers[k].state != INVOKER__WORKER_LIVE)
                continue;
            invoker__slot *slot = invoker__table_slot(&inv->table, k);
            if (invoker__proto_running_id(atomic_load(&slot->running), inv->key) != t->id)
                continue;
            uint64_t start = atomic_load(&slot->start_ns);
            uint64_t now = invoker__now_ns();
            if (start && start <= now) {
                invoker__frames_note_start(inv, t, k, start);
                t->run_seconds = (double)(now - start) / 1e9;
                invoker__frames_usage_alive(inv, t, k);
            }
            if (inv->workers[k].err)   /* what it wrote until now (makes no callback) */
                invoker__err_claim(inv, k, t);
            invoker__worker_kill(inv, k, INVOKER_FAIL_CANCELLED);
        }
    }
    invoker__report_later(inv, t, INVOKER_FAIL_CANCELLED, 0);
}

static double tv_seconds(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* Inline mode: one task in this process per call, same callbacks. */
int invoker__dispatch_inline(invoker *inv)
{
    uint64_t calls0 = inv->calls;
    invoker__report_deliver(inv);
    invoker__task *t = inv->pending.head;
    if (inv->calls == calls0 && t) {
        struct invoker_result *out = &inv->inline_out;
        out->len = 0;
        out->too_large = false;
        out->max = inv->cfg.max_result_bytes;
        t->attempts++;
        t->worker = 0;
        out->task_id = t->id;
        out->attempt = t->attempts;
        out->worker = 0;
        out->dir_tag = invoker__command_dir_tag(inv->key);
        out->child_rss_kib = -1;
        out->cpu_limit = 0;   /* limits do not apply inline */
        /* This thread's CPU and its reaped children's; the caller's peak
         * RSS is the caller's, not reset for it: only a child's is known. */
        struct rusage self0, kids0, self1, kids1;
        bool timed = getrusage(RUSAGE_THREAD, &self0) == 0 &&
                     getrusage(RUSAGE_CHILDREN, &kids0) == 0;
        uint64_t start = invoker__now_ns();
        int rc = invoker__result_reserve(out, 0);
        if (rc == 0) {
            inv->depth++;   /* the objective is no place for invoker_poll either */
            rc = inv->cfg.objective(invoker__task_arg(inv, t), t->arg_len, out,
                                    inv->cfg.objective_ctx);
            inv->depth--;
        }
        t->run_seconds = (double)(invoker__now_ns() - start) / 1e9;
        if (timed && getrusage(RUSAGE_THREAD, &self1) == 0 &&
            getrusage(RUSAGE_CHILDREN, &kids1) == 0)
            t->cpu_seconds = tv_seconds(&self1.ru_utime) - tv_seconds(&self0.ru_utime) +
                             tv_seconds(&self1.ru_stime) - tv_seconds(&self0.ru_stime) +
                             tv_seconds(&kids1.ru_utime) - tv_seconds(&kids0.ru_utime) +
                             tv_seconds(&kids1.ru_stime) - tv_seconds(&kids0.ru_stime);
        t->max_rss_kib = out->child_rss_kib;
        if (out->too_large)
            invoker__report_error(inv, t, INVOKER_FAIL_TOO_LARGE, 0);
        else if (rc != 0)
            invoker__report_error(inv, t, INVOKER_FAIL_OBJECTIVE, rc);
        else
            invoker__report_result(inv, t, out->buf + INVOKER__FRAME_HDR, out->len);
    }
    (void)invoker__journal_tick(&inv->journal, invoker__now_ns());
    uint64_t scratch;
    if (!inv->pending.head && !inv->done.head && inv->kicked) {
        (void)invoker__fd_read(inv->kickfd, &scratch, sizeof scratch);
        inv->kicked = false;
    }
    return (int)(inv->calls - calls0);
}

/*
 * The public API: argument checks, creation and destruction, and the entry
 * points that hand over to the backend (inv->ops; the local fork backend's
 * are below, its files in local/).  Every entry point validates before
 * it changes anything, so a failed call leaves the invoker as it was.
 */
#include "internal.h"
#include "invoker_sched.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <unistd.h>

static bool valid(const invoker *inv)
{
    return invoker__valid(inv);
}

static bool valid_seconds(double s)
{
    return isfinite(s) && s >= 0;
}

void invoker_config_init(invoker_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->max_arg_bytes = INVOKER__DEFAULT_MAX;
    cfg->max_result_bytes = INVOKER__DEFAULT_MAX;
    cfg->size = sizeof *cfg;
}

static unsigned cpus_available(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* Copies the caller's config, reading only the size it says it has, and
 * fills in the defaults. */
static int take_config(const invoker_config *in, invoker_config *out)
{
    size_t size = in->size ? in->size : sizeof *in;
    if (size < offsetof(invoker_config, max_queued) || size > sizeof *in)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    memcpy(out, in, size);
    out->size = sizeof *out;
    if (!out->objective || !out->on_result || !out->on_error)
        return -EINVAL;
    if (!valid_seconds(out->timeout) || !valid_seconds(out->cpu_limit) ||
        !valid_seconds(out->kill_grace) || !valid_seconds(out->timeout_factor) ||
        !valid_seconds(out->timeout_min))
        return -EINVAL;
    if (out->capture_stderr < INVOKER_STDERR_OFF || out->capture_stderr > INVOKER_STDERR_TAIL)
        return -EINVAL;
    if (out->spares < INVOKER_SPARES_AUTO || out->spares > INVOKER_SPARES_ALWAYS)
        return -EINVAL;
    if (out->fork_server != INVOKER_FORK_SERVER_AUTO && out->fork_server != INVOKER_FORK_SERVER_NEVER)
        return -EINVAL;
    if (out->journal_sync < INVOKER_SYNC_BATCH || out->journal_sync > INVOKER_SYNC_NONE)
        return -EINVAL;
    if (out->workers == 0)
        out->workers = cpus_available();
    if (out->workers > 4096)
        return -EINVAL;
    if (out->max_arg_bytes == 0)
        out->max_arg_bytes = INVOKER__DEFAULT_MAX;
    if (out->max_result_bytes == 0)
        out->max_result_bytes = INVOKER__DEFAULT_MAX;
    return 0;
}

static uint64_t draw_key(const invoker *inv)
{
    uint64_t key = 0;
    if (getrandom(&key, sizeof key, GRND_NONBLOCK) != (ssize_t)sizeof key)
        key = invoker__now_ns() ^ (uint64_t)(uintptr_t)inv ^ ((uint64_t)getpid() << 32);
    return invoker__proto_mix(key) | 1;
}

int invoker__watch(invoker *inv, int fd, unsigned type, unsigned k)
{
    struct epoll_event ev = { .events = EPOLLIN };
    ev.data.u64 = (uint64_t)type << 32 | k;
    if (epoll_ctl(inv->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    bool urgent = type == INVOKER__EV_TIMER || type == INVOKER__EV_KICK ||
                  type == INVOKER__EV_PIDFD || type == INVOKER__EV_IDLE ||
                  type == INVOKER__EV_FORKED;
    /* A set that misses one could hold a deadline or a death back for a
     * whole gather: without it, results are never gathered.  A worker's
     * stderr (INVOKER__EV_STDERR) is not urgent: bytes wait in its pipe,
     * and a worker that fills it blocks for one gather at most. */
    if (urgent && inv->urgent_fd >= 0 && epoll_ctl(inv->urgent_fd, EPOLL_CTL_ADD, fd, &ev) != 0)
        invoker__fd_close(&inv->urgent_fd);
    return 0;
}

void invoker__unwatch(invoker *inv, int fd)
{
    (void)epoll_ctl(inv->epfd, EPOLL_CTL_DEL, fd, NULL);
    if (inv->urgent_fd >= 0)
        (void)epoll_ctl(inv->urgent_fd, EPOLL_CTL_DEL, fd, NULL);   /* ENOENT when not urgent */
}

/* Everything but the workers, which go first (see invoker_destroy). */
static void release(invoker *inv)
{
    invoker__forkserver_stop(inv);
    invoker__fd_close(&inv->queue_wr);
    invoker__fd_close(&inv->queue_rd);
    invoker__fd_close(&inv->timerfd);
    invoker__fd_close(&inv->kickfd);
    invoker__fd_close(&inv->idle_rd);
    invoker__fd_close(&inv->idle_wr);
    invoker__fd_close(&inv->urgent_fd);
    invoker__fd_close(&inv->epfd);
    if (inv->workers)
        for (unsigned k = 0; k < inv->nrecords; k++) {
            free(inv->workers[k].rx.buf);
            free(inv->workers[k].rx.kept);
            if (inv->workers[k].err)
                invoker__fd_close(&inv->workers[k].err->fd);
            free(inv->workers[k].err);
        }
    invoker__err_close_sink(inv);
    invoker__command_tidy_all(inv);
    free(inv->command_root);
    free(inv->workers);
    free(inv->seats);
    free(inv->inline_out.buf);
    invoker__table_destroy(&inv->table);
    invoker__tasks_free(&inv->tasks);
    invoker__cache_free(inv);
    invoker__journal_close(&inv->journal);
    invoker__argbuf_destroy(inv);
    invoker__arena_destroy(&inv->arena);
    inv->magic = 0;
    free(inv);
}

static int open_queue(invoker *inv)
{
    int q[2];
    int rc = invoker__fd_pipe(q, true);
    if (rc)
        return rc;
    inv->queue_rd = q[0];
    inv->queue_wr = q[1];
    /* Workers block on the read end; the parent only asks it FIONREAD. */
    if ((rc = invoker__fd_set_blocking(inv->queue_rd, true)) != 0)
        return rc;
    /* In packet mode each ticket takes a page of the pipe whatever its
     * size: room for a few dozen per worker keeps them all fed. */
    size_t want = (size_t)INVOKER__PACKET * 32u * inv->nworkers;
    invoker__fd_grow_pipe(inv->queue_wr, want < (1u << 20) ? want : (1u << 20));
    int size = fcntl(inv->queue_wr, F_GETPIPE_SZ);
    inv->queue_slots = size > 0 ? (size_t)size / INVOKER__PACKET : 16;
    return 0;
}

/* ---- the local fork backend's ops (src/local/) ---------------------------- */

static int local_run(invoker *inv, int timeout_ms, bool gather)
{
    if (inv->cfg.inline_mode)
        return invoker__dispatch_inline(inv);
    return invoker__dispatch_run(inv, timeout_ms, gather);
}

static unsigned local_busy(const invoker *inv)
{
    return inv->cfg.inline_mode ? 0 : invoker__dispatch_busy(inv);
}

static void local_stats(const invoker *inv, invoker_stats *out)
{
    /* Serving workers: one killed, or one whose result pipe has closed,
     * and not yet reaped no longer counts. */
    for (unsigned k = 0; k < inv->nrecords; k++) {
        const invoker__worker *w = &inv->workers[k];
        /* A worker asked of the fork server counts, as one forked here
         * does from its fork on: it takes tasks once its answer comes.  A
         * spare does only once it could take a slot. */
        out->workers += (w->state == INVOKER__WORKER_LIVE && !w->eof_at) ||
                        (w->state == INVOKER__WORKER_SPAWNING && !w->spawn_spare);
        out->spares += w->state == INVOKER__WORKER_SPARE && !w->eof_at;
    }
    out->fork_server = inv->fs.pid > 0;
}

static const invoker__backend_ops local_ops = {
    .refill = invoker__queue_refill,
    .run = local_run,
    .cancel = invoker__dispatch_cancel,
    .busy = local_busy,
    .stats = local_stats,
    .shutdown = invoker__dispatch_shutdown,
    .release = NULL,
};

/* The journal and the cache (which merges twins with a journal too). */
static int open_store(invoker *inv)
{
    int rc = invoker__cache_init(inv);
    return rc ? rc : invoker__journal_open(&inv->journal, &inv->cache, &inv->cfg);
}

/* The scheduler's half of an invoker: config, ids, descriptors; no
 * workers.  The invoker, or NULL and a negative errno in *err with
 * nothing left behind. */
static invoker *create_sched(const invoker_config *cfg, const invoker__backend_ops *ops, int *err)
{
    invoker *inv = calloc(1, sizeof *inv);
    *err = -ENOMEM;
    if (!inv)
        return NULL;
    inv->epfd = inv->urgent_fd = inv->timerfd = inv->kickfd = inv->idle_rd = inv->idle_wr = -1;
    inv->queue_rd = inv->queue_wr = -1;
    inv->fs.sock = inv->fs.pidfd = -1;
    inv->err_sink.fd = -1;
    inv->arena.fd = inv->arena.ro_fd = -1;
    inv->journal.fd = -1;
    int rc = take_config(cfg, &inv->cfg);
    if (rc) {
        free(inv);
        *err = rc;
        return NULL;
    }
    inv->magic = INVOKER__MAGIC;
    inv->key = draw_key(inv);
    if (inv->cfg.inline_mode)
        inv->cfg.capture_stderr = INVOKER_STDERR_OFF;   /* the objective runs here */
    inv->parent_pid = getpid();
    inv->nworkers = inv->cfg.inline_mode ? 0 : inv->cfg.workers;
    inv->nrecords = 2 * inv->nworkers;
    inv->want_spares = inv->cfg.spares == INVOKER_SPARES_ALWAYS;
    inv->gather_max_ns = INVOKER__GATHER_MAX_NS;
    inv->fail_limit = inv->nworkers * 2 < 4 ? 4 : (inv->nworkers * 2 > 16 ? 16 : inv->nworkers * 2);

    if ((rc = invoker__tasks_init(&inv->tasks)) != 0 ||
        (rc = invoker__arena_init(&inv->arena)) != 0)
        goto fail;
    /* Only an aid: without it, every result wakes the parent. */
    inv->urgent_fd = epoll_create1(EPOLL_CLOEXEC);
    if ((inv->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (inv->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0 ||
        (inv->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        rc = -errno;
        goto fail;
    }
    /* A pipe, not an eventfd: its inode is its own (see test_hygiene). */
    int idle[2];
    if ((rc = invoker__fd_pipe(idle, false)) != 0)
        goto fail;
    inv->idle_rd = idle[0];
    inv->idle_wr = idle[1];
    if ((rc = invoker__watch(inv, inv->timerfd, INVOKER__EV_TIMER, 0)) != 0 ||
        (rc = invoker__watch(inv, inv->kickfd, INVOKER__EV_KICK, 0)) != 0 ||
        (rc = invoker__watch(inv, inv->idle_rd, INVOKER__EV_IDLE, 0)) != 0)
        goto fail;
    inv->ops = ops;
    *err = 0;
    return inv;

fail:
    release(inv);
    *err = rc < 0 ? rc : -EIO;
    return NULL;
}

int invoker__sched_create(invoker **out, const invoker_config *cfg,
                          const invoker__backend_ops *ops, void *state)
{
    if (!out || !cfg || !ops)
        return -EINVAL;
    /* Read no more of it than it says it has (take_config checks size). */
    invoker_config c;
    size_t size = cfg->size ? cfg->size : sizeof *cfg;
    memset(&c, 0, sizeof c);
    memcpy(&c, cfg, size < sizeof c ? size : sizeof c);
    c.workers = 1;   /* the backend's business: take_config looks no further */
    int rc;
    invoker *inv = create_sched(&c, ops, &rc);
    if (!inv)
        return rc;
    inv->nworkers = inv->nrecords = 0;
    inv->backend = state;
    if ((rc = open_store(inv)) != 0) {
        release(inv);
        return rc;
    }
    *out = inv;
    return 0;
}

int invoker_create(invoker **out, const invoker_config *cfg)
{
    if (!out || !cfg)
        return -EINVAL;
    int rc;
    invoker *inv = create_sched(cfg, &local_ops, &rc);
    if (!inv)
        return rc;
    if (inv->cfg.inline_mode) {
        if ((rc = open_store(inv)) != 0)
            goto fail;
        *out = inv;
        return 0;
    }

    if ((rc = invoker__table_create(&inv->table, inv->nrecords)) != 0 ||
        (rc = open_queue(inv)) != 0)
        goto fail;
    if (!(inv->workers = calloc(inv->nrecords, sizeof *inv->workers)) ||
        !(inv->seats = calloc(inv->nworkers, sizeof *inv->seats))) {
        rc = -ENOMEM;
        goto fail;
    }
    for (unsigned k = 0; k < inv->nrecords; k++) {
        invoker__worker *w = &inv->workers[k];
        w->result_rd = w->pidfd = w->go = -1;
        if (inv->cfg.capture_stderr) {
            if (!(w->err = malloc(sizeof *w->err))) {
                rc = -ENOMEM;
                goto fail;
            }
            w->err->fd = -1;
        }
    }
    if (inv->cfg.capture_stderr && (rc = invoker__err_open_sink(inv)) != 0)
        goto fail;
    /* Before the fork server and the workers, which inherit it. */
    if (inv->cfg.objective == invoker_command_objective &&
        !(inv->command_root = invoker__command_root(inv->cfg.objective_ctx, &rc)) && rc)
        goto fail;
    for (unsigned s = 0; s < inv->nworkers; s++)
        inv->seats[s].free_cpu = -1;
    /* Before any worker, so that none of theirs is in its copy.  Without
     * it (not built here, or no fork to spare) the parent forks them. */
    if (inv->cfg.fork_server == INVOKER_FORK_SERVER_AUTO && invoker__forkserver_supported())
        (void)invoker__forkserver_start(inv);
    /* After the server, which so never holds the journal's lock (a copy
     * of the descriptor would keep it until the server died); before the
     * workers, so that a journal refused wastes no worker. */
    if ((rc = open_store(inv)) != 0)
        goto fail;
    for (unsigned k = 0; k < inv->nworkers && rc == 0; k++) {
        rc = invoker__worker_spawn(inv, k);
        if (rc == -EBUSY) {   /* more than the server's socket holds */
            invoker__forkserver_await(inv);
            rc = invoker__worker_spawn(inv, k);
        }
    }
    /* The first workers are had before we return (the loop never waits
     * on the fork server; here, nothing else is due). */
    invoker__forkserver_await(inv);
    for (unsigned k = 0; k < inv->nworkers && rc == 0; k++)
        if (inv->workers[k].state == INVOKER__WORKER_EMPTY)   /* the server could not */
            rc = inv->last_spawn_error < 0 ? inv->last_spawn_error : -EAGAIN;
    if (rc != 0) {
        /* Resources, not a worker's fault: give back what we took. */
        invoker__dispatch_shutdown(inv);
        goto fail;
    }
    *out = inv;
    return 0;

fail:
    release(inv);
    return rc;
}

int invoker__submit_check(invoker *inv, size_t arg_len, double timeout)
{
    if (!valid_seconds(timeout))
        return -EINVAL;
    if (inv->destroying)
        return -ECANCELED;
    if (arg_len > inv->cfg.max_arg_bytes)
        return -EMSGSIZE;
    if (inv->cfg.max_queued) {
        size_t queued = inv->pending.count + inv->inflight.count;
        unsigned busy = inv->ops->busy(inv);
        if (queued - (busy < queued ? busy : queued) >= inv->cfg.max_queued)
            return -EAGAIN;
    }
    return 0;
}

int invoker__submit_enqueue(invoker *inv, invoker__task *t, const invoker__submission *s,
                            invoker_id *id)
{
    if (invoker__tasks_insert(&inv->tasks, t) != 0)
        return -ENOMEM;
    inv->next_id++;
    t->tag = s->tag;
    t->timeout = s->timeout;
    t->run_timeout = s->timeout;
    t->adaptive = s->adaptive;
    inv->outstanding++;
    inv->stats.submitted++;
    if (id)
        *id = t->id;
    if (inv->cache.merging) {
        int how = invoker__cache_submit(inv, t, s->arg, s->hash);
        if (how == 1)   /* answered: from the next poll, never from here */
            invoker__report_later(inv, t, t->fail, t->code);
        if (how != 0)
            return 0;
    }
    t->state = INVOKER__TASK_PENDING;
    invoker__list_push_back(&inv->pending, t);
    if ((s->timeout > 0 || s->adaptive) && inv->cfg.spares == INVOKER_SPARES_AUTO)
        inv->want_spares = true;   /* a hung task's worker is replaced from a spare */

    if (inv->cfg.inline_mode)
        invoker__wake_kick(inv);
    else if (inv->spawn_tripped && inv->live == 0 && invoker__now_ns() < inv->untrip_at)
        invoker__report_later(inv, t, INVOKER_FAIL_NO_WORKER, inv->last_spawn_error);
    else if (t == inv->pending.head && inv->depth == 0)
        (void)inv->ops->refill(inv);   /* on error it waits in pending */
    /* From a callback it waits for the end of the poll, which stocks the
     * queue once for all the callbacks of its batch of results: tickets
     * then travel several to a packet rather than one write each. */
    return 0;
}

/* adaptive: the task's timeout is timeout_factor's once it applies. */
static int submit(invoker *inv, const void *arg, size_t arg_len, void *tag, double timeout,
                  bool adaptive, invoker_id *id)
{
    if (!arg && arg_len > 0)
        return -EINVAL;
    int rc = invoker__submit_check(inv, arg_len, timeout);
    if (rc)
        return rc;
    invoker__submission s = {
        .arg = arg, .tag = tag, .timeout = timeout, .adaptive = adaptive,
        .hash = inv->cache.merging ? invoker__cache_hash(inv, arg, arg_len) : 0,
    };
    invoker__task *t = invoker__tasks_new(&inv->tasks, inv->next_id + 1, arg, arg_len);
    if (!t)
        return -ENOMEM;
    if (arg_len > INVOKER__INLINE_MAX) {   /* tasks_new left it to us */
        bool fresh;
        rc = invoker__arena_alloc(&inv->arena, arg_len, inv->depth > 0, &t->arg_off, &fresh);
        if (rc) {
            invoker__tasks_release(&inv->tasks, t);
            return rc;
        }
        invoker__arena_write(&inv->arena, t->arg_off, arg, arg_len, fresh);
    }
    if ((rc = invoker__submit_enqueue(inv, t, &s, id)) != 0)
        invoker__report_release(inv, t);
    return rc;
}

int invoker_submit_timeout(invoker *inv, const void *arg, size_t arg_len, void *tag,
                           double timeout, invoker_id *id)
{
    if (!valid(inv))
        return -EINVAL;
    return submit(inv, arg, arg_len, tag, timeout, false, id);
}

int invoker_submit(invoker *inv, const void *arg, size_t arg_len, void *tag, invoker_id *id)
{
    if (!valid(inv))
        return -EINVAL;
    return submit(inv, arg, arg_len, tag, inv->cfg.timeout, inv->cfg.timeout_factor > 0, id);
}

int invoker_cancel(invoker *inv, invoker_id id)
{
    if (!valid(inv))
        return -EINVAL;
    invoker__task *t = id ? invoker__tasks_find(&inv->tasks, id) : NULL;
    if (!t)
        return -ENOENT;
    inv->ops->cancel(inv, t);
    return 0;
}

int invoker_cancel_tag(invoker *inv, void *tag)
{
    if (!valid(inv))
        return -EINVAL;
    /* Cancelling moves a task to the done list only: the next one, saved
     * before, stays where it was. */
    int n = 0;
    invoker__list *lists[2] = { &inv->pending, &inv->inflight };
    /* Tasks waiting for an identical one first, each alone: cancelling
     * their leader would send them to the queue's front, behind the walk.
     * A leader of another tag runs on for its other waiters. */
    for (int i = 0; i < 2 && inv->cache.merging; i++) {
        for (invoker__task *t = lists[i]->head; t; t = t->next) {
            for (invoker__task *d = t->twins.head, *next; d; d = next) {
                next = d->next;
                if (d->tag != tag)
                    continue;
                inv->ops->cancel(inv, d);
                n += n < INT_MAX;
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        for (invoker__task *t = lists[i]->head, *next; t; t = next) {
            next = t->next;
            if (t->tag != tag)
                continue;
            inv->ops->cancel(inv, t);
            n += n < INT_MAX;
        }
    }
    return n;
}

int invoker_poll(invoker *inv, int timeout_ms)
{
    if (!valid(inv))
        return -EINVAL;
    if (inv->depth > 0)
        return -EBUSY;
    return inv->ops->run(inv, timeout_ms < 0 ? -1 : timeout_ms, false);
}

int invoker_wait(invoker *inv)
{
    if (!valid(inv))
        return -EINVAL;
    if (inv->depth > 0)
        return -EBUSY;
    while (inv->outstanding > 0) {
        int rc = inv->ops->run(inv, -1, true);
        if (rc < 0)
            return rc;
    }
    if (inv->journal.dirty_since)
        (void)invoker__journal_sync(&inv->journal);
    return 0;
}

int invoker_fd(const invoker *inv)
{
    return valid(inv) ? inv->epfd : -EINVAL;
}

void invoker_get_stats(const invoker *inv, invoker_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!valid(inv))
        return;
    *out = inv->stats;
    inv->ops->stats(inv, out);
    out->journal_error = inv->journal.error;
    out->busy = inv->ops->busy(inv);
    size_t waiting = inv->pending.count + inv->inflight.count;
    out->queued = (unsigned)(waiting > out->busy ? waiting - out->busy : 0);
}

int invoker_destroy(invoker *inv)
{
    if (!inv)
        return 0;
    if (!valid(inv))
        return -EINVAL;
    if (inv->depth > 0)
        return -EBUSY;
    inv->ops->shutdown(inv);
    if (inv->ops->release)
        inv->ops->release(inv);
    release(inv);
    return 0;
}

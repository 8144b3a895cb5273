/*
 * Workers, the parent's side: fork (here or through the fork server),
 * spawn and adopt spares, kill (now, soon, or after a grace), read a live
 * worker's usage from /proc, close a reaped one's descriptors.  This file,
 * child.c and frames.c's reading of frames are the one seam between the
 * parent and the processes that run tasks; a backend that runs workers
 * elsewhere replaces spawn, kill and the descriptors behind them.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void child_start(invoker *inv, unsigned k, pid_t parent, int result_rd, int result_wr,
                        const int *go, int err_wr, const cpu_set_t *allowed)
    __attribute__((noreturn));
static void child_start(invoker *inv, unsigned k, pid_t parent, int result_rd, int result_wr,
                        const int *go, int err_wr, const cpu_set_t *allowed)
{
    (void)setpgid(0, 0);
    if (!invoker__child_bind_to_parent(parent))
        _exit(0);
    close(result_rd);
    if (go)
        close(go[0]);
    int keep[3] = { result_wr, go ? go[1] : -1, err_wr };
    invoker__child_clean(inv, keep, 3);
    invoker__child_run(inv, k, result_wr, go ? go[1] : -1, err_wr, allowed);
}

pid_t invoker__fork_blocked(void)
{
    /* No signal may run a handler in the child before it has reset them,
     * nor be lost in the parent: block all around the fork. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        return 0;
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pid < 0 ? -err : pid;
}

/* The parent's own fork: the worker's pid, or -errno. */
static pid_t fork_here(invoker *inv, unsigned k, const int res[2], const int *go, int err_wr)
{
    cpu_set_t allowed;
    bool have_mask = go && sched_getaffinity(0, sizeof allowed, &allowed) == 0;
    pid_t parent = getpid();
    pid_t pid = invoker__fork_blocked();
    if (pid == 0)
        child_start(inv, k, parent, res[0], res[1], go, err_wr, have_mask ? &allowed : NULL);
    return pid;
}

/* The word that lets a waiting worker go: the CPU it was pinned to, or -1. */
static void send_word(invoker__worker *w, int cpu)
{
    /* If it died meanwhile, its pidfd (or pipe) reports that now; with
     * MSG_NOSIGNAL that death can never raise SIGPIPE here. */
    int32_t word = cpu;
    ssize_t n;
    do
        n = send(w->go, &word, sizeof word, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    invoker__fd_close(&w->go);
}

/* Record k's descriptors closed, and the record EMPTY: its process could
 * not be had. */
static void drop(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    invoker__fd_close(&w->result_rd);
    invoker__fd_close(&w->go);
    if (w->err)
        invoker__fd_close(&w->err->fd);
    w->state = INVOKER__WORKER_EMPTY;
}

/* Record k's process has come (pid > 0) or could not be had (-errno).
 * Tracked from now on: its result pipe and pidfd are watched.  0 or
 * -errno (the record is then EMPTY). */
static int started(invoker *inv, unsigned k, pid_t pid, bool spare)
{
    invoker__worker *w = &inv->workers[k];
    if (pid < 0) {
        drop(inv, k);
        return (int)pid;
    }
    /* Also here, so that killing the group cannot miss a worker that has
     * not yet run its own setpgid (nor take the fork server's group). */
    (void)setpgid(pid, pid);

    w->pid = pid;
    w->state = spare ? INVOKER__WORKER_SPARE : INVOKER__WORKER_LIVE;
    int pfd = invoker__fd_pidfd_open(pid);
    w->pidfd = pfd >= 0 ? pfd : -1;
    if (!spare && w->go >= 0)
        send_word(w, -1);

    int rc = invoker__watch(inv, w->result_rd, INVOKER__EV_RESULT, k);
    if (rc == 0 && w->err)
        rc = invoker__watch(inv, w->err->fd, INVOKER__EV_STDERR, k);
    if (w->pidfd < 0)   /* its death would show only at its pipe's end: never gather */
        invoker__fd_close(&inv->urgent_fd);
    else if (rc == 0)
        rc = invoker__watch(inv, w->pidfd, INVOKER__EV_PIDFD, k);
    if (w->state == INVOKER__WORKER_LIVE) {
        inv->live++;
        inv->stats.workers_started++;
    }
    if (rc != 0)   /* without its events the parent could not see it: do not keep it */
        invoker__worker_kill(inv, k, INVOKER_FAIL_PROTOCOL);
    return 0;
}

/* Starts a process in the empty record k.  The fork server forks it where
 * there is one (the record waits, SPAWNING, for its answer), else we do.
 * A spare waits for its word (see adopt); so does, for a moment, any
 * worker of the fork server (see forkserver.c). */
static int fork_worker(invoker *inv, unsigned k, bool spare)
{
    invoker__worker *w = &inv->workers[k];
    int res[2], go[2] = { -1, -1 };
    int rc = invoker__fd_pipe(res, false);
    if (rc)
        return rc;
    if ((spare || inv->fs.pid > 0) &&
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) != 0) {
        rc = -errno;
        close(res[0]);
        close(res[1]);
        return rc;
    }
    int err_wr = -1;
    if (w->err && (rc = invoker__err_open(inv, k, &err_wr)) != 0) {
        close(res[0]);
        close(res[1]);
        invoker__fd_close(&go[0]);
        invoker__fd_close(&go[1]);
        return rc;
    }
    invoker__table_reset_slot(&inv->table, k);
    w->result_rd = res[0];
    w->go = go[0];
    w->kill_reason = 0;
    w->blame = INVOKER__BLAME_RUNNING;
    w->garbage = false;
    w->garbage_bytes = 0;
    w->took_task = false;
    w->eof_at = 0;
    w->init_code = 0;
    w->rx.len = 0;
    int asked = invoker__forkserver_request(inv, k, res[1], go[1], err_wr);
    pid_t pid = asked ? 0 : fork_here(inv, k, res, go[0] >= 0 ? go : NULL, err_wr);
    /* The worker's ends are its own now, or the server's (a message in
     * flight holds what it carries). */
    close(res[1]);
    invoker__fd_close(&go[1]);
    invoker__fd_close(&err_wr);
    if (asked < 0) {
        drop(inv, k);
        return asked;
    }
    if (!asked)
        return started(inv, k, pid, spare);
    w->state = INVOKER__WORKER_SPAWNING;
    w->spawn_spare = spare;
    return 0;
}

void invoker__worker_spawned(invoker *inv, unsigned k, pid_t pid)
{
    invoker__worker *w = &inv->workers[k];
    if (w->state != INVOKER__WORKER_SPAWNING)
        return;
    bool spare = w->spawn_spare;
    int rc;
    if (pid != 0) {
        rc = started(inv, k, pid, spare);
    } else {
        /* The server failed, and its group went with it: any worker it
         * made for this request too.  We fork one, on new descriptors
         * (none, while destroying). */
        drop(inv, k);
        rc = inv->destroying ? 0 : fork_worker(inv, k, spare);
    }
    if (rc != 0 && !inv->destroying)
        invoker__staff_spawn_failed(inv, k, spare, rc, invoker__now_ns());
}

int invoker__worker_spawn(invoker *inv, unsigned k)
{
    return fork_worker(inv, k, false);
}

int invoker__worker_spawn_spare(invoker *inv, unsigned k)
{
    return fork_worker(inv, k, true);
}

void invoker__worker_adopt(invoker *inv, unsigned k, int cpu)
{
    invoker__worker *w = &inv->workers[k];
    if (w->state != INVOKER__WORKER_SPARE)
        return;
    w->state = INVOKER__WORKER_LIVE;
    inv->live++;
    inv->stats.workers_started++;
    /* Woken, a spare would often be queued beside a busy worker while the
     * dead worker's CPU idles.  Pinned while it sleeps, it is woken on that
     * CPU, with no migration; it takes its own mask back itself. */
    if (cpu >= 0 && cpu < CPU_SETSIZE) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(w->pid, sizeof one, &one) != 0)
            cpu = -1;
    }
    send_word(w, cpu);
}

void invoker__worker_kill_soon(invoker *inv, unsigned k, invoker_failure why)
{
    invoker__worker *w = &inv->workers[k];
    if (w->state != INVOKER__WORKER_LIVE && w->state != INVOKER__WORKER_SPARE)
        return;
    w->kill_reason = why;
    w->state = INVOKER__WORKER_DYING;
    w->kill_due = true;
    /* A timeout, a cancel or the end: with a grace, the group is asked
     * first (SIGTERM), so that a simulator can flush; SIGKILL follows from
     * invoker__workers_grace.  Decided now, so that the slot waits from
     * this pass on (see invoker__staff_slots).  A worker that broke the protocol
     * gets no grace. */
    if (inv->cfg.kill_grace > 0 && (why == INVOKER_FAIL_TIMEOUT ||
                                    why == INVOKER_FAIL_CANCELLED ||
                                    why == INVOKER_FAIL_SHUTDOWN)) {
        double ns = inv->cfg.kill_grace * 1e9;
        w->term_at = invoker__now_ns() + (ns >= 1e18 ? (uint64_t)1e18 : (uint64_t)ns);
    }
}

void invoker__worker_kill(invoker *inv, unsigned k, invoker_failure why)
{
    invoker__worker_kill_soon(inv, k, why);
    invoker__workers_kill_due(inv);
}

void invoker__workers_kill_due(invoker *inv)
{
    for (unsigned k = 0; k < inv->nrecords; k++) {
        invoker__worker *w = &inv->workers[k];
        if (!w->kill_due)
            continue;
        w->kill_due = false;
        int sig = w->term_at ? SIGTERM : SIGKILL;   /* see invoker__worker_kill_soon */
        /* The group first: an objective's own children go with it.  The
         * worker is not yet reaped, so its pid, and so its group, is
         * still ours. */
        (void)kill(-w->pid, sig);
        (void)kill(w->pid, sig);
        if (sig == SIGTERM)
            invoker__wake_arm_timer(inv, w->term_at);
    }
}

uint64_t invoker__workers_grace(invoker *inv, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (unsigned k = 0; k < inv->nrecords; k++) {
        invoker__worker *w = &inv->workers[k];
        if (!w->term_at || w->state == INVOKER__WORKER_EMPTY)
            continue;
        if (now >= w->term_at) {
            w->term_at = 0;
            (void)kill(-w->pid, SIGKILL);
            (void)kill(w->pid, SIGKILL);
        } else if (w->term_at < next) {
            next = w->term_at;
        }
    }
    return next;
}

/* Fields of /proc/PID/stat from the 14th (utime) on, after the name,
 * which may hold anything but ends at the last ')'. */
static bool read_stat_cpu(pid_t pid, double *cpu)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = invoker__fd_read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 14; field++)
        p = strchr(p + 1, ' ');
    if (!p)
        return false;
    /* utime stime cutime cstime, in clock ticks */
    unsigned long long ticks = 0;
    char *end = (char *)p;
    for (int i = 0; i < 4; i++) {
        const char *at = end;
        ticks += strtoull(at, &end, 10);
        if (end == at)
            return false;
    }
    long hz = sysconf(_SC_CLK_TCK);
    *cpu = (double)ticks / (double)(hz > 0 ? hz : 100);
    return true;
}

static long read_status_hwm(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = invoker__fd_read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *p = strstr(buf, "\nVmHWM:");
    if (!p)
        return -1;
    char *end;
    long kib = strtol(p + 7, &end, 10);
    return end != p + 7 && kib >= 0 ? kib : -1;
}

/* The running children of pid (a program the command objective waits
 * for), as Linux 4.2+ lists them: their CPU (with what they reaped) is
 * added to *cpu, their peaks are taken into *rss. */
static void add_children_usage(pid_t pid, double *cpu, long *rss)
{
    char path[96], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = invoker__fd_read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    char *p = buf, *end;
    for (long kid; (kid = strtol(p, &end, 10)) > 0 && end != p; p = end) {
        double c;
        if (read_stat_cpu((pid_t)kid, &c))
            *cpu += c;
        long peak = read_status_hwm((pid_t)kid);
        if (peak > *rss)
            *rss = peak;
    }
}

/* The process's CPU time (all its threads, not its children), exact to
 * the nanosecond, from the kernel's clock of it: no text to make. */
static bool read_clock_cpu(pid_t pid, double *cpu)
{
    clockid_t id;
    struct timespec ts;
    if (clock_getcpuclockid(pid, &id) != 0 || clock_gettime(id, &ts) != 0)
        return false;
    *cpu = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    return true;
}

void invoker__worker_usage(const invoker *inv, unsigned k, double *cpu, long *rss)
{
    const invoker__worker *w = &inv->workers[k];
    const invoker__slot *slot = invoker__table_slot(&inv->table, k);
    double start = (double)atomic_load(&slot->cpu_start_ns) / 1e9;
    double total;
    *cpu = -1;
    *rss = read_status_hwm(w->pid);
    /* Children to count (their CPU reaped during the task, those still
     * running): only /proc tells, in clock ticks.  Without, its own CPU
     * comes from its clock (the two /proc reads cost about a third of a
     * timeout's report: bench/NOTES.md). */
    if (atomic_load(&slot->kids)) {
        if (read_stat_cpu(w->pid, &total)) {
            *cpu = total > start ? total - start : 0;
            add_children_usage(w->pid, cpu, rss);
        }
    } else if (read_clock_cpu(w->pid, &total)) {
        double own = start - (double)atomic_load(&slot->kids_start_ns) / 1e9;
        *cpu = total > own ? total - own : 0;
    }
}

void invoker__worker_close(invoker *inv, unsigned k)
{
    invoker__worker *w = &inv->workers[k];
    if (w->result_rd >= 0)
        invoker__unwatch(inv, w->result_rd);
    if (w->pidfd >= 0)
        invoker__unwatch(inv, w->pidfd);
    invoker__fd_close(&w->result_rd);
    invoker__fd_close(&w->pidfd);
    invoker__fd_close(&w->go);
    invoker__err_close(inv, k);   /* drained before, by invoker__staff_worker_gone */
    free(w->rx.big);
    free(w->rx.kept);
    w->rx.big = w->rx.kept = NULL;
    w->rx.len = 0;
    w->pid = 0;
    w->kill_due = false;
    w->term_at = 0;
    w->state = INVOKER__WORKER_EMPTY;
}

int invoker__worker_last_cpu(const invoker *inv, unsigned k)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)inv->workers[k].pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = invoker__fd_read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    /* The name, field 2, may hold anything but ends at the last ')';
     * "processor" is field 39. */
    const char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 39; field++)
        p = strchr(p + 1, ' ');
    if (!p)
        return -1;
    char *end;
    long cpu = strtol(p + 1, &end, 10);
    return end != p + 1 && cpu >= 0 && cpu < CPU_SETSIZE ? (int)cpu : -1;
}

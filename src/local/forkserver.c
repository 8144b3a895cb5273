/*
 * The fork server: a process forked once, at invoker_create, and set up
 * once (signals, descriptors, the arena's writable mapping dropped), that
 * forks every later worker on the parent's behalf.  A fork copies the
 * forking process's page tables, so a worker forked from a parent that
 * has grown to gigabytes costs tens of milliseconds of the parent's time;
 * one forked from the server costs what the parent weighed at create.
 *
 * The server forks with CLONE_PARENT, so each worker is the parent's own
 * child, exactly as if the parent had forked it: the parent waits for it,
 * kills it, and reads its pidfd as before, and the server's death costs no
 * worker.  A new worker waits on its go socket until the parent, having
 * learned its pid from the server, has made it its own process group and
 * sends the word; one the parent never learns of (the server died or
 * stalled mid-request) reads EOF and exits, and is reaped with the
 * server's group.  When the server cannot serve, the parent forks workers
 * itself again, as it does where the server is not built.
 *
 * The parent never waits for an answer in its loop: the server, a process
 * like any other, may wait for a CPU for milliseconds under load, and a
 * deadline falls due meanwhile.  It sends the request and goes on; the
 * answer, read when the socket is readable in the epoll set, makes the
 * record live.  Answers come in the order of the requests, each naming
 * its record, so one out of turn is not the server's.
 */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long the server may owe an answer before the parent gives up on
 * it: far above a clone of any process it could be. */
#define SERVER_WAIT_MS 2000

bool invoker__forkserver_supported(void)
{
    return INVOKER__HAVE_FORK_SERVER;
}

#if INVOKER__HAVE_FORK_SERVER

/* fork() with the parent's parent as the child's parent.  Raw, as glibc
 * has no wrapper for a fork-like clone: it skips glibc's fork handlers,
 * which this single-threaded process, outside any lock, does not need;
 * glibc >= 2.34 reads the thread id from the kernel where it matters
 * (raise, abort).  The robust-futex list the kernel forgets at clone is
 * registered again by the caller. */
static long clone_as_sibling(void)
{
#if defined(__s390__) || defined(__CRIS__)
    return syscall(SYS_clone, 0L, (long)(CLONE_PARENT | SIGCHLD));
#else
    return syscall(SYS_clone, (long)(CLONE_PARENT | SIGCHLD), 0L, 0L, 0L, 0L);
#endif
}

/* A request's message: one word (the record number) and room for three
 * descriptors (the worker's end of its result pipe, of its go socket and,
 * with capture_stderr, of its stderr pipe). */
static struct msghdr request_msg(struct iovec *word, void *ctl, size_t ctl_len)
{
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = word;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = ctl_len;
    return msg;
}

/* One request, as send_request sends it. */
static int recv_request(int sock, uint32_t *k, int fds[3])
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(3 * sizeof(int))];
    } ctl;
    struct iovec iov = { k, sizeof *k };
    struct msghdr msg = request_msg(&iov, ctl.buf, sizeof ctl.buf);
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    struct cmsghdr *c = n == (ssize_t)sizeof *k ? CMSG_FIRSTHDR(&msg) : NULL;
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        (c->cmsg_len != CMSG_LEN(2 * sizeof(int)) && c->cmsg_len != CMSG_LEN(3 * sizeof(int))))
        return -1;
    fds[2] = -1;
    memcpy(fds, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0));
    return 0;
}

static void server_main(invoker *inv, int sock, pid_t parent) __attribute__((noreturn));
static void server_main(invoker *inv, int sock, pid_t parent)
{
    (void)setpgid(0, 0);
    if (!invoker__child_bind_to_parent(parent))
        _exit(0);
    invoker__child_clean(inv, &sock, 1);
    void *robust_head = NULL;
    size_t robust_len = 0;
    if (syscall(SYS_get_robust_list, 0, &robust_head, &robust_len) != 0)
        robust_len = 0;
    for (;;) {
        uint32_t k;
        int fds[3];
        if (recv_request(sock, &k, fds) != 0 || k >= inv->nrecords)
            _exit(0);   /* the parent is gone, or it is not the parent talking */
        cpu_set_t allowed;   /* before the clone: see invoker__child_run */
        bool have_mask = sched_getaffinity(0, sizeof allowed, &allowed) == 0;
        long pid = clone_as_sibling();
        if (pid == 0) {
            close(sock);
            if (robust_len)
                (void)syscall(SYS_set_robust_list, robust_head, robust_len);
            /* The parent's death signal is not inherited: set again. */
            if (!invoker__child_bind_to_parent(parent))
                _exit(0);
            invoker__child_run(inv, k, fds[0], fds[1], fds[2], have_mask ? &allowed : NULL);
        }
        int32_t reply[2] = { (int32_t)k, pid < 0 ? -errno : (int32_t)pid };
        close(fds[0]);
        close(fds[1]);
        if (fds[2] >= 0)
            close(fds[2]);
        if (invoker__fd_write_all(sock, reply, sizeof reply) != 0)
            _exit(0);
    }
}

int invoker__forkserver_start(invoker *inv)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    pid_t parent = getpid();
    pid_t pid = invoker__fork_blocked();
    if (pid == 0) {
        close(sv[0]);
        server_main(inv, sv[1], parent);
    }
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return pid;
    }
    (void)setpgid(pid, pid);
    inv->fs.pid = pid;
    inv->fs.sock = sv[0];
    inv->fs.pending = 0;
    inv->fs.sent_seq = inv->fs.answered_seq = 0;
    inv->fs.due_ns = 0;
    /* Its answers are read as they come: without them, no server. */
    int rc = invoker__watch(inv, sv[0], INVOKER__EV_FORKED, 0);
    if (rc != 0) {
        invoker__forkserver_stop(inv);
        return rc;
    }
    /* Its death is seen (and it is reaped) at once, not at the next spawn. */
    int pfd = invoker__fd_pidfd_open(pid);
    if (pfd >= 0) {
        if (invoker__watch(inv, pfd, INVOKER__EV_SERVER, 0) == 0)
            inv->fs.pidfd = pfd;
        else
            close(pfd);
    }
    return 0;
}

static int send_request(int sock, uint32_t k, int result_wr, int go, int err_wr)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(3 * sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    size_t nfds = err_wr >= 0 ? 3 : 2;
    struct iovec iov = { &k, sizeof k };
    struct msghdr msg = request_msg(&iov, ctl.buf, CMSG_SPACE(nfds * sizeof(int)));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    int fds[3] = { result_wr, go, err_wr };
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return -EAGAIN;
    return n == (ssize_t)sizeof k ? 0 : -1;
}

int invoker__forkserver_request(invoker *inv, unsigned k, int result_wr, int go, int err_wr)
{
    if (inv->fs.pid <= 0)
        return 0;
    /* Never blocks: a burst of deaths may ask for more than the socket's
     * buffer holds while the server is slow; the rest wait for its next
     * answer. */
    int rc = send_request(inv->fs.sock, k, result_wr, go, err_wr);
    if (rc == -EAGAIN && inv->fs.pending)
        return -EBUSY;
    if (rc != 0) {
        invoker__forkserver_stop(inv);
        return 0;
    }
    if (inv->fs.pending++ == 0)
        inv->fs.due_ns = invoker__now_ns() + (uint64_t)SERVER_WAIT_MS * 1000000u;
    inv->workers[k].spawn_seq = ++inv->fs.sent_seq;
    return 1;
}

/* One answer, checked: true when the server may go on. */
static bool take_answer(invoker *inv, const int32_t reply[2])
{
    uint32_t k = (uint32_t)reply[0];
    /* Its own record, the oldest request outstanding. */
    if (!inv->fs.pending || k >= inv->nrecords ||
        inv->workers[k].state != INVOKER__WORKER_SPAWNING ||
        inv->workers[k].spawn_seq != inv->fs.answered_seq + 1)
        return false;
    int32_t pid = reply[1];
    if (pid > 0) {
        /* Ours, as CLONE_PARENT promised?  (Zombie or alive: both found.) */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
            return false;
    } else if (pid != -EAGAIN && pid != -ENOMEM) {
        /* A shortage the parent's own fork would meet too is the answer;
         * any other failure is the server's, and ends it. */
        return false;
    }
    inv->fs.answered_seq++;
    inv->fs.due_ns = --inv->fs.pending ? invoker__now_ns() + (uint64_t)SERVER_WAIT_MS * 1000000u
                                       : 0;
    invoker__worker_spawned(inv, k, (pid_t)pid);
    return true;
}

void invoker__forkserver_answers(invoker *inv)
{
    while (inv->fs.pid > 0) {
        int32_t reply[3];   /* room for one word more: a longer message is no answer */
        ssize_t n;
        do
            n = recv(inv->fs.sock, reply, sizeof reply, MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* Its end closed (it died), an error, or garbage: it is done. */
        if (n != 2 * (ssize_t)sizeof reply[0] || !take_answer(inv, reply)) {
            invoker__forkserver_stop(inv);
            return;
        }
    }
}

uint64_t invoker__forkserver_check(invoker *inv, uint64_t now)
{
    if (!inv->fs.pending)
        return UINT64_MAX;
    if (now < inv->fs.due_ns)
        return inv->fs.due_ns;
    invoker__forkserver_stop(inv);
    return UINT64_MAX;
}

void invoker__forkserver_await(invoker *inv)
{
    while (inv->fs.pending) {
        uint64_t now = invoker__now_ns();
        if (invoker__forkserver_check(inv, now) == UINT64_MAX)
            return;
        struct pollfd p = { inv->fs.sock, POLLIN, 0 };
        int r = poll(&p, 1, (int)((inv->fs.due_ns - now + 999999u) / 1000000u));
        if (r < 0 && errno != EINTR) {
            invoker__forkserver_stop(inv);
            return;
        }
        if (r > 0)
            invoker__forkserver_answers(inv);
    }
}

void invoker__forkserver_stop(invoker *inv)
{
    if (inv->fs.pid <= 0)
        return;
    if (inv->fs.pidfd >= 0)
        invoker__unwatch(inv, inv->fs.pidfd);
    invoker__fd_close(&inv->fs.pidfd);
    if (inv->fs.sock >= 0)
        invoker__unwatch(inv, inv->fs.sock);
    invoker__fd_close(&inv->fs.sock);
    /* Its group: the server, and any worker it made whose pid we never
     * learned (such a one is still in the server's group). */
    (void)kill(-inv->fs.pid, SIGKILL);
    (void)kill(inv->fs.pid, SIGKILL);
    for (;;) {
        int status;
        pid_t r = waitpid(-inv->fs.pid, &status, 0);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        break;
    }
    inv->fs.pid = 0;
    /* The requests it owed: a worker it made for one is gone with its
     * group (reaped above); the parent forks its own, on new
     * descriptors. */
    if (!inv->fs.pending)
        return;
    inv->fs.pending = 0;
    inv->fs.due_ns = 0;
    for (unsigned k = 0; k < inv->nrecords; k++)
        if (inv->workers[k].state == INVOKER__WORKER_SPAWNING)
            invoker__worker_spawned(inv, k, 0);
}

#else /* no fork server here: the parent forks every worker */

int invoker__forkserver_start(invoker *inv)
{
    (void)inv;
    return -ENOSYS;
}

int invoker__forkserver_request(invoker *inv, unsigned k, int result_wr, int go, int err_wr)
{
    (void)inv, (void)k, (void)result_wr, (void)go, (void)err_wr;
    return 0;
}

void invoker__forkserver_answers(invoker *inv)
{
    (void)inv;
}

uint64_t invoker__forkserver_check(invoker *inv, uint64_t now)
{
    (void)inv, (void)now;
    return UINT64_MAX;
}

void invoker__forkserver_await(invoker *inv)
{
    (void)inv;
}

void invoker__forkserver_stop(invoker *inv)
{
    (void)inv;
}

#endif

/*
 * Descriptor helpers: every descriptor is close-on-exec from birth, and
 * every syscall that a stray signal can interrupt is retried.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int invoker__fd_pipe(int fds[2], bool packet)
{
    int flags = O_CLOEXEC | O_NONBLOCK;
#ifdef O_DIRECT
    if (packet)
        flags |= O_DIRECT;
#else
    if (packet)
        return -ENOSYS;
#endif
    if (pipe2(fds, flags) != 0)
        return -errno;
    return 0;
}

int invoker__fd_set_blocking(int fd, bool blocking)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    fl = blocking ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl) == 0 ? 0 : -errno;
}

void invoker__fd_close(int *fd)
{
    if (*fd >= 0) {
        /* Linux closes the descriptor even when close() says EINTR, so a
         * retry could close someone else's: never retry. */
        (void)close(*fd);
        *fd = -1;
    }
}

ssize_t invoker__fd_read(int fd, void *buf, size_t len)
{
    ssize_t n;
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n;
}

ssize_t invoker__fd_write(int fd, const void *buf, size_t len)
{
    ssize_t n;
    do
        n = write(fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n;
}

int invoker__fd_write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = invoker__fd_write(fd, p, len);
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int invoker__fd_read_all(int fd, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = invoker__fd_read(fd, p, len);
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void invoker__fd_grow_pipe(int fd, size_t bytes)
{
#ifdef F_SETPIPE_SZ
    int cur = fcntl(fd, F_GETPIPE_SZ);
    if (cur >= 0 && (size_t)cur < bytes)
        (void)fcntl(fd, F_SETPIPE_SZ, (int)bytes);  /* EPERM past the user's quota: keep what we have */
#else
    (void)fd;
    (void)bytes;
#endif
}

uint64_t invoker__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void invoker__fd_epoll_sleep(int epfd, uint64_t ns)
{
    struct epoll_event ev;
#ifdef SYS_epoll_pwait2
    /* The kernel's __kernel_timespec: two 64-bit words whatever time_t is
     * (glibc converts for its own wrapper; a raw syscall must not pass a
     * 32-bit struct timespec). */
    struct { int64_t tv_sec, tv_nsec; } ts = { (int64_t)(ns / 1000000000ull),
                                               (int64_t)(ns % 1000000000ull) };
    if (syscall(SYS_epoll_pwait2, epfd, &ev, 1, &ts, NULL, (size_t)0) >= 0 || errno != ENOSYS)
        return;
#endif
    (void)epoll_wait(epfd, &ev, 1, (int)((ns + 999999u) / 1000000u));   /* before Linux 5.11 */
}

int invoker__fd_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -errno;
    /* pidfds are close-on-exec from birth. */
    return (int)fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

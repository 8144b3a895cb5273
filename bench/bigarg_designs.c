/*
 * What two designs for large results could give bench_invoker bigarg's
 * first batch, with none of the library around them: the question behind
 * issue 18's first-batch figure (bench/NOTES.md).  Both keep invoker's
 * contract for arguments: each of --tasks fresh buffers (touched before
 * the clock) is copied with pwrite into a fresh memfd that the workers
 * map read-only, and stays there until its result has been checked; the
 * workers echo it; the parent compares every result with the pattern.
 *
 * Usage: bench_bigarg_designs pipe|sealed [--tasks N] [--bytes B]
 * pipe    each worker writes its result into its own 1 MiB pipe, as
 *         invoker does: it waits for the parent to read before it can
 *         take the next task, and no result is read during the submits
 * sealed  each worker writes its result into a memfd of its own, seals it
 *         (no write, grow or shrink can follow) and passes the descriptor
 *         over a socket; the parent maps it read-only to compare: no copy
 *         in the parent, and the workers run on while the parent submits
 * Prints: RESULT workload=bigarg_design impl=MODE ... seconds=... submit_s=...
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { WORKERS = 2 };

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void write_all(int fd, const void *p, size_t len)
{
    const unsigned char *b = p;
    while (len) {
        ssize_t n = write(fd, b, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("write");
        b += n;
        len -= (size_t)n;
    }
}

static void send_fd(int sock, int fd, uint32_t index)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = { &index, sizeof index };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != (ssize_t)sizeof index)
        die("sendmsg");
}

static int recv_fd(int sock, uint32_t *index)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = { index, sizeof *index };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof ctl.buf };
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != (ssize_t)sizeof *index)
        die("recvmsg");
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS)
        die("no descriptor");
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static void worker(int sealed, int queue, int arena, size_t n, size_t len, int out)
{
    const unsigned char *view = mmap(NULL, n * len, PROT_READ, MAP_SHARED, arena, 0);
    unsigned char *buf = malloc(sizeof(uint32_t) + len);
    if (view == MAP_FAILED || !buf)
        _exit(1);
    uint32_t i;
    while (read(queue, &i, sizeof i) == (ssize_t)sizeof i) {
        const unsigned char *arg = view + (size_t)i * len;
        if (sealed) {
            int fd = memfd_create("result", MFD_CLOEXEC | MFD_ALLOW_SEALING);
            if (fd < 0 || pwrite(fd, arg, len, 0) != (ssize_t)len ||
                fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL))
                _exit(1);
            send_fd(out, fd, i);
            close(fd);
        } else {
            memcpy(buf, &i, sizeof i);   /* the objective's copy into its result */
            memcpy(buf + sizeof i, arg, len);
            write_all(out, buf, sizeof i + len);
        }
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "pipe") && strcmp(argv[1], "sealed"))) {
        fprintf(stderr, "usage: %s pipe|sealed [--tasks N] [--bytes B]\n", argv[0]);
        return 2;
    }
    int sealed = !strcmp(argv[1], "sealed");
    bench_opts opt;
    parse_opts(argc, argv, 2, &opt);
    size_t n = opt.tasks, len = opt.bytes;
    if (len < 2 || n == 0 || n > UINT32_MAX) {
        fprintf(stderr, "need --bytes >= 2 and --tasks >= 1\n");
        return 2;
    }
    unsigned char *pattern = malloc(len), **bufs = calloc(n, sizeof *bufs);
    if (!pattern || !bufs)
        die("malloc");
    for (size_t j = 0; j < len; j++)
        pattern[j] = (unsigned char)(j * 131u + 7u);
    for (size_t i = 0; i < n; i++) {
        if (!(bufs[i] = malloc(len)))
            die("malloc");
        memcpy(bufs[i], pattern, len);
        bufs[i][0] = (unsigned char)i;
    }
    int arena = memfd_create("arena", MFD_CLOEXEC);
    int queue[2];
    if (arena < 0 || ftruncate(arena, (off_t)(n * len)) != 0 || pipe2(queue, O_CLOEXEC) != 0)
        die("arena");
    fcntl(queue[1], F_SETPIPE_SZ, 1 << 20);   /* every index fits: submits never wait */
    int in[WORKERS];
    pid_t pid[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        int ch[2];
        if (sealed ? socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ch) : pipe2(ch, O_CLOEXEC))
            die("channel");
        if (!sealed)
            fcntl(ch[1], F_SETPIPE_SZ, 1 << 20);
        if ((pid[w] = fork()) < 0)
            die("fork");
        if (pid[w] == 0) {
            close(queue[1]);
            close(ch[0]);
            worker(sealed, queue[0], arena, n, len, ch[1]);
        }
        close(ch[1]);
        in[w] = ch[0];
    }
    close(queue[0]);
    unsigned char *rx[WORKERS];
    size_t have[WORKERS] = { 0 };
    for (int w = 0; w < WORKERS; w++)
        if (!(rx[w] = malloc(sizeof(uint32_t) + len)))
            die("malloc");

    int64_t t0 = now_ns();
    for (uint32_t i = 0; i < n; i++) {
        if (pwrite(arena, bufs[i], len, (off_t)i * (off_t)len) != (ssize_t)len)
            die("pwrite");
        write_all(queue[1], &i, sizeof i);
    }
    int64_t t1 = now_ns();
    size_t done = 0, bad = 0;
    struct pollfd pf[WORKERS];
    while (done < n) {
        for (int w = 0; w < WORKERS; w++)
            pf[w] = (struct pollfd){ in[w], POLLIN, 0 };
        if (poll(pf, WORKERS, -1) < 0 && errno != EINTR)
            die("poll");
        for (int w = 0; w < WORKERS; w++) {
            if (!pf[w].revents)
                continue;
            uint32_t i;
            const unsigned char *r;
            if (sealed) {
                int fd = recv_fd(in[w], &i);
                r = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
                if (r == MAP_FAILED)
                    die("mmap");
                close(fd);
            } else {
                ssize_t got = read(in[w], rx[w] + have[w], sizeof i + len - have[w]);
                if (got <= 0)
                    die("read");
                if ((have[w] += (size_t)got) < sizeof i + len)
                    continue;
                have[w] = 0;
                memcpy(&i, rx[w], sizeof i);
                r = rx[w] + sizeof i;
            }
            bad += i >= n || r[0] != (unsigned char)i || memcmp(r + 1, pattern + 1, len - 1);
            if (sealed)
                munmap((void *)r, len);
            done++;
        }
    }
    double s = ns_to_s(now_ns() - t0);
    close(queue[1]);
    for (int w = 0; w < WORKERS; w++) {
        waitpid(pid[w], NULL, 0);
        close(in[w]);
        free(rx[w]);
    }
    result_line("bigarg_design", argv[1], &opt,
                "tasks=%zu bytes=%zu seconds=%.6f submit_s=%.6f bad=%zu", n, len, s,
                ns_to_s(t1 - t0), bad);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(pattern);
    close(arena);
    return bad != 0;
}

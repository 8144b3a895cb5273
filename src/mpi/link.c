/*
 * A framed socket between an MPI process and a node agent: a message is a
 * 64-bit length, then that many bytes.  Non-blocking both ways, so that
 * neither end can block writing while the other blocks writing back.
 */
#include "mpi_internal.h"

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

void invoker__link_init(invoker__link *l, int fd)
{
    memset(l, 0, sizeof *l);
    l->fd = fd;
    l->heard_ns = invoker__now_ns();
}

void invoker__link_close(invoker__link *l)
{
    invoker__fd_close(&l->fd);
    free(l->in);
    free(l->out);
    l->in = l->out = NULL;
    l->in_len = l->in_cap = l->out_off = l->out_len = l->out_cap = 0;
}

static int reserve(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need)
        cap2 *= 2;
    unsigned char *p = realloc(*buf, cap2);
    if (!p)
        return -ENOMEM;
    *buf = p;
    *cap = cap2;
    return 0;
}

int invoker__link_send(invoker__link *l, const void *buf, size_t len)
{
    if (l->fd < 0)
        return -EPIPE;
    if (l->out_off == l->out_len)
        l->out_off = l->out_len = 0;
    uint64_t n = len;
    if (reserve(&l->out, &l->out_cap, l->out_len + sizeof n + len))
        return -ENOMEM;
    memcpy(l->out + l->out_len, &n, sizeof n);
    if (len)
        memcpy(l->out + l->out_len + sizeof n, buf, len);
    l->out_len += sizeof n + len;
    return invoker__link_flush(l);
}

int invoker__link_flush(invoker__link *l)
{
    while (l->fd >= 0 && l->out_off < l->out_len) {
        /* MSG_NOSIGNAL: a dead peer is an error here, not a SIGPIPE (MPICH
         * leaves SIGPIPE's default, which would end the rank). */
        ssize_t n = send(l->fd, l->out + l->out_off, l->out_len - l->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        l->out_off += (size_t)n;
    }
    if (l->out_off == l->out_len)
        l->out_off = l->out_len = 0;
    return l->fd < 0 ? -EPIPE : 0;
}

/* Drops the message link_next handed out last. */
static void compact(invoker__link *l)
{
    if (!l->taken)
        return;
    memmove(l->in, l->in + l->taken, l->in_len - l->taken);
    l->in_len -= l->taken;
    l->taken = 0;
}

ssize_t invoker__link_read(invoker__link *l, size_t max_msg)
{
    size_t total = 0;
    compact(l);
    while (l->fd >= 0 && !l->eof) {
        if (reserve(&l->in, &l->in_cap, l->in_len + 65536))
            return -ENOMEM;
        ssize_t n = invoker__fd_read(l->fd, l->in + l->in_len, l->in_cap - l->in_len);
        if (n == 0) {
            l->eof = true;
            break;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == ECONNRESET) {
                l->eof = true;
                break;
            }
            return -errno;
        }
        l->in_len += (size_t)n;
        total += (size_t)n;
        l->heard_ns = invoker__now_ns();
        /* Enough for a pass: the rest waits in the socket. */
        if (total >= max_msg + sizeof(uint64_t))
            break;
    }
    return (ssize_t)total;
}

const unsigned char *invoker__link_next(invoker__link *l, size_t *len, size_t max_msg, bool *bad)
{
    static const size_t hdr = sizeof(uint64_t);
    *bad = false;
    compact(l);
    if (l->in_len < hdr)
        return NULL;
    uint64_t n;
    memcpy(&n, l->in, sizeof n);
    if (n > max_msg) {
        *bad = true;
        return NULL;
    }
    if (l->in_len - hdr < n)
        return NULL;
    *len = (size_t)n;
    l->taken = hdr + (size_t)n;
    return l->in + hdr;
}

int invoker__link_drain(invoker__link *l, int timeout_ms)
{
    uint64_t until = invoker__now_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (l->fd >= 0 && l->out_off < l->out_len) {
        int rc = invoker__link_flush(l);
        if (rc)
            return rc;
        if (l->out_off == l->out_len)
            break;
        uint64_t now = invoker__now_ns();
        if (now >= until)
            return -ETIMEDOUT;
        struct pollfd p = { .fd = l->fd, .events = POLLOUT };
        (void)poll(&p, 1, (int)((until - now) / 1000000ull) + 1);
    }
    return 0;
}

int invoker__link_start_agent(invoker__link *l, unsigned workers, double beat_s, int timeout_ms)
{
    invoker__mpi_rec s;
    memset(&s, 0, sizeof s);
    s.type = INVOKER__MPI_START;
    s.code = (int32_t)workers;
    s.value = beat_s;
    if (invoker__link_send(l, &s, sizeof s) != 0 || invoker__link_drain(l, timeout_ms) != 0)
        return 0;
    if (workers == 0)
        return 0;
    uint64_t until = invoker__now_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (invoker__now_ns() < until) {
        struct pollfd p = { .fd = l->fd, .events = POLLIN };
        (void)poll(&p, 1, 100);
        if (invoker__link_read(l, 4096) < 0)
            return 0;
        size_t len;
        bool bad;
        const unsigned char *msg = invoker__link_next(l, &len, 4096, &bad);
        if (msg) {
            invoker__mpi_rec ready;
            if (len < sizeof ready)
                return 0;
            memcpy(&ready, msg, sizeof ready);
            return ready.type == INVOKER__MPI_READY && ready.code > 0 ? ready.code : 0;
        }
        if (bad || l->eof)
            return 0;
    }
    return 0;
}

void invoker__mpi_nap(int fd, short events, uint64_t *nap_ns)
{
    uint64_t ns = *nap_ns ? *nap_ns : INVOKER__MPI_NAP_NS;
    struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ns };
    struct pollfd p = { .fd = fd, .events = events };
    (void)ppoll(&p, fd >= 0 ? 1 : 0, &ts, NULL);
    ns += ns / 4;   /* a millisecond after some 14 quiet passes (~4 ms) */
    *nap_ns = ns < INVOKER__MPI_TICK_NS ? ns : INVOKER__MPI_TICK_NS;
}

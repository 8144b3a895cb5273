/*
 * The workers' captured stderr (invoker_config.capture_stderr): each
 * worker's descriptor 2 is a pipe to the parent, which forwards what comes
 * to its own stderr and keeps, per worker, the last INVOKER__ERR_TAIL bytes
 * since the worker's last end-of-task mark.
 *
 * Which task wrote what: the worker writes a mark into the same stream at
 * the end of every task, before its result frame, and the parent reads a
 * worker's stderr before its frames.  So the mark of a task is read before
 * its outcome, and the bytes before it are that task's, whether the next
 * task has begun writing or not and however a packet of short tasks
 * returns its frames.  A mark is a keyed word found with memmem, then the
 * task's id and dispatch under a check word: user bytes that happen to
 * contain the word (2^-64) and fail the check are only bytes.
 *
 * Nothing here makes a callback: a tail waits in its task's record for
 * the outcome, so these functions may run anywhere, inside callbacks too.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ERR_CHUNK   (16u << 10)   /* one read */
#define OUT_CAP     8192u         /* forwarded bytes are written in pieces of this */

/* The first word of every mark, from the invoker's key. */
static uint64_t mark_word(uint64_t key)
{
    return invoker__proto_mix(key ^ 0x6b72616d72727473ull) | 1;
}

/* ---- the parent's stderr --------------------------------------------------- */

/* Descriptor 2 as it is now, in a descriptor of our own: the caller may
 * close 2 later and open a file or a pipe there, which must receive
 * nothing of ours (the same open file, so flags stay shared). */
static int own_copy(invoker__errsink *s)
{
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return -errno;
    s->fd = fd;
    s->own = true;
    return 0;
}

int invoker__err_open_sink(invoker *inv)
{
    invoker__errsink *s = &inv->err_sink;
    s->fd = -1;
    s->sync = mark_word(inv->key);
    int mode = inv->cfg.capture_stderr;
    struct stat st;
    if (mode == INVOKER_STDERR_OFF || mode == INVOKER_STDERR_TAIL || fstat(2, &st) != 0)
        return 0;   /* nothing forwarded (with no stderr, nowhere to) */
    s->prefix = mode == INVOKER_STDERR_PREFIX || (mode == INVOKER_STDERR_TTY && isatty(2));
    s->fifo = S_ISFIFO(st.st_mode);
    if (S_ISSOCK(st.st_mode)) {
        s->sock = true;   /* send() takes MSG_DONTWAIT per call */
        return own_copy(s);
    }
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
        /* A pipe or terminal may block.  O_NONBLOCK on 2 itself would
         * change it for the whole process (it is one open file description
         * shared with every copy): a reopening is a description of our own. */
        int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd >= 0) {
            s->fd = fd;
            s->own = s->nonblock = true;
            return 0;
        }
    }
    /* A regular file never says "would block"; a pipe or terminal we could
     * not reopen is polled before each write (see sink_write). */
    return own_copy(s);
}

void invoker__err_close_sink(invoker *inv)
{
    invoker__errsink *s = &inv->err_sink;
    if (s->own)
        invoker__fd_close(&s->fd);
    s->fd = -1;
    s->own = s->nonblock = false;
}

/* write() to a pipe whose reader is gone raises SIGPIPE, which must not
 * reach the process: blocked around the write, and taken back if the
 * write raised it (not if it was pending before). */
static ssize_t write_quiet(int fd, const void *buf, size_t len)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    bool was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    ssize_t n = invoker__fd_write(fd, buf, len);
    int err = errno;
    if (n < 0 && err == EPIPE && !was_pending) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return n;
}

/* Writes what it can without blocking; the rest is dropped and counted. */
static void sink_write(invoker *inv, const unsigned char *p, size_t len)
{
    invoker__errsink *s = &inv->err_sink;
    while (len > 0 && s->fd >= 0) {
        size_t chunk = len;
        if (!s->nonblock && !s->sock) {
            struct pollfd pf = { s->fd, POLLOUT, 0 };
            if (poll(&pf, 1, 0) != 1 || !(pf.revents & POLLOUT))
                break;
            chunk = len < PIPE_BUF ? len : PIPE_BUF;   /* fits what POLLOUT promised */
        }
        ssize_t n;
        if (s->sock) {
            do
                n = send(s->fd, p, chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
            while (n < 0 && errno == EINTR);
        } else {
            n = s->fifo ? write_quiet(s->fd, p, chunk) : invoker__fd_write(s->fd, p, chunk);
        }
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                invoker__err_close_sink(inv);   /* gone (EPIPE, EIO): forward no more */
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    inv->stats.stderr_dropped += len;
}

/* Forwards n bytes of record k, "[worker N] " before each line if asked. */
static void forward(invoker *inv, unsigned k, invoker__errpipe *e, const unsigned char *p,
                    size_t n)
{
    invoker__errsink *s = &inv->err_sink;
    if (n == 0 || inv->cfg.capture_stderr == INVOKER_STDERR_TAIL)
        return;
    if (s->fd < 0) {   /* no stderr to forward to, or it went away */
        inv->stats.stderr_dropped += n;
        return;
    }
    if (!s->prefix) {
        sink_write(inv, p, n);
        return;
    }
    char pre[32];
    int plen = snprintf(pre, sizeof pre, "[worker %u] ", invoker__slot_number(inv, k));
    unsigned char out[OUT_CAP];
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (!e->mid_line) {
            if (o + (size_t)plen > sizeof out) {
                sink_write(inv, out, o);
                o = 0;
            }
            memcpy(out + o, pre, (size_t)plen);
            o += (size_t)plen;
            e->mid_line = true;
        }
        const unsigned char *nl = memchr(p + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - p) + 1 : n;
        while (i < end) {
            if (o == sizeof out) {
                sink_write(inv, out, o);
                o = 0;
            }
            size_t c = end - i < sizeof out - o ? end - i : sizeof out - o;
            memcpy(out + o, p + i, c);
            o += c;
            i += c;
        }
        if (nl)
            e->mid_line = false;
    }
    sink_write(inv, out, o);
}

/* ---- one worker's pipe ------------------------------------------------------ */

int invoker__err_open(invoker *inv, unsigned k, int *wr)
{
    invoker__errpipe *e = inv->workers[k].err;
    int fds[2];
    int rc = invoker__fd_pipe(fds, false);
    if (rc)
        return rc;
    e->fd = fds[0];
    e->len = 0;
    e->carry = 0;
    e->mid_line = false;
    *wr = fds[1];
    return 0;
}

void invoker__err_forget(invoker__task *t)
{
    free(t->err_tail);
    t->err_tail = NULL;
    t->err_len = 0;
    t->err_marked = false;
}

/* t's tail: e's bytes since the last mark. */
static void attach(invoker__task *t, const invoker__errpipe *e)
{
    invoker__err_forget(t);
    t->err_marked = true;
    if (e->len && (t->err_tail = malloc(e->len)) != NULL) {
        memcpy(t->err_tail, e->tail, e->len);
        t->err_len = (uint16_t)e->len;
    }
}

/* Bytes for the current tail (keeping the last INVOKER__ERR_TAIL) and the
 * parent's stderr. */
static void take_bytes(invoker *inv, unsigned k, invoker__errpipe *e, const unsigned char *p,
                       size_t n)
{
    if (n == 0)
        return;
    forward(inv, k, e, p, n);
    if (n >= INVOKER__ERR_TAIL) {
        memcpy(e->tail, p + n - INVOKER__ERR_TAIL, INVOKER__ERR_TAIL);
        e->len = INVOKER__ERR_TAIL;
        return;
    }
    if (e->len + n > INVOKER__ERR_TAIL) {
        size_t drop = e->len + n - INVOKER__ERR_TAIL;
        memmove(e->tail, e->tail + drop, e->len - drop);
        e->len -= drop;
    }
    memcpy(e->tail + e->len, p, n);
    e->len += n;
}

typedef struct mark {
    uint64_t sync, id;
    uint32_t gen, check;
} mark;

static uint32_t mark_check(uint64_t word, uint64_t id, uint32_t gen)
{
    return (uint32_t)invoker__proto_mix(word ^ invoker__proto_mix(id) ^ ((uint64_t)gen << 17));
}

/* The mark at p is real: what came before it was task (id, gen)'s. */
static void take_mark(invoker *inv, invoker__errpipe *e, const mark *m)
{
    invoker__task *t = m->id ? invoker__tasks_find(&inv->tasks, m->id) : NULL;
    if (t && t->state == INVOKER__TASK_INFLIGHT && t->gen == m->gen)
        attach(t, e);
    e->len = 0;   /* id 0: the worker's set-up, which is no task's */
}

/* How many of the last bytes of p[0..n) are the start of a mark's word. */
static size_t partial_sync(const unsigned char *p, size_t n, uint64_t word)
{
    const unsigned char *w = (const unsigned char *)&word;
    for (size_t keep = n < sizeof word - 1 ? n : sizeof word - 1; keep > 0; keep--)
        if (memcmp(p + n - keep, w, keep) == 0)
            return keep;
    return 0;
}

static void scan(invoker *inv, unsigned k, invoker__errpipe *e, const unsigned char *p, size_t n)
{
    uint64_t word = inv->err_sink.sync;
    size_t off = 0;
    while (off < n) {
        const unsigned char *at = memmem(p + off, n - off, &word, sizeof word);
        if (!at) {
            size_t keep = partial_sync(p + off, n - off, word);
            take_bytes(inv, k, e, p + off, n - off - keep);
            memcpy(e->hold, p + n - keep, keep);
            e->carry = keep;
            return;
        }
        size_t pos = (size_t)(at - p);
        take_bytes(inv, k, e, p + off, pos - off);
        if (n - pos < INVOKER__ERR_MARK) {   /* the rest comes with the next read */
            memcpy(e->hold, at, n - pos);
            e->carry = n - pos;
            return;
        }
        mark m;
        memcpy(&m, at, sizeof m);
        if (m.check == mark_check(word, m.id, m.gen)) {
            take_mark(inv, e, &m);
            off = pos + INVOKER__ERR_MARK;
        } else {
            take_bytes(inv, k, e, at, 1);   /* only bytes that look like one */
            off = pos + 1;
        }
    }
}

void invoker__err_close(invoker *inv, unsigned k)
{
    invoker__errpipe *e = inv->workers[k].err;
    if (!e)
        return;
    if (e->carry) {   /* the start of a mark that never came: bytes */
        size_t carry = e->carry;
        e->carry = 0;
        take_bytes(inv, k, e, e->hold, carry);
    }
    if (e->fd >= 0) {
        invoker__unwatch(inv, e->fd);
        invoker__fd_close(&e->fd);
    }
}

bool invoker__err_read(invoker *inv, unsigned k, size_t budget)
{
    invoker__errpipe *e = inv->workers[k].err;
    if (!e || e->fd < 0)
        return true;
    unsigned char buf[INVOKER__ERR_MARK + ERR_CHUNK];
    size_t got = 0;
    for (;;) {
        size_t carry = e->carry;
        memcpy(buf, e->hold, carry);
        ssize_t n = invoker__fd_read(e->fd, buf + carry, ERR_CHUNK);
        if (n == 0) {
            invoker__err_close(inv, k);
            return false;
        }
        if (n < 0)
            return true;   /* EAGAIN: all read (or an error the end will show) */
        e->carry = 0;
        scan(inv, k, e, buf, carry + (size_t)n);
        got += (size_t)n;
        /* Short: the pipe was empty a moment ago, and epoll says when it
         * is not; spare the read that would say EAGAIN. */
        if ((size_t)n < ERR_CHUNK || (budget && got >= budget))
            return true;
    }
}

void invoker__err_claim(invoker *inv, unsigned k, invoker__task *t)
{
    invoker__errpipe *e = inv->workers[k].err;
    if (!e || t->err_marked)
        return;
    /* Read before the frame came, the pipe may have lacked the bytes and
     * mark written just before it. */
    (void)invoker__err_read(inv, k, INVOKER__ERR_DRAIN);
    if (t->err_marked)
        return;
    attach(t, e);
    e->len = 0;
}

/* ---- the worker's side -------------------------------------------------------- */

void invoker__err_mark(const invoker *inv, uint64_t id, uint32_t gen)
{
    mark m;
    memset(&m, 0, sizeof m);
    m.sync = mark_word(inv->key);
    m.id = id;
    m.gen = gen;
    m.check = mark_check(m.sync, id, gen);
    /* One write, under PIPE_BUF: never split, nor mixed with the bytes of
     * a process the task left behind. */
    (void)invoker__fd_write(2, &m, sizeof m);
}

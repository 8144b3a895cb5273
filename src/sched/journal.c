/*
 * The journal: an append-only file of outcomes keyed by argument bytes, so
 * that a rerun after the optimizer died pays for nothing it already paid
 * for.  Open, lock, replay, append, sync; the cache (cache.c) decides what
 * goes in and asks what is there.
 *
 * Layout (every integer little-endian):
 *
 *   file header, 32 bytes: "invoker journal\n", u32 version, u32 flags (0),
 *                          u64 check of the 24 bytes before it
 *   records, each:         u32 magic, u32 kind (1 result, 2 objective
 *                          failure), u64 key hash, u64 arg_len, u64 res_len,
 *                          i32 code, u32 0, u64 body check, u64 0,
 *                          u64 header check of the 56 bytes before it;
 *                          then the argument and the result, each padded
 *                          with zeros to 16 bytes
 *
 * Every byte of a record is covered: the header check covers the lengths
 * and the body check, the body check the argument and the result, and
 * padding must be zero.  A record is written with one pwritev at the end
 * of what is known good, so a death leaves at most one torn record last.
 * Reading back, a record the file ends inside of is torn and cut off; one
 * that fails a check is corruption, and the file from it on is moved aside
 * (never dropped: it may hold good records a flipped bit hid).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define REC_MAGIC    0x4a524543u            /* "CERJ" on disk: "JREC" */
#define SEED_FILE    0x6a6f75726e616c31ull
#define SEED_HEAD    0x7265636f72646864ull
#define SEED_RES     0x726573756c747321ull
#define SEED_KEY     0x6b65796b65796b65ull
#define SYNC_PERIOD_NS (100000000ull)
#define CORRUPT_TRIES 10000u
#define PACKED_BYTES  ((size_t)64 << 10)   /* small records staged, copied whole */
#define PACKED_RECORD 1024u                /* a record this small is copied */

/* "invoker journal\n", without a terminating NUL. */
static const unsigned char file_magic[16] = { 'i', 'n', 'v', 'o', 'k', 'e', 'r', ' ',
                                              'j', 'o', 'u', 'r', 'n', 'a', 'l', '\n' };

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static size_t pad16(size_t n)
{
    return (16u - (n & 15u)) & 15u;
}

static bool zeros(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

uint64_t invoker__journal_key_hash(const char *key)
{
    key = key ? key : "";
    return invoker__hash(key, strlen(key), SEED_KEY);
}

void invoker__journal_file_header(unsigned char hdr[INVOKER__JOURNAL_HDR], uint32_t version)
{
    memcpy(hdr, file_magic, sizeof file_magic);
    put32(hdr + 16, version);
    put32(hdr + 20, 0);
    put64(hdr + 24, invoker__hash(hdr, 24, SEED_FILE));
}

int invoker__journal_check_header(const unsigned char *p, size_t len)
{
    unsigned char ours[INVOKER__JOURNAL_HDR];
    invoker__journal_file_header(ours, INVOKER__JOURNAL_VERSION);
    if (len == 0)
        return INVOKER__JHDR_EMPTY;
    if (len < INVOKER__JOURNAL_HDR)   /* died while writing it, or not ours */
        return memcmp(p, ours, len) == 0 ? INVOKER__JHDR_TORN : -EBADMSG;
    if (memcmp(p, file_magic, sizeof file_magic) != 0 || get32(p + 16) != INVOKER__JOURNAL_VERSION ||
        get32(p + 20) != 0 || get64(p + 24) != invoker__hash(p, 24, SEED_FILE))
        return -EBADMSG;
    return INVOKER__JHDR_OK;
}

size_t invoker__journal_record_size(size_t arg_len, size_t res_len)
{
    return INVOKER__JREC_HDR + arg_len + pad16(arg_len) + res_len + pad16(res_len);
}

uint64_t invoker__journal_body_check(uint64_t arg_hash, const void *res, size_t res_len)
{
    /* The argument's hash is the cache's key, already at hand; a flip in
     * either part changes its own hash, so the xor changes. */
    return arg_hash ^ invoker__hash(res, res_len, SEED_RES);
}

void invoker__journal_encode(unsigned char hdr[INVOKER__JREC_HDR], uint64_t key_hash,
                             uint32_t kind, int32_t code, uint64_t arg_len, uint64_t res_len,
                             uint64_t body_check)
{
    memset(hdr, 0, INVOKER__JREC_HDR);
    put32(hdr, REC_MAGIC);
    put32(hdr + 4, kind);
    put64(hdr + 8, key_hash);
    put64(hdr + 16, arg_len);
    put64(hdr + 24, res_len);
    put32(hdr + 32, (uint32_t)code);
    put64(hdr + 40, body_check);
    put64(hdr + 56, invoker__hash(hdr, 56, SEED_HEAD));
}

int invoker__journal_decode(const unsigned char *p, size_t avail, size_t max_arg,
                            size_t max_res, invoker__jrec *rec)
{
    if (avail < INVOKER__JREC_HDR)
        return INVOKER__JREC_TORN;
    uint32_t kind = get32(p + 4);
    uint64_t arg_len = get64(p + 16), res_len = get64(p + 24);
    if (get32(p) != REC_MAGIC || get64(p + 56) != invoker__hash(p, 56, SEED_HEAD) ||
        (kind != INVOKER__JREC_RESULT && kind != INVOKER__JREC_OBJECTIVE) ||
        get32(p + 36) != 0 || get64(p + 48) != 0 ||
        (kind == INVOKER__JREC_OBJECTIVE && res_len != 0))
        return INVOKER__JREC_CORRUPT;
    /* Sound so far.  Lengths past the end of the file are a torn write
     * when they are lengths we could have written; beyond the limits
     * (a length of 2^63, say) they are corruption, whatever the check
     * says, and nothing is read or allocated on their word. */
    size_t room = avail - INVOKER__JREC_HDR;
    bool fits = arg_len <= room && res_len <= room - arg_len &&
                invoker__journal_record_size((size_t)arg_len, (size_t)res_len) <= avail;
    if (!fits)
        return arg_len <= max_arg && res_len <= max_res ? INVOKER__JREC_TORN
                                                        : INVOKER__JREC_CORRUPT;
    const unsigned char *arg = p + INVOKER__JREC_HDR;
    const unsigned char *res = arg + arg_len + pad16((size_t)arg_len);
    if (!zeros(arg + arg_len, pad16((size_t)arg_len)) ||
        !zeros(res + res_len, pad16((size_t)res_len)))
        return INVOKER__JREC_CORRUPT;
    uint64_t arg_hash = invoker__hash(arg, (size_t)arg_len, INVOKER__HASH_SEED);
    if (get64(p + 40) != invoker__journal_body_check(arg_hash, res, (size_t)res_len))
        return INVOKER__JREC_CORRUPT;
    rec->kind = kind;
    rec->code = (int32_t)get32(p + 32);
    rec->key_hash = get64(p + 8);
    rec->arg = arg;
    rec->arg_len = (size_t)arg_len;
    rec->arg_hash = arg_hash;
    rec->res = res;
    rec->res_len = (size_t)res_len;
    rec->size = invoker__journal_record_size((size_t)arg_len, (size_t)res_len);
    return INVOKER__JREC_OK;
}

/* ---- open and replay ------------------------------------------------- */

/* pread or pwrite of all len bytes at off: 0 or -errno (-EIO when the
 * file ends first). */
static int all_at(int fd, void *buf, size_t len, off_t off, bool out)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = out ? pwrite(fd, p, len, off) : pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int write_all_at(int fd, const void *buf, size_t len, off_t off)
{
    return all_at(fd, (void *)buf, len, off, true);
}

/* Not mapped: the lock is advisory, and a mapping of a file that someone
 * truncates, or whose page fails to read, kills the process with SIGBUS.
 * A window of the file in a buffer instead, slid along it. */
typedef struct reader {
    int            fd;
    unsigned char *buf;
    size_t         cap;
    uint64_t       base;   /* the file offset of buf[0] */
    size_t         have;   /* bytes in buf */
    uint64_t       size;   /* where the file ends: fstat's, or where a read found it end */
} reader;

/* Points *p at the bytes from off (>= r->base) on, *avail of them: want
 * or more, fewer only where the file ends.  0 or -errno. */
static int reader_get(reader *r, uint64_t off, size_t want, const unsigned char **p,
                      size_t *avail)
{
    size_t skip = (size_t)(off - r->base);
    if (r->have - skip < want && r->base + r->have < r->size) {
        memmove(r->buf, r->buf + skip, r->have - skip);
        r->have -= skip;
        r->base = off;
        skip = 0;
        if (want > r->cap) {   /* a record bigger than the window */
            unsigned char *b = realloc(r->buf, want);
            if (!b)
                return -ENOMEM;
            r->buf = b;
            r->cap = want;
        }
        while (r->have < r->cap && r->base + r->have < r->size) {
            uint64_t left = r->size - r->base - r->have;
            size_t len = r->cap - r->have < left ? r->cap - r->have : (size_t)left;
            ssize_t n = pread(r->fd, r->buf + r->have, len, (off_t)(r->base + r->have));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -errno;
            if (n == 0)   /* shorter than it was: it ends here */
                r->size = r->base + r->have;
            r->have += (size_t)n;
        }
    }
    *p = r->buf + skip;
    *avail = r->have - skip;
    return 0;
}

/* fsync of the directory holding path: a name made there survives a
 * power cut only then, and a journal cut short after its tail was moved
 * to a new name must not lose both.  0 or -errno (a directory that cannot
 * be synced, EINVAL, has nothing to make durable). */
static int sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = !slash ? 0 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(len + 2);
    if (!dir)
        return -ENOMEM;
    if (len)
        memcpy(dir, path, len);
    else
        dir[len++] = '.';
    dir[len] = 0;
    int rc = 0, fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = -errno;
    close(fd);
    return rc;
}

/* The tail from a corrupt record on goes to <path>.corrupt.<n>, the first
 * n free, before the journal is cut: it is never lost. */
static int move_aside(const char *path, reader *r, uint64_t from)
{
    size_t cap = strlen(path) + 32;
    char *name = malloc(cap);
    if (!name)
        return -ENOMEM;
    int fd = -1, rc = -EEXIST;
    for (unsigned n = 1; n <= CORRUPT_TRIES && fd < 0; n++) {
        (void)snprintf(name, cap, "%s.corrupt.%u", path, n);
        fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
    }
    free(name);
    if (fd < 0)
        return rc;
    /* Copied through the window, a window at a time. */
    rc = 0;
    for (uint64_t off = from; rc == 0 && off < r->size;) {
        const unsigned char *p;
        size_t n = 0;
        if ((rc = reader_get(r, off, r->cap, &p, &n)) == 0 && n > 0 &&
            (rc = write_all_at(fd, p, n, (off_t)(off - from))) == 0)
            off += n;
        if (n == 0)
            break;
    }
    if (rc == 0 && fdatasync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc ? rc : sync_dir(path);
}

/* Reads the records, gives the cache those under our key, and puts the
 * end of the good ones in j->end; *bad: where corruption starts, or 0. */
static int replay(invoker__journal *j, invoker__cache *c, reader *r, uint64_t *bad)
{
    uint64_t off = INVOKER__JOURNAL_HDR;
    *bad = 0;
    while (off < r->size) {
        invoker__jrec rec;
        const unsigned char *p = NULL;
        size_t avail = 0, want = INVOKER__JREC_HDR;
        int how, rc;
        for (;;) {
            if ((rc = reader_get(r, off, want, &p, &avail)) != 0)
                return rc;
            how = invoker__journal_decode(p, avail, j->max_arg, j->max_res, &rec);
            if (how != INVOKER__JREC_TORN || avail >= r->size - off)
                break;
            /* Torn in the window: its header is sound and its lengths
             * within the limits (else it is corrupt), so the whole of it,
             * unless it claims more than the file holds (torn for good:
             * nothing is allocated on its word). */
            want = avail < INVOKER__JREC_HDR
                       ? INVOKER__JREC_HDR
                       : invoker__journal_record_size((size_t)get64(p + 16), (size_t)get64(p + 24));
            if (want > r->size - off)
                break;
        }
        if (how == INVOKER__JREC_TORN)
            break;
        if (how == INVOKER__JREC_CORRUPT) {
            *bad = off;
            break;
        }
        /* Another key's records, and ones over today's limits, stay in
         * the file but are never answered. */
        if (rec.key_hash == j->key_hash && rec.arg_len <= j->max_arg && rec.res_len <= j->max_res) {
            if ((rc = invoker__cache_key_add(c, rec.arg_hash, off)) != 0)
                return rc;
            j->replayed++;
        }
        off += rec.size;
    }
    j->end = off;
    return 0;
}

#define READ_WINDOW ((size_t)1 << 20)

static int load(invoker__journal *j, invoker__cache *c, const char *path)
{
    struct stat st;
    if (fstat(j->fd, &st) != 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    unsigned char hdr[INVOKER__JOURNAL_HDR];
    reader r = { .fd = j->fd, .size = (uint64_t)st.st_size };
    r.cap = r.size < READ_WINDOW ? (size_t)r.size : READ_WINDOW;
    if (r.size == 0)
        goto fresh;
    if (!(r.buf = malloc(r.cap)))
        return -ENOMEM;
    const unsigned char *p = NULL;
    size_t avail = 0;
    int rc = reader_get(&r, 0, INVOKER__JOURNAL_HDR, &p, &avail);
    if (rc == 0)
        rc = invoker__journal_check_header(p, avail < INVOKER__JOURNAL_HDR ? avail
                                                                         : INVOKER__JOURNAL_HDR);
    if (rc == INVOKER__JHDR_OK) {
        uint64_t bad = 0;
        rc = replay(j, c, &r, &bad);
        if (rc == 0 && bad)
            rc = move_aside(path, &r, bad);
    }
    free(r.buf);
    if (rc < 0)
        return rc;
    if (rc == INVOKER__JHDR_TORN || rc == INVOKER__JHDR_EMPTY)   /* EMPTY: it shrank to 0 */
        goto fresh;
    /* Cut the torn record, or the tail just moved aside. */
    if (j->end < (uint64_t)st.st_size && ftruncate(j->fd, (off_t)j->end) != 0)
        return -errno;
    return 0;

fresh:
    invoker__journal_file_header(hdr, INVOKER__JOURNAL_VERSION);
    if (ftruncate(j->fd, 0) != 0)
        return -errno;
    if ((rc = write_all_at(j->fd, hdr, sizeof hdr, 0)) != 0)
        return rc;
    if (fdatasync(j->fd) != 0)
        return -errno;
    j->end = INVOKER__JOURNAL_HDR;
    return 0;
}

/* The file at path, opened for reading and writing only once it is known
 * to be a regular file (created, 0600, when there is none): opening a
 * device has effects of its own (a terminal becomes the controlling one,
 * a watchdog arms), and a FIFO blocks.  The file looked at (O_PATH, which
 * opens nothing) and the one opened must be the same, else it changed in
 * between and is looked at again.  *created: made here. */
static int open_regular(const char *path, bool *created)
{
    *created = false;
    for (unsigned tries = 0; tries < 16; tries++) {
        int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
            fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
            if (fd >= 0)
                *created = true;
            if (fd >= 0 || errno != EEXIST)
                return fd >= 0 ? fd : -errno;
            continue;   /* made meanwhile */
        }
        if (fd < 0)
            return -errno;
        struct stat seen, got;
        int rc = fstat(fd, &seen) != 0       ? -errno
                 : S_ISLNK(seen.st_mode)     ? -ELOOP   /* O_PATH opens the link itself */
                 : S_ISDIR(seen.st_mode)     ? -EISDIR
                 : !S_ISREG(seen.st_mode)    ? -EINVAL
                                             : 0;
        close(fd);
        if (rc)
            return rc;
        /* O_NONBLOCK and O_NOCTTY: harmless should it have become a FIFO
         * or a terminal since. */
        fd = open(path, O_RDWR | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            return errno == ENOENT ? -EAGAIN : -errno;
        if (fstat(fd, &got) != 0) {
            rc = -errno;
            close(fd);
            return rc;
        }
        if (got.st_dev == seen.st_dev && got.st_ino == seen.st_ino)
            return fd;
        close(fd);
    }
    return -EAGAIN;   /* replaced under us, again and again */
}

int invoker__journal_open(invoker__journal *j, invoker__cache *c, const invoker_config *cfg)
{
    memset(j, 0, sizeof *j);
    j->fd = -1;
    if (!cfg->journal)
        return 0;
    j->sync = cfg->journal_sync;
    j->key_hash = invoker__journal_key_hash(cfg->journal_key);
    j->max_arg = cfg->max_arg_bytes;
    j->max_res = cfg->max_result_bytes;
    bool created;
    j->fd = open_regular(cfg->journal, &created);
    if (j->fd < 0) {
        int rc = j->fd;
        j->fd = -1;
        return rc;
    }
    int rc = created ? sync_dir(cfg->journal) : 0;
    /* An OFD lock belongs to this open file, not to the process: a second
     * invoker of this process is refused too, and the lock goes when the
     * descriptor does, whoever held it dying included. */
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (rc == 0 && fcntl(j->fd, F_OFD_SETLK, &fl) != 0)
        rc = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
    if (rc == 0)
        rc = load(j, c, cfg->journal);
    if (rc == 0)
        j->packed = malloc(PACKED_BYTES);   /* without it, records go piece by piece */
    if (rc) {
        invoker__journal_close(j);
        return rc;
    }
    return 0;
}

void invoker__journal_close(invoker__journal *j)
{
    if (j->fd >= 0 && j->sync != INVOKER_SYNC_NONE)
        (void)invoker__journal_sync(j);
    invoker__fd_close(&j->fd);
    free(j->packed);
    j->packed = NULL;
}

/* ---- lookup, append, sync -------------------------------------------- */

/* The record at off, read and checked again (the file is ours by a lock
 * only other invokers respect): the caller frees *buf. */
static int read_record(const invoker__journal *j, uint64_t off, unsigned char **buf,
                       invoker__jrec *rec)
{
    unsigned char hdr[INVOKER__JREC_HDR];
    int rc = all_at(j->fd, hdr, sizeof hdr, (off_t)off, false);
    if (rc)
        return rc;
    uint64_t arg_len = get64(hdr + 16), res_len = get64(hdr + 24);
    uint64_t avail = j->end - off;
    if (arg_len > avail || res_len > avail)
        return -EBADMSG;
    size_t size = invoker__journal_record_size((size_t)arg_len, (size_t)res_len);
    if (size > avail)
        return -EBADMSG;
    unsigned char *p = malloc(size);
    if (!p)
        return -ENOMEM;
    if ((rc = all_at(j->fd, p, size, (off_t)off, false)) == 0 &&
        invoker__journal_decode(p, size, j->max_arg, j->max_res, rec) != INVOKER__JREC_OK)
        rc = -EBADMSG;
    if (rc) {
        free(p);
        return rc;
    }
    *buf = p;
    return 0;
}

int invoker__journal_read(const invoker__journal *j, uint64_t off, const void *arg,
                          size_t arg_len, unsigned char **buf, invoker__jrec *rec)
{
    unsigned char *p = NULL;
    if (j->fd < 0 || read_record(j, off, &p, rec) != 0)
        return 0;
    if (rec->key_hash == j->key_hash && rec->arg_len == arg_len &&
        (arg_len == 0 || memcmp(rec->arg, arg, arg_len) == 0)) {
        *buf = p;
        return 1;
    }
    free(p);
    return 0;
}

int invoker__journal_stage(invoker__journal *j, uint64_t arg_hash, const void *arg,
                           size_t arg_len, uint32_t kind, int32_t code,
                           const void *res, size_t res_len)
{
    if (j->fd < 0 || j->error || j->nstaged == INVOKER__JOURNAL_STAGE)
        return -ENOBUFS;
    struct invoker__jstaged *r = &j->staged[j->nstaged++];
    invoker__journal_encode(r->hdr, j->key_hash, kind, code, arg_len, res_len,
                            invoker__journal_body_check(arg_hash, res, res_len));
    r->arg_hash = arg_hash;
    r->arg = arg;
    r->arg_len = arg_len;
    r->res = res;
    r->res_len = res_len;
    /* A small record is copied whole into the packed buffer: the kernel
     * copies one long run much faster than five short pieces a record. */
    size_t size = invoker__journal_record_size(arg_len, res_len);
    r->packed = j->packed && size <= PACKED_RECORD && PACKED_BYTES - j->packed_len >= size;
    if (r->packed) {
        unsigned char *p = j->packed + j->packed_len;
        memset(p, 0, size);
        memcpy(p, r->hdr, sizeof r->hdr);
        if (arg_len)
            memcpy(p + INVOKER__JREC_HDR, arg, arg_len);
        if (res_len)
            memcpy(p + INVOKER__JREC_HDR + arg_len + pad16(arg_len), res, res_len);
        r->packed_at = j->packed_len;
        j->packed_len += size;
    }
    return 0;
}

/* One fdatasync.  Its failure stops the journal (the first error is the
 * one kept): after a failed fdatasync the kernel may have dropped the
 * pages it could not write, and a later one that succeeds says nothing
 * about them. */
static int sync_now(invoker__journal *j)
{
    j->dirty_since = 0;
    j->syncs++;
    if (fdatasync(j->fd) == 0)
        return 0;
    int rc = -errno;
    if (!j->error)
        j->error = rc;
    return rc;
}

/* Writes iov at j->end: one pwritev, and after a short one the rest by
 * plain writes, which say why it stopped. */
static int write_records(const invoker__journal *j, const struct iovec *iov, int n)
{
    ssize_t w;
    do
        w = pwritev(j->fd, iov, n, (off_t)j->end);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -errno;
    size_t skip = (size_t)w;
    off_t at = (off_t)(j->end + (uint64_t)w);
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        int rc = write_all_at(j->fd, (const unsigned char *)iov[i].iov_base + skip, len - skip, at);
        if (rc)
            return rc;
        at += (off_t)(len - skip);
        skip = 0;
    }
    return 0;
}

int invoker__journal_flush(invoker__journal *j)
{
    static const unsigned char pad[16];
    if (j->nstaged == 0 || j->fd < 0 || j->error) {
        j->nstaged = 0;
        j->packed_len = 0;
        return j->error;
    }
    struct iovec iov[5 * INVOKER__JOURNAL_STAGE];
    int n = 0;
    for (unsigned i = 0; i < j->nstaged; i++) {
        const struct invoker__jstaged *r = &j->staged[i];
        if (r->packed) {
            unsigned char *p = j->packed + r->packed_at;
            size_t size = invoker__journal_record_size(r->arg_len, r->res_len);
            if (n && (unsigned char *)iov[n - 1].iov_base + iov[n - 1].iov_len == p)
                iov[n - 1].iov_len += size;   /* runs on from the one before */
            else
                iov[n++] = (struct iovec){ p, size };
            continue;
        }
        size_t apad = pad16(r->arg_len), rpad = pad16(r->res_len);
        iov[n++] = (struct iovec){ (void *)r->hdr, sizeof r->hdr };
        if (r->arg_len)
            iov[n++] = (struct iovec){ (void *)r->arg, r->arg_len };
        if (apad)
            iov[n++] = (struct iovec){ (void *)pad, apad };
        if (r->res_len)
            iov[n++] = (struct iovec){ (void *)r->res, r->res_len };
        if (rpad)
            iov[n++] = (struct iovec){ (void *)pad, rpad };
    }
    unsigned count = j->nstaged;
    j->nstaged = 0;
    j->packed_len = 0;
    int rc = write_records(j, iov, n);
    if (rc) {
        /* The journal stops here: a torn record left behind would only be
         * cut at the next open, but cut it now while we know where. */
        j->error = rc;
        (void)ftruncate(j->fd, (off_t)j->end);
        /* No sync comes after a stop (invoker__journal_sync returns the
         * error), but the records written before it were promised one:
         * they get it now.  Not after a failed fdatasync, which never
         * gets here: a second one would prove nothing. */
        if (j->sync != INVOKER_SYNC_NONE)
            (void)sync_now(j);
        return rc;
    }
    for (unsigned i = 0; i < count; i++) {
        struct invoker__jstaged *r = &j->staged[i];
        r->off = j->end;
        j->end += invoker__journal_record_size(r->arg_len, r->res_len);
    }
    j->written += count;
    if (j->sync == INVOKER_SYNC_EACH)
        return invoker__journal_sync(j);
    if (!j->dirty_since && j->sync == INVOKER_SYNC_BATCH)
        j->dirty_since = invoker__now_ns();
    return 0;
}

int invoker__journal_append(invoker__journal *j, uint64_t arg_hash, const void *arg,
                            size_t arg_len, uint32_t kind, int32_t code,
                            const void *res, size_t res_len, uint64_t *off)
{
    int rc = invoker__journal_flush(j);   /* nothing staged, normally */
    if (rc == 0 && (rc = invoker__journal_stage(j, arg_hash, arg, arg_len, kind, code, res,
                                                res_len)) == 0 &&
        (rc = invoker__journal_flush(j)) == 0)
        *off = j->staged[0].off;
    return rc;
}

int invoker__journal_sync(invoker__journal *j)
{
    if (j->fd < 0 || j->error)
        return j->error;
    j->dirty_since = 0;
    if (j->sync == INVOKER_SYNC_NONE)
        return 0;
    return sync_now(j);
}

uint64_t invoker__journal_tick(invoker__journal *j, uint64_t now)
{
    if (!j->dirty_since)
        return UINT64_MAX;
    if (now - j->dirty_since >= SYNC_PERIOD_NS) {
        (void)invoker__journal_sync(j);
        return UINT64_MAX;
    }
    return j->dirty_since + SYNC_PERIOD_NS;
}

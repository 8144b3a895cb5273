/*
 * The argument arena: arguments too large for a ticket, in one memfd that
 * the parent maps read-write and every worker maps read-only.
 *
 * invoker_submit copies such an argument here once; its ticket carries the
 * offset, and the worker hands the objective a pointer into its own
 * read-only view.  No round trip to ask for the bytes, no pipe to push
 * them through, no second and third copy.  Workers receive a descriptor
 * opened read-only where /proc allows it, so no worker can map the arena
 * writable: an objective cannot touch another task's argument.
 *
 * Blocks come in power-of-two multiples of the page size, carved from the
 * top and recycled through one free list per size: O(1) both ways, and an
 * optimizer's steady stream of same-sized arguments reuses the same pages
 * without faulting them in again.  The links live in the free blocks
 * themselves (workers cannot write there).
 *
 * When the last block is freed, the next burst carves from the start
 * again, over the pages this one left: an optimizer submits a generation,
 * waits, submits the next, and each generation finds its pages ready.
 * Giving them back costs as much as getting them (bench_invoker bigarg:
 * truncating 300 MiB at the end of a burst took 25-50 ms of its 0.25 s),
 * so they go only when a burst ends that used less than the one before,
 * down to what it used (and no less than INVOKER__ARENA_KEEP): a burst
 * does not pin its memory beyond the next, smaller one.
 *
 * Pages the file does not hold yet are written with pwrite, which puts
 * them in without zeroing them first; through the mapping each would be
 * faulted in and cleared, then overwritten (300 MiB of 1 MiB arguments:
 * submits 0.18 s -> 0.10 s, see bench/RESULTS.md).
 *
 * The parent's mapping must not move under a callback that reads
 * task->arg: when it has to grow elsewhere during one, the old mapping is
 * kept (same pages) and unmapped once no callback runs.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define GROW_MIN ((size_t)1 << 20)
/* Below this a block's few faults cost less than the system call. */
#define POPULATE_MIN ((size_t)64 << 10)

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14; older headers lack it */
#endif

int invoker__arena_init(invoker__arena *a)
{
    memset(a, 0, sizeof *a);
    a->ro_fd = -1;
    long page = sysconf(_SC_PAGESIZE);
    a->unit = page > 0 ? (size_t)page : 4096u;
    if ((a->fd = memfd_create("invoker-args", MFD_CLOEXEC)) < 0)
        return -errno;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", a->fd);
    a->ro_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (a->ro_fd < 0)
        a->ro_fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 0);  /* no /proc: workers still map it read-only */
    if (a->ro_fd < 0) {
        int rc = -errno;
        invoker__fd_close(&a->fd);
        return rc;
    }
    return 0;
}

static void unmap_retired(invoker__arena *a)
{
    for (unsigned i = 0; i < a->nretired; i++)
        munmap(a->retired[i].base, a->retired[i].size);
    a->nretired = 0;
}

void invoker__arena_destroy(invoker__arena *a)
{
    unmap_retired(a);
    if (a->base)
        munmap(a->base, a->size);
    invoker__fd_close(&a->fd);
    invoker__fd_close(&a->ro_fd);
    a->base = NULL;
    a->size = a->top = a->filled = 0;
}

static unsigned size_class(const invoker__arena *a, size_t len)
{
    unsigned c = 0;
    while (c + 1 < INVOKER__ARENA_CLASSES && (a->unit << c) < len)
        c++;
    return c;
}

static int grow(invoker__arena *a, size_t need, bool in_callback)
{
    size_t size = a->size * 2 > need ? a->size * 2 : need;
    if (size < GROW_MIN)
        size = GROW_MIN;
    size = (size + a->unit - 1) / a->unit * a->unit;
    if (size < need)
        return -ENOMEM;   /* wrapped */
    if (a->base && in_callback && a->nretired == INVOKER__ARENA_RETIRED)
        return -ENOMEM;   /* cannot keep one more mapping alive */
    /* Past RLIMIT_FSIZE ftruncate would raise SIGXFSZ, whose default
     * kills the process: stay under it, or refuse. */
    struct rlimit fsize;
    if (getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY &&
        size > fsize.rlim_cur) {
        size = (size_t)fsize.rlim_cur / a->unit * a->unit;
        if (size < need)
            return -ENOMEM;
    }
    if (ftruncate(a->fd, (off_t)size) != 0)
        return errno == EFBIG || errno == EINVAL ? -ENOMEM : -errno;
    void *p = MAP_FAILED;
    if (a->base)
        p = mremap(a->base, a->size, size, 0);   /* in place: nobody's pointer moves */
    if (p == MAP_FAILED)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
    if (p == MAP_FAILED) {
        int rc = -errno;
        (void)ftruncate(a->fd, (off_t)a->size);
        return rc;
    }
    if (a->base && p != a->base) {
        if (in_callback)
            a->retired[a->nretired++] = (struct invoker__arena_map){ a->base, a->size };
        else
            munmap(a->base, a->size);
    }
    a->base = p;
    a->size = size;
    return 0;
}

int invoker__arena_alloc(invoker__arena *a, size_t len, bool in_callback, uint64_t *off,
                        bool *fresh)
{
    if (fresh)
        *fresh = false;
    unsigned c = size_class(a, len);
    size_t block = a->unit << c;
    if (block < len)
        return -ENOMEM;
    if (a->free_head[c]) {
        uint64_t at = a->free_head[c] - 1;
        memcpy(&a->free_head[c], a->base + at, sizeof a->free_head[c]);
        a->live++;
        *off = at;
        return 0;
    }
    if (a->top > SIZE_MAX - block)
        return -ENOMEM;
    if (a->top + block > a->size) {
        int rc = grow(a, a->top + block, in_callback);
        if (rc)
            return rc;
    }
    *off = a->top;
    a->top += block;
    a->live++;
    if (fresh)
        *fresh = *off >= a->filled;
    if (a->top > a->filled)
        a->filled = a->top;
    return 0;
}

void invoker__arena_write(invoker__arena *a, uint64_t off, const void *src, size_t len,
                          bool fresh)
{
    /* Pages already in the file are cheaper to copy through the mapping
     * (no system call; faulted in once, they stay mapped). */
    const unsigned char *p = src;
    size_t done = 0;
    /* A write past RLIMIT_FSIZE raises SIGXFSZ, whose default kills the
     * process: grow() kept the file under the limit, but it may have been
     * lowered since. */
    struct rlimit fsize;
    if (fresh && getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY &&
        off + len > (uint64_t)fsize.rlim_cur)
        fresh = false;
    while (fresh && done < len) {
        ssize_t n = pwrite(a->fd, p + done, len - done, (off_t)(off + done));
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;   /* the mapping does the rest */
        if (n > 0)
            done += (size_t)n;
    }
    if (done < len) {
        /* Pages a pwrite put in (a burst before this one) are in the file
         * but not in our page tables: copied through the mapping, each
         * would fault.  One call maps them all (300 reused 1 MiB blocks:
         * submits 0.13 s -> 0.08 s); for pages mapped already it costs
         * little, and kernels before 5.14 refuse it and fault as before. */
        if (len - done >= POPULATE_MIN) {
            uint64_t lo = (off + done) / a->unit * a->unit;
            (void)madvise(a->base + lo, (size_t)(off + len - lo), MADV_POPULATE_WRITE);
        }
        memcpy(a->base + off + done, p + done, len - done);
    }
}

void invoker__arena_free(invoker__arena *a, uint64_t off, size_t len)
{
    unsigned c = size_class(a, len);
    memcpy(a->base + off, &a->free_head[c], sizeof a->free_head[c]);
    a->free_head[c] = off + 1;
    a->live--;
}

void invoker__arena_settle(invoker__arena *a)
{
    unmap_retired(a);
    if (a->live || !a->base)
        return;
    /* Empty: the next burst starts from offset 0, over these pages. */
    size_t used = a->top;
    a->top = 0;
    memset(a->free_head, 0, sizeof a->free_head);
    size_t keep = used > INVOKER__ARENA_KEEP ? used : INVOKER__ARENA_KEEP;
    if (a->filled <= keep)
        return;
    /* A smaller burst than the last: the pages past what it used go back.
     * The file keeps its size, so no mapping changes; a worker killed a
     * moment ago that still reads there finds zeros, and its task is
     * decided. */
    if (fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)keep,
                  (off_t)(a->filled - keep)) == 0) {
        a->filled = keep;
        return;
    }
    /* No hole punching here: the old way, all of it. */
    munmap(a->base, a->size);
    (void)ftruncate(a->fd, 0);
    a->base = NULL;
    a->size = a->filled = 0;
}

size_t invoker__arena_block(const invoker__arena *a, size_t len)
{
    return a->unit << size_class(a, len);
}

void invoker__arena_shrink(invoker__arena *a, uint64_t off, size_t len, size_t new_len)
{
    /* Block 2^C units, kept 2^c: the rest is the pieces 2^c, 2^(c+1) ...
     * 2^(C-1) units long, each starting where its own size says. */
    for (unsigned c = size_class(a, new_len), top = size_class(a, len); c < top; c++) {
        uint64_t at = off + (a->unit << c);
        memcpy(a->base + at, &a->free_head[c], sizeof a->free_head[c]);
        a->free_head[c] = at + 1;
    }
}

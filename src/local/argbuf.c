/*
 * Argument buffers the caller writes in place: invoker_arg_alloc,
 * invoker_submit_arg, invoker_arg_free.
 *
 * A buffer over INVOKER__INLINE_MAX bytes is a block of the arena mapped
 * on its own, so that the caller's pointer stays put when the arena's
 * main mapping moves as it grows; submitting it hands the block to the
 * task as it stands, with no copy, and unmaps the caller's view.  A
 * smaller one is plain heap memory, copied into its ticket at submit like
 * any small argument: zero-copy buys nothing under a page.
 *
 * The buffers the caller holds are kept in an open-addressing table
 * keyed by address, so that every call can tell a buffer of this invoker,
 * still held, from any other pointer before it touches anything.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HELD_MIN 16u

static size_t hash(const void *p, size_t cap)
{
    return (size_t)invoker__proto_mix((uint64_t)(uintptr_t)p) & (cap - 1);
}

static invoker__argbuf *find(const invoker__argbufs *h, const void *p)
{
    if (!h->cap || !p)
        return NULL;
    for (size_t i = hash(p, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (!h->v[i].ptr)
            return NULL;
        if (h->v[i].ptr == p)
            return &h->v[i];
    }
}

static int reserve(invoker__argbufs *h)
{
    if ((h->count + 1) * 2 <= h->cap)
        return 0;
    size_t cap = h->cap ? h->cap * 2 : HELD_MIN;
    invoker__argbuf *v = calloc(cap, sizeof *v);
    if (!v)
        return -ENOMEM;
    for (size_t j = 0; j < h->cap; j++) {
        if (!h->v[j].ptr)
            continue;
        size_t i = hash(h->v[j].ptr, cap);
        while (v[i].ptr)
            i = (i + 1) & (cap - 1);
        v[i] = h->v[j];
    }
    free(h->v);
    h->v = v;
    h->cap = cap;
    return 0;
}

/* Linear probing's deletion: entries after the hole that hashed at or
 * before it move back, so that no lookup stops short of them. */
static void forget(invoker__argbufs *h, invoker__argbuf *e)
{
    size_t hole = (size_t)(e - h->v), mask = h->cap - 1;
    h->v[hole].ptr = NULL;
    h->count--;
    for (size_t i = (hole + 1) & mask; h->v[i].ptr; i = (i + 1) & mask) {
        size_t home = hash(h->v[i].ptr, h->cap);
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            h->v[hole] = h->v[i];
            h->v[i].ptr = NULL;
            hole = i;
        }
    }
}

static bool in_arena(const invoker__argbuf *e)
{
    return e->off != UINT64_MAX;
}

/* Gives the memory of a held buffer back (the caller's view and its
 * block, or the heap copy). */
static void drop(invoker *inv, const invoker__argbuf *e)
{
    if (in_arena(e)) {
        munmap(e->ptr, e->map_len);
        invoker__arena_free(&inv->arena, e->off, e->len);
        if (inv->depth == 0)
            invoker__arena_settle(&inv->arena);
    } else {
        free(e->ptr);
    }
}

int invoker_arg_alloc(invoker *inv, size_t len, void **buf)
{
    if (!invoker__valid(inv) || !buf || len == 0)
        return -EINVAL;
    if (inv->destroying)
        return -ECANCELED;
    if (len > inv->cfg.max_arg_bytes)
        return -EMSGSIZE;
    invoker__argbufs *h = &inv->argbufs;
    int rc = reserve(h);
    if (rc)
        return rc;
    invoker__argbuf e = { .off = UINT64_MAX, .len = len };
    if (len <= INVOKER__INLINE_MAX) {
        if (!(e.ptr = malloc(len)))
            return -ENOMEM;
    } else {
        bool fresh;
        if ((rc = invoker__arena_alloc(&inv->arena, len, inv->depth > 0, &e.off, &fresh)) != 0)
            return rc;
        e.map_len = invoker__arena_block(&inv->arena, len);
        /* Its own mapping: the main one may move while the caller writes.
         * MAP_POPULATE: the caller writes every page; faulting them in
         * one call costs less than one fault each. */
        void *p = mmap(NULL, e.map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                       inv->arena.fd, (off_t)e.off);
        if (p == MAP_FAILED) {
            rc = -errno;
            invoker__arena_free(&inv->arena, e.off, len);
            if (inv->depth == 0)
                invoker__arena_settle(&inv->arena);
            return rc == -ENOMEM || rc == -EAGAIN ? -ENOMEM : rc;
        }
        e.ptr = p;
    }
    size_t i = hash(e.ptr, h->cap);
    while (h->v[i].ptr)
        i = (i + 1) & (h->cap - 1);
    h->v[i] = e;
    h->count++;
    *buf = e.ptr;
    return 0;
}

int invoker_arg_free(invoker *inv, void *buf)
{
    if (!invoker__valid(inv))
        return -EINVAL;
    if (!buf)
        return 0;
    invoker__argbuf *e = find(&inv->argbufs, buf);
    if (!e)
        return -EINVAL;
    invoker__argbuf copy = *e;
    forget(&inv->argbufs, e);
    drop(inv, &copy);
    return 0;
}

/* The same path as a copied argument's (the checks, the cache, adaptive
 * timeouts), only the task's argument is the buffer's block or bytes. */
static int submit(invoker *inv, void *buf, size_t len, void *tag, double timeout,
                  bool adaptive, invoker_id *id)
{
    invoker__argbuf *e = find(&inv->argbufs, buf);
    if (!e || len > e->len)
        return -EINVAL;
    int rc = invoker__submit_check(inv, len, timeout);
    if (rc)
        return rc;
    /* The cache hashes and compares the caller's view: the same bytes as
     * the block's, which a twin waiting for its leader keeps as its own. */
    invoker__submission s = {
        .arg = buf, .tag = tag, .timeout = timeout, .adaptive = adaptive,
        .hash = inv->cache.merging ? invoker__cache_hash(inv, buf, len) : 0,
    };
    invoker__task *t;
    if (in_arena(e) && len > INVOKER__INLINE_MAX) {
        /* The block becomes the task's argument as it stands. */
        if (!(t = invoker__tasks_new(&inv->tasks, inv->next_id + 1, NULL, len)))
            return -ENOMEM;
        t->arg_off = e->off;
    } else if (!(t = invoker__tasks_new(&inv->tasks, inv->next_id + 1, buf, len))) {
        return -ENOMEM;   /* small enough for its ticket: copied there */
    }
    if ((rc = invoker__submit_enqueue(inv, t, &s, id)) != 0) {
        invoker__tasks_release(&inv->tasks, t);   /* the block stays the caller's */
        return rc;
    }
    /* From here the task owns the block, answered or waiting for a twin
     * too: it goes back to the arena when the task is released, which is
     * never before the next poll. */
    invoker__argbuf taken = *e;
    forget(&inv->argbufs, e);
    if (in_arena(&taken) && len > INVOKER__INLINE_MAX) {
        munmap(taken.ptr, taken.map_len);
        /* A block larger than the argument needs gives its tail back. */
        invoker__arena_shrink(&inv->arena, taken.off, taken.len, len);
    } else {
        drop(inv, &taken);
    }
    return 0;
}

int invoker_submit_arg_timeout(invoker *inv, void *buf, size_t len, void *tag,
                               double timeout, invoker_id *id)
{
    if (!invoker__valid(inv))
        return -EINVAL;
    return submit(inv, buf, len, tag, timeout, false, id);
}

int invoker_submit_arg(invoker *inv, void *buf, size_t len, void *tag, invoker_id *id)
{
    if (!invoker__valid(inv))
        return -EINVAL;
    return submit(inv, buf, len, tag, inv->cfg.timeout, inv->cfg.timeout_factor > 0, id);
}

void invoker__argbuf_destroy(invoker *inv)
{
    invoker__argbufs *h = &inv->argbufs;
    for (size_t i = 0; i < h->cap; i++)
        if (h->v[i].ptr)
            drop(inv, &h->v[i]);
    free(h->v);
    memset(h, 0, sizeof *h);
}

void invoker__argbuf_drop_in_child(invoker *inv)
{
    const invoker__argbufs *h = &inv->argbufs;
    for (size_t i = 0; i < h->cap; i++)
        if (h->v[i].ptr && in_arena(&h->v[i]))
            munmap(h->v[i].ptr, h->v[i].map_len);
}

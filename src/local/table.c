/*
 * The shared-memory task-id table: a header (the ring of cancelled ids and
 * the parent's gathering flag, read-only to workers) and one page-aligned
 * slot per worker.  Mapped
 * MAP_SHARED before any fork, so every worker sees the same pages.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

_Static_assert(sizeof(invoker__slot) == 8192, "a slot is two pages of 4 KiB");

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

int invoker__table_create(invoker__table *t, unsigned nslots)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    memset(t, 0, sizeof *t);
    t->header_size = round_up(INVOKER__CANCEL_RING * sizeof(uint64_t) + 64, (size_t)page);
    t->slot_size = round_up(sizeof(invoker__slot), (size_t)page);
    t->nslots = nslots;
    t->size = t->header_size + t->slot_size * nslots;
    void *p = mmap(NULL, t->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    t->base = p;
    t->cancelled = (_Atomic uint64_t *)p;
    t->gathering = t->cancelled + INVOKER__CANCEL_RING;
    return 0;
}

void invoker__table_destroy(invoker__table *t)
{
    if (t->base)
        munmap(t->base, t->size);
    memset(t, 0, sizeof *t);
}

invoker__slot *invoker__table_slot(const invoker__table *t, unsigned k)
{
    return (invoker__slot *)((char *)t->base + t->header_size + t->slot_size * k);
}

void invoker__table_reset_slot(invoker__table *t, unsigned k)
{
    invoker__slot *s = invoker__table_slot(t, k);
    atomic_store(&s->running, 0);
    atomic_store(&s->start_ns, 0);
    atomic_store(&s->held, 0);
    atomic_store(&s->held_since, 0);
    /* A zero magic tells a post-mortem that this worker never took a ticket. */
    memset(s->ticket, 0, INVOKER__TICKET_HDR);
}

/* In worker k only: its own slot stays writable, the header becomes
 * read-only and every other slot inaccessible, so a scribbling objective
 * can spoil nothing but its own task. */
int invoker__table_protect_for_worker(const invoker__table *t, unsigned k)
{
    char *base = t->base;
    char *own = (char *)invoker__table_slot(t, k);
    char *end = base + t->size;
    if (mprotect(base, t->header_size, PROT_READ) != 0)
        return -errno;
    if (own > base + t->header_size &&
        mprotect(base + t->header_size, (size_t)(own - base) - t->header_size, PROT_NONE) != 0)
        return -errno;
    if (own + t->slot_size < end &&
        mprotect(own + t->slot_size, (size_t)(end - own) - t->slot_size, PROT_NONE) != 0)
        return -errno;
    return 0;
}

/*
 * Task records: the map from id to record (a ring indexed by id for the
 * recent ones, an open-addressing table for stragglers), intrusive doubly
 * linked lists (pending, inflight, done), and a free list so that a
 * steady stream of tasks allocates nothing.  No syscalls.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FREE_KEEP 4096   /* recycled records kept for reuse */
#define RING_MIN  64

/* ---- the slow table: ids that fell below the ring's window ------------- */

/* Stragglers still come in runs of neighbours (a generation of slow
 * tasks): eight consecutive ids share 128 bytes of the table (an
 * adjacent-line pair), and the groups themselves are scattered, so probe
 * runs stay short. */
static size_t slot_of(invoker_id id, size_t cap)
{
    return (size_t)(((invoker__proto_mix(id >> 3) << 3) | (id & 7)) & (cap - 1));
}

static int slow_grow(invoker__tasks *ts)
{
    size_t cap = ts->cap * 2;
    invoker__task_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < ts->cap; i++) {
        if (!ts->slots[i].task)
            continue;
        size_t j = slot_of(ts->slots[i].id, cap);
        while (slots[j].task)
            j = (j + 1) & (cap - 1);
        slots[j] = ts->slots[i];
    }
    free(ts->slots);
    ts->slots = slots;
    ts->cap = cap;
    return 0;
}

static int slow_insert(invoker__tasks *ts, invoker__task *t)
{
    if ((ts->nslow + 1) * 2 > ts->cap && slow_grow(ts) != 0)
        return -ENOMEM;
    size_t j = slot_of(t->id, ts->cap);
    while (ts->slots[j].task)
        j = (j + 1) & (ts->cap - 1);
    ts->slots[j] = (invoker__task_slot){ t->id, t };
    ts->nslow++;
    return 0;
}

static invoker__task *slow_find(const invoker__tasks *ts, invoker_id id)
{
    size_t j = slot_of(id, ts->cap);
    for (; ts->slots[j].task; j = (j + 1) & (ts->cap - 1))
        if (ts->slots[j].id == id)
            return ts->slots[j].task;
    return NULL;
}

/* Backward-shift deletion: no tombstones, so lookups stay short however
 * many tasks have come and gone.  Ids live in the table beside their
 * records, so neither the shift nor a rehash reads a record. */
static bool slow_remove(invoker__tasks *ts, const invoker__task *t)
{
    size_t mask = ts->cap - 1;
    size_t i = slot_of(t->id, ts->cap);
    while (ts->slots[i].task != t) {
        if (!ts->slots[i].task)
            return false;
        i = (i + 1) & mask;
    }
    ts->slots[i].task = NULL;
    ts->nslow--;
    for (size_t j = (i + 1) & mask; ts->slots[j].task; j = (j + 1) & mask) {
        size_t home = slot_of(ts->slots[j].id, ts->cap);
        /* Move j back into the hole at i unless its home lies in (i, j]. */
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            ts->slots[i] = ts->slots[j];
            ts->slots[j].task = NULL;
            i = j;
        }
    }
    return true;
}

/* ---- the ring: recent ids, by index ------------------------------------ */

/* Written before it is read, so each page faults once (calloc's fresh
 * pages would fault twice: read as the zero page, then written). */
static invoker__task **ring_alloc(size_t cap)
{
    const size_t entry = sizeof(invoker__task *);
    if (cap > SIZE_MAX / entry)
        return NULL;
    invoker__task **ring = malloc(cap * entry);
    if (ring)
        memset(ring, 0, cap * entry);
    return ring;
}

static int ring_grow(invoker__tasks *ts)
{
    if (ts->ring_cap > SIZE_MAX / 2)
        return -ENOMEM;
    size_t cap = ts->ring_cap * 2;
    invoker__task **ring = ring_alloc(cap);
    if (!ring)
        return -ENOMEM;
    /* Position i of the window holds id base + i: no record is read. */
    for (size_t i = 0; i < ts->ring_cap; i++) {
        invoker_id id = ts->base + i;
        ring[id & (cap - 1)] = ts->ring[id & (ts->ring_cap - 1)];
    }
    free(ts->ring);
    ts->ring = ring;
    ts->ring_cap = cap;
    return 0;
}

/* Moves the window up to start at base; what it leaves goes to the slow
 * table.  Stops where that fails, leaving every task findable. */
static int ring_slide(invoker__tasks *ts, invoker_id base)
{
    size_t mask = ts->ring_cap - 1;
    if (ts->ring_count == 0 || base - ts->base > ts->ring_cap) {
        /* Nothing to keep, or a jump past the whole window: look at each
         * position once, not at every id passed over. */
        for (size_t j = 0; j < ts->ring_cap && ts->ring_count; j++) {
            if (!ts->ring[j])
                continue;
            if (slow_insert(ts, ts->ring[j]) != 0)
                return -ENOMEM;
            ts->ring[j] = NULL;
            ts->ring_count--;
        }
        ts->base = base;
        return 0;
    }
    for (; ts->base < base; ts->base++) {
        invoker__task **at = &ts->ring[ts->base & mask];
        if (!*at)
            continue;
        if (slow_insert(ts, *at) != 0)
            return -ENOMEM;
        *at = NULL;
        ts->ring_count--;
    }
    return 0;
}

int invoker__tasks_init(invoker__tasks *ts)
{
    memset(ts, 0, sizeof *ts);
    ts->base = 1;
    ts->ring_cap = RING_MIN;
    ts->cap = 16;
    ts->ring = ring_alloc(ts->ring_cap);
    ts->slots = calloc(ts->cap, sizeof *ts->slots);
    if (!ts->ring || !ts->slots) {
        free(ts->ring);
        free(ts->slots);
        memset(ts, 0, sizeof *ts);
        return -ENOMEM;
    }
    return 0;
}

void invoker__tasks_free(invoker__tasks *ts)
{
    for (size_t i = 0; i < ts->ring_cap; i++)
        if (ts->ring[i])
            invoker__tasks_release(ts, ts->ring[i]);
    for (size_t i = 0; i < ts->cap; i++)
        if (ts->slots[i].task)
            invoker__tasks_release(ts, ts->slots[i].task);
    while (ts->free) {
        invoker__task *t = ts->free;
        ts->free = t->next;
        free(t);
    }
    free(ts->ring);
    free(ts->slots);
    memset(ts, 0, sizeof *ts);
}

invoker__task *invoker__tasks_new(invoker__tasks *ts, invoker_id id, const void *arg,
                                  size_t arg_len)
{
    invoker__task *t = ts->free;
    if (t) {
        ts->free = t->next;
        ts->nfree--;
    } else if (!(t = malloc(sizeof *t))) {
        return NULL;
    }
    memset(t, 0, offsetof(invoker__task, inline_arg));
    if (arg_len > INVOKER__INLINE_MAX) {
        t->arg = NULL;   /* the caller puts it in the arena */
    } else if (arg_len <= INVOKER__TASK_INLINE) {
        t->arg = t->inline_arg;
    } else if (!(t->arg = malloc(arg_len))) {
        t->next = ts->free;
        ts->free = t;
        ts->nfree++;
        return NULL;
    }
    if (arg_len && t->arg)
        memcpy(t->arg, arg, arg_len);
    t->id = id;
    t->arg_len = arg_len;
    t->worker = -1;
    t->max_rss_kib = -1;
    return t;
}

void invoker__tasks_release(invoker__tasks *ts, invoker__task *t)
{
    if (t->arg != t->inline_arg)
        free(t->arg);   /* NULL for an arena argument: the caller frees that */
    t->arg = NULL;
    free(t->err_tail);   /* a captured stderr tail (stderr.c) */
    t->err_tail = NULL;
    if (t->cached_entry)
        invoker__cache_unref(t->cached_entry);
    t->cached_entry = NULL;
    t->state = INVOKER__TASK_FREE;
    if (ts->nfree < FREE_KEEP) {
        t->next = ts->free;
        ts->free = t;
        ts->nfree++;
    } else {
        free(t);
    }
}

/* A new id goes in the ring.  The ring grows while at least half of it
 * is live; otherwise the window slides, and a task it leaves behind was
 * outlived by ring_cap / 2 younger ones: a straggler, for the slow table. */
int invoker__tasks_insert(invoker__tasks *ts, invoker__task *t)
{
    invoker_id id = t->id;
    if (id < ts->base) {
        if (slow_insert(ts, t) != 0)
            return -ENOMEM;
        ts->count++;
        return 0;
    }
    while (id - ts->base >= ts->ring_cap) {
        if (ts->ring_count * 2 >= ts->ring_cap) {
            if (ring_grow(ts) != 0)
                return -ENOMEM;
        } else if (ring_slide(ts, id - ts->ring_cap + 1) != 0) {
            return -ENOMEM;
        }
    }
    ts->ring[id & (ts->ring_cap - 1)] = t;
    ts->ring_count++;
    ts->count++;
    return 0;
}

invoker__task *invoker__tasks_find(const invoker__tasks *ts, invoker_id id)
{
    if (id >= ts->base)
        return id - ts->base < ts->ring_cap ? ts->ring[id & (ts->ring_cap - 1)] : NULL;
    return ts->nslow ? slow_find(ts, id) : NULL;
}

void invoker__tasks_remove(invoker__tasks *ts, invoker__task *t)
{
    invoker_id id = t->id;
    if (id >= ts->base) {
        invoker__task **at = &ts->ring[id & (ts->ring_cap - 1)];
        if (id - ts->base < ts->ring_cap && *at == t) {
            *at = NULL;
            ts->ring_count--;
            ts->count--;
        }
        return;
    }
    if (slow_remove(ts, t))
        ts->count--;
}

void invoker__list_push_back(invoker__list *l, invoker__task *t)
{
    t->next = NULL;
    t->prev = l->tail;
    if (l->tail)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
    l->count++;
}

void invoker__list_push_front(invoker__list *l, invoker__task *t)
{
    t->prev = NULL;
    t->next = l->head;
    if (l->head)
        l->head->prev = t;
    else
        l->tail = t;
    l->head = t;
    l->count++;
}

void invoker__list_unlink(invoker__list *l, invoker__task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    t->prev = t->next = NULL;
    l->count--;
}

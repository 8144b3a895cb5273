/*
 * Task records: an open-addressing table from id to record, intrusive
 * doubly linked lists (pending, inflight, done), and a free list so that a
 * steady stream of tasks allocates nothing.  No syscalls.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FREE_KEEP 4096   /* recycled records kept for reuse */

/* Ids are handed out in sequence and mostly finish in sequence.  Eight
 * consecutive ids share 128 bytes of the table (an adjacent-line pair), so
 * neighbours in time
 * are neighbours in memory; the groups themselves are scattered, so the
 * probe runs stay short (a plain id hash would make one run of every task
 * alive, and deleting from it would cost its whole length). */
static size_t slot_of(invoker_id id, size_t cap)
{
    return (size_t)(((invoker__proto_mix(id >> 3) << 3) | (id & 7)) & (cap - 1));
}

int invoker__tasks_init(invoker__tasks *ts)
{
    memset(ts, 0, sizeof *ts);
    ts->cap = 64;
    ts->slots = calloc(ts->cap, sizeof *ts->slots);
    return ts->slots ? 0 : -ENOMEM;
}

void invoker__tasks_free(invoker__tasks *ts)
{
    for (size_t i = 0; i < ts->cap; i++)
        if (ts->slots[i].task)
            invoker__tasks_release(ts, ts->slots[i].task);
    while (ts->free) {
        invoker__task *t = ts->free;
        ts->free = t->next;
        free(t);
    }
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
    return t;
}

void invoker__tasks_release(invoker__tasks *ts, invoker__task *t)
{
    if (t->arg != t->inline_arg)
        free(t->arg);   /* NULL for an arena argument: the caller frees that */
    t->arg = NULL;
    t->state = INVOKER__TASK_FREE;
    if (ts->nfree < FREE_KEEP) {
        t->next = ts->free;
        ts->free = t;
        ts->nfree++;
    } else {
        free(t);
    }
}

static int grow(invoker__tasks *ts)
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

int invoker__tasks_insert(invoker__tasks *ts, invoker__task *t)
{
    if ((ts->count + 1) * 2 > ts->cap && grow(ts) != 0)
        return -ENOMEM;
    size_t j = slot_of(t->id, ts->cap);
    while (ts->slots[j].task)
        j = (j + 1) & (ts->cap - 1);
    ts->slots[j] = (invoker__task_slot){ t->id, t };
    ts->count++;
    return 0;
}

invoker__task *invoker__tasks_find(const invoker__tasks *ts, invoker_id id)
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
void invoker__tasks_remove(invoker__tasks *ts, invoker__task *t)
{
    size_t mask = ts->cap - 1;
    size_t i = slot_of(t->id, ts->cap);
    while (ts->slots[i].task != t) {
        if (!ts->slots[i].task)
            return;
        i = (i + 1) & mask;
    }
    ts->slots[i].task = NULL;
    ts->count--;
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

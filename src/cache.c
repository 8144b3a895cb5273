/*
 * Identical argument bytes are evaluated once: finished outcomes kept in
 * memory (least recently used goes first, within cache_max_bytes), the
 * journal asked next, and a task equal to one being evaluated waits for
 * it as its twin.  Keys are the argument's hash, but a match is decided by
 * comparing the bytes: a collision costs a comparison, never a wrong
 * answer.  No syscalls but the journal's.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_BYTES ((size_t)256 << 20)
#define BUCKETS_MIN       256u
#define SYNC_PERIOD_NS    (100000000ull)

struct invoker__centry {
    invoker__centry *hnext;           /* bucket chain */
    invoker__centry *prev, *next;     /* LRU list */
    uint64_t         hash;
    size_t           arg_len, res_len, bytes;
    invoker_failure  fail;            /* 0: success */
    int              code;
    /* Then the result at a 16-byte boundary (callbacks get it aligned),
     * then the argument. */
};

#define ENTRY_HDR ((sizeof(invoker__centry) + 15u) & ~(size_t)15u)

static unsigned char *entry_res(invoker__centry *e)
{
    return (unsigned char *)e + ENTRY_HDR;
}

static unsigned char *entry_arg(invoker__centry *e)
{
    return entry_res(e) + ((e->res_len + 15u) & ~(size_t)15u);
}

int invoker__cache_init(invoker *inv)
{
    invoker__cache *c = &inv->cache;
    memset(c, 0, sizeof *c);
    c->on = inv->cfg.cache != 0;
    c->merging = c->on || inv->journal.fd >= 0;
    c->max_bytes = inv->cfg.cache_max_bytes ? inv->cfg.cache_max_bytes : DEFAULT_MAX_BYTES;
    if (!c->merging)
        return 0;
    c->ntwin_slots = BUCKETS_MIN;
    if (!(c->twins = calloc(c->ntwin_slots, sizeof *c->twins)))
        return -ENOMEM;
    if (c->on) {
        c->nbuckets = BUCKETS_MIN;
        if (!(c->buckets = calloc(c->nbuckets, sizeof *c->buckets)))
            return -ENOMEM;
    }
    return 0;
}

void invoker__cache_free(invoker *inv)
{
    invoker__cache *c = &inv->cache;
    for (invoker__centry *e = c->lru_head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    free(c->buckets);
    free(c->twins);
    memset(c, 0, sizeof *c);
}

/* ---- finished outcomes ------------------------------------------------ */

static bool same_arg(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static invoker__centry *entry_find(const invoker__cache *c, uint64_t hash, const void *arg,
                                   size_t len)
{
    for (invoker__centry *e = c->buckets[hash & (c->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == hash && same_arg(entry_arg(e), e->arg_len, arg, len))
            return e;
    return NULL;
}

static void lru_unlink(invoker__cache *c, invoker__centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(invoker__cache *c, invoker__centry *e)
{
    e->prev = NULL;
    e->next = c->lru_head;
    if (c->lru_head)
        c->lru_head->prev = e;
    else
        c->lru_tail = e;
    c->lru_head = e;
}

static void entry_drop(invoker__cache *c, invoker__centry *e)
{
    invoker__centry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->bytes;
    c->count--;
    free(e);
}

static void buckets_grow(invoker__cache *c)
{
    size_t n = c->nbuckets * 2;
    invoker__centry **b = calloc(n, sizeof *b);
    if (!b)
        return;   /* longer chains, still correct */
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (invoker__centry *e = c->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

static void entry_add(invoker__cache *c, uint64_t hash, const void *arg, size_t arg_len,
                      invoker_failure fail, int code, const void *res, size_t res_len)
{
    size_t res_room = (res_len + 15u) & ~(size_t)15u;
    if (res_len > c->max_bytes || arg_len > c->max_bytes)
        return;
    size_t bytes = ENTRY_HDR + res_room + arg_len;
    if (bytes > c->max_bytes || entry_find(c, hash, arg, arg_len))
        return;
    while (c->bytes + bytes > c->max_bytes && c->lru_tail)
        entry_drop(c, c->lru_tail);
    invoker__centry *e = malloc(bytes);
    if (!e)
        return;
    e->hash = hash;
    e->arg_len = arg_len;
    e->res_len = res_len;
    e->bytes = bytes;
    e->fail = fail;
    e->code = code;
    if (res_len)
        memcpy(entry_res(e), res, res_len);
    if (arg_len)
        memcpy(entry_arg(e), arg, arg_len);
    if (c->count >= c->nbuckets)
        buckets_grow(c);
    e->hnext = c->buckets[hash & (c->nbuckets - 1)];
    c->buckets[hash & (c->nbuckets - 1)] = e;
    lru_push_front(c, e);
    c->bytes += bytes;
    c->count++;
}

/* t's answer, as the callback will read it: a copy, since the entry may
 * be evicted before the next poll delivers it. */
static bool answer(invoker__task *t, invoker_failure fail, int code, const void *res,
                   size_t len)
{
    if (len) {
        if (!(t->cached_buf = malloc(len)))
            return false;
        memcpy(t->cached_buf, res, len);
    }
    t->cached_res = t->cached_buf;
    t->cached_len = len;
    t->fail = fail;
    t->code = code;
    t->cached = true;
    return true;
}

/* ---- twins in flight ------------------------------------------------- */

/* Open addressing with the hash beside each task: a lookup or removal
 * reads no task record but the one it wants (with a hundred thousand
 * tasks in flight, each record is a cache miss). */
static invoker__task *twin_find(const invoker *inv, uint64_t hash, const void *arg, size_t len)
{
    const invoker__cache *c = &inv->cache;
    size_t mask = c->ntwin_slots - 1;
    for (size_t i = (size_t)hash & mask; c->twins[i].t; i = (i + 1) & mask) {
        invoker__task *t = c->twins[i].t;
        if (c->twins[i].hash == hash && same_arg(invoker__task_arg(inv, t), t->arg_len, arg, len))
            return t;
    }
    return NULL;
}

static void twin_put(invoker__cache *c, uint64_t hash, invoker__task *t)
{
    size_t mask = c->ntwin_slots - 1, i = (size_t)hash & mask;
    while (c->twins[i].t)
        i = (i + 1) & mask;
    c->twins[i].hash = hash;
    c->twins[i].t = t;
}

static void twins_grow(invoker__cache *c)
{
    struct invoker__twin *old = c->twins;
    size_t n = c->ntwin_slots;
    struct invoker__twin *slots = calloc(2 * n, sizeof *slots);
    if (!slots)
        return;   /* fuller, still correct while a slot is free */
    c->twins = slots;
    c->ntwin_slots = 2 * n;
    for (size_t i = 0; i < n; i++)
        if (old[i].t)
            twin_put(c, old[i].hash, old[i].t);
    free(old);
}

static void twin_lead(invoker__cache *c, invoker__task *t)
{
    if ((c->ntwins + 1) * 2 > c->ntwin_slots)
        twins_grow(c);
    if (c->ntwins + 1 >= c->ntwin_slots)
        return;   /* no room: it runs without leading, twins run on their own */
    twin_put(c, t->hash, t);
    t->leads = true;
    c->ntwins++;
}

/* Backward-shift deletion, so lookups never wade through tombstones. */
static void twin_retire(invoker__cache *c, invoker__task *t)
{
    size_t mask = c->ntwin_slots - 1, i = (size_t)t->hash & mask;
    while (c->twins[i].t != t)
        i = (i + 1) & mask;
    c->twins[i].t = NULL;
    for (size_t j = (i + 1) & mask; c->twins[j].t; j = (j + 1) & mask) {
        size_t home = (size_t)c->twins[j].hash & mask;
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            c->twins[i] = c->twins[j];
            c->twins[j].t = NULL;
            i = j;
        }
    }
    t->leads = false;
    c->ntwins--;
}

/* ---- the hooks -------------------------------------------------------- */

/* SYNC_BATCH: the timer comes back for the sync (invoker__journal_tick). */
static void synced_soon(invoker *inv)
{
    const invoker__journal *j = &inv->journal;
    if (j->dirty_since && !inv->cfg.inline_mode)
        invoker__dispatch_arm_timer(inv, j->dirty_since + SYNC_PERIOD_NS);
}

int invoker__cache_submit(invoker *inv, invoker__task *t, const void *arg)
{
    invoker__cache *c = &inv->cache;
    t->hash = invoker__hash(arg, t->arg_len, INVOKER__HASH_SEED);
    if (c->on) {
        invoker__centry *e = entry_find(c, t->hash, arg, t->arg_len);
        if (e && answer(t, e->fail, e->code, entry_res(e), e->res_len)) {
            lru_unlink(c, e);
            lru_push_front(c, e);
            return 1;
        }
    }
    unsigned char *buf;
    invoker__jrec rec;
    if (invoker__journal_find(&inv->journal, t->hash, arg, t->arg_len, &buf, &rec) == 1) {
        /* The record's buffer is the answer: the result sits 16-aligned
         * in it (malloc's alignment, a 64-byte header, padded argument). */
        t->cached_buf = buf;
        t->cached_res = rec.res;
        t->cached_len = rec.res_len;
        t->fail = rec.kind == INVOKER__JREC_OBJECTIVE ? INVOKER_FAIL_OBJECTIVE : 0;
        t->code = rec.kind == INVOKER__JREC_OBJECTIVE ? rec.code : 0;
        t->cached = true;
        return 1;
    }
    invoker__task *twin = twin_find(inv, t->hash, arg, t->arg_len);
    if (twin) {
        t->state = INVOKER__TASK_TWIN;
        t->leader = twin;
        invoker__list_push_back(&twin->twins, t);
        return 2;
    }
    twin_lead(c, t);
    return 0;
}

void invoker__cache_record(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                           const void *res, size_t res_len)
{
    if (t->cached)
        return;   /* an answer, not an evaluation */
    invoker__cache *c = &inv->cache;
    if (t->leads)
        twin_retire(c, t);
    bool replayable = fail == 0 || fail == INVOKER_FAIL_OBJECTIVE;
    if (!replayable) {
        /* Its twins have no answer: each runs on its own, from the queue's
         * front (they waited as long as t), with its own timeout and
         * retries; the first leads any twin that comes later. */
        invoker__task *d, *first = NULL;
        while ((d = t->twins.tail) != NULL) {
            invoker__list_unlink(&t->twins, d);
            d->leader = NULL;
            d->state = INVOKER__TASK_PENDING;
            invoker__list_push_front(&inv->pending, d);
            first = d;
        }
        if (first) {
            twin_lead(c, first);
            invoker__dispatch_kick(inv);
        }
        return;
    }
    if (t->attempts == 0)
        return;   /* decided without running: nothing learned */
    const void *arg = invoker__task_arg(inv, t);
    if (c->on)
        entry_add(c, t->hash, arg, t->arg_len, fail, code, res, res_len);
    invoker__journal *j = &inv->journal;
    if (j->fd >= 0 && !j->error && !t->journaled) {
        uint32_t kind = fail ? INVOKER__JREC_OBJECTIVE : INVOKER__JREC_RESULT;
        if (invoker__journal_append(j, t->hash, arg, t->arg_len, kind, fail ? code : 0,
                                    fail ? NULL : res, fail ? 0 : res_len) == 0)
            inv->stats.journaled++;
        synced_soon(inv);
    }
}

bool invoker__cache_stage(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                          const void *res, size_t res_len)
{
    if (t->cached || t->journaled)
        return false;
    uint32_t kind = fail ? INVOKER__JREC_OBJECTIVE : INVOKER__JREC_RESULT;
    return invoker__journal_stage(&inv->journal, t->hash, invoker__task_arg(inv, t), t->arg_len,
                                  kind, fail ? code : 0, fail ? NULL : res,
                                  fail ? 0 : res_len) == 0;
}

void invoker__cache_flush(invoker *inv, invoker__task **staged, unsigned n)
{
    if (invoker__journal_flush(&inv->journal) != 0)
        return;   /* stopped: each is written alone, which fails again and says so */
    for (unsigned i = 0; i < n; i++)
        staged[i]->journaled = true;
    inv->stats.journaled += n;
    synced_soon(inv);
}

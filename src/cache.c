/*
 * Identical argument bytes are evaluated once: finished outcomes kept in
 * memory (least recently used goes first, within cache_max_bytes), the
 * journal asked next, and a task equal to one being evaluated waits for
 * it as its twin.  Keys are the argument's hash, but a match is decided by
 * comparing the bytes: a collision costs a comparison, never a wrong
 * answer.  No syscalls but the journal's, and mmap for a big table.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define DEFAULT_MAX_BYTES ((size_t)256 << 20)
#define HUGE_KEYS         ((size_t)2 << 20)   /* keys this big get huge pages */
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

/* A zeroed array of n keys.  A big one is mapped with huge pages asked
 * for: it grows with the tasks in flight (24 MiB for a million), and
 * faulting it in 4 KiB pages cost a fifth of the parent's time in the
 * trivial benchmark with a journal. */
static struct invoker__key *keys_alloc(size_t n)
{
    size_t bytes = n * sizeof(struct invoker__key);
    if (bytes < HUGE_KEYS)
        return calloc(n, sizeof(struct invoker__key));
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

static void keys_free(struct invoker__key *keys, size_t n)
{
    size_t bytes = n * sizeof(struct invoker__key);
    if (bytes < HUGE_KEYS)
        free(keys);
    else if (keys)
        munmap(keys, bytes);
}

int invoker__cache_init(invoker *inv)
{
    invoker__cache *c = &inv->cache;
    memset(c, 0, sizeof *c);
    c->on = inv->cfg.cache != 0;
    c->merging = c->on || inv->cfg.journal != NULL;
    c->max_bytes = inv->cfg.cache_max_bytes ? inv->cfg.cache_max_bytes : DEFAULT_MAX_BYTES;
    if (!c->merging)
        return 0;
    c->nkey_slots = BUCKETS_MIN;
    if (!(c->keys = keys_alloc(c->nkey_slots)))
        return -ENOMEM;
    if (c->on) {
        c->nbuckets = BUCKETS_MIN;
        if (!(c->buckets = calloc(c->nbuckets, sizeof(invoker__centry *))))
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
    keys_free(c->keys, c->nkey_slots);
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
    invoker__centry **b = calloc(n, sizeof(invoker__centry *));
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
    for (invoker__centry *e = c->lru_tail, *prev; e && c->bytes + bytes > c->max_bytes; e = prev) {
        prev = e->prev;
        entry_drop(c, e);
    }
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

/* ---- keys: twins in flight and journal records ------------------------ */

/* Open addressing with the hash beside each reference: a lookup reads no
 * task record or journal record but those whose hash matches (with a
 * hundred thousand tasks in flight, each record is a cache miss).  A
 * leading task remembers its slot: leaving puts a tombstone there, and its
 * journaled outcome its record, both by a store, which does not wait for
 * the line the way a search would. */
#define KEY_FREE(e)   ((e).t == NULL && (e).off == 0)
#define KEY_EMPTY(e)  (KEY_FREE(e) && (e).hash == 0)
#define TOMBSTONE     1u   /* the hash of a slot whose task left */

static size_t key_put(invoker__cache *c, uint64_t hash, invoker__task *t, uint64_t off)
{
    size_t mask = c->nkey_slots - 1, i = (size_t)hash & mask;
    while (!KEY_FREE(c->keys[i]))
        i = (i + 1) & mask;
    if (!KEY_EMPTY(c->keys[i]))
        c->ntombs--;   /* reused */
    c->keys[i].hash = hash;
    c->keys[i].t = t;
    c->keys[i].off = off;
    c->nkeys++;
    return i;
}

/* Room for one more, rebuilt without tombstones at twice the live keys'
 * room or more when needed.  false: no room (out of memory). */
static bool key_room(invoker__cache *c)
{
    if ((c->nkeys + c->ntombs + 1) * 2 <= c->nkey_slots)
        return true;
    size_t n = c->nkey_slots;
    while ((c->nkeys + 1) * 4 > n)
        n *= 2;
    struct invoker__key *old = c->keys, *slots = keys_alloc(n);
    if (slots) {
        size_t nold = c->nkey_slots;
        c->keys = slots;
        c->nkey_slots = n;
        c->nkeys = c->ntombs = 0;
        /* Tasks moved are not told (each would be a cache miss): they find
         * their slot again when they leave. */
        c->epoch++;
        for (size_t i = 0; i < nold; i++)
            if (!KEY_FREE(old[i]))
                (void)key_put(c, old[i].hash, old[i].t, old[i].off);
        keys_free(old, nold);
    }
    /* Without memory, fuller but correct while a slot is free. */
    return c->nkeys + c->ntombs + 1 < c->nkey_slots;
}

int invoker__cache_key_add(invoker__cache *c, uint64_t hash, uint64_t off)
{
    if (!key_room(c))
        return -ENOMEM;
    (void)key_put(c, hash, NULL, off);
    return 0;
}

static void twin_lead(invoker__cache *c, invoker__task *t)
{
    if (!key_room(c))
        return;   /* it runs without leading: its twins run on their own */
    t->twin_slot = key_put(c, t->hash, t, 0);
    t->twin_epoch = c->epoch;
    t->leads = true;
}

/* The key of leading task t. */
static struct invoker__key *key_of(invoker__cache *c, const invoker__task *t)
{
    if (t->twin_epoch == c->epoch)
        return &c->keys[t->twin_slot];
    size_t mask = c->nkey_slots - 1, i = (size_t)t->hash & mask;
    while (c->keys[i].t != t)
        i = (i + 1) & mask;
    return &c->keys[i];
}

static void twin_retire(invoker__cache *c, invoker__task *t)
{
    struct invoker__key *k = key_of(c, t);
    k->t = NULL;
    k->hash = TOMBSTONE;
    c->ntombs++;
    c->nkeys--;
    t->leads = false;
}

/* t's outcome is the journal's record at off now: its key says so. */
static void journaled(invoker *inv, invoker__task *t, uint64_t off)
{
    invoker__cache *c = &inv->cache;
    t->journaled = true;
    if (t->leads) {
        struct invoker__key *k = key_of(c, t);
        k->t = NULL;
        k->off = off;
        t->leads = false;   /* its twins still wait in t->twins for its callback */
    } else if (key_room(c)) {
        (void)key_put(c, t->hash, NULL, off);
    }
}

/* What answers these argument bytes: 1 (t answered from the journal), 2
 * (a twin in flight, in *twin) or 0. */
static int key_find(invoker *inv, invoker__task *t, const void *arg, invoker__task **twin)
{
    const invoker__cache *c = &inv->cache;
    size_t mask = c->nkey_slots - 1;
    for (size_t i = (size_t)t->hash & mask; !KEY_EMPTY(c->keys[i]); i = (i + 1) & mask) {
        const struct invoker__key *k = &c->keys[i];
        if (k->hash != t->hash || KEY_FREE(*k))
            continue;
        if (k->t) {
            invoker__task *d = k->t;
            if (same_arg(invoker__task_arg(inv, d), d->arg_len, arg, t->arg_len)) {
                *twin = d;
                return 2;
            }
            continue;
        }
        unsigned char *buf;
        invoker__jrec rec;
        if (invoker__journal_read(&inv->journal, k->off, arg, t->arg_len, &buf, &rec) == 1) {
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
    }
    return 0;
}

/* ---- the hooks -------------------------------------------------------- */

/* SYNC_BATCH: the timer comes back for the sync (invoker__journal_tick). */
static void synced_soon(invoker *inv)
{
    const invoker__journal *j = &inv->journal;
    if (j->dirty_since && !inv->cfg.inline_mode)
        invoker__dispatch_arm_timer(inv, j->dirty_since + SYNC_PERIOD_NS);
}

uint64_t invoker__cache_hash(const invoker *inv, const void *arg, size_t len)
{
    const invoker__cache *c = &inv->cache;
    uint64_t hash = invoker__hash(arg, len, INVOKER__HASH_SEED);
#if defined(__GNUC__) || defined(__clang__)
    /* Its slot is a cache miss: fetched while the submit makes the task. */
    __builtin_prefetch(&c->keys[(size_t)hash & (c->nkey_slots - 1)]);
#endif
    return hash;
}

int invoker__cache_submit(invoker *inv, invoker__task *t, const void *arg, uint64_t hash)
{
    invoker__cache *c = &inv->cache;
    t->hash = hash;
    if (c->on) {
        invoker__centry *e = entry_find(c, t->hash, arg, t->arg_len);
        if (e && answer(t, e->fail, e->code, entry_res(e), e->res_len)) {
            lru_unlink(c, e);
            lru_push_front(c, e);
            return 1;
        }
    }
    invoker__task *twin = NULL;
    int how = key_find(inv, t, arg, &twin);
    if (how == 2) {
        t->state = INVOKER__TASK_TWIN;
        t->leader = twin;
        invoker__list_push_back(&twin->twins, t);
        return 2;
    }
    if (how == 0)
        twin_lead(c, t);
    return how;
}

void invoker__cache_record(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                           const void *res, size_t res_len)
{
    if (t->cached)
        return;   /* an answer, not an evaluation */
    invoker__cache *c = &inv->cache;
    bool replayable = fail == 0 || fail == INVOKER_FAIL_OBJECTIVE;
    if (!replayable && t->leads)
        twin_retire(c, t);
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
    if (t->attempts == 0) {   /* decided without running: nothing learned */
        if (t->leads)
            twin_retire(c, t);
        return;
    }
    const void *arg = invoker__task_arg(inv, t);
    if (c->on)
        entry_add(c, t->hash, arg, t->arg_len, fail, code, res, res_len);
    invoker__journal *j = &inv->journal;
    uint64_t off;
    if (j->fd >= 0 && !j->error && !t->journaled) {
        uint32_t kind = fail ? INVOKER__JREC_OBJECTIVE : INVOKER__JREC_RESULT;
        if (invoker__journal_append(j, t->hash, arg, t->arg_len, kind, fail ? code : 0,
                                    fail ? NULL : res, fail ? 0 : res_len, &off) == 0) {
            journaled(inv, t, off);
            inv->stats.journaled++;
        }
        synced_soon(inv);
    }
    if (t->leads)   /* not journaled: its twins are served after its callback */
        twin_retire(c, t);
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
        journaled(inv, staged[i], inv->journal.staged[i].off);
    inv->stats.journaled += n;
    synced_soon(inv);
}

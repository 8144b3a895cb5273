/*
 * Identical argument bytes are evaluated once: finished outcomes kept in
 * memory (least recently used goes first, within cache_max_bytes), the
 * journal's records, and tasks being evaluated (an equal one waits for
 * its twin).  One table of keys holds all three, so that a submit looks
 * in one place.  Keys are the argument's hash, but a match is decided by
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
#define KEYS_MIN          256u
#define SYNC_PERIOD_NS    (100000000ull)
#define SHARE_MIN         ((size_t)1024)   /* journal results shared without the cache */

/* An outcome in memory, shared: every task it answers holds a reference
 * until its callback is made, and the cache one while the entry has a key.
 * Kept (in the LRU, within cache_max_bytes) or transient: a journal
 * record's outcome read for an answer, or one too big to keep, which goes
 * with its last pending answer.  Evicting an entry that answers are
 * pending on only drops the cache's reference: the last answer frees it. */
struct invoker__centry {
    invoker__centry *prev, *next;     /* LRU list */
    invoker__cache  *cache;
    uint64_t         hash;
    size_t           arg_len, res_len;
    invoker_failure  fail;            /* 0: success */
    int              code;
    unsigned         refs;
    bool             keyed;           /* it has a key (one reference) */
    bool             kept;            /* in the LRU and its bytes counted */
    size_t           key_slot;        /* its key, unless the keys were */
    uint64_t         key_epoch;       /* rebuilt since */
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

static bool same_arg(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* ---- the keys ---------------------------------------------------------- */

/* Open addressing with the hash beside each reference: a lookup reads no
 * task, entry or record but those whose hash matches (with a hundred
 * thousand tasks in flight, each is a cache miss).  A key refers to one
 * thing, said by the top 2 bits of its hash word: a task being evaluated,
 * a finished outcome in memory or a journal record (the hash keeps 62
 * bits: a collision costs a comparison of bytes, never a wrong answer).
 * Equal arguments may have a key of each kind, found on one probe.  A
 * task or an entry remembers its slot, so that leaving (a tombstone) is a
 * store, which does not wait for the line the way a search would. */
#define KIND_SHIFT    62
#define KEY_TASK      1u
#define KEY_ENTRY     2u
#define KEY_OFF       3u
#define HASH_BITS     (~(uint64_t)0 >> 2)
#define KEY_FREE(k)   (((k).hash >> KIND_SHIFT) == 0)
#define KEY_EMPTY(k)  ((k).hash == 0)
#define TOMBSTONE     1u   /* the hash word of a free slot that was used */

static uint64_t key_word(uint64_t hash, unsigned kind)
{
    return (hash & HASH_BITS) | (uint64_t)kind << KIND_SHIFT;
}

static unsigned key_kind(const struct invoker__key *k)
{
    return (unsigned)(k->hash >> KIND_SHIFT);
}

/* k is a key of these argument hash bits. */
static bool key_of(const struct invoker__key *k, uint64_t hash)
{
    return ((k->hash ^ hash) & HASH_BITS) == 0 && !KEY_FREE(*k);
}

/* A zeroed array of n keys.  A big one is mapped with huge pages asked
 * for: it grows with the tasks in flight and the records (16 MiB for a
 * million), and faulting it in 4 KiB pages cost a fifth of the parent's
 * time in the trivial benchmark with a journal. */
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

static size_t key_put(invoker__cache *c, const struct invoker__key *k)
{
    size_t mask = c->nkey_slots - 1, i = (size_t)k->hash & mask;
    while (!KEY_FREE(c->keys[i]))
        i = (i + 1) & mask;
    if (!KEY_EMPTY(c->keys[i]))
        c->ntombs--;   /* reused */
    c->keys[i] = *k;
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
        /* Tasks and entries moved are not told (each would be a cache
         * miss): they find their key again when they need it. */
        c->epoch++;
        for (size_t i = 0; i < nold; i++)
            if (!KEY_FREE(old[i]))
                (void)key_put(c, &old[i]);
        keys_free(old, nold);
    }
    /* Without memory, fuller but correct while a slot is free. */
    return c->nkeys + c->ntombs + 1 < c->nkey_slots;
}

#define KEY_NONE SIZE_MAX

/* The slot of owner's key (a task's, KEY_TASK, or an entry's, KEY_ENTRY),
 * remembered at slot in epoch; KEY_NONE if it has none (never, unless the
 * bookkeeping is wrong: then a lookup ends at its probe's first empty
 * slot rather than going round for ever). */
static size_t key_home(invoker__cache *c, size_t slot, uint64_t epoch, uint64_t hash,
                       unsigned kind, const void *owner)
{
    if (epoch == c->epoch)
        return slot;
    size_t mask = c->nkey_slots - 1, i = (size_t)hash & mask;
    for (size_t n = 0; n < c->nkey_slots && !KEY_EMPTY(c->keys[i]); n++, i = (i + 1) & mask) {
        const struct invoker__key *k = &c->keys[i];
        if (key_kind(k) == kind &&
            (kind == KEY_TASK ? (const void *)k->ref.t : (const void *)k->ref.e) == owner)
            return i;
    }
    return KEY_NONE;
}

/* The key at slot refers to nothing now: a tombstone.  KEY_NONE: no key
 * to release. */
static void key_release(invoker__cache *c, size_t slot)
{
    if (slot == KEY_NONE)
        return;
    struct invoker__key *k = &c->keys[slot];
    k->ref.off = 0;
    k->hash = TOMBSTONE;
    c->ntombs++;
    c->nkeys--;
}

int invoker__cache_key_add(invoker__cache *c, uint64_t hash, uint64_t off)
{
    if (!key_room(c))
        return -ENOMEM;
    const struct invoker__key k = { key_word(hash, KEY_OFF), { .off = off } };
    (void)key_put(c, &k);
    return 0;
}

static size_t task_key(invoker__cache *c, const invoker__task *t)
{
    return key_home(c, t->twin_slot, t->twin_epoch, t->hash, KEY_TASK, t);
}

static void twin_lead(invoker__cache *c, invoker__task *t)
{
    if (!key_room(c))
        return;   /* it runs without leading: its twins run on their own */
    const struct invoker__key k = { key_word(t->hash, KEY_TASK), { .t = t } };
    t->twin_slot = key_put(c, &k);
    t->twin_epoch = c->epoch;
    t->leads = true;
}

/* t no longer leads: its key goes. */
static void twin_retire(invoker__cache *c, invoker__task *t)
{
    key_release(c, task_key(c, t));
    t->leads = false;
}

/* t's outcome is the journal's record at off: t's key, when it leads,
 * comes to refer to the record at once (a submit during the callbacks
 * about to come is answered from it; the twins already waiting stay on
 * t's list), else a new key does. */
static void journaled(invoker *inv, invoker__task *t, uint64_t off)
{
    invoker__cache *c = &inv->cache;
    t->journaled = true;
    const struct invoker__key k = { key_word(t->hash, KEY_OFF), { .off = off } };
    size_t home = t->leads ? task_key(c, t) : KEY_NONE;
    t->leads = false;
    if (home != KEY_NONE)
        c->keys[home] = k;
    else if (key_room(c))
        (void)key_put(c, &k);
}

/* ---- finished outcomes in memory ------------------------------------- */

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

static size_t entry_bytes(size_t arg_len, size_t res_len)
{
    return ENTRY_HDR + ((res_len + 15u) & ~(size_t)15u) + arg_len;
}

/* e leaves the cache (its key, its place in the LRU): freed unless an
 * answer is pending on it. */
static void entry_drop(invoker__cache *c, invoker__centry *e)
{
    if (e->kept) {
        lru_unlink(c, e);
        c->bytes -= entry_bytes(e->arg_len, e->res_len);
        c->count--;
        e->kept = false;
    }
    if (e->keyed) {
        key_release(c, key_home(c, e->key_slot, e->key_epoch, e->hash, KEY_ENTRY, e));
        e->keyed = false;
        invoker__cache_unref(e);
    }
}

void invoker__cache_unref(invoker__centry *e)
{
    if (--e->refs == 0)
        free(e);
    else if (e->refs == 1 && e->keyed && !e->kept)
        entry_drop(e->cache, e);   /* transient: its last answer went */
}

/* A new entry, in nothing yet, no reference. */
static invoker__centry *entry_new(invoker__cache *c, uint64_t hash, const void *arg,
                                  size_t arg_len, invoker_failure fail, int code,
                                  const void *res, size_t res_len)
{
    size_t bytes = entry_bytes(arg_len, res_len);
    invoker__centry *e = malloc(bytes);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    e->cache = c;
    e->hash = hash;
    e->arg_len = arg_len;
    e->res_len = res_len;
    e->fail = fail;
    e->code = code;
    if (res_len)
        memcpy(entry_res(e), res, res_len);
    if (arg_len)
        memcpy(entry_arg(e), arg, arg_len);
    return e;
}

/* Least recently used first, until bytes more fit (entries answers are
 * pending on go when those are delivered). */
static void make_room(invoker__cache *c, size_t bytes)
{
    for (invoker__centry *e = c->lru_tail, *prev; e && c->bytes + bytes > c->max_bytes; e = prev) {
        prev = e->prev;
        entry_drop(c, e);
    }
}

static void entry_keep(invoker__cache *c, invoker__centry *e)
{
    lru_push_front(c, e);
    e->kept = true;
    c->bytes += entry_bytes(e->arg_len, e->res_len);
    c->count++;
}

/* Keeps t's outcome in memory, in t's own key when it leads. */
static void entry_add(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                      const void *res, size_t res_len)
{
    invoker__cache *c = &inv->cache;
    if (res_len > c->max_bytes || t->arg_len > c->max_bytes)
        return;
    size_t bytes = entry_bytes(t->arg_len, res_len);
    if (bytes > c->max_bytes || (!t->leads && !key_room(c)))
        return;
    make_room(c, bytes);
    invoker__centry *e = entry_new(c, t->hash, invoker__task_arg(inv, t), t->arg_len, fail, code,
                                   res, res_len);
    if (!e)
        return;
    const struct invoker__key k = { key_word(t->hash, KEY_ENTRY), { .e = e } };
    size_t home = t->leads ? task_key(c, t) : KEY_NONE;
    if (t->leads && home == KEY_NONE && !key_room(c)) {   /* its key lost: see key_home */
        free(e);
        return;
    }
    t->leads = false;
    if (home != KEY_NONE) {   /* its key comes to refer to the outcome */
        c->keys[home] = k;
        e->key_slot = home;
    } else {
        e->key_slot = key_put(c, &k);
    }
    e->key_epoch = c->epoch;
    e->keyed = true;
    e->refs = 1;
    entry_keep(c, e);
}

/* t answered by e, which it holds until its callback is made: however
 * many duplicates are pending, the result is in memory once. */
static void answer(invoker__task *t, invoker__centry *e)
{
    e->refs++;
    t->cached_entry = e;
    t->cached_res = entry_res(e);
    t->cached_len = e->res_len;
    t->fail = e->fail;
    t->code = e->code;
    t->cached = true;
}

/* t answered by the journal's record at off, if it holds these bytes.
 * The record becomes an entry with a key, so that the duplicates that
 * follow share it: kept as the cache's own when the cache is on and it
 * fits, else transient (gone with the last answer pending on it) when its
 * result is big enough for a copy of it to matter.  A small one answers t
 * alone: a key for it would cost more than the copy (a resume answering
 * a million tasks at once would double the table of keys), and it is no
 * bigger than the task's own bookkeeping. */
static bool rec_len_shared(size_t res_len)
{
    return res_len >= SHARE_MIN;
}

static bool answer_journaled(invoker *inv, invoker__task *t, uint64_t off, const void *arg)
{
    invoker__cache *c = &inv->cache;
    unsigned char *buf;
    invoker__jrec rec;
    if (invoker__journal_read(&inv->journal, off, arg, t->arg_len, &buf, &rec) != 1)
        return false;
    bool failed = rec.kind == INVOKER__JREC_OBJECTIVE;
    invoker__centry *e = entry_new(c, t->hash, rec.arg, rec.arg_len,
                                   failed ? INVOKER_FAIL_OBJECTIVE : 0, failed ? rec.code : 0,
                                   rec.res, rec.res_len);
    free(buf);
    if (!e)
        return false;
    size_t bytes = entry_bytes(e->arg_len, e->res_len);
    bool keep = c->on && bytes <= c->max_bytes;
    if (keep)
        make_room(c, bytes);
    if ((keep || rec_len_shared(e->res_len)) && key_room(c)) {
        const struct invoker__key k = { key_word(t->hash, KEY_ENTRY), { .e = e } };
        e->key_slot = key_put(c, &k);
        e->key_epoch = c->epoch;
        e->keyed = true;
        e->refs = 1;
        if (keep)
            entry_keep(c, e);
    }
    answer(t, e);
    return true;
}

/* What answers these argument bytes: 1 (t answered from memory or the
 * journal), 2 (a twin in flight, in *twin) or 0.  Memory first, then the
 * journal (a read, so a second look along the probe), then the twin. */
static int key_find(invoker *inv, invoker__task *t, const void *arg, invoker__task **twin)
{
    invoker__cache *c = &inv->cache;
    size_t mask = c->nkey_slots - 1, first = (size_t)t->hash & mask;
    bool records = false;
    *twin = NULL;
    for (size_t i = first; !KEY_EMPTY(c->keys[i]); i = (i + 1) & mask) {
        const struct invoker__key *k = &c->keys[i];
        if (!key_of(k, t->hash))
            continue;
        if (key_kind(k) == KEY_ENTRY) {
            invoker__centry *e = k->ref.e;
            if (same_arg(entry_arg(e), e->arg_len, arg, t->arg_len)) {
                answer(t, e);
                if (e->kept) {
                    lru_unlink(c, e);
                    lru_push_front(c, e);
                }
                return 1;
            }
        } else if (key_kind(k) == KEY_OFF) {
            records = true;
        } else if (!*twin) {
            invoker__task *d = k->ref.t;
            if (same_arg(invoker__task_arg(inv, d), d->arg_len, arg, t->arg_len))
                *twin = d;
        }
    }
    for (size_t i = first; records && !KEY_EMPTY(c->keys[i]); i = (i + 1) & mask) {
        const struct invoker__key *k = &c->keys[i];
        if (key_of(k, t->hash) && key_kind(k) == KEY_OFF &&
            answer_journaled(inv, t, k->ref.off, arg))
            return 1;
    }
    return *twin ? 2 : 0;
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
    c->nkey_slots = KEYS_MIN;
    if (!(c->keys = keys_alloc(c->nkey_slots)))
        return -ENOMEM;
    return 0;
}

void invoker__cache_free(invoker *inv)
{
    invoker__cache *c = &inv->cache;
    /* Every task is released by now, and with it every transient entry. */
    for (invoker__centry *e = c->lru_head, *next; e; e = next) {
        next = e->next;
        e->kept = e->keyed = false;
        invoker__cache_unref(e);
    }
    keys_free(c->keys, c->nkey_slots);
    memset(c, 0, sizeof *c);
}

/* ---- the hooks -------------------------------------------------------- */

/* SYNC_BATCH: the timer comes back for the sync (invoker__journal_tick). */
static void synced_soon(invoker *inv)
{
    const invoker__journal *j = &inv->journal;
    if (j->dirty_since && !inv->cfg.inline_mode)
        invoker__wake_arm_timer(inv, j->dirty_since + SYNC_PERIOD_NS);
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
            invoker__wake_kick(inv);
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
        entry_add(inv, t, fail, code, res, res_len);
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
    /* Its key now refers to its outcome (in memory, in the journal) or is
     * gone; its twins are served after its callback. */
    if (t->leads)
        twin_retire(c, t);
}

bool invoker__cache_stage(invoker *inv, invoker__task *t, invoker_failure fail, int code,
                          const void *res, size_t res_len)
{
    if (t->cached || t->journaled)
        return false;
#if defined(__GNUC__) || defined(__clang__)
    /* Its key comes to refer to the record after the write (journaled):
     * a cache miss, fetched while the write runs. */
    if (t->leads && t->twin_epoch == inv->cache.epoch)
        __builtin_prefetch(&inv->cache.keys[t->twin_slot], 1);
#endif
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

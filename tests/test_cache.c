/* The cache: identical argument bytes evaluated once per invoker;
 * finished outcomes answered from memory, twins in flight merged, and the
 * twin rules when the task they wait for has no answer to give. */
#include "outcomes.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* Every hash the cache computes collides when set (-Wl,--wrap, see
 * tests/CMakeLists.txt): matching must then rest on the bytes alone. */
static int collide;
uint64_t __real_invoker__hash(const void *data, size_t len, uint64_t seed);
uint64_t __wrap_invoker__hash(const void *data, size_t len, uint64_t seed);
uint64_t __wrap_invoker__hash(const void *data, size_t len, uint64_t seed)
{
    if (collide && seed == INVOKER__HASH_SEED)
        return 42;
    return __real_invoker__hash(data, len, seed);
}

typedef struct fixture {
    outcomes o;
    steer   *st;
    invoker *inv;
    int      fds;
} fixture;

static invoker *make(fixture *f, unsigned workers, void (*tweak)(invoker_config *))
{
    invoker_config cfg;
    outcomes_config(&f->o, &cfg, f->st, workers);
    cfg.cache = 1;
    if (tweak)
        tweak(&cfg);
    assert_int_equal(invoker_create(&f->inv, &cfg), 0);
    f->o.inv = track(f->inv);
    return f->inv;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->fds = count_open_fds();
    f->st = steer_map();
    f->st->slow_ms = 200;
    outcomes_init(&f->o, 4096);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    destroy_leftovers();
    collide = 0;
    assert_int_equal(count_open_fds(), f->fds);
    assert_int_equal(count_children(), 0);
    munmap(f->st, sizeof *f->st);
    free(f->o.s);
    free(f);
    return 0;
}

static void finish(fixture *f)
{
    assert_int_equal(destroy_tracked(f->inv), 0);
    f->inv = NULL;
}

static void test_hundred_identical_in_flight_one_evaluation(void **state)
{
    fixture *f = *state;
    f->st->plan[7][0] = ACT_SLOW;   /* still running while the others come */
    invoker *inv = make(f, 4, NULL);
    invoker_id ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = submit_key(inv, 7, 100, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(atomic_load(&f->st->evals[7]), 1);
    int cached = 0;
    for (int i = 0; i < 100; i++) {
        seen *s = seen_get(&f->o, ids[i]);
        assert_answer(s, 7);
        cached += s->cached;
        if (s->cached) {
            assert_int_equal(s->attempts, 0);
            assert_int_equal(s->worker, -1);
        } else {
            assert_int_equal(s->attempts, 1);
        }
    }
    assert_int_equal(cached, 99);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cached, 99);
    assert_int_equal(st.succeeded, 100);
    finish(f);
}

static int in_submit;
static void no_callback_inside_submit(outcomes *o, const invoker_task *t)
{
    (void)o;
    (void)t;
    assert_int_equal(in_submit, 0);
}

static void test_finished_outcomes_answered_from_memory_at_the_next_poll(void **state)
{
    fixture *f = *state;
    f->st->plan[3][0] = ACT_FAIL;
    invoker *inv = make(f, 2, NULL);
    f->o.hook = no_callback_inside_submit;
    invoker_id a = submit_key(inv, 1, 10, 0), b = submit_key(inv, 3, 10, 0);
    assert_int_equal(invoker_wait(inv), 0);
    in_submit = 1;
    invoker_id a2 = submit_key(inv, 1, 10, 0), b2 = submit_key(inv, 3, 10, 0);
    in_submit = 0;
    assert_int_equal(f->o.calls, 2);
    assert_int_equal(invoker_cancel(inv, a2), -ENOENT);   /* answered: decided */
    assert_int_equal(invoker_poll(inv, 0), 2);    /* both answers, without waiting */
    invoker_id c = submit_key(inv, 1, 11, 0);   /* one byte longer: another argument */
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(atomic_load(&f->st->evals[1]), 2);   /* a and c */
    assert_int_equal(atomic_load(&f->st->evals[3]), 1);
    assert_answer(seen_get(&f->o, a2), 1);
    assert_true(seen_get(&f->o, a2)->cached);
    assert_int_equal(seen_get(&f->o, a2)->attempts, 0);
    assert_int_equal(seen_get(&f->o, a2)->worker, -1);
    assert_false(seen_get(&f->o, a)->cached);
    assert_false(seen_get(&f->o, c)->cached);
    seen *sb = seen_get(&f->o, b), *sb2 = seen_get(&f->o, b2);
    assert_int_equal(sb->failure, INVOKER_FAIL_OBJECTIVE);
    assert_int_equal(sb2->errors, 1);
    assert_int_equal(sb2->failure, INVOKER_FAIL_OBJECTIVE);
    assert_int_equal(sb2->code, sb->code);
    assert_true(sb2->cached);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cached, 2);
    finish(f);
}

static void test_crashes_and_timeouts_are_not_kept(void **state)
{
    fixture *f = *state;
    f->st->plan[5][0] = ACT_CRASH;
    f->st->plan[6][0] = ACT_HANG;
    invoker *inv = make(f, 2, NULL);
    invoker_id a = submit_key(inv, 5, 0, 0), b = submit_key(inv, 6, 0, 0.1);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(seen_get(&f->o, a)->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(seen_get(&f->o, b)->failure, INVOKER_FAIL_TIMEOUT);
    invoker_id a2 = submit_key(inv, 5, 0, 0), b2 = submit_key(inv, 6, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_answer(seen_get(&f->o, a2), 5);
    assert_answer(seen_get(&f->o, b2), 6);
    assert_false(seen_get(&f->o, a2)->cached);
    assert_int_equal(atomic_load(&f->st->evals[5]), 2);
    assert_int_equal(atomic_load(&f->st->evals[6]), 2);
    finish(f);
}

/* The twin is cancelled: each task waiting for it runs on its own. */
static void test_twin_cancelled_each_waiting_duplicate_runs_on_its_own(void **state)
{
    fixture *f = *state;
    f->st->plan[9][0] = ACT_HANG;
    invoker *inv = make(f, 2, NULL);
    invoker_id lead = submit_key(inv, 9, 30, 0);
    while (atomic_load(&f->st->evals[9]) == 0)
        assert_true(invoker_poll(inv, 5) >= 0);
    invoker_id d1 = submit_key(inv, 9, 30, 0), d2 = submit_key(inv, 9, 30, 0);
    assert_int_equal(invoker_cancel(inv, lead), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(seen_get(&f->o, lead)->failure, INVOKER_FAIL_CANCELLED);
    for (invoker_id d = d1; d <= d2; d++) {
        seen *s = seen_get(&f->o, d);
        assert_answer(s, 9);
        assert_false(s->cached);
        assert_int_equal(s->attempts, 1);
    }
    assert_int_equal(atomic_load(&f->st->evals[9]), 3);
    finish(f);
}

/* The twin times out: each runs with its own timeout (d2's is too short
 * for the slow second and third evaluations). */
static void test_twin_timed_out_duplicates_run_with_their_own_timeouts(void **state)
{
    fixture *f = *state;
    f->st->plan[11][0] = ACT_HANG;
    for (unsigned n = 1; n < OUT_PLAN; n++)
        f->st->plan[11][n] = ACT_SLOW;
    invoker *inv = make(f, 2, NULL);
    invoker_id lead = submit_key(inv, 11, 0, 0.1);
    invoker_id d1 = submit_key(inv, 11, 0, 0), d2 = submit_key(inv, 11, 0, 0.05);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(seen_get(&f->o, lead)->failure, INVOKER_FAIL_TIMEOUT);
    assert_answer(seen_get(&f->o, d1), 11);
    assert_false(seen_get(&f->o, d1)->cached);
    assert_int_equal(seen_get(&f->o, d2)->errors, 1);
    assert_int_equal(seen_get(&f->o, d2)->failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(atomic_load(&f->st->evals[11]), 3);
    finish(f);
}

static void retries_one(invoker_config *cfg)
{
    cfg->retries = 1;
}

/* The twin crashes past its retries: the duplicate gets retries of its
 * own (its first run crashes too, its retry succeeds).  While the twin
 * is retried, it waits. */
static void test_twin_crashed_duplicate_runs_with_its_own_retries(void **state)
{
    fixture *f = *state;
    for (unsigned n = 0; n < 3; n++)
        f->st->plan[12][n] = ACT_CRASH;
    f->st->plan[13][0] = ACT_CRASH;   /* crashes once: its retry answers both */
    invoker *inv = make(f, 1, retries_one);
    invoker_id lead = submit_key(inv, 12, 0, 0), d = submit_key(inv, 12, 0, 0);
    invoker_id lead13 = submit_key(inv, 13, 0, 0), d13 = submit_key(inv, 13, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(seen_get(&f->o, lead)->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(seen_get(&f->o, lead)->attempts, 2);
    assert_answer(seen_get(&f->o, d), 12);
    assert_int_equal(seen_get(&f->o, d)->attempts, 2);
    assert_false(seen_get(&f->o, d)->cached);
    assert_int_equal(atomic_load(&f->st->evals[12]), 4);
    assert_answer(seen_get(&f->o, lead13), 13);
    assert_answer(seen_get(&f->o, d13), 13);
    assert_true(seen_get(&f->o, d13)->cached);
    assert_int_equal(atomic_load(&f->st->evals[13]), 2);
    finish(f);
}

/* Shut down under its twin: every task gets one SHUTDOWN, no more. */
static void test_twin_shut_down_each_duplicate_reported_once(void **state)
{
    fixture *f = *state;
    f->st->plan[14][0] = ACT_HANG;
    invoker *inv = make(f, 1, NULL);
    invoker_id lead = submit_key(inv, 14, 0, 0);
    invoker_id d1 = submit_key(inv, 14, 0, 0), d2 = submit_key(inv, 14, 0, 0);
    while (atomic_load(&f->st->evals[14]) == 0)
        assert_true(invoker_poll(inv, 5) >= 0);
    finish(f);
    for (invoker_id id = lead; id <= d2; id++) {
        seen *s = seen_get(&f->o, id);
        assert_int_equal(s->errors, 1);
        assert_int_equal(s->results, 0);
        assert_int_equal(s->failure, INVOKER_FAIL_SHUTDOWN);
        assert_false(s->cached);
    }
    assert_true(d1 > lead);
    assert_int_equal(atomic_load(&f->st->evals[14]), 1);
}

static invoker_id to_cancel;
static void cancel_in_callback(outcomes *o, const invoker_task *t)
{
    if (to_cancel && t->id != to_cancel) {
        assert_int_equal(invoker_cancel(o->inv, to_cancel), 0);
        to_cancel = 0;
    }
}

/* Cancelling a waiting duplicate cancels only it, before the answer or
 * from inside its twin's callback. */
static void test_cancelling_a_waiting_duplicate_cancels_only_it(void **state)
{
    fixture *f = *state;
    f->st->plan[15][0] = ACT_SLOW;
    invoker *inv = make(f, 2, NULL);
    f->o.hook = cancel_in_callback;
    invoker_id lead = submit_key(inv, 15, 0, 0);
    invoker_id d1 = submit_key(inv, 15, 0, 0), d2 = submit_key(inv, 15, 0, 0);
    invoker_id d3 = submit_key(inv, 15, 0, 0);
    assert_int_equal(invoker_cancel(inv, d1), 0);
    to_cancel = d3;   /* by lead's callback */
    assert_int_equal(invoker_wait(inv), 0);
    assert_answer(seen_get(&f->o, lead), 15);
    assert_false(seen_get(&f->o, lead)->cached);
    assert_answer(seen_get(&f->o, d2), 15);
    assert_true(seen_get(&f->o, d2)->cached);
    assert_int_equal(seen_get(&f->o, d1)->failure, INVOKER_FAIL_CANCELLED);
    assert_int_equal(seen_get(&f->o, d3)->failure, INVOKER_FAIL_CANCELLED);
    assert_int_equal(seen_get(&f->o, d1)->errors + seen_get(&f->o, d3)->errors, 2);
    assert_int_equal(atomic_load(&f->st->evals[15]), 1);
    finish(f);
}

/* The keys' epoch (rebuilds of the table, ever) taken past 2^32: a task
 * that remembered its slot at epoch 0, before, must not take that slot
 * for its own after a rebuild that a 32-bit epoch would number 0 again.
 * Its key is then found by search, and every key goes with its task. */
static void test_key_epoch_past_two_to_the_32_finds_keys_again(void **state)
{
    fixture *f = *state;
    /* A key whose slot moves when the table grows from 256 slots to 1024
     * (bits 8-9 of its hash not both zero), so the slot it remembers is
     * a wrong one after the rebuild. */
    uint32_t lead = 0;
    for (;; lead++) {
        targ a = targ_make(lead, 0);
        if ((invoker__hash(&a, targ_size(&a), INVOKER__HASH_SEED) >> 8) & 3)
            break;
    }
    f->st->plan[lead][0] = ACT_SLOW;
    invoker *inv = make(f, 1, NULL);
    assert_int_equal(inv->cache.nkey_slots, 256);
    invoker_id first = submit_key(inv, lead, 0, 0);   /* leads at epoch 0 */
    assert_int_equal(inv->cache.epoch, 0);
    inv->cache.epoch = UINT32_MAX;   /* as after 2^32 - 1 rebuilds */
    invoker_id ids[200];
    for (uint32_t k = 0; k < 200; k++)   /* queued behind it: the table grows */
        ids[k] = submit_key(inv, 1000 + k, 0, 0);
    assert_true(inv->cache.epoch > UINT32_MAX);
    assert_int_equal(inv->cache.nkey_slots, 1024);
    invoker_id again = submit_key(inv, lead, 0, 0);   /* finds its twin */
    assert_int_equal(invoker_wait(inv), 0);
    assert_answer(seen_get(&f->o, first), lead);
    assert_answer(seen_get(&f->o, again), lead);
    assert_true(seen_get(&f->o, again)->cached);
    for (uint32_t k = 0; k < 200; k++)
        assert_answer(seen_get(&f->o, ids[k]), 1000 + k);
    /* No task is in flight: no key refers to one, and each outcome kept
     * has exactly one key. */
    size_t tasks = 0, entries = 0;
    for (size_t i = 0; i < inv->cache.nkey_slots; i++) {
        unsigned kind = (unsigned)(inv->cache.keys[i].hash >> 62);
        tasks += kind == 1;
        entries += kind == 2;
    }
    assert_int_equal(tasks, 0);
    assert_int_equal(entries, inv->cache.count);
    assert_int_equal(inv->cache.count, 201);
    assert_int_equal(atomic_load(&f->st->evals[lead]), 1);
    finish(f);
}

/* ---- one buffer for every duplicate answer ------------------------------- */

#define BIG_RES   ((size_t)4 << 20)
#define BIG_DUPS  32u

static unsigned char big_byte(uint32_t key, size_t i)
{
    return (unsigned char)(key * 31u + i / 4096u + i);
}

/* 4 MiB from the key in the argument's first 4 bytes. */
static int big_objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint32_t key;
    if (len != sizeof key)
        return 1;
    memcpy(&key, arg, sizeof key);
    static unsigned char chunk[65536];
    for (size_t at = 0; at < BIG_RES; at += sizeof chunk) {
        for (size_t i = 0; i < sizeof chunk; i++)
            chunk[i] = big_byte(key, at + i);
        if (invoker_result_write(out, chunk, sizeof chunk) != 0)
            return 2;
    }
    return 0;
}

typedef struct big_seen {
    unsigned results, right, cached, errors;
} big_seen;

static void big_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    big_seen *b = user;
    uint32_t key;
    memcpy(&key, t->arg, sizeof key);
    const unsigned char *p = res;
    bool right = len == BIG_RES;
    for (size_t i = 0; right && i < len; i++)
        right = p[i] == big_byte(key, i);
    b->results++;
    b->right += right;
    b->cached += t->cached != 0;
}

static void big_error(const invoker_task *t, invoker_failure failure, int code, void *user)
{
    (void)t;
    (void)failure;
    (void)code;
    ((big_seen *)user)->errors++;
}

static invoker *big_invoker(big_seen *b, const char *journal, int cache, size_t max_bytes)
{
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 1;
    cfg.objective = big_objective;
    cfg.on_result = big_result;
    cfg.on_error = big_error;
    cfg.user = b;
    cfg.cache = cache;
    cfg.cache_max_bytes = max_bytes;
    cfg.journal = journal;
    cfg.journal_key = "big";
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    return track(inv);
}

static void big_submit(invoker *inv, uint32_t key)
{
    invoker_id id;
    assert_int_equal(invoker_submit(inv, &key, sizeof key, NULL, &id), 0);
}

static size_t rss_bytes(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    assert_non_null(fp);
    unsigned long size, rss;
    assert_int_equal(fscanf(fp, "%lu %lu", &size, &rss), 2);
    fclose(fp);
    return rss * (size_t)sysconf(_SC_PAGESIZE);
}

/* 32 duplicates answered (pending until the wait) hold one copy of the
 * result between them, from memory and from the journal alike: resident
 * memory grows by far less than 32 results' worth, and each gets every
 * byte right. */
static void test_duplicates_share_one_copy_of_a_large_result(void **state)
{
    (void)state;
    char dir[] = "/tmp/invoker-cache-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/j", dir);
    for (int from_journal = 0; from_journal < 2; from_journal++) {
        big_seen b = { 0 };
        /* First the evaluation: kept in memory, or written to the journal
         * for an invoker without a cache to answer. */
        invoker *inv = big_invoker(&b, from_journal ? path : NULL, !from_journal, 0);
        big_submit(inv, 5);
        assert_int_equal(invoker_wait(inv), 0);
        if (from_journal) {
            assert_int_equal(destroy_tracked(inv), 0);
            inv = big_invoker(&b, path, 0, 0);
        }
        size_t before = rss_bytes();
        for (unsigned i = 0; i < BIG_DUPS; i++)
            big_submit(inv, 5);
        size_t grown = rss_bytes() - before;
        print_message("%s: %u answers pending, resident memory +%.1f MiB\n",
                      from_journal ? "journal" : "memory", BIG_DUPS, (double)grown / (1 << 20));
        assert_true(grown < 3 * BIG_RES);   /* a copy each: 32 */
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(b.results, BIG_DUPS + 1);
        assert_int_equal(b.right, BIG_DUPS + 1);
        assert_int_equal(b.cached, BIG_DUPS);
        assert_int_equal(b.errors, 0);
        if (from_journal)   /* the transient entry went with its answers */
            assert_int_equal(inv->cache.nkeys, 1);
        assert_int_equal(destroy_tracked(inv), 0);
    }
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* An entry evicted while answers are pending on it stays until they are
 * delivered: A answers two, then B (from the journal) takes its room, and
 * A comes from the journal again; every byte right, the budget kept. */
static void test_eviction_waits_for_the_answers_pending_on_an_entry(void **state)
{
    (void)state;
    char dir[] = "/tmp/invoker-cache-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/j", dir);
    big_seen b = { 0 };
    invoker *inv = big_invoker(&b, path, 0, 0);
    big_submit(inv, 1);
    big_submit(inv, 2);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    memset(&b, 0, sizeof b);
    size_t max = BIG_RES + BIG_RES / 2;   /* room for one */
    inv = big_invoker(&b, path, 1, max);
    big_submit(inv, 1);
    big_submit(inv, 1);
    assert_int_equal(inv->cache.count, 1);
    big_submit(inv, 2);   /* evicts 1, two answers pending on it */
    assert_int_equal(inv->cache.count, 1);
    assert_true(inv->cache.bytes <= max);
    big_submit(inv, 1);   /* from the journal again, evicting 2 */
    assert_int_equal(inv->cache.count, 1);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b.results, 4);
    assert_int_equal(b.right, 4);
    assert_int_equal(b.cached, 4);
    assert_int_equal(b.errors, 0);
    assert_true(inv->cache.bytes <= max);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void small_cache(invoker_config *cfg)
{
    cfg->cache_max_bytes = 1200;
}

/* Within cache_max_bytes the least recently used goes; a result too big
 * for the whole cache is never kept. */
static void test_cache_max_bytes_evicts_least_recently_used(void **state)
{
    fixture *f = *state;
    f->st->plan[30][0] = ACT_BIG;
    f->st->plan[30][1] = ACT_BIG;
    invoker *inv = make(f, 1, small_cache);
    /* Each entry costs its header, 48 result bytes and 158 argument
     * bytes (286 in all): four fit in 1200, five do not. */
    for (uint32_t k = 20; k < 24; k++) {
        submit_key(inv, k, 150, 0);
        assert_int_equal(invoker_wait(inv), 0);
    }
    submit_key(inv, 20, 150, 0);   /* answered: 20 becomes the most recent */
    assert_int_equal(invoker_wait(inv), 0);
    submit_key(inv, 24, 150, 0);   /* evicts 21, the least recent */
    assert_int_equal(invoker_wait(inv), 0);
    submit_key(inv, 20, 150, 0);
    submit_key(inv, 21, 150, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(atomic_load(&f->st->evals[20]), 1);
    assert_int_equal(atomic_load(&f->st->evals[21]), 2);
    submit_key(inv, 30, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    submit_key(inv, 30, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(atomic_load(&f->st->evals[30]), 2);
    assert_true(inv->cache.bytes <= 1200);
    finish(f);
}

/* With every hash equal, equal bytes still match and unequal do not. */
static void test_matching_compares_bytes_not_hashes(void **state)
{
    fixture *f = *state;
    collide = 1;
    f->st->plan[40][0] = ACT_SLOW;
    invoker *inv = make(f, 2, NULL);
    invoker_id a = submit_key(inv, 40, 20, 0), b = submit_key(inv, 41, 20, 0);
    invoker_id a2 = submit_key(inv, 40, 20, 0);   /* a's twin, not b's */
    assert_int_equal(invoker_wait(inv), 0);
    invoker_id b2 = submit_key(inv, 41, 20, 0), c = submit_key(inv, 42, 20, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_answer(seen_get(&f->o, a), 40);
    assert_answer(seen_get(&f->o, a2), 40);
    assert_answer(seen_get(&f->o, b), 41);
    assert_answer(seen_get(&f->o, b2), 41);
    assert_answer(seen_get(&f->o, c), 42);
    assert_true(seen_get(&f->o, a2)->cached && seen_get(&f->o, b2)->cached);
    assert_false(seen_get(&f->o, c)->cached);
    assert_int_equal(atomic_load(&f->st->evals[40]), 1);
    assert_int_equal(atomic_load(&f->st->evals[41]), 1);
    assert_int_equal(atomic_load(&f->st->evals[42]), 1);
    finish(f);
}

static void inline_mode(invoker_config *cfg)
{
    cfg->inline_mode = 1;
}

static void test_inline_mode_merges_twins_and_answers_from_memory(void **state)
{
    fixture *f = *state;
    invoker *inv = make(f, 1, inline_mode);
    invoker_id a = submit_key(inv, 50, 0, 0), b = submit_key(inv, 50, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_id c = submit_key(inv, 50, 0, 0);
    assert_int_equal(invoker_poll(inv, 0), 1);
    assert_answer(seen_get(&f->o, a), 50);
    assert_answer(seen_get(&f->o, b), 50);
    assert_answer(seen_get(&f->o, c), 50);
    assert_true(seen_get(&f->o, b)->cached && seen_get(&f->o, c)->cached);
    assert_int_equal(atomic_load(&f->st->evals[50]), 1);
    finish(f);
}

static void test_without_cache_identical_arguments_each_run(void **state)
{
    fixture *f = *state;
    invoker_config cfg;
    outcomes_config(&f->o, &cfg, f->st, 2);
    assert_int_equal(invoker_create(&f->inv, &cfg), 0);
    track(f->inv);
    for (int i = 0; i < 5; i++)
        submit_key(f->inv, 60, 0, 0);
    assert_int_equal(invoker_wait(f->inv), 0);
    assert_int_equal(atomic_load(&f->st->evals[60]), 5);
    invoker_stats st;
    invoker_get_stats(f->inv, &st);
    assert_int_equal(st.cached, 0);
    finish(f);
}

/* The argument's first 8 bytes, doubled: a result that says which
 * argument it answers. */
static int twice(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    uint64_t v;
    if (len != sizeof v)
        return 1;
    memcpy(&v, arg, sizeof v);
    atomic_fetch_add((_Atomic unsigned *)ctx, 1);
    v *= 2;
    return invoker_result_write(out, &v, sizeof v);
}

typedef struct many { size_t results, cached, wrong; } many;

static void many_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    many *m = user;
    uint64_t a, r;
    memcpy(&a, t->arg, sizeof a);
    memcpy(&r, res, sizeof r);
    m->results++;
    m->cached += t->cached != 0;
    m->wrong += len != sizeof r || r != 2 * a;
}

/* 100,000 distinct arguments at once: the table of keys grows past the
 * size that gets huge pages, rebuilt while every task leads, and each
 * task still finds its key when it leaves (then answered from memory). */
static void test_a_hundred_thousand_distinct_in_flight_then_all_answered(void **state)
{
    fixture *f = *state;
    enum { N = 100000 };
    many m = { 0 };
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = twice;
    cfg.objective_ctx = &f->st->evals[0];
    cfg.on_result = many_result;
    cfg.on_error = mute_error;
    cfg.user = &m;
    cfg.inline_mode = 1;
    cfg.cache = 1;
    assert_int_equal(invoker_create(&f->inv, &cfg), 0);
    track(f->inv);
    for (int round = 0; round < 2; round++) {
        for (uint64_t i = 0; i < N; i++)
            assert_int_equal(invoker_submit(f->inv, &i, sizeof i, NULL, NULL), 0);
        assert_int_equal(invoker_wait(f->inv), 0);
    }
    assert_true(f->inv->cache.nkey_slots * sizeof(struct invoker__key) >= ((size_t)2 << 20));
    assert_int_equal(m.results, 2 * N);
    assert_int_equal(m.wrong, 0);
    assert_int_equal(m.cached, N);
    assert_int_equal(atomic_load(&f->st->evals[0]), N);
    assert_int_equal(f->inv->cache.nkeys, f->inv->cache.count);   /* the outcomes' */
    assert_int_equal(f->inv->cache.count, N);
    finish(f);
}

static void capture_tail(invoker_config *cfg)
{
    cfg->capture_stderr = INVOKER_STDERR_TAIL;
}

/* An answer is not a run: a twin served by its leader and a task answered
 * from memory get attempts 0, worker -1, no run or CPU time, max_rss_kib
 * -1 and no stderr tail, while the leader that ran gets its own (its tail
 * is what it wrote). */
static void test_answers_carry_none_of_a_runs_forensics(void **state)
{
    fixture *f = *state;
    f->st->plan[16][0] = ACT_SAY;
    invoker *inv = make(f, 2, capture_tail);
    invoker_id lead = submit_key(inv, 16, 0, 0);
    invoker_id twin = submit_key(inv, 16, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_id later = submit_key(inv, 16, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    const seen *l = seen_get(&f->o, lead);
    assert_answer(l, 16);
    assert_false(l->cached);
    assert_int_equal(l->attempts, 1);
    assert_true(l->tail);
    assert_true(l->run_seconds > 0);
    for (invoker_id id = twin; id <= later; id += later - twin) {
        const seen *s = seen_get(&f->o, id);
        assert_answer(s, 16);
        assert_true(s->cached);
        assert_int_equal(s->attempts, 0);
        assert_int_equal(s->worker, -1);
        assert_true(s->run_seconds == 0);
        assert_true(s->cpu_seconds == 0);
        assert_int_equal(s->max_rss_kib, -1);
        assert_false(s->tail);
    }
    assert_int_equal(atomic_load(&f->st->evals[16]), 1);
    finish(f);
}

static char tag_w, tag_x, tag_y, tag_z;

static invoker_id submit_tagged(invoker *inv, uint32_t key, void *tag)
{
    targ a = targ_make(key, 0);
    invoker_id id = 0;
    assert_int_equal(invoker_submit(inv, &a, targ_size(&a), tag, &id), 0);
    return id;
}

/* invoker_cancel_tag reaches the tasks waiting for a twin, each alone: a
 * waiter of the tag is cancelled while its leader (another tag) runs on
 * for its other waiter; a leader of the tag is cancelled with its waiter
 * of the tag, and its waiter of another tag runs on its own. */
static void test_cancel_tag_cancels_waiting_twins_each_alone(void **state)
{
    fixture *f = *state;
    f->st->plan[17][0] = ACT_SLOW;
    f->st->plan[18][0] = ACT_HANG;
    invoker *inv = make(f, 2, NULL);
    invoker_id l17 = submit_tagged(inv, 17, &tag_x);
    invoker_id y17 = submit_tagged(inv, 17, &tag_y);
    invoker_id w17 = submit_tagged(inv, 17, &tag_w);
    assert_int_equal(invoker_cancel_tag(inv, &tag_y), 1);
    invoker_id l18 = submit_tagged(inv, 18, &tag_z);
    while (atomic_load(&f->st->evals[18]) == 0)
        assert_true(invoker_poll(inv, 5) >= 0);
    invoker_id z18 = submit_tagged(inv, 18, &tag_z);
    invoker_id x18 = submit_tagged(inv, 18, &tag_x);
    assert_int_equal(invoker_cancel_tag(inv, &tag_z), 2);   /* l18, z18 */
    assert_int_equal(invoker_wait(inv), 0);

    assert_answer(seen_get(&f->o, l17), 17);
    assert_false(seen_get(&f->o, l17)->cached);
    assert_int_equal(seen_get(&f->o, y17)->errors, 1);
    assert_int_equal(seen_get(&f->o, y17)->results, 0);
    assert_int_equal(seen_get(&f->o, y17)->failure, INVOKER_FAIL_CANCELLED);
    assert_answer(seen_get(&f->o, w17), 17);
    assert_true(seen_get(&f->o, w17)->cached);
    assert_int_equal(atomic_load(&f->st->evals[17]), 1);

    for (invoker_id id = l18; id <= z18; id += z18 - l18) {
        assert_int_equal(seen_get(&f->o, id)->errors, 1);
        assert_int_equal(seen_get(&f->o, id)->results, 0);
        assert_int_equal(seen_get(&f->o, id)->failure, INVOKER_FAIL_CANCELLED);
    }
    assert_answer(seen_get(&f->o, x18), 18);   /* ran on its own */
    assert_false(seen_get(&f->o, x18)->cached);
    assert_int_equal(seen_get(&f->o, x18)->attempts, 1);
    assert_int_equal(atomic_load(&f->st->evals[18]), 2);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cancelled, 3);
    finish(f);
}

/* A task answered from memory at its submit is decided: invoker_cancel
 * gives -ENOENT for it and invoker_cancel_tag does not count it, and its
 * answer still comes, once. */
static void test_an_answered_task_is_not_cancelled_by_id_nor_by_tag(void **state)
{
    fixture *f = *state;
    invoker *inv = make(f, 1, NULL);
    invoker_id first = submit_tagged(inv, 19, &tag_x);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_id a = submit_tagged(inv, 19, &tag_x), b = submit_tagged(inv, 19, &tag_y);
    assert_int_equal(invoker_cancel(inv, a), -ENOENT);
    assert_int_equal(invoker_cancel_tag(inv, &tag_y), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_answer(seen_get(&f->o, first), 19);
    for (invoker_id id = a; id <= b; id++) {
        assert_answer(seen_get(&f->o, id), 19);
        assert_true(seen_get(&f->o, id)->cached);
    }
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cancelled, 0);
    assert_int_equal(atomic_load(&f->st->evals[19]), 1);
    finish(f);
}

static void adaptive(invoker_config *cfg)
{
    cfg->timeout_factor = 10;
    cfg->timeout_min = 0.1;
}

/* Adaptive timeouts learn from runs only: 100 answers from memory (0 s
 * each) would make the median 0 and the timeout timeout_min (0.1 s), and
 * a task of 0.3 s would time out; with the median of the ten runs of
 * 50 ms it gets 0.5 s or more, and succeeds. */
static void test_adaptive_median_ignores_answers(void **state)
{
    fixture *f = *state;
    f->st->slow_ms = 50;
    for (uint32_t k = 20; k < 30; k++)
        f->st->plan[k][0] = ACT_SLOW;
    f->st->plan[30][0] = ACT_SLOW;
    invoker *inv = make(f, 2, adaptive);
    for (uint32_t k = 20; k < 30; k++)
        (void)submit_tagged(inv, k, NULL);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < 100; i++)
        (void)submit_tagged(inv, 20 + (uint32_t)i % 10, NULL);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cached, 100);
    f->st->slow_ms = 300;
    invoker_id id = submit_tagged(inv, 30, NULL);
    assert_int_equal(invoker_wait(inv), 0);
    assert_answer(seen_get(&f->o, id), 30);
    finish(f);
}

int main(void)
{
    set_filter();
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_hundred_identical_in_flight_one_evaluation),
        T(test_finished_outcomes_answered_from_memory_at_the_next_poll),
        T(test_crashes_and_timeouts_are_not_kept),
        T(test_twin_cancelled_each_waiting_duplicate_runs_on_its_own),
        T(test_twin_timed_out_duplicates_run_with_their_own_timeouts),
        T(test_twin_crashed_duplicate_runs_with_its_own_retries),
        T(test_twin_shut_down_each_duplicate_reported_once),
        T(test_cancelling_a_waiting_duplicate_cancels_only_it),
        T(test_key_epoch_past_two_to_the_32_finds_keys_again),
        T(test_duplicates_share_one_copy_of_a_large_result),
        T(test_eviction_waits_for_the_answers_pending_on_an_entry),
        T(test_cache_max_bytes_evicts_least_recently_used),
        T(test_matching_compares_bytes_not_hashes),
        T(test_inline_mode_merges_twins_and_answers_from_memory),
        T(test_without_cache_identical_arguments_each_run),
        T(test_a_hundred_thousand_distinct_in_flight_then_all_answered),
        T(test_answers_carry_none_of_a_runs_forensics),
        T(test_cancel_tag_cancels_waiting_twins_each_alone),
        T(test_an_answered_task_is_not_cancelled_by_id_nor_by_tag),
        T(test_adaptive_median_ignores_answers),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

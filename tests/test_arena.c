/* The argument arena: blocks recycled and trimmed, arguments intact while
 * it grows (even under a callback that reads one), read-only to workers,
 * and a submit it cannot hold refused with nothing changed. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define BIG (INVOKER__INLINE_MAX + 1)

enum mode { M_SUM = 1, M_WRITE, M_MPROTECT };

/* The first 8 bytes say what to do; the result is 8 bytes. */
static int obj(const void *argp, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t mode, v = 0;
    if (len < sizeof mode)
        return 90;
    memcpy(&mode, argp, sizeof mode);
    if (mode == M_SUM) {
        v = byte_sum(argp, len);
    } else if (mode == M_WRITE) {
        ((volatile unsigned char *)argp)[len - 1] ^= 1;   /* must fault */
        v = 1;
    } else if (mode == M_MPROTECT) {
        long page = sysconf(_SC_PAGESIZE);
        void *at = (void *)((uintptr_t)argp / (uintptr_t)page * (uintptr_t)page);
        v = mprotect(at, (size_t)page, PROT_READ | PROT_WRITE) == 0 ? 0 : (uint64_t)errno;
    }
    return invoker_result_write(out, &v, sizeof v);
}

static unsigned char *make_arg(size_t len, uint64_t mode, uint64_t seed)
{
    unsigned char *a = malloc(len);
    assert_non_null(a);
    fill_pattern(a, len, seed);
    memcpy(a, &mode, sizeof mode);
    return a;
}

static uint64_t sum_of_value(uint64_t v)
{
    return byte_sum(&v, sizeof v);
}

/* ---- the allocator on its own ------------------------------------------ */

static bool disjoint(uint64_t a, size_t alen, uint64_t b, size_t blen)
{
    return a + alen <= b || b + blen <= a;
}

/* Bytes of memory the arena's file holds. */
static size_t file_bytes(const invoker__arena *a)
{
    struct stat st;
    assert_int_equal(fstat(a->fd, &st), 0);
    return (size_t)st.st_blocks * 512u;
}

static void test_blocks_are_disjoint_recycled_by_size_and_trimmed_when_empty(void **state)
{
    (void)state;
    int fds = count_open_fds();
    invoker__arena a;
    assert_int_equal(invoker__arena_init(&a), 0);
    uint64_t o1, o2, o3, again;
    assert_int_equal(invoker__arena_alloc(&a, 5000, false, &o1, NULL), 0);
    assert_int_equal(invoker__arena_alloc(&a, 5000, false, &o2, NULL), 0);
    assert_int_equal(invoker__arena_alloc(&a, 100000, false, &o3, NULL), 0);
    assert_true(disjoint(o1, 5000, o2, 5000));
    assert_true(disjoint(o1, 5000, o3, 100000) && disjoint(o2, 5000, o3, 100000));
    assert_int_equal(o1 % a.unit, 0);
    fill_pattern(a.base + o2, 5000, 2);
    uint64_t sum2 = byte_sum(a.base + o2, 5000);
    invoker__arena_free(&a, o1, 5000);
    assert_int_equal(invoker__arena_alloc(&a, 4500, false, &again, NULL), 0);
    assert_int_equal(again, o1);                  /* same size class: reused */
    memset(a.base + again, 0xff, 4500);
    assert_int_equal(byte_sum(a.base + o2, 5000), sum2);   /* neighbour untouched */

    invoker__arena_free(&a, again, 4500);
    invoker__arena_free(&a, o2, 5000);
    invoker__arena_free(&a, o3, 100000);
    invoker__arena_settle(&a);
    assert_int_equal(a.live, 0);
    assert_true(a.size > 0 && a.size <= INVOKER__ARENA_KEEP);   /* small: kept */

    uint64_t huge;
    assert_int_equal(invoker__arena_alloc(&a, INVOKER__ARENA_KEEP + 1, false, &huge, NULL), 0);
    assert_true(a.size > INVOKER__ARENA_KEEP);
    memset(a.base + huge, 3, INVOKER__ARENA_KEEP + 1);
    invoker__arena_settle(&a);                   /* not empty: nothing happens */
    assert_true(a.top > INVOKER__ARENA_KEEP);
    invoker__arena_free(&a, huge, INVOKER__ARENA_KEEP + 1);
    invoker__arena_settle(&a);
    /* Empty after a burst larger than the keep: its pages stay for the
     * next burst, which starts from the beginning again. */
    assert_int_equal(a.top, 0);
    assert_true(file_bytes(&a) > INVOKER__ARENA_KEEP);
    assert_int_equal(invoker__arena_alloc(&a, 5000, false, &o1, NULL), 0);
    assert_int_equal(o1, 0);
    memset(a.base + o1, 1, 5000);
    invoker__arena_free(&a, o1, 5000);
    invoker__arena_settle(&a);
    /* That burst used less: the pages past the keep went back. */
    assert_true(file_bytes(&a) <= INVOKER__ARENA_KEEP);
    assert_int_equal(invoker__arena_alloc(&a, 5000, false, &o1, NULL), 0);   /* and it serves on */
    memset(a.base + o1, 1, 5000);
    invoker__arena_destroy(&a);
    assert_int_equal(count_open_fds(), fds);
}

/* Reserves the addresses right after the arena's mapping, so that it
 * cannot grow in place and has to move.  NULL where they are taken
 * already (mappings are placed top-down: usually they are). */
static void *block_growth(const invoker__arena *a)
{
    void *want = a->base + a->size;
    void *p = mmap(want, a->unit, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (p != want) {   /* a kernel before 4.17 took the flag as a hint */
        munmap(p, a->unit);
        return NULL;
    }
    return p;
}

static void test_growth_inside_a_callback_keeps_the_old_mapping_until_settled(void **state)
{
    (void)state;
    invoker__arena a;
    assert_int_equal(invoker__arena_init(&a), 0);
    uint64_t o1, o2;
    assert_int_equal(invoker__arena_alloc(&a, 9000, false, &o1, NULL), 0);
    fill_pattern(a.base + o1, 9000, 7);
    uint64_t sum = byte_sum(a.base + o1, 9000);
    const unsigned char *seen = a.base + o1;     /* what a callback holds */
    unsigned char *old = a.base;
    void *blocker = block_growth(&a);
    assert_int_equal(invoker__arena_alloc(&a, 4u << 20, true, &o2, NULL), 0);
    if (a.base == old) {
        assert_null(blocker);     /* it cannot have grown over the blocker */
        invoker__arena_destroy(&a);
        skip();                   /* it grew in place: nothing to retire */
    }
    assert_int_equal(a.nretired, 1);
    assert_int_equal(byte_sum(seen, 9000), sum); /* the old view still reads */
    assert_int_equal(byte_sum(a.base + o1, 9000), sum);
    invoker__arena_settle(&a);
    assert_int_equal(a.nretired, 0);
    if (blocker)
        munmap(blocker, a.unit);
    invoker__arena_destroy(&a);
}

/* ---- through the invoker ------------------------------------------------ */

typedef struct refill {
    size_t next, n;
    uint64_t expect[1024];
} refill;

static size_t varied_len(size_t i)
{
    return BIG + (i * 7919u) % 300000u;
}

static int submit_next(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)t, (void)res, (void)len;
    refill *f = r->hook_ctx;
    if (f->next >= f->n)
        return 0;
    size_t i = f->next++;
    unsigned char *a = make_arg(varied_len(i), M_SUM, i);
    invoker_id id;
    assert_int_equal(invoker_submit(r->inv, a, varied_len(i), NULL, &id), 0);
    f->expect[id] = sum_of_value(byte_sum(a, varied_len(i)));
    free(a);
    return 0;
}

static void test_recycled_blocks_carry_each_argument_intact(void **state)
{
    (void)state;
    static refill f;
    f.next = 0;
    f.n = 600;
    recorder r;
    rec_init(&r, f.n + 1);
    r.hook_ctx = &f;
    r.on_result_hook = submit_next;
    invoker_config cfg;
    rec_config(&r, &cfg, obj, 3);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r.inv = inv;
    for (int i = 0; i < 8; i++)   /* a window of 8, topped up from on_result */
        submit_next(&r, NULL, NULL, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, f.n);
    for (invoker_id id = 1; id <= f.n; id++)
        assert_int_equal(rec_get(&r, id)->result_sum, f.expect[id]);
    assert_int_equal(inv->arena.live, 0);
    assert_true(inv->arena.size <= 16u << 20);   /* a window's worth, recycled */
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

/* Submits n arguments of len bytes, each summed by the objective, and
 * waits for them all. */
static void sum_burst(invoker *inv, recorder *r, int n, size_t len)
{
    uint64_t *expect = calloc((size_t)n + 1, sizeof *expect);
    invoker_id *ids = calloc((size_t)n, sizeof *ids);
    assert_non_null(expect);
    assert_non_null(ids);
    for (int i = 0; i < n; i++) {
        unsigned char *a = make_arg(len, M_SUM, (uint64_t)i);
        assert_int_equal(invoker_submit(inv, a, len, NULL, &ids[i]), 0);
        expect[i] = sum_of_value(byte_sum(a, len));
        free(a);
    }
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(rec_get(r, ids[i])->result_sum, expect[i]);
    free(expect);
    free(ids);
}

static void test_a_burst_larger_than_the_keep_is_given_back_after_a_smaller_one(void **state)
{
    (void)state;
    enum { N = 40 };
    recorder r;
    rec_init(&r, 2 * N + 2);
    invoker_config cfg;
    rec_config(&r, &cfg, obj, 2);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    sum_burst(inv, &r, N, 1u << 20);
    assert_true(inv->arena.size >= (size_t)N << 20);
    /* Kept for the next generation of the same size, which reuses them */
    size_t held = file_bytes(&inv->arena);
    assert_true(held >= (size_t)N << 20);
    sum_burst(inv, &r, N, 1u << 20);
    assert_true(file_bytes(&inv->arena) <= held + (1u << 20));
    /* A smaller burst: what it did not use goes back. */
    sum_burst(inv, &r, 1, 1u << 20);
    assert_true(file_bytes(&inv->arena) <= INVOKER__ARENA_KEEP);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

typedef struct reader {
    invoker *inv;
    int      checked, moved;
} reader;

/* Reads its own argument, submits one that makes the arena grow (and move,
 * when it can be made to), then reads its argument again. */
static int read_grow_read(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)res, (void)len;
    reader *rd = r->hook_ctx;
    if (t->arg_len < BIG || rd->checked)
        return 0;
    uint64_t before = byte_sum(t->arg, t->arg_len);
    const void *old = rd->inv->arena.base;
    void *blocker = block_growth(&rd->inv->arena);
    size_t huge = rd->inv->arena.size * 2 + (8u << 20);
    unsigned char *a = make_arg(huge, M_SUM, 99);
    assert_int_equal(invoker_submit(rd->inv, a, huge, NULL, NULL), 0);
    free(a);
    rd->moved = rd->inv->arena.base != old;
    assert_int_equal(byte_sum(t->arg, t->arg_len), before);
    if (blocker)
        munmap(blocker, rd->inv->arena.unit);
    rd->checked = 1;
    return 0;
}

static void test_an_argument_stays_readable_while_its_callback_grows_the_arena(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    reader rd = { NULL, 0, 0 };
    r.hook_ctx = &rd;
    r.on_result_hook = read_grow_read;
    invoker_config cfg;
    rec_config(&r, &cfg, obj, 1);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    rd.inv = inv;
    unsigned char *a = make_arg(BIG + 100, M_SUM, 1);
    assert_int_equal(invoker_submit(inv, a, BIG + 100, NULL, NULL), 0);
    free(a);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rd.checked, 1);
    assert_int_equal(r.results, 2);
    print_message("arena moved under the callback: %s\n", rd.moved ? "yes" : "no (grew in place)");
    assert_int_equal(inv->arena.nretired, 0);   /* released once the callback returned */
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_a_worker_cannot_write_any_argument(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 64);
    invoker_config cfg;
    rec_config(&r, &cfg, obj, 2);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    uint64_t expect[64];
    invoker_id writer, prot = 0, id;
    unsigned char *a = make_arg(BIG + 10, M_WRITE, 5);
    assert_int_equal(invoker_submit(inv, a, BIG + 10, NULL, &writer), 0);
    free(a);
    bool have_proc = access("/proc/self/fd", F_OK) == 0;
    if (have_proc) {
        a = make_arg(3 * BIG, M_MPROTECT, 6);
        assert_int_equal(invoker_submit(inv, a, 3 * BIG, NULL, &prot), 0);
        free(a);
    }
    for (int i = 0; i < 20; i++) {
        a = make_arg(BIG + (size_t)i * 1000, M_SUM, (uint64_t)i);
        assert_int_equal(invoker_submit(inv, a, BIG + (size_t)i * 1000, NULL, &id), 0);
        expect[id] = sum_of_value(byte_sum(a, BIG + (size_t)i * 1000));
        free(a);
    }
    assert_int_equal(invoker_wait(inv), 0);
    rec_task *w = rec_get(&r, writer);
    assert_int_equal(w->errors, 1);
    assert_int_equal(w->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(w->code, SIGSEGV);
    if (prot) {
        rec_task *p = rec_get(&r, prot);
        assert_int_equal(p->results, 1);
        assert_int_equal(p->result_sum, sum_of_value(EACCES));   /* not even by asking */
    }
    for (invoker_id i = prot ? prot + 1 : writer + 1; i <= id; i++) {
        assert_int_equal(rec_get(&r, i)->results, 1);
        assert_int_equal(rec_get(&r, i)->result_sum, expect[i]);
    }
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_under_a_memory_limit_workers_map_one_argument_at_a_time(void **state)
{
    (void)state;
    if (UNDER_ASAN || getenv("INVOKER_UNDER_VALGRIND")) {
        print_message("skipped: RLIMIT_AS cannot be tested under ASan or valgrind\n");
        skip();
    }
    enum { N = 30 };
    recorder r;
    rec_init(&r, N + 2);
    invoker_config cfg;
    rec_config(&r, &cfg, obj, 2);
    cfg.memory_limit = 192u << 20;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    uint64_t expect[N + 2];
    /* Together far more than the limit; each well within it. */
    for (int i = 0; i <= N; i++) {
        size_t len = i == N ? (64u << 20) : (8u << 20) + (size_t)i;
        unsigned char *a = make_arg(len, M_SUM, (uint64_t)i);
        invoker_id id;
        assert_int_equal(invoker_submit(inv, a, len, NULL, &id), 0);
        expect[id] = sum_of_value(byte_sum(a, len));
        free(a);
    }
    assert_int_equal(invoker_wait(inv), 0);
    for (invoker_id id = 1; id <= N + 1; id++) {
        assert_int_equal(rec_get(&r, id)->results, 1);
        assert_int_equal(rec_get(&r, id)->result_sum, expect[id]);
    }
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_a_submit_the_arena_cannot_hold_is_refused_and_nothing_changes(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj, 1);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    /* A file size limit stops the memfd from growing.  SIGXFSZ keeps its
     * default, which kills: the library must stay under the limit rather
     * than let ftruncate raise it. */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4u << 20;   /* the soft limit only: it can be raised back */
    void (*was)(int) = signal(SIGXFSZ, SIG_DFL);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    size_t huge = 32u << 20;
    unsigned char *a = make_arg(huge, M_SUM, 3);
    invoker_stats before, after;
    invoker_get_stats(inv, &before);
    invoker_id id = 12345;
    int rc = invoker_submit(inv, a, huge, NULL, &id);
    invoker_get_stats(inv, &after);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, was);
    assert_int_equal(rc, -ENOMEM);
    assert_int_equal(id, 12345);
    assert_true(inv->arena.size <= lim.rlim_cur);
    assert_int_equal(after.submitted, before.submitted);
    assert_int_equal(inv->arena.live, 0);
    /* With the limit gone the same submit goes through. */
    assert_int_equal(invoker_submit(inv, a, huge, NULL, &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, 1)->result_sum, sum_of_value(byte_sum(a, huge)));
    free(a);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_new_pages_past_a_lowered_file_size_limit_are_not_written_with_pwrite(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj, 1);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    uint64_t expect[5];
    unsigned char *a[4];
    size_t len[4] = { 1u << 20, 1u << 20, 1u << 20, 512u << 10 };
    for (int i = 0; i < 3; i++) {
        a[i] = make_arg(len[i], M_SUM, (uint64_t)i);
        expect[i + 1] = sum_of_value(byte_sum(a[i], len[i]));
        assert_int_equal(invoker_submit(inv, a[i], len[i], NULL, NULL), 0);
    }
    /* The file is 4 MiB, its first 3 written; the next block is new pages
     * at 3 MiB, within the file but past the limit set now.  A pwrite
     * there would raise SIGXFSZ, whose default kills this process. */
    assert_int_equal(inv->arena.size, 4u << 20);
    assert_int_equal(inv->arena.top, 3u << 20);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (3u << 20) + 4096;
    void (*was)(int) = signal(SIGXFSZ, SIG_DFL);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    a[3] = make_arg(len[3], M_SUM, 3);
    expect[4] = sum_of_value(byte_sum(a[3], len[3]));
    int rc = invoker_submit(inv, a[3], len[3], NULL, NULL);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, was);
    assert_int_equal(rc, 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (invoker_id id = 1; id <= 4; id++)
        assert_int_equal(rec_get(&r, id)->result_sum, expect[id]);
    for (int i = 0; i < 4; i++)
        free(a[i]);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_are_disjoint_recycled_by_size_and_trimmed_when_empty),
        cmocka_unit_test(test_growth_inside_a_callback_keeps_the_old_mapping_until_settled),
        cmocka_unit_test(test_recycled_blocks_carry_each_argument_intact),
        cmocka_unit_test(test_a_burst_larger_than_the_keep_is_given_back_after_a_smaller_one),
        cmocka_unit_test(test_an_argument_stays_readable_while_its_callback_grows_the_arena),
        cmocka_unit_test(test_a_worker_cannot_write_any_argument),
        cmocka_unit_test(test_under_a_memory_limit_workers_map_one_argument_at_a_time),
        cmocka_unit_test(test_a_submit_the_arena_cannot_hold_is_refused_and_nothing_changes),
        cmocka_unit_test(test_new_pages_past_a_lowered_file_size_limit_are_not_written_with_pwrite),
    };
    set_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

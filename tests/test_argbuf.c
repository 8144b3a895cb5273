/* Arguments written in place: invoker_arg_alloc, invoker_submit_arg,
 * invoker_arg_free.  Who owns a buffer at every step, what each bad call
 * returns (and that it changes nothing), every size class (heap, one
 * page, many pages, less submitted than allocated), inline mode, calls
 * from a callback, buffers that outlive the arena's moves, and workers
 * that never see a caller's writable view. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG   (INVOKER__INLINE_MAX + 1)
#define PROBE 0x70726f6265ull   /* an 8-byte argument asking about the maps */

/* Writable mappings of the argument arena in this process. */
static uint64_t writable_arena_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    uint64_t n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "invoker-args") && strchr(line, ' ') && strchr(line, ' ')[2] == 'w')
            n++;
    if (f)
        fclose(f);
    return n;
}

/* The result: the byte sum of the argument (8 bytes); for PROBE, the
 * writable mappings of the arena this worker holds.  The recorder keeps
 * the byte sum of that result (expect_sum). */
static int obj_sum(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    uint64_t v, probe;
    if (len == sizeof probe && (memcpy(&probe, arg, sizeof probe), probe == PROBE))
        v = writable_arena_maps();
    else
        v = byte_sum(arg, len);
    return invoker_result_write(out, &v, sizeof v);
}

static uint64_t expect_sum(const void *p, size_t len)
{
    uint64_t v = byte_sum(p, len);
    return byte_sum(&v, sizeof v);
}

static invoker *make(recorder *r, unsigned workers, int inline_mode, size_t max_queued)
{
    invoker_config cfg;
    rec_config(r, &cfg, obj_sum, workers);
    cfg.inline_mode = inline_mode;
    cfg.max_queued = max_queued;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r->inv = inv;
    return track(inv);
}

/* Allocates len bytes, fills them with pattern seed and submits the first
 * sub of them; the sum the result must have. */
static uint64_t alloc_fill_submit(invoker *inv, size_t len, size_t sub, uint64_t seed,
                                  invoker_id *id)
{
    void *buf = NULL;
    assert_int_equal(invoker_arg_alloc(inv, len, &buf), 0);
    assert_non_null(buf);
    assert_int_equal((uintptr_t)buf % 16, 0);
    fill_pattern(buf, len, seed);
    uint64_t sum = expect_sum(buf, sub);
    assert_int_equal(invoker_submit_arg(inv, buf, sub, NULL, id), 0);
    return sum;
}

static void test_bad_arguments_return_errors_and_change_nothing(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker *inv = make(&r, 1, 0, 0);
    void *buf = (void *)&r, *mine = NULL;
    assert_int_equal(invoker_arg_alloc(NULL, 100, &buf), -EINVAL);
    assert_int_equal(invoker_arg_alloc(inv, 100, NULL), -EINVAL);
    assert_int_equal(invoker_arg_alloc(inv, 0, &buf), -EINVAL);
    assert_int_equal(invoker_arg_alloc(inv, ((size_t)64 << 20) + 1, &buf), -EMSGSIZE);
    assert_ptr_equal(buf, &r);                       /* untouched on failure */
    assert_int_equal(inv->argbufs.count, 0);

    assert_int_equal(invoker_arg_alloc(inv, BIG, &mine), 0);
    fill_pattern(mine, BIG, 5);
    uint64_t sum = byte_sum(mine, BIG);
    unsigned char foreign[64];
    invoker_id id = 77;
    assert_int_equal(invoker_submit_arg(NULL, mine, BIG, NULL, &id), -EINVAL);
    assert_int_equal(invoker_submit_arg(inv, foreign, sizeof foreign, NULL, &id), -EINVAL);
    assert_int_equal(invoker_submit_arg(inv, NULL, 0, NULL, &id), -EINVAL);
    assert_int_equal(invoker_submit_arg(inv, (unsigned char *)mine + 16, 16, NULL, &id), -EINVAL);
    assert_int_equal(invoker_submit_arg(inv, mine, BIG + 1, NULL, &id), -EINVAL);
    assert_int_equal(invoker_submit_arg_timeout(inv, mine, BIG, NULL, -1.0, &id), -EINVAL);
    assert_int_equal(invoker_submit_arg_timeout(inv, mine, BIG, NULL, NAN, &id), -EINVAL);
    assert_int_equal(invoker_arg_free(NULL, mine), -EINVAL);
    assert_int_equal(invoker_arg_free(inv, foreign), -EINVAL);
    assert_int_equal(invoker_arg_free(inv, NULL), 0);
    assert_int_equal(id, 77);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.submitted, 0);
    /* Still the caller's, bytes intact, and it submits fine. */
    assert_int_equal(inv->argbufs.count, 1);
    assert_int_equal(byte_sum(mine, BIG), sum);
    assert_int_equal(invoker_submit_arg(inv, mine, BIG, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, id)->result_sum, byte_sum(&sum, sizeof sum));
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

static void test_every_size_runs_with_the_bytes_written_in_place(void **state)
{
    (void)state;
    static const size_t sizes[][2] = {
        { 1, 1 }, { 100, 100 }, { INVOKER__INLINE_MAX, INVOKER__INLINE_MAX },
        { BIG, BIG }, { 1u << 20, 1u << 20 }, { 3u << 20, 3u << 20 },
        /* less than allocated: a shorter block, and one small enough for its ticket */
        { 1u << 20, 5000 }, { 1u << 20, 100 }, { 1u << 20, 0 }, { 100, 0 },
    };
    enum { N = sizeof sizes / sizeof sizes[0] };
    recorder r;
    rec_init(&r, 2 * N + 1);
    invoker *inv = make(&r, 2, 0, 0);
    uint64_t expect[N];
    invoker_id ids[N];
    for (size_t i = 0; i < N; i++)
        expect[i] = alloc_fill_submit(inv, sizes[i][0], sizes[i][1], i + 1, &ids[i]);
    assert_int_equal(inv->argbufs.count, 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (size_t i = 0; i < N; i++) {
        rec_task *t = rec_get(&r, ids[i]);
        assert_int_equal(t->results, 1);
        assert_int_equal(t->result_sum, expect[i]);
    }
    /* Every block came back: a second round of the same sizes fits where
     * the first one was, on the same pages. */
    assert_int_equal(inv->arena.live, 0);
    size_t top = inv->arena.filled;
    for (size_t i = 0; i < N; i++)
        expect[i] = alloc_fill_submit(inv, sizes[i][0], sizes[i][1], i + 50, &ids[i]);
    assert_int_equal(invoker_wait(inv), 0);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(rec_get(&r, ids[i])->result_sum, expect[i]);
    assert_int_equal(inv->arena.filled, top);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

static void test_a_submitted_buffer_is_no_longer_the_callers(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker *inv = make(&r, 1, 0, 0);
    void *big = NULL, *small = NULL;
    assert_int_equal(invoker_arg_alloc(inv, 1u << 20, &big), 0);
    assert_int_equal(invoker_arg_alloc(inv, 64, &small), 0);
    memset(big, 1, 1u << 20);
    memset(small, 2, 64);
    assert_int_equal(invoker_submit_arg(inv, big, 1u << 20, NULL, NULL), 0);
    assert_int_equal(invoker_submit_arg(inv, small, 64, NULL, NULL), 0);
    assert_int_equal(invoker_arg_free(inv, big), -EINVAL);
    assert_int_equal(invoker_arg_free(inv, small), -EINVAL);
    assert_int_equal(invoker_submit_arg(inv, big, 16, NULL, NULL), -EINVAL);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.submitted, 2);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, 2);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

static void test_a_freed_buffer_gives_its_memory_back(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 4);
    invoker *inv = make(&r, 1, 0, 0);
    void *a = NULL, *b = NULL;
    assert_int_equal(invoker_arg_alloc(inv, 1u << 20, &a), 0);
    assert_int_equal(invoker_arg_alloc(inv, 10, &b), 0);
    assert_int_equal(inv->arena.live, 1);
    assert_int_equal(invoker_arg_free(inv, a), 0);
    assert_int_equal(invoker_arg_free(inv, b), 0);
    assert_int_equal(inv->arena.live, 0);
    assert_int_equal(inv->argbufs.count, 0);
    assert_int_equal(invoker_arg_free(inv, a), -EINVAL);   /* twice: refused */
    /* The block is reused by the next buffer of its size. */
    void *c = NULL;
    uint64_t off = inv->arena.top;
    assert_int_equal(invoker_arg_alloc(inv, 1u << 20, &c), 0);
    assert_true(inv->arena.top <= off + (1u << 20));
    assert_int_equal(invoker_arg_free(inv, c), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.submitted, 0);
    assert_int_equal(r.results + r.errors, 0);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

static void test_destroy_frees_the_buffers_never_submitted(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    rec_init(&r, 4);
    invoker *inv = make(&r, 1, 0, 0);
    for (int i = 0; i < 40; i++) {   /* past the table's first size */
        void *buf = NULL;
        assert_int_equal(invoker_arg_alloc(inv, i % 2 ? 100u : (size_t)BIG * (size_t)(i + 1), &buf), 0);
        memset(buf, i, i % 2 ? 100u : BIG);
    }
    assert_int_equal(inv->argbufs.count, 40);
    assert_int_equal(destroy_tracked(inv), 0);   /* ASan and valgrind see any leak */
    assert_int_equal(r.results + r.errors, 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(&r);
}

static void test_max_queued_refuses_and_the_buffer_stays(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker *inv = make(&r, 1, 1, 1);   /* inline: nothing runs before a poll */
    uint64_t e1 = 0;
    invoker_id id1, id2;
    e1 = alloc_fill_submit(inv, BIG, BIG, 1, &id1);
    void *buf = NULL;
    assert_int_equal(invoker_arg_alloc(inv, BIG, &buf), 0);
    fill_pattern(buf, BIG, 2);
    uint64_t e2 = expect_sum(buf, BIG);
    assert_int_equal(invoker_submit_arg(inv, buf, BIG, NULL, &id2), -EAGAIN);
    assert_int_equal(expect_sum(buf, BIG), e2);   /* still there, still the caller's */
    assert_int_equal(invoker_poll(inv, 0), 1);
    assert_int_equal(invoker_submit_arg(inv, buf, BIG, NULL, &id2), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, id1)->result_sum, e1);
    assert_int_equal(rec_get(&r, id2)->result_sum, e2);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

static void test_inline_mode_runs_arguments_written_in_place(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker *inv = make(&r, 0, 1, 0);
    invoker_id ids[3];
    uint64_t e[3];
    e[0] = alloc_fill_submit(inv, 1u << 20, 1u << 20, 1, &ids[0]);
    e[1] = alloc_fill_submit(inv, 200, 200, 2, &ids[1]);
    e[2] = alloc_fill_submit(inv, 1u << 20, 7000, 3, &ids[2]);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rec_get(&r, ids[i])->result_sum, e[i]);
    assert_int_equal(inv->arena.live, 0);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

/* From a callback: allocate, write, submit one more, once. */
static int submit_from_callback(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)res, (void)len;
    if (t->id != 1)
        return 0;
    void *buf = NULL;
    if (invoker_arg_alloc(r->inv, 2u << 20, &buf) != 0)
        return 1;
    fill_pattern(buf, 2u << 20, 9);
    *(uint64_t *)r->hook_ctx = expect_sum(buf, 2u << 20);
    return invoker_submit_arg(r->inv, buf, 2u << 20, NULL, NULL) != 0;
}

static void test_a_callback_can_submit_an_argument_written_in_place(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    uint64_t e2 = 0;
    r.on_result_hook = submit_from_callback;
    r.hook_ctx = &e2;
    invoker *inv = make(&r, 1, 0, 0);
    invoker_id id;
    uint64_t e1 = alloc_fill_submit(inv, BIG, BIG, 1, &id);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, 2);
    assert_int_equal(rec_get(&r, 1)->result_sum, e1);
    assert_int_equal(rec_get(&r, 2)->result_sum, e2);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

static void test_a_held_buffer_stays_put_while_the_arena_grows(void **state)
{
    (void)state;
    enum { N = 24 };
    recorder r;
    rec_init(&r, N + 2);
    invoker *inv = make(&r, 1, 0, 0);
    void *held = NULL;
    assert_int_equal(invoker_arg_alloc(inv, 1u << 20, &held), 0);
    fill_pattern(held, 1u << 19, 4);   /* half now */
    unsigned char *base = inv->arena.base;
    size_t size = inv->arena.size;
    unsigned char *arg = malloc(1u << 20);
    assert_non_null(arg);
    for (int i = 0; i < N; i++) {   /* copied arguments: the arena grows, maybe moves */
        fill_pattern(arg, 1u << 20, (uint64_t)i);
        assert_int_equal(invoker_submit(inv, arg, 1u << 20, NULL, NULL), 0);
    }
    free(arg);
    assert_true(inv->arena.size > size);
    if (inv->arena.base != base)
        print_message("the arena moved while a buffer was held\n");
    fill_pattern((unsigned char *)held + (1u << 19), 1u << 19, 5);   /* the rest */
    uint64_t sum = expect_sum(held, 1u << 20);
    invoker_id id;
    assert_int_equal(invoker_submit_arg(inv, held, 1u << 20, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, N + 1);
    assert_int_equal(rec_get(&r, id)->result_sum, sum);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

static void test_a_worker_forked_later_has_no_writable_view_of_a_held_buffer(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_sum, 1);
    cfg.fork_server = INVOKER_FORK_SERVER_NEVER;   /* the parent forks, holding the buffer */
    cfg.max_tasks_per_worker = 1;                  /* a new worker for the probe */
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    void *held = NULL;
    assert_int_equal(invoker_arg_alloc(inv, 1u << 20, &held), 0);
    memset(held, 7, 1u << 20);
    uint64_t probe = PROBE;
    invoker_id first, second;
    assert_int_equal(invoker_submit(inv, &probe, sizeof probe, NULL, &first), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(invoker_submit(inv, &probe, sizeof probe, NULL, &second), 0);
    assert_int_equal(invoker_wait(inv), 0);
    uint64_t none = 0;
    assert_int_equal(rec_get(&r, second)->results, 1);
    assert_true(rec_get(&r, second)->worker >= 0);
    assert_int_equal(rec_get(&r, second)->result_sum, byte_sum(&none, sizeof none));
    assert_true(writable_arena_maps() >= 1);   /* the parent's own, for contrast */
    assert_int_equal(invoker_arg_free(inv, held), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    rec_free(&r);
}

int main(void)
{
    set_filter();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bad_arguments_return_errors_and_change_nothing, leftovers_teardown),
        cmocka_unit_test_teardown(test_every_size_runs_with_the_bytes_written_in_place, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_submitted_buffer_is_no_longer_the_callers, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_freed_buffer_gives_its_memory_back, leftovers_teardown),
        cmocka_unit_test_teardown(test_destroy_frees_the_buffers_never_submitted, leftovers_teardown),
        cmocka_unit_test_teardown(test_max_queued_refuses_and_the_buffer_stays, leftovers_teardown),
        cmocka_unit_test_teardown(test_inline_mode_runs_arguments_written_in_place, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_callback_can_submit_an_argument_written_in_place, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_held_buffer_stays_put_while_the_arena_grows, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_worker_forked_later_has_no_writable_view_of_a_held_buffer, leftovers_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

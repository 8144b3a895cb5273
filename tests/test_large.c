/* Arguments and results from 0 bytes to 64 MiB, alone and many at once. */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

/* Result: the argument with every byte complemented; with a 16-byte
 * argument {size, seed}, a generated result of that size instead. */
static int obj_echo(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    if (len == 16) {
        uint64_t spec[2];
        memcpy(spec, arg, sizeof spec);
        unsigned char *buf = malloc(spec[0] ? spec[0] : 1);
        if (!buf)
            return 12;
        fill_pattern(buf, spec[0], spec[1]);
        int rc = invoker_result_write(out, buf, spec[0]);
        free(buf);
        return rc;
    }
    unsigned char chunk[65536];
    const unsigned char *a = arg;
    for (size_t off = 0; off < len;) {
        size_t n = len - off < sizeof chunk ? len - off : sizeof chunk;
        for (size_t i = 0; i < n; i++)
            chunk[i] = (unsigned char)~a[off + i];
        int rc = invoker_result_write(out, chunk, n);
        if (rc)
            return rc;
        off += n;
    }
    return 0;
}

/* Submits size bytes of pattern seed to obj_echo; returns the byte sum the
 * echoed (inverted) result must have. */
static uint64_t submit_echo(invoker *inv, size_t size, uint64_t seed, invoker_id *id)
{
    unsigned char *arg = malloc(size + 1);
    assert_non_null(arg);
    fill_pattern(arg, size, seed);
    assert_int_equal(invoker_submit(inv, arg, size, NULL, id), 0);
    for (size_t j = 0; j < size; j++)
        arg[j] = (unsigned char)~arg[j];
    uint64_t sum = byte_sum(arg, size);
    free(arg);   /* the invoker copied it */
    return sum;
}

/* Each of tasks 1..n returned its echo: sizes[id - 1] bytes summing to expect[id]. */
static void assert_echoes(recorder *r, const size_t *sizes, const uint64_t *expect, size_t n)
{
    for (invoker_id id = 1; id <= n; id++) {
        rec_task *t = rec_get(r, id);
        assert_int_equal(t->results, 1);
        assert_int_equal(t->result_len, sizes[id - 1]);
        assert_int_equal(t->result_sum, expect[id]);
    }
}

/* An invoker of obj_echo on workers, its recorder ready for n tasks. */
static invoker *echo_invoker(recorder *r, size_t n, unsigned workers)
{
    rec_init(r, n + 1);
    invoker_config cfg;
    rec_config(r, &cfg, obj_echo, workers);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    return inv;
}

static void test_sizes_from_zero_to_64mib_arrive_intact(void **state)
{
    (void)state;
    /* 16 bytes is obj_echo's generate request: not in the list. */
    const size_t sizes[] = { 0, 1, 15, 17, 4047, 4048, 4049, 65536, 65537,
                             (1u << 20) + 3, 64u << 20 };
    enum { N = sizeof sizes / sizeof sizes[0] };
    recorder r;
    int fds = count_open_fds();
    invoker *inv = echo_invoker(&r, N, 2);
    uint64_t expect[N + 1];
    for (size_t i = 0; i < N; i++) {
        invoker_id id;
        uint64_t sum = submit_echo(inv, sizes[i], i, &id);
        expect[id] = sum;
    }
    assert_int_equal(invoker_wait(inv), 0);
    assert_echoes(&r, sizes, expect, N);
    assert_int_equal(invoker_destroy(inv), 0);
    assert_int_equal(count_open_fds(), fds);
    rec_free(&r);
}

/* One worker's big results, smaller and larger in turn: the parent reads
 * each into the buffer it kept from the one before when that is large
 * enough (up to 4 MiB), else into a new one; every result is its own. */
static void test_big_results_of_changing_sizes_through_one_worker_arrive_intact(void **state)
{
    (void)state;
    const size_t sizes[] = { 3u << 20, (1u << 20) + 5, 200u << 10, (3u << 20) + 1,
                             6u << 20, 100u << 10, (4u << 20) - 7, 70000 };
    enum { N = sizeof sizes / sizeof sizes[0] };
    recorder r;
    int fds = count_open_fds();
    invoker *inv = echo_invoker(&r, N, 1);
    uint64_t expect[N + 1];
    for (size_t i = 0; i < N; i++) {
        invoker_id id;
        uint64_t sum = submit_echo(inv, sizes[i], i + 7, &id);
        expect[id] = sum;
        assert_int_equal(invoker_wait(inv), 0);   /* one at a time, in order */
    }
    assert_echoes(&r, sizes, expect, N);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers_started, 1);
    assert_int_equal(invoker_destroy(inv), 0);
    assert_int_equal(count_open_fds(), fds);
    rec_free(&r);
}

static int count_small_before_big(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)res;
    int *small_done = r->hook_ctx;
    if (len > 1000000)
        small_done[1] = small_done[0];   /* how many small ones beat it */
    else
        small_done[0]++;
    (void)t;
    return 0;
}

static void test_many_large_results_at_once_do_not_interleave_or_stall(void **state)
{
    (void)state;
    enum { BIG = 12, SMALL = 300, N = BIG + SMALL };
    recorder r;
    rec_init(&r, N + 1);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_echo, 4);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    uint64_t expect[N + 1];
    size_t size[N + 1];
    for (int i = 0; i < N; i++) {
        uint64_t spec[2] = { i < BIG ? (3u << 20) + (uint64_t)i * 4099 : (uint64_t)i % 300, (uint64_t)i };
        invoker_id id;
        assert_int_equal(invoker_submit(inv, spec, sizeof spec, NULL, &id), 0);
        unsigned char *buf = malloc(spec[0] + 1);
        fill_pattern(buf, spec[0], spec[1]);
        expect[id] = byte_sum(buf, spec[0]);
        size[id] = spec[0];
        free(buf);
    }
    assert_int_equal(invoker_wait(inv), 0);
    for (invoker_id id = 1; id <= N; id++) {
        rec_task *t = rec_get(&r, id);
        assert_int_equal(t->results, 1);
        assert_int_equal(t->result_len, size[id]);
        assert_int_equal(t->result_sum, expect[id]);
    }
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_large_result_does_not_stall_small_tasks(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 512);
    int counts[2] = { 0, -1 };
    r.hook_ctx = counts;
    r.on_result_hook = count_small_before_big;
    invoker_config cfg;
    rec_config(&r, &cfg, obj_echo, 2);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    uint64_t spec[2] = { 64u << 20, 1 };
    assert_int_equal(invoker_submit(inv, spec, sizeof spec, NULL, NULL), 0);
    for (int i = 0; i < 200; i++) {
        uint64_t small[2] = { 8, (uint64_t)i };
        assert_int_equal(invoker_submit(inv, small, sizeof small, NULL, NULL), 0);
    }
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, 201);
    /* The other worker went on taking tasks while 64 MiB was made and sent. */
    assert_true(counts[1] >= 150);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_from_zero_to_64mib_arrive_intact),
        cmocka_unit_test(test_big_results_of_changing_sizes_through_one_worker_arrive_intact),
        cmocka_unit_test(test_many_large_results_at_once_do_not_interleave_or_stall),
        cmocka_unit_test(test_large_result_does_not_stall_small_tasks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

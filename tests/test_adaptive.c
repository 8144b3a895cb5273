/* Adaptive timeouts (timeout_factor, timeout_min): once 10 tasks have
 * succeeded, a task's timeout is the factor times the median run time of
 * the last 100 successes, never under timeout_min (1 s when 0) nor over
 * timeout; a per-task timeout wins; bad values are -EINVAL. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { uint32_t ms; uint32_t hang; } order;

static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 99;
    memcpy(&o, arg, sizeof o);
    if (o.hang)
        for (int i = 0; i < 6000; i++)   /* a minute */
            sleep_us(10000);
    sleep_us((long)o.ms * 1000);
    return invoker_result_write(out, &o, sizeof o);
}

static invoker *make(recorder *r, double factor, double min, double timeout)
{
    invoker_config cfg;
    rec_init(r, 256);
    rec_config(r, &cfg, obj, 2);
    cfg.timeout_factor = factor;
    cfg.timeout_min = min;
    cfg.timeout = timeout;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r->inv = track(inv);
    return inv;
}

static invoker_id submit(invoker *inv, uint32_t ms, uint32_t hang)
{
    order o = { ms, hang };
    invoker_id id = 0;
    assert_int_equal(invoker_submit(inv, &o, sizeof o, NULL, &id), 0);
    return id;
}

static void finish(recorder *r, int fds)
{
    assert_int_equal(destroy_tracked(r->inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(r);
}

/* 20 tasks of ms, a hang, 4 more: returns the hang's run time, checked
 * reported as a timeout, every other task a success. */
static double hang_after_successes(invoker *inv, recorder *r, uint32_t ms)
{
    for (int i = 0; i < 20; i++)
        submit(inv, ms, 0);
    invoker_id hung = submit(inv, 0, 1);
    for (int i = 0; i < 4; i++)
        submit(inv, ms, 0);
    assert_int_equal(invoker_wait(inv), 0);
    rec_task *t = rec_get(r, hung);
    assert_int_equal(t->errors, 1);
    assert_int_equal(t->failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(r->results, 24);
    assert_int_equal(r->errors, 1);
    return t->run_seconds;
}

/* Tasks of 50 ms, factor 10: the hang goes at about 0.5 s, far before the
 * fixed timeout of 10 s. */
static void test_a_hung_task_times_out_at_factor_times_the_median(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 10, 0.01, 10);
    double ran = hang_after_successes(inv, &r, 50);
    assert_true(ran >= 0.45);
    assert_true(ran < 0.5 + 1.5 * slack());
    finish(&r, fds);
}

/* The floor: tasks of 20 ms, factor 10 (0.2 s) under timeout_min 0.6 s;
 * and timeout_min 0 meaning 1 s. */
static void test_timeout_min_is_the_floor_and_defaults_to_one_second(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 10, 0.6, 0);
    double ran = hang_after_successes(inv, &r, 20);
    assert_true(ran >= 0.6);
    assert_true(ran < 0.6 + 1.5 * slack());
    finish(&r, fds);

    inv = make(&r, 10, 0, 0);
    ran = hang_after_successes(inv, &r, 20);
    assert_true(ran >= 1.0);
    assert_true(ran < 1.0 + 1.5 * slack());
    finish(&r, fds);
}

/* The ceiling: factor 100 of 50 ms would be 5 s; timeout is 0.3 s. */
static void test_the_config_timeout_caps_it(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 100, 0.01, 0.3);
    double ran = hang_after_successes(inv, &r, 50);
    assert_true(ran >= 0.3);
    assert_true(ran < 0.3 + 1.5 * slack());
    finish(&r, fds);
}

/* Before the 10th success the config's timeout holds (1.2 s, not the 0.5
 * s the tasks would give); after it, a timeout given to
 * invoker_submit_timeout wins over the adaptive one. */
static void test_before_ten_successes_and_per_task_timeouts_it_does_not_apply(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 10, 0.01, 1.2);
    invoker_id early = submit(inv, 0, 1);
    for (int i = 0; i < 20; i++)
        submit(inv, 50, 0);
    assert_int_equal(invoker_wait(inv), 0);
    rec_task *t = rec_get(&r, early);
    assert_int_equal(t->failure, INVOKER_FAIL_TIMEOUT);
    assert_true(t->run_seconds >= 1.2);

    /* Its own 2 s (above the 1.2 s cap too), beside one with the
     * adaptive 0.5 s. */
    order o = { 0, 1 };
    invoker_id own = 0;
    assert_int_equal(invoker_submit_timeout(inv, &o, sizeof o, NULL, 2.0, &own), 0);
    invoker_id adaptive = submit(inv, 0, 1);
    assert_int_equal(invoker_wait(inv), 0);
    t = rec_get(&r, own);
    assert_int_equal(t->failure, INVOKER_FAIL_TIMEOUT);
    assert_true(t->run_seconds >= 2.0);
    t = rec_get(&r, adaptive);
    assert_int_equal(t->failure, INVOKER_FAIL_TIMEOUT);
    assert_true(t->run_seconds >= 0.45);
    assert_true(t->run_seconds < 0.5 + 1.0 * slack());
    assert_int_equal(r.results, 20);
    finish(&r, fds);
}

static void test_bad_factor_or_min_is_einval_and_leaves_nothing(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    rec_init(&r, 4);
    const double bad[] = { -1.0, -1e-9, NAN, INFINITY, -INFINITY };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int field = 0; field < 2; field++) {
            invoker_config cfg;
            rec_config(&r, &cfg, obj, 1);
            if (field == 0)
                cfg.timeout_factor = bad[i];
            else
                cfg.timeout_min = bad[i];
            invoker *inv = (invoker *)&r;   /* must stay untouched */
            assert_int_equal(invoker_create(&inv, &cfg), -EINVAL);
            assert_ptr_equal(inv, (invoker *)&r);
        }
    }
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(&r);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The median, by selection over the ring, against a sort: counts from 10
 * to past the ring's 100 (only the last 100 count), ties, sorted input. */
static void test_the_median_is_that_of_the_last_hundred(void **state)
{
    (void)state;
    invoker *inv = calloc(1, sizeof *inv);
    assert_non_null(inv);
    inv->cfg.timeout_factor = 1;
    inv->cfg.timeout_min = 1e-12;
    srand(7);
    for (int round = 0; round < 200; round++) {
        memset(&inv->adapt, 0, sizeof inv->adapt);
        inv->cfg.timeout = 0;
        size_t n = 10 + (size_t)(rand() % 250);
        uint64_t *all = calloc(n, sizeof *all);
        assert_non_null(all);
        int kind = round % 3;
        for (size_t i = 0; i < n; i++) {
            all[i] = kind == 0 ? 1000 + (uint64_t)(rand() % 100000)
                   : kind == 1 ? 1000 + (uint64_t)(rand() % 3) * 1000   /* ties */
                               : 1000 + i * 10;                          /* sorted */
            if (i == 9 && round == 0)
                assert_true(invoker__adapt_timeout(inv, true) == 0);   /* nine: not yet */
            invoker__adapt_note(inv, all[i]);
        }
        size_t m = n < 100 ? n : 100;
        uint64_t last[100];
        memcpy(last, all + n - m, m * sizeof *last);
        qsort(last, m, sizeof *last, cmp_u64);
        double want = (double)last[m / 2] / 1e9;
        assert_true(fabs(invoker__adapt_timeout(inv, true) - want) < 1e-12);
        /* Cached until a note changes the ring. */
        assert_true(fabs(invoker__adapt_timeout(inv, true) - want) < 1e-12);
        inv->cfg.timeout = want / 2;   /* the cap */
        assert_true(fabs(invoker__adapt_timeout(inv, true) - want / 2) < 1e-12);
        free(all);
    }
    free(inv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_median_is_that_of_the_last_hundred),
        cmocka_unit_test(test_bad_factor_or_min_is_einval_and_leaves_nothing),
        cmocka_unit_test_teardown(test_a_hung_task_times_out_at_factor_times_the_median,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_timeout_min_is_the_floor_and_defaults_to_one_second,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_the_config_timeout_caps_it, leftovers_teardown),
        cmocka_unit_test_teardown(test_before_ten_successes_and_per_task_timeouts_it_does_not_apply,
                                  leftovers_teardown),
    };
    set_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

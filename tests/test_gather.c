/* Gathering: while every worker has queued work, invoker_wait lets results
 * wait up to a bound so that one wake of the parent takes several; a
 * deadline, a death or a worker finding the queue empty still wakes it at
 * once, and invoker_poll never gathers.  The bound is raised here (inv->gather_max_ns) so that a gather
 * is far longer than any delay a loaded machine adds. */
#include "helpers.h"
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum act { A_SLEEP = 0, A_HANG, A_CRASH };
typedef struct { uint32_t act, us; } order;

/* Sleeps (a worker's CPU is not needed), then answers when it ended. */
static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 99;
    memcpy(&o, arg, sizeof o);
    if (o.act == A_HANG)
        for (;;)
            pause();
    sleep_us((long)o.us);
    if (o.act == A_CRASH)
        raise(SIGKILL);
    double end = now_seconds();
    return invoker_result_write(out, &end, sizeof end);
}

#define MAXT 512
static double g_lag[MAXT + 1];   /* per id: callback time less the task's end */

static int note_lag(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)r;
    double end;
    if (len == sizeof end && t->id <= MAXT) {
        memcpy(&end, res, sizeof end);
        g_lag[t->id] = now_seconds() - end;
    }
    return 0;
}

static invoker *make(recorder *r, unsigned workers)
{
    invoker_config cfg;
    rec_init(r, MAXT + 1);
    rec_config(r, &cfg, obj, workers);
    r->on_result_hook = note_lag;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r->inv = track(inv);
    if (inv->urgent_fd < 0) {   /* no pidfds here: nothing is ever gathered */
        destroy_tracked(inv);
        rec_free(r);
        skip();
    }
    return inv;
}

/* An invoker whose parent believes its tasks take avg_ms, with the bound
 * raised past any gather that belief gives. */
static invoker *make_believing(recorder *r, unsigned workers, uint64_t avg_ms)
{
    invoker *inv = make(r, workers);
    inv->gather_max_ns = 10ull * 1000000000ull;
    inv->avg_run_ns = avg_ms * 1000000ull;
    return inv;
}

static void submit(invoker *inv, uint32_t act, uint32_t us, double timeout)
{
    order o = { act, us };
    assert_int_equal(invoker_submit_timeout(inv, &o, sizeof o, NULL, timeout, NULL), 0);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and maximum of the lags of ids first..last. */
static double median_lag(uint32_t first, uint32_t last, double *max)
{
    static double v[MAXT];
    size_t n = 0;
    *max = 0;
    for (uint32_t id = first; id <= last; id++) {
        v[n++] = g_lag[id];
        *max = g_lag[id] > *max ? g_lag[id] : *max;
    }
    qsort(v, n, sizeof *v, by_value);
    return v[n / 2];
}

static void finish(recorder *r, int fds)
{
    assert_int_equal(destroy_tracked(r->inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(r);
}

/* 200 tasks of 5 ms on 2 workers, twice: through invoker_wait, and
 * through invoker_poll(-1).  Each result is expected within the bound
 * (plus what a hang check allows); wait gathers, poll does not. */
static void test_wait_gathers_results_within_the_bound_and_poll_never_does(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 2);
    const double bound = 0.02;
    inv->gather_max_ns = (uint64_t)(bound * 1e9);
    const uint32_t n = 200, task_us = 5000;
    double medians[2], maxima[2];
    for (int mode = 0; mode < 2; mode++) {
        uint32_t first = (uint32_t)(mode * n) + 1;
        for (uint32_t i = 0; i < n; i++)
            submit(inv, A_SLEEP, task_us, 0);
        if (mode == 0) {
            assert_int_equal(invoker_wait(inv), 0);
        } else {
            while (r.results < 2 * (size_t)n)
                assert_true(invoker_poll(inv, -1) >= 0);
        }
        for (uint32_t id = first; id < first + n; id++) {
            assert_int_equal(rec_get(&r, id)->results, 1);
            assert_int_equal(rec_get(&r, id)->errors, 0);
        }
        /* Past the first results (the run time is learnt from them) and
         * before the last (the queue runs dry, so nothing is gathered). */
        medians[mode] = median_lag(first + 20, first + n - 40, &maxima[mode]);
    }
    assert_true(maxima[0] < bound + 0.25 * slack());
    assert_true(medians[0] >= bound / 4);       /* results waited to be gathered */
    assert_true(medians[0] < bound * slack());  /* and not past the bound */
    assert_true(medians[1] < medians[0] / 2);  /* each taken as it came */
    finish(&r, fds);
}

/* One worker; the parent believes tasks take 400 ms, so with the queue
 * stocked it would gather for 1.6 s.  The first task hangs past its
 * 0.1 s deadline, or crashes after 0.1 s: either must be reported at
 * once, not when the gather ends. */
static void urgent_event_ends_a_gather(uint32_t act, double timeout, invoker_failure want)
{
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make_believing(&r, 1, 400);
    double t0 = now_seconds();
    submit(inv, act, 100000, timeout);
    for (int i = 0; i < 8; i++)
        submit(inv, A_SLEEP, 20000, 0);
    assert_int_equal(invoker_wait(inv), 0);
    rec_task *first = rec_get(&r, 1);
    assert_int_equal(first->errors, 1);
    assert_int_equal(first->failure, want);
    assert_true(first->reported_at - t0 < 0.1 + 0.5 * slack());
    for (invoker_id id = 2; id <= 9; id++)
        assert_int_equal(rec_get(&r, id)->results, 1);
    finish(&r, fds);
}

static void test_a_deadline_ends_a_gather_at_once(void **state)
{
    (void)state;
    urgent_event_ends_a_gather(A_HANG, 0.1, INVOKER_FAIL_TIMEOUT);
}

static void test_a_death_ends_a_gather_at_once(void **state)
{
    (void)state;
    urgent_event_ends_a_gather(A_CRASH, 0, INVOKER_FAIL_CRASH);
}

/* The parent sizes a gather from the tasks' average run time.  When the
 * tasks now queued are far shorter (here it believes 50 ms, and they take
 * 0.1 ms), the queue runs dry long before the gather would end (200 ms):
 * a worker that finds it empty ends it, rather than idle through it. */
static void test_a_worker_finding_the_queue_empty_ends_a_gather(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make_believing(&r, 2, 50);
    double t0 = now_seconds();
    for (int i = 0; i < 64; i++)
        submit(inv, A_SLEEP, 100, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, 64);
    assert_true(now_seconds() - t0 < 0.1 * slack());
    finish(&r, fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wait_gathers_results_within_the_bound_and_poll_never_does,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_a_deadline_ends_a_gather_at_once, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_death_ends_a_gather_at_once, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_worker_finding_the_queue_empty_ends_a_gather,
                                  leftovers_teardown),
    };
    set_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

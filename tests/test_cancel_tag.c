/* invoker_cancel_tag: a generation dropped in one call.  Queued tasks of
 * the tag never run, running ones have their workers killed; each is
 * reported CANCELLED exactly once, other tags run on, and the count is
 * what it cancelled.  Also inside callbacks, and inside destroy's. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

typedef struct { uint32_t ms; uint32_t gen; } order;

typedef struct shared {
    _Atomic int started[4];   /* per generation: tasks a worker began */
} shared;
static shared *g_sh;

static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 99;
    memcpy(&o, arg, sizeof o);
    if (o.gen >= 4)
        return 98;
    atomic_fetch_add(&g_sh->started[o.gen], 1);
    sleep_us((long)o.ms * 1000);
    return invoker_result_write(out, &o, sizeof o);
}

static char g_tags[4];   /* generation g is tagged &g_tags[g] */

static invoker_id submit(invoker *inv, uint32_t gen, uint32_t ms)
{
    order o = { ms, gen };
    invoker_id id = 0;
    assert_int_equal(invoker_submit(inv, &o, sizeof o, &g_tags[gen], &id), 0);
    return id;
}

static invoker *make(recorder *r, unsigned workers)
{
    invoker_config cfg;
    rec_init(r, 256);
    rec_config(r, &cfg, obj, workers);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r->inv = track(inv);
    memset(g_sh, 0, sizeof *g_sh);
    return inv;
}

static void finish(recorder *r, int fds)
{
    assert_int_equal(destroy_tracked(r->inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(r);
}

static void wait_started(uint32_t gen, int n)
{
    double until = now_seconds() + 10 * slack();
    while (atomic_load(&g_sh->started[gen]) < n && now_seconds() < until)
        sleep_us(1000);
    assert_true(atomic_load(&g_sh->started[gen]) >= n);
}

/* 20 tasks of generation 1 (hanging 30 s: only a kill ends them), two
 * running and the rest queued, between generations 0 and 2. */
static void test_a_generation_queued_and_running_is_cancelled_once_others_untouched(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 2);
    invoker_id g1[20], g2[6];
    invoker_id g0 = submit(inv, 0, 1);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < 20; i++)
        g1[i] = submit(inv, 1, 30000);
    for (int i = 0; i < 6; i++)
        g2[i] = submit(inv, 2, 5);
    wait_started(1, 2);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    uint64_t started0 = st.workers_started;

    double t0 = now_seconds();
    assert_int_equal(invoker_cancel_tag(inv, &g_tags[1]), 20);
    /* Reported by the next poll, not inside the call; none twice. */
    assert_int_equal(r.errors, 0);
    assert_int_equal(invoker_cancel_tag(inv, &g_tags[1]), 0);
    assert_int_equal(invoker_cancel_tag(inv, &g_tags[3]), 0);   /* no task has it */
    assert_int_equal(invoker_wait(inv), 0);
    assert_true(now_seconds() - t0 < 5 * slack());   /* the running two were killed */

    for (int i = 0; i < 20; i++) {
        rec_task *t = rec_get(&r, g1[i]);
        assert_int_equal(t->errors, 1);
        assert_int_equal(t->results, 0);
        assert_int_equal(t->failure, INVOKER_FAIL_CANCELLED);
        assert_ptr_equal(t->tag, &g_tags[1]);
    }
    for (int i = 0; i < 6; i++) {
        rec_task *t = rec_get(&r, g2[i]);
        assert_int_equal(t->results, 1);
        assert_int_equal(t->errors, 0);
    }
    assert_int_equal(rec_get(&r, g0)->results, 1);
    assert_int_equal(atomic_load(&g_sh->started[1]), 2);   /* the queued never ran */
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cancelled, 20);
    assert_int_equal(st.workers_started, started0 + 2);    /* the two replaced */
    assert_int_equal(r.results + r.errors, 27);
    finish(&r, fds);
}

static void test_cancel_tag_bad_handle_and_empty_invoker(void **state)
{
    (void)state;
    assert_int_equal(invoker_cancel_tag(NULL, &g_tags[0]), -EINVAL);
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 1);
    assert_int_equal(invoker_cancel_tag(inv, NULL), 0);
    assert_int_equal(invoker_cancel_tag(inv, &g_tags[0]), 0);
    /* A NULL tag is a tag like another. */
    order o = { 30000, 0 };
    invoker_id a, b;
    assert_int_equal(invoker_submit(inv, &o, sizeof o, NULL, &a), 0);
    assert_int_equal(invoker_submit(inv, &o, sizeof o, NULL, &b), 0);
    assert_int_equal(invoker_cancel_tag(inv, NULL), 2);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, a)->failure, INVOKER_FAIL_CANCELLED);
    assert_int_equal(rec_get(&r, b)->failure, INVOKER_FAIL_CANCELLED);
    assert_int_equal(r.errors, 2);
    finish(&r, fds);
}

/* A result of generation 0 drops generation 1 from inside its callback. */
static int g_cancelled_in_callback = -1;
static int cancel_from_callback(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)res, (void)len;
    if (t->tag == &g_tags[0] && g_cancelled_in_callback < 0)
        g_cancelled_in_callback = invoker_cancel_tag(r->inv, &g_tags[1]);
    return 0;
}

static void test_cancel_tag_inside_a_callback(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 2);
    r.on_result_hook = cancel_from_callback;
    g_cancelled_in_callback = -1;
    /* Generation 0's task ends while generation 1 runs on the other
     * worker and waits in the queue. */
    submit(inv, 0, 200);
    invoker_id g1[10];
    for (int i = 0; i < 10; i++)
        g1[i] = submit(inv, 1, 30000);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(g_cancelled_in_callback, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rec_get(&r, g1[i])->errors, 1);
        assert_int_equal(rec_get(&r, g1[i])->failure, INVOKER_FAIL_CANCELLED);
    }
    assert_int_equal(r.results, 1);
    finish(&r, fds);
}

/* Inside destroy: the SHUTDOWN callback of a queued task (generation 3:
 * not the running one, reported as its worker is reaped, but one reported
 * after) cancels generation 2, queued behind it; each of its tasks is
 * still reported exactly once. */
static int g_in_destroy = -1;
static void cancel_on_shutdown(const invoker_task *t, invoker_failure f, int code, void *user)
{
    recorder *r = user;
    if (f == INVOKER_FAIL_SHUTDOWN && t->tag == &g_tags[3] && g_in_destroy < 0)
        g_in_destroy = invoker_cancel_tag(r->inv, &g_tags[2]);
    rec_on_error(t, f, code, user);
}

static void test_cancel_tag_inside_destroy_reports_each_once(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, 1);
    inv->cfg.on_error = cancel_on_shutdown;
    g_in_destroy = -1;
    invoker_id first = submit(inv, 1, 30000);
    invoker_id queued = submit(inv, 3, 1);
    invoker_id g2[5];
    for (int i = 0; i < 5; i++)
        g2[i] = submit(inv, 2, 1);
    wait_started(1, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(g_in_destroy, 5);
    assert_int_equal(rec_get(&r, first)->errors, 1);
    assert_int_equal(rec_get(&r, first)->failure, INVOKER_FAIL_SHUTDOWN);
    assert_int_equal(rec_get(&r, queued)->errors, 1);
    assert_int_equal(rec_get(&r, queued)->failure, INVOKER_FAIL_SHUTDOWN);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rec_get(&r, g2[i])->errors, 1);
        assert_int_equal(rec_get(&r, g2[i])->failure, INVOKER_FAIL_CANCELLED);
    }
    assert_int_equal(r.errors, 7);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(&r);
}

int main(void)
{
    g_sh = shared_map(sizeof *g_sh);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_a_generation_queued_and_running_is_cancelled_once_others_untouched,
            leftovers_teardown),
        cmocka_unit_test_teardown(test_cancel_tag_bad_handle_and_empty_invoker, leftovers_teardown),
        cmocka_unit_test_teardown(test_cancel_tag_inside_a_callback, leftovers_teardown),
        cmocka_unit_test_teardown(test_cancel_tag_inside_destroy_reports_each_once,
                                  leftovers_teardown),
    };
    set_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

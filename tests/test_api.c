/* The public API's argument rules and ordinary paths, through invoker.h. */
#include "helpers.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Result: each argument byte + 1, then the arg length as a size_t. */
static int obj_plus_one(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    unsigned char buf[256];
    const unsigned char *a = arg;
    if (len > sizeof buf)
        return 99;
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(a[i] + 1);
    int rc = invoker_result_write(out, buf, len);
    return rc ? rc : invoker_result_write(out, &len, sizeof len);
}

static int obj_empty(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)out;
    (void)ctx;
    return (arg == NULL && len == 0) ? 0 : 5;
}

static int obj_sleep_ms(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)out;
    (void)ctx;
    int ms = 0;
    if (len == sizeof ms)
        memcpy(&ms, arg, sizeof ms);
    usleep((useconds_t)ms * 1000u);
    return 0;
}

static int obj_pid(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)arg;
    (void)len;
    (void)ctx;
    pid_t p = getpid();
    return invoker_result_write(out, &p, sizeof p);
}

static void test_config_init_sets_defaults(void **state)
{
    (void)state;
    invoker_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    invoker_config_init(&cfg);
    assert_int_equal(cfg.workers, 0);
    assert_null(cfg.objective);
    assert_int_equal(cfg.max_arg_bytes, 64u << 20);
    assert_int_equal(cfg.max_result_bytes, 64u << 20);
    assert_int_equal(cfg.size, sizeof cfg);
    assert_true(cfg.timeout == 0);
    invoker_config_init(NULL);   /* no crash */
}

static void test_create_bad_config_returns_einval_and_leaves_nothing(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 4);
    int fds = count_open_fds();
    invoker *inv = (invoker *)0x1;
    invoker_config cfg;
    rec_config(&r, &cfg, obj_empty, 1);
    assert_int_equal(invoker_create(NULL, &cfg), -EINVAL);
    assert_int_equal(invoker_create(&inv, NULL), -EINVAL);
    invoker_config bad = cfg;
    bad.objective = NULL;
    assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    bad = cfg;
    bad.on_result = NULL;
    assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    bad = cfg;
    bad.on_error = NULL;
    assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    double bad_seconds[] = { -1, NAN, INFINITY, -INFINITY };
    for (size_t i = 0; i < 4; i++) {
        bad = cfg;
        bad.timeout = bad_seconds[i];
        assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
        bad = cfg;
        bad.cpu_limit = bad_seconds[i];
        assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    }
    const int bad_spares[] = { -1, INVOKER_SPARES_ALWAYS + 1, 1 << 30 };
    for (size_t i = 0; i < sizeof bad_spares / sizeof bad_spares[0]; i++) {
        bad = cfg;
        bad.spares = bad_spares[i];
        assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    }
    const int bad_fork_server[] = { -1, INVOKER_FORK_SERVER_NEVER + 1, 1 << 30 };
    for (size_t i = 0; i < sizeof bad_fork_server / sizeof bad_fork_server[0]; i++) {
        bad = cfg;
        bad.fork_server = bad_fork_server[i];
        assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    }
    bad = cfg;
    bad.size = sizeof cfg + 8;   /* from a newer header than this library */
    assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    bad.size = 3;
    assert_int_equal(invoker_create(&inv, &bad), -EINVAL);
    assert_ptr_equal(inv, (invoker *)0x1);   /* untouched */
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(&r);
}

static void test_zeroed_config_with_required_fields_works(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    memset(&cfg, 0, sizeof cfg);   /* no invoker_config_init: size 0, limits 0 */
    cfg.objective = obj_plus_one;
    cfg.on_result = rec_on_result;
    cfg.on_error = rec_on_error;
    cfg.user = &r;
    cfg.workers = 1;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, "ab", 2, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, id)->results, 1);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_workers_zero_means_cpus_in_affinity_mask(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    recorder r;
    rec_init(&r, 4);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_empty, 0);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers, (unsigned)CPU_COUNT(&set));
    assert_int_equal(st.workers_started, (uint64_t)CPU_COUNT(&set));
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_submit_bad_arguments_change_nothing(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_empty, 1);
    cfg.max_arg_bytes = 100;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    char buf[101] = { 0 };
    invoker_id id = 77;
    assert_int_equal(invoker_submit(NULL, buf, 1, NULL, &id), -EINVAL);
    assert_int_equal(invoker_submit(inv, NULL, 1, NULL, &id), -EINVAL);
    assert_int_equal(invoker_submit(inv, buf, 101, NULL, &id), -EMSGSIZE);
    assert_int_equal(invoker_submit_timeout(inv, buf, 1, NULL, -0.5, &id), -EINVAL);
    assert_int_equal(invoker_submit_timeout(inv, buf, 1, NULL, NAN, &id), -EINVAL);
    assert_int_equal(invoker_submit_timeout(inv, buf, 1, NULL, INFINITY, &id), -EINVAL);
    assert_int_equal(id, 77);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.submitted, 0);
    assert_int_equal(invoker_poll(inv, -1), 0);   /* nothing outstanding: at once */
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results + r.errors, 0);
    /* Exactly max_arg_bytes is fine. */
    assert_int_equal(invoker_submit(inv, buf, 100, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results + r.errors, 1);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_null_handle_calls_return_einval(void **state)
{
    (void)state;
    invoker_stats st;
    memset(&st, 0xff, sizeof st);
    assert_int_equal(invoker_poll(NULL, 0), -EINVAL);
    assert_int_equal(invoker_wait(NULL), -EINVAL);
    assert_int_equal(invoker_cancel(NULL, 1), -EINVAL);
    assert_int_equal(invoker_fd(NULL), -EINVAL);
    assert_int_equal(invoker_destroy(NULL), 0);
    invoker_get_stats(NULL, &st);
    assert_int_equal(st.submitted, 0);
    invoker_get_stats(NULL, NULL);
}

static void test_cancel_unknown_or_finished_id_returns_enoent(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_empty, 1);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    assert_int_equal(invoker_cancel(inv, 0), -ENOENT);
    assert_int_equal(invoker_cancel(inv, 12345), -ENOENT);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(invoker_cancel(inv, id), -ENOENT);
    assert_int_equal(r.results, 1);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_results_arrive_intact_once_with_tags(void **state)
{
    (void)state;
    enum { N = 2000 };
    recorder r;
    rec_init(&r, N + 1);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_plus_one, 3);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    uint64_t expect[N + 1];
    for (int i = 0; i < N; i++) {
        unsigned char arg[200], res[208];
        size_t len = (size_t)(i % 200);
        fill_pattern(arg, len, (uint64_t)i);
        for (size_t j = 0; j < len; j++)
            res[j] = (unsigned char)(arg[j] + 1);
        memcpy(res + len, &len, sizeof len);
        invoker_id id;
        assert_int_equal(invoker_submit(inv, arg, len, (void *)(uintptr_t)(i + 1), &id), 0);
        assert_true(id >= 1 && id <= N);
        expect[id] = byte_sum(res, len + sizeof len);
    }
    assert_int_equal(invoker_wait(inv), 0);
    for (invoker_id id = 1; id <= N; id++) {
        rec_task *t = rec_get(&r, id);
        assert_int_equal(t->results, 1);
        assert_int_equal(t->errors, 0);
        assert_int_equal(t->result_sum, expect[id]);
        assert_int_equal((uintptr_t)t->tag, (uintptr_t)id);
        assert_int_equal(t->attempts, 1);
        assert_true(t->worker >= 0 && t->worker < 3);
        assert_true(t->run_seconds >= 0 && t->run_seconds < 10);
    }
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.submitted, N);
    assert_int_equal(st.succeeded, N);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.workers, 3);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_empty_argument_and_result(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 4);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_empty, 1);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, id)->results, 1);   /* obj_empty fails unless NULL/0 */
    assert_int_equal(rec_get(&r, id)->result_len, 0);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

/* ---- re-entrancy ---- */

static int chain_hook(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)t;
    (void)res;
    (void)len;
    int *left = r->hook_ctx;
    assert_int_equal(invoker_poll(r->inv, 0), -EBUSY);
    assert_int_equal(invoker_wait(r->inv), -EBUSY);
    assert_int_equal(invoker_destroy(r->inv), -EBUSY);
    invoker_stats st;
    invoker_get_stats(r->inv, &st);
    assert_true(st.submitted >= 1);
    if (*left > 0) {
        (*left)--;
        invoker_id a, b;
        assert_int_equal(invoker_submit(r->inv, "x", 1, NULL, &a), 0);
        /* A cancel from inside a callback is reported by a later poll. */
        assert_int_equal(invoker_submit(r->inv, "y", 1, NULL, &b), 0);
        assert_int_equal(invoker_cancel(r->inv, b), 0);
        assert_int_equal(invoker_cancel(r->inv, b), -ENOENT);
    }
    return 0;
}

static void test_submit_and_cancel_inside_callbacks(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 512);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_plus_one, 2);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    int left = 100;
    r.inv = inv;
    r.hook_ctx = &left;
    r.on_result_hook = chain_hook;
    assert_int_equal(invoker_submit(inv, "s", 1, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);   /* waits for the chain too */
    assert_int_equal(left, 0);
    assert_int_equal(r.results, 101);
    assert_int_equal(r.errors, 100);
    for (invoker_id id = 1; id <= 201; id++) {
        rec_task *t = rec_get(&r, id);
        assert_int_equal(t->results + t->errors, 1);
        if (t->errors) {
            assert_int_equal(t->failure, INVOKER_FAIL_CANCELLED);
            assert_true(t->attempts <= 1);
        }
    }
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_fd_is_readable_when_a_result_waits(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_sleep_ms, 1);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    int fd = invoker_fd(inv);
    assert_true(fd >= 0);
    int ms = 50;
    assert_int_equal(invoker_submit(inv, &ms, sizeof ms, NULL, NULL), 0);
    double t0 = now_seconds();
    int got = 0;
    while (!got) {
        struct pollfd p = { fd, POLLIN, 0 };
        assert_true(poll(&p, 1, 5000) == 1);   /* never a hang */
        int n = invoker_poll(inv, 0);
        assert_true(n >= 0);
        got += n;
    }
    assert_true(now_seconds() - t0 >= 0.045);
    assert_int_equal(r.results, 1);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_poll_timeout_returns_zero_when_nothing_finishes(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_sleep_ms, 1);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    int ms = 300;
    assert_int_equal(invoker_submit(inv, &ms, sizeof ms, NULL, NULL), 0);
    double t0 = now_seconds();
    assert_int_equal(invoker_poll(inv, 50), 0);
    double dt = now_seconds() - t0;
    assert_true(dt >= 0.045 && dt < 0.25 * slack());
    assert_int_equal(invoker_poll(inv, -1), 1);
    assert_int_equal(invoker_destroy(inv), 0);
    rec_free(&r);
}

static void test_max_queued_refuses_with_eagain(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 64);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_sleep_ms, 1);
    cfg.max_queued = 3;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    int ms = 200, accepted = 0, rc;
    while ((rc = invoker_submit(inv, &ms, sizeof ms, NULL, NULL)) == 0 && accepted < 50)
        accepted++;
    assert_int_equal(rc, -EAGAIN);
    /* max_queued waiting, plus at most one the worker has started. */
    assert_true(accepted >= 3 && accepted <= 4);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.submitted, (uint64_t)accepted);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, (size_t)accepted);
    assert_int_equal(invoker_submit(inv, &ms, sizeof ms, NULL, NULL), 0);   /* room again */
    assert_int_equal(invoker_destroy(inv), 0);
    assert_int_equal(r.errors, 1);   /* that last one: SHUTDOWN */
    rec_free(&r);
}

static void test_inline_mode_runs_in_the_calling_process(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    invoker_config cfg;
    rec_config(&r, &cfg, obj_pid, 4);
    cfg.inline_mode = 1;
    int fds = count_open_fds();
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    assert_int_equal(count_children(), 0);
    invoker_id a, b;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &a), 0);
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &b), 0);
    struct pollfd p = { invoker_fd(inv), POLLIN, 0 };
    assert_int_equal(poll(&p, 1, 0), 1);   /* work is waiting */
    assert_int_equal(invoker_poll(inv, 0), 1);   /* one task at a time */
    assert_int_equal(invoker_poll(inv, -1), 1);
    assert_int_equal(invoker_poll(inv, -1), 0);
    pid_t me = getpid();
    assert_int_equal(rec_get(&r, a)->result_sum, byte_sum(&me, sizeof me));
    assert_int_equal(rec_get(&r, b)->attempts, 1);
    assert_int_equal(invoker_cancel(inv, a), -ENOENT);
    assert_int_equal(invoker_destroy(inv), 0);
    assert_int_equal(count_open_fds(), fds);
    rec_free(&r);
}

static void test_names_and_version(void **state)
{
    (void)state;
    assert_string_equal(invoker_failure_name(INVOKER_FAIL_TIMEOUT), "timeout");
    assert_string_equal(invoker_failure_name(INVOKER_FAIL_CRASH), "crash");
    assert_string_equal(invoker_failure_name(INVOKER_FAIL_LOST), "lost");
    assert_string_equal(invoker_failure_name((invoker_failure)999), "unknown");
    for (int f = INVOKER_FAIL_OBJECTIVE; f <= INVOKER_FAIL_LOST; f++)
        assert_string_not_equal(invoker_failure_name((invoker_failure)f), "unknown");
    assert_string_equal(invoker_strerror(-EMSGSIZE), "argument larger than max_arg_bytes");
    assert_string_equal(invoker_strerror(-12345), "unknown error");
    assert_string_equal(invoker_strerror(7), "unknown error");
    assert_int_equal(invoker_version(), INVOKER_VERSION);
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", INVOKER_VERSION_MAJOR, INVOKER_VERSION_MINOR,
             INVOKER_VERSION_PATCH);
    assert_string_equal(invoker_version_string(), v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_init_sets_defaults),
        cmocka_unit_test(test_create_bad_config_returns_einval_and_leaves_nothing),
        cmocka_unit_test(test_zeroed_config_with_required_fields_works),
        cmocka_unit_test(test_workers_zero_means_cpus_in_affinity_mask),
        cmocka_unit_test(test_submit_bad_arguments_change_nothing),
        cmocka_unit_test(test_null_handle_calls_return_einval),
        cmocka_unit_test(test_cancel_unknown_or_finished_id_returns_enoent),
        cmocka_unit_test(test_results_arrive_intact_once_with_tags),
        cmocka_unit_test(test_empty_argument_and_result),
        cmocka_unit_test(test_submit_and_cancel_inside_callbacks),
        cmocka_unit_test(test_fd_is_readable_when_a_result_waits),
        cmocka_unit_test(test_poll_timeout_returns_zero_when_nothing_finishes),
        cmocka_unit_test(test_max_queued_refuses_with_eagain),
        cmocka_unit_test(test_inline_mode_runs_in_the_calling_process),
        cmocka_unit_test(test_names_and_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

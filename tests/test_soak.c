/* Soak: one invoker runs many trivial tasks and replaces its workers many
 * times; the parent's resident memory and descriptors must not grow, every
 * task is reported exactly once and the stats add up.
 *
 * Sizes: INVOKER_SOAK=1 runs 1,000,000 tasks and 10,000 worker restarts;
 * the default is 200,000 and 5,000 (2,500 of them faults); under valgrind (INVOKER_UNDER_VALGRIND)
 * 5,000 and 50.  Half the restarts come from max_tasks_per_worker, half
 * from objectives that _exit() (those tasks fail with INVOKER_FAIL_EXIT). */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { WORKERS = 2, SAMPLES = 10, WINDOW = 2048, EXIT_CODE = 3 };

typedef struct { uint64_t index; uint32_t exit; uint32_t pad; } order;

/* Runs in a worker: returns 3 * index + 1, or _exit()s when told to. */
static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 1000;
    memcpy(&o, arg, sizeof o);
    if (o.exit)
        _exit(EXIT_CODE);
    uint64_t v = 3 * o.index + 1;
    return invoker_result_write(out, &v, sizeof v);
}

typedef struct soak {
    unsigned char *seen;        /* [n + 1]: callbacks per task index; 0 is unused */
    size_t n, exit_every;
    size_t reported, results, errors, bad;
    size_t settle_results;      /* tasks with index 0, run only to settle the pool */
} soak;

static int must_exit(const soak *s, size_t index)
{
    return index % s->exit_every == s->exit_every / 2;
}

static void on_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    soak *s = user;
    size_t index = (size_t)(uintptr_t)t->tag;
    uint64_t v = 0;
    if (len == sizeof v)
        memcpy(&v, res, sizeof v);
    if (index == 0) {
        s->settle_results++;
        if (v != 1)
            s->bad++;
        return;
    }
    s->reported++;
    s->results++;
    if (index > s->n || len != sizeof v || v != 3 * (uint64_t)index + 1 || must_exit(s, index))
        s->bad++;
    else if (s->seen[index]++ != 0)
        s->bad++;
}

static void on_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    soak *s = user;
    size_t index = (size_t)(uintptr_t)t->tag;
    s->reported++;
    s->errors++;
    if (index == 0 || index > s->n || !must_exit(s, index) || f != INVOKER_FAIL_EXIT ||
        code != EXIT_CODE || t->attempts != 1)
        s->bad++;
    else if (s->seen[index]++ != 0)
        s->bad++;
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long size = 0, resident = 0;
    assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void submit_index(invoker *inv, size_t index, int exit_now)
{
    order o;
    memset(&o, 0, sizeof o);
    o.index = index;
    o.exit = (uint32_t)exit_now;
    assert_int_equal(invoker_submit(inv, &o, sizeof o, (void *)(uintptr_t)index, NULL), 0);
}

/* Idle, with every worker live: only then is the descriptor count fixed
 * (a slot waiting for its replacement holds none).  A settling task may
 * itself retire a worker, hence the loop. */
static unsigned settle(invoker *inv)
{
    unsigned rounds = 0;
    invoker_stats st;
    for (;;) {
        assert_int_equal(invoker_wait(inv), 0);
        invoker_get_stats(inv, &st);
        /* Spares too: they come once a worker had to be replaced. */
        if (st.workers == WORKERS && st.spares == WORKERS)
            return rounds;
        assert_true(++rounds < 10000);
        submit_index(inv, 0, 0);
    }
}

static void test_soak_rss_and_fds_flat_every_task_once(void **state)
{
    (void)state;
    int valgrind = getenv("INVOKER_UNDER_VALGRIND") != NULL;
    int longer = getenv("INVOKER_SOAK") && atoi(getenv("INVOKER_SOAK")) > 0;
    size_t n = valgrind ? 5000 : longer ? 1000000 : 200000;
    size_t restarts = valgrind ? 50 : longer ? 10000 : 5000;

    soak s;
    memset(&s, 0, sizeof s);
    s.n = n;
    s.exit_every = 2 * n / restarts;       /* restarts / 2 exits */
    s.seen = malloc(n + 1);
    assert_non_null(s.seen);
    memset(s.seen, 0, n + 1);              /* resident before the first sample */

    int fds0 = count_open_fds();
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = WORKERS;
    cfg.objective = obj;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &s;
    /* About restarts / 2 retirements in all, the exits cutting some lives short. */
    cfg.max_tasks_per_worker = (unsigned)(2 * n / restarts / WORKERS);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);

    /* Round 0 warms up; a sample is taken, idle, after each later round. */
    size_t rss[SAMPLES], exits = 0;
    int fds[SAMPLES];
    unsigned settled = 0;
    size_t per_round = n / (SAMPLES + 1), next = 1;
    double t0 = now_seconds();
    for (int round = 0; round <= SAMPLES; round++) {
        size_t end = round == SAMPLES ? n : next + per_round - 1;
        while (next <= end) {
            while (next <= end && next - 1 - s.reported < WINDOW) {
                int ex = must_exit(&s, next);
                exits += (size_t)ex;
                submit_index(inv, next++, ex);
            }
            assert_true(invoker_poll(inv, -1) >= 0);
        }
        settled += settle(inv);
        assert_int_equal(s.reported, next - 1);
        if (round > 0) {
            rss[round - 1] = rss_bytes();
            fds[round - 1] = count_open_fds();
        }
    }
    double took = now_seconds() - t0;

    invoker_stats st;
    invoker_get_stats(inv, &st);
    print_message("soak: %zu tasks, %zu exits, %llu worker restarts, %u settling tasks, "
                  "%.2f s (%.0f tasks/s)\n", n, exits,
                  (unsigned long long)(st.workers_started - WORKERS), settled, took,
                  (double)n / took);
    print_message("soak: RSS KiB after each round:");
    for (int i = 0; i < SAMPLES; i++)
        print_message(" %zu", rss[i] / 1024);
    print_message("\nsoak: fds after each round:");
    for (int i = 0; i < SAMPLES; i++)
        print_message(" %d", fds[i]);
    print_message("\n");

    /* Every task exactly once, with the right outcome. */
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.reported, n);
    for (size_t i = 1; i <= n; i++)
        if (s.seen[i] != 1)
            fail_msg("task %zu reported %d times", i, s.seen[i]);
    assert_int_equal(s.errors, exits);
    assert_int_equal(s.results, n - exits);
    assert_int_equal(s.settle_results, settled);

    /* The stats add up. */
    assert_int_equal(st.submitted, n + settled);
    assert_int_equal(st.succeeded, n - exits + settled);
    assert_int_equal(st.failed, exits);
    assert_int_equal(st.crashed, exits);
    assert_int_equal(st.timed_out, 0);
    assert_int_equal(st.cancelled, 0);
    assert_int_equal(st.retried, 0);
    assert_int_equal(st.succeeded + st.failed, st.submitted);
    assert_int_equal(st.workers, WORKERS);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    assert_true(st.workers_started - WORKERS >= restarts * 9 / 10);

    /* Flat: descriptors exactly, memory within 10% + 4 MiB of the first sample. */
    for (int i = 1; i < SAMPLES; i++)
        assert_int_equal(fds[i], fds[0]);
    if (!valgrind)   /* valgrind's own heap makes the parent's RSS meaningless */
        assert_true(rss[SAMPLES - 1] <= rss[0] + rss[0] / 10 + ((size_t)4 << 20));

    assert_int_equal(invoker_destroy(inv), 0);
    assert_int_equal(count_open_fds(), fds0);
    assert_int_equal(count_children(), 0);
    free(s.seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_soak_rss_and_fds_flat_every_task_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* How tasks fail: objective errors, oversize results, deaths, timeouts,
 * cancels, retries, worker recycling and worker_init. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The argument says what to do. */
enum act { ACT_OK, ACT_FAIL, ACT_SEGV, ACT_ABORT, ACT_EXIT7, ACT_HANG, ACT_BIG,
           ACT_SLEEP, ACT_CRASH_ONCE, ACT_PID, ACT_SLOT, ACT_CLOSE_AND_HANG };
typedef struct { int act; int value; } order;

static _Atomic int *shared;   /* MAP_SHARED counters, seen by every worker */
static unsigned my_slot;

static int recording_init(unsigned worker, void *ctx)
{
    (void)ctx;
    my_slot = worker;
    atomic_fetch_add(&shared[16 + (worker < 16 ? worker : 15)], 1);
    return 0;
}

static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 1000;
    memcpy(&o, arg, sizeof o);
    atomic_fetch_add(&shared[0], 1);   /* runs started */
    switch (o.act) {
    case ACT_FAIL:
        return o.value;
    case ACT_SEGV:
        raise(SIGSEGV);
        break;
    case ACT_ABORT:
        abort();
    case ACT_EXIT7:
        exit(7);
    case ACT_HANG:
        for (;;)
            pause();
    case ACT_BIG: {
        char buf[64] = { 0 };
        int rc = 0;
        for (int i = 0; i < o.value && rc == 0; i++)
            rc = invoker_result_write(out, buf, sizeof buf);
        return rc == -EMSGSIZE ? 0 : rc;   /* "succeeds", but wrote too much */
    }
    case ACT_SLEEP:
        usleep((useconds_t)o.value * 1000u);
        break;
    case ACT_CRASH_ONCE:
        if (atomic_fetch_add(&shared[1], 1) < o.value)
            raise(SIGKILL);
        break;
    case ACT_PID: {
        pid_t p = getpid();
        return invoker_result_write(out, &p, sizeof p);
    }
    case ACT_SLOT:
        return invoker_result_write(out, &my_slot, sizeof my_slot);
    case ACT_CLOSE_AND_HANG:
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        for (;;)
            pause();
    }
    return invoker_result_write(out, &o.value, sizeof o.value);
}

static int setup(void **state)
{
    (void)state;
    shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return shared == MAP_FAILED ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    munmap((void *)shared, 4096);
    return 0;
}

static invoker_id submit(invoker *inv, int act, int value)
{
    order o = { act, value };
    invoker_id id = 0;
    assert_int_equal(invoker_submit(inv, &o, sizeof o, NULL, &id), 0);
    return id;
}

static invoker *make(recorder *r, unsigned workers, void (*tweak)(invoker_config *))
{
    memset((void *)shared, 0, 4096);
    invoker_config cfg;
    rec_config(r, &cfg, obj, workers);
    cfg.worker_init = recording_init;
    if (tweak)
        tweak(&cfg);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r->inv = inv;
    return inv;
}

static void finish(recorder *r, int fds)
{
    assert_int_equal(invoker_destroy(r->inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(r);
}

static void test_objective_error_code_reaches_on_error(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, NULL);
    invoker_id a = submit(inv, ACT_FAIL, 42), b = submit(inv, ACT_FAIL, -3);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, a)->failure, INVOKER_FAIL_OBJECTIVE);
    assert_int_equal(rec_get(&r, a)->code, 42);
    assert_int_equal(rec_get(&r, b)->code, -3);
    assert_int_equal(rec_get(&r, b)->attempts, 1);
    finish(&r, fds);
}

static void small_results(invoker_config *c) { c->max_result_bytes = 640; }

static void test_result_past_max_fails_too_large_whatever_returned(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, small_results);
    invoker_id fits = submit(inv, ACT_BIG, 10), over = submit(inv, ACT_BIG, 11);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, fits)->results, 1);
    assert_int_equal(rec_get(&r, fits)->result_len, 640);
    assert_int_equal(rec_get(&r, over)->errors, 1);
    assert_int_equal(rec_get(&r, over)->failure, INVOKER_FAIL_TOO_LARGE);
    finish(&r, fds);
}

static void test_worker_death_costs_only_its_task(void **state)
{
    (void)state;
    const struct { int act; invoker_failure f; int code; } deaths[] = {
        { ACT_SEGV, INVOKER_FAIL_CRASH, SIGSEGV },
        { ACT_ABORT, INVOKER_FAIL_CRASH, SIGABRT },
        { ACT_EXIT7, INVOKER_FAIL_EXIT, 7 },
    };
    for (size_t d = 0; d < 3; d++) {
        recorder r;
        rec_init(&r, 64);
        int fds = count_open_fds();
        invoker *inv = make(&r, 1, NULL);   /* one worker: it ran the ones before */
        for (int i = 0; i < 5; i++)
            submit(inv, ACT_OK, i);
        invoker_id bad = submit(inv, deaths[d].act, 0);
        for (int i = 0; i < 5; i++)
            submit(inv, ACT_OK, i);
        assert_int_equal(invoker_wait(inv), 0);
        for (invoker_id id = 1; id <= 11; id++) {
            rec_task *t = rec_get(&r, id);
            assert_int_equal(t->results + t->errors, 1);
            assert_int_equal(t->errors, id == bad);
        }
        assert_int_equal(rec_get(&r, bad)->failure, deaths[d].f);
        assert_int_equal(rec_get(&r, bad)->code, deaths[d].code);
        assert_int_equal(rec_get(&r, bad)->attempts, 1);
        assert_int_equal(rec_get(&r, bad)->worker, 0);
        invoker_stats st;
        invoker_get_stats(inv, &st);
        assert_int_equal(st.workers, 1);
        assert_int_equal(st.workers_started, 2);
        assert_int_equal(st.crashed, 1);
        finish(&r, fds);
    }
}

static void timeout_100ms(invoker_config *c) { c->timeout = 0.1; }

static void test_timeout_reported_within_ms_of_deadline(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 16);
    int fds = count_open_fds();
    invoker *inv = make(&r, 2, timeout_100ms);
    double t0 = now_seconds();
    invoker_id hung = submit(inv, ACT_HANG, 0);
    order o = { ACT_HANG, 0 };
    invoker_id own;
    assert_int_equal(invoker_submit_timeout(inv, &o, sizeof o, NULL, 0.25, &own), 0);
    o.act = ACT_SLEEP;
    o.value = 200;
    invoker_id unlimited;   /* per-task 0: no limit, whatever the config says */
    assert_int_equal(invoker_submit_timeout(inv, &o, sizeof o, NULL, 0, &unlimited), 0);
    assert_int_equal(invoker_wait(inv), 0);
    rec_task *h = rec_get(&r, hung), *w = rec_get(&r, own);
    assert_int_equal(h->failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(w->failure, INVOKER_FAIL_TIMEOUT);
    /* "within a few milliseconds": generous bounds catch a missing timer. */
    assert_true(h->run_seconds >= 0.1 && h->run_seconds < 0.1 + 0.05 * slack());
    assert_true(h->reported_at - t0 >= 0.1 && h->reported_at - t0 < 0.1 + 0.1 * slack());
    assert_true(w->run_seconds >= 0.25 && w->run_seconds < 0.25 + 0.05 * slack());
    assert_int_equal(rec_get(&r, unlimited)->results, 1);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.timed_out, 2);
    assert_int_equal(st.workers, 2);
    finish(&r, fds);
}

/* An on_error that takes its time over a timeout, as a slow callback may:
 * until the worker, killed but not yet signalled (that waits for the end
 * of the pass), has finished the task and started the next one, and a
 * moment more. */
static void wait_for_the_next_run(const invoker_task *t, invoker_failure f, int code, void *user)
{
    rec_on_error(t, f, code, user);
    double until = now_seconds() + 5.0 * slack();
    while (f == INVOKER_FAIL_TIMEOUT && atomic_load(&shared[0]) < 2 && now_seconds() < until)
        usleep(1000);
    if (f == INVOKER_FAIL_TIMEOUT)
        usleep(50000);
}

static void slow_timeout_report(invoker_config *c) { c->on_error = wait_for_the_next_run; }

/* One worker: a task that times out but finishes late, then the next task
 * (act), which starts in the condemned worker before the kill reaches it.
 * Returns the next task's id, with the first checked. */
static invoker_id next_after_a_timeout(recorder *r, invoker **inv, int act, int value)
{
    rec_init(r, 8);
    *inv = make(r, 1, slow_timeout_report);
    order late = { ACT_SLEEP, 150 };
    invoker_id timed;
    assert_int_equal(invoker_submit_timeout(*inv, &late, sizeof late, NULL, 0.1, &timed), 0);
    invoker_id next = submit(*inv, act, value);
    assert_int_equal(invoker_wait(*inv), 0);
    assert_int_equal(rec_get(r, timed)->failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(rec_get(r, timed)->results, 0);
    invoker_stats st;
    invoker_get_stats(*inv, &st);
    assert_int_equal(st.timed_out, 1);
    assert_int_equal(st.workers, 1);
    return next;
}

/* The kill lands mid-task: the task is no casualty of the timeout,
 * reported long before.  It runs again, once counted, and succeeds. */
static void test_task_taken_after_a_timeout_verdict_is_not_failed_with_it(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    invoker *inv;
    invoker_id next = next_after_a_timeout(&r, &inv, ACT_SLEEP, 300);
    assert_int_equal(atomic_load(&shared[0]), 3);   /* timed, next killed, next again */
    assert_int_equal(rec_get(&r, next)->errors, 0);
    assert_int_equal(rec_get(&r, next)->results, 1);
    assert_int_equal(rec_get(&r, next)->attempts, 1);
    finish(&r, fds);
}

/* The task crashes the worker before the kill lands: that death is its
 * own, reported as its crash, and it does not run again. */
static void test_task_that_crashes_a_condemned_worker_is_its_crash(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    invoker *inv;
    invoker_id next = next_after_a_timeout(&r, &inv, ACT_SEGV, 0);
    assert_int_equal(atomic_load(&shared[0]), 2);   /* timed, next: once */
    assert_int_equal(rec_get(&r, next)->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(rec_get(&r, next)->code, SIGSEGV);
    assert_int_equal(rec_get(&r, next)->attempts, 1);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.crashed, 1);
    finish(&r, fds);
}

static void test_fd_alone_wakes_an_event_loop_at_the_deadline(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, NULL);
    order o = { ACT_HANG, 0 };
    double t0 = now_seconds();
    assert_int_equal(invoker_submit_timeout(inv, &o, sizeof o, NULL, 0.2, NULL), 0);
    /* Only the descriptor is watched, as an event loop would. */
    while (r.errors == 0) {
        struct pollfd p = { invoker_fd(inv), POLLIN, 0 };
        assert_int_equal(poll(&p, 1, 3000), 1);
        assert_true(invoker_poll(inv, 0) >= 0);
    }
    double dt = now_seconds() - t0;
    assert_true(dt >= 0.2 && dt < 0.2 + 0.1 * slack());
    assert_int_equal(rec_get(&r, 1)->failure, INVOKER_FAIL_TIMEOUT);
    finish(&r, fds);
}

static void test_cancel_queued_task_never_runs(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, NULL);
    invoker_id busy = submit(inv, ACT_SLEEP, 150);
    invoker_id queued = submit(inv, ACT_OK, 1);
    assert_int_equal(invoker_cancel(inv, queued), 0);
    assert_int_equal(invoker_cancel(inv, queued), -ENOENT);
    assert_int_equal(r.errors, 0);   /* reported by poll, not by cancel */
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, queued)->failure, INVOKER_FAIL_CANCELLED);
    assert_int_equal(rec_get(&r, queued)->attempts, 0);
    assert_int_equal(rec_get(&r, queued)->worker, -1);
    assert_int_equal(rec_get(&r, busy)->results, 1);
    assert_int_equal(atomic_load(&shared[0]), 1);   /* only the sleeper ran */
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.workers_started, 1);
    finish(&r, fds);
}

/* A worker skips a cancelled task's ticket without a word.  With the queue
 * full of such tickets when the parent last tried to write, and tasks
 * waiting behind them, the worker drains the queue and nothing else would
 * ever wake the parent to stock it again. */
static void test_tasks_behind_a_queue_of_cancelled_tickets_still_run(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 4096);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, NULL);
    pid_t worker = inv->workers[0].pid;
    assert_int_equal(kill(worker, SIGSTOP), 0);
    invoker_id last = 0;
    while (!inv->queue_full && last < 4000)
        last = submit(inv, ACT_OK, 1);
    assert_true(inv->queue_full);
    invoker_id behind[3];
    for (int i = 0; i < 3; i++)
        behind[i] = submit(inv, ACT_OK, 2);
    for (invoker_id id = 1; id < last; id++)   /* every ticket in the queue */
        assert_int_equal(invoker_cancel(inv, id), 0);
    assert_int_equal(invoker_poll(inv, 0), (int)last - 1);   /* still full: he is stopped */
    assert_int_equal(kill(worker, SIGCONT), 0);
    sleep_us(100000);   /* he drains the queue, skipping every ticket */
    alarm(20);
    assert_int_equal(invoker_wait(inv), 0);
    alarm(0);
    assert_int_equal(rec_get(&r, last)->results, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rec_get(&r, behind[i])->results, 1);
    assert_int_equal(atomic_load(&shared[0]), 4);   /* only those ran */
    finish(&r, fds);
}

/* The killed worker may be reaped in the very poll that reports its task,
 * before anything else is outstanding; a task submitted next must still
 * find a worker (once it waited forever where no pidfd exists). */
static void test_submit_right_after_a_cancel_kill_always_finds_a_worker(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 128);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, NULL);
    alarm(120);
    for (int round = 0; round < 40; round++) {
        invoker_id hung = submit(inv, ACT_HANG, 0);
        invoker_stats st;
        do {
            assert_true(invoker_poll(inv, 5) >= 0);
            invoker_get_stats(inv, &st);
        } while (st.busy == 0);
        assert_int_equal(invoker_cancel(inv, hung), 0);
        assert_int_equal(invoker_wait(inv), 0);
        if (round % 2)
            sleep_us(3000);   /* let the death land before the next submit */
        invoker_id ok = submit(inv, ACT_OK, round);
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(rec_get(&r, ok)->results, 1);
    }
    alarm(0);
    finish(&r, fds);
}

static void test_cancel_running_task_kills_and_replaces_worker(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, NULL);
    invoker_id hung = submit(inv, ACT_HANG, 0);
    invoker_stats st;
    double t0 = now_seconds();
    do {
        assert_int_equal(invoker_poll(inv, 5), 0);
        invoker_get_stats(inv, &st);
        assert_true(now_seconds() - t0 < 5);
    } while (st.busy == 0);
    assert_int_equal(invoker_cancel(inv, hung), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, hung)->failure, INVOKER_FAIL_CANCELLED);
    assert_int_equal(rec_get(&r, hung)->attempts, 1);
    assert_int_equal(rec_get(&r, hung)->worker, 0);
    invoker_id after = submit(inv, ACT_OK, 5);   /* the replacement serves */
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, after)->results, 1);
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers_started, 2);
    finish(&r, fds);
}

static void retries_2(invoker_config *c) { c->retries = 2; }

static void test_retries_rerun_then_report_with_attempts(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    int fds = count_open_fds();
    invoker *inv = make(&r, 2, retries_2);
    invoker_id always = submit(inv, ACT_SEGV, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, always)->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(rec_get(&r, always)->attempts, 3);
    invoker_id once = submit(inv, ACT_CRASH_ONCE, 1);   /* dies the first time only */
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, once)->results, 1);
    assert_int_equal(rec_get(&r, once)->attempts, 2);
    invoker_id obj_err = submit(inv, ACT_FAIL, 9);   /* the objective's own: no retry */
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, obj_err)->attempts, 1);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.retried, 3);
    finish(&r, fds);
}

static void recycle_3(invoker_config *c) { c->max_tasks_per_worker = 3; }

static void test_max_tasks_per_worker_replaces_worker(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 64);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, recycle_3);
    for (int i = 0; i < 30; i++)
        submit(inv, ACT_PID, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, 30);
    /* 30 tasks, 3 per worker: at least 10 workers served them. */
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_true(st.workers_started >= 10);
    assert_int_equal(st.failed, 0);
    finish(&r, fds);
}

static void test_worker_init_runs_once_per_worker_with_its_slot(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 128);
    int fds = count_open_fds();
    invoker *inv = make(&r, 3, NULL);
    for (int i = 0; i < 100; i++)
        submit(inv, ACT_SLOT, 0);
    assert_int_equal(invoker_wait(inv), 0);
    int served[3] = { 0 };
    for (invoker_id id = 1; id <= 100; id++) {
        rec_task *t = rec_get(&r, id);
        unsigned slot = (unsigned)t->worker;
        assert_int_equal(t->results, 1);
        assert_true(slot < 3);
        assert_int_equal(t->result_sum, byte_sum(&slot, sizeof slot));   /* the same slot */
        served[slot]++;
    }
    /* Once per worker; a worker still starting when the tasks ran out may
     * not have got there yet. */
    for (int k = 0; k < 3; k++)
        assert_int_equal(atomic_load(&shared[16 + k]), served[k] ? 1 : atomic_load(&shared[16 + k]) & 1);
    finish(&r, fds);
}

static void test_worker_closing_its_pipes_fails_protocol_without_stalling(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, 8);
    int fds = count_open_fds();
    invoker *inv = make(&r, 1, NULL);
    double t0 = now_seconds();
    invoker_id bad = submit(inv, ACT_CLOSE_AND_HANG, 0);
    invoker_id after = submit(inv, ACT_OK, 3);
    /* The parent must not sit in a call while it waits to see whether the
     * worker goes by itself: every poll returns well before that grace
     * (EOF_GRACE_NS, 100 ms) would be over, a stall of the machine aside. */
    while (r.results + r.errors < 2) {
        double p0 = now_seconds();
        assert_true(invoker_poll(inv, 10) >= 0);
        assert_true(now_seconds() - p0 < 0.09 * slack());
        assert_true(now_seconds() - t0 < 3 * slack());
    }
    assert_int_equal(rec_get(&r, bad)->failure, INVOKER_FAIL_PROTOCOL);
    assert_int_equal(rec_get(&r, after)->results, 1);   /* on the replacement */
    finish(&r, fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objective_error_code_reaches_on_error),
        cmocka_unit_test(test_result_past_max_fails_too_large_whatever_returned),
        cmocka_unit_test(test_worker_death_costs_only_its_task),
        cmocka_unit_test(test_timeout_reported_within_ms_of_deadline),
        cmocka_unit_test(test_task_taken_after_a_timeout_verdict_is_not_failed_with_it),
        cmocka_unit_test(test_task_that_crashes_a_condemned_worker_is_its_crash),
        cmocka_unit_test(test_fd_alone_wakes_an_event_loop_at_the_deadline),
        cmocka_unit_test(test_cancel_queued_task_never_runs),
        cmocka_unit_test(test_cancel_running_task_kills_and_replaces_worker),
        cmocka_unit_test(test_submit_right_after_a_cancel_kill_always_finds_a_worker),
        cmocka_unit_test(test_tasks_behind_a_queue_of_cancelled_tickets_still_run),
        cmocka_unit_test(test_retries_rerun_then_report_with_attempts),
        cmocka_unit_test(test_max_tasks_per_worker_replaces_worker),
        cmocka_unit_test(test_worker_init_runs_once_per_worker_with_its_slot),
        cmocka_unit_test(test_worker_closing_its_pipes_fails_protocol_without_stalling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

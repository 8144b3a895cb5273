/*
 * The respawn guard: worker_init failures, fork failures (injected by
 * wrapping fork(): this executable is linked with -Wl,--wrap=fork) and
 * workers that die before or after taking a task.
 *
 * alarm() is the hang guard: its default action ends the test process.
 * INVOKER_TEST_FILTER=<glob> runs only the matching tests.
 */
#include "helpers.h"
#include "internal.h"   /* the teardown mutes a leftover invoker's callbacks */

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- fork injection ---------------------------------------------------------- */

/* Both ways a worker comes to be fail on demand: the parent's fork() and
 * the fork server's clone, a raw syscall (this executable is linked with
 * -Wl,--wrap=fork,--wrap=syscall).  The counters are in shared memory, so
 * that the server, a fork of this process made at invoker_create, obeys
 * what a test sets later. */
typedef struct {
    atomic_long allow;       /* forks still allowed; -1: no limit */
    atomic_long fail_next;   /* the next this many fail first */
    atomic_long calls, failed;
    atomic_long die_after_clone; /* the server dies after this many clones' worth */
    atomic_long orphan;          /* the pid of the worker it made then */
} fork_injection;
static fork_injection *g_inj;
#define g_fork_allow (g_inj->allow)
#define g_fork_fail_next (g_inj->fail_next)
#define g_fork_failed (g_inj->failed)

pid_t __real_fork(void);
pid_t __wrap_fork(void);
long __real_syscall(long n, ...);
long __wrap_syscall(long n, ...);

static bool fork_fails(void)
{
    g_inj->calls++;
    if (g_inj->fail_next > 0 || g_inj->allow == 0) {
        if (g_inj->fail_next > 0)
            g_inj->fail_next--;
        g_inj->failed++;
        errno = EAGAIN;
        return true;
    }
    if (g_inj->allow > 0)
        g_inj->allow--;
    return false;
}

pid_t __wrap_fork(void)
{
    return fork_fails() ? -1 : __real_fork();
}

long __wrap_syscall(long n, ...)
{
    /* As syscall(2) itself does: six argument words, whatever the call. */
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_clone && fork_fails())
        return -1;
    long r = __real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (n == SYS_clone && r > 0 && g_inj->die_after_clone > 0) {
        /* In the server, between its clone and its answer. */
        g_inj->die_after_clone--;
        g_inj->orphan = r;
        _exit(0);
    }
    return r;
}

static void fork_reset(void)
{
    g_inj->allow = -1;
    g_inj->fail_next = 0;
    g_inj->calls = g_inj->failed = 0;
    g_inj->die_after_clone = g_inj->orphan = 0;
}

/* The fork-failure tests run once with the fork server and once without. */
static int g_server_modes[2] = { INVOKER_FORK_SERVER_AUTO, INVOKER_FORK_SERVER_NEVER };

static void set_fork_mode(void **state, invoker_config *cfg)
{
    if (state && *state) {
        cfg->fork_server = *(int *)*state;
        printf("[ INFO     ] fork server: %s\n",
               cfg->fork_server == INVOKER_FORK_SERVER_NEVER ? "never" : "auto");
    }
}

/* A shortage is not the fork server's failure: it keeps serving. */
static void assert_fork_mode(void **state, const invoker *inv)
{
    invoker_stats st;
    invoker_get_stats(inv, &st);
    bool want = *(int *)*state == INVOKER_FORK_SERVER_AUTO && invoker__forkserver_supported();
    assert_int_equal(st.fork_server, want);
}

/* ---- small tools ---------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    fork_reset();
    fflush(NULL);
    alarm(slack() > 1 ? 280 : 40);   /* hang guard */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    destroy_leftovers();
    fork_reset();
    return 0;
}

static void end_test(int fds_before)
{
    assert_int_equal(count_open_fds(), fds_before);
    assert_int_equal(count_children(), 0);
}

enum mode { G_PLAIN = 0, G_SEGV, G_SLEEP };

typedef struct g_arg {
    uint32_t mode;
    uint32_t sleep_us;
} g_arg;

static int g_objective(const void *argp, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    g_arg a;
    if (len != sizeof a)
        return 90;
    memcpy(&a, argp, sizeof a);
    if (a.mode == G_SEGV)
        raise(SIGSEGV);
    if (a.mode == G_SLEEP)
        sleep_us(a.sleep_us);
    int32_t pid = (int32_t)getpid();
    return invoker_result_write(out, &pid, sizeof pid) == 0 ? 0 : 91;
}

static const g_arg PLAIN = { G_PLAIN, 0 };
static const g_arg SEGV = { G_SEGV, 0 };
static const g_arg SHORT = { G_SLEEP, 1000 };

/* Until the pool has its size again, or seconds pass: short tasks, wait. */
static unsigned pool_after(invoker *inv, unsigned workers, double seconds)
{
    invoker_stats st;
    double until = now_seconds() + seconds * slack();
    for (;;) {
        for (unsigned i = 0; i < 2 * workers; i++)
            assert_int_equal(invoker_submit(inv, &SHORT, sizeof SHORT, NULL, NULL), 0);
        assert_int_equal(invoker_wait(inv), 0);
        invoker_get_stats(inv, &st);
        if (st.workers == workers || now_seconds() > until)
            return st.workers;
        sleep_us(10000);
    }
}

/* ---- 10. worker_init that always fails -------------------------------------- */

static int init_fails_42(unsigned worker, void *ctx)
{
    (void)worker;
    (void)ctx;
    return 42;
}

static void test_worker_init_always_failing_tasks_report_no_worker_with_its_code(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 64);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 2);
    set_fork_mode(state, &cfg);
    cfg.worker_init = init_fails_42;
    invoker *inv = NULL;
    int rc = invoker_create(&inv, &cfg);
    if (rc != 0) {   /* failing cleanly is allowed too */
        assert_true(rc < 0);
        end_test(fds0);
        rec_free(&rec);
        return;
    }
    track(inv);
    for (int i = 0; i < 20; i++)
        assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, NULL), 0);
    double t0 = now_seconds();
    assert_int_equal(invoker_wait(inv), 0);
    double took = now_seconds() - t0;
    printf("[ INFO     ] wait returned after %.3f s\n", took);
    assert_true(took < 5.0 * slack());
    assert_int_equal(rec.results, 0);
    assert_int_equal(rec.errors, 20);
    for (invoker_id id = 1; id <= 20; id++) {
        rec_task *rt = rec_get(&rec, id);
        assert_int_equal(rt->errors, 1);
        assert_int_equal(rt->failure, INVOKER_FAIL_NO_WORKER);
        assert_int_equal(rt->code, 42);
        assert_int_equal(rt->attempts, 0);
        assert_int_equal(rt->worker, -1);
    }
    /* Later tasks too, promptly. */
    invoker_id id = 0;
    assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, &id), 0);
    t0 = now_seconds();
    assert_int_equal(invoker_wait(inv), 0);
    assert_true(now_seconds() - t0 < 5.0 * slack());
    assert_int_equal(rec_get(&rec, id)->failure, INVOKER_FAIL_NO_WORKER);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers, 0);
    assert_int_equal(st.failed, 21);
    assert_int_equal(st.crashed, 0);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* ---- 11. fork failing ------------------------------------------------------------ */

static void test_respawn_fork_failing_queued_tasks_run_on_remaining_worker(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 128);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 2);
    set_fork_mode(state, &cfg);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    g_fork_allow = 0;   /* from now on every fork fails */

    invoker_id crash = 0;
    assert_int_equal(invoker_submit(inv, &SEGV, sizeof SEGV, NULL, &crash), 0);
    for (int i = 0; i < 60; i++)
        assert_int_equal(invoker_submit(inv, &SHORT, sizeof SHORT, NULL, NULL), 0);
    double t0 = now_seconds();
    assert_int_equal(invoker_wait(inv), 0);
    assert_true(now_seconds() - t0 < 10.0 * slack());
    rec_task *ct = rec_get(&rec, crash);
    assert_int_equal(ct->errors, 1);
    assert_int_equal(ct->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(ct->code, SIGSEGV);
    assert_int_equal(rec.results, 60);
    assert_int_equal(rec.errors, 1);
    assert_true(g_fork_failed > 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers, 1);
    assert_fork_mode(state, inv);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

static void test_all_workers_dead_fork_failing_queued_tasks_no_worker(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 128);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 1);
    set_fork_mode(state, &cfg);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    g_fork_allow = 0;

    invoker_id crash = 0;
    assert_int_equal(invoker_submit(inv, &SEGV, sizeof SEGV, NULL, &crash), 0);
    for (int i = 0; i < 19; i++)
        assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, NULL), 0);
    double t0 = now_seconds();
    assert_int_equal(invoker_wait(inv), 0);
    double took = now_seconds() - t0;
    printf("[ INFO     ] wait returned after %.3f s, %ld forks failed\n", took, g_fork_failed);
    assert_true(took < 5.0 * slack());
    assert_int_equal(rec_get(&rec, crash)->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(rec_get(&rec, crash)->errors, 1);
    for (invoker_id id = crash + 1; id <= crash + 19; id++) {
        rec_task *rt = rec_get(&rec, id);
        assert_int_equal(rt->results + rt->errors, 1);
        assert_int_equal(rt->errors, 1);
        assert_int_equal(rt->failure, INVOKER_FAIL_NO_WORKER);
        assert_int_equal(rt->code, -EAGAIN);
    }
    /* And a task submitted now is reported, not left waiting forever. */
    assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, NULL), 0);
    t0 = now_seconds();
    assert_int_equal(invoker_wait(inv), 0);
    assert_true(now_seconds() - t0 < 5.0 * slack());
    assert_int_equal(rec.errors, 21);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

static void test_create_with_fork_failing_returns_errno_and_leaves_nothing(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 64);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 3);
    set_fork_mode(state, &cfg);

    /* Every fork fails. */
    g_fork_allow = 0;
    invoker *inv = (invoker *)&rec;   /* must stay untouched */
    int rc = invoker_create(&inv, &cfg);
    assert_int_equal(rc, -EAGAIN);
    assert_ptr_equal(inv, (invoker *)&rec);
    end_test(fds0);

    /* The second of three fails: the first worker must not be left behind. */
    for (long allow = 1; allow <= 2; allow++) {
        fork_reset();
        g_fork_allow = allow;
        inv = NULL;
        rc = invoker_create(&inv, &cfg);
        g_fork_allow = -1;
        printf("[ INFO     ] %ld of 3 forks allowed: invoker_create gives %d\n", allow, rc);
        if (rc != 0) {
            assert_true(rc < 0);
            assert_null(inv);
            end_test(fds0);
            continue;
        }
        /* Accepted with fewer workers: it must work, and fill up later. */
        track(inv);
        assert_int_equal(pool_after(inv, 3, 3.0), 3);
        assert_int_equal(destroy_tracked(inv), 0);
        end_test(fds0);
    }
    rec_free(&rec);
}

/* ---- 12. crashes after taking a task do not trip the guard --------------------- */

static void test_sixty_crashing_tasks_in_a_row_each_crash_never_no_worker(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 128);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 2);
    set_fork_mode(state, &cfg);
    cfg.retries = 0;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    for (int i = 0; i < 60; i++)
        assert_int_equal(invoker_submit(inv, &SEGV, sizeof SEGV, NULL, NULL), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, NULL), 0);
    double t0 = now_seconds();
    assert_int_equal(invoker_wait(inv), 0);
    printf("[ INFO     ] 60 crashes in %.3f s\n", now_seconds() - t0);
    for (invoker_id id = 1; id <= 60; id++) {
        rec_task *rt = rec_get(&rec, id);
        assert_int_equal(rt->results + rt->errors, 1);
        if (rt->failure != INVOKER_FAIL_CRASH)
            fail_msg("crashing task %llu reported %s code %d", (unsigned long long)id,
                     invoker_failure_name(rt->failure), rt->code);
        assert_int_equal(rt->code, SIGSEGV);
        assert_int_equal(rt->attempts, 1);
    }
    for (invoker_id id = 61; id <= 70; id++)
        assert_int_equal(rec_get(&rec, id)->results, 1);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.crashed, 60);
    assert_int_equal(st.succeeded, 10);
    assert_int_equal(pool_after(inv, 2, 2.0), 2);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* ---- 13. start-up failures are retried with back-off ------------------------------ */

typedef struct init_log {
    _Atomic int calls;
    double      at[16];
} init_log;

static init_log *g_init_log;

static int init_fails_thrice(unsigned worker, void *ctx)
{
    (void)worker;
    (void)ctx;
    int n = atomic_fetch_add(&g_init_log->calls, 1);
    if (n < 16)
        g_init_log->at[n] = now_seconds();
    return n < 3 ? 5 : 0;
}

static void test_worker_init_failing_thrice_retried_with_backoff_tasks_succeed(void **state)
{
    (void)state;
    g_init_log = shared_map(sizeof *g_init_log);
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 64);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 1);
    set_fork_mode(state, &cfg);
    /* One worker: fail_limit is 4 start-up failures, so 3 must not trip it. */
    cfg.worker_init = init_fails_thrice;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    for (int i = 0; i < 10; i++)
        assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec.results, 10);
    assert_int_equal(rec.errors, 0);
    assert_int_equal(atomic_load(&g_init_log->calls), 4);
    double gap1 = g_init_log->at[1] - g_init_log->at[0];
    double gap2 = g_init_log->at[2] - g_init_log->at[1];
    double gap3 = g_init_log->at[3] - g_init_log->at[2];
    printf("[ INFO     ] start-up retries after %.2f, %.2f and %.2f ms\n", gap1 * 1e3,
           gap2 * 1e3, gap3 * 1e3);
    /* Back-off doubling from 1 ms: each wait at least its share. */
    assert_true(gap1 >= 0.001);
    assert_true(gap2 >= 0.002);
    assert_true(gap3 >= 0.004);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers_started, 4);
    assert_int_equal(st.workers, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
    munmap(g_init_log, sizeof *g_init_log);
}

/* ---- beyond: a transient fork failure does not shrink the pool for good ---------- */

static void test_fork_failing_briefly_pool_refills_once_fork_works(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 8192);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 2);
    set_fork_mode(state, &cfg);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    g_fork_allow = 0;
    assert_int_equal(invoker_submit(inv, &SEGV, sizeof SEGV, NULL, NULL), 0);
    /* Run long enough for several respawn attempts to fail. */
    double until = now_seconds() + 0.3;
    for (int i = 0; i < 1000 && now_seconds() < until; i++) {
        assert_int_equal(invoker_submit(inv, &SHORT, sizeof SHORT, NULL, NULL), 0);
        assert_int_equal(invoker_wait(inv), 0);
    }
    long failed = g_fork_failed;
    g_fork_allow = -1;   /* the shortage is over */
    unsigned workers = pool_after(inv, 2, 3.0);
    printf("[ INFO     ] %ld respawns failed; pool back to %u of 2\n", failed, workers);
    assert_true(failed >= 4);
    assert_int_equal(workers, 2);
    assert_fork_mode(state, inv);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

static void test_fork_failing_briefly_with_no_worker_left_later_tasks_run(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 256);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 1);
    set_fork_mode(state, &cfg);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    g_fork_allow = 0;
    assert_int_equal(invoker_submit(inv, &SEGV, sizeof SEGV, NULL, NULL), 0);
    assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);   /* NO_WORKER for the second */
    assert_int_equal(rec_get(&rec, 2)->failure, INVOKER_FAIL_NO_WORKER);
    g_fork_allow = -1;
    sleep_us(1100000);   /* past any back-off */
    size_t ok0 = rec.results;
    double until = now_seconds() + 3.0 * slack();
    while (rec.results == ok0 && now_seconds() < until) {
        assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, NULL), 0);
        assert_int_equal(invoker_wait(inv), 0);
        sleep_us(50000);
    }
    printf("[ INFO     ] after fork recovered: %zu results, %zu errors\n", rec.results, rec.errors);
    assert_true(rec.results > ok0);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* The fork server dies between its clone and its answer.  The worker it
 * made holds the ends of the pipe and socket the parent then gives a
 * worker it forks itself: alive, it could take that one's word, and keep
 * its result pipe from ever reading EOF.  It goes with the server's group,
 * killed and reaped before the parent forks; no task is lost. */
static void test_fork_server_dying_mid_request_leaves_no_orphan(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 64);
    invoker_config cfg;
    rec_config(&rec, &cfg, g_objective, 1);
    cfg.spares = INVOKER_SPARES_NEVER;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    pid_t server = inv->fs.pid;
    assert_true(server > 0);
    g_inj->die_after_clone = 1;
    invoker_id crash, after;
    assert_int_equal(invoker_submit(inv, &SEGV, sizeof SEGV, NULL, &crash), 0);
    assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, &after), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&rec, crash)->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(rec_get(&rec, after)->results, 1);
    assert_int_equal(rec.errors, 1);
    pid_t orphan = (pid_t)g_inj->orphan;
    printf("[ INFO     ] server %d died after making %d\n", (int)server, (int)orphan);
    assert_true(orphan > 0);
    assert_int_equal(g_inj->die_after_clone, 0);
    assert_int_equal(proc_state(orphan, NULL), 0);   /* killed and reaped */
    assert_int_equal(proc_state(server, NULL), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.fork_server, 0);
    assert_int_equal(st.workers, 1);
    /* The replacement the parent forked is whole: its death is seen too. */
    assert_int_equal(invoker_submit(inv, &SEGV, sizeof SEGV, NULL, &crash), 0);
    assert_int_equal(invoker_submit(inv, &PLAIN, sizeof PLAIN, NULL, &after), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&rec, crash)->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(rec_get(&rec, after)->results, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

int main(void)
{
    set_filter();
    g_inj = mmap(NULL, sizeof *g_inj, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_inj == MAP_FAILED)
        return 1;
    fork_reset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worker_init_always_failing_tasks_report_no_worker_with_its_code, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_respawn_fork_failing_queued_tasks_run_on_remaining_worker, setup, teardown, &g_server_modes[0]),
        cmocka_unit_test_prestate_setup_teardown(test_respawn_fork_failing_queued_tasks_run_on_remaining_worker, setup, teardown, &g_server_modes[1]),
        cmocka_unit_test_prestate_setup_teardown(test_all_workers_dead_fork_failing_queued_tasks_no_worker, setup, teardown, &g_server_modes[0]),
        cmocka_unit_test_prestate_setup_teardown(test_all_workers_dead_fork_failing_queued_tasks_no_worker, setup, teardown, &g_server_modes[1]),
        cmocka_unit_test_prestate_setup_teardown(test_create_with_fork_failing_returns_errno_and_leaves_nothing, setup, teardown, &g_server_modes[0]),
        cmocka_unit_test_prestate_setup_teardown(test_create_with_fork_failing_returns_errno_and_leaves_nothing, setup, teardown, &g_server_modes[1]),
        cmocka_unit_test_setup_teardown(test_sixty_crashing_tasks_in_a_row_each_crash_never_no_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_init_failing_thrice_retried_with_backoff_tasks_succeed, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_fork_failing_briefly_pool_refills_once_fork_works, setup, teardown, &g_server_modes[0]),
        cmocka_unit_test_prestate_setup_teardown(test_fork_failing_briefly_pool_refills_once_fork_works, setup, teardown, &g_server_modes[1]),
        cmocka_unit_test_prestate_setup_teardown(test_fork_failing_briefly_with_no_worker_left_later_tasks_run, setup, teardown, &g_server_modes[0]),
        cmocka_unit_test_prestate_setup_teardown(test_fork_failing_briefly_with_no_worker_left_later_tasks_run, setup, teardown, &g_server_modes[1]),
        cmocka_unit_test_setup_teardown(test_fork_server_dying_mid_request_leaves_no_orphan, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

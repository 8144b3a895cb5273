/*
 * How workers come to be: forked by the fork server (a process made at
 * invoker_create), or by the parent when there is none or it is gone;
 * and a spare that moves to the dead worker's CPU gets its whole
 * affinity mask back.
 *
 * alarm() is the hang guard: its default action ends the test process.
 * INVOKER_TEST_FILTER=<glob> runs only the matching tests.
 */
#include "helpers.h"
#include "internal.h"   /* the fork server's pid, to kill or stop it */

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { M_REPORT = 1, M_DIE, M_SLEEP };

typedef struct {
    int  mode;
    int  ms;
} sp_arg;

/* What a worker says about itself. */
typedef struct {
    long  epoch;        /* g_epoch as this worker's memory has it */
    pid_t pid, ppid;
    int   cpus;         /* CPUs in its affinity mask */
} sp_report;

/* Changed by the parent after invoker_create: a worker forked by the fork
 * server still sees the value of the moment of create. */
static long g_epoch;

static int objective(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    sp_arg a;
    if (len != sizeof a)
        return 99;
    memcpy(&a, arg, sizeof a);
    if (a.mode == M_DIE)
        raise(SIGKILL);
    if (a.mode == M_SLEEP)
        sleep_us(a.ms * 1000L);
    cpu_set_t set;
    sp_report r = { g_epoch, getpid(), getppid(), 0 };
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        r.cpus = CPU_COUNT(&set);
    return invoker_result_write(out, &r, sizeof r);
}

/* The report of the last on_result. */
static sp_report g_last;

static int keep_report(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)r, (void)t;
    if (len == sizeof g_last)
        memcpy(&g_last, res, sizeof g_last);
    return 0;
}

static invoker *make(recorder *rec, int fork_server, int spares)
{
    rec_init(rec, 64);
    rec->on_result_hook = keep_report;
    invoker_config cfg;
    rec_config(rec, &cfg, objective, 1);
    cfg.fork_server = fork_server;
    cfg.spares = spares;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    return track(inv);
}

/* One worker, no spares, a fork server (its pid in *server), and the
 * parent's memory moved on since create. */
static invoker *served_invoker(recorder *rec, pid_t *server)
{
    invoker *inv = make(rec, INVOKER_FORK_SERVER_AUTO, INVOKER_SPARES_NEVER);
    g_epoch = 2;
    *server = inv->fs.pid;
    assert_true(*server > 0);   /* never kill(0, ...): that is our own group */
    return inv;
}

/* Runs one task and returns its worker's report. */
static sp_report report(invoker *inv, recorder *rec, int ms)
{
    sp_arg a = { ms ? M_SLEEP : M_REPORT, ms };
    invoker_id id;
    memset(&g_last, 0, sizeof g_last);
    assert_int_equal(invoker_submit(inv, &a, sizeof a, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(rec, id)->results, 1);
    return g_last;
}

static void die_once(invoker *inv, recorder *rec)
{
    sp_arg a = { M_DIE, 0 };
    invoker_id id;
    assert_int_equal(invoker_submit(inv, &a, sizeof a, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(rec, id)->failure, INVOKER_FAIL_CRASH);
}

static unsigned stats_fork_server(const invoker *inv)
{
    invoker_stats st;
    invoker_get_stats(inv, &st);
    return st.fork_server;
}

static int setup(void **state)
{
    (void)state;
    fflush(NULL);
    alarm(slack() > 1 ? 280 : 40);
    g_epoch = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    destroy_leftovers();
    return 0;
}

static void end_test(int fds0)
{
    assert_int_equal(count_open_fds(), fds0);
    assert_int_equal(count_children(), 0);
}

/* Every worker is the parent's own child, whoever forked it.  With the
 * fork server, a replacement starts from the parent's memory as it was at
 * invoker_create; forked by the parent, from its memory of the moment. */
static void test_workers_are_the_parents_children_from_its_memory_at_create(void **state)
{
    (void)state;
    int fds0 = count_open_fds();
    for (int mode = INVOKER_FORK_SERVER_AUTO; mode <= INVOKER_FORK_SERVER_NEVER; mode++) {
        bool served = mode == INVOKER_FORK_SERVER_AUTO && invoker__forkserver_supported();
        for (int spares = INVOKER_SPARES_NEVER; spares <= INVOKER_SPARES_ALWAYS; spares++) {
            g_epoch = 1;
            recorder rec;
            invoker *inv = make(&rec, mode, spares);
            g_epoch = 2;   /* the parent moves on */
            assert_int_equal(stats_fork_server(inv), served);
            sp_report first = report(inv, &rec, 0);
            assert_int_equal(first.ppid, getpid());
            assert_int_equal(first.epoch, 1);   /* forked at create either way */
            for (int round = 0; round < 3; round++) {
                die_once(inv, &rec);
                sp_report r = report(inv, &rec, 0);
                assert_int_equal(r.ppid, getpid());
                assert_true(r.pid != first.pid);
                /* A spare forked by the parent before the change would
                 * see 1 too: with _ALWAYS the first one was. */
                if (served)
                    assert_int_equal(r.epoch, 1);
                else if (spares == INVOKER_SPARES_NEVER || round > 0)
                    assert_int_equal(r.epoch, 2);
                first = r;
            }
            assert_int_equal(stats_fork_server(inv), served);
            pid_t server = inv->fs.pid;
            assert_int_equal(destroy_tracked(inv), 0);
            if (served)
                assert_int_equal(proc_state(server, NULL), 0);   /* killed and reaped */
            rec_free(&rec);
        }
    }
    end_test(fds0);
}

/* Someone kills the fork server: no worker goes with it, it is reaped,
 * and the parent forks the next workers itself. */
static void test_fork_server_killed_costs_nothing_and_the_parent_forks(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    int fds0 = count_open_fds();
    recorder rec;
    pid_t server;
    invoker *inv = served_invoker(&rec, &server);
    /* A task runs while the server dies. */
    sp_arg slow = { M_SLEEP, 100 };
    invoker_id id;
    assert_int_equal(invoker_submit(inv, &slow, sizeof slow, NULL, &id), 0);
    sleep_us(20000);
    assert_int_equal(kill(server, SIGKILL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&rec, id)->results, 1);
    /* Seen through its pidfd, or at the next spawn where there is none. */
    die_once(inv, &rec);
    sp_report r = report(inv, &rec, 0);
    assert_int_equal(stats_fork_server(inv), 0);
    assert_int_equal(proc_state(server, NULL), 0);   /* not left a zombie */
    assert_int_equal(r.ppid, getpid());
    assert_int_equal(r.epoch, 2);   /* forked by the parent, now */
    assert_int_equal(rec.errors, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* A stopped fork server stalls one spawn for at most its bound (2 s);
 * then the parent kills its group, forks the worker itself, and leaves
 * nothing behind. */
static void test_stalled_fork_server_is_given_up_after_a_bound(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    int fds0 = count_open_fds();
    recorder rec;
    pid_t server;
    invoker *inv = served_invoker(&rec, &server);
    assert_int_equal(kill(server, SIGSTOP), 0);
    double t0 = now_seconds();
    die_once(inv, &rec);
    sp_report r = report(inv, &rec, 0);
    double took = now_seconds() - t0;
    printf("[ INFO     ] replacement served %.3f s after the death\n", took);
    assert_true(took >= 1.9);
    assert_true(took < 2.0 + 2.0 * slack());
    assert_int_equal(r.epoch, 2);
    assert_int_equal(r.ppid, getpid());
    assert_int_equal(stats_fork_server(inv), 0);
    assert_int_equal(proc_state(server, NULL), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* A spare that takes the slot of a dead worker pins itself to that
 * worker's CPU to be woken there, then takes back the mask it had: its
 * tasks may run on every CPU the parent may. */
static void test_spare_moved_to_the_dead_workers_cpu_gets_its_mask_back(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int cpus = CPU_COUNT(&set);
    if (cpus < 2)
        skip();   /* pinned or not, one CPU looks the same */
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = make(&rec, INVOKER_FORK_SERVER_AUTO, INVOKER_SPARES_ALWAYS);
    assert_int_equal(report(inv, &rec, 0).cpus, cpus);
    for (int round = 0; round < 3; round++) {
        /* Wait for the spare: a death without one is a plain fork. */
        double until = now_seconds() + 2.0 * slack();
        invoker_stats st;
        do {
            assert_true(invoker_poll(inv, 5) >= 0);
            invoker_get_stats(inv, &st);
        } while (st.spares == 0 && now_seconds() < until);
        assert_int_equal(st.spares, 1);
        unsigned started = (unsigned)st.workers_started;
        die_once(inv, &rec);
        assert_int_equal(report(inv, &rec, 0).cpus, cpus);
        invoker_get_stats(inv, &st);
        assert_int_equal(st.workers_started, started + 1);
    }
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

int main(void)
{
    set_filter();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_workers_are_the_parents_children_from_its_memory_at_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fork_server_killed_costs_nothing_and_the_parent_forks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_fork_server_is_given_up_after_a_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spare_moved_to_the_dead_workers_cpu_gets_its_mask_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

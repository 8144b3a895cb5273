/*
 * How workers come to be: forked by the fork server (a process made at
 * invoker_create), or by the parent when there is none or it is gone;
 * the parent never waits for the server's answer (a deadline that falls
 * due meanwhile is kept; the server's death, its silence, garbage and
 * destroy with a request outstanding leave nothing behind); and a spare
 * that moves to the dead worker's CPU gets its whole affinity mask back.
 *
 * alarm() is the hang guard: its default action ends the test process.
 * INVOKER_TEST_FILTER=<glob> runs only the matching tests.
 */
#include "helpers.h"
#include "internal.h"   /* the fork server's pid, to kill or stop it */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static invoker *make_n(recorder *rec, unsigned workers, int fork_server, int spares)
{
    rec_init(rec, 64);
    rec->on_result_hook = keep_report;
    invoker_config cfg;
    rec_config(rec, &cfg, objective, workers);
    cfg.fork_server = fork_server;
    cfg.spares = spares;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    return track(inv);
}

static invoker *make(recorder *rec, int fork_server, int spares)
{
    return make_n(rec, 1, fork_server, spares);
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

/* The record waiting for the fork server's answer, or -1. */
static int spawning_record(const invoker *inv)
{
    for (unsigned k = 0; k < inv->nrecords; k++)
        if (inv->workers[k].state == INVOKER__WORKER_SPAWNING)
            return (int)k;
    return -1;
}

/* The server stopped, its worker died: the replacement is asked of it
 * and waits, SPAWNING, for an answer that does not come. */
static invoker *asked_of_a_stopped_server(recorder *rec, pid_t *server)
{
    invoker *inv = served_invoker(rec, server);
    assert_int_equal(kill(*server, SIGSTOP), 0);
    die_once(inv, rec);
    /* Without pidfds (valgrind) the death is seen by looking, and the
     * replacement asked for at the next pass. */
    double until = now_seconds() + 2.0 * slack();
    while (inv->fs.pending == 0 && now_seconds() < until) {
        assert_true(invoker_poll(inv, 0) >= 0);
        sleep_us(1000);
    }
    assert_int_equal(inv->fs.pending, 1);
    assert_true(spawning_record(inv) >= 0);
    return inv;
}

/* The replacement the parent forked itself serves, and the server is
 * gone, reaped. */
static void parent_forked_the_replacement(invoker *inv, recorder *rec, pid_t server)
{
    sp_report r = report(inv, rec, 0);
    assert_int_equal(r.ppid, getpid());
    assert_int_equal(r.epoch, 2);   /* forked by the parent, now */
    assert_int_equal(spawning_record(inv), -1);
    assert_int_equal(inv->fs.pending, 0);
    assert_int_equal(stats_fork_server(inv), 0);
    assert_int_equal(proc_state(server, NULL), 0);
}

/* While the server owes an answer (stopped: it never comes), the parent
 * goes on: a deadline that falls due meanwhile is reported on time, the
 * request still outstanding.  (Blocked on the server, the parent would
 * report it at the server's bound, 2 s.)  Then the bound: the parent
 * forks the worker itself. */
static void test_parent_never_waits_on_the_fork_server(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = make_n(&rec, 2, INVOKER_FORK_SERVER_AUTO, INVOKER_SPARES_NEVER);
    pid_t server = inv->fs.pid;
    assert_true(server > 0);
    g_epoch = 2;
    assert_int_equal(kill(server, SIGSTOP), 0);
    sp_arg hang = { M_SLEEP, 30000 }, die = { M_DIE, 0 };
    invoker_id hung, died;
    double t0 = now_seconds();
    assert_int_equal(invoker_submit_timeout(inv, &hang, sizeof hang, NULL, 0.3, &hung), 0);
    assert_int_equal(invoker_submit(inv, &die, sizeof die, NULL, &died), 0);
    while (rec_get(&rec, hung)->errors == 0)
        assert_true(invoker_poll(inv, -1) >= 0);
    double late = rec_get(&rec, hung)->reported_at - t0 - 0.3;
    printf("[ INFO     ] timeout reported %.1f ms after its deadline, %u request(s) outstanding\n",
           late * 1e3, inv->fs.pending);
    assert_int_equal(rec_get(&rec, died)->failure, INVOKER_FAIL_CRASH);
    assert_true(rec_get(&rec, died)->reported_at < t0 + 0.3);   /* asked before the deadline */
    assert_int_equal(rec_get(&rec, hung)->failure, INVOKER_FAIL_TIMEOUT);
    assert_true(late >= 0);
    assert_true(late < 1.5);   /* the server's bound is 2 s from the request */
    assert_true(inv->fs.pending >= 1);
    assert_int_equal(inv->fs.pid, server);
    parent_forked_the_replacement(inv, &rec, server);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* The server dies with a request outstanding: the parent forks that
 * worker itself at once (no wait for the bound). */
static void test_fork_server_dying_with_a_request_outstanding(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    int fds0 = count_open_fds();
    recorder rec;
    pid_t server;
    invoker *inv = asked_of_a_stopped_server(&rec, &server);
    double t0 = now_seconds();
    assert_int_equal(kill(server, SIGKILL), 0);
    parent_forked_the_replacement(inv, &rec, server);
    double took = now_seconds() - t0;
    printf("[ INFO     ] replacement served %.1f ms after the server's death\n", took * 1e3);
    assert_true(took < 1.5);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* invoker_destroy with a request outstanding: no wait for the bound, and
 * the server, whatever it made and the request's descriptors are gone. */
static void test_destroy_with_a_request_outstanding_leaves_nothing(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    int fds0 = count_open_fds();
    recorder rec;
    pid_t server;
    invoker *inv = asked_of_a_stopped_server(&rec, &server);
    double t0 = now_seconds();
    assert_int_equal(destroy_tracked(inv), 0);
    double took = now_seconds() - t0;
    printf("[ INFO     ] destroyed in %.1f ms\n", took * 1e3);
    assert_true(took < 1.5);
    assert_int_equal(proc_state(server, NULL), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* What comes on the server's socket is checked like anything a worker
 * sends: a message of another size, an answer for a record not waiting
 * or out of range, a pid that is not our child, a failure other than a
 * shortage, or the end of the socket each end the server (killed and
 * reaped), and the parent forks the worker itself.  The socket is
 * replaced by one of the test's own, in its descriptor's place. */
static void test_garbage_on_the_server_socket_ends_it_and_the_parent_forks(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    enum { SHORT, LONG, OTHER_RECORD, OUT_OF_RANGE, NOT_OURS, NOT_A_SHORTAGE, CLOSED, CASES };
    for (int c = 0; c < CASES; c++) {
        int fds0 = count_open_fds();
        recorder rec;
        pid_t server;
        invoker *inv = asked_of_a_stopped_server(&rec, &server);
        int k = spawning_record(inv);
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(dup3(sv[0], inv->fs.sock, O_CLOEXEC), inv->fs.sock);
        close(sv[0]);
        int32_t msg[3] = { k, 1, 0 };   /* pid 1: alive, and not ours */
        size_t len = 2 * sizeof msg[0];
        if (c == SHORT)
            len = sizeof msg[0];
        else if (c == LONG)
            len = sizeof msg;
        else if (c == OTHER_RECORD)
            msg[0] = (int32_t)((k + inv->nworkers) % inv->nrecords);   /* the dead worker's */
        else if (c == OUT_OF_RANGE)
            msg[0] = (int32_t)inv->nrecords;
        else if (c == NOT_A_SHORTAGE)
            msg[1] = -EINVAL;
        if (c == CLOSED)
            close(sv[1]);
        else
            assert_int_equal(send(sv[1], msg, len, 0), (ssize_t)len);
        invoker__forkserver_answers(inv);
        assert_int_equal(inv->fs.pid, 0);
        assert_int_equal(inv->workers[k].state, INVOKER__WORKER_LIVE);
        if (c != CLOSED)
            close(sv[1]);
        parent_forked_the_replacement(inv, &rec, server);
        assert_int_equal(destroy_tracked(inv), 0);
        end_test(fds0);
        rec_free(&rec);
    }
}

/* More requests than the server's socket holds (its send buffer, made
 * as small as it goes here: a few requests): when every worker dies at
 * once with the server stopped, the parent reports every death without
 * waiting on the full socket; the rest are asked for as the server
 * answers, once it runs again, every one forked by it. */
static void test_more_requests_than_the_socket_holds_never_block(void **state)
{
    (void)state;
    if (!invoker__forkserver_supported())
        skip();
    enum { N = 12 };
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = make_n(&rec, N, INVOKER_FORK_SERVER_AUTO, INVOKER_SPARES_NEVER);
    pid_t server = inv->fs.pid;
    assert_true(server > 0);
    int small = 1;   /* the kernel's least */
    assert_int_equal(setsockopt(inv->fs.sock, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    g_epoch = 2;
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers, N);
    assert_int_equal(st.workers_started, N);
    assert_int_equal(kill(server, SIGSTOP), 0);
    sp_arg die = { M_DIE, 0 };
    double t0 = now_seconds();
    for (int i = 0; i < N; i++)
        assert_int_equal(invoker_submit(inv, &die, sizeof die, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    double took = now_seconds() - t0;
    printf("[ INFO     ] %d deaths reported in %.1f ms, %u requests outstanding\n", N,
           took * 1e3, inv->fs.pending);
    assert_int_equal(rec.errors, N);
    assert_true(took < 1.5);   /* the server's bound is 2 s */
    assert_true(inv->fs.pending > 0);
    assert_true(inv->fs.pending < N);   /* the socket was full: the rest wait */
    assert_int_equal(inv->fs.pid, server);
    assert_int_equal(kill(server, SIGCONT), 0);
    /* Every slot refilled, by the server: from the memory of create. */
    double until = now_seconds() + 2.0 * slack();
    do {
        assert_true(invoker_poll(inv, 0) >= 0);
        invoker_get_stats(inv, &st);
        sleep_us(1000);
    } while ((st.workers_started < 2 * N || inv->fs.pending) && now_seconds() < until);
    assert_int_equal(st.workers_started, 2 * N);
    assert_int_equal(st.workers, N);
    assert_int_equal(stats_fork_server(inv), 1);
    for (int i = 0; i < N; i++) {
        sp_report r = report(inv, &rec, 0);
        assert_int_equal(r.epoch, 1);
        assert_int_equal(r.ppid, getpid());
    }
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(proc_state(server, NULL), 0);
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
        cmocka_unit_test_setup_teardown(test_parent_never_waits_on_the_fork_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fork_server_dying_with_a_request_outstanding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_with_a_request_outstanding_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_on_the_server_socket_ends_it_and_the_parent_forks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_more_requests_than_the_socket_holds_never_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spare_moved_to_the_dead_workers_cpu_gets_its_mask_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

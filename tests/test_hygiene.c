/*
 * Hygiene: descriptors and processes.  Every descriptor the library makes
 * is close-on-exec, no worker holds another invoker's descriptors, destroy
 * gives back every descriptor and child, workers die with their parent,
 * and each worker's process group goes with it.
 *
 * alarm() is the hang guard: its default action ends the test process.
 * INVOKER_TEST_FILTER=<glob> runs only the matching tests.
 */
#include "helpers.h"
#include "internal.h"   /* the teardown mutes a leftover invoker's callbacks */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- small tools ---------------------------------------------------------- */

/* Dead: no such process, or a zombie (a re-parented one may linger when
 * pid 1 does not reap, as in some containers). */
static int dead(pid_t pid)
{
    if (kill(pid, 0) == -1 && errno == ESRCH)
        return 1;
    char st = proc_state(pid, NULL);
    return st == 0 || st == 'Z' || st == 'X';
}

static int wait_dead(pid_t pid, double seconds)
{
    double until = now_seconds() + seconds * slack();
    while (!dead(pid)) {
        if (now_seconds() > until)
            return 0;
        sleep_us(2000);
    }
    return 1;
}

static void begin_test(unsigned guard_seconds)
{
    fflush(NULL);
    double g = guard_seconds * slack();
    alarm(g < 280 ? (unsigned)g : 280);
}

static void end_test(int fds_before)
{
    alarm(0);
    assert_int_equal(count_open_fds(), fds_before);
    assert_int_equal(count_children(), 0);
}

/* A killed worker is replaced once it is reaped, which may come after its
 * tasks are done (slowly under valgrind, whose workers have no pidfd):
 * polls, bounded, until want workers serve; returns how many do. */
static unsigned serving_workers(invoker *inv, unsigned want)
{
    invoker_stats st;
    double whole_by = now_seconds() + 2 * slack();
    for (;;) {
        assert_true(invoker_poll(inv, 0) >= 0);
        invoker_get_stats(inv, &st);
        if (st.workers == want || now_seconds() > whole_by)
            return st.workers;
        sleep_us(2000);
    }
}

/* The descriptors open right now, as a bitmap. */
#define FD_MAX 4096
typedef struct fdset_snap {
    unsigned char open[FD_MAX];
} fdset_snap;

static void fd_snapshot(fdset_snap *s)
{
    memset(s, 0, sizeof *s);
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != self && fd >= 0 && fd < FD_MAX)
            s->open[fd] = 1;
    }
    closedir(d);
}

/* Reads exactly len bytes from a blocking fd within seconds; 0 or -1. */
static int read_full(int fd, void *buf, size_t len, double seconds)
{
    double until = now_seconds() + seconds;
    size_t have = 0;
    while (have < len) {
        double left = until - now_seconds();
        if (left <= 0)
            return -1;
        struct pollfd p = { fd, POLLIN, 0 };
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t n = read(fd, (char *)buf + have, len - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    return 0;
}

/* ---- objectives ------------------------------------------------------------- */

enum mode {
    M_PLAIN = 0,     /* result: the pid; fails (77) unless it leads its group */
    M_FD_IDS,        /* result: (st_dev, st_ino) of each descriptor >= 3 */
    M_SELF_KILL,     /* raise(SIGKILL) */
    M_SLEEP,         /* sleep arg.value microseconds, then M_PLAIN */
    M_HANG,          /* mark started, sleep up to 100 s */
    M_GRANDCHILD,    /* fork a child that pauses, send its pid, hang */
};

typedef struct hy_arg {
    uint32_t mode;
    int32_t  fd;      /* where to send pids (a non-close-on-exec pipe), or -1 */
    uint64_t value;
} hy_arg;

typedef struct hy_shared {
    _Atomic int started;
    _Atomic int pids[64];
} hy_shared;

static hy_shared *g_sh;

static int hy_objective(const void *argp, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    hy_arg a;
    if (len != sizeof a)
        return 90;
    memcpy(&a, argp, sizeof a);
    switch (a.mode) {
    case M_FD_IDS: {
        for (int fd = 3; fd < FD_MAX; fd++) {
            struct stat sb;
            if (fstat(fd, &sb) != 0)
                continue;
            uint64_t pair[3] = { (uint64_t)sb.st_dev, (uint64_t)sb.st_ino, (uint64_t)fd };
            if (invoker_result_write(out, pair, sizeof pair) != 0)
                return 91;
        }
        return 0;
    }
    case M_SELF_KILL:
        raise(SIGKILL);
        return 92;
    case M_SLEEP:
        sleep_us((long)a.value);
        break;
    case M_HANG:
        if (g_sh) {
            int n = atomic_fetch_add(&g_sh->started, 1);
            if (n >= 0 && n < 64)
                atomic_store(&g_sh->pids[n], (int)getpid());
        }
        for (int i = 0; i < 10000; i++)
            sleep_us(10000);
        return 93;
    case M_GRANDCHILD: {
        pid_t g = fork();
        if (g < 0)
            return 94;
        if (g == 0) {
            for (;;)
                pause();
        }
        int32_t gp = (int32_t)g;
        if (write(a.fd, &gp, sizeof gp) != (ssize_t)sizeof gp)
            return 95;
        for (int i = 0; i < 10000; i++)
            sleep_us(10000);
        return 96;
    }
    default:
        break;
    }
    if (getpgid(0) != getpid())
        return 77;   /* a worker must lead its own process group */
    int32_t r[2] = { (int32_t)getpid(), 1 };
    return invoker_result_write(out, r, sizeof r) == 0 ? 0 : 97;
}

static hy_arg mk(uint32_t mode, int fd, uint64_t value)
{
    hy_arg a = { mode, fd, value };
    return a;
}

/* ---- 5. close-on-exec ------------------------------------------------------- */

static void test_every_new_fd_is_cloexec_after_create_and_respawn(void **state)
{
    (void)state;
    begin_test(30);
    fdset_snap before;
    fd_snapshot(&before);
    int pre_ok = all_fds_cloexec();
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 64);
    invoker_config cfg;
    rec_config(&rec, &cfg, hy_objective, 3);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    if (pre_ok)
        assert_true(all_fds_cloexec());
    /* Each new one by name, in case the test run handed us an inheritable one. */
    fdset_snap after;
    fd_snapshot(&after);
    int added = 0;
    for (int fd = 3; fd < FD_MAX; fd++) {
        if (!after.open[fd] || before.open[fd])
            continue;
        added++;
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            fail_msg("fd %d made by invoker_create is not close-on-exec", fd);
    }
    assert_true(added >= 5);

    /* Respawned workers' descriptors too, and those of a big argument. */
    hy_arg k = mk(M_SELF_KILL, -1, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(invoker_submit(inv, &k, sizeof k, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    hy_arg p = mk(M_SLEEP, -1, 1000);
    for (int i = 0; i < 6; i++)
        assert_int_equal(invoker_submit(inv, &p, sizeof p, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    fd_snapshot(&after);
    for (int fd = 3; fd < FD_MAX; fd++) {
        if (!after.open[fd] || before.open[fd])
            continue;
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            fail_msg("fd %d (after respawns) is not close-on-exec", fd);
    }
    assert_int_equal(rec.errors, 3);
    assert_int_equal(rec.results, 6);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* ---- 6. two invokers side by side -------------------------------------------- */

typedef struct fd_ids {
    uint64_t dev[FD_MAX], ino[FD_MAX];
    int      n;
} fd_ids;

static void ids_of_new_fds(const fdset_snap *before, fd_ids *ids)
{
    fdset_snap now;
    fd_snapshot(&now);
    ids->n = 0;
    for (int fd = 3; fd < FD_MAX; fd++) {
        if (!now.open[fd] || before->open[fd])
            continue;
        struct stat sb;
        assert_int_equal(fstat(fd, &sb), 0);
        ids->dev[ids->n] = (uint64_t)sb.st_dev;
        ids->ino[ids->n] = (uint64_t)sb.st_ino;
        ids->n++;
    }
}

static struct {
    fd_ids  *other;         /* the other invoker's descriptors */
    unsigned reports, leaks;
} g_fdcheck;

static int fd_ids_hook(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)r;
    if (t->tag != (void *)1)
        return 0;
    g_fdcheck.reports++;
    const uint64_t *v = res;
    for (size_t i = 0; i + 3 <= len / sizeof(uint64_t); i += 3)
        for (int j = 0; j < g_fdcheck.other->n; j++)
            if (v[i] == g_fdcheck.other->dev[j] && v[i + 1] == g_fdcheck.other->ino[j]) {
                printf("[ INFO     ] worker fd %llu matches the other invoker's\n",
                       (unsigned long long)v[i + 2]);
                g_fdcheck.leaks++;
            }
    return 0;
}

static void test_two_invokers_workers_hold_none_of_each_others_fds(void **state)
{
    (void)state;
    begin_test(40);
    int fds0 = count_open_fds();
    fdset_snap s0, s1;
    fd_ids *a_ids = calloc(1, sizeof *a_ids), *b_ids = calloc(1, sizeof *b_ids);
    assert_non_null(a_ids);
    assert_non_null(b_ids);

    recorder ra, rb;
    rec_init(&ra, 256);
    rec_init(&rb, 512);
    ra.on_result_hook = fd_ids_hook;
    rb.on_result_hook = fd_ids_hook;
    invoker_config ca, cb;
    rec_config(&ra, &ca, hy_objective, 2);
    rec_config(&rb, &cb, hy_objective, 2);
    /* A's workers are replaced after every task, so its later ones are
     * forked while B exists: the case where a leak could happen. */
    ca.max_tasks_per_worker = 1;

    fd_snapshot(&s0);
    invoker *a = NULL, *b = NULL;
    assert_int_equal(invoker_create(&a, &ca), 0);
    track(a);
    ids_of_new_fds(&s0, a_ids);
    fd_snapshot(&s1);
    assert_int_equal(invoker_create(&b, &cb), 0);
    track(b);
    ids_of_new_fds(&s1, b_ids);
    assert_true(a_ids->n >= 5);
    assert_true(b_ids->n >= 5);

    /* A's workers look for B's descriptors. */
    memset(&g_fdcheck, 0, sizeof g_fdcheck);
    g_fdcheck.other = b_ids;
    hy_arg f = mk(M_FD_IDS, -1, 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(invoker_submit(a, &f, sizeof f, (void *)1, NULL), 0);
    assert_int_equal(invoker_wait(a), 0);
    assert_int_equal(g_fdcheck.reports, 8);
    assert_int_equal(g_fdcheck.leaks, 0);

    /* B's workers, some forked after A's respawns, look for A's.  A's set
     * grew with its respawns: take it again. */
    fd_ids *a_now = calloc(1, sizeof *a_now);
    assert_non_null(a_now);
    {
        /* A's descriptors now = all new since s0 minus B's. */
        fd_ids all;
        ids_of_new_fds(&s0, &all);
        for (int i = 0; i < all.n; i++) {
            int in_b = 0;
            for (int j = 0; j < b_ids->n; j++)
                in_b |= all.dev[i] == b_ids->dev[j] && all.ino[i] == b_ids->ino[j];
            if (!in_b) {
                a_now->dev[a_now->n] = all.dev[i];
                a_now->ino[a_now->n] = all.ino[i];
                a_now->n++;
            }
        }
    }
    g_fdcheck.reports = 0;
    g_fdcheck.other = a_now;
    hy_arg kill_b = mk(M_SELF_KILL, -1, 0);
    assert_int_equal(invoker_submit(b, &kill_b, sizeof kill_b, NULL, NULL), 0);
    assert_int_equal(invoker_wait(b), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(invoker_submit(b, &f, sizeof f, (void *)1, NULL), 0);
    assert_int_equal(invoker_wait(b), 0);
    assert_int_equal(g_fdcheck.reports, 6);
    assert_int_equal(g_fdcheck.leaks, 0);

    /* Crash one of A's workers while B runs: B does not notice. */
    size_t b_res0 = rb.results, b_err0 = rb.errors;
    hy_arg sl = mk(M_SLEEP, -1, 2000);
    for (int i = 0; i < 100; i++)
        assert_int_equal(invoker_submit(b, &sl, sizeof sl, NULL, NULL), 0);
    invoker_id crash_id = 0;
    hy_arg kill_a = mk(M_SELF_KILL, -1, 0);
    assert_int_equal(invoker_submit(a, &kill_a, sizeof kill_a, NULL, &crash_id), 0);
    double until = now_seconds() + 10 * slack();
    while ((ra.results + ra.errors < 9 || rb.results + rb.errors < b_res0 + b_err0 + 100) &&
           now_seconds() < until) {
        assert_true(invoker_poll(a, 1) >= 0);
        assert_true(invoker_poll(b, 1) >= 0);
    }
    rec_task *ct = rec_get(&ra, crash_id);
    assert_int_equal(ct->errors, 1);
    assert_int_equal(ct->failure, INVOKER_FAIL_CRASH);
    assert_int_equal(ct->code, SIGKILL);
    assert_int_equal(rb.results, b_res0 + 100);
    assert_int_equal(rb.errors, b_err0);

    /* A is whole again. */
    hy_arg pl = mk(M_PLAIN, -1, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(invoker_submit(a, &pl, sizeof pl, NULL, NULL), 0);
    assert_int_equal(invoker_wait(a), 0);
    assert_int_equal(serving_workers(a, 2), 2);
    assert_int_equal(serving_workers(b, 2), 2);
    invoker_stats sa, sb;
    invoker_get_stats(a, &sa);
    invoker_get_stats(b, &sb);
    assert_int_equal(sa.failed, 1);
    assert_int_equal(sb.failed, 1);   /* its own self-kill above */

    assert_int_equal(destroy_tracked(a), 0);
    assert_int_equal(destroy_tracked(b), 0);
    end_test(fds0);
    free(a_ids);
    free(b_ids);
    free(a_now);
    rec_free(&ra);
    rec_free(&rb);
}

/* ---- 7. destroy with tasks in every state ------------------------------------ */

static size_t g_during_destroy;

static void count_destroy_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    g_during_destroy++;
    rec_on_error(t, f, code, user);
}

static void test_destroy_reports_running_queued_hung_once_and_cleans_up(void **state)
{
    (void)state;
    begin_test(30);
    g_sh = shared_map(sizeof *g_sh);
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 512);
    invoker_config cfg;
    rec_config(&rec, &cfg, hy_objective, 2);
    cfg.on_error = count_destroy_error;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);

    /* Some finished before. */
    hy_arg pl = mk(M_PLAIN, -1, 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec.results, 10);

    /* Two hung (one of them stopped), then a queue behind them. */
    hy_arg hang = mk(M_HANG, -1, 0);
    invoker_id ids[400];
    int n = 0;
    for (int i = 0; i < 2; i++)
        assert_int_equal(invoker_submit(inv, &hang, sizeof hang, NULL, &ids[n++]), 0);
    double until = now_seconds() + 5 * slack();
    while (atomic_load(&g_sh->started) < 2 && now_seconds() < until)
        assert_true(invoker_poll(inv, 5) >= 0);
    assert_int_equal(atomic_load(&g_sh->started), 2);
    pid_t w0 = atomic_load(&g_sh->pids[0]), w1 = atomic_load(&g_sh->pids[1]);
    assert_int_equal(kill(w1, SIGSTOP), 0);
    hy_arg sl = mk(M_SLEEP, -1, 1000);
    /* More than the queue pipe holds: some wait in the parent. */
    for (int i = 0; i < 300; i++)
        assert_int_equal(invoker_submit(inv, i % 2 ? &sl : &pl, sizeof pl, NULL, &ids[n++]), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.queued, 300);
    assert_true(invoker_poll(inv, 0) >= 0);

    size_t res0 = rec.results;
    g_during_destroy = 0;
    double t0 = now_seconds();
    assert_int_equal(destroy_tracked(inv), 0);
    double took = now_seconds() - t0;
    printf("[ INFO     ] destroy took %.3f s\n", took);
    assert_true(took < 2.0 * slack());
    assert_int_equal(rec.results, res0);
    assert_int_equal(g_during_destroy, (size_t)n);
    for (int i = 0; i < n; i++) {
        rec_task *rt = rec_get(&rec, ids[i]);
        assert_int_equal(rt->results + rt->errors, 1);
        assert_int_equal(rt->errors, 1);
        assert_int_equal(rt->failure, INVOKER_FAIL_SHUTDOWN);
    }
    assert_true(dead(w0));
    assert_true(dead(w1));
    end_test(fds0);
    rec_free(&rec);
    munmap(g_sh, sizeof *g_sh);
    g_sh = NULL;
}

/* ---- replacements and spares ---------------------------------------------- */

/* The record of slot 0 in the given state other than skip, or -1. */
static int record_in(const invoker *inv, int state, int skip)
{
    for (unsigned k = 0; k < inv->nrecords; k++)
        if (invoker__slot_number(inv, k) == 0 && inv->workers[k].state == state && (int)k != skip)
            return (int)k;
    return -1;
}

/* Polls, bounded, until slot 0 has a record in state; the record, or -1. */
static int await_record(invoker *inv, int state)
{
    double until = now_seconds() + 2 * slack();
    int k;
    while ((k = record_in(inv, state, -1)) < 0 && now_seconds() < until) {
        assert_true(invoker_poll(inv, 0) >= 0);
        sleep_us(1000);
    }
    return k;
}

/* Polls, bounded, until slot 0 has a spare; its record, or -1. */
static int await_spare(invoker *inv)
{
    return await_record(inv, INVOKER__WORKER_SPARE);
}

/* The state of a worker just asked for: the parent never waits for the
 * fork server's answer, which comes in a later pass. */
static int asked_state(const invoker *inv)
{
    return inv->fs.pid > 0 ? INVOKER__WORKER_SPAWNING : INVOKER__WORKER_LIVE;
}

static _Atomic int *g_inits;   /* worker_init calls: [0] count, [1] last slot + 1 */

static int counting_init(unsigned worker, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&g_inits[0], 1);
    atomic_store(&g_inits[1], (int)worker + 1);
    return 0;
}

/* An invoker of hy_objective with these workers, spares and worker_init,
 * its callbacks recorded in rec (room for cap tasks), tracked for the
 * teardown. */
static invoker *spares_invoker(recorder *rec, size_t cap, unsigned workers, int spares,
                               int (*init)(unsigned, void *))
{
    rec_init(rec, cap);
    invoker_config cfg;
    rec_config(rec, &cfg, hy_objective, workers);
    cfg.spares = spares;
    cfg.worker_init = init;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    return inv;
}

/* Without a spare, a timed-out worker's replacement is forked at the kill
 * into the slot's other record and serves while the old one still dies;
 * destroy then leaves neither behind. */
static void test_replacement_serves_while_its_predecessor_dies_and_neither_outlives_destroy(void **state)
{
    (void)state;
    begin_test(30);
    g_sh = shared_map(sizeof *g_sh);
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = spares_invoker(&rec, 8, 1, INVOKER_SPARES_NEVER, NULL);
    hy_arg hang = mk(M_HANG, -1, 0);
    invoker_id id;
    assert_int_equal(invoker_submit_timeout(inv, &hang, sizeof hang, NULL, 0.05, &id), 0);
    while (rec.errors == 0)
        assert_true(invoker_poll(inv, -1) >= 0);
    assert_int_equal(rec_get(&rec, id)->failure, INVOKER_FAIL_TIMEOUT);
    /* The poll that reported the timeout killed the worker and forked its
     * replacement (or asked the fork server for it); the dead one is not
     * reaped yet. */
    pid_t old = atomic_load(&g_sh->pids[0]);
    assert_int_equal(inv->workers[0].pid, old);
    assert_int_equal(inv->workers[0].state, INVOKER__WORKER_DYING);
    assert_true(inv->workers[1].state == asked_state(inv) ||   /* or answered in that poll */
                inv->workers[1].state == INVOKER__WORKER_LIVE);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers, 1);   /* the replacement serves already, or is coming */
    assert_int_equal(await_record(inv, INVOKER__WORKER_LIVE), 1);
    pid_t repl = inv->workers[1].pid;
    assert_true(repl > 0);
    assert_int_not_equal(repl, old);
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers_started, 2);
    assert_int_equal(st.workers, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_true(dead(old));
    assert_true(dead(repl));
    end_test(fds0);
    rec_free(&rec);
    munmap(g_sh, sizeof *g_sh);
    g_sh = NULL;
}

/* By default, spares come once a worker had to be replaced.  At each later
 * timeout the slot's spare takes over in the poll that reports it; it is
 * counted as started then, not when forked. */
static void test_spare_takes_the_slot_at_the_kill_and_counts_once_it_does(void **state)
{
    (void)state;
    begin_test(30);
    g_sh = shared_map(sizeof *g_sh);
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = spares_invoker(&rec, 16, 1, INVOKER_SPARES_AUTO, NULL);
    hy_arg pl = mk(M_PLAIN, -1, 0);
    assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(record_in(inv, INVOKER__WORKER_SPARE, -1), -1);   /* none yet */
    for (int round = 0; round < 4; round++) {
        int spare = round ? await_spare(inv) : -1;
        pid_t spare_pid = round ? inv->workers[spare].pid : 0;
        if (round)
            assert_true(spare >= 0);
        hy_arg hang = mk(M_HANG, -1, 0);
        assert_int_equal(invoker_submit_timeout(inv, &hang, sizeof hang, NULL, 0.02, NULL), 0);
        size_t errors = rec.errors;
        while (rec.errors == errors)
            assert_true(invoker_poll(inv, -1) >= 0);
        /* The first replacement is forked (or asked for); later ones are
         * the spare, which takes the slot in this very poll. */
        int live = record_in(inv, INVOKER__WORKER_LIVE, -1);
        if (!round && live < 0) {   /* the server's answer may come in that same poll */
            assert_true(record_in(inv, asked_state(inv), -1) >= 0);
            live = await_record(inv, INVOKER__WORKER_LIVE);
        }
        assert_true(live >= 0);
        if (round) {
            assert_int_equal(live, spare);
            assert_int_equal(inv->workers[live].pid, spare_pid);
        }
        invoker_id id;
        assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, &id), 0);
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(rec_get(&rec, id)->results, 1);
        assert_int_equal(rec_get(&rec, id)->worker, 0);
        assert_int_equal(record_in(inv, INVOKER__WORKER_LIVE, -1), live);   /* it ran there */
    }
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.workers_started, 5);   /* the first and four replacements */
    assert_int_equal(st.timed_out, 4);
    assert_int_equal(st.workers, 1);
    int spare = await_spare(inv);
    assert_true(spare >= 0);
    pid_t spare_pid = inv->workers[spare].pid;
    assert_int_equal(destroy_tracked(inv), 0);
    assert_true(dead(spare_pid));
    end_test(fds0);
    rec_free(&rec);
    munmap(g_sh, sizeof *g_sh);
    g_sh = NULL;
}

/* A death whose worker is reaped at once: the spare takes the slot in the
 * poll that reports it, and the slot's next spare comes without waiting for
 * another event (invoker_wait may not poll again for milliseconds): it is
 * there, or invoker_fd says when to make it. */
static void test_next_spare_comes_after_a_death_without_another_event(void **state)
{
    (void)state;
    begin_test(30);
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = spares_invoker(&rec, 16, 1, INVOKER_SPARES_ALWAYS, NULL);
    hy_arg kill = mk(M_SELF_KILL, -1, 0);
    for (int round = 0; round < 3; round++) {
        int spare = await_spare(inv);
        assert_true(spare >= 0);
        assert_int_equal(invoker_submit(inv, &kill, sizeof kill, NULL, NULL), 0);
        size_t errors = rec.errors;
        while (rec.errors == errors)
            assert_true(invoker_poll(inv, -1) >= 0);
        assert_int_equal(record_in(inv, INVOKER__WORKER_LIVE, -1), spare);   /* it took over */
        /* Not there: invoker_fd says when to ask for it, and again when
         * the fork server's answer comes. */
        for (int wake = 0; wake < 3 && record_in(inv, INVOKER__WORKER_SPARE, -1) < 0; wake++) {
            struct pollfd p = { .fd = invoker_fd(inv), .events = POLLIN };
            assert_int_equal(poll(&p, 1, (int)(1000 * slack())), 1);
            assert_true(invoker_poll(inv, 0) >= 0);
        }
        assert_true(record_in(inv, INVOKER__WORKER_SPARE, -1) >= 0);   /* and has its own */
    }
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* A spare runs worker_init only once it takes its slot, with that slot's
 * number; one never needed never runs it.  _ALWAYS has spares from the
 * start, _NEVER has none even after a death. */
static void test_spares_always_never_and_worker_init_only_when_taken(void **state)
{
    (void)state;
    begin_test(30);
    g_inits = shared_map(2 * sizeof *g_inits);
    int fds0 = count_open_fds();
    for (int mode = INVOKER_SPARES_NEVER; mode <= INVOKER_SPARES_ALWAYS; mode++) {
        atomic_store(&g_inits[0], 0);
        recorder rec;
        invoker *inv = spares_invoker(&rec, 16, 1, mode, counting_init);
        hy_arg pl = mk(M_PLAIN, -1, 0), boom = mk(M_SELF_KILL, -1, 0);
        assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
        assert_int_equal(invoker_wait(inv), 0);
        int spare = mode == INVOKER_SPARES_ALWAYS ? await_spare(inv)
                                                  : record_in(inv, INVOKER__WORKER_SPARE, -1);
        assert_true(mode == INVOKER_SPARES_ALWAYS ? spare >= 0 : spare < 0);
        assert_int_equal(atomic_load(&g_inits[0]), 1);   /* a spare has not run it */

        invoker_id id;
        assert_int_equal(invoker_submit(inv, &boom, sizeof boom, NULL, &id), 0);
        assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(rec_get(&rec, id)->failure, INVOKER_FAIL_CRASH);
        assert_int_equal(rec.results, 2);
        assert_int_equal(atomic_load(&g_inits[0]), 2);
        assert_int_equal(atomic_load(&g_inits[1]), 1);   /* slot 0 */
        assert_int_equal(serving_workers(inv, 1), 1);
        spare = await_spare(inv);   /* polls a while: none may come */
        assert_true(mode == INVOKER_SPARES_NEVER ? spare < 0 : spare >= 0);
        invoker_stats st;
        invoker_get_stats(inv, &st);
        assert_int_equal(st.workers_started, 2);
        assert_int_equal(destroy_tracked(inv), 0);
        assert_int_equal(count_children(), 0);
        rec_free(&rec);
    }
    end_test(fds0);
    munmap(g_inits, 2 * sizeof *g_inits);
    g_inits = NULL;
}

/* By default a task with a timeout brings spares before any worker died:
 * its worker, if it hangs, is replaced from one. */
static void test_auto_spares_come_with_the_first_task_with_a_timeout(void **state)
{
    (void)state;
    begin_test(30);
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = spares_invoker(&rec, 8, 2, INVOKER_SPARES_AUTO, NULL);
    hy_arg pl = mk(M_PLAIN, -1, 0);
    assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.spares, 0);
    assert_int_equal(invoker_submit_timeout(inv, &pl, sizeof pl, NULL, 10.0, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_true(await_spare(inv) >= 0);
    double until = now_seconds() + 2 * slack();
    do {
        assert_true(invoker_poll(inv, 0) >= 0);
        invoker_get_stats(inv, &st);
    } while (st.spares < 2 && now_seconds() < until && (sleep_us(1000), 1));
    assert_int_equal(st.spares, 2);
    assert_int_equal(st.workers, 2);
    assert_int_equal(st.workers_started, 2);
    assert_int_equal(rec.results, 2);
    assert_int_equal(destroy_tracked(inv), 0);
    end_test(fds0);
    rec_free(&rec);
}

/* The CPU a dead worker ran on (a spare that takes its slot moves there)
 * is read from its zombie. */
static void test_last_cpu_of_a_zombie_is_where_it_ran(void **state)
{
    (void)state;
    cpu_set_t allowed;
    assert_int_equal(sched_getaffinity(0, sizeof allowed, &allowed), 0);
    int cpu = -1;
    for (int c = CPU_SETSIZE - 1; c >= 0 && cpu < 0; c--)
        if (CPU_ISSET(c, &allowed))
            cpu = c;   /* the highest allowed: not 0 where there are several */
    assert_true(cpu >= 0);
    invoker fake;
    invoker__worker rec;
    memset(&fake, 0, sizeof fake);
    memset(&rec, 0, sizeof rec);
    fake.workers = &rec;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            _exit(1);
        for (volatile int i = 0; i < 1000000; i++)
            ;
        _exit(sched_getcpu() == cpu ? 0 : 2);
    }
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);   /* a zombie */
    rec.pid = pid;
    assert_int_equal(invoker__worker_last_cpu(&fake, 0), cpu);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(invoker__worker_last_cpu(&fake, 0), -1);   /* reaped: unknown */
}

/* A spare killed by someone else costs no task and no start: the slot gets
 * another, and the invoker goes on as before. */
static void test_spare_killed_by_someone_else_costs_nothing_and_comes_back(void **state)
{
    (void)state;
    begin_test(30);
    int fds0 = count_open_fds();
    recorder rec;
    invoker *inv = spares_invoker(&rec, 64, 1, INVOKER_SPARES_ALWAYS, NULL);
    int spare = await_spare(inv);
    assert_true(spare >= 0);
    pid_t first = inv->workers[spare].pid;
    assert_int_equal(kill(first, SIGKILL), 0);
    hy_arg pl = mk(M_PLAIN, -1, 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_true(wait_dead(first, 2));
    double until = now_seconds() + 2 * slack();
    pid_t next = 0;
    while (now_seconds() < until) {
        assert_true(invoker_poll(inv, 0) >= 0);
        spare = record_in(inv, INVOKER__WORKER_SPARE, -1);
        if (spare >= 0 && (next = inv->workers[spare].pid) != first)
            break;
        sleep_us(1000);
    }
    assert_true(next > 0 && next != first);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(rec.results, 20);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.workers_started, 1);
    assert_int_equal(st.workers, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_true(dead(next));
    end_test(fds0);
    rec_free(&rec);
}

static void test_destroy_unpolled_invoker_reports_every_task_once(void **state)
{
    (void)state;
    begin_test(30);
    int fds0 = count_open_fds();
    recorder rec;
    rec_init(&rec, 1024);
    invoker_config cfg;
    rec_config(&rec, &cfg, hy_objective, 3);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    hy_arg pl = mk(M_PLAIN, -1, 0), sl = mk(M_SLEEP, -1, 300);
    for (int i = 0; i < 600; i++)
        assert_int_equal(invoker_submit(inv, i % 3 ? &pl : &sl, sizeof pl, NULL, NULL), 0);
    sleep_us(20000);   /* workers run some; their results sit unread */
    assert_int_equal(destroy_tracked(inv), 0);
    for (invoker_id id = 1; id <= 600; id++) {
        rec_task *rt = rec_get(&rec, id);
        assert_int_equal(rt->results + rt->errors, 1);
        if (rt->errors)
            assert_int_equal(rt->failure, INVOKER_FAIL_SHUTDOWN);
    }
    printf("[ INFO     ] %zu results, %zu shutdowns\n", rec.results, rec.errors);
    end_test(fds0);
    rec_free(&rec);
}

/* ---- 8. workers die with their parent ---------------------------------------- */

static int g_report_fd = -1;
static pid_t g_doomed;   /* P below, for the teardown */
static pid_t g_grandchild;   /* of the group tests: killed by the teardown if left */

static int report_pid_init(unsigned worker, void *ctx)
{
    (void)worker;
    (void)ctx;
    int32_t msg[2] = { 1, (int32_t)getpid() };   /* 1: worker started */
    return write(g_report_fd, msg, sizeof msg) == (ssize_t)sizeof msg ? 0 : 1;
}

static int report_and_sleep(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)arg;
    (void)len;
    (void)out;
    (void)ctx;
    int32_t msg[2] = { 2, (int32_t)getpid() };   /* 2: objective running */
    if (write(g_report_fd, msg, sizeof msg) != (ssize_t)sizeof msg)
        return 1;
    sleep(100);
    return 0;
}

/* The process P of the test below: never returns. */
static void run_doomed_parent(int report_fd, unsigned workers)
{
    g_report_fd = report_fd;
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = workers;
    cfg.objective = report_and_sleep;
    cfg.worker_init = report_pid_init;
    cfg.on_result = mute_result;
    cfg.on_error = mute_error;
    invoker *inv = NULL;
    if (invoker_create(&inv, &cfg) != 0)
        _exit(3);
    for (unsigned i = 0; i < workers; i++)
        if (invoker_submit(inv, NULL, 0, NULL, NULL) != 0)
            _exit(4);
    (void)invoker_wait(inv);
    _exit(5);
}

static void test_parent_sigkilled_mid_objective_workers_exit(void **state)
{
    (void)state;
    const unsigned workers = 3;
    begin_test(30);
    int fds0 = count_open_fds();
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);   /* plain pipe(): the workers keep the write end */
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        close(pfd[0]);
        run_doomed_parent(pfd[1], workers);
    }
    close(pfd[1]);
    g_doomed = p;

    pid_t wpids[16];
    unsigned nw = 0, running = 0;
    while (running < workers) {
        int32_t msg[2];
        if (read_full(pfd[0], msg, sizeof msg, 10.0 * slack()) != 0)
            fail_msg("P's workers did not report (P status: %c)", proc_state(p, NULL));
        if (msg[0] == 1 && nw < 16)
            wpids[nw++] = msg[1];
        else if (msg[0] == 2)
            running++;
    }
    assert_int_equal(nw, workers);
    for (unsigned i = 0; i < nw; i++) {
        pid_t pp = 0;
        assert_true(proc_state(wpids[i], &pp) != 0);
        assert_int_equal(pp, p);   /* P's children, mid-objective */
    }

    double t0 = now_seconds();
    assert_int_equal(kill(p, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(p, &status, 0), p);
    g_doomed = 0;
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    for (unsigned i = 0; i < nw; i++)
        if (!wait_dead(wpids[i], 2.0 - (now_seconds() - t0) / slack()))
            fail_msg("worker %d still alive (state %c) after its parent was killed",
                     (int)wpids[i], proc_state(wpids[i], NULL));
    /* Nothing holds the pipe any more. */
    char c;
    struct pollfd pl = { pfd[0], POLLIN, 0 };
    assert_int_equal(poll(&pl, 1, (int)(1000 * slack())), 1);
    assert_int_equal(read(pfd[0], &c, 1), 0);
    printf("[ INFO     ] workers gone %.3f s after their parent\n", now_seconds() - t0);
    close(pfd[0]);
    end_test(fds0);
}

/* ---- 9. process groups ---------------------------------------------------------- */

enum group_end { BY_TIMEOUT, BY_CANCEL, BY_DESTROY };

static void grandchild_case(enum group_end how)
{
    begin_test(30);
    int fds0 = count_open_fds();
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    recorder rec;
    rec_init(&rec, 64);
    invoker_config cfg;
    rec_config(&rec, &cfg, hy_objective, 2);
    if (how == BY_TIMEOUT)
        cfg.timeout = 0.4;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);

    /* Each worker leads its own group. */
    hy_arg pl = mk(M_PLAIN, -1, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec.results, 4);
    for (invoker_id id = 1; id <= 4; id++)
        assert_int_equal(rec_get(&rec, id)->result_len, 8);

    hy_arg gc = mk(M_GRANDCHILD, pfd[1], 0);
    invoker_id id = 0;
    assert_int_equal(invoker_submit(inv, &gc, sizeof gc, NULL, &id), 0);
    int32_t gpid = 0;
    double until = now_seconds() + 5 * slack();
    for (;;) {
        struct pollfd p = { pfd[0], POLLIN, 0 };
        if (poll(&p, 1, 0) == 1) {
            assert_int_equal(read(pfd[0], &gpid, sizeof gpid), (ssize_t)sizeof gpid);
            break;
        }
        assert_true(now_seconds() < until);
        assert_true(invoker_poll(inv, 5) >= 0);
    }
    assert_true(gpid > 0);
    g_grandchild = gpid;
    assert_false(dead(gpid));
    rec_task *rt = rec_get(&rec, id);

    double t_end;
    if (how == BY_TIMEOUT) {
        while (rt->errors + rt->results == 0 && now_seconds() < until)
            assert_true(invoker_poll(inv, 100) >= 0);
        t_end = now_seconds();
        assert_int_equal(rt->errors, 1);
        assert_int_equal(rt->failure, INVOKER_FAIL_TIMEOUT);
    } else if (how == BY_CANCEL) {
        assert_int_equal(invoker_cancel(inv, id), 0);
        assert_true(invoker_poll(inv, (int)(1000 * slack())) >= 1);
        t_end = now_seconds();
        assert_int_equal(rt->errors, 1);
        assert_int_equal(rt->failure, INVOKER_FAIL_CANCELLED);
    } else {
        assert_int_equal(destroy_tracked(inv), 0);
        inv = NULL;
        t_end = now_seconds();
        assert_int_equal(rt->errors, 1);
        assert_int_equal(rt->failure, INVOKER_FAIL_SHUTDOWN);
    }
    /* The whole group went, not just the worker. */
    if (!wait_dead(gpid, 1.0 - (now_seconds() - t_end) / slack()))
        fail_msg("grandchild %d still alive (state %c) 1 s after the task ended",
                 (int)gpid, proc_state(gpid, NULL));
    g_grandchild = 0;
    if (inv) {
        for (int i = 0; i < 4; i++)
            assert_int_equal(invoker_submit(inv, &pl, sizeof pl, NULL, NULL), 0);
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(serving_workers(inv, 2), 2);
        assert_int_equal(destroy_tracked(inv), 0);
    }
    close(pfd[0]);
    close(pfd[1]);
    end_test(fds0);
    rec_free(&rec);
}

static void test_timeout_kills_worker_process_group_grandchild_gone(void **state)
{
    (void)state;
    grandchild_case(BY_TIMEOUT);
}

static void test_cancel_kills_worker_process_group_grandchild_gone(void **state)
{
    (void)state;
    grandchild_case(BY_CANCEL);
}

static void test_destroy_kills_worker_process_group_grandchild_gone(void **state)
{
    (void)state;
    grandchild_case(BY_DESTROY);
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    destroy_leftovers();
    if (g_sh) {
        munmap(g_sh, sizeof *g_sh);
        g_sh = NULL;
    }
    if (g_grandchild > 0) {
        (void)kill(g_grandchild, SIGKILL);   /* it holds our stdout: never leave it */
        g_grandchild = 0;
    }
    if (g_doomed > 0) {
        (void)kill(g_doomed, SIGKILL);
        (void)waitpid(g_doomed, NULL, 0);
        g_doomed = 0;
    }
    return 0;
}

int main(void)
{
    set_filter();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_new_fd_is_cloexec_after_create_and_respawn, teardown),
        cmocka_unit_test_teardown(test_two_invokers_workers_hold_none_of_each_others_fds, teardown),
        cmocka_unit_test_teardown(test_destroy_reports_running_queued_hung_once_and_cleans_up, teardown),
        cmocka_unit_test_teardown(test_destroy_unpolled_invoker_reports_every_task_once, teardown),
        cmocka_unit_test_teardown(test_replacement_serves_while_its_predecessor_dies_and_neither_outlives_destroy, teardown),
        cmocka_unit_test_teardown(test_spare_takes_the_slot_at_the_kill_and_counts_once_it_does, teardown),
        cmocka_unit_test_teardown(test_next_spare_comes_after_a_death_without_another_event, teardown),
        cmocka_unit_test_teardown(test_spares_always_never_and_worker_init_only_when_taken, teardown),
        cmocka_unit_test_teardown(test_spare_killed_by_someone_else_costs_nothing_and_comes_back, teardown),
        cmocka_unit_test_teardown(test_auto_spares_come_with_the_first_task_with_a_timeout, teardown),
        cmocka_unit_test(test_last_cpu_of_a_zombie_is_where_it_ran),
        cmocka_unit_test_teardown(test_parent_sigkilled_mid_objective_workers_exit, teardown),
        cmocka_unit_test_teardown(test_timeout_kills_worker_process_group_grandchild_gone, teardown),
        cmocka_unit_test_teardown(test_cancel_kills_worker_process_group_grandchild_gone, teardown),
        cmocka_unit_test_teardown(test_destroy_kills_worker_process_group_grandchild_gone, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

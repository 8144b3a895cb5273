/* memory_limit and cpu_limit: a task that passes its limit fails with
 * INVOKER_FAIL_MEMORY / INVOKER_FAIL_CPU, its worker is replaced, and the
 * next task runs normally; the CPU limit is per task, not cumulative. */
#include "helpers.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* AddressSanitizer reserves terabytes of address space for its shadow, so
 * RLIMIT_AS cannot be tested under it (UNDER_ASAN: helpers.h). */

enum act { ACT_PID, ACT_HOG, ACT_ALLOC, ACT_SPIN, ACT_BUDGET };
typedef struct { int act; long value; } order;   /* value: bytes or CPU ms */
typedef struct { pid_t pid; double cpu; } reply;

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Touches every page so the memory is really there. */
static void touch(unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i += 4096)
        p[i] = (unsigned char)i;
}

/* Runs in a worker: no cmocka here, only return codes and signals. */
static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 1000;
    memcpy(&o, arg, sizeof o);
    switch (o.act) {
    case ACT_HOG: {
        /* Grabs o.value bytes in 8 MiB pieces.  A refused malloc is the
         * limit at work: abort(), so the outcome is always SIGABRT. */
        const size_t piece = (size_t)8 << 20;
        void **kept = calloc((size_t)o.value / piece + 1, sizeof *kept);
        if (!kept)
            abort();
        size_t n = 0;
        for (size_t got = 0; got < (size_t)o.value; got += piece) {
            unsigned char *p = malloc(piece);
            if (!p)
                abort();
            touch(p, piece);
            kept[n++] = p;
        }
        for (size_t i = 0; i < n; i++)
            free(kept[i]);
        free(kept);
        return 77;   /* the limit did not bite */
    }
    case ACT_ALLOC: {
        unsigned char *p = malloc((size_t)o.value);
        if (!p)
            return 78;
        touch(p, (size_t)o.value);
        free(p);
        break;
    }
    case ACT_SPIN: {
        double until = cpu_seconds() + (double)o.value / 1000.0;
        volatile unsigned long sink = 0;
        while (cpu_seconds() < until)
            for (int i = 0; i < 10000; i++)
                sink += (unsigned long)i;
        (void)sink;
        break;
    }
    case ACT_BUDGET: {
        /* What the kernel will let this task use: the soft RLIMIT_CPU
         * less the CPU time it compares that with, the process's PROF
         * clock (Linux: MAKE_PROCESS_CPUCLOCK(0, CPUCLOCK_PROF)). */
        struct rlimit rl;
        struct timespec ts;
        if (getrlimit(RLIMIT_CPU, &rl) != 0 || clock_gettime((clockid_t)-8, &ts) != 0)
            return 79;
        reply b = { getpid(), (double)rl.rlim_cur - ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9) };
        return invoker_result_write(out, &b, sizeof b);
    }
    default:
        break;
    }
    reply r = { getpid(), cpu_seconds() };
    return invoker_result_write(out, &r, sizeof r);
}

static reply last_reply[64];

static int keep_reply(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)r;
    if (len == sizeof(reply) && t->id < 64)
        memcpy(&last_reply[t->id], res, sizeof(reply));
    return 0;
}

static invoker_id submit(invoker *inv, int act, long value)
{
    order o;
    memset(&o, 0, sizeof o);
    o.act = act;
    o.value = value;
    invoker_id id = 0;
    assert_int_equal(invoker_submit(inv, &o, sizeof o, NULL, &id), 0);
    return id;
}

static invoker *make(recorder *r, void (*tweak)(invoker_config *))
{
    memset(last_reply, 0, sizeof last_reply);
    rec_init(r, 64);
    r->on_result_hook = keep_reply;
    invoker_config cfg;
    rec_config(r, &cfg, obj, 1);
    tweak(&cfg);
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r->inv = track(inv);
    return inv;
}

static void finish(recorder *r, int fds)
{
    assert_int_equal(destroy_tracked(r->inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(r);
}

/* The parent's address space now: the worker starts as a copy of it. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long pages = 0;
    assert_int_equal(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

static size_t mem_limit;
static void limit_memory(invoker_config *c) { c->memory_limit = mem_limit; }

static void test_memory_hog_fails_memory_worker_replaced_next_task_ok(void **state)
{
    (void)state;
    if (UNDER_ASAN || getenv("INVOKER_UNDER_VALGRIND")) {
        print_message("skipped: %s\n", UNDER_ASAN
                      ? "AddressSanitizer reserves terabytes of address space, past any RLIMIT_AS"
                      : "valgrind's own mappings count against RLIMIT_AS in the worker");
        skip();
    }
    int fds = count_open_fds();
    /* Room for the worker's own buffers, not for the hog. */
    mem_limit = vm_size() + ((size_t)128 << 20);
    recorder r;
    invoker *inv = make(&r, limit_memory);

    invoker_id before = submit(inv, ACT_PID, 0);
    invoker_id small = submit(inv, ACT_ALLOC, 32l << 20);   /* under the limit */
    invoker_id hog = submit(inv, ACT_HOG, 1024l << 20);     /* 1 GiB: far past it */
    invoker_id after = submit(inv, ACT_ALLOC, 32l << 20);
    invoker_id last = submit(inv, ACT_PID, 0);
    assert_int_equal(invoker_wait(inv), 0);

    assert_int_equal(rec_get(&r, before)->results, 1);
    assert_int_equal(rec_get(&r, small)->results, 1);
    assert_int_equal(rec_get(&r, hog)->errors, 1);
    assert_int_equal(rec_get(&r, hog)->results, 0);
    assert_int_equal(rec_get(&r, hog)->failure, INVOKER_FAIL_MEMORY);
    assert_int_equal(rec_get(&r, hog)->code, SIGABRT);
    assert_int_equal(rec_get(&r, hog)->attempts, 1);
    assert_int_equal(rec_get(&r, after)->results, 1);
    assert_int_equal(rec_get(&r, last)->results, 1);
    /* The hog's worker is gone: a new process ran what came after. */
    assert_int_equal(last_reply[before].pid, last_reply[small].pid);
    assert_true(last_reply[after].pid != last_reply[before].pid);
    assert_int_equal(last_reply[after].pid, last_reply[last].pid);

    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.succeeded, 4);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.workers_started, 2);
    assert_int_equal(st.workers, 1);
    finish(&r, fds);
}

static void limit_cpu(invoker_config *c) { c->cpu_limit = 1; }

/* CPU seconds used by our reaped children (the workers among them). */
static double children_cpu_seconds(void)
{
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_CHILDREN, &ru), 0);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void test_cpu_spinner_fails_cpu_worker_replaced_next_task_ok(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    invoker *inv = make(&r, limit_cpu);

    invoker_id before = submit(inv, ACT_PID, 0);
    double t0 = now_seconds();
    double cpu0 = children_cpu_seconds();
    /* 20 s of CPU by the spinner's clock, limit 1 s.  The kernel checks
     * RLIMIT_CPU against CPU time sampled at ticks, which on a loaded
     * machine drifts from the precise clock the spinner reads (by a third
     * either way, seen here): spinning far past the limit, it is always
     * killed. */
    invoker_id spin = submit(inv, ACT_SPIN, 20000);
    invoker_id after = submit(inv, ACT_PID, 0);
    assert_int_equal(invoker_wait(inv), 0);

    rec_task *s = rec_get(&r, spin);
    assert_int_equal(s->errors, 1);
    assert_int_equal(s->results, 0);
    assert_int_equal(s->failure, INVOKER_FAIL_CPU);
    assert_int_equal(s->code, SIGXCPU);
    assert_int_equal(s->attempts, 1);
    /* Whole seconds, rounded up: killed after 1 to 2 s of CPU (as the
     * ticks count it).  Its worker was reaped before the report, so its
     * CPU time counts among our children's: a bound on CPU, which a
     * loaded machine cannot stretch as it stretches the wall time. */
    double took = s->reported_at - t0;
    double cpu = children_cpu_seconds() - cpu0;
    print_message("cpu_limit=1: spinner reported after %.2f s, its worker used %.2f s of CPU\n",
                  took, cpu);
    assert_true(cpu >= 0.5);
    assert_true(cpu < 3.0);
    assert_true(s->run_seconds >= 0.9);
    assert_true(took < 60.0);   /* a hang guard only */
    assert_int_equal(rec_get(&r, after)->results, 1);
    assert_true(last_reply[after].pid != last_reply[before].pid);
    assert_true(last_reply[after].pid > 0);
    finish(&r, fds);
}

static void test_cpu_limit_is_per_task_not_cumulative(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    invoker *inv = make(&r, limit_cpu);
    enum { N = 6 };   /* 6 x 0.5 s = 3 s in one worker, limit 1 s per task */
    invoker_id ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = submit(inv, ACT_SPIN, 500);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(rec_get(&r, ids[i])->results, 1);
        assert_int_equal(last_reply[ids[i]].pid, last_reply[ids[0]].pid);   /* one worker */
    }
    print_message("cpu_limit=1: %d tasks of 0.5 s CPU in one worker, %.2f s CPU in all\n",
                  N, last_reply[ids[N - 1]].cpu);
    assert_true(last_reply[ids[N - 1]].cpu >= 2.9);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.succeeded, N);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.workers_started, 1);
    finish(&r, fds);
}

/* Each task gets its limit, rounded up to whole seconds, by the clock the
 * kernel checks RLIMIT_CPU against, however long its worker has worked:
 * armed from getrusage instead, the budget of a long-lived worker on a
 * loaded machine shrank as tick-sampled CPU time ran ahead (a 1 s limit
 * killed tasks of 0.5 s, the first after 5.5 s of work). */
static void test_cpu_budget_of_each_task_is_its_limit_by_the_kernels_clock(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    invoker *inv = make(&r, limit_cpu);
    enum { ROUNDS = 4 };
    invoker_id budget[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        budget[i] = submit(inv, ACT_BUDGET, 0);
        submit(inv, ACT_SPIN, 400);
    }
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < ROUNDS; i++) {
        assert_int_equal(rec_get(&r, budget[i])->results, 1);
        double left = last_reply[budget[i]].cpu;
        print_message("cpu_limit=1: task %d may use %.3f s more\n", 2 * i + 1, left);
        assert_true(left > 0.9);
        assert_true(left <= 2.0);
        assert_int_equal(last_reply[budget[i]].pid, last_reply[budget[0]].pid);
    }
    finish(&r, fds);
}

static int setup(void **state)
{
    (void)state;
    fflush(NULL);
    alarm(slack() > 1 ? 600 : 120);   /* hang guard */
    return 0;
}

/* A failed assertion leaves its invoker: destroyed here, so that the next
 * test counts its own descriptors and children. */
static int teardown(void **state)
{
    (void)state;
    alarm(0);
    destroy_leftovers();
    return 0;
}

int main(void)
{
    set_filter();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_memory_hog_fails_memory_worker_replaced_next_task_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_spinner_fails_cpu_worker_replaced_next_task_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_limit_is_per_task_not_cumulative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_budget_of_each_task_is_its_limit_by_the_kernels_clock, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Held results: a worker keeps the frames of a packet's finished tasks in
 * its slot and sends them in one write.  None is lost when it dies first,
 * none is taken from bytes an objective scribbled, and none waits behind
 * a long packet-mate for more than a few milliseconds. */
#include "helpers.h"
#include "internal.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum act { A_OK = 0, A_KILL, A_SCRIBBLE_KILL, A_SLEEP, A_FORGE_SKIP_KILL };
typedef struct { uint32_t idx, act, ms; } order;

#define MAXT 4096
typedef struct {
    _Atomic int runs[MAXT];        /* objective calls per task index */
    _Atomic int scribbled;         /* held frames a scribbler spoiled */
    uint64_t    slots[16];         /* the slots' addresses, set by the parent */
    uint64_t    key;               /* the invoker's, for a forger */
} board;

static board *g_board;             /* MAP_SHARED: seen by every worker */
static unsigned g_worker;          /* in a worker: its slot */

static int note_worker(unsigned worker, void *ctx)
{
    (void)ctx;
    g_worker = worker;
    return 0;
}

static uint64_t expected(uint32_t idx)
{
    return (uint64_t)idx * 7919u + 3u;
}

static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 99;
    memcpy(&o, arg, sizeof o);
    atomic_fetch_add(&g_board->runs[o.idx % MAXT], 1);
    if (o.act == A_KILL)
        raise(SIGKILL);
    if (o.act == A_SCRIBBLE_KILL && g_worker < 16 && g_board->slots[g_worker]) {
        invoker__slot *slot = (invoker__slot *)(uintptr_t)g_board->slots[g_worker];
        /* The first held frame's payload: its header stays valid, so only
         * the hash of its bytes can tell. */
        if (atomic_load(&slot->held) >= INVOKER__FRAME_HDR + 16 + INVOKER__HELD_TRAILER) {
            slot->held_frames[INVOKER__FRAME_HDR] ^= 0x5a;
            atomic_fetch_add(&g_board->scribbled, 1);
        }
        raise(SIGKILL);
    }
    if (o.act == A_FORGE_SKIP_KILL && g_worker < 16 && g_board->slots[g_worker]) {
        /* A well-sealed SKIPPED frame for our own task, with a good hash,
         * as if held: a skip is no outcome, whatever the hold says. */
        invoker__slot *slot = (invoker__slot *)(uintptr_t)g_board->slots[g_worker];
        invoker__ticket tk;
        memcpy(&tk, slot->ticket, sizeof tk);
        invoker__frame f;
        memset(&f, 0, sizeof f);
        f.kind = INVOKER__FRAME_SKIPPED;
        f.id = tk.id;
        f.gen = tk.gen;
        invoker__proto_frame_seal(&f, g_board->key);
        uint64_t trailer[2] = { invoker__proto_held_hash((const unsigned char *)&f, sizeof f,
                                                         g_board->key), 0 };
        memcpy(slot->held_frames, &f, sizeof f);
        memcpy(slot->held_frames + sizeof f, trailer, sizeof trailer);
        atomic_store(&slot->held, sizeof f + sizeof trailer);
        raise(SIGKILL);
    }
    if (o.act == A_SLEEP)
        usleep(o.ms * 1000u);
    uint64_t v = expected(o.idx);
    return invoker_result_write(out, &v, sizeof v);
}

static int setup(void **state)
{
    (void)state;
    g_board = mmap(NULL, sizeof *g_board, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    return g_board == MAP_FAILED ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    munmap(g_board, sizeof *g_board);
    return 0;
}

static invoker *make(recorder *r)
{
    memset(g_board, 0, sizeof *g_board);
    invoker_config cfg;
    rec_config(r, &cfg, obj, 1);   /* one worker: every packet is its */
    cfg.worker_init = note_worker;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r->inv = track(inv);
    for (unsigned k = 0; k < inv->nworkers && k < 16; k++)
        g_board->slots[k] = (uint64_t)(uintptr_t)invoker__table_slot(&inv->table, k);
    g_board->key = inv->key;
    return inv;
}

static void submit(invoker *inv, uint32_t idx, uint32_t act, uint32_t ms)
{
    order o = { idx, act, ms };
    invoker_id id;
    assert_int_equal(invoker_submit(inv, &o, sizeof o, NULL, &id), 0);
    assert_int_equal(id, (invoker_id)idx);   /* ids count from 1 in submit order */
}

/* Short tasks first, so that the parent batches the ones that follow;
 * then, with the worker stopped, single tickets until the queue is full,
 * so that what is submitted next waits and leaves in packets (once the
 * caller has let the worker go on).  Returns the next index. */
static uint32_t warm_up(invoker *inv, uint32_t n)
{
    for (uint32_t i = 1; i <= n; i++)
        submit(inv, i, A_OK, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(kill(inv->workers[0].pid, SIGSTOP), 0);
    while (!inv->queue_full)
        submit(inv, ++n, A_OK, 0);
    assert_true(inv->pending.count <= 1);
    return n + 1;
}

static void go_on(invoker *inv)
{
    assert_int_equal(kill(inv->workers[0].pid, SIGCONT), 0);
}

static void check_result(recorder *r, uint32_t idx)
{
    rec_task *t = rec_get(r, idx);
    assert_int_equal(t->results + t->errors, 1);
    assert_int_equal(t->results, 1);
    assert_int_equal(t->result_len, sizeof(uint64_t));
    uint64_t v = expected(idx);
    assert_int_equal(t->result_sum, byte_sum(&v, sizeof v));
}

static void finish(recorder *r, int fds)
{
    assert_int_equal(r->inv->batched_out, 0);   /* every batched task left flight */
    assert_int_equal(destroy_tracked(r->inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(r);
}

/* Valgrind slows a trivial task past the batching threshold: nothing is
 * held there, and the tests check only what must hold either way. */
static bool batching_expected(void)
{
    return slack() == 1.0;
}

/* Tasks first..last-1, every 200th dying as death says, run to the end. */
static void run_with_deaths(invoker *inv, uint32_t first, uint32_t last, uint32_t death)
{
    for (uint32_t i = first; i < last; i++)
        submit(inv, i, i % 200 == 100 ? death : A_OK, 0);
    go_on(inv);
    assert_int_equal(invoker_wait(inv), 0);
}

static void test_a_death_mid_packet_loses_no_finished_result(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, MAXT);
    int fds = count_open_fds();
    invoker *inv = make(&r);
    uint32_t first = warm_up(inv, 50), last = first + 2000;
    run_with_deaths(inv, first, last, A_KILL);
    for (uint32_t i = first; i < last; i++) {
        rec_task *t = rec_get(&r, i);
        if (i % 200 == 100) {
            assert_int_equal(t->errors, 1);
            assert_int_equal(t->results, 0);
            assert_int_equal(t->failure, INVOKER_FAIL_CRASH);
            continue;
        }
        check_result(&r, i);
        /* Ran once: a result held at a death was delivered, not rerun. */
        assert_int_equal(atomic_load(&g_board->runs[i]), 1);
        assert_int_equal(t->attempts, 1);
    }
    if (batching_expected())
        assert_true(inv->held_delivered > 0);   /* the post-mortem found some */
    finish(&r, fds);
}

static void test_a_scribbled_held_result_runs_again_never_delivered(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, MAXT);
    int fds = count_open_fds();
    invoker *inv = make(&r);
    uint32_t first = warm_up(inv, 50), last = first + 2000;
    run_with_deaths(inv, first, last, A_SCRIBBLE_KILL);
    int reruns = 0;
    for (uint32_t i = first; i < last; i++) {
        if (i % 200 == 100) {
            assert_int_equal(rec_get(&r, i)->failure, INVOKER_FAIL_CRASH);
            continue;
        }
        check_result(&r, i);   /* the value computed, never the scribbled one */
        int runs = atomic_load(&g_board->runs[i]);
        assert_true(runs == 1 || runs == 2);
        assert_int_equal(rec_get(&r, i)->attempts, (unsigned)runs);
        reruns += runs - 1;
    }
    if (batching_expected()) {
        assert_true(atomic_load(&g_board->scribbled) > 0);
        assert_true(reruns > 0);   /* what the spoiled frames carried ran again */
    }
    finish(&r, fds);
}

static void test_results_held_behind_a_long_task_arrive_within_ms(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, MAXT);
    int fds = count_open_fds();
    invoker *inv = make(&r);
    double t0 = now_seconds();
    uint32_t first = warm_up(inv, 50);
    uint32_t sleeper = first + 15, last = first + 60, long_ms = 600;
    for (uint32_t i = first; i < last; i++)
        submit(inv, i, i == sleeper ? A_SLEEP : A_OK, long_ms);
    go_on(inv);
    assert_int_equal(invoker_wait(inv), 0);
    /* Those before it in its packet ended at once; without the parent's
     * look at held results they would wait the whole sleep. */
    for (uint32_t i = first; i < sleeper; i++) {
        check_result(&r, i);
        if (batching_expected())
            assert_true(rec_get(&r, i)->reported_at - t0 < 0.3);
    }
    check_result(&r, sleeper);
    assert_true(rec_get(&r, sleeper)->reported_at - t0 >= long_ms / 1000.0);
    for (uint32_t i = sleeper + 1; i < last; i++)
        check_result(&r, i);
    if (batching_expected())
        assert_true(inv->held_delivered > 0);
    finish(&r, fds);
}

/* A worker that dies with a forged SKIPPED frame held for its own task:
 * the task is its crash, not an outcome the frame could be read as. */
static void test_a_held_skip_is_no_outcome(void **state)
{
    (void)state;
    recorder r;
    rec_init(&r, MAXT);
    int fds = count_open_fds();
    invoker *inv = make(&r);
    submit(inv, 1, A_FORGE_SKIP_KILL, 0);
    submit(inv, 2, A_OK, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, 1)->errors, 1);
    assert_int_equal(rec_get(&r, 1)->failure, INVOKER_FAIL_CRASH);
    check_result(&r, 2);
    finish(&r, fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_a_death_mid_packet_loses_no_finished_result,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_a_scribbled_held_result_runs_again_never_delivered,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_results_held_behind_a_long_task_arrive_within_ms,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_a_held_skip_is_no_outcome, leftovers_teardown),
    };
    set_filter();
    return cmocka_run_group_tests(tests, setup, teardown);
}

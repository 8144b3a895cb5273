/* Arguments written in place meet the cache, the journal, adaptive
 * timeouts and invoker_cancel_tag: a zero-copy task is keyed by its
 * bytes, merged with its twins in flight, answered from memory and from a
 * journal, timed and cancelled as a copied one is, and its arena block
 * goes back whichever way it ends: evaluated, answered, waiting for a
 * twin, cancelled, or still held at destroy. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define BIG     (INVOKER__INLINE_MAX * 16)   /* a block of the arena's own */
#define SMALL   100u                         /* heap-held, copied at submit */
#define MAX_IDS 64
#define HANG    UINT64_MAX                   /* a control word: never returns */

typedef struct seen {
    int             results, errors, cached;
    unsigned        attempts;
    invoker_failure fail;
    uint64_t        sum;
} seen;

typedef struct fixture {
    atomic_uint *evals;   /* shared with the workers: objective calls */
    seen         s[MAX_IDS + 1];
    int          fds;
    char         dir[64];
    char         path[128];
} fixture;

/* The argument's first 8 bytes: milliseconds to sleep (HANG: forever);
 * the result: the byte sum of the whole argument. */
static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    atomic_fetch_add((atomic_uint *)ctx, 1);
    uint64_t ms;
    memcpy(&ms, arg, sizeof ms);
    if (ms == HANG)
        for (;;)
            pause();
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    uint64_t v = byte_sum(arg, len);
    return invoker_result_write(out, &v, sizeof v);
}

static seen *at(fixture *f, invoker_id id)
{
    assert_true(id > 0 && id <= MAX_IDS);
    return &f->s[id];
}

static void on_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    seen *s = at(user, t->id);
    s->results++;
    s->cached = t->cached;
    s->attempts = t->attempts;
    assert_int_equal(len, sizeof s->sum);
    memcpy(&s->sum, res, sizeof s->sum);
}

static void on_error(const invoker_task *t, invoker_failure fail, int code, void *user)
{
    (void)code;
    seen *s = at(user, t->id);
    s->errors++;
    s->cached = t->cached;
    s->fail = fail;
}

static void config(fixture *f, invoker_config *cfg, unsigned workers)
{
    invoker_config_init(cfg);
    cfg->objective = obj;
    cfg->objective_ctx = f->evals;
    cfg->on_result = on_result;
    cfg->on_error = on_error;
    cfg->user = f;
    cfg->workers = workers;
}

static invoker *make(const invoker_config *cfg)
{
    invoker *inv;
    assert_int_equal(invoker_create(&inv, cfg), 0);
    return track(inv);
}

/* len bytes: the control word ms, then the pattern of seed. */
static void fill(void *p, size_t len, uint64_t ms, uint64_t seed)
{
    fill_pattern(p, len, seed);
    memcpy(p, &ms, sizeof ms);
}

/* A buffer from invoker_arg_alloc, filled; its expected result in *sum. */
static void *held(invoker *inv, size_t len, uint64_t ms, uint64_t seed, uint64_t *sum)
{
    void *buf = NULL;
    assert_int_equal(invoker_arg_alloc(inv, len, &buf), 0);
    fill(buf, len, ms, seed);
    if (sum)
        *sum = byte_sum(buf, len);
    return buf;
}

static invoker_id submit_zc(invoker *inv, size_t len, uint64_t ms, uint64_t seed, void *tag,
                            uint64_t *sum)
{
    void *buf = held(inv, len, ms, seed, sum);
    invoker_id id = 0;
    assert_int_equal(invoker_submit_arg(inv, buf, len, tag, &id), 0);
    return id;
}

/* Every arena block and held buffer given back. */
static void assert_nothing_held(const invoker *inv)
{
    assert_int_equal(inv->arena.live, 0);
    assert_int_equal(inv->argbufs.count, 0);
}

/* Mappings of any argument arena in this process. */
static int arena_maps(void)
{
    FILE *m = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (m && fgets(line, sizeof line, m))
        n += strstr(line, "invoker-args") != NULL;
    if (m)
        fclose(m);
    return n;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->fds = count_open_fds();
    f->evals = mmap(NULL, sizeof *f->evals, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                    -1, 0);
    assert_true(f->evals != MAP_FAILED);
    atomic_store(f->evals, 0);
    strcpy(f->dir, "/tmp/invoker-argstore-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/j", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    destroy_leftovers();
    char cmd[120];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(count_open_fds(), f->fds);
    assert_int_equal(count_children(), 0);
    munmap(f->evals, sizeof *f->evals);
    free(f);
    return 0;
}

static void test_identical_zero_copy_submits_in_flight_are_evaluated_once(void **state)
{
    fixture *f = *state;
    invoker_config cfg;
    config(f, &cfg, 2);
    cfg.cache = 1;
    invoker *inv = make(&cfg);

    /* A failed submit leaves the buffer the caller's, bytes and all, with
     * the cache on too: it is submitted for real afterwards. */
    uint64_t sum;
    void *first = held(inv, BIG, 100, 7, &sum);
    invoker_id id = 0;
    assert_int_equal(invoker_submit_arg_timeout(inv, first, BIG, NULL, -1.0, &id), -EINVAL);
    assert_int_equal(id, 0);
    assert_int_equal(byte_sum(first, BIG), sum);
    assert_int_equal(inv->stats.submitted, 0);
    assert_int_equal(invoker_submit_arg(inv, first, BIG, NULL, &id), 0);

    invoker_id ids[10] = { id };
    for (int i = 1; i < 10; i++) {
        uint64_t s;
        ids[i] = submit_zc(inv, BIG, 100, 7, NULL, &s);
        assert_int_equal(s, sum);
    }
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(atomic_load(f->evals), 1);
    int cached = 0;
    for (int i = 0; i < 10; i++) {
        seen *s = at(f, ids[i]);
        assert_int_equal(s->results, 1);
        assert_int_equal(s->errors, 0);
        assert_int_equal(s->sum, sum);
        cached += s->cached;
    }
    assert_int_equal(cached, 9);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cached, 9);
    assert_nothing_held(inv);

    /* Finished now: the next one is answered from memory; a small one,
     * copied at submit, is keyed by the same bytes. */
    invoker_id again = submit_zc(inv, BIG, 100, 7, NULL, NULL);
    uint64_t ssum;
    invoker_id small = submit_zc(inv, SMALL, 0, 8, NULL, &ssum);
    invoker_id small2 = submit_zc(inv, SMALL, 0, 8, NULL, NULL);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(at(f, again)->results, 1);
    assert_int_equal(at(f, again)->cached, 1);
    assert_int_equal(at(f, again)->attempts, 0);
    assert_int_equal(at(f, again)->sum, sum);
    assert_int_equal(at(f, small)->sum, ssum);
    assert_int_equal(at(f, small2)->sum, ssum);
    assert_int_equal(at(f, small)->cached + at(f, small2)->cached, 1);
    assert_int_equal(atomic_load(f->evals), 2);
    assert_nothing_held(inv);
    assert_int_equal(destroy_tracked(inv), 0);
}

static void test_a_zero_copy_outcome_is_journaled_and_answered_on_rerun(void **state)
{
    fixture *f = *state;
    invoker_config cfg;
    config(f, &cfg, 1);
    cfg.journal = f->path;
    cfg.journal_key = "argbuf v1";
    invoker *inv = make(&cfg);
    uint64_t sa, sb;
    submit_zc(inv, BIG, 0, 11, NULL, &sa);
    submit_zc(inv, SMALL, 0, 12, NULL, &sb);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.journaled, 2);
    assert_int_equal(st.journal_error, 0);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(atomic_load(f->evals), 2);
    memset(f->s, 0, sizeof f->s);

    /* The rerun: the same bytes, in place and copied, cross over. */
    inv = make(&cfg);
    invoker_id a = submit_zc(inv, BIG, 0, 11, NULL, NULL);
    unsigned char copy[SMALL];
    fill(copy, sizeof copy, 0, 12);
    invoker_id b = 0;
    assert_int_equal(invoker_submit(inv, copy, sizeof copy, NULL, &b), 0);
    unsigned char *big = malloc(BIG);
    assert_non_null(big);
    fill(big, BIG, 0, 11);
    invoker_id c = 0;
    assert_int_equal(invoker_submit(inv, big, BIG, NULL, &c), 0);
    free(big);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(atomic_load(f->evals), 2);
    invoker_id ids[3] = { a, b, c };
    uint64_t sums[3] = { sa, sb, sa };
    for (int i = 0; i < 3; i++) {
        seen *s = at(f, ids[i]);
        assert_int_equal(s->results, 1);
        assert_int_equal(s->cached, 1);
        assert_int_equal(s->attempts, 0);
        assert_int_equal(s->sum, sums[i]);
    }
    assert_nothing_held(inv);
    assert_int_equal(destroy_tracked(inv), 0);
}

static void test_zero_copy_tasks_get_adaptive_timeouts(void **state)
{
    fixture *f = *state;
    invoker_config cfg;
    config(f, &cfg, 1);
    cfg.timeout_factor = 5;
    cfg.timeout_min = 0.2;
    invoker *inv = make(&cfg);
    for (int i = 0; i < 12; i++)
        submit_zc(inv, BIG, 2, 20 + (uint64_t)i, NULL, NULL);
    assert_int_equal(invoker_wait(inv), 0);

    /* The adaptive bound is 0.2 s now (5 x ~2 ms, raised to timeout_min);
     * the config has no timeout, so only it can end the hang. */
    invoker_id hung = submit_zc(inv, BIG, HANG, 40, NULL, NULL);
    double deadline = now_seconds() + 20 * slack();
    while (at(f, hung)->errors == 0 && now_seconds() < deadline)
        assert_true(invoker_poll(inv, 50) >= 0);
    assert_int_equal(at(f, hung)->errors, 1);
    assert_int_equal(at(f, hung)->fail, INVOKER_FAIL_TIMEOUT);

    /* A timeout of its own (0: none) always wins over the adaptive one. */
    uint64_t sum;
    void *buf = held(inv, BIG, 600, 41, &sum);
    invoker_id own = 0;
    assert_int_equal(invoker_submit_arg_timeout(inv, buf, BIG, NULL, 0, &own), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(at(f, own)->results, 1);
    assert_int_equal(at(f, own)->sum, sum);
    assert_nothing_held(inv);
    assert_int_equal(destroy_tracked(inv), 0);
}

static void test_cancel_tag_cancels_zero_copy_tasks_and_spares_a_twin(void **state)
{
    fixture *f = *state;
    invoker_config cfg;
    config(f, &cfg, 1);
    cfg.cache = 1;
    invoker *inv = make(&cfg);
    int tag_a, tag_b;
    uint64_t sum;
    invoker_id xa = submit_zc(inv, BIG, 300, 50, &tag_a, &sum);
    invoker_id xb = submit_zc(inv, BIG, 300, 50, &tag_b, NULL);   /* waits for xa */
    invoker_id ya = submit_zc(inv, BIG, 0, 51, &tag_a, NULL);
    assert_int_equal(inv->argbufs.count, 0);
    assert_int_equal(invoker_cancel_tag(inv, &tag_a), 2);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(at(f, xa)->fail, INVOKER_FAIL_CANCELLED);
    assert_int_equal(at(f, ya)->fail, INVOKER_FAIL_CANCELLED);
    assert_int_equal(at(f, xa)->errors + at(f, ya)->errors, 2);
    /* Its leader gone, the twin ran on its own, from its own block. */
    assert_int_equal(at(f, xb)->results, 1);
    assert_int_equal(at(f, xb)->cached, 0);
    assert_int_equal(at(f, xb)->sum, sum);
    assert_nothing_held(inv);
    assert_int_equal(destroy_tracked(inv), 0);
}

static void test_destroy_frees_held_buffers_with_the_cache_and_journal_on(void **state)
{
    fixture *f = *state;
    int before = arena_maps();
    invoker_config cfg;
    config(f, &cfg, 2);
    cfg.cache = 1;
    cfg.journal = f->path;
    cfg.journal_key = "argbuf v1";
    invoker *inv = make(&cfg);
    submit_zc(inv, BIG, 0, 60, NULL, NULL);
    assert_int_equal(invoker_wait(inv), 0);
    /* Held at destroy: one with the bytes just journaled, others new, and
     * a task still queued that waits for its identical twin. */
    (void)held(inv, BIG, 0, 60, NULL);
    (void)held(inv, BIG * 3, 0, 61, NULL);
    (void)held(inv, SMALL, 0, 62, NULL);
    (void)held(inv, SMALL, 0, 63, NULL);
    submit_zc(inv, BIG, 200, 64, NULL, NULL);
    submit_zc(inv, BIG, 200, 64, NULL, NULL);
    assert_int_equal(inv->argbufs.count, 4);
    assert_true(arena_maps() >= before + 2);   /* the two large ones' own views */
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(arena_maps(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identical_zero_copy_submits_in_flight_are_evaluated_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_zero_copy_outcome_is_journaled_and_answered_on_rerun,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_copy_tasks_get_adaptive_timeouts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_tag_cancels_zero_copy_tasks_and_spares_a_twin,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_frees_held_buffers_with_the_cache_and_journal_on,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

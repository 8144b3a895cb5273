/* Shared by test_cache and test_journal: what each callback saw, with the
 * result's bytes (to compare answers byte for byte) and its cached flag,
 * and an objective steered through shared memory: per key, what its n-th
 * evaluation does, and how many evaluations there were. */
#ifndef INVOKER_TEST_OUTCOMES_H
#define INVOKER_TEST_OUTCOMES_H

#include "helpers.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OUT_KEYS     4096u
#define OUT_PLAN     8u
#define OUT_RES_MAX  64u

enum { ACT_OK = 0, ACT_CRASH, ACT_HANG, ACT_FAIL, ACT_SLOW, ACT_BIG, ACT_NAP, ACT_SAY };

typedef struct steer {
    _Atomic unsigned evals[OUT_KEYS];
    unsigned char    plan[OUT_KEYS][OUT_PLAN];  /* action of the n-th evaluation */
    unsigned         slow_ms;                   /* ACT_SLOW sleeps this long */
} steer;

/* An argument: a key and filler bytes (so arguments can be long). */
typedef struct targ {
    uint32_t key;
    uint32_t len;       /* filler bytes after it */
    unsigned char fill[200];
} targ;

typedef struct seen {
    int      results, errors, cached;
    invoker_failure failure;
    int      code;
    unsigned attempts;
    int      worker;
    double   run_seconds, cpu_seconds;
    long     max_rss_kib;
    bool     tail;      /* stderr_tail non-NULL or stderr_tail_len non-zero */
    size_t   len;
    unsigned char res[OUT_RES_MAX];
} seen;

typedef struct outcomes {
    seen    *s;
    size_t   cap;
    size_t   calls;
    invoker *inv;
    void   (*hook)(struct outcomes *o, const invoker_task *t);
    void    *ctx;
} outcomes;

static inline steer *steer_map(void)
{
    steer *st = shared_map(sizeof *st);
    memset(st, 0, sizeof *st);
    return st;
}

static inline size_t targ_size(const targ *a)
{
    return offsetof(targ, fill) + a->len;
}

static inline targ targ_make(uint32_t key, uint32_t len)
{
    targ a;
    memset(&a, 0, sizeof a);
    a.key = key;
    a.len = len;
    fill_pattern(a.fill, len, key);
    return a;
}

/* The result a key's evaluation gives: 40 bytes from the key. */
static inline void expected_result(uint32_t key, unsigned char out[40])
{
    fill_pattern(out, 40, 0x1000u + key);
}

static inline int steered(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    steer *st = ctx;
    targ a;
    if (len < offsetof(targ, fill) || len > sizeof a)
        return 77;
    memcpy(&a, arg, len);
    if (a.key >= OUT_KEYS)
        return 78;
    unsigned n = atomic_fetch_add(&st->evals[a.key], 1);
    switch (st->plan[a.key][n < OUT_PLAN ? n : OUT_PLAN - 1]) {
    case ACT_CRASH:
        raise(SIGKILL);
        break;
    case ACT_HANG:
        for (;;)
            pause();
    case ACT_FAIL:
        return 40 + (int)(a.key % 50);
    case ACT_SLOW:
        usleep(st->slow_ms * 1000u);
        break;
    case ACT_NAP:
        usleep(50);
        break;
    case ACT_SAY:   /* a line on stderr, then as ACT_SLOW */
        if (write(2, "said\n", 5) != 5)
            return 79;
        usleep(st->slow_ms * 1000u);
        break;
    case ACT_BIG: {
        static unsigned char big[8192];
        memset(big, (int)a.key, sizeof big);
        return invoker_result_write(out, big, sizeof big);
    }
    default:
        break;
    }
    unsigned char r[40];
    expected_result(a.key, r);
    return invoker_result_write(out, r, sizeof r);
}

static inline seen *seen_get(outcomes *o, invoker_id id)
{
    assert_true(id > 0 && id < o->cap);
    return &o->s[id];
}

/* What the callback's task view says of the run (or of none). */
static inline void seen_task(seen *s, const invoker_task *t)
{
    s->cached = t->cached;
    s->attempts = t->attempts;
    s->worker = t->worker;
    s->run_seconds = t->run_seconds;
    s->cpu_seconds = t->cpu_seconds;
    s->max_rss_kib = t->max_rss_kib;
    s->tail = t->stderr_tail != NULL || t->stderr_tail_len != 0;
}

static inline void seen_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    outcomes *o = user;
    seen *s = seen_get(o, t->id);
    s->results++;
    seen_task(s, t);
    s->len = len;
    memcpy(s->res, res, len < OUT_RES_MAX ? len : OUT_RES_MAX);
    if (len)
        assert_true(((uintptr_t)res & 15u) == 0);
    o->calls++;
    if (o->hook)
        o->hook(o, t);
}

static inline void seen_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    outcomes *o = user;
    seen *s = seen_get(o, t->id);
    s->errors++;
    s->failure = f;
    s->code = code;
    seen_task(s, t);
    o->calls++;
    if (o->hook)
        o->hook(o, t);
}

static inline void outcomes_init(outcomes *o, size_t cap)
{
    memset(o, 0, sizeof *o);
    o->cap = cap;
    o->s = calloc(cap, sizeof *o->s);
    assert_non_null(o->s);
}

static inline void outcomes_config(outcomes *o, invoker_config *cfg, steer *st, unsigned workers)
{
    invoker_config_init(cfg);
    cfg->objective = steered;
    cfg->objective_ctx = st;
    cfg->on_result = seen_result;
    cfg->on_error = seen_error;
    cfg->user = o;
    cfg->workers = workers;
}

/* The task saw key's own result, whole. */
static inline void assert_answer(const seen *s, uint32_t key)
{
    unsigned char r[40];
    expected_result(key, r);
    assert_int_equal(s->results, 1);
    assert_int_equal(s->errors, 0);
    assert_int_equal(s->len, sizeof r);
    assert_memory_equal(s->res, r, sizeof r);
}

static inline invoker_id submit_key(invoker *inv, uint32_t key, uint32_t len, double timeout)
{
    targ a = targ_make(key, len);
    invoker_id id = 0;
    assert_int_equal(invoker_submit_timeout(inv, &a, targ_size(&a), NULL, timeout, &id), 0);
    return id;
}

#endif

/*
 * Shared by the MPI scenarios: checks on rank 0 that end the whole job
 * with a non-zero status when they fail (a rank 0 that just returned would
 * leave the serving ranks waiting), and a record of every callback.
 */
#ifndef INVOKER_MPI_TEST_COMMON_H
#define INVOKER_MPI_TEST_COMMON_H

#include <invoker_mpi.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
            fflush(stderr);                                                           \
            MPI_Abort(MPI_COMM_WORLD, 2);                                             \
        }                                                                             \
    } while (0)

typedef struct outcome {
    unsigned calls;               /* callbacks for this task: must end at 1 */
    int      ok;
    invoker_failure fail;
    int      code;
    int      worker;
    unsigned attempts;
    uint64_t value;               /* the result, for tests that send one */
    double   at;                  /* seconds since start, at the callback */
    char     tail[64];            /* the start of its stderr tail */
    size_t   tail_len;            /* the whole tail's length */
} outcome;

static inline void rec_tail(outcome *o, const invoker_task *t)
{
    o->tail_len = t->stderr_tail_len;
    size_t n = t->stderr_tail_len < sizeof o->tail - 1 ? t->stderr_tail_len : sizeof o->tail - 1;
    if (n)
        memcpy(o->tail, t->stderr_tail, n);
    o->tail[n] = 0;
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Tags are indexes into an outcome array (user). */
static inline void rec_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    outcome *o = (outcome *)user + (uintptr_t)t->tag;
    o->calls++;
    o->ok = 1;
    o->worker = t->worker;
    o->attempts = t->attempts;
    o->at = now_s();
    rec_tail(o, t);
    if (len == sizeof o->value)
        memcpy(&o->value, res, sizeof o->value);
    else
        o->value = UINT64_MAX;
}

static inline void rec_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    outcome *o = (outcome *)user + (uintptr_t)t->tag;
    o->calls++;
    o->ok = 0;
    o->fail = f;
    o->code = code;
    o->worker = t->worker;
    o->attempts = t->attempts;
    o->at = now_s();
    rec_tail(o, t);
}

/* The uint64_t most scenarios send as their argument: 0 when it is not
 * one (their objective then fails with code 99). */
static inline int arg_u64(const void *arg, size_t len, uint64_t *x)
{
    if (len != sizeof *x)
        return 0;
    memcpy(x, arg, sizeof *x);
    return 1;
}

/* The config every scenario starts from: outcomes recorded in outs. */
static inline void scenario_config(invoker_config *cfg, invoker_objective_fn objective,
                                   outcome *outs, unsigned retries)
{
    invoker_config_init(cfg);
    cfg->objective = objective;
    cfg->on_result = rec_result;
    cfg->on_error = rec_error;
    cfg->user = outs;
    cfg->retries = retries;
}

/* invoker_mpi_create with rank 0 coordinating only and workers on each
 * serving rank; its return value (INVOKER_MPI_SERVED: return from main). */
static inline int scenario_create(invoker **inv, const invoker_config *cfg, unsigned workers,
                                  double rank_timeout, int *argc, char ***argv)
{
    invoker_mpi_options opt;
    invoker_mpi_options_init(&opt);
    opt.workers_per_rank = workers;
    opt.rank0_workers = 0;
    opt.rank_timeout = rank_timeout;
    return invoker_mpi_create(inv, cfg, &opt, argc, argv);
}

#endif

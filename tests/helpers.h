/* Shared by the tests: a recording fixture, descriptor and child checks. */
#ifndef INVOKER_TEST_HELPERS_H
#define INVOKER_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

#include "invoker.h"

/* 1 in an AddressSanitizer build: its allocator and its address-space
 * reservations make some tests meaningless there. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* What the callbacks saw, indexed by task id. */
typedef struct rec_task {
    int      results, errors;   /* callbacks made for this id */
    invoker_failure failure;
    int      code;
    unsigned attempts;
    int      worker;
    double   run_seconds;
    size_t   result_len;
    uint64_t result_sum;        /* sum of result bytes, to check content */
    void    *tag;
    double   reported_at;       /* monotonic seconds */
} rec_task;

typedef struct recorder {
    rec_task *tasks;
    size_t    cap;
    size_t    results, errors;
    invoker  *inv;              /* for callbacks that call back in */
    int     (*on_result_hook)(struct recorder *r, const invoker_task *t, const void *res, size_t len);
    void     *hook_ctx;
} recorder;

void     rec_init(recorder *r, size_t cap);
void     rec_free(recorder *r);
rec_task *rec_get(recorder *r, invoker_id id);
void     rec_on_result(const invoker_task *t, const void *res, size_t len, void *user);
void     rec_on_error(const invoker_task *t, invoker_failure f, int code, void *user);
/* A config with the recorder's callbacks and this objective. */
void     rec_config(recorder *r, invoker_config *cfg, invoker_objective_fn objective, unsigned workers);

double   now_seconds(void);
int      count_open_fds(void);
/* Every descriptor >= 3 of this process has FD_CLOEXEC. */
int      all_fds_cloexec(void);
/* State letter (R, S, Z, ...) and parent of pid from /proc/PID/stat;
 * 0 when there is no such process. */
char     proc_state(pid_t pid, pid_t *ppid);
/* Children of this process, alive or zombie. */
int      count_children(void);
/* 64-bit sum of bytes: a cheap content check. */
uint64_t byte_sum(const void *p, size_t len);
/* Deterministic bytes for a task: content depends on seed and index. */
void     fill_pattern(void *p, size_t len, uint64_t seed);



/* Multiplier for latency bounds: 1 normally, larger under valgrind
 * (INVOKER_UNDER_VALGRIND set), where everything runs ~20x slower. */
double slack(void);
/* Invokers alive in the running test: a failed assertion jumps out of the
 * test, and a teardown calling destroy_leftovers() destroys what it left
 * (with its callbacks muted), so the next test starts clean. */
invoker *track(invoker *inv);
int      destroy_tracked(invoker *inv);
void     destroy_leftovers(void);
int      leftovers_teardown(void **state);   /* destroy_leftovers as a cmocka teardown */
/* Callbacks that record nothing. */
void     mute_result(const invoker_task *t, const void *r, size_t l, void *u);
void     mute_error(const invoker_task *t, invoker_failure f, int c, void *u);
/* INVOKER_TEST_FILTER=<glob> runs only the matching tests. */
void     set_filter(void);
void     sleep_us(long us);
/* A MAP_SHARED anonymous mapping: counters every worker sees. */
void    *shared_map(size_t len);

#endif

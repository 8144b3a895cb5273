/*
 * A consumer of the installed library: includes <invoker.h> from the
 * install prefix, links -linvoker, runs a few tasks on two workers and
 * checks the results and the version.  Exits 0 when all is well.
 */
#include <invoker.h>

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define NTASKS 8

struct outcome {
    long results[NTASKS];
    int seen[NTASKS];
    int errors;
};

static int square(const void *arg, size_t arg_len, invoker_result *out, void *ctx)
{
    long x;
    (void)ctx;
    if (arg_len != sizeof x)
        return 1;
    memcpy(&x, arg, sizeof x);
    x *= x;
    return invoker_result_write(out, &x, sizeof x) == 0 ? 0 : 2;
}

static void on_result(const invoker_task *task, const void *result, size_t len, void *user)
{
    struct outcome *o = user;
    /* The tag is the address of the task's slot in o->results. */
    const long *slot = task->tag;
    ptrdiff_t i = slot - o->results;
    if (i < 0 || i >= NTASKS || len != sizeof(long)) {
        o->errors++;
        return;
    }
    memcpy(&o->results[i], result, sizeof(long));
    o->seen[i]++;
}

static void on_error(const invoker_task *task, invoker_failure failure, int code, void *user)
{
    struct outcome *o = user;
    fprintf(stderr, "task %llu failed: %s (%d)\n", (unsigned long long)task->id,
            invoker_failure_name(failure), code);
    o->errors++;
}

int main(void)
{
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", INVOKER_VERSION_MAJOR, INVOKER_VERSION_MINOR,
             INVOKER_VERSION_PATCH);
    if (invoker_version() != INVOKER_VERSION || strcmp(invoker_version_string(), expect) != 0) {
        fprintf(stderr, "version mismatch: header %s (%d), library %s (%d)\n", expect,
                INVOKER_VERSION, invoker_version_string(), invoker_version());
        return 1;
    }

    struct outcome o;
    memset(&o, 0, sizeof o);

    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 2;
    cfg.objective = square;
    cfg.on_result = on_result;
    cfg.on_error = on_error;
    cfg.user = &o;
    cfg.timeout = 30;

    invoker *inv;
    int rc = invoker_create(&inv, &cfg);
    if (rc < 0) {
        fprintf(stderr, "invoker_create: %s\n", invoker_strerror(rc));
        return 1;
    }
    for (long i = 0; i < NTASKS; i++) {
        rc = invoker_submit(inv, &i, sizeof i, &o.results[i], NULL);
        if (rc < 0) {
            fprintf(stderr, "invoker_submit: %s\n", invoker_strerror(rc));
            invoker_destroy(inv);
            return 1;
        }
    }
    rc = invoker_wait(inv);
    if (rc < 0) {
        fprintf(stderr, "invoker_wait: %s\n", invoker_strerror(rc));
        invoker_destroy(inv);
        return 1;
    }

    invoker_stats st;
    invoker_get_stats(inv, &st);
    if (invoker_destroy(inv) != 0)
        return 1;

    int bad = o.errors != 0 || st.submitted != NTASKS || st.succeeded != NTASKS;
    for (long i = 0; i < NTASKS; i++)
        bad |= o.seen[i] != 1 || o.results[i] != i * i;
    if (bad) {
        fprintf(stderr, "wrong results: %d errors, %llu of %d succeeded\n", o.errors,
                (unsigned long long)st.succeeded, NTASKS);
        return 1;
    }
    printf("invoker %s: %d tasks on 2 workers, all correct\n", invoker_version_string(), NTASKS);
    return 0;
}

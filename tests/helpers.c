#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void rec_init(recorder *r, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->cap = cap;
    r->tasks = calloc(cap, sizeof *r->tasks);
    assert_non_null(r->tasks);
}

void rec_free(recorder *r)
{
    free(r->tasks);
    r->tasks = NULL;
}

rec_task *rec_get(recorder *r, invoker_id id)
{
    assert_true(id > 0 && id < r->cap);
    return &r->tasks[id];
}

void rec_on_result(const invoker_task *t, const void *res, size_t len, void *user)
{
    recorder *r = user;
    rec_task *rt = rec_get(r, t->id);
    rt->results++;
    rt->attempts = t->attempts;
    rt->worker = t->worker;
    rt->run_seconds = t->run_seconds;
    rt->result_len = len;
    rt->result_sum = byte_sum(res, len);
    rt->tag = t->tag;
    rt->reported_at = now_seconds();
    r->results++;
    if (len)
        assert_true(((uintptr_t)res & 15u) == 0);
    if (r->on_result_hook)
        r->on_result_hook(r, t, res, len);
}

void rec_on_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    recorder *r = user;
    rec_task *rt = rec_get(r, t->id);
    rt->errors++;
    rt->failure = f;
    rt->code = code;
    rt->attempts = t->attempts;
    rt->worker = t->worker;
    rt->run_seconds = t->run_seconds;
    rt->tag = t->tag;
    rt->reported_at = now_seconds();
    r->errors++;
}

void rec_config(recorder *r, invoker_config *cfg, invoker_objective_fn objective, unsigned workers)
{
    invoker_config_init(cfg);
    cfg->objective = objective;
    cfg->on_result = rec_on_result;
    cfg->on_error = rec_on_error;
    cfg->user = r;
    cfg->workers = workers;
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int count_open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;   /* the directory's own */
}

int all_fds_cloexec(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int ok = 1, self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd <= 2 || fd == self)
            continue;
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            ok = 0;
    }
    closedir(d);
    return ok;
}

char proc_state(pid_t pid, pid_t *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    /* The name may hold spaces and parentheses: fields follow the last ')'. */
    char *cp = strrchr(buf, ')');
    char st = 0;
    int pp = 0;
    if (!cp || sscanf(cp + 1, " %c %d", &st, &pp) != 2)
        return 0;
    if (ppid)
        *ppid = pp;
    return st;
}

int count_children(void)
{
    /* Scan /proc for processes whose parent is us: zombies included. */
    int n = 0;
    pid_t me = getpid();
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        pid_t ppid = 0;
        if (proc_state((pid_t)atoi(e->d_name), &ppid) && ppid == me)
            n++;
    }
    closedir(d);
    return n;
}

uint64_t byte_sum(const void *p, size_t len)
{
    const unsigned char *b = p;
    uint64_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = s * 31 + b[i];
    return s;
}

void fill_pattern(void *p, size_t len, uint64_t seed)
{
    unsigned char *b = p;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)x;
    }
}

double slack(void)
{
    return getenv("INVOKER_UNDER_VALGRIND") ? 20.0 : 1.0;
}

/* Invokers alive in the running test: a failed assertion jumps out of the
 * test, and destroy_leftovers() destroys what it left, so the next test starts
 * clean. */
static invoker *g_track[4];

invoker *track(invoker *inv)
{
    for (unsigned i = 0; i < 4; i++)
        if (!g_track[i]) {
            g_track[i] = inv;
            break;
        }
    return inv;
}

int destroy_tracked(invoker *inv)
{
    for (unsigned i = 0; i < 4; i++)
        if (g_track[i] == inv)
            g_track[i] = NULL;
    return invoker_destroy(inv);
}

void mute_result(const invoker_task *t, const void *r, size_t l, void *u)
{
    (void)t, (void)r, (void)l, (void)u;
}

void mute_error(const invoker_task *t, invoker_failure f, int c, void *u)
{
    (void)t, (void)f, (void)c, (void)u;
}

void destroy_leftovers(void)
{
    for (unsigned i = 0; i < 4; i++)
        if (g_track[i]) {
            /* Its recorder lived in the failed test's frame: no callbacks. */
            g_track[i]->cfg.on_result = mute_result;
            g_track[i]->cfg.on_error = mute_error;
            (void)invoker_destroy(g_track[i]);
            g_track[i] = NULL;
        }
}

int leftovers_teardown(void **state)
{
    (void)state;
    destroy_leftovers();
    return 0;
}

void set_filter(void)
{
    const char *f = getenv("INVOKER_TEST_FILTER");
    if (f && *f)
        cmocka_set_test_filter(f);
}

void sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void *shared_map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

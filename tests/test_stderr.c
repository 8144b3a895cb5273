/* capture_stderr: each worker's stderr goes through the parent, which
 * forwards it (prefixed "[worker N] " as configured) without ever
 * blocking, and gives each task's callback the last 4 KiB its attempt
 * wrote: the right bytes to the right task, two workers writing at once,
 * tasks batched, timed out, crashed or cancelled; a 100 MiB flood costs
 * nothing but its own task; off, nothing changes. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

enum act { A_LINES = 0, A_FLOOD, A_SAY_HANG, A_SAY_SEGV, A_FDS, A_NOTHING, A_CRASH };
typedef struct { uint32_t act, n, us, seed; } order;

#define FLOOD_BLOCK (64u << 10)
static unsigned char g_flood[FLOOD_BLOCK];   /* periodic: the flood repeats it */

static void say(const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(2, s, len);
        if (n <= 0)
            _exit(70);
        s += n;
        len -= (size_t)n;
    }
}

static size_t line_of(char *buf, size_t cap, uint32_t seed, uint32_t i)
{
    return (size_t)snprintf(buf, cap, "task %u line %u: some words to pad it out\n", seed, i);
}

static int obj(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    order o;
    if (len != sizeof o)
        return 99;
    memcpy(&o, arg, sizeof o);
    char buf[128];
    switch (o.act) {
    case A_LINES:
        for (uint32_t i = 0; i < o.n; i++) {
            say(buf, line_of(buf, sizeof buf, o.seed, i));
            if (o.us)
                sleep_us((long)o.us);
        }
        break;
    case A_FLOOD:
        for (uint32_t i = 0; i < o.n; i++)
            say((const char *)g_flood, sizeof g_flood);
        break;
    case A_SAY_HANG:
    case A_SAY_SEGV: {
        int n = snprintf(buf, sizeof buf, "dying words of %u\n", o.seed);
        say(buf, (size_t)n);
        if (o.act == A_SAY_SEGV)
            raise(SIGSEGV);
        for (int i = 0; i < 3000; i++)
            sleep_us(10000);
        return 98;
    }
    case A_FDS: {   /* (dev, ino, fd) of descriptor 2 and of every one >= 3 */
        for (int fd = 2; fd < 1024; fd++) {
            struct stat st;
            if (fstat(fd, &st) != 0)
                continue;
            uint64_t v[3] = { (uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)fd };
            if (invoker_result_write(out, v, sizeof v) != 0)
                return 97;
        }
        return 0;
    }
    case A_CRASH:
        raise(SIGKILL);
        break;
    default:   /* A_NOTHING */
        if (o.us)
            sleep_us((long)o.us);
        break;
    }
    return invoker_result_write(out, &o.seed, sizeof o.seed);
}

/* ---- what the callbacks saw ---------------------------------------------- */

#define MAXT 1024
static char  *g_tail[MAXT];
static size_t g_tail_len[MAXT];
static int    g_tail_null_with_len;   /* a NULL tail with a length, or the reverse */

static void keep_tail(const invoker_task *t)
{
    if (t->id >= MAXT)
        return;
    if ((t->stderr_tail == NULL) != (t->stderr_tail_len == 0))
        g_tail_null_with_len++;
    free(g_tail[t->id]);
    g_tail[t->id] = NULL;
    g_tail_len[t->id] = t->stderr_tail_len;
    if (t->stderr_tail_len) {
        g_tail[t->id] = malloc(t->stderr_tail_len);
        assert_non_null(g_tail[t->id]);
        memcpy(g_tail[t->id], t->stderr_tail, t->stderr_tail_len);
    }
}

static int tail_hook(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)r, (void)res, (void)len;
    keep_tail(t);
    return 0;
}

static void tail_on_error(const invoker_task *t, invoker_failure f, int code, void *user)
{
    keep_tail(t);
    rec_on_error(t, f, code, user);
}

static void forget_tails(void)
{
    for (int i = 0; i < MAXT; i++) {
        free(g_tail[i]);
        g_tail[i] = NULL;
        g_tail_len[i] = 0;
    }
    g_tail_null_with_len = 0;
}

static int g_init_says;   /* worker_init writes to stderr when set */
static int init_says(unsigned worker, void *ctx)
{
    (void)ctx;
    if (g_init_says) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "worker_init of %u speaking\n", worker);
        say(buf, (size_t)n);
    }
    return 0;
}

static invoker *make(recorder *r, int mode, unsigned workers, void (*tweak)(invoker_config *))
{
    invoker_config cfg;
    rec_init(r, MAXT);
    rec_config(r, &cfg, obj, workers);
    r->on_result_hook = tail_hook;
    cfg.on_error = tail_on_error;
    cfg.worker_init = init_says;
    cfg.capture_stderr = mode;
    if (tweak)
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
    forget_tails();
}

static invoker_id submit(invoker *inv, uint32_t act, uint32_t n, uint32_t us, uint32_t seed,
                         double timeout)
{
    order o = { act, n, us, seed };
    invoker_id id = 0;
    assert_int_equal(invoker_submit_timeout(inv, &o, sizeof o, NULL, timeout, &id), 0);
    return id;
}

/* The last 4 KiB of what A_LINES (n, seed) writes. */
static size_t expected_lines(char *want, size_t cap, uint32_t n, uint32_t seed)
{
    char *all = malloc((size_t)n * 128 + 1);
    assert_non_null(all);
    size_t len = 0;
    for (uint32_t i = 0; i < n; i++)
        len += line_of(all + len, 128, seed, i);
    size_t keep = len < INVOKER__ERR_TAIL ? len : INVOKER__ERR_TAIL;
    assert_true(keep <= cap);
    memcpy(want, all + len - keep, keep);
    free(all);
    return keep;
}

static void assert_tail_is_lines(invoker_id id, uint32_t n, uint32_t seed)
{
    char want[INVOKER__ERR_TAIL];
    size_t len = expected_lines(want, sizeof want, n, seed);
    if (g_tail_len[id] != len || memcmp(g_tail[id], want, len) != 0)
        fail_msg("task %llu: tail of %zu bytes, not the %zu of task %u (%.*s...)",
                 (unsigned long long)id, g_tail_len[id], len, seed,
                 (int)(g_tail_len[id] < 60 ? g_tail_len[id] : 60), g_tail[id] ? g_tail[id] : "");
}

/* ---- tails ------------------------------------------------------------------ */

/* Two workers write lines at once, 0.5 ms apart, 40 tasks of 1 to 120
 * lines (up to 6 KiB: cut to the last 4 KiB); then 300 tasks of one line,
 * short enough to be sent several to a packet.  Every tail is exactly its
 * own task's bytes; worker_init's words are nobody's; a silent task's
 * tail is NULL. */
static void test_each_task_gets_exactly_its_own_stderr_two_workers_at_once(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    g_init_says = 1;
    invoker *inv = make(&r, INVOKER_STDERR_TAIL, 2, NULL);
    invoker_id ids[40];
    for (uint32_t i = 0; i < 40; i++)
        ids[i] = submit(inv, A_LINES, 1 + (i * 37) % 120, 500, 1000 + i, 0);
    invoker_id silent = submit(inv, A_NOTHING, 0, 0, 7, 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (uint32_t i = 0; i < 40; i++)
        assert_tail_is_lines(ids[i], 1 + (i * 37) % 120, 1000 + i);
    assert_int_equal(g_tail_len[silent], 0);
    assert_null(g_tail[silent]);

    invoker_id quick[300];
    for (uint32_t i = 0; i < 300; i++)
        quick[i] = submit(inv, A_LINES, 1, 0, 5000 + i, 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (uint32_t i = 0; i < 300; i++)
        assert_tail_is_lines(quick[i], 1, 5000 + i);
    assert_int_equal(r.results, 341);
    assert_int_equal(g_tail_null_with_len, 0);
    g_init_says = 0;
    finish(&r, fds);
}

/* A task that dies keeps what it wrote: timed out, crashed, cancelled
 * while running; retried, only its last attempt's. */
static void test_failed_tasks_get_their_dying_words(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_TAIL, 3, NULL);
    invoker_id hung = submit(inv, A_SAY_HANG, 0, 0, 11, 0.3);
    invoker_id segv = submit(inv, A_SAY_SEGV, 0, 0, 12, 0);
    invoker_id cancelled = submit(inv, A_SAY_HANG, 0, 0, 13, 0);
    double until = now_seconds() + 10 * slack();
    while (r.errors < 1 && now_seconds() < until)
        assert_true(invoker_poll(inv, 10) >= 0);
    sleep_us(100000);   /* its words written */
    assert_int_equal(invoker_cancel(inv, cancelled), 0);
    assert_int_equal(invoker_wait(inv), 0);
    const char *want[3] = { "dying words of 11\n", "dying words of 12\n", "dying words of 13\n" };
    invoker_id ids[3] = { hung, segv, cancelled };
    invoker_failure fails[3] = { INVOKER_FAIL_TIMEOUT, INVOKER_FAIL_CRASH, INVOKER_FAIL_CANCELLED };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rec_get(&r, ids[i])->failure, fails[i]);
        assert_int_equal(g_tail_len[ids[i]], strlen(want[i]));
        assert_memory_equal(g_tail[ids[i]], want[i], strlen(want[i]));
    }
    finish(&r, fds);
}

static void retry_once(invoker_config *cfg)
{
    cfg->retries = 1;
}

static void test_a_retried_task_gets_its_last_attempts_words(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_TAIL, 1, retry_once);
    invoker_id segv = submit(inv, A_SAY_SEGV, 0, 0, 21, 0);
    assert_int_equal(invoker_wait(inv), 0);
    rec_task *t = rec_get(&r, segv);
    assert_int_equal(t->attempts, 2);
    assert_int_equal(t->failure, INVOKER_FAIL_CRASH);
    const char *want = "dying words of 21\n";   /* once: not the first attempt's too */
    assert_int_equal(g_tail_len[segv], strlen(want));
    assert_memory_equal(g_tail[segv], want, strlen(want));
    finish(&r, fds);
}

/* ---- the flood --------------------------------------------------------------- */

/* The test process's stderr becomes the write end of a pipe nobody reads
 * (so forwarding would block at once), or a file; returns the saved 2. */
static int stderr_to(int fd)
{
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(fcntl(saved, F_SETFD, FD_CLOEXEC), 0);
    assert_int_equal(dup2(fd, 2), 2);
    return saved;
}

static void stderr_back(int saved)
{
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
}

static void three_workers(invoker_config *cfg)
{
    cfg->workers = 3;
}

/* 100 MiB from one task while another worker runs 200 tasks of 2 ms and a
 * third one hangs past a 0.3 s deadline.  Its tail is the last 4 KiB it
 * wrote; the others succeed, each soon after the one before, the deadline
 * is kept; forwarding, into a pipe nobody reads, drops and counts rather
 * than blocks. */
static double g_quick_at[200];
static int note_quick(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)r;
    uint32_t seed;
    if (len == sizeof seed && t->tag == (void *)g_quick_at) {
        memcpy(&seed, res, sizeof seed);
        if (seed < 200)
            g_quick_at[seed] = now_seconds();
    }
    return tail_hook(r, t, res, len);
}

static void test_a_100mib_flood_is_cut_to_4kib_and_costs_nothing_else(void **state)
{
    (void)state;
    int sink[2];
    assert_int_equal(pipe2(sink, O_CLOEXEC), 0);
    int saved = stderr_to(sink[1]);
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_PREFIX, 3, three_workers);
    invoker_id flood = submit(inv, A_FLOOD, 1600, 0, 31, 0);   /* 1600 x 64 KiB */
    invoker_id hung = submit(inv, A_SAY_HANG, 0, 0, 32, 0.3);
    r.on_result_hook = note_quick;
    invoker_id quick[200];
    for (uint32_t i = 0; i < 200; i++) {
        order o = { A_NOTHING, 0, 2000, i };
        assert_int_equal(invoker_submit(inv, &o, sizeof o, g_quick_at, &quick[i]), 0);
    }
    double t0 = now_seconds();
    while (r.results + r.errors < 202) {
        assert_true(invoker_poll(inv, 100) >= 0);
        assert_true(now_seconds() - t0 < 120 * slack());
    }
    double gap = g_quick_at[0] - t0;
    for (int i = 1; i < 200; i++)
        if (g_quick_at[i] - g_quick_at[i - 1] > gap)
            gap = g_quick_at[i] - g_quick_at[i - 1];
    assert_true(gap < 0.25 * slack());
    rec_task *h = rec_get(&r, hung);
    assert_int_equal(h->failure, INVOKER_FAIL_TIMEOUT);
    assert_true(h->run_seconds < 0.3 + 1.5 * slack());
    for (int i = 0; i < 200; i++)
        assert_int_equal(rec_get(&r, quick[i])->results, 1);
    assert_int_equal(rec_get(&r, flood)->results, 1);
    assert_int_equal(g_tail_len[flood], INVOKER__ERR_TAIL);
    assert_memory_equal(g_tail[flood], g_flood + FLOOD_BLOCK - INVOKER__ERR_TAIL,
                        INVOKER__ERR_TAIL);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_true(st.stderr_dropped > (uint64_t)50 << 20);   /* most of it: the pipe was full */
    printf("[ INFO     ] flood: 200 tasks of 2 ms done at %.3f s (longest gap %.1f ms), "
           "flood at %.3f s, %llu bytes dropped\n", g_quick_at[199] - t0, gap * 1e3,
           rec_get(&r, flood)->reported_at - t0, (unsigned long long)st.stderr_dropped);
    finish(&r, fds);
    stderr_back(saved);
    close(sink[0]);
    close(sink[1]);
}

/* ---- forwarding -------------------------------------------------------------- */

static size_t slurp(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    (void)fcntl(fd, F_SETFL, O_NONBLOCK);
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    return len;
}

/* Every line forwarded, in order per task, each prefixed "[worker N] " (N
 * a slot); PLAIN (and TTY, into a pipe) the bytes as written; TAIL none. */
static void forwarded_lines(int mode, bool prefixed)
{
    int sink[2];
    assert_int_equal(pipe2(sink, O_CLOEXEC), 0);
    int saved = stderr_to(sink[1]);
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, mode, 2, NULL);
    for (uint32_t i = 0; i < 6; i++)
        submit(inv, A_LINES, 5, 200, 100 + i, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(r.results, 6);
    finish(&r, fds);
    stderr_back(saved);
    close(sink[1]);
    static char got[1 << 16];
    size_t len = slurp(sink[0], got, sizeof got);
    close(sink[0]);
    if (mode == INVOKER_STDERR_TAIL) {
        assert_int_equal(len, 0);
        return;
    }
    /* Each line: the prefix if asked, then one of the lines written. */
    unsigned lines = 0;
    for (char *p = got, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1, lines++) {
        char *body = p;
        if (prefixed) {
            unsigned w;
            int at = 0;
            assert_int_equal(sscanf(p, "[worker %u] %n", &w, &at), 1);
            assert_true(at > 0 && w < 2);
            body = p + at;
        } else {
            assert_true(strncmp(p, "[worker", 7) != 0);
        }
        unsigned seed, i;
        assert_int_equal(sscanf(body, "task %u line %u:", &seed, &i), 2);
        char want[128];
        size_t wl = line_of(want, sizeof want, seed, i);
        assert_int_equal((size_t)(nl + 1 - body), wl);
        assert_memory_equal(body, want, wl);
    }
    assert_int_equal(lines, 30);
}

static void test_forwarding_prefixes_each_line_with_its_worker(void **state)
{
    (void)state;
    forwarded_lines(INVOKER_STDERR_PREFIX, true);
}

static void test_forwarding_plain_tty_into_a_pipe_and_tail_only(void **state)
{
    (void)state;
    forwarded_lines(INVOKER_STDERR_PLAIN, false);
    forwarded_lines(INVOKER_STDERR_TTY, false);
    forwarded_lines(INVOKER_STDERR_TAIL, false);
}

/* TTY mode into a terminal: prefixed.  The test's stderr becomes a
 * pseudo-terminal (output processing off, so lines stay as written). */
static void test_tty_mode_prefixes_on_a_terminal(void **state)
{
    (void)state;
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
        skip();
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(slave >= 0);
    struct termios tio;
    assert_int_equal(tcgetattr(slave, &tio), 0);
    tio.c_oflag &= ~(tcflag_t)OPOST;
    assert_int_equal(tcsetattr(slave, TCSANOW, &tio), 0);
    int saved = stderr_to(slave);
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_TTY, 1, NULL);
    submit(inv, A_LINES, 2, 0, 55, 0);
    assert_int_equal(invoker_wait(inv), 0);
    finish(&r, fds);
    stderr_back(saved);
    close(slave);
    char got[512], want[512];
    size_t len = slurp(master, got, sizeof got);
    close(master);
    size_t wl = 0;
    for (uint32_t i = 0; i < 2; i++) {
        wl += (size_t)snprintf(want + wl, sizeof want - wl, "[worker 0] ");
        wl += line_of(want + wl, sizeof want - wl, 55, i);
    }
    assert_int_equal(len, wl);
    assert_memory_equal(got, want, wl);
}

/* Into a regular file too (written to descriptor 2 itself). */
static void test_forwarding_into_a_file(void **state)
{
    (void)state;
    char path[] = "/tmp/invoker-stderr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = stderr_to(fd);
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_PREFIX, 1, NULL);
    submit(inv, A_LINES, 3, 0, 77, 0);
    assert_int_equal(invoker_wait(inv), 0);
    finish(&r, fds);
    stderr_back(saved);
    char got[1024];
    ssize_t n = pread(fd, got, sizeof got - 1, 0);
    close(fd);
    assert_true(n > 0);
    got[n] = 0;
    char want[512];
    size_t len = 0;
    for (uint32_t i = 0; i < 3; i++) {
        len += (size_t)snprintf(want + len, sizeof want - len, "[worker 0] ");
        len += line_of(want + len, sizeof want - len, 77, i);
    }
    assert_int_equal((size_t)n, len);
    assert_memory_equal(got, want, len);
}

/* Forwarding goes to descriptor 2 as it was at invoker_create: a file
 * the caller opens at 2 later gets nothing of ours, and a pipe with no
 * reader put there raises no SIGPIPE (it used to: the parent died). */
static void test_forwarding_stays_with_the_stderr_of_create(void **state)
{
    (void)state;
    char path_a[] = "/tmp/invoker-stderr-XXXXXX", path_b[] = "/tmp/invoker-stderr-XXXXXX";
    int fd_a = mkstemp(path_a), fd_b0 = mkstemp(path_b);
    assert_true(fd_a >= 0 && fd_b0 >= 0);
    unlink(path_a);
    int saved = stderr_to(fd_a);
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_PREFIX, 1, NULL);
    assert_int_equal(close(2), 0);
    assert_int_equal(open(path_b, O_WRONLY | O_APPEND | O_CLOEXEC), 2);   /* a file at 2 now */
    unlink(path_b);
    submit(inv, A_LINES, 3, 0, 77, 0);
    assert_int_equal(invoker_wait(inv), 0);
    int dead[2];
    assert_int_equal(pipe2(dead, O_CLOEXEC), 0);
    assert_int_equal(dup2(dead[1], 2), 2);   /* and then a pipe nobody reads */
    close(dead[0]);
    close(dead[1]);
    submit(inv, A_LINES, 3, 0, 78, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(dup2(fd_a, 2), 2);
    finish(&r, fds);
    stderr_back(saved);
    char got[1024];
    assert_int_equal(pread(fd_b0, got, sizeof got, 0), 0);   /* the file at 2: nothing */
    close(fd_b0);
    ssize_t n = pread(fd_a, got, sizeof got - 1, 0);
    close(fd_a);
    char want[512];
    size_t len = 0;
    for (uint32_t seed = 77; seed <= 78; seed++)
        for (uint32_t i = 0; i < 3; i++) {
            len += (size_t)snprintf(want + len, sizeof want - len, "[worker 0] ");
            len += line_of(want + len, sizeof want - len, seed, i);
        }
    assert_int_equal((size_t)n, len);
    assert_memory_equal(got, want, len);
}

/* ---- off, bad values, descriptors ------------------------------------------------ */

/* Off: the workers write to the parent's stderr themselves, the bytes
 * as written (no prefix, no marks), and no task gets a tail. */
static void test_capture_off_changes_nothing(void **state)
{
    (void)state;
    int sink[2];
    assert_int_equal(pipe2(sink, O_CLOEXEC), 0);
    int saved = stderr_to(sink[1]);
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_OFF, 1, NULL);
    assert_null(inv->workers[0].err);
    invoker_id lines = submit(inv, A_LINES, 2, 0, 1, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(rec_get(&r, lines)->results, 1);
    assert_int_equal(g_tail_len[lines], 0);
    assert_null(g_tail[lines]);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.stderr_dropped, 0);
    finish(&r, fds);
    stderr_back(saved);
    close(sink[1]);
    char got[512], want[512];
    size_t len = slurp(sink[0], got, sizeof got);
    close(sink[0]);
    size_t wl = line_of(want, sizeof want, 1, 0);
    wl += line_of(want + wl, sizeof want - wl, 1, 1);
    assert_int_equal(len, wl);
    assert_memory_equal(got, want, wl);
}

static void fd_ids(int fd, uint64_t *dev, uint64_t *ino)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
}

static struct {
    const uint64_t *ids;   /* (dev, ino, fd) triples from A_FDS */
    size_t n;
    int    results;
    unsigned own;          /* capture pipes the worker's 2 is (1 when on) */
} g_fds;

/* In the callback, while the worker that sent it is not yet reaped (its
 * pipe still open in the parent). */
static int keep_fds(recorder *r, const invoker_task *t, const void *res, size_t len)
{
    (void)t;
    if (len < 3 * sizeof(uint64_t) || len % (3 * sizeof(uint64_t)))
        return 0;
    uint64_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, res, len);
    free((void *)g_fds.ids);
    g_fds.ids = copy;
    g_fds.n = len / (3 * sizeof(uint64_t));
    g_fds.results++;
    /* Its 2 is one of the pipes the parent reads; no other descriptor of
     * it is any of them. */
    for (unsigned k = 0; k < r->inv->nrecords; k++) {
        const invoker__errpipe *e = r->inv->workers[k].err;
        if (!e || e->fd < 0)
            continue;
        uint64_t dev, ino;
        fd_ids(e->fd, &dev, &ino);
        for (size_t i = 0; i < g_fds.n; i++) {
            bool match = copy[3 * i] == dev && copy[3 * i + 1] == ino;
            if (match && copy[3 * i + 2] != 2)
                fail_msg("worker fd %llu is a capture pipe", (unsigned long long)copy[3 * i + 2]);
            g_fds.own += match;
        }
    }
    return 0;
}

/* Off: a worker's 2 is the parent's.  On: it is its own capture pipe, no
 * other worker's, and it holds no descriptor >= 3 of any capture pipe;
 * with the fork server and without, replacements (of a crash) included.  Every new
 * descriptor is close-on-exec and all go at destroy. */
static void check_worker_fds(int mode, int fork_server)
{
    recorder r;
    int fds = count_open_fds();
    int cloexec_before = all_fds_cloexec();
    invoker_config cfg;
    rec_init(&r, MAXT);
    rec_config(&r, &cfg, obj, 2);
    r.on_result_hook = keep_fds;
    cfg.capture_stderr = mode;
    cfg.fork_server = fork_server;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    r.inv = track(inv);
    if (cloexec_before)
        assert_true(all_fds_cloexec());
    uint64_t dev2, ino2;
    fd_ids(2, &dev2, &ino2);
    for (int round = 0; round < 4; round++) {
        memset(&g_fds, 0, sizeof g_fds);
        submit(inv, A_FDS, 0, 0, 0, 0);
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(g_fds.results, 1);
        assert_true(g_fds.n >= 1 && g_fds.ids[2] == 2);
        bool same = g_fds.ids[0] == dev2 && g_fds.ids[1] == ino2;
        if (mode == INVOKER_STDERR_OFF) {
            assert_true(same);
        } else {
            assert_false(same);
        }
        assert_int_equal(g_fds.own, mode == INVOKER_STDERR_OFF ? 0 : 1);
        free((void *)g_fds.ids);
        g_fds.ids = NULL;
        submit(inv, A_CRASH, 0, 0, 0, 0);   /* the next round on its replacement */
        assert_int_equal(invoker_wait(inv), 0);
    }
    if (cloexec_before)
        assert_true(all_fds_cloexec());
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(&r);
}

static void test_worker_descriptors_with_capture_on_and_off(void **state)
{
    (void)state;
    check_worker_fds(INVOKER_STDERR_OFF, INVOKER_FORK_SERVER_AUTO);
    check_worker_fds(INVOKER_STDERR_TAIL, INVOKER_FORK_SERVER_AUTO);
    check_worker_fds(INVOKER_STDERR_PREFIX, INVOKER_FORK_SERVER_NEVER);
}

/* 30 tasks on workers replaced after each: every replaced worker's pipe
 * is drained (its task has its words) and closed (the count holds). */
static void one_task_each(invoker_config *cfg)
{
    cfg->max_tasks_per_worker = 1;
}

static void test_replaced_workers_pipes_are_drained_and_closed(void **state)
{
    (void)state;
    recorder r;
    int fds = count_open_fds();
    invoker *inv = make(&r, INVOKER_STDERR_TAIL, 2, one_task_each);
    int created = count_open_fds();
    invoker_id ids[30];
    for (uint32_t i = 0; i < 30; i++)
        ids[i] = submit(inv, A_LINES, 3, 0, 300 + i, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(invoker_poll(inv, 50), 0);   /* the last ones reaped */
    for (uint32_t i = 0; i < 30; i++)
        assert_tail_is_lines(ids[i], 3, 300 + i);
    /* Each slot: a worker and perhaps a spare, 4 descriptors each at
     * most (result pipe, pidfd, go socket, stderr pipe); 28 leaked
     * stderr pipes would be far more. */
    assert_true(count_open_fds() <= created + 8);
    finish(&r, fds);
}

static void test_bad_capture_value_is_einval(void **state)
{
    (void)state;
    int fds = count_open_fds();
    recorder r;
    rec_init(&r, 4);
    const int bad[] = { -1, INVOKER_STDERR_TAIL + 1, 1000 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        invoker_config cfg;
        rec_config(&r, &cfg, obj, 1);
        cfg.capture_stderr = bad[i];
        invoker *inv = NULL;
        assert_int_equal(invoker_create(&inv, &cfg), -EINVAL);
        assert_null(inv);
    }
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(count_children(), 0);
    rec_free(&r);
}

int main(void)
{
    for (size_t i = 0; i < FLOOD_BLOCK; i++)
        g_flood[i] = (unsigned char)('a' + (i * 7 + i / 251) % 26);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_capture_value_is_einval),
        cmocka_unit_test_teardown(test_each_task_gets_exactly_its_own_stderr_two_workers_at_once,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_failed_tasks_get_their_dying_words, leftovers_teardown),
        cmocka_unit_test_teardown(test_a_retried_task_gets_its_last_attempts_words,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_a_100mib_flood_is_cut_to_4kib_and_costs_nothing_else,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_forwarding_prefixes_each_line_with_its_worker,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_forwarding_plain_tty_into_a_pipe_and_tail_only,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_forwarding_into_a_file, leftovers_teardown),
        cmocka_unit_test_teardown(test_forwarding_stays_with_the_stderr_of_create,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_tty_mode_prefixes_on_a_terminal, leftovers_teardown),
        cmocka_unit_test_teardown(test_capture_off_changes_nothing, leftovers_teardown),
        cmocka_unit_test_teardown(test_worker_descriptors_with_capture_on_and_off,
                                  leftovers_teardown),
        cmocka_unit_test_teardown(test_replaced_workers_pipes_are_drained_and_closed,
                                  leftovers_teardown),
    };
    set_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* invoker_command_objective: a program per attempt (tests/cmd_helper.c),
 * its work directories, its failure codes, kill_grace and the forensics
 * (cpu_seconds, max_rss_kib) of every callback. */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CMD_HELPER
#error "CMD_HELPER: the path of cmd_helper, set by tests/CMakeLists.txt"
#endif

/* Every callback, with a copy of the result. */
typedef struct seen {
    int             calls;
    int             ok;
    invoker_failure failure;
    int             code;
    unsigned char  *result;
    size_t          len;
    invoker_task    task;
    double          at;
    char            tail[64];   /* the first bytes of its stderr tail */
    size_t          tail_len;   /* the tail's whole length */
} seen;

static void keep_tail(seen *s, const invoker_task *t)
{
    /* The pointer and the length come together, or neither. */
    assert_int_equal(t->stderr_tail == NULL, t->stderr_tail_len == 0);
    s->tail_len = t->stderr_tail_len;
    size_t n = s->tail_len < sizeof s->tail - 1 ? s->tail_len : sizeof s->tail - 1;
    if (n)
        memcpy(s->tail, t->stderr_tail, n);
    s->tail[n] = 0;
}

typedef struct box {
    seen    s[600];
    invoker *inv;
} box;

static void on_ok(const invoker_task *t, const void *res, size_t len, void *user)
{
    box *b = user;
    seen *s = &b->s[t->id % 600];
    s->calls++;
    s->ok = 1;
    s->task = *t;
    s->at = now_seconds();
    keep_tail(s, t);
    free(s->result);
    s->result = malloc(len + 1);
    assert_non_null(s->result);
    if (len)
        memcpy(s->result, res, len);
    s->result[len] = 0;
    s->len = len;
}

static void on_fail(const invoker_task *t, invoker_failure f, int code, void *user)
{
    box *b = user;
    seen *s = &b->s[t->id % 600];
    s->calls++;
    s->ok = 0;
    s->failure = f;
    s->code = code;
    s->task = *t;
    s->at = now_seconds();
    keep_tail(s, t);
    if (getenv("CMD_DEBUG"))
        fprintf(stderr, "task %llu: %s %d\n", (unsigned long long)t->id,
                invoker_failure_name(f), code);
}

static void box_free(box *b)
{
    for (size_t i = 0; i < 600; i++)
        free(b->s[i].result);
    free(b);
}

/* Empties b, results included. */
static void box_reset(box *b)
{
    for (size_t i = 0; i < 600; i++)
        free(b->s[i].result);
    memset(b->s, 0, sizeof b->s);
}

/* Under ASan (its quarantine keeps freed memory resident) or valgrind (the
 * worker is valgrind), a worker's resident set says little about a task,
 * and a program forked from it starts with the worker's as its peak. */
static int rss_meaningful(void)
{
    return !UNDER_ASAN && !getenv("INVOKER_UNDER_VALGRIND");
}

static char root[256];

/* A fresh work-directory root for each test, removed (empty) at its end. */
static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/invoker-test-cmd-XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.' || (e->d_name[1] && (e->d_name[1] != '.' || e->d_name[2]));
    closedir(d);
    return n;
}

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", path, path);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", path);
}

static int teardown(void **state)
{
    destroy_leftovers();
    rm_rf(root);
    return leftovers_teardown(state);
}

/* Processes running cmd_helper, anywhere (orphans included). */
static int helpers_alive(void)
{
    int n = 0;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    const struct dirent *e;
    char want[4096];
    char *real = realpath(CMD_HELPER, want);
    assert_non_null(real);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], exe[4096];
        snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
        ssize_t len = readlink(path, exe, sizeof exe - 1);
        if (len <= 0)
            continue;
        exe[len] = 0;
        pid_t ppid;
        char st = proc_state((pid_t)atoi(e->d_name), &ppid);
        if (!strcmp(exe, want) && st && st != 'Z')
            n++;
    }
    closedir(d);
    return n;
}

/* Waits up to seconds for no cmd_helper to be left. */
static int helpers_gone_within(double seconds)
{
    double until = now_seconds() + seconds * slack();
    int n;
    while ((n = helpers_alive()) > 0 && now_seconds() < until)
        sleep_us(10000);
    return n;
}

static invoker *make_captured(box *b, invoker_command *cmd, unsigned workers, double timeout,
                              double grace, int capture)
{
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = workers;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = cmd;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.user = b;
    cfg.timeout = timeout;
    cfg.kill_grace = grace;
    cfg.capture_stderr = capture;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    b->inv = track(inv);
    return inv;
}

static invoker *make(box *b, invoker_command *cmd, unsigned workers, double timeout,
                     double grace)
{
    return make_captured(b, cmd, workers, timeout, grace, INVOKER_STDERR_OFF);
}

/* A plain invoker of one worker (or inline) for objective, its outcomes
 * in b: for the tests that need no more. */
static invoker *make_plain(box *b, invoker_objective_fn objective, void *ctx, int inline_mode)
{
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 1;
    cfg.inline_mode = inline_mode;
    cfg.objective = objective;
    cfg.objective_ctx = ctx;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.user = b;
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    return track(inv);
}

static void command(invoker_command *cmd, const char *const *argv)
{
    invoker_command_init(cmd);
    cmd->argv = argv;
    cmd->workdir_root = root;
}

/* ---- results -------------------------------------------------------------- */

static void test_stdin_transform_is_exact_from_0_bytes_to_8_mib(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "invert", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 2, 0, 0);
    const size_t sizes[] = { 0, 1, 4095, 65536, 65537, ((size_t)1 << 20) + 3, (size_t)8 << 20 };
    const size_t n = sizeof sizes / sizeof *sizes;
    unsigned char *args[7];
    invoker_id ids[7];
    for (size_t i = 0; i < n; i++) {
        args[i] = malloc(sizes[i] + 1);
        fill_pattern(args[i], sizes[i], 40 + i);
        assert_int_equal(invoker_submit(inv, args[i], sizes[i], NULL, &ids[i]), 0);
    }
    assert_int_equal(invoker_wait(inv), 0);
    for (size_t i = 0; i < n; i++) {
        seen *s = &b->s[ids[i]];
        assert_int_equal(s->calls, 1);
        assert_int_equal(s->ok, 1);
        assert_int_equal(s->len, sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            if (s->result[j] != (unsigned char)~args[i][j])
                fail_msg("task %zu byte %zu differs", i, j);
        free(args[i]);
    }
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

static void test_input_file_and_output_file_modes(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "invert-files", "in.dat", "out.dat", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    cmd.input = INVOKER_INPUT_FILE;
    cmd.input_name = "in.dat";
    cmd.output_name = "out.dat";
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 2, 0, 0);
    const size_t sizes[] = { 0, 3, 100000, (size_t)3 << 20 };
    unsigned char *args[4];
    invoker_id ids[4];
    for (size_t i = 0; i < 4; i++) {
        args[i] = malloc(sizes[i] + 1);
        fill_pattern(args[i], sizes[i], 7 + i);
        assert_int_equal(invoker_submit(inv, args[i], sizes[i], NULL, &ids[i]), 0);
    }
    /* The default names: "input", and stdout when output_name is NULL. */
    static const char *const argv2[] = { CMD_HELPER, "invert-files", "input", "/dev/stdout", NULL };
    static invoker_command cmd2;
    command(&cmd2, argv2);
    cmd2.input = INVOKER_INPUT_FILE;
    box *b2 = calloc(1, sizeof *b2);
    invoker *inv2 = make(b2, &cmd2, 1, 0, 0);
    invoker_id id2;
    assert_int_equal(invoker_submit(inv2, "abc", 3, NULL, &id2), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(invoker_wait(inv2), 0);
    for (size_t i = 0; i < 4; i++) {
        seen *s = &b->s[ids[i]];
        assert_int_equal(s->ok, 1);
        assert_int_equal(s->len, sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            if (s->result[j] != (unsigned char)~args[i][j])
                fail_msg("task %zu byte %zu differs", i, j);
        free(args[i]);
    }
    assert_int_equal(b2->s[id2].ok, 1);
    assert_int_equal(b2->s[id2].len, 3);
    assert_int_equal(b2->s[id2].result[0], (unsigned char)~'a');
    /* Exit 0 without the output file. */
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(destroy_tracked(inv2), 0);
    static const char *const argv3[] = { CMD_HELPER, "exit", "0", NULL };
    static invoker_command cmd3;
    command(&cmd3, argv3);
    cmd3.output_name = "out.dat";
    box_reset(b);
    inv = make(b, &cmd3, 1, 0, 0);
    invoker_id id3;
    assert_int_equal(invoker_submit(inv, "x", 1, NULL, &id3), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b->s[id3].failure, INVOKER_FAIL_OBJECTIVE);
    assert_int_equal(b->s[id3].code, -ENOENT);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
    box_free(b2);
}

static void test_500_tasks_on_2_workers_leave_no_directory_nor_process(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "mkdirs", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    int fds = count_open_fds();
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 2, 0, 0);
    for (int i = 0; i < 500; i++)
        assert_int_equal(invoker_submit(inv, &i, sizeof i, NULL, NULL), 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.succeeded, 500);
    assert_int_equal(entries(root), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(helpers_gone_within(2), 0);
    assert_int_equal(count_children(), 0);
    assert_int_equal(count_open_fds(), fds);
    box_free(b);
}

/* The argument reaches the program as bytes, on stdin and in argv. */
static void test_shell_metacharacters_and_nul_bytes_arrive_as_bytes(void **state)
{
    (void)state;
    static const char nasty[] = "'; rm -rf ~; ' $(touch pwned) `touch pwned2` a b\nc\0d\0";
    static const char *const argv[] = { CMD_HELPER, "invert", NULL };
    static const char *const argv_args[] = { CMD_HELPER, "args", "'; rm -rf ~; '",
                                             "two words", "new\nline", "$(touch pwned)", "",
                                             NULL };
    static invoker_command cmd, cmd_args;
    command(&cmd, argv);
    command(&cmd_args, argv_args);
    cmd_args.keep_workdir = 2;
    box *b = calloc(1, sizeof *b), *b2 = calloc(1, sizeof *b2);
    invoker *inv = make(b, &cmd, 1, 0, 0);
    invoker *inv2 = make(b2, &cmd_args, 1, 0, 0);
    invoker_id id, id2;
    assert_int_equal(invoker_submit(inv, nasty, sizeof nasty, NULL, &id), 0);
    assert_int_equal(invoker_submit(inv2, NULL, 0, NULL, &id2), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(invoker_wait(inv2), 0);
    seen *s = &b->s[id];
    assert_int_equal(s->ok, 1);
    assert_int_equal(s->len, sizeof nasty);
    for (size_t i = 0; i < sizeof nasty; i++)
        assert_int_equal(s->result[i], (unsigned char)~nasty[i]);
    s = &b2->s[id2];
    assert_int_equal(s->ok, 1);
    size_t off = 0;
    for (int i = 2; argv_args[i]; i++) {
        size_t len;
        assert_true(off + sizeof len <= s->len);
        memcpy(&len, s->result + off, sizeof len);
        off += sizeof len;
        assert_int_equal(len, strlen(argv_args[i]));
        assert_memory_equal(s->result + off, argv_args[i], len);
        off += len;
    }
    assert_int_equal(off, s->len);
    /* Kept (keep_workdir 2): nothing a shell would have made is there. */
    char dir[300], probe[1024];
    snprintf(dir, sizeof dir, "%s", root);
    DIR *d = opendir(root);
    assert_non_null(d);
    const struct dirent *e;
    int kept = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        kept++;
        snprintf(probe, sizeof probe, "%s/%s/pwned", dir, e->d_name);
        assert_int_not_equal(access(probe, F_OK), 0);
    }
    closedir(d);
    assert_int_equal(kept, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(destroy_tracked(inv2), 0);
    box_free(b);
    box_free(b2);
}

/* ---- failure codes --------------------------------------------------------- */

static void test_failure_codes_not_found_not_executable_signal_exit(void **state)
{
    (void)state;
    char noexec[300];
    snprintf(noexec, sizeof noexec, "%s/noexec", root);
    FILE *f = fopen(noexec, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    assert_int_equal(chmod(noexec, 0644), 0);
    static const char *const missing[] = { "/nonexistent/invoker-no-such-program", NULL };
    static const char *const missing_path[] = { "invoker-no-such-program-on-path", NULL };
    const char *const not_exec[] = { noexec, NULL };
    static const char *const segv[] = { CMD_HELPER, "segv", NULL };
    static const char *const three[] = { CMD_HELPER, "exit", "3", NULL };
    const char *const *const argvs[] = { missing, missing_path, not_exec, segv, three };
    const int want[] = { 127, 127, 126, 128 + SIGSEGV, 3 };
    static invoker_command cmds[5];
    box *b = calloc(1, sizeof *b);
    for (int i = 0; i < 5; i++) {
        command(&cmds[i], argvs[i]);
        invoker *inv = make(b, &cmds[i], 1, 0, 0);
        invoker_id id;
        assert_int_equal(invoker_submit(inv, "x", 1, NULL, &id), 0);
        double t0 = now_seconds();
        assert_int_equal(invoker_wait(inv), 0);
        assert_true(now_seconds() - t0 < 5 * slack());   /* never hangs */
        seen *s = &b->s[id];
        assert_int_equal(s->calls, 1);
        assert_int_equal(s->failure, INVOKER_FAIL_OBJECTIVE);
        assert_int_equal(s->code, want[i]);
        /* The worker survived it: the same one runs the next task. */
        invoker_stats st;
        invoker_get_stats(inv, &st);
        assert_int_equal(st.workers_started, 1);
        assert_int_equal(st.crashed, 0);
        assert_int_equal(destroy_tracked(inv), 0);
        box_reset(b);
    }
    assert_int_equal(unlink(noexec), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

static void test_bad_commands_and_arguments_are_refused(void **state)
{
    (void)state;
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.objective = invoker_command_objective;
    cfg.on_result = mute_result;
    cfg.on_error = mute_error;
    const double bad[] = { -1, NAN, INFINITY };
    for (int i = 0; i < 3; i++) {
        cfg.kill_grace = bad[i];
        invoker *inv = (invoker *)&cfg;
        assert_int_equal(invoker_create(&inv, &cfg), -EINVAL);
        assert_ptr_equal(inv, (invoker *)&cfg);   /* untouched */
    }
    assert_int_equal(invoker_current_task(NULL, NULL, NULL, NULL), -EINVAL);
    invoker_command_init(NULL);

    /* Each bad command fails its task with -EINVAL, in the worker. */
    static const char *const ok_argv[] = { CMD_HELPER, "exit", "0", NULL };
    static const char *const empty_argv[] = { NULL };
    static invoker_command cmds[7];
    for (int i = 0; i < 7; i++)
        command(&cmds[i], ok_argv);
    cmds[0].argv = NULL;
    cmds[1].argv = empty_argv;
    cmds[2].input = 3;
    cmds[3].keep_workdir = 3;
    cmds[4].input_name = "../escape";
    cmds[5].output_name = "";
    cmds[6].keep_workdir = -1;
    box *b = calloc(1, sizeof *b);
    for (int i = 0; i < 7; i++) {
        invoker *inv = make(b, &cmds[i], 1, 0, 0);
        invoker_id id;
        assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(b->s[id].failure, INVOKER_FAIL_OBJECTIVE);
        assert_int_equal(b->s[id].code, -EINVAL);
        assert_int_equal(destroy_tracked(inv), 0);
        box_reset(b);
    }
    assert_int_equal(invoker_command_objective(NULL, 0, NULL, &cmds[0]), -EINVAL);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

static void test_output_past_max_result_bytes_is_too_large_and_stops_it(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "flood", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 1;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = &cmd;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.max_result_bytes = (size_t)1 << 20;
    box *b = calloc(1, sizeof *b);
    cfg.user = b;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_TOO_LARGE);
    assert_int_equal(helpers_gone_within(2), 0);   /* stopped, not left flooding */
    assert_int_equal(entries(root), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    box_free(b);
}

/* ---- the work directory, the environment, descriptors ----------------------- */

static const char *line_value(const char *text, const char *name)
{
    static char value[1024];
    const char *p = strstr(text, name);
    assert_non_null(p);
    p += strlen(name);
    size_t n = strcspn(p, "\n");
    assert_true(n < sizeof value);
    memcpy(value, p, n);
    value[n] = 0;
    return value;
}

static void test_environment_has_envp_and_the_invoker_variables(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "env", NULL };
    static const char *const envp[] = { "EXTRA_ONE=1 2", "EXTRA_TWO=", "HANG_ON_FIRST=1",
                                        "INVOKER_WORKER=forged", NULL };
    assert_int_equal(setenv("EXTRA_ONE", "from the parent", 1), 0);
    static invoker_command cmd;
    command(&cmd, argv);
    cmd.envp = envp;
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 2;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = &cmd;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.timeout = 0.5;
    cfg.retries = 1;   /* the first attempt hangs: the second tells its number */
    box *b = calloc(1, sizeof *b);
    cfg.user = b;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    seen *s = &b->s[id];
    assert_int_equal(s->ok, 1);
    const char *out = (const char *)s->result;
    char want[64];
    snprintf(want, sizeof want, "%llu", (unsigned long long)id);
    assert_string_equal(line_value(out, "INVOKER_TASK_ID="), want);
    assert_string_equal(line_value(out, "INVOKER_ATTEMPT="), "2");
    assert_int_equal(s->task.attempts, 2);
    snprintf(want, sizeof want, "%d", s->task.worker);
    assert_string_equal(line_value(out, "INVOKER_WORKER="), want);
    assert_string_equal(line_value(out, "EXTRA_ONE="), "1 2");
    assert_string_equal(line_value(out, "EXTRA_TWO="), "");
    char cwd[1024];
    snprintf(cwd, sizeof cwd, "%s", line_value(out, "cwd="));
    assert_string_equal(line_value(out, "INVOKER_WORKDIR="), cwd);
    assert_int_equal(strncmp(cwd, root, strlen(root)), 0);
    assert_string_equal(line_value(out, "mode="), "700");
    snprintf(want, sizeof want, "-%llu-2", (unsigned long long)id);
    assert_non_null(strstr(cwd, want));   /* named for its task and attempt */
    assert_int_equal(unsetenv("EXTRA_ONE"), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    /* The first attempt's directory, its worker killed, went too. */
    assert_int_equal(entries(root), 0);
    box_free(b);
}

static void test_no_descriptor_leaks_into_the_program(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "fds", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    /* Descriptors of our own, without CLOEXEC even, must stay out too. */
    int stray = open("/dev/null", O_RDONLY);
    assert_true(stray > 2);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 2, 0, 0);
    static invoker_command none;
    command(&none, argv);
    none.input = INVOKER_INPUT_NONE;
    box *b2 = calloc(1, sizeof *b2);
    invoker *inv2 = make(b2, &none, 1, 0, 0);
    invoker_id id, id2;
    assert_int_equal(invoker_submit(inv, "abc", 3, NULL, &id), 0);
    assert_int_equal(invoker_submit(inv2, NULL, 0, NULL, &id2), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(invoker_wait(inv2), 0);
    assert_int_equal(b->s[id].ok, 1);
    assert_string_equal((const char *)b->s[id].result, "0\n1\n2\n");
    assert_string_equal((const char *)b2->s[id2].result, "0\n1\n2\n");
    close(stray);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(destroy_tracked(inv2), 0);
    box_free(b);
    box_free(b2);
}

static void test_keep_workdir_1_keeps_failures_and_2_keeps_all(void **state)
{
    (void)state;
    static const char *const pass[] = { CMD_HELPER, "mkdirs", "0", NULL };
    static const char *const fail3[] = { CMD_HELPER, "mkdirs", "3", NULL };
    for (int keep = 0; keep <= 2; keep++) {
        static invoker_command ok_cmd, bad_cmd;
        command(&ok_cmd, pass);
        command(&bad_cmd, fail3);
        ok_cmd.keep_workdir = bad_cmd.keep_workdir = keep;
        box *b = calloc(1, sizeof *b);
        invoker *ok_inv = make(b, &ok_cmd, 1, 0, 0);
        invoker_id ok_id;
        assert_int_equal(invoker_submit(ok_inv, NULL, 0, NULL, &ok_id), 0);
        assert_int_equal(invoker_wait(ok_inv), 0);
        assert_int_equal(b->s[ok_id].ok, 1);
        assert_int_equal(entries(root), keep == 2);
        box *b2 = calloc(1, sizeof *b2);
        invoker *bad_inv = make(b2, &bad_cmd, 1, 0, 0);
        invoker_id bad_id;
        assert_int_equal(invoker_submit(bad_inv, NULL, 0, NULL, &bad_id), 0);
        assert_int_equal(invoker_wait(bad_inv), 0);
        assert_int_equal(b2->s[bad_id].code, 3);
        assert_int_equal(entries(root), keep == 0 ? 0 : keep == 1 ? 1 : 2);
        if (keep) {   /* what it left is there, links not followed */
            DIR *d = opendir(root);
            const struct dirent *e;
            int trees = 0;
            while ((e = readdir(d)) != NULL) {
                char probe[1024];
                if (e->d_name[0] == '.')
                    continue;
                snprintf(probe, sizeof probe, "%s/%s/a/file", root, e->d_name);
                trees += access(probe, F_OK) == 0;
            }
            closedir(d);
            assert_int_equal(trees, keep);
        }
        assert_int_equal(destroy_tracked(ok_inv), 0);
        assert_int_equal(destroy_tracked(bad_inv), 0);
        rm_rf(root);
        assert_int_equal(mkdir(root, 0700), 0);
        box_free(b);
        box_free(b2);
    }
}

/* ---- timeouts, kill_grace ----------------------------------------------------- */

static void read_pids(const char *path, pid_t *a, pid_t *b)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int x = 0, y = 0;
    assert_int_equal(fscanf(f, "%d %d", &x, &y), 2);
    fclose(f);
    *a = x;
    *b = y;
}

static int gone(pid_t pid)
{
    char st = proc_state(pid, NULL);
    return st == 0 || st == 'Z';
}

/* cmd runs the trap helper (argv) with TRAP_FILE=file (ROOT.flushed,
 * removed first; file holds 400 bytes, env 512) in its environment; env
 * and envp (2 entries) must outlive the invoker. */
static void trap_command(invoker_command *cmd, const char *const *argv, char *file, char *env,
                         const char **envp)
{
    snprintf(file, 400, "%s.flushed", root);
    unlink(file);
    snprintf(env, 512, "TRAP_FILE=%s", file);
    envp[0] = env;
    envp[1] = NULL;
    command(cmd, argv);
    cmd->envp = envp;
}

/* Polls inv until the trap helper has set its trap (it made FILE.ready). */
static void wait_for_trap(invoker *inv, const char *file)
{
    char ready[600];
    snprintf(ready, sizeof ready, "%s.ready", file);
    double until = now_seconds() + 5 * slack();
    while (access(ready, F_OK) != 0 && now_seconds() < until)
        assert_true(invoker_poll(inv, 5) >= 0);
    assert_int_equal(access(ready, F_OK), 0);
    unlink(ready);
}

static void test_timeout_kills_the_program_and_its_grandchild(void **state)
{
    (void)state;
    char pidfile[300];
    snprintf(pidfile, sizeof pidfile, "%s.pids", root);
    const char *const argv[] = { CMD_HELPER, "grandchild", pidfile, NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 1, 0.5, 0);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    seen *s = &b->s[id];
    assert_int_equal(s->failure, INVOKER_FAIL_TIMEOUT);
    pid_t prog, grand;
    read_pids(pidfile, &prog, &grand);
    unlink(pidfile);
    /* Signalled in the pass that reported it: gone within moments. */
    double until = now_seconds() + 1.0 * slack();
    while ((!gone(prog) || !gone(grand)) && now_seconds() < until)
        sleep_us(1000);
    assert_true(gone(prog));
    assert_true(gone(grand));
    /* The work directory of the killed attempt is removed by the parent
     * once it reaps the worker, before any destroy. */
    until = now_seconds() + 1.0 * slack();
    while (entries(root) != 0 && now_seconds() < until)
        assert_true(invoker_poll(inv, 10) >= 0);
    assert_int_equal(entries(root), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    box_free(b);
}

/* One worker runs the trap helper (how: "write" or "ignore") until its
 * timeout (0.3 s), or until cancelled when cancel is set; then a task that
 * exits at once, in the slot's next worker. */
static void run_trap_with(double grace, const char *how, int spares, int cancel, box *b,
                          invoker_id *id, invoker_id *next, char *file, size_t size)
{
    snprintf(file, size, "%s.flushed", root);
    unlink(file);
    char env_entry[512];
    snprintf(env_entry, sizeof env_entry, "TRAP_FILE=%s", file);
    const char *const envp[] = { env_entry, NULL };
    const char *const argv[] = { CMD_HELPER, "trap", how, NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    cmd.envp = envp;
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 1;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = &cmd;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.user = b;
    cfg.timeout = cancel ? 0 : 0.3;
    cfg.kill_grace = grace;
    cfg.spares = spares;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, id), 0);
    if (cancel) {
        wait_for_trap(inv, file);
        assert_int_equal(invoker_cancel(inv, *id), 0);
    }
    while (b->s[*id].calls == 0)
        assert_true(invoker_poll(inv, -1) >= 0);
    char ready[600];
    snprintf(ready, sizeof ready, "%s.ready", file);
    unlink(ready);
    /* The next task, in the replaced slot: told to exit at once. */
    assert_int_equal(invoker_submit(inv, "quick", 5, NULL, next), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(destroy_tracked(inv), 0);
}

static void run_trap(double grace, const char *how, box *b, invoker_id *id, invoker_id *next,
                     char *file, size_t size)
{
    run_trap_with(grace, how, INVOKER_SPARES_AUTO, 0, b, id, next, file, size);
}

static void test_kill_grace_lets_a_trapping_program_flush(void **state)
{
    (void)state;
    char file[400];
    invoker_id id, next;
    box *b = calloc(1, sizeof *b);
    run_trap(2.0, "write", b, &id, &next, file, sizeof file);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_TIMEOUT);
    /* Reported at its deadline, not after the grace. */
    assert_true(b->s[id].task.run_seconds < 0.3 + 0.2 * slack());
    assert_int_equal(b->s[next].ok, 1);
    assert_int_equal(access(file, F_OK), 0);
    unlink(file);
    box_free(b);

    /* Without a grace there is no time to flush: SIGKILL. */
    b = calloc(1, sizeof *b);
    run_trap(0, "write", b, &id, &next, file, sizeof file);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_TIMEOUT);
    assert_int_not_equal(access(file, F_OK), 0);
    box_free(b);
    assert_int_equal(helpers_gone_within(2), 0);
    assert_int_equal(entries(root), 0);
}

static void test_kill_grace_ends_in_sigkill_and_the_slot_waits_for_it(void **state)
{
    (void)state;
    char file[400];
    invoker_id id, next;
    box *b = calloc(1, sizeof *b);
    run_trap(0.6, "ignore", b, &id, &next, file, sizeof file);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(b->s[next].ok, 1);
    /* The slot took its next worker only once the group was gone, after
     * the grace: the next task began no sooner. */
    double gap = b->s[next].at - b->s[id].at;
    assert_true(gap >= 0.5);
    assert_true(gap < 0.6 + 2.0 * slack());
    assert_int_equal(helpers_gone_within(2), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

static void test_kill_grace_on_cancel_and_with_spares_ready(void **state)
{
    (void)state;
    char file[400];
    invoker_id id, next;
    box *b = calloc(1, sizeof *b);
    run_trap_with(2.0, "write", INVOKER_SPARES_ALWAYS, 1, b, &id, &next, file, sizeof file);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_CANCELLED);
    assert_int_equal(b->s[next].ok, 1);
    assert_int_equal(access(file, F_OK), 0);
    unlink(file);
    box_free(b);
    /* A spare waiting does not take the slot before the group is gone. */
    b = calloc(1, sizeof *b);
    run_trap_with(0.6, "ignore", INVOKER_SPARES_ALWAYS, 0, b, &id, &next, file, sizeof file);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(b->s[next].ok, 1);
    assert_true(b->s[next].at - b->s[id].at >= 0.5);
    box_free(b);
    assert_int_equal(helpers_gone_within(2), 0);
    assert_int_equal(entries(root), 0);
}

/* A program trapping SIGTERM (how: "write", or "shout" to flush 256 KiB to
 * stderr first) is running when invoker_destroy comes, with a grace: it
 * flushes and exits, and destroy takes less than the grace. */
static void destroy_during_grace(const char *how, int capture)
{
    char file[400], env_entry[512];
    const char *envp[2];
    static const char *argv[4];
    argv[0] = CMD_HELPER;
    argv[1] = "trap";
    argv[2] = how;
    argv[3] = NULL;
    static invoker_command cmd;
    trap_command(&cmd, argv, file, env_entry, envp);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make_captured(b, &cmd, 1, 0, 2.0, capture);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    wait_for_trap(inv, file);
    double t0 = now_seconds();
    assert_int_equal(destroy_tracked(inv), 0);
    assert_true(now_seconds() - t0 < 1.5 * slack());   /* it exited: no full grace */
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_SHUTDOWN);
    assert_int_equal(access(file, F_OK), 0);
    unlink(file);
    assert_int_equal(helpers_gone_within(2), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

static void test_destroy_gives_running_programs_the_grace(void **state)
{
    (void)state;
    destroy_during_grace("write", INVOKER_STDERR_OFF);
}

/* ---- captured stderr ----------------------------------------------------------- */

/* The program's descriptor 2 is the worker's capture pipe: what it writes
 * is its task's tail, exactly, with two workers running programs at once
 * (the worker's mark follows the program's bytes, before the result). */
static void test_a_programs_stderr_is_its_tasks_tail(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "say", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make_captured(b, &cmd, 2, 0, 0, INVOKER_STDERR_TAIL);
    enum { N = 40 };
    invoker_id ids[N];
    for (int i = 0; i < N; i++) {
        char arg[16];
        int len = snprintf(arg, sizeof arg, "n%d", i);
        assert_int_equal(invoker_submit(inv, arg, (size_t)len, NULL, &ids[i]), 0);
    }
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < N; i++) {
        seen *s = &b->s[ids[i] % 600];
        assert_int_equal(s->calls, 1);
        assert_int_equal(s->ok, 1);
        assert_string_equal((const char *)s->result, "ok");
        char want[64];
        int len = snprintf(want, sizeof want, "task %llu says n%d\n",
                           (unsigned long long)ids[i], i);
        assert_int_equal(s->tail_len, (size_t)len);
        assert_string_equal(s->tail, want);
    }
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

/* The command objective with a journal: a rerun (another invoker on the
 * same file, as after the optimizer was killed) answers the program runs
 * already paid for without starting the program (no new work directory),
 * with their bytes, cached and none of the forensics of a run: attempts 0,
 * worker -1, cpu 0, rss -1 and no stderr tail, though the run it replays
 * wrote one.  A new argument still runs. */
static invoker *make_journaled(box *b, invoker_command *cmd, const char *journal)
{
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 2;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = cmd;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.user = b;
    cfg.capture_stderr = INVOKER_STDERR_TAIL;
    cfg.journal = journal;
    cfg.journal_key = "say v1";
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    b->inv = track(inv);
    return inv;
}

static void test_journal_answers_a_rerun_without_running_the_program(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "say", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    cmd.keep_workdir = 2;   /* one directory per program run, counted */
    char journal[300];
    snprintf(journal, sizeof journal, "%s.journal", root);
    static const char *const args[] = { "a", "bb", "ccc", "dddd" };
    box *b = calloc(1, sizeof *b);
    invoker *inv = make_journaled(b, &cmd, journal);
    invoker_id ids[4];
    for (int i = 0; i < 3; i++)
        assert_int_equal(invoker_submit(inv, args[i], strlen(args[i]), NULL, &ids[i]), 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < 3; i++) {
        const seen *s = &b->s[ids[i] % 600];
        assert_int_equal(s->ok, 1);
        assert_false(s->task.cached);
        assert_int_equal(s->task.attempts, 1);
        assert_true(s->tail_len > 0);
    }
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(entries(root), 3);

    box_reset(b);
    inv = make_journaled(b, &cmd, journal);
    for (int i = 0; i < 4; i++)
        assert_int_equal(invoker_submit(inv, args[i], strlen(args[i]), NULL, &ids[i]), 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < 3; i++) {
        const seen *s = &b->s[ids[i] % 600];
        assert_int_equal(s->calls, 1);
        assert_int_equal(s->ok, 1);
        assert_string_equal((const char *)s->result, "ok");
        assert_true(s->task.cached);
        assert_int_equal(s->task.attempts, 0);
        assert_int_equal(s->task.worker, -1);
        assert_true(s->task.cpu_seconds == 0);
        assert_int_equal(s->task.max_rss_kib, -1);
        assert_int_equal(s->tail_len, 0);
    }
    const seen *fresh = &b->s[ids[3] % 600];
    assert_int_equal(fresh->ok, 1);
    assert_false(fresh->task.cached);
    assert_int_equal(fresh->task.attempts, 1);
    assert_true(fresh->tail_len > 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.cached, 3);
    assert_int_equal(st.journaled, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(entries(root), 4);   /* the program ran for "dddd" only */
    assert_int_equal(unlink(journal), 0);
    box_free(b);
}

/* kill_grace with capture: what the program writes before the deadline is
 * the timed-out task's tail; what it writes during the grace is forwarded
 * but no task's (the task was reported at the deadline), not even the next
 * one's in that slot; the dying worker's pipe is drained and closed. */
static void test_kill_grace_with_captured_stderr(void **state)
{
    (void)state;
    char file[400], env_entry[512];
    const char *envp[2];
    static const char *const argv[] = { CMD_HELPER, "trap", "say", NULL };
    static invoker_command cmd;
    trap_command(&cmd, argv, file, env_entry, envp);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(fcntl(saved, F_SETFD, FD_CLOEXEC), 0);
    assert_int_equal(dup2(p[1], 2), 2);
    int fds = count_open_fds();
    box *b = calloc(1, sizeof *b);
    invoker *inv = make_captured(b, &cmd, 1, 0.3, 2.0, INVOKER_STDERR_PLAIN);
    invoker_id id, next;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    while (b->s[id].calls == 0)
        assert_true(invoker_poll(inv, -1) >= 0);
    /* The next task runs in the slot's next worker, once the old one
     * flushed and is gone. */
    assert_int_equal(invoker_submit(inv, "quick", 5, NULL, &next), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    close(p[1]);
    char out[4096];
    size_t len = 0;
    ssize_t n;
    while ((n = read(p[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = 0;
    close(p[0]);

    assert_int_equal(b->s[id].failure, INVOKER_FAIL_TIMEOUT);
    assert_string_equal(b->s[id].tail, "before the deadline\n");
    assert_int_equal(b->s[next].ok, 1);
    assert_int_equal(b->s[next].tail_len, 0);
    assert_non_null(strstr(out, "before the deadline\n"));
    assert_non_null(strstr(out, "during the grace\n"));
    assert_int_equal(access(file, F_OK), 0);
    unlink(file);
    char ready[600];   /* the trap was set: not waited for, but made */
    snprintf(ready, sizeof ready, "%s.ready", file);
    assert_int_equal(unlink(ready), 0);
    assert_int_equal(helpers_gone_within(2), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

/* invoker_destroy's grace with capture: the parent reads the pipes while
 * it waits, so a program flushing more than a pipe holds to stderr in its
 * SIGTERM handler finishes (without the reads it would block until the
 * SIGKILL, its file unwritten, destroy taking the whole grace). */
static void test_destroy_grace_reads_a_flushing_programs_stderr(void **state)
{
    (void)state;
    destroy_during_grace("shout", INVOKER_STDERR_TAIL);
}

/* ---- forensics ------------------------------------------------------------------ */

static void assert_near(double got, double want, double rel)
{
    if (fabs(got - want) > rel * want)
        fail_msg("%.4f is not within %.0f%% of %.4f", got, rel * 100, want);
}

static void test_forensics_of_a_program_burning_cpu_and_memory(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "burn", "-", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 1, 0, 0);
    invoker_id id, id2;
    assert_int_equal(invoker_submit(inv, "0.5 100", 7, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    /* The same worker next: its peak is its own. */
    assert_int_equal(invoker_submit(inv, "0.05 1", 6, NULL, &id2), 0);
    assert_int_equal(invoker_wait(inv), 0);
    seen *s = &b->s[id];
    assert_int_equal(s->ok, 1);
    double cpu;
    long rss;
    assert_int_equal(sscanf((const char *)s->result, "%lf %ld", &cpu, &rss), 2);
    assert_true(cpu >= 0.5);
    assert_true(rss >= 100 * 1024);
    /* What the program says it used, seen by the callback. */
    assert_near(s->task.cpu_seconds, cpu, 0.2);
    assert_near((double)s->task.max_rss_kib, (double)rss, 0.2);
    seen *s2 = &b->s[id2];
    assert_int_equal(s2->ok, 1);
    assert_true(s2->task.cpu_seconds >= 0.04 && s2->task.cpu_seconds < 0.3 * slack());
    assert_true(s2->task.max_rss_kib > 0);
    if (rss_meaningful())
        assert_true(s2->task.max_rss_kib < 50 * 1024);
    assert_int_equal(destroy_tracked(inv), 0);
    box_free(b);
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* cpu_limit is the program's own budget, not what the worker's limit
 * leaves: 1 s, where the inherited limit would give it 2 s or more. */
static void test_cpu_limit_applies_to_the_program(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "burn", "-", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    box *b = calloc(1, sizeof *b);
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 1;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = &cmd;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.user = b;
    cfg.cpu_limit = 1;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, "30 1", 4, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    const seen *s = &b->s[id];
    assert_int_equal(s->failure, INVOKER_FAIL_OBJECTIVE);
    assert_int_equal(s->code, 128 + SIGXCPU);
    if (s->task.cpu_seconds < 0.8 || s->task.cpu_seconds > 1.6)
        fail_msg("the program burnt %.3f s of CPU under a 1 s limit", s->task.cpu_seconds);
    assert_int_equal(destroy_tracked(inv), 0);
    box_free(b);
}

/* Reported at its deadline, a running program is measured from /proc. */
static void test_forensics_of_a_timed_out_program(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "burn", "-", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 1, 1.0, 0);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, "60 64", 5, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    const seen *s = &b->s[id];
    assert_int_equal(s->failure, INVOKER_FAIL_TIMEOUT);
    /* Its 64 MiB were touched at once; its CPU is most of its second
     * (bounded loosely: the machine may be loaded). */
    if (rss_meaningful())
        assert_true(s->task.max_rss_kib >= 64 * 1024);
    if (s->task.cpu_seconds < 0.1 || s->task.cpu_seconds > 1.25 * s->task.run_seconds + 0.05)
        fail_msg("cpu %.3f for %.3f s", s->task.cpu_seconds, s->task.run_seconds);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(helpers_gone_within(2), 0);
    box_free(b);
}

/* A C objective: the worker's own usage, per task. */
static int obj_burn(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    (void)out;
    int what = len == sizeof(int) ? *(const int *)arg : 0;
    size_t bytes = what == 1 ? (size_t)100 << 20 : (size_t)1 << 20;
    unsigned char *p = malloc(bytes);
    if (!p)
        return 1;
    for (size_t i = 0; i < bytes; i += 4096)
        p[i] = 1;
    /* By CPU time, so that a loaded machine cannot make it burn less. */
    double until = cpu_now() + (what == 2 ? 60 : 0.3);
    volatile unsigned long spin = 0;
    while (cpu_now() < until)
        spin++;
    if (what == 3)
        raise(SIGSEGV);
    invoker_id id = 0;
    unsigned attempt = 0, worker = 9;
    if (invoker_current_task(out, &id, &attempt, &worker) != 0)
        return 2;
    int rc = invoker_result_write(out, &id, sizeof id);
    rc |= invoker_result_write(out, &attempt, sizeof attempt);
    rc |= invoker_result_write(out, &worker, sizeof worker);
    free(p);
    return rc ? 3 : what == 4 ? 4 : 0;
}

static void test_forensics_of_every_callback_success_and_failure(void **state)
{
    (void)state;
    box *b = calloc(1, sizeof *b);
    invoker *inv = make_plain(b, obj_burn, NULL, 0);
    const int kinds[] = { 1, 0, 4, 3, 2 };   /* 100 MiB, 1 MiB, exit code, crash, hang */
    invoker_id ids[5];
    for (int i = 0; i < 5; i++)
        assert_int_equal(invoker_submit_timeout(inv, &kinds[i], sizeof kinds[i], NULL,
                                                kinds[i] == 2 ? 0.6 : 0, &ids[i]), 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < 5; i++) {
        const invoker_task *t = &b->s[ids[i]].task;
        /* 0.3 s of CPU burnt; the hung one's share of its 0.6 s depends on
         * the machine's load.  TIMEOUT's figure is counted in clock ticks,
         * which run ahead of the exact count under load (see cpu_limit): a
         * bound, not a match. */
        double least = kinds[i] == 2 ? 0.05 : 0.3;
        if (t->cpu_seconds < least || t->cpu_seconds > 1.25 * t->run_seconds + 0.05)
            fail_msg("task %d: cpu %.3f for %.3f s", i, t->cpu_seconds, t->run_seconds);
    }
    const invoker_task *big = &b->s[ids[0]].task, *smallt = &b->s[ids[1]].task;
    assert_true(big->max_rss_kib >= 100 * 1024);
    /* Per attempt: the worker's 100 MiB peak of the task before is not its. */
    assert_true(smallt->max_rss_kib > 0);
    if (rss_meaningful())
        assert_true(smallt->max_rss_kib < big->max_rss_kib - 50 * 1024);
    assert_int_equal(b->s[ids[2]].failure, INVOKER_FAIL_OBJECTIVE);
    assert_true(b->s[ids[2]].task.max_rss_kib > 0);
    assert_int_equal(b->s[ids[3]].failure, INVOKER_FAIL_CRASH);
    assert_true(b->s[ids[3]].task.max_rss_kib > 0);
    if (rss_meaningful())   /* from wait4: the peak since its attempt began */
        assert_true(b->s[ids[3]].task.max_rss_kib < big->max_rss_kib - 50 * 1024);
    assert_int_equal(b->s[ids[4]].failure, INVOKER_FAIL_TIMEOUT);
    assert_true(b->s[ids[4]].task.max_rss_kib > 0);
    /* invoker_current_task: the task's own id, attempt and slot. */
    const seen *s = &b->s[ids[1]];
    invoker_id got;
    unsigned attempt, worker;
    assert_int_equal(s->len, sizeof got + 2 * sizeof attempt);
    memcpy(&got, s->result, sizeof got);
    memcpy(&attempt, s->result + sizeof got, sizeof attempt);
    memcpy(&worker, s->result + sizeof got + sizeof attempt, sizeof worker);
    assert_int_equal(got, ids[1]);
    assert_int_equal(attempt, 1);
    assert_int_equal(worker, 0);
    assert_int_equal(destroy_tracked(inv), 0);
    box_free(b);
}

/* This thread's CPU, by its own clock. */
static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Burns *arg seconds of this thread's CPU, reading its clock seldom: each
 * read is a point where the scheduler may switch it out. */
static void *spin_thread(void *arg)
{
    double until = thread_cpu_now() + *(const double *)arg;
    volatile unsigned long spin = 0;
    do
        for (int i = 0; i < 1000000; i++)
            spin++;
    while (thread_cpu_now() < until);
    return NULL;
}

/* 1: 0.3 s of CPU on this thread and 0.2 s on another, which ends before
 * this one joins it; each on a CPU of its own where there are two, so
 * that this thread is never switched out (the worker's fast count of its
 * CPU must still see the other's); 2: 0.05 s of CPU, then 0.3 s asleep. */
static int obj_shape(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    (void)out;
    int what = len == sizeof(int) ? *(const int *)arg : 0;
    if (what == 1) {
        static const double share = 0.2;
        cpu_set_t mask, here, there;
        CPU_ZERO(&here);
        CPU_ZERO(&there);
        int cpu = sched_getcpu(), other = -1;
        bool pin = sched_getaffinity(0, sizeof mask, &mask) == 0 && cpu >= 0;
        for (int c = 0; pin && c < CPU_SETSIZE && other < 0; c++)
            if (c != cpu && CPU_ISSET(c, &mask))
                other = c;
        pin = pin && other >= 0;
        if (pin) {
            CPU_SET(cpu, &here);
            CPU_SET(other, &there);
            pin = sched_setaffinity(0, sizeof here, &here) == 0;
        }
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (pin)
            (void)pthread_attr_setaffinity_np(&attr, sizeof there, &there);
        pthread_t th;
        int rc = pthread_create(&th, &attr, spin_thread, (void *)&share);
        pthread_attr_destroy(&attr);
        if (rc == 0) {
            double mine = 0.3;
            spin_thread(&mine);
            pthread_join(th, NULL);
        }
        if (pin)
            (void)sched_setaffinity(0, sizeof mask, &mask);
        return rc != 0;
    }
    double some = 0.05;
    spin_thread(&some);
    struct timespec nap = { 0, 300000000 };
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
        ;
    return 0;
}

/* The worker's CPU is counted whatever the objective does between its
 * start and its end: threads of its own that end before it joins them
 * (their CPU is the process's), a sleep (not CPU at all).  Run one after
 * the other in one worker, each after a task that left it running. */
static void test_forensics_count_threads_and_not_sleep(void **state)
{
    (void)state;
    box *b = calloc(1, sizeof *b);
    invoker *inv = make_plain(b, obj_shape, NULL, 0);
    const int kinds[] = { 2, 2, 1, 2 };
    invoker_id ids[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(invoker_submit(inv, &kinds[i], sizeof kinds[i], NULL, &ids[i]), 0);
    assert_int_equal(invoker_wait(inv), 0);
    for (int i = 0; i < 4; i++) {
        const seen *s = &b->s[ids[i]];
        assert_int_equal(s->ok, 1);
        double cpu = s->task.cpu_seconds, run = s->task.run_seconds;
        if (kinds[i] == 1 && (cpu < 0.45 || cpu > 2 * run + 0.05))
            fail_msg("threads: cpu %.3f for %.3f s (0.5 s burnt)", cpu, run);
        if (kinds[i] == 2 && (run < 0.3 || cpu < 0.04 || cpu > 0.2))
            fail_msg("a nap: cpu %.3f for %.3f s (0.05 s burnt)", cpu, run);
    }
    assert_int_equal(destroy_tracked(inv), 0);
    box_free(b);
}

static int obj_tiny(const void *arg, size_t len, invoker_result *out, void *ctx)
{
    (void)ctx;
    return invoker_result_write(out, arg, len);
}

typedef struct tiny_seen {
    int    held, measured, bad;
} tiny_seen;

static void tiny_ok(const invoker_task *t, const void *res, size_t len, void *user)
{
    (void)res;
    (void)len;
    tiny_seen *s = user;
    if (t->cpu_seconds < 0 || t->cpu_seconds > 0.5 || t->max_rss_kib < -1 || t->max_rss_kib == 0)
        s->bad++;
    else if (t->max_rss_kib == -1)
        s->held++;   /* held for its packet: its run time, no peak */
    else
        s->measured++;
}

/* Tasks of microseconds go in packets; those held for their packet are
 * not measured (their CPU is their run time), the others are. */
static void test_forensics_of_batched_microsecond_tasks(void **state)
{
    (void)state;
    tiny_seen tally = { 0, 0, 0 };
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.workers = 2;
    cfg.objective = obj_tiny;
    cfg.on_result = tiny_ok;
    cfg.on_error = mute_error;
    cfg.user = &tally;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    for (int round = 0; round < 5 && tally.held == 0; round++) {
        for (int i = 0; i < 20000; i++)
            assert_int_equal(invoker_submit(inv, &i, sizeof i, NULL, NULL), 0);
        assert_int_equal(invoker_wait(inv), 0);
    }
    assert_int_equal(tally.bad, 0);
    assert_true(tally.held > 0);
    assert_true(tally.measured > 0);
    assert_int_equal(destroy_tracked(inv), 0);
}

/* inline_mode: the same objective in the calling process, attempt 1. */
static void test_inline_mode_runs_the_program_from_the_caller(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "env", NULL };
    static const char *const three[] = { CMD_HELPER, "exit", "3", NULL };
    static invoker_command cmd, cmd3;
    command(&cmd, argv);
    command(&cmd3, three);
    box *b = calloc(1, sizeof *b);
    invoker_config cfg;
    invoker_config_init(&cfg);
    cfg.inline_mode = 1;
    cfg.objective = invoker_command_objective;
    cfg.objective_ctx = &cmd;
    cfg.on_result = on_ok;
    cfg.on_error = on_fail;
    cfg.user = b;
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b->s[id].ok, 1);
    assert_string_equal(line_value((const char *)b->s[id].result, "INVOKER_ATTEMPT="), "1");
    assert_string_equal(line_value((const char *)b->s[id].result, "INVOKER_WORKER="), "0");
    assert_true(b->s[id].task.max_rss_kib > 0);   /* the program's, from wait4 */
    assert_int_equal(destroy_tracked(inv), 0);
    cfg.objective_ctx = &cmd3;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_OBJECTIVE);
    assert_int_equal(b->s[id].code, 3);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(count_children(), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

/* ---- what a program leaves, and where the root is ---------------------------- */

/* A FIFO where the output file is read fails the attempt (-EINVAL, not a
 * regular file) at once, rather than hang the worker on its open. */
static void test_an_output_fifo_fails_the_attempt_not_the_worker(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "fifo", "out", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    cmd.output_name = "out";
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 1, 20, 0);
    invoker_id id;
    double t0 = now_seconds();
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_OBJECTIVE);
    assert_int_equal(b->s[id].code, -EINVAL);
    assert_true(now_seconds() - t0 < 10 * slack());   /* not the 20 s timeout */
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(entries(root), 0);
    box_free(b);
}

/* A program started from a caller whose descriptor 0 is closed (inline
 * mode) still gets a stdin (/dev/null), not a closed 0. */
static void test_a_program_has_a_stdin_when_the_caller_has_none(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "stdin", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    cmd.input = INVOKER_INPUT_NONE;
    box *b = calloc(1, sizeof *b);
    invoker *inv = make_plain(b, invoker_command_objective, &cmd, 1);
    int saved = fcntl(0, F_DUPFD_CLOEXEC, 3);
    assert_true(saved >= 0);
    close(0);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(dup2(saved, 0), 0);
    close(saved);
    assert_int_equal(b->s[id].ok, 1);
    assert_int_equal(b->s[id].len, 4);
    assert_memory_equal(b->s[id].result, "open", 4);
    assert_int_equal(destroy_tracked(inv), 0);
    box_free(b);
}

/* A relative workdir_root is the one of invoker_create: a timed-out
 * attempt's directory, made by its worker, is removed by the parent
 * after the caller changed directory (it was looked for elsewhere). */
static void test_a_relative_root_is_resolved_at_create(void **state)
{
    (void)state;
    static const char *const argv[] = { CMD_HELPER, "sleep", "60", NULL };
    static invoker_command cmd;
    command(&cmd, argv);
    cmd.workdir_root = "wd";
    cmd.input = INVOKER_INPUT_NONE;
    char here[4096], wd[300];
    assert_non_null(getcwd(here, sizeof here));
    snprintf(wd, sizeof wd, "%s/wd", root);
    assert_int_equal(mkdir(wd, 0700), 0);
    assert_int_equal(chdir(root), 0);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 1, 0.5, 0);
    assert_int_equal(chdir("/"), 0);
    invoker_id id;
    assert_int_equal(invoker_submit(inv, NULL, 0, NULL, &id), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b->s[id].failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(chdir(here), 0);
    assert_int_equal(entries(wd), 0);
    assert_int_equal(rmdir(wd), 0);
    assert_int_equal(helpers_gone_within(5), 0);
    box_free(b);
}

/* A tree the program made unwritable (mode 0 and 0500 directories) is
 * removed all the same.  As root permissions would not stop us: the
 * invoker runs in a child that became nobody. */
static void test_a_read_only_tree_is_removed(void **state)
{
    (void)state;
    char helper[300];
    snprintf(helper, sizeof helper, "%s/helper", root);
    char copy[600];
    snprintf(copy, sizeof copy, "cp '%s' '%s'", CMD_HELPER, helper);
    assert_int_equal(system(copy), 0);
    assert_int_equal(chmod(root, 0777), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(2);
        const char *argv[] = { helper, "rodir", NULL };
        invoker_command cmd;
        invoker_command_init(&cmd);
        cmd.argv = argv;
        cmd.workdir_root = root;
        cmd.input = INVOKER_INPUT_NONE;
        box *b = calloc(1, sizeof *b);
        invoker_config cfg;
        invoker_config_init(&cfg);
        cfg.workers = 1;
        cfg.objective = invoker_command_objective;
        cfg.objective_ctx = &cmd;
        cfg.on_result = on_ok;
        cfg.on_error = on_fail;
        cfg.user = b;
        invoker *inv;
        if (!b || invoker_create(&inv, &cfg) != 0)
            _exit(3);
        invoker_id id;
        if (invoker_submit(inv, NULL, 0, NULL, &id) != 0 || invoker_wait(inv) != 0)
            _exit(4);
        int ok = b->s[id].ok;
        if (invoker_destroy(inv) != 0)
            _exit(5);
        _exit(!ok ? 6 : entries(root) != 1 ? 7 : 0);   /* the helper's copy only */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(unlink(helper), 0);
}

/* A timed-out program that left 100,000 files costs no other deadline:
 * its directory is put aside at once and emptied in slices of the loop
 * (removed in one go, it made the next report 0.2-0.9 s late). */
static void test_a_program_leaving_many_files_delays_no_deadline(void **state)
{
    (void)state;
    static const char *const many[] = { CMD_HELPER, "manyfiles", NULL };
    static invoker_command cmd;
    command(&cmd, many);
    box *b = calloc(1, sizeof *b);
    invoker *inv = make(b, &cmd, 2, 0, 0);
    invoker_id a, c;
    double t0 = now_seconds();
    assert_int_equal(invoker_submit_timeout(inv, "100000", 6, NULL, 3.0 * slack(), &a), 0);
    assert_int_equal(invoker_submit_timeout(inv, "0", 1, NULL, 3.1 * slack(), &c), 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(b->s[a].failure, INVOKER_FAIL_TIMEOUT);
    assert_int_equal(b->s[c].failure, INVOKER_FAIL_TIMEOUT);
    double late = b->s[c].at - (t0 + 3.1 * slack());
    fprintf(stderr, "# the deadline after the mess reported %.1f ms late\n", late * 1e3);
    assert_true(late < 0.1 * slack());
    double until = now_seconds() + 30 * slack();
    while (entries(root) > 0 && now_seconds() < until)   /* emptied in the background */
        assert_true(invoker_poll(inv, 10) >= 0);
    assert_int_equal(entries(root), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(helpers_gone_within(5), 0);
    box_free(b);
}

int main(void)
{
    set_filter();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stdin_transform_is_exact_from_0_bytes_to_8_mib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_input_file_and_output_file_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_500_tasks_on_2_workers_leave_no_directory_nor_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shell_metacharacters_and_nul_bytes_arrive_as_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_codes_not_found_not_executable_signal_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_commands_and_arguments_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_past_max_result_bytes_is_too_large_and_stops_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment_has_envp_and_the_invoker_variables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_descriptor_leaks_into_the_program, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_workdir_1_keeps_failures_and_2_keeps_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_kills_the_program_and_its_grandchild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_grace_lets_a_trapping_program_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_grace_ends_in_sigkill_and_the_slot_waits_for_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_grace_on_cancel_and_with_spares_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_gives_running_programs_the_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_programs_stderr_is_its_tasks_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_answers_a_rerun_without_running_the_program, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_grace_with_captured_stderr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_grace_reads_a_flushing_programs_stderr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forensics_of_a_program_burning_cpu_and_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forensics_of_every_callback_success_and_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forensics_of_a_timed_out_program, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_limit_applies_to_the_program, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_mode_runs_the_program_from_the_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_output_fifo_fails_the_attempt_not_the_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_program_has_a_stdin_when_the_caller_has_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_relative_root_is_resolved_at_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_read_only_tree_is_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_program_leaving_many_files_delays_no_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forensics_of_batched_microsecond_tasks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forensics_count_threads_and_not_sleep, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

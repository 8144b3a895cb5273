/*
 * The external-program objective: one program per attempt, in a work
 * directory of its own, fed and read through pipes the worker polls.  It
 * runs in the worker, except invoker__command_cleanup, which the parent
 * calls for an attempt whose worker died before it could clean up.
 *
 * Why it is built the way it is:
 *   - execvpe, never a shell: an argument is bytes, never a command.
 *   - A CLOEXEC pipe tells the worker how exec went: it reads EOF once the
 *     program runs, or the errno of a failed exec (127/126, as shells say).
 *   - stdin is written and stdout read in one poll loop, both ends
 *     non-blocking: a program that writes before it has read all of its
 *     input (a filter) would deadlock a worker that did one after the other.
 *   - SIGPIPE is blocked while the program runs (a program that does not
 *     read its input would otherwise kill the worker on the first write),
 *     and so is SIGTERM: with kill_grace the group's SIGTERM is for the
 *     program; the worker waits for it to flush and exit, then dies of the
 *     pending SIGTERM when it unblocks it.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

extern char **environ;

#define CHUNK        ((size_t)64 << 10)   /* bytes moved per read or write */
#define TREE_DEPTH   64                    /* deeper work directories are left */
#ifdef NSIG
#define SIGNALS      NSIG
#else
#define SIGNALS      65
#endif

void invoker_command_init(invoker_command *cmd)
{
    if (cmd)
        memset(cmd, 0, sizeof *cmd);
}

/* Drawn from the invoker's key: two invokers (or two runs) never share a
 * directory name.  Not a secret: one who sees a name can tell the next
 * ones (the header says so); mkdir never follows what was planted. */
uint32_t invoker__command_dir_tag(uint64_t key)
{
    return (uint32_t)(invoker__proto_mix(key ^ 0x776f726b646972ull) >> 32);
}

/* A program named by a relative path with a '/' ("./sim") is the caller's,
 * not the work directory's: made absolute before the child's chdir. */
static const char *program_path(const char *prog, char *buf, size_t size)
{
    char cwd[PATH_MAX];
    if (prog[0] == '/' || !strchr(prog, '/') || !getcwd(cwd, sizeof cwd))
        return prog;
    int n = snprintf(buf, size, "%s/%s", cwd, prog);
    return n > 0 && (size_t)n < size ? buf : prog;
}

static const char *root_of(const invoker_command *cmd)
{
    if (cmd->workdir_root && cmd->workdir_root[0])
        return cmd->workdir_root;
    const char *tmp = getenv("TMPDIR");
    return tmp && tmp[0] == '/' ? tmp : "/tmp";
}

/* root made absolute (INVOKER_WORKDIR is), against the current directory. */
static bool absolute(const char *root, char *buf, size_t size)
{
    char cwd[PATH_MAX];
    const char *pre = "", *sep = "";
    if (root[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            return false;
        pre = cwd;
        sep = "/";
    }
    int n = snprintf(buf, size, "%s%s%s", pre, sep, root);
    return n > 0 && (size_t)n < size;
}

char *invoker__command_root(const void *ctx, int *rc)
{
    const invoker_command *cmd = ctx;
    char abs[PATH_MAX];
    *rc = 0;
    if (!cmd || !cmd->argv || !absolute(root_of(cmd), abs, sizeof abs))
        return NULL;   /* an invalid command is refused at each call, as before */
    char *p = strdup(abs);
    if (!p)
        *rc = -ENOMEM;
    return p;
}

bool invoker__command_dir(char *buf, size_t size, const char *root, uint32_t dir_tag,
                          uint64_t id, unsigned attempt)
{
    char abs[PATH_MAX];
    if (!absolute(root, abs, sizeof abs))
        return false;
    int n = snprintf(buf, size, "%s/invoker-%08x-%llu-%u", abs, dir_tag, (unsigned long long)id,
                     attempt);
    return n > 0 && (size_t)n < size;
}

static bool valid_name(const char *name)
{
    return name && name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

static bool valid_command(const invoker_command *cmd)
{
    if (!cmd || !cmd->argv || !cmd->argv[0] || !cmd->argv[0][0])
        return false;
    if (cmd->input < INVOKER_INPUT_STDIN || cmd->input > INVOKER_INPUT_NONE)
        return false;
    if (cmd->keep_workdir < 0 || cmd->keep_workdir > 2)
        return false;
    if (cmd->input_name && !valid_name(cmd->input_name))
        return false;
    return !cmd->output_name || valid_name(cmd->output_name);
}

/* ---- work directories ---------------------------------------------------- */

/* A bound on one removal, in time: the parent removes the directories of
 * attempts whose worker died in slices of its loop (invoker__command_tidy),
 * so that a program that left a million files costs no deadline. */
typedef struct sweep {
    uint64_t until;        /* 0: no bound */
    unsigned steps;
    bool     out_of_time;
} sweep;

static bool time_left(sweep *s)
{
    if (s->until && !s->out_of_time && ++s->steps % 32 == 0 && invoker__now_ns() >= s->until)
        s->out_of_time = true;
    return !s->out_of_time;
}

/* Removes name under the directory parent, whatever the program left in
 * it, never following a link out of it; stops where s runs out. */
static void remove_at(int parent, const char *name, int depth, sweep *s)
{
    if (!time_left(s))
        return;
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
        return;
    if (depth >= TREE_DEPTH)
        return;
    for (int pass = 0; pass < 2; pass++) {
        int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == EACCES && fchmodat(parent, name, S_IRWXU, 0) == 0)
            fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return;
        /* A program may leave a directory its owner cannot write or
         * search (a read-only tree): ours to give back, so made ours. */
        (void)fchmod(fd, S_IRWXU);
        DIR *d = fdopendir(fd);
        if (!d) {
            close(fd);
            return;
        }
        const struct dirent *e;
        while (!s->out_of_time && (e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                remove_at(dirfd(d), e->d_name, depth + 1, s);
        closedir(d);
        if (s->out_of_time)
            return;
        /* Entries removed while reading may hide others: look again. */
        if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno != ENOTEMPTY)
            return;
    }
}

static void remove_dir(const char *path)
{
    sweep s = { 0, 0, false };
    remove_at(AT_FDCWD, path, 0, &s);
}

#define TIDY_SLICE_NS  200000ull    /* of each period, at most */
#define TIDY_PERIOD_NS 2000000ull

/* The directory of an attempt whose worker died: renamed aside at once
 * (one system call), emptied later in slices; where it cannot be renamed,
 * removed now, as it always was. */
void invoker__command_cleanup(invoker *inv, uint64_t id, unsigned attempt)
{
    const invoker_command *cmd = inv->cfg.objective_ctx;
    char dir[PATH_MAX];
    if (!valid_command(cmd) || cmd->keep_workdir != 0 || attempt == 0 ||
        !invoker__command_dir(dir, sizeof dir, inv->command_root ? inv->command_root : root_of(cmd),
                              invoker__command_dir_tag(inv->key), id, attempt))
        return;
    size_t len = strlen(dir) + sizeof ".trash";
    char *aside = malloc(len);
    if (aside && inv->ntrash == inv->trash_cap) {
        unsigned cap = inv->trash_cap ? 2 * inv->trash_cap : 8;
        char **p = realloc(inv->trash, cap * sizeof *p);
        if (p) {
            inv->trash = p;
            inv->trash_cap = cap;
        }
    }
    if (aside && inv->ntrash < inv->trash_cap) {
        snprintf(aside, len, "%s.trash", dir);   /* no work directory has a '.' */
        if (rename(dir, aside) == 0) {
            inv->trash[inv->ntrash++] = aside;
            return;
        }
        if (errno == ENOENT) {   /* its worker had removed it, or never made it */
            free(aside);
            return;
        }
    }
    free(aside);
    remove_dir(dir);
}

uint64_t invoker__command_tidy(invoker *inv, uint64_t now)
{
    /* A slice a period, however many passes the loop makes. */
    if (now < inv->tidy_at)
        return inv->tidy_at;
    sweep s = { now + TIDY_SLICE_NS, 0, false };
    while (inv->ntrash) {
        remove_at(AT_FDCWD, inv->trash[inv->ntrash - 1], 0, &s);
        if (s.out_of_time)
            return inv->tidy_at = now + TIDY_PERIOD_NS;
        free(inv->trash[--inv->ntrash]);   /* removed, or too deep to (left) */
    }
    return UINT64_MAX;
}

void invoker__command_tidy_all(invoker *inv)
{
    while (inv->ntrash) {
        remove_dir(inv->trash[inv->ntrash - 1]);
        free(inv->trash[--inv->ntrash]);
    }
    free(inv->trash);
    inv->trash = NULL;
    inv->trash_cap = 0;
}

/* ---- the program's set-up ------------------------------------------------- */

static bool same_name(const char *entry, const char *name)
{
    size_t n = strcspn(name, "=");
    return strncmp(entry, name, n) == 0 && entry[n] == '=';
}

/* The worker's environment without what envp or we set, then envp, then
 * ours (a name given twice would leave getenv the first).  One block:
 * the array, then our four strings. */
static char **build_env(const invoker_command *cmd, const char *dir, const invoker_result *out)
{
    static const char *const ours[] = { "INVOKER_TASK_ID=", "INVOKER_ATTEMPT=",
                                        "INVOKER_WORKER=", "INVOKER_WORKDIR=" };
    size_t nenv = 0, nextra = 0;
    while (environ && environ[nenv])
        nenv++;
    while (cmd->envp && cmd->envp[nextra])
        nextra++;
    size_t nptr = nenv + nextra + 5;
    size_t text = (size_t)3 * 48 + strlen(dir) + 32;
    char **env = malloc(nptr * sizeof *env + text);
    if (!env)
        return NULL;
    char *own = (char *)(env + nptr);
    size_t n = 0;
    for (size_t i = 0; i < nenv; i++) {
        bool drop = false;
        for (size_t j = 0; j < 4 && !drop; j++)
            drop = same_name(environ[i], ours[j]);
        for (size_t j = 0; j < nextra && !drop; j++)
            drop = same_name(environ[i], cmd->envp[j]);
        if (!drop)
            env[n++] = environ[i];
    }
    for (size_t j = 0; j < nextra; j++) {
        bool drop = false;
        for (size_t i = 0; i < 4 && !drop; i++)
            drop = same_name(cmd->envp[j], ours[i]);
        if (!drop)   /* ours win: they are what the program is told */
            env[n++] = (char *)cmd->envp[j];
    }
    int len = snprintf(own, text, "INVOKER_TASK_ID=%llu", (unsigned long long)out->task_id);
    env[n++] = own;
    own += len + 1, text -= (size_t)len + 1;
    len = snprintf(own, text, "INVOKER_ATTEMPT=%u", out->attempt);
    env[n++] = own;
    own += len + 1, text -= (size_t)len + 1;
    len = snprintf(own, text, "INVOKER_WORKER=%u", out->worker);
    env[n++] = own;
    own += len + 1, text -= (size_t)len + 1;
    snprintf(own, text, "INVOKER_WORKDIR=%s", dir);
    env[n++] = own;
    env[n] = NULL;
    return env;
}

/* A pipe whose ends are not 0, 1 or 2 (a worker whose caller closed its
 * stdin would get fd 0 here), so the child's dup2 onto those never hits
 * its own source. */
static int high_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        if (fds[i] > 2)
            continue;
        int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            int err = -errno;
            close(fds[0]);
            close(fds[1]);
            return err;
        }
        close(fds[i]);
        fds[i] = fd;
    }
    return 0;
}

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : 0;
    close(dfd);
    if (fd < 0)
        return rc;
    rc = invoker__fd_write_all(fd, data, len);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* After exit 0 with output_name: its bytes are the result. */
static int read_file(const char *dir, const char *name, invoker_result *out)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    /* O_NONBLOCK: a FIFO the program left there must not hang the worker;
     * only a regular file is read. */
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    close(dfd);
    if (fd < 0)
        return rc;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    char buf[16384];
    ssize_t n;
    while ((n = invoker__fd_read(fd, buf, sizeof buf)) > 0)
        if ((rc = invoker_result_write(out, buf, (size_t)n)) != 0)
            break;
    if (n < 0)
        rc = -errno;
    close(fd);
    return rc == -EMSGSIZE ? 0 : rc;   /* too large: out says so */
}

/* What the child sends back when it cannot exec: where it failed, and why. */
typedef struct exec_note {
    int stage;   /* 0: set-up (-errno), 1: exec (126/127) */
    int err;
} exec_note;

static void child_fail(int note_fd, int stage) __attribute__((noreturn));
static void child_fail(int note_fd, int stage)
{
    exec_note note = { stage, errno };
    ssize_t n;
    do
        n = write(note_fd, &note, sizeof note);
    while (n < 0 && errno == EINTR);
    _exit(127);
}

/* In the forked child: async-signal-safe calls only (the process that
 * forked may have had threads, in inline_mode). */
static void child_exec(const invoker_command *cmd, const char *prog, const char *dir, char **env,
                       int in_fd, int out_fd, int note_fd, const sigset_t *mask, pid_t worker,
                       double cpu_limit) __attribute__((noreturn));
static void child_exec(const invoker_command *cmd, const char *prog, const char *dir, char **env,
                       int in_fd, int out_fd, int note_fd, const sigset_t *mask, pid_t worker,
                       double cpu_limit)
{
#ifdef __linux__
    /* The worker dies with the parent; its program with the worker. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != worker)
        _exit(127);
#else
    (void)worker;
#endif
    /* Every signal is blocked since the fork: the caller's handlers (inline
     * mode, or an objective's own) must not run here, and exec keeps none. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < SIGNALS; sig++) {
        struct sigaction cur;
        if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &cur) == 0 &&
            cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN)
            (void)sigaction(sig, &dfl, NULL);
    }
    (void)sigaction(SIGPIPE, &dfl, NULL);   /* ignored by the caller: not for the program */
    (void)sigaction(SIGTERM, &dfl, NULL);
    if (in_fd < 0) {
        /* Above 2: opened at a free 0, dup2(0, 0) would keep its CLOEXEC,
         * and the program would start with no stdin. */
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (nul >= 0 && nul < 3) {
            in_fd = fcntl(nul, F_DUPFD_CLOEXEC, 3);
            close(nul);
        } else {
            in_fd = nul;
        }
        if (in_fd < 0)
            child_fail(note_fd, 0);
    }
    if (dup2(in_fd, 0) < 0)
        child_fail(note_fd, 0);
    if (out_fd >= 0 && dup2(out_fd, 1) < 0)
        child_fail(note_fd, 0);
    if (chdir(dir) != 0)
        child_fail(note_fd, 0);
    /* The worker's soft RLIMIT_CPU counts from the worker's own CPU; this
     * process starts from none, so it gets the task's budget itself, in
     * whole seconds rounded up, as the worker's is. */
    struct rlimit cpu;
    if (cpu_limit > 0 && getrlimit(RLIMIT_CPU, &cpu) == 0) {
        rlim_t secs = (rlim_t)cpu_limit;
        if ((double)secs < cpu_limit)
            secs++;
        cpu.rlim_cur = cpu.rlim_max != RLIM_INFINITY && secs > cpu.rlim_max ? cpu.rlim_max : secs;
        (void)setrlimit(RLIMIT_CPU, &cpu);
    }
    /* Only 0, 1 and 2 reach the program: every other descriptor closes at
     * exec (the note's end too, which is how the worker learns it ran). */
    bool marked = false;
#if defined(__linux__) && defined(SYS_close_range)
    marked = syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) == 0;
#endif
    if (!marked) {
        struct rlimit rl;
        long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                       ? (long)rl.rlim_cur : 65536;
        for (long fd = 3; fd < max && fd < (1L << 20); fd++)
            if (fd != note_fd)
                (void)close((int)fd);
    }
    (void)sigprocmask(SIG_SETMASK, mask, NULL);
    execvpe(prog, (char *const *)cmd->argv, env);
    child_fail(note_fd, 1);
}

/* ---- the attempt ----------------------------------------------------------- */

typedef struct io {
    const unsigned char *in;   /* what is left to feed */
    size_t               in_left;
    int                  in_fd, out_fd;
    pid_t                pid;
    bool                 stopped;   /* too large: killed, no more reading */
} io;

static void io_feed(io *s)
{
    while (s->in_left) {
        size_t len = s->in_left < CHUNK ? s->in_left : CHUNK;
        ssize_t n = write(s->in_fd, s->in, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {   /* EPIPE: it stopped reading; the rest is not wanted */
            s->in_left = 0;
            break;
        }
        s->in += n;
        s->in_left -= (size_t)n;
    }
    invoker__fd_close(&s->in_fd);   /* EOF: all of it is there */
}

/* Reads what stdout has now; closes it at its end (or once we stopped). */
static void io_drain(io *s, invoker_result *out)
{
    char buf[16384];
    while (s->out_fd >= 0) {
        ssize_t n = read(s->out_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            invoker__fd_close(&s->out_fd);
            return;
        }
        if (invoker_result_write(out, buf, (size_t)n) != 0) {
            /* Past max_result_bytes (or no memory): stop the program now
             * rather than read what no one will get. */
            (void)kill(s->pid, SIGKILL);
            s->stopped = true;
            invoker__fd_close(&s->out_fd);
            return;
        }
    }
}

static bool exited(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

/* Feeds and reads until the program exits.  Output a grandchild writes
 * after that is not waited for: it may hold the pipe open forever. */
static void io_loop(io *s, invoker_result *out)
{
    int pidfd = invoker__fd_pidfd_open(s->pid);
    for (;;) {
        struct pollfd p[3];
        nfds_t n = 0;
        int in_at = -1, out_at = -1;
        if (s->in_fd >= 0) {
            in_at = (int)n;
            p[n++] = (struct pollfd){ s->in_fd, POLLOUT, 0 };
        }
        if (s->out_fd >= 0) {
            out_at = (int)n;
            p[n++] = (struct pollfd){ s->out_fd, POLLIN, 0 };
        }
        if (pidfd >= 0)
            p[n++] = (struct pollfd){ pidfd, POLLIN, 0 };
        if (n == 0 || (pidfd < 0 && s->in_fd < 0 && s->out_fd < 0))
            break;   /* nothing to move: the caller waits for it */
        int r = poll(p, n, pidfd >= 0 ? -1 : 10);
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0 && in_at >= 0 && p[in_at].revents)
            io_feed(s);
        if (r > 0 && out_at >= 0 && p[out_at].revents)
            io_drain(s, out);
        if (s->stopped)
            break;
        bool gone = pidfd >= 0 ? (r > 0 && p[n - 1].revents) : exited(s->pid);
        if (gone) {
            io_drain(s, out);   /* all it wrote is in the pipe by now */
            break;
        }
    }
    invoker__fd_close(&pidfd);
}

static int run_program(const invoker_command *cmd, const char *dir, const void *arg,
                       size_t arg_len, invoker_result *out)
{
    const char *input = cmd->input_name ? cmd->input_name : "input";
    int rc = 0;
    if (cmd->input == INVOKER_INPUT_FILE && (rc = write_file(dir, input, arg, arg_len)) != 0)
        return rc;
    char **env = build_env(cmd, dir, out);
    if (!env)
        return -ENOMEM;
    int in[2] = { -1, -1 }, res[2] = { -1, -1 }, note[2] = { -1, -1 };
    if ((cmd->input == INVOKER_INPUT_STDIN && (rc = high_pipe(in)) != 0) ||
        (!cmd->output_name && (rc = high_pipe(res)) != 0) || (rc = high_pipe(note)) != 0) {
        invoker__fd_close(&in[0]), invoker__fd_close(&in[1]);
        invoker__fd_close(&res[0]), invoker__fd_close(&res[1]);
        free(env);
        return rc;
    }
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);   /* one thread's: inline_mode may have more */
    char prog_buf[PATH_MAX];
    const char *prog = program_path(cmd->argv[0], prog_buf, sizeof prog_buf);
    pid_t self = getpid();
    sigset_t all, held;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &held);   /* none in the child before its reset */
    pid_t pid = fork();
    if (pid == 0)
        child_exec(cmd, prog, dir, env, in[0], res[1], note[1], &old, self, out->cpu_limit);
    int fork_err = errno;
    pthread_sigmask(SIG_SETMASK, &held, NULL);
    free(env);
    invoker__fd_close(&in[0]);
    invoker__fd_close(&res[1]);
    invoker__fd_close(&note[1]);
    io s = { arg, arg ? arg_len : 0, in[1], res[0], pid, false };
    if (pid < 0) {
        rc = -fork_err;
    } else {
        exec_note got;
        ssize_t n;
        do
            n = read(note[0], &got, sizeof got);
        while (n < 0 && errno == EINTR);
        if (n == (ssize_t)sizeof got)   /* it never ran */
            rc = got.stage == 0 ? -got.err
                                : (got.err == ENOENT || got.err == ENOTDIR ? 127 : 126);
        else {
            if (s.in_fd >= 0)
                (void)invoker__fd_set_blocking(s.in_fd, false);
            if (s.out_fd >= 0)
                (void)invoker__fd_set_blocking(s.out_fd, false);
            if (s.in_fd >= 0 && !s.in_left)
                invoker__fd_close(&s.in_fd);
            io_loop(&s, out);
        }
        invoker__fd_close(&s.in_fd);
        invoker__fd_close(&s.out_fd);
        int status = 0;
        struct rusage ru;
        memset(&ru, 0, sizeof ru);
        pid_t r;
        do
            r = wait4(pid, &status, 0, &ru);
        while (r < 0 && errno == EINTR);
        if (r == pid) {
            invoker__result_note_child(out, ru.ru_maxrss);
            if (rc == 0 && WIFSIGNALED(status))
                rc = 128 + WTERMSIG(status);
            else if (rc == 0 && WIFEXITED(status))
                rc = WEXITSTATUS(status);
        } else if (rc == 0) {
            rc = -ECHILD;
        }
    }
    invoker__fd_close(&note[0]);
    invoker__fd_close(&s.in_fd);
    invoker__fd_close(&s.out_fd);
    /* A SIGPIPE our feeding raised is ours, not the program's: drop it.
     * A SIGTERM (kill_grace) stays pending and ends the worker below. */
    sigset_t pending, pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1 &&
        !sigismember(&old, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        (void)sigtimedwait(&pipe_only, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0 && cmd->output_name && !out->too_large)
        rc = read_file(dir, cmd->output_name, out);
    return rc;
}

int invoker_command_objective(const void *arg, size_t arg_len, invoker_result *out, void *ctx)
{
    const invoker_command *cmd = ctx;
    if (!out || !valid_command(cmd))
        return -EINVAL;
    char dir[PATH_MAX];
    if (!invoker__command_dir(dir, sizeof dir, out->root ? out->root : root_of(cmd), out->dir_tag,
                              out->task_id, out->attempt))
        return -ENAMETOOLONG;
    if (mkdir(dir, 0700) != 0)
        return -errno;
    int rc = run_program(cmd, dir, arg, arg_len, out);
    bool failed = rc != 0 || out->too_large;
    if (cmd->keep_workdir == 0 || (cmd->keep_workdir == 1 && !failed))
        remove_dir(dir);
    return rc;
}

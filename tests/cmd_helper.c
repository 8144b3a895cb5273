/* The program test_command runs through invoker_command_objective: one
 * mode per behaviour under test, picked by argv[1]. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len) {
        ssize_t n = write(fd, c, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            exit(90);
        c += n;
        len -= (size_t)n;
    }
}

/* Complements every byte from in to out, in chunks: it writes before it
 * has read all, as a filter does. */
static void invert(int in, int out)
{
    unsigned char buf[4096];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            exit(91);
        for (ssize_t i = 0; i < n; i++)
            buf[i] = (unsigned char)~buf[i];
        write_all(out, buf, (size_t)n);
    }
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* trap "say": a line on stderr in the grace; "shout": 256 KiB, more than a
 * pipe holds, so the flush needs its reader. */
static volatile sig_atomic_t say_on_term;

static void on_term(int sig)
{
    (void)sig;
    if (say_on_term == 1)
        write_all(2, "during the grace\n", 17);
    if (say_on_term == 2) {
        static char line[1024];
        memset(line, 'x', sizeof line - 1);
        line[sizeof line - 1] = '\n';
        for (int i = 0; i < 256; i++)
            write_all(2, line, sizeof line);
    }
    const char *path = getenv("TRAP_FILE");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        write_all(fd, "flushed\n", 8);
        close(fd);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 99;
    const char *mode = argv[1];
    if (!strcmp(mode, "invert")) {             /* stdin -> stdout */
        invert(0, 1);
    } else if (!strcmp(mode, "invert-files")) { /* argv[2] -> argv[3] */
        int in = open(argv[2], O_RDONLY);
        int out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0)
            return 92;
        invert(in, out);
        close(out);
    } else if (!strcmp(mode, "args")) {        /* each argument, with its length */
        for (int i = 2; i < argc; i++) {
            size_t len = strlen(argv[i]);
            write_all(1, &len, sizeof len);
            write_all(1, argv[i], len);
        }
    } else if (!strcmp(mode, "env")) {         /* the variables and the directory */
        const char *names[] = { "INVOKER_TASK_ID", "INVOKER_ATTEMPT", "INVOKER_WORKER",
                                "INVOKER_WORKDIR", "EXTRA_ONE", "EXTRA_TWO" };
        const char *hang = getenv("HANG_ON_FIRST");
        const char *att = getenv("INVOKER_ATTEMPT");
        if (hang && att && !strcmp(att, "1"))
            for (;;)
                pause();
        char cwd[4096];
        struct stat st;
        if (!getcwd(cwd, sizeof cwd) || stat(".", &st) != 0)
            return 93;
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            const char *v = getenv(names[i]);
            printf("%s=%s\n", names[i], v ? v : "(unset)");
        }
        printf("cwd=%s\nmode=%03o\n", cwd, (unsigned)(st.st_mode & 0777));
    } else if (!strcmp(mode, "fds")) {         /* open descriptors, but the listing's */
        DIR *d = opendir("/proc/self/fd");
        if (!d)
            return 94;
        const struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
                printf("%s\n", e->d_name);
        closedir(d);
    } else if (!strcmp(mode, "burn")) {        /* argv[2] s of CPU, argv[3] MiB touched */
        double secs = 0;
        long mib = 0;
        if (!strcmp(argv[2], "-")) {   /* "SECONDS MIB" on stdin */
            char in[64] = { 0 };
            if (read(0, in, sizeof in - 1) <= 0 || sscanf(in, "%lf %ld", &secs, &mib) != 2)
                return 95;
        } else {
            secs = atof(argv[2]);
            mib = atol(argv[3]);
        }
        size_t bytes = (size_t)mib << 20;
        unsigned char *p = malloc(bytes);
        if (!p)
            return 95;
        for (size_t i = 0; i < bytes; i += 4096)
            p[i] = (unsigned char)i | 1;
        volatile unsigned long spin = 0;
        while (cpu_now() < secs)
            spin++;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("%.6f %ld %d\n", cpu_now(), ru.ru_maxrss, p[4096]);
        free(p);
    } else if (!strcmp(mode, "exit")) {
        return atoi(argv[2]);
    } else if (!strcmp(mode, "segv")) {
        raise(SIGSEGV);
    } else if (!strcmp(mode, "grandchild")) {  /* forks a sleeper, writes both pids */
        pid_t kid = fork();
        if (kid == 0)
            for (;;)
                pause();
        FILE *f = fopen(argv[2], "w");
        if (!f)
            return 96;
        fprintf(f, "%d %d\n", (int)getpid(), (int)kid);
        fclose(f);
        for (;;)
            pause();
    } else if (!strcmp(mode, "trap")) {        /* SIGTERM writes $TRAP_FILE */
        char in[8] = { 0 };
        if (read(0, in, sizeof in - 1) == 5 && !strcmp(in, "quick"))
            return 0;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = strcmp(argv[2], "ignore") ? on_term : SIG_IGN;
        sigaction(SIGTERM, &sa, NULL);
        if (!strcmp(argv[2], "say")) {
            say_on_term = 1;
            write_all(2, "before the deadline\n", 20);
        }
        if (!strcmp(argv[2], "shout"))
            say_on_term = 2;
        char ready[4096];
        snprintf(ready, sizeof ready, "%s.ready", getenv("TRAP_FILE"));
        int fd = open(ready, O_WRONLY | O_CREAT | O_TRUNC, 0600);   /* the trap is set */
        if (fd >= 0)
            close(fd);
        for (;;)
            pause();
    } else if (!strcmp(mode, "say")) {         /* stdin, as a line on stderr */
        char in[128];
        ssize_t n = read(0, in, sizeof in - 1);
        if (n < 0)
            return 93;
        in[n] = 0;
        char line[256];
        int len = snprintf(line, sizeof line, "task %s says %s\n",
                           getenv("INVOKER_TASK_ID"), in);
        write_all(2, line, (size_t)len);
        write_all(1, "ok", 2);
    } else if (!strcmp(mode, "flood")) {       /* stdout without end */
        static char buf[65536];
        memset(buf, 'x', sizeof buf);
        for (;;)
            write_all(1, buf, sizeof buf);
    } else if (!strcmp(mode, "mkdirs")) {      /* leaves a tree in its directory */
        if (mkdir("a", 0700) != 0 || mkdir("a/b", 0700) != 0)
            return 97;
        FILE *f = fopen("a/file", "w");
        if (f)
            fclose(f);
        (void)symlink("/", "a/root");
        write_all(1, "ok", 2);
        return argc > 2 ? atoi(argv[2]) : 0;
    } else if (!strcmp(mode, "rodir")) {       /* a tree its owner cannot write */
        if (mkdir("sub", 0700) != 0 || mkdir("sub/deep", 0700) != 0)
            return 97;
        FILE *f = fopen("sub/deep/file", "w");
        if (f)
            fclose(f);
        if (chmod("sub/deep", 0500) != 0 || chmod("sub", 0) != 0)
            return 97;
        write_all(1, "ok", 2);
    } else if (!strcmp(mode, "fifo")) {        /* argv[2] a FIFO where output is read */
        return mkfifo(argv[2], 0600) == 0 ? 0 : 97;
    } else if (!strcmp(mode, "stdin")) {       /* whether descriptor 0 is open */
        write_all(1, fcntl(0, F_GETFD) >= 0 ? "open" : "closed", fcntl(0, F_GETFD) >= 0 ? 4 : 6);
    } else if (!strcmp(mode, "manyfiles")) {   /* as many files as stdin says, then hangs */
        char in[32] = "";
        if (read(0, in, sizeof in - 1) < 0)
            return 93;
        int n = atoi(in);
        char name[32];
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "f%d", i);
            int fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0600);
            if (fd < 0)
                return 97;
            close(fd);
        }
        write_all(2, "made\n", 5);
        for (;;)
            pause();
    } else if (!strcmp(mode, "sleep")) {
        sleep((unsigned)atoi(argv[2]));
    } else {
        return 98;
    }
    return 0;
}

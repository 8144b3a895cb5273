/*
 * simulate.c — a stand-in for an external simulator (a CFD or FEM solver,
 * a circuit simulator): the program examples/simulator.c drives through
 * invoker_command_objective.
 *
 * It reads a point ("x1 x2 ... xn", text, on stdin), writes a log in its
 * current directory (the work directory invoker made for this attempt),
 * burns --cost-ms of CPU, allocates a mesh of a few MiB, and prints the
 * cost (a shifted ellipsoid, 0 at x = 0.5) on stdout.  Now and then, as
 * real simulators do, it misbehaves, as a hash of the point decides
 * (argv[2] is the percent of runs that crash, and of those that diverge;
 * half as many hang):
 *   hang    -> sleeps forever (the invoker's timeout kills it; a retry of
 *              the same point hangs again),
 *   crash   -> dies of SIGSEGV (code 139),
 *   diverge -> prints "diverged" on stderr and exits with status 2.
 * On SIGTERM (invoker_config.kill_grace) it writes "interrupted" to its log
 * and exits, as a solver flushing its state would.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_DIM 16

static void on_term(int sig)
{
    (void)sig;
    static const char msg[] = "interrupted\n";
    int fd = open("sim.log", O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd >= 0) {
        (void)!write(fd, msg, sizeof msg - 1);
        close(fd);
    }
    _exit(143);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    double cost_ms = argc > 1 ? atof(argv[1]) : 1.0;
    unsigned fail_pct = argc > 2 ? (unsigned)atoi(argv[2]) : 3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);

    char in[4096];
    size_t len = fread(in, 1, sizeof in - 1, stdin);
    in[len] = 0;
    double x[MAX_DIM];
    int n = 0;
    char *p = in, *end;
    while (n < MAX_DIM && (x[n] = strtod(p, &end), end != p)) {
        p = end;
        n++;
    }
    if (n < 2) {
        fprintf(stderr, "simulate: expected at least 2 numbers on stdin\n");
        return 1;
    }
    FILE *log = fopen("sim.log", "w");
    if (!log)
        return 1;
    const char *attempt = getenv("INVOKER_ATTEMPT");
    fprintf(log, "task %s attempt %s in %s: %d variables\n", getenv("INVOKER_TASK_ID"),
            attempt, getenv("INVOKER_WORKDIR"), n);
    fflush(log);

    uint64_t h = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        h = mix(h ^ bits);
    }
    unsigned roll = (unsigned)(h % 200);   /* in half percents */
    /* The mesh: a few MiB the solver touches, so max_rss_kib has a story. */
    size_t mesh_bytes = (size_t)(4 + h % 8) << 20;
    unsigned char *mesh = malloc(mesh_bytes);
    if (!mesh)
        return 1;
    for (size_t i = 0; i < mesh_bytes; i += 4096)
        mesh[i] = (unsigned char)i;
    double until = cpu_seconds() + cost_ms / 1000.0;
    volatile double sink = 0;
    while (cpu_seconds() < until)
        sink += 1.0;

    if (roll < fail_pct) {
        fprintf(log, "hanging\n");
        fclose(log);
        fprintf(stderr, "simulate: task %s stuck\n", getenv("INVOKER_TASK_ID"));
        for (;;)
            pause();
    }
    if (roll < 3 * fail_pct) {
        fprintf(log, "crashing\n");
        fclose(log);
        fprintf(stderr, "simulate: task %s out of bounds\n", getenv("INVOKER_TASK_ID"));
        raise(SIGSEGV);
    }
    if (roll < 5 * fail_pct) {
        fprintf(log, "diverged\n");
        fclose(log);
        fprintf(stderr, "simulate: task %s diverged\n", getenv("INVOKER_TASK_ID"));
        return 2;
    }
    double f = 0;   /* an ellipsoid, its optimum 0 at x = 0.5 */
    for (int i = 0; i < n; i++)
        f += (1 + 9 * i) * (x[i] - 0.5) * (x[i] - 0.5);
    fprintf(log, "cost %.17g\n", f);
    fclose(log);
    printf("%.17g\n", f);
    free(mesh);
    return 0;
}

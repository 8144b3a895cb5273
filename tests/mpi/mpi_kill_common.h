/*
 * For the scenarios whose objective harms its own rank once: the first
 * task to create the marker file (O_EXCL: one winner across ranks, all on
 * this node) does the harm; every other run, its retry included, just
 * computes.
 */
#ifndef INVOKER_MPI_KILL_COMMON_H
#define INVOKER_MPI_KILL_COMMON_H

#include "mpi_common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

typedef struct harm_arg {
    uint64_t x;
    int      harm;                /* this task may do the harm */
    char     marker[100];
} harm_arg;

static inline int first_to_harm(const harm_arg *a)
{
    if (!a->harm)
        return 0;
    int fd = open(a->marker, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* The pid of process pid's parent, from /proc; -1 if unknown. */
static inline pid_t parent_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    int ppid = -1;
    char state;
    if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2)
        return -1;
    return (pid_t)ppid;
}

static inline int compute(const harm_arg *a, invoker_result *out)
{
    uint64_t y = a->x * 3 + 1;
    return invoker_result_write(out, &y, sizeof y);
}

/* Submits tasks 0 to n - 1 (tag i, x i), the one at harm_at allowed to do
 * the harm, its marker named after name and this pid, then waits for them
 * all and checks that the harm was done. */
static inline void harm_run(invoker *inv, const char *name, unsigned n, unsigned harm_at)
{
    harm_arg a;
    memset(&a, 0, sizeof a);
    snprintf(a.marker, sizeof a.marker, "/tmp/invoker-mpi-%s-%d", name, (int)getpid());
    unlink(a.marker);
    for (unsigned i = 0; i < n; i++) {
        a.x = i;
        a.harm = i == harm_at;
        CHECK(invoker_submit(inv, &a, sizeof a, (void *)(uintptr_t)i, NULL) == 0);
    }
    CHECK(invoker_wait(inv) == 0);
    CHECK(access(a.marker, F_OK) == 0);   /* the harm was done */
    unlink(a.marker);
}

#endif

/*
 * How fast can a fresh shared-memory file be filled with arguments?  The
 * measurement behind the argument arena's writes (src/local/arena.c): one memfd,
 * --tasks blocks of --bytes each copied into it from as many distinct,
 * already touched buffers, the way invoker_submit fills its arena.
 *
 * Usage: bench_arena_fill MODE [--tasks N] [--bytes B]   (e.g. --tasks 300;
 *        --bytes defaults to 1 MiB)
 * MODE: map       memcpy through a MAP_SHARED mapping (a fault per page)
 *       populate  MADV_POPULATE_WRITE on each block, then memcpy
 *       fallocate fallocate each block, then memcpy
 *       mappop    each block mapped MAP_POPULATE (MAP_FIXED), then memcpy
 *       pwrite    pwrite into the file (shmem skips zeroing a full page)
 *       again     map, then the same pages a second time (the time shown)
 * Prints: RESULT workload=arena_fill impl=MODE ... seconds=... faults=...
 */
#include "common.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static long faults(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s map|populate|fallocate|mappop|pwrite|again [options]\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    bench_opts opt;
    parse_opts(argc, argv, 2, &opt);
    if (!strcmp(mode, "again"))
        ;
    else if (strcmp(mode, "map") && strcmp(mode, "populate") && strcmp(mode, "fallocate") &&
             strcmp(mode, "mappop") && strcmp(mode, "pwrite")) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    size_t n = opt.tasks, len = opt.bytes;
    size_t total = n * len;
    unsigned char *src = malloc(total);
    if (!src)
        die("malloc");
    memset(src, 7, total);   /* touched before the clock, as a caller's buffers are */
    int fd = memfd_create("arena-fill", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)total) != 0)
        die("memfd");
    unsigned char *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("mmap");
    int passes = !strcmp(mode, "again") ? 2 : 1;
    double s = 0;
    long f = 0;
    for (int p = 0; p < passes; p++) {
        long f0 = faults();
        int64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            unsigned char *d = m + i * len;
            off_t off = (off_t)(i * len);
            if (!strcmp(mode, "populate"))
                (void)madvise(d, len, MADV_POPULATE_WRITE);
            else if (!strcmp(mode, "fallocate"))
                (void)fallocate(fd, 0, off, (off_t)len);
            else if (!strcmp(mode, "mappop") &&
                     mmap(d, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE,
                          fd, off) == MAP_FAILED)
                die("mmap");
            if (!strcmp(mode, "pwrite")) {
                if (pwrite(fd, src + i * len, len, off) != (ssize_t)len)
                    die("pwrite");
            } else {
                memcpy(d, src + i * len, len);
            }
        }
        s = ns_to_s(now_ns() - t0);
        f = faults() - f0;
    }
    result_line("arena_fill", mode, &opt, "tasks=%zu bytes=%zu seconds=%.6f mib_per_s=%.1f faults=%ld",
                n, len, s, (double)total / (double)MIB / s, f);
    munmap(m, total);
    close(fd);
    free(src);
    return 0;
}

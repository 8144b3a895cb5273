/*
 * A worker process's own code: its set-up after the fork (signals,
 * descriptors, limits, the arena's read-only view), and its loop: take a
 * packet of tickets from the queue straight into its slot, run each task,
 * send or hold the frames.  Nothing here runs in the parent.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#include <sys/single_threaded.h>
#define INVOKER__HAVE_SINGLE_THREADED 1
#endif

static void child_reset_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    /* The parent's handlers are the parent's code: in a worker they would
     * run against a copy of its state.  Start from the defaults. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &sa, NULL);   /* EINVAL for libc's reserved ones */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static bool is_kept(int fd, const int *keep, size_t nkeep)
{
    for (size_t i = 0; i < nkeep; i++)
        if (keep[i] == fd)
            return true;
    return false;
}

/* A worker keeps the descriptors a program exec'd by the parent would
 * keep (those without FD_CLOEXEC) plus its own three.  Every descriptor of
 * this invoker and of any other in the process is close-on-exec, so none
 * survives: a stray copy of another worker's result pipe would hide that
 * worker's death from the parent, and one of another invoker's would let
 * this worker write into it.  Raw getdents64 because malloc (opendir) is
 * not safe here when the parent has other threads. */
static void child_close_fds(const int *keep, size_t nkeep)
{
#if defined(__linux__) && defined(SYS_getdents64)
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        char buf[4096];
        long n;
        while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                /* struct linux_dirent64: d_ino 8, d_off 8, d_reclen 2, d_type 1, d_name */
                unsigned short reclen;
                memcpy(&reclen, buf + off + 16, sizeof reclen);
                const char *name = buf + off + 19;
                off += reclen;
                if (name[0] < '0' || name[0] > '9')
                    continue;
                /* By hand: no strtol, no locale, in a child after fork. */
                int fd = 0;
                for (const char *c = name; *c >= '0' && *c <= '9' && fd < (1 << 24); c++)
                    fd = fd * 10 + (*c - '0');
                if (fd <= 2 || fd == dir || is_kept(fd, keep, nkeep))
                    continue;
                int fl = fcntl(fd, F_GETFD);
                if (fl >= 0 && (fl & FD_CLOEXEC))
                    close(fd);
            }
        }
        close(dir);
    }
#else
    (void)keep;
    (void)nkeep;
#endif
}

static void send_frame(invoker *inv, int fd, uint32_t kind, uint64_t id, uint32_t gen,
                       int32_t code)
{
    invoker__frame f;
    memset(&f, 0, sizeof f);
    f.kind = kind;
    f.id = id;
    f.gen = gen;
    f.code = code;
    invoker__proto_frame_seal(&f, inv->key);
    if (invoker__fd_write_all(fd, &f, sizeof f) != 0)
        _exit(0);   /* the parent is gone */
}

static void child_apply_limits(const invoker_config *cfg)
{
    if (cfg->memory_limit) {
        struct rlimit rl = { (rlim_t)cfg->memory_limit, (rlim_t)cfg->memory_limit };
        (void)setrlimit(RLIMIT_AS, &rl);
    }
}

/* The process's CPU time as RLIMIT_CPU counts it.  The kernel checks the
 * limit against CPU time sampled at clock ticks (the process's PROF
 * clock); getrusage reports a figure scaled to the scheduler's exact
 * count, and on a machine under bursty load the ticks run ahead of it
 * (15-18% here, 0.9 s after 8 s of CPU).  A limit set from getrusage
 * would, in a worker that had worked a while, pass before its task began. */
static double child_cpu_seconds(void)
{
#ifdef __linux__
    /* The PROF clock of the calling process: Linux's encoding of CPU clock
     * ids, MAKE_PROCESS_CPUCLOCK(0, CPUCLOCK_PROF), as ~0 << 3 | 0. */
    struct timespec ts;
    if (clock_gettime((clockid_t)-8, &ts) == 0)
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#endif
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU time is limited per task: RLIMIT_CPU counts the whole process, so
 * each task moves the soft limit to what was used so far plus its share. */
static void child_arm_cpu_limit(const invoker_config *cfg)
{
    if (cfg->cpu_limit <= 0)
        return;
    double used = child_cpu_seconds();
    if (used < 0)
        return;
    rlim_t soft = (rlim_t)(used + cfg->cpu_limit) + 1;
    struct rlimit rl = { soft, RLIM_INFINITY };
    (void)setrlimit(RLIMIT_CPU, &rl);
}

/* What getrusage says of this process and of the children it reaped. */
typedef struct usage {
    uint64_t cpu_ns;       /* user + system, both */
    uint64_t kids_ns;      /* of which the reaped children's */
    long     self_rss;     /* peak since the last reset (see reset_peak), KiB */
    long     child_rss;    /* largest peak of any reaped child, ever, KiB */
} usage;

static uint64_t tv_ns(const struct timeval *tv)
{
    return (uint64_t)tv->tv_sec * 1000000000ull + (uint64_t)tv->tv_usec * 1000ull;
}

/* The reaped children's part: it moves only when this process reaps one. */
static void usage_children(usage *u)
{
    struct rusage kids;
    u->kids_ns = 0;
    u->child_rss = 0;
    if (getrusage(RUSAGE_CHILDREN, &kids) == 0) {
        u->kids_ns = tv_ns(&kids.ru_utime) + tv_ns(&kids.ru_stime);
        u->child_rss = kids.ru_maxrss;
    }
}

/* Our own CPU, without reading the kernel's clock of it at every task.
 * That read (getrusage(RUSAGE_SELF), CLOCK_PROCESS_CPUTIME_ID) charges
 * our running time to the scheduler, which preempts us right there when
 * our slice is spent and another thread waits for this CPU: between two
 * tasks, with a finished result not yet sent, where the preemption would
 * otherwise have come inside a task (bench/NOTES.md: 1 ms tasks' busy
 * fraction 0.991 -> 0.985 on a quiet machine, far lower under load).  So
 * the clock is read after a context switch only: while this thread then
 * runs without being switched out, the only thread of its process, its
 * CPU time grows with the wall clock, and is carried forward by it. */
typedef struct cpu_anchor {
    uint64_t cpu_ns;      /* the process's CPU by the kernel's clock... */
    uint64_t at_ns;       /* ...at this CLOCK_MONOTONIC instant (or just before) */
    uint64_t switches;    /* this thread's context switches, read before both */
    bool     valid;
} cpu_anchor;

/* True when this process surely has, and had, no thread but this one:
 * glibc clears the flag at the first pthread_create, and (2.32-2.40 at
 * least) never sets it again, a fork's child included: a worker forked
 * from a process that had threads always reads the clock.  Threads made
 * without pthread_create (a raw clone) are not seen. */
static bool one_thread(void)
{
#ifdef INVOKER__HAVE_SINGLE_THREADED
    return __libc_single_threaded != 0;
#else
    return false;
#endif
}

/* This thread's context switches so far (UINT64_MAX: unknown), and the
 * process's peak RSS since the last reset into *rss: RUSAGE_THREAD reads
 * no clock, so it charges nothing to the scheduler. */
static uint64_t thread_switches(long *rss)
{
    struct rusage ru;
    *rss = 0;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return UINT64_MAX;
    *rss = ru.ru_maxrss;
    return (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
}

/* Our own CPU (all threads, not children) at now, read before switches:
 * a switch after now is then counted, and sends us to the clock. */
static uint64_t own_cpu(cpu_anchor *a, uint64_t now, uint64_t switches)
{
    if (a->valid && switches == a->switches && one_thread() && now >= a->at_ns)
        return a->cpu_ns + (now - a->at_ns);
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) {
        a->valid = false;
        return 0;
    }
    a->cpu_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    a->at_ns = invoker__now_ns();
    a->switches = switches;
    a->valid = switches != UINT64_MAX;
    return a->cpu_ns;
}

/* Our own part into u (its peak too); cpu_ns adds the children's part
 * already in u. */
static void usage_self(usage *u, cpu_anchor *a)
{
    uint64_t now = invoker__now_ns();
    uint64_t switches = thread_switches(&u->self_rss);
    u->cpu_ns = u->kids_ns + own_cpu(a, now, switches);
}

/* ru_maxrss is a lifetime peak; Linux (4.0+) lets a process bring its own
 * back to its present size by writing "5" to /proc/self/clear_refs.  So a
 * long-lived worker's peak is per task.  False where that cannot be done:
 * the peak then says nothing about one task. */
static bool reset_peak(int fd)
{
    return fd >= 0 && pwrite(fd, "5", 1, 0) == 1;
}

#define SEND_CAP ((size_t)2 * INVOKER__HELD_MAX)   /* the held frames, then the last one */

/* What a worker keeps between tasks. */
typedef struct child {
    invoker             *inv;
    invoker__slot       *slot;
    int                  result_wr;
    size_t               result_pipe;   /* bytes we made its pipe hold */
    struct invoker_result out;
    const unsigned char *view;          /* read-only map of the arena's [view_off, +view_len) */
    uint64_t             view_off, view_len;
    /* The held frames, as they will be sent: our own copy, which no
     * objective can reach through the slot. */
    unsigned char        send[SEND_CAP];
    size_t               send_len;
    size_t               held_len;      /* bytes of slot->held_frames in use */
    uint64_t             held_since;    /* when the oldest held task ended */
    bool                 err_pipe;      /* descriptor 2 is the capture pipe... */
    dev_t                err_dev;       /* ...this one, while it still is */
    ino_t                err_ino;
    int                  clear_refs;    /* /proc/self/clear_refs, or -1 */
    bool                 have_base;     /* base is the end of the task before */
    bool                 peak_known;    /* the peak was reset at the packet's start */
    usage                base;
    cpu_anchor           cpu;
} child;

/* The end of task (id, gen) in the captured stderr, unless the objective
 * put something else at descriptor 2 (a mark there would be its bytes). */
static void mark_stderr(const child *c, uint64_t id, uint32_t gen)
{
    struct stat st;
    if (c->err_pipe && fstat(2, &st) == 0 && st.st_dev == c->err_dev && st.st_ino == c->err_ino)
        invoker__err_mark(c->inv, id, gen);
}

/* Sends the held frames and then frame (len bytes, may be 0) in as few
 * writes as they fit, and only then forgets the held ones: a death before
 * that leaves them to the post-mortem, which drops a frame delivered twice. */
static void send_frames(child *c, const unsigned char *frame, size_t len)
{
    if (len && len <= SEND_CAP - c->send_len) {
        memcpy(c->send + c->send_len, frame, len);
        c->send_len += len;
        len = 0;
    }
    if (c->send_len && invoker__fd_write_all(c->result_wr, c->send, c->send_len) != 0)
        _exit(0);   /* the parent is gone */
    if (len && invoker__fd_write_all(c->result_wr, frame, len) != 0)
        _exit(0);
    if (c->held_len)
        atomic_store(&c->slot->held, 0);
    c->send_len = 0;
    c->held_len = 0;
}

/* Keeps a finished task's frame (which fits) in the slot, where the
 * parent finds it if need be, rather than sending it now. */
static void hold_frame(child *c, const unsigned char *frame, size_t len, uint64_t end_ns)
{
    size_t need = len + INVOKER__HELD_TRAILER;
    unsigned char *at = c->slot->held_frames + c->held_len;
    uint64_t trailer[2] = { invoker__proto_held_hash(frame, len, c->inv->key), 0 };
    memcpy(at, frame, len);
    memcpy(at + len, trailer, sizeof trailer);
    memcpy(c->send + c->send_len, frame, len);
    if (!c->held_len) {
        c->held_since = end_ns;
        atomic_store(&c->slot->held_since, end_ns);
    }
    c->held_len += need;
    c->send_len += len;
    /* Published after the bytes: the parent reads no further. */
    atomic_store(&c->slot->held, c->held_len);
}

/* The parent's read-write mapping of the arena came with the fork: drop
 * it, so that a stray write cannot reach other tasks' arguments.  Its
 * descriptor went with the other close-on-exec ones. */
static void child_drop_arena(invoker__arena *a)
{
    for (unsigned i = 0; i < a->nretired; i++)
        munmap(a->retired[i].base, a->retired[i].size);
    if (a->base)
        munmap(a->base, a->size);
    a->nretired = 0;
    a->base = NULL;
    a->size = 0;
    a->fd = -1;
}

/* The argument of a BIG ticket, through our read-only view of the arena.
 * Without a memory limit the view covers the whole file, so the pages of
 * recycled blocks stay mapped from task to task; under RLIMIT_AS it covers
 * this argument only, which is all the limit should be charged. */
static const void *child_view(child *c, uint64_t off, uint64_t len)
{
    if (c->view && off >= c->view_off && off - c->view_off <= c->view_len &&
        len <= c->view_len - (off - c->view_off))
        return c->view + (off - c->view_off);
    if (c->view)
        munmap((void *)c->view, c->view_len);
    c->view = NULL;
    const invoker__arena *a = &c->inv->arena;
    struct stat st;
    if (fstat(a->ro_fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size < off + len)
        _exit(INVOKER__EXIT_PROTOCOL);   /* a ticket past the arena's end */
    uint64_t lo = 0, hi = (uint64_t)st.st_size;
    int flags = MAP_SHARED;
    if (c->inv->cfg.memory_limit) {
        lo = off / a->unit * a->unit;
        hi = (off + len + a->unit - 1) / a->unit * a->unit;
        flags |= MAP_POPULATE;
    }
    void *p = mmap(NULL, (size_t)(hi - lo), PROT_READ, flags, a->ro_fd, (off_t)lo);
    if (p == MAP_FAILED)
        _exit(1);   /* as a failed allocation would */
    c->view = p;
    c->view_off = lo;
    c->view_len = hi - lo;
    return c->view + (off - lo);
}

/* Runs one ticket of the packet in our slot, and sends its frame, or
 * holds it when more of the packet follows (see child_loop).  False when
 * its task was cancelled: skipped, with nothing to send. */
static bool run_ticket(child *c, const invoker__ticket *tkp, size_t tk_off,
                       const unsigned char *inline_arg, bool more)
{
    invoker *inv = c->inv;
    invoker__slot *slot = c->slot;
    struct invoker_result *out = &c->out;
    const invoker_config *cfg = &inv->cfg;
    invoker__ticket tk = *tkp;
    _Atomic uint64_t *cancel = &inv->table.cancelled[tk.id % INVOKER__CANCEL_RING];
    if (atomic_load(cancel) == tk.id)
        return false;
    uint64_t tag = invoker__proto_running_tag(tk.id, inv->key);
    uint64_t start = invoker__now_ns();
    atomic_store(&slot->start_ns, start);
    atomic_store(&slot->running, tag);
    /* Paired with invoker_cancel, which stores the id and then looks at
     * running: either it sees us running and kills us, or we see its
     * mark here and skip the task. */
    if (atomic_load(cancel) == tk.id) {
        atomic_store(&slot->running, 0);
        return false;
    }

    const void *arg = tk.arg_len ? inline_arg : NULL;
    if (tk.flags & INVOKER__TICKET_BIG)
        arg = child_view(c, tk.arg_off, tk.arg_len);

    child_arm_cpu_limit(cfg);
    out->len = 0;
    out->too_large = false;
    out->task_id = tk.id;
    out->attempt = tk.flags >> INVOKER__TICKET_ATTEMPT_SHIFT;
    out->child_rss_kib = -1;
    /* The first task of a packet measures its start and resets the peak;
     * its packet-mates start where the one before ended (nothing runs in
     * between) and share the reset.  The reaped children's part is the
     * one read at the end of the task before: only this process's own
     * code reaps, and none of ours runs in between. */
    if (!c->have_base) {
        usage_self(&c->base, &c->cpu);
        c->peak_known = reset_peak(c->clear_refs);
    }
    atomic_store(&slot->cpu_start_ns, c->base.cpu_ns);
    atomic_store(&slot->kids_start_ns, c->base.kids_ns);
    /* Whether the parent, timing this task out, must look for child
     * processes (see invoker__worker_usage): a program runs, or this
     * objective has reaped one before here. */
    atomic_store(&slot->kids, cfg->objective == invoker_command_objective ||
                                  c->base.kids_ns || c->base.child_rss > 0);
    int rc = cfg->objective(arg, (size_t)tk.arg_len, out, cfg->objective_ctx);
    uint64_t run_ns = invoker__now_ns() - start;
    /* Before any frame of it: the parent reads our stderr first. */
    mark_stderr(c, tk.id, tk.gen);

    /* The objective may have written over our slot; the parent must not
     * trust what it would read there, so say so and make way. */
    if (atomic_load(&slot->running) != tag || atomic_load(&slot->start_ns) != start ||
        memcmp(slot->ticket + tk_off, &tk, sizeof tk) != 0) {
        send_frames(c, NULL, 0);   /* the held results are good: ours, not the slot's */
        send_frame(inv, c->result_wr, INVOKER__FRAME_PROTOCOL, tk.id, tk.gen, 0);
        _exit(INVOKER__EXIT_PROTOCOL);
    }

    invoker__frame f;
    memset(&f, 0, sizeof f);
    f.id = tk.id;
    f.gen = tk.gen;
    f.run_ns = run_ns;
    if (out->too_large) {
        f.kind = INVOKER__FRAME_TOO_LARGE;
    } else if (rc != 0) {
        f.kind = INVOKER__FRAME_OBJECTIVE;
        f.code = rc;
    } else {
        f.kind = INVOKER__FRAME_RESULT;
        f.len = out->len;
    }
    size_t total = invoker__proto_frame_size(f.len);
    uint64_t end = start + run_ns;
    /* send holds no more than held_frames (no trailers): what fits there
     * fits in send too. */
    bool hold = more && run_ns < INVOKER__BATCH_RUN_NS &&
                (!c->held_len || end - c->held_since < INVOKER__HOLD_NS) &&
                total + INVOKER__HELD_TRAILER <= INVOKER__HELD_MAX - c->held_len;
    if (hold) {
        /* A task of microseconds, held for its packet: four syscalls would
         * cost it more than it ran (bench_invoker trivial: 2.4 -> 0.9
         * million tasks/s).  Its CPU is its run time (it did not block:
         * it took microseconds), its peak unknown unless a child it
         * reaped told (the packet's next measured task counts it). */
        f.kind |= INVOKER__FRAME_HELD;
        f.cpu_ns = run_ns;
        f.max_rss_kib = out->child_rss_kib;
        c->base.cpu_ns += run_ns;
        c->have_base = true;
    } else {
        usage end_use;
        usage_children(&end_use);
        usage_self(&end_use, &c->cpu);
        f.cpu_ns = end_use.cpu_ns > c->base.cpu_ns ? end_use.cpu_ns - c->base.cpu_ns : 0;
        /* The worker's own peak since the reset; a child's from its
         * reaping (the command objective's wait4), or from RUSAGE_CHILDREN
         * when that lifetime maximum grew during the task: then a child of
         * this task set it. */
        long rss = c->peak_known ? end_use.self_rss : -1;
        if (out->child_rss_kib > rss)
            rss = out->child_rss_kib;
        if (end_use.child_rss > c->base.child_rss && end_use.child_rss > rss)
            rss = end_use.child_rss;
        f.max_rss_kib = rss;
        c->base = end_use;
        c->have_base = more;
    }
    invoker__proto_frame_seal(&f, inv->key);
    memcpy(out->buf, &f, sizeof f);
    memset(out->buf + INVOKER__FRAME_HDR + f.len, 0, total - INVOKER__FRAME_HDR - f.len);
    /* A large result leaves in fewer, larger writes through a larger pipe;
     * asked once per size, not once per task. */
    size_t want = total < ((size_t)1 << 20) ? total : ((size_t)1 << 20);
    if (want > 65536 && want > c->result_pipe) {
        invoker__fd_grow_pipe(c->result_wr, want);
        c->result_pipe = want;
    }
    /* Running until the whole frame is out or held: a death before is
     * this task's failure (it ran), never a silent requeue that would run
     * it again without counting the attempt. */
    if (hold)
        hold_frame(c, out->buf, total, end);
    else
        send_frames(c, out->buf, total);
    atomic_store(&slot->running, 0);
    return true;
}

/* The parent sizes a gather from the tasks' average run time; when they
 * turn out shorter, the queue runs dry before it ends, and we say so
 * rather than wait out the rest of it.  Only while it gathers: one
 * FIONREAD per task then, nothing otherwise. */
static void note_if_idle(const invoker *inv)
{
    int unread = 0;
    if (atomic_load(inv->table.gathering) && ioctl(inv->queue_rd, FIONREAD, &unread) == 0 &&
        unread == 0) {
        char one = 1;
        (void)invoker__fd_write(inv->idle_wr, &one, 1);   /* a full pipe has said it already */
    }
}

/* A packet's tasks are short (the parent batches no others), so their
 * frames are held in the slot and leave in one write with the last one's:
 * one write per packet rather than per task, and a death loses none of
 * them.  The cost is latency: a result waits for the rest of its packet,
 * which holding stops for once a task took INVOKER__BATCH_RUN_NS or the
 * oldest held result is INVOKER__HOLD_NS old. */
static void child_loop(invoker *inv, unsigned k, int result_wr, int clear_refs)
{
    const invoker_config *cfg = &inv->cfg;
    child c;
    memset(&c, 0, sizeof c);
    c.inv = inv;
    c.slot = invoker__table_slot(&inv->table, k);
    c.result_wr = result_wr;
    c.out = (struct invoker_result){ NULL, 0, 0, cfg->max_result_bytes, false, 0, 0,
                                     invoker__slot_number(inv, k),
                                     invoker__command_dir_tag(inv->key), -1,
                                     cfg->cpu_limit, inv->command_root };
    c.clear_refs = clear_refs;
    usage_children(&c.base);   /* what worker_init reaped is no task's */
    unsigned long done = 0;

    if (invoker__result_reserve(&c.out, 0) != 0)
        _exit(1);
    struct stat st;
    if (cfg->capture_stderr && fstat(2, &st) == 0 && S_ISFIFO(st.st_mode)) {
        c.err_pipe = true;
        c.err_dev = st.st_dev;
        c.err_ino = st.st_ino;
        mark_stderr(&c, 0, 0);   /* what worker_init wrote is no task's */
    }
    for (;;) {
        note_if_idle(inv);
        /* The read that takes a packet of tickets is also the one that
         * records them: the kernel copies it into our slot as it leaves
         * the queue. */
        ssize_t n = invoker__fd_read(inv->queue_rd, c.slot->ticket, INVOKER__PACKET);
        if (n <= 0)
            _exit(0);   /* queue closed: the invoker is going away */
        size_t off = 0;
        unsigned count = 1;
        bool ran = false;
        c.have_base = false;   /* the wait and the writes before are no task's */
        invoker__ticket first = { 0 };
        for (unsigned i = 0; i < count; i++) {
            invoker__ticket tk;
            if ((size_t)n - off < sizeof tk)
                _exit(INVOKER__EXIT_PROTOCOL);
            memcpy(&tk, c.slot->ticket + off, sizeof tk);
            if (!invoker__proto_ticket_valid(&tk, inv->key, cfg->max_arg_bytes) ||
                invoker__proto_ticket_size(&tk) > (size_t)n - off ||
                (i == 0 ? tk.batch == 0 : tk.batch != 0))
                _exit(INVOKER__EXIT_PROTOCOL);
            if (i == 0) {
                count = tk.batch;
                first = tk;
            }
            const unsigned char *inline_arg = c.slot->ticket + off + INVOKER__TICKET_HDR;
            size_t tk_off = off;
            off += invoker__proto_ticket_size(&tk);
            ran |= run_ticket(&c, &tk, tk_off, inline_arg, i + 1 < count);
            if (cfg->max_tasks_per_worker && ++done >= cfg->max_tasks_per_worker) {
                send_frames(&c, NULL, 0);
                _exit(0);   /* the rest of the packet is requeued by the parent */
            }
        }
        send_frames(&c, NULL, 0);   /* when the last one was cancelled */
        if (off != (size_t)n)
            _exit(INVOKER__EXIT_PROTOCOL);
        /* The parent may be waiting for the queue to move to stock it
         * again, and a packet of cancelled tasks sends no outcome. */
        if (!ran)
            send_frame(inv, c.result_wr, INVOKER__FRAME_SKIPPED, first.id, first.gen, 0);
    }
}

/* Leaves a new process (a worker forked by the parent, or the fork
 * server) holding only what a worker may: default signal handling, no
 * descriptor of this invoker or of any other (keep and the three every
 * worker uses excepted), no writable mapping of the arena. */
void invoker__child_clean(invoker *inv, const int *keep, size_t nkeep)
{
    child_reset_signals();
    invoker__fd_close(&inv->epfd);
    invoker__fd_close(&inv->urgent_fd);
    invoker__fd_close(&inv->timerfd);
    invoker__fd_close(&inv->kickfd);
    invoker__fd_close(&inv->queue_wr);
    invoker__fd_close(&inv->fs.sock);
    for (unsigned j = 0; j < inv->nrecords; j++) {
        invoker__fd_close(&inv->workers[j].result_rd);
        invoker__fd_close(&inv->workers[j].pidfd);
        invoker__fd_close(&inv->workers[j].go);
    }
    /* This invoker's own went by name above; any other close-on-exec one
     * goes by scanning, which also covers systems without /proc. */
    invoker__fd_close(&inv->idle_rd);
    for (unsigned j = 0; j < inv->nrecords; j++)
        if (inv->workers[j].err)
            invoker__fd_close(&inv->workers[j].err->fd);
    if (inv->err_sink.own)
        invoker__fd_close(&inv->err_sink.fd);
    int all[8] = { inv->queue_rd, inv->arena.ro_fd, inv->idle_wr };
    size_t n = 3;
    for (size_t i = 0; i < nkeep && n < 8; i++)
        all[n++] = keep[i];
    child_close_fds(all, n);
    invoker__argbuf_drop_in_child(inv);
    child_drop_arena(&inv->arena);
}

void invoker__child_run(invoker *inv, unsigned k, int result_wr, int go, int err_wr,
                         const cpu_set_t *allowed)
{
    invoker__worker *w = &inv->workers[k];
    if (err_wr >= 0) {
        /* Our stderr, and that of every program we start: blocking, so a
         * flood waits for the parent rather than losing bytes. */
        (void)invoker__fd_set_blocking(err_wr, true);
        if (err_wr != 2) {
            if (dup2(err_wr, 2) < 0)
                _exit(1);
            close(err_wr);
        } else {
            (void)fcntl(2, F_SETFD, 0);   /* the parent had closed its own 2 */
        }
    } else {
        /* Our copy: no marks into a descriptor 2 that is not the pipe. */
        inv->cfg.capture_stderr = INVOKER_STDERR_OFF;
    }
    /* Our end, made blocking: the parent's end stays non-blocking, and
     * each end is its own open file description, so this changes only ours. */
    (void)invoker__fd_set_blocking(result_wr, true);
    w->result_rd = result_wr;
    child_apply_limits(&inv->cfg);
    if (invoker__table_protect_for_worker(&inv->table, k) != 0)
        _exit(1);
    /* Opened, and written once, before a spare waits for its word: in a
     * new process the first open under /proc/self and the first reset
     * cost tens of microseconds, which would delay its first task (a
     * timed-out task's replacement).  The reset proper comes with the
     * first task. */
    int clear_refs = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    (void)reset_peak(clear_refs);
    if (go >= 0) {
        /* A spare, or a worker of the fork server, all set up: it waits
         * for the parent's word (which the parent sends only once it knows
         * our pid).  EOF: the parent gave up on us. */
        int32_t cpu;
        if (invoker__fd_read_all(go, &cpu, sizeof cpu) != 0)
            _exit(0);
        close(go);
        (void)setpgid(0, 0);   /* the parent did it too; a fork server's worker
                                  was in the server's group until then */
        /* A word with a CPU: the parent pinned us there, to be woken where
         * the dead worker left a CPU idle (see invoker__worker_adopt).  Awake,
         * we may run anywhere again. */
        if (cpu >= 0 && allowed)
            (void)sched_setaffinity(0, sizeof *allowed, allowed);
    }
    unsigned slot = invoker__slot_number(inv, k);
    if (inv->cfg.worker_init) {
        int rc = inv->cfg.worker_init(slot, inv->cfg.objective_ctx);
        if (rc != 0) {
            send_frame(inv, result_wr, INVOKER__FRAME_INIT_FAILED, 0, 0, rc);
            _exit(INVOKER__EXIT_INIT);
        }
    }
    child_loop(inv, k, result_wr, clear_refs);
    _exit(0);
}

bool invoker__child_bind_to_parent(pid_t parent)
{
#ifdef __linux__
    /* Die with the parent, even mid-objective.  The parent may already be
     * gone between fork and prctl: then we have been re-parented. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    return getppid() == parent;
}

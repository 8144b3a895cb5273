/*
 * Internal interfaces of invoker.  Public names are invoker_*; functions
 * shared between files are invoker__<file>_<verb>; statics are unprefixed.
 *
 * How a task travels:
 *
 *   parent                     task queue pipe (packet mode)        workers
 *   pending list --ticket-->  [ticket|ticket|ticket ...]  --read()--> slot k
 *   inflight list <---------- result pipe k <--------------- frame + bytes
 *
 * One pipe in O_DIRECT ("packet") mode is the queue for all workers of an
 * invoker: each write is one ticket, each read() takes exactly one whole
 * ticket, so a worker that finishes takes the next task at once.  A worker
 * read()s its ticket straight into its own slot of the shared table: the
 * kernel copies the ticket there and removes it from the pipe as one step,
 * so there is no instant at which a task is off the queue but nowhere to
 * be seen.  That is what makes "exactly once" hold under SIGKILL.
 *
 * An argument too large for a ticket waits in the arena (arena.c), a
 * memfd the workers map read-only; its ticket carries the offset.
 */
#ifndef INVOKER_INTERNAL_H
#define INVOKER_INTERNAL_H

#include "invoker.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define INVOKER__MAGIC          0x696e766f6b657221ull /* "invoker!": a live handle */
#define INVOKER__DEFAULT_MAX    ((size_t)64 << 20)
#define INVOKER__PACKET         4096u   /* PIPE_BUF on Linux: one ticket at most */
#define INVOKER__TICKET_HDR     48u
#define INVOKER__INLINE_MAX     (INVOKER__PACKET - INVOKER__TICKET_HDR)
#define INVOKER__FRAME_HDR      64u
#define INVOKER__CANCEL_RING    1024u   /* cancelled ids the workers can see */
#define INVOKER__TASK_INLINE    64u     /* argument bytes kept inside the task record */
#define INVOKER__BATCH_MAX      64u     /* tickets in one packet at most */
#define INVOKER__BATCH_RUN_NS   20000u  /* batch only tasks shorter than this on average */
#define INVOKER__HELD_MAX       (8192u - 64u - INVOKER__PACKET)  /* a slot's held frames */
#define INVOKER__HELD_TRAILER   16u     /* after each held frame: its hash, then zeros */
#define INVOKER__HOLD_NS        100000u /* a worker holds no result older than this */
#define INVOKER__HOLD_WAKE_NS   1000000u /* the parent takes results held this long */
#define INVOKER__GATHER_MAX_NS  4000000u /* the longest invoker_wait lets a result wait */
#define INVOKER__EXIT_INIT      120     /* worker exit status: worker_init failed */
#define INVOKER__EXIT_PROTOCOL  121     /* worker exit status: it found its slot scribbled */

/* ---- proto.c: what crosses between parent and worker ----------------- */

enum { INVOKER__TICKET_BIG = 1u };   /* argument in the arena at arg_off */
/* The flags' top 24 bits: the attempt this dispatch is (1 the first), for
 * objectives that ask (invoker_current_task); 0 when the count passed them. */
#define INVOKER__TICKET_ATTEMPT_SHIFT 8u
#define INVOKER__TICKET_ATTEMPT_MAX   0xffffffu

typedef struct invoker__ticket {      /* 48 bytes, then up to INLINE_MAX argument bytes */
    uint32_t magic;
    uint32_t flags;
    uint64_t id;
    uint64_t arg_len;
    uint32_t gen;                     /* which dispatch of the task this is */
    uint32_t batch;                   /* first ticket of a packet: tickets in it */
    uint64_t check;
    uint64_t arg_off;                 /* BIG: where in the arena; else 0 */
} invoker__ticket;

/* A frame's kind, or'd with INVOKER__FRAME_HELD when the worker held it
 * (see child_loop): it left some tasks after its own, so bytes that come
 * before it in the pipe need not be its task's. */
#define INVOKER__FRAME_HELD 0x80u

enum invoker__frame_kind {
    INVOKER__FRAME_RESULT = 1,        /* len payload bytes follow */
    INVOKER__FRAME_OBJECTIVE,         /* objective returned code */
    INVOKER__FRAME_TOO_LARGE,         /* result passed max_result_bytes */
    INVOKER__FRAME_PROTOCOL,          /* the worker found its slot scribbled */
    INVOKER__FRAME_INIT_FAILED,       /* worker_init returned code */
    INVOKER__FRAME_SKIPPED,           /* every task of the packet was cancelled:
                                         no outcome, only word that the queue moved */
    INVOKER__FRAME_KIND_MAX
};

typedef struct invoker__frame {       /* 64 bytes, then len bytes padded to 16 */
    uint32_t magic;
    uint32_t kind;
    uint64_t id;
    uint32_t gen;
    int32_t  code;
    uint64_t len;
    uint64_t run_ns;
    uint64_t cpu_ns;                  /* CPU of the attempt, reaped children included */
    int64_t  max_rss_kib;             /* its peak resident set; -1: unknown */
    uint64_t check;
} invoker__frame;

void     invoker__proto_ticket_seal(invoker__ticket *t, uint64_t key);
bool     invoker__proto_ticket_valid(const invoker__ticket *t, uint64_t key, size_t max_arg);
size_t   invoker__proto_ticket_size(const invoker__ticket *t);   /* header + padded inline bytes */
/* The i-th valid ticket of the packet at buf (len bytes), copied to *out;
 * false past the end or at the first malformed one. */
bool     invoker__proto_packet_ticket(const unsigned char *buf, size_t len, unsigned i,
                                      uint64_t key, size_t max_arg, invoker__ticket *out,
                                      size_t *offset);
void     invoker__proto_frame_seal(invoker__frame *f, uint64_t key);
/* 0, or -EPROTO when the header is malformed or len passes max_len. */
int      invoker__proto_frame_check(const invoker__frame *f, uint64_t key, size_t max_len);
size_t   invoker__proto_frame_size(uint64_t len);   /* header + padded payload */
uint64_t invoker__proto_running_tag(uint64_t id, uint64_t key);
uint64_t invoker__proto_running_id(uint64_t tag, uint64_t key); /* 0: not a valid tag */
uint64_t invoker__proto_mix(uint64_t x);
/* The keyed hash that follows a held frame of size bytes. */
uint64_t invoker__proto_held_hash(const unsigned char *frame, size_t size, uint64_t key);

/* ---- table.c: the shared-memory task-id table ------------------------- */

/* One slot per worker, page aligned, so a worker can be given its own slot
 * and nothing else: after the fork it maps the others PROT_NONE and the
 * header read-only, and a scribbling objective can spoil only its own. */
typedef struct invoker__slot {
    _Atomic uint64_t running;     /* running tag of the task it runs, 0 when idle */
    _Atomic uint64_t start_ns;    /* CLOCK_MONOTONIC start of that task */
    _Atomic uint64_t held;        /* bytes in held_frames */
    _Atomic uint64_t held_since;  /* when the first of them ended */
    /* The worker's CPU (ns, reaped children included) when its current
     * task began: what a post-mortem subtracts (an objective may scribble
     * it: forensics only, clamped). */
    _Atomic uint64_t cpu_start_ns;
    _Atomic uint64_t kids_start_ns; /* of which its reaped children's */
    /* Non-zero while its task may have child processes to account for
     * (a program of invoker_command_objective, or an objective that has
     * reaped one before in this worker): see invoker__worker_usage. */
    _Atomic uint64_t kids;
    uint64_t         reserved[1];
    /* The worker read()s tickets here; read by the parent only once the
     * worker is dead, when nothing can change it any more. */
    _Alignas(64) unsigned char ticket[INVOKER__PACKET];
    /* Frames of a packet's finished tasks not yet sent, each followed by a
     * keyed hash of its bytes (the objective can write here): the worker
     * sends them together; the parent delivers them itself if the worker
     * dies first, or keeps them waiting too long (see invoker__frames_deliver_held).
     * Two pages in all. */
    unsigned char    held_frames[INVOKER__HELD_MAX];
} invoker__slot;

typedef struct invoker__table {
    void          *base;
    size_t         size;
    size_t         header_size;
    size_t         slot_size;
    unsigned       nslots;
    _Atomic uint64_t *cancelled;  /* [INVOKER__CANCEL_RING] ids, in the header */
    _Atomic uint64_t *gathering;  /* in the header: non-zero while the parent gathers */
} invoker__table;

int            invoker__table_create(invoker__table *t, unsigned nslots);
void           invoker__table_destroy(invoker__table *t);
invoker__slot *invoker__table_slot(const invoker__table *t, unsigned k);
void           invoker__table_reset_slot(invoker__table *t, unsigned k);
int            invoker__table_protect_for_worker(const invoker__table *t, unsigned k);

/* ---- arena.c: arguments too large for a ticket, shared read-only ------ */

#define INVOKER__ARENA_CLASSES  48
#define INVOKER__ARENA_RETIRED  16
#define INVOKER__ARENA_KEEP     ((size_t)16 << 20)  /* pages always kept when empty */

typedef struct invoker__arena {
    int            fd;            /* memfd, read-write: the parent's */
    int            ro_fd;         /* the same file, read-only: the workers' */
    size_t         unit;          /* page size: the smallest block */
    unsigned char *base;          /* the parent's mapping of [0, size) */
    size_t         size;          /* of the file and of that mapping */
    size_t         top;           /* blocks carved in this burst end here */
    size_t         filled;        /* the file may hold pages below this offset */
    size_t         live;          /* blocks handed out */
    uint64_t       free_head[INVOKER__ARENA_CLASSES];   /* offset + 1; 0: empty */
    struct invoker__arena_map { void *base; size_t size; } retired[INVOKER__ARENA_RETIRED];
    unsigned       nretired;      /* old mappings a callback may still read */
} invoker__arena;

int      invoker__arena_init(invoker__arena *a);
void     invoker__arena_destroy(invoker__arena *a);
/* A block of at least len bytes at *off; in_callback keeps old mappings.
 * *fresh (fresh may be NULL): carved anew, so the file has none of its
 * pages yet. */
int      invoker__arena_alloc(invoker__arena *a, size_t len, bool in_callback, uint64_t *off,
                              bool *fresh);
/* Copies len bytes from src into the block at off. */
void     invoker__arena_write(invoker__arena *a, uint64_t off, const void *src, size_t len,
                              bool fresh);
void     invoker__arena_free(invoker__arena *a, uint64_t off, size_t len);
/* Outside callbacks: unmaps retired mappings; when empty, starts the next
 * burst from offset 0 and gives back the pages past what this one used. */
void     invoker__arena_settle(invoker__arena *a);
/* The size of the block that holds len bytes. */
size_t   invoker__arena_block(const invoker__arena *a, size_t len);
/* The block at off, allocated for len bytes, now holds new_len <= len:
 * what it no longer needs goes to the free lists, and it is freed later
 * as a block of new_len. */
void     invoker__arena_shrink(invoker__arena *a, uint64_t off, size_t len, size_t new_len);

/* ---- argbuf.c: argument buffers the caller writes in place ------------ */

typedef struct invoker__argbuf {
    unsigned char *ptr;           /* the caller's; NULL: an empty entry */
    uint64_t       off;           /* its block in the arena; UINT64_MAX: heap */
    size_t         len;           /* as allocated */
    size_t         map_len;       /* of the caller's mapping of the block */
} invoker__argbuf;

typedef struct invoker__argbufs { /* held by the caller, by address */
    invoker__argbuf *v;
    size_t           cap, count;  /* cap: 0 or a power of two */
} invoker__argbufs;

/* Every buffer still held: unmapped or freed, its block given back. */
void     invoker__argbuf_destroy(struct invoker *inv);
/* In a new process: unmaps the caller's writable views of arena blocks. */
void     invoker__argbuf_drop_in_child(struct invoker *inv);

/* ---- fdutil.c ---------------------------------------------------------- */

int      invoker__fd_pipe(int fds[2], bool packet);   /* O_CLOEXEC|O_NONBLOCK both ends */
int      invoker__fd_set_blocking(int fd, bool blocking);
void     invoker__fd_close(int *fd);                  /* closes and sets -1; ignores -1 */
ssize_t  invoker__fd_read(int fd, void *buf, size_t len);   /* EINTR retried */
ssize_t  invoker__fd_write(int fd, const void *buf, size_t len);
int      invoker__fd_write_all(int fd, const void *buf, size_t len); /* blocking fd */
int      invoker__fd_read_all(int fd, void *buf, size_t len);        /* blocking fd; -EPIPE on EOF */
void     invoker__fd_grow_pipe(int fd, size_t bytes);  /* best effort F_SETPIPE_SZ */
uint64_t invoker__now_ns(void);
int      invoker__fd_pidfd_open(pid_t pid);            /* -errno when unsupported */
/* Sleeps until something in the epoll set is ready, or ns have passed. */
void     invoker__fd_epoll_sleep(int epfd, uint64_t ns);

/* ---- tasks.c: task records, id lookup, lists; no syscalls ------------- */

enum invoker__task_state {
    INVOKER__TASK_FREE = 0,
    INVOKER__TASK_PENDING,        /* in the parent, waiting for the queue */
    INVOKER__TASK_INFLIGHT,       /* its ticket is in the queue or in a worker */
    INVOKER__TASK_DONE,           /* outcome decided, callback not yet made */
    INVOKER__TASK_TWIN            /* waits for an identical task's outcome */
};

typedef struct invoker__task invoker__task;
typedef struct invoker__list {
    invoker__task *head, *tail;
    size_t         count;
} invoker__list;

struct invoker__task {
    invoker_id      id;
    void           *tag;
    unsigned char  *arg;            /* inline_arg or a malloc'd copy; NULL: in the arena */
    size_t          arg_len;
    uint64_t        arg_off;        /* in the arena, when arg_len > INVOKER__INLINE_MAX */
    double          timeout;        /* seconds; 0: none */
    double          run_timeout;    /* of the current attempt: timeout, or for an
                                       adaptive task fixed once seen running; 0: none */
    bool            adaptive;       /* its timeout is timeout_factor's (see adaptive.c) */
    bool            err_marked;     /* the worker's end-of-task mark for this
                                       attempt was read (see stderr.c) */
    uint16_t        err_len;        /* bytes at err_tail */
    unsigned char  *err_tail;       /* its attempt's stderr tail, malloc'd; NULL: none */
    uint64_t        start_ns;       /* start of the current attempt, 0 unseen */
    uint64_t        warmed_ns;      /* the start of the attempt whose worker's /proc
                                       was read ahead of its deadline (deadlines.c) */
    uint64_t        queue_end;      /* the backend's: local, the end offset of its ticket
                                       in the queue stream; MPI, its endpoint */
    uint32_t        gen;            /* dispatch count; a ticket carries it */
    uint32_t        counted_gen;    /* the gen whose start is in attempts */
    unsigned        attempts;
    int             worker;
    int             state;
    uint8_t         suspect;        /* orphan sweep: 1 missing once, 2 lost */
    uint8_t         orphaned;       /* times the sweep found it lost */
    bool            batched;        /* in flight in a packet of several tickets */
    double          run_seconds;
    double          cpu_seconds;    /* of its last attempt, as invoker_task says */
    long            max_rss_kib;
    invoker_failure fail;           /* for DONE tasks reported by on_error; 0 with
                                       cached: a success, result in cached_res */
    int             code;
    uint64_t        hash;           /* of the argument, when the cache merges */
    bool            cached;         /* its outcome is not its own evaluation */
    bool            leads;          /* in the cache's twin table */
    bool            journaled;      /* its outcome is written already */
    size_t          twin_slot;      /* where it leads, in the cache's keys, */
    uint64_t        twin_epoch;     /* unless they were rebuilt since */
    struct invoker__centry *cached_entry; /* holds cached_res: one reference
                                       (cache.c) */
    const unsigned char *cached_res;
    size_t          cached_len;
    struct invoker__task *leader;   /* TWIN: the task it waits for */
    invoker__list   twins;          /* tasks waiting for this one's outcome */
    struct invoker__task *prev, *next;  /* the list its state puts it in */
    _Alignas(16) unsigned char inline_arg[INVOKER__TASK_INLINE];
};

typedef struct invoker__task_slot {
    invoker_id     id;
    invoker__task *task;            /* NULL: empty */
} invoker__task_slot;

/* Ids are handed out in sequence, so the live ones are nearly all recent:
 * those in [base, base + ring_cap) sit at ring[id % ring_cap], found by
 * indexing, and the few that outlive base (a slow task among many fast
 * ones) move to a small hash table on the way out of the window. */
typedef struct invoker__tasks {
    invoker__task **ring;           /* NULL: no task with that id */
    size_t          ring_cap;       /* a power of two */
    size_t          ring_count;
    invoker_id      base;           /* lowest id the ring can hold */
    invoker__task_slot *slots;      /* ids below base: open addressing, linear probing */
    size_t          cap, nslow;
    size_t          count;          /* in ring and slots together */
    invoker__task  *free;           /* recycled records, linked through next */
    size_t          nfree;
} invoker__tasks;

int            invoker__tasks_init(invoker__tasks *ts);
void           invoker__tasks_free(invoker__tasks *ts);
/* Not yet findable.  An argument over INVOKER__INLINE_MAX is not copied:
 * the caller puts it in the arena (arg NULL, arg_off set). */
invoker__task *invoker__tasks_new(invoker__tasks *ts, invoker_id id, const void *arg,
                                  size_t arg_len);
int            invoker__tasks_insert(invoker__tasks *ts, invoker__task *t);
invoker__task *invoker__tasks_find(const invoker__tasks *ts, invoker_id id);
void           invoker__tasks_remove(invoker__tasks *ts, invoker__task *t);
void           invoker__tasks_release(invoker__tasks *ts, invoker__task *t);
void           invoker__list_push_back(invoker__list *l, invoker__task *t);
void           invoker__list_push_front(invoker__list *l, invoker__task *t);
void           invoker__list_unlink(invoker__list *l, invoker__task *t);

/* ---- worker.c (the parent's side), child.c (the worker's own), result.c:
 *      the one seam between the parent and its workers ------------------ */

/* A worker slot, as users number them, has two process records (and two
 * table slots): record k and record k + nworkers.  One holds its worker;
 * the other is empty, or holds a spare, or the worker being replaced,
 * which dies and is read post-mortem while its successor already runs. */
enum invoker__worker_state {
    INVOKER__WORKER_EMPTY = 0,    /* no process */
    INVOKER__WORKER_LIVE,
    INVOKER__WORKER_DYING,        /* killed or seen closing; not yet reaped */
    INVOKER__WORKER_SPARE,        /* set up, waiting on go to take the slot */
    INVOKER__WORKER_SPAWNING      /* asked of the fork server; its pid not yet known */
};

typedef struct invoker__rx {      /* frames read from one worker */
    unsigned char *buf;
    size_t         cap, len;
    unsigned char *big;           /* payload larger than buf, read in place */
    invoker__frame big_hdr;
    size_t         big_have, big_cap;
    unsigned char *kept;          /* the last big buffer, for the next one */
    size_t         kept_cap;
} invoker__rx;

typedef struct invoker__worker {
    int          state;
    pid_t        pid;
    int          result_rd;       /* parent's end of the result pipe */
    int          pidfd;           /* -1 where pidfd_open is missing */
    invoker_failure kill_reason;  /* why we killed it; 0: we did not */
    bool         kill_due;        /* killed, but not yet signalled (kill_soon) */
    uint8_t      blame;           /* whose fault a protocol kill was: INVOKER__BLAME_* */
    bool         garbage;         /* skipped bytes since its last valid frame */
    size_t       garbage_bytes;
    bool         took_task;       /* since its spawn */
    uint64_t     eof_at;          /* ns; its result pipe closed while it lived */
    int          init_code;       /* worker_init's code, when it sent one */
    int          go;              /* a spare's socket, for the word to start; else -1 */
    uint64_t     term_at;         /* ns; sent SIGTERM (kill_grace), SIGKILL due then; 0: none */
    uint64_t     reaped_cpu_ns;   /* from its reaping (wait4): CPU of its life */
    long         reaped_rss_kib;  /* and peak RSS since its last task began; -1 */
    invoker__rx  rx;
    struct invoker__errpipe *err; /* with capture_stderr; else NULL */
    /* While SPAWNING: the request's number; whether it is to be a spare. */
    uint64_t     spawn_seq;
    bool         spawn_spare;
} invoker__worker;

/* What a worker slot remembers across the processes that fill it. */
typedef struct invoker__seat {
    unsigned     fail_streak;     /* start-up failures in a row */
    uint64_t     respawn_at;      /* ns; no worker forked before */
    unsigned     spare_streak;    /* spares lost before they were needed, in a row */
    uint64_t     spare_at;        /* ns; no spare forked before */
    int          free_cpu;        /* where its last worker ran, once dead; -1 */
} invoker__seat;

/* The worker side of invoker_result_write: the result accumulates behind
 * room for a frame header, so header and bytes leave in one write(). */
struct invoker_result {
    unsigned char *buf;           /* INVOKER__FRAME_HDR bytes, then the result */
    size_t         len, cap;      /* result bytes; capacity after the header */
    size_t         max;
    bool           too_large;
    /* The running task, for invoker_current_task and the command objective. */
    invoker_id     task_id;
    unsigned       attempt;       /* 1 the first; 0 unknown */
    unsigned       worker;        /* slot number */
    uint32_t       dir_tag;       /* per invoker: names its work directories */
    long           child_rss_kib; /* peak of a child the objective reaped; -1: none */
    double         cpu_limit;     /* the config's, for a program; 0 in inline mode */
    const char    *root;          /* the command objective's work directory root,
                                     absolute, as at invoker_create; NULL: resolve now */
};
/* result.c */
int  invoker__result_reserve(struct invoker_result *r, size_t len);
/* The objective reaped a child with this peak RSS (from wait4). */
void invoker__result_note_child(struct invoker_result *r, long max_rss_kib);

/* ---- command.c: the external-program objective ------------------------- */

/* The work directory's name for an attempt, under root: written to buf
 * (size bytes); false when it does not fit. */
bool invoker__command_dir(char *buf, size_t size, const char *root, uint32_t dir_tag,
                          uint64_t id, unsigned attempt);
/* The parent, after worker k died during the command objective's task
 * id (attempt): removes the work directory the dead worker could not,
 * when the config keeps none. */
void invoker__command_cleanup(struct invoker *inv, uint64_t id, unsigned attempt);
/* Empties the directories cleanup put aside, for at most a slice of time:
 * when to call again, or UINT64_MAX when none is left. */
uint64_t invoker__command_tidy(struct invoker *inv, uint64_t now);
/* All of them, now (destroy). */
void invoker__command_tidy_all(struct invoker *inv);
/* The work directory root of cmd made absolute now (malloc'd), so that the
 * parent and every worker find the same directories whatever the cwd and
 * TMPDIR later; NULL when cmd is not valid or the cwd cannot be read (then
 * each resolves it when it needs it), or -ENOMEM in *rc. */
char *invoker__command_root(const void *cmd, int *rc);
uint32_t invoker__command_dir_tag(uint64_t key);

/* A worker killed for breaking the protocol: which of its tasks pays. */
enum { INVOKER__BLAME_RUNNING = 0,   /* the one it runs (a flood: still at it) */
       INVOKER__BLAME_FIRST,         /* its earliest unreported (the running word lied) */
       INVOKER__BLAME_NONE };        /* already reported: the rest are innocent */

struct invoker;
/* k below is a process record (see invoker__worker_state). */
/* Starts a worker in the EMPTY record k: 0 or -errno.  Asked of the fork
 * server, the record is SPAWNING until its answer (invoker__worker_spawned)
 * makes it LIVE; a failure then goes to invoker__staff_spawn_failed.
 * -EBUSY: the server has more requests than its socket holds; the
 * record stays EMPTY, to be asked for after its next answer. */
int  invoker__worker_spawn(struct invoker *inv, unsigned k);
/* Forks a spare into the EMPTY record k: it sets itself up and waits, so
 * that its slot's next worker needs no fork.  0 or -errno, as above. */
int  invoker__worker_spawn_spare(struct invoker *inv, unsigned k);
/* The fork server's answer for the SPAWNING record k: the pid (checked to
 * be our child), a shortage as -errno, or 0: the server failed, the parent
 * forks (or, while destroying, gives the record up). */
void invoker__worker_spawned(struct invoker *inv, unsigned k, pid_t pid);
/* SPARE to LIVE: it goes, woken on cpu when cpu >= 0 (pinned there
 * while it sleeps; it takes its own mask back). */
void invoker__worker_adopt(struct invoker *inv, unsigned k, int cpu);
/* The CPU the process of record k last ran on (a zombie's too); -1 when
 * unknown. */
int  invoker__worker_last_cpu(const struct invoker *inv, unsigned k);
void invoker__worker_kill(struct invoker *inv, unsigned k, invoker_failure why);
/* As invoker__worker_kill, but the signal waits for the next
 * invoker__workers_kill_due, which sends every one still due. */
void invoker__worker_kill_soon(struct invoker *inv, unsigned k, invoker_failure why);
void invoker__workers_kill_due(struct invoker *inv);
/* Workers sent SIGTERM whose grace has ended get SIGKILL (their groups);
 * returns when the next grace ends (UINT64_MAX: none). */
uint64_t invoker__workers_grace(struct invoker *inv, uint64_t now);
/* Worker k's CPU since its current task began (from its clock) and its
 * peak RSS since then (VmHWM, from /proc) while it lives; with the slot's
 * kids set, from /proc both, its reaped and running children's added: -1
 * each when unknown. */
void invoker__worker_usage(const struct invoker *inv, unsigned k, double *cpu, long *rss);
void invoker__worker_close(struct invoker *inv, unsigned k);   /* fds, rx; after reaping */
/* child.c.  In a new process: leaves it only what a worker may hold (keep, and the
 * descriptors every worker reads), with default signal handling. */
void invoker__child_clean(struct invoker *inv, const int *keep, size_t nkeep);
/* fork() with every signal blocked across it: restored in the parent, left
 * blocked in the child (0) until invoker__child_clean resets them.  The
 * child's pid, 0 in the child, or -errno. */
pid_t invoker__fork_blocked(void);
/* In a new process: asks to die with parent; false if it is already gone. */
bool invoker__child_bind_to_parent(pid_t parent);
/* In a cleaned process: becomes worker k, writing to result_wr (a spare,
 * or any worker with go >= 0, first waits for the word), its descriptor 2
 * the capture pipe err_wr when that is >= 0; never returns.
 * allowed: the CPUs it may run on (or NULL), read by the process that
 * forked it before the fork: the parent may pin it the moment it learns
 * its pid, so its own reading could already be the pin (see adopt). */
void invoker__child_run(struct invoker *inv, unsigned k, int result_wr, int go, int err_wr,
                         const cpu_set_t *allowed) __attribute__((noreturn));

/* ---- forkserver.c: the process that forks workers --------------------- */

/* glibc >= 2.34 reads the thread id from the kernel in raise() and abort(),
 * which a raw clone leaves stale; elsewhere the parent forks workers. */
#if defined(__linux__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#define INVOKER__HAVE_FORK_SERVER 1
#else
#define INVOKER__HAVE_FORK_SERVER 0
#endif

typedef struct invoker__forkserver {
    pid_t        pid;             /* 0: none (not made, or given up on) */
    int          sock;            /* requests and answers, watched; -1 */
    int          pidfd;           /* watched, to reap it when it dies; -1 */
    unsigned     pending;         /* requests not yet answered (SPAWNING records) */
    uint64_t     sent_seq;        /* the last request's number */
    uint64_t     answered_seq;    /* the last answered request's number */
    uint64_t     due_ns;          /* given up on if silent until then; 0: owes nothing */
} invoker__forkserver;

bool  invoker__forkserver_supported(void);
int   invoker__forkserver_start(struct invoker *inv);   /* 0 or -errno: then none */
/* Asks the server to fork a worker into record k (a child of this
 * process, its group the server's until the parent moves it), giving it
 * result_wr, go and err_wr (its stderr, when >= 0), which the caller may
 * close at once; it marks the record SPAWNING.  The answer comes with
 * invoker__forkserver_answers.  1: asked; 0: there is no server (now),
 * the caller forks; -EBUSY: the socket is full, ask again after the
 * server's next answer (one is owed). */
int   invoker__forkserver_request(struct invoker *inv, unsigned k, int result_wr, int go,
                                  int err_wr);
/* Reads the answers come (INVOKER__EV_FORKED), each to
 * invoker__worker_spawned; one out of order or not ours ends the server. */
void  invoker__forkserver_answers(struct invoker *inv);
/* Ends a server that has owed an answer for SERVER_WAIT_MS; returns when
 * to look again (UINT64_MAX: it owes nothing). */
uint64_t invoker__forkserver_check(struct invoker *inv, uint64_t now);
/* Waits for every request to be answered, or the server given up on
 * (invoker_create only: the loop never waits on the server). */
void  invoker__forkserver_await(struct invoker *inv);
/* Kills and reaps it and its group; every request outstanding falls back
 * to the parent's fork (invoker__worker_spawned with 0). */
void  invoker__forkserver_stop(struct invoker *inv);

/* ---- adaptive.c: timeouts from the run times of recent successes ------ */

#define INVOKER__ADAPT_RING     100u    /* successes whose median counts */
#define INVOKER__ADAPT_MIN_SEEN 10u     /* successes before it applies */

typedef struct invoker__adapt {
    uint64_t     runs[INVOKER__ADAPT_RING];   /* ns, a ring */
    uint64_t     seen;            /* successes noted, ever */
    uint64_t     median_ns;       /* of runs, once computed */
    bool         stale;           /* runs changed since median_ns */
} invoker__adapt;

struct invoker;
/* A success that ran run_ns (only with timeout_factor). */
void   invoker__adapt_note(struct invoker *inv, uint64_t run_ns);
/* The timeout, in seconds (0: none), an adaptive task starting now gets;
 * !fresh: from the median as last computed (a guess, for the timer). */
double invoker__adapt_timeout(struct invoker *inv, bool fresh);

/* ---- stderr.c: the workers' captured stderr (capture_stderr) ---------- */

#define INVOKER__ERR_TAIL       4096u   /* bytes of a task's stderr its callback gets */
#define INVOKER__ERR_MARK       24u     /* a worker's end-of-task mark in the stream */
/* What the parent reads of a worker's stderr before its frames, until the
 * marks they follow are read: no more than its pipe can hold (a worker
 * blocks on a full one), unless it grew it or a process it left behind
 * writes on. */
#define INVOKER__ERR_DRAIN      (1u << 20)

typedef struct invoker__errpipe {
    int            fd;            /* the parent's read end; -1 */
    size_t         len;           /* bytes in tail: the last ones since the last mark */
    size_t         carry;         /* bytes at hold that may begin a mark */
    bool           mid_line;      /* forwarding: the last byte sent was no newline */
    bool           dropping;      /* bytes since the last mark are no task's */
    unsigned char  hold[INVOKER__ERR_MARK];
    unsigned char  tail[INVOKER__ERR_TAIL];
} invoker__errpipe;

typedef struct invoker__errsink {
    int            fd;            /* where forwarded bytes go; -1: nowhere */
    bool           own;           /* fd is ours: a copy of 2, or a reopening */
    bool           nonblock;      /* a non-blocking reopening: written without a poll */
    bool           sock;          /* send() with MSG_DONTWAIT */
    bool           fifo;          /* a pipe: a vanished reader must not raise SIGPIPE */
    bool           prefix;        /* "[worker N] " before each line */
    uint64_t       sync;          /* the first word of every mark, from the key */
} invoker__errsink;

/* At create: where forwarded bytes go.  0 or -errno. */
int   invoker__err_open_sink(struct invoker *inv);
void  invoker__err_close_sink(struct invoker *inv);
/* A pipe for worker record k: its read end kept in the record (watched),
 * its write end in *wr for the worker's descriptor 2.  0 or -errno. */
int   invoker__err_open(struct invoker *inv, unsigned k, int *wr);
/* Reads, forwards and attributes what worker record k wrote, up to a
 * budget of bytes (0: until the pipe is empty or at its end).  Never makes
 * a callback.  Returns false at the end of the pipe (then closed). */
bool  invoker__err_read(struct invoker *inv, unsigned k, size_t budget);
/* Gives task t its tail unless its mark was read: after reading the pipe
 * again (a frame in hand means its mark, written before it, is in the
 * pipe), what record k wrote since its last mark (t died there, or its
 * mark is beyond the read budget). */
void  invoker__err_claim(struct invoker *inv, unsigned k, struct invoker__task *t);
void  invoker__err_close(struct invoker *inv, unsigned k);
/* In a worker: the end of task (id, gen) in its stream; id 0: of set-up. */
void  invoker__err_mark(const struct invoker *inv, uint64_t id, uint32_t gen);
void  invoker__err_forget(struct invoker__task *t);   /* its tail freed */

/* ---- hash.c ------------------------------------------------------------ */

#define INVOKER__HASH_SEED 0x63616368656b6579ull   /* the cache's key of an argument */
uint64_t invoker__hash(const void *data, size_t len, uint64_t seed);

/* ---- journal.c: outcomes on disk (format described there) -------------- */

#define INVOKER__JOURNAL_HDR 32u
#define INVOKER__JOURNAL_VERSION 1u
#define INVOKER__JREC_HDR    64u
#define INVOKER__JOURNAL_STAGE 128u  /* records written together at most */

enum { INVOKER__JREC_RESULT = 1, INVOKER__JREC_OBJECTIVE = 2 };
enum { INVOKER__JREC_OK = 0, INVOKER__JREC_TORN, INVOKER__JREC_CORRUPT };
enum { INVOKER__JHDR_OK = 0, INVOKER__JHDR_TORN, INVOKER__JHDR_EMPTY };

typedef struct invoker__jrec {        /* one decoded record; pointers into its bytes */
    uint32_t             kind;
    int32_t              code;
    uint64_t             key_hash;
    const unsigned char *arg, *res;
    size_t               arg_len, res_len;
    uint64_t             arg_hash;    /* invoker__hash(arg, INVOKER__HASH_SEED) */
    size_t               size;        /* of the whole record, padding included */
} invoker__jrec;

typedef struct invoker__journal {
    int       fd;             /* -1: no journal */
    int       error;          /* negative errno once a write or sync failed: stopped */
    int       sync;           /* INVOKER_SYNC_* */
    uint64_t  key_hash;
    size_t    max_arg, max_res;
    uint64_t  end;            /* offset past the last good record */
    uint64_t  dirty_since;    /* ns of the first write not yet synced; 0: none */
    uint64_t  written;        /* records this invoker wrote */
    uint64_t  replayed;       /* records read at open that can answer */
    uint64_t  syncs;          /* fdatasyncs made (for tests) */
    /* Records waiting for one write (see invoker__journal_stage). */
    struct invoker__jstaged {
        unsigned char hdr[INVOKER__JREC_HDR];
        uint64_t      arg_hash;
        const void   *arg, *res;
        size_t        arg_len, res_len;
        uint64_t      off;            /* where the flush wrote it */
        bool          packed;         /* copied whole to packed + packed_at */
        size_t        packed_at;
    } staged[INVOKER__JOURNAL_STAGE];
    unsigned  nstaged;
    unsigned char *packed;            /* small staged records, whole; may be NULL */
    size_t    packed_len;
} invoker__journal;

struct invoker__cache;
/* With cfg->journal NULL: j->fd = -1 and 0.  Else opens (0600, never
 * through a symlink), locks (-EBUSY), checks (-EBADMSG, file untouched),
 * replays (each record under our key to the cache's keys: see
 * invoker__cache_key_add), cuts a torn tail and moves a corrupt one aside. */
int      invoker__journal_open(invoker__journal *j, struct invoker__cache *c,
                               const invoker_config *cfg);
void     invoker__journal_close(invoker__journal *j);   /* syncs unless SYNC_NONE */
/* 1 and *buf (the caller frees it) holding the record *rec at off when it
 * answers these argument bytes; 0 when it does not. */
int      invoker__journal_read(const invoker__journal *j, uint64_t off, const void *arg,
                               size_t arg_len, unsigned char **buf, invoker__jrec *rec);
/* Records of one worker's read, written together before their callbacks:
 * stage each (its bytes must stay put until the flush; -ENOBUFS when full
 * or stopped), then flush.  0, or the negative errno that stopped the
 * journal (then and for good). */
int      invoker__journal_stage(invoker__journal *j, uint64_t arg_hash, const void *arg,
                                size_t arg_len, uint32_t kind, int32_t code,
                                const void *res, size_t res_len);
int      invoker__journal_flush(invoker__journal *j);
/* One record, written at once (at *off): 0, or as invoker__journal_flush. */
int      invoker__journal_append(invoker__journal *j, uint64_t arg_hash, const void *arg,
                                 size_t arg_len, uint32_t kind, int32_t code,
                                 const void *res, size_t res_len, uint64_t *off);
int      invoker__journal_sync(invoker__journal *j);
/* SYNC_BATCH: syncs when a write has waited 100 ms; when to come back
 * (UINT64_MAX: nothing waits). */
uint64_t invoker__journal_tick(invoker__journal *j, uint64_t now);
/* Pure, for replay and the fuzzer.  p: the record's first byte, avail: the
 * bytes from there to the end of the file. */
int      invoker__journal_decode(const unsigned char *p, size_t avail, size_t max_arg,
                                 size_t max_res, invoker__jrec *rec);
/* INVOKER__JHDR_OK, _EMPTY (len 0), _TORN (a prefix of our header), or -EBADMSG. */
int      invoker__journal_check_header(const unsigned char *p, size_t len);
void     invoker__journal_file_header(unsigned char hdr[INVOKER__JOURNAL_HDR], uint32_t version);
void     invoker__journal_encode(unsigned char hdr[INVOKER__JREC_HDR], uint64_t key_hash,
                                 uint32_t kind, int32_t code, uint64_t arg_len,
                                 uint64_t res_len, uint64_t body_check);
uint64_t invoker__journal_body_check(uint64_t arg_hash, const void *res, size_t res_len);
size_t   invoker__journal_record_size(size_t arg_len, size_t res_len);
uint64_t invoker__journal_key_hash(const char *key);

/* ---- cache.c: finished outcomes in memory, and twins in flight ---------- */

typedef struct invoker__centry invoker__centry;

typedef struct invoker__cache {
    bool              on;             /* cfg.cache */
    bool              merging;        /* cache or journal: twins in flight wait */
    size_t            count, bytes, max_bytes;   /* finished outcomes in memory */
    invoker__centry  *lru_head, *lru_tail;   /* head: used last */
    /* Argument hash -> what answers it: a task evaluating it (twins wait
     * for it), a finished outcome in memory, a journal record; one table,
     * so that a submit looks in one place, and a leader's key comes to
     * refer to its outcome by a store.  One reference a key, tagged in
     * its low bits (cache.c): 16 bytes, since the table grows with every
     * task journaled and its fresh pages are much of a journal's cost. */
    struct invoker__key {
        uint64_t  hash;               /* its top 2 bits: what ref is (cache.c) */
        union {
            struct invoker__task *t;
            invoker__centry      *e;
            uint64_t              off;
        }         ref;
    }                *keys;           /* hash 0: empty; 1: left */
    size_t            nkey_slots, nkeys, ntombs;
    uint64_t          epoch;          /* rebuilds of keys, ever (64 bits: never wraps
                                         back to an epoch someone remembers) */
} invoker__cache;

struct invoker;
/* Before the journal opens (it hands over what it replays). */
int  invoker__cache_init(struct invoker *inv);
/* A journal record at off answers arguments of this hash (tried by their
 * bytes).  0 or -ENOMEM. */
int  invoker__cache_key_add(invoker__cache *c, uint64_t hash, uint64_t off);
void invoker__cache_free(struct invoker *inv);
/* A task's answer delivered or dropped: its entry's reference goes. */
void invoker__cache_unref(invoker__centry *e);
/* The argument's hash, its key's slot fetched meanwhile. */
uint64_t invoker__cache_hash(const struct invoker *inv, const void *arg, size_t len);
/* At submit, for t (inserted, not yet queued), its argument bytes and
 * their hash: 0: t runs (and leads any twin that comes while it does); 1:
 * answered (t->fail, t->code, t->cached_res set: report it); 2: waits for
 * its twin. */
int  invoker__cache_submit(struct invoker *inv, struct invoker__task *t, const void *arg,
                           uint64_t hash);
/* t's outcome is decided (fail 0: success with res): journals and keeps
 * an evaluated success or objective failure, and when t's outcome cannot
 * answer its twins, sends each to run on its own. */
void invoker__cache_record(struct invoker *inv, struct invoker__task *t, invoker_failure fail,
                           int code, const void *res, size_t res_len);
/* Stages t's outcome for the journal ahead of its callback (see
 * invoker__journal_stage): true when staged. */
bool invoker__cache_stage(struct invoker *inv, struct invoker__task *t, invoker_failure fail,
                          int code, const void *res, size_t res_len);
/* Writes what was staged; the tasks staged are marked journaled. */
void invoker__cache_flush(struct invoker *inv, struct invoker__task **staged, unsigned n);

/* ---- the invoker ------------------------------------------------------- */

/* ---- the seam between the scheduler and a backend ---------------------- */

/* The scheduler (ids, queues, retries, stats, exactly-once callbacks) owns
 * the task records; a backend starts, cancels and reports them.  The local
 * fork backend is one (src/local/); libinvoker_mpi provides another
 * through invoker__sched_create (see sched/invoker_sched.h). */
struct invoker;
typedef struct invoker__backend_ops {
    int      (*refill)(struct invoker *inv);            /* take pending tasks */
    /* Waits up to timeout_ms for events, reports outcomes, makes the
     * callbacks (see invoker_poll); gather as for invoker_wait. */
    int      (*run)(struct invoker *inv, int timeout_ms, bool gather);
    void     (*cancel)(struct invoker *inv, struct invoker__task *t);
    unsigned (*busy)(const struct invoker *inv);
    /* Adds what only the backend knows (workers, spares, ...) to *out. */
    void     (*stats)(const struct invoker *inv, invoker_stats *out);
    /* invoker_destroy: every task reported, every process ended. */
    void     (*shutdown)(struct invoker *inv);
    void     (*release)(struct invoker *inv);           /* its state; may be NULL */
} invoker__backend_ops;

enum { INVOKER__EV_RESULT = 1, INVOKER__EV_PIDFD, INVOKER__EV_TIMER, INVOKER__EV_KICK,
       INVOKER__EV_SERVER, INVOKER__EV_IDLE, INVOKER__EV_STDERR, INVOKER__EV_FORKED };

struct invoker {
    uint64_t        magic;
    const invoker__backend_ops *ops;
    void           *backend;        /* the ops' own state; NULL for the local one */
    invoker_config  cfg;
    uint64_t        key;            /* per-invoker secret sealing tickets and frames */
    pid_t           parent_pid;
    int             depth;          /* > 0 while a callback runs */
    bool            destroying;

    int             epfd, timerfd, kickfd;
    int             urgent_fd;      /* epoll set of what a gather must not delay
                                       (see invoker__watch); -1: no gathering */
    int             idle_rd, idle_wr; /* a pipe a worker writes a byte to when it
                                       finds the queue empty during a gather */
    int             queue_rd, queue_wr;
    uint64_t        queue_written;  /* bytes written to the queue, ever */
    size_t          queue_slots;    /* tickets the queue pipe can hold */
    bool            queue_full;     /* last write saw EAGAIN */
    bool            kicked;
    uint64_t        timer_armed_ns; /* 0: disarmed */

    invoker__table  table;
    invoker__arena  arena;
    char           *command_root;  /* invoker_command_objective's, resolved at create */
    char          **trash;         /* work directories put aside, to be removed */
    unsigned        ntrash, trash_cap;
    uint64_t        tidy_at;       /* the next slice of their removal, not before */
    invoker__forkserver fs;
    invoker__worker *workers;       /* process records, two per slot */
    invoker__seat   *seats;
    unsigned        nworkers;       /* slots */
    unsigned        nrecords;       /* 2 * nworkers */
    unsigned        live;           /* LIVE workers */
    bool            want_spares;    /* each slot keeps a spare ready */

    invoker__tasks  tasks;
    invoker__list   pending, inflight, done;
    invoker__journal journal;
    invoker__cache  cache;
    invoker_id      next_id;
    size_t          outstanding;    /* accepted and not yet reported */
    size_t          inflight_timeouts; /* inflight tasks with a timeout */

    /* start-up failure guard */
    uint64_t        fail_times[16];
    unsigned        fail_count;     /* in fail_times, ring */
    unsigned        fail_limit;
    bool            spawn_tripped;
    uint64_t        untrip_at;      /* ns; when a tripped guard tries again */
    int             last_spawn_error;

    uint64_t        sweep_at;       /* ns; 0: no orphan sweep due */
    uint64_t        last_event_ns;  /* when epoll last had something */
    uint64_t        avg_run_ns;     /* moving average of tasks' run time; 0: none seen */
    uint64_t        avg_result_bytes; /* moving average of results' sizes */
    uint64_t        gather_max_ns;  /* INVOKER__GATHER_MAX_NS; tests raise it */
    uint64_t        audit_at;       /* ns; next look for a stall, 0: none */
    uint64_t        calls;          /* callbacks made, ever */
    uint64_t        held_delivered; /* held frames the parent delivered itself (for tests) */
    size_t          batched_out;    /* in-flight tasks sent in packets of several */
    struct invoker_result inline_out; /* inline mode's reused result buffer */
    invoker__adapt  adapt;          /* with timeout_factor */
    invoker__errsink err_sink;      /* with capture_stderr */
    invoker_stats   stats;
    invoker__argbufs argbufs;       /* from invoker_arg_alloc, not yet submitted or freed */
};

/* Whether t may have a deadline in flight: the same answer all its life. */
static inline bool invoker__task_timed(const invoker__task *t)
{
    return t->timeout > 0 || t->adaptive;
}

static inline uint64_t invoker__to_ns(double seconds)
{
    double ns = seconds * 1e9;
    return ns >= 1.8e19 ? UINT64_MAX / 2 : (uint64_t)ns;
}

/* Where t's argument bytes are (NULL when it has none). */
static inline const void *invoker__task_arg(const invoker *inv, const invoker__task *t)
{
    if (!t->arg_len)
        return NULL;
    return t->arg ? t->arg : inv->arena.base + t->arg_off;
}

static inline bool invoker__valid(const invoker *inv)
{
    return inv && inv->magic == INVOKER__MAGIC;
}

/* What a submit asks of the task it built, whichever way its argument
 * came: arg (the caller's bytes, as the cache compares them) and hash
 * (invoker__cache_hash of them when the cache merges, else 0). */
typedef struct invoker__submission {
    const void *arg;
    uint64_t    hash;
    void       *tag;
    double      timeout;
    bool        adaptive;   /* the timeout is timeout_factor's once it applies */
} invoker__submission;

/* invoker.c: the checks every submit makes before it builds a task:
 * 0, or -EINVAL (timeout), -ECANCELED, -EMSGSIZE, -EAGAIN. */
int  invoker__submit_check(invoker *inv, size_t arg_len, double timeout);
/* Queues the task t built for the next id, its argument in place, and
 * hands it to the cache (answered, waiting for a twin, or run): 0, or
 * -ENOMEM with nothing changed (t is still the caller's). */
int  invoker__submit_enqueue(invoker *inv, invoker__task *t, const invoker__submission *s,
                             invoker_id *id);

/* The slot number, as users see it, of process record k. */
static inline unsigned invoker__slot_number(const invoker *inv, unsigned k)
{
    return k < inv->nworkers ? k : k - inv->nworkers;
}

/* invoker.c: the descriptors the parent waits on.  Every one is in epfd;
 * the timer, the kick, the idle note and the workers' pidfds are in
 * urgent_fd too, so a gather (see invoker__dispatch_run) sleeps on results
 * (and the workers' stderr pipes) only. */
int  invoker__watch(invoker *inv, int fd, unsigned type, unsigned k);   /* 0 or -errno */
void invoker__unwatch(invoker *inv, int fd);

/* sched/report.c: the one place a task's callback is made */
/* t's callback, now: t is detached from every index first, and freed. */
void invoker__report_result(invoker *inv, invoker__task *t, const void *data, size_t len);
void invoker__report_error(invoker *inv, invoker__task *t, invoker_failure fail, int code);
/* Decides t's fate now but leaves the callback to the next poll. */
void invoker__report_later(invoker *inv, invoker__task *t, invoker_failure fail, int code);
void invoker__report_deliver(invoker *inv);   /* the callbacks left for this poll */
void invoker__report_requeue(invoker *inv, invoker__task *t);   /* back to pending, a new gen */
/* A worker died, timed out or failed under t: retry while retries last. */
void invoker__report_fail_or_retry(invoker *inv, invoker__task *t, invoker_failure fail, int code);
void invoker__report_release(invoker *inv, invoker__task *t);   /* its record and argument */

/* sched/wake.c: what wakes the caller's loop (invoker_fd) */
void invoker__wake_kick(invoker *inv);
void invoker__wake_arm_timer(invoker *inv, uint64_t at_ns);
void invoker__wake_disarm_timer(invoker *inv);

/* local/queue.c: pending tasks into the queue pipe */
int  invoker__queue_refill(invoker *inv);
uint64_t invoker__queue_held_look_at(uint64_t now);   /* the next look at held results */

/* local/frames.c: what workers write back */
/* The in-flight task with this id and dispatch, or NULL. */
invoker__task *invoker__frames_current(invoker *inv, uint64_t id, uint32_t gen);
void invoker__frames_note_start(const invoker *inv, invoker__task *t, unsigned k,
                                uint64_t start_ns);
void invoker__frames_usage_alive(const invoker *inv, invoker__task *t, unsigned k);
bool invoker__frames_read(invoker *inv, unsigned k);   /* false at end of file */
void invoker__frames_deliver_held(invoker *inv, unsigned k);
uint64_t invoker__frames_look_at_held(invoker *inv, uint64_t now);   /* when to look next */

/* local/staff.c: deaths read post-mortem, slots refilled */
void invoker__staff_worker_gone(invoker *inv, unsigned k);
void invoker__staff_result_eof(invoker *inv, unsigned k);
void invoker__staff_fail_unrunnable(invoker *inv);
/* Record k's worker (a spare or not) could not be had: its slot backs off. */
void invoker__staff_spawn_failed(invoker *inv, unsigned k, bool spare, int rc, uint64_t now);
uint64_t invoker__staff_slots(invoker *inv, uint64_t now);   /* when to try again */

/* local/deadlines.c: timeouts and the sweep for lost tasks */
uint64_t invoker__deadlines_check_running(invoker *inv, uint64_t now);   /* the next deadline */
void invoker__deadlines_sweep(invoker *inv, uint64_t now);

/* local/dispatch.c: the parent's side of the loop */
/* Callbacks made, or -errno.  gather (invoker_wait): results may wait a
 * little while every worker has queued work (see gather_ns). */
int  invoker__dispatch_run(invoker *inv, int timeout_ms, bool gather);
unsigned invoker__dispatch_busy(const invoker *inv);
void invoker__dispatch_shutdown(invoker *inv);
void invoker__dispatch_cancel(invoker *inv, invoker__task *t);
int  invoker__dispatch_inline(invoker *inv);

#endif

/* The journal: resume after the optimizer dies, nothing evaluated twice,
 * nothing a callback reported lost; torn, flipped, foreign and forged
 * files; paths refused; the lock; a full disk; the sync modes. */
#include "outcomes.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

/* Syscalls of the journal wrapped (-Wl,--wrap, see tests/CMakeLists.txt):
 * a pwritev made to fail, and the fdatasyncs that follow it counted. */
static unsigned pwritev_calls, pwritev_fail_at;   /* 0: never fails */
static unsigned datasyncs, datasyncs_after_fail;
static bool pwritev_failed;

ssize_t __real_pwritev(int fd, const struct iovec *iov, int n, off_t off);
ssize_t __wrap_pwritev(int fd, const struct iovec *iov, int n, off_t off);
ssize_t __wrap_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    if (pwritev_fail_at && ++pwritev_calls == pwritev_fail_at) {
        pwritev_failed = true;
        errno = ENOSPC;
        return -1;
    }
    return __real_pwritev(fd, iov, n, off);
}

int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_fdatasync(int fd)
{
    datasyncs++;
    datasyncs_after_fail += pwritev_failed;
    return __real_fdatasync(fd);
}

/* The journal file (by inode) made shorter by "someone else" when it is
 * first read or mapped after invoker_create's fstat, or its reads made to
 * fail. */
static ino_t shrink_ino;   /* 0: not armed */
static off_t shrink_to;
static int pread_errno;

static void shrink_if_armed(int fd)
{
    struct stat st;
    if (shrink_ino && fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == shrink_ino) {
        shrink_ino = 0;
        assert_int_equal(ftruncate(fd, shrink_to), 0);
    }
}

ssize_t __real_pread(int fd, void *buf, size_t len, off_t off);
ssize_t __wrap_pread(int fd, void *buf, size_t len, off_t off);
ssize_t __wrap_pread(int fd, void *buf, size_t len, off_t off)
{
    if (pread_errno) {
        errno = pread_errno;
        return -1;
    }
    shrink_if_armed(fd);
    return __real_pread(fd, buf, len, off);
}

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    shrink_if_armed(fd);
    return __real_mmap(addr, len, prot, flags, fd, off);
}

/* fsyncs of a directory counted, and how many had come when the journal
 * (by inode) was last cut short. */
static unsigned dir_syncs, dir_syncs_at_cut;
static ino_t cut_ino;
static int dir_sync_errno;   /* non-zero: a directory's fsync fails so */

int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __wrap_fsync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        dir_syncs++;
        if (dir_sync_errno) {
            errno = dir_sync_errno;
            return -1;
        }
    }
    return __real_fsync(fd);
}

int __real_ftruncate(int fd, off_t len);
int __wrap_ftruncate(int fd, off_t len);
int __wrap_ftruncate(int fd, off_t len)
{
    struct stat st;
    if (cut_ino && fstat(fd, &st) == 0 && st.st_ino == cut_ino)
        dir_syncs_at_cut = dir_syncs;
    return __real_ftruncate(fd, len);
}

static void unwrap(void)
{
    dir_syncs = dir_syncs_at_cut = 0;
    cut_ino = 0;
    dir_sync_errno = 0;
    pwritev_calls = pwritev_fail_at = datasyncs = datasyncs_after_fail = 0;
    pwritev_failed = false;
    shrink_ino = 0;
    pread_errno = 0;
}

typedef struct fixture {
    outcomes o;
    steer   *st;
    int      fds;
    char     dir[64];
    char     path[128];
    char     mnt[128];    /* a tmpfs mounted by a test, or "" */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->fds = count_open_fds();
    f->st = steer_map();
    outcomes_init(&f->o, 4096);
    strcpy(f->dir, "/tmp/invoker-journal-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/j", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    destroy_leftovers();
    unwrap();
    if (f->mnt[0])
        (void)umount2(f->mnt, MNT_DETACH);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(count_open_fds(), f->fds);
    assert_int_equal(count_children(), 0);
    munmap(f->st, sizeof *f->st);
    free(f->o.s);
    free(f);
    return 0;
}

static void reset(fixture *f)
{
    memset(f->o.s, 0, f->o.cap * sizeof *f->o.s);
    f->o.calls = 0;
    for (unsigned k = 0; k < OUT_KEYS; k++)
        atomic_store(&f->st->evals[k], 0);
}

static void journal_config(fixture *f, invoker_config *cfg, const char *path, unsigned workers)
{
    outcomes_config(&f->o, cfg, f->st, workers);
    cfg->journal = path;
    cfg->journal_key = "steered v1";
    if (workers == 0)
        cfg->inline_mode = 1;
}

static invoker *open_journal(fixture *f, const char *path, unsigned workers)
{
    invoker_config cfg;
    journal_config(f, &cfg, path, workers);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    f->o.inv = track(inv);
    return inv;
}

/* Runs keys [0, n) through a fresh invoker on path; ids[k] gets key k's. */
static void run_keys(fixture *f, const char *path, unsigned workers, unsigned n, invoker_id *ids)
{
    invoker *inv = open_journal(f, path, workers);
    for (unsigned k = 0; k < n; k++)
        ids[k] = submit_key(inv, k, k % 5, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(destroy_tracked(inv), 0);
}

static void read_file(const char *path, unsigned char **buf, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *buf = malloc(n > 0 ? (size_t)n : 1);
    assert_int_equal(fread(*buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
}

static void write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* ---- resume -------------------------------------------------------------- */

static void test_resume_answers_journaled_outcomes_with_identical_bytes(void **state)
{
    fixture *f = *state;
    invoker_id ids[50], again[50];
    for (unsigned k = 0; k < 50; k++) {
        f->st->plan[k][0] = k % 10 == 3 ? ACT_FAIL : k % 10 == 7 ? ACT_CRASH : ACT_OK;
    }
    run_keys(f, f->path, 2, 50, ids);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    seen first[50];
    for (unsigned k = 0; k < 50; k++) {
        first[k] = *seen_get(&f->o, ids[k]);
        if (k % 10 == 7)
            f->st->plan[k][0] = ACT_OK;   /* this time it would answer */
    }
    reset(f);

    invoker *inv = open_journal(f, f->path, 2);
    for (unsigned k = 0; k < 50; k++)
        again[k] = submit_key(inv, k, k % 5, 0);
    assert_int_equal(f->o.calls, 0);   /* never inside submit */
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats stats;
    invoker_get_stats(inv, &stats);
    assert_int_equal(destroy_tracked(inv), 0);
    for (unsigned k = 0; k < 50; k++) {
        seen *s = seen_get(&f->o, again[k]);
        if (k % 10 == 7) {   /* a crash is no answer: it ran again */
            assert_int_equal(atomic_load(&f->st->evals[k]), 1);
            assert_answer(s, k);
            assert_false(s->cached);
            continue;
        }
        assert_int_equal(atomic_load(&f->st->evals[k]), 0);
        assert_true(s->cached);
        assert_int_equal(s->attempts, 0);
        assert_int_equal(s->worker, -1);
        assert_int_equal(s->results, first[k].results);
        assert_int_equal(s->errors, first[k].errors);
        assert_int_equal(s->code, first[k].code);
        assert_int_equal(s->len, first[k].len);
        assert_memory_equal(s->res, first[k].res, first[k].len);
        if (k % 10 == 3)
            assert_int_equal(s->failure, INVOKER_FAIL_OBJECTIVE);
        else
            assert_answer(s, k);
    }
    assert_int_equal(stats.cached, 45);
    assert_int_equal(stats.journaled, 5);
    assert_int_equal(stats.journal_error, 0);
}

static void test_records_of_another_key_are_kept_but_never_replayed(void **state)
{
    fixture *f = *state;
    invoker_id ids[10];
    run_keys(f, f->path, 1, 10, ids);
    reset(f);
    invoker_config cfg;
    journal_config(f, &cfg, f->path, 1);
    cfg.journal_key = "steered v2";
    invoker *inv;
    assert_int_equal(invoker_create(&inv, &cfg), 0);
    track(inv);
    for (unsigned k = 0; k < 10; k++)
        submit_key(inv, k, k % 5, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    for (unsigned k = 0; k < 10; k++)
        assert_int_equal(atomic_load(&f->st->evals[k]), 1);
    reset(f);
    run_keys(f, f->path, 1, 10, ids);   /* "steered v1" again: all there */
    for (unsigned k = 0; k < 10; k++) {
        assert_int_equal(atomic_load(&f->st->evals[k]), 0);
        assert_true(seen_get(&f->o, ids[k])->cached);
    }
}

/* Without the cache: the journal answers what this run evaluated, and
 * merges twins in flight. */
static void test_journal_alone_answers_this_runs_outcomes_and_merges_twins(void **state)
{
    fixture *f = *state;
    f->st->slow_ms = 100;
    f->st->plan[5][0] = ACT_SLOW;
    invoker *inv = open_journal(f, f->path, 2);
    invoker_id a = submit_key(inv, 5, 3, 0), b = submit_key(inv, 5, 3, 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_id c = submit_key(inv, 5, 3, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(atomic_load(&f->st->evals[5]), 1);
    assert_answer(seen_get(&f->o, a), 5);
    assert_answer(seen_get(&f->o, b), 5);
    assert_answer(seen_get(&f->o, c), 5);
    assert_true(seen_get(&f->o, b)->cached && seen_get(&f->o, c)->cached);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(st.journaled, 1);
    assert_int_equal(destroy_tracked(inv), 0);
}

static void test_invokers_side_by_side_each_with_its_own_journal(void **state)
{
    fixture *f = *state;
    char other[160];
    snprintf(other, sizeof other, "%s/other", f->dir);
    invoker *a = open_journal(f, f->path, 1);
    invoker *b = open_journal(f, other, 0);   /* inline mode too */
    for (unsigned k = 0; k < 20; k++)
        submit_key(k % 2 ? b : a, k, k % 5, 0);
    assert_int_equal(invoker_wait(a), 0);
    assert_int_equal(invoker_wait(b), 0);
    assert_int_equal(destroy_tracked(a), 0);
    assert_int_equal(destroy_tracked(b), 0);
    reset(f);
    invoker_id ids[20];
    run_keys(f, other, 1, 20, ids);
    for (unsigned k = 0; k < 20; k++) {
        assert_int_equal(atomic_load(&f->st->evals[k]), k % 2 ? 0u : 1u);
        assert_answer(seen_get(&f->o, ids[k]), k);
    }
}

/* ---- files that are not what they should be -------------------------------- */

/* A small journal: key 0 a result, key 1 an objective failure, key 2 a
 * result, written in that order (inline mode: one at a time). */
static void small_journal(fixture *f, unsigned char **img, size_t *len, size_t off[4])
{
    f->st->plan[1][0] = ACT_FAIL;
    invoker *inv = open_journal(f, f->path, 0);
    for (unsigned k = 0; k < 3; k++) {
        submit_key(inv, k, 4 * k, 0);
        assert_int_equal(invoker_wait(inv), 0);
    }
    assert_int_equal(destroy_tracked(inv), 0);
    read_file(f->path, img, len);
    off[0] = INVOKER__JOURNAL_HDR;
    for (unsigned k = 0; k < 3; k++)
        off[k + 1] = off[k] + invoker__journal_record_size(offsetof(targ, fill) + 4 * k,
                                                           k == 1 ? 0 : 40);
    assert_int_equal(off[3], *len);
}

/* Reruns the small journal's keys on path (inline mode): *replayed[k]
 * tells whether key k came from the journal, each checked against its
 * true outcome.  The result of create, or 0. */
static int rerun_small(fixture *f, bool replayed[3])
{
    reset(f);
    invoker_config cfg;
    journal_config(f, &cfg, f->path, 0);
    invoker *inv = NULL;
    int rc = invoker_create(&inv, &cfg);
    if (rc)
        return rc;
    track(inv);
    invoker_id ids[3];
    for (unsigned k = 0; k < 3; k++)
        ids[k] = submit_key(inv, k, 4 * k, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    for (unsigned k = 0; k < 3; k++) {
        seen *s = seen_get(&f->o, ids[k]);
        replayed[k] = s->cached;
        assert_int_equal(atomic_load(&f->st->evals[k]), s->cached ? 0u : 1u);
        if (k == 1) {
            assert_int_equal(s->errors, 1);
            assert_int_equal(s->failure, INVOKER_FAIL_OBJECTIVE);
            assert_int_equal(s->code, 41);
        } else {
            assert_answer(s, k);
        }
    }
    return 0;
}

static void remove_corrupt(fixture *f)
{
    char name[200];
    for (unsigned n = 1; n < 10; n++) {
        snprintf(name, sizeof name, "%s.corrupt.%u", f->path, n);
        (void)unlink(name);
    }
}

static void test_truncated_anywhere_replays_the_whole_records_before_the_cut(void **state)
{
    fixture *f = *state;
    unsigned char *img;
    size_t len, off[4];
    small_journal(f, &img, &len, off);
    for (size_t cut = 0; cut <= len; cut++) {
        write_file(f->path, img, cut);
        bool replayed[3];
        assert_int_equal(rerun_small(f, replayed), 0);
        for (unsigned k = 0; k < 3; k++)
            assert_int_equal(replayed[k], off[k + 1] <= cut);
        char name[200];
        snprintf(name, sizeof name, "%s.corrupt.1", f->path);
        assert_false(exists(name));   /* torn, not corrupt: cut, nothing aside */
    }
    free(img);
}

/* The lock is advisory: a file cut short by someone else while create
 * reads it (after its fstat) is a torn tail, cut at the last whole record,
 * and a read that fails is create's error; never SIGBUS (which a mapping
 * of the file gave). */
static void test_shrunk_while_read_is_torn_and_a_failed_read_an_error(void **state)
{
    fixture *f = *state;
    unsigned char *img;
    size_t len, off[4];
    small_journal(f, &img, &len, off);
    for (size_t cut = 0; cut < len; cut++) {
        write_file(f->path, img, len);
        struct stat st;
        assert_int_equal(stat(f->path, &st), 0);
        shrink_ino = st.st_ino;
        shrink_to = (off_t)cut;
        bool replayed[3];
        assert_int_equal(rerun_small(f, replayed), 0);
        assert_int_equal(shrink_ino, 0);   /* it did shrink */
        size_t kept = INVOKER__JOURNAL_HDR;
        for (unsigned k = 0; k < 3; k++) {
            assert_int_equal(replayed[k], off[k + 1] <= cut);
            if (off[k + 1] <= cut)
                kept = off[k + 1];
        }
        char name[200];
        snprintf(name, sizeof name, "%s.corrupt.1", f->path);
        assert_false(exists(name));
        /* The rerun wrote the keys not replayed after the records kept. */
        assert_true(file_size(f->path) >= (off_t)kept);
    }
    write_file(f->path, img, len);
    pread_errno = EIO;
    invoker_config cfg;
    journal_config(f, &cfg, f->path, 0);
    invoker *inv = NULL;
    assert_int_equal(invoker_create(&inv, &cfg), -EIO);
    pread_errno = 0;
    unsigned char *after;
    size_t after_len;
    read_file(f->path, &after, &after_len);
    assert_int_equal(after_len, len);
    assert_memory_equal(after, img, len);
    free(after);
    free(img);
}

/* Records bigger than the window replay reads the file through, and many
 * that straddle its edges, written here by the encoder: each replays, and
 * a cut inside the big one keeps those before it. */
#define WIDE_KEYS 200u
#define WIDE_BIG  100u

static size_t wide_len(unsigned k)
{
    return k == WIDE_BIG ? (size_t)3 << 20 : 20000 + 7 * k;
}

static unsigned char wide_byte(unsigned k, size_t i)
{
    return (unsigned char)(k * 131u + i * 7u);
}

static void write_wide_journal(const char *path, size_t off[WIDE_KEYS + 1])
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    unsigned char hdr[INVOKER__JREC_HDR > INVOKER__JOURNAL_HDR ? INVOKER__JREC_HDR
                                                               : INVOKER__JOURNAL_HDR];
    invoker__journal_file_header(hdr, INVOKER__JOURNAL_VERSION);
    assert_int_equal(write(fd, hdr, INVOKER__JOURNAL_HDR), (ssize_t)INVOKER__JOURNAL_HDR);
    uint64_t key = invoker__journal_key_hash("steered v1");
    off[0] = INVOKER__JOURNAL_HDR;
    for (unsigned k = 0; k < WIDE_KEYS; k++) {
        targ a = targ_make(k, 0);
        size_t alen = targ_size(&a), rlen = wide_len(k);
        unsigned char *rec = calloc(1, invoker__journal_record_size(alen, rlen));
        unsigned char *res = rec + INVOKER__JREC_HDR + ((alen + 15) & ~(size_t)15);
        memcpy(rec + INVOKER__JREC_HDR, &a, alen);
        for (size_t i = 0; i < rlen; i++)
            res[i] = wide_byte(k, i);
        uint64_t ah = invoker__hash(&a, alen, INVOKER__HASH_SEED);
        invoker__journal_encode(rec, key, INVOKER__JREC_RESULT, 0, alen, rlen,
                                invoker__journal_body_check(ah, res, rlen));
        size_t size = invoker__journal_record_size(alen, rlen);
        assert_int_equal(write(fd, rec, size), (ssize_t)size);
        off[k + 1] = off[k] + size;
        free(rec);
    }
    close(fd);
}

static void test_records_wider_than_the_read_window_replay(void **state)
{
    fixture *f = *state;
    size_t off[WIDE_KEYS + 1];
    write_wide_journal(f->path, off);
    for (int cut = 0; cut < 2; cut++) {
        if (cut)
            assert_int_equal(truncate(f->path, (off_t)(off[WIDE_BIG] + (1u << 20) + 5)), 0);
        reset(f);
        invoker *inv = open_journal(f, f->path, 0);
        assert_int_equal(inv->journal.replayed, cut ? WIDE_BIG : WIDE_KEYS);
        invoker_id ids[WIDE_KEYS];
        for (unsigned k = 0; k < WIDE_KEYS; k++)
            ids[k] = submit_key(inv, k, 0, 0);
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(destroy_tracked(inv), 0);
        for (unsigned k = 0; k < WIDE_KEYS; k++) {
            seen *s = seen_get(&f->o, ids[k]);
            assert_int_equal(s->results, 1);
            assert_int_equal(s->cached, !cut || k < WIDE_BIG);
            if (!s->cached)
                continue;
            assert_int_equal(s->len, wide_len(k));
            for (size_t i = 0; i < OUT_RES_MAX; i++)
                assert_int_equal(s->res[i], wide_byte(k, i));
        }
    }
}

/* A new name survives a power cut only once its directory is synced: the
 * journal created, and a corrupt tail's file, synced before the journal
 * is cut (else a power cut could keep the cut and lose the tail). */
static void test_new_names_are_synced_in_their_directory(void **state)
{
    fixture *f = *state;
    invoker *inv = open_journal(f, f->path, 0);
    assert_true(dir_syncs >= 1);
    assert_int_equal(destroy_tracked(inv), 0);
    dir_syncs = 0;
    inv = open_journal(f, f->path, 0);   /* no new name */
    assert_int_equal(dir_syncs, 0);
    assert_int_equal(destroy_tracked(inv), 0);
    unsigned char *img;
    size_t len, off[4];
    small_journal(f, &img, &len, off);
    img[off[1] + INVOKER__JREC_HDR] ^= 1;   /* the second record's argument */
    write_file(f->path, img, len);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    cut_ino = st.st_ino;
    dir_syncs = 0;
    bool replayed[3];
    assert_int_equal(rerun_small(f, replayed), 0);
    assert_true(replayed[0] && !replayed[1] && !replayed[2]);
    char name[200];
    snprintf(name, sizeof name, "%s.corrupt.1", f->path);
    assert_int_equal(file_size(name), (off_t)(len - off[1]));
    assert_true(dir_syncs_at_cut >= 1);
    /* A directory that fails to sync fails create: the journal is not
     * cut, its tail stays where it was (and in the copy). */
    remove_corrupt(f);
    write_file(f->path, img, len);
    dir_sync_errno = EIO;
    invoker_config cfg;
    journal_config(f, &cfg, f->path, 0);
    assert_int_equal(invoker_create(&inv, &cfg), -EIO);
    assert_int_equal(file_size(f->path), (off_t)len);
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(invoker_create(&inv, &cfg), -EIO);   /* a new journal */
    dir_sync_errno = 0;
    free(img);
}

static void test_every_byte_flip_replays_the_records_before_it_or_ebadmsg(void **state)
{
    fixture *f = *state;
    unsigned char *img;
    size_t len, off[4];
    small_journal(f, &img, &len, off);
    static const unsigned char flips[] = { 0x01, 0x80, 0xff };
    char aside[200];
    snprintf(aside, sizeof aside, "%s.corrupt.1", f->path);
    unsigned ebadmsg = 0, moved = 0;
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t i = 0; i < sizeof flips; i++) {
            img[pos] ^= flips[i];
            write_file(f->path, img, len);
            bool replayed[3];
            int rc = rerun_small(f, replayed);
            if (pos < INVOKER__JOURNAL_HDR) {
                /* The header: not a journal; left as it was. */
                assert_int_equal(rc, -EBADMSG);
                unsigned char *now;
                size_t now_len;
                read_file(f->path, &now, &now_len);
                assert_int_equal(now_len, len);
                assert_memory_equal(now, img, len);
                free(now);
                ebadmsg++;
            } else {
                assert_int_equal(rc, 0);
                unsigned r = 0;
                while (off[r + 1] <= pos)
                    r++;
                for (unsigned k = 0; k < 3; k++)
                    assert_int_equal(replayed[k], k < r);
                /* From the flipped record on, moved aside as it was. */
                unsigned char *tail;
                size_t tail_len;
                read_file(aside, &tail, &tail_len);
                assert_int_equal(tail_len, len - off[r]);
                assert_memory_equal(tail, img + off[r], tail_len);
                free(tail);
                remove_corrupt(f);
                moved++;
            }
            img[pos] ^= flips[i];
        }
    }
    assert_int_equal(ebadmsg, 3 * INVOKER__JOURNAL_HDR);
    assert_int_equal(moved, 3 * (len - INVOKER__JOURNAL_HDR));
    free(img);
}

/* A record claiming 2^63 bytes, with a header check that holds or not, is
 * corruption (moved aside); one claiming a possible length past the end
 * is a torn write (cut). */
static void test_record_claiming_two_to_the_63_is_moved_aside(void **state)
{
    fixture *f = *state;
    unsigned char *img;
    size_t len, off[4];
    small_journal(f, &img, &len, off);
    uint64_t huge = 1ull << 63;
    for (int variant = 0; variant < 4; variant++) {
        unsigned char *bad = malloc(len + 200);
        memcpy(bad, img, off[2]);   /* keys 0 and 1 only */
        unsigned char *h = bad + off[2];
        uint64_t key = invoker__journal_key_hash("steered v1");
        uint64_t arg_len = variant == 3 ? 100 : variant == 1 ? 8 : huge;
        uint64_t res_len = variant == 1 ? huge : variant == 3 ? 100 : 0;
        invoker__journal_encode(h, key, INVOKER__JREC_RESULT, 0, arg_len, res_len, 0);
        if (variant == 2)
            h[60] ^= 1;   /* and its check fails */
        memset(h + INVOKER__JREC_HDR, 0xab, 100);
        size_t bad_len = off[2] + INVOKER__JREC_HDR + 100;
        write_file(f->path, bad, bad_len);
        bool replayed[3];
        assert_int_equal(rerun_small(f, replayed), 0);
        assert_true(replayed[0] && replayed[1] && !replayed[2]);
        if (variant < 3) {
            unsigned char *tail;
            size_t tail_len;
            char aside[200];
            snprintf(aside, sizeof aside, "%s.corrupt.1", f->path);
            read_file(aside, &tail, &tail_len);
            assert_int_equal(tail_len, bad_len - off[2]);
            assert_memory_equal(tail, bad + off[2], tail_len);
            free(tail);
            remove_corrupt(f);
        } else {
            char aside[200];
            snprintf(aside, sizeof aside, "%s.corrupt.1", f->path);
            assert_false(exists(aside));
        }
        free(bad);
    }
    free(img);
}

static void test_foreign_files_and_other_versions_are_ebadmsg_and_untouched(void **state)
{
    fixture *f = *state;
    unsigned char hdr[INVOKER__JOURNAL_HDR];
    invoker__journal_file_header(hdr, INVOKER__JOURNAL_VERSION + 1);
    unsigned char zeros[64] = { 0 };
    const char *text = "x,y\n1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n13,14\n";
    struct { const void *p; size_t len; } files[] = {
        { hdr, sizeof hdr },                 /* another version, its check right */
        { text, strlen(text) },              /* a CSV */
        { "invoker jrnl!", 13 },             /* short, not a prefix of ours */
        { zeros, sizeof zeros },
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        write_file(f->path, files[i].p, files[i].len);
        invoker_config cfg;
        journal_config(f, &cfg, f->path, 1);
        invoker *inv = (invoker *)0x1;
        assert_int_equal(invoker_create(&inv, &cfg), -EBADMSG);
        assert_ptr_equal(inv, (invoker *)0x1);
        unsigned char *now;
        size_t now_len;
        read_file(f->path, &now, &now_len);
        assert_int_equal(now_len, files[i].len);
        assert_memory_equal(now, files[i].p, now_len);
        free(now);
        assert_int_equal(count_children(), 0);
    }
    /* Our header's first bytes only (a death while creating it): begun anew. */
    invoker__journal_file_header(hdr, INVOKER__JOURNAL_VERSION);
    write_file(f->path, hdr, 20);
    invoker *inv = open_journal(f, f->path, 1);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(file_size(f->path), INVOKER__JOURNAL_HDR);
}

static int create_at(fixture *f, const char *path)
{
    invoker_config cfg;
    journal_config(f, &cfg, path, 1);
    invoker *inv = NULL;
    int rc = invoker_create(&inv, &cfg);
    if (rc == 0)
        destroy_tracked(track(inv));
    return rc;
}

static void test_bad_paths_are_refused_and_leave_nothing(void **state)
{
    fixture *f = *state;
    char p[200], target[200];
    snprintf(p, sizeof p, "%s/missing/j", f->dir);
    assert_int_equal(create_at(f, p), -ENOENT);
    /* A symlink at the last component, to a file or to nothing. */
    snprintf(target, sizeof target, "%s/target", f->dir);
    write_file(target, "keep", 4);
    snprintf(p, sizeof p, "%s/link", f->dir);
    assert_int_equal(symlink(target, p), 0);
    assert_int_equal(create_at(f, p), -ELOOP);
    assert_string_equal(invoker_strerror(-ELOOP), "the journal path is a symbolic link");
    assert_int_equal(file_size(target), 4);
    snprintf(p, sizeof p, "%s/dangling", f->dir);
    assert_int_equal(symlink("/tmp/invoker-journal-nowhere", p), 0);
    assert_int_equal(create_at(f, p), -ELOOP);
    assert_false(exists("/tmp/invoker-journal-nowhere"));
    /* Not a regular file. */
    assert_int_equal(create_at(f, f->dir), -EISDIR);
    snprintf(p, sizeof p, "%s/fifo", f->dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(create_at(f, p), -EINVAL);
    /* A read-only directory: a read-only mount where we may mount (root
     * ignores permissions), else one without write permission. */
    snprintf(f->mnt, sizeof f->mnt, "%s/ro", f->dir);
    assert_int_equal(mkdir(f->mnt, 0700), 0);
    int expect;
    if (mount("tmpfs", f->mnt, "tmpfs", MS_RDONLY, "size=64k") == 0) {
        expect = -EROFS;
    } else {
        f->mnt[0] = 0;
        snprintf(p, sizeof p, "%s/ro", f->dir);
        assert_int_equal(chmod(p, 0500), 0);
        expect = geteuid() == 0 ? 0 : -EACCES;
    }
    snprintf(p, sizeof p, "%s/ro/j", f->dir);
    if (expect == 0) {
        print_message("read-only directory: not testable here (root, no mount)\n");
    } else {
        assert_int_equal(create_at(f, p), expect);
        assert_false(f->mnt[0] == 0 && exists(p));
    }
    /* Bad journal_sync. */
    invoker_config cfg;
    journal_config(f, &cfg, f->path, 1);
    cfg.journal_sync = 3;
    invoker *inv = (invoker *)0x1;
    assert_int_equal(invoker_create(&inv, &cfg), -EINVAL);
    cfg.journal_sync = -1;
    assert_int_equal(invoker_create(&inv, &cfg), -EINVAL);
    assert_ptr_equal(inv, (invoker *)0x1);
    assert_false(exists(f->path));
}

/* A device at the path is refused (-EINVAL) without being opened for
 * writing: a terminal never becomes the controlling one of a session
 * that has none (which opening it without O_NOCTTY would make it). */
static void test_a_device_path_is_einval_and_never_opened(void **state)
{
    fixture *f = *state;
    assert_int_equal(create_at(f, "/dev/null"), -EINVAL);
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        int rc = 1, m = -1;
        if (setsid() >= 0 && (m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)) >= 0 &&
            grantpt(m) == 0 && unlockpt(m) == 0 && ptsname(m)) {
            invoker_config cfg;
            journal_config(f, &cfg, ptsname(m), 1);
            invoker *inv = NULL;
            rc = invoker_create(&inv, &cfg);
            /* Without a controlling terminal /dev/tty cannot be opened. */
            int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
            int out[2] = { rc, tty < 0 ? -errno : 0 };
            if (write(fd[1], out, sizeof out) != (ssize_t)sizeof out)
                _exit(3);
            _exit(0);
        }
        _exit(2);   /* no pty here */
    }
    close(fd[1]);
    int out[2] = { 1, 1 }, status;
    ssize_t n = read(fd[0], out, sizeof out);
    close(fd[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 2) {
        print_message("no pseudo-terminal here: only /dev/null checked\n");
        return;
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(n, (ssize_t)sizeof out);
    assert_int_equal(out[0], -EINVAL);
    assert_int_equal(out[1], -ENXIO);
}

static void test_journal_in_use_is_ebusy_until_its_holder_dies(void **state)
{
    fixture *f = *state;
    invoker *a = open_journal(f, f->path, 1);
    assert_int_equal(create_at(f, f->path), -EBUSY);   /* this process */
    assert_int_equal(destroy_tracked(a), 0);
    assert_int_equal(create_at(f, f->path), 0);

    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        invoker_config cfg;
        journal_config(f, &cfg, f->path, 1);
        invoker *inv;
        if (invoker_create(&inv, &cfg) != 0)
            _exit(1);
        (void)!write(ready[1], "r", 1);
        for (;;)
            pause();
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    assert_int_equal(create_at(f, f->path), -EBUSY);   /* another process */
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(create_at(f, f->path), 0);   /* its lock died with it */
}

/* ---- a full disk ------------------------------------------------------------ */

/* 20 results of 8 KiB into a journal with room for 96 KiB: every callback
 * comes, the journal stops and says why, and what it wrote replays.  (One
 * write takes the outcomes of one read from a worker, 64 KiB at most: the
 * first always fits.) */
static void fill_disk(fixture *f, const char *path, int expect)
{
    for (unsigned k = 0; k < 20; k++)
        f->st->plan[k][0] = f->st->plan[k][1] = ACT_BIG;
    invoker *inv = open_journal(f, path, 2);
    invoker_id ids[20];
    for (unsigned k = 0; k < 20; k++)
        ids[k] = submit_key(inv, k, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(destroy_tracked(inv), 0);
    for (unsigned k = 0; k < 20; k++) {
        seen *s = seen_get(&f->o, ids[k]);
        assert_int_equal(s->results, 1);
        assert_int_equal(s->len, 8192);
    }
    assert_int_equal(st.journal_error, expect);
    assert_string_not_equal(invoker_strerror(st.journal_error), "unknown error");
    assert_true(st.journaled > 0 && st.journaled < 20);
    uint64_t journaled = st.journaled;
    reset(f);
    inv = open_journal(f, path, 2);
    for (unsigned k = 0; k < 20; k++)
        ids[k] = submit_key(inv, k, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    assert_int_equal(destroy_tracked(inv), 0);
    unsigned answered = 0;
    for (unsigned k = 0; k < 20; k++) {
        seen *s = seen_get(&f->o, ids[k]);
        assert_int_equal(s->results, 1);
        assert_int_equal(s->len, 8192);
        answered += s->cached;
    }
    assert_int_equal(answered, journaled);
    char aside[200];
    snprintf(aside, sizeof aside, "%s.corrupt.1", path);
    assert_false(exists(aside));
}

static void test_full_disk_callbacks_still_come_and_the_journal_says_why(void **state)
{
    fixture *f = *state;
    snprintf(f->mnt, sizeof f->mnt, "%s/small", f->dir);
    assert_int_equal(mkdir(f->mnt, 0700), 0);
    char path[200];
    snprintf(path, sizeof path, "%s/j", f->mnt);
    if (mount("tmpfs", f->mnt, "tmpfs", 0, "size=96k") == 0) {
        fill_disk(f, path, -ENOSPC);
        return;
    }
    /* No mount here: a file size limit in a child (SIGXFSZ ignored there,
     * the test's own choice: the library changes no disposition). */
    f->mnt[0] = 0;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = { 96 << 10, 96 << 10 };
        setrlimit(RLIMIT_FSIZE, &rl);
        fill_disk(f, path, -EFBIG);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A write that fails after records were written (SYNC_BATCH: not yet
 * synced) stops the journal, but the records before it still get the
 * sync the wait promises: one fdatasync after the failure, and what was
 * written replays. */
static void test_a_failed_write_still_syncs_the_records_before_it(void **state)
{
    fixture *f = *state;
    f->st->slow_ms = 5;
    for (unsigned k = 0; k < 10; k++)
        f->st->plan[k][0] = ACT_SLOW;   /* one record a write */
    pwritev_fail_at = 4;
    invoker *inv = open_journal(f, f->path, 1);
    unsigned syncs0 = datasyncs;   /* the header's */
    assert_true(syncs0 >= 1);
    invoker_id ids[10];
    for (unsigned k = 0; k < 10; k++)
        ids[k] = submit_key(inv, k, 0, 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_true(pwritev_failed);
    assert_int_equal(st.journal_error, -ENOSPC);
    assert_int_equal(st.journaled, 3);
    assert_true(datasyncs_after_fail >= 1);
    assert_int_equal(destroy_tracked(inv), 0);
    for (unsigned k = 0; k < 10; k++)
        assert_int_equal(seen_get(&f->o, ids[k])->results, 1);
    unwrap();
    reset(f);
    inv = open_journal(f, f->path, 1);
    assert_int_equal(inv->journal.replayed, 3);
    assert_int_equal(destroy_tracked(inv), 0);
}

/* ---- sync modes ------------------------------------------------------------- */

static void test_sync_modes_each_batch_none(void **state)
{
    fixture *f = *state;
    f->st->slow_ms = 30;
    for (int mode = INVOKER_SYNC_BATCH; mode <= INVOKER_SYNC_NONE; mode++) {
        char path[200];
        snprintf(path, sizeof path, "%s/sync%d", f->dir, mode);
        invoker_config cfg;
        journal_config(f, &cfg, path, 1);
        cfg.journal_sync = mode;
        invoker *inv;
        assert_int_equal(invoker_create(&inv, &cfg), 0);
        track(inv);
        uint64_t syncs0 = inv->journal.syncs;
        for (unsigned k = 0; k < 10; k++) {
            f->st->plan[100 * mode + k][0] = ACT_SLOW;
            submit_key(inv, 100 * (unsigned)mode + k, 0, 0);
        }
        /* 300 ms of results, one every 30 ms, taken by invoker_poll. */
        double t0 = now_seconds();
        uint64_t before_wait = 0;
        while (f->o.calls < 10 * (size_t)(mode + 1)) {
            assert_true(invoker_poll(inv, -1) >= 0);
            if (f->o.calls == 10 * (size_t)mode + 9)
                before_wait = inv->journal.syncs - syncs0;
        }
        assert_true(now_seconds() - t0 < 10 * slack());
        assert_int_equal(invoker_wait(inv), 0);
        uint64_t syncs = inv->journal.syncs - syncs0;
        if (mode == INVOKER_SYNC_EACH) {
            assert_int_equal(syncs, 10);
        } else if (mode == INVOKER_SYNC_BATCH) {
            /* At least one every 100 ms while polled, and none left due. */
            assert_true(before_wait >= 1);
            assert_true(syncs <= 10);
            assert_int_equal(inv->journal.dirty_since, 0);
        } else {
            assert_int_equal(syncs, 0);
        }
        assert_int_equal(destroy_tracked(inv), 0);
    }
}

/* ---- the optimizer killed ----------------------------------------------------- */

#define KILL_TASKS 2000u

typedef struct logged {      /* one callback the dead run made */
    uint32_t key;
    int32_t  failure;        /* 0: a result */
    int32_t  code;
    uint32_t len;
    unsigned char res[40];
} logged;

static void log_callback(outcomes *o, const invoker_task *t)
{
    seen *s = seen_get(o, t->id);
    logged l;
    memset(&l, 0, sizeof l);
    l.key = (uint32_t)(t->id - 1);
    l.failure = s->errors ? (int32_t)s->failure : 0;
    l.code = s->code;
    l.len = (uint32_t)s->len;
    memcpy(l.res, s->res, s->len < sizeof l.res ? s->len : sizeof l.res);
    int *fd = o->ctx;
    /* O_APPEND, before the callback returns: what the optimizer saw. */
    if (write(fd[0], &l, sizeof l) != (ssize_t)sizeof l)
        _exit(3);
    if (fd[1] > 0 && (size_t)fd[1] == o->calls)
        kill(getpid(), SIGKILL);   /* between this callback and the next */
}

/* In a child: the optimizer, logging each callback, killed by the test or
 * by itself at callback kill_at (0: never). */
static pid_t optimizer(fixture *f, const char *log, int sync, int kill_at)
{
    write_file(log, "", 0);   /* here: the child may die before it opens it */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid)
        return pid;
    int fd[2] = { open(log, O_WRONLY | O_APPEND | O_CLOEXEC), kill_at };
    if (fd[0] < 0)
        _exit(2);
    f->o.hook = log_callback;
    f->o.ctx = fd;
    invoker_config cfg;
    journal_config(f, &cfg, f->path, 2);
    cfg.journal_sync = sync;
    invoker *inv;
    if (invoker_create(&inv, &cfg) != 0)
        _exit(4);
    for (unsigned k = 0; k < KILL_TASKS; k++) {
        targ a = targ_make(k, k % 7);
        if (invoker_submit(inv, &a, targ_size(&a), NULL, NULL) != 0)
            _exit(5);
    }
    (void)invoker_wait(inv);
    invoker_destroy(inv);
    _exit(0);
}

/* The rerun: every callback the dead run made is answered from the
 * journal with the same bytes, none of those evaluated; the rest run. */
static unsigned rerun_after_kill(fixture *f, const char *log)
{
    unsigned char *buf;
    size_t len;
    read_file(log, &buf, &len);
    assert_int_equal(len % sizeof(logged), 0);
    size_t n = len / sizeof(logged);
    reset(f);
    f->o.hook = NULL;
    invoker *inv = open_journal(f, f->path, 2);
    invoker_id ids[KILL_TASKS];
    for (unsigned k = 0; k < KILL_TASKS; k++)
        ids[k] = submit_key(inv, k, k % 7, 0);
    assert_int_equal(invoker_wait(inv), 0);
    invoker_stats st;
    invoker_get_stats(inv, &st);
    assert_int_equal(destroy_tracked(inv), 0);
    assert_int_equal(st.succeeded + st.failed, KILL_TASKS);
    for (size_t i = 0; i < n; i++) {
        logged l;
        memcpy(&l, buf + i * sizeof l, sizeof l);
        assert_true(l.key < KILL_TASKS);
        seen *s = seen_get(&f->o, ids[l.key]);
        if (atomic_load(&f->st->evals[l.key]) != 0)
            print_message("key %u logged #%zu of %zu evaluated again, cached %d\n", l.key, i, n, s->cached);
        assert_int_equal(atomic_load(&f->st->evals[l.key]), 0);
        assert_true(s->cached);
        assert_int_equal(s->results + s->errors, 1);
        if (l.failure) {
            assert_int_equal(s->errors, 1);
            assert_int_equal(s->failure, l.failure);
            assert_int_equal(s->code, l.code);
        } else {
            assert_int_equal(s->results, 1);
            assert_int_equal(s->len, l.len);
            assert_memory_equal(s->res, l.res, l.len);
        }
    }
    for (unsigned k = 0; k < KILL_TASKS; k++) {
        seen *s = seen_get(&f->o, ids[k]);
        assert_int_equal(s->results + s->errors, 1);
        assert_int_equal(atomic_load(&f->st->evals[k]), s->cached ? 0u : 1u);
        if (k % 97 != 0)
            assert_answer(s, k);
    }
    free(buf);
    assert_int_equal(st.cached + st.journaled >= n, 1);
    return (unsigned)n;
}

static void plan_kill_tasks(fixture *f)
{
    for (unsigned k = 0; k < KILL_TASKS; k++)
        f->st->plan[k][0] = k % 97 == 0 ? ACT_FAIL : k % 3 ? ACT_NAP : ACT_OK;
}

static void test_optimizer_sigkilled_at_random_moments_rerun_pays_nothing_twice(void **state)
{
    fixture *f = *state;
    char log[200];
    snprintf(log, sizeof log, "%s/log", f->dir);
    plan_kill_tasks(f);
    unsigned seed = (unsigned)time(NULL);
    print_message("seed %u\n", seed);
    srand(seed);
    /* Kills after a random delay, and in a burst of callbacks: once the
     * log shows some, and once it shows many. */
    for (int round = 0; round < 6; round++) {
        (void)unlink(f->path);
        reset(f);
        pid_t pid = optimizer(f, log, INVOKER_SYNC_BATCH, 0);
        if (round < 4) {
            sleep_us(1000 + rand() % (round < 2 ? 5000 : 40000));
        } else {
            off_t want = (off_t)sizeof(logged) * (round == 4 ? 1 : 500 + rand() % 1000);
            struct stat stl;
            while (stat(log, &stl) != 0 || stl.st_size < want) {
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                    pid = 0;
                    break;
                }
            }
        }
        if (pid) {
            kill(pid, SIGKILL);
            int status;
            assert_int_equal(waitpid(pid, &status, 0), pid);
        }
        unsigned n = rerun_after_kill(f, log);
        print_message("round %d: %u callbacks before the kill\n", round, n);
    }
}

static void test_sync_each_kill_between_callbacks_loses_nothing(void **state)
{
    fixture *f = *state;
    char log[200];
    snprintf(log, sizeof log, "%s/log", f->dir);
    plan_kill_tasks(f);
    srand((unsigned)time(NULL));
    int at[] = { 1, 2 + rand() % 500, 500 + rand() % 1499 };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        (void)unlink(f->path);
        reset(f);
        pid_t pid = optimizer(f, log, INVOKER_SYNC_EACH, at[i]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        unsigned n = rerun_after_kill(f, log);
        assert_int_equal(n, (unsigned)at[i]);
    }
}

static invoker_id cancel_next;
static void cancel_from_callback(outcomes *o, const invoker_task *t)
{
    if (cancel_next && t->id != cancel_next) {
        assert_int_equal(invoker_cancel(o->inv, cancel_next), 0);
        cancel_next = 0;
    }
}

/* A leader cancelled from the callback before its own, when its record may
 * already be written (its frame came in the same read, and was journaled
 * ahead of the callbacks): its waiting twin runs on its own, with its own
 * answer, nothing hangs, and the argument is answered from the journal
 * afterwards.  Rounds, since which read brings which frame is the
 * workers' timing; the rounds that took that path are counted. */
static void test_cancelled_journaled_leader_sends_its_twin_to_run(void **state)
{
    fixture *f = *state;
    invoker *inv = open_journal(f, f->path, 1);
    f->o.hook = cancel_from_callback;
    unsigned ahead = 0;
    for (uint32_t r = 0; r < 20; r++) {
        invoker_stats before, after;
        invoker_get_stats(inv, &before);
        invoker_id a = submit_key(inv, 100 + 2 * r, 0, 0);
        invoker_id lead = submit_key(inv, 101 + 2 * r, 0, 0);
        invoker_id twin = submit_key(inv, 101 + 2 * r, 0, 0);
        cancel_next = lead;
        assert_int_equal(invoker_wait(inv), 0);
        assert_int_equal(cancel_next, 0);
        assert_answer(seen_get(&f->o, a), 100 + 2 * r);
        assert_int_equal(seen_get(&f->o, lead)->failure, INVOKER_FAIL_CANCELLED);
        assert_answer(seen_get(&f->o, twin), 101 + 2 * r);
        assert_false(seen_get(&f->o, twin)->cached);
        invoker_get_stats(inv, &after);
        ahead += after.journaled - before.journaled == 3;   /* the leader's too */
        /* Its key still answers, from the journal, after the cancel. */
        invoker_id again = submit_key(inv, 101 + 2 * r, 0, 0);
        assert_int_equal(invoker_wait(inv), 0);
        assert_answer(seen_get(&f->o, again), 101 + 2 * r);
        assert_true(seen_get(&f->o, again)->cached);
    }
    print_message("%u of 20 rounds cancelled a leader already journaled\n", ahead);
    f->o.hook = NULL;
    assert_int_equal(destroy_tracked(inv), 0);
}

int main(void)
{
    set_filter();
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_resume_answers_journaled_outcomes_with_identical_bytes),
        T(test_records_of_another_key_are_kept_but_never_replayed),
        T(test_journal_alone_answers_this_runs_outcomes_and_merges_twins),
        T(test_invokers_side_by_side_each_with_its_own_journal),
        T(test_truncated_anywhere_replays_the_whole_records_before_the_cut),
        T(test_shrunk_while_read_is_torn_and_a_failed_read_an_error),
        T(test_records_wider_than_the_read_window_replay),
        T(test_new_names_are_synced_in_their_directory),
        T(test_every_byte_flip_replays_the_records_before_it_or_ebadmsg),
        T(test_record_claiming_two_to_the_63_is_moved_aside),
        T(test_foreign_files_and_other_versions_are_ebadmsg_and_untouched),
        T(test_bad_paths_are_refused_and_leave_nothing),
        T(test_a_device_path_is_einval_and_never_opened),
        T(test_journal_in_use_is_ebusy_until_its_holder_dies),
        T(test_full_disk_callbacks_still_come_and_the_journal_says_why),
        T(test_a_failed_write_still_syncs_the_records_before_it),
        T(test_sync_modes_each_batch_none),
        T(test_optimizer_sigkilled_at_random_moments_rerun_pays_nothing_twice),
        T(test_sync_each_kill_between_callbacks_loses_nothing),
        T(test_cancelled_journaled_leader_sends_its_twin_to_run),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

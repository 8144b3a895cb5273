/* Writes the seed corpus of the fuzz targets: valid frames and ticket
 * packets sealed with FUZZ_KEY (a fuzzer cannot guess a check word),
 * journal images with records whose checks hold, plus a few near misses.
 * Usage: make_seeds OUTDIR (writes OUTDIR/frame/, OUTDIR/slot/ and
 * OUTDIR/journal/).  Built and run by fuzz/build.sh --seeds. */
#include "internal.h"
#include "fuzz_key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *outdir;

static void put(const char *kind, const char *name, const void *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", outdir, kind, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void frame(const char *name, uint32_t kind, uint64_t id, int32_t code, uint64_t len,
                  int spoil, uint64_t max_len)
{
    unsigned char buf[INVOKER__FRAME_HDR + 8];
    invoker__frame f;
    memset(&f, 0, sizeof f);
    f.kind = kind;
    f.id = id;
    f.gen = 2;
    f.code = code;
    f.len = len;
    f.run_ns = 123456;
    f.cpu_ns = 120000;
    f.max_rss_kib = kind == INVOKER__FRAME_INIT_FAILED ? -1 : 2048;
    invoker__proto_frame_seal(&f, FUZZ_KEY);
    if (spoil)
        f.check ^= 1;
    memcpy(buf, &f, sizeof f);
    memcpy(buf + sizeof f, &max_len, sizeof max_len);
    put("frame", name, buf, sizeof buf);
}

/* A packet of count tickets with these argument lengths, then running
 * words for some of their ids. */
static void packet(const char *name, unsigned count, const uint64_t *lens, uint32_t flags)
{
    unsigned char buf[INVOKER__PACKET + 8 * 8];
    memset(buf, 0, sizeof buf);
    size_t off = 0;
    for (unsigned i = 0; i < count; i++) {
        invoker__ticket t;
        memset(&t, 0, sizeof t);
        t.id = 1000 + i;
        t.flags = flags;
        t.arg_len = lens[i];
        t.gen = 1;
        t.batch = i == 0 ? count : 0;
        invoker__proto_ticket_seal(&t, FUZZ_KEY);
        memcpy(buf + off, &t, sizeof t);
        size_t inline_len = (flags & INVOKER__TICKET_BIG) ? 0 : (size_t)lens[i];
        memset(buf + off + sizeof t, 0x5a, inline_len);
        off += invoker__proto_ticket_size(&t);
    }
    for (unsigned i = 0; i < 8; i++) {
        uint64_t tag = invoker__proto_running_tag(1000 + i, FUZZ_KEY);
        memcpy(buf + INVOKER__PACKET + 8 * i, &tag, sizeof tag);
    }
    put("slot", name, buf, sizeof buf);
}

/* Journal images: our header, then records of these argument and result
 * lengths (kind 2 when the result length is -1), then tail bytes. */
static void journal(const char *name, const long *lens, unsigned count, const void *tail,
                    size_t tail_len)
{
    static unsigned char buf[1 << 16];
    size_t off = INVOKER__JOURNAL_HDR;
    invoker__journal_file_header(buf, INVOKER__JOURNAL_VERSION);
    for (unsigned i = 0; i < count; i++) {
        size_t arg_len = (size_t)lens[2 * i];
        bool failed = lens[2 * i + 1] < 0;
        size_t res_len = failed ? 0 : (size_t)lens[2 * i + 1];
        size_t size = invoker__journal_record_size(arg_len, res_len);
        if (off + size > sizeof buf)
            exit(1);
        unsigned char *p = buf + off;
        memset(p, 0, size);
        unsigned char *arg = p + INVOKER__JREC_HDR;
        for (size_t k = 0; k < arg_len; k++)
            arg[k] = (unsigned char)(k * 7 + i);
        unsigned char *res = arg + ((arg_len + 15) & ~(size_t)15);
        for (size_t k = 0; k < res_len; k++)
            res[k] = (unsigned char)(k * 13 + i);
        uint64_t check = invoker__journal_body_check(
            invoker__hash(arg, arg_len, INVOKER__HASH_SEED), res, res_len);
        invoker__journal_encode(p, invoker__journal_key_hash(i % 3 ? "key" : ""),
                                failed ? INVOKER__JREC_OBJECTIVE : INVOKER__JREC_RESULT,
                                failed ? 42 : 0, arg_len, res_len, check);
        off += size;
    }
    if (off + tail_len > sizeof buf)
        exit(1);
    memcpy(buf + off, tail, tail_len);
    put("journal", name, buf, off + tail_len);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    const uint64_t mib64 = (uint64_t)64 << 20;
    frame("result-empty", INVOKER__FRAME_RESULT, 7, 0, 0, 0, 0);
    frame("result-100", INVOKER__FRAME_RESULT, 8, 0, 100, 0, 4096);
    frame("result-64mib", INVOKER__FRAME_RESULT, 9, 0, mib64, 0, mib64);
    frame("objective", INVOKER__FRAME_OBJECTIVE, 10, -5, 0, 0, 0);
    frame("too-large", INVOKER__FRAME_TOO_LARGE, 11, 0, 0, 0, 0);
    frame("protocol", INVOKER__FRAME_PROTOCOL, 12, 0, 0, 0, 0);
    frame("init-failed", INVOKER__FRAME_INIT_FAILED, 0, 3, 0, 0, 0);
    frame("skipped", INVOKER__FRAME_SKIPPED, 13, 0, 0, 0, 0);
    frame("bad-check", INVOKER__FRAME_RESULT, 14, 0, 16, 1, 0);
    frame("bad-kind", INVOKER__FRAME_KIND_MAX, 15, 0, 0, 0, 0);

    const long jl[] = { 8, 40, 13, -1, 0, 0, 200, 100, 1, 1 };
    journal("empty", jl, 0, NULL, 0);
    journal("five", jl, 5, NULL, 0);
    journal("one-torn", jl, 2, "\x43\x45\x52\x4a\x01\x00", 6);
    unsigned char huge[INVOKER__JREC_HDR];
    invoker__journal_encode(huge, 1, INVOKER__JREC_RESULT, 0, (uint64_t)1 << 63, 0, 0);
    journal("length-2-63", jl, 1, huge, sizeof huge);
    invoker__journal_encode(huge, 1, INVOKER__JREC_RESULT, 0, 100, 100, 0);
    journal("past-the-end", jl, 1, huge, sizeof huge);
    put("journal", "foreign", "x,y\n1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n", 34);

    uint64_t lens[INVOKER__BATCH_MAX];
    memset(lens, 0, sizeof lens);
    packet("one-empty", 1, lens, 0);
    lens[0] = 16; lens[1] = 1; lens[2] = 33;
    packet("three-inline", 3, lens, 0);
    memset(lens, 0, sizeof lens);
    packet("batch-64", INVOKER__BATCH_MAX, lens, 0);
    lens[0] = INVOKER__INLINE_MAX;
    packet("one-full", 1, lens, 0);
    lens[0] = mib64;
    packet("big", 1, lens, INVOKER__TICKET_BIG);
    lens[0] = 48; lens[1] = 7;
    packet("two-mixed", 2, lens, 0);
    lens[0] = 5;
    packet("attempt-3", 1, lens, 3u << INVOKER__TICKET_ATTEMPT_SHIFT);
    return 0;
}

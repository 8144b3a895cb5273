/* Writes the seed corpus of the fuzz targets: valid frames and ticket
 * packets sealed with FUZZ_KEY (a fuzzer cannot guess a check word), plus
 * a few near misses.  Usage: make_seeds OUTDIR (writes OUTDIR/frame/ and
 * OUTDIR/slot/).  Built and run by fuzz/build.sh --seeds. */
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

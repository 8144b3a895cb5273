/* libFuzzer target: the frame header the parent reads from a worker's
 * result pipe (invoker__proto_frame_check, invoker__proto_frame_size).
 *
 * Input: 64 header bytes as the worker would write them; 8 more bytes, when
 * present, are a second max_len (max_result_bytes) to check against.
 * Properties:
 *   - check returns 0 or -EPROTO, nothing else;
 *   - an accepted frame has a kind in range (HELD only on a task's
 *     outcome), len <= max_len (and len 0 for every kind but RESULT), an
 *     id unless it is INIT_FAILED, a max_rss_kib of -1 or more, and its size
 *     (header + padded payload) covers the payload, padded to 16, without
 *     wrapping;
 *   - the check word is the only thing a forged header lacks: the same
 *     fields sealed with the key are accepted exactly when the field rules
 *     hold, and never with another key. */
#include "internal.h"
#include "fuzz_key.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)


static int fields_ok(const invoker__frame *f, size_t max_len)
{
    uint32_t kind = f->kind & ~INVOKER__FRAME_HELD;
    if (kind == 0 || kind >= INVOKER__FRAME_KIND_MAX)
        return 0;
    if ((f->kind & INVOKER__FRAME_HELD) && kind != INVOKER__FRAME_RESULT &&
        kind != INVOKER__FRAME_OBJECTIVE && kind != INVOKER__FRAME_TOO_LARGE)
        return 0;
    if (kind == INVOKER__FRAME_RESULT ? (f->len > max_len || f->len > SIZE_MAX / 2)
                                      : f->len != 0)
        return 0;
    if (f->max_rss_kib < -1)
        return 0;
    return f->id != 0 || kind == INVOKER__FRAME_INIT_FAILED;
}

/* What the parent does with an accepted header: reads frame_size(len)
 * bytes and hands len of them to on_result. */
static void accepted(const invoker__frame *f, size_t max_len)
{
    REQUIRE(fields_ok(f, max_len));
    REQUIRE(f->len <= max_len);
    size_t size = invoker__proto_frame_size(f->len);
    REQUIRE(size >= INVOKER__FRAME_HDR);
    REQUIRE(size - INVOKER__FRAME_HDR >= f->len);
    REQUIRE(size - INVOKER__FRAME_HDR - f->len < 16);
    REQUIRE(size % 16 == 0);
}

static void check_one(const invoker__frame *f, size_t max_len)
{
    int rc = invoker__proto_frame_check(f, FUZZ_KEY, max_len);
    REQUIRE(rc == 0 || rc == -EPROTO);
    if (rc == 0)
        accepted(f, max_len);
    /* The same fields from a worker that holds the key. */
    invoker__frame sealed = *f;
    invoker__proto_frame_seal(&sealed, FUZZ_KEY);
    rc = invoker__proto_frame_check(&sealed, FUZZ_KEY, max_len);
    REQUIRE((rc == 0) == fields_ok(f, max_len));
    if (rc == 0)
        accepted(&sealed, max_len);
    REQUIRE(invoker__proto_frame_check(&sealed, FUZZ_KEY ^ 1, max_len) == -EPROTO);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < sizeof(invoker__frame))
        return 0;
    invoker__frame f;
    memcpy(&f, data, sizeof f);
    check_one(&f, INVOKER__DEFAULT_MAX);
    check_one(&f, 0);
    if (size >= sizeof f + 8) {
        uint64_t m;
        memcpy(&m, data + sizeof f, sizeof m);
        check_one(&f, (size_t)m);   /* max_result_bytes may be any size */
    }
    return 0;
}

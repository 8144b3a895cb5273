/* libFuzzer target: the journal's decoder (invoker__journal_check_header,
 * invoker__journal_decode), which invoker_create runs over whatever file
 * it is given.
 *
 * Input: a journal file image.  It is read as the library reads it (the
 * header, then records until a torn or corrupt one) and also as records
 * from its first byte, so that the fuzzer reaches the record decoder
 * without having to forge a header check.  Limits: 4 KiB and the defaults.
 * Properties:
 *   - the header check gives OK, TORN (only a proper prefix of our own
 *     header), EMPTY (only for no bytes) or -EBADMSG;
 *   - decode gives OK, TORN or CORRUPT; TORN only when fewer than a
 *     header's bytes remain or the lengths are within the limits;
 *   - an accepted record lies inside the input, its size a multiple of 16
 *     that covers header, argument and result; its argument and result
 *     pointers lie inside it; re-encoding its fields and body check gives
 *     its header bytes exactly (one encoding per record), and the body
 *     check recomputed from its bytes is the one it carries. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static uint64_t body_check_of(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[40 + i];
    return v;
}

static void records(const uint8_t *data, size_t size, size_t off, size_t max_arg, size_t max_res)
{
    while (off < size) {
        invoker__jrec rec;
        int how = invoker__journal_decode(data + off, size - off, max_arg, max_res, &rec);
        REQUIRE(how == INVOKER__JREC_OK || how == INVOKER__JREC_TORN ||
                how == INVOKER__JREC_CORRUPT);
        if (how == INVOKER__JREC_TORN) {
            if (size - off >= INVOKER__JREC_HDR) {
                uint64_t a = 0, r = 0;
                for (int i = 7; i >= 0; i--) {
                    a = a << 8 | data[off + 16 + i];
                    r = r << 8 | data[off + 24 + i];
                }
                REQUIRE(a <= max_arg && r <= max_res);
            }
            return;
        }
        if (how == INVOKER__JREC_CORRUPT)
            return;
        const unsigned char *p = data + off;
        REQUIRE(rec.size <= size - off);
        REQUIRE(rec.size % 16 == 0);
        REQUIRE(rec.size >= INVOKER__JREC_HDR + rec.arg_len + rec.res_len);
        REQUIRE(rec.size == invoker__journal_record_size(rec.arg_len, rec.res_len));
        REQUIRE(rec.arg == p + INVOKER__JREC_HDR);
        REQUIRE(rec.res >= rec.arg + rec.arg_len && rec.res + rec.res_len <= p + rec.size);
        REQUIRE(rec.kind == INVOKER__JREC_RESULT || rec.res_len == 0);
        uint64_t body = invoker__journal_body_check(
            invoker__hash(rec.arg, rec.arg_len, INVOKER__HASH_SEED), rec.res, rec.res_len);
        REQUIRE(body == body_check_of(p));
        REQUIRE(rec.arg_hash == invoker__hash(rec.arg, rec.arg_len, INVOKER__HASH_SEED));
        unsigned char hdr[INVOKER__JREC_HDR];
        invoker__journal_encode(hdr, rec.key_hash, rec.kind, rec.code, rec.arg_len, rec.res_len,
                                body);
        REQUIRE(memcmp(hdr, p, sizeof hdr) == 0);
        off += rec.size;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char ours[INVOKER__JOURNAL_HDR];
    invoker__journal_file_header(ours, INVOKER__JOURNAL_VERSION);
    int h = invoker__journal_check_header(data, size);
    REQUIRE(h == INVOKER__JHDR_OK || h == INVOKER__JHDR_TORN || h == INVOKER__JHDR_EMPTY ||
            h == -EBADMSG);
    REQUIRE((h == INVOKER__JHDR_EMPTY) == (size == 0));
    if (h == INVOKER__JHDR_TORN)
        REQUIRE(size < sizeof ours && memcmp(data, ours, size) == 0);
    if (h == INVOKER__JHDR_OK) {
        REQUIRE(size >= sizeof ours && memcmp(data, ours, sizeof ours) == 0);
        records(data, size, INVOKER__JOURNAL_HDR, 4096, 4096);
        records(data, size, INVOKER__JOURNAL_HDR, INVOKER__DEFAULT_MAX, INVOKER__DEFAULT_MAX);
    }
    records(data, size, 0, 4096, 4096);
    records(data, size, 0, SIZE_MAX, SIZE_MAX);
    return 0;
}

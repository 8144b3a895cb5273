/* libFuzzer target: what the parent reads from a worker's slot of the
 * shared table once the worker is dead or while it runs: the ticket packet
 * (invoker__proto_packet_ticket) and the running word
 * (invoker__proto_running_id).
 *
 * Input: the first 4096 bytes are the slot's ticket area (zero-filled when
 * shorter); every 8-byte word of the input is also tried as a running word.
 * Properties:
 *   - for i = 0..64, an accepted ticket lies wholly inside the buffer, at a
 *     16-byte aligned offset past the previous one, is a valid ticket equal
 *     to the bytes at its offset, obeys max_arg, and packets never hold
 *     more than INVOKER__BATCH_MAX tickets; once one index is refused, every
 *     later index is too;
 *   - the same, walking only the input's own length (a short packet);
 *   - running_id gives 0 or an id whose tag is exactly the word read, and
 *     running_tag/running_id round-trip for any id below 2^44 (the tag
 *     keeps 44 bits of id). */
#include "internal.h"
#include "fuzz_key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static void walk(const unsigned char *buf, size_t len, size_t max_arg)
{
    size_t prev_end = 0;
    int refused = 0;
    for (unsigned i = 0; i <= 64; i++) {
        invoker__ticket tk;
        size_t off = (size_t)-1;
        bool ok = invoker__proto_packet_ticket(buf, len, i, FUZZ_KEY, max_arg, &tk, &off);
        if (!ok) {
            refused = 1;
            continue;
        }
        REQUIRE(!refused);
        REQUIRE(i < INVOKER__BATCH_MAX);
        REQUIRE(off % 16 == 0);
        REQUIRE(off >= prev_end);
        REQUIRE(off <= len && len - off >= INVOKER__TICKET_HDR);
        size_t size = invoker__proto_ticket_size(&tk);
        REQUIRE(size >= INVOKER__TICKET_HDR && size <= len - off);
        REQUIRE(memcmp(buf + off, &tk, sizeof tk) == 0);
        REQUIRE(invoker__proto_ticket_valid(&tk, FUZZ_KEY, max_arg));
        REQUIRE(tk.id != 0 && tk.arg_len <= max_arg);
        REQUIRE((tk.flags & INVOKER__TICKET_BIG) || tk.arg_len <= INVOKER__INLINE_MAX);
        REQUIRE(i == 0 ? (tk.batch >= 1 && tk.batch <= INVOKER__BATCH_MAX) : tk.batch == 0);
        REQUIRE(!(tk.flags & INVOKER__TICKET_BIG) || i == 0);
        REQUIRE(!invoker__proto_ticket_valid(&tk, FUZZ_KEY ^ 1, max_arg));
        prev_end = off + size;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char slot[INVOKER__PACKET];
    size_t n = size < sizeof slot ? size : sizeof slot;
    memset(slot, 0, sizeof slot);
    memcpy(slot, data, n);
    walk(slot, sizeof slot, INVOKER__DEFAULT_MAX);   /* as the parent reads a slot */
    walk(slot, sizeof slot, 100);
    /* A packet exactly as long as the input, in its own allocation so ASan
     * sees any read past its end. */
    unsigned char *exact = malloc(n ? n : 1);
    REQUIRE(exact);
    memcpy(exact, data, n);
    walk(exact, n, INVOKER__DEFAULT_MAX);
    free(exact);

    for (size_t at = 0; at + 8 <= size; at += 8) {
        uint64_t word;
        memcpy(&word, data + at, sizeof word);
        uint64_t id = invoker__proto_running_id(word, FUZZ_KEY);
        if (id != 0) {
            REQUIRE(id < (1ull << 44));
            REQUIRE(invoker__proto_running_tag(id, FUZZ_KEY) == word);
        }
        uint64_t any = word & ((1ull << 44) - 1);
        if (any != 0) {
            uint64_t tag = invoker__proto_running_tag(any, FUZZ_KEY);
            REQUIRE(tag != 0);
            REQUIRE(invoker__proto_running_id(tag, FUZZ_KEY) == any);
            REQUIRE(invoker__proto_running_id(tag, FUZZ_KEY ^ 1) != any ||
                    invoker__proto_running_tag(any, FUZZ_KEY ^ 1) == tag);
        }
    }
    REQUIRE(invoker__proto_running_id(0, FUZZ_KEY) == 0);
    return 0;
}

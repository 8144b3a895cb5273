/*
 * One 64-bit hash of bytes for the cache's keys and the journal's
 * checksums.  Written out here, not taken from the compiler or the CPU, so
 * that a journal written on one machine checks on another: words are read
 * little-endian whatever the host.
 *
 * Each step is a bijection of the running state for a fixed word and of
 * the word for a fixed state (xor, rotate and multiply by an odd
 * constant), so two inputs of one length that differ in a single word, a
 * flipped byte say, always hash differently: the journal relies on that
 * to catch every single-byte flip, not merely almost every one.
 */
#include "internal.h"

#include <string.h>

#define K1 0x9e3779b97f4a7c15ull
#define K2 0xc2b2ae3d27d4eb4full

static uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

static uint64_t step(uint64_t h, uint64_t w)
{
    h ^= w * K1;
    h = (h << 29) | (h >> 35);
    return h * K2;
}

uint64_t invoker__hash(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ ((uint64_t)len * K2);
    size_t n = len;
    /* Two lanes: the multiplies of one overlap the other's. */
    uint64_t g = h ^ K1;
    for (; n >= 16; n -= 16, p += 16) {
        h = step(h, load64(p));
        g = step(g, load64(p + 8));
    }
    if (n >= 8) {
        h = step(h, load64(p));
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        unsigned char tail[8] = { 0 };
        memcpy(tail, p, n);
        g = step(g, load64(tail));
    }
    return invoker__proto_mix(h ^ invoker__proto_mix(g));
}

/*
 * The wire format between parent and workers: tickets (parent to worker,
 * through the shared queue) and frames (worker to parent, through the
 * worker's result pipe).  Pure functions, no syscalls, so they can be
 * fuzzed on their own.
 *
 * Every header carries a check word: a mix of its fields and a secret key
 * drawn when the invoker is created.  It does not stop a malicious worker
 * (which holds the key), but random bytes written by a buggy one will not
 * pass it, and a ticket of one invoker never passes as another's.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

#define TICKET_MAGIC 0x544b4e49u   /* "INKT" */
#define FRAME_MAGIC  0x52564e49u   /* "INVR" */

/* splitmix64's finalizer: cheap, and every input bit moves every output bit. */
uint64_t invoker__proto_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t ticket_check(const invoker__ticket *t, uint64_t key)
{
    uint64_t h = invoker__proto_mix(key ^ t->id);
    h = invoker__proto_mix(h ^ t->arg_len);
    h = invoker__proto_mix(h ^ ((uint64_t)t->gen << 32 | t->flags));
    h = invoker__proto_mix(h ^ t->batch);
    h = invoker__proto_mix(h ^ t->arg_off);
    return h ^ t->magic;
}

void invoker__proto_ticket_seal(invoker__ticket *t, uint64_t key)
{
    t->magic = TICKET_MAGIC;
    t->check = ticket_check(t, key);
}

bool invoker__proto_ticket_valid(const invoker__ticket *t, uint64_t key, size_t max_arg)
{
    if (t->magic != TICKET_MAGIC || t->id == 0 || t->check != ticket_check(t, key))
        return false;
    if (t->flags & ~((uint32_t)INVOKER__TICKET_BIG |
                     (uint32_t)INVOKER__TICKET_ATTEMPT_MAX << INVOKER__TICKET_ATTEMPT_SHIFT))
        return false;
    if (t->arg_len > max_arg || t->arg_len > SIZE_MAX / 2)
        return false;
    if (t->flags & INVOKER__TICKET_BIG)
        return t->arg_len > INVOKER__INLINE_MAX && t->arg_off <= UINT64_MAX - t->arg_len;
    return t->arg_len <= INVOKER__INLINE_MAX && t->arg_off == 0;
}

size_t invoker__proto_ticket_size(const invoker__ticket *t)
{
    size_t inline_len = (t->flags & INVOKER__TICKET_BIG) ? 0 : (size_t)t->arg_len;
    return INVOKER__TICKET_HDR + ((inline_len + 15u) & ~(size_t)15u);
}

/* A packet is a run of tickets, each padded to 16 bytes; the first says
 * how many.  A big ticket travels alone. */
bool invoker__proto_packet_ticket(const unsigned char *buf, size_t len, unsigned i,
                                  uint64_t key, size_t max_arg, invoker__ticket *out,
                                  size_t *offset)
{
    size_t off = 0;
    unsigned count = 0;
    for (unsigned j = 0;; j++) {
        if (len - off < INVOKER__TICKET_HDR)
            return false;
        memcpy(out, buf + off, sizeof *out);
        if (!invoker__proto_ticket_valid(out, key, max_arg))
            return false;
        if (j == 0) {
            count = out->batch;
            if (count == 0 || count > INVOKER__BATCH_MAX ||
                (count > 1 && (out->flags & INVOKER__TICKET_BIG)))
                return false;
        } else if (out->batch != 0 || (out->flags & INVOKER__TICKET_BIG)) {
            return false;
        }
        if (i >= count)
            return false;
        size_t size = invoker__proto_ticket_size(out);
        if (size > len - off)
            return false;
        if (j == i) {
            *offset = off;
            return true;
        }
        off += size;
    }
}

static uint64_t frame_check(const invoker__frame *f, uint64_t key)
{
    uint64_t h = invoker__proto_mix(key ^ f->id ^ ((uint64_t)f->kind << 56));
    h = invoker__proto_mix(h ^ f->len);
    h = invoker__proto_mix(h ^ f->run_ns);
    /* One round for both: a peak moves the high half, where CPU times of
     * less than 136 years leave zeros. */
    h = invoker__proto_mix(h ^ f->cpu_ns ^ ((uint64_t)f->max_rss_kib << 32 | (uint64_t)f->max_rss_kib >> 32));
    h = invoker__proto_mix(h ^ ((uint64_t)f->gen << 32 | (uint32_t)f->code));
    return h ^ f->magic;
}

void invoker__proto_frame_seal(invoker__frame *f, uint64_t key)
{
    f->magic = FRAME_MAGIC;
    f->check = frame_check(f, key);
}

int invoker__proto_frame_check(const invoker__frame *f, uint64_t key, size_t max_len)
{
    if (f->magic != FRAME_MAGIC || f->check != frame_check(f, key))
        return -EPROTO;
    uint32_t kind = f->kind & ~INVOKER__FRAME_HELD;
    if (kind == 0 || kind >= INVOKER__FRAME_KIND_MAX)
        return -EPROTO;
    if ((f->kind & INVOKER__FRAME_HELD) && kind != INVOKER__FRAME_RESULT &&
        kind != INVOKER__FRAME_OBJECTIVE && kind != INVOKER__FRAME_TOO_LARGE)
        return -EPROTO;   /* only a task's outcome is ever held */
    /* Past SIZE_MAX / 2 the padded frame size would wrap, whatever
     * max_result_bytes the caller allows. */
    if (kind == INVOKER__FRAME_RESULT ? (f->len > max_len || f->len > SIZE_MAX / 2)
                                      : f->len != 0)
        return -EPROTO;
    if (f->id == 0 && kind != INVOKER__FRAME_INIT_FAILED)
        return -EPROTO;
    if (f->max_rss_kib < -1)
        return -EPROTO;
    return 0;
}

size_t invoker__proto_frame_size(uint64_t len)
{
    return INVOKER__FRAME_HDR + (size_t)((len + 15u) & ~(uint64_t)15u);
}

/* Word by word, each multiplied in before the next: a held frame whose
 * bytes a scribble changed, or one of another invoker, does not pass. */
uint64_t invoker__proto_held_hash(const unsigned char *frame, size_t size, uint64_t key)
{
    uint64_t h = invoker__proto_mix(key ^ size);
    for (size_t i = 0; i + 8 <= size; i += 8) {
        uint64_t w;
        memcpy(&w, frame + i, sizeof w);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    return invoker__proto_mix(h);
}

/* The running word packs an id (44 bits: 10^13 tasks) and 20 check bits
 * into one atomic store, so the parent never sees half of an update and a
 * scribbled word is caught. */
#define TAG_BITS 20u

uint64_t invoker__proto_running_tag(uint64_t id, uint64_t key)
{
    return id << TAG_BITS | (invoker__proto_mix(id ^ key) & ((1u << TAG_BITS) - 1u));
}

uint64_t invoker__proto_running_id(uint64_t tag, uint64_t key)
{
    uint64_t id = tag >> TAG_BITS;
    if (id == 0 || invoker__proto_running_tag(id, key) != tag)
        return 0;
    return id;
}

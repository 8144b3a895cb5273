/* Unit tests of the wire format: what the parent accepts from a worker. */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <string.h>

static const uint64_t KEY = 0x1234567890abcdefull;

static invoker__ticket make_ticket(uint64_t id, uint64_t len, uint32_t batch)
{
    invoker__ticket t;
    memset(&t, 0, sizeof t);
    t.id = id;
    t.arg_len = len;
    t.gen = 3;
    t.batch = batch;
    invoker__proto_ticket_seal(&t, KEY);
    return t;
}

static void test_ticket_roundtrip_and_tamper_rejected(void **state)
{
    (void)state;
    invoker__ticket t = make_ticket(42, 100, 1);
    assert_true(invoker__proto_ticket_valid(&t, KEY, 1000));
    assert_false(invoker__proto_ticket_valid(&t, KEY ^ 1, 1000));   /* another invoker */
    assert_false(invoker__proto_ticket_valid(&t, KEY, 99));         /* over max_arg */
    unsigned char *b = (unsigned char *)&t;
    for (size_t i = 0; i < sizeof t; i++) {
        invoker__ticket c = t;
        ((unsigned char *)&c)[i] ^= 0x40;
        assert_false(invoker__proto_ticket_valid(&c, KEY, 1000));
    }
    (void)b;
    invoker__ticket big = make_ticket(1, INVOKER__INLINE_MAX + 1, 1);
    assert_false(invoker__proto_ticket_valid(&big, KEY, SIZE_MAX));  /* too long to be inline */
}

static void test_packet_walk_finds_each_ticket_and_stops_at_garbage(void **state)
{
    (void)state;
    unsigned char pkt[INVOKER__PACKET];
    memset(pkt, 0xAA, sizeof pkt);
    size_t off = 0;
    for (uint64_t i = 0; i < 5; i++) {
        invoker__ticket t = make_ticket(10 + i, i * 7, i == 0 ? 5 : 0);
        memcpy(pkt + off, &t, sizeof t);
        off += invoker__proto_ticket_size(&t);
    }
    invoker__ticket got;
    size_t where;
    for (unsigned i = 0; i < 5; i++) {
        assert_true(invoker__proto_packet_ticket(pkt, off, i, KEY, 4096, &got, &where));
        assert_int_equal(got.id, 10 + i);
        assert_int_equal(where % 16, 0);
    }
    assert_false(invoker__proto_packet_ticket(pkt, off, 5, KEY, 4096, &got, &where));
    /* Truncated packet: the last ticket's bytes are missing. */
    assert_false(invoker__proto_packet_ticket(pkt, off - 1, 4, KEY, 4096, &got, &where));
    /* A scribbled second ticket hides it and everything after it. */
    pkt[sizeof(invoker__ticket) + 40] ^= 1;
    assert_true(invoker__proto_packet_ticket(pkt, off, 0, KEY, 4096, &got, &where));
    assert_false(invoker__proto_packet_ticket(pkt, off, 1, KEY, 4096, &got, &where));
    assert_false(invoker__proto_packet_ticket(pkt, off, 3, KEY, 4096, &got, &where));
}

static void test_packet_with_bad_batch_count_rejected(void **state)
{
    (void)state;
    unsigned char pkt[256] = { 0 };
    invoker__ticket t = make_ticket(1, 0, 0);   /* first ticket must say how many */
    memcpy(pkt, &t, sizeof t);
    invoker__ticket got;
    size_t where;
    assert_false(invoker__proto_packet_ticket(pkt, sizeof pkt, 0, KEY, 4096, &got, &where));
    t = make_ticket(1, 0, INVOKER__BATCH_MAX + 1);
    memcpy(pkt, &t, sizeof t);
    assert_false(invoker__proto_packet_ticket(pkt, sizeof pkt, 0, KEY, 4096, &got, &where));
}

static void test_frame_check_rejects_random_bytes(void **state)
{
    (void)state;
    invoker__frame f;
    memset(&f, 0, sizeof f);
    f.kind = INVOKER__FRAME_RESULT;
    f.id = 9;
    f.len = 100;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), 0);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 99), -EPROTO);
    assert_int_equal(invoker__proto_frame_check(&f, KEY + 1, 100), -EPROTO);
    unsigned accepted = 0;
    for (uint64_t seed = 1; seed <= 100000; seed++) {
        fill_pattern(&f, sizeof f, seed);
        accepted += invoker__proto_frame_check(&f, KEY, SIZE_MAX) == 0;
    }
    assert_int_equal(accepted, 0);
}

/* The forensics are under the check word; a peak below -1 is no peak. */
static void test_frame_forensics_are_sealed_and_checked(void **state)
{
    (void)state;
    invoker__frame f;
    memset(&f, 0, sizeof f);
    f.kind = INVOKER__FRAME_OBJECTIVE;
    f.id = 5;
    f.cpu_ns = 500000000;
    f.max_rss_kib = 102400;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 0), 0);
    f.cpu_ns++;
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 0), -EPROTO);
    f.cpu_ns--;
    f.max_rss_kib = 1;
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 0), -EPROTO);
    f.max_rss_kib = -1;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 0), 0);
    f.max_rss_kib = -2;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 0), -EPROTO);
    assert_int_equal(sizeof f, INVOKER__FRAME_HDR);
}

/* The attempt rides in the flags' top bits; any other unknown bit is refused. */
static void test_ticket_carries_the_attempt(void **state)
{
    (void)state;
    invoker__ticket t;
    memset(&t, 0, sizeof t);
    t.id = 3;
    t.arg_len = 10;
    t.batch = 1;
    t.flags = (uint32_t)INVOKER__TICKET_ATTEMPT_MAX << INVOKER__TICKET_ATTEMPT_SHIFT;
    invoker__proto_ticket_seal(&t, KEY);
    assert_true(invoker__proto_ticket_valid(&t, KEY, 1000));
    assert_int_equal(t.flags >> INVOKER__TICKET_ATTEMPT_SHIFT, INVOKER__TICKET_ATTEMPT_MAX);
    t.flags ^= 1u << INVOKER__TICKET_ATTEMPT_SHIFT;   /* another attempt, not sealed */
    assert_false(invoker__proto_ticket_valid(&t, KEY, 1000));
    for (unsigned bit = 1; bit < INVOKER__TICKET_ATTEMPT_SHIFT; bit++) {
        t.flags = 2u << INVOKER__TICKET_ATTEMPT_SHIFT | 1u << bit;
        invoker__proto_ticket_seal(&t, KEY);
        assert_false(invoker__proto_ticket_valid(&t, KEY, 1000));
    }
}

static void test_frame_kinds_other_than_result_carry_no_payload(void **state)
{
    (void)state;
    invoker__frame f;
    memset(&f, 0, sizeof f);
    f.kind = INVOKER__FRAME_OBJECTIVE;
    f.id = 1;
    f.len = 8;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), -EPROTO);
    f.kind = INVOKER__FRAME_SKIPPED;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), -EPROTO);
    f.len = 0;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), 0);
    f.id = 0;   /* names the packet's first task */
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), -EPROTO);
    f.kind = INVOKER__FRAME_KIND_MAX;
    f.len = 0;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), -EPROTO);
    /* A length whose padded frame size would wrap is refused, even when the
     * caller allows any size. */
    f.kind = INVOKER__FRAME_RESULT;
    f.len = UINT64_MAX - 40;
    invoker__proto_frame_seal(&f, KEY);
    assert_int_equal(invoker__proto_frame_check(&f, KEY, SIZE_MAX), -EPROTO);
    assert_int_equal(invoker__proto_frame_size(1), INVOKER__FRAME_HDR + 16);
    assert_int_equal(invoker__proto_frame_size(0), INVOKER__FRAME_HDR);
}

/* Only a task's outcome is ever held; the flag is under the check word. */
static void test_held_flag_only_on_outcomes_and_sealed(void **state)
{
    (void)state;
    const uint32_t kinds[] = { INVOKER__FRAME_RESULT, INVOKER__FRAME_OBJECTIVE,
                               INVOKER__FRAME_TOO_LARGE, INVOKER__FRAME_PROTOCOL,
                               INVOKER__FRAME_INIT_FAILED, INVOKER__FRAME_SKIPPED };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        invoker__frame f;
        memset(&f, 0, sizeof f);
        f.kind = kinds[i] | INVOKER__FRAME_HELD;
        f.id = 9;
        invoker__proto_frame_seal(&f, KEY);
        assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), i < 3 ? 0 : -EPROTO);
        if (i < 3) {
            f.kind &= ~INVOKER__FRAME_HELD;   /* flipped after sealing */
            assert_int_equal(invoker__proto_frame_check(&f, KEY, 100), -EPROTO);
        }
    }
}

static void test_running_tag_roundtrip_and_scribble_detected(void **state)
{
    (void)state;
    for (uint64_t id = 1; id < 100000; id += 997) {
        uint64_t tag = invoker__proto_running_tag(id, KEY);
        assert_int_equal(invoker__proto_running_id(tag, KEY), id);
        assert_int_equal(invoker__proto_running_id(tag ^ 1, KEY), 0);
        assert_int_equal(invoker__proto_running_id(tag, KEY ^ 2), 0);
    }
    assert_int_equal(invoker__proto_running_id(0, KEY), 0);
}

/* A held frame's hash changes with any byte of it, with its length and
 * with the key: a scribble, a torn copy or another invoker's frame fails. */
static void test_held_hash_covers_every_byte_length_and_key(void **state)
{
    (void)state;
    unsigned char frame[128];
    fill_pattern(frame, sizeof frame, 7);
    const uint64_t key = 0x1234567890abcdefull;
    uint64_t h = invoker__proto_held_hash(frame, sizeof frame, key);
    for (size_t i = 0; i < sizeof frame; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            frame[i] ^= (unsigned char)(1u << bit);
            assert_true(invoker__proto_held_hash(frame, sizeof frame, key) != h);
            frame[i] ^= (unsigned char)(1u << bit);
        }
    }
    assert_int_equal(invoker__proto_held_hash(frame, sizeof frame, key), h);
    assert_true(invoker__proto_held_hash(frame, sizeof frame - 16, key) != h);
    assert_true(invoker__proto_held_hash(frame, sizeof frame, key ^ 1) != h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticket_roundtrip_and_tamper_rejected),
        cmocka_unit_test(test_packet_walk_finds_each_ticket_and_stops_at_garbage),
        cmocka_unit_test(test_packet_with_bad_batch_count_rejected),
        cmocka_unit_test(test_frame_check_rejects_random_bytes),
        cmocka_unit_test(test_held_hash_covers_every_byte_length_and_key),
        cmocka_unit_test(test_held_flag_only_on_outcomes_and_sealed),
        cmocka_unit_test(test_frame_kinds_other_than_result_carry_no_payload),
        cmocka_unit_test(test_frame_forensics_are_sealed_and_checked),
        cmocka_unit_test(test_ticket_carries_the_attempt),
        cmocka_unit_test(test_running_tag_roundtrip_and_scribble_detected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

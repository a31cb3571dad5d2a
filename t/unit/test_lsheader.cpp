// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/store/lsheader.hpp: Lightning Stream's native value header.
// Layout (docs/schema-native.md): 8 timestamp, 8 txn id, 1 version (0),
// 1 flags, 4 reserved (0), 2 extension count N, N * 8 extension bytes;
// all big endian.

#include <cstring>
#include <string>
#include <string_view>

#include "store/lsheader.hpp"

// cmocka last: its fail() macro would clash with std::basic_ios::fail().
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
extern "C" {
#include <cmocka.h>
}

using namespace cptoken;

namespace {

std::string be64(std::uint64_t v) {
    std::string s(8, '\0');
    for (int i = 7; i >= 0; --i) {
        s[i] = static_cast<char>(v & 0xff);
        v >>= 8;
    }
    return s;
}

// A header made by hand.
std::string header(std::uint64_t ts, std::uint64_t txn, std::uint8_t version, std::uint8_t flags,
                   std::uint16_t extensions, const std::string &reserved = std::string(4, '\0')) {
    std::string h = be64(ts) + be64(txn);
    h += static_cast<char>(version);
    h += static_cast<char>(flags);
    h += reserved;
    h += static_cast<char>(extensions >> 8);
    h += static_cast<char>(extensions & 0xff);
    return h;
}

void test_constants(void **) {
    assert_int_equal(ls_header_size, 24);
    assert_int_equal(ls_flag_deleted, 1);
}

void test_encode_layout(void **) {
    std::string v = ls_encode(0x0102030405060708ULL, 0x1112131415161718ULL, 0, "xyz");
    const unsigned char expected[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // timestamp
                                      0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,  // txn id
                                      0x00,                                            // version
                                      0x00,                                            // flags
                                      0x00, 0x00, 0x00, 0x00,                          // reserved
                                      0x00, 0x00,                                      // extensions
                                      'x',  'y',  'z'};
    assert_int_equal(v.size(), sizeof expected);
    assert_memory_equal(v.data(), expected, sizeof expected);

    std::string w = ls_encode(0xfedcba9876543210ULL, 1, 0x01, "");
    const unsigned char expected_w[] = {0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10, 0, 0, 0, 0,
                                        0,    0,    0,    1,    0,    1,    0,    0,    0, 0, 0, 0};
    assert_int_equal(w.size(), 24);
    assert_memory_equal(w.data(), expected_w, 24);

    // Flags byte is written as given (the caller decides); a large payload with NULs.
    std::string payload(1000, '\0');
    payload[0] = 'a';
    payload[999] = 'z';
    std::string x = ls_encode(0, 0, 0x00, payload);
    assert_int_equal(x.size(), 1024);
    assert_memory_equal(x.data(), std::string(24, '\0').data(), 24);
    assert_memory_equal(x.data() + 24, payload.data(), 1000);
}

void test_tombstone(void **) {
    std::string t = ls_tombstone(0x0102030405060708ULL, 42);
    assert_int_equal(t.size(), 24);
    std::string expected = header(0x0102030405060708ULL, 42, 0, 0x01, 0);
    assert_memory_equal(t.data(), expected.data(), 24);
    auto d = ls_decode(t);
    assert_true(d.has_value());
    assert_true(d->deleted());
    assert_int_equal(d->flags, 1);
    assert_int_equal(d->payload.size(), 0);
    assert_int_equal(d->timestamp_ns, 0x0102030405060708ULL);
    assert_int_equal(d->txn_id, 42);
}

void test_round_trip(void **) {
    std::string v = ls_encode(1700000000123456789ULL, 77, 0, "payload\0x");
    auto d = ls_decode(v);
    assert_true(d.has_value());
    assert_int_equal(d->timestamp_ns, 1700000000123456789ULL);
    assert_int_equal(d->txn_id, 77);
    assert_int_equal(d->flags, 0);
    assert_false(d->deleted());
    assert_int_equal(d->payload.size(), 7);  // "payload\0x" as a const char* stops at the NUL
    assert_memory_equal(d->payload.data(), "payload", 7);
    // The payload points into the input.
    assert_true(d->payload.data() == v.data() + 24);

    std::string with_nul("a\0b", 3);
    std::string e = ls_encode(UINT64_MAX, UINT64_MAX, 0, with_nul);
    auto f = ls_decode(e);
    assert_true(f.has_value());
    assert_int_equal(f->timestamp_ns, UINT64_MAX);
    assert_int_equal(f->txn_id, UINT64_MAX);
    assert_int_equal(f->payload.size(), 3);
    assert_memory_equal(f->payload.data(), with_nul.data(), 3);

    // Header only, empty payload, not deleted.
    auto g = ls_decode(ls_encode(5, 6, 0, ""));
    assert_true(g.has_value());
    assert_false(g->deleted());
    assert_int_equal(g->payload.size(), 0);
}

void test_decode_extensions(void **) {
    std::string one = header(9, 8, 0, 0, 1) + std::string("EXTBLOCK") + "hello";
    auto d = ls_decode(one);
    assert_true(d.has_value());
    assert_int_equal(d->timestamp_ns, 9);
    assert_int_equal(d->txn_id, 8);
    assert_int_equal(d->payload.size(), 5);
    assert_memory_equal(d->payload.data(), "hello", 5);
    assert_true(d->payload.data() == one.data() + 32);

    std::string two = header(9, 8, 0, 0, 2) + std::string("EXTBLK-1EXTBLK-2") + "world!";
    d = ls_decode(two);
    assert_true(d.has_value());
    assert_int_equal(d->payload.size(), 6);
    assert_memory_equal(d->payload.data(), "world!", 6);

    // Extension blocks and nothing else: empty payload.
    std::string exact = header(1, 2, 0, 0, 2) + std::string(16, 'E');
    d = ls_decode(exact);
    assert_true(d.has_value());
    assert_int_equal(d->payload.size(), 0);

    // Extension count uses both bytes, big endian: 0x0100 = 256 blocks.
    std::string big = header(1, 2, 0, 0, 0x0100) + std::string(256 * 8, 'E') + "p";
    d = ls_decode(big);
    assert_true(d.has_value());
    assert_int_equal(d->payload.size(), 1);
    assert_memory_equal(d->payload.data(), "p", 1);
    // With only 255 blocks present (the low byte alone would say 0 blocks).
    std::string short_big = header(1, 2, 0, 0, 0x0100) + std::string(255 * 8, 'E');
    assert_false(ls_decode(short_big).has_value());
}

void test_decode_refused(void **) {
    // Truncated header: every length below 24.
    std::string v = ls_encode(1, 2, 0, "");
    for (std::size_t n = 0; n < 24; ++n)
        if (ls_decode(std::string_view(v.data(), n)))
            fail_msg("a %zu-byte value decoded", n);
    // Extension count beyond the value.
    assert_false(ls_decode(header(1, 2, 0, 0, 1)).has_value());
    assert_false(ls_decode(header(1, 2, 0, 0, 1) + "1234567").has_value());
    assert_false(ls_decode(header(1, 2, 0, 0, 2) + "12345678").has_value());
    assert_false(ls_decode(header(1, 2, 0, 0, 3) + std::string(23, 'x')).has_value());
    assert_false(ls_decode(header(1, 2, 0, 0, 0xffff) + "abc").has_value());
    // Exactly enough is fine.
    assert_true(ls_decode(header(1, 2, 0, 0, 1) + "12345678").has_value());
    // Version other than 0.
    assert_false(ls_decode(header(1, 2, 1, 0, 0) + "x").has_value());
    assert_false(ls_decode(header(1, 2, 1, 0, 0)).has_value());
    assert_false(ls_decode(header(1, 2, 0xff, 0, 0) + "x").has_value());
    assert_false(ls_decode(header(1, 2, 0x80, 1, 0)).has_value());
}

void test_decode_flags(void **) {
    // Unknown flags are kept but do not mean deleted.
    for (unsigned f : {0x02u, 0x04u, 0x80u, 0xfeu}) {
        std::string v = header(1, 2, 0, static_cast<std::uint8_t>(f), 0) + "data";
        auto d = ls_decode(v);
        assert_true(d.has_value());
        assert_false(d->deleted());
        assert_int_equal(d->flags, f);
        assert_int_equal(d->payload.size(), 4);
        assert_memory_equal(d->payload.data(), "data", 4);
    }
    for (unsigned f : {0x01u, 0x03u, 0x81u, 0xffu}) {
        auto d = ls_decode(header(1, 2, 0, static_cast<std::uint8_t>(f), 0));
        assert_true(d.has_value());
        assert_true(d->deleted());
        assert_int_equal(d->flags, f);
    }
    LsValue manual;
    manual.flags = 0x02;
    assert_false(manual.deleted());
    manual.flags = 0x01;
    assert_true(manual.deleted());
}

void test_decode_reserved_ignored(void **) {
    // The spec: readers ignore whatever other writers put in the reserved bytes.
    std::string v = header(3, 4, 0, 0, 0, std::string("\x01\x02\x03\x04", 4)) + "abc";
    auto d = ls_decode(v);
    assert_true(d.has_value());
    assert_int_equal(d->payload.size(), 3);
    assert_memory_equal(d->payload.data(), "abc", 3);
    assert_false(d->deleted());
}

void test_decode_no_overread(void **) {
    // The view ends before bytes that would complete the extension blocks.
    std::string full = header(1, 2, 0, 0, 1) + "12345678" + "tail";
    assert_true(ls_decode(full).has_value());
    for (std::size_t n = 0; n < 32; ++n)
        assert_false(ls_decode(std::string_view(full.data(), n)).has_value());
    auto d = ls_decode(std::string_view(full.data(), 34));
    assert_true(d.has_value());
    assert_int_equal(d->payload.size(), 2);
    assert_memory_equal(d->payload.data(), "ta", 2);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constants),
        cmocka_unit_test(test_encode_layout),
        cmocka_unit_test(test_tombstone),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_decode_extensions),
        cmocka_unit_test(test_decode_refused),
        cmocka_unit_test(test_decode_flags),
        cmocka_unit_test(test_decode_reserved_ignored),
        cmocka_unit_test(test_decode_no_overread),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

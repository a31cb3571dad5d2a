// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/record.hpp: the record encoding.
// Bad payloads are made by editing encode_record()'s output. The header
// documents the layout: a format byte, then fields (tag, 16-bit length,
// value). Tags are taken from lib/token/record.cpp: 1 user, 2 name, 3 created,
// 4 expires, 5 network, 6 predecessor, 7 rotated_at, 8 limit, 9
// imported_from; tags from 0x80 up are restrictions: 0x80 service, 0x81
// scope, 0x82 read_only (docs/store.md).

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "token/names.hpp"
#include "token/network.hpp"
#include "token/record.hpp"
#include "token/scope.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

constexpr std::uint8_t tag_user = 1;
constexpr std::uint8_t tag_name = 2;
constexpr std::uint8_t tag_network = 5;
constexpr std::uint8_t tag_predecessor = 6;
constexpr std::uint8_t tag_rotated_at = 7;
constexpr std::uint8_t tag_limit = 8;
constexpr std::uint8_t tag_imported_from = 9;
constexpr std::uint8_t tag_service = 0x80;
constexpr std::uint8_t tag_scope = 0x81;
constexpr std::uint8_t tag_read_only = 0x82;

TokenRecord sample(bool with_expiry, std::size_t networks) {
    TokenRecord r;
    r.user = "alice";
    r.name = "deploy-bot_1";
    r.created = 1767225600;
    r.expires = with_expiry ? 1798761600 : 0;
    for (std::size_t i = 0; i < networks; ++i) {
        if (i % 2 == 0)
            r.allowed_ips.push_back(net(("10." + std::to_string(i) + ".0.0/16").c_str()));
        else
            r.allowed_ips.push_back(net(("2001:db8:" + std::to_string(i) + "::/48").c_str()));
    }
    return r;
}

struct Field {
    std::size_t start;        // offset of the tag byte
    std::uint8_t tag;
    std::size_t value_start;  // offset of the value
    std::size_t length;
    std::size_t end() const { return value_start + length; }
};

// Walks the documented layout of a well-formed encoding.
std::vector<Field> fields_of(const std::string &enc) {
    std::vector<Field> out;
    std::size_t pos = 1;
    while (pos < enc.size()) {
        if (enc.size() - pos < 3) fail_msg("encoding does not follow the documented layout");
        Field f;
        f.start = pos;
        f.tag = static_cast<std::uint8_t>(enc[pos]);
        f.length = (static_cast<unsigned char>(enc[pos + 1]) << 8) | static_cast<unsigned char>(enc[pos + 2]);
        f.value_start = pos + 3;
        if (f.end() > enc.size()) fail_msg("encoding does not follow the documented layout");
        out.push_back(f);
        pos = f.end();
    }
    return out;
}

const Field &field(const std::vector<Field> &fs, std::uint8_t tag) {
    for (const auto &f : fs)
        if (f.tag == tag) return f;
    fail_msg("no field with tag %u", tag);
    return fs.front();
}

std::string remove_field(const std::string &enc, const Field &f) {
    return enc.substr(0, f.start) + enc.substr(f.end());
}

// A decoded record must satisfy every invariant the type documents.
void check_sane(const TokenRecord &r) {
    if (!is_valid_user(r.user)) fail_msg("decoded an invalid user");
    if (!is_valid_token_name(r.name)) fail_msg("decoded an invalid name");
    if (r.allowed_ips.size() > max_allowed_networks) fail_msg("decoded %zu networks", r.allowed_ips.size());
    for (const Network &n : r.allowed_ips) {
        if (n.base.family != 4 && n.base.family != 6) fail_msg("decoded a network of family %u", n.base.family);
        if (n.prefix > (n.base.family == 4 ? 32 : 128)) fail_msg("decoded prefix /%u", n.prefix);
        auto back = parse_network(to_string(n));
        if (!back || !(*back == n))
            fail_msg("decoded a network that is not valid: %s", to_string(n).c_str());
    }
}

void expect_round_trip(const TokenRecord &r) {
    std::string enc = encode_record(r);
    assert_true(enc.size() > 1);
    auto d = decode_record(enc);
    assert_true(d.has_value());
    assert_true(*d == r);
    assert_string_equal(d->user.c_str(), r.user.c_str());
    assert_string_equal(d->name.c_str(), r.name.c_str());
    assert_int_equal(d->created, r.created);
    assert_int_equal(d->expires, r.expires);
    assert_int_equal(d->allowed_ips.size(), r.allowed_ips.size());
    for (std::size_t i = 0; i < r.allowed_ips.size(); ++i) assert_true(d->allowed_ips[i] == r.allowed_ips[i]);
    // Encoding is deterministic.
    assert_true(encode_record(*d) == enc);
}

void test_round_trip(void **) {
    expect_round_trip(sample(false, 0));
    expect_round_trip(sample(true, 0));
    expect_round_trip(sample(true, 1));
    expect_round_trip(sample(false, 2));
    expect_round_trip(sample(true, 100));
    expect_round_trip(sample(false, 100));
    TokenRecord r = sample(true, 0);
    r.allowed_ips = {net("0.0.0.0/0"), net("::/0"), net("192.0.2.7"), net("2001:db8::1"), net("10.128.0.0/9")};
    expect_round_trip(r);
    r.user = std::string(64, 'u');
    r.name = std::string(50, 'N');
    expect_round_trip(r);
    r.user = "9";
    r.name = "-";
    r.created = 0;
    r.expires = 1;
    expect_round_trip(r);
    r.created = 4102444800;  // 2100
    r.expires = 253402300799;
    expect_round_trip(r);
    TokenRecord d = sample(true, 3);
    assert_false(d.never_expires());
    assert_true(sample(false, 0).never_expires());
    assert_false(d.expired_at(1798761599));
    assert_true(d.expired_at(1798761600));
    assert_true(d.expired_at(1798761601));
    assert_false(sample(false, 0).expired_at(INT64_MAX));
}

void test_distinct_encodings(void **) {
    std::set<std::string> encs;
    encs.insert(encode_record(sample(false, 0)));
    encs.insert(encode_record(sample(true, 0)));
    encs.insert(encode_record(sample(true, 1)));
    TokenRecord r = sample(false, 0);
    r.name = "other";
    encs.insert(encode_record(r));
    r.user = "bob";
    encs.insert(encode_record(r));
    r.created += 1;
    encs.insert(encode_record(r));
    assert_int_equal(encs.size(), 6);
}

// Every prefix that cuts a field must fail. A prefix that ends exactly
// between fields may decode (the format skips fields it does not know and
// has no field count), but never before user and name are complete.
void check_truncations(const TokenRecord &r) {
    // Every record ends in the end field, so every proper prefix, even one
    // cut between two fields (which would drop an expiry or an allowlist),
    // must be refused.
    std::string enc = encode_record(r);
    for (std::size_t n = 0; n < enc.size(); ++n) {
        // In its own allocation, so that ASan sees any read past the end.
        std::unique_ptr<char[]> copy(new char[n ? n : 1]);
        std::copy(enc.data(), enc.data() + n, copy.get());
        auto d = decode_record(std::string_view(copy.get(), n));
        // And as a view into the full encoding: reading past the view would
        // find the real continuation and succeed.
        auto d2 = decode_record(std::string_view(enc.data(), n));
        if (d || d2) fail_msg("prefix of %zu of %zu bytes decoded", n, enc.size());
    }
    assert_true(decode_record(enc).has_value());
}

void test_truncations(void **) {
    check_truncations(sample(false, 0));
    check_truncations(sample(true, 0));
    check_truncations(sample(true, 3));
    check_truncations(sample(false, 100));
}

void test_corrupt_bytes(void **) {
    for (const TokenRecord &r : {sample(true, 4), sample(false, 1)}) {
        std::string enc = encode_record(r);
        for (std::size_t i = 0; i < enc.size(); ++i) {
            for (unsigned x : {0x01u, 0x02u, 0x04u, 0x08u, 0x10u, 0x20u, 0x40u, 0x80u, 0xffu}) {
                std::string bad = enc;
                bad[i] = static_cast<char>(bad[i] ^ x);
                std::unique_ptr<char[]> copy(new char[bad.size()]);
                std::copy(bad.begin(), bad.end(), copy.get());
                auto d = decode_record(std::string_view(copy.get(), bad.size()));
                if (d) check_sane(*d);
            }
            for (unsigned v : {0x00u, 0x7fu, 0xffu}) {
                std::string bad = enc;
                bad[i] = static_cast<char>(v);
                auto d = decode_record(bad);
                if (d) check_sane(*d);
            }
        }
    }
}

void test_format_byte(void **) {
    std::string enc = encode_record(sample(true, 2));
    assert_true(decode_record(enc).has_value());
    for (unsigned f : {0x00u, 0x02u, 0x03u, 0x7fu, 0x80u, 0xffu}) {
        if (f == static_cast<unsigned char>(enc[0])) continue;
        std::string bad = enc;
        bad[0] = static_cast<char>(f);
        if (decode_record(bad)) fail_msg("format byte 0x%02x accepted", f);
    }
    assert_false(decode_record("").has_value());
    assert_false(decode_record(enc.substr(0, 1)).has_value());
}

void test_too_many_networks(void **) {
    TokenRecord r = sample(true, 101);
    assert_int_equal(r.allowed_ips.size(), 101);
    assert_false(decode_record(encode_record(r)).has_value());
    r = sample(false, 0);
    r.allowed_ips.assign(300, net("2001:db8::/32"));
    assert_false(decode_record(encode_record(r)).has_value());
    // Duplicates of one network count too.
    r = sample(false, 0);
    r.allowed_ips.assign(101, net("10.0.0.0/8"));
    assert_false(decode_record(encode_record(r)).has_value());
    r.allowed_ips.assign(100, net("10.0.0.0/8"));
    auto d = decode_record(encode_record(r));
    assert_true(d.has_value());
    assert_int_equal(d->allowed_ips.size(), 100);
}

void test_invalid_user(void **) {
    std::string enc = encode_record(sample(true, 1));
    auto fs = fields_of(enc);
    const Field &u = field(fs, tag_user);
    assert_int_equal(u.length, 5);
    assert_memory_equal(enc.data() + u.value_start, "alice", 5);
    for (char c : {'A', '.', '-', '_', ':', ' ', '/', '\0', '\xc3'}) {
        std::string bad = enc;
        bad[u.value_start] = c;  // first character
        if (decode_record(bad)) fail_msg("user with first byte 0x%02x accepted", (unsigned char)c);
    }
    for (char c : {'A', ':', ' ', '/', '\0', '\xc3', '\n'}) {
        std::string bad = enc;
        bad[u.value_start + 2] = c;
        if (decode_record(bad)) fail_msg("user with middle byte 0x%02x accepted", (unsigned char)c);
    }
    // Records encoded from invalid users do not decode either.
    for (const char *user : {"", "Alice", ".alice", "a b"}) {
        TokenRecord r = sample(false, 0);
        r.user = user;
        if (decode_record(encode_record(r))) fail_msg("user '%s' decoded", user);
    }
    TokenRecord r = sample(false, 0);
    r.user = std::string(65, 'a');
    assert_false(decode_record(encode_record(r)).has_value());
}

void test_invalid_name(void **) {
    std::string enc = encode_record(sample(true, 1));
    auto fs = fields_of(enc);
    const Field &n = field(fs, tag_name);
    assert_int_equal(n.length, 12);
    assert_memory_equal(enc.data() + n.value_start, "deploy-bot_1", 12);
    for (char c : {'.', ':', ' ', '/', '\0', '\xc3'}) {
        std::string bad = enc;
        bad[n.value_start + 3] = c;
        if (decode_record(bad)) fail_msg("name with byte 0x%02x accepted", (unsigned char)c);
    }
    for (const char *name : {"", "a.b", "with space"}) {
        TokenRecord r = sample(false, 0);
        r.name = name;
        if (decode_record(encode_record(r))) fail_msg("name '%s' decoded", name);
    }
    TokenRecord r = sample(false, 0);
    r.name = std::string(51, 'n');
    assert_false(decode_record(encode_record(r)).has_value());
}

void test_missing_fields(void **) {
    std::string enc = encode_record(sample(true, 2));
    auto fs = fields_of(enc);
    assert_false(decode_record(remove_field(enc, field(fs, tag_user))).has_value());
    assert_false(decode_record(remove_field(enc, field(fs, tag_name))).has_value());
    // Only the format byte.
    assert_false(decode_record(enc.substr(0, 1)).has_value());
}

// A field of a later version: tag, 16-bit length, value.
std::string later_field(std::uint8_t tag, const std::string &value) {
    std::string out;
    out += static_cast<char>(tag);
    out += static_cast<char>(value.size() >> 8);
    out += static_cast<char>(value.size() & 0xff);
    return out + value;
}

// Fields this version does not know decode into later_fields, as stored, and
// are written back (before the end field) by encode_record: an edit by this
// version keeps what a later one added.
void test_unknown_fields_kept(void **) {
    TokenRecord r = sample(true, 2);
    std::string enc = encode_record(r);
    const std::string end_field("\x00\x00\x00", 3);
    assert_true(enc.size() > 3 && enc.substr(enc.size() - 3) == end_field);
    std::string body = enc.substr(0, enc.size() - 3);
    auto fs = fields_of(enc);
    for (std::uint8_t tag : {0x0a, 0x41, 0x7f, 0x83, 0x8f, 0xc8, 0xff}) {
        const std::string extra = later_field(tag, "abc");
        auto d = decode_record(body + extra + end_field);
        assert_true(d.has_value());
        assert_true(d->later_fields == extra);
        TokenRecord expected = r;
        expected.later_fields = extra;
        assert_true(*d == expected);
        assert_false(*d == r);
        // Informational below 0x80, a restriction from 0x80 up.
        if (tag < 0x80)
            assert_false(d->unknown_restriction().has_value());
        else
            assert_int_equal(d->unknown_restriction().value_or(0), tag);
        // Encoded again, byte for byte the same.
        assert_true(encode_record(*d) == body + extra + end_field);
        // In the middle, after the user field: kept, and written back before the end.
        std::size_t at = field(fs, tag_user).end();
        d = decode_record(enc.substr(0, at) + extra + enc.substr(at));
        assert_true(d.has_value());
        assert_true(*d == expected);
        assert_true(encode_record(*d) == body + extra + end_field);
    }
    // Several, in stored order; an empty and a long value; the first
    // restriction is the one reported.
    const std::string several = later_field(0x41, "") + later_field(0x90, std::string(256, 'z')) +
                                later_field(0x42, "x") + later_field(0x91, "y") + later_field(0x41, "again");
    auto d = decode_record(body + several + end_field);
    assert_true(d.has_value());
    assert_true(d->later_fields == several);
    assert_int_equal(d->unknown_restriction().value_or(0), 0x90);
    auto again = decode_record(encode_record(*d));
    assert_true(again.has_value());
    assert_true(*again == *d);
    // Informational only: no restriction.
    d = decode_record(body + later_field(0x41, "") + later_field(0x7f, std::string(300, 'q')) + end_field);
    assert_true(d.has_value());
    assert_false(d->unknown_restriction().has_value());
    // A record of this version has none.
    assert_true(decode_record(enc)->later_fields.empty());
    assert_false(decode_record(enc)->unknown_restriction().has_value());
    // A record made in memory keeps what it is given through a round trip.
    TokenRecord made = sample(false, 1);
    made.later_fields = later_field(0x85, "scope");
    d = decode_record(encode_record(made));
    assert_true(d.has_value());
    assert_true(*d == made);
    assert_int_equal(d->unknown_restriction().value_or(0), 0x85);

    const std::string extra = later_field(0xc8, "abc");
    // Anything after the end field, known or not, is refused.
    assert_false(decode_record(enc + extra).has_value());
    assert_false(decode_record(enc + end_field).has_value());
    // A record without its end field is a truncated one.
    assert_false(decode_record(body).has_value());
    assert_false(decode_record(body + extra).has_value());
    // An end field with a value is refused.
    assert_false(decode_record(body + std::string("\x00\x00\x01x", 4)).has_value());
    // An unknown field whose length runs past the end is truncation.
    std::string overlong("\xcb\x00\x10", 3);
    overlong += "short";
    assert_false(decode_record(body + overlong).has_value());
    // A lone tag byte or tag + one length byte at the end.
    assert_false(decode_record(body + std::string("\xcb", 1)).has_value());
    assert_false(decode_record(body + std::string("\xcb\x00", 2)).has_value());
    // A record cut inside or just after a later field is refused too.
    check_truncations(made);
}

void test_invalid_network(void **) {
    TokenRecord r = sample(false, 0);
    r.allowed_ips = {net("10.0.0.0/8")};
    std::string enc = encode_record(r);
    auto fs = fields_of(enc);
    const Field &nf = field(fs, tag_network);
    assert_true(decode_record(enc).has_value());
    // Host bits set below the prefix: 10.0.0.1/8 is not a valid network.
    {
        std::string bad = enc;
        assert_true(bad[nf.end() - 1] == '\0');
        bad[nf.end() - 1] = '\x01';
        auto d = decode_record(bad);
        if (d) fail_msg("network with host bits set decoded as %s", to_string(d->allowed_ips.at(0)).c_str());
    }
    // Every single-byte change inside the network value yields nullopt or a valid network.
    for (std::size_t i = nf.value_start; i < nf.end(); ++i)
        for (int v = 0; v < 256; ++v) {
            std::string bad = enc;
            bad[i] = static_cast<char>(v);
            auto d = decode_record(bad);
            if (d) check_sane(*d);
        }
    // Same for an IPv6 network.
    r.allowed_ips = {net("2001:db8::/32")};
    enc = encode_record(r);
    fs = fields_of(enc);
    const Field &nf6 = field(fs, tag_network);
    for (std::size_t i = nf6.value_start; i < nf6.end(); ++i)
        for (int v = 0; v < 256; ++v) {
            std::string bad = enc;
            bad[i] = static_cast<char>(v);
            auto d = decode_record(bad);
            if (d) check_sane(*d);
        }
    // A network field with an empty value or too long a value.
    std::string empty_net = enc.substr(0, nf6.start) + std::string("\x05\x00\x00", 3) + enc.substr(nf6.end());
    assert_false(decode_record(empty_net).has_value());
    std::string value = enc.substr(nf6.value_start, nf6.length) + "X";
    std::string longer = enc.substr(0, nf6.start);
    longer += static_cast<char>(tag_network);
    longer += static_cast<char>(value.size() >> 8);
    longer += static_cast<char>(value.size() & 0xff);
    longer += value;
    longer += enc.substr(nf6.end());
    assert_false(decode_record(longer).has_value());
}

// A rotated token and the token that replaced it.
TokenRecord with_rotation(std::size_t predecessors, Seconds rotated_at) {
    TokenRecord r = sample(true, 2);
    for (std::size_t i = 0; i < predecessors; ++i) r.predecessors.push_back(token_digest(std::to_string(i)));
    r.rotated_at = rotated_at;
    return r;
}

void test_rotation_fields_round_trip(void **) {
    for (std::size_t count : {0, 1, 2, 8})
        for (Seconds rotated_at : {Seconds{0}, Seconds{1767225700}, Seconds{-5}, Seconds{253402300799}}) {
            const TokenRecord r = with_rotation(count, rotated_at);
            expect_round_trip(r);
            const auto d = decode_record(encode_record(r));
            assert_true(d->predecessors == r.predecessors);  // in order
            assert_int_equal(d->rotated_at, rotated_at);
            assert_int_equal(d->rotated(), rotated_at != 0);
            assert_true(d->later_fields.empty());
            check_truncations(r);
        }
    // Absent fields cost nothing: a current token without predecessors
    // encodes exactly as before this version.
    const std::string plain = encode_record(sample(true, 2));
    assert_true(encode_record(with_rotation(0, 0)) == plain);
    for (const Field &f : fields_of(plain)) assert_true(f.tag != tag_predecessor && f.tag != tag_rotated_at);
}

void test_rotation_fields_informational(void **) {
    // Below first_restriction_tag: a reader that does not know them skips
    // them (keeps them in later_fields) instead of refusing the token.
    static_assert(tag_predecessor < first_restriction_tag && tag_rotated_at < first_restriction_tag);
    const std::string enc = encode_record(with_rotation(2, 1767225700));
    const auto fs = fields_of(enc);
    assert_int_equal(field(fs, tag_predecessor).length, 64);
    assert_int_equal(field(fs, tag_rotated_at).length, 8);
    const auto d = decode_record(enc);
    assert_false(d->unknown_restriction().has_value());
}

void test_too_many_predecessors(void **) {
    assert_true(decode_record(encode_record(with_rotation(max_predecessors, 0))).has_value());
    assert_false(decode_record(encode_record(with_rotation(max_predecessors + 1, 0))).has_value());
    assert_false(decode_record(encode_record(with_rotation(50, 1767225700))).has_value());
}

// Replaces the value of the first field `tag` in `enc` by `value`.
std::string with_value(const std::string &enc, std::uint8_t tag, const std::string &value) {
    const Field f = field(fields_of(enc), tag);
    return enc.substr(0, f.start) + later_field(tag, value) + enc.substr(f.end());
}

void test_bad_rotation_fields(void **) {
    const std::string enc = encode_record(with_rotation(1, 1767225700));
    assert_true(decode_record(enc).has_value());
    // A predecessor that is not a 64-byte digest.
    for (std::size_t length : {0, 1, 32, 63, 65, 128})
        if (decode_record(with_value(enc, tag_predecessor, std::string(length, 'd'))))
            fail_msg("a predecessor of %zu bytes decoded", length);
    // rotated_at: 8 bytes, not 0 (0 is written as no field), at most once.
    for (std::size_t length : {0, 4, 7, 9})
        if (decode_record(with_value(enc, tag_rotated_at, std::string(length, '\x01'))))
            fail_msg("a rotated_at of %zu bytes decoded", length);
    assert_false(decode_record(with_value(enc, tag_rotated_at, std::string(8, '\0'))).has_value());
    const Field rotated = field(fields_of(enc), tag_rotated_at);
    const std::string twice = enc.substr(0, rotated.end()) + enc.substr(rotated.start, rotated.end() - rotated.start) +
                              enc.substr(rotated.end());
    assert_false(decode_record(twice).has_value());
}

}  // namespace

// A whm token, scoped and read-only, imported with its cPanel limits.
TokenRecord restricted() {
    TokenRecord r = sample(true, 2);
    r.service = Service::whm;
    r.scopes = {"/execute/Email/", "/json-api/cpanel", "/"};
    r.read_only = true;
    r.limits = {"list-accts", "create-acct", "cpanel:email"};
    r.imported_from = "/var/cpanel/authn/api_tokens_v2/whostmgr/alice.json";
    return r;
}

void test_restriction_fields_round_trip(void **) {
    const TokenRecord r = restricted();
    expect_round_trip(r);
    const auto d = decode_record(encode_record(r));
    assert_true(d->service == Service::whm);
    assert_true(d->scopes == r.scopes);  // in order
    assert_true(d->read_only);
    assert_true(d->limits == r.limits);
    assert_true(d->imported_from == r.imported_from);
    assert_false(d->unknown_restriction().has_value());
    check_truncations(r);
    TokenRecord many = sample(false, 0);
    for (std::size_t i = 0; i < max_scopes; ++i) many.scopes.push_back("/s" + std::to_string(i));
    for (std::size_t i = 0; i < max_limits; ++i) many.limits.push_back("l" + std::to_string(i));
    expect_round_trip(many);
    many.scopes.push_back("/one-too-many");
    assert_false(decode_record(encode_record(many)).has_value());
    many.scopes.pop_back();
    many.limits.push_back("one-too-many");
    assert_false(decode_record(encode_record(many)).has_value());
}

// Records made before services and scopes (a cpanel token, no scope) encode
// exactly as before, so older readers admit them; every restriction is a
// tag from 0x80 up, so older readers refuse a whm, scoped or read-only token.
void test_restriction_fields_tags(void **) {
    const std::string plain = encode_record(sample(true, 2));
    TokenRecord cpanel = sample(true, 2);
    cpanel.service = Service::cpanel;
    assert_true(encode_record(cpanel) == plain);
    const auto fs = fields_of(encode_record(restricted()));
    // (test_unknown_fields_kept: a reader refuses a token with a tag from
    // 0x80 up that it does not know.)
    for (std::uint8_t tag : {tag_service, tag_scope, tag_read_only}) assert_true(field(fs, tag).tag >= first_restriction_tag);
    for (std::uint8_t tag : {tag_limit, tag_imported_from}) assert_true(field(fs, tag).tag < first_restriction_tag);
    assert_int_equal(field(fs, tag_service).length, 1);
    assert_int_equal(static_cast<unsigned char>(encode_record(restricted())[field(fs, tag_service).value_start]), 1);
    assert_int_equal(field(fs, tag_read_only).length, 0);
}

void test_bad_restriction_fields(void **) {
    const std::string enc = encode_record(restricted());
    assert_true(decode_record(enc).has_value());
    // The service: one byte, 1 (whm); cpanel (0) is never stored; at most once.
    for (const std::string &bad : {std::string(), std::string(1, '\0'), std::string(1, '\x02'), std::string("\x01\x01")})
        assert_false(decode_record(with_value(enc, tag_service, bad)).has_value());
    const Field service = field(fields_of(enc), tag_service);
    const std::string service_twice = enc.substr(0, service.end()) +
                                      enc.substr(service.start, service.end() - service.start) + enc.substr(service.end());
    assert_false(decode_record(service_twice).has_value());
    // A scope that is_valid_scope refuses.
    for (const char *bad : {"", "execute", "/a/../b", "/a//b", "/a?b", "/%2e%2e", "/a\\b", "/a b", "/./"})
        if (decode_record(with_value(enc, tag_scope, bad))) fail_msg("scope '%s' decoded", bad);
    // read_only: empty, at most once.
    assert_false(decode_record(with_value(enc, tag_read_only, "x")).has_value());
    const Field read_only = field(fields_of(enc), tag_read_only);
    const std::string read_only_twice = enc.substr(0, read_only.end()) + later_field(tag_read_only, "") +
                                        enc.substr(read_only.end());
    assert_false(decode_record(read_only_twice).has_value());
    // A limit that is not a feature or ACL name; an origin that is not an absolute path.
    for (const char *bad : {"", "a b", "a,b", "\"x\""})
        if (decode_record(with_value(enc, tag_limit, bad))) fail_msg("limit '%s' decoded", bad);
    assert_false(decode_record(with_value(enc, tag_limit, std::string(101, 'a'))).has_value());
    for (const std::string &bad : {std::string(), std::string("relative.json"), std::string("/a\0b", 4)})
        assert_false(decode_record(with_value(enc, tag_imported_from, bad)).has_value());
}

void test_service_names(void **) {
    assert_string_equal(service_name(Service::cpanel), "cpanel");
    assert_string_equal(service_name(Service::whm), "whm");
    assert_true(parse_service("cpanel") == Service::cpanel);
    assert_true(parse_service("whm") == Service::whm);
    for (const char *bad : {"", "WHM", "whostmgr", "cpanel ", "basic"}) assert_false(parse_service(bad).has_value());
    assert_true((all_services & service_bit(Service::cpanel)) && (all_services & service_bit(Service::whm)));
    assert_true(service_bit(Service::cpanel) != service_bit(Service::whm));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_distinct_encodings),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_corrupt_bytes),
        cmocka_unit_test(test_format_byte),
        cmocka_unit_test(test_too_many_networks),
        cmocka_unit_test(test_invalid_user),
        cmocka_unit_test(test_invalid_name),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_unknown_fields_kept),
        cmocka_unit_test(test_invalid_network),
        cmocka_unit_test(test_rotation_fields_round_trip),
        cmocka_unit_test(test_rotation_fields_informational),
        cmocka_unit_test(test_too_many_predecessors),
        cmocka_unit_test(test_bad_rotation_fields),
        cmocka_unit_test(test_restriction_fields_round_trip),
        cmocka_unit_test(test_restriction_fields_tags),
        cmocka_unit_test(test_bad_restriction_fields),
        cmocka_unit_test(test_service_names),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

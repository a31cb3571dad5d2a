// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/credentials.hpp: strict base64 and the Authorization
// header parser.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "token/credentials.hpp"
#include "token/record.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

constexpr unsigned all_schemes = scheme_cpanel | scheme_whm | scheme_basic;
constexpr const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// A plain RFC 4648 encoder, to build Basic headers from any bytes.
std::string b64(std::string_view in) {
    std::string out;
    std::size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const unsigned n = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
        out += alphabet[n >> 18];
        out += alphabet[(n >> 12) & 63];
        out += alphabet[(n >> 6) & 63];
        out += alphabet[n & 63];
    }
    if (in.size() - i == 1) {
        const unsigned n = (unsigned char)in[i] << 16;
        out += alphabet[n >> 18];
        out += alphabet[(n >> 12) & 63];
        out += "==";
    } else if (in.size() - i == 2) {
        const unsigned n = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
        out += alphabet[n >> 18];
        out += alphabet[(n >> 12) & 63];
        out += alphabet[(n >> 6) & 63];
        out += '=';
    }
    return out;
}

// Printable form of arbitrary bytes for failure messages.
std::string show(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    if (out.size() > 200) out = out.substr(0, 200) + "...";
    return out;
}

const char *error_name(CredentialsError e) {
    return e == CredentialsError::wrong_scheme ? "wrong_scheme" : "malformed";
}

void expect_decoded(std::string_view text, std::string_view expected, int line) {
    const auto got = base64_decode_strict(text);
    if (!got) fail_msg("line %d: base64_decode_strict(\"%s\") refused, expected \"%s\"", line, show(text).c_str(),
                       show(expected).c_str());
    if (*got != expected)
        fail_msg("line %d: base64_decode_strict(\"%s\") = \"%s\", expected \"%s\"", line, show(text).c_str(),
                 show(*got).c_str(), show(expected).c_str());
}
#define EXPECT_DECODED(text, expected) expect_decoded(text, expected, __LINE__)

void expect_refused(std::string_view text, int line) {
    const auto got = base64_decode_strict(text);
    if (got)
        fail_msg("line %d: base64_decode_strict(\"%s\") = \"%s\", expected a refusal", line, show(text).c_str(),
                 show(*got).c_str());
}
#define EXPECT_REFUSED(text) expect_refused(text, __LINE__)

void expect_credentials(std::string_view header, unsigned accepted, Scheme scheme, std::string_view user,
                        std::string_view token, int line) {
    const ParsedCredentials p = parse_authorization(header, accepted);
    if (!p.credentials)
        fail_msg("line %d: parse_authorization(\"%s\", %u) failed with %s, expected %s %s:%s", line,
                 show(header).c_str(), accepted, error_name(p.error), scheme_name(scheme), show(user).c_str(),
                 show(token).c_str());
    const Credentials &c = *p.credentials;
    if (c.scheme != scheme || c.user != user || c.token != token)
        fail_msg("line %d: parse_authorization(\"%s\", %u) = %s \"%s\" \"%s\", expected %s \"%s\" \"%s\"", line,
                 show(header).c_str(), accepted, scheme_name(c.scheme), show(c.user).c_str(), show(c.token).c_str(),
                 scheme_name(scheme), show(user).c_str(), show(token).c_str());
}
#define EXPECT_CREDENTIALS(header, accepted, scheme, user, token) \
    expect_credentials(header, accepted, scheme, user, token, __LINE__)

void expect_error(std::string_view header, unsigned accepted, CredentialsError error, int line) {
    const ParsedCredentials p = parse_authorization(header, accepted);
    if (p.credentials)
        fail_msg("line %d: parse_authorization(\"%s\", %u) = %s \"%s\" \"%s\", expected %s", line,
                 show(header).c_str(), accepted, scheme_name(p.credentials->scheme),
                 show(p.credentials->user).c_str(), show(p.credentials->token).c_str(), error_name(error));
    if (p.error != error)
        fail_msg("line %d: parse_authorization(\"%s\", %u) failed with %s, expected %s", line, show(header).c_str(),
                 accepted, error_name(p.error), error_name(error));
}
#define EXPECT_WRONG_SCHEME(header, accepted) \
    expect_error(header, accepted, CredentialsError::wrong_scheme, __LINE__)
#define EXPECT_MALFORMED(header, accepted) expect_error(header, accepted, CredentialsError::malformed, __LINE__)

std::string bytes(const char *s, std::size_t n) { return std::string(s, n); }

// ---------------------------------------------------------------- base64

void test_base64_rfc4648_vectors(void **) {
    EXPECT_DECODED("", "");
    EXPECT_DECODED("Zg==", "f");
    EXPECT_DECODED("Zm8=", "fo");
    EXPECT_DECODED("Zm9v", "foo");
    EXPECT_DECODED("Zm9vYg==", "foob");
    EXPECT_DECODED("Zm9vYmE=", "fooba");
    EXPECT_DECODED("Zm9vYmFy", "foobar");
    EXPECT_DECODED("YWxpY2U6VE9LRU4=", "alice:TOKEN");
    EXPECT_DECODED("+/+/", "\xfb\xff\xbf");
    EXPECT_DECODED("////", "\xff\xff\xff");
}

void test_base64_nul_bytes(void **) {
    EXPECT_DECODED("AA==", bytes("\0", 1));
    EXPECT_DECODED("AAA=", bytes("\0\0", 2));
    EXPECT_DECODED("AAAA", bytes("\0\0\0", 3));
    EXPECT_DECODED("YQBi", bytes("a\0b", 3));
    const auto one = base64_decode_strict("AA==");
    assert_true(one.has_value());
    assert_int_equal(one->size(), 1);
    assert_int_equal((*one)[0], 0);
}

void test_base64_every_byte(void **) {
    // All 256 byte values, at each of the three positions of a group, and
    // every length up to 3 groups and a bit: the decoder inverts the encoder.
    std::string all;
    for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
    for (int shift = 0; shift < 3; ++shift) {
        const std::string in = std::string(shift, 'x') + all;
        EXPECT_DECODED(b64(in), in);
    }
    for (std::size_t n = 0; n <= 10; ++n) {
        const std::string in = all.substr(250 - n, n);
        EXPECT_DECODED(b64(in), in);
    }
}

void test_base64_bad_length(void **) {
    EXPECT_REFUSED("Z");
    EXPECT_REFUSED("Zg");
    EXPECT_REFUSED("Zg=");
    EXPECT_REFUSED("Zm9");
    EXPECT_REFUSED("Zm9vY");
    EXPECT_REFUSED("Zm9vYg");
    EXPECT_REFUSED("Zm9vYg=");
    EXPECT_REFUSED("Zm8==");
    EXPECT_REFUSED("Zg===");
    EXPECT_REFUSED("=");
}

void test_base64_bad_characters(void **) {
    EXPECT_REFUSED("Zm9v!");
    EXPECT_REFUSED("Zm9!");
    EXPECT_REFUSED("Zm 9v");
    EXPECT_REFUSED("Zm 9");
    EXPECT_REFUSED("Zm9-");  // URL-safe alphabet
    EXPECT_REFUSED("Zm9_");
    EXPECT_REFUSED("-_-_");
    EXPECT_REFUSED("Zm9vYmF-");
    EXPECT_REFUSED("Zm9\xff");
    EXPECT_REFUSED("Zm9\x80");
    EXPECT_REFUSED(bytes("Zm9\0", 4));
    EXPECT_REFUSED(bytes("\0\0\0\0", 4));
    EXPECT_REFUSED("Zm.v");
    EXPECT_REFUSED("Zm9v\"AA=");
    // Every byte that is not in the alphabet, at each position of a group.
    const std::string valid = alphabet;
    for (int c = 0; c < 256; ++c) {
        if (c == '=' || valid.find(static_cast<char>(c)) != std::string::npos) continue;
        for (int pos = 0; pos < 4; ++pos) {
            std::string text = "Zm9v";
            text[pos] = static_cast<char>(c);
            EXPECT_REFUSED(text);
            EXPECT_REFUSED("Zm9v" + text);
        }
    }
}

void test_base64_misplaced_padding(void **) {
    EXPECT_REFUSED("Zg==Zg==");  // '=' in the middle
    EXPECT_REFUSED("Zm8=Zm8=");
    EXPECT_REFUSED("Zg==Zm9v");
    EXPECT_REFUSED("Z===");  // three '='
    EXPECT_REFUSED("====");
    EXPECT_REFUSED("Zm9v====");
    EXPECT_REFUSED("Zg=A");  // '=' not at the end
    EXPECT_REFUSED("Z=g=");
    EXPECT_REFUSED("=Zg=");
    EXPECT_REFUSED("==Zg");
    EXPECT_REFUSED("Zm=v");
    EXPECT_REFUSED("Zm9vZ===");
    EXPECT_REFUSED("Zm9vYg=A");
}

void test_base64_unused_bits(void **) {
    // Not canonical: "Zg==" and "Zm8=" are the encodings of "f" and "fo".
    EXPECT_REFUSED("Zh==");
    EXPECT_REFUSED("Zm9=");
    EXPECT_REFUSED("Zm9vZh==");
    EXPECT_REFUSED("Zm9vZm9=");
    EXPECT_REFUSED("AB==");
    EXPECT_REFUSED("AAB=");
    EXPECT_REFUSED("YWxpY2U6VB==");  // "alice:T" is YWxpY2U6VA==

    // Exhaustively: "XY==" is accepted iff the low 4 bits of Y are zero,
    // and "XYZ=" iff the low 2 bits of Z are zero; then it decodes right.
    for (int x = 0; x < 64; ++x)
        for (int y = 0; y < 64; ++y) {
            const std::string two = std::string{alphabet[x], alphabet[y], '=', '='};
            const auto d = base64_decode_strict(two);
            if ((y & 0xf) != 0) {
                if (d) fail_msg("\"%s\" accepted: non-zero unused bits", two.c_str());
                continue;
            }
            if (!d || d->size() != 1 || (unsigned char)(*d)[0] != ((x << 2) | (y >> 4)))
                fail_msg("\"%s\" not decoded to one byte 0x%02x", two.c_str(), (x << 2) | (y >> 4));
        }
    for (int x = 0; x < 64; ++x)
        for (int y = 0; y < 64; ++y)
            for (int z = 0; z < 64; ++z) {
                const char three[] = {alphabet[x], alphabet[y], alphabet[z], '='};
                const auto e = base64_decode_strict(std::string_view(three, 4));
                if ((z & 0x3) != 0) {
                    if (e) fail_msg("\"%.4s\" accepted: non-zero unused bits", three);
                    continue;
                }
                const unsigned n = x << 18 | y << 12 | z << 6;
                if (!e || e->size() != 2 || (unsigned char)(*e)[0] != (n >> 16) ||
                    (unsigned char)(*e)[1] != ((n >> 8) & 0xff))
                    fail_msg("\"%.4s\" not decoded to 0x%02x 0x%02x", three, n >> 16, (n >> 8) & 0xff);
            }
}

void test_base64_whitespace(void **) {
    EXPECT_REFUSED(" Zm9");
    EXPECT_REFUSED("Zm9 ");
    EXPECT_REFUSED(" Zm9v");
    EXPECT_REFUSED("Zm9v ");
    EXPECT_REFUSED("Zm9v\n");
    EXPECT_REFUSED("Zm9v\r\n");
    EXPECT_REFUSED("Zm9v\nZm9v");
    EXPECT_REFUSED("Zm9v\r\nZm9v");
    EXPECT_REFUSED("Zm9vYmFy\n\n\n\n");
    EXPECT_REFUSED("Zm9\t");
    EXPECT_REFUSED("\tZm9v");
    EXPECT_REFUSED("Zm9v\tZm9");
    EXPECT_REFUSED("    ");
    EXPECT_REFUSED("\n\n\n\n");
    EXPECT_REFUSED("Zg==\n");
    EXPECT_REFUSED("Zg=\n");
}

// ---------------------------------------------------------------- schemes

void test_scheme_names(void **) {
    assert_string_equal(scheme_name(scheme_cpanel), "cpanel");
    assert_string_equal(scheme_name(scheme_whm), "whm");
    assert_string_equal(scheme_name(scheme_basic), "basic");
    for (Scheme s : {scheme_cpanel, scheme_whm, scheme_basic}) {
        const auto back = parse_scheme_name(scheme_name(s));
        assert_true(back.has_value());
        assert_int_equal(*back, s);
        std::string upper = scheme_name(s);
        for (char &c : upper) c = static_cast<char>(c - 'a' + 'A');
        const auto up = parse_scheme_name(upper);
        assert_true(up.has_value());
        assert_int_equal(*up, s);
    }
    assert_int_equal(*parse_scheme_name("Cpanel"), scheme_cpanel);
    assert_int_equal(*parse_scheme_name("wHm"), scheme_whm);
    assert_int_equal(*parse_scheme_name("BaSiC"), scheme_basic);
    for (std::string_view bad : {std::string_view(""), std::string_view("cpane"), std::string_view("cpanels"),
                                 std::string_view("bearer"), std::string_view("digest"), std::string_view("basic "),
                                 std::string_view(" basic"), std::string_view("wh"), std::string_view("whmm"),
                                 std::string_view("whm\0", 4), std::string_view("cpanel:"),
                                 std::string_view("unknown"), std::string_view("b\xc3\xa1sic")})
        if (parse_scheme_name(bad)) fail_msg("parse_scheme_name(\"%s\") accepted", show(bad).c_str());
    // Every byte value at every position: only the letter itself, in either case.
    for (Scheme s : {scheme_cpanel, scheme_whm, scheme_basic}) {
        const std::string name = scheme_name(s);
        for (std::size_t pos = 0; pos < name.size(); ++pos)
            for (int byte = 0; byte < 256; ++byte) {
                std::string t = name;
                t[pos] = static_cast<char>(byte);
                const bool same = byte == name[pos] || byte == name[pos] - 'a' + 'A';
                if (parse_scheme_name(t).has_value() != same)
                    fail_msg("parse_scheme_name(\"%s\"): byte %d at %zu", show(t).c_str(), byte, pos);
            }
    }
}

// ---------------------------------------------------------------- parse_authorization

void test_parse_simple(void **) {
    EXPECT_CREDENTIALS("cpanel alice:TOKEN", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("whm root:TOKEN", all_schemes, scheme_whm, "root", "TOKEN");
    EXPECT_CREDENTIALS("Basic " + b64("alice:TOKEN"), all_schemes, scheme_basic, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel alice:TOKEN", scheme_cpanel, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("whm alice:TOKEN", scheme_whm, scheme_whm, "alice", "TOKEN");
    EXPECT_CREDENTIALS("basic " + b64("alice:TOKEN"), scheme_basic, scheme_basic, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel a:b", all_schemes, scheme_cpanel, "a", "b");
}

void test_parse_scheme_case(void **) {
    EXPECT_CREDENTIALS("CPANEL alice:TOKEN", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("Cpanel alice:TOKEN", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cPaNeL alice:TOKEN", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("wHm alice:TOKEN", all_schemes, scheme_whm, "alice", "TOKEN");
    EXPECT_CREDENTIALS("WHM alice:TOKEN", all_schemes, scheme_whm, "alice", "TOKEN");
    EXPECT_CREDENTIALS("BASIC " + b64("alice:TOKEN"), all_schemes, scheme_basic, "alice", "TOKEN");
    EXPECT_CREDENTIALS("bAsIc " + b64("alice:TOKEN"), all_schemes, scheme_basic, "alice", "TOKEN");
    // The credentials themselves keep their case.
    EXPECT_CREDENTIALS("cpanel Alice:ToKeN", all_schemes, scheme_cpanel, "Alice", "ToKeN");
}

void test_parse_blanks(void **) {
    EXPECT_CREDENTIALS("cpanel   alice:TOKEN", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel\talice:TOKEN", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel \t \t alice:TOKEN", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("whm\t\talice:TOKEN", all_schemes, scheme_whm, "alice", "TOKEN");
    EXPECT_CREDENTIALS("Basic   " + b64("alice:TOKEN"), all_schemes, scheme_basic, "alice", "TOKEN");
    EXPECT_CREDENTIALS("Basic\t" + b64("alice:TOKEN"), all_schemes, scheme_basic, "alice", "TOKEN");
    // Trailing blanks are not part of the credentials.
    EXPECT_CREDENTIALS("cpanel alice:TOKEN ", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel alice:TOKEN   ", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel alice:TOKEN\t", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel alice:TOKEN \t \t", all_schemes, scheme_cpanel, "alice", "TOKEN");
    EXPECT_CREDENTIALS("Basic " + b64("alice:TOKEN") + "  ", all_schemes, scheme_basic, "alice", "TOKEN");
    EXPECT_CREDENTIALS("Basic " + b64("alice:TOKEN") + "\t", all_schemes, scheme_basic, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel \t alice:TOKEN \t ", all_schemes, scheme_cpanel, "alice", "TOKEN");
}

void test_parse_first_colon(void **) {
    EXPECT_CREDENTIALS("cpanel alice:a:b", all_schemes, scheme_cpanel, "alice", "a:b");
    EXPECT_CREDENTIALS("cpanel alice::b", all_schemes, scheme_cpanel, "alice", ":b");
    EXPECT_CREDENTIALS("cpanel alice:a:", all_schemes, scheme_cpanel, "alice", "a:");
    EXPECT_CREDENTIALS("whm alice:a:b:c", all_schemes, scheme_whm, "alice", "a:b:c");
    EXPECT_CREDENTIALS("Basic " + b64("alice:a:b"), all_schemes, scheme_basic, "alice", "a:b");
    EXPECT_CREDENTIALS("Basic " + b64("alice::"), all_schemes, scheme_basic, "alice", ":");
}

void test_parse_basic(void **) {
    // Every length modulo 3 of the decoded pair, so every padding.
    EXPECT_CREDENTIALS("Basic " + b64("a:T"), all_schemes, scheme_basic, "a", "T");
    EXPECT_CREDENTIALS("Basic " + b64("a:TO"), all_schemes, scheme_basic, "a", "TO");
    EXPECT_CREDENTIALS("Basic " + b64("a:TOK"), all_schemes, scheme_basic, "a", "TOK");
    const std::string token = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    EXPECT_CREDENTIALS("Basic " + b64("alice:" + token), all_schemes, scheme_basic, "alice", token);
    // Non-ASCII bytes pass through (checked later by verify_token).
    EXPECT_CREDENTIALS("Basic " + b64("\xc3\xa9:\xff"), all_schemes, scheme_basic, "\xc3\xa9", "\xff");
}

void test_parse_accepted_mask(void **) {
    const std::string basic = "Basic " + b64("alice:TOKEN");
    EXPECT_WRONG_SCHEME("whm alice:TOKEN", scheme_cpanel | scheme_basic);
    EXPECT_WRONG_SCHEME("cpanel alice:TOKEN", scheme_whm | scheme_basic);
    EXPECT_WRONG_SCHEME(basic, scheme_cpanel | scheme_whm);
    EXPECT_WRONG_SCHEME("cpanel alice:TOKEN", 0);
    EXPECT_WRONG_SCHEME("whm alice:TOKEN", 0);
    EXPECT_WRONG_SCHEME(basic, 0);
    // The scheme is looked at first: broken credentials of a refused scheme
    // are a wrong scheme, not malformed.
    EXPECT_WRONG_SCHEME("whm alice", scheme_cpanel);
    EXPECT_WRONG_SCHEME("Basic !!!!", scheme_cpanel | scheme_whm);
    EXPECT_WRONG_SCHEME("whm", scheme_cpanel | scheme_basic);
    // Each single scheme accepted alone.
    EXPECT_CREDENTIALS("whm alice:TOKEN", scheme_whm, scheme_whm, "alice", "TOKEN");
    EXPECT_CREDENTIALS(basic, scheme_basic, scheme_basic, "alice", "TOKEN");
    EXPECT_CREDENTIALS("cpanel alice:TOKEN", scheme_cpanel, scheme_cpanel, "alice", "TOKEN");
    // Bits that are no scheme change nothing.
    EXPECT_CREDENTIALS("cpanel alice:TOKEN", scheme_cpanel | 0xfff0u, scheme_cpanel, "alice", "TOKEN");
    EXPECT_WRONG_SCHEME("whm alice:TOKEN", scheme_cpanel | 0xfff0u);
}

void test_parse_other_schemes(void **) {
    EXPECT_WRONG_SCHEME("Bearer x", all_schemes);
    EXPECT_WRONG_SCHEME("Bearer alice:TOKEN", all_schemes);
    EXPECT_WRONG_SCHEME("Digest username=\"alice\", realm=\"cpanel\", nonce=\"x\", uri=\"/\", response=\"y\"",
                        all_schemes);
    EXPECT_WRONG_SCHEME("Negotiate YIIC", all_schemes);
    EXPECT_WRONG_SCHEME("foo alice:TOKEN", all_schemes);
    EXPECT_WRONG_SCHEME("cpanels alice:TOKEN", all_schemes);
    EXPECT_WRONG_SCHEME("cpane alice:TOKEN", all_schemes);
    EXPECT_WRONG_SCHEME("", all_schemes);
    EXPECT_WRONG_SCHEME("alice:TOKEN", all_schemes);
    // A scheme without a separator is another word.
    EXPECT_WRONG_SCHEME("cpanelalice:x", all_schemes);
    EXPECT_WRONG_SCHEME("cpanel:alice:x", all_schemes);
    EXPECT_WRONG_SCHEME("whmroot:x", all_schemes);
    EXPECT_WRONG_SCHEME("Basic" + b64("alice:TOKEN"), all_schemes);
    EXPECT_WRONG_SCHEME("cpanel\nalice:x", all_schemes);
    EXPECT_WRONG_SCHEME("cpanel\ralice:x", all_schemes);
    EXPECT_WRONG_SCHEME(bytes("cpanel\0alice:x", 14), all_schemes);
}

void test_parse_no_credentials(void **) {
    EXPECT_MALFORMED("cpanel", all_schemes);
    EXPECT_MALFORMED("cpanel ", all_schemes);
    EXPECT_MALFORMED("cpanel \t ", all_schemes);
    EXPECT_MALFORMED("whm", all_schemes);
    EXPECT_MALFORMED("whm\t", all_schemes);
    EXPECT_MALFORMED("Basic", all_schemes);
    EXPECT_MALFORMED("Basic ", all_schemes);
    EXPECT_MALFORMED("Basic    ", all_schemes);
}

void test_parse_malformed(void **) {
    // No colon, empty user, empty token.
    EXPECT_MALFORMED("cpanel alice", all_schemes);
    EXPECT_MALFORMED("cpanel aliceTOKEN", all_schemes);
    EXPECT_MALFORMED("cpanel :TOKEN", all_schemes);
    EXPECT_MALFORMED("cpanel :", all_schemes);
    EXPECT_MALFORMED("cpanel ::", all_schemes);
    EXPECT_MALFORMED("cpanel alice:", all_schemes);
    EXPECT_MALFORMED("cpanel alice:  ", all_schemes);  // token only blanks, trimmed away
    EXPECT_MALFORMED("whm :TOKEN", all_schemes);
    EXPECT_MALFORMED("whm alice:", all_schemes);
    EXPECT_MALFORMED("Basic " + b64("alice"), all_schemes);
    EXPECT_MALFORMED("Basic " + b64(":TOKEN"), all_schemes);
    EXPECT_MALFORMED("Basic " + b64("alice:"), all_schemes);
    EXPECT_MALFORMED("Basic " + b64(":"), all_schemes);
    // Bad base64.
    EXPECT_MALFORMED("Basic !!!!", all_schemes);
    EXPECT_MALFORMED("Basic YWxpY2U6VE9LRU4", all_schemes);      // padding left off
    EXPECT_MALFORMED("Basic YWxpY2U6VB==", all_schemes);         // non-canonical
    EXPECT_MALFORMED("Basic YWxp Y2U6VE9LRU4=", all_schemes);    // blank inside
    EXPECT_MALFORMED("Basic YWxpY2U6VE9LRU4=YWxp", all_schemes); // '=' inside
    EXPECT_MALFORMED("Basic YWxpY2U6VE9LRU4=\n", all_schemes);
    EXPECT_MALFORMED("Basic alice:TOKEN", all_schemes);
    EXPECT_MALFORMED("Basic YWxpY2U-VE9LRU4=", all_schemes);     // URL-safe alphabet
    // NUL bytes anywhere, decoded or raw.
    EXPECT_MALFORMED("Basic " + b64(bytes("alice\0:TOKEN", 12)), all_schemes);
    EXPECT_MALFORMED("Basic " + b64(bytes("alice:TO\0KEN", 12)), all_schemes);
    EXPECT_MALFORMED("Basic " + b64(bytes("\0alice:TOKEN", 12)), all_schemes);
    EXPECT_MALFORMED("Basic " + b64(bytes("alice:TOKEN\0", 12)), all_schemes);
    EXPECT_MALFORMED("Basic " + b64(bytes("alice:\0", 7)), all_schemes);
    EXPECT_MALFORMED("Basic " + b64(bytes("\0:\0", 3)), all_schemes);
    EXPECT_MALFORMED(bytes("cpanel alice\0:TOKEN", 19), all_schemes);
    EXPECT_MALFORMED(bytes("cpanel alice:TO\0KEN", 19), all_schemes);
    EXPECT_MALFORMED(bytes("cpanel alice:TOKEN\0", 19), all_schemes);
    EXPECT_MALFORMED(bytes("whm \0alice:TOKEN", 16), all_schemes);
}

void test_parse_long_headers(void **) {
    const std::string token(8000 - 13, 'A');
    const std::string h1 = "cpanel alice:" + token;
    assert_int_equal(h1.size(), 8000);
    EXPECT_CREDENTIALS(h1, all_schemes, scheme_cpanel, "alice", token);

    const std::string pair = "alice:" + std::string(5994 - 6, 'B');  // 5994 bytes -> 7992 base64 chars
    const std::string h2 = "Basic  " + b64(pair);
    assert_true(h2.size() >= 7990 && h2.size() <= 8010);
    EXPECT_CREDENTIALS(h2, all_schemes, scheme_basic, "alice", pair.substr(6));

    EXPECT_MALFORMED("cpanel " + std::string(8000 - 7, ' '), all_schemes);
    EXPECT_MALFORMED("cpanel " + std::string(8000 - 7, 'x'), all_schemes);
    EXPECT_MALFORMED("Basic " + std::string(7992, '='), all_schemes);
    EXPECT_MALFORMED("Basic " + std::string(7993, 'A'), all_schemes);
    EXPECT_WRONG_SCHEME(std::string(8000, 'x'), all_schemes);
    EXPECT_WRONG_SCHEME(std::string(8000, ' '), all_schemes);
    EXPECT_WRONG_SCHEME(std::string(8000, '\0'), all_schemes);
    // A colon-only header: user empty.
    EXPECT_MALFORMED("cpanel " + std::string(7993, ':'), all_schemes);
    // Many colons: the user is before the first one.
    EXPECT_CREDENTIALS("cpanel u" + std::string(7992, ':'), all_schemes, scheme_cpanel, "u",
                       std::string(7991, ':'));
}

// ---------------------------------------------------------------- fuzz-ish

void check_invariants(std::string_view header, unsigned accepted) {
    const ParsedCredentials p = parse_authorization(header, accepted);
    if (!p.credentials) {
        if (p.error != CredentialsError::wrong_scheme && p.error != CredentialsError::malformed)
            fail_msg("parse_authorization(\"%s\"): error %d out of range", show(header).c_str(), (int)p.error);
        return;
    }
    const Credentials &c = *p.credentials;
    if (c.user.empty() || c.token.empty() || c.user.find('\0') != std::string::npos ||
        c.token.find('\0') != std::string::npos || c.user.find(':') != std::string::npos)
        fail_msg("parse_authorization(\"%s\") = \"%s\" \"%s\": empty, NUL or colon in user", show(header).c_str(),
                 show(c.user).c_str(), show(c.token).c_str());
    if (!(accepted & c.scheme))
        fail_msg("parse_authorization(\"%s\", %u): scheme %s not accepted", show(header).c_str(), accepted,
                 scheme_name(c.scheme));
    if (c.scheme != scheme_basic && header.find(c.user + ":" + c.token) == std::string_view::npos)
        fail_msg("parse_authorization(\"%s\") = \"%s\" \"%s\": not taken from the header", show(header).c_str(),
                 show(c.user).c_str(), show(c.token).c_str());
}

void test_fuzz(void **) {
    std::mt19937 rng(20260101);
    auto below = [&](unsigned n) { return static_cast<unsigned>(rng() % n); };
    const char *schemes[] = {"cpanel", "CPANEL", "whm", "wHm", "Basic", "basic", "BASIC", "Bearer", ""};
    const std::string interesting = std::string("ab:= \t\0+/AZ09\n\r\xff", 16) + alphabet;
    std::size_t returned = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string body;
        const unsigned len = below(4) == 0 ? below(300) : below(40);
        const unsigned mode = below(4);
        for (unsigned k = 0; k < len; ++k) {
            if (mode == 0) body += static_cast<char>(rng() & 0xff);  // any byte
            else body += interesting[below(interesting.size())];
        }
        if (mode == 3 && !body.empty()) body[below(body.size())] = ':';  // near a user:token pair
        std::string header;
        switch (below(4)) {
            case 0: header = body; break;  // raw bytes
            case 1: header = std::string(schemes[below(9)]) + std::string(1 + below(3), below(2) ? ' ' : '\t') + body;
                break;
            case 2: header = std::string(schemes[below(9)]) + " " + b64(body); break;
            default: {
                // Base64 of random bytes, sometimes damaged by one byte.
                std::string enc = b64(body);
                if (!enc.empty() && below(2)) enc[below(enc.size())] = static_cast<char>(rng() & 0xff);
                header = "Basic " + enc;
                break;
            }
        }
        check_invariants(header, all_schemes);
        check_invariants(header, below(8));
        if (parse_authorization(header, all_schemes).credentials) ++returned;
        // And the decoder alone, on the same bytes.
        if (const auto d = base64_decode_strict(body)) {
            if (d->size() != body.size() / 4 * 3 - (body.size() >= 1 && body.back() == '=') -
                                 (body.size() >= 2 && body[body.size() - 2] == '='))
                fail_msg("base64_decode_strict(\"%s\"): %zu bytes", show(body).c_str(), d->size());
            if (b64(*d) != body)
                fail_msg("base64_decode_strict(\"%s\") accepted a non-canonical encoding", show(body).c_str());
        }
    }
    // The generator does reach the success path.
    if (returned < 1000) fail_msg("only %zu of 20000 random headers parsed", returned);
    print_message("%zu of 20000 random headers parsed\n", returned);
}

// Which tokens credentials may use: each token scheme its own service;
// Basic those the location names in CPTokenSchemes (cpanel if none).
void test_services_for(void **) {
    const unsigned cpanel = service_bit(Service::cpanel), whm = service_bit(Service::whm);
    for (unsigned accepted = 0; accepted < 8; ++accepted) {
        assert_int_equal(services_for(scheme_cpanel, accepted), cpanel);
        assert_int_equal(services_for(scheme_whm, accepted), whm);
    }
    assert_int_equal(services_for(scheme_basic, scheme_cpanel | scheme_basic), cpanel);
    assert_int_equal(services_for(scheme_basic, scheme_whm | scheme_basic), whm);
    assert_int_equal(services_for(scheme_basic, scheme_basic), cpanel);
    assert_int_equal(services_for(scheme_basic, scheme_cpanel | scheme_whm | scheme_basic), cpanel | whm);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_rfc4648_vectors),
        cmocka_unit_test(test_base64_nul_bytes),
        cmocka_unit_test(test_base64_every_byte),
        cmocka_unit_test(test_base64_bad_length),
        cmocka_unit_test(test_base64_bad_characters),
        cmocka_unit_test(test_base64_misplaced_padding),
        cmocka_unit_test(test_base64_unused_bits),
        cmocka_unit_test(test_base64_whitespace),
        cmocka_unit_test(test_scheme_names),
        cmocka_unit_test(test_parse_simple),
        cmocka_unit_test(test_parse_scheme_case),
        cmocka_unit_test(test_parse_blanks),
        cmocka_unit_test(test_parse_first_colon),
        cmocka_unit_test(test_parse_basic),
        cmocka_unit_test(test_parse_accepted_mask),
        cmocka_unit_test(test_parse_other_schemes),
        cmocka_unit_test(test_parse_no_credentials),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_long_headers),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_services_for),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

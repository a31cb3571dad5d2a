// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/token.hpp: generation, shape, checksum, digest.

#include <array>
#include <cstring>
#include <set>
#include <cctype>
#include <string>
#include <string_view>

#include "token/token.hpp"

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

constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

bool all_token_chars(const std::string &s) {
    for (char c : s)
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
    return true;
}

int symbol_index(char c) {
    auto pos = alphabet.find(c);
    return pos == std::string_view::npos ? -1 : static_cast<int>(pos);
}

void test_constants(void **) {
    assert_int_equal(token_length, 32);
    assert_int_equal(token_checksum_length, 4);
}

void test_generate_shape(void **) {
    for (int i = 0; i < 2000; ++i) {
        std::string t = generate_token();
        assert_int_equal(t.size(), 32);
        if (!all_token_chars(t)) fail_msg("generated token has a character outside [A-Z0-9]: %s", t.c_str());
        assert_true(has_token_shape(t));
    }
}

void test_generated_checksum_valid(void **) {
    for (int i = 0; i < 2000; ++i) {
        std::string t = generate_token();
        if (!has_valid_checksum(t)) fail_msg("generated token fails its own checksum: %s", t.c_str());
    }
}

// A hash-based 4-symbol checksum misses a given change with probability
// 36^-4 (~6e-7). Over ~1100 fixed mutations the chance of two misses in a
// correct implementation is ~2e-7, so at most one miss is tolerated; a
// checksum that ignores a position or a character would miss dozens.
void test_single_char_change_detected(void **) {
    const std::size_t substitutes[] = {1, 2, 5, 11, 17, 23, 35};
    int misses = 0;
    int tried = 0;
    for (int k = 0; k < 5; ++k) {
        std::string t = generate_token();
        assert_true(has_valid_checksum(t));
        for (std::size_t pos = 0; pos < t.size(); ++pos) {
            int idx = symbol_index(t[pos]);
            assert_true(idx >= 0);
            for (std::size_t s : substitutes) {
                std::string m = t;
                m[pos] = alphabet[(idx + s) % alphabet.size()];
                assert_true(m != t);
                assert_true(has_token_shape(m));
                ++tried;
                if (has_valid_checksum(m)) {
                    ++misses;
                    print_message("checksum accepted mutation at %zu: %s -> %s\n", pos, t.c_str(),
                                  m.c_str());
                }
            }
        }
    }
    assert_int_equal(tried, 5 * 32 * 7);
    assert_in_range(misses, 0, 1);
}

void test_checksum_requires_shape(void **) {
    for (int i = 0; i < 50; ++i) {
        std::string t = generate_token();
        assert_true(has_valid_checksum(t));
        std::string lower = t;
        for (char &c : lower)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (lower != t) assert_false(has_valid_checksum(lower));
        assert_false(has_valid_checksum(t.substr(0, 31)));
        assert_false(has_valid_checksum(t + "A"));
        assert_false(has_valid_checksum("X" + t));
        assert_false(has_valid_checksum(t.substr(1)));
    }
    assert_false(has_valid_checksum(""));
}

// Swapping two different adjacent characters is the most common typo.
void test_transposition_detected(void **) {
    int misses = 0;
    for (int k = 0; k < 5; ++k) {
        std::string t = generate_token();
        for (std::size_t pos = 0; pos + 1 < t.size(); ++pos) {
            if (t[pos] == t[pos + 1]) continue;
            std::string m = t;
            std::swap(m[pos], m[pos + 1]);
            if (has_valid_checksum(m)) ++misses;
        }
    }
    assert_in_range(misses, 0, 1);
}

// 20000 tokens, 28 random symbols each. Per symbol overall: n = 560000,
// p = 1/36, mean 15555.6, sigma ~123; bound +-750 (~6 sigma). A plain
// `byte % 36` would put 4 symbols at ~17500 and is caught. At any single
// position each symbol is expected ~556 times: never 0 in a sound RNG.
void test_distribution(void **) {
    constexpr int n_tokens = 20000;
    constexpr std::size_t random_len = token_length - token_checksum_length;
    std::array<long, 36> overall{};
    const std::size_t watched[] = {0, 1, 13, 26, 27};
    std::array<std::array<long, 36>, 5> at{};
    for (int i = 0; i < n_tokens; ++i) {
        std::string t = generate_token();
        for (std::size_t p = 0; p < random_len; ++p) {
            int idx = symbol_index(t[p]);
            assert_true(idx >= 0);
            ++overall[idx];
        }
        for (std::size_t w = 0; w < 5; ++w) ++at[w][symbol_index(t[watched[w]])];
    }
    const double mean = double(n_tokens) * random_len / 36.0;
    for (int s = 0; s < 36; ++s) {
        if (overall[s] < mean - 750 || overall[s] > mean + 750)
            fail_msg("symbol %c appears %ld times, expected %.0f +- 750", alphabet[s], overall[s], mean);
    }
    for (std::size_t w = 0; w < 5; ++w)
        for (int s = 0; s < 36; ++s) {
            // mean 555.6, sigma ~23.2: 6 sigma ~ 140
            if (at[w][s] < 415 || at[w][s] > 697)
                fail_msg("symbol %c appears %ld times at position %zu, expected ~556", alphabet[s],
                         at[w][s], watched[w]);
        }
}

void test_uniqueness(void **) {
    std::set<std::string> seen;
    std::set<std::string> random_parts;
    for (int i = 0; i < 50000; ++i) {
        std::string t = generate_token();
        assert_true(seen.insert(t).second);
        assert_true(random_parts.insert(t.substr(0, 28)).second);
    }
}

void test_has_token_shape(void **) {
    assert_true(has_token_shape("U7HMR63FGY292DQZ4H5BFH16JLYMO01M"));
    assert_true(has_token_shape(std::string(32, 'A')));
    assert_true(has_token_shape(std::string(32, 'Z')));
    assert_true(has_token_shape(std::string(32, '0')));
    assert_true(has_token_shape(std::string(32, '9')));
    assert_false(has_token_shape(""));
    assert_false(has_token_shape(std::string(31, 'A')));
    assert_false(has_token_shape(std::string(33, 'A')));
    assert_false(has_token_shape(std::string(64, 'A')));
    assert_false(has_token_shape("u7hmr63fgy292dqz4h5bfh16jlymo01m"));
    assert_false(has_token_shape("U7HMR63FGY292DQZ4H5BFH16JLYMO01m"));
    assert_false(has_token_shape("U7HMR63FGY292DQZ-H5BFH16JLYMO01M"));
    // Characters just outside the ranges A-Z and 0-9.
    for (char bad : {'@', '[', '/', ':', '`', '{', ' ', '_', '.', '+', '=', '\n', '\t'}) {
        std::string t(32, 'A');
        t[7] = bad;
        assert_false(has_token_shape(t));
        t = std::string(32, 'A');
        t[31] = bad;
        assert_false(has_token_shape(t));
    }
    // Embedded NUL, as a string_view of 32 bytes.
    std::string with_nul = "U7HMR63FGY292DQZ4H5BFH16JLYMO01M";
    with_nul[16] = '\0';
    assert_int_equal(with_nul.size(), 32);
    assert_false(has_token_shape(std::string_view(with_nul.data(), with_nul.size())));
    std::string nul_end = std::string(31, 'A') + '\0';
    assert_false(has_token_shape(std::string_view(nul_end.data(), nul_end.size())));
    // 31 good characters followed by a NUL and one more (33 bytes).
    std::string nul33 = std::string(32, 'A') + '\0';
    assert_false(has_token_shape(std::string_view(nul33.data(), nul33.size())));
    // Non-ASCII bytes.
    std::string utf8(30, 'A');
    utf8 += "\xc3\x89";  // É
    assert_int_equal(utf8.size(), 32);
    assert_false(has_token_shape(utf8));
    std::string high(32, 'A');
    high[0] = static_cast<char>(0xC1);  // 'A' | 0x80
    assert_false(has_token_shape(high));
    // Every byte value at every position (the check has no branch per character).
    for (std::size_t pos = 0; pos < 32; ++pos)
        for (int byte = 0; byte < 256; ++byte) {
            std::string t = "U7HMR63FGY292DQZ4H5BFH16JLYMO01M";
            t[pos] = static_cast<char>(byte);
            const bool allowed = (byte >= '0' && byte <= '9') || (byte >= 'A' && byte <= 'Z');
            if (has_token_shape(t) != allowed) fail_msg("byte %d at %zu: %d", byte, pos, !allowed);
        }
}

std::string hex_of(const Digest &d) {
    static const char *h = "0123456789abcdef";
    std::string s;
    for (unsigned char b : d) {
        s += h[b >> 4];
        s += h[b & 15];
    }
    return s;
}

void test_digest_vectors(void **) {
    const char *empty =
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
    const char *abc =
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
    // printf %s U7HMR63FGY292DQZ4H5BFH16JLYMO01M | sha512sum
    const char *cp =
        "1ca2aded321cde3f07abe082c3a15247700d6de5ab31bd9beb6e130761a97172"
        "71e6f2bb3f7fabf4fc81e205a0a206820d22df3fd11cb1c8e297ffdc96b6d961";
    assert_string_equal(hex_of(token_digest("")).c_str(), empty);
    assert_string_equal(hex_of(token_digest("abc")).c_str(), abc);
    assert_string_equal(hex_of(token_digest("U7HMR63FGY292DQZ4H5BFH16JLYMO01M")).c_str(), cp);
    assert_string_equal(digest_hex(token_digest("")).c_str(), empty);
    assert_string_equal(digest_hex(token_digest("abc")).c_str(), abc);
    assert_string_equal(digest_hex(token_digest("U7HMR63FGY292DQZ4H5BFH16JLYMO01M")).c_str(), cp);
    // The digest covers the whole string_view, embedded NUL included.
    std::string a_nul_b("a\0b", 3);
    assert_true(token_digest(a_nul_b) != token_digest("a"));
    assert_true(token_digest(std::string_view(a_nul_b)) != token_digest("a\0c"));
    // Only the view's bytes, not what follows in memory.
    const char *longer = "abcdef";
    assert_string_equal(digest_hex(token_digest(std::string_view(longer, 3))).c_str(), abc);
}

void test_digest_hex_format(void **) {
    Digest d{};
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<unsigned char>(i * 4 + 3);
    std::string expected;
    static const char *h = "0123456789abcdef";
    for (unsigned char b : d) {
        expected += h[b >> 4];
        expected += h[b & 15];
    }
    std::string got = digest_hex(d);
    assert_int_equal(got.size(), 128);
    assert_string_equal(got.c_str(), expected.c_str());
    // And back: exactly what digest_hex prints, nothing else.
    assert_true(digest_from_hex(got) == d);
    std::string upper = got;
    for (char &c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (upper != got) assert_false(digest_from_hex(upper).has_value());
    assert_false(digest_from_hex(got.substr(1)).has_value());
    assert_false(digest_from_hex(got + "0").has_value());
    assert_false(digest_from_hex("g" + got.substr(1)).has_value());
    Digest zero{};
    assert_string_equal(digest_hex(zero).c_str(), std::string(128, '0').c_str());
    Digest ff;
    ff.fill(0xff);
    assert_string_equal(digest_hex(ff).c_str(), std::string(128, 'f').c_str());
    for (int i = 0; i < 100; ++i) {
        std::string hx = digest_hex(token_digest(generate_token()));
        assert_int_equal(hx.size(), 128);
        for (char c : hx) assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    }
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constants),
        cmocka_unit_test(test_generate_shape),
        cmocka_unit_test(test_generated_checksum_valid),
        cmocka_unit_test(test_single_char_change_detected),
        cmocka_unit_test(test_checksum_requires_shape),
        cmocka_unit_test(test_transposition_detected),
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_uniqueness),
        cmocka_unit_test(test_has_token_shape),
        cmocka_unit_test(test_digest_vectors),
        cmocka_unit_test(test_digest_hex_format),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

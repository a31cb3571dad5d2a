// SPDX-License-Identifier: Apache-2.0
// lib/token/: what a token is, its record and rules; no storage, no httpd.
// Big-endian integers in stored values: the one encoder and decoder every
// format here uses (Lightning Stream header, records, schema version, usage).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cptoken {

/// Appends the low `bytes` bytes of `value` to `out`, most significant first.
inline void put_be(std::string &out, std::uint64_t value, int bytes) {
    for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

/// The `bytes`-byte big-endian number at `pos`; the caller has checked that
/// `in` holds them.
inline std::uint64_t get_be(std::string_view in, std::size_t pos, int bytes) noexcept {
    std::uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value = (value << 8) | static_cast<unsigned char>(in[pos + i]);
    return value;
}

/// `value` as 8 bytes (two's complement for negatives).
inline std::string be64(std::int64_t value) {
    std::string out;
    put_be(out, static_cast<std::uint64_t>(value), 8);
    return out;
}

/// The signed number in exactly 8 bytes; nullopt for any other length.
inline std::optional<std::int64_t> from_be64(std::string_view in) noexcept {
    if (in.size() != 8) return std::nullopt;
    return static_cast<std::int64_t>(get_be(in, 0, 8));
}

}  // namespace cptoken

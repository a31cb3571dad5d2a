// SPDX-License-Identifier: Apache-2.0
// Tokens: generation, shape, checksum and the at-rest digest.
#pragma once

#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace cptoken {

/// Every token is this many characters of [A-Z0-9] (cPanel's shape).
inline constexpr std::size_t token_length = 32;
/// Tokens issued here end in this many checksum characters; the other 28
/// are random (28 * log2(36) = 144 bits).
inline constexpr std::size_t token_checksum_length = 4;

/// SHA-512 of the token string: the at-rest form and the store's key.
using Digest = std::array<unsigned char, 64>;

/// Makes a new token from OpenSSL RAND_bytes, without modulo bias, ending
/// in its checksum. Throws std::runtime_error if the RNG fails.
std::string generate_token();

/// True if `token` has the token shape: exactly 32 characters of [A-Z0-9].
/// Tokens of that shape are accepted whether or not their checksum holds
/// (imported cPanel tokens have none).
bool has_token_shape(std::string_view token) noexcept;

/// True if a token of the right shape ends in the checksum of the rest,
/// that is, it was issued here and not mistyped.
bool has_valid_checksum(std::string_view token) noexcept;

/// SHA-512 of the token, as cPanel stores it.
Digest token_digest(std::string_view token) noexcept;

/// Lowercase hex of any bytes, two characters each.
std::string bytes_hex(std::string_view bytes);

/// `hex` into `out`: exactly 2 × out.size() lowercase hex digits (as
/// bytes_hex writes them), else false and `out` unspecified.
bool bytes_from_hex(std::string_view hex, std::span<unsigned char> out) noexcept;

/// Lowercase hex, 128 characters (cPanel's `token_hash`).
std::string digest_hex(const Digest &digest);

/// The digest digest_hex() printed: exactly 128 lowercase hex digits;
/// nullopt for anything else.
std::optional<Digest> digest_from_hex(std::string_view hex) noexcept;

}  // namespace cptoken

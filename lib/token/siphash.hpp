// SPDX-License-Identifier: Apache-2.0
// SipHash-2-4 with a 128-bit output (Aumasson and Bernstein, "SipHash: a fast
// short-input PRF", 2012, and the reference's 128-bit variant), written from
// the specification. A keyed PRF, not a password hash: it stands for a token
// only inside one process, under a key that process drew at random and never
// shows (TokenStore's cache of tokens in use).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cptoken {

using SipKey = std::array<unsigned char, 16>;
using SipTag = std::array<unsigned char, 16>;

/// SipHash-2-4-128 of `message` under `key`; the tag's bytes as the
/// reference implementation writes them (two little-endian 64-bit words).
SipTag siphash128(const SipKey &key, std::string_view message) noexcept;

/// Equal without an early exit: the time taken does not depend on where two
/// tags first differ.
bool same_tag(const SipTag &a, const SipTag &b) noexcept;

}  // namespace cptoken

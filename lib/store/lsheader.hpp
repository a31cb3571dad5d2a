// SPDX-License-Identifier: Apache-2.0
// Lightning Stream's native value header: every value in our stores starts
// with it, so that PowerDNS Lightning Stream can replicate the store between
// hosts. Spec: lightningstream docs/schema-native.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cptoken {

/// Size of the header without extension blocks.
inline constexpr std::size_t ls_header_size = 24;
inline constexpr std::uint8_t ls_flag_deleted = 0x01;

/// A value read from the store: header fields and the application payload.
struct LsValue {
    std::uint64_t timestamp_ns = 0;
    std::uint64_t txn_id = 0;
    std::uint8_t flags = 0;
    std::string_view payload;  ///< points into the input

    bool deleted() const noexcept { return flags & ls_flag_deleted; }
};

/// Header (version 0, no extensions, reserved zero) followed by `payload`.
std::string ls_encode(std::uint64_t timestamp_ns, std::uint64_t txn_id,
                      std::uint8_t flags, std::string_view payload);

/// A tombstone: the deleted flag and an empty payload.
std::string ls_tombstone(std::uint64_t timestamp_ns, std::uint64_t txn_id);

/// Splits a stored value. Skips extension blocks; unknown flags are kept
/// for the caller to ignore. Returns nullopt if the value is shorter than
/// its header says or the header version is not 0.
std::optional<LsValue> ls_decode(std::string_view value) noexcept;

}  // namespace cptoken

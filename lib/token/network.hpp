// SPDX-License-Identifier: Apache-2.0
// IP networks of a token's allowlist, and matching a client address.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cptoken {

/// At most this many networks per token (cPanel's limit).
inline constexpr std::size_t max_allowed_networks = 100;

/// An IPv4 or IPv6 address. IPv4-mapped IPv6 (::ffff:a.b.c.d) is stored
/// as the IPv4 address it maps, so that it matches IPv4 networks.
struct Address {
    std::uint8_t family = 0;  ///< 4 or 6
    std::array<std::uint8_t, 16> bytes{};  ///< first 4 used for IPv4

    bool operator==(const Address &) const = default;
};

/// A network: an address with a prefix length; host bits are zero.
struct Network {
    Address base;
    std::uint8_t prefix = 0;  ///< 0-32 (IPv4) or 0-128 (IPv6)

    bool operator==(const Network &) const = default;
};

/// Parses "192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7" (no brackets,
/// no zone). Returns nullopt on anything else.
std::optional<Address> parse_address(std::string_view text);

/// Parses an address or "ADDRESS/PREFIX". A bare address is a host network
/// (/32 or /128). Host bits below the prefix must be zero ("10.0.0.1/8" is
/// refused, as a likely mistake). Returns nullopt on anything else.
std::optional<Network> parse_network(std::string_view text);

/// As parse_network, but host bits below the prefix are cleared instead of
/// refused ("10.0.0.5/24" is 10.0.0.0/24): for allowlists written by others
/// (cPanel's), where the caller reports the change.
std::optional<Network> parse_network_clearing_host_bits(std::string_view text);

/// True if `network` is one parse_network could return: family 4 or 6,
/// prefix within the family, host bits zero.
bool is_valid_network(const Network &network) noexcept;

/// "192.0.2.0/24"; a host network prints as the bare address.
std::string to_string(const Network &network);
std::string to_string(const Address &address);

/// True if `address` lies in `network` (families must agree after
/// IPv4-mapped addresses are unmapped).
bool contains(const Network &network, const Address &address) noexcept;

/// True if the list is empty (any address) or one network contains `address`.
bool allowed_from(const std::vector<Network> &allowlist, const Address &address) noexcept;

}  // namespace cptoken

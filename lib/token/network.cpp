// SPDX-License-Identifier: Apache-2.0
#include "token/network.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace cptoken {
namespace {

constexpr std::uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// ::ffff:a.b.c.d as the IPv4 address a.b.c.d; any other address as it is.
Address unmapped(Address address) noexcept {
    if (address.family == 6 && std::memcmp(address.bytes.data(), v4_mapped_prefix, sizeof v4_mapped_prefix) == 0) {
        std::memmove(address.bytes.data(), address.bytes.data() + 12, 4);
        std::memset(address.bytes.data() + 4, 0, 12);
        address.family = 4;
    }
    return address;
}

unsigned max_prefix(const Address &address) noexcept { return address.family == 4 ? 32 : 128; }

// True if every bit of `address` after the first `prefix` bits is zero.
bool host_bits_zero(const Address &address, unsigned prefix) noexcept {
    const unsigned total = max_prefix(address);
    for (unsigned bit = prefix; bit < total; ++bit)
        if (address.bytes[bit / 8] & (0x80u >> (bit % 8))) return false;
    return true;
}

}  // namespace

std::optional<Address> parse_address(std::string_view text) {
    // inet_pton needs a NUL-terminated string; longest IPv6 text is 45 characters.
    char buffer[INET6_ADDRSTRLEN + 1];
    if (text.empty() || text.size() >= sizeof buffer || text.find('\0') != std::string_view::npos) return std::nullopt;
    std::memcpy(buffer, text.data(), text.size());
    buffer[text.size()] = '\0';

    Address address;
    if (::inet_pton(AF_INET, buffer, address.bytes.data()) == 1) {
        address.family = 4;
        return address;
    }
    if (::inet_pton(AF_INET6, buffer, address.bytes.data()) == 1) {
        address.family = 6;
        return unmapped(address);
    }
    return std::nullopt;
}

namespace {

// parse_network(), with host bits set refused or, if `clear_host_bits`, cleared.
std::optional<Network> parse_network_text(std::string_view text, bool clear_host_bits) {
    const auto slash = text.find('/');
    const auto address = parse_address(text.substr(0, slash));
    if (!address) return std::nullopt;
    Network network{*address, static_cast<std::uint8_t>(max_prefix(*address))};
    if (slash == std::string_view::npos) return network;

    // "::ffff:10.0.0.0/104" is the IPv4 network 10.0.0.0/8.
    const bool written_as_v6 = text.substr(0, slash).find(':') != std::string_view::npos;
    const std::string_view digits = text.substr(slash + 1);
    unsigned prefix = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || digits.size() > 3 || error != std::errc() || end != digits.data() + digits.size() ||
        (digits.size() > 1 && digits.front() == '0') || prefix > (written_as_v6 ? 128u : 32u))
        return std::nullopt;
    if (address->family == 4 && written_as_v6) {
        if (prefix < 96) return std::nullopt;
        prefix -= 96;
    }
    if (clear_host_bits) {
        for (unsigned bit = prefix; bit < max_prefix(*address); ++bit)
            network.base.bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
    } else if (!host_bits_zero(*address, prefix)) {
        return std::nullopt;
    }
    network.prefix = static_cast<std::uint8_t>(prefix);
    return network;
}

}  // namespace

std::optional<Network> parse_network(std::string_view text) { return parse_network_text(text, false); }

std::optional<Network> parse_network_clearing_host_bits(std::string_view text) {
    return parse_network_text(text, true);
}

bool is_valid_network(const Network &network) noexcept {
    return (network.base.family == 4 || network.base.family == 6) && network.prefix <= max_prefix(network.base) &&
           host_bits_zero(network.base, network.prefix);
}

std::string to_string(const Address &address) {
    char buffer[INET6_ADDRSTRLEN];
    const int family = address.family == 4 ? AF_INET : AF_INET6;
    if (!::inet_ntop(family, address.bytes.data(), buffer, sizeof buffer)) return "invalid-address";
    return buffer;
}

std::string to_string(const Network &network) {
    std::string text = to_string(network.base);
    if (network.prefix != max_prefix(network.base)) text += "/" + std::to_string(network.prefix);
    return text;
}

bool contains(const Network &network, const Address &given) noexcept {
    const Address address = unmapped(given);
    if (network.base.family != address.family) return false;
    const unsigned full_bytes = network.prefix / 8, rest_bits = network.prefix % 8;
    if (std::memcmp(network.base.bytes.data(), address.bytes.data(), full_bytes) != 0) return false;
    if (rest_bits == 0) return true;
    const std::uint8_t mask = static_cast<std::uint8_t>(0xff00u >> rest_bits);
    return (network.base.bytes[full_bytes] & mask) == (address.bytes[full_bytes] & mask);
}

bool allowed_from(const std::vector<Network> &allowlist, const Address &address) noexcept {
    if (allowlist.empty()) return true;
    for (const Network &network : allowlist)
        if (contains(network, address)) return true;
    return false;
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: allowlist entries come from admins and other hosts'
// records, client addresses from httpd. Parsing must never crash, what parses
// must print and parse back to itself, and matching must agree with a plain
// bit-by-bit reference, IPv4-mapped IPv6 addresses included.
//
// Input: a line of text parsed as a network, a line parsed as an address,
// then raw bytes for a network and an address built directly.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "token/network.hpp"

using namespace cptoken;

namespace {

void check(bool property) {
    if (!property) __builtin_trap();
}

unsigned width(const Address &address) { return address.family == 4 ? 32 : 128; }

bool bit(const Address &address, unsigned index) { return address.bytes[index / 8] & (0x80u >> (index % 8)); }

// ::ffff:a.b.c.d as a.b.c.d, written here again rather than trusting the lib's own.
Address reference_unmapped(const Address &address) {
    static constexpr std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (address.family != 6) return address;
    for (int i = 0; i < 12; ++i)
        if (address.bytes[i] != prefix[i]) return address;
    Address v4;
    v4.family = 4;
    for (int i = 0; i < 4; ++i) v4.bytes[i] = address.bytes[12 + i];
    return v4;
}

bool reference_contains(const Network &network, const Address &given) {
    const Address address = reference_unmapped(given);
    if (network.base.family != address.family) return false;
    for (unsigned i = 0; i < network.prefix; ++i)
        if (bit(network.base, i) != bit(address, i)) return false;
    return true;
}

Address mapped(const Address &v4) {
    Address v6;
    v6.family = 6;
    v6.bytes[10] = v6.bytes[11] = 0xff;
    for (int i = 0; i < 4; ++i) v6.bytes[12 + i] = v4.bytes[i];
    return v6;
}

// Every property of matching one network against one address.
void check_matching(const Network &network, const Address &address) {
    check(contains(network, address) == reference_contains(network, address));
    check(allowed_from({}, address));
    check(allowed_from({network}, address) == contains(network, address));
    if (reference_unmapped(address).family == 4) {
        // The mapped form matches exactly the networks its IPv4 address matches.
        const Address v4 = reference_unmapped(address);
        check(contains(network, mapped(v4)) == contains(network, v4));
        check(allowed_from({network}, mapped(v4)) == allowed_from({network}, v4));
    }
}

void check_parsed_address(const Address &address) {
    check(address.family == 4 || address.family == 6);
    check(reference_unmapped(address) == address);  // stored unmapped
    if (address.family == 4) check(width(address) == 32 && address.bytes[4] == 0 && address.bytes[15] == 0);
    const auto again = parse_address(to_string(address));
    check(again && *again == address);
    if (address.family == 4) {
        const auto from_mapped = parse_address("::ffff:" + to_string(address));
        check(from_mapped && *from_mapped == address);
    }
}

void check_parsed_network(const Network &network) {
    check(is_valid_network(network));
    check_parsed_address(network.base);
    const auto again = parse_network(to_string(network));
    check(again && *again == network);
    check(contains(network, network.base));
}

// A valid network from raw bytes: family, prefix, address with host bits cleared.
Network network_from(FuzzedDataProvider &input) {
    Network network;
    network.base.family = input.ConsumeBool() ? 4 : 6;
    const unsigned max = width(network.base);
    network.prefix = input.ConsumeIntegralInRange<std::uint8_t>(0, max);
    for (unsigned i = 0; i < max / 8; ++i) network.base.bytes[i] = input.ConsumeIntegral<std::uint8_t>();
    for (unsigned i = network.prefix; i < max; ++i) network.base.bytes[i / 8] &= ~(0x80u >> (i % 8));
    return network;
}

// Any address as lib callers may pass it, mapped IPv6 included.
Address address_from(FuzzedDataProvider &input) {
    Address address;
    const auto kind = input.ConsumeIntegralInRange<int>(0, 2);
    address.family = kind == 0 ? 4 : 6;
    for (unsigned i = 0; i < width(address) / 8; ++i) address.bytes[i] = input.ConsumeIntegral<std::uint8_t>();
    if (kind == 2) address = mapped(address);
    return address;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    FuzzedDataProvider input(data, size);
    const std::string network_text = input.ConsumeRandomLengthString(64);
    const std::string address_text = input.ConsumeRandomLengthString(64);

    const auto parsed_network = parse_network(network_text);
    const auto parsed_address = parse_address(address_text);
    if (parsed_network) check_parsed_network(*parsed_network);
    if (parsed_address) {
        check_parsed_address(*parsed_address);
        // A bare address is its host network.
        const auto host = parse_network(address_text);
        check(host && host->base == *parsed_address && host->prefix == width(*parsed_address));
    }
    if (parsed_network && parsed_address) check_matching(*parsed_network, *parsed_address);

    const Network network = network_from(input);
    const Address address = address_from(input);
    check(is_valid_network(network));
    check_matching(network, address);
    if (parsed_network) check_matching(*parsed_network, address);
    if (parsed_address) check_matching(network, *parsed_address);
    return 0;
}

// What several unit tests share: parsing fixtures that must not fail, and a
// record built in one line. Include after cmocka.h.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "network.hpp"
#include "record.hpp"

namespace test_support {

inline cptoken::Network net(const char *text) {
    auto network = cptoken::parse_network(text);
    if (!network) fail_msg("parse_network(\"%s\") failed", text);
    return *network;
}

inline cptoken::Address addr(const char *text) {
    auto address = cptoken::parse_address(text);
    if (!address) fail_msg("parse_address(\"%s\") failed", text);
    return *address;
}

/// A record created at 2026-01-01T00:00:00Z.
inline cptoken::TokenRecord rec(const std::string &user, const std::string &name, cptoken::Seconds expires = 0,
                                std::vector<cptoken::Network> ips = {}) {
    return cptoken::TokenRecord{user, name, 1767225600, expires, std::move(ips)};
}

}  // namespace test_support

// SPDX-License-Identifier: Apache-2.0
#include "manager/csrf.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cctype>
#include <optional>
#include <stdexcept>

#include "token/token.hpp"

namespace cptoken::manager {
namespace {

std::string lowercase(std::string_view text) {
    std::string out(text);
    for (char &c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool all_digits(std::string_view text) noexcept {
    if (text.empty() || text.size() > 5) return false;
    for (char c : text)
        if (c < '0' || c > '9') return false;
    return true;
}

// "host", "host:port", "[v6]" or "[v6]:port" as (lowercase host, port or
// empty); nullopt if it is none of these.
std::optional<std::pair<std::string, std::string>> split_authority(std::string_view authority) {
    if (authority.empty()) return std::nullopt;
    for (char c : authority)
        if (c == '/' || c == '@' || c == '?' || c == '#' || c == '\\' || static_cast<unsigned char>(c) <= 0x20 ||
            static_cast<unsigned char>(c) >= 0x7f)
            return std::nullopt;
    std::string_view host = authority, port;
    if (authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        host = authority.substr(0, close + 1);
        const std::string_view rest = authority.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return std::nullopt;
            port = rest.substr(1);
            if (!all_digits(port)) return std::nullopt;
        }
    } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
        if (!all_digits(port) || host.find(':') != std::string_view::npos) return std::nullopt;
    }
    if (host.empty()) return std::nullopt;
    // "0443" and "443" are one port.
    while (port.size() > 1 && port.front() == '0') port.remove_prefix(1);
    return std::pair{lowercase(host), std::string(port)};
}

}  // namespace

CsrfKey make_csrf_key() {
    CsrfKey key{};
    if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1)
        throw std::runtime_error("cannot make the manager's page-token key: the random number generator failed");
    return key;
}

std::string csrf_token(const CsrfKey &key, std::string_view user) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char *>(user.data()),
              user.size(), mac, &length))
        throw std::runtime_error("cannot compute a page token: HMAC-SHA256 failed");
    return bytes_hex(std::string_view(reinterpret_cast<const char *>(mac), length));
}

bool csrf_token_matches(const CsrfKey &key, std::string_view user, std::string_view presented) noexcept {
    try {
        const std::string expected = csrf_token(key, user);
        // The length is no secret (always 64); the bytes are compared in constant time.
        return presented.size() == expected.size() &&
               CRYPTO_memcmp(presented.data(), expected.data(), expected.size()) == 0;
    } catch (...) {
        return false;
    }
}

bool origin_matches_host(std::string_view origin, std::string_view host) noexcept {
    try {
        const auto scheme_end = origin.find("://");
        if (scheme_end == std::string_view::npos) return false;  // "null" included
        const std::string scheme = lowercase(origin.substr(0, scheme_end));
        const char *default_port = scheme == "https" ? "443" : scheme == "http" ? "80" : nullptr;
        if (!default_port) return false;
        const auto from = split_authority(origin.substr(scheme_end + 3));
        const auto to = split_authority(host);
        if (!from || !to) return false;
        const auto port_or_default = [&](const std::string &port) { return port.empty() ? std::string(default_port) : port; };
        return from->first == to->first && port_or_default(from->second) == port_or_default(to->second);
    } catch (...) {
        return false;
    }
}

}  // namespace cptoken::manager

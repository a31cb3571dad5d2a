// SPDX-License-Identifier: Apache-2.0
#include "token/credentials.hpp"

#include "token/record.hpp"

namespace cptoken {
namespace {

// `lower_letters`: lowercase ASCII letters only. A byte ORed with 0x20 is
// such a letter only if it was that letter in either case.
bool equals_ignoring_case(std::string_view text, std::string_view lower_letters) noexcept {
    if (text.size() != lower_letters.size()) return false;
    unsigned diff = 0;
    for (std::size_t i = 0; i < text.size(); ++i)
        diff |= static_cast<unsigned char>(text[i] | 0x20) ^ static_cast<unsigned char>(lower_letters[i]);
    return diff == 0;
}

bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

int base64_value(char c) noexcept {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

}  // namespace

const char *scheme_name(Scheme scheme) noexcept {
    switch (scheme) {
        case scheme_cpanel: return "cpanel";
        case scheme_whm: return "whm";
        case scheme_basic: return "basic";
    }
    return "unknown";
}

std::optional<Scheme> parse_scheme_name(std::string_view name) noexcept {
    // On every request: the length picks the one name it can be.
    switch (name.size()) {
        case 6: return equals_ignoring_case(name, "cpanel") ? std::optional<Scheme>(scheme_cpanel) : std::nullopt;
        case 3: return equals_ignoring_case(name, "whm") ? std::optional<Scheme>(scheme_whm) : std::nullopt;
        case 5: return equals_ignoring_case(name, "basic") ? std::optional<Scheme>(scheme_basic) : std::nullopt;
    }
    return std::nullopt;
}

std::optional<std::string> base64_decode_strict(std::string_view text) {
    if (text.size() % 4 != 0) return std::nullopt;
    std::string out;
    out.reserve(text.size() / 4 * 3);
    for (std::size_t i = 0; i < text.size(); i += 4) {
        const bool last = i + 4 == text.size();
        const int padding = last ? (text[i + 3] == '=') + (text[i + 2] == '=' && text[i + 3] == '=') : 0;
        int v[4] = {0, 0, 0, 0};
        for (int k = 0; k < 4 - padding; ++k)
            if ((v[k] = base64_value(text[i + k])) < 0) return std::nullopt;
        const unsigned bits = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
        out.push_back(static_cast<char>(bits >> 16));
        if (padding < 2) out.push_back(static_cast<char>((bits >> 8) & 0xff));
        if (padding < 1) out.push_back(static_cast<char>(bits & 0xff));
        // Unused bits must be zero: one encoding per byte string.
        if ((padding == 1 && (v[2] & 0x3)) || (padding == 2 && (v[1] & 0xf))) return std::nullopt;
    }
    return out;
}

ParsedCredentials parse_authorization(std::string_view header, unsigned accepted) {
    ParsedCredentials result;
    std::size_t pos = 0;
    while (pos < header.size() && !is_blank(header[pos])) ++pos;
    const auto scheme = parse_scheme_name(header.substr(0, pos));
    if (!scheme || !(accepted & *scheme)) {
        result.error = CredentialsError::wrong_scheme;
        return result;
    }
    while (pos < header.size() && is_blank(header[pos])) ++pos;
    std::string_view rest = header.substr(pos);
    while (!rest.empty() && is_blank(rest.back())) rest.remove_suffix(1);

    std::string decoded;
    if (*scheme == scheme_basic) {
        auto text = base64_decode_strict(rest);
        if (!text) return result;
        decoded = std::move(*text);
        rest = decoded;
    }
    const auto colon = rest.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size() ||
        rest.find('\0') != std::string_view::npos)
        return result;
    result.credentials = Credentials{*scheme, std::string(rest.substr(0, colon)), std::string(rest.substr(colon + 1))};
    return result;
}

unsigned services_for(Scheme scheme, unsigned accepted) noexcept {
    switch (scheme) {
        case scheme_cpanel: return service_bit(Service::cpanel);
        case scheme_whm: return service_bit(Service::whm);
        case scheme_basic: break;
    }
    unsigned services = 0;
    if (accepted & scheme_cpanel) services |= service_bit(Service::cpanel);
    if (accepted & scheme_whm) services |= service_bit(Service::whm);
    return services ? services : service_bit(Service::cpanel);
}

}  // namespace cptoken

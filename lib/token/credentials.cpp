// SPDX-License-Identifier: Apache-2.0
#include "token/credentials.hpp"

#include <array>
#include <string_view>

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

// Each byte's base64 value, -1 for a byte outside the alphabet: one lookup per
// character, as the mirror agent decodes every key and value of a full read.
constexpr std::array<signed char, 256> base64_values = [] {
    std::array<signed char, 256> values{};
    values.fill(-1);
    const std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (std::size_t i = 0; i < alphabet.size(); ++i) values[static_cast<unsigned char>(alphabet[i])] = static_cast<signed char>(i);
    return values;
}();

int base64_value(char c) noexcept { return base64_values[static_cast<unsigned char>(c)]; }

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
    const int padding = text.empty() ? 0 : (text.back() == '=') + (text.back() == '=' && text[text.size() - 2] == '=');
    std::string out(text.size() / 4 * 3 - static_cast<std::size_t>(padding), '\0');
    char *to = out.data();
    // Every quad but a padded last one: no padding to test for. The agent decodes
    // hundreds of megabytes of etcd's answers through here in a full read.
    const std::size_t unpadded = text.size() - (padding ? 4 : 0);
    for (std::size_t i = 0; i < unpadded; i += 4) {
        const int a = base64_value(text[i]), b = base64_value(text[i + 1]), c = base64_value(text[i + 2]),
                  d = base64_value(text[i + 3]);
        if ((a | b | c | d) < 0) return std::nullopt;
        const unsigned bits = (unsigned(a) << 18) | (unsigned(b) << 12) | (unsigned(c) << 6) | unsigned(d);
        *to++ = static_cast<char>(bits >> 16);
        *to++ = static_cast<char>((bits >> 8) & 0xff);
        *to++ = static_cast<char>(bits & 0xff);
    }
    if (padding) {
        const std::size_t i = unpadded;
        int v[4] = {0, 0, 0, 0};
        for (int k = 0; k < 4 - padding; ++k)
            if ((v[k] = base64_value(text[i + k])) < 0) return std::nullopt;
        const unsigned bits = (unsigned(v[0]) << 18) | (unsigned(v[1]) << 12) | (unsigned(v[2]) << 6);
        *to++ = static_cast<char>(bits >> 16);
        if (padding == 1) *to++ = static_cast<char>((bits >> 8) & 0xff);
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

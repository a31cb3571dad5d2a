// SPDX-License-Identifier: Apache-2.0
#include "token/scope.hpp"

namespace cptoken {
namespace {

bool is_dot_segment(std::string_view segment) noexcept { return segment == "." || segment == ".."; }

// Calls visit(segment, is_last) for each segment of a path that starts with
// '/': "/a/b/" gives "a", "b", "" (last).
template <class Visit>
bool each_segment(std::string_view path, Visit visit) noexcept {
    std::size_t start = 1;
    while (true) {
        const std::size_t slash = path.find('/', start);
        const bool last = slash == std::string_view::npos;
        if (!visit(path.substr(start, last ? std::string_view::npos : slash - start), last)) return false;
        if (last) return true;
        start = slash + 1;
    }
}

// No "." or ".." segment, and no empty one but the last (a trailing '/').
bool has_plain_segments(std::string_view path) noexcept {
    return each_segment(path, [](std::string_view segment, bool last) {
        return !is_dot_segment(segment) && (!segment.empty() || last);
    });
}

// A byte a compared path may hold as it is: printable ASCII but '\'
// (a separator to some backends) and ';' (a path parameter to others).
bool is_plain_path_byte(unsigned char c) noexcept { return c >= 0x21 && c <= 0x7e && c != '\\' && c != ';'; }

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// The byte a %XX escape at `at` stands for, or -1 if there is none there.
int escaped_byte(std::string_view text, std::size_t at) noexcept {
    if (text.size() - at < 3 || text[at] != '%') return -1;
    const int high = hex_value(text[at + 1]), low = hex_value(text[at + 2]);
    return high < 0 || low < 0 ? -1 : high * 16 + low;
}

// True if an escape left in `path` decodes to what a compared path may not
// hold, or to '.' or '/', which would make other segments.
bool has_unplain_escape(std::string_view path) noexcept {
    for (std::size_t at = path.find('%'); at != std::string_view::npos; at = path.find('%', at + 1)) {
        const int byte = escaped_byte(path, at);
        if (byte < 0) continue;  // "100%", "%zz": just characters
        if (byte == '.' || byte == '/' || !is_plain_path_byte(static_cast<unsigned char>(byte))) return true;
    }
    return false;
}

bool is_ascii_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
bool is_scheme(std::string_view scheme) noexcept {
    if (scheme.empty() || !is_ascii_letter(scheme[0])) return false;
    for (const char c : scheme)
        if (!is_ascii_letter(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.') return false;
    return true;
}

}  // namespace

bool is_valid_scope(std::string_view scope) noexcept {
    if (scope.empty() || scope.size() > max_scope_length || scope[0] != '/') return false;
    for (const char c : scope)
        if (c < 0x21 || c > 0x7e || c == '?' || c == '#' || c == '%' || c == '\\') return false;
    return has_plain_segments(scope);
}

bool is_comparable_path(std::string_view path) noexcept {
    if (path.empty() || path[0] != '/') return false;
    for (const char c : path)
        if (!is_plain_path_byte(static_cast<unsigned char>(c))) return false;
    if (has_unplain_escape(path)) return false;
    return has_plain_segments(path);
}

bool scope_covers(std::string_view scope, std::string_view path) noexcept {
    if (!is_comparable_path(path)) return false;
    while (!scope.empty() && scope.back() == '/') scope.remove_suffix(1);  // "/a/" is "/a"; "/" is ""
    if (path.substr(0, scope.size()) != scope) return false;
    return path.size() == scope.size() || path[scope.size()] == '/';  // a whole segment
}

bool is_safe_method(std::string_view method) noexcept {
    return method == "GET" || method == "HEAD" || method == "OPTIONS";
}

bool carries_body(std::optional<std::string_view> content_length,
                  std::optional<std::string_view> transfer_encoding) noexcept {
    if (transfer_encoding) return true;
    if (!content_length) return false;
    if (content_length->empty()) return true;
    for (const char c : *content_length)
        if (c != '0') return true;  // a digit other than 0, or not a digit at all
    return false;
}

ScopeVerdict check_scope(const TokenRecord &record, std::string_view method, std::string_view path) noexcept {
    if (record.read_only && !is_safe_method(method)) return ScopeVerdict::not_safe_method;
    if (record.scopes.empty()) return ScopeVerdict::allowed;
    for (const std::string &scope : record.scopes)
        if (scope_covers(scope, path)) return ScopeVerdict::allowed;
    return ScopeVerdict::outside_scope;
}

ScopeVerdict check_body(const TokenRecord &record, bool has_body) noexcept {
    return record.read_only && has_body ? ScopeVerdict::body_not_allowed : ScopeVerdict::allowed;
}

std::optional<std::string_view> destination_path(std::string_view destination) noexcept {
    std::string_view path;
    if (destination.starts_with('/')) {
        if (destination.starts_with("//")) return std::nullopt;  // a network-path reference, not a path
        path = destination;
    } else {
        const std::size_t colon = destination.find(':');
        if (colon == std::string_view::npos || !is_scheme(destination.substr(0, colon)) ||
            destination.substr(colon + 1, 2) != "//")
            return std::nullopt;
        const std::string_view after_authority = destination.substr(colon + 3);
        const std::size_t path_start = after_authority.find_first_of("/?#");
        path = path_start == std::string_view::npos ? std::string_view() : after_authority.substr(path_start);
    }
    path = path.substr(0, path.find_first_of("?#"));
    return path.empty() ? std::string_view("/") : path;
}

std::optional<std::string> percent_decoded(std::string_view encoded) {
    std::string decoded;
    decoded.reserve(encoded.size());
    for (std::size_t at = 0; at < encoded.size(); ++at) {
        if (encoded[at] != '%') {
            decoded.push_back(encoded[at]);
            continue;
        }
        const int byte = escaped_byte(encoded, at);
        if (byte < 0) return std::nullopt;
        decoded.push_back(static_cast<char>(byte));
        at += 2;
    }
    return decoded;
}

ScopeVerdict check_destination(const TokenRecord &record, std::span<const std::string_view> destinations) {
    if (record.scopes.empty() || destinations.empty()) return ScopeVerdict::allowed;
    if (destinations.size() > 1) return ScopeVerdict::destination_malformed;  // a backend may read any of them
    const auto path = destination_path(destinations.front());
    const auto decoded = path ? percent_decoded(*path) : std::nullopt;
    if (!decoded) return ScopeVerdict::destination_malformed;
    // Before decoding: what a backend would read another way; after: what the scopes are about.
    if (!is_comparable_path(*path)) return ScopeVerdict::destination_outside_scope;
    for (const std::string &scope : record.scopes)
        if (scope_covers(scope, *decoded)) return ScopeVerdict::allowed;
    return ScopeVerdict::destination_outside_scope;
}

const char *describe(ScopeVerdict verdict) noexcept {
    switch (verdict) {
        case ScopeVerdict::allowed: return "allowed";
        case ScopeVerdict::outside_scope: return "path outside the token's scopes";
        case ScopeVerdict::not_safe_method: return "method not allowed for a safe-methods token";
        case ScopeVerdict::body_not_allowed: return "request body not allowed for a safe-methods token";
        case ScopeVerdict::destination_outside_scope: return "destination outside the token's scopes";
        case ScopeVerdict::destination_malformed: return "destination header malformed or repeated";
    }
    return "outside the token's scopes";
}

}  // namespace cptoken

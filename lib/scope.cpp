#include "scope.hpp"

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

bool contains_encoded(std::string_view path, std::string_view code) noexcept {
    for (std::size_t at = path.find('%'); at != std::string_view::npos; at = path.find('%', at + 1)) {
        if (path.size() - at < 3) return false;
        const char high = path[at + 1], low = static_cast<char>(path[at + 2] | 0x20);  // lowercase a letter
        if (high == code[0] && low == code[1]) return true;
    }
    return false;
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
    if (path.find('\\') != std::string_view::npos || path.find('\0') != std::string_view::npos) return false;
    if (contains_encoded(path, "2e") || contains_encoded(path, "2f") || contains_encoded(path, "5c")) return false;
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

const char *describe(ScopeVerdict verdict) noexcept {
    switch (verdict) {
        case ScopeVerdict::allowed: return "allowed";
        case ScopeVerdict::outside_scope: return "path outside the token's scopes";
        case ScopeVerdict::not_safe_method: return "method not allowed for a safe-methods token";
        case ScopeVerdict::body_not_allowed: return "request body not allowed for a safe-methods token";
    }
    return "outside the token's scopes";
}

}  // namespace cptoken

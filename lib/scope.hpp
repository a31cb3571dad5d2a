// Scopes: the URL paths and methods a token may reach (cptoken create
// --scope PATH, --read-only). The module checks every URI a request reaches
// (internal redirects and subrequests too) with check_scope().
#pragma once

#include <cstddef>
#include <string_view>

#include "record.hpp"

namespace cptoken {

/// At most this many scopes per token; decode_record refuses more.
inline constexpr std::size_t max_scopes = 64;
/// The longest scope, in bytes.
inline constexpr std::size_t max_scope_length = 1024;

/// True if `scope` can be stored: 1-1024 bytes of printable ASCII starting
/// with '/', without '?', '#', '%' or '\', without "." or ".." segments and
/// without empty segments ("//") except one trailing '/'. "/" is the whole
/// site.
bool is_valid_scope(std::string_view scope) noexcept;

/// True if `path` lies within `scope` by whole segments: "/a" and "/a/"
/// cover "/a", "/a/" and "/a/b", never "/ab". Case-sensitive. False for a
/// path that is_comparable_path() refuses.
bool scope_covers(std::string_view scope, std::string_view path) noexcept;

/// True if `path` (a URL path as httpd decoded it and removed its dot
/// segments) can be compared with scopes: it starts with '/' and has no
/// "." or ".." segment, no empty segment ("//") before its last, no '\', no
/// NUL, and no "%2e", "%2f" or "%5c" left encoded (AllowEncodedSlashes
/// NoDecode, a double encoding): a backend that decodes once more or merges
/// slashes could reach another path than the one compared. Such a path is
/// outside every scope.
bool is_comparable_path(std::string_view path) noexcept;

/// True for the methods a read-only token may use: GET, HEAD and OPTIONS
/// (exact, as httpd spells methods).
bool is_read_only_method(std::string_view method) noexcept;

enum class ScopeVerdict {
    allowed,        ///< no restriction, or within them
    outside_scope,  ///< the path is in none of the token's scopes
    not_read_only,  ///< a read-only token, and a method that may write
};

/// Whether a request for `path` with `method` stays within `record`'s
/// scopes and its read-only flag. A token without scopes reaches every
/// path; one without the flag every method.
ScopeVerdict check_scope(const TokenRecord &record, std::string_view method, std::string_view path) noexcept;

/// A short, stable, lowercase phrase for logs.
const char *describe(ScopeVerdict verdict) noexcept;

}  // namespace cptoken

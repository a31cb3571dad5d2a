// Scopes: the URL paths and methods a token may reach (cptoken create
// --scope PATH, --safe-methods). The module checks every URI a request
// reaches (internal redirects and subrequests too) with check_scope().
#pragma once

#include <array>
#include <cstddef>
#include <optional>
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

/// True for the methods a safe-methods token (TokenRecord::read_only) may
/// use: GET, HEAD and OPTIONS (exact, as httpd spells methods). Safe by
/// HTTP's definition, not by what a backend does: cPanel's UAPI and WHM
/// API 1 change state on GET (/execute/Email/delete_pop?email=...).
bool is_safe_method(std::string_view method) noexcept;

/// Request headers that frameworks (Rails, Symfony, ASP.NET, Google's
/// APIs, ...) take as the request's real method, so that a GET or POST
/// acts as a DELETE or PUT: the module removes them from a safe-methods
/// token's requests.
inline constexpr std::array<const char *, 3> method_override_headers{"X-HTTP-Method-Override", "X-HTTP-Method",
                                                                     "X-Method-Override"};

/// True if a request with these Content-Length and Transfer-Encoding values
/// (nullopt: the header is absent) carries a body: any Transfer-Encoding,
/// or a Content-Length other than zero. A Content-Length that is not all
/// digits counts as a body (httpd refuses most such requests itself).
bool carries_body(std::optional<std::string_view> content_length,
                  std::optional<std::string_view> transfer_encoding) noexcept;

enum class ScopeVerdict {
    allowed,          ///< no restriction, or within them
    outside_scope,    ///< the path is in none of the token's scopes
    not_safe_method,  ///< a safe-methods token, and a method that is not GET, HEAD or OPTIONS
    body_not_allowed,  ///< a safe-methods token, and a request with a body
};

/// Whether a request for `path` with `method` stays within `record`'s
/// scopes and its safe-methods flag. A token without scopes reaches every
/// path; one without the flag every method.
ScopeVerdict check_scope(const TokenRecord &record, std::string_view method, std::string_view path) noexcept;

/// Whether a request that carries a body (`has_body`: carries_body()) is
/// allowed for `record`: a safe-methods token's request carries none, since
/// a backend may act on the body of a GET as on a POST's.
ScopeVerdict check_body(const TokenRecord &record, bool has_body) noexcept;

/// A short, stable, lowercase phrase for logs.
const char *describe(ScopeVerdict verdict) noexcept;

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// Scopes: the URL paths and methods a token may reach (cptoken create
// --scope PATH, --safe-methods). The module checks every URI a request
// reaches (internal redirects and subrequests too) with check_scope().
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "token/record.hpp"

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
/// segments) can be compared with scopes: it starts with '/'; has no "." or
/// ".." segment and no empty segment ("//") before its last; every byte is
/// printable ASCII (0x21-0x7e) but '\' and ';'; and nothing is left
/// encoded that decodes to '.', '/', '\', ';' or a byte outside printable
/// ASCII (AllowEncodedSlashes NoDecode, a double encoding such as %252e).
/// Otherwise a backend could reach another path than the one compared: one
/// that decodes once more or merges slashes, a servlet container that drops
/// ";..." path parameters ("/a/..;/b" is "/b" to Tomcat), one that folds an
/// overlong UTF-8 "%c0%ae" into '.'. Such a path is outside every scope.
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
    destination_outside_scope,  ///< a scoped token, and a Destination in none of its scopes
    destination_malformed,      ///< a scoped token, and a Destination that cannot be read, or several
};

/// Whether a request for `path` with `method` stays within `record`'s
/// scopes and its safe-methods flag. A token without scopes reaches every
/// path; one without the flag every method.
ScopeVerdict check_scope(const TokenRecord &record, std::string_view method, std::string_view path) noexcept;

/// Whether a request that carries a body (`has_body`: carries_body()) is
/// allowed for `record`: a safe-methods token's request carries none, since
/// a backend may act on the body of a GET as on a POST's.
ScopeVerdict check_body(const TokenRecord &record, bool has_body) noexcept;

/// The path of a WebDAV Destination header (RFC 4918: an absolute URI with
/// an authority, such as http://host/a/b, or an absolute path), still
/// %-encoded, without its query and fragment; "/" for a URI without a path.
/// nullopt for anything else (a relative reference, "//host/...", a URI
/// without "//"). The host is not looked at: a Destination on another host
/// is judged by its path alike.
std::optional<std::string_view> destination_path(std::string_view destination) noexcept;

/// `encoded` with every %XX escape decoded once, as httpd decodes a
/// request's path; nullopt if a '%' is not followed by two hex digits.
std::optional<std::string> percent_decoded(std::string_view encoded);

/// Whether the Destination headers of a request (`destinations`: every
/// value, in order) stay within `record`'s scopes: WebDAV's COPY and MOVE,
/// and whatever else a backend does with the header, write there. A token
/// without scopes, or a request without the header, is not concerned. More
/// than one header, or one destination_path() or percent_decoded() cannot
/// read, is malformed. The path is compared decoded, and must be
/// comparable both before and after decoding (is_comparable_path).
ScopeVerdict check_destination(const TokenRecord &record, std::span<const std::string_view> destinations);

/// A short, stable, lowercase phrase for logs.
const char *describe(ScopeVerdict verdict) noexcept;

}  // namespace cptoken

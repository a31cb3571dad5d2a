// SPDX-License-Identifier: Apache-2.0
// Reading the credentials of a request: the Authorization header.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cptoken {

/// The schemes a location may accept (CPTokenSchemes), as bit flags.
enum Scheme : unsigned {
    scheme_cpanel = 1u << 0,  ///< Authorization: cpanel USER:TOKEN
    scheme_whm = 1u << 1,     ///< Authorization: whm USER:TOKEN
    scheme_basic = 1u << 2,   ///< Authorization: Basic base64(USER:TOKEN)
};

/// The lowercase name of one scheme: "cpanel", "whm" or "basic".
const char *scheme_name(Scheme scheme) noexcept;

/// The scheme named `name` (case-insensitive); nullopt if none.
std::optional<Scheme> parse_scheme_name(std::string_view name) noexcept;

/// The services (record.hpp service_bit flags) whose tokens credentials
/// sent with `scheme` may use, at a location accepting the schemes
/// `accepted`: cpanel only cpanel tokens, whm only whm tokens, Basic those of
/// the token schemes the location accepts by name (cpanel tokens if none).
unsigned services_for(Scheme scheme, unsigned accepted) noexcept;

struct Credentials {
    Scheme scheme = scheme_cpanel;
    std::string user;   ///< what precedes the first colon
    std::string token;  ///< the rest
};

enum class CredentialsError {
    wrong_scheme,  ///< a scheme this location does not accept
    malformed,     ///< bad base64, no colon, empty user or token, NUL bytes
};

struct ParsedCredentials {
    std::optional<Credentials> credentials;  ///< set on success
    CredentialsError error = CredentialsError::malformed;
};

/// Parses an Authorization header value: a scheme (case-insensitive), blanks,
/// and the credentials. `accepted` is a set of Scheme flags. Never throws on
/// any input; user and token are not checked here (verify_token does that).
ParsedCredentials parse_authorization(std::string_view header, unsigned accepted);

/// Strict base64 (RFC 4648, standard alphabet): length a multiple of 4, '='
/// only as final padding, unused bits zero. Returns nullopt on anything else,
/// unlike httpd's decoder, which stops silently at the first bad character.
std::optional<std::string> base64_decode_strict(std::string_view text);

}  // namespace cptoken

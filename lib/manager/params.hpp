// SPDX-License-Identifier: Apache-2.0
// The manager's API (cPanel's UAPI Tokens, our CPTokens, WHM API 1 api_token_*) without httpd: this file reads
// the parameters of a call as cPanel's clients send them.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cptoken::manager {

/// A call's parameters, in the order given; a name may repeat (`name=a&name=b`).
using Params = std::multimap<std::string, std::string>;

/// The most bytes of a request body the manager reads (a POST form or JSON
/// object); more is refused (413) before anything is parsed.
inline constexpr std::size_t max_body_bytes = 64 * 1024;

/// Adds the pairs of an `application/x-www-form-urlencoded` text (a query
/// string or a POST body) to `params`: '&'-separated NAME=VALUE, '+' for a
/// space, %XX escapes decoded once; a pair without '=' has an empty value,
/// empty pairs are skipped. Returns false (and adds nothing) if an escape is
/// not '%' and two hex digits, or a decoded byte is NUL.
bool add_form_params(std::string_view text, Params &params);

/// Adds the members of a JSON object (an `application/json` body) to
/// `params`: a string as it is, a number as its JSON text, true/false as
/// 1/0, null skipped, an array as its scalar elements under the same name
/// (`{"name": ["a", "b"]}` as name=a, name=b). Returns false (and adds
/// nothing) for anything else: not JSON, not an object, an object or array
/// inside an array or an object member that is an object, a string holding
/// a NUL byte.
bool add_json_params(std::string_view text, Params &params);

/// The values of `name` and of its numbered forms `name-0`, `name-1`, ...
/// (cPanel's way of repeating a parameter), `name` first, then by number.
std::vector<std::string> repeated_param(const Params &params, std::string_view name);

}  // namespace cptoken::manager

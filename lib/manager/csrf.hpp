// SPDX-License-Identifier: Apache-2.0
// lib/manager/: the manager's API (cPanel's UAPI Tokens, our CPTokens, WHM API 1 api_token_*), no httpd.
// Same-origin proof for writes that ambient credentials (Basic, cookies, SSO)
// authenticated: browsers replay those cross-site, so such a write needs
// the page's own token (X-CPToken-CSRF) and headers a cross-site page cannot
// forge (Origin, Sec-Fetch-Site). Header-token calls need none of it.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace cptoken::manager {

/// The key page tokens are made with: random, one per manager process
/// generation (made in the parent before its children fork), never stored.
using CsrfKey = std::array<unsigned char, 32>;

/// A new random key (OpenSSL RAND_bytes). Throws std::runtime_error if the
/// RNG fails.
CsrfKey make_csrf_key();

/// The page token of `user`: HMAC-SHA256(key, user), 64 lowercase hex
/// digits. The same for every page of that user until the key changes.
std::string csrf_token(const CsrfKey &key, std::string_view user);

/// True if `presented` is `user`'s page token; compared in constant time.
bool csrf_token_matches(const CsrfKey &key, std::string_view user, std::string_view presented) noexcept;

/// True if an Origin header names the host the request was sent to (`host`:
/// the Host header, "name" or "name:port"): the origin's host and port,
/// its scheme's default port (80 for http, 443 for https) left out on
/// either side, host names compared without letter case. False for "null",
/// an origin with a path or user info, or anything that does not parse.
bool origin_matches_host(std::string_view origin, std::string_view host) noexcept;

}  // namespace cptoken::manager

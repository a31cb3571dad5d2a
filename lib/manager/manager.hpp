// SPDX-License-Identifier: Apache-2.0
// One call of the manager's API, from parsed parameters to the JSON answer:
// cPanel's UAPI `Tokens` (create_full_access, list, rename, revoke), our
// `CPTokens` (what cPanel lacks) and WHM API 1 `api_token_*`, in cPanel's
// envelopes and with its error texts. A call acts for one user (r->user),
// on that user's tokens of the API's service (cpanel for UAPI, whm for WHM
// API 1) and no other's. The httpd side (mod_cptoken_manager.cpp) decides
// who the user is and whether a browser's write is same-origin; this side
// decides what that user, and the token that authenticated the call, may do.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "manager/params.hpp"
#include "store/store.hpp"
#include "store/usage_store.hpp"
#include "token/record.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"

namespace cptoken::manager {

/// The most live tokens (rotated ones not counted) one user may hold; a
/// create beyond it is refused, so that one account cannot fill the store.
inline constexpr std::size_t max_tokens_per_user = 1000;

/// The longest grace `CPTokens::rotate` gives the replaced token: 30 days.
inline constexpr Seconds max_rotation_grace = 30 * 86400;

/// The most days `CPTokens::revoke_unused` looks back: about 100 years.
inline constexpr long max_unused_days = 36500;

enum class Api {
    uapi,  ///< /execute/MODULE/FUNCTION: cPanel tokens
    whm,   ///< /json-api/FUNCTION: WHM tokens
};

/// Where last used comes from: the uses of the digests asked for (a digest
/// missing from the answer was never used). Throws (StoreError) if they
/// cannot be had. Empty: last used is unavailable.
using UsageSource = std::function<std::map<Digest, Usage>(const std::vector<Digest> &digests)>;

/// The usage source of this process, for the handler: set once, in an httpd
/// child before it serves requests, by whoever can reach the usage reader
/// (CPTokenUsageSocket). Until then, and after set_usage_source({}), last
/// used is unavailable. Thread-safe.
void set_usage_source(UsageSource source);
UsageSource usage_source();

struct ManagerRequest {
    Api api = Api::uapi;
    std::string module;    ///< UAPI: "Tokens" or "CPTokens" (as in the URL); empty for WHM API 1
    std::string function;  ///< as in the URL
    Params params;         ///< query string and body, merged
    std::string user;      ///< whom the call acts for: r->user
    /// The token that authenticated the request, if one of ours did (as
    /// stored now); nullopt for ambient credentials (Basic against a
    /// password file, a cookie, SSO), whose writes the handler has already
    /// held to the same-origin rules.
    std::optional<StoredToken> caller;
    Seconds now = 0;
    std::string client;      ///< the client's address, as text (informational)
    std::string csrf_token;  ///< the user's page token, which `CPTokens::session` returns
};

struct ManagerResponse {
    int http_status = 200;  ///< 200 also for a failed function (status 0 / result 0), as cPanel
    std::string body;       ///< the JSON envelope
    bool succeeded = false;  ///< status 1 (UAPI) or result 1 (WHM API 1)
    /// What the call changed, for the audit line in the error log ("created
    /// token deploy"); empty if nothing was written. Never holds a secret.
    std::string audit;
    /// A problem the admin should hear of (last used unavailable because
    /// the usage source failed); empty if none. Never holds a secret.
    std::string notice;
};

enum class FunctionKind {
    read,     ///< list, get, session: changes nothing
    write,    ///< creates, changes or revokes tokens
    unknown,  ///< no such function: answered with the API's error, changes nothing
};

/// Whether `module`/`function` of `api` reads, writes or does not exist
/// (for the handler's same-origin rules, which only writes need).
FunctionKind function_kind(Api api, std::string_view module, std::string_view function) noexcept;

/// The function a request path names: its end is `.../execute/MODULE/FUNCTION`
/// (UAPI) or `.../json-api/FUNCTION` (WHM API 1), whatever comes before
/// (`/cptoken/execute/Tokens/list` for the page). nullopt for any other path.
struct Route {
    Api api = Api::uapi;
    std::string module;  ///< empty for WHM API 1
    std::string function;
};
std::optional<Route> route_of(std::string_view path);

/// "Tokens::list" or "api_token_list" for a function that exists,
/// "(unknown)" for any other (which a log line must not repeat).
std::string function_label(const Route &route);

/// Runs one call on `store` (opened read-write: the manager's children own
/// it) with last used from `usage`. Every bad input, unknown function or
/// refusal is the API's own error (HTTP 200, status 0 or result 0) and
/// writes nothing. Throws StoreError for a store that cannot be used
/// (missing, corrupt, full, ...), std::runtime_error if the RNG fails: the
/// handler answers 500.
ManagerResponse handle_call(const ManagerRequest &request, TokenStore &store, const UsageSource &usage);

/// The API's error envelope for a request refused before any function ran
/// (a body too large or unreadable, a cross-site write), with that HTTP
/// status (200 for bad input, as cPanel answers it).
ManagerResponse refusal(Api api, const std::string &function, const std::string &message, int http_status);

}  // namespace cptoken::manager

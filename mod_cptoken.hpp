// SPDX-License-Identifier: Apache-2.0
// What the files of mod_cptoken.so tell each other: mod_cptoken.cpp (the
// authentication) gives the manager's handler (mod_cptoken_manager.cpp)
// whether one of our tokens admitted a request, and which, and the status
// handler (mod_cptoken_status.cpp) a location's store and CPTokenMaxStaleness;
// the handlers' hooks are registered from mod_cptoken.cpp's register_hooks. Nothing here is
// exported from the .so (mod_cptoken.map: cptoken_module only).
#pragma once

#include "httpd.h"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "store/store.hpp"
#include "token/record.hpp"

namespace cptoken::httpd_module {

// ---- from mod_cptoken.cpp

/// True if this module admitted `r`, or a request it comes from (internal
/// redirect, subrequest), with one of our tokens.
bool admitted_by_token(const request_rec *r);

/// False only if one of our tokens admitted `r` through `Authorization:
/// cpanel|whm`, a header a browser never sends by itself: Basic credentials
/// (our tokens as passwords too), cookies and SSO are replayed by browsers to
/// any site's requests, so writes made with them need a same-origin proof.
bool browser_replays_credentials(const request_rec *r);

/// The token that admitted `r` (as admitted_by_token), as the store of r's
/// location holds it now: its digest and record. nullopt if no token of
/// ours admitted `r`, or if that store no longer holds it for r->user
/// (revoked since, or another store). Throws StoreError if the store
/// cannot be used.
std::optional<StoredToken> admitting_token(request_rec *r);

/// The store directory of r's location (CPTokenDB, else the default).
const std::string &store_dir(const request_rec *r);

/// CPTokenMaxStaleness of r's location (0: off).
std::chrono::seconds max_staleness(const request_rec *r);

/// Retry-After of every 503 for a stale store (requests and the status
/// handler): the agent proves freshness once a second and a child notices
/// within 250 ms, so a client that comes back after 5 s finds a recovered
/// mirror without hammering one that is not.
inline constexpr const char *stale_retry_after_seconds = "5";

/// The fields every log line about a request ends with:
/// user="..." client=... token="..." (a token-shaped user never shown).
std::string who_fields(request_rec *r, std::string_view user, const TokenRecord *record);

/// Logs the exception being handled (in a catch block): CPT0200 for a
/// StoreError, CPT0299 for anything else.
void log_exception(request_rec *r) noexcept;

// ---- from mod_cptoken_manager.cpp

/// Registers the manager's handler (`SetHandler cptoken-manager`) and its
/// other hooks; called from register_hooks.
void register_manager_hooks(apr_pool_t *pool);

// ---- from mod_cptoken_status.cpp

/// Registers the status handler (`SetHandler cptoken-status`); called from
/// register_hooks.
void register_status_hooks(apr_pool_t *pool);

}  // namespace cptoken::httpd_module

// SPDX-License-Identifier: Apache-2.0
// The one decision: would this token be accepted for this user from this
// address, and if not, why. Used by the module on every request and by
// `cptoken check`, so that both always agree.
#pragma once

#include <optional>
#include <string_view>

#include "token/network.hpp"
#include "token/record.hpp"
#include "store/store.hpp"

namespace cptoken {

enum class Reason {
    accepted,
    malformed,            ///< user or token not of the right shape
    mistyped,             ///< unknown, and the checksum fails: a typo
    unknown,              ///< no such token (or revoked)
    wrong_user,           ///< the token belongs to another user
    expired,
    address_not_allowed,  ///< client address not in the token's allowlist
    unknown_restriction,  ///< the record has a restriction field this version does not know
    wrong_service,        ///< a cpanel token under the whm scheme, or the reverse
};

struct Verdict {
    Reason reason = Reason::malformed;
    std::optional<TokenRecord> record;  ///< set when the token was found
    Digest digest{};  ///< the token's, once it had the shape of one (where its uses are recorded)

    bool accepted() const noexcept { return reason == Reason::accepted; }
};

/// Checks `token` for `user` from `client` at `now`, for a location that
/// accepts the services in `services` (service_bit flags; services_for()
/// gives a request's). `client` nullopt skips the allowlist (only `cptoken
/// check` without --ip does that). Scopes are not checked here: they depend
/// on each URI a request reaches (check_scope). Throws StoreError if the
/// store cannot be read: callers must then refuse.
Verdict verify_token(const TokenStore &store, std::string_view user, std::string_view token,
                     const std::optional<Address> &client, Seconds now, unsigned services);

/// A short, stable, lowercase phrase for logs: "expired", "unknown token"...
const char *describe(Reason reason) noexcept;

}  // namespace cptoken

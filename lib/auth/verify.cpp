// SPDX-License-Identifier: Apache-2.0
// lib/auth/: the decision on a request (admit, or why not); uses token/ and store/.
#include "auth/verify.hpp"

#include "token/names.hpp"

namespace cptoken {

Verdict verify_token(const TokenStore &store, std::string_view user, std::string_view token,
                     const std::optional<Address> &client, Seconds now, unsigned services) {
    Verdict verdict;
    if (!is_valid_user(user) || !has_token_shape(token)) return verdict;  // malformed

    store.find_token(token, verdict.digest, verdict.record);
    if (!verdict.record) {
        verdict.reason = has_valid_checksum(token) ? Reason::unknown : Reason::mistyped;
        return verdict;
    }
    const TokenRecord &record = *verdict.record;
    if (record.user != user)
        verdict.reason = Reason::wrong_user;
    else if (record.unknown_restriction())  // a later version limits this token in a way we cannot check
        verdict.reason = Reason::unknown_restriction;
    else if (!(services & service_bit(record.service)))
        verdict.reason = Reason::wrong_service;
    else if (record.expired_at(now))
        verdict.reason = Reason::expired;
    else if (client && !allowed_from(record.allowed_ips, *client))
        verdict.reason = Reason::address_not_allowed;
    else
        verdict.reason = Reason::accepted;
    return verdict;
}

const char *describe(Reason reason) noexcept {
    switch (reason) {
        case Reason::accepted: return "accepted";
        case Reason::malformed: return "malformed user or token";
        case Reason::mistyped: return "unknown token, checksum mismatch (mistyped)";
        case Reason::unknown: return "unknown token";
        case Reason::wrong_user: return "token belongs to another user";
        case Reason::expired: return "token expired";
        case Reason::address_not_allowed: return "client address not allowed for this token";
        case Reason::unknown_restriction: return "token has a restriction this version does not understand";
        case Reason::wrong_service: return "token belongs to the other service (cpanel/whm)";
    }
    return "refused";
}

}  // namespace cptoken

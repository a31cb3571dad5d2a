// SPDX-License-Identifier: Apache-2.0
// A token's record as stored under its digest, and its binary encoding.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "token/network.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"

namespace cptoken {

/// The most tokens a record may name as predecessors (rotated tokens still in
/// their grace window): decode_record refuses more.
inline constexpr std::size_t max_predecessors = 8;
/// The most feature or ACL names an imported limited token keeps.
inline constexpr std::size_t max_limits = 512;

/// The system a token belongs to, as in cPanel: a cpanel token
/// (`Authorization: cpanel`, port 2083) or a whm token (`Authorization: whm`,
/// port 2087). Each scheme admits its own service only.
enum class Service : std::uint8_t { cpanel = 0, whm = 1 };

/// Sets of services, as bit flags (service_bit).
constexpr unsigned service_bit(Service service) noexcept { return 1u << static_cast<unsigned>(service); }
inline constexpr unsigned all_services = service_bit(Service::cpanel) | service_bit(Service::whm);

/// "cpanel" or "whm".
const char *service_name(Service service) noexcept;
/// The service named `name` (exactly "cpanel" or "whm"); nullopt if none.
std::optional<Service> parse_service(std::string_view name) noexcept;

/// True for a cPanel feature or WHM ACL name as kept in `limits`: 1-100
/// characters of A-Z a-z 0-9 _ - . :
bool is_valid_limit(std::string_view name) noexcept;

struct TokenRecord {
    std::string user;
    std::string name;
    Seconds created = 0;
    Seconds expires = 0;  ///< 0: never
    std::vector<Network> allowed_ips;  ///< empty: any address
    /// Fields of a later version, as stored (tag, 16-bit length, value each,
    /// in stored order): kept so that an edit by this version writes them
    /// back instead of dropping a restriction it does not know.
    std::string later_fields;
    /// The tokens this one replaced (`cptoken rotate`) that may still be in
    /// their grace window, newest first: how revoke, prune and list reach
    /// them, since the name entry points to this token only. Informational.
    std::vector<Digest> predecessors;
    /// When this token was replaced by another; 0: it is the current token.
    /// Informational: the grace end is its expiry, which every reader enforces.
    Seconds rotated_at = 0;
    /// Restriction: the service the token belongs to (absent from the
    /// record for cpanel, so that records made before services are cpanel).
    Service service = Service::cpanel;
    /// Restriction: safe methods only (`cptoken --safe-methods`, formerly
    /// --read-only; the name stays for the stored field and the JSON key):
    /// GET, HEAD and OPTIONS, without a body or a method-override header.
    /// Not read-only on backends that change state on GET (cPanel's UAPI,
    /// WHM API 1).
    bool read_only = false;
    /// Restriction: URL-path prefixes the token may reach (is_valid_scope,
    /// at most max_scopes); empty: any path its location allows.
    std::vector<std::string> scopes;
    /// What limits an imported token in cPanel (its `features`, or a WHM
    /// token's `acls`), kept for `show`. Informational: this module does not
    /// enforce them, a backend that gets the Authorization header does.
    std::vector<std::string> limits;
    /// The cPanel token file the token was imported from (absolute path);
    /// empty for a token made here. `import-cpanel --sync` only touches
    /// tokens imported from the files it reads. Informational.
    std::string imported_from;

    bool never_expires() const noexcept { return expires == 0; }
    bool expired_at(Seconds now) const noexcept { return expires != 0 && now >= expires; }
    bool rotated() const noexcept { return rotated_at != 0; }
    /// The tag of the first field in later_fields that is a restriction
    /// (tags from first_restriction_tag up), which this version cannot
    /// honour: such a token must be refused. nullopt if none.
    std::optional<std::uint8_t> unknown_restriction() const noexcept;
    bool operator==(const TokenRecord &) const = default;
};

/// Field tags from here up are restrictions: a reader that does not know one
/// must refuse the token. Lower tags it does not know are informational and
/// skipped. This version's restrictions: service, scope, read_only.
inline constexpr std::uint8_t first_restriction_tag = 0x80;

/// Encodes a record (the payload after the Lightning Stream header):
/// a format byte, then tagged fields (tag, 16-bit length, value), then
/// later_fields verbatim, then the end field. later_fields must hold only
/// what decode_record put there.
std::string encode_record(const TokenRecord &record);

/// Decodes a payload made by encode_record. Fields of unknown tags go to
/// later_fields, restrictions included: the caller decides (verify_token
/// refuses). Returns nullopt for anything truncated, oversized, of an
/// unknown format, missing a required field or holding an invalid user,
/// name or network, more than max_predecessors predecessors or a predecessor
/// that is not 64 bytes, a service other than whm (cpanel is never stored),
/// an invalid or more than max_scopes scope (scope.hpp), an invalid or more
/// than max_limits limit, or a repeated single field. Never reads past `payload`.
std::optional<TokenRecord> decode_record(std::string_view payload);

}  // namespace cptoken

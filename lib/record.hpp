// A token's record as stored under its digest, and its binary encoding.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "network.hpp"
#include "timeutil.hpp"

namespace cptoken {

struct TokenRecord {
    std::string user;
    std::string name;
    Seconds created = 0;
    Seconds expires = 0;  ///< 0: never
    std::vector<Network> allowed_ips;  ///< empty: any address

    bool never_expires() const noexcept { return expires == 0; }
    bool expired_at(Seconds now) const noexcept { return expires != 0 && now >= expires; }
    bool operator==(const TokenRecord &) const = default;
};

/// Encodes a record (the payload after the Lightning Stream header):
/// a format byte, then tagged fields (tag, 16-bit length, value), so that
/// later versions can add fields that older readers skip.
std::string encode_record(const TokenRecord &record);

/// Decodes a payload made by encode_record. Returns nullopt for anything
/// truncated, oversized, of an unknown format, missing a required field or
/// holding an invalid user, name or network. Never reads past `payload`.
std::optional<TokenRecord> decode_record(std::string_view payload);

}  // namespace cptoken

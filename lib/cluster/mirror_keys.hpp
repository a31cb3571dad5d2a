// SPDX-License-Identifier: Apache-2.0
// The token set's layout in etcd (issue 24), under a prefix P (default
// /cptoken/v1/), mirroring tokens.mdb's databases (lib/store/store.hpp):
//
//   P tokens/<128 hex digits>   the value tokens.mdb holds under that digest
//                               (Lightning Stream header and record; a revoke
//                               is a tombstone, never a delete)
//   P names/<user>/<name>       the value tokens.mdb's names holds (the digest)
//   P gen                       put by every admin transaction: its
//                               mod_revision is the newest admin write, which
//                               writers compare and agents prove they hold
//   P meta/schema_version       the store schema (decimal)
//
// Values are the bytes a local store holds, header and all, so that every
// mirror holds the same bytes and a full read compares them one for one.
// Hosts' usage goes under another prefix (usage_prefix()), which agents do
// not watch: its churn must not wake every mirror.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cluster/etcd_wire.hpp"
#include "store/store.hpp"

namespace cptoken::etcd {

inline constexpr const char *default_prefix = "/cptoken/v1/";

/// P gen.
std::string gen_key(std::string_view prefix);
/// P meta/schema_version.
std::string schema_key(std::string_view prefix);
/// Where hosts publish their usage: P with "usage/" in place of its last
/// component's end ("/cptoken/v1/" -> "/cptoken/v1-usage/").
std::string usage_prefix(std::string_view prefix);

/// The etcd key of a store key. Throws std::invalid_argument for a tokens key
/// that is no digest or a names key that is not user '\0' name with a valid
/// user (no '/' can then occur in it).
std::string etcd_key(std::string_view prefix, const StoreWrite &write);

/// The store write an etcd key and value stand for (`deleted`: a DELETE
/// event, value ignored); nullopt for a key under P that holds no token data
/// (gen, meta/...) or one not under P. The value is not checked here:
/// TokenStore::apply_mirror() refuses what is not a store's. `value` is
/// taken by value: a caller done with it moves it in.
std::optional<StoreWrite> store_write(std::string_view prefix, std::string_view key, std::string value,
                                      bool deleted = false);

/// Checks a prefix given by an admin: starts and ends with '/', no "//".
/// Throws std::invalid_argument with a message saying what is wrong.
void check_prefix(std::string_view prefix);

}  // namespace cptoken::etcd

// SPDX-License-Identifier: Apache-2.0
// Usage across hosts (issue 24): each front-end's agent publishes its host's
// usage table under its own keys, and `cptoken list` (cluster mode) adds up
// every host's: the newest last use (with its address) and the summed uses.
//
//   usage_prefix(P) <host>/<00..ff>   lines "KEY_HEX LAST_USED USES ADDRESS|-"
//                                     (usage_line()) of the tokens whose key
//                                     starts with that byte
//
// 256 shards per host keep each value far under etcd's request limit (1M
// tokens: ~300 KB a shard) and let a host put only the shards that changed.
// The prefix is not under P: agents do not watch it, so publishing wakes
// no mirror. Every line read back is checked as root checks a line from
// the unprivileged reader (parse_usage_line): any agent's role can write
// its own keys, and no host's bytes are trusted.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "cluster/etcd_client.hpp"
#include "store/usage_store.hpp"
#include "token/timeutil.hpp"

namespace cptoken::etcd {

/// What a host published last, by shard, so that only changes go out.
using PublishedShards = std::array<std::string, 256>;

/// Where host `host` publishes: usage_prefix(P) + host + "/".
std::string host_usage_prefix(std::string_view prefix, std::string_view host);

/// Puts the shards of `usage` that differ from `published` (updated on
/// success) under host_usage_prefix(); returns how many were put. Throws
/// EtcdError; std::invalid_argument for a host name with '/' or blanks.
std::size_t publish_usage(Client &client, std::string_view prefix, std::string_view host, const UsageByKey &usage,
                          PublishedShards &published);

/// Every host's published usage but `except_host`'s, added into `usage`:
/// uses summed, the newest last use kept with its address. Lines that are
/// not usage lines (or uses later than `latest`) are skipped and counted in
/// the return value. Throws EtcdError.
std::size_t add_cluster_usage(Client &client, std::string_view prefix, std::string_view except_host, Seconds latest,
                              UsageByKey &usage);

}  // namespace cptoken::etcd

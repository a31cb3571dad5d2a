// SPDX-License-Identifier: Apache-2.0
// lib/cluster/: usage across hosts.
#include "cluster/cluster_usage.hpp"

#include <stdexcept>

#include "cluster/mirror_keys.hpp"

namespace cptoken::etcd {

namespace {

const char hex_digits[] = "0123456789abcdef";

std::string shard_name(std::size_t shard) { return {hex_digits[shard >> 4], hex_digits[shard & 15]}; }

}  // namespace

std::string host_usage_prefix(std::string_view prefix, std::string_view host) {
    if (host.empty() || host.find_first_of("/ \t\n\r") != std::string_view::npos)
        throw std::invalid_argument("host name '" + std::string(host) + "' cannot name usage keys in etcd");
    return usage_prefix(prefix) + std::string(host) + "/";
}

std::size_t publish_usage(Client &client, std::string_view prefix, std::string_view host, const UsageByKey &usage,
                          PublishedShards &published) {
    const std::string base = host_usage_prefix(prefix, host);
    PublishedShards shards;
    for (const auto &[key, used] : usage) shards[key[0]] += usage_line(key, used) + "\n";
    std::size_t put = 0;
    for (std::size_t shard = 0; shard < shards.size(); ++shard) {
        if (shards[shard] == published[shard]) continue;
        if (shards[shard].empty())
            client.delete_range(base + shard_name(shard));
        else
            client.put(base + shard_name(shard), shards[shard]);
        published[shard] = std::move(shards[shard]);
        ++put;
    }
    return put;
}

std::size_t add_cluster_usage(Client &client, std::string_view prefix, std::string_view except_host, Seconds latest,
                              UsageByKey &usage) {
    const std::string all = usage_prefix(prefix), own = except_host.empty() ? std::string() : host_usage_prefix(prefix, except_host);
    std::size_t skipped = 0;
    client.read_prefix(all, 1000, [&](std::vector<KeyValue> &&page) {
        for (const KeyValue &kv : page) {
            if (!own.empty() && kv.key.starts_with(own)) continue;
            std::string_view rest = kv.value;
            while (!rest.empty()) {
                const std::size_t end = std::min(rest.find('\n'), rest.size());
                const auto line = parse_usage_line(rest.substr(0, end), latest);
                rest.remove_prefix(std::min(end + 1, rest.size()));
                if (!line) {
                    ++skipped;
                    continue;
                }
                Usage &sum = usage[line->first];
                if (line->second.last_used > sum.last_used) {
                    sum.last_used = line->second.last_used;
                    sum.last_used_ip = line->second.last_used_ip;
                }
                sum.uses += line->second.uses;
            }
        }
    });
    return skipped;
}

}  // namespace cptoken::etcd

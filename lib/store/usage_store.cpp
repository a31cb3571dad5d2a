// SPDX-License-Identifier: Apache-2.0
#include "store/usage_store.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "token/codec.hpp"
#include "store/lmdb_env.hpp"
#include "token/network.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"
#include "store/unprivileged.hpp"

namespace cptoken {

using namespace lmdb;

namespace {

// A usage value's payload: this format byte, the time of the last use
// (8 bytes, seconds), the count of uses (8 bytes), the client address as text.
constexpr std::uint8_t usage_format = 2;
constexpr std::size_t usage_fixed_size = 1 + 8 + 8;

std::string encode_usage(Seconds last_used, std::uint64_t uses, std::string_view address) {
    std::string payload(1, static_cast<char>(usage_format));
    put_be(payload, static_cast<std::uint64_t>(last_used), 8);
    put_be(payload, uses, 8);
    payload.append(address);
    return payload;
}

// A stored payload as it is, address unchecked: what the writer needs.
struct StoredUsage {
    Seconds last_used = 0;
    std::uint64_t uses = 0;
    std::string_view address;
};

constexpr Seconds earliest_use = 946684800;  // 2000-01-01T00:00:00Z

// The latest time a use read now may have: a later one is forged (or from a
// clock far ahead), and would hide a stale token from `list --unused-for`.
Seconds latest_use() noexcept { return now_seconds() + usage_clock_skew; }

// httpd's group may write anything here: only a known format with a time in
// range gets through.
std::optional<StoredUsage> parse_usage(std::string_view payload, Seconds latest) {
    if (payload.size() < usage_fixed_size || static_cast<std::uint8_t>(payload[0]) != usage_format)
        return std::nullopt;
    const std::uint64_t when = get_be(payload, 1, 8);
    if (when < static_cast<std::uint64_t>(earliest_use) || when > static_cast<std::uint64_t>(latest))
        return std::nullopt;
    return StoredUsage{static_cast<Seconds>(when), get_be(payload, 9, 8), payload.substr(usage_fixed_size)};
}

// What the tool prints to a root terminal: also only an address that parses.
std::optional<Usage> decode_usage(std::string_view payload, Seconds latest) {
    const auto stored = parse_usage(payload, latest);
    if (!stored) return std::nullopt;
    Usage usage;
    usage.last_used = stored->last_used;
    usage.uses = stored->uses;
    if (const auto address = parse_address(stored->address)) usage.last_used_ip = to_string(*address);
    return usage;
}

constexpr std::int64_t nanoseconds_per_second = 1000000000;

}  // namespace

struct UsageStore::Impl {
    Env env;
    MDB_dbi usage = 0;

    Impl(const std::string &dir, Access access)
        : env(path_in(dir, usage_store_file), access, 0660, true,
              access == Access::read_write ? MDB_NOSYNC | MDB_NOMETASYNC : 0) {
        env.check_size();  // before anything reads through the map
        Txn txn(env.get(), false, env.file());
        usage = env.open_db(txn, "usage", false);
        txn.commit(env.file());
    }
};

UsageStore::UsageStore(const std::string &dir, Access access) : impl_(std::make_unique<Impl>(dir, access)) {}
UsageStore::~UsageStore() = default;

std::optional<Usage> UsageStore::find(const Digest &digest) const {
    Txn txn(impl_->env.get(), false, impl_->env.file());
    const auto payload = impl_->env.get_live(txn, impl_->usage, as_val(digest));
    if (!payload) return std::nullopt;
    return decode_usage(*payload, latest_use());
}

void UsageStore::add(const std::vector<NotedUses> &noted) {
    if (noted.empty()) return;
    Env &env = impl_->env;
    // httpd's children keep this store open for their whole life, and httpd's
    // group can write the file: one truncated or overwritten in place since
    // the last write would be read past its end through the map, which kills
    // the child (SIGBUS) with every request it is serving.
    env.check_size();
    Txn txn(env.get(), true, env.file());
    // A write transaction's cursor is freed when the transaction ends: on an
    // exception, by the abort in ~Txn.
    MDB_cursor *cursor = nullptr;
    check(mdb_cursor_open(txn.get(), impl_->usage, &cursor), "cannot write to ", env.file());
    const Seconds latest = latest_use();
    for (const NotedUses &use : noted) {
        const Seconds noted_at = use.last_used_ns / nanoseconds_per_second;
        // Stamped with the time of use, so that the newest use wins a merge
        // between hosts; never at or before the value it replaces.
        const std::uint64_t used_at = static_cast<std::uint64_t>(std::max<std::int64_t>(use.last_used_ns, 0));
        env.put_merged(txn, cursor, as_val(use.digest), encode_usage(noted_at, use.uses, use.last_used_ip), used_at,
                       [&](std::string_view present) {
                           const auto stored = ls_decode(present);  // unreadable: replaced
                           // A forged use in the future is not kept: real uses replace it.
                           const auto before =
                               stored && !stored->deleted() ? parse_usage(stored->payload, latest) : std::nullopt;
                           const std::uint64_t stamp =
                               stored && used_at <= stored->timestamp_ns ? stored->timestamp_ns + 1 : used_at;
                           const std::uint64_t uses = (before ? before->uses : 0) + use.uses;
                           return std::pair{!before || noted_at >= before->last_used
                                                ? encode_usage(noted_at, uses, use.last_used_ip)
                                                : encode_usage(before->last_used, uses, before->address),
                                            stamp};
                       });
    }
    mdb_cursor_close(cursor);
    txn.commit(env.file());
}

PruneResult UsageStore::prune(const std::function<bool(const Digest &)> &is_live, Seconds now) {
    Env &env = impl_->env;
    Txn txn(env.get(), true, env.file());
    std::vector<std::string> gone;
    MDB_cursor *cursor = nullptr;
    check(mdb_cursor_open(txn.get(), impl_->usage, &cursor), "cannot read ", env.file());
    MDB_val key, value;
    int rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
    for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) {
        const auto decoded = ls_decode(as_view(value));
        if (decoded && decoded->deleted()) continue;
        Digest digest{};
        const bool is_digest = key.mv_size == digest.size();
        if (is_digest) std::memcpy(digest.data(), key.mv_data, digest.size());
        if (!is_digest || !is_live(digest)) gone.emplace_back(as_view(key));
    }
    mdb_cursor_close(cursor);
    if (rc != MDB_NOTFOUND) fail(rc, "cannot read " + env.file());
    PruneResult result;
    for (const std::string &stale : gone) env.put_tombstone(txn, impl_->usage, as_val(stale));
    result.expired_removed = gone.size();
    result.tombstones_dropped = env.drop_tombstones(txn, impl_->usage, tombstone_cutoff_ns(now));
    txn.commit(env.file());
    return result;
}

void UsageStore::each(const std::function<void(const Digest &, const Usage &)> &visit) const {
    Txn txn(impl_->env.get(), false, impl_->env.file());
    MDB_cursor *cursor = nullptr;
    check(mdb_cursor_open(txn.get(), impl_->usage, &cursor), "cannot read ", impl_->env.file());
    MDB_val key, value;
    const Seconds latest = latest_use();
    int rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
    try {
        for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) {
            Digest digest{};
            if (key.mv_size != digest.size()) continue;
            std::memcpy(digest.data(), key.mv_data, digest.size());
            const auto decoded = ls_decode(as_view(value));
            if (!decoded || decoded->deleted()) continue;
            if (const auto usage = decode_usage(decoded->payload, latest)) visit(digest, *usage);
        }
    } catch (...) {
        mdb_cursor_close(cursor);
        throw;
    }
    mdb_cursor_close(cursor);
    if (rc != MDB_NOTFOUND) fail(rc, "cannot read " + impl_->env.file());
}

std::pair<dev_t, ino_t> UsageStore::data_file_id() const { return impl_->env.file_id(); }

namespace {

// A decimal number of at most 19 digits.
std::optional<std::uint64_t> decimal(std::string_view text) {
    if (text.empty() || text.size() > 19) return std::nullopt;
    std::uint64_t value = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return value;
}

// The fields of one line, separated by single spaces.
std::vector<std::string_view> fields_of(std::string_view line) {
    std::vector<std::string_view> out;
    for (std::size_t start = 0;;) {
        const auto space = line.find(' ', start);
        out.push_back(line.substr(start, space == std::string_view::npos ? std::string_view::npos : space - start));
        if (space == std::string_view::npos) return out;
        start = space + 1;
    }
}

[[noreturn]] void bad_line(const std::string &dir) {
    corrupt("the process reading the usage store of " + dir + " sent a line that is not a usage value");
}

}  // namespace

bool unused_since(const TokenRecord &record, const std::optional<Usage> &used, Seconds cutoff) {
    return used ? used->last_used <= cutoff : record.created <= cutoff;
}

std::string usage_line(const Digest &digest, const Usage &usage) {
    return digest_hex(digest) + " " + std::to_string(usage.last_used) + " " + std::to_string(usage.uses) + " " +
           (usage.last_used_ip.empty() ? "-" : usage.last_used_ip);
}

std::optional<std::pair<Digest, Usage>> parse_usage_line(std::string_view line, Seconds latest) {
    const auto fields = fields_of(line);
    if (fields.size() != 4) return std::nullopt;
    const auto digest = digest_from_hex(fields[0]);
    const auto when = decimal(fields[1]), uses = decimal(fields[2]);
    if (!digest || !when || !uses || *when < static_cast<std::uint64_t>(earliest_use) ||
        *when > static_cast<std::uint64_t>(latest))
        return std::nullopt;
    Usage usage;
    usage.last_used = static_cast<Seconds>(*when);
    usage.uses = *uses;
    if (fields[3] != "-") {
        const auto address = parse_address(fields[3]);
        if (!address) return std::nullopt;
        usage.last_used_ip = to_string(*address);
    }
    return std::pair{*digest, std::move(usage)};
}

std::map<Digest, Usage> read_usage(const std::string &dir) {
    std::map<Digest, Usage> out;
    const Seconds latest = latest_use();
    as_store_group(
        dir,
        [&dir](const std::function<void(std::string_view)> &send) {
            UsageStore(dir, Access::read_only).each(
                [&](const Digest &digest, const Usage &usage) { send(usage_line(digest, usage)); });
        },
        [&](std::string_view line) {
            auto parsed = parse_usage_line(line, latest);
            if (!parsed) bad_line(dir);
            out[parsed->first] = std::move(parsed->second);
        });
    return out;
}

PruneResult prune_usage(const std::string &dir, Seconds now) {
    PruneResult result;
    as_store_group(
        dir,
        [&dir, now](const std::function<void(std::string_view)> &send) {
            const TokenStore tokens(dir, Access::read_only);
            const PruneResult pruned = UsageStore(dir, Access::read_write)
                                           .prune([&](const Digest &digest) { return tokens.find(digest).has_value(); },
                                                  now);
            send(std::to_string(pruned.expired_removed) + " " + std::to_string(pruned.tombstones_dropped));
        },
        [&](std::string_view line) {
            const auto fields = fields_of(line);
            const auto removed = fields.size() == 2 ? decimal(fields[0]) : std::nullopt;
            const auto dropped = fields.size() == 2 ? decimal(fields[1]) : std::nullopt;
            if (!removed || !dropped) corrupt("the process pruning the usage store of " + dir + " sent a bad line");
            result.expired_removed = *removed, result.tombstones_dropped = *dropped;
        });
    return result;
}

}  // namespace cptoken

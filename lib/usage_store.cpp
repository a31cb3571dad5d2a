#include "usage_store.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "codec.hpp"
#include "lmdb_env.hpp"

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

// httpd's group may write anything here: only a known format with a time in
// range gets through.
std::optional<StoredUsage> parse_usage(std::string_view payload) {
    if (payload.size() < usage_fixed_size || static_cast<std::uint8_t>(payload[0]) != usage_format)
        return std::nullopt;
    const std::uint64_t when = get_be(payload, 1, 8);
    constexpr std::uint64_t earliest = 946684800;   // 2000-01-01T00:00:00Z
    constexpr std::uint64_t latest = 253402300799;  // 9999-12-31T23:59:59Z
    if (when < earliest || when > latest) return std::nullopt;
    return StoredUsage{static_cast<Seconds>(when), get_be(payload, 9, 8), payload.substr(usage_fixed_size)};
}

// What the tool prints to a root terminal: also only an address that parses.
std::optional<Usage> decode_usage(std::string_view payload) {
    const auto stored = parse_usage(payload);
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
    return decode_usage(*payload);
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
    for (const NotedUses &use : noted) {
        const Seconds noted_at = use.last_used_ns / nanoseconds_per_second;
        // Stamped with the time of use, so that the newest use wins a merge
        // between hosts; never at or before the value it replaces.
        const std::uint64_t used_at = static_cast<std::uint64_t>(std::max<std::int64_t>(use.last_used_ns, 0));
        env.put_merged(txn, cursor, as_val(use.digest), encode_usage(noted_at, use.uses, use.last_used_ip), used_at,
                       [&](std::string_view present) {
                           const auto stored = ls_decode(present);  // unreadable: replaced
                           const auto before =
                               stored && !stored->deleted() ? parse_usage(stored->payload) : std::nullopt;
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

std::pair<dev_t, ino_t> UsageStore::data_file_id() const { return impl_->env.file_id(); }

}  // namespace cptoken

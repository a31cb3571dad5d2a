#include "usage_store.hpp"

#include <algorithm>

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

// httpd's group may write anything here, and the tool prints it to a root
// terminal: only a time in range and an address that parses get through.
std::optional<Usage> decode_usage(std::string_view payload) {
    if (payload.size() < usage_fixed_size || static_cast<std::uint8_t>(payload[0]) != usage_format)
        return std::nullopt;
    const std::uint64_t when = get_be(payload, 1, 8);
    constexpr std::uint64_t earliest = 946684800;   // 2000-01-01T00:00:00Z
    constexpr std::uint64_t latest = 253402300799;  // 9999-12-31T23:59:59Z
    if (when < earliest || when > latest) return std::nullopt;
    Usage usage;
    usage.last_used = static_cast<Seconds>(when);
    usage.uses = get_be(payload, 9, 8);
    if (const auto address = parse_address(payload.substr(usage_fixed_size))) usage.last_used_ip = to_string(*address);
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
    Txn txn(env.get(), true, env.file());
    for (const NotedUses &use : noted) {
        const MDB_val key = as_val(use.digest);
        std::optional<LsValue> stored;
        try {
            stored = env.get_value(txn, impl_->usage, key);
        } catch (const StoreError &e) {
            if (e.kind() != StoreError::Kind::corrupt) throw;  // a broken header: replaced below
        }
        const std::optional<Usage> before = stored && !stored->deleted() ? decode_usage(stored->payload) : std::nullopt;
        const Seconds noted_at = use.last_used_ns / nanoseconds_per_second;
        const bool noted_is_newer = !before || noted_at >= before->last_used;
        const std::uint64_t uses = (before ? before->uses : 0) + use.uses;
        // Stamped with the time of use, so that the newest use wins a merge
        // between hosts; never at or before the value it replaces.
        std::uint64_t stamp = static_cast<std::uint64_t>(std::max<std::int64_t>(use.last_used_ns, 0));
        if (stored && stamp <= stored->timestamp_ns) stamp = stored->timestamp_ns + 1;
        const std::string payload = noted_is_newer ? encode_usage(noted_at, uses, use.last_used_ip)
                                                   : encode_usage(before->last_used, uses, before->last_used_ip);
        env.put(txn, impl_->usage, key, payload, 0, stamp);
    }
    txn.commit(env.file());
}

std::pair<dev_t, ino_t> UsageStore::data_file_id() const { return impl_->env.file_id(); }

}  // namespace cptoken

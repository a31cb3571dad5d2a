#include "usage_store.hpp"

#include "codec.hpp"
#include "lmdb_env.hpp"

namespace cptoken {

using namespace lmdb;

namespace {
constexpr std::uint8_t usage_format = 1;
}

struct UsageStore::Impl {
    Env env;
    MDB_dbi usage = 0;

    Impl(const std::string &dir, Access access) : env(path_in(dir, usage_store_file), access, 0660, true) {
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
    // format byte, 8-byte time, then the address text. httpd's group may write
    // anything here, and the tool prints it to a root terminal: only a time in
    // range and an address that parses get through.
    if (payload->size() < 9 || static_cast<std::uint8_t>((*payload)[0]) != usage_format) return std::nullopt;
    const std::uint64_t when = get_be(*payload, 1, 8);
    constexpr std::uint64_t earliest = 946684800;     // 2000-01-01T00:00:00Z
    constexpr std::uint64_t latest = 253402300799;    // 9999-12-31T23:59:59Z
    if (when < earliest || when > latest) return std::nullopt;
    Usage usage;
    usage.last_used = static_cast<Seconds>(when);
    if (const auto address = parse_address(payload->substr(9))) usage.last_used_ip = to_string(*address);
    return usage;
}

void UsageStore::record(const Digest &digest, const Usage &usage) {
    std::string payload(1, static_cast<char>(usage_format));
    put_be(payload, static_cast<std::uint64_t>(usage.last_used), 8);
    payload += usage.last_used_ip;
    Txn txn(impl_->env.get(), true, impl_->env.file());
    impl_->env.put(txn, impl_->usage, as_val(digest), payload);
    txn.commit(impl_->env.file());
}

}  // namespace cptoken

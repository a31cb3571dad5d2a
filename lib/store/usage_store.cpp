// SPDX-License-Identifier: Apache-2.0
#include "store/usage_store.hpp"

#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>
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

// ---- usage.mdb, the usage store of 0.13 and before: read once, to import it.

// A usage value's payload: this format byte, the time of the last use
// (8 bytes, seconds), the count of uses (8 bytes), the client address as text.
constexpr std::uint8_t usage_format = 2;
constexpr std::size_t usage_fixed_size = 1 + 8 + 8;

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

// Every value of DIR/usage.mdb that find() would have returned.
void each_old_usage(const std::string &dir, const std::function<void(const Digest &, const Usage &)> &visit) {
    Env env(path_in(dir, old_usage_store_file), Access::read_only, 0660, true);
    env.check_size();
    Txn txn(env.get(), false, env.file());
    const MDB_dbi usage = env.open_db(txn, "usage", false);
    const Seconds latest = latest_use();
    env.for_each_entry(txn, usage, [&](std::string_view key, std::string_view value) {
        Digest digest{};
        if (key.size() != digest.size()) return;
        std::memcpy(digest.data(), key.data(), digest.size());
        const auto decoded = ls_decode(value);
        if (!decoded || decoded->deleted()) return;
        if (const auto used = decode_usage(decoded->payload, latest)) visit(digest, *used);
    });
}

// ---- usage.slots

// A slot's uses as find() returns them: a time in range, the address as text.
std::optional<Usage> checked(const SlotUsage &slot, Seconds latest) {
    if (slot.last_used < earliest_use || slot.last_used > latest) return std::nullopt;
    Usage usage;
    usage.last_used = slot.last_used;
    usage.uses = slot.uses;
    if (slot.address) usage.last_used_ip = to_string(*slot.address);
    return usage;
}

}  // namespace

UsageStore::UsageStore(const std::string &dir, Access access) {
    const std::string path = path_in(dir, usage_store_file);
    check_store_dir(path, access);
    table_ = std::make_unique<UsageTable>(path, access == Access::read_write);
}
UsageStore::~UsageStore() = default;

std::optional<Usage> UsageStore::find(const Digest &digest) const {
    const auto slot = table_->find(usage_key(digest));
    return slot ? checked(*slot, latest_use()) : std::nullopt;
}

bool UsageStore::record(const Digest &digest, Seconds when, const std::optional<Address> &address) {
    return table_->record_guarded(usage_key(digest), when, address);
}

bool UsageStore::merge(const UsageKey &key, const Usage &usage) {
    return table_->record(key, usage.last_used, parse_address(usage.last_used_ip), usage.uses);
}

void UsageStore::each(const std::function<void(const UsageKey &, const Usage &)> &visit) const {
    const Seconds latest = latest_use();
    table_->each([&](const SlotUsage &slot) {
        if (const auto usage = checked(slot, latest)) visit(slot.key, *usage);
    });
}

std::uint64_t UsageStore::lost() const { return table_->lost(); }
std::uint64_t UsageStore::room() const { return table_->slot_count() / 2; }
bool UsageStore::intact() const { return table_->intact(); }
std::pair<dev_t, ino_t> UsageStore::data_file_id() const { return table_->file_id(); }

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

static std::string key_hex(const UsageKey &key) {
    return bytes_hex(std::string_view(reinterpret_cast<const char *>(key.data()), key.size()));
}

static std::optional<UsageKey> key_from_hex(std::string_view hex) {
    UsageKey key{};
    if (!bytes_from_hex(hex, key)) return std::nullopt;
    return key;
}

std::optional<Usage> usage_of(const UsageByKey &usage, const Digest &digest) {
    const auto found = usage.find(usage_key(digest));
    return found == usage.end() ? std::nullopt : std::optional<Usage>(found->second);
}

bool unused_since(const TokenRecord &record, const std::optional<Usage> &used, Seconds cutoff) {
    return used ? used->last_used <= cutoff : record.created <= cutoff;
}

std::string usage_line(const UsageKey &key, const Usage &usage) {
    return key_hex(key) + " " + std::to_string(usage.last_used) + " " + std::to_string(usage.uses) + " " +
           (usage.last_used_ip.empty() ? "-" : usage.last_used_ip);
}

std::optional<std::pair<UsageKey, Usage>> parse_usage_line(std::string_view line, Seconds latest) {
    const auto fields = fields_of(line);
    if (fields.size() != 4) return std::nullopt;
    const auto key = key_from_hex(fields[0]);
    const auto when = decimal(fields[1]), uses = decimal(fields[2]);
    if (!key || !when || !uses || *when < static_cast<std::uint64_t>(earliest_use) ||
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
    return std::pair{*key, std::move(usage)};
}

UsageByKey read_usage(const std::string &dir) {
    UsageByKey out;
    const Seconds latest = latest_use();
    as_store_group(
        dir,
        [&dir](const std::function<void(std::string_view)> &send) {
            UsageStore(dir, Access::read_only).each(
                [&](const UsageKey &key, const Usage &usage) { send(usage_line(key, usage)); });
        },
        [&](std::string_view line) {
            auto parsed = parse_usage_line(line, latest);
            if (!parsed) bad_line(dir);
            out[parsed->first] = std::move(parsed->second);
        });
    return out;
}

bool usage_needs_room(const std::string &dir, std::size_t tokens) {
    struct stat st{};
    if (::lstat(path_in(dir, usage_store_file).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
    const std::uint64_t slots = size > UsageTable::header_size ? (size - UsageTable::header_size) / UsageTable::slot_size : 0;
    return tokens > slots / 2;
}

namespace {
constexpr const char *new_table_name = "usage.slots.new", *old_table_name = "usage.slots.old";

// Removes `name` in the directory `dir_fd`, if it is there.
void remove_if_there(int dir_fd, const char *name, const std::string &dir) {
    if (::unlinkat(dir_fd, name, 0) != 0 && errno != ENOENT) fail(errno, "cannot remove " + path_in(dir, name));
}
}  // namespace

UsageRebuild rebuild_usage(const std::string &named_dir) {
    // The store DIR names now, once: DIR may be a symbolic link that a restored
    // store is swapped in through while this runs.
    char resolved[PATH_MAX];
    if (!::realpath(named_dir.c_str(), resolved)) no_store(named_dir);
    const std::string dir = resolved;
    struct stat dir_st{};
    if (::lstat(dir.c_str(), &dir_st) != 0 || !S_ISDIR(dir_st.st_mode)) no_store(named_dir);
    // 1. As the owner: a new table, with room for the store's tokens, takes
    // the old one's name; the old one stays reachable under another.
    bool had_table = false, had_old_store = false;
    std::vector<std::string> made;
    as_owner(dir, dir_st.st_uid, dir_st, [&](int dir_fd, const std::function<void(std::string)> &) {
        const std::size_t tokens = TokenStore(dir, Access::read_only).stored_count();
        remove_if_there(dir_fd, new_table_name, dir);
        remove_if_there(dir_fd, old_table_name, dir);
        UsageTable::create(dir_fd, new_table_name, path_in(dir, new_table_name), UsageTable::slot_count_for(tokens),
                           0660, dir_st.st_gid);
        // One atomic exchange: httpd's children never find the path empty.
        if (::renameat2(dir_fd, new_table_name, dir_fd, usage_store_file, RENAME_EXCHANGE) == 0) {
            if (::renameat(dir_fd, new_table_name, dir_fd, old_table_name) != 0)
                fail(errno, "cannot rename " + path_in(dir, new_table_name));
        } else if (errno != ENOENT || ::renameat(dir_fd, new_table_name, dir_fd, usage_store_file) != 0) {
            fail(errno, "cannot put " + path_in(dir, new_table_name) + " in place");
        }
    }, made);
    // Seen from here: the work above may have run in a child (as_owner).
    struct stat st{};
    had_table = ::lstat(path_in(dir, old_table_name).c_str(), &st) == 0;
    had_old_store = ::lstat(path_in(dir, old_usage_store_file).c_str(), &st) == 0;
    // httpd's children look at the table's path at least once a second: after
    // that, none writes to the old table any more, and all it holds is copied.
    if (had_table) std::this_thread::sleep_for(usage_follow_interval + std::chrono::milliseconds(100));
    // 2. As httpd's group (nobody of it, for root): the live tokens' uses into the new table.
    UsageRebuild result;
    as_store_group(
        dir,
        [&](const std::function<void(std::string_view)> &send) {
            std::set<UsageKey> live;
            for (const StoredToken &token : TokenStore(dir, Access::read_only).list()) live.insert(usage_key(token.digest));
            UsageStore table(dir, Access::read_write);
            std::uint64_t kept = 0, dropped = 0;
            const auto copy = [&](const UsageKey &key, const Usage &usage) {
                if (!live.count(key)) {
                    ++dropped;
                    return;
                }
                ++kept;
                table.merge(key, usage);
            };
            if (had_table) {
                std::unique_ptr<UsageTable> old;
                try {
                    old = std::make_unique<UsageTable>(path_in(dir, old_table_name), false);
                } catch (const StoreError &e) {
                    if (e.kind() != StoreError::Kind::corrupt) throw;  // not a table: nothing in it to keep
                }
                const Seconds latest = latest_use();
                if (old)
                    old->each([&](const SlotUsage &slot) {
                        if (const auto usage = checked(slot, latest)) copy(slot.key, *usage);
                    });
            }
            if (had_old_store)
                each_old_usage(dir, [&](const Digest &digest, const Usage &usage) { copy(usage_key(digest), usage); });
            send(std::to_string(kept) + " " + std::to_string(dropped) + " " + std::to_string(table.room()));
        },
        [&](std::string_view line) {
            const auto fields = fields_of(line);
            const auto kept = fields.size() == 3 ? decimal(fields[0]) : std::nullopt;
            const auto dropped = fields.size() == 3 ? decimal(fields[1]) : std::nullopt;
            const auto room = fields.size() == 3 ? decimal(fields[2]) : std::nullopt;
            if (!kept || !dropped || !room) corrupt("the process copying the usage store of " + dir + " sent a bad line");
            result = UsageRebuild{*kept, *dropped, *room};
        });
    // 3. As the owner: what was copied goes.
    as_owner(dir, dir_st.st_uid, dir_st, [&](int dir_fd, const std::function<void(std::string)> &) {
        remove_if_there(dir_fd, old_table_name, dir);
        if (had_old_store) {
            remove_if_there(dir_fd, old_usage_store_file, dir);
            remove_if_there(dir_fd, (std::string(old_usage_store_file) + "-lock").c_str(), dir);
        }
    }, made);
    return result;
}

}  // namespace cptoken

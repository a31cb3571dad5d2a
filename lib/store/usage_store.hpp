// SPDX-License-Identifier: Apache-2.0
// The usage store: when, from where and how often each token was used.
// DIR/usage.slots, a usage table (usage_table.hpp) that httpd's children
// update in place, one use at a time; read by cptoken (as root, through an
// unprivileged child: read_usage); kept apart from the token store so that
// httpd needs no write access to tokens. A table has room for a number of
// tokens fixed when it is made: rebuild_usage() makes it again, with room
// for the store's tokens and the uses of those alone (cptoken prune, init,
// and the commands that add tokens when it is half full).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "store/store.hpp"
#include "store/usage_table.hpp"
#include "token/network.hpp"

namespace cptoken {

/// How often a writer of the usage store (an httpd child) looks whether the
/// table at its path is still the one it has open: a rebuild waits that long
/// before copying the old table, so that no use written there is left out.
inline constexpr std::chrono::milliseconds usage_follow_interval{1000};


/// A token's uses, as recorded by httpd.
struct Usage {
    Seconds last_used = 0;
    std::string last_used_ip;  ///< canonical text; empty if unknown
    std::uint64_t uses = 0;    ///< requests admitted, as written so far
};

/// The usage store: the uses of each token, by the first 16 bytes of its digest.
class UsageStore {
public:
    /// Opens DIR/usage.slots; read_write to record uses. Throws StoreError:
    /// missing if there is none, access, corrupt (not a usage table).
    UsageStore(const std::string &dir, Access access);
    ~UsageStore();
    UsageStore(const UsageStore &) = delete;
    UsageStore &operator=(const UsageStore &) = delete;

    /// The uses recorded for `digest`; nullopt if none, or if the time is
    /// before 2000-01-01 or later than now + usage_clock_skew (httpd's group
    /// can write this store). The address in its canonical form, empty if
    /// unknown.
    std::optional<Usage> find(const Digest &digest) const;

    /// Records one use of `digest` at `when` from `address` (none: unknown),
    /// in constant time, without a lock or a system call: for httpd's
    /// children. Returns false if the table had no room for a token new to
    /// it (counted in lost()), or if it was cut short or overwritten under
    /// the map (UsageTable::record_guarded: intact() then says so).
    bool record(const Digest &digest, Seconds when, const std::optional<Address> &address);

    /// Adds uses read elsewhere (a rebuild's copy): as record(), with
    /// `usage.uses` uses at its time and address.
    bool merge(const UsageKey &key, const Usage &usage);

    /// Calls `visit` with every token's uses, as find() returns them (slots
    /// find() would not return left out), in slot order.
    void each(const std::function<void(const UsageKey &, const Usage &)> &visit) const;

    /// Uses not recorded for want of room since the table was made.
    std::uint64_t lost() const;
    /// Tokens the table has room for (half its slots).
    std::uint64_t room() const;
    /// False once the file is no longer the table opened (UsageTable::intact).
    bool intact() const;
    /// Device and inode of the table this store has open.
    std::pair<dev_t, ino_t> data_file_id() const;

private:
    std::unique_ptr<UsageTable> table_;
};

/// Whether a token was not used since `cutoff`: its last use is at or before
/// it, or, never used, it was created by then. The rule of `cptoken list
/// --unused-for` and of the manager's revoke_unused.
bool unused_since(const TokenRecord &record, const std::optional<Usage> &used, Seconds cutoff);

/// Every token's uses, by key, as read_usage() gives them.
using UsageByKey = std::map<UsageKey, Usage>;

/// The uses of `digest` in `usage`, if any.
std::optional<Usage> usage_of(const UsageByKey &usage, const Digest &digest);

/// One usage value as the unprivileged reader sends it to root:
/// "KEY_HEX LAST_USED USES ADDRESS|-" (KEY_HEX: 32 hex digits).
std::string usage_line(const UsageKey &key, const Usage &usage);

/// The usage value of one line from the unprivileged reader, each byte
/// checked as find() checks a stored value (`latest`: the latest time of a
/// use); nullopt if the line is not one.
std::optional<std::pair<UsageKey, Usage>> parse_usage_line(std::string_view line, Seconds latest);

/// Every token's uses in the store in DIR, as UsageStore::each gives them.
/// Root never opens the usage store (httpd's group writes it): as root, a
/// child process reads it after becoming user nobody in the store's group
/// (run_unprivileged), and the values it sends are checked here byte by
/// byte. Throws StoreError: missing if DIR has no usage store.
UsageByKey read_usage(const std::string &dir);

/// Makes DIR's usage table again, with room for twice the tokens of its
/// token store, keeping the uses of those tokens alone (and importing a
/// usage.mdb of 0.13 and before, which it then removes). The new table
/// replaces the old at once (httpd's children follow it); the uses are
/// then copied over, by a child that has become user nobody of the store's
/// group when this process is root. Needs root or the store's owner; the
/// files are the owner's. Throws StoreError.
struct UsageRebuild {
    std::uint64_t kept = 0;     ///< tokens whose uses were copied
    std::uint64_t dropped = 0;  ///< tokens gone from the store, whose uses were not
    std::uint64_t room = 0;     ///< tokens the new table has room for
};
UsageRebuild rebuild_usage(const std::string &dir);

/// True if DIR's usage table has room for fewer tokens than its token
/// store holds (rebuild_usage() then makes room). Looks only at the table's
/// size: nothing httpd's group wrote is read.
bool usage_needs_room(const std::string &dir, std::size_t tokens);

}  // namespace cptoken

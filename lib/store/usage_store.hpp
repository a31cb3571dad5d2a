// SPDX-License-Identifier: Apache-2.0
// The usage store: when, from where and how often each token was used.
// DIR/usage.mdb (+ -lock), written by httpd children (UsageRecorder), read
// by cptoken (as root, through an unprivileged child: read_usage); kept
// apart from the token store so that httpd needs no write access to tokens.
//
//   usage   SHA-512 digest (64 bytes) -> usage value (usage_store.cpp)
//
// Every value carries the Lightning Stream header stamped with the time of
// the use it records, so that where hosts share a store the newest use wins.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "store/store.hpp"

namespace cptoken {

/// How far ahead of this host's clock a recorded use may be (hosts sharing a
/// store have clocks a little apart). A later one is not a use: httpd's group
/// can write any time there, and a forged one in the future would hide a
/// stale token from `list --unused-for` for good.
inline constexpr Seconds usage_clock_skew = 300;

/// A token's uses, as recorded by httpd.
struct Usage {
    Seconds last_used = 0;
    std::string last_used_ip;  ///< canonical text; empty if unknown
    std::uint64_t uses = 0;    ///< requests admitted, as written so far
};

/// Uses of one token that one process noted and has not written yet.
struct NotedUses {
    Digest digest{};
    std::int64_t last_used_ns = 0;  ///< wall clock of the newest noted use
    std::string last_used_ip;       ///< its client address, canonical text
    std::uint64_t uses = 0;         ///< how many since the last write
};

/// The usage store: digest -> last use and count.
class UsageStore {
public:
    /// Opens DIR/usage.mdb. A read-write opener does not sync to disk
    /// (MDB_NOSYNC, MDB_NOMETASYNC): a crash of the machine may lose the last
    /// uses, never a token. Throws StoreError like TokenStore.
    UsageStore(const std::string &dir, Access access);
    ~UsageStore();
    UsageStore(const UsageStore &) = delete;
    UsageStore &operator=(const UsageStore &) = delete;

    /// The uses recorded for `digest`; nullopt if none, or if the time is
    /// unreadable, before 2000-01-01 or later than now + usage_clock_skew
    /// (httpd's group can write this store). An address that does not parse (parse_address) is
    /// returned empty (unknown), any other in its canonical form. Throws
    /// StoreError on a failed read.
    std::optional<Usage> find(const Digest &digest) const;

    /// Adds noted uses in one write transaction: each token's count grows by
    /// its uses; its time and address become those of the newer of the stored
    /// and the noted use (a stored time find() would not return is replaced). Each value is stamped with that time (and always
    /// later than the value it replaces). A stored value that cannot be read
    /// is replaced. Throws StoreError on a failed write (nothing written),
    /// corrupt if the data file was truncated or overwritten in place since
    /// it was opened (before anything reads it).
    void add(const std::vector<NotedUses> &noted);

    /// Forgets the uses of tokens that are gone: writes a tombstone over
    /// every value whose key `is_live` rejects (or is not a digest), and drops
    /// tombstones as TokenStore::prune does. One write transaction. Returns
    /// how many values it forgot and how many tombstones it dropped. Throws
    /// StoreError on a failed write (nothing written).
    PruneResult prune(const std::function<bool(const Digest &)> &is_live, Seconds now);

    /// Calls `visit` with every token's uses, as find() returns them
    /// (tombstones and unreadable values left out), in key order. Throws
    /// StoreError on a failed read.
    void each(const std::function<void(const Digest &, const Usage &)> &visit) const;

    /// Device and inode of the data file this store has open.
    std::pair<dev_t, ino_t> data_file_id() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

/// Whether a token was not used since `cutoff`: its last use is at or before
/// it, or, never used, it was created by then. The rule of `cptoken list
/// --unused-for` and of the manager's revoke_unused.
bool unused_since(const TokenRecord &record, const std::optional<Usage> &used, Seconds cutoff);

/// One usage value as the unprivileged reader sends it to root:
/// "DIGEST_HEX LAST_USED USES ADDRESS|-".
std::string usage_line(const Digest &digest, const Usage &usage);

/// The usage value of one line from the unprivileged reader, each byte
/// checked as find() checks a stored value (`latest`: the latest time of a
/// use); nullopt if the line is not one.
std::optional<std::pair<Digest, Usage>> parse_usage_line(std::string_view line, Seconds latest);

/// Every token's uses in the store in DIR, by digest, as UsageStore::each
/// gives them. Root never opens the usage store (httpd's group writes it):
/// as root, a child process reads it after becoming user nobody in the
/// store's group (run_unprivileged), and the values it sends are checked
/// here byte by byte. Throws StoreError: missing if DIR has no usage store.
std::map<Digest, Usage> read_usage(const std::string &dir);

/// UsageStore::prune of the store in DIR, with the live tokens those of its
/// token store (read without the lock file); as root, in such a child.
/// Throws StoreError: missing if DIR has no usage store.
PruneResult prune_usage(const std::string &dir, Seconds now);

}  // namespace cptoken

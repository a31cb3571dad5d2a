// SPDX-License-Identifier: Apache-2.0
// The token store (LMDB) and the usage store (a usage table) in one
// directory. Only lib/ talks to LMDB: lmdb_env.hpp opens environments and
// runs verified transactions, this part keeps the records.
//
// DIR/tokens.mdb (+ -lock)  token records; written by the store's owner only,
//                           who alone opens the lock file
// DIR/tokens.mdb-committed  the newest commit, for readers (commit_record.hpp)
// DIR/usage.slots           last use, its address and the count of uses;
//                           written by httpd (usage_table.hpp)
//
// Token store databases (every value starts with a Lightning Stream header,
// deletes write tombstones):
//   meta    "schema_version" -> uint32 big endian
//   tokens  SHA-512 digest (64 bytes) -> encode_record()
//   names   user '\0' name -> digest
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "token/record.hpp"
#include "token/token.hpp"

namespace cptoken {

/// Environment settings shared by every process that opens a store. The
/// first opener of an environment fixes its reader table, so the tool and
/// the module must agree: keep them here only.
struct StoreSettings {
    /// Address space reserved for each environment; the files grow only
    /// as data is written. 16 GiB holds tens of millions of tokens.
    static constexpr std::size_t map_size = std::size_t{16} << 30;
    /// Reader slots of a lock file. The token store's readers take none
    /// (they do without its lock file); the usage store's are httpd's
    /// children (one each, for their whole life) and children still draining
    /// after a graceful restart.
    static constexpr unsigned max_readers = 16384;
    /// The store schema this code reads and writes.
    static constexpr std::uint32_t schema_version = 1;
    /// prune() drops tombstones older than this (long enough for every
    /// host sharing the store through Lightning Stream to have seen them).
    static constexpr std::int64_t tombstone_retention_seconds = 30 * 86400;
    /// Records find() keeps per open store (per httpd child), so that tokens
    /// in use skip the B-tree walk while the store is unchanged. 0 turns the
    /// cache off. The slots take 5.2 MiB once the first record is kept
    /// (RecordCache::fixed_bytes): 15360 of 336 bytes, fewer than the 16384
    /// of 320 bytes before each slot also kept a token's tag, so that the
    /// documented bound (5.3 MiB, 9.3 MiB with the records) still holds.
    static constexpr std::size_t record_cache_slots = 15360;
    /// The most heap the kept records may own besides (names, allowlists:
    /// ~2 KB for 100 networks, usually under 100 bytes). With the slots: at
    /// most 9.3 MiB per open store per httpd child.
    static constexpr std::size_t record_cache_bytes = std::size_t{4} << 20;
    /// How long a reader of the token store without its lock file keeps
    /// making again a read that a commit overlapped, or that found a commit
    /// not yet published, before refusing the store.
    static constexpr std::chrono::milliseconds commit_in_flight_wait{200};
    /// How long after a commit the pages it freed stay as they were, while
    /// the process that committed keeps writing: readers without the lock
    /// file are invisible to LMDB, which would otherwise reuse them two
    /// commits later. A lookup paused longer than this under a writer in a
    /// tight loop could meet a rewritten page (docs/store.md).
    static constexpr std::chrono::milliseconds page_reuse_delay{100};
    /// A write that has waited this long for the writer lock says so
    /// (TokenStore::set_lock_wait_notice).
    static constexpr std::chrono::seconds lock_wait_notice_after{3};
};

/// The store directory when none is configured (CPTokenDB, cptoken --db).
inline constexpr const char *default_store_dir = "/var/lib/cptoken";

inline constexpr const char *token_store_file = "tokens.mdb";
inline constexpr const char *usage_store_file = "usage.slots";
/// The usage store of 0.13 and before (LMDB), with its lock file: imported
/// into usage.slots by rebuild_usage() (init, prune), then removed.
inline constexpr const char *old_usage_store_file = "usage.mdb";

/// Every store failure, with a message fit for an admin.
class StoreError : public std::runtime_error {
public:
    enum class Kind {
        missing,     ///< no store at that path (not initialised)
        access,      ///< permission denied or other system error
        corrupt,     ///< unreadable file or record, wrong schema
        not_found,   ///< no such token
        duplicate,   ///< the user already has a token of that name
        full,        ///< reader table, map, transaction or filesystem (or quota) full
        inconsistent,  ///< no read could be made whole (tokens.mdb and its commit record disagree)
    };
    StoreError(Kind kind, const std::string &message)
        : std::runtime_error(message), kind_(kind) {}
    Kind kind() const noexcept { return kind_; }

private:
    Kind kind_;
};

/// If this process is root and the store in DIR belongs to another user,
/// becomes that user for good (its primary group, no other groups), so that
/// root never opens a file the owner can write: a compromised owner (the
/// manager) cannot reach root through the writers' lock file. Returns the
/// owner's name then, else nullopt (DIR missing, or owned by root). Throws
/// StoreError: access if it cannot.
std::optional<std::string> become_store_owner(const std::string &dir);

/// Runs `work` as the owner of the store directory DIR (`owner`; `dir_id`:
/// DIR as the caller found it), with DIR open, in this process if it is the
/// owner, else (root for another user) in a child that became the owner for
/// good, so that root never opens a file the owner could have written, nor
/// makes one it would then hand over. `work` reports what it changed with
/// `note`, which adds to `made`. Throws StoreError (access: DIR replaced
/// meanwhile, or cannot be reached as the owner), and what `work` throws.
void as_owner(const std::string &dir, uid_t owner, const struct stat &dir_id,
              const std::function<void(int dir_fd, const std::function<void(std::string)> &note)> &work,
              std::vector<std::string> &made);

/// The user become_store_owner() would become: the owner of DIR if this
/// process is root and DIR belongs to another user; else nullopt. What root
/// must do as root (start the nobody child that reads the usage store), it
/// does before.
std::optional<uid_t> store_owner_to_become(const std::string &dir);

/// The group httpd's children run as, for the `cptoken init --group` that
/// errors suggest: the module sets it. Unset (the tool, which cannot know
/// httpd's group), errors never name the caller's group: giving the store to
/// it would lock httpd out.
void set_httpd_group(gid_t gid) noexcept;

/// What is missing for DIR to be a store, said as opening it would say it
/// (with the command that makes it); nullopt if DIR holds tokens.mdb. For
/// httpd's configtest, which warns without opening anything.
std::optional<std::string> missing_store(const std::string &dir);

enum class InitOutcome { created, repaired, already_present };

/// Makes DIR a token store owned by `owner` (else the caller), with group
/// `group`: the directory 02750, tokens.mdb and its commit record 0640, its
/// lock file 0600, both usage files 0660, every one the owner's, so that the
/// group can read tokens and write usage, and others get nothing. A new or
/// empty directory gets both environments (group: `group`, else the
/// caller's) and created. An existing store is repaired instead: owner (the
/// directory's own unless `owner` is given), group (`group`, else the
/// directory's own) and modes set as above, one line per change ("PATH:
/// group root -> www-data") appended to `changes`; repaired, or
/// already_present if nothing differed. A store made by mod_cptoken 0.11 or
/// earlier is converted (its commit record made); a token store lock file
/// that is not the owner's alone is removed unopened, never handed over.
/// Root making or repairing a store for another user does the LMDB work in
/// a child that became that user (run_as_user), and only changes owners and
/// modes itself. Symlinks are never followed. Throws StoreError (access) if
/// DIR is a symbolic link, is not a store and belongs to another user than
/// the caller and the owner, holds other files and no store, or holds a
/// store file that is a symlink, not a regular file or hard-linked; if the
/// owner is not the caller and either the caller is not root or the owner
/// (not root) is in the group; and on any system error.
InitOutcome init_store(const std::string &dir, std::optional<gid_t> group, std::optional<uid_t> owner,
                       std::vector<std::string> *changes = nullptr);
/// init_store() for the caller, or the existing store's owner.
InitOutcome init_store(const std::string &dir, std::optional<gid_t> group,
                       std::vector<std::string> *changes = nullptr);

/// How a process opens a store.
enum class Access {
    /// Reads only. The token store without its lock file (MDB_NOLOCK), each
    /// read checked against the commit record: httpd's children and anyone
    /// but the store's owner. The usage store with its lock file, which
    /// only httpd's group (and root's nobody child) opens.
    read_only,
    /// The store's owner (or the usage store's writers): reads and writes
    /// through LMDB's lock file, which only they can open.
    read_write,
};

struct StoredToken {
    Digest digest;
    TokenRecord record;
};

/// What edit() changes; unset fields stay as they are.
struct TokenChanges {
    std::optional<std::string> name;
    std::optional<Seconds> expires;  ///< 0: never
    std::optional<std::vector<Network>> allowed_ips;
    std::optional<std::vector<std::string>> scopes;  ///< empty: any path
    std::optional<bool> read_only;
};

/// What rotate() did.
struct Rotation {
    StoredToken token;       ///< the new current token
    Seconds grace_ends = 0;  ///< when the replaced token stops working; 0: it stopped at once
};

namespace lmdb {
class Env;
class Txn;
}
class TokenBatch;

/// One change to the token store's data, as it crosses hosts (issue 24: a
/// store that mirrors etcd). Values are carried as LMDB holds them, header
/// and all, so that every mirror holds the same bytes.
struct StoreWrite {
    enum class Database : std::uint8_t { tokens, names };
    Database database = Database::tokens;
    std::string key;                   ///< tokens: the 64-byte digest; names: user '\0' name
    std::optional<std::string> value;  ///< the stored value (Lightning Stream header, payload); nullopt: key deleted
};

/// Where a store that mirrors etcd stands: written by the mirror agent in
/// the same transaction as the data it describes (meta database).
struct MirrorPoint {
    std::int64_t applied_revision = 0;  ///< the highest etcd mod_revision applied
    std::int64_t gen_revision = 0;      ///< mod_revision of the generation key, which every admin write puts
    std::string cluster_id;             ///< etcd's cluster id (decimal)
};

/// Sees one key and its value of the tokens or names database (TokenStore::mirror_snapshot()).
using EntryVisitor = std::function<void(StoreWrite::Database, std::string_view key, std::string_view value)>;

/// Whether `write` holds what the store itself would write under its key (a
/// delete always does): what apply_mirror() keeps; the rest it refuses.
/// Never throws.
bool is_store_value(const StoreWrite &write);

/// What apply_mirror() did.
struct MirrorApplied {
    std::size_t changed = 0;  ///< keys whose stored value changed (added, replaced, deleted)
    std::size_t refused = 0;  ///< values that were not a store's (bad key, header or record): their keys were deleted
};

/// Where a store in cluster mode sends its writes (etcd): TokenStore makes
/// each change in a write transaction it never commits, and hands what the
/// change wrote to publish(). tokens.mdb is then written by the mirror
/// agent alone.
class RemoteWriter {
public:
    virtual ~RemoteWriter() = default;
    enum class Outcome { committed, conflict };
    /// Makes `writes` happen elsewhere, all or none, as a change made on the
    /// store as of `base`, and waits until this store's mirror holds it.
    /// Returns conflict if another change came first (once the mirror holds
    /// that one: the change is then made again). Throws StoreError.
    virtual Outcome publish(const std::vector<StoreWrite> &writes, const MirrorPoint &base) = 0;
};

struct PruneResult {
    std::size_t expired_removed = 0;
    std::size_t tombstones_dropped = 0;
};

/// read_write if this process owns the store in DIR (it may use the lock
/// file, whose reader slots keep a long read whole), else read_only.
Access access_for_reading(const std::string &dir);

/// The token store. Every call is one LMDB transaction: a write either
/// happens whole or not at all. Thread-safe for reads.
///
/// Every read sees one whole snapshot, the newest committed when it began.
/// A reader without the lock file (Access::read_only) checks that against
/// the commit record, and makes a read again that a commit overlapped; it
/// throws StoreError (inconsistent) if it cannot within
/// StoreSettings::commit_in_flight_wait, or if tokens.mdb is older than its
/// commit record, with a message that says how to recover.
class TokenStore {
public:
    /// Opens DIR/tokens.mdb and its commit record. Read-write opens (the
    /// owner's) clear stale reader slots and publish the newest commit.
    /// find() caches up to `cache_slots` records (see find()). `map_size` is
    /// the address space reserved for tokens.mdb: smaller only in tests that
    /// fill it (the tool and the module keep StoreSettings::map_size).
    /// Throws StoreError: missing (also the commit record: a store made by
    /// 0.11 or earlier), access (also for a store file that is a symlink or
    /// not a regular file, a DIR its group or others can write, a read-only
    /// opener other than root that could write tokens.mdb, its commit record
    /// or DIR without owning it, and a writer whose lock file anyone else can
    /// open), corrupt (also for a schema newer than this code), full,
    /// inconsistent.
    TokenStore(const std::string &dir, Access access,
               std::size_t cache_slots = StoreSettings::record_cache_slots,
               std::size_t map_size = StoreSettings::map_size);
    ~TokenStore();
    TokenStore(const TokenStore &) = delete;
    TokenStore &operator=(const TokenStore &) = delete;

    /// The live record stored under `digest`; nullopt if none or revoked.
    /// Always as of the latest committed write, by any process: a record
    /// found before is reused only while the store's last transaction id is
    /// the one it was read in. Throws StoreError (corrupt) if the stored
    /// record cannot be decoded.
    std::optional<TokenRecord> find(const Digest &digest) const;

    /// As find(token_digest(token)), setting `digest` to that digest, with
    /// the same rule for what is reused. A token found before is known by a
    /// keyed 128-bit tag (SipHash-2-4, under a key this store drew at random
    /// when it was opened) and its record reused while the store's last
    /// transaction id is the one it was read in, without its SHA-512 digest
    /// being computed again. Used on every request. Sets `record` (nullopt:
    /// none) rather than returning it: copied once, from the cache to the
    /// caller's verdict.
    void find_token(std::string_view token, Digest &digest, std::optional<TokenRecord> &record) const;

    /// The live token USER has under NAME (the current one, not a rotated
    /// one); nullopt if none.
    std::optional<StoredToken> find_by_name(std::string_view user, std::string_view name) const;

    /// Live tokens of `user` (all users if empty), sorted by user, then name;
    /// each current token is followed by its rotated tokens still live
    /// (rotated_at set), newest first.
    std::vector<StoredToken> list(std::string_view user = {}) const;

    /// How many records the tokens database holds: the live tokens, and the
    /// tombstones prune has not dropped yet. Constant time (for sizing).
    std::size_t stored_count() const;

    /// Adds a token. Throws StoreError: duplicate (name taken, or the digest
    /// is already in use).
    void add(const Digest &digest, const TokenRecord &record);

    /// Adds many tokens in one transaction: all or none. Throws StoreError:
    /// duplicate (as add(), also within `tokens`), full (more than one LMDB
    /// transaction holds: about a million tokens).
    void add_many(const std::vector<StoredToken> &tokens);

    /// Changes a token in place (the digest stays). Returns the new record.
    /// A new name is given to its rotated tokens too; expiry, allowlist,
    /// scopes and read-only change for the current token only. Throws StoreError: not_found,
    /// duplicate (new name taken).
    TokenRecord edit(std::string_view user, std::string_view name, const TokenChanges &changes);

    /// Replaces USER's token NAME by the token of `new_digest`, which takes
    /// over its name, expiry, allowlist, service, scopes, read-only flag,
    /// limits and later fields, created at `now`; not where it was imported
    /// from (it was made here: import-cpanel --sync leaves it alone).
    /// The old token keeps working until now + `grace` (or its own expiry if
    /// sooner), then is refused; with `grace` 0 it is revoked at once. Throws
    /// StoreError: not_found (no such token, or it has expired), duplicate
    /// (the digest is in use), full (more than max_predecessors rotated
    /// tokens would still be in their grace window).
    Rotation rotate(std::string_view user, std::string_view name, const Digest &new_digest, Seconds now,
                    Seconds grace);

    /// Revokes one token and its rotated tokens (writes tombstones). Throws
    /// StoreError: not_found.
    void revoke(std::string_view user, std::string_view name);

    /// Revokes every token of `user`, rotated ones included; returns how many.
    std::size_t revoke_all(std::string_view user);

    /// Revokes tokens expired at `now` (a rotated token whose grace has
    /// ended; a current token with all its rotated ones) and drops tombstones
    /// written before now - StoreSettings::tombstone_retention_seconds.
    PruneResult prune(Seconds now);

    /// Runs `change` on one write transaction (a TokenBatch), which sees the
    /// store as it is once the writer lock is held, and commits it if
    /// `change` returns true; if it returns false (a dry run) or throws,
    /// nothing is written. For changes that must be decided and made in one
    /// step (cptoken import-cpanel). Throws what `change` throws, and
    /// StoreError as the other writes do.
    void batch(const std::function<bool(TokenBatch &batch)> &change);

    /// Without it, a write to a store that mirrors etcd (mirror_point() set)
    /// is refused (StoreError: access): only its agent writes it.
    ///
    /// From now on, every write (add, edit, rotate, revoke, prune, batch...)
    /// goes to `writer` instead of tokens.mdb (cluster mode): made on this
    /// store, never committed here, and made again on a conflict, up to
    /// `max_conflicts` times. Throws from a write: StoreError (access) if the
    /// store is no mirror yet (mirror_point() is empty), (inconsistent) if
    /// every attempt met a conflict, and what `writer` throws.
    void write_through(std::shared_ptr<RemoteWriter> writer, unsigned max_conflicts = 20);

    /// Where this store's mirror of etcd stands; nullopt if it is no mirror.
    /// Throws StoreError (corrupt) for a broken meta value.
    std::optional<MirrorPoint> mirror_point() const;

    /// The mirror agent's write: `writes` as they are (in order: of two
    /// writes of one key the last one stays), and `point`, in one
    /// transaction; without a point the store's stays as it is (changes
    /// applied ahead of a full read that is not over). With `whole` (a full
    /// read of etcd), every key of the tokens and names databases not in
    /// `writes` is deleted too. Only what differs is written, and nothing at
    /// all (no commit) when nothing differs: ten full reads leave the file
    /// the size one did, and readers' cached records stay.
    /// A value that is not a store's is not stored: its key is deleted
    /// (a token etcd holds badly is refused, never kept as it was). Throws
    /// StoreError as the other writes do.
    MirrorApplied apply_mirror(const std::vector<StoreWrite> &writes, const std::optional<MirrorPoint> &point,
                               bool whole);

    /// Every key and value of the tokens and names databases, as StoreWrite
    /// puts (tombstones too), for copying the store to etcd (cptoken push).
    std::vector<StoreWrite> all_writes() const;

    /// mirror_point(), and every key and value all_writes() would return
    /// handed to `visit` one at a time, from one snapshot: what a
    /// reconciliation compares with etcd while the agent goes on writing,
    /// without a copy of the store. Only on a store opened read_write (the
    /// agent's): each key is seen once. Throws StoreError, std::logic_error
    /// on a read-only store, and what `visit` throws.
    std::optional<MirrorPoint> mirror_snapshot(const EntryVisitor &visit) const;

    /// Checks the data file this store has open against what LMDB made of
    /// it: not shorter than its newest snapshot needs (and, without the lock
    /// file, not older than its commit record). Forgets every cached record if the file
    /// changed since the last call (a write, or an overwrite in place that
    /// kept the transaction id). For long-lived readers, once in a while.
    /// Throws StoreError (corrupt) if the file was changed outside LMDB.
    void recheck_file() const;

    /// Calls `notice` once, with a message for the admin, if a write waits
    /// longer than StoreSettings::lock_wait_notice_after for the writer lock
    /// (held by another of the owner's processes).
    void set_lock_wait_notice(std::function<void(const std::string &message)> notice);

    /// Device and inode of the data file this store has open (which may no
    /// longer be the file at its path).
    std::pair<dev_t, ino_t> data_file_id() const;

    /// How many reads were made again because a commit overlapped them
    /// (readers without the lock file); for tests and benchmarks.
    std::uint64_t read_retries() const noexcept;

    /// Writes a consistent, compacted copy of the token store to `file`,
    /// which must not exist: the newest snapshot, under the writer lock
    /// (writes wait; readers do not). Only for the owner (read_write).
    /// Throws StoreError: access (`file` cannot be made).
    void backup(const std::string &file);

    struct Impl;

private:
    // find(), also giving the snapshot the record was read at; `by_digest`:
    // look in the cache under the digest first, and keep what the tree gave
    // there. find_token() keys its entries by the token's tag instead, so
    // after its own miss it goes straight to the tree.
    // The record goes straight into `record` (nullopt if there is none): a
    // TokenRecord is four strings and four vectors, and each move of one on
    // the way out cost about 200 instructions on a token's first use.
    void find_at(const Digest &digest, std::size_t &snapshot, bool by_digest, std::optional<TokenRecord> &record) const;

    std::unique_ptr<Impl> impl_;
};

/// The write transaction TokenStore::batch() gives its callback, valid only
/// inside it. Reads see the writes made before them in the same batch.
class TokenBatch {
public:
    /// As TokenStore::find, in this transaction.
    std::optional<TokenRecord> find(const Digest &digest) const;

    /// As find(token_digest(token)), setting `digest` to that digest, with
    /// the same rule for what is reused. A token found before is known by a
    /// keyed 128-bit tag (SipHash-2-4, under a key this store drew at random
    /// when it was opened) and its record reused while the store's last
    /// transaction id is the one it was read in, without its SHA-512 digest
    /// being computed again. Used on every request. Sets `record` (nullopt:
    /// none) rather than returning it: copied once, from the cache to the
    /// caller's verdict.
    void find_token(std::string_view token, Digest &digest, std::optional<TokenRecord> &record) const;
    /// As TokenStore::find_by_name, in this transaction.
    std::optional<StoredToken> find_by_name(std::string_view user, std::string_view name) const;
    /// As TokenStore::list, in this transaction.
    std::vector<StoredToken> list(std::string_view user = {}) const;

    /// Writes current tokens (rotated_at 0) under their digests, replacing
    /// any record stored there, and points each one's user and name at it; a
    /// name that one of them had before and no longer has is freed. Tokens of
    /// the set may trade names (a and b swapping theirs). Throws StoreError:
    /// duplicate (a name held by a live token outside `tokens`, or given
    /// twice in it; nothing is written then); std::invalid_argument for a
    /// rotated record.
    void put_many(const std::vector<StoredToken> &tokens);

    /// As TokenStore::revoke (the token and its rotated tokens); returns how
    /// many tokens that was. Throws StoreError: not_found.
    std::size_t revoke(std::string_view user, std::string_view name);

    /// The token store's environment and this batch's write transaction, for
    /// lib/ code that walks its databases value by value (fsck.cpp).
    lmdb::Env &env() const;
    lmdb::Txn &txn() const;

private:
    friend class TokenStore;
    TokenBatch(TokenStore::Impl &impl, lmdb::Txn &txn) : impl_(impl), txn_(txn) {}
    TokenStore::Impl &impl_;
    lmdb::Txn &txn_;
};

/// Refuses the token store open in `env`, read in `txn`, unless this code
/// reads its schema: throws StoreError (corrupt) if meta holds no schema
/// version, an invalid one, or a newer one (naming both and this release).
void check_schema_version(lmdb::Env &env, lmdb::Txn &txn);

}  // namespace cptoken

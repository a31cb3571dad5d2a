// SPDX-License-Identifier: Apache-2.0
// The LMDB environment under both stores: opening one safely, transactions
// that never run on a forged snapshot, and LMDB errors as StoreError. Only
// lib/ includes this header; only lib/ talks to LMDB.
#pragma once

#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "store/commit_record.hpp"
#include "store/lsheader.hpp"
#include "store/store.hpp"
#include "token/timeutil.hpp"

namespace cptoken::lmdb {

/// The name of user `uid` (or "uid N"); thread-safe.
std::string user_name(uid_t uid);
/// The name of group `gid` (or "gid N"); thread-safe.
std::string group_name(gid_t gid);
/// "0640".
std::string mode_text(mode_t mode);
/// The command that (re)makes the store in DIR for httpd's group (set_httpd_group), or with GROUP to fill in.
std::string init_command(const std::string &dir);
/// The directory a store file is in.
std::string dir_of(const std::string &file);
/// DIR/FILE.
inline std::string path_in(const std::string &dir, const char *file) { return dir + "/" + file; }

/// Throw StoreError: access with `message`.
[[noreturn]] void refuse(const std::string &message);
/// Throw StoreError: access. Opening the token store to write (only cptoken
/// does): root or the store's owner is needed, and this process is neither.
/// Else: this process's user and group, the store's group and the command
/// that gives the store to that group.
[[noreturn]] void permission_denied(const std::string &file, Access access);
/// Throw StoreError: missing, with the command that makes the store.
[[noreturn]] void no_store(const std::string &dir);
/// Throw StoreError of the kind an errno or LMDB code `rc` means: `what`, then what to do for a full
/// filesystem, quota, map or transaction and a read-only filesystem (the one place that says it), else the code's text.
[[noreturn]] void fail(int rc, const std::string &what);
/// Throw StoreError: access, for a store file that is a symlink or not a regular file.
[[noreturn]] void refuse_odd_file(const std::string &path, mode_t mode);
/// Throws unless rc is MDB_SUCCESS; the message, `what` followed by
/// `subject` (usually a file), is only put together then: some calls run on
/// every request.
void check(int rc, std::string_view what, std::string_view subject = {});
/// Throw StoreError: corrupt.
[[noreturn]] void corrupt(const std::string &what);
/// Refuses an LMDB file whose meta pages name a page size LMDB never writes
/// (a power of two from 512 to 65536): liblmdb divides by it when it opens
/// the file, and a damaged 0 kills the process (SIGFPE). A file missing,
/// unreadable, too short or without LMDB's magic is left to mdb_env_open,
/// which says so. Throws StoreError: corrupt.
void check_meta_page_sizes(const std::string &file);

/// Routes `env`'s assertions to the guard of Txn::read() (Env does it for
/// every environment): outside a guarded read they abort the process, as
/// liblmdb's own do.
void guard_assertions(MDB_env *env) noexcept;

inline MDB_val as_val(std::string_view bytes) { return {bytes.size(), const_cast<char *>(bytes.data())}; }
inline MDB_val as_val(const Digest &digest) { return {digest.size(), const_cast<unsigned char *>(digest.data())}; }
inline std::string_view as_view(const MDB_val &val) { return {static_cast<const char *>(val.mv_data), val.mv_size}; }

/// Tombstones written before this (in ns) may go: every host sharing the
/// store through Lightning Stream has seen them
/// (StoreSettings::tombstone_retention_seconds before `now`).
inline std::uint64_t tombstone_cutoff_ns(Seconds now) {
    const Seconds cutoff = now - StoreSettings::tombstone_retention_seconds;
    return cutoff > 0 ? static_cast<std::uint64_t>(cutoff) * 1000000000u : 0;
}


// Read transactions kept for reuse: renewing a reset transaction costs a
// fraction of beginning a new one (no allocation, no reader-slot search),
// which matters at one lookup per request. Needs MDB_NOTLS, so that a reset
// transaction keeps its own reader slot and any thread may renew it.
class ReaderPool {
public:
    ReaderPool() = default;
    ReaderPool(const ReaderPool &) = delete;
    ReaderPool &operator=(const ReaderPool &) = delete;
    ~ReaderPool() {
        for (MDB_txn *txn : idle_) mdb_txn_abort(txn);
    }
    // A renewed transaction, or nullptr if none is idle.
    MDB_txn *take() {
        MDB_txn *txn = nullptr;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (idle_.empty()) return nullptr;
            txn = idle_.back();
            idle_.pop_back();
        }
        if (mdb_txn_renew(txn) == MDB_SUCCESS) return txn;
        mdb_txn_abort(txn);
        return nullptr;
    }
    void give_back(MDB_txn *txn) {
        mdb_txn_reset(txn);
        std::lock_guard<std::mutex> lock(mutex_);
        idle_.push_back(txn);
    }

private:
    std::mutex mutex_;
    std::vector<MDB_txn *> idle_;
};

// A transaction that aborts unless committed (a read transaction from a
// pool goes back to it instead). Reads without the lock file are checked by
// the caller against the commit record (TokenStore; docs/store.md).
class Txn {
public:
    Txn(MDB_env *env, bool write, const std::string &file, ReaderPool *pool = nullptr)
        : pool_(write ? nullptr : pool) {
        if (pool_) txn_ = pool_->take();
        if (!txn_) check(mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn_), "cannot begin a transaction on ", file);
    }
    ~Txn() {
        if (!txn_) return;
        if (pool_ && !broken_)
            pool_->give_back(txn_);
        else
            mdb_txn_abort(txn_);
    }
    Txn(const Txn &) = delete;
    Txn &operator=(const Txn &) = delete;
    /// Commits; throws StoreError (corrupt) without committing if a read in
    /// it met a broken page.
    void commit(const std::string &file) {
        if (broken_) {
            mdb_txn_abort(std::exchange(txn_, nullptr));
            corrupt("a page of " + file + " is broken; nothing was written");
        }
        const int rc = mdb_txn_commit(txn_);
        txn_ = nullptr;
        check(rc, "cannot commit to ", file);
    }
    /// mdb_get, and mdb_cursor_get on a cursor of this transaction, with
    /// liblmdb's assertions turned into an error: a page that fails one
    /// (rewritten under a reader without the lock file, docs/store.md, or
    /// damaged) returns MDB_CORRUPTED instead of aborting the process.
    /// Otherwise as mdb_get and mdb_cursor_get. A transaction that met a
    /// broken page is aborted at the end, never pooled: liblmdb may have left
    /// it half updated.
    int read(MDB_dbi dbi, MDB_val *key, MDB_val *data) noexcept;
    int read(MDB_cursor *cursor, MDB_val *key, MDB_val *data, MDB_cursor_op op) noexcept;
    MDB_txn *get() const { return txn_; }
    /// The snapshot's transaction id (of a write transaction: the one it will commit as).
    std::size_t id() const { return mdb_txn_id(txn_); }

private:
    int noted(int rc) noexcept {
        if (rc == MDB_CORRUPTED) broken_ = true;
        return rc;
    }

    ReaderPool *pool_ = nullptr;
    MDB_txn *txn_ = nullptr;
    bool broken_ = false;
};

// The directory of a store file (`file`, opened for `access`): it must be a
// directory no one but its owner can write, so that nobody else can swap
// the store's files between a check and an open. Throws StoreError:
// missing, access.
inline void check_store_dir(const std::string &file, Access access) {
    const std::string dir = dir_of(file);
    struct stat dir_stat{};
    if (::stat(dir.c_str(), &dir_stat) != 0) {
        const int err = errno;
        if (err == ENOENT) no_store(dir);
        if (err == EACCES) permission_denied(file, access);
        fail(err, "cannot open " + dir);
    }
    if (!S_ISDIR(dir_stat.st_mode)) refuse(dir + " is not a directory");
    if (dir_stat.st_mode & (S_IWGRP | S_IWOTH))
        refuse(dir + " can be written by " + ((dir_stat.st_mode & S_IWOTH) ? "anyone" : "its group") + " (mode " +
               mode_text(dir_stat.st_mode) +
               "), who could replace the store's files; make it 02750 with: cptoken --db " + dir + " init");
}

// One LMDB environment (one .mdb file with its -lock file) and its databases.
class Env {
public:
    /// `extra_flags`: more mdb_env_open flags (MDB_NOSYNC for the usage store).
    /// `map_size`: the address space reserved (smaller only in tests that fill it).
    Env(const std::string &file, Access access, unsigned mode_if_created, bool must_exist, unsigned extra_flags = 0,
        std::size_t map_size = StoreSettings::map_size)
        : file_(file) {
        check_files(file, access, must_exist);
        check_meta_page_sizes(file);
        check(mdb_env_create(&env_), "cannot create an LMDB environment");
        guard_assertions(env_);
        check(mdb_env_set_mapsize(env_, map_size), "cannot set the map size of ", file);
        check(mdb_env_set_maxreaders(env_, StoreSettings::max_readers), "cannot set max readers of ", file);
        check(mdb_env_set_maxdbs(env_, 8), "cannot set max databases of ", file);
        // A reader of the token store never opens its lock file: that is the
        // owner's alone. The usage store's lock file is httpd's group's, and
        // only processes of that group open it, readers too (a reader
        // without it could read pages httpd's children are rewriting).
        lock_free_ = access == Access::read_only && file.ends_with(std::string("/") + token_store_file);
        const unsigned flags = MDB_NOSUBDIR | MDB_NOTLS | (access == Access::read_only ? MDB_RDONLY : 0) |
                               (lock_free_ ? MDB_NOLOCK : 0) | extra_flags;
        const int rc = mdb_env_open(env_, file.c_str(), flags, mode_if_created);
        if (rc != MDB_SUCCESS) {
            mdb_env_close(env_);
            env_ = nullptr;
            if (rc == EACCES) permission_denied(file, access);
            fail(rc, "cannot open " + file);
        }
        // Slots of killed processes would pin old pages and fill the table.
        if (access == Access::read_write) {
            int dead = 0;
            mdb_reader_check(env_, &dead);
        }
        MDB_stat env_stat{};
        check(mdb_env_stat(env_, &env_stat), "cannot read ", file);
        page_size_ = static_cast<off_t>(env_stat.ms_psize);
    }

    /// The data file as it is now, after checking that it is not shorter
    /// than its newest snapshot needs: the one whose id is `snapshot`, if
    /// given (called in a read of it without the lock file, where another
    /// meta page may be in the middle of a commit). LMDB never
    /// shrinks it, and reading past its end through the map kills the
    /// process (SIGBUS): a file truncated or overwritten in place is refused
    /// here, before any read. Throws StoreError: corrupt.
    struct stat check_size(std::optional<std::size_t> snapshot = std::nullopt) const {
        struct stat st = check_header_pages();
        mdb_filehandle_t fd = -1;
        mdb_env_get_fd(env_, &fd);
        const std::string changed_in_place = file_ + " was changed in place, not through LMDB: ";
        // The newest snapshot first, then the size again: a commit between
        // the two only grows the file (its pages are written before its meta
        // page), while the other order would take that commit's snapshot for
        // one the file is too short for.
        MDB_envinfo info{};
        mdb_env_info(env_, &info);
        if (::fstat(fd, &st) != 0) fail(errno, "cannot stat " + file_);
        // Read without the lock file, a meta page may be in the middle of
        // being written: its last page is only believed from the meta page
        // of this snapshot, which no commit is writing.
        if (snapshot && info.me_last_txnid != *snapshot) return st;
        // In pages, not bytes: a meta page written by someone else may name
        // any page number, and the product would overflow.
        if (info.me_last_pgno >= static_cast<std::uint64_t>(st.st_size / page_size_))
            corrupt(changed_in_place + "it is shorter than its newest snapshot needs (truncated?)");
        return st;
    }
    /// The data file as it is now, after checking that it holds its two meta
    /// pages, which every transaction reads first (through the map: a file
    /// cut shorter would kill the process with SIGBUS). Throws StoreError: corrupt.
    struct stat check_header_pages() const {
        mdb_filehandle_t fd = -1;
        struct stat st{};
        if (mdb_env_get_fd(env_, &fd) != MDB_SUCCESS || ::fstat(fd, &st) != 0) fail(errno, "cannot stat " + file_);
        if (st.st_size < 2 * page_size_)
            corrupt(file_ + " was changed in place, not through LMDB: it is shorter than its own header pages");
        return st;
    }
    /// True for a reader without the lock file (Access::read_only).
    bool lock_free() const { return lock_free_; }
    /// Writes what the last commits left in the system's buffers (an
    /// environment opened with MDB_NOMETASYNC: the meta page) to disk.
    /// Throws StoreError: access.
    void sync() const { check(mdb_env_sync(env_, 1), "cannot write ", file_); }
    ~Env() {
        if (env_) mdb_env_close(env_);
    }
    Env(const Env &) = delete;
    Env &operator=(const Env &) = delete;

    MDB_env *get() const { return env_; }
    const std::string &file() const { return file_; }

    /// Device and inode of the data file open here (which may no longer be
    /// the file at its path). Throws StoreError: access.
    std::pair<dev_t, ino_t> file_id() const {
        mdb_filehandle_t fd = -1;
        struct stat st{};
        if (mdb_env_get_fd(env_, &fd) != MDB_SUCCESS || ::fstat(fd, &st) != 0) fail(errno, "cannot stat " + file_);
        return {st.st_dev, st.st_ino};
    }

    // Opens (or, in a write transaction with create, creates) a named database.
    MDB_dbi open_db(Txn &txn, const char *name, bool create) {
        MDB_dbi dbi = 0;
        const int rc = mdb_dbi_open(txn.get(), name, create ? MDB_CREATE : 0, &dbi);
        if (rc == MDB_NOTFOUND) corrupt(file_ + " has no '" + name + "' database: not a cptoken store");
        check(rc, "cannot open database '" + std::string(name) + "' in ", file_);
        return dbi;
    }

    // The stored value with its header (tombstones too); nullopt if absent.
    std::optional<LsValue> get_value(Txn &txn, MDB_dbi dbi, MDB_val key) const {
        MDB_val value;
        const int rc = txn.read(dbi, &key, &value);
        if (rc == MDB_NOTFOUND) return std::nullopt;
        check(rc, "cannot read ", file_);
        const auto decoded = ls_decode(as_view(value));
        if (!decoded) corrupt("a value in " + file_ + " has a broken header");
        return decoded;
    }

    // The payload of a live value; nullopt if absent or a tombstone.
    std::optional<std::string_view> get_live(Txn &txn, MDB_dbi dbi, MDB_val key) const {
        const auto value = get_value(txn, dbi, key);
        if (!value || value->deleted()) return std::nullopt;
        return value->payload;
    }

    // Stamped now, or just after the value it replaces if that one is
    // stamped later: where hosts share a store, the newer stamp wins a merge,
    // so a revoke made on a host whose clock is behind must still beat the
    // create it revokes.
    void put(Txn &txn, MDB_dbi dbi, MDB_val key, std::string_view payload, std::uint8_t flags = 0) {
        std::uint64_t stamp = static_cast<std::uint64_t>(now_nanoseconds());
        MDB_val replaced;
        if (txn.read(dbi, &key, &replaced) == MDB_SUCCESS) {  // a header that does not decode: stamp now
            const auto header = ls_decode(as_view(replaced));
            if (header && header->timestamp_ns >= stamp) stamp = header->timestamp_ns + 1;
        }
        const std::string stored = ls_encode(stamp, mdb_txn_id(txn.get()), flags, payload);
        MDB_val value = as_val(stored);
        check(mdb_put(txn.get(), dbi, &key, &value, 0), "cannot write to ", file_);
        if (on_write) on_write(dbi, as_view(key), stored);
    }

    // Writes under `key` with `cursor` (of `dbi`, in `txn`): `payload`
    // stamped `timestamp_ns` if the key is absent; otherwise what
    // `merge(stored value, undecoded)` returns, a payload and its stamp, in
    // its place. One walk of the tree either way.
    template <class Merge>
    void put_merged(Txn &txn, MDB_cursor *cursor, MDB_val key, std::string_view payload, std::uint64_t timestamp_ns,
                    Merge merge) {
        const std::string fresh = ls_encode(timestamp_ns, mdb_txn_id(txn.get()), 0, payload);
        MDB_val value = as_val(fresh);
        int rc = mdb_cursor_put(cursor, &key, &value, MDB_NOOVERWRITE);
        if (rc == MDB_KEYEXIST) {  // the cursor is on the key, `value` is the stored one
            const auto [merged, stamp] = merge(as_view(value));
            const std::string stored = ls_encode(stamp, mdb_txn_id(txn.get()), 0, merged);
            MDB_val replacement = as_val(stored);
            rc = mdb_cursor_put(cursor, &key, &replacement, MDB_CURRENT);
        }
        check(rc, "cannot write to ", file_);
    }

    // Calls visit(key, value) for every entry of `dbi` in key order,
    // tombstones and all. Throws StoreError, and what `visit` throws.
    template <class Visit>
    void for_each_entry(Txn &txn, MDB_dbi dbi, Visit visit) const {
        MDB_cursor *cursor = nullptr;
        check(mdb_cursor_open(txn.get(), dbi, &cursor), "cannot read ", file_);
        const std::unique_ptr<MDB_cursor, void (*)(MDB_cursor *)> close(cursor, mdb_cursor_close);
        MDB_val key, value;
        int rc = txn.read(cursor, &key, &value, MDB_FIRST);
        for (; rc == MDB_SUCCESS; rc = txn.read(cursor, &key, &value, MDB_NEXT)) visit(as_view(key), as_view(value));
        if (rc != MDB_NOTFOUND) fail(rc, "cannot read " + file_);
    }

    // Deletes the tombstones in `dbi` written before `cutoff_ns`
    // (tombstone_cutoff_ns()); returns how many.
    std::size_t drop_tombstones(Txn &txn, MDB_dbi dbi, std::uint64_t cutoff_ns) {
        std::vector<std::string> keys;
        for_each_entry(txn, dbi, [&](std::string_view key, std::string_view value) {
            const auto decoded = ls_decode(value);
            if (decoded && decoded->deleted() && decoded->timestamp_ns < cutoff_ns) keys.emplace_back(key);
        });
        for (const std::string &stale : keys) {
            MDB_val k = as_val(stale);
            check(mdb_del(txn.get(), dbi, &k, nullptr), "cannot delete from ", file_);
            if (on_write) on_write(dbi, stale, std::nullopt);
        }
        return keys.size();
    }

    /// When set, told every key put() and drop_tombstones() write (the value
    /// stored, or nullopt for a delete): a store in cluster mode sends them
    /// to etcd instead of committing them.
    std::function<void(MDB_dbi dbi, std::string_view key, std::optional<std::string_view> value)> on_write;

    // Deletes are tombstones, so that replication can carry them to other hosts.
    void put_tombstone(Txn &txn, MDB_dbi dbi, MDB_val key) { put(txn, dbi, key, {}, ls_flag_deleted); }

private:
    // LMDB opens the data file and FILE-lock by path, following symlinks, and
    // a writer creates and writes the lock file: a link planted there would
    // make root write wherever it points. So both must be regular files (or
    // absent), in a directory no one but its owner can write, so that nobody
    // else can swap them between this check and the open. The directory
    // itself may be reached through a symlink. A reader never opens the lock
    // file (MDB_NOLOCK), so only writers look at it.
    static void check_files(const std::string &file, Access access, bool must_exist) {
        const std::string dir = dir_of(file);
        check_store_dir(file, access);
        const bool tokens = file.ends_with(std::string("/") + token_store_file);
        std::vector<std::string> paths{file};
        if (tokens) paths.push_back(file + commit_record_suffix);
        if (access == Access::read_write || !tokens) paths.push_back(file + "-lock");
        for (const std::string &path : paths) {
            struct stat st{};
            if (::lstat(path.c_str(), &st) != 0) {
                const int err = errno;
                if (err == EACCES) permission_denied(file, access);
                if (err != ENOENT) fail(err, "cannot open " + path);
                if (path == file && must_exist) no_store(dir);
                continue;  // LMDB creates it; only the directory's owner can put anything there meanwhile
            }
            if (!S_ISREG(st.st_mode)) refuse_odd_file(path, st.st_mode);
            if (tokens && path == file + "-lock") refuse_shared_lock_file(path, st);
        }
        if (access == Access::read_only && tokens) refuse_writable_tokens(file, dir);
    }

    // The token store's lock file holds LMDB's process-shared robust
    // mutexes, whose links glibc follows and writes through on unlock: a
    // lock file anyone but its writer can write is a write-what-where in the
    // writer's memory. Stores made by mod_cptoken 0.11 and earlier shared it
    // with httpd's group (their readers took slots there).
    static void refuse_shared_lock_file(const std::string &path, const struct stat &st) {
        if (st.st_uid == ::geteuid() && (st.st_mode & 077) == 0) return;
        refuse(path + " is " + (st.st_uid != ::geteuid() ? "owned by " + user_name(st.st_uid) : "mode " + mode_text(st.st_mode)) +
               ": the token store's lock file must be its writer's alone (0600), or anyone who can write it can "
               "write into this process's memory; a store made by mod_cptoken 0.11 or earlier shares it with "
               "httpd's group: convert the store with: cptoken --db " + dir_of(path) + " init");
    }

    // Only the store's owner writes tokens: a reader (httpd's child) that
    // could write tokens.mdb, its commit record or its directory without
    // owning them means anyone running as that user could change tokens.
    // Root can write everything, so it is not asked.
    static void refuse_writable_tokens(const std::string &file, const std::string &dir) {
        const uid_t me = ::geteuid();
        if (me == 0) return;
        for (const std::string &path : {file, file + commit_record_suffix, dir}) {
            struct stat st{};
            if (::stat(path.c_str(), &st) != 0) continue;  // missing: the open says so
            if (st.st_uid == me || ::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0) continue;
            refuse(path + " can be written by user " + user_name(me) + ", group " + group_name(::getegid()) +
                   ", which only reads tokens: anyone running as that user could change tokens; fix the "
                   "permissions with: cptoken --db " + dir + " init");
        }
    }

    std::string file_;
    MDB_env *env_ = nullptr;
    off_t page_size_ = 4096;  // LMDB's
    bool lock_free_ = false;
};

// While alive, calls `notice` once if it lives longer than
// StoreSettings::lock_wait_notice_after: mdb_txn_begin() blocks on the
// writer lock with no timeout, and a silent hang helps nobody.
class LockWaitNotice {
public:
    LockWaitNotice(const std::function<void(const std::string &)> &notice, const std::string &file) {
        if (!notice) return;
        watcher_ = std::thread([this, notice, file] {
            std::unique_lock<std::mutex> lock(mutex_);
            if (done_changed_.wait_for(lock, StoreSettings::lock_wait_notice_after, [this] { return done_; })) return;
            notice("still waiting for the write lock of " + file + " after " +
                   std::to_string(StoreSettings::lock_wait_notice_after.count()) +
                   " s: another process holds it (another cptoken or the store's owner's; `fuser -v " + file +
                   "-lock` lists who has it open)");
        });
    }
    ~LockWaitNotice() {
        if (!watcher_.joinable()) return;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            done_ = true;
        }
        done_changed_.notify_one();
        watcher_.join();
    }
    LockWaitNotice(const LockWaitNotice &) = delete;
    LockWaitNotice &operator=(const LockWaitNotice &) = delete;

private:
    std::mutex mutex_;
    std::condition_variable done_changed_;
    bool done_ = false;
    std::thread watcher_;
};

}  // namespace cptoken::lmdb

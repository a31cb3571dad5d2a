// SPDX-License-Identifier: Apache-2.0
// A token store that follows its directory: opened on first use, and
// reopened when the files at its path are replaced (a restored backup moved
// into place, a fresh `cptoken init`). For long-running readers (httpd
// children); thread-safe.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/store.hpp"

namespace cptoken {

/// Which file a store's data file at DIR is: device and inode (zero for a
/// missing file). Two differ when the file was replaced.
struct StoreFileIds {
    dev_t data_dev = 0;
    ino_t data_ino = 0;

    /// The file DIR/`data_file` is now.
    static StoreFileIds at(const std::string &dir, const char *data_file);
    bool operator==(const StoreFileIds &) const = default;
};

/// Whom a reader runs as: its user and every group it has.
struct ReaderIdentity {
    uid_t uid = 0;
    std::vector<gid_t> groups;  // the effective group and the supplementary ones
    static ReaderIdentity of_this_process();
};

/// A directory as the kernel resolved a path: its real path and its stat.
struct ResolvedDirectory {
    std::string path;
    struct stat st;
};

/// Called for every entry looked up on the way to a directory: the directory
/// it is in and the entry (lstat, so a symbolic link is itself).
using PathEntryVisitor = std::function<void(const std::string &parent, const struct stat &parent_stat,
                                        const std::string &entry, const struct stat &entry_stat)>;

/// Looks DIR up as the kernel does (relative to the working directory if
/// relative; each component in the directory reached so far, symbolic links
/// expanded in place), calling `visit` for each entry looked up. Returns the
/// directory reached, or nullopt if a component is missing, unreachable or
/// not a directory. Throws StoreError after 40 symbolic links.
std::optional<ResolvedDirectory> resolve_directory(const std::string &dir, const PathEntryVisitor &visit);

/// Throws StoreError (access), naming the path and what to do, if `reader`
/// could change the store in DIR, so that anything running as its user
/// (PHP, CGI, a compromised backend) could make itself a token: DIR,
/// tokens.mdb or its commit record owned by the reader's user (owners need
/// no write bit: they can chmod), or a directory on the way to DIR, symbolic
/// links followed as the kernel does, that the reader's user owns or that
/// one of its groups can write (it could put another store in DIR's place),
/// unless that directory is sticky and the entry in it is not the reader's.
/// A directory anyone can write without the sticky bit is refused whoever
/// the reader is. With `trust_own` (CPTokenTrustOwnStore On: an httpd that
/// runs as the store's owner on purpose), only that last is refused. Root
/// is not asked. A path that cannot be looked at is left to the open, which
/// says what is wrong with it. Mode bits only: ACLs are not read.
void refuse_store_reader_could_change(const std::string &dir, const ReaderIdentity &reader, bool trust_own);

/// Tells, with one ioctl, whether the path to a file in a store directory
/// may lead to another file than when it was watched: an inotify watch on
/// every directory looked up on the way (symbolic links followed) and on the
/// store directory, for entries created, removed or renamed there. The
/// kernel queues the event before rename() returns, so a store directory
/// moved into place, a link pointed elsewhere or a data file renamed over is
/// seen by the very next question. Not seen: a file system mounted over the
/// path (LiveStore's once-a-second check finds that). Each watching process
/// has its own instance (inotify instances are limited per user:
/// fs.inotify.max_user_instances, 128 by default), made by the first
/// watch() and kept until the end: its descriptor never changes meanwhile,
/// so quiet() needs no lock.
class DirectoryWatch {
public:
    DirectoryWatch() = default;
    ~DirectoryWatch();
    DirectoryWatch(const DirectoryWatch &) = delete;
    DirectoryWatch &operator=(const DirectoryWatch &) = delete;

    /// Watches the path to `dir`/`file` from now on instead of what it
    /// watched, forgetting the changes seen so far. False, watching nothing,
    /// if it cannot: no inotify instance or watch left, a component missing
    /// or unreachable, a loop of links.
    bool watch(const std::string &dir, const std::string &file) noexcept;
    /// True only if watching and nothing happened in a watched directory
    /// since watch() or path_changed(); false too if the watch cannot be
    /// read. From any thread, at any time: during a watch() or a
    /// path_changed() it answers for the state before or after it.
    bool quiet() const noexcept;
    /// Reads what happened since watch() or the last call: true if it may
    /// touch the path (an entry on the way, or the file, created, removed or
    /// renamed; a watched directory moved or removed; events lost; the watch
    /// unreadable), false if only other entries of those directories changed
    /// (a state file written beside the store): then quiet() holds again.
    bool path_changed() noexcept;
    /// Whether watch() succeeded last.
    bool watching() const noexcept { return watching_.load(std::memory_order_acquire); }

    // watch() and path_changed() must not overlap (LiveStore calls them
    // under its mutex).

private:
    std::atomic<int> fd_{-1};  // the inotify instance, non-blocking
    std::atomic<bool> watching_{false};
    // Each watch descriptor and the entry names on the way in its directory
    // (a directory looked up in again, after `..` or a link, has several).
    std::vector<std::pair<int, std::string>> entries_;
};

class LiveStore {
public:
    /// Checks the files at most once per this many microseconds.
    static constexpr std::int64_t check_interval_us = 1000000;

    /// Nothing is opened until open_now() or current(). A store that cannot
    /// be opened is tried again at the next check, not on every call (or at
    /// once when another data file appears at the path).
    /// `trust_own_store`: see refuse_store_reader_could_change(), which every
    /// open and every check runs for this process first.
    explicit LiveStore(std::string dir, bool trust_own_store = false);

    /// Opens the store now (in httpd's child_init). Throws StoreError.
    void open_now();

    /// The store to use for one request, at `now_us`, microseconds of a
    /// monotonic clock (monotonic_microseconds(): a wall clock stepped back
    /// would pause the checks). Another data file at the path (a store
    /// directory moved into place) is opened by the very next call, so that
    /// no write made in it is missed (the old store is closed when its last
    /// user lets go): a call asks the DirectoryWatch, and stats the data file
    /// at the path only after a change on the way to it (and watches again),
    /// or on every call while no watch can be set. At most once per
    /// check_interval_us it sets the watch again, stats the path, notices a
    /// store gone (or a file system mounted over it), checks that the open
    /// data file was not changed in place (TokenStore::recheck_file), and
    /// that this process still could not change the store (a chown under a
    /// running httpd).
    /// Throws StoreError if there is no usable store: missing, unreadable,
    /// one this process could change (until that is no longer so),
    /// tokens.mdb replaced without its commit record (older or newer than
    /// it), or changed in place (unsafe with LMDB: move a whole directory
    /// into place instead); the last is refused until the files at the path
    /// are replaced again.
    std::shared_ptr<const TokenStore> current(std::int64_t now_us);

    const std::string &dir() const noexcept { return dir_; }

private:
    void reopen_if_replaced();
    std::shared_ptr<const TokenStore> opened();
    std::shared_ptr<const TokenStore> opened_locked() const;

    const std::string dir_;
    const std::string data_path_;  // dir_/tokens.mdb
    const bool trust_own_store_;
    DirectoryWatch watch_;  // asked without the mutex, set again under it
    std::mutex mutex_;  // guards everything below
    std::shared_ptr<const TokenStore> store_;
    StoreFileIds ids_;  // of the last store opened
    dev_t refused_data_dev_ = 0;  // the data file the last failed check saw
    ino_t refused_data_ino_ = 0;
    std::unique_ptr<StoreError> last_error_;
    std::atomic<std::int64_t> next_check_us_{0};  // read without the mutex
};

}  // namespace cptoken

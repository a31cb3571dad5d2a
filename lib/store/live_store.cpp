// SPDX-License-Identifier: Apache-2.0
#include "store/live_store.hpp"

#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "store/lmdb_env.hpp"

namespace cptoken {
namespace {

using lmdb::group_name;
using lmdb::mode_text;
using lmdb::refuse;
using lmdb::user_name;

const char *const trust_own_hint =
    ", or set CPTokenTrustOwnStore On for an httpd that runs as the store's owner on purpose";

// Refuses if the reader could replace `entry` (whose lstat is `entry_stat`)
// in the directory `parent` (`parent_stat`): the store in DIR would then be
// whatever it put there.
void refuse_replaceable_entry(const std::string &dir, const std::string &parent, const struct stat &parent_stat,
                              const std::string &entry, const struct stat &entry_stat, const ReaderIdentity &reader,
                              bool trust_own) {
    const mode_t mode = parent_stat.st_mode;
    const bool sticky = mode & S_ISVTX;  // then only an entry's owner (and the directory's) may rename it
    const std::string could = ", who could put another store in place of " + dir;
    if ((mode & S_IWOTH) && !sticky)
        refuse(parent + " can be written by anyone (mode " + mode_text(mode) + ")" + could +
               "; make it writable by root only (chmod o-w " + parent + ") or sticky (chmod +t " + parent + ")");
    if (trust_own) return;
    if (parent_stat.st_uid == reader.uid)
        refuse(parent + " belongs to user " + user_name(reader.uid) + ", whom httpd runs as" + could +
               "; give it to root: chown root " + parent + " && chmod go-w " + parent + trust_own_hint);
    const bool group_member =
        std::find(reader.groups.begin(), reader.groups.end(), parent_stat.st_gid) != reader.groups.end();
    const bool group_writes = group_member && (mode & S_IWGRP);
    if (!group_writes && !(mode & S_IWOTH)) return;
    const std::string writer = group_writes ? "group " + group_name(parent_stat.st_gid) + ", whom httpd runs as"
                                            : std::string("anyone");
    if (!sticky)
        refuse(parent + " can be written by " + writer + " (mode " + mode_text(mode) + ")" + could + "; chmod " +
               (group_writes ? "g-w " : "o-w ") + parent + trust_own_hint);
    if (entry_stat.st_uid == reader.uid)
        refuse(entry + " belongs to user " + user_name(reader.uid) + ", whom httpd runs as, in " + parent +
               ", which " + writer + " can write (mode " + mode_text(mode) + ")" + could + "; chown root " + entry +
               trust_own_hint);
}

void refuse_own_file(const std::string &dir, const std::string &path, const struct stat &st,
                     const ReaderIdentity &reader) {
    if (st.st_uid == reader.uid)
        refuse(path + " belongs to user " + user_name(reader.uid) +
               ", whom httpd runs as: anything running as that user could make itself a token; give the store "
               "back to root (chown root " + dir + ", then as root " + lmdb::init_command(dir) +
               ", and check its tokens with cptoken list)" + trust_own_hint);
}

std::vector<std::string> components(std::string_view path) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= path.size()) {
        const std::size_t slash = std::min(path.find('/', start), path.size());
        if (slash > start) out.emplace_back(path.substr(start, slash - start));
        start = slash + 1;
    }
    return out;
}

std::string parent_of(const std::string &dir) {
    const std::size_t slash = dir.rfind('/');
    return slash == 0 || slash == std::string::npos ? "/" : dir.substr(0, slash);
}

std::string joined(const std::string &dir, const std::string &name) { return dir == "/" ? "/" + name : dir + "/" + name; }

}  // namespace

ReaderIdentity ReaderIdentity::of_this_process() {
    ReaderIdentity identity;
    identity.uid = ::geteuid();
    identity.groups.push_back(::getegid());
    const int count = ::getgroups(0, nullptr);
    if (count > 0) {
        std::vector<gid_t> more(static_cast<std::size_t>(count));
        const int got = ::getgroups(count, more.data());
        if (got > 0) identity.groups.insert(identity.groups.end(), more.begin(), more.begin() + got);
    }
    return identity;
}

std::optional<ResolvedDirectory> resolve_directory(const std::string &dir, const PathEntryVisitor &visit) {
    std::string start = dir;
    if (start.empty() || start[0] != '/') {
        char cwd[4096];
        if (!::getcwd(cwd, sizeof cwd)) return std::nullopt;
        start = std::string(cwd) + "/" + dir;
    }
    std::vector<std::string> pending = components(start);
    std::reverse(pending.begin(), pending.end());  // a stack: the next component last
    ResolvedDirectory current{"/", {}};
    if (::stat("/", &current.st) != 0) return std::nullopt;
    int links = 0;
    while (!pending.empty()) {
        const std::string name = std::move(pending.back());
        pending.pop_back();
        if (name == ".") continue;
        if (name == "..") {
            current.path = parent_of(current.path);
            if (::stat(current.path.c_str(), &current.st) != 0) return std::nullopt;
            continue;
        }
        const std::string next = joined(current.path, name);
        struct stat next_stat{};
        if (::lstat(next.c_str(), &next_stat) != 0) return std::nullopt;
        visit(current.path, current.st, next, next_stat);
        if (S_ISLNK(next_stat.st_mode)) {
            if (++links > 40) refuse(dir + ": too many levels of symbolic links");
            std::string target(4096, '\0');
            const ssize_t length = ::readlink(next.c_str(), target.data(), target.size());
            if (length <= 0 || static_cast<std::size_t>(length) >= target.size()) return std::nullopt;
            target.resize(static_cast<std::size_t>(length));
            if (target[0] == '/') {
                current.path = "/";
                if (::stat("/", &current.st) != 0) return std::nullopt;
            }
            std::vector<std::string> more = components(target);
            pending.insert(pending.end(), more.rbegin(), more.rend());
            continue;
        }
        if (!S_ISDIR(next_stat.st_mode)) return std::nullopt;
        current.path = next;
        current.st = next_stat;
    }
    return current;
}

void refuse_store_reader_could_change(const std::string &dir, const ReaderIdentity &reader, bool trust_own) {
    if (reader.uid == 0) return;  // root can change anything anyway; httpd's children never are root
    const auto resolved = resolve_directory(
        dir, [&](const std::string &parent, const struct stat &parent_stat, const std::string &entry,
                 const struct stat &entry_stat) {
            refuse_replaceable_entry(dir, parent, parent_stat, entry, entry_stat, reader, trust_own);
        });
    if (!resolved || trust_own) return;  // a path that cannot be looked at: the open says what is wrong
    // The store itself: the directory (its real path) and the files that hold tokens.
    refuse_own_file(dir, dir, resolved->st, reader);
    const std::string data_path = lmdb::path_in(dir, token_store_file);
    for (const std::string &path : {data_path, data_path + commit_record_suffix}) {
        struct stat st{};
        if (::lstat(path.c_str(), &st) == 0) refuse_own_file(dir, path, st, reader);
    }
}

LiveStore::LiveStore(std::string dir, bool trust_own_store)
    : dir_(std::move(dir)), data_path_(dir_ + "/" + token_store_file), trust_own_store_(trust_own_store) {}

StoreFileIds StoreFileIds::at(const std::string &dir, const char *data_file) {
    StoreFileIds ids;
    struct stat st{};
    if (::stat((dir + "/" + data_file).c_str(), &st) == 0) ids.data_dev = st.st_dev, ids.data_ino = st.st_ino;
    return ids;
}

void LiveStore::open_now() {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
        reopen_if_replaced();
    } catch (const StoreError &e) {
        last_error_ = std::make_unique<StoreError>(e);
        throw;
    }
}

// Called with mutex_ held.
void LiveStore::reopen_if_replaced() {
    try {
        refuse_store_reader_could_change(dir_, ReaderIdentity::of_this_process(), trust_own_store_);
    } catch (const StoreError &) {
        // Closed, and opened again once the check passes (ids_ then differ).
        store_.reset();
        ids_ = StoreFileIds{};
        throw;
    }
    const StoreFileIds now = StoreFileIds::at(dir_, token_store_file);
    if (now == ids_ && ids_.data_ino != 0) {  // still the files opened last
        // Refused after a change in place: until the files are replaced.
        if (!store_) throw *last_error_;
        try {
            store_->recheck_file();
        } catch (const StoreError &e) {
            // A commit not yet published (its writer slow to reach the disk,
            // or killed before publishing, which the owner's next command
            // does) is no change in place: each request's own read decides,
            // and the next check looks again.
            if (e.kind() == StoreError::Kind::inconsistent) return;
            store_.reset();
            throw StoreError(e.kind(), std::string(e.what()) +
                                           "; refusing this store until its directory is replaced (move a whole "
                                           "store directory into place) or httpd restarts");
        }
        return;
    }
    store_.reset();  // the old store closes when its last request lets go
    try {
        store_ = std::make_shared<const TokenStore>(dir_, Access::read_only);
    } catch (...) {
        ids_ = StoreFileIds{};  // the old files are closed: their inode numbers may be reused
        throw;
    }
    // What we opened: the data file by its descriptor.
    const auto [data_dev, data_ino] = store_->data_file_id();
    ids_ = StoreFileIds{data_dev, data_ino};
    store_->recheck_file();  // the state later checks compare with
}

std::shared_ptr<const TokenStore> LiveStore::current(std::int64_t now_us) {
    // Nothing changed on the way to the files, and no check is due: the store
    // opened last. quiet() runs outside the lock; the store is taken under
    // it, so a call that overlaps the handling of a change by another thread
    // waits for that to end and gets what it opened.
    if (now_us < next_check_us_.load(std::memory_order_relaxed) && watch_.quiet()) return opened();
    std::lock_guard<std::mutex> lock(mutex_);
    const bool check_due = now_us >= next_check_us_.load(std::memory_order_relaxed);
    if (!check_due && watch_.watching()) {
        // Another file written beside the store (the mirror agent's state,
        // every second) leaves the path as it was: nothing to look at.
        if (!watch_.path_changed()) return opened_locked();
    }
    // Watch (again) before looking, so that a change made while we look is
    // seen by the next call: at the check (once a second even when quiet: a
    // file system mounted over the path hides the watched directories), and
    // after a change, which may have moved the watched directories away.
    if (check_due || watch_.watching()) watch_.watch(dir_, token_store_file);
    // A data file at the path that is neither the open one nor one that just
    // failed to open is checked now, not at the next interval: a write made
    // in a store directory moved into place (revoke, create) must not be
    // missed by a child still reading the old files.
    struct stat st{};
    const bool data_present = ::stat(data_path_.c_str(), &st) == 0;
    const bool data_replaced = data_present && !(st.st_dev == ids_.data_dev && st.st_ino == ids_.data_ino) &&
                               !(st.st_dev == refused_data_dev_ && st.st_ino == refused_data_ino_);
    if (data_replaced || check_due) {
        next_check_us_.store(now_us + check_interval_us, std::memory_order_relaxed);
        try {
            reopen_if_replaced();
        } catch (const StoreError &e) {
            last_error_ = std::make_unique<StoreError>(e);
            // Not tried again before the next check, unless another file appears.
            if (data_present) refused_data_dev_ = st.st_dev, refused_data_ino_ = st.st_ino;
            throw;
        }
        refused_data_dev_ = 0, refused_data_ino_ = 0;
    }
    return opened_locked();
}

std::shared_ptr<const TokenStore> LiveStore::opened() {
    std::lock_guard<std::mutex> lock(mutex_);
    return opened_locked();
}

// Called with mutex_ held. Until the next check, a store that could not be
// opened is not retried.
std::shared_ptr<const TokenStore> LiveStore::opened_locked() const {
    if (!store_) throw last_error_ ? *last_error_ : StoreError(StoreError::Kind::missing, dir_ + ": not opened");
    return store_;
}

DirectoryWatch::~DirectoryWatch() {
    if (fd_ >= 0) ::close(fd_);
}

bool DirectoryWatch::watch(const std::string &dir, const std::string &file) noexcept {
    // What replaces what the path leads to: an entry created, removed or
    // renamed in a directory on the way, or such a directory moved or removed.
    constexpr std::uint32_t changes =
        IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
    watching_.store(false, std::memory_order_release);
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) {
        fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0) return false;
        fd_.store(fd, std::memory_order_release);
    }
    for (const auto &[wd, name] : entries_) ::inotify_rm_watch(fd, wd);  // twice for some: harmless
    entries_.clear();
    // Forget what was seen: the changes, and the IN_IGNORED of each watch removed.
    alignas(inotify_event) char events[4096];
    while (::read(fd, events, sizeof events) > 0) {
    }
    try {
        bool all_set = true;
        const auto watch_one = [&](const std::string &directory, const std::string &name) {
            const int wd = ::inotify_add_watch(fd, directory.c_str(), changes);
            if (wd < 0) all_set = false;
            else entries_.emplace_back(wd, name);
        };
        const auto resolved = resolve_directory(
            dir, [&](const std::string &parent, const struct stat &, const std::string &entry, const struct stat &) {
                watch_one(parent, entry.substr(entry.rfind('/') + 1));
            });
        if (resolved) watch_one(resolved->path, file);
        if (!resolved || !all_set) return false;  // the watches set stay until the next watch(): quiet() is false
    } catch (...) {  // a loop of links, or no memory: the caller stats
        return false;
    }
    watching_.store(true, std::memory_order_release);
    return true;
}

bool DirectoryWatch::quiet() const noexcept {
    if (!watching_.load(std::memory_order_acquire)) return false;
    int queued = 0;
    return ::ioctl(fd_.load(std::memory_order_relaxed), FIONREAD, &queued) == 0 && queued == 0;
}

bool DirectoryWatch::path_changed() noexcept {
    if (!watching_.load(std::memory_order_acquire)) return true;
    const int fd = fd_.load(std::memory_order_relaxed);
    bool changed = false;
    alignas(inotify_event) char events[4096];
    for (;;) {
        const ssize_t got = ::read(fd, events, sizeof events);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && errno == EAGAIN) return changed;  // all read
        if (got <= 0) return true;                        // cannot tell
        for (ssize_t at = 0; at < got;) {
            const auto *event = reinterpret_cast<const inotify_event *>(events + at);
            at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
            if (changed) continue;  // read the rest all the same: quiet() holds once all is read
            if (event->mask & (IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) ||
                event->len == 0) {
                changed = true;
                continue;
            }
            const std::string_view name(event->name);  // NUL-padded
            for (const auto &[wd, entry] : entries_)
                if (wd == event->wd && entry == name) changed = true;
        }
    }
}

}  // namespace cptoken

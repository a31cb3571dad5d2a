#include "store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <lmdb.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "lsheader.hpp"
#include "record_cache.hpp"

namespace cptoken {
namespace {

constexpr const char *schema_key = "schema_version";

std::string path_in(const std::string &dir, const char *file) { return dir + "/" + file; }

// The names init may find in a directory it takes over.
constexpr const char *store_files[] = {"tokens.mdb", "tokens.mdb-lock", "usage.mdb", "usage.mdb-lock"};

// getpwuid_r/getgrgid_r: httpd children look names up from several threads.
std::string user_name(uid_t uid) {
    char buffer[4096];
    passwd entry{}, *found = nullptr;
    if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found) return found->pw_name;
    return "uid " + std::to_string(uid);
}

std::string group_name(gid_t gid) {
    char buffer[4096];
    group entry{}, *found = nullptr;
    if (::getgrgid_r(gid, &entry, buffer, sizeof buffer, &found) == 0 && found) return found->gr_name;
    return "gid " + std::to_string(gid);
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

// The command that (re)makes the store in DIR for the group httpd runs as.
// Not root: this process is httpd's child, so its group is the one to give;
// root (the tool) cannot know it, and says what to put in.
std::string init_command(const std::string &dir) {
    const std::string command = "cptoken --db " + dir + " init --group ";
    if (::geteuid() != 0) return command + group_name(::getegid());
    return command + "GROUP, GROUP being the group httpd runs as (e.g. www-data)";
}

// The directory a store file is in.
std::string dir_of(const std::string &file) {
    const auto slash = file.rfind('/');
    return slash == std::string::npos ? "." : file.substr(0, slash);
}

[[noreturn]] void refuse(const std::string &message) { throw StoreError(StoreError::Kind::access, message); }

// Permission denied opening FILE: who this process is, the store's group,
// and the command that gives the store to this process's group.
[[noreturn]] void permission_denied(const std::string &file) {
    const std::string dir = dir_of(file);
    std::string message = "cannot open " + file + ": Permission denied (this process runs as user " +
                          user_name(::geteuid()) + ", group " + group_name(::getegid());
    struct stat st{};
    if (::stat(dir.c_str(), &st) == 0) message += "; the store's group is " + group_name(st.st_gid);
    refuse(message + "); give the store to this group with: " + init_command(dir));
}

[[noreturn]] void no_store(const std::string &dir) {
    throw StoreError(StoreError::Kind::missing, "no token store in " + dir + "; create it with: " + init_command(dir));
}

[[noreturn]] void fail(int rc, const std::string &what) {
    StoreError::Kind kind = StoreError::Kind::access;
    switch (rc) {
        case ENOENT: kind = StoreError::Kind::missing; break;
        case MDB_CORRUPTED: case MDB_INVALID: case MDB_VERSION_MISMATCH: case MDB_INCOMPATIBLE:
        case MDB_PAGE_NOTFOUND: case MDB_BAD_DBI: case MDB_PANIC:
            kind = StoreError::Kind::corrupt; break;
        case MDB_READERS_FULL: case MDB_MAP_FULL: case MDB_MAP_RESIZED: case MDB_TXN_FULL:
            kind = StoreError::Kind::full; break;
        default: break;
    }
    throw StoreError(kind, what + ": " + mdb_strerror(rc));
}

// The refusal for a store file that is a symlink or not a regular file.
[[noreturn]] void refuse_odd_file(const std::string &path, mode_t mode) {
    refuse(path + " is " + (S_ISLNK(mode) ? "a symbolic link" : "not a regular file") +
           ": refusing to use it as a store file; remove it, then run: cptoken --db " + dir_of(path) + " init");
}

// Throws unless rc is MDB_SUCCESS; the message, `what` followed by
// `subject` (usually a file), is only put together then: some calls run on
// every request.
void check(int rc, std::string_view what, std::string_view subject = {}) {
    if (rc != MDB_SUCCESS) fail(rc, std::string(what).append(subject));
}

[[noreturn]] void corrupt(const std::string &what) { throw StoreError(StoreError::Kind::corrupt, what); }

MDB_val as_val(std::string_view bytes) { return {bytes.size(), const_cast<char *>(bytes.data())}; }
MDB_val as_val(const Digest &digest) { return {digest.size(), const_cast<unsigned char *>(digest.data())}; }
std::string_view as_view(const MDB_val &val) { return {static_cast<const char *>(val.mv_data), val.mv_size}; }

std::string name_key(std::string_view user, std::string_view name) {
    std::string key(user);
    key.push_back('\0');  // sorts before every name character: list order is by user, then name
    key.append(name);
    return key;
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

// The id of the newest transaction committed to the data file, from its
// meta pages. Readers and writers otherwise take the current snapshot from
// the lock file, which every process of the store's group can write: this is
// the value they cannot forge.
std::size_t newest_committed(MDB_env *env) {
    MDB_envinfo info{};
    mdb_env_info(env, &info);
    return info.me_last_txnid;
}

// Every slot of the reader table is taken: say what is known about them.
[[noreturn]] void readers_full(MDB_env *env, const std::string &file) {
    MDB_envinfo info{};
    mdb_env_info(env, &info);
    throw StoreError(StoreError::Kind::full,
                     "no free reader slot in " + file + "-lock: all " + std::to_string(info.me_maxreaders) +
                         " slots are held by processes that have the store open (httpd children, cptoken, "
                         "Lightning Stream, or any process of the store's group); `mdb_stat -rr -n " + file +
                         "` lists them");
}

// A transaction that aborts unless committed (a read transaction from a
// pool goes back to it instead). It never runs on a snapshot older than the
// data file's newest: see verify_read_snapshot() and verify_write_snapshot().
class Txn {
public:
    Txn(MDB_env *env, bool write, const std::string &file, ReaderPool *pool = nullptr)
        : pool_(write ? nullptr : pool) {
        if (pool_) txn_ = pool_->take();
        if (!txn_) {
            const int rc = mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn_);
            if (rc == MDB_READERS_FULL) readers_full(env, file);
            check(rc, "cannot begin a transaction on ", file);
        }
        try {
            if (write)
                verify_write_snapshot(env, file);
            else
                verify_read_snapshot(env, file);
        } catch (...) {
            mdb_txn_abort(txn_);  // never back to the pool: it may hold a forged snapshot
            txn_ = nullptr;
            throw;
        }
    }
    ~Txn() {
        if (!txn_) return;
        if (pool_)
            pool_->give_back(txn_);
        else
            mdb_txn_abort(txn_);
    }
    Txn(const Txn &) = delete;
    Txn &operator=(const Txn &) = delete;
    void commit(const std::string &file) {
        const int rc = mdb_txn_commit(txn_);
        txn_ = nullptr;
        check(rc, "cannot commit to ", file);
    }
    MDB_txn *get() const { return txn_; }

private:
    // A read transaction takes its snapshot id from the lock file. Between a
    // writer's meta page reaching the data file and the lock file learning
    // of it, a reader legitimately sees the previous snapshot: that is the
    // only mismatch waited out, briefly. Anything else (a lock file changed
    // by hand, a data file overwritten in place) is refused.
    void verify_read_snapshot(MDB_env *env, const std::string &file) {
        const auto deadline = std::chrono::steady_clock::now() + StoreSettings::commit_in_flight_wait;
        auto pause = std::chrono::microseconds(50);
        for (;;) {
            const std::size_t snapshot = mdb_txn_id(txn_), newest = newest_committed(env);
            if (snapshot == newest) return;
            if (snapshot + 1 != newest || std::chrono::steady_clock::now() >= deadline)
                throw StoreError(StoreError::Kind::inconsistent, stale_snapshot_message(file, snapshot, newest));
            mdb_txn_reset(txn_);
            std::this_thread::sleep_for(pause);
            pause = std::min(pause * 2, std::chrono::microseconds(10000));
            check(mdb_txn_renew(txn_), "cannot begin a transaction on ", file);
        }
    }

    // A write transaction holds the writer lock: no commit can be in flight,
    // so it must build on exactly the newest snapshot. Committing on an older
    // one would silently undo every change made since (a revocation).
    void verify_write_snapshot(MDB_env *env, const std::string &file) {
        const std::size_t based_on = mdb_txn_id(txn_) - 1, newest = newest_committed(env);
        if (based_on != newest)
            throw StoreError(StoreError::Kind::inconsistent,
                             stale_snapshot_message(file, based_on, newest) + "; nothing was written");
    }

    static std::string stale_snapshot_message(const std::string &file, std::size_t snapshot, std::size_t newest) {
        return file + "-lock names transaction " + std::to_string(snapshot) + " as the newest, but " + file +
               " holds transaction " + std::to_string(newest) +
               ": the lock file was changed outside LMDB (by a process of the store's group?) or " + file +
               " was overwritten in place; refusing to use an older snapshot. To recover, stop httpd and every "
               "other process that has the store open (`fuser -v " + file + "-lock`), then run `cptoken list`: "
               "the first process to open the store rebuilds the lock file from " + file;
    }

    ReaderPool *pool_ = nullptr;
    MDB_txn *txn_ = nullptr;
};

// One LMDB environment (one .mdb file with its -lock file) and its databases.
class Env {
public:
    Env(const std::string &file, Access access, unsigned mode_if_created, bool must_exist) : file_(file) {
        check_files(file, access, must_exist);
        check(mdb_env_create(&env_), "cannot create an LMDB environment");
        check(mdb_env_set_mapsize(env_, StoreSettings::map_size), "cannot set the map size of ", file);
        check(mdb_env_set_maxreaders(env_, StoreSettings::max_readers), "cannot set max readers of ", file);
        check(mdb_env_set_maxdbs(env_, 8), "cannot set max databases of ", file);
        const unsigned flags = MDB_NOSUBDIR | MDB_NOTLS | (access == Access::read_only ? MDB_RDONLY : 0);
        const int rc = mdb_env_open(env_, file.c_str(), flags, mode_if_created);
        if (rc != MDB_SUCCESS) {
            mdb_env_close(env_);
            env_ = nullptr;
            if (rc == EACCES) permission_denied(file);
            fail(rc, "cannot open " + file);
        }
        // Slots of killed processes would pin old pages and fill the table.
        int dead = 0;
        mdb_reader_check(env_, &dead);
    }
    ~Env() {
        if (env_) mdb_env_close(env_);
    }
    Env(const Env &) = delete;
    Env &operator=(const Env &) = delete;

    MDB_env *get() const { return env_; }
    const std::string &file() const { return file_; }

    // Opens (or, in a write transaction with create, creates) a named database.
    MDB_dbi open_db(Txn &txn, const char *name, bool create) {
        MDB_dbi dbi = 0;
        const int rc = mdb_dbi_open(txn.get(), name, create ? MDB_CREATE : 0, &dbi);
        if (rc == MDB_NOTFOUND) corrupt(file_ + " has no '" + name + "' database: not a cptoken store");
        check(rc, "cannot open database '" + std::string(name) + "' in ", file_);
        return dbi;
    }

    // The payload of a live value; nullopt if absent or a tombstone.
    std::optional<std::string_view> get_live(Txn &txn, MDB_dbi dbi, MDB_val key) const {
        MDB_val value;
        const int rc = mdb_get(txn.get(), dbi, &key, &value);
        if (rc == MDB_NOTFOUND) return std::nullopt;
        check(rc, "cannot read ", file_);
        const auto decoded = ls_decode(as_view(value));
        if (!decoded) corrupt("a value in " + file_ + " has a broken header");
        if (decoded->deleted()) return std::nullopt;
        return decoded->payload;
    }

    void put(Txn &txn, MDB_dbi dbi, MDB_val key, std::string_view payload, std::uint8_t flags = 0) {
        const std::string stored = ls_encode(now_nanoseconds(), mdb_txn_id(txn.get()), flags, payload);
        MDB_val value = as_val(stored);
        check(mdb_put(txn.get(), dbi, &key, &value, 0), "cannot write to ", file_);
    }

    // Deletes are tombstones, so that replication can carry them to other hosts.
    void put_tombstone(Txn &txn, MDB_dbi dbi, MDB_val key) { put(txn, dbi, key, {}, ls_flag_deleted); }

private:
    // LMDB opens the data file and FILE-lock by path, following symlinks, and
    // creates and writes the lock file even for a reader: a link planted there
    // would make root write wherever it points. So both must be regular files
    // (or absent), in a directory no one but its owner can write, so that
    // nobody else can swap them between this check and the open. The
    // directory itself may be reached through a symlink.
    static void check_files(const std::string &file, Access access, bool must_exist) {
        const std::string dir = dir_of(file);
        struct stat dir_stat{};
        if (::stat(dir.c_str(), &dir_stat) != 0) {
            const int err = errno;
            if (err == ENOENT) no_store(dir);
            if (err == EACCES) permission_denied(file);
            fail(err, "cannot open " + dir);
        }
        if (!S_ISDIR(dir_stat.st_mode)) refuse(dir + " is not a directory");
        if (dir_stat.st_mode & (S_IWGRP | S_IWOTH))
            refuse(dir + " can be written by " + ((dir_stat.st_mode & S_IWOTH) ? "anyone" : "its group") +
                   " (mode " + mode_text(dir_stat.st_mode) +
                   "), who could replace the store's files; make it 02750 with: cptoken --db " + dir + " init");
        for (const std::string &path : {file, file + "-lock"}) {
            struct stat st{};
            if (::lstat(path.c_str(), &st) != 0) {
                const int err = errno;
                if (err == EACCES) permission_denied(file);
                if (err != ENOENT) fail(err, "cannot open " + path);
                if (path == file && must_exist) no_store(dir);
                continue;  // LMDB creates it; only the directory's owner can put anything there meanwhile
            }
            if (!S_ISREG(st.st_mode)) refuse_odd_file(path, st.st_mode);
        }
        if (access == Access::read_only && file.ends_with(std::string("/") + token_store_file))
            refuse_writable_tokens(file, dir, dir_stat);
    }

    // Only root (cptoken) writes tokens: a reader (httpd's child) that could
    // write tokens.mdb or its directory without owning them means anyone
    // running as that user could give themselves a token. Root can write
    // everything, so it is not asked.
    static void refuse_writable_tokens(const std::string &file, const std::string &dir, const struct stat &dir_stat) {
        const uid_t me = ::geteuid();
        if (me == 0) return;
        struct stat file_stat{};
        if (::stat(file.c_str(), &file_stat) != 0) return;  // missing: mdb_env_open says so
        for (const auto &[path, st] : {std::pair{file, file_stat}, std::pair{dir, dir_stat}}) {
            if (st.st_uid == me || ::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0) continue;
            refuse(path + " can be written by user " + user_name(me) + ", group " + group_name(::getegid()) +
                   ", which only reads tokens: anyone running as that user could change tokens; fix the "
                   "permissions with: cptoken --db " + dir + " init");
        }
    }

    std::string file_;
    MDB_env *env_ = nullptr;
};

// A file descriptor, closed when it goes out of scope.
class OpenFd {
public:
    explicit OpenFd(int fd) : fd_(fd) {}
    ~OpenFd() {
        if (fd_ >= 0) ::close(fd_);
    }
    OpenFd(const OpenFd &) = delete;
    OpenFd &operator=(const OpenFd &) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// Gives the open file at PATH to this process's user and to `group`, with
// `mode`, changing only what differs (LMDB creates files with the caller's
// umask and group). Appends one line per change to `changes`, if given.
void apply_owner_mode(int fd, const std::string &path, gid_t group, mode_t mode, std::vector<std::string> *changes) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) fail(errno, "cannot stat " + path);
    const uid_t me = ::geteuid();
    if (st.st_uid != me || st.st_gid != group) {
        if (::fchown(fd, st.st_uid != me ? me : static_cast<uid_t>(-1), group) != 0)
            fail(errno, "cannot change the owner of " + path);
        if (changes && st.st_uid != me)
            changes->push_back(path + ": owner " + user_name(st.st_uid) + " -> " + user_name(me));
        if (changes && st.st_gid != group)
            changes->push_back(path + ": group " + group_name(st.st_gid) + " -> " + group_name(group));
    }
    const bool chowned = st.st_uid != me || st.st_gid != group;
    if ((st.st_mode & 07777) == mode && !chowned) return;
    // Also after any chown, which may clear the setgid bit.
    if (::fchmod(fd, mode) != 0) fail(errno, "cannot change the mode of " + path);
    if (changes && (st.st_mode & 07777) != mode)
        changes->push_back(path + ": mode " + mode_text(st.st_mode) + " -> " + mode_text(mode));
}

// apply_owner_mode() on the store file at PATH, opened without following a
// symlink: a symlink, or anything but a regular file, is refused.
void set_owner_mode(const std::string &path, gid_t group, mode_t mode, std::vector<std::string> *changes = nullptr) {
    const OpenFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (fd.get() < 0) {
        const int err = errno;
        struct stat st{};
        if (err == ELOOP && ::lstat(path.c_str(), &st) == 0) refuse_odd_file(path, st.st_mode);
        fail(err, "cannot open " + path);
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) fail(errno, "cannot stat " + path);
    if (!S_ISREG(st.st_mode)) refuse_odd_file(path, st.st_mode);
    apply_owner_mode(fd.get(), path, group, mode, changes);
}

void write_schema_version(Env &env, Txn &txn, MDB_dbi meta) {
    std::string version(4, '\0');
    for (int i = 0; i < 4; ++i) version[i] = static_cast<char>(StoreSettings::schema_version >> (24 - 8 * i));
    env.put(txn, meta, as_val(schema_key), version);
}

void check_schema_version(Env &env, Txn &txn, MDB_dbi meta) {
    const auto version = env.get_live(txn, meta, as_val(schema_key));
    if (!version || version->size() != 4) corrupt(env.file() + " has no schema version: not a cptoken store");
    std::uint32_t number = 0;
    for (unsigned char c : *version) number = (number << 8) | c;
    if (number > StoreSettings::schema_version)
        corrupt(env.file() + " has schema version " + std::to_string(number) + ", newer than this software (" +
                std::to_string(StoreSettings::schema_version) + "): upgrade mod_cptoken");
    if (number < 1) corrupt(env.file() + " has an invalid schema version " + std::to_string(number));
}

}  // namespace

// ---------------------------------------------------------------- init

namespace {

// The mode init gives a store file.
mode_t store_file_mode(std::string_view name) { return name == token_store_file ? 0640 : 0660; }

// Takes over DIR for a store: refuses a directory owned by anyone but the
// caller, or one that is not a store yet and holds anything but store files,
// or that holds a store file which is a symlink or not a regular file.
// Returns whether it holds a store already (tokens.mdb).
bool check_init_dir(const std::string &dir, int dir_fd, const struct stat &dir_stat) {
    const uid_t me = ::geteuid();
    if (dir_stat.st_uid != me)
        refuse(dir + " belongs to user " + user_name(dir_stat.st_uid) + ", not to " + user_name(me) +
               " who runs init: its owner could replace the store's files; give it to " + user_name(me) +
               " (chown " + user_name(me) + " " + dir + ") or name a new directory");
    const int list_fd = ::dup(dir_fd);
    DIR *listing = list_fd < 0 ? nullptr : ::fdopendir(list_fd);
    if (!listing) {
        const int err = errno;
        if (list_fd >= 0) ::close(list_fd);
        fail(err, "cannot read " + dir);
    }
    bool is_store = false;
    std::string others;
    while (const dirent *entry = ::readdir(listing)) {
        const std::string_view name = entry->d_name;
        if (name == "." || name == "..") continue;
        if (std::find(std::begin(store_files), std::end(store_files), name) == std::end(store_files)) {
            others += (others.empty() ? "" : ", ") + std::string(name);
            continue;
        }
        struct stat st{};
        if (::fstatat(dir_fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            const int err = errno;
            ::closedir(listing);
            fail(err, "cannot stat " + path_in(dir, entry->d_name));
        }
        if (!S_ISREG(st.st_mode)) {
            const std::string path = path_in(dir, entry->d_name);
            ::closedir(listing);
            refuse_odd_file(path, st.st_mode);
        }
        if (name == token_store_file) is_store = true;
    }
    ::closedir(listing);
    if (!is_store && !others.empty())
        refuse(dir + " is not empty and holds no token store (" + others +
               "): init makes a store only in a new or empty directory");
    return is_store;
}

}  // namespace

InitOutcome init_store(const std::string &dir, std::optional<gid_t> group, std::vector<std::string> *changes) {
    const std::string tokens_file = path_in(dir, token_store_file), usage_file = path_in(dir, usage_store_file);
    // 0700 until the group and mode below are set: nobody else gets in meanwhile.
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) fail(errno, "cannot create " + dir);
    const OpenFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat dir_stat{};
    if (dir_fd.get() < 0 || ::fstat(dir_fd.get(), &dir_stat) != 0) fail(errno, "cannot open " + dir);
    const bool is_store = check_init_dir(dir, dir_fd.get(), dir_stat);

    // An existing store keeps its group unless told otherwise.
    const gid_t gid = group ? *group : is_store ? dir_stat.st_gid : ::getegid();
    std::vector<std::string> made;
    apply_owner_mode(dir_fd.get(), dir, gid, 02750, &made);
    if (is_store) {
        for (const char *name : store_files) {
            const std::string path = path_in(dir, name);
            struct stat st{};
            if (::fstatat(dir_fd.get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                set_owner_mode(path, gid, store_file_mode(name), &made);
        }
        if (changes) changes->insert(changes->end(), made.begin(), made.end());
        return made.empty() ? InitOutcome::already_present : InitOutcome::repaired;
    }

    // The usage store first: tokens.mdb existing is what marks a finished init.
    {
        Env usage(usage_file, Access::read_write, 0660, false);
        Txn txn(usage.get(), true, usage_file);
        usage.open_db(txn, "usage", true);
        txn.commit(usage_file);
    }
    set_owner_mode(usage_file, gid, 0660);
    set_owner_mode(usage_file + "-lock", gid, 0660);
    {
        Env tokens(tokens_file, Access::read_write, 0640, false);
        Txn txn(tokens.get(), true, tokens_file);
        const MDB_dbi meta = tokens.open_db(txn, "meta", true);
        tokens.open_db(txn, "tokens", true);
        tokens.open_db(txn, "names", true);
        write_schema_version(tokens, txn, meta);
        txn.commit(tokens_file);
    }
    set_owner_mode(tokens_file, gid, 0640);
    set_owner_mode(tokens_file + "-lock", gid, 0660);
    return InitOutcome::created;
}

// ---------------------------------------------------------------- tokens

namespace {

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
                   " s: another process holds it (another cptoken, Lightning Stream, or a process of the store's "
                   "group; `fuser -v " + file + "-lock` lists who has the store open)");
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

}  // namespace

struct TokenStore::Impl {
    Env env;
    ReaderPool readers;  // after env: its transactions end before the environment closes
    MDB_dbi meta = 0, tokens = 0, names = 0;
    mutable RecordCache cache;

    Impl(const std::string &dir, Access access, std::size_t cache_slots)
        : env(path_in(dir, token_store_file), access, 0640, true), cache(cache_slots, StoreSettings::record_cache_bytes) {
        Txn txn(env.get(), false, env.file());
        meta = env.open_db(txn, "meta", false);
        tokens = env.open_db(txn, "tokens", false);
        names = env.open_db(txn, "names", false);
        check_schema_version(env, txn, meta);
        txn.commit(env.file());  // keeps the database handles for the life of the environment
        MDB_stat env_stat{};
        check(mdb_env_stat(env.get(), &env_stat), "cannot read ", env.file());
        page_size = static_cast<off_t>(env_stat.ms_psize);
        if (access == Access::read_write) keep_lock_file_usable(dir);
    }

    // If the lock file was deleted, LMDB has just made it with our umask and
    // group: give it back to the store's group so that httpd can still read.
    void keep_lock_file_usable(const std::string &dir) {
        struct stat dir_stat{}, lock_stat{};
        const std::string lock = env.file() + "-lock";
        if (::stat(dir.c_str(), &dir_stat) != 0 || ::stat(lock.c_str(), &lock_stat) != 0) return;
        if (lock_stat.st_gid != dir_stat.st_gid || (lock_stat.st_mode & 07777) != 0660)
            set_owner_mode(lock, dir_stat.st_gid, 0660);
    }

    std::optional<TokenRecord> record_of(Txn &txn, const Digest &digest) const {
        const auto payload = env.get_live(txn, tokens, as_val(digest));
        if (!payload) return std::nullopt;
        auto record = decode_record(*payload);
        if (!record) corrupt("a token record in " + env.file() + " cannot be decoded");
        return record;
    }

    std::optional<StoredToken> by_name(Txn &txn, std::string_view user, std::string_view name) const {
        const auto payload = env.get_live(txn, names, as_val(name_key(user, name)));
        if (!payload) return std::nullopt;
        StoredToken found;
        if (payload->size() != found.digest.size()) corrupt("a name entry in " + env.file() + " is broken");
        std::memcpy(found.digest.data(), payload->data(), found.digest.size());
        auto record = record_of(txn, found.digest);
        if (!record || record->user != user || record->name != name)
            corrupt("the name " + std::string(user) + "/" + std::string(name) + " in " + env.file() +
                    " points to no matching token");
        found.record = std::move(*record);
        return found;
    }

    StoredToken must_find(Txn &txn, std::string_view user, std::string_view name) const {
        auto found = by_name(txn, user, name);
        if (!found)
            throw StoreError(StoreError::Kind::not_found,
                             "user " + std::string(user) + " has no token named '" + std::string(name) + "'");
        return std::move(*found);
    }

    void remove(Txn &txn, const StoredToken &token) {
        env.put_tombstone(txn, names, as_val(name_key(token.record.user, token.record.name)));
        env.put_tombstone(txn, tokens, as_val(token.digest));
    }

    std::vector<StoredToken> live_tokens(Txn &txn, std::string_view user) const {
        std::vector<StoredToken> out;
        MDB_cursor *cursor = nullptr;
        check(mdb_cursor_open(txn.get(), names, &cursor), "cannot read ", env.file());
        const std::string prefix = user.empty() ? std::string() : name_key(user, "");
        MDB_val key = as_val(prefix), value;
        int rc = mdb_cursor_get(cursor, &key, &value, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
        try {
            for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) {
                const std::string_view key_text = as_view(key);
                if (key_text.substr(0, prefix.size()) != prefix) break;
                const auto separator = key_text.find('\0');
                if (separator == std::string_view::npos) corrupt("a name key in " + env.file() + " is broken");
                auto found = by_name(txn, key_text.substr(0, separator), key_text.substr(separator + 1));
                if (found) out.push_back(std::move(*found));
            }
        } catch (...) {
            mdb_cursor_close(cursor);
            throw;
        }
        mdb_cursor_close(cursor);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) fail(rc, "cannot read " + env.file());
        return out;
    }

    // Keys of tombstones in `dbi` written before `cutoff_ns`.
    std::vector<std::string> old_tombstones(Txn &txn, MDB_dbi dbi, std::uint64_t cutoff_ns) const {
        std::vector<std::string> keys;
        MDB_cursor *cursor = nullptr;
        check(mdb_cursor_open(txn.get(), dbi, &cursor), "cannot read ", env.file());
        MDB_val key, value;
        int rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
        for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) {
            const auto decoded = ls_decode(as_view(value));
            if (decoded && decoded->deleted() && decoded->timestamp_ns < cutoff_ns)
                keys.emplace_back(as_view(key));
        }
        mdb_cursor_close(cursor);
        if (rc != MDB_NOTFOUND) fail(rc, "cannot read " + env.file());
        return keys;
    }

    template <class Change>
    auto write(Change change) {
        int dead = 0;
        mdb_reader_check(env.get(), &dead);
        std::optional<Txn> txn;
        {
            LockWaitNotice notice(lock_wait_notice, env.file());
            txn.emplace(env.get(), true, env.file());
        }
        auto result = change(*txn);
        txn->commit(env.file());
        return result;
    }

    std::function<void(const std::string &)> lock_wait_notice;
    // recheck_file(): what the data file looked like at the last call.
    struct FileState {
        off_t size = -1;
        timespec mtime{}, ctime{};
        std::size_t newest = 0;
    };
    mutable std::mutex file_state_mutex;
    mutable FileState file_state;
    off_t page_size = 0;  // read at open: mdb_env_stat() reads the meta pages through the map
};

TokenStore::TokenStore(const std::string &dir, Access access, std::size_t cache_slots)
    : impl_(std::make_unique<Impl>(dir, access, cache_slots)) {}
TokenStore::~TokenStore() = default;

std::optional<TokenRecord> TokenStore::find(const Digest &digest) const {
    Txn txn(impl_->env.get(), false, impl_->env.file(), &impl_->readers);
    const std::size_t snapshot = mdb_txn_id(txn.get());
    if (auto cached = impl_->cache.get(digest, snapshot)) return cached;
    auto record = impl_->record_of(txn, digest);
    if (record) impl_->cache.put(digest, snapshot, *record);
    return record;
}

std::optional<StoredToken> TokenStore::find_by_name(std::string_view user, std::string_view name) const {
    Txn txn(impl_->env.get(), false, impl_->env.file());
    return impl_->by_name(txn, user, name);
}

std::vector<StoredToken> TokenStore::list(std::string_view user) const {
    Txn txn(impl_->env.get(), false, impl_->env.file());
    return impl_->live_tokens(txn, user);
}

void TokenStore::add(const Digest &digest, const TokenRecord &record) { add_many({{digest, record}}); }

void TokenStore::add_many(const std::vector<StoredToken> &tokens) {
    impl_->write([&](Txn &txn) {
        for (const StoredToken &token : tokens) {
            const TokenRecord &record = token.record;
            if (impl_->by_name(txn, record.user, record.name))
                throw StoreError(StoreError::Kind::duplicate,
                                 "user " + record.user + " already has a token named '" + record.name + "'");
            if (impl_->record_of(txn, token.digest))
                throw StoreError(StoreError::Kind::duplicate, "a token with the same digest already exists");
            impl_->env.put(txn, impl_->tokens, as_val(token.digest), encode_record(record));
            impl_->env.put(txn, impl_->names, as_val(name_key(record.user, record.name)),
                           std::string_view(reinterpret_cast<const char *>(token.digest.data()), token.digest.size()));
        }
        return 0;
    });
}

TokenRecord TokenStore::edit(std::string_view user, std::string_view name, const TokenChanges &changes) {
    return impl_->write([&](Txn &txn) {
        StoredToken token = impl_->must_find(txn, user, name);
        TokenRecord &record = token.record;
        if (changes.name && *changes.name != record.name) {
            if (impl_->by_name(txn, user, *changes.name))
                throw StoreError(StoreError::Kind::duplicate,
                                 "user " + std::string(user) + " already has a token named '" + *changes.name + "'");
            impl_->env.put_tombstone(txn, impl_->names, as_val(name_key(user, record.name)));
            record.name = *changes.name;
            impl_->env.put(txn, impl_->names, as_val(name_key(user, record.name)),
                           std::string_view(reinterpret_cast<const char *>(token.digest.data()), token.digest.size()));
        }
        if (changes.expires) record.expires = *changes.expires;
        if (changes.allowed_ips) record.allowed_ips = *changes.allowed_ips;
        impl_->env.put(txn, impl_->tokens, as_val(token.digest), encode_record(record));
        return record;
    });
}

void TokenStore::revoke(std::string_view user, std::string_view name) {
    impl_->write([&](Txn &txn) {
        impl_->remove(txn, impl_->must_find(txn, user, name));
        return 0;
    });
}

std::size_t TokenStore::revoke_all(std::string_view user) {
    if (user.empty()) throw StoreError(StoreError::Kind::not_found, "no user given");
    return impl_->write([&](Txn &txn) {
        const auto tokens = impl_->live_tokens(txn, user);
        for (const StoredToken &token : tokens) impl_->remove(txn, token);
        return tokens.size();
    });
}

PruneResult TokenStore::prune(Seconds now) {
    return impl_->write([&](Txn &txn) {
        PruneResult result;
        for (const StoredToken &token : impl_->live_tokens(txn, {})) {
            if (!token.record.expired_at(now)) continue;
            impl_->remove(txn, token);
            ++result.expired_removed;
        }
        const Seconds cutoff = now - StoreSettings::tombstone_retention_seconds;
        const std::uint64_t cutoff_ns = cutoff > 0 ? static_cast<std::uint64_t>(cutoff) * 1000000000u : 0;
        for (MDB_dbi dbi : {impl_->names, impl_->tokens}) {
            for (const std::string &key : impl_->old_tombstones(txn, dbi, cutoff_ns)) {
                MDB_val k = as_val(key);
                check(mdb_del(txn.get(), dbi, &k, nullptr), "cannot delete from ", impl_->env.file());
                ++result.tombstones_dropped;
            }
        }
        return result;
    });
}

void TokenStore::recheck_file() const {
    mdb_filehandle_t fd = -1;
    struct stat st{};
    if (mdb_env_get_fd(impl_->env.get(), &fd) != MDB_SUCCESS || ::fstat(fd, &st) != 0)
        fail(errno, "cannot stat " + impl_->env.file());
    const off_t page = impl_->page_size;
    const std::string changed_in_place = impl_->env.file() + " was changed in place, not through LMDB: ";
    // LMDB never shrinks the file, and its two meta pages come first: check
    // the size before reading them through the map (beyond the end: SIGBUS).
    if (st.st_size < 2 * page) corrupt(changed_in_place + "it is shorter than its own header pages");
    MDB_envinfo info{};
    mdb_env_info(impl_->env.get(), &info);
    if (st.st_size < (static_cast<off_t>(info.me_last_pgno) + 1) * page)
        corrupt(changed_in_place + "it is shorter than its newest snapshot needs (truncated?)");

    std::lock_guard<std::mutex> lock(impl_->file_state_mutex);
    auto &seen = impl_->file_state;
    if (info.me_last_txnid < seen.newest)
        corrupt(changed_in_place + "its newest transaction went back from " + std::to_string(seen.newest) + " to " +
                std::to_string(info.me_last_txnid) + " (an older copy written over it?)");
    const auto same_time = [](const timespec &a, const timespec &b) {
        return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
    };
    if (st.st_size != seen.size || !same_time(st.st_mtim, seen.mtime) || !same_time(st.st_ctim, seen.ctime))
        impl_->cache.clear();
    seen = {st.st_size, st.st_mtim, st.st_ctim, info.me_last_txnid};
}

void TokenStore::set_lock_wait_notice(std::function<void(const std::string &message)> notice) {
    impl_->lock_wait_notice = std::move(notice);
}

std::pair<dev_t, ino_t> TokenStore::data_file_id() const {
    mdb_filehandle_t fd = -1;
    struct stat st{};
    if (mdb_env_get_fd(impl_->env.get(), &fd) != MDB_SUCCESS || ::fstat(fd, &st) != 0)
        fail(errno, "cannot stat " + impl_->env.file());
    return {st.st_dev, st.st_ino};
}

namespace {

// True if `dbi` in `a` and the database `name` in `b` hold the same keys and values.
bool same_contents(MDB_txn *a, MDB_dbi dbi, MDB_txn *b, const char *name) {
    MDB_dbi other = 0;
    if (mdb_dbi_open(b, name, 0, &other) != MDB_SUCCESS) return false;
    MDB_cursor *ca = nullptr, *cb = nullptr;
    if (mdb_cursor_open(a, dbi, &ca) != MDB_SUCCESS) return false;
    if (mdb_cursor_open(b, other, &cb) != MDB_SUCCESS) {
        mdb_cursor_close(ca);
        return false;
    }
    MDB_val ka, va, kb, vb;
    int ra = mdb_cursor_get(ca, &ka, &va, MDB_FIRST), rb = mdb_cursor_get(cb, &kb, &vb, MDB_FIRST);
    for (; ra == MDB_SUCCESS && rb == MDB_SUCCESS;
         ra = mdb_cursor_get(ca, &ka, &va, MDB_NEXT), rb = mdb_cursor_get(cb, &kb, &vb, MDB_NEXT))
        if (as_view(ka) != as_view(kb) || as_view(va) != as_view(vb)) break;
    mdb_cursor_close(ca);
    mdb_cursor_close(cb);
    return ra == MDB_NOTFOUND && rb == MDB_NOTFOUND;
}

}  // namespace

void TokenStore::backup(const std::string &file) {
    // mdb_env_copy2 reads the snapshot the lock file names, unchecked. So the
    // copy is made while this process holds the writer lock in a verified
    // write transaction (no commit can land meanwhile), and kept only if it
    // holds exactly what that transaction sees: a restore can never bring
    // back what was revoked.
    impl_->write([&](Txn &txn) {
        check(mdb_env_copy2(impl_->env.get(), file.c_str(), MDB_CP_COMPACT), "cannot back up to ", file);
        bool same = false;
        MDB_env *copy = nullptr;
        MDB_txn *copy_txn = nullptr;
        if (mdb_env_create(&copy) == MDB_SUCCESS && mdb_env_set_maxdbs(copy, 8) == MDB_SUCCESS &&
            mdb_env_set_mapsize(copy, StoreSettings::map_size) == MDB_SUCCESS &&
            mdb_env_open(copy, file.c_str(), MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600) == MDB_SUCCESS &&
            mdb_txn_begin(copy, nullptr, MDB_RDONLY, &copy_txn) == MDB_SUCCESS) {
            same = same_contents(txn.get(), impl_->meta, copy_txn, "meta") &&
                   same_contents(txn.get(), impl_->tokens, copy_txn, "tokens") &&
                   same_contents(txn.get(), impl_->names, copy_txn, "names");
            mdb_txn_abort(copy_txn);
        }
        if (copy) mdb_env_close(copy);
        if (!same) {
            ::unlink(file.c_str());
            throw StoreError(StoreError::Kind::inconsistent,
                             "the copy in " + file + " is not the newest snapshot of " + impl_->env.file() +
                                 " (its lock file was changed outside LMDB?): removed it");
        }
        return 0;  // nothing written: the commit ends the transaction without a new snapshot
    });
}

// ---------------------------------------------------------------- usage

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
    std::uint64_t when = 0;
    for (int i = 1; i <= 8; ++i) when = (when << 8) | static_cast<unsigned char>((*payload)[i]);
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
    for (int shift = 56; shift >= 0; shift -= 8)
        payload.push_back(static_cast<char>(static_cast<std::uint64_t>(usage.last_used) >> shift));
    payload += usage.last_used_ip;
    Txn txn(impl_->env.get(), true, impl_->env.file());
    impl_->env.put(txn, impl_->usage, as_val(digest), payload);
    txn.commit(impl_->env.file());
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
#include "store/store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <stdexcept>

#include <openssl/rand.h>

#include "token/codec.hpp"
#include "store/commit_record.hpp"
#include "store/lmdb_env.hpp"
#include "store/open_fd.hpp"
#include "store/lsheader.hpp"
#include "token/names.hpp"
#include "store/record_cache.hpp"
#include "token/siphash.hpp"
#include "store/unprivileged.hpp"
#include "store/usage_store.hpp"
#include "store/usage_table.hpp"

namespace cptoken {

using namespace lmdb;  // the environment under both stores

namespace {

constexpr const char *schema_key = "schema_version";
// Written by every commit (TokenStore::Impl::commit): an empty value, its header says when.
constexpr const char *last_commit_key = "last_commit";
// Random bytes made once per store, also in its commit record: a data file of
// another store put in place alone does not match the record there.
constexpr const char *store_id_key = "store_id";
// Where a mirror of etcd stands (MirrorPoint), written with the data it describes.
constexpr const char *mirror_applied_key = "mirror_applied_revision";
constexpr const char *mirror_gen_key = "mirror_gen_revision";
constexpr const char *mirror_cluster_key = "mirror_cluster_id";

std::string new_store_id() {
    std::string id(CommitRecord::store_id_size, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char *>(id.data()), static_cast<int>(id.size())) != 1)
        throw StoreError(StoreError::Kind::access, "the random number generator failed");
    return id;
}

// The names init may find in a directory it takes over.
// With the usage store of 0.13 and before (imported, then removed, by init)
// and the names a rebuild of the usage table leaves if it is cut short.
constexpr const char *store_files[] = {"tokens.mdb",      "tokens.mdb-committed", "tokens.mdb-lock",
                                       "usage.slots",     "usage.slots.new",      "usage.slots.old",
                                       "usage.mdb",       "usage.mdb-lock"};

// A digest as a stored value (a name entry, a predecessor link).
std::string_view digest_bytes(const Digest &digest) {
    return {reinterpret_cast<const char *>(digest.data()), digest.size()};
}

std::string name_key(std::string_view user, std::string_view name) {
    std::string key(user);
    key.push_back('\0');  // sorts before every name character: list order is by user, then name
    key.append(name);
    return key;
}

// Gives the open file at PATH to `owner` and `group`, with `mode`, changing
// only what differs (LMDB creates files with the caller's umask and group).
// Appends one line per change to `changes`, if given.
void apply_owner_mode(int fd, const std::string &path, uid_t owner, gid_t group, mode_t mode,
                      std::vector<std::string> *changes) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) fail(errno, "cannot stat " + path);
    if (st.st_uid != owner || st.st_gid != group) {
        if (::fchown(fd, st.st_uid != owner ? owner : static_cast<uid_t>(-1), group) != 0)
            fail(errno, "cannot change the owner of " + path);
        if (changes && st.st_uid != owner)
            changes->push_back(path + ": owner " + user_name(st.st_uid) + " -> " + user_name(owner));
        if (changes && st.st_gid != group)
            changes->push_back(path + ": group " + group_name(st.st_gid) + " -> " + group_name(group));
    }
    const bool chowned = st.st_uid != owner || st.st_gid != group;
    if ((st.st_mode & 07777) == mode && !chowned) return;
    // Also after any chown, which may clear the setgid bit.
    if (::fchmod(fd, mode) != 0) fail(errno, "cannot change the mode of " + path);
    if (changes && (st.st_mode & 07777) != mode)
        changes->push_back(path + ": mode " + mode_text(st.st_mode) + " -> " + mode_text(mode));
}

// apply_owner_mode() on the store file at PATH, opened without following a
// symlink: a symlink, anything but a regular file, or a file with another
// link (the store's owner can write the directory, and could link a file of
// root's there for init to give away) is refused.
void set_owner_mode(const std::string &path, uid_t owner, gid_t group, mode_t mode,
                    std::vector<std::string> *changes = nullptr) {
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
    if (st.st_nlink != 1)
        refuse(path + " has " + std::to_string(st.st_nlink) + " hard links: it may be another file too, which init "
               "must not give to the store's owner and group; remove it (a lock file) or put a copy in its place");
    apply_owner_mode(fd.get(), path, owner, group, mode, changes);
}

void write_schema_version(Env &env, Txn &txn, MDB_dbi meta) {
    std::string version;
    put_be(version, StoreSettings::schema_version, 4);
    env.put(txn, meta, as_val(schema_key), version);
}

void check_schema_version(Env &env, Txn &txn, MDB_dbi meta) {
    const auto version = env.get_live(txn, meta, as_val(schema_key));
    if (!version || version->size() != 4) corrupt(env.file() + " has no schema version: not a cptoken store");
    const auto number = static_cast<std::uint32_t>(get_be(*version, 0, 4));
    // Both versions, and this build's release: the admin must know which side to upgrade.
    if (number > StoreSettings::schema_version)
        corrupt(env.file() + " has schema version " + std::to_string(number) + "; this mod_cptoken " CPTOKEN_VERSION
                " reads up to schema " + std::to_string(StoreSettings::schema_version) + ": upgrade mod_cptoken");
    if (number < 1) corrupt(env.file() + " has an invalid schema version " + std::to_string(number));
}

}  // namespace

void check_schema_version(Env &env, Txn &txn) { check_schema_version(env, txn, env.open_db(txn, "meta", false)); }

std::optional<uid_t> store_owner_to_become(const std::string &dir) {
    struct stat st{};
    if (::geteuid() != 0 || ::stat(dir.c_str(), &st) != 0 || st.st_uid == 0) return std::nullopt;
    return st.st_uid;
}

std::optional<std::string> become_store_owner(const std::string &dir) {
    const auto owner = store_owner_to_become(dir);
    if (!owner) return std::nullopt;
    char buffer[4096];
    passwd entry{}, *found = nullptr;
    struct stat st{};
    const gid_t gid = ::getpwuid_r(*owner, &entry, buffer, sizeof buffer, &found) == 0 && found ? found->pw_gid
                      : ::stat(dir.c_str(), &st) == 0                                          ? st.st_gid
                                                                                               : 65534;
    if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(*owner) != 0 || ::setuid(0) == 0)
        refuse("cannot become " + user_name(*owner) + ", the owner of " + dir + ", to work on its store: " +
               std::strerror(errno));
    return user_name(*owner);
}

Access access_for_reading(const std::string &dir) {
    struct stat st{};
    struct statvfs fs{};
    // On a read-only filesystem no writer can be at work, and the lock file could not be opened to write.
    if (::statvfs(dir.c_str(), &fs) == 0 && (fs.f_flag & ST_RDONLY)) return Access::read_only;
    return ::stat(path_in(dir, token_store_file).c_str(), &st) == 0 && st.st_uid == ::geteuid() ? Access::read_write
                                                                                               : Access::read_only;
}

// ---------------------------------------------------------------- init

namespace {

// The mode init gives a store file.
// The token store's lock file is its writers' alone; httpd's group reads the
// data file and the commit record, and writes the usage store.
mode_t store_file_mode(std::string_view name) {
    if (name == token_store_file || name == std::string(token_store_file) + commit_record_suffix) return 0640;
    if (name == std::string(token_store_file) + "-lock") return 0600;
    return 0660;
}

// Whoever can write DIR's parent could point a symbolic link named DIR at a
// directory of root's, which init would then give to httpd's group: init
// takes only a real directory (with "dir/" the kernel would follow the link).
void refuse_symlinked_dir(std::string dir) {
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    struct stat st{};
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return;
    char target[4096];
    const ssize_t length = ::readlink(dir.c_str(), target, sizeof target - 1);
    const std::string named = length > 0 ? std::string(target, static_cast<std::size_t>(length)) : "?";
    refuse(dir + " is a symbolic link (to " + named + "): init makes a store only in a real directory, whose "
           "parent no one else can write; name the directory itself with --db");
}

// The store files in DIR, checked: refuses a directory that is not a store
// yet and holds anything but store files, or that holds a store file which
// is a symlink or not a regular file. Returns whether it holds a store
// already (tokens.mdb).
bool check_init_dir(const std::string &dir, int dir_fd) {
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

// Whether user `uid` is a member of group `gid` (its primary group or
// /etc/group).
bool user_in_group(uid_t uid, gid_t gid) {
    char buffer[4096];
    passwd entry{}, *found = nullptr;
    if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) != 0 || !found) return false;
    if (found->pw_gid == gid) return true;
    int count = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(count));
    if (::getgrouplist(found->pw_name, found->pw_gid, groups.data(), &count) < 0) {
        groups.resize(static_cast<std::size_t>(count));
        if (::getgrouplist(found->pw_name, found->pw_gid, groups.data(), &count) < 0) return true;  // fail closed
    }
    groups.resize(static_cast<std::size_t>(count));
    return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

gid_t primary_group(uid_t uid) {
    char buffer[4096];
    passwd entry{}, *found = nullptr;
    if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) != 0 || !found)
        refuse("user " + user_name(uid) + " has no entry in the user database");
    return found->pw_gid;
}

// The token store's lock file belongs to its writers alone, LMDB trusting
// what it finds there: one of another user than the store's owner (left by
// mod_cptoken 0.11, whose readers took slots there, or by the store's former
// owner) or one that anyone else can open is removed unopened, never handed
// over. Appends a line if so.
void remove_foreign_token_lock(const std::string &dir, int dir_fd, uid_t owner, std::vector<std::string> &made) {
    const std::string lock_name = std::string(token_store_file) + "-lock", lock = path_in(dir, lock_name.c_str());
    struct stat st{};
    if (::fstatat(dir_fd, lock_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        (st.st_uid == owner && (st.st_mode & 077) == 0 && st.st_nlink == 1))
        return;
    if (::unlinkat(dir_fd, lock_name.c_str(), 0) != 0) fail(errno, "cannot remove " + lock);
    made.push_back(lock + ": removed (" +
                   (st.st_uid != owner ? "it was " + user_name(st.st_uid) + "'s" : std::string("others could open it")) +
                   "); a new one is " + user_name(owner) + "'s alone");
}

// Publishes the newest commit of the token store in a fresh commit record
// (once the lock is held, so no commit is in flight), if it has none or an
// old one. Run as the store's owner, after remove_foreign_token_lock (a
// removed lock file is made by the next writer). Appends a line per change
// to `made`.
void convert_token_store(const std::string &dir, int dir_fd, gid_t gid, std::vector<std::string> &made) {
    const std::string record_name = std::string(token_store_file) + commit_record_suffix;
    const std::string record = path_in(dir, record_name.c_str());
    struct stat st{};
    const bool had_record = ::fstatat(dir_fd, record_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (had_record) {
        try {  // readers take it as it is: nothing to do, and nothing touched
            TokenStore(dir, Access::read_only, 0);
            return;
        } catch (const StoreError &) {
        }
    }
    Env env(path_in(dir, token_store_file), Access::read_write, 0600, true);
    std::optional<Txn> txn;
    txn.emplace(env.get(), true, env.file());  // the writer lock: the newest commit is whole
    const MDB_dbi meta = env.open_db(*txn, "meta", false);
    const auto stored_id = env.get_live(*txn, meta, as_val(store_id_key));
    std::string store_id = stored_id ? std::string(*stored_id) : std::string();
    if (store_id.size() != CommitRecord::store_id_size) {  // made by 0.11 or earlier
        store_id = new_store_id();
        env.put(*txn, meta, as_val(store_id_key), store_id);
        txn->commit(env.file());
        made.push_back(env.file() + ": store id set");
        txn.emplace(env.get(), true, env.file());  // the lock again, until the record says so
    }
    const std::uint64_t newest = txn->id() - 1;
    if (!had_record) {
        CommitRecord::create(record, newest, store_id, store_file_mode(record_name), gid);
        made.push_back(record + ": created at transaction " + std::to_string(newest));
        return;
    }
    CommitRecord committed(record, true);
    if (committed.load() == newest && committed.store_id() == store_id) return;
    made.push_back(record + ": transaction " + std::to_string(committed.load()) + " -> " + std::to_string(newest) +
                   (committed.store_id() == store_id ? "" : ", store id of " + env.file()));
    committed.reset(newest, store_id);
    committed.persist();
}

// Makes an empty usage table in DIR, 0600, this process's alone, until init
// sets its mode after: httpd's group writes it once it is 0660. Room for
// `tokens` (a restored backup's); rebuild_usage() makes room for more.
void make_usage_store(const std::string &dir, int dir_fd, std::size_t tokens) {
    UsageTable::create(dir_fd, usage_store_file, path_in(dir, usage_store_file), UsageTable::slot_count_for(tokens),
                       0600, static_cast<gid_t>(-1));
}

// A new token store in DIR, with its commit record.
void make_token_store(const std::string &dir, gid_t gid) {
    const std::string tokens_file = path_in(dir, token_store_file);
    Env tokens(tokens_file, Access::read_write, 0600, false);
    Txn txn(tokens.get(), true, tokens_file);
    const MDB_dbi meta = tokens.open_db(txn, "meta", true);
    tokens.open_db(txn, "tokens", true);
    tokens.open_db(txn, "names", true);
    write_schema_version(tokens, txn, meta);
    const std::string store_id = new_store_id();
    tokens.put(txn, meta, as_val(store_id_key), store_id);
    const std::uint64_t id = txn.id();
    txn.commit(tokens_file);
    CommitRecord::create(tokens_file + commit_record_suffix, id, store_id, 0640, gid);
}

}  // namespace

// The LMDB part of init, done as the store's owner: `work` gets the store
// directory open (the one init checked, `dir_id`) and reports changes with
// `note`. In this process if it is the owner; else (root for another user)
// in a child that became the owner for good (run_as_user), so that root
// never opens with LMDB a file the owner could have written, nor makes one
// it would then hand over.
void as_owner(const std::string &dir, uid_t owner, const struct stat &dir_id,
              const std::function<void(int dir_fd, const std::function<void(std::string)> &note)> &work,
              std::vector<std::string> &made) {
    if (owner == ::geteuid()) {
        const OpenFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (dir_fd.get() < 0) fail(errno, "cannot open " + dir);
        work(dir_fd.get(), [&made](std::string line) { made.push_back(std::move(line)); });
        return;
    }
    run_as_user(
        owner, primary_group(owner), "making the store in " + dir + " as user " + user_name(owner),
        [&](const std::function<void(std::string_view)> &send) {
            const OpenFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            struct stat st{};
            if (dir_fd.get() < 0 || ::fstat(dir_fd.get(), &st) != 0) {
                if (errno == EACCES)
                    refuse("cannot reach " + dir + " as user " + user_name(owner) + ", its owner: the directories "
                           "above it must let that user in (x), as the owner's processes (the manager) need too");
                fail(errno, "cannot open " + dir);
            }
            if (st.st_dev != dir_id.st_dev || st.st_ino != dir_id.st_ino)
                refuse(dir + " was replaced while init worked on it");
            work(dir_fd.get(), [&send](const std::string &line) { send(line); });
        },
        [&made](std::string_view line) {
            // Shown to root as they are: printable ASCII only.
            std::string text(line);
            for (char &c : text)
                if (c < 0x20 || c > 0x7e) c = '?';
            made.push_back(std::move(text));
        });
}

InitOutcome init_store(const std::string &dir, std::optional<gid_t> group, std::vector<std::string> *changes) {
    return init_store(dir, group, std::nullopt, changes);
}

InitOutcome init_store(const std::string &dir, std::optional<gid_t> group, std::optional<uid_t> owner_wanted,
                       std::vector<std::string> *changes) {
    const uid_t me = ::geteuid();
    // Permission denied here is a user who is not root running init: say who is needed.
    const auto cannot = [&dir](const char *what) {
        if (errno == EACCES)
            refuse("cannot " + std::string(what) + " " + dir + ": Permission denied; making or repairing a store needs "
                   "root (this process runs as user " + user_name(::geteuid()) + "); run cptoken as root, e.g. with sudo");
        fail(errno, "cannot " + std::string(what) + " " + dir);
    };
    if (owner_wanted && *owner_wanted != me && me != 0)
        refuse("making a store for user " + user_name(*owner_wanted) + " needs root (this process runs as user " +
               user_name(me) + "); run cptoken as root, e.g. with sudo");
    // The owner writes tokens; the group reads them. An owner in the group
    // would make httpd's children (and whatever runs as their user) writers.
    const auto refuse_reader_as_owner = [&dir, me](uid_t owner, gid_t gid) {
        if (owner != me && owner != 0 && user_in_group(owner, gid))
            refuse("user " + user_name(owner) + " is in group " + group_name(gid) + ", which reads the store in " +
                   dir + ": the store's owner writes tokens and must not be one of its readers; give the store to "
                   "root (cptoken --db " + dir + " init --owner root) or to a user of its own");
    };
    struct stat before{};
    if (owner_wanted && ::lstat(dir.c_str(), &before) != 0 && errno == ENOENT)  // refused before anything is made
        refuse_reader_as_owner(*owner_wanted, group ? *group : ::getegid());
    // 0700 until the group and mode below are set: nobody else gets in meanwhile.
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) cannot("create");
    refuse_symlinked_dir(dir);
    const OpenFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat dir_stat{};
    if (dir_fd.get() < 0 || ::fstat(dir_fd.get(), &dir_stat) != 0) cannot("open");
    const bool is_store = check_init_dir(dir, dir_fd.get());

    // An existing store keeps its owner and its group unless told otherwise.
    const uid_t owner = owner_wanted ? *owner_wanted : is_store ? dir_stat.st_uid : me;
    if (owner != me && me != 0)
        refuse("the store in " + dir + " belongs to user " + user_name(owner) + ": repairing it needs root or " +
               user_name(owner) + " (this process runs as user " + user_name(me) + ")");
    // A directory that is not a store yet is taken only from the caller or
    // the new owner: anyone else could replace the store's files meanwhile.
    // An existing store changes owner only when told (--owner).
    if (!is_store && dir_stat.st_uid != me && dir_stat.st_uid != owner)
        refuse(dir + " belongs to user " + user_name(dir_stat.st_uid) + ", not to " + user_name(me) +
               " who runs init: its owner could replace the store's files; give it to " + user_name(me) +
               " (chown " + user_name(me) + " " + dir + ") or name a new directory");
    const gid_t gid = group ? *group : is_store ? dir_stat.st_gid : ::getegid();
    refuse_reader_as_owner(owner, gid);

    std::vector<std::string> made;
    // The directory first: once it is the owner's, no one else can add,
    // remove or replace a file in it.
    apply_owner_mode(dir_fd.get(), dir, owner, gid, 02750, &made);
    if (is_store) {
        remove_foreign_token_lock(dir, dir_fd.get(), owner, made);
        for (const char *name : store_files) {
            struct stat st{};
            if (::fstatat(dir_fd.get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                set_owner_mode(path_in(dir, name), owner, gid, store_file_mode(name), &made);
        }
    }
    as_owner(dir, owner, dir_stat, [&](int fd, const std::function<void(std::string)> &note) {
        std::vector<std::string> done;
        if (is_store) {
            convert_token_store(dir, fd, gid, done);
            struct stat usage_stat{};
            if (::fstatat(fd, usage_store_file, &usage_stat, AT_SYMLINK_NOFOLLOW) != 0) {
                // A restored backup brings tokens.mdb alone: room for its tokens.
                make_usage_store(dir, fd, TokenStore(dir, Access::read_only).stored_count());
                done.push_back(path_in(dir, usage_store_file) + ": created");
            }
        } else {
            // The usage store first: tokens.mdb existing is what marks a store, and an
            // init cut short before the modes below is finished by the next (a repair).
            make_usage_store(dir, fd, 0);
            make_token_store(dir, gid);
        }
        for (std::string &line : done) note(std::move(line));
    }, made);
    for (const char *name : store_files) {
        struct stat st{};
        if (::fstatat(dir_fd.get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            set_owner_mode(path_in(dir, name), owner, gid, store_file_mode(name), is_store ? &made : nullptr);
    }
    if (!is_store) return InitOutcome::created;
    struct stat old_usage{};
    if (::fstatat(dir_fd.get(), old_usage_store_file, &old_usage, AT_SYMLINK_NOFOLLOW) == 0) {
        rebuild_usage(dir);
        made.push_back(path_in(dir, old_usage_store_file) + ": last uses imported into " + usage_store_file +
                       ", removed");
    }
    if (changes) changes->insert(changes->end(), made.begin(), made.end());
    return made.empty() ? InitOutcome::already_present : InitOutcome::repaired;
}

// ---------------------------------------------------------------- tokens


// LMDB reuses a page a commit freed once no reader it knows of is older:
// two commits later, since readers without the lock file are invisible to
// it. A writer holds two read transactions of its own in the lock file
// (the owner's: only writers open it), taken in turn at least
// StoreSettings::page_reuse_delay apart, so that the older is always of a
// snapshot from before the last such delay: no page freed since is reused
// while this process writes. Both end at the first write after twice that
// delay of quiet, or with the store: an idle writer keeps them, and LMDB
// reuses no page freed after them meanwhile, so a process opens a store to
// write only while it writes (cptoken runs one command).
class ReusePins {
public:
    using Clock = std::chrono::steady_clock;

    // Before a write transaction begins (the pins are read transactions:
    // with MDB_NOTLS one thread may hold them beside its write).
    void before_write(const Env &env) {
        const auto now = Clock::now();
        if (newer_ >= 0 && now - newer_at_ >= 2 * StoreSettings::page_reuse_delay) {
            pins_[0].reset(), pins_[1].reset();  // quiet that long: the last commit's pages have had their delay
            newer_ = -1;
        }
        if (newer_ >= 0 && now - newer_at_ < StoreSettings::page_reuse_delay) return;
        // The older pin makes way for a new one, which becomes the newer.
        const int slot = newer_ < 0 ? 0 : 1 - newer_;
        pins_[slot].reset();
        pins_[slot].emplace(env.get(), false, env.file());
        newer_ = slot, newer_at_ = now;
    }

private:
    std::optional<Txn> pins_[2];
    int newer_ = -1;  // which of pins_ is the newer; -1: none held
    Clock::time_point newer_at_{};
};

struct TokenStore::Impl {
    Env env;
    // Readers only (they do without the lock file); the owner's processes
    // publish to it as they commit.
    std::optional<CommitRecord> committed;
    mutable ReaderPool readers;  // after env: its transactions end before the environment closes
    MDB_dbi meta = 0, tokens = 0, names = 0;
    mutable RecordCache cache;
    SipKey token_key{};  // find_token()'s tags; drawn at open, never leaves the process
    bool token_key_drawn = false;
    mutable std::atomic<std::uint64_t> read_retries{0};
    ReusePins pins;  // after env: the pins end before the environment closes

    Impl(const std::string &dir, Access access, std::size_t cache_slots, std::size_t map_size);

    // The data file and the commit record are opened by path, one after the
    // other: a store directory moved into place between the two would pair
    // one store's data with another's record.
    void check_same_directory(const std::string &dir) const {
        struct stat data{}, record{};
        const auto [data_dev, data_ino] = env.file_id();
        const auto [record_dev, record_ino] = committed->file_id();
        if (::stat(env.file().c_str(), &data) != 0 || ::stat((env.file() + commit_record_suffix).c_str(), &record) != 0 ||
            data.st_dev != data_dev || data.st_ino != data_ino || record.st_dev != record_dev || record.st_ino != record_ino)
            throw StoreError(StoreError::Kind::access, "the files of " + dir + " were replaced while opening them; "
                                                       "try again");
    }

    // Runs `read` on a read transaction and returns what it returns, as of
    // one snapshot that was the newest committed when the read began and
    // still was when it ended. The owner's processes take a reader slot in
    // the lock file, which keeps their snapshot whole. Readers without one
    // (httpd's children, anyone but the owner) check the snapshot against
    // the commit record before and after: no commit was published in
    // between, so no writer can have reused a page of it (docs/store.md).
    // A read that overlapped a commit, or failed while it did (a page reused
    // under it), is made again, for at most commit_in_flight_wait, counted
    // again after any gap that long between two looks at the clock: a thread
    // paused in the middle of a read (a loaded machine, SIGSTOP) has had no
    // time to read again yet.
    // `open`: the read opens the databases (no pooled transaction; it commits).
    template <class Read>
    auto read(Read read, bool open = false) const {
        // Database handles opened in a read transaction last only if it commits.
        const auto end = [&](Txn &txn) {
            if (open) txn.commit(env.file());
        };
        if (!env.lock_free()) {
            Txn txn(env.get(), false, env.file(), open ? nullptr : &readers);
            auto result = read(txn);
            end(txn);
            return result;
        }
        auto looked = std::chrono::steady_clock::now();
        auto deadline = looked + StoreSettings::commit_in_flight_wait;
        for (std::uint64_t attempts = 0;; ++attempts) {
            const std::uint64_t published = committed->load();
            std::uint64_t snapshot = 0;
            {
                Txn txn(env.get(), false, env.file(), open ? nullptr : &readers);
                snapshot = txn.id();
                if (snapshot == published) {
                    try {
                        auto result = read(txn);
                        end(txn);
                        if (committed->still(published)) return result;
                    } catch (const StoreError &) {
                        if (committed->still(published)) throw;  // the snapshot was whole: a real error
                    }
                }
            }
            read_retries.fetch_add(1, std::memory_order_relaxed);
            const auto now = std::chrono::steady_clock::now();
            if (now - looked >= StoreSettings::commit_in_flight_wait) deadline = now + StoreSettings::commit_in_flight_wait;
            looked = now;
            if (now >= deadline) throw StoreError(StoreError::Kind::inconsistent, unsettled_message(snapshot, published));
            // A commit just landed: its record follows within microseconds.
            if (attempts > 2) std::this_thread::sleep_for(std::chrono::microseconds(std::min<std::uint64_t>(attempts * 20, 2000)));
        }
    }

    std::string unsettled_message(std::uint64_t snapshot, std::uint64_t published) const {
        const std::string record = env.file() + commit_record_suffix;
        if (snapshot < published && committed->lost_commit_after(snapshot))
            return env.file() + " holds transaction " + std::to_string(snapshot) + " but " + record + " names " +
                   std::to_string(published) + ", a commit lost to a crash or power cut before it reached the "
                   "disk (the command that made it never reported it done); any cptoken command run by the store's "
                   "owner (e.g. cptoken list) makes the record name " + std::to_string(snapshot) + " again";
        if (snapshot < published)
            return env.file() + " holds transaction " + std::to_string(snapshot) + " but " + record + " names " +
                   std::to_string(published) + ": the data file is older than its commit record (an older copy "
                   "written over it?); refusing to read an older snapshot. Move a whole store directory into place "
                   "to restore a backup";
        if (snapshot > published)
            return env.file() + " holds transaction " + std::to_string(snapshot) + " but " + record + " names only " +
                   std::to_string(published) + " after " +
                   std::to_string(StoreSettings::commit_in_flight_wait.count()) +
                   " ms: a writer died between its commit and its record; any cptoken command run by the store's "
                   "owner (e.g. cptoken list) publishes it";
        return "every read of " + env.file() + " for " + std::to_string(StoreSettings::commit_in_flight_wait.count()) +
               " ms overlapped a commit: writes are landing faster than a read can be made";
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

    // The live rotated tokens that `current` links to, in its order. A link to
    // a record that is gone (revoked, pruned) or is not a rotated token of the
    // same user is skipped: it must never reach someone else's token. The name
    // is not compared: an older cptoken renames the current token only.
    std::vector<StoredToken> predecessors_of(Txn &txn, const TokenRecord &current) const {
        std::vector<StoredToken> out;
        for (const Digest &digest : current.predecessors) {
            auto record = record_of(txn, digest);
            if (record && record->rotated() && record->user == current.user) out.push_back({digest, std::move(*record)});
        }
        return out;
    }

    // Revokes a current token and its rotated tokens; returns how many tokens that was.
    std::size_t remove_with_predecessors(Txn &txn, const StoredToken &token) {
        const auto rotated = predecessors_of(txn, token.record);
        for (const StoredToken &old : rotated) env.put_tombstone(txn, tokens, as_val(old.digest));
        remove(txn, token);
        return 1 + rotated.size();
    }

    std::vector<StoredToken> live_tokens(Txn &txn, std::string_view user) const {
        std::vector<StoredToken> out;
        MDB_cursor *cursor = nullptr;
        check(mdb_cursor_open(txn.get(), names, &cursor), "cannot read ", env.file());
        const std::string prefix = user.empty() ? std::string() : name_key(user, "");
        MDB_val key = as_val(prefix), value;
        int rc = txn.read(cursor, &key, &value, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
        try {
            for (; rc == MDB_SUCCESS; rc = txn.read(cursor, &key, &value, MDB_NEXT)) {
                const std::string_view key_text = as_view(key);
                // The length comes from the page: a corrupt one would have us read past the end of the file.
                if (key_text.size() > max_user_length + 1 + max_token_name_length)
                    corrupt("a name key in " + env.file() + " is broken");
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

    // Each current token followed by its live rotated tokens (list()).
    std::vector<StoredToken> tokens_with_rotated(Txn &txn, std::string_view user) const {
        std::vector<StoredToken> out;
        for (StoredToken &token : live_tokens(txn, user)) {
            auto rotated = predecessors_of(txn, token.record);
            out.push_back(std::move(token));
            for (StoredToken &old : rotated) out.push_back(std::move(old));
        }
        return out;
    }

    // A write transaction in `txn`, once the writer lock is ours. Before it
    // writes any page, the newest commit is published: a reader checks that
    // nothing was published since its snapshot, and this writer may reuse
    // pages of the snapshot before the newest (docs/store.md).
    void begin_write(std::optional<Txn> &txn) {
        int dead = 0;
        mdb_reader_check(env.get(), &dead);
        pins.before_write(env);
        LockWaitNotice notice(lock_wait_notice, env.file());
        txn.emplace(env.get(), true, env.file());
        const std::uint64_t newest = txn->id() - 1;
        if (committed->forget_lost_commit(newest)) committed->persist();
        committed->publish(newest);
    }

    // Commits `txn` and publishes it, on disk too. LMDB ends a transaction
    // that changed nothing without a commit, and publishing its id would name
    // one that never comes: so every commit writes when it was made.
    // The environment does not sync the meta page in the commit
    // (MDB_NOMETASYNC): readers see the new snapshot as soon as its meta page
    // is written, and refuse it until it is published, so it is published
    // first and synced after. A busy disk then slows this command, never the
    // readers (who would wait commit_in_flight_wait, then refuse).
    void commit(Txn &txn) {
        const std::uint64_t id = txn.id();
        env.put(txn, meta, as_val(last_commit_key), {});
        txn.commit(env.file());  // the data pages on disk, the meta page written
        committed->publish(id);
        try {
            env.sync();
        } catch (const StoreError &e) {
            throw StoreError(e.kind(), std::string(e.what()) + ": the change is made and in force, but may not be on "
                                                               "disk yet (a crash could undo it)");
        }
        committed->acknowledge(id);
        committed->persist();
    }

    template <class Change>
    auto write(Change change) {
        return write_if(change, [](const auto &) { return true; });
    }

    // Runs `change` on a write transaction, and commits what it wrote if
    // `keep(its result)` (batch(): false is a dry run): here, or in cluster
    // mode through `remote`, after the transaction ended unwritten (the
    // writer lock is never held while etcd is asked).
    template <class Change, class Keep>
    auto write_if(Change change, Keep keep) {
        if (!remote) {
            // A change made here to a mirror of etcd would reach no other host,
            // and its agent would undo it at the next full read.
            return write_here([&](Txn &txn) {
                if (mirror_point_in(txn))
                    refuse(dir_of(env.file()) + " mirrors the token set in etcd (cluster mode): a change made here "
                           "would reach no other front-end and be undone by its agent; make it with cptoken --etcd "
                           "URL[,URL...] (or CPTOKEN_ETCD_ENDPOINTS)");
                return change(txn);
            }, keep);
        }
        for (unsigned conflicts = 0;; ++conflicts) {
            std::vector<StoreWrite> writes;
            std::optional<MirrorPoint> base;
            auto result = [&] {
                std::optional<Txn> txn;
                begin_write(txn);
                record_writes_into(writes);
                struct Stop {
                    Env &env;
                    ~Stop() { env.on_write = nullptr; }
                } stop{env};
                base = mirror_point_in(*txn);
                if (!base)
                    refuse(dir_of(env.file()) + " is not a mirror of etcd yet: writes go to etcd and reach this "
                           "store through its agent; start it (cptoken --db " + dir_of(env.file()) + " --etcd URL[,URL...] sync) and "
                           "wait for its first full read");
                return change(*txn);
            }();
            if (!keep(result) || writes.empty()) return result;
            if (remote->publish(writes, *base) == RemoteWriter::Outcome::committed) return result;
            if (conflicts >= max_conflicts)
                throw StoreError(StoreError::Kind::inconsistent,
                                 "other writes to etcd came first " + std::to_string(conflicts + 1) +
                                 " times in a row; nothing was written: try again");
        }
    }

    // write_if() on tokens.mdb, also in cluster mode (the mirror agent's own writes).
    template <class Change, class Keep>
    auto write_here(Change change, Keep keep) {
        std::optional<Txn> txn;
        begin_write(txn);
        auto result = change(*txn);
        if (keep(result)) commit(*txn);
        return result;
    }

    // Has `env` note every key a write transaction puts or deletes in
    // `writes`, once per key (the last value wins: etcd refuses a key twice
    // in one transaction). Meta keys stay local.
    void record_writes_into(std::vector<StoreWrite> &writes) {
        auto seen = std::make_shared<std::map<std::pair<StoreWrite::Database, std::string>, std::size_t>>();
        env.on_write = [this, &writes, seen](MDB_dbi dbi, std::string_view key, std::optional<std::string_view> value) {
            if (dbi != tokens && dbi != names) return;
            const auto database = dbi == tokens ? StoreWrite::Database::tokens : StoreWrite::Database::names;
            std::optional<std::string> stored;
            if (value) stored.emplace(*value);
            const auto [at, added] = seen->try_emplace({database, std::string(key)}, writes.size());
            if (added)
                writes.push_back({database, std::string(key), std::move(stored)});
            else
                writes[at->second].value = std::move(stored);
        };
    }

    // A signed number kept in meta as decimal text; 0 if absent.
    std::int64_t meta_number(Txn &txn, const char *key) const {
        const auto text = env.get_live(txn, meta, as_val(std::string_view(key)));
        if (!text) return 0;
        std::int64_t number = 0;
        const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), number);
        if (ec != std::errc() || end != text->data() + text->size() || number < 0)
            corrupt("the meta value " + std::string(key) + " in " + env.file() + " is not a revision");
        return number;
    }

    std::optional<MirrorPoint> mirror_point_in(Txn &txn) const {
        const auto cluster = env.get_live(txn, meta, as_val(std::string_view(mirror_cluster_key)));
        if (!cluster) return std::nullopt;
        return MirrorPoint{meta_number(txn, mirror_applied_key), meta_number(txn, mirror_gen_key), std::string(*cluster)};
    }

    // Every key and value of the tokens and names databases, as StoreWrite puts.
    void for_each_mirrored_entry(Txn &txn, const EntryVisitor &visit) const {
        for (const auto database : {StoreWrite::Database::tokens, StoreWrite::Database::names})
            env.for_each_entry(txn, database == StoreWrite::Database::tokens ? tokens : names,
                               [&](std::string_view key, std::string_view value) { visit(database, key, value); });
    }

    std::shared_ptr<RemoteWriter> remote;
    unsigned max_conflicts = 0;

    std::function<void(const std::string &)> lock_wait_notice;
    // recheck_file(): what the data file looked like at the last call.
    struct FileState {
        off_t size = -1;
        timespec mtime{}, ctime{};
    };
    mutable std::mutex file_state_mutex;
    mutable FileState file_state;
};

TokenStore::Impl::Impl(const std::string &dir, Access access, std::size_t cache_slots, std::size_t map_size)
    : env(path_in(dir, token_store_file), access, 0600, true, access == Access::read_write ? MDB_NOMETASYNC : 0,
          map_size),
      cache(cache_slots, StoreSettings::record_cache_bytes) {
    // Without a key of its own, find_token() hashes every token (as find() does).
    token_key_drawn = RAND_bytes(token_key.data(), static_cast<int>(token_key.size())) == 1;
    committed.emplace(env.file() + commit_record_suffix, access == Access::read_write);
    if (access == Access::read_only) check_same_directory(dir);
    env.check_header_pages();
    read([&](Txn &txn) {
        env.check_size(txn.id());  // before anything reads through the map
        meta = env.open_db(txn, "meta", false);
        tokens = env.open_db(txn, "tokens", false);
        names = env.open_db(txn, "names", false);
        check_schema_version(env, txn, meta);
        const auto store_id = env.get_live(txn, meta, as_val(store_id_key));
        if (!store_id || *store_id != committed->store_id())
            corrupt(env.file() + " is not the store its commit record " + env.file() + commit_record_suffix +
                    " was made for (another store's file put in place alone?). Move a whole store directory into "
                    "place instead (mod_cptoken(8), \"Store permissions and replacement\"), or, if this is the file "
                    "to use, adopt it with: cptoken --db " + dir + " init");
        return 0;
    }, true);
    // A writer that died between its commit and publishing it left the
    // record behind the data file: readers refuse the store until the owner
    // publishes it. The meta page says so (read without the writer lock, it
    // may be a commit in flight: then publishing waits for it).
    if (access == Access::read_write) {
        MDB_envinfo info{};
        mdb_env_info(env.get(), &info);
        if (info.me_last_txnid > committed->load() || committed->lost_commit_after(info.me_last_txnid)) {
            std::optional<Txn> txn;
            begin_write(txn);
        }
    }
}

TokenStore::TokenStore(const std::string &dir, Access access, std::size_t cache_slots, std::size_t map_size)
    : impl_(std::make_unique<Impl>(dir, access, cache_slots, map_size)) {}
TokenStore::~TokenStore() = default;

std::optional<TokenRecord> TokenStore::find(const Digest &digest) const {
    std::size_t snapshot = 0;
    std::optional<TokenRecord> record;
    find_at(digest, snapshot, true, record);
    return record;
}

void TokenStore::find_at(const Digest &digest, std::size_t &snapshot, bool by_digest,
                         std::optional<TokenRecord> &record) const {
    record.reset();
    // On every request: a token in use whose record was read at the
    // snapshot still published needs no transaction at all.
    if (by_digest && impl_->env.lock_free()) {
        snapshot = impl_->committed->load();
        if ((record = impl_->cache.get(digest, snapshot))) return;
    }
    struct Read {
        std::size_t snapshot;
        bool from_tree;
    };
    Read done{};
    try {
        done = impl_->read([&](Txn &txn) {
            const std::size_t id = txn.id();
            if (by_digest && (record = impl_->cache.get(digest, id))) return Read{id, false};
            record = impl_->record_of(txn, digest);  // again on each attempt: only the last, whole one counts
            return Read{id, true};
        });
    } catch (...) {
        record.reset();  // what a failed attempt read is not a record
        throw;
    }
    // Kept only once the read is known whole.
    if (by_digest && done.from_tree && record) impl_->cache.put(digest, done.snapshot, *record);
    snapshot = done.snapshot;
}

void TokenStore::find_token(std::string_view token, Digest &digest, std::optional<TokenRecord> &record) const {
    if (!impl_->env.lock_free() || !impl_->token_key_drawn) {
        digest = token_digest(token);
        record = find(digest);
        return;
    }
    // The same rule as find(): only an entry read at the snapshot published now.
    const SipTag tag = siphash128(impl_->token_key, token);
    if (impl_->cache.get_token(tag, impl_->committed->load(), digest, record)) return;
    digest = token_digest(token);
    std::size_t snapshot = 0;
    // Kept under the tag only (not also under the digest: one slot a token).
    find_at(digest, snapshot, false, record);
    if (record) impl_->cache.put_token(tag, snapshot, digest, *record);  // found: the read was whole
}

std::optional<StoredToken> TokenStore::find_by_name(std::string_view user, std::string_view name) const {
    return impl_->read([&](Txn &txn) { return impl_->by_name(txn, user, name); });
}

std::vector<StoredToken> TokenStore::list(std::string_view user) const {
    return impl_->read([&](Txn &txn) { return impl_->tokens_with_rotated(txn, user); });
}

std::size_t TokenStore::stored_count() const {
    return impl_->read([&](Txn &txn) {
        MDB_stat st{};
        check(mdb_stat(txn.get(), impl_->tokens, &st), "cannot read ", impl_->env.file());
        return static_cast<std::size_t>(st.ms_entries);
    });
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
            impl_->env.put(txn, impl_->names, as_val(name_key(record.user, record.name)), digest_bytes(token.digest));
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
            impl_->env.put(txn, impl_->names, as_val(name_key(user, record.name)), digest_bytes(token.digest));
            // Rotated tokens follow the name, so that their log lines and list rows say which token they replaced.
            for (StoredToken &old : impl_->predecessors_of(txn, record)) {
                old.record.name = record.name;
                impl_->env.put(txn, impl_->tokens, as_val(old.digest), encode_record(old.record));
            }
        }
        if (changes.expires) record.expires = *changes.expires;
        if (changes.allowed_ips) record.allowed_ips = *changes.allowed_ips;
        if (changes.scopes) record.scopes = *changes.scopes;
        if (changes.read_only) record.read_only = *changes.read_only;
        impl_->env.put(txn, impl_->tokens, as_val(token.digest), encode_record(record));
        return record;
    });
}

Rotation TokenStore::rotate(std::string_view user, std::string_view name, const Digest &new_digest, Seconds now,
                            Seconds grace) {
    return impl_->write([&](Txn &txn) {
        StoredToken old = impl_->must_find(txn, user, name);
        const std::string which = "token '" + std::string(name) + "' of " + std::string(user);
        if (old.record.expired_at(now))
            throw StoreError(StoreError::Kind::not_found, which + " expired at " + format_iso8601(old.record.expires) +
                                                              ": nothing to rotate; create a new token instead");
        if (impl_->record_of(txn, new_digest))
            throw StoreError(StoreError::Kind::duplicate, "a token with the same digest already exists");

        Rotation rotation;
        rotation.token.digest = new_digest;
        TokenRecord &fresh = rotation.token.record;
        fresh = old.record;  // user, name, expiry, allowlist, restrictions, and fields of a later version, verbatim
        fresh.created = now;
        fresh.imported_from.clear();
        fresh.rotated_at = 0;
        fresh.predecessors.clear();
        if (grace > 0) fresh.predecessors.push_back(old.digest);
        Seconds oldest_grace_end = 0;
        for (const StoredToken &older : impl_->predecessors_of(txn, old.record)) {
            if (older.record.expired_at(now)) {  // its grace is over: prune's work, done now that the link goes
                impl_->env.put_tombstone(txn, impl_->tokens, as_val(older.digest));
                continue;
            }
            fresh.predecessors.push_back(older.digest);
            if (oldest_grace_end == 0 || older.record.expires < oldest_grace_end) oldest_grace_end = older.record.expires;
        }
        if (fresh.predecessors.size() > max_predecessors)
            throw StoreError(StoreError::Kind::full,
                             "too many rotated tokens of " + which + " still in their grace window (at most " +
                                 std::to_string(max_predecessors) + "): revoke " + std::string(user) + " " +
                                 std::string(name) + " (all of them) or wait until " +
                                 format_iso8601(oldest_grace_end));

        old.record.rotated_at = now;
        old.record.predecessors.clear();  // now linked from the new token
        if (grace > 0) {
            // The grace end is the old token's expiry: readers that know nothing of rotation enforce it too.
            constexpr Seconds max = std::numeric_limits<Seconds>::max();
            const Seconds end = now > 0 && grace > max - now ? max : now + grace;
            if (old.record.never_expires() || end < old.record.expires) old.record.expires = end;
            impl_->env.put(txn, impl_->tokens, as_val(old.digest), encode_record(old.record));
            rotation.grace_ends = old.record.expires;
        } else {
            impl_->env.put_tombstone(txn, impl_->tokens, as_val(old.digest));
        }
        impl_->env.put(txn, impl_->tokens, as_val(new_digest), encode_record(fresh));
        impl_->env.put(txn, impl_->names, as_val(name_key(user, name)), digest_bytes(new_digest));
        return rotation;
    });
}

void TokenStore::revoke(std::string_view user, std::string_view name) {
    impl_->write([&](Txn &txn) {
        impl_->remove_with_predecessors(txn, impl_->must_find(txn, user, name));
        return 0;
    });
}

std::size_t TokenStore::revoke_all(std::string_view user) {
    if (user.empty()) throw StoreError(StoreError::Kind::not_found, "no user given");
    return impl_->write([&](Txn &txn) {
        std::size_t revoked = 0;
        for (const StoredToken &token : impl_->live_tokens(txn, user))
            revoked += impl_->remove_with_predecessors(txn, token);
        return revoked;
    });
}

PruneResult TokenStore::prune(Seconds now) {
    return impl_->write([&](Txn &txn) {
        PruneResult result;
        for (StoredToken &token : impl_->live_tokens(txn, {})) {
            const auto rotated = impl_->predecessors_of(txn, token.record);
            const bool in_grace = std::any_of(rotated.begin(), rotated.end(),
                                              [&](const StoredToken &old) { return !old.record.expired_at(now); });
            // An expired current token goes with its rotated tokens, once none
            // is in its grace (its expiry may have been edited to come first).
            if (token.record.expired_at(now) && !in_grace) {
                result.expired_removed += impl_->remove_with_predecessors(txn, token);
                continue;
            }
            std::vector<Digest> kept;
            for (const StoredToken &old : rotated) {
                if (!old.record.expired_at(now)) {
                    kept.push_back(old.digest);
                    continue;
                }
                impl_->env.put_tombstone(txn, impl_->tokens, as_val(old.digest));
                ++result.expired_removed;
            }
            if (kept == token.record.predecessors) continue;
            token.record.predecessors = std::move(kept);  // no link left to what is gone
            impl_->env.put(txn, impl_->tokens, as_val(token.digest), encode_record(token.record));
        }
        for (MDB_dbi dbi : {impl_->names, impl_->tokens})
            result.tombstones_dropped += impl_->env.drop_tombstones(txn, dbi, tombstone_cutoff_ns(now));
        return result;
    });
}

void TokenStore::batch(const std::function<bool(TokenBatch &batch)> &change) {
    impl_->write_if(
        [&](Txn &txn) {
            TokenBatch batch(*impl_, txn);
            return change(batch);
        },
        [](bool keep) { return keep; });
}

void TokenStore::write_through(std::shared_ptr<RemoteWriter> writer, unsigned max_conflicts) {
    impl_->remote = std::move(writer);
    impl_->max_conflicts = max_conflicts;
}

std::optional<MirrorPoint> TokenStore::mirror_point() const {
    return impl_->read([&](Txn &txn) { return impl_->mirror_point_in(txn); });
}

bool is_store_value(const StoreWrite &write) {
    if (!write.value) return true;
    const auto decoded = ls_decode(*write.value);
    if (!decoded) return false;
    if (write.database == StoreWrite::Database::tokens) {
        if (write.key.size() != Digest().size()) return false;
        return decoded->deleted() || decode_record(decoded->payload).has_value();
    }
    const auto nul = write.key.find('\0');
    if (nul == std::string::npos || nul == 0 || nul + 1 == write.key.size()) return false;
    return decoded->deleted() || decoded->payload.size() == Digest().size();
}

MirrorApplied TokenStore::apply_mirror(const std::vector<StoreWrite> &writes, const std::optional<MirrorPoint> &point,
                                       bool whole) {
    Impl &impl = *impl_;
    bool point_moved = false;
    return impl.write_here([&](Txn &txn) {
        MirrorApplied applied;
        const auto dbi_of = [&](StoreWrite::Database database) {
            return database == StoreWrite::Database::tokens ? impl.tokens : impl.names;
        };
        const auto remove = [&](MDB_dbi dbi, std::string_view key) {
            MDB_val k = as_val(key);
            const int rc = mdb_del(txn.get(), dbi, &k, nullptr);
            if (rc == MDB_SUCCESS) ++applied.changed;
            else if (rc != MDB_NOTFOUND) fail(rc, "cannot delete from " + impl.env.file());
        };
        // What a full read's walk learnt of each write's key in the store, so
        // that it is not looked up again: only for a key the read holds once.
        enum class Known : std::uint8_t { unknown, same, differs };
        std::vector<Known> known(writes.size(), Known::unknown);
        if (whole) {  // what etcd no longer holds goes
            for (const auto database : {StoreWrite::Database::tokens, StoreWrite::Database::names}) {
                // etcd's keys in the store's order, walked beside the store's: a full read
                // holds hundreds of thousands, so no lookup per key. etcd's order is already
                // the store's but for names whose user is a prefix of another's ("bob" and
                // "bob-x": '/' and '\0' sort apart): sorted only then.
                using Kept = std::pair<std::string_view, std::size_t>;  // key, index in writes
                const auto by_key = [](const Kept &a, const Kept &b) { return a.first < b.first; };
                std::vector<Kept> kept;
                for (std::size_t i = 0; i < writes.size(); ++i)
                    if (writes[i].database == database) kept.emplace_back(writes[i].key, i);
                if (!std::is_sorted(kept.begin(), kept.end(), by_key)) std::sort(kept.begin(), kept.end(), by_key);
                for (std::size_t i = 0; i < kept.size(); ++i)
                    if ((i == 0 || kept[i - 1].first != kept[i].first) &&
                        (i + 1 == kept.size() || kept[i + 1].first != kept[i].first))
                        known[kept[i].second] = Known::differs;  // absent, until the walk finds it
                auto next_kept = kept.begin();
                std::vector<std::string> gone;
                impl.env.for_each_entry(txn, dbi_of(database), [&](std::string_view stored, std::string_view value) {
                    // LMDB's order: bytes, as string_view's
                    while (next_kept != kept.end() && next_kept->first < stored) ++next_kept;
                    if (next_kept == kept.end() || next_kept->first != stored) {
                        gone.emplace_back(stored);
                        return;
                    }
                    Known &found = known[next_kept->second];
                    const StoreWrite &write = writes[next_kept->second];
                    if (found != Known::unknown) found = write.value && *write.value == value ? Known::same : Known::differs;
                });
                for (const std::string &gone_key : gone) remove(dbi_of(database), gone_key);
            }
        }
        for (std::size_t i = 0; i < writes.size(); ++i) {
            const StoreWrite &write = writes[i];
            const MDB_dbi dbi = dbi_of(write.database);
            if (write.key.empty() || write.key.size() > 511) {  // LMDB's limit: not a key this store makes
                ++applied.refused;
                continue;
            }
            if (!is_store_value(write)) {
                ++applied.refused;
                remove(dbi, write.key);
                continue;
            }
            if (!write.value) {
                remove(dbi, write.key);
                continue;
            }
            if (known[i] == Known::same) continue;
            MDB_val key = as_val(write.key);
            if (known[i] == Known::unknown) {
                MDB_val stored;
                const int rc = txn.read(dbi, &key, &stored);
                if (rc == MDB_SUCCESS && as_view(stored) == *write.value) continue;
                if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) fail(rc, "cannot read " + impl.env.file());
            }
            MDB_val value = as_val(*write.value);
            check(mdb_put(txn.get(), dbi, &key, &value, 0), "cannot write to ", impl.env.file());
            ++applied.changed;
        }
        const auto put_meta = [&](const char *key, const std::string &value) {
            const auto stored = impl.env.get_live(txn, impl.meta, as_val(std::string_view(key)));
            if (stored && *stored == value) return;
            impl.env.put(txn, impl.meta, as_val(std::string_view(key)), value);
            point_moved = true;
        };
        if (point) {
            put_meta(mirror_applied_key, std::to_string(point->applied_revision));
            put_meta(mirror_gen_key, std::to_string(point->gen_revision));
            put_meta(mirror_cluster_key, point->cluster_id);
        }
        return applied;
    }, [&](const MirrorApplied &applied) {
        // Nothing new (a reconciliation that found no drift): no commit, so
        // that readers keep their cached records and the file its size.
        return applied.changed > 0 || point_moved;
    });
}

std::vector<StoreWrite> TokenStore::all_writes() const {
    return impl_->read([&](Txn &txn) {
        std::vector<StoreWrite> out;
        impl_->for_each_mirrored_entry(txn, [&](StoreWrite::Database database, std::string_view key,
                                                std::string_view value) {
            out.push_back({database, std::string(key), std::string(value)});
        });
        return out;
    });
}

std::optional<MirrorPoint> TokenStore::mirror_snapshot(const EntryVisitor &visit) const {
    // A lock-free reader reads a snapshot again when a commit was in flight: `visit` would see keys twice.
    if (impl_->env.lock_free()) throw std::logic_error("mirror_snapshot() needs a store opened read_write");
    return impl_->read([&](Txn &txn) {
        impl_->for_each_mirrored_entry(txn, visit);
        return impl_->mirror_point_in(txn);
    });
}

std::optional<TokenRecord> TokenBatch::find(const Digest &digest) const { return impl_.record_of(txn_, digest); }

std::optional<StoredToken> TokenBatch::find_by_name(std::string_view user, std::string_view name) const {
    return impl_.by_name(txn_, user, name);
}

std::vector<StoredToken> TokenBatch::list(std::string_view user) const {
    return impl_.tokens_with_rotated(txn_, user);
}

void TokenBatch::put_many(const std::vector<StoredToken> &tokens) {
    // Every check first, so that a refusal writes nothing of the set.
    std::set<Digest> digests;
    std::set<std::string> new_keys;
    for (const StoredToken &token : tokens) {
        const TokenRecord &record = token.record;
        if (record.rotated()) throw std::invalid_argument("put_many writes current tokens, not rotated ones");
        digests.insert(token.digest);
        if (!new_keys.insert(name_key(record.user, record.name)).second)
            throw StoreError(StoreError::Kind::duplicate,
                             "the name '" + record.name + "' of user " + record.user + " is given twice");
    }
    for (const StoredToken &token : tokens) {
        const auto holder = impl_.by_name(txn_, token.record.user, token.record.name);
        if (holder && !digests.contains(holder->digest))  // a holder in the set gives the name up or keeps it
            throw StoreError(StoreError::Kind::duplicate, "user " + token.record.user +
                                                              " already has a token named '" + token.record.name + "'");
    }
    for (const StoredToken &token : tokens) {
        const auto stored = impl_.record_of(txn_, token.digest);
        if (!stored || stored->rotated()) continue;
        const std::string old_key = name_key(stored->user, stored->name);
        if (new_keys.contains(old_key)) continue;  // taken over by a token of the set
        const auto points_to = impl_.env.get_live(txn_, impl_.names, as_val(old_key));
        if (points_to && *points_to == digest_bytes(token.digest))
            impl_.env.put_tombstone(txn_, impl_.names, as_val(old_key));
    }
    for (const StoredToken &token : tokens) {
        impl_.env.put(txn_, impl_.tokens, as_val(token.digest), encode_record(token.record));
        impl_.env.put(txn_, impl_.names, as_val(name_key(token.record.user, token.record.name)),
                      digest_bytes(token.digest));
    }
}

std::size_t TokenBatch::revoke(std::string_view user, std::string_view name) {
    return impl_.remove_with_predecessors(txn_, impl_.must_find(txn_, user, name));
}

lmdb::Env &TokenBatch::env() const { return impl_.env; }
lmdb::Txn &TokenBatch::txn() const { return txn_; }

void TokenStore::recheck_file() const {
    impl_->env.check_header_pages();
    const struct stat st = impl_->read([&](Txn &txn) { return impl_->env.check_size(txn.id()); });
    std::lock_guard<std::mutex> lock(impl_->file_state_mutex);
    auto &seen = impl_->file_state;
    const auto same_time = [](const timespec &a, const timespec &b) {
        return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
    };
    if (st.st_size != seen.size || !same_time(st.st_mtim, seen.mtime) || !same_time(st.st_ctim, seen.ctime))
        impl_->cache.clear();
    seen = {st.st_size, st.st_mtim, st.st_ctim};
}

void TokenStore::set_lock_wait_notice(std::function<void(const std::string &message)> notice) {
    impl_->lock_wait_notice = std::move(notice);
}

std::pair<dev_t, ino_t> TokenStore::data_file_id() const { return impl_->env.file_id(); }

std::uint64_t TokenStore::read_retries() const noexcept { return impl_->read_retries.load(std::memory_order_relaxed); }

void TokenStore::backup(const std::string &file) {
    // Under the writer lock: the copy is the newest snapshot, and stays it
    // until the copy is on disk.
    std::optional<Txn> txn;
    impl_->begin_write(txn);
    check(mdb_env_copy2(impl_->env.get(), file.c_str(), MDB_CP_COMPACT), "cannot back up to ", file);
}

}  // namespace cptoken

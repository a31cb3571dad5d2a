// SPDX-License-Identifier: Apache-2.0
#include "store/lmdb_env.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <optional>

namespace cptoken::lmdb {

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

namespace {
std::optional<gid_t> httpd_group;  // set once, before httpd's children start threads
}

// The command that (re)makes the store in DIR for the group httpd runs as:
// the module knows it; the tool does not, and says what to put in.
std::string init_command(const std::string &dir) {
    const std::string command = "cptoken --db " + dir + " init --group ";
    if (httpd_group) return command + group_name(*httpd_group);
    return command + "GROUP, GROUP being the group httpd runs as (e.g. www-data)";
}

// The directory a store file is in.
std::string dir_of(const std::string &file) {
    const auto slash = file.rfind('/');
    return slash == std::string::npos ? "." : file.substr(0, slash);
}

[[noreturn]] void refuse(const std::string &message) { throw StoreError(StoreError::Kind::access, message); }

// Permission denied opening FILE: who this process is, the store's group,
// and the command that gives the store to this process's group; or, for a
// writer of tokens that does not own the store, that root is needed.
[[noreturn]] void permission_denied(const std::string &file, Access access) {
    const std::string dir = dir_of(file);
    struct stat st{};
    const bool have_dir = ::stat(dir.c_str(), &st) == 0;
    // Tokens are root's to change (cptoken init gives the store to root): joining httpd's group, which the
    // other message suggests, would not let this user write them, and must not.
    if (access == Access::read_write && file.ends_with(std::string("/") + token_store_file) &&
        !(have_dir && st.st_uid == ::geteuid()))
        refuse("cannot change the tokens in " + dir + ": this needs root" +
               (have_dir && st.st_uid != 0 ? " or the store's owner, " + user_name(st.st_uid) : std::string()) +
               " (this process runs as user " + user_name(::geteuid()) + "); run cptoken as root, e.g. with sudo");
    std::string message = "cannot open " + file + ": Permission denied (this process runs as user " +
                          user_name(::geteuid()) + ", group " + group_name(::getegid());
    if (have_dir) message += "; the store's group is " + group_name(st.st_gid);
    // httpd: the store must be given to its group. Anyone else reads as root or as a member of the
    // store's group (which should be httpd's): giving the store to the caller's group would lock httpd out.
    if (httpd_group) refuse(message + "); give the store to this group with: " + init_command(dir));
    refuse(message + "); run cptoken as root, e.g. with sudo" +
           (have_dir && st.st_gid != 0 ? ", or as a member of group " + group_name(st.st_gid) : std::string()));
}

static std::string no_store_text(const std::string &dir) {
    return "no token store in " + dir + "; create it with: " + init_command(dir);
}

[[noreturn]] void no_store(const std::string &dir) { throw StoreError(StoreError::Kind::missing, no_store_text(dir)); }

// What the admin can do about a failed write, for the failures that are the
// filesystem's or the map's and not the store's. Every LMDB write lands whole
// at commit or not at all, so each can say that nothing was written.
static const char *remedy(int rc) {
    switch (rc) {
        case ENOSPC:
            return "the filesystem holding it is full: free space there and run the command again; nothing was "
                   "written";
        case EDQUOT:
            return "the disk quota of its owner on the filesystem holding it is used up: free space or raise the "
                   "quota and run the command again; nothing was written";
        case EROFS:
            return "the filesystem holding it is mounted read-only: remount it read-write (mount -o remount,rw) "
                   "and run the command again; nothing was written";
        case MDB_MAP_FULL:
            // A full map has room only for small changes: a large prune copies
            // pages to delete and can fail the same way (t/unit/test_store.cpp).
            return "the store has reached its map size (16 GiB, StoreSettings::map_size): nothing was written. "
                   "Grow the map: raise StoreSettings::map_size in lib/store/store.hpp, rebuild and reinstall cptoken "
                   "and mod_cptoken, and restart httpd. Until then only small changes fit (single revokes, "
                   "a `cptoken prune` with little to drop)";
        case MDB_TXN_FULL:
            return "the change is too large for one LMDB transaction: split it into smaller ones; nothing was "
                   "written";
        default: return nullptr;
    }
}

[[noreturn]] void fail(int rc, const std::string &what) {
    static_assert(StoreSettings::map_size == std::size_t{16} << 30, "remedy() names the map size");
    StoreError::Kind kind = StoreError::Kind::access;
    switch (rc) {
        case ENOENT: kind = StoreError::Kind::missing; break;
        case MDB_CORRUPTED: case MDB_INVALID: case MDB_VERSION_MISMATCH: case MDB_INCOMPATIBLE:
        case MDB_PAGE_NOTFOUND: case MDB_BAD_DBI: case MDB_PANIC:
            kind = StoreError::Kind::corrupt; break;
        case MDB_READERS_FULL: case MDB_MAP_FULL: case MDB_MAP_RESIZED: case MDB_TXN_FULL: case ENOSPC: case EDQUOT:
            kind = StoreError::Kind::full; break;
        default: break;
    }
    const char *what_to_do = remedy(rc);
    throw StoreError(kind, what + ": " + (what_to_do ? what_to_do : mdb_strerror(rc)));
}

// The refusal for a store file that is a symlink or not a regular file.
[[noreturn]] void refuse_odd_file(const std::string &path, mode_t mode) {
    refuse(path + " is " + (S_ISLNK(mode) ? "a symbolic link" : "not a regular file") +
           ": refusing to use it as a store file; remove it, then run: " + init_command(dir_of(path)));
}

// Throws unless rc is MDB_SUCCESS; the message, `what` followed by
// `subject` (usually a file), is only put together then: some calls run on
// every request.
void check(int rc, std::string_view what, std::string_view subject) {
    if (rc != MDB_SUCCESS) fail(rc, std::string(what).append(subject));
}

[[noreturn]] void corrupt(const std::string &what) { throw StoreError(StoreError::Kind::corrupt, what); }

void check_meta_page_sizes(const std::string &file) {
    // Where liblmdb 0.9 (64-bit) keeps them in a meta page: the page header
    // (16 bytes), then the meta's magic (4), and the page size in the first
    // database record's padding (mm_dbs[FREE_DBI].md_pad), 24 bytes further.
    constexpr off_t magic_at = 16, page_size_at = 40;
    constexpr std::uint32_t lmdb_magic = 0xBEEFC0DE;
    const int fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    // The second meta page is where the first one's page size puts it, as liblmdb reads it.
    off_t at = 0;
    for (int page = 0; page < 2; ++page) {
        std::uint32_t magic = 0, page_size = 0;
        if (::pread(fd, &magic, sizeof magic, at + magic_at) != sizeof magic || magic != lmdb_magic ||
            ::pread(fd, &page_size, sizeof page_size, at + page_size_at) != sizeof page_size)
            break;
        if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) != 0) {
            ::close(fd);
            corrupt(file + " is damaged: its meta page " + std::to_string(page) + " names a page size of " +
                    std::to_string(page_size) + " bytes, which LMDB never writes; restore it from a backup "
                    "(cptoken backup)");
        }
        at = page_size;
    }
    ::close(fd);
}

namespace {

// Where the guarded call running in this thread, if any, goes on when
// liblmdb fails an assertion. Initial-exec, as map_fault_guard's: a slot of
// its own in each thread from the start.
__attribute__((tls_model("initial-exec"))) thread_local sigjmp_buf *t_assertion_exit = nullptr;

// liblmdb calls this, then prints the assertion and aborts, unless it does
// not return. Leaving liblmdb's frames by siglongjmp is safe for what is
// guarded: reads, which hold no lock and allocate nothing, in a transaction
// that is then aborted (Txn::read).
void on_assertion(MDB_env *, const char *) {
    if (sigjmp_buf *const exit = t_assertion_exit) siglongjmp(*exit, 1);
}

// Runs `call` (a liblmdb read) with this thread's assertions leading back
// here. Nothing with a destructor lives across sigsetjmp's second return.
template <class Call>
int guarded(Call call) noexcept {
    sigjmp_buf exit;
    if (sigsetjmp(exit, 0) != 0) {  // no mask saved: no system call
        t_assertion_exit = nullptr;
        return MDB_CORRUPTED;
    }
    t_assertion_exit = &exit;
    const int rc = call();
    t_assertion_exit = nullptr;
    return rc;
}

}  // namespace

void guard_assertions(MDB_env *env) noexcept { mdb_env_set_assert(env, on_assertion); }

int Txn::read(MDB_dbi dbi, MDB_val *key, MDB_val *data) noexcept {
    MDB_txn *const txn = txn_;
    return noted(guarded([=] { return mdb_get(txn, dbi, key, data); }));
}

int Txn::read(MDB_cursor *cursor, MDB_val *key, MDB_val *data, MDB_cursor_op op) noexcept {
    return noted(guarded([=] { return mdb_cursor_get(cursor, key, data, op); }));
}

}  // namespace cptoken::lmdb

void cptoken::set_httpd_group(gid_t gid) noexcept { lmdb::httpd_group = gid; }

std::optional<std::string> cptoken::missing_store(const std::string &dir) {
    struct stat st{};
    if (::stat(lmdb::path_in(dir, token_store_file).c_str(), &st) == 0) return std::nullopt;
    return lmdb::no_store_text(dir);
}

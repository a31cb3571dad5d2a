// SPDX-License-Identifier: Apache-2.0
#include "admin/user_written_file.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "store/lmdb_env.hpp"  // user_name, mode_text
#include "store/open_fd.hpp"

namespace cptoken {

namespace {

namespace fs = std::filesystem;
using lmdb::mode_text;
using lmdb::user_name;

// Root, and the user this process runs as (see the header).
bool is_root_here(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

// The uid of the user named `name`; nullopt if there is none.
std::optional<uid_t> uid_of(const std::string &name) {
    char buffer[4096];
    passwd entry{}, *found = nullptr;
    if (::getpwnam_r(name.c_str(), &entry, buffer, sizeof buffer, &found) != 0 || !found) return std::nullopt;
    return found->pw_uid;
}

const char *writers_of(mode_t mode) { return (mode & S_IWOTH) ? "anyone" : "its group"; }

const char *kind_of(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    return "of an unknown kind";
}

std::string size_text(std::size_t bytes) {
    if (bytes % (std::size_t{1} << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
    return std::to_string(bytes) + " bytes";
}

// Whoever can change a directory's entries can put any file in it, or swap
// one file (or directory) for another.
void check_directory(const OpenFd &fd, const std::string &name, bool is_last) {
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0)
        throw FileRefused("cannot stat the directory " + name + ": " + std::strerror(errno));
    const std::string why = ": only root may be able to put token files there";
    if (!is_root_here(st.st_uid))
        throw FileRefused("the directory " + name + " is owned by " + user_name(st.st_uid) + why);
    // Sticky above: others may add entries, but not rename or remove root's, so the way down stays root's.
    const bool others_write = st.st_mode & (S_IWGRP | S_IWOTH);
    if (others_write && (is_last || !(st.st_mode & S_ISVTX)))
        throw FileRefused("the directory " + name + " can be written by " + writers_of(st.st_mode) + " (mode " +
                          mode_text(st.st_mode) + ")" + why);
}

// An O_PATH descriptor of `dir`, opened from "/" one directory at a time
// without following symlinks, each checked on the way.
OpenFd open_checked_directory(const std::string &dir) {
    std::error_code error;
    const fs::path real = fs::canonical(dir, error);
    if (error) throw FileRefused("cannot resolve the directory " + dir + ": " + error.message());
    OpenFd fd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) throw FileRefused(std::string("cannot open /: ") + std::strerror(errno));
    fs::path so_far = "/";
    check_directory(fd, so_far.string(), real == so_far);
    for (const fs::path &part : real.relative_path()) {
        so_far /= part;
        OpenFd next(::openat(fd.get(), part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (next.get() < 0)
            throw FileRefused("cannot open the directory " + so_far.string() + ": " + std::strerror(errno));
        fd = std::move(next);
        check_directory(fd, so_far.string(), so_far == real);
    }
    return fd;
}

}  // namespace

void check_directory_only_root_writes(const std::string &dir) { open_checked_directory(dir); }

std::string read_user_written_file(const std::string &path, const std::string &user, std::size_t max_bytes) {
    const fs::path file(path);
    const OpenFd dir = open_checked_directory(file.parent_path().string());
    // O_NONBLOCK: opening a FIFO to read would otherwise wait for a writer, forever.
    const OpenFd fd(
        ::openat(dir.get(), file.filename().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ELOOP) throw FileRefused("a symbolic link: not followed");
        throw FileRefused(std::string("cannot open: ") + std::strerror(errno));
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) throw FileRefused(std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw FileRefused(std::string("not a regular file (") + kind_of(st.st_mode) + ")");
    if (!is_root_here(st.st_uid) && st.st_uid != uid_of(user))
        throw FileRefused("owned by " + user_name(st.st_uid) + ", but only root or the user it names (" + user +
                          ") may own it");
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        throw FileRefused(std::string("can be written by ") + writers_of(st.st_mode) + " (mode " +
                          mode_text(st.st_mode) + "): only its owner may be able to write it");
    const std::string too_large = "larger than " + size_text(max_bytes) + ": not read";
    if (static_cast<std::size_t>(st.st_size) > max_bytes) throw FileRefused(too_large);
    // The size may change while it is read: the bound holds for what is read, not for what fstat said.
    std::string text(max_bytes + 1, '\0');
    std::size_t used = 0;
    while (used < text.size()) {
        const ssize_t got = ::read(fd.get(), text.data() + used, text.size() - used);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw FileRefused(std::string("cannot read: ") + std::strerror(errno));
        if (got == 0) break;
        used += static_cast<std::size_t>(got);
    }
    if (used > max_bytes) throw FileRefused(too_large);
    text.resize(used);
    return text;
}

}  // namespace cptoken

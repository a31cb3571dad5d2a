// SPDX-License-Identifier: Apache-2.0
#include "store/unprivileged.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "store/drop_privileges.hpp"
#include "store/lmdb_env.hpp"
#include "store/store.hpp"

namespace cptoken {

namespace {

// The child's answer ends with one of these lines: anything else (a child
// killed midway) is a partial answer.
constexpr std::string_view end_line = "\x01" "end";
constexpr std::string_view error_prefix = "\x01" "error ";

[[noreturn]] void child(int out_fd, uid_t uid, gid_t gid,
                        const std::function<void(const std::function<void(std::string_view)> &)> &work) {
    std::FILE *out = ::fdopen(out_fd, "w");
    if (!out) ::_exit(3);
    const auto send = [out](std::string_view line) {
        if (line.size() > unprivileged_line_max) line = line.substr(0, unprivileged_line_max);
        std::fwrite(line.data(), 1, line.size(), out);
        std::fputc('\n', out);
    };
    // Nothing of this process's but the pipe goes on: a descriptor or a
    // shared mapping of the token store would let a child compromised
    // through what it parses write where its user cannot.
    if (!shed_inherited_state({out_fd})) ::_exit(3);
    if (!become_for_good(uid, gid)) {
        send(std::string(error_prefix) + "access cannot become user " + lmdb::user_name(uid) + " of group " +
             lmdb::group_name(gid) + ": " + std::strerror(errno));
        std::fclose(out);
        ::_exit(1);
    }
    int status = 0;
    try {
        work(send);
        send(end_line);
    } catch (const StoreError &e) {
        send(std::string(error_prefix) + std::to_string(static_cast<int>(e.kind())) + " " + e.what());
        status = 1;
    } catch (const std::exception &e) {
        send(std::string(error_prefix) + std::to_string(static_cast<int>(StoreError::Kind::access)) + " " + e.what());
        status = 1;
    }
    std::fclose(out);
    ::_exit(status);
}

bool in_group(gid_t gid) {
    if (::getegid() == gid) return true;
    const int count = ::getgroups(0, nullptr);
    std::vector<gid_t> groups(count > 0 ? static_cast<std::size_t>(count) : 0);
    if (count > 0 && ::getgroups(count, groups.data()) != count) return false;
    return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

// What the child said, fit for a terminal.
std::string printable(std::string_view text) {
    std::string out;
    for (const char c : text) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
    return out;
}

}  // namespace

void run_as_user(uid_t uid, gid_t gid, std::string_view what,
                 const std::function<void(const std::function<void(std::string_view)> &send)> &work,
                 const std::function<void(std::string_view line)> &receive) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw StoreError(StoreError::Kind::access, std::string("pipe: ") + std::strerror(errno));
    std::fflush(nullptr);  // nothing buffered here is written twice
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int err = errno;
        ::close(fds[0]), ::close(fds[1]);
        throw StoreError(StoreError::Kind::access, std::string("fork: ") + std::strerror(err));
    }
    if (pid == 0) {
        ::close(fds[0]);
        child(fds[1], uid, gid, work);
    }
    ::close(fds[1]);
    std::FILE *in = ::fdopen(fds[0], "r");
    std::string line, failure;
    bool ended = false, too_long = false;
    std::string error;
    try {
        for (int c; in && (c = std::fgetc(in)) != EOF;) {
            if (c != '\n') {
                if (line.size() >= unprivileged_line_max + 64) too_long = true;
                if (!too_long) line.push_back(static_cast<char>(c));
                continue;
            }
            if (too_long) break;
            if (ended || !error.empty()) {  // nothing may follow the last line
                failure = "said more after its last line";
                break;
            }
            if (line == end_line)
                ended = true;
            else if (line.starts_with(error_prefix))
                error = line.substr(error_prefix.size());
            else
                receive(line);
            line.clear();
        }
    } catch (...) {
        ::kill(pid, SIGKILL);
        if (in) std::fclose(in);
        ::waitpid(pid, nullptr, 0);
        throw;
    }
    if (in) std::fclose(in); else ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (too_long) failure = "sent a line longer than " + std::to_string(unprivileged_line_max) + " bytes";
    if (!error.empty()) {
        // "KIND MESSAGE" from a StoreError of the child; "access MESSAGE" if it could not drop.
        const auto space = error.find(' ');
        int kind = static_cast<int>(StoreError::Kind::access);
        if (space != std::string::npos && error.substr(0, space) != "access") {
            try {
                kind = std::stoi(error.substr(0, space));
            } catch (const std::exception &) {
            }
            if (kind < 0 || kind > static_cast<int>(StoreError::Kind::inconsistent))
                kind = static_cast<int>(StoreError::Kind::access);
        }
        throw StoreError(static_cast<StoreError::Kind>(kind),
                         printable(space == std::string::npos ? error : error.substr(space + 1)));
    }
    if (failure.empty() && !(ended && WIFEXITED(status) && WEXITSTATUS(status) == 0))
        failure = WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                                      : "ended without its answer";
    if (!failure.empty())
        throw StoreError(StoreError::Kind::access, "the process " + std::string(what) + " " + failure);
}

void run_unprivileged(gid_t gid, const std::function<void(const std::function<void(std::string_view)> &send)> &work,
                      const std::function<void(std::string_view line)> &receive) {
    run_as_user(nobody_uid(), gid, "reading the usage store as user nobody", work, receive);
}

void as_store_group(const std::string &dir,
                    const std::function<void(const std::function<void(std::string_view)> &send)> &work,
                    const std::function<void(std::string_view line)> &receive) {
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) {
        if (errno == ENOENT) lmdb::no_store(dir);
        lmdb::fail(errno, "cannot open " + dir);
    }
    const gid_t gid = st.st_gid;
    if (::geteuid() != 0) {
        // The store's owner writes tokens: more privileged than httpd's
        // group, it must not map what that group writes. Anyone else here is
        // in that group (or cannot open the files anyway).
        struct stat usage_st{};
        const bool has_usage = ::lstat(lmdb::path_in(dir, usage_store_file).c_str(), &usage_st) == 0 || errno != ENOENT;
        if (st.st_uid == ::geteuid() && !in_group(gid) && has_usage)
            lmdb::refuse("user " + lmdb::user_name(st.st_uid) + " owns the store in " + dir +
                         " and is not in its group " + lmdb::group_name(gid) +
                         ", which writes the usage store: the store's owner never opens that store; root's cptoken "
                         "reads it, as user nobody of group " + lmdb::group_name(gid));
        work(receive);
        return;
    }
    run_unprivileged(
        gid,
        [&](const std::function<void(std::string_view)> &send) {
            if (::access(dir.c_str(), X_OK) != 0)
                lmdb::refuse("cannot reach " + dir + " as user nobody of group " + lmdb::group_name(gid) +
                             ", as which root reads the usage store: the directories above it must let its group "
                             "(or others) in (x), as httpd's children need too");
            work(send);
        },
        receive);
}

}  // namespace cptoken

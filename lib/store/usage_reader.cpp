// SPDX-License-Identifier: Apache-2.0
#include "store/usage_reader.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <string_view>
#include <thread>

#include "store/drop_privileges.hpp"
#include "store/lmdb_env.hpp"
#include "store/open_fd.hpp"
#include "store/unprivileged.hpp"
#include "token/timeutil.hpp"

namespace cptoken {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view end_line = "end";
constexpr std::string_view error_prefix = "error ";
constexpr std::string_view ready_line = "ready";
// A question's line: a digest in hex.
constexpr std::size_t question_line_max = 2 * std::tuple_size_v<Digest>;
// How long start_usage_reader waits for the reader to say it is ready.
constexpr std::chrono::seconds start_timeout{10};

std::string printable(std::string_view text) {
    std::string out;
    for (const char c : text.substr(0, unprivileged_line_max - 64)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
    return out;
}

// "error KIND MESSAGE" for a StoreError, on one line.
std::string error_line(const StoreError &e) {
    return std::string(error_prefix) + std::to_string(static_cast<int>(e.kind())) + " " + printable(e.what());
}

// The StoreError an error line stands for; its kind as sent if it is one.
StoreError error_of(std::string_view line, const std::string &from) {
    std::string_view rest = line.substr(error_prefix.size());
    const auto space = rest.find(' ');
    int kind = static_cast<int>(StoreError::Kind::access);
    if (space == 1 && rest[0] >= '0' && rest[0] <= '0' + static_cast<int>(StoreError::Kind::inconsistent)) {
        kind = rest[0] - '0';
        rest = rest.substr(2);
    }
    return StoreError(static_cast<StoreError::Kind>(kind), from + ": " + printable(rest));
}

int milliseconds_until(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 60000));
}

// Waits until `fd` is ready for `events`; false once `deadline` has passed.
bool wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int timeout = milliseconds_until(deadline);
        const int ready = ::poll(&p, 1, timeout);
        if (ready > 0) return true;
        if (ready == 0 && timeout == 0) return false;
        if (ready < 0 && errno != EINTR) return false;
    }
}

// Writes all of `data` to `fd` (a socket or a pipe) by `deadline`.
bool write_all(int fd, std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
        if (!wait_for(fd, POLLOUT, deadline)) return false;
        struct stat st{};
        const bool is_socket = ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
        const ssize_t n = is_socket ? ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT)
                                    : ::write(fd, data.data(), data.size());
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

// Lines from a descriptor, each at most `line_max` bytes, by a deadline.
class LineReader {
public:
    LineReader(int fd, std::size_t line_max) : fd_(fd), line_max_(line_max) {}

    // The next line, without its '\n'; nullopt at the end of the stream.
    // Throws StoreError (access) with `what` on a line too long, a line cut
    // short by the end, a read error or the deadline.
    std::optional<std::string> next(Clock::time_point deadline, const std::string &what) {
        for (;;) {
            const auto newline = buffer_.find('\n');
            if (newline != std::string::npos) {
                std::string line = buffer_.substr(0, newline);
                buffer_.erase(0, newline + 1);
                if (line.size() > line_max_) break;
                return line;
            }
            if (buffer_.size() > line_max_) break;
            if (ended_) {
                if (buffer_.empty()) return std::nullopt;
                throw StoreError(StoreError::Kind::access, what + ": the answer ends in the middle of a line");
            }
            if (!wait_for(fd_, POLLIN, deadline))
                throw StoreError(StoreError::Kind::access,
                                 what + ": no answer within " + std::to_string(usage_reader_timeout.count()) + " s");
            char chunk[4096];
            const ssize_t n = ::read(fd_, chunk, sizeof chunk);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (n < 0) throw StoreError(StoreError::Kind::access, what + ": " + std::strerror(errno));
            if (n == 0) ended_ = true;
            buffer_.append(chunk, static_cast<std::size_t>(n));
        }
        throw StoreError(StoreError::Kind::corrupt, what + ": a line longer than " + std::to_string(line_max_) + " bytes");
    }

private:
    int fd_;
    std::size_t line_max_;
    std::string buffer_;
    bool ended_ = false;
};

// ------------------------------------------------------------ the reader

// A unix socket address for PATH. Throws StoreError (access) if too long.
sockaddr_un socket_address(const std::string &path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof address.sun_path)
        lmdb::refuse("usage reader socket " + path + ": a unix socket path is 1 to " +
                     std::to_string(sizeof address.sun_path - 1) + " bytes long");
    std::memcpy(address.sun_path, path.data(), path.size());
    return address;
}

// Root binds in the socket's directory and gives the socket away: only a
// directory of root's that no one else can write, so that nobody can put a
// link or another file where root creates and changes the socket.
void check_socket_directory(const std::string &path) {
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    struct stat st{};
    if (::lstat(dir.c_str(), &st) != 0) lmdb::fail(errno, "usage reader socket " + path + ": cannot stat " + dir);
    if (!S_ISDIR(st.st_mode))
        lmdb::refuse("usage reader socket " + path + ": " + dir + " is not a directory (a symbolic link?); name "
                     "the socket in a real directory of root's");
    if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        lmdb::refuse("usage reader socket " + path + ": " + dir + " is " +
                     (st.st_uid != 0 ? "owned by " + lmdb::user_name(st.st_uid)
                                     : "mode " + lmdb::mode_text(st.st_mode)) +
                     "; the socket's directory must be root's and writable by no one else (e.g. mkdir -m 0755 " +
                     dir + ")");
}

// A listening socket at PATH, 0600 and `client_uid`'s, replacing a socket
// left there before (never another kind of file).
int listen_at(const std::string &path, uid_t client_uid) {
    const sockaddr_un address = socket_address(path);
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) lmdb::refuse("usage reader socket " + path + " exists and is not a socket");
        if (::unlink(path.c_str()) != 0) lmdb::fail(errno, "cannot remove the old socket " + path);
    }
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) lmdb::fail(errno, "cannot make the usage reader's socket");
    ::umask(0177);  // this process's own: 0600 from the moment it exists
    if (::bind(fd, reinterpret_cast<const sockaddr *>(&address), sizeof address) != 0)
        lmdb::fail(errno, "cannot bind the usage reader's socket to " + path);
    // Connections wait until listen(): no one gets in before it is the client's.
    if (::lchown(path.c_str(), client_uid, static_cast<gid_t>(-1)) != 0 || ::chmod(path.c_str(), 0600) != 0)
        lmdb::fail(errno, "cannot give the usage reader's socket " + path + " to user " + lmdb::user_name(client_uid));
    if (::listen(fd, 16) != 0) lmdb::fail(errno, "cannot listen on " + path);
    // A usage lock file its children may have to make must stay the group's to write (httpd's children).
    ::umask(0007);
    return fd;
}

// The signals httpd's parent handles or blocks are not the reader's: the
// defaults, so that SIGTERM ends it (and SIGALRM its answering children);
// SIGPIPE ignored, for an asker gone away.
void default_signals() {
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_UNBLOCK, &all, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    ::signal(SIGPIPE, SIG_IGN);
}

// In a child of the reader, for one connection: reads the question, opens
// the usage store, answers, and ends. alarm() bounds it all.
[[noreturn]] void answer(int connection, const std::string &dir) {
    ::alarm(static_cast<unsigned>(usage_reader_timeout.count()) + 1);
    const auto deadline = Clock::now() + usage_reader_timeout;
    std::string reply;
    try {
        LineReader lines(connection, question_line_max);
        std::vector<Digest> asked;
        for (;;) {
            const auto line = lines.next(deadline, "the question");
            if (!line) throw StoreError(StoreError::Kind::access, "the question ends without its empty line");
            if (line->empty()) break;
            const auto digest = digest_from_hex(*line);
            if (!digest) throw StoreError(StoreError::Kind::access, "the question holds a line that is not a digest");
            if (asked.size() == usage_reader_max_digests)
                throw StoreError(StoreError::Kind::access, "the question holds more than " +
                                                               std::to_string(usage_reader_max_digests) + " digests");
            asked.push_back(*digest);
        }
        const UsageStore store(dir, Access::read_only);
        for (const Digest &digest : asked)
            if (const auto usage = store.find(digest)) reply += usage_line(usage_key(digest), *usage) + "\n";
        reply += std::string(end_line) + "\n";
    } catch (const StoreError &e) {
        reply = error_line(e) + "\n";
    } catch (const std::exception &e) {
        reply = error_line(StoreError(StoreError::Kind::access, e.what())) + "\n";
    }
    write_all(connection, reply, deadline);
    ::_exit(0);
}

// Takes connections one at a time, from the client and root only, each
// answered by a child of its own.
[[noreturn]] void serve(int listener, uid_t client_uid, const std::string &dir) {
    for (;;) {
        const int connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (connection < 0) {
            if (errno != EINTR && errno != ECONNABORTED) std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
        }
        ucred peer{};
        socklen_t size = sizeof peer;
        const bool allowed = ::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &peer, &size) == 0 &&
                             (peer.uid == client_uid || peer.uid == 0);
        const pid_t worker = allowed ? ::fork() : -1;
        if (worker == 0) {
            ::close(listener);
            answer(connection, dir);
        }
        ::close(connection);
        if (worker > 0)
            while (::waitpid(worker, nullptr, 0) < 0 && errno == EINTR) {
            }
    }
}

// The reader, from fork() on: binds as root, gives everything up, says it
// is ready (or why not) on `ready`, serves.
[[noreturn]] void reader(const std::string &dir, const std::string &socket, uid_t client_uid, gid_t gid, int ready,
                         pid_t parent) {
    const auto tell = [ready](const std::string &line) {
        write_all(ready, line + "\n", Clock::now() + start_timeout);
    };
    try {
        // A session of its own: what httpd's parent signals to its process
        // group (prefork: SIGTERM to stop, SIGUSR1 for a graceful restart)
        // is for its children; the reader goes with the parent (below).
        ::setsid();
        default_signals();
        const int listener = listen_at(socket, client_uid);
        if (!shed_inherited_state({listener, ready}))
            lmdb::refuse("the usage reader cannot close what it inherited");
        if (!become_for_good(nobody_uid(), gid))
            lmdb::refuse("the usage reader cannot become user nobody of group " + lmdb::group_name(gid) + ": " +
                         std::strerror(errno));
        // After the drop, which clears it; and the parent may be gone already.
        if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(1);
        ::prctl(PR_SET_NAME, "cptoken-usage");  // what ps and top show: not another httpd
        if (::access(dir.c_str(), X_OK) != 0)
            lmdb::refuse("cannot reach " + dir + " as user nobody of group " + lmdb::group_name(gid) +
                         ", as which the usage reader reads the usage store: the directories above it must let its "
                         "group (or others) in (x), as httpd's children need too");
        tell(std::string(ready_line));
        ::close(ready);
        serve(listener, client_uid, dir);
    } catch (const StoreError &e) {
        tell(error_line(e));
    } catch (const std::exception &e) {
        tell(error_line(StoreError(StoreError::Kind::access, e.what())));
    }
    ::_exit(1);
}

// ------------------------------------------------------------ the asker

// A connection to the reader at SOCKET, by `deadline`.
OpenFd connect_to(const std::string &socket, Clock::time_point deadline) {
    const sockaddr_un address = socket_address(socket);
    OpenFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd.get() < 0) lmdb::fail(errno, "cannot make a socket");
    for (;;) {
        if (::connect(fd.get(), reinterpret_cast<const sockaddr *>(&address), sizeof address) == 0) return fd;
        // A full backlog (the reader busy with another question): again, until the deadline.
        if ((errno == EAGAIN || errno == EINTR) && Clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        throw StoreError(StoreError::Kind::access,
                         "cannot reach the usage reader at " + socket + ": " + std::strerror(errno));
    }
}

// One question of at most usage_reader_max_digests distinct digests.
void ask(const std::string &socket, const std::vector<Digest> &digests, std::map<Digest, Usage> &out) {
    const auto deadline = Clock::now() + usage_reader_timeout;
    const std::string from = "the usage reader at " + socket;
    const OpenFd connection = connect_to(socket, deadline);
    std::string question;
    question.reserve(digests.size() * (question_line_max + 1) + 1);
    for (const Digest &digest : digests) question += digest_hex(digest) + "\n";
    question += "\n";
    if (!write_all(connection.get(), question, deadline))
        throw StoreError(StoreError::Kind::access, from + ": cannot send the question: " + std::strerror(errno));

    std::map<UsageKey, const Digest *> asked;  // the answer's lines name the key alone
    for (const Digest &digest : digests) asked.emplace(usage_key(digest), &digest);
    std::map<Digest, Usage> answer;
    const Seconds latest = now_seconds() + usage_clock_skew;
    LineReader lines(connection.get(), unprivileged_line_max);
    for (;;) {
        const auto line = lines.next(deadline, from);
        if (!line) throw StoreError(StoreError::Kind::access, from + " ended without its answer");
        if (*line == end_line) break;
        if (line->starts_with(error_prefix)) throw error_of(*line, from);
        auto parsed = parse_usage_line(*line, latest);
        const auto digest = parsed ? asked.find(parsed->first) : asked.end();
        if (digest == asked.end() || answer.contains(*digest->second))
            throw StoreError(StoreError::Kind::corrupt, from + " sent a bad line; none of its answer is used");
        answer.emplace(*digest->second, std::move(parsed->second));
    }
    // Nothing may follow the last line.
    if (lines.next(deadline, from))
        throw StoreError(StoreError::Kind::corrupt, from + " said more after its last line; none of its answer is used");
    out.merge(answer);
}

}  // namespace

pid_t start_usage_reader(const std::string &dir, const std::string &socket, uid_t client_uid) {
    if (::geteuid() != 0)
        lmdb::refuse("the usage reader is started by root (httpd's parent): it must become user nobody of the "
                     "store's group; this process runs as user " + lmdb::user_name(::geteuid()));
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) {
        if (errno == ENOENT) lmdb::no_store(dir);
        lmdb::fail(errno, "cannot open " + dir);
    }
    socket_address(socket);
    check_socket_directory(socket);
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) lmdb::fail(errno, "pipe");
    std::fflush(nullptr);  // nothing buffered here is written twice
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int err = errno;
        ::close(ready[0]), ::close(ready[1]);
        lmdb::fail(err, "cannot start the usage reader");
    }
    if (pid == 0) {
        ::close(ready[0]);
        reader(dir, socket, client_uid, st.st_gid, ready[1], parent);
    }
    ::close(ready[1]);
    const OpenFd from_reader(ready[0]);
    const auto give_up = [pid] {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    };
    try {
        LineReader lines(from_reader.get(), unprivileged_line_max);
        const auto deadline = Clock::now() + start_timeout;
        const auto line = lines.next(deadline, "the usage reader");
        // Ready once it has closed the pipe too: it then holds nothing of this process's.
        if (line && *line == ready_line && !lines.next(deadline, "the usage reader")) return pid;
        if (line && line->starts_with(error_prefix)) throw error_of(*line, "the usage reader for " + dir);
        throw StoreError(StoreError::Kind::access, "the usage reader for " + dir + " ended before it was ready");
    } catch (...) {
        give_up();
        throw;
    }
}

std::map<Digest, Usage> query_usage(const std::string &socket, const std::vector<Digest> &digests) {
    std::vector<Digest> distinct(digests);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    std::map<Digest, Usage> out;
    for (std::size_t from = 0; from < distinct.size(); from += usage_reader_max_digests) {
        const std::size_t to = std::min(distinct.size(), from + usage_reader_max_digests);
        ask(socket, std::vector<Digest>(distinct.begin() + static_cast<std::ptrdiff_t>(from),
                                        distinct.begin() + static_cast<std::ptrdiff_t>(to)),
            out);
    }
    return out;
}

}  // namespace cptoken

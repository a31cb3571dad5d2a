// SPDX-License-Identifier: Apache-2.0
// lib/store/: the root helper that reads the usage table for a process that
// gave root up (usage_helper.hpp).
#include "store/usage_helper.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "store/store.hpp"
#include "token/timeutil.hpp"

namespace cptoken {

namespace {

constexpr std::string_view end_line = "end", error_prefix = "error ";
constexpr auto answer_timeout = std::chrono::minutes(1);
constexpr std::size_t line_max = 4096;

[[noreturn]] void helper_gone(const std::string &why) {
    throw StoreError(StoreError::Kind::access, "the usage helper " + why);
}

bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return false;
        data.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
}

// The helper, from fork() on: an answer for each byte, until the socket closes.
[[noreturn]] void serve(int fd, const std::string &dir, pid_t parent) {
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(1);
    ::prctl(PR_SET_NAME, "cptoken-usage");
    char byte;
    for (;;) {
        const ssize_t got = ::read(fd, &byte, 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) ::_exit(0);
        std::string answer;
        try {
            for (const auto &[key, usage] : read_usage(dir)) answer += usage_line(key, usage) + "\n";
            answer += std::string(end_line) + "\n";
        } catch (const std::exception &e) {
            std::string message = e.what();
            for (char &c : message)
                if (c == '\n') c = ' ';
            answer = std::string(error_prefix) + message + "\n";
        }
        if (!send_all(fd, answer)) ::_exit(0);
    }
}

}  // namespace

UsageHelper::UsageHelper(const std::string &dir) : socket_(-1) {
    if (::geteuid() != 0) throw StoreError(StoreError::Kind::access, "the usage helper is started by root");
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        throw StoreError(StoreError::Kind::access, std::string("cannot make the usage helper's socket: ") +
                                                       std::strerror(errno));
    OpenFd mine(pair[0]), its(pair[1]);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0)
        throw StoreError(StoreError::Kind::access, std::string("cannot start the usage helper: ") + std::strerror(errno));
    if (pid == 0) {
        ::close(mine.release());
        serve(its.get(), dir, parent);
    }
    socket_ = std::move(mine);
    pid_ = pid;
}

UsageHelper::~UsageHelper() {
    socket_ = OpenFd(-1);  // the helper reads the end and exits
    if (pid_ > 0)
        while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
        }
}

UsageByKey UsageHelper::read() {
    if (!send_all(socket_.get(), "?")) helper_gone("is gone");
    const auto deadline = std::chrono::steady_clock::now() + answer_timeout;
    const Seconds latest = now_seconds() + usage_clock_skew;
    UsageByKey out;
    std::string buffer;
    std::size_t start = 0;
    for (;;) {
        const std::size_t newline = buffer.find('\n', start);
        if (newline == std::string::npos) {
            if (buffer.size() - start > line_max) helper_gone("sent an over-long line");
            buffer.erase(0, start);
            start = 0;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            pollfd p{socket_.get(), POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0)
                helper_gone("took longer than a minute");
            char chunk[65536];
            const ssize_t got = ::recv(socket_.get(), chunk, sizeof chunk, 0);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) helper_gone("is gone");
            buffer.append(chunk, static_cast<std::size_t>(got));
            continue;
        }
        const std::string_view line(buffer.data() + start, newline - start);
        start = newline + 1;
        if (line == end_line) return out;
        if (line.starts_with(error_prefix))
            throw StoreError(StoreError::Kind::access, std::string(line.substr(error_prefix.size())));
        auto parsed = parse_usage_line(line, latest);
        if (!parsed) throw StoreError(StoreError::Kind::corrupt, "the usage helper sent a line that is not a use");
        out[parsed->first] = std::move(parsed->second);
    }
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// A file descriptor, closed when it goes out of scope.
#pragma once

#include <unistd.h>

#include <utility>

namespace cptoken {

/// Owns a descriptor (or -1) and closes it; movable, not copyable.
class OpenFd {
public:
    explicit OpenFd(int fd) noexcept : fd_(fd) {}
    ~OpenFd() {
        if (fd_ >= 0) ::close(fd_);
    }
    OpenFd(OpenFd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    OpenFd &operator=(OpenFd &&other) noexcept {
        std::swap(fd_, other.fd_);
        return *this;
    }
    OpenFd(const OpenFd &) = delete;
    OpenFd &operator=(const OpenFd &) = delete;
    int get() const noexcept { return fd_; }
    /// Gives the descriptor up: the caller closes it.
    int release() noexcept { return std::exchange(fd_, -1); }

private:
    int fd_;
};

}  // namespace cptoken

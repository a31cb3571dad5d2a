#include "user_written_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cptoken {

namespace {

class Descriptor {
public:
    explicit Descriptor(int fd) : fd_(fd) {}
    ~Descriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    Descriptor(const Descriptor &) = delete;
    Descriptor &operator=(const Descriptor &) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

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

}  // namespace

std::string read_user_written_file(const std::string &path, std::size_t max_bytes) {
    // O_NONBLOCK: opening a FIFO to read would otherwise wait for a writer, forever.
    const Descriptor fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ELOOP) throw FileRefused("a symbolic link: not followed");
        throw FileRefused(std::string("cannot open: ") + std::strerror(errno));
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) throw FileRefused(std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw FileRefused(std::string("not a regular file (") + kind_of(st.st_mode) + ")");
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

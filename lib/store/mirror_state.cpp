// SPDX-License-Identifier: Apache-2.0
// lib/store/: how fresh a mirror of etcd is (DIR/mirror.state).
#include "store/mirror_state.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>

#include "store/lmdb_env.hpp"
#include "store/open_fd.hpp"

namespace cptoken {

namespace {

constexpr const char *state_tag = "cptoken-mirror";
constexpr const char *state_version = "1";
constexpr const char *new_state_file = "mirror.state.new";
// Longer than any line write_mirror_state() makes: a bigger file is not ours.
constexpr std::size_t max_state_size = 512;

bool parse_number(const std::string &text, std::int64_t &number) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    return ec == std::errc() && end == text.data() + text.size() && number >= 0;
}

bool is_word(const std::string &text) {
    if (text.empty() || text.size() > 64) return false;
    for (const char c : text)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
    return true;
}

}  // namespace

std::int64_t boottime_nanoseconds() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

const std::string &this_boot_id() {
    static const std::string boot_id = [] {
        std::ifstream in("/proc/sys/kernel/random/boot_id");
        std::string id;
        if (!(in >> id) || !is_word(id)) return std::string();
        return id;
    }();
    return boot_id;
}

std::string mirror_state_line(const MirrorState &state) {
    return std::string(state_tag) + " " + state_version + " boot=" + state.boot_id +
           " verified=" + std::to_string(state.verified_ns) + " revision=" + std::to_string(state.applied_revision) +
           " cluster=" + state.cluster_id + " state=" + state.state + "\n";
}

std::optional<MirrorState> parse_mirror_state(const std::string &text) {
    std::istringstream in(text);
    std::string tag, version, field;
    if (!(in >> tag >> version) || tag != state_tag || version != state_version) return std::nullopt;
    MirrorState state;
    unsigned seen = 0;
    while (in >> field) {
        const auto equals = field.find('=');
        if (equals == std::string::npos) return std::nullopt;
        const std::string name = field.substr(0, equals), value = field.substr(equals + 1);
        if (name == "boot" && (value.empty() || is_word(value))) {
            state.boot_id = value, seen |= 1;
        } else if (name == "verified" && parse_number(value, state.verified_ns)) {
            seen |= 2;
        } else if (name == "revision" && parse_number(value, state.applied_revision)) {
            seen |= 4;
        } else if (name == "cluster" && (value.empty() || is_word(value))) {
            state.cluster_id = value, seen |= 8;
        } else if (name == "state" && (value == "syncing" || value == "live")) {
            state.state = value, seen |= 16;
        } else {
            return std::nullopt;
        }
    }
    if (seen != 31) return std::nullopt;
    return state;
}

void write_mirror_state(const std::string &dir, const MirrorState &state) {
    OpenFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir_fd.get() < 0) lmdb::fail(errno, "cannot open " + dir);
    ::unlinkat(dir_fd.get(), new_state_file, 0);  // left by a write cut short
    OpenFd fd(::openat(dir_fd.get(), new_state_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
    if (fd.get() < 0) lmdb::fail(errno, "cannot create " + lmdb::path_in(dir, new_state_file));
    const std::string line = mirror_state_line(state);
    // fchmod: the umask may have taken the group's read away.
    if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()) || ::fchmod(fd.get(), 0640) != 0 ||
        ::renameat(dir_fd.get(), new_state_file, dir_fd.get(), mirror_state_file) != 0) {
        const int err = errno;
        ::unlinkat(dir_fd.get(), new_state_file, 0);
        lmdb::fail(err, "cannot write " + lmdb::path_in(dir, mirror_state_file));
    }
}

std::optional<MirrorState> read_mirror_state(const std::string &dir) {
    const std::string path = lmdb::path_in(dir, mirror_state_file);
    OpenFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT) return std::nullopt;
        lmdb::fail(errno, "cannot open " + path);
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) lmdb::fail(errno, "cannot stat " + path);
    if (!S_ISREG(st.st_mode)) lmdb::refuse_odd_file(path, st.st_mode);
    char buffer[max_state_size + 1];
    const ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got < 0) lmdb::fail(errno, "cannot read " + path);
    if (static_cast<std::size_t>(got) > max_state_size) lmdb::corrupt(path + " is not a mirror state (too long)");
    const auto state = parse_mirror_state(std::string(buffer, static_cast<std::size_t>(got)));
    if (!state) lmdb::corrupt(path + " is not a mirror state line");
    return state;
}

std::optional<std::int64_t> verified_this_boot(const MirrorState &state) {
    if (state.verified_ns <= 0 || state.boot_id.empty() || state.boot_id != this_boot_id()) return std::nullopt;
    return state.verified_ns;
}

std::optional<std::chrono::nanoseconds> proof_age(std::int64_t verified_ns, std::int64_t now_ns) {
    const std::int64_t age = now_ns - verified_ns;
    if (age < 0) return std::nullopt;
    return std::chrono::nanoseconds(age);
}

std::optional<std::chrono::nanoseconds> verified_age(const MirrorState &state) {
    const auto verified = verified_this_boot(state);
    if (!verified) return std::nullopt;
    return proof_age(*verified, boottime_nanoseconds());
}

bool fresh_enough(std::optional<std::chrono::nanoseconds> age, std::chrono::seconds max_staleness) {
    if (max_staleness.count() <= 0) return true;
    return age && *age <= max_staleness;
}

}  // namespace cptoken

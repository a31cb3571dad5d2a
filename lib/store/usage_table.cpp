// SPDX-License-Identifier: Apache-2.0
#include "store/usage_table.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>

#include "store/map_fault_guard.hpp"
#include "store/open_fd.hpp"
#include "store/store.hpp"

namespace cptoken {

namespace {

constexpr char magic[8] = {'C', 'P', 'T', 'K', 'U', 'S', 'G', '1'};
constexpr std::uint32_t version = 1;

// Header offsets. The two counters every process writes have a cache line each.
constexpr std::size_t at_magic = 0, at_version = 8, at_slot_size = 12, at_slot_count = 16;
constexpr std::size_t at_lost = 128;

// Slot offsets.
constexpr std::size_t at_state = 0, at_address_lock = 4, at_key = 8, at_uses = 24, at_last_used = 32,
                      at_address = 40;

constexpr std::uint32_t slot_free = 0, slot_claiming = 1, slot_in_use = 2;

// A claim left half made (its process killed between claiming and keying a
// slot) is waited for this many times before the slot counts as another key's.
constexpr int claim_spins = 1000;

// Far more slots than any store has tokens: keeps file_size() from overflowing.
constexpr std::uint64_t largest_slot_count = std::uint64_t{1} << 32;

template <class T>
std::atomic_ref<T> field(unsigned char *base, std::size_t offset) noexcept {
    return std::atomic_ref<T>(*reinterpret_cast<T *>(base + offset));
}

std::uint64_t word(const UsageKey &key, std::size_t half) noexcept {
    std::uint64_t out;
    std::memcpy(&out, key.data() + 8 * half, 8);
    return out;
}

// An address as 16 bytes: IPv4 mapped (::ffff:a.b.c.d); all zero: unknown.
std::array<std::uint64_t, 2> address_words(const std::optional<Address> &address) noexcept {
    std::array<std::uint8_t, 16> bytes{};
    if (address && address->family == 4) {
        bytes[10] = bytes[11] = 0xff;
        std::memcpy(bytes.data() + 12, address->bytes.data(), 4);
    } else if (address && address->family == 6) {
        bytes = address->bytes;
    }
    std::array<std::uint64_t, 2> out;
    std::memcpy(out.data(), bytes.data(), 16);
    return out;
}

std::optional<Address> address_of(const std::array<std::uint64_t, 2> &words) noexcept {
    std::array<std::uint8_t, 16> bytes;
    std::memcpy(bytes.data(), words.data(), 16);
    if (bytes == std::array<std::uint8_t, 16>{}) return std::nullopt;
    Address out;
    static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(bytes.data(), mapped, 12) == 0) {
        out.family = 4;
        std::memcpy(out.bytes.data(), bytes.data() + 12, 4);
    } else {
        out.family = 6;
        out.bytes = bytes;
    }
    return out;
}

bool key_is(unsigned char *slot, const UsageKey &key) noexcept {
    return field<std::uint64_t>(slot, at_key).load(std::memory_order_relaxed) == word(key, 0) &&
           field<std::uint64_t>(slot, at_key + 8).load(std::memory_order_relaxed) == word(key, 1);
}

// Adds uses to a keyed slot; the newest use gives its time and address.
void add_use(unsigned char *slot, std::int64_t when, const std::optional<Address> &address,
             std::uint64_t uses) noexcept {
    field<std::uint64_t>(slot, at_uses).fetch_add(uses, std::memory_order_relaxed);
    auto last_used = field<std::int64_t>(slot, at_last_used);
    std::int64_t seen = last_used.load(std::memory_order_relaxed);
    const auto replaces = [when](std::int64_t stored) { return when > stored || stored > when + usage_clock_skew; };
    bool newest = seen == when;
    while (!newest && replaces(seen))
        newest = last_used.compare_exchange_weak(seen, when, std::memory_order_relaxed) || seen == when;
    if (!newest) return;  // an older use: the stored address is a newer one's
    // A seqlock taken by compare-and-swap: a writer that finds it taken (a
    // use in the same instant) leaves the address to that one.
    auto lock = field<std::uint32_t>(slot, at_address_lock);
    std::uint32_t version_seen = lock.load(std::memory_order_relaxed);
    if ((version_seen & 1) != 0 ||
        !lock.compare_exchange_strong(version_seen, version_seen + 1, std::memory_order_acquire))
        return;
    const auto words = address_words(address);
    field<std::uint64_t>(slot, at_address).store(words[0], std::memory_order_relaxed);
    field<std::uint64_t>(slot, at_address + 8).store(words[1], std::memory_order_relaxed);
    lock.store(version_seen + 2, std::memory_order_release);
}

SlotUsage read_slot(unsigned char *slot) noexcept {
    SlotUsage out;
    const std::uint64_t key_words[2] = {field<std::uint64_t>(slot, at_key).load(std::memory_order_relaxed),
                                        field<std::uint64_t>(slot, at_key + 8).load(std::memory_order_relaxed)};
    std::memcpy(out.key.data(), key_words, 16);
    out.uses = field<std::uint64_t>(slot, at_uses).load(std::memory_order_relaxed);
    out.last_used = field<std::int64_t>(slot, at_last_used).load(std::memory_order_relaxed);
    auto lock = field<std::uint32_t>(slot, at_address_lock);
    const std::uint32_t before = lock.load(std::memory_order_acquire);
    const std::array<std::uint64_t, 2> words = {
        field<std::uint64_t>(slot, at_address).load(std::memory_order_relaxed),
        field<std::uint64_t>(slot, at_address + 8).load(std::memory_order_relaxed)};
    std::atomic_thread_fence(std::memory_order_acquire);
    if ((before & 1) == 0 && lock.load(std::memory_order_relaxed) == before) out.address = address_of(words);
    return out;
}

[[noreturn]] void table_error(StoreError::Kind kind, const std::string &path, const std::string &what) {
    throw StoreError(kind, path + ": " + what);
}

}  // namespace

UsageKey usage_key(const Digest &digest) noexcept {
    UsageKey key;
    std::memcpy(key.data(), digest.data(), key.size());
    return key;
}

std::uint64_t UsageTable::file_size(std::uint64_t slot_count) noexcept { return header_size + slot_count * slot_size; }

std::uint64_t UsageTable::slot_count_for(std::uint64_t tokens) noexcept {
    return std::bit_ceil(std::max<std::uint64_t>(1024, std::min(tokens, largest_slot_count / 2) * 2));
}

void UsageTable::create(int dir_fd, const char *name, const std::string &path, std::uint64_t slot_count,
                        mode_t mode, gid_t gid) {
    if (!std::has_single_bit(slot_count) || slot_count > largest_slot_count)
        table_error(StoreError::Kind::access, path, "not a usable slot count: " + std::to_string(slot_count));
    OpenFd fd(::openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (fd.get() < 0) table_error(StoreError::Kind::access, path, std::string("cannot create: ") + std::strerror(errno));
    unsigned char header[header_size] = {};
    std::memcpy(header + at_magic, magic, sizeof magic);
    std::memcpy(header + at_version, &version, 4);
    const std::uint32_t size_of_slot = slot_size;
    std::memcpy(header + at_slot_size, &size_of_slot, 4);
    std::memcpy(header + at_slot_count, &slot_count, 8);
    int error = 0;
    if ((gid != static_cast<gid_t>(-1) && ::fchown(fd.get(), static_cast<uid_t>(-1), gid) != 0) ||
        ::fchmod(fd.get(), mode) != 0)
        error = errno;
    else if (const int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(file_size(slot_count))); rc != 0)
        error = rc;
    else if (::pwrite(fd.get(), header, sizeof header, 0) != static_cast<ssize_t>(sizeof header))
        error = errno ? errno : EIO;
    if (error != 0) {
        ::unlinkat(dir_fd, name, 0);
        table_error(error == ENOSPC || error == EDQUOT ? StoreError::Kind::full : StoreError::Kind::access, path,
                    std::string("cannot make it: ") + std::strerror(error));
    }
}

UsageTable::UsageTable(const std::string &path, bool writable) : path_(path) {
    OpenFd fd(::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT) table_error(StoreError::Kind::missing, path, "no usage table");
        table_error(StoreError::Kind::access, path, std::string("cannot open: ") + std::strerror(errno));
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0)
        table_error(StoreError::Kind::access, path, std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) < header_size)
        table_error(StoreError::Kind::corrupt, path, "not a usage table (not a regular file of a table's size)");
    unsigned char header[header_size];
    if (::pread(fd.get(), header, sizeof header, 0) != static_cast<ssize_t>(sizeof header))
        table_error(StoreError::Kind::corrupt, path, "cannot read its header");
    std::uint32_t file_version = 0, file_slot_size = 0;
    std::uint64_t file_slot_count = 0;
    std::memcpy(&file_version, header + at_version, 4);
    std::memcpy(&file_slot_size, header + at_slot_size, 4);
    std::memcpy(&file_slot_count, header + at_slot_count, 8);
    if (std::memcmp(header + at_magic, magic, sizeof magic) != 0 || file_version != version ||
        file_slot_size != slot_size || !std::has_single_bit(file_slot_count) ||
        file_slot_count > largest_slot_count ||
        file_size(file_slot_count) != static_cast<std::uint64_t>(st.st_size))
        table_error(StoreError::Kind::corrupt, path, "not a usage table of this version, or not whole");
    void *map = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | (writable ? PROT_WRITE : 0),
                       MAP_SHARED, fd.get(), 0);
    if (map == MAP_FAILED) table_error(StoreError::Kind::access, path, std::string("cannot map: ") + std::strerror(errno));
    map_ = static_cast<unsigned char *>(map);
    map_size_ = static_cast<std::size_t>(st.st_size);
    std::memcpy(header_, header, sizeof header_);
    fd_ = fd.release();
    slot_count_ = file_slot_count;
    dev_ = st.st_dev;
    ino_ = st.st_ino;
}

UsageTable::~UsageTable() {
    if (map_) ::munmap(map_, map_size_);
    if (fd_ >= 0) ::close(fd_);
}

bool UsageTable::intact() const noexcept {
    struct stat st{};
    return ::fstat(fd_, &st) == 0 && static_cast<std::uint64_t>(st.st_size) == map_size_ && header_intact();
}

bool UsageTable::header_intact() const noexcept { return std::memcmp(map_, header_, sizeof header_) == 0; }

unsigned char *UsageTable::slot(std::uint64_t index) const noexcept {
    return map_ + header_size + (index & (slot_count_ - 1)) * slot_size;
}

bool UsageTable::record(const UsageKey &key, std::int64_t when, const std::optional<Address> &address,
                        std::uint64_t uses) noexcept {
    const std::uint64_t home = word(key, 0);
    for (std::size_t probe = 0; probe < max_probe && probe < slot_count_; ++probe) {
        unsigned char *s = slot(home + probe);
        auto state = field<std::uint32_t>(s, at_state);
        std::uint32_t seen = state.load(std::memory_order_acquire);
        if (seen == slot_free) {
            if (state.compare_exchange_strong(seen, slot_claiming, std::memory_order_acq_rel)) {
                field<std::uint64_t>(s, at_key).store(word(key, 0), std::memory_order_relaxed);
                field<std::uint64_t>(s, at_key + 8).store(word(key, 1), std::memory_order_relaxed);
                state.store(slot_in_use, std::memory_order_release);
                add_use(s, when, address, uses);
                return true;
            }
        }
        for (int spin = 0; seen == slot_claiming && spin < claim_spins; ++spin)
            seen = state.load(std::memory_order_acquire);
        if (seen == slot_in_use && key_is(s, key)) {
            add_use(s, when, address, uses);
            return true;
        }
    }
    field<std::uint64_t>(map_, at_lost).fetch_add(1, std::memory_order_relaxed);
    return false;
}

bool UsageTable::record_guarded(const UsageKey &key, std::int64_t when,
                                const std::optional<Address> &address) noexcept {
    struct Use {
        UsageTable *table;
        const UsageKey *key;
        std::int64_t when;
        const std::optional<Address> *address;
        bool kept;
    } use{this, &key, when, &address, false};
    const bool whole = write_through_map(map_, map_size_, [](void *context) {
        Use &u = *static_cast<Use *>(context);
        u.kept = u.table->header_intact() && u.table->record(*u.key, u.when, *u.address);
    }, &use);
    return whole && use.kept;
}

std::optional<SlotUsage> UsageTable::find(const UsageKey &key) const noexcept {
    const std::uint64_t home = word(key, 0);
    for (std::size_t probe = 0; probe < max_probe && probe < slot_count_; ++probe) {
        unsigned char *s = slot(home + probe);
        const std::uint32_t state = field<std::uint32_t>(s, at_state).load(std::memory_order_acquire);
        if (state == slot_free) return std::nullopt;
        if (state == slot_in_use && key_is(s, key)) return read_slot(s);
    }
    return std::nullopt;
}

void UsageTable::each(const std::function<void(const SlotUsage &)> &visit) const {
    for (std::uint64_t index = 0; index < slot_count_; ++index) {
        unsigned char *s = slot(index);
        if (field<std::uint32_t>(s, at_state).load(std::memory_order_acquire) == slot_in_use) visit(read_slot(s));
    }
}

std::uint64_t UsageTable::lost() const noexcept {
    return field<std::uint64_t>(map_, at_lost).load(std::memory_order_relaxed);
}

}  // namespace cptoken

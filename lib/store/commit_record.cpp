// SPDX-License-Identifier: Apache-2.0
// lib/store/: the LMDB stores, tokens and last used; uses token/.
#include "store/commit_record.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "store/lmdb_env.hpp"

namespace cptoken {

namespace {

// The first 16 bytes; the transaction id follows at offset 16 (host byte
// order, as LMDB's own files), the store id at 24, the acknowledged id at 40
// (0 in a record written before 0.17.3), the rest is zero.
constexpr char magic[16] = {'c', 'p', 't', 'o', 'k', 'e', 'n', ' ', 'c', 'o', 'm', 'm', 'i', 't', '1', '\n'};
constexpr std::size_t id_offset = 16, store_id_offset = 24, acknowledged_offset = 40;
static_assert(store_id_offset + CommitRecord::store_id_size <= acknowledged_offset);

static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free, "publish() needs a lock-free 64-bit store");

}  // namespace

void CommitRecord::create(const std::string &file, std::uint64_t txnid, std::string_view store_id, mode_t mode,
                          gid_t gid) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) lmdb::fail(errno, "cannot create " + file);
    alignas(8) char page[file_size] = {};
    std::memcpy(page, magic, sizeof magic);
    std::memcpy(page + id_offset, &txnid, sizeof txnid);
    std::memcpy(page + store_id_offset, store_id.data(), std::min(store_id.size(), store_id_size));
    std::memcpy(page + acknowledged_offset, &txnid, sizeof txnid);
    const bool ok = ::write(fd, page, sizeof page) == static_cast<ssize_t>(sizeof page) &&
                    ::fchown(fd, static_cast<uid_t>(-1), gid) == 0 && ::fchmod(fd, mode) == 0 && ::fsync(fd) == 0;
    const int err = errno;
    ::close(fd);
    if (!ok) {
        ::unlink(file.c_str());
        lmdb::fail(err, "cannot write " + file);
    }
}

CommitRecord::CommitRecord(const std::string &file, bool writable) : file_(file) {
    const int fd = ::open(file.c_str(), (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        struct stat st{};
        if (err == ELOOP && ::lstat(file.c_str(), &st) == 0) lmdb::refuse_odd_file(file, st.st_mode);
        if (err == ENOENT)
            throw StoreError(StoreError::Kind::missing,
                             file + " is missing: the store was made by mod_cptoken 0.11 or earlier, or copied "
                                    "without it; convert it with: cptoken --db " + lmdb::dir_of(file) + " init");
        if (err == EACCES) lmdb::permission_denied(file, writable ? Access::read_write : Access::read_only);
        lmdb::fail(err, "cannot open " + file);
    }
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        lmdb::fail(err, "cannot stat " + file);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        lmdb::refuse_odd_file(file, st.st_mode);
    }
    // Mapped only once its size is known: a shorter file would fault on access.
    if (st.st_size != static_cast<off_t>(file_size)) {
        ::close(fd);
        lmdb::corrupt(file + " is not a commit record (" + std::to_string(st.st_size) + " bytes, not " +
                      std::to_string(file_size) + "); remake it with: cptoken --db " + lmdb::dir_of(file) + " init");
    }
    map_ = ::mmap(nullptr, file_size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps the file
    if (map_ == MAP_FAILED) {
        map_ = nullptr;
        lmdb::fail(err, "cannot map " + file);
    }
    dev_ = st.st_dev, ino_ = st.st_ino;
    if (std::memcmp(map_, magic, sizeof magic) != 0) {
        ::munmap(map_, file_size);
        map_ = nullptr;
        lmdb::corrupt(file + " is not a commit record (wrong magic); remake it with: cptoken --db " +
                      lmdb::dir_of(file) + " init");
    }
}

CommitRecord::~CommitRecord() {
    if (map_) ::munmap(map_, file_size);
}

std::uint64_t *CommitRecord::word() const noexcept {
    return reinterpret_cast<std::uint64_t *>(static_cast<char *>(map_) + id_offset);
}

std::uint64_t *CommitRecord::acknowledged_word() const noexcept {
    return reinterpret_cast<std::uint64_t *>(static_cast<char *>(map_) + acknowledged_offset);
}

std::uint64_t CommitRecord::load() const noexcept {
    return std::atomic_ref<std::uint64_t>(*word()).load(std::memory_order_acquire);
}

bool CommitRecord::still(std::uint64_t txnid) const noexcept {
    // The reads of the snapshot (plain loads through LMDB's map) must not
    // move after this load: the fence keeps them before it.
    std::atomic_thread_fence(std::memory_order_acquire);
    return std::atomic_ref<std::uint64_t>(*word()).load(std::memory_order_acquire) == txnid;
}

void CommitRecord::publish(std::uint64_t txnid) noexcept {
    std::atomic_ref<std::uint64_t> id(*word());
    std::uint64_t seen = id.load(std::memory_order_seq_cst);
    while (seen < txnid && !id.compare_exchange_weak(seen, txnid, std::memory_order_seq_cst)) {
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

std::uint64_t CommitRecord::acknowledged() const noexcept {
    return std::atomic_ref<std::uint64_t>(*acknowledged_word()).load(std::memory_order_acquire);
}

void CommitRecord::acknowledge(std::uint64_t txnid) noexcept {
    std::atomic_ref<std::uint64_t>(*acknowledged_word()).store(txnid, std::memory_order_release);
}

bool CommitRecord::lost_commit_after(std::uint64_t newest) const noexcept {
    return load() == newest + 1 && acknowledged() == newest;
}

bool CommitRecord::forget_lost_commit(std::uint64_t newest) noexcept {
    if (!lost_commit_after(newest)) return false;
    std::atomic_ref<std::uint64_t>(*word()).store(newest, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return true;
}

std::string CommitRecord::store_id() const {
    return std::string(static_cast<const char *>(map_) + store_id_offset, store_id_size);
}

void CommitRecord::reset(std::uint64_t txnid, std::string_view store_id) noexcept {
    std::memset(static_cast<char *>(map_) + store_id_offset, 0, store_id_size);
    std::memcpy(static_cast<char *>(map_) + store_id_offset, store_id.data(), std::min(store_id.size(), store_id_size));
    std::atomic_ref<std::uint64_t>(*acknowledged_word()).store(txnid, std::memory_order_relaxed);
    std::atomic_ref<std::uint64_t>(*word()).store(txnid, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

void CommitRecord::persist() const {
    if (::msync(map_, file_size, MS_SYNC) != 0) lmdb::fail(errno, "cannot write " + file_);
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// The usage table: a fixed-size, open-addressed table of last uses in one
// file (DIR/usage.slots) that httpd's children map shared and update in
// place, each use costing a few atomic operations on one cache line: no
// B-tree write, no writer thread, no lock (issue 23).
//
//   header   4096 bytes: magic, version, slot size, slot count, lost
//   slots    slot count x 64 bytes, one cache line each:
//            state, address lock, key (the digest's first 16 bytes), uses,
//            last use (seconds), address (16 bytes, IPv4 mapped)
//
// httpd's group can write every byte of it. An opener trusts nothing but
// what it checked at open: the slot count and the mapping's length come from
// the file's size, never again from the header; a slot's bytes are only ever
// numbers to add to or compare, and readers check each value they return.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "token/network.hpp"
#include "token/token.hpp"

namespace cptoken {

/// How far ahead of this host's clock a recorded use may be (hosts sharing a
/// store have clocks a little apart). A later one is not a use: httpd's group
/// can write any time there, and a forged one in the future would hide a
/// stale token from `list --unused-for` for good; a use replaces it.
inline constexpr std::int64_t usage_clock_skew = 300;

/// The first 16 bytes of a token's SHA-512 digest: a slot's key.
using UsageKey = std::array<std::uint8_t, 16>;

UsageKey usage_key(const Digest &digest) noexcept;

/// One slot as a reader sees it.
struct SlotUsage {
    UsageKey key{};
    std::int64_t last_used = 0;      ///< seconds since the epoch, as stored (unchecked)
    std::uint64_t uses = 0;
    std::optional<Address> address;  ///< none if unknown or being written
};

class UsageTable {
public:
    static constexpr std::size_t header_size = 4096;
    static constexpr std::size_t slot_size = 64;
    /// Slots looked at from a key's home slot before a use is given up.
    static constexpr std::size_t max_probe = 32;

    /// The file's size for `slot_count` slots.
    static std::uint64_t file_size(std::uint64_t slot_count) noexcept;
    /// The slot count for `tokens` tokens: a power of two, at least 1024,
    /// with at most half the slots in use.
    static std::uint64_t slot_count_for(std::uint64_t tokens) noexcept;

    /// Makes an empty table named `name` in the directory `dir_fd` (`path`
    /// for messages; O_EXCL, no symlink followed) with `slot_count` slots (a
    /// power of two), mode `mode`, group `gid` (-1: unchanged), its blocks
    /// allocated: a use never needs room on a full filesystem (a hole written
    /// through the map would kill the writer). Throws StoreError: access if it
    /// cannot (nothing left behind), full if the filesystem has no room.
    static void create(int dir_fd, const char *name, const std::string &path, std::uint64_t slot_count, mode_t mode,
                       gid_t gid);

    /// Maps the table at `path`, shared; `writable` for record(). Throws
    /// StoreError: missing if there is none, access if it cannot be opened,
    /// corrupt if its header or size is not that of a table.
    UsageTable(const std::string &path, bool writable);

    /// Whether the file is still the table that was mapped: its size and
    /// header as they were at open. A table truncated or overwritten in place
    /// (httpd's group can) must not be written through the map again: a
    /// write past a shortened file kills the process. One fstat().
    bool intact() const noexcept;
    ~UsageTable();
    UsageTable(const UsageTable &) = delete;
    UsageTable &operator=(const UsageTable &) = delete;

    /// Records one use of `key` at `when` from `address` (none: unknown) in
    /// constant time: the count grows by `uses`, the time and address become
    /// those of this use if it is the newest (or if the stored time is more
    /// than usage_clock_skew after it: forged). Returns false if no slot was
    /// free within max_probe (the use is counted in lost()). Lock-free; safe
    /// from any thread of any process sharing the file.
    bool record(const UsageKey &key, std::int64_t when, const std::optional<Address> &address,
                std::uint64_t uses = 1) noexcept;

    /// record() for a process that must outlive the file being cut short or
    /// overwritten under its map (httpd's children: httpd's group can do
    /// both). Checks the header through the map, and catches the fault of a
    /// page past the file's new end (write_through_map) instead of an
    /// fstat() before each use. False if not recorded: no room (as record()),
    /// or the file changed in place (intact() then says so, and the table
    /// must not be written again).
    bool record_guarded(const UsageKey &key, std::int64_t when, const std::optional<Address> &address) noexcept;

    /// The slot of `key`, if it has one.
    std::optional<SlotUsage> find(const UsageKey &key) const noexcept;

    /// Calls `visit` with every slot in use, in slot order.
    void each(const std::function<void(const SlotUsage &)> &visit) const;

    /// Uses given up because the table had no free slot for their token.
    std::uint64_t lost() const noexcept;
    std::uint64_t slot_count() const noexcept { return slot_count_; }
    /// Device and inode of the file mapped.
    std::pair<dev_t, ino_t> file_id() const noexcept { return {dev_, ino_}; }

private:
    // The header through the map, as it was at open (intact() without the
    // size: no system call; the page must be there).
    bool header_intact() const noexcept;
    unsigned char *slot(std::uint64_t index) const noexcept;

    std::string path_;
    int fd_ = -1;
    unsigned char header_[32] = {};  // the header's fixed fields as opened
    unsigned char *map_ = nullptr;
    std::size_t map_size_ = 0;
    std::uint64_t slot_count_ = 0;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

}  // namespace cptoken

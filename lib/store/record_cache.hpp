// SPDX-License-Identifier: Apache-2.0
// The records TokenStore::find() has read, each tied to the read transaction
// it was read in. Revocation rests on it: a record is only ever given back
// for the very snapshot it came from.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <optional>
#include <utility>

#include "token/record.hpp"
#include "token/siphash.hpp"
#include "token/token.hpp"

namespace cptoken {

// `size` default-constructed T in an anonymous mapping of their own, given
// back to the kernel when destroyed. Not a vector: a cache's slots are a few
// megabytes, and glibc keeps a freed block that large in the freeing
// thread's arena (its mmap threshold grows to the largest block freed), so
// each store an httpd child closed after a directory swap left its slots'
// megabytes in the child for good.
template <class T>
class MappedArray {
public:
    MappedArray() = default;
    /// Throws std::bad_alloc if the mapping fails.
    explicit MappedArray(std::size_t size) {
        if (size == 0) return;
        void *p = ::mmap(nullptr, size * sizeof(T), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        data_ = static_cast<T *>(p);
        for (; size_ < size; ++size_) new (data_ + size_) T();  // T's constructor must not throw
    }
    ~MappedArray() { release(); }
    MappedArray(const MappedArray &) = delete;
    MappedArray &operator=(const MappedArray &) = delete;
    MappedArray &operator=(MappedArray &&other) noexcept {
        if (this != &other) {
            release();
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }

    T &operator[](std::size_t i) noexcept { return data_[i]; }
    const T &operator[](std::size_t i) const noexcept { return data_[i]; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }

private:
    void release() noexcept {
        if (!data_) return;
        for (std::size_t i = 0; i < size_; ++i) data_[i].~T();
        ::munmap(data_, size_ * sizeof(T));
        data_ = nullptr, size_ = 0;
    }

    T *data_ = nullptr;
    std::size_t size_ = 0;
};

// A read transaction with the same id sees the same snapshot, so a record
// kept with that id is exactly what the B-tree holds; any write (a revoke,
// an edit, a create) gives later transactions a new id, and the entry no
// longer matches. What this saves is the walk through the tree: with a
// million tokens, four pages that are rarely still in the CPU's caches and
// TLB between two requests. Sets of 4 entries; each key may live in either
// of two sets, chosen by its first and its second 8 bytes (two choices: a
// key goes to a free way of either set, and only when both are full does it
// replace one at random; LRU would miss every time on a rotation longer than
// a set). With one set per key, a rotation over 10,000 tokens in 15,360
// slots missed 13-14% of its lookups for good; with two, about 0.02%
// (bench/results/2026-12-06-uncached.md). A set's tags share one cache
// line, so a lookup reads one or two lines of tags and then only the entry
// that matches. Thread-safe.
//
//
// Two kinds of key share the slots. find() keys a record by its digest.
// find_token() keys it by a tag of the token itself (SipTag: a keyed PRF
// under the store's own random key), so that a token in use is found without
// its SHA-512 digest being computed at all; such an entry also keeps the
// digest, which the caller needs (last used is recorded under it). Tags are
// compared in constant time. A tag equal to a digest's first 16 bytes, or
// two tokens with one tag, is a 2^-128 chance under a key nobody outside the
// process knows.
//
// When far more tokens are in use than it holds (a million in use, 15,360
// slots), nearly every lookup misses and every fill only evicts a record no
// one will ask for before it is evicted in turn. So the cache watches
// itself: over each window of `thrash_window` evictions, if fewer lookups
// hit than records were evicted, it is thrashing, and then only one miss in
// `thrash_sample` fills a slot (the others go without the copy, the lock and
// the victim's cache lines). A full cache of a random sample hits as often
// as one refilled on every miss. A fill that finds a free way, and every
// fill in a new snapshot, is never skipped: a working set that fits is
// cached on its first use as before.
//
// Memory: the slots (fixed_bytes()) are allocated on the first put(); the
// heap the kept records own (heap_bytes()) never exceeds the byte budget,
// since a record with 100 networks owns ~2 KB where a usual one owns none
// or a few dozen bytes.
class RecordCache {
public:
    /// A cache of `slots` entries (rounded down to a multiple of 4; fewer
    /// than 4: off) whose records own at most `budget_bytes` of heap together.
    RecordCache(std::size_t slots, std::size_t budget_bytes);
    RecordCache(const RecordCache &) = delete;
    RecordCache &operator=(const RecordCache &) = delete;

    /// A copy of the record kept for `digest` read in transaction `txn_id`;
    /// nullopt if none was kept for exactly that id. Throws std::bad_alloc.
    std::optional<TokenRecord> get(const Digest &digest, std::size_t txn_id);

    /// As get(), for the record kept under a token's `tag` (put_token()):
    /// on a hit, sets `record` to a copy and `digest` to the token's digest
    /// kept with it, and returns true; on a miss changes neither.
    bool get_token(const SipTag &tag, std::size_t txn_id, Digest &digest, std::optional<TokenRecord> &record);

    /// Keeps `record`, found under `digest` in transaction `txn_id`. Only
    /// found records may be put: unknown tokens (an attack) must not fill it.
    /// Not kept if it would take the records past the byte budget, or if
    /// `txn_id` is 0 or older than one already put; a newer `txn_id` first
    /// drops every entry, none of which can match again. Throws std::bad_alloc.
    void put(const Digest &digest, std::size_t txn_id, const TokenRecord &record);

    /// As put(), keyed by a token's `tag`, keeping its `digest` beside the record.
    void put_token(const SipTag &tag, std::size_t txn_id, const Digest &digest, const TokenRecord &record);

    /// Drops every entry and forgets the newest transaction id seen (for a
    /// store file replaced in place, whose ids start again). Keeps the slots.
    void clear();

    /// Heap bytes the kept records own now (at most the budget).
    std::size_t records_bytes() const;

    /// Heap `record` owns once copied in, as glibc's malloc counts it (an
    /// 8-byte header, 16-byte rounding, 32 at least per block; strings of up
    /// to 15 characters live inside the record).
    static std::size_t heap_bytes(const TokenRecord &record) noexcept;

    /// Memory of the slots of a cache of `slots` entries, allocated on its
    /// first put(): with the budget, the most a cache ever takes.
    static constexpr std::size_t fixed_bytes(std::size_t slots) noexcept {
        return slots / ways * (sizeof(Set) + ways * sizeof(Entry));
    }

    /// Whether fills are being sampled (see above); for tests.
    bool thrashing() const noexcept { return thrashing_.load(std::memory_order_relaxed); }

    static constexpr std::size_t thrash_window = 4096;
    static constexpr std::uint32_t thrash_sample = 8;

private:
    static constexpr std::size_t ways = 4;
    struct Tag {
        std::uint64_t prefix = 0;
        std::size_t txn_id = 0;  // 0: empty (read transactions of a store have ids from 1)
    };
    struct alignas(64) Set {
        Tag way[ways];
    };
    struct Entry {
        SipTag key{};  // a token's tag, or a digest's first 16 bytes
        Digest digest{};
        TokenRecord record;
    };

    static void replace(Entry &entry, Entry fresh) noexcept;
    // Makes `entry` hold a copy of `record` (exactly its heap, as
    // heap_bytes() counts), and `key` and `digest`; unchanged if the copy
    // throws. One copy, no swap: cheaper than replace() on every fill.
    static void fill(Entry &entry, const SipTag &key, const Digest &digest, const TokenRecord &record);
    // The two sets a key may live in (the same one, now and then).
    std::pair<std::size_t, std::size_t> sets_of(const unsigned char *key) const noexcept;
    // The entry kept for `key` (its first 8 bytes: `prefix`) at `txn_id`
    // for which `same(entry)` holds, or null. With mutex_ held.
    template <class Same>
    const Entry *find_entry(const unsigned char *key, std::uint64_t prefix, std::size_t txn_id, Same same) const;
    void put_entry(const SipTag &key, std::size_t txn_id, const Digest &digest, const TokenRecord &record);
    void drop_entries();  // with mutex_ held

    const std::size_t sets_;
    const std::size_t budget_bytes_;
    mutable std::mutex mutex_;
    MappedArray<Set> tags_;
    MappedArray<Entry> entries_;
    std::size_t next_victim_ = 0;
    std::size_t window_hits_ = 0, window_evictions_ = 0;  // with mutex_ held
    std::atomic<bool> thrashing_{false};
    std::size_t newest_txn_id_ = 0;
    std::size_t records_bytes_ = 0;
};

}  // namespace cptoken

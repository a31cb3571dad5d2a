// SPDX-License-Identifier: Apache-2.0
#include "store/record_cache.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace cptoken {
namespace {

// A key's first 8 bytes: a SHA-512 digest and a SipHash tag are evenly spread.
std::uint64_t prefix_of(const unsigned char *key) noexcept {
    std::uint64_t bits = 0;
    std::memcpy(&bits, key, sizeof bits);
    return bits;
}

// A digest's key: its first 16 bytes.
SipTag key_of(const Digest &digest) noexcept {
    SipTag key;
    std::memcpy(key.data(), digest.data(), key.size());
    return key;
}

// A malloc block holding `size` bytes, as glibc counts it.
std::size_t malloc_block(std::size_t size) noexcept {
    return std::max<std::size_t>(32, (size + 8 + 15) & ~std::size_t{15});
}

// A copied string's heap: none while it fits in the string itself.
std::size_t string_heap(const std::string &text) noexcept {
    static const std::size_t inline_capacity = std::string().capacity();
    return text.size() <= inline_capacity ? 0 : malloc_block(text.size() + 1);
}

// A copied vector of strings: its array, and each string's own heap.
std::size_t strings_heap(const std::vector<std::string> &texts) noexcept {
    if (texts.empty()) return 0;
    std::size_t bytes = malloc_block(texts.size() * sizeof(std::string));
    for (const std::string &text : texts) bytes += string_heap(text);
    return bytes;
}

}  // namespace

// Swapped in, not assigned: an assigned string or vector may keep its old,
// larger buffer, which heap_bytes() would not count.
void RecordCache::replace(Entry &entry, Entry fresh) noexcept { std::swap(entry, fresh); }

void RecordCache::fill(Entry &entry, const SipTag &key, const Digest &digest, const TokenRecord &record) {
    static_assert(std::is_nothrow_move_constructible_v<TokenRecord>);
    TokenRecord copy(record);  // may throw: nothing changed yet
    entry.record.~TokenRecord();
    new (&entry.record) TokenRecord(std::move(copy));
    entry.key = key;
    entry.digest = digest;
}

RecordCache::RecordCache(std::size_t slots, std::size_t budget_bytes)
    : sets_(slots / ways), budget_bytes_(budget_bytes) {}

std::size_t RecordCache::heap_bytes(const TokenRecord &record) noexcept {
    // A copy allocates exactly what it holds, so sizes (not capacities) are
    // what a kept copy owns, whatever the original reserved.
    return string_heap(record.user) + string_heap(record.name) + string_heap(record.later_fields) +
           (record.allowed_ips.empty() ? 0 : malloc_block(record.allowed_ips.size() * sizeof(Network))) +
           (record.predecessors.empty() ? 0 : malloc_block(record.predecessors.size() * sizeof(Digest))) +
           strings_heap(record.scopes) + strings_heap(record.limits) + string_heap(record.imported_from);
}

std::pair<std::size_t, std::size_t> RecordCache::sets_of(const unsigned char *key) const noexcept {
    return {prefix_of(key) % sets_, prefix_of(key + 8) % sets_};
}

template <class Same>
const RecordCache::Entry *RecordCache::find_entry(const unsigned char *key, std::uint64_t prefix, std::size_t txn_id,
                                                  Same same) const {
    const auto [first, second] = sets_of(key);
    for (const std::size_t set : {first, second}) {
        for (std::size_t way = 0; way < ways; ++way) {
            const Tag &tag = tags_[set].way[way];
            if (tag.txn_id != txn_id || tag.prefix != prefix) continue;
            const Entry &entry = entries_[set * ways + way];
            if (same(entry)) return &entry;
        }
        if (second == first) break;
    }
    return nullptr;
}

std::optional<TokenRecord> RecordCache::get(const Digest &digest, std::size_t txn_id) {
    const std::uint64_t prefix = prefix_of(digest.data());
    if (sets_ == 0 || txn_id == 0) return std::nullopt;
    std::lock_guard<std::mutex> lock(mutex_);
    if (tags_.empty()) return std::nullopt;
    const Entry *entry =
        find_entry(digest.data(), prefix, txn_id, [&](const Entry &e) { return e.digest == digest; });
    if (!entry) return std::nullopt;
    ++window_hits_;
    return entry->record;
}

bool RecordCache::get_token(const SipTag &tag, std::size_t txn_id, Digest &digest,
                            std::optional<TokenRecord> &record) {
    const std::uint64_t prefix = prefix_of(tag.data());
    if (sets_ == 0 || txn_id == 0) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    if (tags_.empty()) return false;
    const Entry *entry = find_entry(tag.data(), prefix, txn_id, [&](const Entry &e) { return same_tag(e.key, tag); });
    if (!entry) return false;
    ++window_hits_;
    record.emplace(entry->record);  // the one copy
    digest = entry->digest;
    return true;
}

void RecordCache::put(const Digest &digest, std::size_t txn_id, const TokenRecord &record) {
    put_entry(key_of(digest), txn_id, digest, record);
}

void RecordCache::put_token(const SipTag &tag, std::size_t txn_id, const Digest &digest, const TokenRecord &record) {
    put_entry(tag, txn_id, digest, record);
}

void RecordCache::put_entry(const SipTag &key, std::size_t txn_id, const Digest &digest, const TokenRecord &record) {
    if (sets_ == 0 || txn_id == 0) return;
    // Thrashing: most fills skipped before anything else (a snapshot newer
    // than the cache's, and a free way, are let through below).
    thread_local std::uint32_t fills_seen = 0;  // per thread: no shared counter to bounce between cores
    const bool sampled_out = thrashing_.load(std::memory_order_relaxed) && ++fills_seen % thrash_sample != 0;
    const std::size_t cost = heap_bytes(record);
    if (cost > budget_bytes_) return;
    const std::uint64_t prefix = prefix_of(key.data());
    std::lock_guard<std::mutex> lock(mutex_);
    if (txn_id < newest_txn_id_) return;  // a reader still on an older snapshot: nobody will ask for it again
    if (txn_id > newest_txn_id_) {
        drop_entries();  // all stale now: free their heap for this snapshot's records
        newest_txn_id_ = txn_id;
    } else if (sampled_out && !tags_.empty()) {
        const auto [first, second] = sets_of(key.data());
        bool free_way = false;
        for (std::size_t way = 0; way < ways; ++way)
            free_way = free_way || tags_[first].way[way].txn_id == 0 || tags_[second].way[way].txn_id == 0;
        if (!free_way) return;
    }
    if (tags_.empty()) {  // on first use: the tool rarely needs it
        auto tags = MappedArray<Set>(sets_);  // both, or neither if one throws
        auto entries = MappedArray<Entry>(sets_ * ways);
        tags_ = std::move(tags);
        entries_ = std::move(entries);
    }
    // This key's own entry in either set, else a free way of the set with
    // more of them (two choices keep the sets evenly filled), else a random
    // way of one of the two.
    const auto [first, second] = sets_of(key.data());
    std::size_t slot = sets_ * ways;  // none yet
    std::size_t free_way[2] = {ways, ways}, free_ways[2] = {0, 0};
    for (int which = 0; which < 2; ++which) {
        const std::size_t set = which == 0 ? first : second;
        for (std::size_t way = 0; way < ways; ++way) {
            const Tag &t = tags_[set].way[way];
            if (t.txn_id == 0) {
                if (free_ways[which]++ == 0) free_way[which] = way;
            } else if (t.prefix == prefix && same_tag(entries_[set * ways + way].key, key)) {
                slot = set * ways + way;
            }
        }
    }
    if (slot == sets_ * ways && (free_ways[0] != 0 || free_ways[1] != 0))
        slot = free_ways[1] > free_ways[0] ? second * ways + free_way[1] : first * ways + free_way[0];
    if (slot == sets_ * ways) {
        const std::size_t victim = next_victim_++;
        slot = (victim % 2 == 0 ? first : second) * ways + (victim / 2) % ways;
        if (++window_evictions_ >= thrash_window) {
            thrashing_.store(window_hits_ < window_evictions_, std::memory_order_relaxed);
            window_hits_ = window_evictions_ = 0;
        }
    }
    Tag &tag = tags_[slot / ways].way[slot % ways];
    Entry &entry = entries_[slot];
    const std::size_t freed = tag.txn_id == 0 ? 0 : heap_bytes(entry.record);
    if (records_bytes_ - freed + cost > budget_bytes_) return;  // full: keep what is there
    fill(entry, key, digest, record);
    tag = Tag{prefix, txn_id};
    records_bytes_ = records_bytes_ - freed + cost;
}

void RecordCache::clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    drop_entries();
    newest_txn_id_ = 0;
}

std::size_t RecordCache::records_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return records_bytes_;
}

void RecordCache::drop_entries() {
    for (std::size_t set = 0; set < tags_.size(); ++set)
        for (std::size_t way = 0; way < ways; ++way) {
            if (tags_[set].way[way].txn_id == 0) continue;
            tags_[set].way[way] = Tag{};
            replace(entries_[set * ways + way], Entry{});
        }
    records_bytes_ = 0;
    // An empty cache: whatever is in use now is cached on its first use.
    window_hits_ = window_evictions_ = 0;
    thrashing_.store(false, std::memory_order_relaxed);
}

}  // namespace cptoken

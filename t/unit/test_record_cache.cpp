// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/store/record_cache.hpp on its own: revocation rests on it
// (a record is given back only for the transaction it was read in), and a
// child's memory on its bound.

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "token/network.hpp"
#include "token/record.hpp"
#include "store/record_cache.hpp"
#include "store/store.hpp"
#include "token/token.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

// A digest whose first 8 bytes (which choose the set) are `prefix`, told
// apart from others of the same prefix by `n`.
Digest digest_of(std::uint64_t prefix, unsigned n = 0) {
    Digest d{};
    std::memcpy(d.data(), &prefix, sizeof prefix);
    d[8] = static_cast<unsigned char>(n);
    d[9] = static_cast<unsigned char>(n >> 8);
    return d;
}

// A record whose allowlist has `networks` entries (heap: ~18 bytes each).
TokenRecord with_networks(const std::string &name, std::size_t networks) {
    return rec("alice", name, 0, std::vector<Network>(networks, net("2001:db8::/32")));
}

void expect_hit(RecordCache &cache, const Digest &d, std::size_t txn, const TokenRecord &r, int line) {
    const auto got = cache.get(d, txn);
    if (!got) fail_msg("line %d: miss, expected a hit", line);
    if (!(*got == r)) fail_msg("line %d: hit with another record ('%s')", line, got->name.c_str());
}
#define EXPECT_HIT(cache, d, txn, r) expect_hit((cache), (d), (txn), (r), __LINE__)

void test_hits_only_for_the_same_transaction(void **) {
    RecordCache cache(64, 1 << 20);
    const Digest d = new_digest(), other = new_digest();
    const TokenRecord r = rec("alice", "ci", 0, {net("192.0.2.0/24")});
    assert_false(cache.get(d, 5).has_value());
    cache.put(d, 5, r);
    EXPECT_HIT(cache, d, 5, r);
    EXPECT_HIT(cache, d, 5, r);
    // Another snapshot, before or after: the record may have changed since.
    assert_false(cache.get(d, 6).has_value());
    assert_false(cache.get(d, 4).has_value());
    // Another digest, even in the same set.
    assert_false(cache.get(other, 5).has_value());
    Digest neighbour = d;
    neighbour[63] ^= 1;
    assert_false(cache.get(neighbour, 5).has_value());
    // Transaction id 0 is never one of a store's: never kept, never found.
    cache.put(other, 0, r);
    assert_false(cache.get(other, 0).has_value());
}

// After a write, readers of the new snapshot put; what older snapshots kept
// can never match again and is dropped, and a reader still on an older
// snapshot does not put it back.
void test_newer_transaction_drops_older_entries(void **) {
    RecordCache cache(64, 1 << 20);
    const Digest d = new_digest(), e = new_digest();
    const TokenRecord r = with_networks("ci", 10), s = rec("bob", "x");
    cache.put(d, 5, r);
    assert_int_equal(cache.records_bytes(), RecordCache::heap_bytes(r));
    cache.put(e, 6, s);
    assert_false(cache.get(d, 5).has_value());
    assert_int_equal(cache.records_bytes(), RecordCache::heap_bytes(s));
    cache.put(d, 5, r);  // a reader still on snapshot 5
    assert_false(cache.get(d, 5).has_value());
    EXPECT_HIT(cache, e, 6, s);
    cache.put(d, 6, r);
    EXPECT_HIT(cache, d, 6, r);
}

// Only put() stores: a lookup that misses (an unknown token) leaves nothing
// behind, and a cache of no slots keeps nothing.
void test_misses_store_nothing(void **) {
    RecordCache cache(64, 1 << 20);
    for (int i = 0; i < 1000; ++i) assert_false(cache.get(new_digest(), 7).has_value());
    assert_int_equal(cache.records_bytes(), 0);
    for (std::size_t slots : {0, 1, 3}) {
        RecordCache off(slots, 1 << 20);
        const Digest d = new_digest();
        off.put(d, 5, with_networks("ci", 3));
        assert_false(off.get(d, 5).has_value());
        assert_int_equal(off.records_bytes(), 0);
    }
}

// The records' heap never passes the budget: what does not fit is not kept,
// and a replaced entry gives its bytes back.
void test_bytes_bound(void **) {
    const TokenRecord big = with_networks("big", max_allowed_networks), small = rec("alice", "small");
    const std::size_t big_bytes = RecordCache::heap_bytes(big);
    assert_true(big_bytes >= max_allowed_networks * sizeof(Network));
    assert_int_equal(RecordCache::heap_bytes(small), 0);  // short strings live in the record
    const std::size_t one_network = RecordCache::heap_bytes(with_networks("one", 1));
    assert_true(one_network > 0 && one_network <= 64);

    const std::size_t budget = 3 * big_bytes + 2 * one_network;
    RecordCache cache(256, budget);
    std::vector<Digest> digests;
    for (unsigned i = 0; i < 64; ++i) {
        digests.push_back(digest_of(0x1000 + i));
        cache.put(digests.back(), 9, big);
        assert_true(cache.records_bytes() <= budget);
    }
    int kept = 0;
    for (const Digest &d : digests) kept += cache.get(d, 9).has_value();
    assert_int_equal(kept, 3);
    assert_int_equal(cache.records_bytes(), 3 * big_bytes);
    // Smaller records still fit in what is left; then nothing more does.
    const Digest a = digest_of(0x2000), b = digest_of(0x2001), c = digest_of(0x2002), s = digest_of(0x2003);
    cache.put(a, 9, with_networks("one", 1));
    cache.put(b, 9, with_networks("one", 1));
    cache.put(c, 9, with_networks("one", 1));
    assert_true(cache.get(a, 9).has_value());
    assert_true(cache.get(b, 9).has_value());
    assert_false(cache.get(c, 9).has_value());
    assert_int_equal(cache.records_bytes(), budget);
    // A record that owns no heap always fits.
    cache.put(s, 9, small);
    EXPECT_HIT(cache, s, 9, small);
    // The same digest put again replaces its entry, and its bytes.
    cache.put(a, 9, small);
    EXPECT_HIT(cache, a, 9, small);
    assert_int_equal(cache.records_bytes(), budget - one_network);
    // A record larger than the whole budget is never kept.
    RecordCache tight(64, big_bytes - 1);
    tight.put(a, 9, big);
    assert_false(tight.get(a, 9).has_value());
    assert_int_equal(tight.records_bytes(), 0);
    // The next snapshot starts from an empty budget.
    cache.put(digests[10], 10, big);
    EXPECT_HIT(cache, digests[10], 10, big);
    assert_int_equal(cache.records_bytes(), big_bytes);
}

// More digests than the ways of the two sets they may live in (chosen by
// their first and second 8 bytes): each put lands, older ones give way, and
// the byte count follows what is really kept.
void test_full_set(void **) {
    const TokenRecord r = with_networks("r", 5);
    RecordCache cache(64, 1 << 20);
    std::vector<Digest> same_sets;
    for (unsigned n = 0; n < 9; ++n) {
        same_sets.push_back(digest_of(0x77 + n * 16));  // 64 slots: 16 sets; sets 7 and 0
        cache.put(same_sets.back(), 3, r);
        EXPECT_HIT(cache, same_sets.back(), 3, r);
    }
    int kept = 0;
    for (const Digest &d : same_sets) kept += cache.get(d, 3).has_value();
    assert_int_equal(kept, 8);
    assert_int_equal(cache.records_bytes(), 8 * RecordCache::heap_bytes(r));
}

// Digests that share their first set but not their second all stay: a key
// whose first set is full goes to its second (with one set a key, 4 of 8).
void test_second_choice(void **) {
    const TokenRecord r = rec("alice", "r");
    RecordCache cache(64, 1 << 20);
    std::vector<Digest> digests;
    for (unsigned n = 8; n < 16; ++n) {
        digests.push_back(digest_of(0x77, n));  // first set 7, second set n
        cache.put(digests.back(), 3, r);
    }
    for (const Digest &d : digests) EXPECT_HIT(cache, d, 3, r);
}

// The case the benchmark's 10,000 tokens in use make: that many keys in the
// slots of an httpd child's cache are nearly all kept (with one set a key,
// about 7.5% found their set full and missed on every use).
void test_ten_thousand_in_use_fit(void **) {
    const TokenRecord r = rec("alice", "r");
    RecordCache cache(StoreSettings::record_cache_slots, StoreSettings::record_cache_bytes);
    std::vector<Digest> digests;
    for (int n = 0; n < 10000; ++n) {
        digests.push_back(new_digest());
        cache.put(digests.back(), 3, r);
    }
    int kept = 0;
    for (const Digest &d : digests) kept += cache.get(d, 3).has_value();
    if (kept < 9900) fail_msg("only %d of 10000 kept", kept);
}

// Far more keys than slots, none asked for twice: the cache notices that
// it only evicts (fewer hits than evictions over a window) and then fills
// only one miss in thrash_sample. A new snapshot starts it afresh.
void test_thrashing_samples_fills(void **) {
    const TokenRecord r = rec("alice", "r");
    RecordCache cache(64, 1 << 20);
    for (std::size_t n = 0; n < 64 + 2 * RecordCache::thrash_window; ++n) cache.put(new_digest(), 3, r);
    assert_true(cache.thrashing());
    int kept = 0;
    for (int n = 0; n < 200; ++n) {
        const Digest d = new_digest();
        cache.put(d, 3, r);
        kept += cache.get(d, 3).has_value();
    }
    // One in 8 expected (25); every one without sampling.
    if (kept > 60) fail_msg("%d of 200 fills kept while thrashing", kept);
    // A new snapshot empties the cache: its records are kept on first use.
    const Digest d = new_digest();
    cache.put(d, 4, r);
    assert_false(cache.thrashing());
    EXPECT_HIT(cache, d, 4, r);
}

// A working set that fits is never sampled, however long it runs: it hits.
void test_working_set_that_fits_is_not_thrashing(void **) {
    const TokenRecord r = rec("alice", "r");
    RecordCache cache(64, 1 << 20);
    std::vector<Digest> digests;
    for (int n = 0; n < 40; ++n) digests.push_back(new_digest());
    for (int round = 0; round < 300; ++round)
        for (const Digest &d : digests)
            if (!cache.get(d, 3)) cache.put(d, 3, r);
    assert_false(cache.thrashing());
}

// clear(): everything goes, and a store file replaced in place (whose
// transaction ids start again, lower) is cached from scratch.
void test_clear(void **) {
    RecordCache cache(64, 1 << 20);
    const Digest d = new_digest();
    const TokenRecord r = with_networks("ci", 4);
    cache.put(d, 50, r);
    EXPECT_HIT(cache, d, 50, r);
    cache.clear();
    assert_false(cache.get(d, 50).has_value());
    assert_int_equal(cache.records_bytes(), 0);
    cache.put(d, 2, r);
    EXPECT_HIT(cache, d, 2, r);
    assert_int_equal(cache.records_bytes(), RecordCache::heap_bytes(r));
    cache.clear();
    cache.clear();
    assert_false(cache.get(d, 2).has_value());
}

// heap_bytes() is what the heap really holds for kept records: a full cache
// takes no more than its slots plus the bytes it counts, also when records
// are replaced by smaller ones (a string or vector assigned a smaller value
// would keep its old buffer).
void test_counted_bytes_are_real(void **) {
    if (!heap_measurable) {
        print_message("heap not measurable under ASan: skipped\n");
        return;
    }
    constexpr std::size_t slots = 1024;
    const std::size_t budget = std::size_t{16} << 20;
    const std::size_t slack = 16384;  // malloc's rounding of the two slot arrays, the mutex
    std::vector<Digest> digests;
    for (unsigned i = 0; i < slots; ++i) digests.push_back(new_digest());
    TokenRecord large = with_networks(std::string(40, 'n'), max_allowed_networks);
    large.user = std::string(40, 'u');
    large.predecessors.assign(max_predecessors, new_digest());  // links to rotated tokens: 512 bytes more
    const std::size_t before = heap_in_use();
    {
        RecordCache cache(slots, budget);
        for (const Digest &d : digests) cache.put(d, 1, large);
        const std::size_t full = heap_in_use() - before;
        if (full > RecordCache::fixed_bytes(slots) + cache.records_bytes() + slack)
            fail_msg("cache takes %zu bytes, counts %zu + %zu of slots", full, cache.records_bytes(),
                     RecordCache::fixed_bytes(slots));
        // Every entry replaced, in the same snapshot, by a record owning less.
        for (const Digest &d : digests) cache.put(d, 1, with_networks("x", 1));
        const std::size_t replaced = heap_in_use() - before;
        if (replaced > RecordCache::fixed_bytes(slots) + cache.records_bytes() + slack)
            fail_msg("after replacing: cache takes %zu bytes, counts %zu + %zu of slots", replaced,
                     cache.records_bytes(), RecordCache::fixed_bytes(slots));
    }
    assert_true(heap_in_use() <= before + slack);
}

// This process's anonymous memory, in kB (what an httpd child's figure in
// the soak is).
long anonymous_kb() {
    std::FILE *f = std::fopen("/proc/self/smaps_rollup", "r");
    if (!f) fail_msg("cannot read /proc/self/smaps_rollup");
    char line[256];
    long kb = -1;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "Anonymous: %ld kB", &kb) == 1) break;
    std::fclose(f);
    return kb;
}

// A store closed (a child moving to a swapped-in directory) gives its cache's
// slots back to the kernel. They were a vector: glibc kept a freed block that
// large in the arena, and each store a child opened after a swap added
// megabytes for good.
void test_closed_cache_gives_its_slots_back(void **) {
    if (!heap_measurable) {
        print_message("ASan's allocator: skipped\n");
        return;
    }
    const long start = anonymous_kb();
    const long slots_kb = static_cast<long>(RecordCache::fixed_bytes(StoreSettings::record_cache_slots) / 1024);
    for (int round = 0; round < 4; ++round) {
        {
            RecordCache cache(StoreSettings::record_cache_slots, StoreSettings::record_cache_bytes);
            cache.put(new_digest(), 1, rec("alice", "ci"));
            if (anonymous_kb() < start + slots_kb / 2)
                fail_msg("round %d: the slots (%ld kB) do not show in anonymous memory", round, slots_kb);
        }
        const long after = anonymous_kb();
        if (after > start + 1024)
            fail_msg("round %d: %ld kB of anonymous memory left after the cache closed (%ld at start, slots %ld kB)",
                     round, after, start, slots_kb);
    }
}

SipTag tag_of(std::uint64_t prefix, unsigned n = 0) {
    SipTag t{};
    std::memcpy(t.data(), &prefix, sizeof prefix);
    t[8] = static_cast<unsigned char>(n);
    t[15] = static_cast<unsigned char>(n >> 8);
    return t;
}

// Entries kept under a token's tag (find_token()) follow the same rules as
// those kept under a digest: only for the transaction they were read in,
// dropped by a newer one, and within the same byte budget; a hit gives the
// digest kept with the record.
void test_token_entries_follow_the_same_rules(void **) {
    RecordCache cache(64, 4096);
    const TokenRecord r = rec("alice", "deploy");
    const SipTag t = tag_of(0x77);
    const Digest d = digest_of(0x99, 3);
    Digest got{};
    std::optional<TokenRecord> hit;
    cache.put_token(t, 5, d, r);
    assert_true(cache.get_token(t, 5, got, hit));
    assert_true(hit.has_value() && *hit == r);
    assert_true(got == d);
    assert_false(cache.get_token(t, 4, got, hit));  // another snapshot: a revoke, an edit
    assert_false(cache.get_token(t, 6, got, hit));
    assert_false(cache.get_token(t, 0, got, hit));
    // Tags are told apart by all of their bytes, not only those that choose the set.
    assert_false(cache.get_token(tag_of(0x77, 1), 5, got, hit));
    assert_false(cache.get_token(tag_of(0x77, 0x100), 5, got, hit));
    // A digest and a tag do not stand for each other.
    assert_false(cache.get(d, 5).has_value());
    Digest as_digest{};
    std::memcpy(as_digest.data(), t.data(), t.size());
    assert_false(cache.get(as_digest, 5).has_value());
    // A newer snapshot drops it, and an older one is not kept.
    cache.put_token(tag_of(0x78), 6, d, r);
    assert_false(cache.get_token(t, 5, got, hit));
    cache.put_token(t, 5, d, r);
    assert_false(cache.get_token(t, 5, got, hit));
    // The same byte budget.
    const TokenRecord big = with_networks("big", max_allowed_networks);
    RecordCache small(64, RecordCache::heap_bytes(big) + 10);
    small.put_token(tag_of(1), 7, d, big);
    small.put_token(tag_of(2), 7, d, big);
    assert_true(small.get_token(tag_of(1), 7, got, hit));
    assert_false(small.get_token(tag_of(2), 7, got, hit));
    assert_true(small.records_bytes() <= RecordCache::heap_bytes(big) + 10);
    // The same tag put again replaces its own entry.
    cache.put_token(t, 6, d, rec("alice", "renamed"));
    assert_true(cache.get_token(t, 6, got, hit));
    assert_true(hit.has_value() && hit->name == "renamed");
    cache.clear();
    assert_false(cache.get_token(t, 6, got, hit));
}

// The documented figure (StoreSettings, docs/store.md): at most 9.3 MiB per
// open store per httpd child, slots and records together.
void test_documented_worst_case(void **) {
    const std::size_t worst =
        RecordCache::fixed_bytes(StoreSettings::record_cache_slots) + StoreSettings::record_cache_bytes;
    if (worst > std::size_t(9.3 * 1024 * 1024))
        fail_msg("worst case %zu bytes, documented as 9.3 MiB", worst);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hits_only_for_the_same_transaction),
        cmocka_unit_test(test_newer_transaction_drops_older_entries),
        cmocka_unit_test(test_misses_store_nothing),
        cmocka_unit_test(test_bytes_bound),
        cmocka_unit_test(test_full_set),
        cmocka_unit_test(test_second_choice),
        cmocka_unit_test(test_ten_thousand_in_use_fit),
        cmocka_unit_test(test_thrashing_samples_fills),
        cmocka_unit_test(test_working_set_that_fits_is_not_thrashing),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_counted_bytes_are_real),
        cmocka_unit_test(test_documented_worst_case),
        cmocka_unit_test(test_token_entries_follow_the_same_rules),
        cmocka_unit_test(test_closed_cache_gives_its_slots_back),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

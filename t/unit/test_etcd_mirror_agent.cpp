// SPDX-License-Identifier: Apache-2.0
// Unit tests for the mirror agent's decisions (lib/cluster/mirror_agent.hpp),
// without an etcd: when to read whole, what a watch answer applies and where
// it takes the store (highest kv.mod_revision, never header.revision), what a
// freshness proof proves, the schema check, drift, backoff. The agent itself
// runs against a real cluster in t/cluster/test_mirror_agent.py.

#include <string>
#include <vector>

#include "cluster/mirror_agent.hpp"
#include "cluster/mirror_keys.hpp"
#include "store/lsheader.hpp"
#include "token/record.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"

using namespace cptoken;
using namespace cptoken::etcd;

namespace {

const std::string P = "/cptoken/v1/";
const std::string digest_a = std::string(128, 'a'), digest_b = std::string(128, 'b');

std::string record_value(const char *user, const char *name) {
    TokenRecord record;
    record.user = user;
    record.name = name;
    record.created = 1700000000;
    return ls_encode(1, 1, 0, encode_record(record));
}

KeyValue kv(std::string key, std::string value, std::int64_t mod_revision) {
    KeyValue out;
    out.key = std::move(key);
    out.value = std::move(value);
    out.mod_revision = mod_revision;
    return out;
}

WatchEvent put_event(std::string key, std::string value, std::int64_t mod_revision) {
    WatchEvent event;
    event.kv = kv(std::move(key), std::move(value), mod_revision);
    return event;
}

ResponseHeader header(std::uint64_t cluster_id, std::int64_t revision) {
    ResponseHeader h;
    h.cluster_id = cluster_id;
    h.revision = revision;
    return h;
}

void full_read_when_never_synced_other_cluster_or_etcd_went_back(void **) {
    assert_true(full_read_reason(std::nullopt, header(7, 10)).has_value());
    const MirrorPoint point{100, 90, "7"};
    assert_false(full_read_reason(point, header(7, 100)).has_value());  // nothing new: resume at 101
    assert_false(full_read_reason(point, header(7, 5000)).has_value());
    const auto other = full_read_reason(point, header(8, 5000));
    assert_true(other && other->find("cluster 8") != std::string::npos);
    const auto back = full_read_reason(point, header(7, 99));  // restored from an older snapshot
    assert_true(back && back->find("99") != std::string::npos);
}

void events_move_the_point_to_the_highest_mod_revision_not_the_header(void **) {
    const MirrorPoint before{10, 8, "7"};
    WatchResponse answer;  // a catch-up answer: events up to 1010, header says 1318
    answer.header.revision = 1318;
    answer.events = {put_event(P + "tokens/" + digest_a, record_value("alice", "t"), 11),
                     put_event(P + "names/alice/t", "digest", 11), put_event(P + "gen", "", 11),
                     put_event(P + "tokens/" + digest_b, record_value("bob", "u"), 1010)};
    WatchEvent deleted;
    deleted.type = WatchEvent::Type::del;
    deleted.kv = kv(P + "names/bob/old", "", 1009);
    answer.events.insert(answer.events.begin() + 3, deleted);
    const MappedEvents mapped = map_events(P, answer.events, before);
    assert_int_equal(mapped.point.applied_revision, 1010);
    assert_int_equal(answer.max_mod_revision(), 1010);
    assert_int_equal(mapped.point.gen_revision, 11);
    assert_string_equal(mapped.point.cluster_id.c_str(), "7");
    assert_int_equal(mapped.writes.size(), 4);  // gen is no store write
    assert_false(mapped.writes[2].value.has_value());  // the DELETE
    assert_false(mapped.schema_changed);

    // Events already applied (a duplicate after a reconnect) change nothing.
    const MappedEvents again = map_events(P, answer.events, mapped.point);
    assert_true(again.writes.empty());
    assert_int_equal(again.point.applied_revision, 1010);

    const MappedEvents schema = map_events(P, {put_event(P + "meta/schema_version", "2", 1011)}, mapped.point);
    assert_true(schema.schema_changed);
}

void a_full_read_keeps_gen_and_schema_apart(void **) {
    const std::vector<KeyValue> kvs = {kv(P + "gen", "", 40), kv(P + "meta/schema_version", "1", 2),
                                       kv(P + "names/alice/t", "x", 39),
                                       kv(P + "tokens/" + digest_a, record_value("alice", "t"), 39)};
    // Mapped a page at a time, as it arrives.
    MappedRead read;
    map_full_read(P, {kvs[0], kvs[1]}, read);
    map_full_read(P, {kvs[2], kvs[3]}, read);
    assert_int_equal(read.gen_revision, 40);
    assert_true(read.schema_value && *read.schema_value == "1");
    assert_int_equal(read.writes.size(), 2);
    assert_int_equal(read.mod_revisions.size(), 2);
    assert_int_equal(read.mod_revisions[0], 39);
    MappedRead empty;
    map_full_read(P, {}, empty);
    assert_int_equal(empty.gen_revision, 0);
    assert_true(empty.writes.empty());
}

void schema_above_ours_or_not_a_number_is_refused(void **) {
    check_schema(std::nullopt);
    check_schema(std::string("1"));
    for (const char *bad : {"2", "", "1x", "-1", "99999999999999999999999"}) {
        try {
            check_schema(std::string(bad));
            fail_msg("accepted schema '%s'", bad);
        } catch (const SchemaTooNew &) {
        }
    }
}

void a_proof_is_fresh_only_when_the_store_holds_gen(void **) {
    const MirrorPoint point{100, 90, "7"};
    assert_int_equal(prove(point, 90, header(7, 100)), Proof::fresh);
    assert_int_equal(prove(point, 100, header(7, 150)), Proof::fresh);
    assert_int_equal(prove(point, 0, header(7, 100)), Proof::fresh);  // no admin write yet
    assert_int_equal(prove(point, 101, header(7, 101)), Proof::behind);
    assert_int_equal(prove(point, 90, header(8, 100)), Proof::other_cluster);  // a gen below ours proves nothing there
    assert_int_equal(prove(point, 5, header(7, 50)), Proof::went_back);
    assert_int_equal(prove(std::nullopt, 0, header(7, 1)), Proof::never_synced);
}

Drift count_drift(const std::vector<StoreWrite> &local, const std::vector<MappedRead> &pages, std::int64_t applied) {
    DriftCount count;
    for (const StoreWrite &write : local) count.held(write.database, write.key, *write.value);
    for (const MappedRead &page : pages) count.compare(page, applied);
    return count.drift();
}

void drift_counts_what_the_watch_should_have_brought(void **) {
    const std::string a = std::string(64, 'a'), b = std::string(64, 'b'), c = std::string(64, 'c');
    const std::string va = record_value("alice", "a"), vb = record_value("bob", "b");
    const std::vector<StoreWrite> local = {{StoreWrite::Database::tokens, a, va},
                                           {StoreWrite::Database::tokens, b, record_value("bob", "old")},
                                           {StoreWrite::Database::tokens, c, va}};
    // Two pages, as a full read arrives.
    std::vector<MappedRead> etcd(2);
    etcd[0].writes = {{StoreWrite::Database::tokens, a, va}, {StoreWrite::Database::tokens, b, vb}};
    etcd[0].mod_revisions = {10, 20};
    etcd[1].writes = {{StoreWrite::Database::tokens, std::string(64, 'd'), vb},
                      {StoreWrite::Database::tokens, std::string(64, 'e'), std::string("not a store's value")}};
    etcd[1].mod_revisions = {30, 5};
    // At 25: b (20) differs; d (30) is newer than the store's point, not drift; e is refused, not drift;
    // c is gone from etcd.
    Drift drift = count_drift(local, etcd, 25);
    assert_int_equal(drift.differ, 1);
    assert_int_equal(drift.gone, 1);
    assert_int_equal(drift.total(), 2);
    drift = count_drift(local, etcd, 30);
    assert_int_equal(drift.differ, 2);
    drift = count_drift(local, etcd, 19);
    assert_int_equal(drift.differ, 0);
    // The same key in the other database is another key; the same value under another key is no match.
    const std::vector<StoreWrite> as_name = {{StoreWrite::Database::names, a, va}};
    std::vector<MappedRead> token_a(1);
    token_a[0].writes = {{StoreWrite::Database::tokens, a, va}};
    token_a[0].mod_revisions = {10};
    drift = count_drift(as_name, token_a, 25);
    assert_int_equal(drift.differ, 1);
    assert_int_equal(drift.gone, 1);
    // Nothing differs: no drift, whatever the page boundaries.
    std::vector<MappedRead> same(3);
    for (std::size_t i = 0; i < local.size(); ++i) {
        same[i].writes = {local[i]};
        same[i].mod_revisions = {7};
    }
    assert_int_equal(count_drift(local, same, 25).total(), 0);
}

void backoff_grows_with_jitter_and_a_ceiling(void **) {
    std::mt19937 random(1);
    for (int round = 0; round < 200; ++round) {
        const auto first = backoff_delay(0, random).count();
        assert_in_range(first, 50, 100);
        const auto third = backoff_delay(2, random).count();
        assert_in_range(third, 200, 400);
        const auto late = backoff_delay(40, random).count();
        assert_in_range(late, 2500, 5000);
        const auto every = jittered(std::chrono::milliseconds(600000), random).count();
        assert_in_range(every, 540000, 660000);
    }
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_read_when_never_synced_other_cluster_or_etcd_went_back),
        cmocka_unit_test(events_move_the_point_to_the_highest_mod_revision_not_the_header),
        cmocka_unit_test(a_full_read_keeps_gen_and_schema_apart),
        cmocka_unit_test(schema_above_ours_or_not_a_number_is_refused),
        cmocka_unit_test(a_proof_is_fresh_only_when_the_store_holds_gen),
        cmocka_unit_test(drift_counts_what_the_watch_should_have_brought),
        cmocka_unit_test(backoff_grows_with_jitter_and_a_ceiling),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

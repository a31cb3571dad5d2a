// SPDX-License-Identifier: Apache-2.0
// Unit tests for cluster mode's store side (issue 24) on real LMDB files:
// TokenStore::write_through (a change made on the mirror, never committed
// there, made again on a conflict), apply_mirror (what the agent writes) and
// the layout in etcd (lib/cluster/mirror_keys.hpp). etcd itself is in
// t/cluster; here a RemoteWriter plays it, one revision per commit, and
// hands its writes to the mirror as the agent would.

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/mirror_keys.hpp"
#include "store/lsheader.hpp"
#include "store/store.hpp"
#include "token/token.hpp"

#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

const MirrorPoint first_point{10, 7, "42"};

// etcd as the store sees it: a revision counter and P gen's revision; a
// commit is applied to the mirror at once, as a live agent would.
struct PlayedEtcd : RemoteWriter {
    TokenStore &mirror;
    std::int64_t revision = first_point.applied_revision, gen = first_point.gen_revision;
    std::vector<std::vector<StoreWrite>> commits;
    // Runs before the next publish's compare, as another host's write would.
    std::function<void()> before_next;

    explicit PlayedEtcd(TokenStore &store) : mirror(store) {}

    Outcome publish(const std::vector<StoreWrite> &writes, const MirrorPoint &base) override {
        if (auto other = std::exchange(before_next, nullptr)) other();
        if (base.gen_revision != gen) return Outcome::conflict;  // the mirror already holds the other write
        commit(writes);
        return Outcome::committed;
    }
    void commit(const std::vector<StoreWrite> &writes) {
        gen = ++revision;
        commits.push_back(writes);
        mirror.apply_mirror(writes, MirrorPoint{revision, gen, first_point.cluster_id}, false);
    }
};

std::string digest_key(const Digest &d) { return std::string(reinterpret_cast<const char *>(d.data()), d.size()); }

void test_a_store_that_is_no_mirror_refuses_cluster_writes(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    store.write_through(std::make_shared<PlayedEtcd>(store));
    const std::string message = EXPECT_STORE_ERROR(access, store.add(new_digest(), rec("alice", "t1")));
    assert_non_null(strstr(message.c_str(), "not a mirror of etcd yet"));
    assert_int_equal(store.stored_count(), 0);
}

void test_a_mirror_refuses_a_change_made_here(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    store.add(new_digest(), rec("alice", "before"));  // a single host's store: written here
    store.apply_mirror({}, first_point, false);        // now its agent's
    const std::string message = EXPECT_STORE_ERROR(access, store.add(new_digest(), rec("alice", "t1")));
    assert_non_null(strstr(message.c_str(), "mirrors the token set in etcd"));
    EXPECT_STORE_ERROR(access, store.revoke("alice", "before"));
    assert_true(store.find_by_name("alice", "before").has_value());
}

void test_a_write_reaches_the_store_only_through_etcd(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    store.apply_mirror({}, first_point, true);
    auto etcd = std::make_shared<PlayedEtcd>(store);
    store.write_through(etcd);
    const Digest digest = new_digest();
    store.add(digest, rec("alice", "t1"));
    assert_int_equal(etcd->commits.size(), 1);
    const auto &writes = etcd->commits[0];
    assert_int_equal(writes.size(), 2);  // the record and its name; meta stays here
    assert_true(writes[0].database == StoreWrite::Database::tokens && writes[0].key == digest_key(digest));
    assert_true(writes[1].database == StoreWrite::Database::names && writes[1].key == std::string("alice\0t1", 8));
    assert_true(store.find(digest).has_value());
    assert_int_equal(store.mirror_point()->applied_revision, first_point.applied_revision + 1);

    // A write etcd never takes leaves nothing here.
    struct Refusing : RemoteWriter {
        Outcome publish(const std::vector<StoreWrite> &, const MirrorPoint &) override {
            throw StoreError(StoreError::Kind::access, "etcd: unreachable");
        }
    };
    store.write_through(std::make_shared<Refusing>());
    EXPECT_STORE_ERROR(access, store.revoke("alice", "t1"));
    assert_true(store.find(digest).has_value());
}

void test_a_name_raced_for_goes_to_one_writer(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    store.apply_mirror({}, first_point, true);
    auto etcd = std::make_shared<PlayedEtcd>(store);
    store.write_through(etcd);
    // Another host creates alice/t1 between this change and its commit.
    const Digest theirs = new_digest(), ours = new_digest();
    etcd->before_next = [&] {
        std::vector<StoreWrite> writes;
        const std::string value = ls_encode(1, 1, 0, encode_record(rec("alice", "t1")));
        writes.push_back({StoreWrite::Database::tokens, digest_key(theirs), value});
        writes.push_back({StoreWrite::Database::names, std::string("alice\0t1", 8), ls_encode(1, 1, 0, digest_key(theirs))});
        etcd->commit(writes);  // reaches this mirror before the compare, as the agent would apply it
    };
    EXPECT_STORE_ERROR(duplicate, store.add(ours, rec("alice", "t1")));
    assert_true(store.find(theirs).has_value());
    assert_false(store.find(ours).has_value());
    assert_int_equal(etcd->commits.size(), 1);  // theirs only
}

void test_a_conflict_makes_the_change_again_on_the_newer_mirror(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    store.apply_mirror({}, first_point, true);
    auto etcd = std::make_shared<PlayedEtcd>(store);
    store.write_through(etcd);
    store.add(new_digest(), rec("alice", "t1"));
    etcd->before_next = [&] {  // another host adds bob/b1 meanwhile
        const Digest digest = new_digest();
        etcd->commit({{StoreWrite::Database::tokens, digest_key(digest), ls_encode(1, 1, 0, encode_record(rec("bob", "b1")))},
                      {StoreWrite::Database::names, std::string("bob\0b1", 6), ls_encode(1, 1, 0, digest_key(digest))}});
    };
    store.edit("alice", "t1", TokenChanges{.name = std::string("t2")});
    assert_int_equal(etcd->commits.size(), 3);
    assert_true(store.find_by_name("alice", "t2").has_value());
    assert_true(store.find_by_name("bob", "b1").has_value());
    assert_false(store.find_by_name("alice", "t1").has_value());
}

void test_a_dry_run_batch_sends_nothing(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    store.apply_mirror({}, first_point, true);
    auto etcd = std::make_shared<PlayedEtcd>(store);
    store.write_through(etcd);
    store.batch([&](TokenBatch &batch) {
        batch.put_many({{new_digest(), rec("alice", "t1")}});
        return false;
    });
    assert_int_equal(etcd->commits.size(), 0);
    assert_int_equal(store.stored_count(), 0);
}

void test_a_full_read_removes_what_etcd_lost_and_refuses_what_is_not_a_store_value(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    const Digest kept = new_digest(), gone = new_digest(), bad = new_digest();
    const std::string kept_value = ls_encode(5, 1, 0, encode_record(rec("alice", "kept")));
    std::vector<StoreWrite> first{
        {StoreWrite::Database::tokens, digest_key(kept), kept_value},
        {StoreWrite::Database::tokens, digest_key(gone), ls_encode(5, 1, 0, encode_record(rec("alice", "gone")))},
    };
    MirrorApplied applied = store.apply_mirror(first, first_point, true);
    assert_int_equal(applied.changed, 2);
    assert_true(store.find(gone).has_value());

    std::vector<StoreWrite> second{
        {StoreWrite::Database::tokens, digest_key(kept), kept_value},
        {StoreWrite::Database::tokens, digest_key(bad), std::string("not a record")},
    };
    applied = store.apply_mirror(second, MirrorPoint{20, 20, "42"}, true);
    assert_int_equal(applied.changed, 1);  // gone went; bad was never stored
    assert_int_equal(applied.refused, 1);
    assert_true(store.find(kept).has_value());
    assert_false(store.find(gone).has_value());
    assert_false(store.find(bad).has_value());
    assert_int_equal(store.mirror_point()->applied_revision, 20);

    // The same read again (at the same point) changes nothing, and commits nothing.
    struct stat before{}, after{};
    const std::string file = fx(state).store + "/" + token_store_file;
    assert_int_equal(stat(file.c_str(), &before), 0);
    applied = store.apply_mirror({second[0]}, MirrorPoint{20, 20, "42"}, true);
    assert_int_equal(applied.changed, 0);
    assert_int_equal(stat(file.c_str(), &after), 0);
    assert_int_equal(after.st_size, before.st_size);
    assert_true(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    // A newer point alone is written.
    applied = store.apply_mirror({second[0]}, MirrorPoint{21, 20, "42"}, true);
    assert_int_equal(applied.changed, 0);
    assert_int_equal(store.mirror_point()->applied_revision, 21);
}

// A full read compares each key with the store as it walks it, instead of
// looking each up: a changed value is still written, and a key the read
// holds twice (two etcd keys for one digest) ends with its later value, as
// when each is looked up in turn.
void test_a_full_read_writes_what_changed_and_the_later_of_two_values(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    const Digest same = new_digest(), changed = new_digest(), twice = new_digest();
    const auto value = [](const char *name) { return ls_encode(5, 1, 0, encode_record(rec("alice", name))); };
    store.apply_mirror({{StoreWrite::Database::tokens, digest_key(same), value("same")},
                        {StoreWrite::Database::tokens, digest_key(changed), value("old")},
                        {StoreWrite::Database::tokens, digest_key(twice), value("first")}},
                       first_point, true);
    MirrorApplied applied = store.apply_mirror({{StoreWrite::Database::tokens, digest_key(same), value("same")},
                                                {StoreWrite::Database::tokens, digest_key(changed), value("new")},
                                                {StoreWrite::Database::tokens, digest_key(twice), value("second")},
                                                {StoreWrite::Database::tokens, digest_key(twice), value("first")}},
                                               MirrorPoint{20, 20, "42"}, true);
    assert_int_equal(applied.changed, 3);  // changed, then twice written twice
    assert_string_equal(store.find(changed)->name.c_str(), "new");
    assert_string_equal(store.find(twice)->name.c_str(), "first");
    assert_string_equal(store.find(same)->name.c_str(), "same");
    applied = store.apply_mirror({{StoreWrite::Database::tokens, digest_key(same), value("same")},
                                  {StoreWrite::Database::tokens, digest_key(changed), value("new")},
                                  {StoreWrite::Database::tokens, digest_key(twice), value("first")},
                                  {StoreWrite::Database::tokens, digest_key(twice), value("second")}},
                                 MirrorPoint{21, 20, "42"}, true);
    assert_int_equal(applied.changed, 1);  // twice: "first" is stored, "second" comes last
    assert_string_equal(store.find(twice)->name.c_str(), "second");
}

// The agent applies what its watch says during a full read ahead of the read,
// without a point (the store stays "at" where it was until the read is in),
// then the read with those changes after it, in one transaction: a change
// made during the read wins over the read's older value, a delete too.
void test_changes_ahead_of_a_full_read_keep_the_point_and_win_over_the_read(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    const Digest revoked = new_digest(), pruned = new_digest(), kept = new_digest();
    const auto value = [](const char *name) { return ls_encode(5, 1, 0, encode_record(rec("alice", name))); };
    store.apply_mirror({{StoreWrite::Database::tokens, digest_key(revoked), value("live")},
                        {StoreWrite::Database::tokens, digest_key(pruned), value("live")}},
                       first_point, true);
    const std::vector<StoreWrite> during{{StoreWrite::Database::tokens, digest_key(revoked), value("changed")},
                                         {StoreWrite::Database::tokens, digest_key(pruned), std::nullopt}};
    assert_int_equal(store.apply_mirror(during, std::nullopt, false).changed, 2);
    assert_int_equal(store.mirror_point()->applied_revision, first_point.applied_revision);
    assert_int_equal(store.mirror_point()->gen_revision, first_point.gen_revision);
    assert_string_equal(store.find(revoked)->name.c_str(), "changed");
    assert_false(store.find(pruned).has_value());

    // The read, at a revision before those changes, with them after it.
    std::vector<StoreWrite> read{{StoreWrite::Database::tokens, digest_key(revoked), value("live")},
                                 {StoreWrite::Database::tokens, digest_key(pruned), value("live")},
                                 {StoreWrite::Database::tokens, digest_key(kept), value("new")}};
    read.insert(read.end(), during.begin(), during.end());
    store.apply_mirror(read, MirrorPoint{21, 20, "42"}, true);
    assert_int_equal(store.mirror_point()->applied_revision, 21);
    assert_string_equal(store.find(revoked)->name.c_str(), "changed");
    assert_false(store.find(pruned).has_value());
    assert_string_equal(store.find(kept)->name.c_str(), "new");
}

// A full read's keys come in etcd's order, which is not the store's for a user
// whose name is a prefix of another's ("bob-x/..." sorts before "bob/..." in
// etcd, "bob\0..." before "bob-x\0..." in the store), nor for tokens a caller
// gives unsorted: the same read applied again removes and changes nothing.
void test_a_full_read_in_etcds_order_keeps_every_key(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    std::vector<Digest> digests{new_digest(), new_digest(), new_digest()};
    std::sort(digests.begin(), digests.end());
    std::swap(digests[0], digests[2]);  // unsorted
    std::vector<StoreWrite> writes{
        {StoreWrite::Database::names, std::string("bob-x\0a", 7), ls_encode(1, 1, 0, digest_key(digests[0]))},
        {StoreWrite::Database::names, std::string("bob\0a", 5), ls_encode(1, 1, 0, digest_key(digests[1]))},
    };
    for (const Digest &digest : digests)
        writes.push_back({StoreWrite::Database::tokens, digest_key(digest), ls_encode(5, 1, 0, encode_record(rec("bob", "a")))});
    assert_int_equal(store.apply_mirror(writes, first_point, true).changed, 5);
    const MirrorApplied again = store.apply_mirror(writes, MirrorPoint{20, 20, "42"}, true);
    assert_int_equal(again.changed, 0);
    for (const Digest &digest : digests) assert_true(store.find(digest).has_value());
    const std::vector<StoreWrite> held = store.all_writes();
    assert_int_equal(std::count_if(held.begin(), held.end(),
                                   [](const StoreWrite &w) { return w.database == StoreWrite::Database::names; }),
                     2);
}

void test_a_bad_value_for_a_live_token_revokes_it(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    const Digest digest = new_digest();
    store.apply_mirror({{StoreWrite::Database::tokens, digest_key(digest), ls_encode(5, 1, 0, encode_record(rec("alice", "t")))}},
                       first_point, true);
    assert_true(store.find(digest).has_value());
    const MirrorApplied applied =
        store.apply_mirror({{StoreWrite::Database::tokens, digest_key(digest), std::string("garbage")}}, first_point, false);
    assert_int_equal(applied.refused, 1);
    assert_false(store.find(digest).has_value());  // fail closed: never kept as it was
}

void test_a_snapshot_shows_each_key_once_with_its_point(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    std::vector<StoreWrite> writes{{StoreWrite::Database::names, std::string("bob\0a", 5), std::string()}};
    for (int i = 0; i < 3; ++i) {
        const Digest digest = new_digest();
        writes.push_back({StoreWrite::Database::tokens, digest_key(digest), ls_encode(5, 1, 0, encode_record(rec("bob", "a")))});
    }
    writes[0].value = ls_encode(1, 1, 0, writes[1].key);
    store.apply_mirror(writes, first_point, true);
    std::vector<StoreWrite> seen;
    const std::optional<MirrorPoint> point =
        store.mirror_snapshot([&](StoreWrite::Database database, std::string_view key, std::string_view value) {
            seen.push_back({database, std::string(key), std::string(value)});
        });
    assert_true(point.has_value());
    assert_int_equal(point->applied_revision, first_point.applied_revision);
    const std::vector<StoreWrite> all = store.all_writes();
    assert_int_equal(seen.size(), 4);
    assert_int_equal(all.size(), 4);
    for (std::size_t i = 0; i < all.size(); ++i) {
        assert_true(seen[i].database == all[i].database);
        assert_true(seen[i].key == all[i].key);
        assert_true(seen[i].value == all[i].value);
    }
    // A read-only (lock-free) store may read a snapshot twice: refused, never a key seen twice.
    const TokenStore reader(fx(state).store, Access::read_only);
    bool thrown = false;
    try {
        reader.mirror_snapshot([](StoreWrite::Database, std::string_view, std::string_view) {});
    } catch (const std::logic_error &) {
        thrown = true;
    }
    assert_true(thrown);
}

void test_etcd_keys_round_trip(void **) {
    const std::string prefix = etcd::default_prefix;
    const Digest digest = new_digest();
    const StoreWrite token{StoreWrite::Database::tokens, digest_key(digest), std::string("v")};
    const std::string key = etcd::etcd_key(prefix, token);
    assert_string_equal(key.c_str(), (prefix + "tokens/" + digest_hex(digest)).c_str());
    auto back = etcd::store_write(prefix, key, "v");
    assert_true(back && back->database == StoreWrite::Database::tokens && back->key == token.key && *back->value == "v");

    const StoreWrite name{StoreWrite::Database::names, std::string("alice\0deploy-1", 14), std::nullopt};
    const std::string name_key = etcd::etcd_key(prefix, name);
    assert_string_equal(name_key.c_str(), (prefix + "names/alice/deploy-1").c_str());
    back = etcd::store_write(prefix, name_key, "", true);
    assert_true(back && back->database == StoreWrite::Database::names && back->key == name.key && !back->value);

    assert_false(etcd::store_write(prefix, etcd::gen_key(prefix), "x").has_value());
    assert_false(etcd::store_write(prefix, etcd::schema_key(prefix), "1").has_value());
    assert_false(etcd::store_write(prefix, "/other/tokens/aa", "x").has_value());
    // Under P but no key of ours: kept empty, so that apply_mirror refuses it.
    back = etcd::store_write(prefix, prefix + "tokens/zz", "x");
    assert_true(back && back->key.empty());
    back = etcd::store_write(prefix, prefix + "names/Bad User/x", "x");
    assert_true(back && back->key.empty());

    bool threw = false;
    try {
        etcd::etcd_key(prefix, StoreWrite{StoreWrite::Database::names, std::string("a/b\0c", 5), std::nullopt});
    } catch (const std::invalid_argument &) {
        threw = true;
    }
    assert_true(threw);
    assert_string_equal(etcd::usage_prefix(prefix).c_str(), "/cptoken/v1-usage/");
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_store_that_is_no_mirror_refuses_cluster_writes, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_mirror_refuses_a_change_made_here, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_write_reaches_the_store_only_through_etcd, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_name_raced_for_goes_to_one_writer, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_conflict_makes_the_change_again_on_the_newer_mirror, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_dry_run_batch_sends_nothing, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_full_read_removes_what_etcd_lost_and_refuses_what_is_not_a_store_value,
                                        setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_full_read_in_etcds_order_keeps_every_key, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_changes_ahead_of_a_full_read_keep_the_point_and_win_over_the_read, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_full_read_writes_what_changed_and_the_later_of_two_values, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_bad_value_for_a_live_token_revokes_it, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_snapshot_shows_each_key_once_with_its_point, setup_init, teardown),
        cmocka_unit_test(test_etcd_keys_round_trip),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/store/store.hpp on real LMDB files in a temporary directory.
// LMDB forbids opening one environment twice in a process: every test keeps
// at most one TokenStore on a given directory open at a time, closes it
// before looking at the files with the raw LMDB API, and uses fork() where
// two processes are needed.

#include <grp.h>
#include <lmdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "store/lsheader.hpp"
#include "token/network.hpp"
#include "token/record.hpp"
#include "store/store.hpp"
#include "store/usage_store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;
namespace fs = std::filesystem;

namespace {




std::string dkey(const Digest &d) { return std::string(reinterpret_cast<const char *>(d.data()), d.size()); }
std::string nkey(const std::string &user, const std::string &name) { return user + std::string(1, '\0') + name; }
std::string tokens_file(const Fixture &f) { return f.store + "/" + token_store_file; }

mode_t mode_of(const std::string &path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) fail_msg("stat %s: %s", path.c_str(), strerror(errno));
    return st.st_mode;
}
gid_t gid_of(const std::string &path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) fail_msg("stat %s: %s", path.c_str(), strerror(errno));
    return st.st_gid;
}

std::vector<std::string> names_of(const std::vector<StoredToken> &v) {
    std::vector<std::string> out;
    for (const auto &t : v) out.push_back(t.record.user + "/" + t.record.name);
    return out;
}

void expect_names(const std::vector<StoredToken> &v, const std::vector<std::string> &expected, int line) {
    auto got = names_of(v);
    if (got != expected) {
        std::string g, e;
        for (auto &s : got) g += s + " ";
        for (auto &s : expected) e += s + " ";
        fail_msg("line %d: list gave [%s], expected [%s]", line, g.c_str(), e.c_str());
    }
}
#define EXPECT_NAMES(v, ...) expect_names((v), std::vector<std::string>{__VA_ARGS__}, __LINE__)

// ---- tests

void check_modes(const std::string &dir) {
    assert_int_equal(mode_of(dir) & 07777, 02750);
    assert_true(S_ISDIR(mode_of(dir)));
    assert_int_equal(mode_of(dir + "/tokens.mdb") & 07777, 0640);
    assert_int_equal(mode_of(dir + "/tokens.mdb-lock") & 07777, 0600);  // the writers' alone
    assert_int_equal(mode_of(dir + "/tokens.mdb-committed") & 07777, 0640);
    assert_int_equal(mode_of(dir + "/usage.slots") & 07777, 0660);
    for (const char *f : {"", "/tokens.mdb", "/tokens.mdb-lock", "/tokens.mdb-committed", "/usage.slots"})
        assert_int_equal(gid_of(dir + f), getgid());
}

void test_init(void **state) {
    Fixture &f = fx(state);
    mode_t old = umask(022);
    InitOutcome a = init_store(f.store, getgid());
    InitOutcome b = init_store(f.store, getgid());
    umask(old);
    assert_true(a == InitOutcome::created);
    assert_true(b == InitOutcome::already_present);
    check_modes(f.store);
    // Nothing else in the directory besides the two environments and the commit record.
    std::vector<std::string> entries;
    for (const auto &e : fs::directory_iterator(f.store)) entries.push_back(e.path().filename());
    std::sort(entries.begin(), entries.end());
    std::vector<std::string> expected = {"tokens.mdb", "tokens.mdb-committed", "tokens.mdb-lock", "usage.slots"};
    assert_true(entries == expected);
    // Opens.
    TokenStore s(f.store, Access::read_write);
    assert_int_equal(s.list().size(), 0);
}

void test_init_strict_umask(void **state) {
    Fixture &f = fx(state);
    mode_t old = umask(077);
    InitOutcome a = init_store(f.store, getgid());
    umask(old);
    assert_true(a == InitOutcome::created);
    check_modes(f.store);
}

void test_init_keeps_existing(void **state) {
    Fixture &f = fx(state);
    assert_true(init_store(f.store, getgid()) == InitOutcome::created);
    Digest d = new_digest();
    {
        TokenStore s(f.store, Access::read_write);
        s.add(d, rec("alice", "keep"));
    }
    assert_true(init_store(f.store, getgid()) == InitOutcome::already_present);
    // A second init repairs modes and keeps the tokens.
    chmod(f.store.c_str(), 02700);
    assert_true(init_store(f.store, getgid()) == InitOutcome::repaired);
    assert_int_equal(mode_of(f.store) & 07777, 02750);
    TokenStore s(f.store, Access::read_only);
    auto r = s.find(d);
    assert_true(r.has_value());
    assert_string_equal(r->name.c_str(), "keep");
}

void test_missing(void **state) {
    Fixture &f = fx(state);
    EXPECT_STORE_ERROR(missing, TokenStore s(f.tmp + "/nonexistent", Access::read_only));
    EXPECT_STORE_ERROR(missing, TokenStore s(f.tmp + "/nonexistent", Access::read_write));
    EXPECT_STORE_ERROR(missing, UsageStore s(f.tmp + "/nonexistent", Access::read_only));
    // An existing but empty directory is not a store either, and opening it creates nothing.
    mkdir(f.store.c_str(), 0750);
    EXPECT_STORE_ERROR(missing, TokenStore s(f.store, Access::read_only));
    EXPECT_STORE_ERROR(missing, TokenStore s(f.store, Access::read_write));
    EXPECT_STORE_ERROR(missing, UsageStore s(f.store, Access::read_write));
    assert_true(fs::is_empty(f.store));
}

void test_add_find(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    Digest d1 = new_digest(), d2 = new_digest(), d3 = new_digest();
    TokenRecord r1 = rec("alice", "deploy", 1900000000, {net("10.0.0.0/8"), net("2001:db8::/32")});
    TokenRecord r2 = rec("alice", "backup");
    s.add(d1, r1);
    s.add(d2, r2);
    auto f1 = s.find(d1);
    assert_true(f1.has_value());
    assert_true(*f1 == r1);
    auto f2 = s.find(d2);
    assert_true(f2.has_value());
    assert_true(*f2 == r2);
    assert_false(s.find(d3).has_value());
    auto n1 = s.find_by_name("alice", "deploy");
    assert_true(n1.has_value());
    assert_true(n1->digest == d1);
    assert_true(n1->record == r1);
    assert_false(s.find_by_name("alice", "nope").has_value());
    assert_false(s.find_by_name("bob", "deploy").has_value());
    assert_false(s.find_by_name("alic", "deploy").has_value());
    assert_false(s.find_by_name("alice", "deplo").has_value());
    assert_false(s.find_by_name("alice", "deploy2").has_value());
    // The digest of the cPanel example token as a key.
    Digest dc = token_digest("U7HMR63FGY292DQZ4H5BFH16JLYMO01M");
    s.add(dc, rec("carol", "imported"));
    assert_true(s.find(token_digest("U7HMR63FGY292DQZ4H5BFH16JLYMO01M")).has_value());
}

void test_persisted(void **state) {
    Fixture &f = fx(state);
    Digest d = new_digest();
    TokenRecord r = rec("alice", "deploy", 1900000000, {net("192.0.2.0/24")});
    {
        TokenStore s(f.store, Access::read_write);
        s.add(d, r);
    }
    TokenStore s(f.store, Access::read_only);
    auto got = s.find(d);
    assert_true(got.has_value());
    assert_true(*got == r);
    auto l = s.list();
    assert_int_equal(l.size(), 1);
    assert_true(l[0].digest == d);
}

void test_duplicate(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    Digest d1 = new_digest(), d2 = new_digest(), d3 = new_digest();
    s.add(d1, rec("alice", "deploy"));
    EXPECT_STORE_ERROR(duplicate, s.add(d2, rec("alice", "deploy", 1900000000)));
    // The failed add left nothing behind.
    assert_false(s.find(d2).has_value());
    assert_true(s.find_by_name("alice", "deploy")->digest == d1);
    // Same name, other user: fine.
    s.add(d2, rec("bob", "deploy"));
    assert_true(s.find_by_name("bob", "deploy")->digest == d2);
    // Same digest again, under any name: duplicate.
    EXPECT_STORE_ERROR(duplicate, s.add(d1, rec("carol", "other")));
    assert_false(s.find_by_name("carol", "other").has_value());
    assert_string_equal(s.find(d1)->user.c_str(), "alice");
    // Names are case sensitive (cPanel names are [A-Za-z0-9_-]).
    s.add(d3, rec("alice", "Deploy"));
    assert_int_equal(s.list("alice").size(), 2);
}

void test_list(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    // Added in no particular order; digests are random.
    s.add(new_digest(), rec("ab", "one"));
    s.add(new_digest(), rec("a", "zeta"));
    s.add(new_digest(), rec("a-b", "two"));
    s.add(new_digest(), rec("a", "alpha"));
    s.add(new_digest(), rec("b", "x"));
    s.add(new_digest(), rec("a", "mid"));
    s.add(new_digest(), rec("a", "alpha2"));
    s.add(new_digest(), rec("a-b", "one"));
    EXPECT_NAMES(s.list("a"), "a/alpha", "a/alpha2", "a/mid", "a/zeta");
    EXPECT_NAMES(s.list("a-b"), "a-b/one", "a-b/two");
    EXPECT_NAMES(s.list("ab"), "ab/one");
    EXPECT_NAMES(s.list("b"), "b/x");
    EXPECT_NAMES(s.list("nobody"));
    EXPECT_NAMES(s.list("a-"));
    EXPECT_NAMES(s.list(), "a/alpha", "a/alpha2", "a/mid", "a/zeta", "a-b/one", "a-b/two", "ab/one", "b/x");
    EXPECT_NAMES(s.list(""), "a/alpha", "a/alpha2", "a/mid", "a/zeta", "a-b/one", "a-b/two", "ab/one", "b/x");
    // Each listed digest finds its record.
    for (const auto &t : s.list()) {
        auto r = s.find(t.digest);
        assert_true(r.has_value());
        assert_true(*r == t.record);
    }
    // Revoked tokens are not listed.
    s.revoke("a", "mid");
    EXPECT_NAMES(s.list("a"), "a/alpha", "a/alpha2", "a/zeta");
}

void test_edit(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    Digest d = new_digest(), d2 = new_digest();
    TokenRecord r = rec("alice", "deploy", 1900000000, {net("10.0.0.0/8")});
    s.add(d, r);
    s.add(d2, rec("alice", "other"));

    // Rename.
    TokenChanges c;
    c.name = "deploy-v2";
    TokenRecord e = s.edit("alice", "deploy", c);
    assert_string_equal(e.name.c_str(), "deploy-v2");
    assert_int_equal(e.expires, 1900000000);
    assert_int_equal(e.created, r.created);
    assert_int_equal(e.allowed_ips.size(), 1);
    assert_true(s.find_by_name("alice", "deploy-v2")->digest == d);
    assert_false(s.find_by_name("alice", "deploy").has_value());
    assert_true(*s.find(d) == e);

    // Expiry only.
    TokenChanges c2;
    c2.expires = 2000000000;
    e = s.edit("alice", "deploy-v2", c2);
    assert_int_equal(e.expires, 2000000000);
    assert_string_equal(e.name.c_str(), "deploy-v2");
    assert_true(e.allowed_ips == std::vector<Network>{net("10.0.0.0/8")});
    assert_int_equal(s.find(d)->expires, 2000000000);
    // To never.
    c2.expires = 0;
    e = s.edit("alice", "deploy-v2", c2);
    assert_true(e.never_expires());
    assert_true(s.find(d)->never_expires());

    // Allowlist only.
    TokenChanges c3;
    c3.allowed_ips = std::vector<Network>{net("192.0.2.0/24"), net("2001:db8::1")};
    e = s.edit("alice", "deploy-v2", c3);
    assert_int_equal(e.allowed_ips.size(), 2);
    assert_true(s.find(d)->allowed_ips == *c3.allowed_ips);
    c3.allowed_ips = std::vector<Network>{};
    e = s.edit("alice", "deploy-v2", c3);
    assert_true(s.find(d)->allowed_ips.empty());

    // No changes at all: same record.
    TokenRecord before = *s.find(d);
    e = s.edit("alice", "deploy-v2", TokenChanges{});
    assert_true(e == before);
    assert_true(*s.find(d) == before);

    // Rename to a taken name: duplicate, nothing changes.
    TokenChanges c4;
    c4.name = "other";
    c4.expires = 2100000000;
    EXPECT_STORE_ERROR(duplicate, s.edit("alice", "deploy-v2", c4));
    assert_true(*s.find(d) == before);
    assert_true(s.find_by_name("alice", "other")->digest == d2);
    assert_true(s.find_by_name("alice", "deploy-v2")->digest == d);

    // Not found.
    EXPECT_STORE_ERROR(not_found, s.edit("alice", "deploy", c2));
    EXPECT_STORE_ERROR(not_found, s.edit("bob", "deploy-v2", c2));

    // The old name is free again after the rename.
    Digest d3 = new_digest();
    s.add(d3, rec("alice", "deploy"));
    assert_true(s.find_by_name("alice", "deploy")->digest == d3);
    assert_true(s.find_by_name("alice", "deploy-v2")->digest == d);
    EXPECT_NAMES(s.list("alice"), "alice/deploy", "alice/deploy-v2", "alice/other");
}

void test_revoke(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    Digest d = new_digest(), keep = new_digest();
    s.add(d, rec("alice", "deploy"));
    s.add(keep, rec("alice", "keep"));
    s.revoke("alice", "deploy");
    assert_false(s.find(d).has_value());
    assert_false(s.find_by_name("alice", "deploy").has_value());
    assert_true(s.find(keep).has_value());
    EXPECT_STORE_ERROR(not_found, s.revoke("alice", "deploy"));
    EXPECT_STORE_ERROR(not_found, s.revoke("alice", "never-existed"));
    EXPECT_STORE_ERROR(not_found, s.revoke("bob", "keep"));
    EXPECT_STORE_ERROR(not_found, s.edit("alice", "deploy", TokenChanges{}));
    EXPECT_NAMES(s.list(), "alice/keep");
    // The name can be used again by a new token.
    Digest d2 = new_digest();
    s.add(d2, rec("alice", "deploy"));
    assert_true(s.find_by_name("alice", "deploy")->digest == d2);
    assert_false(s.find(d).has_value());
}

void test_revoke_all(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    for (const char *n : {"t1", "t2", "t3"}) s.add(new_digest(), rec("a", n));
    s.add(new_digest(), rec("a-b", "t1"));
    s.add(new_digest(), rec("ab", "t1"));
    s.revoke("a", "t2");
    assert_int_equal(s.revoke_all("a"), 2);
    EXPECT_NAMES(s.list(), "a-b/t1", "ab/t1");
    assert_int_equal(s.revoke_all("a"), 0);
    assert_int_equal(s.revoke_all("nobody"), 0);
    assert_int_equal(s.revoke_all("ab"), 1);
    EXPECT_NAMES(s.list(), "a-b/t1");
}

void test_prune_expired(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    const Seconds now = now_seconds();
    Digest past = new_digest(), exact = new_digest(), future = new_digest(), never = new_digest();
    s.add(past, rec("alice", "past", now - 100));
    s.add(exact, rec("alice", "exact", now));
    s.add(future, rec("alice", "future", now + 100));
    s.add(never, rec("alice", "never"));
    // The store does not check expiry itself.
    assert_true(s.find(past).has_value());
    PruneResult p = s.prune(now);
    assert_int_equal(p.expired_removed, 2);
    assert_int_equal(p.tombstones_dropped, 0);  // fresh tombstones are kept
    assert_false(s.find(past).has_value());
    assert_false(s.find(exact).has_value());
    assert_false(s.find_by_name("alice", "past").has_value());
    assert_true(s.find(future).has_value());
    assert_true(s.find(never).has_value());
    EXPECT_NAMES(s.list(), "alice/future", "alice/never");
    p = s.prune(now);
    assert_int_equal(p.expired_removed, 0);
    assert_int_equal(p.tombstones_dropped, 0);
    p = s.prune(now + 100);
    assert_int_equal(p.expired_removed, 1);
    EXPECT_NAMES(s.list(), "alice/never");
}

// Where hosts share a store, the newer stamp wins a merge: a value that
// came from a host whose clock is ahead (here: an hour) must still be beaten
// by the next edit and by the revoke made here.
void test_writes_stamp_after_the_value_they_replace(void **state) {
    Fixture &f = fx(state);
    const Digest d = new_digest();
    {
        TokenStore s(f.store, Access::read_write);
        s.add(d, rec("alice", "deploy"));
    }
    const std::uint64_t ahead_ns = static_cast<std::uint64_t>(now_nanoseconds()) + 3600ULL * 1000000000ULL;
    auto stamp_of = [&](const char *db, const std::string &key) {
        RawEnv raw(tokens_file(f));
        std::string v;
        assert_int_equal(raw.get(db, key, &v), MDB_SUCCESS);
        const auto lv = ls_decode(v);
        assert_true(lv.has_value());
        return lv->timestamp_ns;
    };
    {
        RawEnv raw(tokens_file(f), true);
        for (const auto &[db, key] : {std::pair<const char *, std::string>{"tokens", dkey(d)},
                                      {"names", nkey("alice", "deploy")}}) {
            std::string v;
            assert_int_equal(raw.get(db, key, &v), MDB_SUCCESS);
            const auto lv = ls_decode(v);
            assert_true(lv.has_value());
            raw.put(db, key, ls_encode(ahead_ns, lv->txn_id, lv->flags, lv->payload));
        }
    }
    {
        TokenStore s(f.store, Access::read_write);
        TokenChanges rename;
        rename.name = "ci";
        s.edit("alice", "deploy", rename);
    }
    assert_true(stamp_of("tokens", dkey(d)) > ahead_ns);
    assert_true(stamp_of("names", nkey("alice", "deploy")) > ahead_ns);  // the old name's tombstone
    const std::uint64_t edited_ns = stamp_of("tokens", dkey(d));
    {
        TokenStore s(f.store, Access::read_write);
        s.revoke("alice", "ci");
    }
    assert_true(stamp_of("tokens", dkey(d)) > edited_ns);
}

void test_tombstones(void **state) {
    Fixture &f = fx(state);
    Digest d = new_digest(), live = new_digest();
    {
        TokenStore s(f.store, Access::read_write);
        s.add(d, rec("alice", "deploy"));
        s.add(live, rec("alice", "live"));
        s.revoke("alice", "deploy");
        PruneResult p = s.prune(now_seconds());
        assert_int_equal(p.tombstones_dropped, 0);
    }
    const std::int64_t before_ns = now_nanoseconds();
    {
        RawEnv raw(tokens_file(f));
        std::string v;
        assert_int_equal(raw.get("tokens", dkey(d), &v), MDB_SUCCESS);
        assert_true(v.size() >= 24);
        assert_int_equal(static_cast<unsigned char>(v[16]), 0);     // header version
        assert_int_equal(static_cast<unsigned char>(v[17]), 0x01);  // deleted
        auto lv = ls_decode(v);
        assert_true(lv.has_value());
        assert_true(lv->deleted());
        assert_int_equal(lv->payload.size(), 0);
        assert_true(lv->timestamp_ns > 1700000000LL * 1000000000LL);
        assert_true(static_cast<std::int64_t>(lv->timestamp_ns) <= before_ns);
        assert_true(lv->txn_id > 0);
        // The name is a tombstone too.
        assert_int_equal(raw.get("names", nkey("alice", "deploy"), &v), MDB_SUCCESS);
        lv = ls_decode(v);
        assert_true(lv.has_value());
        assert_true(lv->deleted());
        assert_int_equal(lv->payload.size(), 0);
        // The live token: header, not deleted, payload is its record.
        assert_int_equal(raw.get("tokens", dkey(live), &v), MDB_SUCCESS);
        lv = ls_decode(v);
        assert_true(lv.has_value());
        assert_false(lv->deleted());
        auto r = decode_record(lv->payload);
        assert_true(r.has_value());
        assert_string_equal(r->name.c_str(), "live");
        assert_int_equal(raw.get("names", nkey("alice", "live"), &v), MDB_SUCCESS);
        lv = ls_decode(v);
        assert_true(lv.has_value());
        assert_false(lv->deleted());
        assert_int_equal(lv->payload.size(), 64);
        assert_memory_equal(lv->payload.data(), live.data(), 64);
    }
    {
        TokenStore s(f.store, Access::read_write);
        // 29 days later: still kept.
        PruneResult p = s.prune(now_seconds() + 29 * 86400);
        assert_int_equal(p.tombstones_dropped, 0);
        assert_int_equal(p.expired_removed, 0);
    }
    {
        RawEnv raw(tokens_file(f));
        assert_int_equal(raw.get("tokens", dkey(d), nullptr), MDB_SUCCESS);
    }
    {
        TokenStore s(f.store, Access::read_write);
        PruneResult p = s.prune(now_seconds() + 31 * 86400);
        assert_true(p.tombstones_dropped >= 1);
        assert_int_equal(p.expired_removed, 0);
        assert_true(s.find(live).has_value());
    }
    {
        RawEnv raw(tokens_file(f));
        assert_int_equal(raw.get("tokens", dkey(d), nullptr), MDB_NOTFOUND);
        assert_int_equal(raw.get("names", nkey("alice", "deploy"), nullptr), MDB_NOTFOUND);
        assert_int_equal(raw.get("tokens", dkey(live), nullptr), MDB_SUCCESS);
        assert_int_equal(raw.get("names", nkey("alice", "live"), nullptr), MDB_SUCCESS);
    }
}

void test_meta_schema(void **state) {
    Fixture &f = fx(state);
    {
        RawEnv raw(tokens_file(f));
        std::string v;
        assert_int_equal(raw.get("meta", "schema_version", &v), MDB_SUCCESS);
        auto lv = ls_decode(v);
        assert_true(lv.has_value());
        assert_false(lv->deleted());
        assert_int_equal(lv->payload.size(), 4);
        assert_memory_equal(lv->payload.data(), "\x00\x00\x00\x01", 4);
    }
    // A schema newer than this code: corrupt, for readers and writers.
    {
        RawEnv raw(tokens_file(f), true);
        raw.put("meta", "schema_version", ls_encode(now_nanoseconds(), 1, 0, std::string("\x00\x00\x00\x02", 4)));
    }
    EXPECT_STORE_ERROR(corrupt, TokenStore s(f.store, Access::read_only));
    EXPECT_STORE_ERROR(corrupt, TokenStore s(f.store, Access::read_write));
}

void test_corrupt_record(void **state) {
    Fixture &f = fx(state);
    Digest good = new_digest(), bad = new_digest(), bad_header = new_digest();
    {
        TokenStore s(f.store, Access::read_write);
        s.add(good, rec("alice", "good"));
    }
    {
        RawEnv raw(tokens_file(f), true);
        raw.put("tokens", dkey(bad), ls_encode(now_nanoseconds(), 1, 0, "\x01garbage"));
        raw.put("tokens", dkey(bad_header), std::string("\x00\x01", 2));
    }
    TokenStore s(f.store, Access::read_only);
    assert_true(s.find(good).has_value());
    EXPECT_STORE_ERROR(corrupt, s.find(bad));
    EXPECT_STORE_ERROR(corrupt, s.find(bad_header));
}

// A names key whose length field is corrupt (found by fuzz_store): LMDB hands
// back the key with that length, past the end of the file. list() must say
// the store is corrupt, not read the key and die of SIGBUS. Run in a child,
// so that the crash it guards against shows as a failure.
void test_corrupt_name_key_length(void **state) {
    Fixture &f = fx(state);
    {
        TokenStore s(f.store, Access::read_write);
        s.add(new_digest(), rec("alice", "deploy"));
    }
    std::string file = read_file(tokens_file(f));
    const std::string key("alice\0deploy", 12);
    std::size_t patched = 0;
    // The node header (lo, hi, flags, key size) ends right before the key.
    for (auto at = file.find(key); at != std::string::npos; at = file.find(key, at + 1), ++patched)
        file[at - 2] = file[at - 1] = '\xff';
    assert_true(patched > 0);
    std::ofstream(tokens_file(f), std::ios::binary | std::ios::trunc).write(file.data(), file.size());

    expect_corrupt_in_child(
        [&] {
            TokenStore s(f.store, Access::read_only);
            s.list();
        },
        "list() on a corrupt key length");
}


// A reader in another process keeps its snapshot while the tool writes,
// and sees the change in its next transaction.
void test_concurrent_reader(void **state) {
    Fixture &f = fx(state);
    Digest old_d = new_digest(), new_d = new_digest();
    {
        TokenStore s(f.store, Access::read_write);
        s.add(old_d, rec("alice", "old"));
    }
    int to_parent[2], to_child[2];
    assert_int_equal(pipe(to_parent), 0);
    assert_int_equal(pipe(to_child), 0);
    const std::string file = tokens_file(f);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        // Child: raw LMDB only, no cmocka assertions (exit codes instead).
        alarm(60);
        close(to_parent[0]);
        close(to_child[1]);
        MDB_env *env = nullptr;
        if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
            mdb_env_set_maxreaders(env, StoreSettings::max_readers) ||
            mdb_env_set_mapsize(env, StoreSettings::map_size) ||
            mdb_env_open(env, file.c_str(), MDB_NOSUBDIR | MDB_RDONLY, 0600))
            _exit(10);
        MDB_txn *snap = nullptr;
        MDB_dbi dbi;
        if (mdb_txn_begin(env, nullptr, MDB_RDONLY, &snap) || mdb_dbi_open(snap, "tokens", 0, &dbi)) _exit(11);
        std::string ok = dkey(old_d), nk = dkey(new_d);
        MDB_val k{ok.size(), ok.data()}, v;
        if (mdb_get(snap, dbi, &k, &v)) _exit(12);
        {
            auto lv = ls_decode(std::string_view(static_cast<char *>(v.mv_data), v.mv_size));
            if (!lv || lv->deleted()) _exit(13);
        }
        char c = 'r';
        if (write(to_parent[1], &c, 1) != 1) _exit(14);
        if (read(to_child[0], &c, 1) != 1 || c != 'w') _exit(15);
        // The old snapshot: old token live, new one absent.
        if (mdb_get(snap, dbi, &k, &v)) _exit(16);
        {
            auto lv = ls_decode(std::string_view(static_cast<char *>(v.mv_data), v.mv_size));
            if (!lv || lv->deleted() || !decode_record(lv->payload)) _exit(17);
        }
        MDB_val k2{nk.size(), nk.data()};
        if (mdb_get(snap, dbi, &k2, &v) != MDB_NOTFOUND) _exit(18);
        mdb_txn_abort(snap);
        // A new transaction sees the write.
        MDB_txn *fresh = nullptr;
        // (aborting the first transaction closed the handle it opened)
        if (mdb_txn_begin(env, nullptr, MDB_RDONLY, &fresh) || mdb_dbi_open(fresh, "tokens", 0, &dbi)) _exit(19);
        if (mdb_get(fresh, dbi, &k, &v)) _exit(20);
        {
            auto lv = ls_decode(std::string_view(static_cast<char *>(v.mv_data), v.mv_size));
            if (!lv || !lv->deleted()) _exit(21);
        }
        if (mdb_get(fresh, dbi, &k2, &v)) _exit(22);
        {
            auto lv = ls_decode(std::string_view(static_cast<char *>(v.mv_data), v.mv_size));
            if (!lv || lv->deleted()) _exit(23);
            auto r = decode_record(lv->payload);
            if (!r || r->name != "new") _exit(24);
        }
        mdb_txn_abort(fresh);
        mdb_env_close(env);
        // Then the same through the store API, read-only (the raw env is closed).
        try {
            TokenStore s(f.store, Access::read_only);
            if (s.find(old_d)) _exit(25);
            auto r = s.find(new_d);
            if (!r || r->name != "new") _exit(26);
            if (s.find_by_name("alice", "old")) _exit(27);
        } catch (...) {
            _exit(28);
        }
        _exit(0);
    }
    close(to_parent[1]);
    close(to_child[0]);
    char c = 0;
    ssize_t n = read(to_parent[0], &c, 1);
    if (n != 1) {
        int status = 0;
        waitpid(pid, &status, 0);
        fail_msg("child failed before its snapshot, status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    {
        TokenStore s(f.store, Access::read_write);
        s.revoke("alice", "old");
        s.add(new_d, rec("alice", "new"));
        assert_false(s.find(old_d).has_value());
    }
    c = 'w';
    assert_int_equal(write(to_child[1], &c, 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(to_parent[0]);
    close(to_child[1]);
    if (!WIFEXITED(status)) fail_msg("child died, status 0x%x", status);
    if (WEXITSTATUS(status) != 0) fail_msg("child check %d failed", WEXITSTATUS(status));
}

// find() reuses records it has read; every write must still show on the
// very next find(), whether made through the same store or by another
// process.
void test_find_cache_follows_writes(void **state) {
    Fixture &f = fx(state);
    const Digest d = new_digest(), other = new_digest();
    {
        TokenStore s(f.store, Access::read_write);
        s.add(d, rec("alice", "ci"));
        for (int i = 0; i < 3; ++i) assert_string_equal(s.find(d)->name.c_str(), "ci");
        s.edit("alice", "ci", TokenChanges{"renamed", std::nullopt, std::nullopt});
        assert_string_equal(s.find(d)->name.c_str(), "renamed");
        s.edit("alice", "renamed", TokenChanges{std::nullopt, Seconds{4102444800}, std::nullopt});
        assert_int_equal(s.find(d)->expires, 4102444800);
        s.revoke("alice", "renamed");
        assert_false(s.find(d).has_value());
        assert_false(s.find(d).has_value());
        s.add(d, rec("alice", "again"));
        assert_string_equal(s.find(d)->name.c_str(), "again");
    }
    TokenStore reader(f.store, Access::read_only);
    for (int i = 0; i < 3; ++i) assert_true(reader.find(d)->allowed_ips.empty());
    write_in_child(f.store, [](TokenStore &s) {
        s.edit("alice", "again", TokenChanges{std::nullopt, std::nullopt, std::vector<Network>{*parse_network("192.0.2.0/24")}});
    });
    const auto edited = reader.find(d);
    assert_true(edited.has_value());
    assert_int_equal(edited->allowed_ips.size(), 1);
    // A write that does not touch this token still leaves it readable.
    write_in_child(f.store, [&](TokenStore &s) { s.add(other, rec("bob", "x")); });
    assert_string_equal(reader.find(d)->name.c_str(), "again");
    assert_string_equal(reader.find(other)->name.c_str(), "x");
    write_in_child(f.store, [](TokenStore &s) { s.revoke("alice", "again"); });
    assert_false(reader.find(d).has_value());
    assert_true(reader.find(other).has_value());
}

// With the cache off, find() answers the same.
void test_find_without_cache(void **state) {
    Fixture &f = fx(state);
    const Digest d = new_digest();
    TokenStore s(f.store, Access::read_write, 0);
    s.add(d, rec("alice", "ci"));
    assert_string_equal(s.find(d)->name.c_str(), "ci");
    assert_string_equal(s.find(d)->name.c_str(), "ci");
    s.revoke("alice", "ci");
    assert_false(s.find(d).has_value());
}

// A child's record cache stays within its documented size (docs/store.md:
// at most 9.3 MiB per open store) even when every token in use has the
// largest allowlist, and unknown tokens (an attack) do not grow it at all.
void test_find_cache_memory_bound(void **state) {
    Fixture &f = fx(state);
    constexpr std::size_t documented_bytes = std::size_t(9.3 * 1024 * 1024);
    constexpr int count = 6000;  // ~2 KB of allowlist each: 12 MB if all were kept
    const std::vector<Network> widest(max_allowed_networks, net("2001:db8::/32"));
    std::vector<StoredToken> tokens;
    for (int i = 0; i < count; ++i) {
        char name[16];
        snprintf(name, sizeof name, "t%05d", i);
        tokens.push_back({new_digest(), rec("alice", name, 0, widest)});
    }
    TokenStore s(f.store, Access::read_write);
    s.add_many(tokens);
    assert_false(s.find(new_digest()).has_value());  // the reader transaction, kept for reuse
    const std::size_t before = heap_in_use();
    for (int round = 0; round < 2; ++round)
        for (const StoredToken &token : tokens) {
            const auto found = s.find(token.digest);
            assert_true(found.has_value());
            assert_true(found->allowed_ips.size() == max_allowed_networks);
        }
    const std::size_t grown = heap_in_use() - before;
    for (int i = 0; i < 20000; ++i) assert_false(s.find(new_digest()).has_value());
    const std::size_t after_unknown = heap_in_use() - before;
    if (!heap_measurable) return;  // ASan's malloc: glibc's counters see nothing
    if (grown > documented_bytes)
        fail_msg("finding %d tokens grew the heap by %zu bytes, more than the documented %zu", count, grown,
                 documented_bytes);
    if (after_unknown > grown + 65536)
        fail_msg("unknown tokens grew the heap from %zu to %zu bytes", grown, after_unknown);
}

void test_backup(void **state) {
    Fixture &f = fx(state);
    const std::string file = f.tmp + "/backup.mdb";
    std::vector<StoredToken> before;
    Digest revoked = new_digest();
    {
        TokenStore s(f.store, Access::read_write);
        s.add(new_digest(), rec("alice", "one", 1900000000, {net("10.0.0.0/8")}));
        s.add(new_digest(), rec("alice", "two"));
        s.add(new_digest(), rec("bob", "one", 0, {net("2001:db8::/32"), net("192.0.2.7")}));
        s.add(revoked, rec("bob", "gone"));
        s.revoke("bob", "gone");
        before = s.list();
        s.backup(file);
        // Writes after the backup are not in it.
        s.add(new_digest(), rec("carol", "later"));
    }
    assert_int_equal(before.size(), 3);
    assert_true(fs::exists(file));
    assert_true(fs::file_size(file) > 0);
    // Restored as the docs say: the backup as tokens.mdb of a new directory, adopted by init.
    const std::string other = f.tmp + "/restored";
    assert_int_equal(mkdir(other.c_str(), 0700), 0);
    fs::copy_file(file, other + "/tokens.mdb");
    assert_true(init_store(other, getgid()) == InitOutcome::repaired);
    TokenStore r(other, Access::read_only);
    auto after = r.list();
    assert_int_equal(after.size(), before.size());
    for (std::size_t i = 0; i < before.size(); ++i) {
        assert_true(after[i].digest == before[i].digest);
        assert_true(after[i].record == before[i].record);
        auto found = r.find(before[i].digest);
        assert_true(found.has_value());
        assert_true(*found == before[i].record);
    }
    assert_false(r.find(revoked).has_value());
    assert_false(r.find_by_name("carol", "later").has_value());
    assert_true(r.find_by_name("bob", "one").has_value());
}

void test_backup_existing_file(void **state) {
    Fixture &f = fx(state);
    const std::string file = f.tmp + "/precious";
    {
        std::ofstream out(file, std::ios::binary);
        out << "do not overwrite";
    }
    TokenStore s(f.store, Access::read_write);
    s.add(new_digest(), rec("alice", "one"));
    bool threw = false;
    try {
        s.backup(file);
    } catch (const std::exception &) {
        threw = true;
    }
    assert_true(threw);
    assert_string_equal(read_file(file).c_str(), "do not overwrite");
    // A backup into a missing directory fails too.
    threw = false;
    try {
        s.backup(f.tmp + "/no/such/dir/backup.mdb");
    } catch (const std::exception &) {
        threw = true;
    }
    assert_true(threw);
    // The store still works.
    assert_int_equal(s.list().size(), 1);
}

void test_many_tokens(void **state) {
    Fixture &f = fx(state);
    TokenStore s(f.store, Access::read_write);
    std::map<std::string, Digest> by_name;
    for (int i = 0; i < 500; ++i) {
        char name[16];
        snprintf(name, sizeof name, "t%03d", i);
        Digest d = new_digest();
        s.add(d, rec(i % 2 ? "odd" : "even", name));
        by_name[name] = d;
    }
    assert_int_equal(s.list().size(), 500);
    assert_int_equal(s.list("odd").size(), 250);
    auto l = s.list("even");
    for (std::size_t i = 1; i < l.size(); ++i) assert_true(l[i - 1].record.name < l[i].record.name);
    for (const auto &[name, d] : by_name) {
        auto r = s.find(d);
        assert_true(r.has_value());
        assert_string_equal(r->name.c_str(), name.c_str());
    }
    assert_int_equal(s.revoke_all("odd"), 250);
    assert_int_equal(s.list().size(), 250);
}


// ---- store files nobody but root may change, and no symlinks (security audit, issue 8)

// The bytes and modification time of a file, to show it was not written.
std::pair<std::string, long> content_and_mtime(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    struct stat st{};
    assert_int_equal(stat(path.c_str(), &st), 0);
    return {bytes.str(), st.st_mtim.tv_sec * 1000000000L + st.st_mtim.tv_nsec};
}

void test_open_refuses_symlinked_store_files(void **state) {
    Fixture &f = fx(state);
    const std::string target = f.tmp + "/root-only";
    std::ofstream(target) << std::string(100, 'x');
    chmod(target.c_str(), 0600);
    const auto before = content_and_mtime(target);
    for (const char *name : {"tokens.mdb-lock", "usage.slots", "tokens.mdb", "tokens.mdb-committed"}) {
        const std::string path = f.store + "/" + name, saved = path + ".saved";
        assert_int_equal(rename(path.c_str(), saved.c_str()), 0);
        assert_int_equal(symlink(target.c_str(), path.c_str()), 0);
        if (std::string(name) == "tokens.mdb-lock") {
            TokenStore reader(f.store, Access::read_only);  // a reader never opens it
            EXPECT_STORE_ERROR(access, TokenStore s(f.store, Access::read_write));
        } else if (std::string(name).starts_with("tokens")) {
            EXPECT_STORE_ERROR(access, TokenStore s(f.store, Access::read_only));
            EXPECT_STORE_ERROR(access, TokenStore s(f.store, Access::read_write));
        } else {
            EXPECT_STORE_ERROR(access, UsageStore s(f.store, Access::read_only));
            EXPECT_STORE_ERROR(access, UsageStore s(f.store, Access::read_write));
        }
        assert_int_equal(unlink(path.c_str()), 0);
        assert_int_equal(rename(saved.c_str(), path.c_str()), 0);
    }
    assert_true(content_and_mtime(target) == before);
    TokenStore s(f.store, Access::read_only);  // and the store itself is fine
}

void test_open_refuses_a_dir_its_group_or_others_can_write(void **state) {
    Fixture &f = fx(state);
    for (mode_t mode : {02770, 02757, 01777}) {
        chmod(f.store.c_str(), mode);
        EXPECT_STORE_ERROR(access, TokenStore s(f.store, Access::read_only));
        EXPECT_STORE_ERROR(access, UsageStore s(f.store, Access::read_write));
    }
    chmod(f.store.c_str(), 02750);
    TokenStore s(f.store, Access::read_only);
}

// Opens the token store read-only as www-data in a child; returns the
// StoreError kind as an int, or -1 if it opened.
int open_as_www_data(const std::string &dir) {
    const passwd *www = getpwnam("www-data");
    assert_non_null(www);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgroups(0, nullptr) != 0 || setgid(www->pw_gid) != 0 || setuid(www->pw_uid) != 0) _exit(100);
        try {
            TokenStore s(dir, Access::read_only);
        } catch (const StoreError &e) {
            _exit(static_cast<int>(e.kind()));
        }
        _exit(99);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 100);
    return WEXITSTATUS(status) == 99 ? -1 : WEXITSTATUS(status);
}

void test_reader_that_could_write_tokens_is_refused(void **state) {
    Fixture &f = fx(state);
    chmod(f.tmp.c_str(), 0755);
    assert_true(init_store(f.store, getgrnam("www-data")->gr_gid) == InitOutcome::repaired);
    assert_int_equal(open_as_www_data(f.store), -1);
    chmod((f.store + "/tokens.mdb").c_str(), 0660);
    assert_int_equal(open_as_www_data(f.store), static_cast<int>(StoreError::Kind::access));
    // Root (the tool) may write anyway: not refused.
    TokenStore s(f.store, Access::read_only);
}

void test_init_repairs_a_store_and_says_what_changed(void **state) {
    Fixture &f = fx(state);
    const gid_t www = getgrnam("www-data")->gr_gid;
    chmod((f.store + "/usage.slots").c_str(), 0600);
    std::vector<std::string> changes;
    assert_true(init_store(f.store, www, &changes) == InitOutcome::repaired);
    for (const char *file : {"", "/tokens.mdb", "/tokens.mdb-lock", "/tokens.mdb-committed", "/usage.slots"}) {
        assert_int_equal(gid_of(f.store + file), www);
        const std::string line = f.store + file + ": group root -> www-data";
        assert_true(std::find(changes.begin(), changes.end(), line) != changes.end());
    }
    assert_true(std::find(changes.begin(), changes.end(), f.store + "/usage.slots: mode 0600 -> 0660") != changes.end());
    assert_int_equal(changes.size(), 6);
    // Without a group, the store keeps the one it has.
    changes.clear();
    assert_true(init_store(f.store, std::nullopt, &changes) == InitOutcome::already_present);
    assert_true(changes.empty());
    assert_int_equal(gid_of(f.store), www);
}

void test_init_refuses_foreign_or_non_empty_dirs(void **state) {
    Fixture &f = fx(state);
    // Not empty and not a store: a sticky world-writable directory stays as it is.
    mkdir(f.store.c_str(), 0700);
    chmod(f.store.c_str(), 01777);
    std::ofstream(f.store + "/other") << "x";
    EXPECT_STORE_ERROR(access, init_store(f.store, getgid()));
    assert_int_equal(mode_of(f.store) & 07777, 01777);
    // Owned by another user: refused, even when empty.
    unlink((f.store + "/other").c_str());
    assert_int_equal(chown(f.store.c_str(), getpwnam("www-data")->pw_uid, -1), 0);
    EXPECT_STORE_ERROR(access, init_store(f.store, getgid()));
    assert_true(fs::is_empty(f.store));
}
}  // namespace

// The map size reached. StoreSettings::map_size (16 GiB) is too big to fill
// in a test, so the store is opened with a 1 MiB map and filled with real
// writes through the store API; growing the map is then reopening it with 2 MiB.
void test_map_full_writes_nothing_and_says_how_to_grow(void **state) {
    Fixture &f = fx(state);
    constexpr std::size_t small_map = std::size_t{1} << 20;
    auto batch_of = [](const std::string &user, int count) {
        std::vector<StoredToken> tokens;
        for (int i = 0; i < count; ++i) tokens.push_back({new_digest(), rec(user, "t" + std::to_string(i))});
        return tokens;
    };
    auto open = [&](std::size_t map_size) {
        return std::make_unique<TokenStore>(f.store, Access::read_write, 16, map_size);
    };
    auto s = open(small_map);
    std::vector<StoredToken> refused;
    std::string message;
    std::size_t stored = 0;
    for (int b = 0; refused.empty(); ++b) {
        assert_true(b < 1000);  // 1 MiB holds a few thousand tokens
        auto batch = batch_of("u" + std::to_string(b), 50);
        // A store opened for each batch, as each cptoken command opens its own: a writer that stays
        // keeps the pages it freed for StoreSettings::page_reuse_delay, and fills 1 MiB sooner.
        try {
            s = open(small_map);
            s->add_many(batch);
            stored += batch.size();
        } catch (const StoreError &e) {
            if (e.kind() != StoreError::Kind::full) fail_msg("kind %s: %s", kind_name(e.kind()), e.what());
            message = e.what();
            refused = batch;
        }
    }
    assert_true(stored > 1000);
    // What happened, that nothing was written, and how to grow the map.
    for (const char *words : {"reached its map size", "nothing was written", "raise StoreSettings::map_size",
                              "rebuild and reinstall cptoken and mod_cptoken", "restart httpd"})
        if (message.find(words) == std::string::npos) fail_msg("the message should say '%s': %s", words, message.c_str());
    // Nothing of the failed transaction, in this process or after reopening.
    for (int pass = 0; pass < 2; ++pass) {
        assert_int_equal(s->list().size(), stored);
        for (const StoredToken &token : refused) assert_false(s->find(token.digest).has_value());
        assert_false(s->find_by_name(refused.front().record.user, "t0").has_value());
        s.reset();
        s = open(small_map);
    }
    // Small changes still fit in the pages earlier writes freed (a large
    // one, even a prune dropping many tombstones, may not: its deletes copy
    // pages too).
    // Each in a store of its own, as cptoken commands are (see above).
    s.reset();
    open(small_map)->add(new_digest(), rec("x", "one"));
    for (const char *name : {"t0", "t1", "t2", "t3", "t4"}) open(small_map)->revoke("u0", name);
    stored -= 4;
    const Seconds later = now_seconds() + StoreSettings::tombstone_retention_seconds + 86400;
    // The map grown: the refused write and the prune go through.
    s.reset();
    s = open(2 * small_map);
    assert_int_equal(s->list().size(), stored);
    s->add_many(refused);
    assert_int_equal(s->prune(later).tombstones_dropped, 2 * 5);  // the revoked tokens and their names
    assert_int_equal(s->list().size(), stored + refused.size());
    for (const StoredToken &token : refused) assert_true(s->find(token.digest).has_value());
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_strict_umask, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_keeps_existing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_find, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_persisted, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_edit, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_all, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_prune_expired, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_tombstones, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_writes_stamp_after_the_value_they_replace, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_meta_schema, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_record, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_name_key_length, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_reader, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_find_cache_follows_writes, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_find_without_cache, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_find_cache_memory_bound, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_backup, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_backup_existing_file, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_many_tokens, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_map_full_writes_nothing_and_says_how_to_grow, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_symlinked_store_files, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_a_dir_its_group_or_others_can_write, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_reader_that_could_write_tokens_is_refused, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_init_repairs_a_store_and_says_what_changed, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_init_refuses_foreign_or_non_empty_dirs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

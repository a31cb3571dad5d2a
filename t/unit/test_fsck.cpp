// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/store/fsck.hpp on real LMDB files: the states a Lightning
// Stream merge can leave (an orphaned token, a dangling name) and values it
// stops on (bad headers) are written raw, as LS would leave them, then
// fsck_store() must name each, and --repair must tombstone exactly the
// orphans and dangling names. Also init_store() growing a small reader table.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <string>
#include <vector>

#include "store/fsck.hpp"
#include "store/lsheader.hpp"
#include "token/record.hpp"
#include "store/store.hpp"
#include "store/usage_store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

constexpr Seconds t0 = 1767225600 + 1000;

std::string tokens_file(void **state) { return fx(state).store + "/tokens.mdb"; }
std::string usage_file(void **state) { return fx(state).store + "/usage.slots"; }

std::string bytes(const Digest &digest) { return {reinterpret_cast<const char *>(digest.data()), digest.size()}; }
std::string name_key(const std::string &user, const std::string &name) { return user + '\0' + name; }
// A value as a later writer on another host stamps it.
std::string stamped(std::string_view payload) {
    return ls_encode(static_cast<std::uint64_t>(now_nanoseconds()) + 1000000000u, 1, 0, payload);
}
std::string prefix(const Digest &digest) { return digest_hex(digest).substr(0, 16); }

// "kind user/name" per finding, sorted: what the admin reads, minus the advice.
std::vector<std::string> summary(const std::vector<FsckFinding> &findings) {
    std::vector<std::string> out;
    for (const FsckFinding &f : findings) {
        std::string line = fsck_kind_name(f.kind);
        if (!f.user.empty()) line += " " + f.user + "/" + f.name;
        if (!f.database.empty()) line += " in " + f.database;
        if (f.repaired) line += " repaired";
        out.push_back(line);
    }
    std::sort(out.begin(), out.end());
    return out;
}

void expect_summary(const std::vector<FsckFinding> &findings, std::vector<std::string> want, int line) {
    std::sort(want.begin(), want.end());
    const auto got = summary(findings);
    if (got == want) return;
    std::string text;
    for (const auto &entry : got) text += " [" + entry + "]";
    fail_msg("line %d: fsck found%s", line, text.c_str());
}
#define EXPECT_FINDINGS(findings, ...) expect_summary((findings), std::vector<std::string>{__VA_ARGS__}, __LINE__)

const FsckFinding &only(const std::vector<FsckFinding> &findings) {
    assert_int_equal(findings.size(), 1);
    return findings.front();
}

void test_clean_store_has_no_findings(void **state) {
    {
        TokenStore s(fx(state).store, Access::read_write);
        s.add(new_digest(), rec("alice", "deploy"));
        s.add(new_digest(), rec("bob", "ci"));
        s.rotate("alice", "deploy", new_digest(), t0, 3600);
    }
    assert_true(fsck_store(fx(state).store, false).empty());
    assert_true(fsck_store(fx(state).store, true).empty());
}

// The same-name race: host B's record and its newer name entry arrive over host A's.
void test_orphan_from_the_same_name_on_two_hosts(void **state) {
    const Digest mine = new_digest(), theirs = new_digest();
    {
        TokenStore s(fx(state).store, Access::read_write);
        s.add(mine, rec("alice", "deploy"));
    }
    {
        RawEnv raw(tokens_file(state), true);
        raw.put("tokens", bytes(theirs), stamped(encode_record(rec("alice", "deploy"))));
        raw.put("names", name_key("alice", "deploy"), stamped(bytes(theirs)));
    }
    const auto findings = fsck_store(fx(state).store, false);
    const FsckFinding &orphan = only(findings);
    assert_int_equal(orphan.kind, FsckFinding::Kind::orphan);
    assert_string_equal(orphan.user.c_str(), "alice");
    assert_string_equal(orphan.name.c_str(), "deploy");
    assert_string_equal(orphan.digest_prefix.c_str(), prefix(mine).c_str());
    assert_false(orphan.repaired);
    assert_non_null(strstr(orphan.message.c_str(), "revoke alice deploy"));
    // Read-only: both tokens still there.
    {
        TokenStore s(fx(state).store, Access::read_only);
        assert_true(s.find(mine).has_value());
        assert_true(s.find(theirs).has_value());
    }

    EXPECT_FINDINGS(fsck_store(fx(state).store, true), "orphan alice/deploy in tokens repaired");
    TokenStore s(fx(state).store, Access::read_only);
    assert_false(s.find(mine).has_value());
    assert_true(s.find(theirs).has_value());
    assert_true(s.find_by_name("alice", "deploy")->digest == theirs);
    // A tombstone, not a delete: Lightning Stream carries it to the other host.
    RawEnv raw(tokens_file(state));
    std::string value;
    assert_int_equal(raw.get("tokens", bytes(mine), &value), MDB_SUCCESS);
    assert_true(ls_decode(value)->deleted());
    assert_true(fsck_store(fx(state).store, false).empty());
}

void test_rotated_token_in_grace_is_not_an_orphan_but_unlinked_is(void **state) {
    const Digest old = new_digest(), fresh = new_digest();
    {
        TokenStore s(fx(state).store, Access::read_write);
        s.add(old, rec("alice", "deploy"));
        s.rotate("alice", "deploy", fresh, t0, 3600);
    }
    assert_true(fsck_store(fx(state).store, false).empty());
    // The current token loses its link (as a merge with an older edit of it would leave it).
    {
        RawEnv raw(tokens_file(state), true);
        std::string value;
        assert_int_equal(raw.get("tokens", bytes(fresh), &value), MDB_SUCCESS);
        TokenRecord current = *decode_record(ls_decode(value)->payload);
        current.predecessors.clear();
        raw.put("tokens", bytes(fresh), stamped(encode_record(current)));
    }
    const auto findings = fsck_store(fx(state).store, false);
    const FsckFinding &orphan = only(findings);
    assert_int_equal(orphan.kind, FsckFinding::Kind::orphan);
    assert_string_equal(orphan.digest_prefix.c_str(), prefix(old).c_str());
    assert_non_null(strstr(orphan.message.c_str(), "rotated"));
    EXPECT_FINDINGS(fsck_store(fx(state).store, true), "orphan alice/deploy in tokens repaired");
    TokenStore s(fx(state).store, Access::read_only);
    assert_false(s.find(old).has_value());
    assert_true(s.find(fresh).has_value());
}

void test_dangling_names(void **state) {
    const Digest kept = new_digest(), bobs = new_digest();
    {
        TokenStore s(fx(state).store, Access::read_write);
        s.add(kept, rec("alice", "deploy"));
        s.add(bobs, rec("bob", "ci"));
    }
    {
        RawEnv raw(tokens_file(state), true);
        raw.put("names", name_key("alice", "gone"), stamped(bytes(new_digest())));  // no such record
        raw.put("names", name_key("alice", "stolen"), stamped(bytes(bobs)));       // bob's record
        raw.put("names", name_key("alice", "short"), stamped("not a digest"));
    }
    const auto findings = fsck_store(fx(state).store, false);
    EXPECT_FINDINGS(findings, "dangling name alice/gone in names", "dangling name alice/stolen in names",
                    "dangling name alice/short in names");
    for (const FsckFinding &f : findings)
        if (f.name == "stolen") assert_non_null(strstr(f.message.c_str(), "bob/ci"));

    EXPECT_FINDINGS(fsck_store(fx(state).store, true), "dangling name alice/gone in names repaired",
                    "dangling name alice/stolen in names repaired", "dangling name alice/short in names repaired");
    TokenStore s(fx(state).store, Access::read_only);
    assert_true(s.find(bobs).has_value());  // only the name goes
    assert_true(s.find_by_name("bob", "ci").has_value());
    assert_true(s.find_by_name("alice", "deploy").has_value());
    assert_int_equal(s.list().size(), 2);  // list failed on the dangling names before
    assert_true(fsck_store(fx(state).store, false).empty());
}

void test_bad_header_in_every_database(void **state) {
    const Digest digest = new_digest();
    {
        TokenStore s(fx(state).store, Access::read_write);
        s.add(digest, rec("alice", "deploy"));
    }
    {
        RawEnv raw(tokens_file(state), true);
        raw.put("meta", "lightning", "no header");
        raw.put("tokens", bytes(new_digest()), "short");
        raw.put("names", name_key("alice", "raw"), bytes(digest));  // a digest without its header
    }
    const auto findings = fsck_store(fx(state).store, false);
    EXPECT_FINDINGS(findings, "bad header in meta", "bad header in tokens", "bad header in names");
    for (const FsckFinding &f : findings) {
        assert_non_null(strstr(f.message.c_str(), "Lightning Stream"));
        assert_non_null(strstr(f.message.c_str(), "tokens.mdb"));
        assert_true(!f.key_prefix.empty() && f.key_prefix.size() <= 16);
    }
    // Only reported: nothing is repaired, the values stay.
    EXPECT_FINDINGS(fsck_store(fx(state).store, true), "bad header in meta", "bad header in tokens",
                    "bad header in names");
    RawEnv raw(tokens_file(state));
    std::string value;
    assert_int_equal(raw.get("names", name_key("alice", "raw"), &value), MDB_SUCCESS);
    assert_true(value == bytes(digest));
}

void test_bad_record(void **state) {
    const Digest broken = new_digest();
    {
        TokenStore s(fx(state).store, Access::read_write);
        s.add(broken, rec("alice", "deploy"));
    }
    {
        RawEnv raw(tokens_file(state), true);
        raw.put("tokens", bytes(broken), stamped("\x7f garbage"));
    }
    // What list does with it: refuses the store, saying a record cannot be decoded.
    {
        TokenStore s(fx(state).store, Access::read_only);
        const std::string listed = EXPECT_STORE_ERROR(corrupt, s.list());
        assert_non_null(strstr(listed.c_str(), "cannot be decoded"));
    }
    const auto findings = fsck_store(fx(state).store, false);
    const FsckFinding &bad = only(findings);
    assert_int_equal(bad.kind, FsckFinding::Kind::bad_record);
    assert_string_equal(bad.digest_prefix.c_str(), prefix(broken).c_str());
    assert_string_equal(bad.user.c_str(), "alice");  // its name points to it: not a dangling name
    assert_non_null(strstr(bad.message.c_str(), "cannot be decoded"));
    EXPECT_FINDINGS(fsck_store(fx(state).store, true), "bad record alice/deploy in tokens");
}

// A token whose name entry lost its header may be reached again once it is restored: never revoked for it.
void test_no_orphan_revoked_while_links_are_unreadable(void **state) {
    const Digest digest = new_digest(), orphan = new_digest();
    {
        TokenStore s(fx(state).store, Access::read_write);
        s.add(digest, rec("alice", "deploy"));
        s.add(orphan, rec("bob", "ci"));
    }
    {
        RawEnv raw(tokens_file(state), true);
        raw.put("names", name_key("alice", "deploy"), bytes(digest));  // the header lost
        raw.put("names", name_key("bob", "ci"), stamped(""));
    }
    // bob/ci's name is an empty live value: dangling; bob's token is then an orphan, but with a bad header in
    // names it is held back; alice's token is not reported at all.
    const auto repaired = fsck_store(fx(state).store, true);
    EXPECT_FINDINGS(repaired, "bad header in names", "dangling name bob/ci in names repaired",
                    "orphan bob/ci in tokens");
    TokenStore s(fx(state).store, Access::read_only);
    assert_true(s.find(digest).has_value());
    assert_true(s.find(orphan).has_value());
}

void test_missing_usage_store_is_fine(void **state) {
    assert_int_equal(unlink(usage_file(state).c_str()), 0);
    assert_true(fsck_store(fx(state).store, false).empty());
}

// Uses lost for want of room, and a file that is not a usage table, are
// said, with what to do.
void test_usage_table_findings(void **state) {
    {
        UsageStore usage(fx(state).store, Access::read_write);
        for (int i = 0; i < 1500; ++i) usage.record(new_digest(), 1767225600, std::nullopt);
    }
    auto findings = fsck_store(fx(state).store, false);
    EXPECT_FINDINGS(findings, "usage table");
    assert_non_null(strstr(findings[0].message.c_str(), "for want of room"));
    assert_non_null(strstr(findings[0].message.c_str(), "cptoken prune"));
    std::filesystem::resize_file(usage_file(state), 5000);
    findings = fsck_store(fx(state).store, false);
    EXPECT_FINDINGS(findings, "usage table");
    assert_non_null(strstr(findings[0].message.c_str(), "not a usable usage table"));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean_store_has_no_findings, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_from_the_same_name_on_two_hosts, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rotated_token_in_grace_is_not_an_orphan_but_unlinked_is, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dangling_names, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_bad_header_in_every_database, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_bad_record, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_no_orphan_revoked_while_links_are_unreadable, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_missing_usage_store_is_fine, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_usage_table_findings, setup_init, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

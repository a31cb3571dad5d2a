// SPDX-License-Identifier: Apache-2.0
// Unit tests for rotation in lib/store/store.hpp (TokenStore::rotate and how
// revoke, revoke_all, prune, edit and list treat rotated tokens), on real
// LMDB files. The clock is injected: every call gets its `now`, and
// verify_token() is asked at the instants that matter instead of sleeping.

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "token/record.hpp"
#include "store/store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"
#include "auth/verify.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

constexpr Seconds t0 = 1767225600 + 1000;  // after rec()'s created time
constexpr Seconds grace = 3600;

// A token in plain text with its digest: verify_token() takes the text.
struct Issued {
    std::string token;
    Digest digest;
};

Issued issue() {
    Issued issued{generate_token(), {}};
    issued.digest = token_digest(issued.token);
    return issued;
}

Issued create(TokenStore &s, const TokenRecord &record) {
    Issued issued = issue();
    s.add(issued.digest, record);
    return issued;
}

Issued rotate(TokenStore &s, const std::string &user, const std::string &name, Seconds now, Seconds grace_seconds,
              Rotation *result = nullptr) {
    Issued issued = issue();
    Rotation rotation = s.rotate(user, name, issued.digest, now, grace_seconds);
    if (result) *result = rotation;
    return issued;
}

Reason check(const TokenStore &s, const std::string &user, const Issued &issued, Seconds now) {
    return verify_token(s, user, issued.token, std::nullopt, now, all_services).reason;
}

void expect_reason(const TokenStore &s, const Issued &issued, Seconds now, Reason want, int line) {
    const Reason got = check(s, "alice", issued, now);
    if (got != want) fail_msg("line %d: at t0%+lld: %s, expected %s", line, static_cast<long long>(now - t0),
                              describe(got), describe(want));
}
#define EXPECT_REASON(s, issued, now, want) expect_reason((s), (issued), (now), (want), __LINE__)

// "user/name" or "user/name (rotated)" for each listed token, in order.
std::vector<std::string> listed(const TokenStore &s, std::string_view user = {}) {
    std::vector<std::string> out;
    for (const StoredToken &t : s.list(user))
        out.push_back(t.record.user + "/" + t.record.name + (t.record.rotated() ? " (rotated)" : ""));
    return out;
}

void expect_listed(const TokenStore &s, const std::vector<std::string> &want, int line) {
    const auto got = listed(s);
    if (got == want) return;
    std::string text;
    for (const auto &entry : got) text += " [" + entry + "]";
    fail_msg("line %d: list() gave%s", line, text.c_str());
}
#define EXPECT_LISTED(s, ...) expect_listed((s), std::vector<std::string>{__VA_ARGS__}, __LINE__)

void test_rotate_without_grace(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued old = create(s, rec("alice", "deploy"));
    Rotation rotation;
    const Issued fresh = rotate(s, "alice", "deploy", t0, 0, &rotation);
    assert_int_equal(rotation.grace_ends, 0);
    assert_true(rotation.token.digest == fresh.digest);
    // The old token stops at once, as if revoked; the new one takes the name.
    EXPECT_REASON(s, old, t0, Reason::unknown);
    EXPECT_REASON(s, fresh, t0, Reason::accepted);
    assert_false(s.find(old.digest).has_value());
    const auto current = s.find_by_name("alice", "deploy");
    assert_true(current.has_value());
    assert_true(current->digest == fresh.digest);
    assert_int_equal(current->record.created, t0);
    assert_false(current->record.rotated());
    assert_true(current->record.predecessors.empty());
    EXPECT_LISTED(s, "alice/deploy");
}

void test_rotate_with_grace(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued old = create(s, rec("alice", "deploy"));
    Rotation rotation;
    const Issued fresh = rotate(s, "alice", "deploy", t0, grace, &rotation);
    assert_int_equal(rotation.grace_ends, t0 + grace);
    // The old token works until the grace ends, then is refused as expired.
    EXPECT_REASON(s, old, t0, Reason::accepted);
    EXPECT_REASON(s, old, t0 + grace - 1, Reason::accepted);
    EXPECT_REASON(s, old, t0 + grace, Reason::expired);
    EXPECT_REASON(s, fresh, t0, Reason::accepted);
    EXPECT_REASON(s, fresh, t0 + 100 * grace, Reason::accepted);  // the old one never expired: nor does the new
    // What the module logs from: the old record says it was rotated.
    const auto old_record = verify_token(s, "alice", old.token, std::nullopt, t0, all_services).record;
    assert_true(old_record->rotated());
    assert_int_equal(old_record->rotated_at, t0);
    assert_int_equal(old_record->expires, t0 + grace);
    assert_true(old_record->predecessors.empty());
    // The name points to the new token, which links to the old one.
    const auto current = s.find_by_name("alice", "deploy");
    assert_true(current->digest == fresh.digest);
    assert_int_equal(current->record.predecessors.size(), 1);
    assert_true(current->record.predecessors[0] == old.digest);
    EXPECT_LISTED(s, "alice/deploy", "alice/deploy (rotated)");
}

void test_grace_never_outlives_the_expiry(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued old = create(s, rec("alice", "deploy", t0 + 60));
    Rotation rotation;
    const Issued fresh = rotate(s, "alice", "deploy", t0, grace, &rotation);
    assert_int_equal(rotation.grace_ends, t0 + 60);
    EXPECT_REASON(s, old, t0 + 59, Reason::accepted);
    EXPECT_REASON(s, old, t0 + 60, Reason::expired);
    // The new token takes over the expiry, not a fresh one.
    EXPECT_REASON(s, fresh, t0 + 60, Reason::expired);
}

void test_new_token_takes_over_everything(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    TokenRecord original = rec("alice", "deploy", t0 + 86400, {net("10.0.0.0/8"), net("2001:db8::/32")});
    // Fields of a later version, an informational one and a restriction: kept verbatim.
    original.later_fields = std::string("\x41\x00\x03" "abc" "\x90\x00\x01" "z", 10);
    original.service = Service::whm;
    original.scopes = {"/execute/Email/"};
    original.read_only = true;
    original.limits = {"list-accts"};
    original.imported_from = "/var/cpanel/authn/api_tokens_v2/whostmgr/alice.json";
    create(s, original);
    const Issued fresh = rotate(s, "alice", "deploy", t0, grace);
    const auto record = s.find(fresh.digest);
    assert_true(record.has_value());
    assert_string_equal(record->user.c_str(), "alice");
    assert_string_equal(record->name.c_str(), "deploy");
    assert_int_equal(record->created, t0);
    assert_int_equal(record->expires, t0 + 86400);
    assert_true(record->allowed_ips == original.allowed_ips);
    assert_true(record->later_fields == original.later_fields);
    assert_true(record->service == Service::whm);
    assert_true(record->scopes == original.scopes);
    assert_true(record->read_only);
    assert_true(record->limits == original.limits);
    // Made here, not in cPanel: import-cpanel --sync must leave it alone.
    assert_true(record->imported_from.empty());
    // So the restriction a later version wrote is still enforced on the new token.
    assert_int_equal(record->unknown_restriction().value_or(0), 0x90);
}

void test_chain_revoke_reaches_all(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued first = create(s, rec("alice", "deploy"));
    const Issued second = rotate(s, "alice", "deploy", t0, grace);
    const Issued third = rotate(s, "alice", "deploy", t0 + 10, grace);
    const Issued other = create(s, rec("alice", "other"));
    for (const Issued *issued : {&first, &second, &third}) EXPECT_REASON(s, *issued, t0 + 20, Reason::accepted);
    // Newest first, right after the current token.
    const auto current = s.find_by_name("alice", "deploy");
    assert_int_equal(current->record.predecessors.size(), 2);
    assert_true(current->record.predecessors[0] == second.digest);
    assert_true(current->record.predecessors[1] == first.digest);
    EXPECT_LISTED(s, "alice/deploy", "alice/deploy (rotated)", "alice/deploy (rotated)", "alice/other");
    assert_int_equal(s.find(first.digest)->expires, t0 + grace);
    assert_int_equal(s.find(second.digest)->expires, t0 + 10 + grace);

    s.revoke("alice", "deploy");
    for (const Issued *issued : {&first, &second, &third}) EXPECT_REASON(s, *issued, t0 + 20, Reason::unknown);
    EXPECT_REASON(s, other, t0 + 20, Reason::accepted);
    EXPECT_LISTED(s, "alice/other");
    // The name is free again.
    create(s, rec("alice", "deploy"));
}

void test_revoke_all_counts_rotated(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued first = create(s, rec("alice", "deploy"));
    const Issued second = rotate(s, "alice", "deploy", t0, grace);
    const Issued plain = create(s, rec("alice", "plain"));
    const Issued bobs = create(s, rec("bob", "deploy"));
    assert_int_equal(s.revoke_all("alice"), 3);
    for (const Issued *issued : {&first, &second, &plain}) EXPECT_REASON(s, *issued, t0, Reason::unknown);
    assert_int_equal(check(s, "bob", bobs, t0), Reason::accepted);
    EXPECT_LISTED(s, "bob/deploy");
}

void test_rotate_without_grace_keeps_earlier_graces(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued first = create(s, rec("alice", "deploy"));
    const Issued second = rotate(s, "alice", "deploy", t0, grace);
    const Issued third = rotate(s, "alice", "deploy", t0 + 10, 0);
    // The second stops at once; the first keeps the grace it was given.
    EXPECT_REASON(s, second, t0 + 10, Reason::unknown);
    EXPECT_REASON(s, first, t0 + 10, Reason::accepted);
    EXPECT_REASON(s, first, t0 + grace, Reason::expired);
    EXPECT_REASON(s, third, t0 + 10, Reason::accepted);
    EXPECT_LISTED(s, "alice/deploy", "alice/deploy (rotated)");
    s.revoke("alice", "deploy");
    EXPECT_REASON(s, first, t0 + 10, Reason::unknown);
}

void test_prune(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued first = create(s, rec("alice", "deploy"));
    const Issued second = rotate(s, "alice", "deploy", t0, grace);
    const Issued third = rotate(s, "alice", "deploy", t0 + 1000, grace);
    // Inside both graces: nothing to prune.
    assert_int_equal(s.prune(t0 + grace - 1).expired_removed, 0);
    EXPECT_LISTED(s, "alice/deploy", "alice/deploy (rotated)", "alice/deploy (rotated)");
    // The first grace is over: that token goes, and its link with it.
    assert_int_equal(s.prune(t0 + grace).expired_removed, 1);
    assert_false(s.find(first.digest).has_value());
    EXPECT_LISTED(s, "alice/deploy", "alice/deploy (rotated)");
    const auto current = s.find_by_name("alice", "deploy");
    assert_int_equal(current->record.predecessors.size(), 1);
    assert_true(current->record.predecessors[0] == second.digest);
    assert_int_equal(s.prune(t0 + 1000 + grace).expired_removed, 1);
    assert_true(s.find_by_name("alice", "deploy")->record.predecessors.empty());
    EXPECT_LISTED(s, "alice/deploy");
    EXPECT_REASON(s, third, t0 + 1000 + grace, Reason::accepted);
}

void test_prune_expired_current_takes_rotated(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued first = create(s, rec("alice", "deploy", t0 + 100));
    const Issued second = rotate(s, "alice", "deploy", t0, 50);  // grace ends at t0 + 50
    const Issued third = rotate(s, "alice", "deploy", t0 + 10, grace);  // grace capped at t0 + 100
    assert_int_equal(s.find(second.digest)->expires, t0 + 100);
    // The current token expires at t0 + 100 (the rotated ones by then too): prune removes all three.
    assert_int_equal(s.prune(t0 + 100).expired_removed, 3);
    EXPECT_LISTED(s);
    for (const Issued *issued : {&first, &second, &third}) assert_false(s.find(issued->digest).has_value());
}

// The current token edited to expire before its rotated token's grace ends
// (found by the soak's oracle): prune must not take the rotated one early.
// The expired current token stays, refused, until its rotated tokens have
// expired too, so that they keep their name and link.
void test_prune_keeps_a_rotated_token_in_its_grace(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued first = create(s, rec("alice", "deploy"));
    const Issued second = rotate(s, "alice", "deploy", t0, 100);  // first admitted until t0 + 100
    TokenChanges sooner;
    sooner.expires = t0 + 50;
    s.edit("alice", "deploy", sooner);
    EXPECT_REASON(s, second, t0 + 60, Reason::expired);
    assert_int_equal(s.prune(t0 + 60).expired_removed, 0);
    EXPECT_REASON(s, first, t0 + 60, Reason::accepted);
    EXPECT_LISTED(s, "alice/deploy", "alice/deploy (rotated)");
    // Its grace over: both go.
    assert_int_equal(s.prune(t0 + 100).expired_removed, 2);
    EXPECT_LISTED(s);
    for (const Issued *issued : {&first, &second}) assert_false(s.find(issued->digest).has_value());
}

void test_rename_follows(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued first = create(s, rec("alice", "deploy"));
    const Issued second = rotate(s, "alice", "deploy", t0, grace);
    TokenChanges rename;
    rename.name = "ship";
    s.edit("alice", "deploy", rename);
    assert_string_equal(s.find(first.digest)->name.c_str(), "ship");
    assert_string_equal(s.find(second.digest)->name.c_str(), "ship");
    EXPECT_LISTED(s, "alice/ship", "alice/ship (rotated)");
    assert_false(s.find_by_name("alice", "deploy").has_value());
    // Other edits change the current token only: the rotated one keeps its grace end and allowlist.
    TokenChanges restrict;
    restrict.expires = t0 + 2 * grace;
    restrict.allowed_ips = std::vector<Network>{net("192.0.2.0/24")};
    s.edit("alice", "ship", restrict);
    assert_int_equal(s.find(first.digest)->expires, t0 + grace);
    assert_true(s.find(first.digest)->allowed_ips.empty());
    assert_int_equal(s.find(second.digest)->expires, t0 + 2 * grace);
    // And revoke still reaches it under the new name.
    s.revoke("alice", "ship");
    assert_false(s.find(first.digest).has_value());
}

// Links to what is gone, or to what is not a rotated token of the same user,
// are skipped: never listed, never revoked through.
void test_dangling_and_foreign_links(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued bobs = create(s, rec("bob", "deploy"));
    const Issued alices_other = create(s, rec("alice", "other"));
    TokenRecord linked = rec("alice", "deploy");
    linked.predecessors = {new_digest(), bobs.digest, alices_other.digest};
    const Issued current = create(s, linked);
    EXPECT_LISTED(s, "alice/deploy", "alice/other", "bob/deploy");
    s.revoke("alice", "deploy");
    EXPECT_REASON(s, current, t0, Reason::unknown);
    EXPECT_REASON(s, alices_other, t0, Reason::accepted);
    assert_int_equal(check(s, "bob", bobs, t0), Reason::accepted);

    // A link to a rotated token that is gone (a tombstone): skipped by list
    // and rotate, and dropped by prune.
    TokenRecord rotated_record = rec("alice", "gone");
    rotated_record.rotated_at = t0;
    const Issued gone = create(s, rotated_record);
    s.revoke("alice", "gone");
    linked.predecessors = {gone.digest, new_digest()};
    const Issued relinked = create(s, linked);
    EXPECT_LISTED(s, "alice/deploy", "alice/other", "bob/deploy");
    assert_int_equal(s.prune(t0).expired_removed, 0);
    assert_true(s.find_by_name("alice", "deploy")->record.predecessors.empty());
    EXPECT_REASON(s, relinked, t0, Reason::accepted);
    s.edit("alice", "deploy", TokenChanges{std::string("renamed")});  // no crash, nothing else renamed
    EXPECT_LISTED(s, "alice/other", "alice/renamed", "bob/deploy");
}

void test_refusals(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued expiring = create(s, rec("alice", "short", t0 + 10));
    const Issued other = create(s, rec("alice", "other"));
    // Unknown name, unknown user.
    EXPECT_STORE_ERROR(not_found, s.rotate("alice", "nope", new_digest(), t0, grace));
    EXPECT_STORE_ERROR(not_found, s.rotate("bob", "short", new_digest(), t0, grace));
    // Expired: nothing to rotate, the message says so.
    const std::string message = EXPECT_STORE_ERROR(not_found, s.rotate("alice", "short", new_digest(), t0 + 10, grace));
    assert_non_null(strstr(message.c_str(), "expired"));
    // A digest already in use: another token's, or the token's own.
    EXPECT_STORE_ERROR(duplicate, s.rotate("alice", "short", other.digest, t0, grace));
    EXPECT_STORE_ERROR(duplicate, s.rotate("alice", "short", expiring.digest, t0, grace));
    // Nothing changed.
    EXPECT_LISTED(s, "alice/other", "alice/short");
    EXPECT_REASON(s, expiring, t0, Reason::accepted);
    assert_true(s.find_by_name("alice", "short")->digest == expiring.digest);
}

void test_at_most_eight_in_grace(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    std::vector<Issued> tokens{create(s, rec("alice", "deploy"))};
    for (std::size_t i = 0; i < max_predecessors; ++i)
        tokens.push_back(rotate(s, "alice", "deploy", t0 + static_cast<Seconds>(i), grace));
    assert_int_equal(s.find_by_name("alice", "deploy")->record.predecessors.size(), max_predecessors);
    const std::string message = EXPECT_STORE_ERROR(full, s.rotate("alice", "deploy", new_digest(), t0 + 20, grace));
    assert_non_null(strstr(message.c_str(), "grace"));
    // Without grace the oldest links are not added to: allowed.
    tokens.push_back(rotate(s, "alice", "deploy", t0 + 20, 0));
    // Once the first grace ends, its slot is free again.
    tokens.push_back(rotate(s, "alice", "deploy", t0 + grace, grace));
    EXPECT_REASON(s, tokens.front(), t0 + grace, Reason::unknown);  // dropped (tombstoned) with its link
    EXPECT_REASON(s, tokens[1], t0 + grace, Reason::accepted);
    s.revoke("alice", "deploy");
    for (const Issued &issued : tokens) EXPECT_REASON(s, issued, t0 + grace, Reason::unknown);
}

// A reader in another process sees the rotation on its next lookup (the
// record cache is tied to the snapshot).
void test_reader_sees_rotation(void **state) {
    const std::string dir = fx(state).store;
    Issued old;
    {
        TokenStore w(dir, Access::read_write);
        old = create(w, rec("alice", "deploy"));
    }
    TokenStore reader(dir, Access::read_only);
    EXPECT_REASON(reader, old, t0, Reason::accepted);
    assert_false(reader.find(old.digest)->rotated());
    Issued fresh = issue();
    write_in_child(dir, [&](TokenStore &w) { w.rotate("alice", "deploy", fresh.digest, t0, 0); });
    EXPECT_REASON(reader, old, t0, Reason::unknown);
    EXPECT_REASON(reader, fresh, t0, Reason::accepted);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotate_without_grace, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rotate_with_grace, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_grace_never_outlives_the_expiry, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_new_token_takes_over_everything, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_chain_revoke_reaches_all, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_all_counts_rotated, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rotate_without_grace_keeps_earlier_graces, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_prune_expired_current_takes_rotated, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_prune_keeps_a_rotated_token_in_its_grace, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rename_follows, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_dangling_and_foreign_links, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_at_most_eight_in_grace, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_reader_sees_rotation, setup_init, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/auth/verify.hpp: verify_token() against a real store.

#include <lmdb.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "store/lsheader.hpp"
#include "token/network.hpp"
#include "token/record.hpp"
#include "store/store.hpp"
#include "token/token.hpp"
#include "auth/verify.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;
namespace fs = std::filesystem;

namespace {

constexpr Seconds now = 1767225600;  // 2026-01-01T00:00:00Z

struct StoreFixture {
    std::string tmp;
    std::string store;
    std::unique_ptr<TokenStore> s;
};

int setup_store(void **state) {
    char pattern[] = "/tmp/cptoken-unit-verify-XXXXXX";
    if (!mkdtemp(pattern)) return -1;
    auto *f = new StoreFixture{pattern, std::string(pattern) + "/store", nullptr};
    *state = f;
    try {
        init_store(f->store, getgid());
        f->s = std::make_unique<TokenStore>(f->store, Access::read_write);
    } catch (const std::exception &e) {
        print_error("store setup failed: %s\n", e.what());
        return -1;
    }
    return 0;
}

int teardown_store(void **state) {
    auto *f = static_cast<StoreFixture *>(*state);
    f->s.reset();
    std::error_code ec;
    fs::remove_all(f->tmp, ec);
    delete f;
    return 0;
}

TokenStore &store(void **state) { return *static_cast<StoreFixture *>(*state)->s; }

// Adds a freshly generated token and returns its plaintext.
std::string add_token(TokenStore &s, const TokenRecord &r) {
    std::string t = generate_token();
    s.add(token_digest(t), r);
    return t;
}

const char *reason_name(Reason r) { return describe(r); }

void expect(const Verdict &v, Reason reason, bool with_record, int line) {
    if (v.reason != reason)
        fail_msg("line %d: reason \"%s\", expected \"%s\"", line, reason_name(v.reason), reason_name(reason));
    if (v.accepted() != (reason == Reason::accepted)) fail_msg("line %d: accepted() disagrees", line);
    if (v.record.has_value() != with_record)
        fail_msg("line %d: record %s, expected %s", line, v.record ? "set" : "unset", with_record ? "set" : "unset");
}
#define EXPECT(verdict, reason, with_record) expect((verdict), Reason::reason, (with_record), __LINE__)

void test_accepted(void **state) {
    TokenStore &s = store(state);
    TokenRecord r = rec("alice", "deploy");
    std::string t = add_token(s, r);
    Verdict v = verify_token(s, "alice", t, addr("192.0.2.7"), now, all_services);
    EXPECT(v, accepted, true);
    assert_true(*v.record == r);
    v = verify_token(s, "alice", t, addr("2001:db8::1"), now, all_services);
    EXPECT(v, accepted, true);
    v = verify_token(s, "alice", t, std::nullopt, now, all_services);
    EXPECT(v, accepted, true);
    // Far in the future, a never-expiring token is still fine.
    v = verify_token(s, "alice", t, std::nullopt, INT64_MAX, all_services);
    EXPECT(v, accepted, true);
}

void test_malformed(void **state) {
    TokenStore &s = store(state);
    std::string t = add_token(s, rec("alice", "deploy"));
    for (const char *user : {"", "Alice", ".alice", "al ice", "alice:", "al/ice"})
        EXPECT(verify_token(s, user, t, std::nullopt, now, all_services), malformed, false);
    EXPECT(verify_token(s, std::string(65, 'a'), t, std::nullopt, now, all_services), malformed, false);
    std::string nul_user("alice\0", 6);
    EXPECT(verify_token(s, nul_user, t, std::nullopt, now, all_services), malformed, false);
    EXPECT(verify_token(s, "alice", "", std::nullopt, now, all_services), malformed, false);
    EXPECT(verify_token(s, "alice", t.substr(0, 31), std::nullopt, now, all_services), malformed, false);
    EXPECT(verify_token(s, "alice", t + "A", std::nullopt, now, all_services), malformed, false);
    EXPECT(verify_token(s, "alice", t + "\n", std::nullopt, now, all_services), malformed, false);
    EXPECT(verify_token(s, "alice", " " + t, std::nullopt, now, all_services), malformed, false);
    std::string lower = t;
    for (char &c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    if (lower != t) EXPECT(verify_token(s, "alice", lower, std::nullopt, now, all_services), malformed, false);
    std::string nul = t;
    nul[10] = '\0';
    EXPECT(verify_token(s, "alice", std::string_view(nul.data(), nul.size()), std::nullopt, now, all_services), malformed,
           false);
    // The token's digest is what a confused client might send: not a token.
    EXPECT(verify_token(s, "alice", digest_hex(token_digest(t)), std::nullopt, now, all_services), malformed, false);
}

void test_mistyped(void **state) {
    TokenStore &s = store(state);
    std::string t = add_token(s, rec("alice", "deploy"));
    int checked = 0;
    for (std::size_t pos : {0u, 5u, 27u, 28u, 31u}) {
        for (char sub : {'A', 'Q', '7'}) {
            std::string m = t;
            if (m[pos] == sub) continue;
            m[pos] = sub;
            if (has_valid_checksum(m)) continue;  // a 6e-7 chance; not a typo the checksum sees
            Verdict v = verify_token(s, "alice", m, std::nullopt, now, all_services);
            EXPECT(v, mistyped, false);
            ++checked;
        }
    }
    assert_true(checked >= 10);
}

void test_unknown(void **state) {
    TokenStore &s = store(state);
    add_token(s, rec("alice", "deploy"));
    for (int i = 0; i < 20; ++i) {
        std::string never_added = generate_token();
        assert_true(has_valid_checksum(never_added));
        EXPECT(verify_token(s, "alice", never_added, std::nullopt, now, all_services), unknown, false);
        EXPECT(verify_token(s, "bob", never_added, addr("10.0.0.1"), now, all_services), unknown, false);
    }
    // A revoked token is unknown.
    std::string t = add_token(s, rec("alice", "gone"));
    EXPECT(verify_token(s, "alice", t, std::nullopt, now, all_services), accepted, true);
    s.revoke("alice", "gone");
    EXPECT(verify_token(s, "alice", t, std::nullopt, now, all_services), unknown, false);
}

void test_wrong_user(void **state) {
    TokenStore &s = store(state);
    std::string t = add_token(s, rec("alice", "deploy"));
    add_token(s, rec("bob", "deploy"));
    Verdict v = verify_token(s, "bob", t, std::nullopt, now, all_services);
    EXPECT(v, wrong_user, true);
    assert_string_equal(v.record->user.c_str(), "alice");
    EXPECT(verify_token(s, "alic", t, std::nullopt, now, all_services), wrong_user, true);
    EXPECT(verify_token(s, "alice2", t, std::nullopt, now, all_services), wrong_user, true);
    EXPECT(verify_token(s, "alice", t, std::nullopt, now, all_services), accepted, true);
}

void test_expired(void **state) {
    TokenStore &s = store(state);
    std::string past = add_token(s, rec("alice", "past", now - 1));
    std::string exact = add_token(s, rec("alice", "exact", now));
    std::string future = add_token(s, rec("alice", "future", now + 1));
    Verdict v = verify_token(s, "alice", past, std::nullopt, now, all_services);
    EXPECT(v, expired, true);
    assert_int_equal(v.record->expires, now - 1);
    EXPECT(verify_token(s, "alice", exact, std::nullopt, now, all_services), expired, true);
    EXPECT(verify_token(s, "alice", exact, std::nullopt, now - 1, all_services), accepted, true);
    EXPECT(verify_token(s, "alice", future, std::nullopt, now, all_services), accepted, true);
    EXPECT(verify_token(s, "alice", future, std::nullopt, now + 1, all_services), expired, true);
    EXPECT(verify_token(s, "alice", future, addr("10.0.0.1"), now + 1000, all_services), expired, true);
}

void test_address_not_allowed(void **state) {
    TokenStore &s = store(state);
    std::string t = add_token(s, rec("alice", "deploy", 0, {net("10.0.0.0/8"), net("2001:db8::/32")}));
    EXPECT(verify_token(s, "alice", t, addr("10.1.2.3"), now, all_services), accepted, true);
    EXPECT(verify_token(s, "alice", t, addr("2001:db8::5"), now, all_services), accepted, true);
    Verdict v = verify_token(s, "alice", t, addr("192.0.2.7"), now, all_services);
    EXPECT(v, address_not_allowed, true);
    assert_int_equal(v.record->allowed_ips.size(), 2);
    EXPECT(verify_token(s, "alice", t, addr("11.0.0.1"), now, all_services), address_not_allowed, true);
    EXPECT(verify_token(s, "alice", t, addr("2001:db9::1"), now, all_services), address_not_allowed, true);
    EXPECT(verify_token(s, "alice", t, addr("::1"), now, all_services), address_not_allowed, true);
    // nullopt skips the allowlist.
    EXPECT(verify_token(s, "alice", t, std::nullopt, now, all_services), accepted, true);
    // A host entry.
    std::string h = add_token(s, rec("alice", "host", 0, {net("192.0.2.7")}));
    EXPECT(verify_token(s, "alice", h, addr("192.0.2.7"), now, all_services), accepted, true);
    EXPECT(verify_token(s, "alice", h, addr("192.0.2.8"), now, all_services), address_not_allowed, true);
}

void test_mapped_client(void **state) {
    TokenStore &s = store(state);
    std::string t = add_token(s, rec("alice", "deploy", 0, {net("10.0.0.0/8")}));
    EXPECT(verify_token(s, "alice", t, addr("::ffff:10.1.2.3"), now, all_services), accepted, true);
    EXPECT(verify_token(s, "alice", t, addr("::ffff:11.1.2.3"), now, all_services), address_not_allowed, true);
    // As httpd might hand it over: an IPv6 Address holding the mapped form.
    Address raw;
    raw.family = 6;
    raw.bytes = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
    EXPECT(verify_token(s, "alice", t, raw, now, all_services), accepted, true);
    raw.bytes[12] = 11;
    EXPECT(verify_token(s, "alice", t, raw, now, all_services), address_not_allowed, true);
    // A v6-only allowlist does not let a v4 client in.
    std::string t6 = add_token(s, rec("alice", "v6only", 0, {net("::/0")}));
    EXPECT(verify_token(s, "alice", t6, addr("10.1.2.3"), now, all_services), address_not_allowed, true);
    EXPECT(verify_token(s, "alice", t6, addr("::ffff:10.1.2.3"), now, all_services), address_not_allowed, true);
    EXPECT(verify_token(s, "alice", t6, addr("2001:db8::1"), now, all_services), accepted, true);
}

// Random [A-Z0-9]{32} whose checksum does not hold (an imported cPanel token).
std::string imported_token() {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (;;) {
        unsigned char buf[32];
        if (RAND_bytes(buf, sizeof buf) != 1) fail_msg("RAND_bytes failed");
        std::string t;
        for (unsigned char b : buf) t += alphabet[b % 36];  // bias is irrelevant here
        if (!has_valid_checksum(t)) return t;
    }
}

void test_imported_without_checksum(void **state) {
    TokenStore &s = store(state);
    std::string t = imported_token();
    assert_true(has_token_shape(t));
    assert_false(has_valid_checksum(t));
    s.add(token_digest(t), rec("alice", "imported"));
    EXPECT(verify_token(s, "alice", t, addr("192.0.2.7"), now, all_services), accepted, true);
    EXPECT(verify_token(s, "bob", t, std::nullopt, now, all_services), wrong_user, true);
    // cPanel's own example token.
    const char *cp = "U7HMR63FGY292DQZ4H5BFH16JLYMO01M";
    if (!has_valid_checksum(cp)) {
        EXPECT(verify_token(s, "carol", cp, std::nullopt, now, all_services), mistyped, false);
        s.add(token_digest(cp), rec("carol", "cpanel"));
        EXPECT(verify_token(s, "carol", cp, std::nullopt, now, all_services), accepted, true);
    }
    // An imported token with an allowlist and an expiry is checked like any other.
    std::string t2 = imported_token();
    s.add(token_digest(t2), rec("alice", "imported2", now + 10, {net("192.0.2.0/24")}));
    EXPECT(verify_token(s, "alice", t2, addr("192.0.2.1"), now, all_services), accepted, true);
    EXPECT(verify_token(s, "alice", t2, addr("192.0.3.1"), now, all_services), address_not_allowed, true);
    EXPECT(verify_token(s, "alice", t2, addr("192.0.2.1"), now + 10, all_services), expired, true);
}

// Writes `payload` under `digest` in the tokens database with the raw LMDB
// API, as another host (or a later version) would: the fixture's store is
// closed meanwhile (one environment per file per process) and reopened
// read-only.
void put_raw_record(StoreFixture &f, const Digest &digest, const std::string &payload) {
    f.s.reset();
    MDB_env *env = nullptr;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_maxreaders(env, StoreSettings::max_readers);
    mdb_env_set_mapsize(env, StoreSettings::map_size);
    assert_int_equal(mdb_env_open(env, (f.store + "/tokens.mdb").c_str(), MDB_NOSUBDIR, 0600), 0);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "tokens", 0, &dbi), 0);
    std::string value = ls_encode(1, 1, 0, payload);
    MDB_val k{digest.size(), const_cast<unsigned char *>(digest.data())}, v{value.size(), value.data()};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    const std::uint64_t id = mdb_txn_id(txn);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    CommitRecord(f.store + "/tokens.mdb" + commit_record_suffix, true).publish(id);
    f.s = std::make_unique<TokenStore>(f.store, Access::read_only);
}

void test_corrupt_store_throws(void **state) {
    auto *f = static_cast<StoreFixture *>(*state);
    std::string t = generate_token();
    put_raw_record(*f, token_digest(t), "\x01not a record");
    bool threw = false;
    try {
        verify_token(*f->s, "alice", t, std::nullopt, now, all_services);
    } catch (const StoreError &) {
        threw = true;
    }
    assert_true(threw);
}

// `record` encoded, with one more field (tag, 16-bit length, value) just
// before the end field, as a later version would write it.
std::string with_field(const TokenRecord &record, std::uint8_t tag, const std::string &value) {
    std::string payload = encode_record(record);
    std::string field(1, static_cast<char>(tag));
    field += static_cast<char>(value.size() >> 8);
    field += static_cast<char>(value.size() & 0xff);
    field += value;
    return payload.insert(payload.size() - 3, field);  // the end field: tag 0, length 0
}

// A later version adds a restriction (tag 0x80 and up) this one does not
// know: the token must be refused, not admitted with the restriction
// ignored. An unknown informational field (below 0x80) changes nothing.
void test_unknown_restriction_refused(void **state) {
    auto *f = static_cast<StoreFixture *>(*state);
    const std::string restricted = generate_token(), annotated = generate_token();
    const TokenRecord r = rec("alice", "scoped");
    put_raw_record(*f, token_digest(restricted), with_field(r, 0x90, "scope: read-only"));
    put_raw_record(*f, token_digest(annotated), with_field(rec("alice", "noted"), 0x41, "a note"));
    for (const std::optional<Address> &client : {std::optional<Address>(addr("192.0.2.7")), std::optional<Address>()}) {
        for (int again = 0; again < 2; ++again) {  // the second time from the record cache
            Verdict v = verify_token(*f->s, "alice", restricted, client, now, all_services);
            assert_false(v.accepted());
            EXPECT(v, unknown_restriction, true);
            assert_string_equal(v.record->name.c_str(), "scoped");
            v = verify_token(*f->s, "alice", annotated, client, now, all_services);
            EXPECT(v, accepted, true);
            assert_string_equal(v.record->name.c_str(), "noted");
        }
    }
    // Refusals that do not depend on the restriction keep their own reason.
    EXPECT(verify_token(*f->s, "bob", restricted, std::nullopt, now, all_services), wrong_user, true);
}

// A token whose record carries fields of a later version keeps them through
// an edit by this version: a restriction is never dropped on the way.
void test_unknown_restriction_survives_edit(void **state) {
    TokenStore &s = store(state);
    TokenRecord r = rec("alice", "scoped");
    r.later_fields = std::string("\x41\x00\x01n", 4) + std::string("\x90\x00\x02rw", 5);
    const std::string t = add_token(s, r);
    EXPECT(verify_token(s, "alice", t, std::nullopt, now, all_services), unknown_restriction, true);
    s.edit("alice", "scoped", TokenChanges{"renamed", Seconds{4102444800}, std::vector<Network>{net("10.0.0.0/8")}});
    const Verdict v = verify_token(s, "alice", t, addr("10.1.2.3"), now, all_services);
    EXPECT(v, unknown_restriction, true);
    assert_true(v.record->later_fields == r.later_fields);
    assert_string_equal(v.record->name.c_str(), "renamed");
    // It is still listed: it exists.
    const auto listed = s.list("alice");
    assert_int_equal(listed.size(), 1);
    assert_true(listed[0].record.later_fields == r.later_fields);
}

// The request path (find_token()) of a reader as httpd's children open the
// store (read-only, without the lock file): a token admitted, and so kept
// under its tag in the reader's cache, is refused on the very next check
// after a revoke, and a change of its record (now another user's) is seen at
// once; the digest given with a hit is the token's.
void test_token_cache_sees_revoke_on_next_check(void **state) {
    TokenStore &writer = store(state);
    const std::string dir = static_cast<StoreFixture *>(*state)->store;
    const std::string t = add_token(writer, rec("alice", "deploy"));
    const std::string other = add_token(writer, rec("carol", "ci"));
    const TokenStore reader(dir, Access::read_only);
    for (int i = 0; i < 3; ++i) {  // the first reads the tree, the others come from the cache
        const Verdict v = verify_token(reader, "alice", t, addr("192.0.2.7"), now, all_services);
        EXPECT(v, accepted, true);
        assert_true(v.digest == token_digest(t));
        EXPECT(verify_token(reader, "carol", other, addr("192.0.2.7"), now, all_services), accepted, true);
    }
    writer.revoke("alice", "deploy");
    EXPECT(verify_token(reader, "alice", t, addr("192.0.2.7"), now, all_services), unknown, false);
    EXPECT(verify_token(reader, "alice", t, addr("192.0.2.7"), now, all_services), unknown, false);
    EXPECT(verify_token(reader, "carol", other, addr("192.0.2.7"), now, all_services), accepted, true);
    EXPECT(verify_token(reader, "carol", other, addr("192.0.2.7"), now, all_services), accepted, true);
    // The same token back under another user (the same digest, another record).
    writer.add(token_digest(t), rec("bob", "deploy"));
    EXPECT(verify_token(reader, "alice", t, addr("192.0.2.7"), now, all_services), wrong_user, true);
    EXPECT(verify_token(reader, "bob", t, addr("192.0.2.7"), now, all_services), accepted, true);
    EXPECT(verify_token(reader, "bob", t, addr("192.0.2.7"), now, all_services), accepted, true);
    // Revoked by another process: the same.
    const pid_t pid = fork();
    if (pid == 0) {
        try {
            TokenStore(dir, Access::read_write).revoke("bob", "deploy");
        } catch (...) {
            _exit(1);
        }
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT(verify_token(reader, "bob", t, addr("192.0.2.7"), now, all_services), unknown, false);
    // Unknown and mistyped tokens are refused on every check (never kept).
    const std::string unknown = generate_token();
    for (int i = 0; i < 2; ++i)
        EXPECT(verify_token(reader, "alice", unknown, addr("192.0.2.7"), now, all_services), unknown, false);
}

void test_describe(void **) {
    const Reason all[] = {Reason::accepted,   Reason::malformed, Reason::mistyped,
                          Reason::unknown,    Reason::wrong_user, Reason::expired,
                          Reason::address_not_allowed, Reason::unknown_restriction};
    std::set<std::string> seen;
    for (Reason r : all) {
        const char *d = describe(r);
        assert_non_null(d);
        std::string s(d);
        assert_true(!s.empty());
        for (char c : s)
            if (c >= 'A' && c <= 'Z') fail_msg("describe() is not lowercase: \"%s\"", d);
        seen.insert(s);
    }
    assert_int_equal(seen.size(), 8);
    // The header's examples: "expired", "unknown token".
    assert_non_null(strstr(describe(Reason::expired), "expired"));
    assert_non_null(strstr(describe(Reason::unknown), "unknown"));
    assert_null(strstr(describe(Reason::accepted), "not"));
    // Stable: the same pointer text each time.
    assert_string_equal(describe(Reason::unknown), describe(Reason::unknown));
    Verdict v;
    assert_false(v.accepted());
    v.reason = Reason::accepted;
    assert_true(v.accepted());
}

// cPanel and WHM tokens are separate systems: each is refused where only
// the other service is accepted, with its own reason, whatever else holds.
void test_services_kept_apart(void **state) {
    TokenStore &s = store(state);
    TokenRecord whm = rec("alice", "reseller");
    whm.service = Service::whm;
    const std::string whm_token = add_token(s, whm);
    const std::string cpanel_token = add_token(s, rec("alice", "site"));
    const unsigned cpanel = service_bit(Service::cpanel), whm_only = service_bit(Service::whm);
    EXPECT(verify_token(s, "alice", cpanel_token, std::nullopt, now, cpanel), accepted, true);
    EXPECT(verify_token(s, "alice", cpanel_token, std::nullopt, now, whm_only), wrong_service, true);
    EXPECT(verify_token(s, "alice", whm_token, std::nullopt, now, whm_only), accepted, true);
    const Verdict v = verify_token(s, "alice", whm_token, std::nullopt, now, cpanel);
    EXPECT(v, wrong_service, true);
    assert_true(v.record->service == Service::whm);
    EXPECT(verify_token(s, "alice", whm_token, std::nullopt, now, 0), wrong_service, true);
    for (const std::string &token : {whm_token, cpanel_token})
        EXPECT(verify_token(s, "alice", token, std::nullopt, now, all_services), accepted, true);
    // Another user's token stays "another user's", not "another service".
    EXPECT(verify_token(s, "bob", whm_token, std::nullopt, now, cpanel), wrong_user, true);
    assert_string_equal(describe(Reason::wrong_service), "token belongs to the other service (cpanel/whm)");
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepted, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_malformed, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_mistyped, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_unknown, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_wrong_user, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_expired, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_address_not_allowed, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_mapped_client, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_imported_without_checksum, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_corrupt_store_throws, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_unknown_restriction_refused, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_unknown_restriction_survives_edit, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_services_kept_apart, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_token_cache_sees_revoke_on_next_check, setup_store, teardown_store),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/admin/cpanel_import.hpp: how a cPanel token file maps to
// entries (every field, the limited rules per service, each bad shape with
// its message), the user and service a path names, and import_cpanel's rules
// against a real store (TokenStore::batch, put_many).

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "admin/cpanel_import.hpp"
#include "token/record.hpp"
#include "store/store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;

namespace {

constexpr Seconds now = 1767225600;  // 2026-01-01
const char *const file_path = "/var/cpanel/authn/api_tokens_v2/cpanel/alice.json";

std::string hex_of(const std::string &token) { return digest_hex(token_digest(token)); }
const std::string token_a(32, 'A'), token_b(32, 'B'), token_c(32, 'C');

std::string tokens_json(const std::string &entries) { return "{\"tokens\": {" + entries + "}}"; }
std::string one(const std::string &token, const std::string &fields) {
    return "\"" + hex_of(token) + "\": {" + fields + "}";
}

std::vector<CpanelEntry> parse(const std::string &text, Service service = Service::cpanel) {
    return parse_cpanel_tokens(text, file_path, service);
}

// The message of the ImportError that parsing `text` must throw.
std::string parse_error(const std::string &text, Service service = Service::cpanel) {
    try {
        parse(text, service);
    } catch (const ImportError &e) {
        return e.what();
    }
    fail_msg("no ImportError for %s", text.c_str());
    return {};
}

void expect_contains(const std::string &text, const std::string &part) {
    if (text.find(part) == std::string::npos) fail_msg("'%s' does not contain '%s'", text.c_str(), part.c_str());
}

void test_every_field(void **) {
    const auto entries = parse(tokens_json(
        one(token_a, R"("name": "deploy", "create_time": 1700000000, "expires_at": 1800000000,
                       "whitelist_ips": ["192.0.2.7", "10.0.0.5/24", "2001:db8::1/32"], "has_full_access": true,
                       "something_new": {"x": 1})")));
    assert_int_equal(entries.size(), 1);
    const CpanelEntry &e = entries[0];
    assert_true(e.digest == token_digest(token_a));
    assert_string_equal(e.name.c_str(), "deploy");
    assert_int_equal(e.created, 1700000000);
    assert_int_equal(e.expires, 1800000000);
    assert_true(e.allowed_ips == (std::vector<Network>{net("192.0.2.7"), net("10.0.0.0/24"), net("2001:db8::/32")}));
    assert_int_equal(e.notes.size(), 2);
    assert_string_equal(e.notes[0].c_str(), "10.0.0.5/24 normalised to 10.0.0.0/24");
    assert_string_equal(e.notes[1].c_str(), "2001:db8::1/32 normalised to 2001:db8::/32");
    assert_false(e.limited);
    assert_true(e.limits.empty());
}

void test_expiry_never_and_allowlist_any(void **) {
    for (const char *expiry : {R"("expires_at": null,)", R"("expires_at": 0,)", "", R"("expires_at": "0",)"}) {
        const auto entries = parse(tokens_json(
            one(token_a, std::string(R"("name": "x", "create_time": "1700000000", )") + expiry +
                             R"( "has_full_access": 1)")));
        assert_int_equal(entries[0].expires, 0);
        assert_int_equal(entries[0].created, 1700000000);
        assert_true(entries[0].allowed_ips.empty());
    }
    for (const char *allowlist : {R"("whitelist_ips": null)", R"("whitelist_ips": [])"}) {
        const auto entries = parse(tokens_json(
            one(token_a, std::string(R"("name": "x", "create_time": 1, "has_full_access": 1, )") + allowlist)));
        assert_true(entries[0].allowed_ips.empty());
    }
    assert_int_equal(parse(tokens_json("")).size(), 0);
}

void test_limited_rules(void **) {
    auto entry = [](const std::string &fields, Service service) {
        return parse(tokens_json(one(token_a, R"("name": "x", "create_time": 1)" + fields)), service).at(0);
    };
    // cpanel: full access or limited to its features.
    assert_false(entry(R"(, "has_full_access": 1, "features": ["email"])", Service::cpanel).limited);
    CpanelEntry e = entry(R"(, "has_full_access": 0, "features": ["email", "ftp"])", Service::cpanel);
    assert_true(e.limited);
    assert_true(e.limits == (std::vector<std::string>{"email", "ftp"}));
    assert_true(entry("", Service::cpanel).limited);  // has_full_access absent
    e = entry(R"(, "has_full_access": false, "features": [])", Service::cpanel);
    assert_true(e.limited && e.limits.empty());
    // whm: limited by acls, as a list or an object of flags; acls of a cpanel token mean nothing.
    assert_false(entry("", Service::whm).limited);
    assert_false(entry(R"(, "acls": null)", Service::whm).limited);
    e = entry(R"(, "acls": ["list-accts", "create-acct"])", Service::whm);
    assert_true(e.limited && e.limits == (std::vector<std::string>{"list-accts", "create-acct"}));
    e = entry(R"(, "acls": {"list-accts": 1, "kill-acct": 0, "edit-dns": true})", Service::whm);
    assert_true(e.limited && e.limits == (std::vector<std::string>{"list-accts", "edit-dns"}));
    assert_false(entry(R"(, "has_full_access": 1, "acls": ["x"])", Service::cpanel).limited);
    // "all" granted is full access, as in cPanel (issue 20); not granted, it limits nothing more.
    for (const char *all : {R"(["all"])", R"(["list-accts", "all"])", R"({"all": 1, "kill-acct": 0})"}) {
        e = entry(std::string(R"(, "acls": )") + all, Service::whm);
        assert_true(!e.limited && e.limits.empty());
    }
    e = entry(R"(, "acls": {"all": 0, "list-accts": 1})", Service::whm);
    assert_true(e.limited && e.limits == std::vector<std::string>{"list-accts"});
    e = entry(R"(, "acls": ["all"], "readonly": 1)", Service::whm);
    assert_true(e.limited && e.limits == std::vector<std::string>{"readonly"});
    // readonly: limited for either service, and said so in the limits.
    for (Service service : {Service::cpanel, Service::whm}) {
        e = entry(R"(, "has_full_access": 1, "readonly": 1)", service);
        assert_true(e.limited && e.read_only);
        assert_true(e.limits == std::vector<std::string>{"readonly"});
    }
    assert_false(entry(R"(, "has_full_access": 1, "readonly": 0)", Service::cpanel).limited);
}

void test_bad_shapes(void **) {
    const std::string a = hex_of(token_a).substr(0, 16);
    const std::string named = "token " + a + " (\"deploy\")";
    const std::string ok = R"("name": "deploy", "create_time": 1, "has_full_access": 1)";
    struct Case {
        std::string text, message;
    };
    const std::vector<Case> cases = {
        {"{tokens", "not JSON"},
        {"[]", "expected a JSON object"},
        {R"({"tokens": []})", "expected an object {\"tokens\""},
        {R"({"other": {}})", "expected an object {\"tokens\""},
        {tokens_json(R"("ABC": {"name": "deploy"})"), "entry 1 (\"deploy\"): the key is not a SHA-512 digest"},
        {tokens_json("\"" + std::string(128, 'A') + "\": {}"), "entry 1: the key is not a SHA-512 digest"},
        {tokens_json("\"" + hex_of(token_a) + "\": []"), "token " + a + ": expected an object"},
        {tokens_json(one(token_a, R"("create_time": 1)")), "token " + a + ": no name"},
        {tokens_json(one(token_a, R"("name": "de ploy", "create_time": 1)")), "token " + a + ": the name is not"},
        {tokens_json(one(token_a, R"("name": "deploy")")), named + ": no create_time"},
        {tokens_json(one(token_a, R"("name": "deploy", "create_time": -5)")), named + ": create_time: expected"},
        {tokens_json(one(token_a, ok + R"(, "expires_at": "tomorrow")")), named + ": expires_at: expected"},
        {tokens_json(one(token_a, ok + R"(, "expires_at": 99999999999999)")), named + ": expires_at: expected"},
        {tokens_json(one(token_a, ok + R"(, "whitelist_ips": "10.0.0.1")")), named + ": whitelist_ips: expected a list"},
        {tokens_json(one(token_a, ok + R"(, "whitelist_ips": ["10.0.0.256"])")),
         named + ": whitelist_ips: \"10.0.0.256\" is not an IPv4 or IPv6 address or network"},
        {tokens_json(one(token_a, ok + R"(, "whitelist_ips": ["10.0.0.0/33"])")), named + ": whitelist_ips: \"10.0.0.0/33\""},
        {tokens_json(one(token_a, ok + R"(, "whitelist_ips": [7])")), named + ": whitelist_ips: an item is not"},
        {tokens_json(one(token_a, R"("name": "deploy", "create_time": 1, "has_full_access": "yes")")),
         named + ": has_full_access must be true, false, 1 or 0"},
        {tokens_json(one(token_a, R"("name": "deploy", "create_time": 1, "features": "email")")),
         named + ": features: expected a list of names"},
        {tokens_json(one(token_a, R"("name": "deploy", "create_time": 1, "features": ["e mail"])")),
         named + ": features: \"e mail\" is not a valid name"},
    };
    for (const Case &c : cases) {
        const std::string message = parse_error(c.text);
        expect_contains(message, std::string(file_path) + ": ");
        expect_contains(message, c.message);
        if (message.find(hex_of(token_a)) != std::string::npos) fail_msg("a whole digest in: %s", message.c_str());
    }
    expect_contains(parse_error(tokens_json(one(token_a, R"("name": "x", "create_time": 1, "acls": 5)")), Service::whm),
                    "acls: expected a list of names or an object of flags");
    // A number too large for any integer type: nlohmann's parser throws out_of_range, not parse_error
    // (found by fuzz_cpanel); it is a bad file like any other, named, and skipped.
    for (const char *number : {"1e999", "-1e999", "99999999999999999999999"})
        expect_contains(parse_error(tokens_json(one(token_a, std::string(R"("name": "x", "create_time": )") + number))),
                        std::string(file_path) + ": ");

    // Nesting is bounded as it is parsed (issue 20, M2): the top object and 15 more levels are
    // a file, 16 more are not, however deep the rest goes.
    const auto nested = [](int levels) {
        return "{\"tokens\": {}, \"x\": " + std::string(levels, '[') + std::string(levels, ']') + "}";
    };
    assert_true(parse(nested(max_cpanel_json_depth - 1)).empty());
    for (int levels : {max_cpanel_json_depth, 100000})
        expect_contains(parse_error(nested(levels)), std::string(file_path) + ": nested deeper than 16 levels");

    std::string many;
    for (int i = 0; i < 101; ++i) many += (i ? ", " : "") + std::string("\"10.0.") + std::to_string(i) + ".1\"";
    expect_contains(parse_error(tokens_json(one(token_a, ok + ", \"whitelist_ips\": [" + many + "]"))),
                    named + ": whitelist_ips: 101 entries, more than cPanel's 100");
}

void test_user_and_service_from_the_path(void **) {
    assert_string_equal(user_of_path("/x/api_tokens_v2/cpanel/alice.json").c_str(), "alice");
    assert_string_equal(user_of_path("whostmgr/root.json").c_str(), "root");
    for (const char *bad : {"/x/cpanel/Alice.json", "/x/cpanel/alice", "/x/cpanel/.json", "/x/cpanel/a b.json",
                            "/x/cpanel/alice.json.bak"}) {
        try {
            user_of_path(bad);
            fail_msg("no ImportError for %s", bad);
        } catch (const ImportError &e) {
            expect_contains(e.what(), std::string(bad) + ": the file's name is not USER.json");
        }
    }
    assert_true(service_of_path("/x/api_tokens_v2/cpanel/alice.json") == Service::cpanel);
    assert_true(service_of_path("/x/api_tokens_v2/whostmgr/root.json") == Service::whm);
    assert_false(service_of_path("/x/whm/root.json").has_value());
    assert_false(service_of_path("/x/cpanel.json").has_value());
}

// ---- import_cpanel against a real store

CpanelEntry entry_for(const std::string &token, const std::string &name) {
    CpanelEntry entry;
    entry.digest = token_digest(token);
    entry.name = name;
    entry.created = 1700000000;
    return entry;
}

CpanelFile file_of(std::vector<CpanelEntry> entries, const std::string &user = "alice",
                   const std::string &path = file_path) {
    return CpanelFile{path, user, Service::cpanel, std::move(entries)};
}

// The sources of `files`, as if listed from `directories`.
ImportSources sources_of(const std::vector<CpanelFile> &files, const std::vector<std::string> &directories = {}) {
    ImportSources sources;
    for (const CpanelFile &file : files) sources.files.push_back(file.path);
    sources.directories = directories;
    return sources;
}

std::vector<ImportStep> run(TokenStore &s, const std::vector<CpanelFile> &files, bool sync = false,
                            bool dry_run = false, const std::vector<std::string> &directories = {}) {
    return import_cpanel(s, files, sources_of(files, directories), {sync, false, dry_run, now});
}

// The store's tokens, comparable.
std::vector<std::pair<Digest, TokenRecord>> contents(const TokenStore &s) {
    std::vector<std::pair<Digest, TokenRecord>> out;
    for (const StoredToken &token : s.list()) out.emplace_back(token.digest, token.record);
    return out;
}

void expect_step(const std::vector<ImportStep> &steps, std::size_t i, ImportAction action, const char *name,
                 const char *detail_part = "") {
    if (i >= steps.size()) fail_msg("only %zu steps, expected step %zu", steps.size(), i);
    if (steps[i].action != action || steps[i].name != name)
        fail_msg("step %zu: %s %s (%s), expected %s %s", i, import_action_name(steps[i].action), steps[i].name.c_str(),
                 steps[i].detail.c_str(), import_action_name(action), name);
    expect_contains(steps[i].detail, detail_part);
}

void test_add_then_unchanged_then_differs(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    CpanelEntry deploy = entry_for(token_a, "deploy");
    deploy.allowed_ips = {net("192.0.2.0/24")};
    deploy.expires = now + 3600;
    auto steps = run(s, {file_of({deploy})});
    expect_step(steps, 0, ImportAction::added, "deploy");
    const auto stored = s.find(token_digest(token_a));
    assert_true(stored.has_value());
    assert_string_equal(stored->imported_from.c_str(), file_path);
    assert_int_equal(stored->created, 1700000000);
    assert_int_equal(stored->expires, now + 3600);
    assert_true(stored->allowed_ips == deploy.allowed_ips);

    steps = run(s, {file_of({deploy})});
    expect_step(steps, 0, ImportAction::unchanged, "deploy");
    deploy.expires = 0;
    steps = run(s, {file_of({deploy})});
    expect_step(steps, 0, ImportAction::differs, "deploy", "expiry; --sync applies it");
    assert_int_equal(s.find(token_digest(token_a))->expires, now + 3600);
}

void test_dry_run_writes_nothing(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    auto steps = run(s, {file_of({entry_for(token_a, "deploy")})}, false, true);
    expect_step(steps, 0, ImportAction::added, "deploy");
    assert_false(s.find(token_digest(token_a)).has_value());
    assert_true(s.list().empty());
}

void test_skipped_expired_and_limited(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    CpanelEntry expired = entry_for(token_a, "old"), limited = entry_for(token_b, "mail");
    expired.expires = now;
    limited.limited = true;
    limited.limits = {"email"};
    auto steps = run(s, {file_of({expired, limited})});
    expect_step(steps, 0, ImportAction::skipped, "old", "expired 2026-01-01T00:00:00Z");
    expect_step(steps, 1, ImportAction::skipped, "mail", "limited: features email; use --with-limited");
    assert_true(s.list().empty());
    steps = import_cpanel(s, {file_of({limited})}, sources_of({file_of({limited})}), {false, true, false, now});
    expect_step(steps, 0, ImportAction::added, "mail");
    assert_true(s.find(token_digest(token_b))->limits == std::vector<std::string>{"email"});
}

void test_conflicts_touch_nothing(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    s.add(token_digest(token_a), rec("alice", "made-here"));  // by cptoken create
    s.add(new_digest(), rec("alice", "taken"));
    s.add(token_digest(token_b), rec("bob", "bobs"));
    const auto before = contents(s);
    auto steps = run(s, {file_of({entry_for(token_a, "made-here"), entry_for(token_b, "b"),
                                  entry_for(token_c, "taken")})},
                     true);
    expect_step(steps, 0, ImportAction::conflict, "made-here", "made here with cptoken create");
    expect_step(steps, 1, ImportAction::conflict, "b", "token of another user");
    expect_step(steps, 2, ImportAction::conflict, "taken", "name taken by another token");
    assert_true(contents(s) == before);
}

void test_sync_updates_swaps_and_revokes(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    run(s, {file_of({entry_for(token_a, "first"), entry_for(token_b, "second"), entry_for(token_c, "gone")})});
    s.edit("alice", "first", TokenChanges{.scopes = std::vector<std::string>{"/execute/"}});
    auto steps = run(s, {file_of({entry_for(token_a, "second"), entry_for(token_b, "first")})}, true);
    expect_step(steps, 0, ImportAction::updated, "second", "name was first");
    expect_step(steps, 1, ImportAction::updated, "first", "name was second");
    expect_step(steps, 2, ImportAction::revoked, "gone", "no longer in ");
    assert_true(s.find_by_name("alice", "second")->digest == token_digest(token_a));
    assert_true(s.find_by_name("alice", "first")->digest == token_digest(token_b));
    assert_false(s.find(token_digest(token_c)).has_value());
    // What cptoken edit set stays.
    assert_true(s.find(token_digest(token_a))->scopes == std::vector<std::string>{"/execute/"});
    assert_int_equal(s.list().size(), 2);
}

void test_sync_takes_a_name_freed_in_the_same_run(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    run(s, {file_of({entry_for(token_a, "deploy")})});
    // Revoked in cPanel and made again under the same name.
    auto steps = run(s, {file_of({entry_for(token_b, "deploy")})});
    expect_step(steps, 0, ImportAction::conflict, "deploy", "name taken");
    steps = run(s, {file_of({entry_for(token_b, "deploy")})}, true);
    expect_step(steps, 0, ImportAction::added, "deploy");
    expect_step(steps, 1, ImportAction::revoked, "deploy");
    assert_true(s.find_by_name("alice", "deploy")->digest == token_digest(token_b));
    assert_false(s.find(token_digest(token_a)).has_value());
}

void test_sync_leaves_rotated_made_here_and_other_files(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const std::string other = "/var/cpanel/authn/api_tokens_v2/cpanel/bob.json";
    run(s, {file_of({entry_for(token_a, "deploy")}), file_of({entry_for(token_b, "ci")}, "bob", other)});
    s.add(new_digest(), rec("alice", "manual"));
    s.rotate("alice", "deploy", new_digest(), now, 3600);
    auto steps = run(s, {file_of({})}, true);
    assert_true(steps.empty());  // the rotated token is no longer followed; the new one was made here
    assert_int_equal(s.list("alice").size(), 3);
    // bob.json vanished from a directory that was read: its tokens go.
    steps = run(s, {file_of({})}, true, false, {"/var/cpanel/authn/api_tokens_v2/cpanel"});
    expect_step(steps, 0, ImportAction::revoked, "ci", " is gone");
    assert_false(s.find(token_digest(token_b)).has_value());
}

// Issue 20, M1: a digest another user's file also lists stays with the file it came from.
void test_sync_keeps_a_digest_another_file_also_lists(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const std::string root_path = "/var/cpanel/authn/api_tokens_v2/whostmgr/root.json";
    CpanelFile root_file = file_of({entry_for(token_a, "reseller")}, "root", root_path);
    root_file.service = Service::whm;
    run(s, {root_file});
    // Files are read cpanel/ first: alice's copy of root's digest comes first.
    auto steps = run(s, {file_of({entry_for(token_a, "mine")}), root_file}, true);
    expect_step(steps, 0, ImportAction::conflict, "mine", "the same digest is a token of another user");
    expect_step(steps, 1, ImportAction::unchanged, "reseller");
    assert_int_equal(steps.size(), 2);
    assert_string_equal(s.find(token_digest(token_a))->user.c_str(), "root");
    // A new digest in two files goes to neither.
    const std::string bob_path = "/var/cpanel/authn/api_tokens_v2/cpanel/bob.json";
    steps = run(s, {file_of({entry_for(token_b, "x")}), file_of({entry_for(token_b, "x")}, "bob", bob_path)}, true);
    expect_step(steps, 0, ImportAction::conflict, "x", "also listed in /var/cpanel/authn/api_tokens_v2/cpanel/bob.json");
    expect_step(steps, 1, ImportAction::conflict, "x", "also listed in /var/cpanel/authn/api_tokens_v2/cpanel/alice.json");
    assert_false(s.find(token_digest(token_b)).has_value());
}

// Issue 20, M2: a file listed but skipped (unreadable, unparsable) is neither read nor gone.
void test_a_file_listed_but_not_read_keeps_its_tokens(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const std::string dir = "/var/cpanel/authn/api_tokens_v2/cpanel";
    const std::string bob_path = dir + "/bob.json";
    run(s, {file_of({entry_for(token_a, "deploy")}), file_of({entry_for(token_b, "ci")}, "bob", bob_path)});
    ImportSources sources = sources_of({file_of({})}, {dir});
    sources.files.push_back(bob_path);  // listed, then skipped: not among the files read
    auto steps = import_cpanel(s, {file_of({})}, sources, {true, false, false, now});
    assert_int_equal(steps.size(), 1);
    expect_step(steps, 0, ImportAction::revoked, "deploy", "no longer in ");
    assert_true(s.find(token_digest(token_b)).has_value());
    // Without --sync, what it would revoke is reported as gone and kept.
    run(s, {file_of({entry_for(token_a, "deploy")})});
    steps = run(s, {file_of({})}, false, false, {dir});
    expect_step(steps, 0, ImportAction::gone, "deploy", "no longer in ");
    expect_step(steps, 1, ImportAction::gone, "ci", "bob.json is gone; --sync revokes it");
    assert_int_equal(s.list().size(), 2);
}

void test_put_many_refuses_a_taken_name(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    s.add(token_digest(token_a), rec("alice", "deploy"));
    EXPECT_STORE_ERROR(duplicate, s.batch([&](TokenBatch &b) {
        b.put_many({{token_digest(token_b), rec("alice", "other")}, {token_digest(token_c), rec("alice", "deploy")}});
        return true;
    }));
    EXPECT_STORE_ERROR(duplicate, s.batch([&](TokenBatch &b) {
        b.put_many({{token_digest(token_b), rec("alice", "x")}, {token_digest(token_c), rec("alice", "x")}});
        return true;
    }));
    assert_int_equal(s.list().size(), 1);
    s.batch([&](TokenBatch &b) {
        b.put_many({{token_digest(token_b), rec("alice", "other")}});
        assert_true(b.find(token_digest(token_b)).has_value());  // seen inside the batch
        return false;                                            // and never written
    });
    assert_false(s.find(token_digest(token_b)).has_value());
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_expiry_never_and_allowlist_any),
        cmocka_unit_test(test_limited_rules),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_user_and_service_from_the_path),
        cmocka_unit_test_setup_teardown(test_add_then_unchanged_then_differs, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_dry_run_writes_nothing, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_skipped_expired_and_limited, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_conflicts_touch_nothing, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_sync_updates_swaps_and_revokes, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_sync_takes_a_name_freed_in_the_same_run, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_sync_leaves_rotated_made_here_and_other_files, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_sync_keeps_a_digest_another_file_also_lists, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_file_listed_but_not_read_keeps_its_tokens, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_put_many_refuses_a_taken_name, setup_init, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/manager/: parameters (forms, JSON bodies, name-N), page
// tokens and origins, and every function of the manager's API with its
// error paths, on real LMDB stores. Each call is checked for its envelope
// and for what it did, or did not, write.

#include <unistd.h>

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/verify.hpp"
#include "manager/csrf.hpp"
#include "manager/manager.hpp"
#include "manager/params.hpp"
#include "store/store.hpp"
#include "store/usage_store.hpp"
#include "token/token.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;
using namespace cptoken::manager;
using json = nlohmann::json;

namespace {

constexpr Seconds t0 = 1767225600 + 100000;  // after rec()'s created time
const std::string open_quote = "\u201c", close_quote = "\u201d";

std::string curly(const std::string &text) { return open_quote + text + close_quote; }

struct Answer {
    ManagerResponse response;
    json body;
};

struct CallOptions {
    std::string user = "alice";
    std::optional<StoredToken> caller;
    UsageSource usage;
    Seconds now = t0;
};

Answer call(TokenStore &store, Api api, const std::string &module, const std::string &function, Params params,
            const CallOptions &options = {}) {
    ManagerRequest request;
    request.api = api;
    request.module = module;
    request.function = function;
    request.params = std::move(params);
    request.user = options.user;
    request.caller = options.caller;
    request.now = options.now;
    request.client = "192.0.2.1";
    request.csrf_token = "page-token";
    Answer answer{handle_call(request, store, options.usage), {}};
    answer.body = json::parse(answer.response.body);
    assert_int_equal(answer.response.http_status, 200);
    return answer;
}

Answer uapi(TokenStore &store, const std::string &module, const std::string &function, Params params = {},
            const CallOptions &options = {}) {
    return call(store, Api::uapi, module, function, std::move(params), options);
}

Answer whm(TokenStore &store, const std::string &function, Params params = {}, const CallOptions &options = {}) {
    params.emplace("api.version", "1");
    return call(store, Api::whm, "", function, std::move(params), options);
}

// A UAPI success: status 1, the envelope's other fields as cPanel's.
json ok(const Answer &answer, int line) {
    const json &b = answer.body;
    if (b.value("status", -1) != 1) fail_msg("line %d: expected status 1, got %s", line, answer.response.body.c_str());
    assert_true(b["errors"].is_null() && b["messages"].is_null() && b["warnings"].is_null());
    assert_true(b["metadata"].is_object());
    assert_true(answer.response.succeeded);
    return b["data"];
}
#define OK(answer) ok(answer, __LINE__)

// A UAPI failure: status 0, data null, one error holding `text`; nothing audited.
void refused(const Answer &answer, const std::string &text, int line) {
    const json &b = answer.body;
    if (b.value("status", -1) != 0 || !b["errors"].is_array() || b["errors"].size() != 1)
        fail_msg("line %d: expected status 0 with one error, got %s", line, answer.response.body.c_str());
    const std::string error = b["errors"][0];
    if (error.find(text) == std::string::npos)
        fail_msg("line %d: error %s does not hold %s", line, error.c_str(), text.c_str());
    assert_true(b["data"].is_null() && b["messages"].is_null() && b["warnings"].is_null());
    assert_true(b["metadata"] == json::object());
    assert_false(answer.response.succeeded);
    assert_true(answer.response.audit.empty());
}
#define REFUSED(answer, text) refused(answer, text, __LINE__)

// A WHM API 1 answer: the envelope, result and reason.
void whm_result(const Answer &answer, const std::string &function, int result, const std::string &reason, int line) {
    const json &m = answer.body["metadata"];
    if (m.value("result", -1) != result || m.value("command", "") != function || m.value("version", 0) != 1)
        fail_msg("line %d: expected result %d of %s, got %s", line, result, function.c_str(), answer.response.body.c_str());
    const std::string got = m.value("reason", "");
    if (got.find(reason) == std::string::npos)
        fail_msg("line %d: reason %s does not hold %s", line, got.c_str(), reason.c_str());
    if (result == 0) assert_false(answer.body.contains("data"));
}
#define WHM_RESULT(answer, function, result, reason) whm_result(answer, function, result, reason, __LINE__)

struct Issued {
    std::string token;
    Digest digest;
};

Issued add(TokenStore &store, TokenRecord record) {
    Issued issued{generate_token(), {}};
    issued.digest = token_digest(issued.token);
    store.add(issued.digest, record);
    return issued;
}

TokenRecord whm_rec(const std::string &user, const std::string &name) {
    TokenRecord record = rec(user, name);
    record.service = Service::whm;
    return record;
}

StoredToken caller_of(TokenStore &store, const std::string &user, const std::string &name) {
    auto found = store.find_by_name(user, name);
    if (!found) fail_msg("no token %s of %s", name.c_str(), user.c_str());
    return *found;
}

// Everything the store holds, to show that a refused call wrote nothing.
std::vector<StoredToken> snapshot(TokenStore &store) { return store.list(); }

void assert_unchanged(TokenStore &store, const std::vector<StoredToken> &before) {
    const auto after = snapshot(store);
    assert_int_equal(after.size(), before.size());
    for (std::size_t i = 0; i < after.size(); ++i) {
        assert_true(after[i].digest == before[i].digest);
        assert_true(after[i].record == before[i].record);
    }
}

// A usage source that knows the uses it is given, and counts its calls.
struct FakeUsage {
    std::map<Digest, Usage> uses;
    int calls = 0;
    UsageSource source() {
        return [this](const std::vector<Digest> &digests) {
            ++calls;
            std::map<Digest, Usage> out;
            for (const Digest &digest : digests)
                if (auto found = uses.find(digest); found != uses.end()) out.insert(*found);
            return out;
        };
    }
};

// ------------------------------------------------------------ parameters

void test_form_params(void **) {
    Params p;
    assert_true(add_form_params("name=a+b&expires_at=0&&flag&x=%41%2b%c3%a9&name=c", p));
    assert_int_equal(p.size(), 5);
    assert_true(repeated_param(p, "name") == (std::vector<std::string>{"a b", "c"}));
    assert_string_equal(p.find("flag")->second.c_str(), "");
    assert_string_equal(p.find("x")->second.c_str(), "A+\xc3\xa9");
    assert_string_equal(p.find("expires_at")->second.c_str(), "0");
    // A broken escape or a NUL: refused whole, nothing added.
    for (const char *bad : {"a=1&b=%4", "a=%zz", "a=%", "a=%00", "%00=1", "a=1&b=%G1"}) {
        Params q{{"kept", "1"}};
        if (add_form_params(bad, q)) fail_msg("accepted %s", bad);
        assert_int_equal(q.size(), 1);
    }
    Params empty;
    assert_true(add_form_params("", empty));
    assert_true(empty.empty());
}

void test_json_params(void **) {
    Params p;
    assert_true(add_json_params(R"({"name":"deploy","expires_at":1800000000,"readonly":true,"any":false,)"
                                R"("skip":null,"allowed_ip":["192.0.2.1","2001:db8::/32",null],"api.version":1})",
                                p));
    assert_string_equal(p.find("name")->second.c_str(), "deploy");
    assert_string_equal(p.find("expires_at")->second.c_str(), "1800000000");
    assert_string_equal(p.find("readonly")->second.c_str(), "1");
    assert_string_equal(p.find("any")->second.c_str(), "0");
    assert_true(p.find("skip") == p.end());
    assert_true(repeated_param(p, "allowed_ip") == (std::vector<std::string>{"192.0.2.1", "2001:db8::/32"}));
    assert_string_equal(p.find("api.version")->second.c_str(), "1");
    const std::string deep = std::string(20000, '[') + std::string(20000, ']');
    for (const std::string &bad :
         {std::string("not json"), std::string("[1,2]"), std::string("\"name\""), std::string(R"({"a":{"b":1}})"),
          std::string(R"({"a":[[1]]})"), std::string(R"({"a":[{"b":1}]})"), std::string(R"({"a":"x\u0000y"})"),
          std::string(R"({"a\u0000":"x"})"), std::string(R"({"a":1)"), std::string("{\"a\":\"") + deep + "\"}x",
          deep, "{\"a\":" + deep + "}"}) {
        Params q{{"kept", "1"}};
        if (add_json_params(bad, q)) fail_msg("accepted %.60s", bad.c_str());
        assert_int_equal(q.size(), 1);
    }
    // Brackets inside strings are text, not nesting.
    Params q;
    assert_true(add_json_params(R"({"name":"[[[{{{\"]]]"})", q));
    assert_string_equal(q.find("name")->second.c_str(), "[[[{{{\"]]]");
}

void test_repeated_param(void **) {
    Params p{{"token_name-10", "k"}, {"token_name-2", "c"}, {"token_name", "a"}, {"token_name-0", "b"},
             {"token_name-x", "no"}, {"token_name-", "no"}, {"token_names", "no"}, {"token_name--1", "no"}};
    assert_true(repeated_param(p, "token_name") == (std::vector<std::string>{"a", "b", "c", "k"}));
    assert_true(repeated_param(p, "acl").empty());
}

// ------------------------------------------------------------ page tokens and origins

void test_csrf_tokens(void **) {
    const CsrfKey key = make_csrf_key(), other = make_csrf_key();
    assert_false(key == other);
    const std::string alice = csrf_token(key, "alice");
    assert_int_equal(alice.size(), 64);
    assert_string_equal(alice.c_str(), csrf_token(key, "alice").c_str());
    assert_string_not_equal(alice.c_str(), csrf_token(key, "bob").c_str());
    assert_string_not_equal(alice.c_str(), csrf_token(other, "alice").c_str());
    assert_true(csrf_token_matches(key, "alice", alice));
    assert_false(csrf_token_matches(key, "bob", alice));
    assert_false(csrf_token_matches(other, "alice", alice));
    assert_false(csrf_token_matches(key, "alice", ""));
    assert_false(csrf_token_matches(key, "alice", alice.substr(0, 63)));
    assert_false(csrf_token_matches(key, "alice", alice + "0"));
    std::string flipped = alice;
    flipped[10] = flipped[10] == '0' ? '1' : '0';
    assert_false(csrf_token_matches(key, "alice", flipped));
    // The standard HMAC-SHA256 (Python: hmac.new(bytes(32), b"alice", hashlib.sha256).hexdigest()).
    const CsrfKey zeros{};
    assert_string_equal(csrf_token(zeros, "alice").c_str(),
                        "ce3837f76a54a635191b1704ac7672264fc17c3397ff52e7dacfc1ef3603a493");
}

void test_origin_matches_host(void **) {
    assert_true(origin_matches_host("https://panel.example.com:2083", "panel.example.com:2083"));
    assert_true(origin_matches_host("https://Panel.Example.com:2083", "panel.example.COM:2083"));
    assert_true(origin_matches_host("https://panel.example.com", "panel.example.com"));
    assert_true(origin_matches_host("https://panel.example.com", "panel.example.com:443"));
    assert_true(origin_matches_host("http://panel.example.com", "panel.example.com:80"));
    assert_true(origin_matches_host("http://127.0.0.1:2090", "127.0.0.1:2090"));
    assert_true(origin_matches_host("http://[::1]:2090", "[::1]:2090"));
    assert_false(origin_matches_host("https://evil.example", "panel.example.com"));
    assert_false(origin_matches_host("https://panel.example.com:2087", "panel.example.com:2083"));
    assert_false(origin_matches_host("https://panel.example.com", "panel.example.com:80"));
    assert_false(origin_matches_host("http://panel.example.com", "panel.example.com:443"));
    assert_false(origin_matches_host("null", "panel.example.com"));
    assert_false(origin_matches_host("", "panel.example.com"));
    assert_false(origin_matches_host("ftp://panel.example.com", "panel.example.com"));
    assert_false(origin_matches_host("https://panel.example.com/", "panel.example.com"));
    assert_false(origin_matches_host("https://user@panel.example.com", "panel.example.com"));
    assert_false(origin_matches_host("https://panel.example.com.evil.example", "panel.example.com"));
    assert_false(origin_matches_host("https://panel.example.com:x", "panel.example.com"));
    assert_false(origin_matches_host("https://panel.example.com", ""));
    assert_false(origin_matches_host("https://[::1", "[::1]"));
}

void test_function_kinds(void **) {
    assert_true(function_kind(Api::uapi, "Tokens", "list") == FunctionKind::read);
    assert_true(function_kind(Api::uapi, "CPTokens", "get") == FunctionKind::read);
    assert_true(function_kind(Api::uapi, "CPTokens", "session") == FunctionKind::read);
    assert_true(function_kind(Api::whm, "", "api_token_list") == FunctionKind::read);
    for (const char *fn : {"create_full_access", "rename", "revoke"})
        assert_true(function_kind(Api::uapi, "Tokens", fn) == FunctionKind::write);
    for (const char *fn : {"set_expiration", "set_allowed_ips", "rotate", "revoke", "revoke_all", "revoke_unused"})
        assert_true(function_kind(Api::uapi, "CPTokens", fn) == FunctionKind::write);
    for (const char *fn : {"api_token_create", "api_token_update", "api_token_revoke"})
        assert_true(function_kind(Api::whm, "", fn) == FunctionKind::write);
    assert_true(function_kind(Api::uapi, "Tokens", "get") == FunctionKind::unknown);
    assert_true(function_kind(Api::uapi, "tokens", "list") == FunctionKind::unknown);
    assert_true(function_kind(Api::uapi, "Email", "list") == FunctionKind::unknown);
    assert_true(function_kind(Api::whm, "", "api_token_get_details") == FunctionKind::unknown);
    assert_true(function_kind(Api::whm, "", "list") == FunctionKind::unknown);
}

void test_routes(void **) {
    const auto uapi_route = route_of("/execute/Tokens/list");
    assert_true(uapi_route && uapi_route->api == Api::uapi && uapi_route->module == "Tokens" &&
                uapi_route->function == "list");
    const auto page = route_of("/cptoken/execute/CPTokens/session");
    assert_true(page && page->api == Api::uapi && page->module == "CPTokens" && page->function == "session");
    const auto whm_route = route_of("/json-api/api_token_list");
    assert_true(whm_route && whm_route->api == Api::whm && whm_route->module.empty() &&
                whm_route->function == "api_token_list");
    for (const char *none : {"", "/", "/execute/Tokens", "/execute/Tokens/", "/execute//list", "/json-api/",
                             "/json-api", "/cptoken/", "/execute/Tokens/list/", "/other/Tokens/list"})
        if (route_of(none)) fail_msg("route_of(%s)", none);
    assert_string_equal(function_label(*uapi_route).c_str(), "Tokens::list");
    assert_string_equal(function_label(*whm_route).c_str(), "api_token_list");
    assert_string_equal(function_label(*route_of("/execute/Tok\"ens/x")).c_str(), "(unknown)");
}

void test_refusal_envelopes(void **) {
    const ManagerResponse u = refusal(Api::uapi, "list", "The request body is larger than 64 KiB.", 413);
    assert_int_equal(u.http_status, 413);
    assert_false(u.succeeded);
    assert_string_equal(u.body.c_str(), R"({"data":null,"errors":["The request body is larger than 64 KiB."],)"
                                        R"("messages":null,"metadata":{},"status":0,"warnings":null})");
    const ManagerResponse w = refusal(Api::whm, "api_token_list", "no", 403);
    assert_string_equal(w.body.c_str(), R"({"metadata":{"command":"api_token_list","reason":"no","result":0,"version":1}})");
}

// ------------------------------------------------------------ UAPI Tokens

void test_create_full_access(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Answer a = uapi(s, "Tokens", "create_full_access", {{"name", "deploy"}});
    const json &data = OK(a);
    assert_true(a.body["metadata"] == json::object());
    // cPanel's data: create_time and token, nothing else (no name, no expiry).
    assert_int_equal(data.size(), 2);
    assert_int_equal(data["create_time"].get<Seconds>(), t0);
    const std::string token = data["token"];
    assert_true(has_token_shape(token) && has_valid_checksum(token));
    assert_string_equal(a.response.audit.c_str(), "created token deploy");
    assert_true(a.response.audit.find(token) == std::string::npos);
    // The exact envelope, keys in cPanel's order.
    assert_string_equal(a.response.body.c_str(),
                        (R"({"data":{"create_time":)" + std::to_string(t0) + R"(,"token":")" + token +
                         R"("},"errors":null,"messages":null,"metadata":{},"status":1,"warnings":null})")
                            .c_str());
    const Verdict verdict = verify_token(s, "alice", token, std::nullopt, t0, all_services);
    assert_true(verdict.accepted());
    assert_true(verdict.record->service == Service::cpanel);
    assert_true(verdict.record->never_expires() && !verdict.record->read_only && verdict.record->scopes.empty());
    // readonly and expires_at.
    const Answer b = uapi(s, "Tokens", "create_full_access",
                          {{"name", "ro_1"}, {"readonly", "1"}, {"expires_at", std::to_string(t0 + 60)}});
    OK(b);
    const auto ro = s.find_by_name("alice", "ro_1");
    assert_true(ro->record.read_only);
    assert_int_equal(ro->record.expires, t0 + 60);
    OK(uapi(s, "Tokens", "create_full_access", {{"name", "never"}, {"expires_at", "0"}, {"readonly", "0"}}));
    assert_true(s.find_by_name("alice", "never")->record.never_expires());
    OK(uapi(s, "Tokens", "create_full_access", {{"name", "empty"}, {"expires_at", ""}}));
    assert_true(s.find_by_name("alice", "empty")->record.never_expires());
}

void test_create_full_access_refusals(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    add(s, rec("alice", "deploy"));
    add(s, whm_rec("alice", "whm_one"));
    const auto before = snapshot(s);
    REFUSED(uapi(s, "Tokens", "create_full_access"), "Provide the " + curly("name") + " parameter.");
    for (const std::string &bad : std::vector<std::string>{"", "a b", "x.y", std::string(51, 'a'), "caf\xc3\xa9"}) {
        const Answer a = uapi(s, "Tokens", "create_full_access", {{"name", bad}});
        REFUSED(a, "is not a valid API token name. An API token name must not be longer than 50 characters and may "
                   "only contain the following 64 characters: a-z A-Z 0-9 _ -");
    }
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "a b"}}), curly("a b") + " is not a valid");
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "deploy"}}),
            "A conflicting API token with the name " + curly("deploy") + " already exists.");
    // Names are unique per user across services (the store's rule).
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "whm_one"}}), "A conflicting API token");
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "new"}, {"expires_at", std::to_string(t0)}}),
            "The " + curly(std::to_string(t0)) + " value must be a future date.");
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "new"}, {"expires_at", "1"}}), "must be a future date");
    for (const char *bad : {"soon", "-5", "1.5", "1e9", " 100", "99999999999999999999", "253402300800"})
        REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "new"}, {"expires_at", bad}}),
                "parameter must be a unix time");
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "new"}, {"readonly", "yes"}}),
            "The " + curly("readonly") + " parameter must be 0 or 1.");
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "new"}, {"name", "other"}}),
            "Provide the " + curly("name") + " parameter only once.");
    assert_unchanged(s, before);
}

void test_tokens_per_user_limit(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    std::vector<StoredToken> many;
    for (std::size_t i = 0; i < max_tokens_per_user; ++i)
        many.push_back({new_digest(), rec("alice", "t" + std::to_string(i))});
    s.add_many(many);
    const auto before = snapshot(s);
    REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "one_more"}}),
            "You cannot have more than 1000 API tokens.");
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "one_more"}}), "api_token_create", 0,
               "You cannot have more than 1000 API tokens.");
    assert_unchanged(s, before);
    // Another user is not concerned.
    OK(uapi(s, "Tokens", "create_full_access", {{"name", "one_more"}}, {.user = "bob"}));
}

void test_list(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    TokenRecord full = rec("alice", "full", t0 + 3600, {net("192.0.2.0/24"), net("2001:db8::1")});
    const Issued f = add(s, full);
    TokenRecord limited = rec("alice", "limited");
    limited.read_only = true;
    limited.scopes = {"/execute/Email/"};
    limited.limits = {"email", "ftp"};
    const Issued l = add(s, limited);
    add(s, rec("alice", "expired", t0 - 1));
    add(s, whm_rec("alice", "whm_one"));
    add(s, rec("bob", "bobs"));
    FakeUsage usage;
    usage.uses[f.digest] = Usage{t0 - 50, "198.51.100.7", 42};
    usage.uses[l.digest] = Usage{t0 - 10, "", 1};
    const Answer a = uapi(s, "Tokens", "list", {}, {.usage = usage.source()});
    const json &data = OK(a);
    assert_true(a.body["metadata"] == (json{{"transformed", 1}, {"cptoken_usage", "available"}}));
    assert_int_equal(usage.calls, 1);
    assert_true(a.response.audit.empty() && a.response.notice.empty());
    // Only alice's cPanel tokens, sorted by name; expired ones listed.
    assert_int_equal(data.size(), 3);
    assert_string_equal(data[0]["name"].get<std::string>().c_str(), "expired");
    assert_string_equal(data[1]["name"].get<std::string>().c_str(), "full");
    assert_string_equal(data[2]["name"].get<std::string>().c_str(), "limited");
    assert_int_equal(data[0]["expired"].get<int>(), 1);
    assert_int_equal(data[0]["uses"].get<int>(), 0);
    assert_true(data[0]["last_used"].is_null() && data[0]["last_used_ip"].is_null());
    const json want_full = {{"name", "full"},
                            {"create_time", 1767225600},
                            {"expires_at", t0 + 3600},
                            {"has_full_access", 1},
                            {"features", json::array()},
                            {"readonly", 0},
                            {"last_used", t0 - 50},
                            {"last_used_ip", "198.51.100.7"},
                            {"uses", 42},
                            {"allowed_ips", {"192.0.2.0/24", "2001:db8::1"}},
                            {"scopes", json::array()},
                            {"expired", 0},
                            {"rotated", 0},
                            {"grace_ends", nullptr}};
    if (data[1] != want_full) fail_msg("full: %s", data[1].dump().c_str());
    assert_int_equal(data[2]["has_full_access"].get<int>(), 0);
    assert_true(data[2]["features"] == (json{"email", "ftp"}));
    assert_int_equal(data[2]["readonly"].get<int>(), 1);
    assert_true(data[2]["scopes"] == (json{"/execute/Email/"}));
    assert_true(data[2]["last_used_ip"].is_null());
    assert_int_equal(data[2]["uses"].get<int>(), 1);
    // Without a usage source: unknown, said in metadata.
    const Answer b = uapi(s, "Tokens", "list");
    assert_string_equal(b.body["metadata"]["cptoken_usage"].get<std::string>().c_str(), "unavailable");
    for (const json &token : OK(b)) assert_true(token["last_used"].is_null() && token["uses"].is_null());
    assert_true(b.response.notice.empty());
    // A usage source that fails: the same, and a notice for the admin.
    const UsageSource broken = [](const std::vector<Digest> &) -> std::map<Digest, Usage> {
        throw StoreError(StoreError::Kind::access, "cannot reach the usage reader at /run/x.sock");
    };
    const Answer c = uapi(s, "Tokens", "list", {}, {.usage = broken});
    assert_string_equal(c.body["metadata"]["cptoken_usage"].get<std::string>().c_str(), "unavailable");
    assert_true(OK(c)[1]["uses"].is_null());
    assert_true(c.response.notice.find("cannot reach the usage reader") != std::string::npos);
    // No tokens: an empty array.
    assert_true(OK(uapi(s, "Tokens", "list", {}, {.user = "carol"})) == json::array());
}

void test_list_shows_rotated_tokens(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    add(s, rec("alice", "deploy"));
    const Answer r = uapi(s, "CPTokens", "rotate", {{"name", "deploy"}, {"grace", "600"}});
    OK(r);
    const json &data = OK(uapi(s, "Tokens", "list"));
    assert_int_equal(data.size(), 2);
    assert_int_equal(data[0]["rotated"].get<int>(), 0);
    assert_true(data[0]["grace_ends"].is_null());
    assert_int_equal(data[1]["rotated"].get<int>(), 1);
    assert_int_equal(data[1]["grace_ends"].get<Seconds>(), t0 + 600);
    assert_string_equal(data[1]["name"].get<std::string>().c_str(), "deploy");
}

void test_rename(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued d = add(s, rec("alice", "deploy"));
    add(s, rec("alice", "taken"));
    add(s, whm_rec("alice", "whm_one"));
    add(s, rec("bob", "bobs"));
    const auto before = snapshot(s);
    REFUSED(uapi(s, "Tokens", "rename", {{"new_name", "x"}}), "Provide the " + curly("name") + " parameter.");
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "deploy"}}), "Provide the " + curly("new_name") + " parameter.");
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "deploy"}, {"new_name", "deploy"}}),
            curly("new_name") + " must be a different value from " + curly("name") + ".");
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "deploy"}, {"new_name", "no good"}}),
            curly("no good") + " is not a valid API token name.");
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "nope"}, {"new_name", "x"}}),
            "The API token " + curly("nope") + " does not exist.");
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "bad name"}, {"new_name", "x"}}), "does not exist.");
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "deploy"}, {"new_name", "taken"}}),
            "An API token with the name " + curly("taken") + " already exists.");
    // Not bob's, and not a WHM token through UAPI.
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "bobs"}, {"new_name", "mine"}}), "does not exist.");
    REFUSED(uapi(s, "Tokens", "rename", {{"name", "whm_one"}, {"new_name", "mine"}}), "does not exist.");
    assert_unchanged(s, before);
    const Answer a = uapi(s, "Tokens", "rename", {{"name", "deploy"}, {"new_name", "deploy-2"}});
    assert_true(OK(a).is_null());
    assert_string_equal(a.response.audit.c_str(), "renamed token deploy to deploy-2");
    assert_true(s.find(d.digest)->name == "deploy-2");
    assert_false(s.find_by_name("alice", "deploy").has_value());
}

void test_revoke(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued d = add(s, rec("alice", "deploy"));
    const Issued b = add(s, rec("bob", "deploy"));
    const Issued w = add(s, whm_rec("alice", "whm_one"));
    REFUSED(uapi(s, "Tokens", "revoke"), "Provide the " + curly("name") + " parameter.");
    REFUSED(uapi(s, "Tokens", "revoke", {{"name", ""}}), "Provide the " + curly("name") + " parameter.");
    // Unknown, invalid, a WHM token, or already gone: status 1, data 0.
    for (const char *name : {"nope", "not valid", "whm_one"}) {
        const Answer a = uapi(s, "Tokens", "revoke", {{"name", name}});
        assert_int_equal(OK(a).get<int>(), 0);
        assert_true(a.response.audit.empty());
    }
    assert_true(s.find(w.digest).has_value());
    const Answer a = uapi(s, "Tokens", "revoke", {{"name", "deploy"}});
    assert_int_equal(OK(a).get<int>(), 1);
    assert_string_equal(a.response.audit.c_str(), "revoked token deploy");
    assert_false(s.find(d.digest).has_value());
    assert_true(s.find(b.digest).has_value());  // bob's token of the same name stays
    assert_int_equal(OK(uapi(s, "Tokens", "revoke", {{"name", "deploy"}})).get<int>(), 0);
}

// ------------------------------------------------------------ UAPI CPTokens

void test_get(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued d = add(s, rec("alice", "deploy", t0 + 10));
    add(s, rec("bob", "bobs"));
    FakeUsage usage;
    usage.uses[d.digest] = Usage{t0 - 5, "192.0.2.9", 3};
    const json &data = OK(uapi(s, "CPTokens", "get", {{"name", "deploy"}}, {.usage = usage.source()}));
    assert_string_equal(data["name"].get<std::string>().c_str(), "deploy");
    assert_int_equal(data["expires_at"].get<Seconds>(), t0 + 10);
    assert_int_equal(data["uses"].get<int>(), 3);
    assert_string_equal(data["last_used_ip"].get<std::string>().c_str(), "192.0.2.9");
    REFUSED(uapi(s, "CPTokens", "get"), "Provide the " + curly("name") + " parameter.");
    REFUSED(uapi(s, "CPTokens", "get", {{"name", "bobs"}}), "The API token " + curly("bobs") + " does not exist.");
    REFUSED(uapi(s, "CPTokens", "get", {{"name", "a/b"}}), "does not exist.");
}

void test_set_expiration(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued d = add(s, rec("alice", "deploy"));
    add(s, rec("bob", "bobs"));
    const auto before = snapshot(s);
    REFUSED(uapi(s, "CPTokens", "set_expiration", {{"name", "deploy"}}), "Provide the " + curly("expires_at"));
    REFUSED(uapi(s, "CPTokens", "set_expiration", {{"expires_at", "0"}}), "Provide the " + curly("name"));
    REFUSED(uapi(s, "CPTokens", "set_expiration", {{"name", "deploy"}, {"expires_at", "100"}}),
            "must be a future date");
    REFUSED(uapi(s, "CPTokens", "set_expiration", {{"name", "deploy"}, {"expires_at", "tomorrow"}}),
            "must be a unix time");
    REFUSED(uapi(s, "CPTokens", "set_expiration", {{"name", "bobs"}, {"expires_at", "0"}}), "does not exist.");
    REFUSED(uapi(s, "CPTokens", "set_expiration", {{"name", "x y"}, {"expires_at", "0"}}), "is not a valid API token");
    assert_unchanged(s, before);
    const Answer a = uapi(s, "CPTokens", "set_expiration", {{"name", "deploy"}, {"expires_at", std::to_string(t0 + 99)}});
    assert_int_equal(OK(a)["expires_at"].get<Seconds>(), t0 + 99);
    assert_int_equal(s.find(d.digest)->expires, t0 + 99);
    assert_true(a.response.audit.find("set the expiry of token deploy to ") == 0);
    const Answer b = uapi(s, "CPTokens", "set_expiration", {{"name", "deploy"}, {"expires_at", "0"}});
    assert_true(OK(b)["expires_at"].is_null());
    assert_true(s.find(d.digest)->never_expires());
}

void test_set_allowed_ips(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued d = add(s, rec("alice", "deploy"));
    const auto before = snapshot(s);
    REFUSED(uapi(s, "CPTokens", "set_allowed_ips", {{"name", "deploy"}}), "Provide the " + curly("allowed_ip"));
    REFUSED(uapi(s, "CPTokens", "set_allowed_ips", {{"name", "deploy"}, {"any", "1"}, {"allowed_ip", "192.0.2.1"}}),
            "not both");
    REFUSED(uapi(s, "CPTokens", "set_allowed_ips", {{"name", "deploy"}, {"any", "2"}}), "must be 0 or 1");
    REFUSED(uapi(s, "CPTokens", "set_allowed_ips", {{"name", "deploy"}, {"allowed_ip", "192.0.2.300"}}),
            "Invalid IP address or CIDR range specified: 192.0.2.300");
    REFUSED(uapi(s, "CPTokens", "set_allowed_ips", {{"name", "deploy"}, {"allowed_ip", "10.0.0.5/24"}}),
            "did you mean 10.0.0.0/24?");
    Params many{{"name", "deploy"}};
    for (int i = 0; i < 101; ++i) many.emplace("allowed_ip-" + std::to_string(i), "10.0.0." + std::to_string(i % 250));
    REFUSED(uapi(s, "CPTokens", "set_allowed_ips", many),
            "You have entered " + curly("101") + " IP addresses, which is above the limit of 100.");
    REFUSED(uapi(s, "CPTokens", "set_allowed_ips", {{"name", "nope"}, {"any", "1"}}), "does not exist.");
    assert_unchanged(s, before);
    const Answer a = uapi(s, "CPTokens", "set_allowed_ips",
                          {{"name", "deploy"}, {"allowed_ip", "192.0.2.0/24"}, {"allowed_ip-1", "2001:db8::1"},
                           {"allowed_ip-0", "192.0.2.0/24"}});
    assert_true(OK(a)["allowed_ips"] == (json{"192.0.2.0/24", "2001:db8::1"}));
    assert_int_equal(s.find(d.digest)->allowed_ips.size(), 2);
    assert_string_equal(a.response.audit.c_str(), "set the allowed addresses of token deploy to 192.0.2.0/24, 2001:db8::1");
    const Answer b = uapi(s, "CPTokens", "set_allowed_ips", {{"name", "deploy"}, {"any", "1"}});
    assert_true(OK(b)["allowed_ips"] == json::array());
    assert_true(s.find(d.digest)->allowed_ips.empty());
}

void test_rotate(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued d = add(s, rec("alice", "deploy"));
    add(s, rec("alice", "old", t0 - 1));
    const auto before = snapshot(s);
    REFUSED(uapi(s, "CPTokens", "rotate"), "Provide the " + curly("name"));
    REFUSED(uapi(s, "CPTokens", "rotate", {{"name", "nope"}}), "does not exist.");
    REFUSED(uapi(s, "CPTokens", "rotate", {{"name", "old"}}), "has expired: it cannot be rotated.");
    for (const char *bad : {"-1", "x", "2592001", "1.5"})
        REFUSED(uapi(s, "CPTokens", "rotate", {{"name", "deploy"}, {"grace", bad}}),
                "The " + curly("grace") + " parameter must be a number of seconds from 0 to 2592000.");
    assert_unchanged(s, before);
    // Grace 0 (the default): the old token stops at once.
    const Answer a = uapi(s, "CPTokens", "rotate", {{"name", "deploy"}});
    const json &data = OK(a);
    const std::string fresh = data["token"];
    assert_true(data["grace_ends"].is_null());
    assert_int_equal(data["create_time"].get<Seconds>(), t0);
    assert_false(s.find(d.digest).has_value());
    assert_true(verify_token(s, "alice", fresh, std::nullopt, t0, all_services).accepted());
    assert_true(a.response.audit.find(fresh) == std::string::npos);
    // With grace: both work until it ends.
    const json &graced = OK(uapi(s, "CPTokens", "rotate", {{"name", "deploy"}, {"grace", "300"}}));
    assert_int_equal(graced["grace_ends"].get<Seconds>(), t0 + 300);
    assert_true(verify_token(s, "alice", fresh, std::nullopt, t0 + 299, all_services).accepted());
    assert_false(verify_token(s, "alice", fresh, std::nullopt, t0 + 300, all_services).accepted());
    assert_true(verify_token(s, "alice", graced["token"].get<std::string>(), std::nullopt, t0, all_services).accepted());
    // At most 8 replaced tokens in their grace.
    for (std::size_t i = 1; i < max_predecessors; ++i)
        OK(uapi(s, "CPTokens", "rotate", {{"name", "deploy"}, {"grace", "300"}}));
    REFUSED(uapi(s, "CPTokens", "rotate", {{"name", "deploy"}, {"grace", "300"}}),
            "replaced tokens still in their grace period");
}

void test_revoke_many(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued a1 = add(s, rec("alice", "a1"));
    const Issued a2 = add(s, rec("alice", "a2"));
    const Issued a3 = add(s, rec("alice", "a3"));
    const Issued w = add(s, whm_rec("alice", "w"));
    const Issued b = add(s, rec("bob", "a3"));
    REFUSED(uapi(s, "CPTokens", "revoke"), "Provide the " + curly("name"));
    const Answer a = uapi(s, "CPTokens", "revoke",
                          {{"name", "a1"}, {"name", "nope"}, {"name-0", "bad name"}, {"name-1", "a2"},
                           {"name-2", "a1"}, {"name-3", "w"}});
    const json &data = OK(a);
    assert_true(data["revoked"] == (json{"a1", "a2"}));
    assert_true(data["not_found"] == (json{"nope", "bad name", "w"}));
    assert_string_equal(a.response.audit.c_str(), "revoked tokens a1 a2");
    assert_false(s.find(a1.digest).has_value() || s.find(a2.digest).has_value());
    assert_true(s.find(a3.digest) && s.find(w.digest) && s.find(b.digest));
    const Answer none = uapi(s, "CPTokens", "revoke", {{"name", "nope"}});
    assert_true(OK(none)["revoked"] == json::array());
    assert_true(none.response.audit.empty());
}

void test_revoke_all(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    add(s, rec("alice", "a1"));
    add(s, rec("alice", "a2"));
    const Issued w = add(s, whm_rec("alice", "w"));
    const Issued b = add(s, rec("bob", "b1"));
    OK(uapi(s, "CPTokens", "rotate", {{"name", "a1"}, {"grace", "60"}}));
    const Answer a = uapi(s, "CPTokens", "revoke_all");
    assert_int_equal(OK(a)["revoked"].get<int>(), 3);  // a1, the one it replaced, a2
    assert_string_equal(a.response.audit.c_str(), "revoked all 3 cpanel tokens");
    assert_true(OK(uapi(s, "Tokens", "list")) == json::array());
    assert_true(s.find(w.digest) && s.find(b.digest));
    const Answer again = uapi(s, "CPTokens", "revoke_all");
    assert_int_equal(OK(again)["revoked"].get<int>(), 0);
    assert_true(again.response.audit.empty());
}

void test_revoke_unused(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    constexpr Seconds day = 86400;
    const Seconds now = 1767225600 + 100 * day;
    // rec() tokens were created 100 days before `now`.
    const Issued used = add(s, rec("alice", "used"));
    const Issued stale = add(s, rec("alice", "stale"));
    add(s, rec("alice", "never"));
    TokenRecord young = rec("alice", "young");
    young.created = now - day;
    add(s, young);
    const Issued me = add(s, rec("alice", "me"));
    const Issued w = add(s, whm_rec("alice", "w"));
    add(s, rec("bob", "bobs"));
    // A token replaced recently whose old value is still in use: the family stays.
    const Issued fam_old = add(s, rec("alice", "family"));
    FakeUsage usage;
    usage.uses[used.digest] = Usage{now - 2 * day, "192.0.2.1", 5};
    usage.uses[stale.digest] = Usage{now - 40 * day, "192.0.2.1", 5};
    usage.uses[fam_old.digest] = Usage{now - 1 * day, "192.0.2.1", 5};
    const CallOptions opts{.usage = usage.source(), .now = now};
    CallOptions rotate_opts = opts;
    rotate_opts.now = now - 2 * day;
    OK(uapi(s, "CPTokens", "rotate", {{"name", "family"}, {"grace", std::to_string(30 * day)}}, rotate_opts));
    const auto before = snapshot(s);
    REFUSED(uapi(s, "CPTokens", "revoke_unused", {}, opts), "Provide the " + curly("days"));
    for (const char *bad : {"0", "-3", "x", "36501", "1.5"})
        REFUSED(uapi(s, "CPTokens", "revoke_unused", {{"days", bad}}, opts), "must be a whole number of days");
    REFUSED(uapi(s, "CPTokens", "revoke_unused", {{"days", "30"}}, {.now = now}),
            "Last used is unavailable here");
    assert_unchanged(s, before);
    // The token making the call counts as used, whatever the usage store says.
    CallOptions as_me = opts;
    as_me.caller = caller_of(s, "alice", "me");
    const Answer a = uapi(s, "CPTokens", "revoke_unused", {{"days", "30"}}, as_me);
    const json &data = OK(a);
    assert_true(data["revoked"] == (json{"never", "stale"}));
    assert_true(a.response.audit == "revoked tokens unused for 30 days: never stale");
    assert_false(s.find(stale.digest).has_value());
    assert_true(s.find(used.digest) && s.find(me.digest) && s.find(w.digest) && s.find_by_name("alice", "young") &&
                s.find_by_name("alice", "family") && s.find(fam_old.digest) && s.find_by_name("bob", "bobs"));
    // Without the caller's protection, and a day later than the family's last use by 30 days.
    CallOptions later = opts;
    later.now = now + 30 * day;
    const json &more = OK(uapi(s, "CPTokens", "revoke_unused", {{"days", "30"}}, later));
    assert_true(more["revoked"] == (json{"family", "me", "used", "young"}));
    assert_true(s.find(w.digest).has_value());
}

void test_session(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Answer a = uapi(s, "CPTokens", "session");
    assert_true(OK(a) == (json{{"user", "alice"}, {"csrf_token", "page-token"}, {"service", "cpanel"}}));
    assert_true(a.response.audit.empty());
}

// ------------------------------------------------------------ who may do what

void test_limited_tokens_read_but_cannot_write(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    TokenRecord safe = rec("alice", "safe");
    safe.read_only = true;
    TokenRecord scoped = rec("alice", "scoped");
    scoped.scopes = {"/execute/"};
    TokenRecord featured = rec("alice", "featured");
    featured.limits = {"email"};
    TokenRecord acl = whm_rec("alice", "acl");
    acl.limits = {"list-accts"};
    add(s, safe), add(s, scoped), add(s, featured), add(s, acl);
    add(s, rec("alice", "target"));
    add(s, whm_rec("alice", "wtarget"));
    const auto before = snapshot(s);
    const std::vector<std::pair<std::string, std::string>> uapi_writes{
        {"Tokens", "create_full_access"}, {"Tokens", "rename"},          {"Tokens", "revoke"},
        {"CPTokens", "set_expiration"},   {"CPTokens", "set_allowed_ips"}, {"CPTokens", "rotate"},
        {"CPTokens", "revoke"},           {"CPTokens", "revoke_all"},    {"CPTokens", "revoke_unused"}};
    const Params args{{"name", "target"}, {"new_name", "t2"}, {"expires_at", "0"}, {"any", "1"}, {"days", "1"}};
    for (const auto &[name, why] : std::vector<std::pair<std::string, std::string>>{
             {"safe", "safe methods only"}, {"scoped", "scopes"}, {"featured", "cPanel features"}}) {
        const CallOptions as{.caller = caller_of(s, "alice", name)};
        for (const auto &[module, function] : uapi_writes)
            REFUSED(uapi(s, module, function, args, as),
                    "This API token cannot manage tokens: it is limited (" + why + ").");
        OK(uapi(s, "Tokens", "list", {}, as));
        OK(uapi(s, "CPTokens", "get", {{"name", "target"}}, as));
        OK(uapi(s, "CPTokens", "session", {}, as));
    }
    const CallOptions as_acl{.caller = caller_of(s, "alice", "acl")};
    for (const char *function : {"api_token_create", "api_token_update", "api_token_revoke"})
        WHM_RESULT(whm(s, function, {{"token_name", "wtarget"}, {"new_name", "w2"}}, as_acl), function, 0,
                   "This API token cannot manage tokens: it is limited (WHM privileges).");
    WHM_RESULT(whm(s, "api_token_list", {}, as_acl), "api_token_list", 1, "OK");
    assert_unchanged(s, before);
}

void test_tokens_manage_their_own_service_only(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    add(s, rec("alice", "cp"));
    add(s, whm_rec("alice", "wh"));
    const auto before = snapshot(s);
    const CallOptions as_cpanel{.caller = caller_of(s, "alice", "cp")};
    const CallOptions as_whm{.caller = caller_of(s, "alice", "wh")};
    WHM_RESULT(whm(s, "api_token_list", {}, as_cpanel), "api_token_list", 0,
               "This API token cannot manage WHM tokens: it is a cPanel token.");
    WHM_RESULT(whm(s, "api_token_revoke", {{"token_name", "wh"}}, as_cpanel), "api_token_revoke", 0,
               "cannot manage WHM tokens");
    REFUSED(uapi(s, "Tokens", "list", {}, as_whm), "This API token cannot manage cPanel tokens: it is a WHM token.");
    REFUSED(uapi(s, "Tokens", "revoke", {{"name", "cp"}}, as_whm), "cannot manage cPanel tokens");
    assert_unchanged(s, before);
    // A full-access token of the right service writes; so do ambient credentials (no caller).
    OK(uapi(s, "Tokens", "create_full_access", {{"name", "by_token"}}, as_cpanel));
    OK(uapi(s, "Tokens", "create_full_access", {{"name", "by_page"}}));
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "by_whm"}}, as_whm), "api_token_create", 1, "OK");
    // A WHM token with the ACL "all" has full access.
    TokenRecord all = whm_rec("alice", "all");
    all.limits = {"all"};
    add(s, all);
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "by_all"}}, {.caller = caller_of(s, "alice", "all")}),
               "api_token_create", 1, "OK");
}

void test_unknown_functions_and_foreign_users(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    add(s, rec("bob", "bobs"));
    const auto before = snapshot(s);
    REFUSED(uapi(s, "Email", "list"), "Failed to load module " + curly("Email") + ".");
    REFUSED(uapi(s, "Tokens", "get"), "Could not find function " + curly("get") + " in module " + curly("Tokens") + ".");
    REFUSED(uapi(s, "CPTokens", "list_all"), "Could not find function " + curly("list_all"));
    // Odd URL segments are not repeated back.
    const Answer odd = uapi(s, "Tok<ens>", "x");
    REFUSED(odd, "Failed to load module.");
    WHM_RESULT(whm(s, "api_token_get_details", {{"token", "X"}}), "api_token_get_details", 0,
               "Unknown app requested for this version (1) of the API: api_token_get_details.");
    // WHM API 1 only.
    for (const Params &version : {Params{}, Params{{"api.version", "0"}}, Params{{"api.version", "1"}, {"api.version", "1"}}}) {
        Params p = version;
        p.emplace("token_name", "x");
        const Answer a = call(s, Api::whm, "", "api_token_create", p);
        assert_int_equal(a.body["metadata"]["result"].get<int>(), 0);
    }
    // Nobody acts for another user.
    REFUSED(uapi(s, "CPTokens", "revoke_all", {{"user", "bob"}}),
            "This API acts for the authenticated user only: the " + curly("user") + " parameter is not accepted.");
    REFUSED(uapi(s, "Tokens", "list", {{"cpanel_jsonapi_user", "bob"}}), "acts for the authenticated user only");
    for (const char *user : {"", "Alice", "bob@example.com", "x y"})
        REFUSED(uapi(s, "Tokens", "create_full_access", {{"name", "t"}}, {.user = user}),
                "This account cannot have API tokens");
    assert_unchanged(s, before);
    // cPanel's meta parameters are ignored.
    OK(uapi(s, "Tokens", "list", {{"api.sort_column", "name"}, {"api.analytics", "0"}}));
}

// ------------------------------------------------------------ WHM API 1

void test_whm_create_and_list(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    add(s, rec("alice", "cpanel_one"));
    const Answer a = whm(s, "api_token_create",
                         {{"token_name", "ci"}, {"expires_at", std::to_string(t0 + 500)}, {"whitelist_ip", "192.0.2.5"},
                          {"whitelist_ip-1", "198.51.100.0/24"}, {"acl-0", "list-accts"}, {"acl-1", "create-acct"}});
    WHM_RESULT(a, "api_token_create", 1, "OK");
    const json &data = a.body["data"];
    assert_true(data["acls"] == (json{"list-accts", "create-acct"}));
    assert_int_equal(data["create_time"].get<Seconds>(), t0);
    assert_int_equal(data["expires_at"].get<Seconds>(), t0 + 500);
    assert_string_equal(data["name"].get<std::string>().c_str(), "ci");
    assert_true(data["whitelist_ips"] == (json{"192.0.2.5", "198.51.100.0/24"}));
    const std::string token = data["token"];
    const Verdict v = verify_token(s, "alice", token, addr("192.0.2.5"), t0, service_bit(Service::whm));
    assert_true(v.accepted());
    assert_true(v.record->limits == (std::vector<std::string>{"list-accts", "create-acct"}));
    assert_false(verify_token(s, "alice", token, addr("192.0.2.6"), t0, service_bit(Service::whm)).accepted());
    assert_false(verify_token(s, "alice", token, addr("192.0.2.5"), t0, service_bit(Service::cpanel)).accepted());
    // The exact envelope.
    assert_true(a.response.body.find(R"(,"metadata":{"command":"api_token_create","reason":"OK","result":1,"version":1}})") !=
                std::string::npos);
    assert_true(a.response.body.rfind(R"({"data":{"acls":)", 0) == 0);
    // Full access by default, and with "all".
    const Answer full = whm(s, "api_token_create", {{"token_name", "full"}});
    assert_true(full.body["data"]["acls"] == (json{"all"}));
    assert_true(full.body["data"]["expires_at"].is_null() && full.body["data"]["whitelist_ips"].is_null());
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "all2"}, {"acl", "all"}, {"acl-1", "x"}}),
               "api_token_create", 1, "OK");
    assert_true(s.find_by_name("alice", "all2")->record.limits.empty());
    // The list: an object keyed by name, acls as an object, only WHM tokens.
    const Answer l = whm(s, "api_token_list");
    WHM_RESULT(l, "api_token_list", 1, "OK");
    const json &tokens = l.body["data"]["tokens"];
    assert_int_equal(tokens.size(), 3);
    assert_false(tokens.contains("cpanel_one"));
    assert_true(tokens["ci"]["acls"] == (json{{"list-accts", 1}, {"create-acct", 1}}));
    assert_true(tokens["full"]["acls"] == (json{{"all", 1}}));
    assert_string_equal(tokens["ci"]["name"].get<std::string>().c_str(), "ci");
    assert_true(tokens["ci"]["whitelist_ips"] == (json{"192.0.2.5", "198.51.100.0/24"}));
    assert_true(tokens["ci"]["uses"].is_null());
    assert_string_equal(l.body["metadata"]["cptoken_usage"].get<std::string>().c_str(), "unavailable");
    assert_true(l.response.body.rfind(R"({"data":{"tokens":{)", 0) == 0);
}

void test_whm_create_refusals(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    add(s, whm_rec("alice", "taken"));
    const auto before = snapshot(s);
    WHM_RESULT(whm(s, "api_token_create"), "api_token_create", 0, "Provide the " + curly("token_name") + " parameter.");
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "no way"}}), "api_token_create", 0,
               "is not a valid API token name");
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "taken"}}), "api_token_create", 0,
               "A conflicting API token with the name " + curly("taken") + " already exists.");
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "x"}, {"expires_at", "5"}}), "api_token_create", 0,
               "must be a future date");
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "x"}, {"whitelist_ip", "nope"}}), "api_token_create", 0,
               "Invalid IP address or CIDR range specified: nope");
    WHM_RESULT(whm(s, "api_token_create", {{"token_name", "x"}, {"acl", "bad acl!"}}), "api_token_create", 0,
               "Invalid ACL name");
    assert_unchanged(s, before);
}

void test_whm_update(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued ci = add(s, whm_rec("alice", "ci"));
    add(s, whm_rec("alice", "taken"));
    add(s, rec("alice", "cp"));
    const auto before = snapshot(s);
    WHM_RESULT(whm(s, "api_token_update"), "api_token_update", 0, "Provide the " + curly("token_name"));
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci"}}), "api_token_update", 0,
               "Specify a new name, updated ACLs, or IPs.");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci"}, {"new_name", "ci"}}), "api_token_update", 0,
               "Specify a new name");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "nope"}, {"new_name", "x"}}), "api_token_update", 0,
               "The API token " + curly("nope") + " does not exist.");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "cp"}, {"new_name", "x"}}), "api_token_update", 0,
               "does not exist.");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci"}, {"new_name", "taken"}}), "api_token_update", 0,
               "An API token with the name " + curly("taken") + " already exists.");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci"}, {"new_name", "bad name"}}), "api_token_update", 0,
               "is not a valid API token name");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci"}, {"whitelist_ip", "300.1.1.1"}}), "api_token_update",
               0, "Invalid IP address");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci"}, {"acl", "list-accts"}}), "api_token_update", 0,
               "The ACLs of a token cannot be changed here");
    // A rename with a bad expiry changes nothing, the name included.
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci"}, {"new_name", "ci2"}, {"expires_at", "7"}}),
               "api_token_update", 0, "must be a future date");
    assert_unchanged(s, before);
    const Answer a = whm(s, "api_token_update",
                         {{"token_name", "ci"}, {"new_name", "ci2"}, {"expires_at", std::to_string(t0 + 5)},
                          {"whitelist_ip-0", "192.0.2.1"}});
    WHM_RESULT(a, "api_token_update", 1, "OK");
    const json want = {{"acls", {"all"}}, {"create_time", 1767225600}, {"expires_at", t0 + 5}, {"name", "ci2"},
                       {"whitelist_ips", {"192.0.2.1"}}};
    if (a.body["data"] != want) fail_msg("update data: %s", a.body["data"].dump().c_str());
    const TokenRecord after = *s.find(ci.digest);
    assert_true(after.name == "ci2" && after.expires == t0 + 5 && after.allowed_ips.size() == 1);
    const Answer cleared = whm(s, "api_token_update", {{"token_name", "ci2"}, {"whitelist_ip", "any"}, {"expires_at", "0"}});
    WHM_RESULT(cleared, "api_token_update", 1, "OK");
    assert_true(cleared.body["data"]["whitelist_ips"].is_null() && cleared.body["data"]["expires_at"].is_null());
    assert_true(s.find(ci.digest)->allowed_ips.empty());
    // any=1 clears as well; not with addresses.
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci2"}, {"whitelist_ip", "192.0.2.1"}}), "api_token_update",
               1, "OK");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci2"}, {"any", "1"}, {"whitelist_ip", "192.0.2.2"}}),
               "api_token_update", 0, "not both");
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci2"}, {"any", "x"}}), "api_token_update", 0,
               "must be 0 or 1");
    assert_int_equal(s.find(ci.digest)->allowed_ips.size(), 1);
    WHM_RESULT(whm(s, "api_token_update", {{"token_name", "ci2"}, {"any", "1"}}), "api_token_update", 1, "OK");
    assert_true(s.find(ci.digest)->allowed_ips.empty());
}

void test_whm_revoke(void **state) {
    TokenStore s(fx(state).store, Access::read_write);
    const Issued a1 = add(s, whm_rec("alice", "a1"));
    const Issued a2 = add(s, whm_rec("alice", "a2"));
    const Issued cp = add(s, rec("alice", "cp"));
    const Issued b = add(s, whm_rec("bob", "a1"));
    WHM_RESULT(whm(s, "api_token_revoke"), "api_token_revoke", 0, "Provide the " + curly("token_name"));
    const Answer a = whm(s, "api_token_revoke", {{"token_name", "a1"}, {"token_name-1", "a2"}, {"token_name-2", "cp"},
                                                  {"token_name-3", "nope"}});
    WHM_RESULT(a, "api_token_revoke", 1, "OK");
    assert_false(a.body.contains("data"));
    assert_string_equal(a.response.audit.c_str(), "revoked tokens a1 a2");
    assert_false(s.find(a1.digest).has_value() || s.find(a2.digest).has_value());
    assert_true(s.find(cp.digest) && s.find(b.digest));
    assert_string_equal(a.response.body.c_str(),
                        R"({"metadata":{"command":"api_token_revoke","reason":"OK","result":1,"version":1}})");
}

void test_usage_source_registry(void **) {
    assert_false(static_cast<bool>(usage_source()));
    int calls = 0;
    set_usage_source([&](const std::vector<Digest> &) {
        ++calls;
        return std::map<Digest, Usage>{};
    });
    const UsageSource got = usage_source();
    assert_true(static_cast<bool>(got));
    got({});
    assert_int_equal(calls, 1);
    set_usage_source({});
    assert_false(static_cast<bool>(usage_source()));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_params),
        cmocka_unit_test(test_json_params),
        cmocka_unit_test(test_repeated_param),
        cmocka_unit_test(test_csrf_tokens),
        cmocka_unit_test(test_origin_matches_host),
        cmocka_unit_test(test_function_kinds),
        cmocka_unit_test(test_usage_source_registry),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_refusal_envelopes),
        cmocka_unit_test_setup_teardown(test_create_full_access, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_create_full_access_refusals, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_per_user_limit, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_list_shows_rotated_tokens, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rename, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_get, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_set_expiration, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_set_allowed_ips, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rotate, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_many, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_all, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_unused, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_session, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_limited_tokens_read_but_cannot_write, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_manage_their_own_service_only, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_functions_and_foreign_users, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_whm_create_and_list, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_whm_create_refusals, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_whm_update, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_whm_revoke, setup_init, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

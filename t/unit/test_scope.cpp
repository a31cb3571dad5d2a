// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/scope.hpp: which paths and methods a scoped or
// safe-methods token reaches. The paths are what httpd hands the module after
// its own decoding and dot-segment removal, plus what it may leave behind
// (AllowEncodedSlashes NoDecode, MergeSlashes Off, double encoding).

#include <array>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "token/record.hpp"
#include "token/scope.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"

using namespace cptoken;

namespace {

void expect_covers(const char *scope, const char *path, bool expected) {
    if (scope_covers(scope, path) != expected)
        fail_msg("scope '%s' %s path '%s'", scope, expected ? "should cover" : "should not cover", path);
}

void test_whole_segments(void **) {
    expect_covers("/execute/Email/", "/execute/Email/list_pops", true);
    expect_covers("/execute/Email/", "/execute/Email/", true);
    expect_covers("/execute/Email/", "/execute/Email", true);
    expect_covers("/execute/Email/", "/execute/Email/a/b/c", true);
    expect_covers("/execute/Email/", "/execute/EmailX", false);
    expect_covers("/execute/Email/", "/execute/EmailX/list", false);
    expect_covers("/execute/Email/", "/execute/", false);
    expect_covers("/execute/Email/", "/execute", false);
    expect_covers("/a", "/a", true);
    expect_covers("/a", "/a/", true);
    expect_covers("/a", "/a/b", true);
    expect_covers("/a", "/ab", false);
    expect_covers("/a", "/", false);
    expect_covers("/a", "/b/a", false);
    expect_covers("/a/b", "/a", false);
    expect_covers("/", "/", true);
    expect_covers("/", "/anything/at/all", true);
    // Case-sensitive, as URL paths are.
    expect_covers("/execute/Email/", "/execute/email/list_pops", false);
    expect_covers("/execute/Email/", "/EXECUTE/Email/list_pops", false);
}

// Whatever httpd left in the path, nothing gets a token out of its scope.
void test_path_tricks(void **) {
    const char *scope = "/execute/Email/";
    for (const char *path : {
             "/execute/Email/../Ftp/list",        // dot segments left in (not normalised)
             "/execute/Email/./list",
             "/execute/Email/..",
             "/execute/Email/.",
             "/execute/Email/%2e%2e/Ftp",          // encoded dots, double-encoded once decoded
             "/execute/Email/%2E%2E/Ftp",
             "/execute/Email/.%2e/Ftp",
             "/execute/Email/..%2f..%2fFtp",       // AllowEncodedSlashes NoDecode
             "/execute/Email/..%2F..%2FFtp",
             "/execute/Email/x%2fy",
             "/execute/Email/..%5c..%5cFtp",       // encoded backslash
             "/execute/Email/..\\..\\Ftp",         // backslash
             "/execute/Email//../../Ftp",          // MergeSlashes Off: empty segments
             "/execute/Email//list",
             "//execute/Email/list",
             "/execute//Email/list",
             "execute/Email/list",                 // not absolute
             "",
         }) {
        assert_false(is_comparable_path(path));
        expect_covers(scope, path, false);
        expect_covers("/", path, false);
    }
    // A NUL inside the path.
    const std::string with_nul("/execute/Email/a\0b", 18);
    assert_false(is_comparable_path(with_nul));
    assert_false(scope_covers(scope, with_nul));
    // Other encodings of printable ASCII are just characters of a segment.
    assert_true(is_comparable_path("/execute/Email/100%25"));
    expect_covers(scope, "/execute/Email/a%41b", true);
    expect_covers(scope, "/execute/Email/a%7eb", true);
    expect_covers(scope, "/execute/Email/...", true);   // not a dot segment
    expect_covers(scope, "/execute/Email/..a", true);
    expect_covers(scope, "/execute/Email/%2", true);    // cut short: not an encoding
    expect_covers(scope, "/execute/Email/%zz", true);   // not hex: not an encoding
    expect_covers(scope, "/execute/Email/a-b_c.d~e!$&'()*+,=:@", true);
}

// ';' (a path parameter: Tomcat and Jetty read "/a/..;/b" as "/b") and any
// byte outside printable ASCII, raw or encoded (an overlong UTF-8 "%c0%ae"
// is a '.' to some decoders), put a path outside every scope.
void test_semicolons_and_non_ascii(void **) {
    const char *scope = "/execute/Email/";
    for (const std::string path : {
             "/execute/Email/..;/Fileman/x", "/execute/Email/;/x", "/execute/Email/x;jsessionid=1",
             "/execute/Email;/x", "/execute/Email/..%3b/Fileman/x", "/execute/Email/..%3B/Fileman/x",
             "/execute/Email/%c0%ae%c0%ae/Fileman/x", "/execute/Email/%C0%AE", "/execute/Email/\xc0\xae",
             "/execute/Email/a b", "/execute/Email/a%20b", "/execute/Email/a\tb", "/execute/Email/a%09b",
             "/execute/Email/a\x7f", "/execute/Email/a%7F", "/execute/Email/a%7f", "/execute/Email/\x80",
             "/execute/Email/%80", "/execute/Email/%ff", "/execute/Email/%FF", "/execute/Email/\xff",
             "/execute/Email/%00", "/execute/Email/%0a", "/execute/Email/\n", "/execute/Email/\r",
             "/execute/Email/%e2%80%a8", "/execute/Email/\xc3\xa9",
         }) {
        if (is_comparable_path(path)) fail_msg("path '%s' taken as comparable", path.c_str());
        expect_covers(scope, path.c_str(), false);
        expect_covers("/", path.c_str(), false);
    }
    // Every byte, raw and encoded.
    for (int byte = 0; byte < 256; ++byte) {
        const bool plain = byte >= 0x21 && byte <= 0x7e && byte != '\\' && byte != ';' && byte != '/';
        const std::string raw = std::string("/a/x") + static_cast<char>(byte) + "y";
        char encoded[16];
        std::snprintf(encoded, sizeof encoded, "/a/x%%%02Xy", byte);
        if (byte != '/' && scope_covers("/a", raw) != plain) fail_msg("raw byte 0x%02x", byte);
        const bool plain_encoded = plain && byte != '.';
        if (scope_covers("/a", encoded) != plain_encoded) fail_msg("encoded byte %%%02X", byte);
    }
}

void test_valid_scopes(void **) {
    for (const char *ok : {"/", "/a", "/a/", "/execute/Email/", "/json-api/cpanel", "/a/b.c/d-e_f~g", "/..a/", "/a..."})
        if (!is_valid_scope(ok)) fail_msg("scope '%s' refused", ok);
    for (const char *bad : {"", "a", "a/", "//", "/a//b", "/a//", "/./", "/a/./b", "/a/..", "/../a", "/a?b", "/a#b",
                            "/a%2fb", "/a%20b", "/a\\b", "/a b", "/a\tb", "/\x7f", "/\xc3\xa9"})
        if (is_valid_scope(bad)) fail_msg("scope '%s' accepted", bad);
    assert_true(is_valid_scope("/" + std::string(max_scope_length - 1, 'a')));
    assert_false(is_valid_scope("/" + std::string(max_scope_length, 'a')));
}

void test_safe_methods(void **) {
    for (const char *ok : {"GET", "HEAD", "OPTIONS"}) assert_true(is_safe_method(ok));
    for (const char *bad : {"POST", "PUT", "PATCH", "DELETE", "PROPFIND", "MKCOL", "TRACE", "CONNECT", "get", "Get",
                            "GET ", "", "GETX"})
        if (is_safe_method(bad)) fail_msg("method '%s' taken as safe", bad);
}

void test_carries_body(void **) {
    using std::nullopt;
    assert_false(carries_body(nullopt, nullopt));
    assert_false(carries_body("0", nullopt));
    assert_false(carries_body("000", nullopt));
    for (const char *length : {"1", "01", "10", "100", "", " 0", "0 ", "+0", "-0", "0x0", "abc", "18446744073709551616"})
        if (!carries_body(length, nullopt)) fail_msg("Content-Length '%s' taken as no body", length);
    for (const char *encoding : {"chunked", "identity", "", "gzip, chunked"}) {
        assert_true(carries_body(nullopt, encoding));
        assert_true(carries_body("0", encoding));
    }
}

void test_check_scope(void **) {
    TokenRecord record;
    // No restriction: every path, every method.
    assert_true(check_scope(record, "DELETE", "/anything") == ScopeVerdict::allowed);
    record.scopes = {"/execute/Email/", "/json-api/cpanel"};
    assert_true(check_scope(record, "POST", "/execute/Email/add_pop") == ScopeVerdict::allowed);
    assert_true(check_scope(record, "GET", "/json-api/cpanel") == ScopeVerdict::allowed);
    assert_true(check_scope(record, "GET", "/json-api/cpanel2") == ScopeVerdict::outside_scope);
    assert_true(check_scope(record, "GET", "/execute/Ftp/list_ftp") == ScopeVerdict::outside_scope);
    assert_true(check_scope(record, "GET", "/execute/Email/../Ftp/list_ftp") == ScopeVerdict::outside_scope);
    record.read_only = true;
    assert_true(check_scope(record, "GET", "/execute/Email/list_pops") == ScopeVerdict::allowed);
    assert_true(check_scope(record, "HEAD", "/execute/Email/list_pops") == ScopeVerdict::allowed);
    assert_true(check_scope(record, "POST", "/execute/Email/add_pop") == ScopeVerdict::not_safe_method);
    assert_true(check_scope(record, "POST", "/execute/Ftp/x") == ScopeVerdict::not_safe_method);
    record.scopes.clear();  // read-only alone: every path
    assert_true(check_scope(record, "GET", "/execute/Ftp/list_ftp") == ScopeVerdict::allowed);
    assert_true(check_scope(record, "PUT", "/execute/Ftp/list_ftp") == ScopeVerdict::not_safe_method);
    assert_string_equal(describe(ScopeVerdict::outside_scope), "path outside the token's scopes");
    assert_string_equal(describe(ScopeVerdict::not_safe_method), "method not allowed for a safe-methods token");
}

void test_check_body(void **) {
    TokenRecord record;
    assert_true(check_body(record, false) == ScopeVerdict::allowed);
    assert_true(check_body(record, true) == ScopeVerdict::allowed);
    record.scopes = {"/execute/Email/"};  // scopes alone do not limit bodies
    assert_true(check_body(record, true) == ScopeVerdict::allowed);
    record.read_only = true;
    assert_true(check_body(record, false) == ScopeVerdict::allowed);
    assert_true(check_body(record, true) == ScopeVerdict::body_not_allowed);
    assert_string_equal(describe(ScopeVerdict::body_not_allowed), "request body not allowed for a safe-methods token");
}

void test_destination_path(void **) {
    const std::pair<const char *, const char *> cases[] = {
        {"http://example.com/a/b", "/a/b"},
        {"https://u:p@[::1]:8443/a/b?x=1#f", "/a/b"},
        {"HTTP://example.com", "/"},
        {"http://example.com?x", "/"},
        {"http://example.com#/a", "/"},
        {"webdav+x.y-z://h/a", "/a"},
        {"/a/b", "/a/b"},
        {"/a/b?c/d", "/a/b"},
        {"/a%20b", "/a%20b"},  // still encoded
        {"/", "/"},
    };
    for (const auto &[destination, want] : cases) {
        const auto got = destination_path(destination);
        if (!got || *got != want) fail_msg("destination '%s': got '%s'", destination, got ? std::string(*got).c_str() : "(none)");
    }
    for (const char *bad : {"", "a/b", "../a", "//host/a", "http:/a", "http:a", "mailto:a@b", "1http://h/a",
                            "ht tp://h/a", ":/a", "://h/a"})
        if (destination_path(bad)) fail_msg("destination '%s' read as a path", bad);
}

void test_percent_decoded(void **) {
    assert_string_equal(percent_decoded("/a%20b%2F%2e%41%7e")->c_str(), "/a b/.A~");
    assert_string_equal(percent_decoded("/plain")->c_str(), "/plain");
    assert_string_equal(percent_decoded("%2525")->c_str(), "%25");  // once
    assert_true(*percent_decoded("%00") == std::string(1, '\0'));
    for (const char *bad : {"%", "%2", "%zz", "/a%2", "/a%g0", "%%41"})
        if (percent_decoded(bad)) fail_msg("'%s' decoded", bad);
}

void test_check_destination(void **) {
    TokenRecord record;
    const auto verdict = [&](std::initializer_list<std::string_view> values) {
        const std::vector<std::string_view> destinations(values);
        return check_destination(record, destinations);
    };
    // No scopes: not concerned, whatever the header says.
    assert_true(verdict({"http://h/anywhere"}) == ScopeVerdict::allowed);
    assert_true(verdict({"junk"}) == ScopeVerdict::allowed);
    record.scopes = {"/dav/in"};
    assert_true(verdict({}) == ScopeVerdict::allowed);
    for (const char *in : {"http://h/dav/in/b", "/dav/in", "/dav/in/", "https://other.example:1/dav/in/x?y=../z",
                           "/dav/in/%41b", "/dav/%69n/b", "/dav/in/%2541"})
        if (verdict({in}) != ScopeVerdict::allowed) fail_msg("destination '%s' refused", in);
    for (const char *out : {"http://h/dav/out/b", "/dav/inx", "/", "http://h", "/dav/in/../out", "/dav/in/%2e%2e/out",
                            "/dav/in%2f..%2fout", "/dav/in/..;/out", "/dav/in/..%3b/out", "/dav/in/%c0%ae",
                            "/dav/in/a b", "/dav/in/%252e%252e/out", "/dav/in//b", "/dav/in/a\\b"})
        if (verdict({out}) != ScopeVerdict::destination_outside_scope) fail_msg("destination '%s' not outside", out);
    for (const char *bad : {"", "dav/in/b", "//h/dav/in/b", "http:/dav/in/b", "/dav/in/%zz", "mailto:x@y"})
        if (verdict({bad}) != ScopeVerdict::destination_malformed) fail_msg("destination '%s' not malformed", bad);
    assert_true(verdict({"/dav/in/a", "/dav/in/b"}) == ScopeVerdict::destination_malformed);
    assert_string_equal(describe(ScopeVerdict::destination_outside_scope), "destination outside the token's scopes");
    assert_string_equal(describe(ScopeVerdict::destination_malformed), "destination header malformed or repeated");
}

void test_method_override_headers(void **) {
    // The names the module removes (apr tables compare names without regard to case).
    const std::array<std::string_view, 3> want{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"};
    for (std::size_t i = 0; i < want.size(); ++i) assert_string_equal(method_override_headers[i], want[i].data());
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_segments),
        cmocka_unit_test(test_path_tricks),
        cmocka_unit_test(test_semicolons_and_non_ascii),
        cmocka_unit_test(test_valid_scopes),
        cmocka_unit_test(test_safe_methods),
        cmocka_unit_test(test_carries_body),
        cmocka_unit_test(test_check_scope),
        cmocka_unit_test(test_check_body),
        cmocka_unit_test(test_destination_path),
        cmocka_unit_test(test_percent_decoded),
        cmocka_unit_test(test_check_destination),
        cmocka_unit_test(test_method_override_headers),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

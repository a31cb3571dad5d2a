// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/names.hpp: user names and token names.

#include <string>
#include <string_view>

#include "token/names.hpp"
#include "token/token.hpp"

// cmocka last: its fail() macro would clash with std::basic_ios::fail().
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
extern "C" {
#include <cmocka.h>
}

using namespace cptoken;

namespace {

std::string_view sv(const std::string &s) { return std::string_view(s.data(), s.size()); }

void test_user_length(void **) {
    assert_false(is_valid_user(""));
    assert_true(is_valid_user("a"));
    assert_true(is_valid_user("7"));
    assert_true(is_valid_user(std::string(50, 'a')));
    assert_true(is_valid_user(std::string(51, 'a')));
    assert_true(is_valid_user(std::string(63, 'a')));
    assert_true(is_valid_user(std::string(64, 'a')));
    assert_false(is_valid_user(std::string(65, 'a')));
    assert_false(is_valid_user(std::string(1000, 'a')));
    assert_true(is_valid_user("a" + std::string(63, '.')));
    assert_false(is_valid_user("a" + std::string(64, '.')));
}

void test_user_characters(void **) {
    for (const char *ok : {"alice", "bob2", "0day", "a.b", "a-b", "a_b", "a.b-c_d9", "x1.2.3",
                           "a.", "a-", "a_", "abcdefghijklmnopqrstuvwxyz0123456789"})
        if (!is_valid_user(ok)) fail_msg("user '%s' should be valid", ok);
    for (const char *bad : {"Alice", "aliCe", "ALICE", ".alice", "-alice", "_alice", ".", "-", "_",
                            "a:b", "alice:", ":alice", "a b", " alice", "alice ", "a/b", "/", "a\\b",
                            "a@b", "a+b", "a*b", "a,b", "a;b", "a'b", "a\"b", "a\tb", "a\nb",
                            "alice\n", "a~b", "a=b", "a%b", "a#b"})
        if (is_valid_user(bad)) fail_msg("user '%s' should be refused", bad);
    // Every byte outside [a-z0-9._-] is refused in the middle of a name.
    for (int c = 0; c < 256; ++c) {
        bool allowed = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                       c == '-';
        std::string s = "ab";
        s[1] = static_cast<char>(c);
        if (is_valid_user(sv(s)) != allowed) fail_msg("user 'a' + byte 0x%02x: wrong answer", c);
        // As the first character only letters and digits.
        bool first_ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        std::string f = "xb";
        f[0] = static_cast<char>(c);
        if (is_valid_user(sv(f)) != first_ok) fail_msg("user byte 0x%02x + 'b': wrong answer", c);
    }
}

void test_user_nul_and_utf8(void **) {
    std::string nul("ali\0ce", 6);
    assert_false(is_valid_user(sv(nul)));
    std::string nul_end("alice\0", 6);
    assert_false(is_valid_user(sv(nul_end)));
    std::string only_nul("\0", 1);
    assert_false(is_valid_user(sv(only_nul)));
    assert_false(is_valid_user("jos\xc3\xa9"));       // josé
    assert_false(is_valid_user("\xc3\xa9tienne"));    // étienne
    assert_false(is_valid_user("a\xe2\x80\x8b" "b"));  // zero-width space
    assert_false(is_valid_user("\xef\xbd\x81"));      // fullwidth a
}

void test_token_name_length(void **) {
    assert_false(is_valid_token_name(""));
    assert_true(is_valid_token_name("x"));
    assert_true(is_valid_token_name(std::string(49, 'x')));
    assert_true(is_valid_token_name(std::string(50, 'x')));
    assert_false(is_valid_token_name(std::string(51, 'x')));
    assert_false(is_valid_token_name(std::string(64, 'x')));
    assert_false(is_valid_token_name(std::string(65, 'x')));
    assert_false(is_valid_token_name(std::string(1000, 'x')));
}

void test_token_name_characters(void **) {
    for (const char *ok : {"deploy", "Deploy", "DEPLOY", "my_token-1", "_x", "-x", "x-", "x_", "0",
                           "9lives", "-", "_", "ABCxyz019_-"})
        if (!is_valid_token_name(ok)) fail_msg("token name '%s' should be valid", ok);
    for (const char *bad : {"a.b", ".x", "a:b", "a b", " x", "x ", "a/b", "a\\b", "a@b", "a+b",
                            "a\tb", "a\nb", "x\n", "a'b", "a\"b", "a=b", "a%b", "a,b"})
        if (is_valid_token_name(bad)) fail_msg("token name '%s' should be refused", bad);
    for (int c = 0; c < 256; ++c) {
        bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '_' || c == '-';
        std::string s = "ab";
        s[1] = static_cast<char>(c);
        if (is_valid_token_name(sv(s)) != allowed) fail_msg("name 'a' + byte 0x%02x: wrong answer", c);
        std::string f = "xb";
        f[0] = static_cast<char>(c);
        if (is_valid_token_name(sv(f)) != allowed) fail_msg("name byte 0x%02x + 'b': wrong answer", c);
    }
}

void test_token_name_nul_and_utf8(void **) {
    std::string nul("dep\0loy", 7);
    assert_false(is_valid_token_name(sv(nul)));
    std::string nul_end("deploy\0", 7);
    assert_false(is_valid_token_name(sv(nul_end)));
    assert_false(is_valid_token_name("caf\xc3\xa9"));
    assert_false(is_valid_token_name("\xc3\x89t\xc3\xa9"));
    // 25 two-byte characters: 50 bytes, still refused.
    std::string many;
    for (int i = 0; i < 25; ++i) many += "\xc3\xa9";
    assert_int_equal(many.size(), 50);
    assert_false(is_valid_token_name(many));
}

std::string lowercase(std::string text) {
    for (char &c : text)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return text;
}

// A token pasted into the user field is never shown, in any letter case;
// the names users really have are.
void test_loggable_user(void **) {
    assert_true(loggable_user("") == "-");
    for (const char *shown : {"alice", "bob2", "a.b-c_d9", "0day"})
        if (loggable_user(shown) != shown) fail_msg("user '%s' should be logged as it is", shown);
    for (int i = 0; i < 50; ++i) {
        const std::string token = generate_token();
        const std::string lower = lowercase(token);
        assert_true(is_valid_user(lower));  // why the check on names alone is not enough
        assert_true(loggable_user(lower) == "(token-shaped)");
        assert_true(loggable_user(token) == "(invalid)");
        std::string mixed = token;
        mixed[0] = static_cast<char>(lower[0]);
        if (loggable_user(mixed).find(mixed) != std::string_view::npos) fail_msg("a mixed-case token is logged");
    }
    // Only exactly 32 letters and digits have a token's shape.
    assert_true(loggable_user(std::string(31, 'a')) == std::string(31, 'a'));
    assert_true(loggable_user(std::string(33, 'a')) == std::string(33, 'a'));
    assert_true(loggable_user(std::string(32, 'a')) == "(token-shaped)");
    assert_true(loggable_user(std::string(32, '7')) == "(token-shaped)");
    const std::string dotted = std::string(31, 'a') + ".";
    assert_true(loggable_user(dotted) == dotted);
    assert_true(loggable_user("Alice") == "(invalid)");
    assert_true(loggable_user(std::string("ali\0ce", 6)) == "(invalid)");
    assert_true(loggable_user("alice\x1b[2J") == "(invalid)");
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_length),
        cmocka_unit_test(test_user_characters),
        cmocka_unit_test(test_user_nul_and_utf8),
        cmocka_unit_test(test_token_name_length),
        cmocka_unit_test(test_token_name_characters),
        cmocka_unit_test(test_token_name_nul_and_utf8),
        cmocka_unit_test(test_loggable_user),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

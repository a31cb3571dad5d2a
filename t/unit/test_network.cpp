// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/network.hpp: addresses, networks, matching.

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "token/network.hpp"

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

Address v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    Address x;
    x.family = 4;
    x.bytes = {a, b, c, d};
    return x;
}

Address v6(std::initializer_list<std::uint8_t> bytes) {
    Address x;
    x.family = 6;
    std::size_t i = 0;
    for (auto b : bytes) x.bytes[i++] = b;
    return x;
}

Address addr(std::string_view text, int line) {
    auto a = parse_address(text);
    if (!a) fail_msg("line %d: parse_address(\"%s\") failed", line, std::string(text).c_str());
    return *a;
}
#define ADDR(t) addr((t), __LINE__)

Network net(std::string_view text, int line) {
    auto n = parse_network(text);
    if (!n) fail_msg("line %d: parse_network(\"%s\") failed", line, std::string(text).c_str());
    return *n;
}
#define NET(t) net((t), __LINE__)

void no_address(std::string_view text, int line) {
    if (parse_address(text))
        fail_msg("line %d: parse_address(\"%s\") should be nullopt", line, std::string(text).c_str());
}
#define NO_ADDR(t) no_address((t), __LINE__)

void no_network(std::string_view text, int line) {
    auto n = parse_network(text);
    if (n)
        fail_msg("line %d: parse_network(\"%s\") should be nullopt, got %s", line,
                 std::string(text).c_str(), to_string(*n).c_str());
}
#define NO_NET(t) no_network((t), __LINE__)

void test_parse_address_v4(void **) {
    Address a = ADDR("192.0.2.7");
    assert_int_equal(a.family, 4);
    assert_true(a == v4(192, 0, 2, 7));
    assert_true(ADDR("0.0.0.0") == v4(0, 0, 0, 0));
    assert_true(ADDR("255.255.255.255") == v4(255, 255, 255, 255));
    assert_true(ADDR("10.1.2.3") == v4(10, 1, 2, 3));
    assert_false(ADDR("10.1.2.3") == v4(10, 1, 2, 4));
}

void test_parse_address_v6(void **) {
    Address a = ADDR("2001:db8::1");
    assert_int_equal(a.family, 6);
    assert_true(a == v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}));
    assert_true(ADDR("2001:0db8:0000:0000:0000:0000:0000:0001") == a);
    assert_true(ADDR("2001:DB8::1") == a);
    assert_true(ADDR("::") == v6({}));
    assert_true(ADDR("::1") == v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}));
    assert_true(ADDR("fe80::1:2") == v6({0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2}));
    assert_true(ADDR("1:2:3:4:5:6:7:8") ==
                v6({0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8}));
    assert_true(ADDR("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") ==
                v6({255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255}));
    // An embedded IPv4 that is not the mapped prefix stays IPv6.
    Address c = ADDR("64:ff9b::192.0.2.1");
    assert_int_equal(c.family, 6);
    assert_true(c == v6({0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1}));
}

void test_parse_address_mapped(void **) {
    Address a = ADDR("::ffff:192.0.2.1");
    assert_int_equal(a.family, 4);
    assert_true(a == v4(192, 0, 2, 1));
    assert_true(ADDR("::ffff:c000:201") == v4(192, 0, 2, 1));
    assert_true(ADDR("0:0:0:0:0:ffff:192.0.2.1") == v4(192, 0, 2, 1));
    assert_true(ADDR("::FFFF:10.0.0.1") == v4(10, 0, 0, 1));
    // ::fffe:... and ::ffff:0:... are not IPv4-mapped.
    assert_int_equal(ADDR("::fffe:192.0.2.1").family, 6);
    assert_int_equal(ADDR("::1:ffff:192.0.2.1").family, 6);
}

void test_parse_address_refused(void **) {
    for (const char *bad : {"", " ", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "1.2.3.-1",
                            "a.b.c.d", "1.2.3.4/32", "1.2.3.4/24", "::1/128", "[::1]", "[2001:db8::1]",
                            "fe80::1%eth0", "fe80::1%1", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\n",
                            "1 .2.3.4", "gggg::1", "1:2:3:4:5:6:7:8:9", "1::2::3", ":::", "::ffff:1.2.3",
                            "::ffff:1.2.3.4.5", "12345::1", "localhost", "1.2.3.4:80", "0x7f.0.0.1",
                            "1.2.3.4.", ".1.2.3.4"})
        NO_ADDR(bad);
    // The whole view is parsed: a NUL does not end it early.
    NO_ADDR(std::string_view("1.2.3.4\0xyz", 11));
    NO_ADDR(std::string_view("1.2.3.4\0", 8));
    NO_ADDR(std::string_view("::1\0", 4));
    // Only the view is parsed, not what follows it in memory.
    const char *longer = "10.0.0.12";
    auto a = parse_address(std::string_view(longer, 8));  // "10.0.0.1"
    assert_true(a.has_value());
    assert_true(*a == v4(10, 0, 0, 1));
    // Very long input.
    NO_ADDR(std::string(5000, '1'));
    NO_ADDR(std::string(5000, ':'));
}

void test_parse_network(void **) {
    Network n = NET("192.0.2.0/24");
    assert_true(n.base == v4(192, 0, 2, 0));
    assert_int_equal(n.prefix, 24);
    n = NET("10.0.0.1");
    assert_true(n.base == v4(10, 0, 0, 1));
    assert_int_equal(n.prefix, 32);
    n = NET("10.0.0.1/32");
    assert_int_equal(n.prefix, 32);
    n = NET("0.0.0.0/0");
    assert_true(n.base == v4(0, 0, 0, 0));
    assert_int_equal(n.prefix, 0);
    n = NET("10.128.0.0/9");
    assert_int_equal(n.prefix, 9);
    n = NET("2001:db8::/32");
    assert_true(n.base == v6({0x20, 0x01, 0x0d, 0xb8}));
    assert_int_equal(n.prefix, 32);
    n = NET("2001:db8::1");
    assert_int_equal(n.base.family, 6);
    assert_int_equal(n.prefix, 128);
    n = NET("2001:db8::1/128");
    assert_int_equal(n.prefix, 128);
    n = NET("::/0");
    assert_true(n.base == v6({}));
    assert_int_equal(n.prefix, 0);
    n = NET("2001:db8:0:0:8000::/65");
    assert_int_equal(n.prefix, 65);
    n = NET("::ffff:192.0.2.1");
    assert_true(n.base == v4(192, 0, 2, 1));
    assert_int_equal(n.prefix, 32);
    assert_true(NET("2001:0DB8::/32") == NET("2001:db8::/32"));
}

void test_parse_network_refused(void **) {
    for (const char *bad :
         {"", "/", "/24", "1.2.3.4/", "1.2.3.4/33", "1.2.3.4/64", "1.2.3.4/128", "::/129", "::/256",
          "::/300", "1.2.3.4/-1", "::/-0", "1.2.3.4/+8", "10.0.0.0/8/8", "10.0.0.0//8", "10.0.0.1/8",
          "11.0.0.0/7", "192.0.2.1/24", "192.0.2.128/24", "10.128.0.0/8", "0.0.0.1/0", "2001:db8::1/32",
          "2001:db9::/31", "2001:db8::8000:0:0:0/64", "::1/0", "[2001:db8::]/32", "[::1]", "fe80::%eth0/64",
          "fe80::1%eth0", "10.0.0.0 /8", "10.0.0.0/ 8", " 10.0.0.0/8", "10.0.0.0/8 ", "10.0.0.0/8\n",
          "10.0.0.0/0x8", "10.0.0.0/8.0", "10.0.0.0/a", "10.0.0.0/4294967304", "10.0.0.0/99999999999999999999",
          "10.0.0.0/18446744073709551624", "::/18446744073709551616", "1.2.3/24", "256.0.0.0/8",
          "10.0.0.0-10.0.0.255", "10.0.0.0/255.0.0.0", "example.com/24"})
        NO_NET(bad);
    NO_NET(std::string_view("10.0.0.0/8\0", 11));
    NO_NET(std::string_view("10.0.0.0\0/8", 11));
    NO_NET(std::string_view("10.0.0.0/8\0" "0", 12));
    // A view that stops before more digits in memory.
    const char *longer = "10.0.0.0/88";
    auto n = parse_network(std::string_view(longer, 10));  // "10.0.0.0/8"
    assert_true(n.has_value());
    assert_int_equal(n->prefix, 8);
}

void test_to_string(void **) {
    for (const char *s : {"192.0.2.0/24", "10.0.0.1", "0.0.0.0/0", "10.128.0.0/9", "255.255.255.255",
                          "2001:db8::/32", "2001:db8::1", "::/0", "::1", "::", "fe80::/10",
                          "2001:db8:0:0:8000::/65" /* checked below in canonical form */}) {
        Network n = NET(s);
        auto back = parse_network(to_string(n));
        if (!back || !(*back == n))
            fail_msg("round trip of %s through \"%s\" failed", s, to_string(n).c_str());
    }
    assert_string_equal(to_string(NET("192.0.2.0/24")).c_str(), "192.0.2.0/24");
    assert_string_equal(to_string(NET("10.0.0.1")).c_str(), "10.0.0.1");
    assert_string_equal(to_string(NET("10.0.0.1/32")).c_str(), "10.0.0.1");
    assert_string_equal(to_string(NET("0.0.0.0/0")).c_str(), "0.0.0.0/0");
    assert_string_equal(to_string(NET("2001:db8::/32")).c_str(), "2001:db8::/32");
    assert_string_equal(to_string(NET("2001:db8::1/128")).c_str(), "2001:db8::1");
    assert_string_equal(to_string(NET("2001:0DB8:0000::0001")).c_str(), "2001:db8::1");
    assert_string_equal(to_string(NET("::/0")).c_str(), "::/0");
    assert_string_equal(to_string(NET("::1")).c_str(), "::1");
    assert_string_equal(to_string(NET("::ffff:192.0.2.1")).c_str(), "192.0.2.1");
    assert_string_equal(to_string(ADDR("192.0.2.7")).c_str(), "192.0.2.7");
    assert_string_equal(to_string(ADDR("::ffff:192.0.2.7")).c_str(), "192.0.2.7");
    assert_string_equal(to_string(ADDR("2001:db8::7")).c_str(), "2001:db8::7");
    assert_string_equal(to_string(ADDR("::")).c_str(), "::");
    assert_string_equal(to_string(v4(1, 2, 3, 4)).c_str(), "1.2.3.4");
    assert_string_equal(to_string(v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x2a}))
                            .c_str(),
                        "2001:db8::2a");
}

void test_contains_v4(void **) {
    Network n = NET("192.0.2.0/24");
    assert_true(contains(n, ADDR("192.0.2.0")));
    assert_true(contains(n, ADDR("192.0.2.1")));
    assert_true(contains(n, ADDR("192.0.2.255")));
    assert_false(contains(n, ADDR("192.0.3.0")));
    assert_false(contains(n, ADDR("192.0.1.255")));
    assert_false(contains(n, ADDR("10.0.2.1")));
    Network n9 = NET("10.0.0.0/9");
    assert_true(contains(n9, ADDR("10.127.255.255")));
    assert_false(contains(n9, ADDR("10.128.0.0")));
    Network host = NET("10.0.0.1");
    assert_true(contains(host, ADDR("10.0.0.1")));
    assert_false(contains(host, ADDR("10.0.0.0")));
    assert_false(contains(host, ADDR("10.0.0.2")));
    assert_false(contains(host, ADDR("11.0.0.1")));
    Network any4 = NET("0.0.0.0/0");
    for (const char *a : {"0.0.0.0", "255.255.255.255", "10.0.0.1", "192.0.2.7"})
        assert_true(contains(any4, ADDR(a)));
    Network n31 = NET("192.0.2.6/31");
    assert_true(contains(n31, ADDR("192.0.2.6")));
    assert_true(contains(n31, ADDR("192.0.2.7")));
    assert_false(contains(n31, ADDR("192.0.2.8")));
    assert_false(contains(n31, ADDR("192.0.2.5")));
    Network n1 = NET("128.0.0.0/1");
    assert_true(contains(n1, ADDR("200.1.1.1")));
    assert_false(contains(n1, ADDR("127.255.255.255")));
}

void test_contains_v6(void **) {
    Network n = NET("2001:db8::/32");
    assert_true(contains(n, ADDR("2001:db8::")));
    assert_true(contains(n, ADDR("2001:db8::1")));
    assert_true(contains(n, ADDR("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert_false(contains(n, ADDR("2001:db9::")));
    assert_false(contains(n, ADDR("2001:db7:ffff::")));
    Network n65 = NET("2001:db8::/65");
    assert_true(contains(n65, ADDR("2001:db8::7fff:ffff:ffff:ffff")));
    assert_false(contains(n65, ADDR("2001:db8::8000:0:0:0")));
    Network host = NET("2001:db8::1");
    assert_true(contains(host, ADDR("2001:db8::1")));
    assert_false(contains(host, ADDR("2001:db8::2")));
    assert_false(contains(host, ADDR("2001:db8::")));
    Network any6 = NET("::/0");
    for (const char *a : {"::", "::1", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                          "fe80::1", "64:ff9b::192.0.2.1"})
        assert_true(contains(any6, ADDR(a)));
}

void test_contains_cross_family(void **) {
    // IPv4 addresses (also those written IPv4-mapped) are never in IPv6 networks.
    Network any6 = NET("::/0");
    assert_false(contains(any6, ADDR("10.0.0.1")));
    assert_false(contains(any6, ADDR("::ffff:10.0.0.1")));
    assert_false(contains(any6, ADDR("0.0.0.0")));
    // IPv6 addresses are never in IPv4 networks.
    Network any4 = NET("0.0.0.0/0");
    assert_false(contains(any4, ADDR("::1")));
    assert_false(contains(any4, ADDR("::")));
    assert_false(contains(any4, ADDR("2001:db8::1")));
    // ::a.b.c.d (IPv4-compatible, not mapped) is IPv6.
    assert_false(contains(NET("10.0.0.0/8"), ADDR("::10.0.0.1")));
    // Same bytes, other family.
    assert_false(contains(NET("10.0.0.0/8"), v6({10, 0, 0, 1})));
    assert_false(contains(NET("a00::/8"), v4(10, 0, 0, 1)));
}

void test_contains_mapped(void **) {
    Network n = NET("10.0.0.0/8");
    assert_true(contains(n, ADDR("::ffff:10.1.2.3")));
    assert_false(contains(n, ADDR("::ffff:11.1.2.3")));
    assert_true(contains(NET("192.0.2.7"), ADDR("::ffff:192.0.2.7")));
    // An Address built by hand in the mapped IPv6 form is unmapped by contains().
    Address raw = v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3});
    assert_true(contains(n, raw));
    assert_false(contains(NET("11.0.0.0/8"), raw));
    assert_false(contains(NET("::/0"), raw));
}

void test_allowed_from(void **) {
    std::vector<Network> none;
    assert_true(allowed_from(none, ADDR("10.0.0.1")));
    assert_true(allowed_from(none, ADDR("2001:db8::1")));
    assert_true(allowed_from(none, ADDR("::ffff:1.2.3.4")));
    std::vector<Network> list = {NET("10.0.0.0/8"), NET("2001:db8::/32"), NET("192.0.2.7")};
    assert_true(allowed_from(list, ADDR("10.200.3.4")));
    assert_true(allowed_from(list, ADDR("::ffff:10.200.3.4")));
    assert_true(allowed_from(list, ADDR("2001:db8:1::5")));
    assert_true(allowed_from(list, ADDR("192.0.2.7")));
    assert_false(allowed_from(list, ADDR("192.0.2.8")));
    assert_false(allowed_from(list, ADDR("11.0.0.1")));
    assert_false(allowed_from(list, ADDR("2001:db9::1")));
    assert_false(allowed_from(list, ADDR("::1")));
    std::vector<Network> only6 = {NET("::/0")};
    assert_true(allowed_from(only6, ADDR("::1")));
    assert_false(allowed_from(only6, ADDR("127.0.0.1")));
    // Up to the maximum list size: the last one counts.
    std::vector<Network> many;
    for (int i = 0; i < static_cast<int>(max_allowed_networks); ++i)
        many.push_back(NET("10.0." + std::to_string(i) + ".0/24"));
    assert_int_equal(many.size(), 100);
    assert_true(allowed_from(many, ADDR("10.0.99.1")));
    assert_true(allowed_from(many, ADDR("10.0.0.1")));
    assert_false(allowed_from(many, ADDR("10.0.100.1")));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_address_v4),
        cmocka_unit_test(test_parse_address_v6),
        cmocka_unit_test(test_parse_address_mapped),
        cmocka_unit_test(test_parse_address_refused),
        cmocka_unit_test(test_parse_network),
        cmocka_unit_test(test_parse_network_refused),
        cmocka_unit_test(test_to_string),
        cmocka_unit_test(test_contains_v4),
        cmocka_unit_test(test_contains_v6),
        cmocka_unit_test(test_contains_cross_family),
        cmocka_unit_test(test_contains_mapped),
        cmocka_unit_test(test_allowed_from),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/token/timeutil.hpp: clock, ISO 8601 output, parse_when.

#include <cstring>
#include <ctime>
#include <exception>
#include <string>
#include <string_view>

#include "token/timeutil.hpp"

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

// 2025-06-15T15:06:40Z: a fixed "now" before every valid date used below.
constexpr Seconds now = 1750000000;

// Fails the test unless parse_when(text, at) throws WhenError.
void expect_refused(std::string_view text, Seconds at, int line) {
    std::string shown(text);
    try {
        Seconds got = parse_when(text, at);
        fail_msg("line %d: parse_when(\"%s\", %lld) returned %lld, expected WhenError", line,
                 shown.c_str(), (long long)at, (long long)got);
    } catch (const WhenError &e) {
        if (std::string(e.what()).empty())
            fail_msg("line %d: WhenError for \"%s\" has an empty message", line, shown.c_str());
    } catch (const std::exception &e) {
        fail_msg("line %d: parse_when(\"%s\") threw another exception: %s", line, shown.c_str(),
                 e.what());
    } catch (...) {
        fail_msg("line %d: parse_when(\"%s\") threw a non-std exception", line, shown.c_str());
    }
}
#define REFUSED(text) expect_refused((text), now, __LINE__)
#define REFUSED_AT(text, at) expect_refused((text), (at), __LINE__)

Seconds parse_ok(std::string_view text, Seconds at, int line) {
    std::string shown(text);
    try {
        return parse_when(text, at);
    } catch (const std::exception &e) {
        fail_msg("line %d: parse_when(\"%s\", %lld) threw: %s", line, shown.c_str(), (long long)at,
                 e.what());
    }
    return -1;
}
#define PARSES(text, expected) assert_int_equal(parse_ok((text), now, __LINE__), (expected))
#define PARSES_AT(text, at, expected) assert_int_equal(parse_ok((text), (at), __LINE__), (expected))

void test_clock(void **) {
    Seconds a = now_seconds();
    std::int64_t ns = now_nanoseconds();
    Seconds b = static_cast<Seconds>(std::time(nullptr));
    assert_true(a > 1700000000);  // after 2023-11
    assert_true(b - a >= -1 && b - a <= 2);  // time() may lag by a tick: test below
    assert_true(ns / 1000000000 >= a - 1 && ns / 1000000000 <= b + 1);
    std::int64_t ns2 = now_nanoseconds();
    assert_true(ns2 >= ns);
}

// An expiry is a whole second E: a token is refused from E on. time() reads
// the kernel's coarse clock, which lags the real one by up to a tick (4 ms
// at 250 Hz), so a request made just after E was admitted. now_seconds()
// must never be behind the precise clock read before it.
void test_now_seconds_is_not_behind_the_clock(void **) {
    for (int boundary = 0; boundary < 2; ++boundary) {
        timespec before{};
        std::int64_t second = now_nanoseconds() / 1000000000;
        do {  // the first moment of the next second
            ::clock_gettime(CLOCK_REALTIME, &before);
        } while (before.tv_sec == second);
        const Seconds seen = now_seconds();
        if (seen < before.tv_sec)
            fail_msg("now_seconds() = %lld just after the clock reached %lld.%09ld", (long long)seen,
                     (long long)before.tv_sec, before.tv_nsec);
    }
}

void test_format_iso8601(void **) {
    assert_string_equal(format_iso8601(0).c_str(), "1970-01-01T00:00:00Z");
    assert_string_equal(format_iso8601(1).c_str(), "1970-01-01T00:00:01Z");
    assert_string_equal(format_iso8601(86399).c_str(), "1970-01-01T23:59:59Z");
    assert_string_equal(format_iso8601(1234567890).c_str(), "2009-02-13T23:31:30Z");
    assert_string_equal(format_iso8601(1700000000).c_str(), "2023-11-14T22:13:20Z");
    assert_string_equal(format_iso8601(951782400).c_str(), "2000-02-29T00:00:00Z");
    assert_string_equal(format_iso8601(1835395200).c_str(), "2028-02-29T00:00:00Z");
    assert_string_equal(format_iso8601(1835442855).c_str(), "2028-02-29T13:14:15Z");
    assert_string_equal(format_iso8601(1835395200 + 86400).c_str(), "2028-03-01T00:00:00Z");
    assert_string_equal(format_iso8601(1767225600 - 1).c_str(), "2025-12-31T23:59:59Z");
    assert_string_equal(format_iso8601(2147483648LL).c_str(), "2038-01-19T03:14:08Z");
    assert_string_equal(format_iso8601(4107542400LL).c_str(), "2100-03-01T00:00:00Z");
}

void test_parse_date(void **) {
    PARSES("2026-01-01", 1767225600);
    PARSES("2028-02-29", 1835395200);
    PARSES("2026-03-01", 1772323200);
    PARSES("2100-03-01", 4107542400LL);
    PARSES("2025-06-16", 1749945600 + 86400);
}

void test_parse_datetime(void **) {
    PARSES("2026-01-01T12:34:56Z", 1767270896);
    PARSES("2028-02-29T13:14:15Z", 1835442855);
    PARSES("2026-01-01T00:00:00Z", 1767225600);
    PARSES("2025-12-31T23:59:59Z", 1767225600 - 1);
    PARSES("2038-01-19T03:14:08Z", 2147483648LL);
    // One second after now is in the future.
    PARSES("2025-06-15T15:06:41Z", now + 1);
}

void test_parse_relative(void **) {
    PARSES("+1s", now + 1);
    PARSES("+90s", now + 90);
    PARSES("+30m", now + 1800);
    PARSES("+12h", now + 43200);
    PARSES("+1d", now + 86400);
    PARSES("+2w", now + 2 * 604800);
    PARSES("+365d", now + 365 * 86400);
    PARSES("+1000w", now + 1000LL * 604800);
    // Relative to the argument, not the clock.
    PARSES_AT("+1d", 0, 86400);
    PARSES_AT("+1h", 1000, 4600);
    // A clock before 1970 (found by fuzz_time: the overflow bound itself overflowed).
    PARSES_AT("+1d", -2 * 86400, -86400);
    PARSES_AT("+1w", -1, 604799);
}

void test_refuse_not_after_now(void **) {
    REFUSED("2020-01-01");
    REFUSED("1970-01-01");
    REFUSED("2025-06-15");              // midnight today, before now
    REFUSED("2025-06-15T15:06:40Z");    // exactly now
    REFUSED("2025-06-15T15:06:39Z");
    REFUSED("+0s");
    REFUSED("+0d");
    REFUSED("+0w");
    // Midnight that is exactly now.
    REFUSED_AT("2026-01-01", 1767225600);
    PARSES_AT("2026-01-02", 1767225600, 1767225600 + 86400);
    REFUSED_AT("2026-01-01T00:00:00Z", 1767225600);
    PARSES_AT("2026-01-01T00:00:01Z", 1767225600, 1767225601);
}

void test_refuse_bad_dates(void **) {
    REFUSED("2026-02-30");
    REFUSED("2026-02-29");  // 2026 is not a leap year
    REFUSED("2027-02-29");
    REFUSED("2100-02-29");  // century, not a leap year
    REFUSED("2026-04-31");
    REFUSED("2026-13-01");
    REFUSED("2026-00-10");
    REFUSED("2026-01-00");
    REFUSED("2026-01-32");
    REFUSED("2026-1-01");
    REFUSED("2026-01-1");
    REFUSED("26-01-01");
    REFUSED("20260101");
    REFUSED("2026/01/01");
    REFUSED("2026-01-01 ");
    REFUSED(" 2026-01-01");
    REFUSED("2026-01-01x");
    REFUSED("2026-01-01T");
    REFUSED("2026-01-01T12:00Z");
    REFUSED("2026-01-01T12:00:00");      // no Z
    REFUSED("2026-01-01T12:00:00+00:00");
    REFUSED("2026-01-01 12:00:00Z");
    REFUSED("2026-01-01t12:00:00Z");
    REFUSED("2026-01-01T12:00:00z");
    REFUSED("2026-01-01T24:00:00Z");
    REFUSED("2026-01-01T23:60:00Z");
    REFUSED("2026-01-01T23:59:61Z");
    REFUSED("2026-01-01T1:00:00Z");
    REFUSED("2026-01-01T12:00:00Zjunk");
    REFUSED("2026-01-01T12:00:00.5Z");
    REFUSED("+2026-01-01");
    REFUSED("2026-0a-01");
    REFUSED("2O26-01-01");
    REFUSED(std::string_view("2026-01-01\0junk", 15));
    REFUSED(std::string_view("2026-01-01\0", 11));
}

void test_refuse_bad_relative(void **) {
    REFUSED("+5x");
    REFUSED("+");
    REFUSED("+-5s");
    REFUSED("-5s");
    REFUSED("+5");
    REFUSED("5s");
    REFUSED("5d");
    REFUSED("+s");
    REFUSED("+d");
    REFUSED("++5s");
    REFUSED("+ 5s");
    REFUSED("+5 s");
    REFUSED("+5s ");
    REFUSED(" +5s");
    REFUSED("+5ss");
    REFUSED("+5sd");
    REFUSED("+1d2h");
    REFUSED("+1.5h");
    REFUSED("+1e3s");
    REFUSED("+0x10s");
    REFUSED("+5S");
    REFUSED("+5D");
    REFUSED("+5y");
    REFUSED("+5M");
    REFUSED(std::string_view("+5d\0", 4));
    REFUSED(std::string_view("+5\0d", 4));
}

void test_refuse_overflow(void **) {
    REFUSED("+99999999999999999999d");
    REFUSED("+99999999999999999999s");
    REFUSED("+999999999999999999999999999999999999999s");
    REFUSED("+9223372036854775807s");  // now + INT64_MAX overflows
    REFUSED("+9223372036854775808s");
    REFUSED("+18446744073709551616s");  // 2^64: wraps to 0 in a 64-bit accumulator
    REFUSED("+18446744073709551617s");  // 2^64+1: wraps to 1
    REFUSED("+999999999999999w");       // * 604800 overflows
    REFUSED("+30500568904943w");        // * 604800 is just below 2^64
    REFUSED("+106751991167301d");       // * 86400 > INT64_MAX
    REFUSED("+153722867280913m");       // * 60 > INT64_MAX
    REFUSED("+2562047788016h");         // * 3600 > INT64_MAX
    REFUSED_AT("+9223372036854775807s", -1);  // fits, but is after 9999
    REFUSED_AT("+106751991167301d", -1);
}

void test_parse_duration(void **) {
    assert_int_equal(parse_duration("90s"), 90);
    assert_int_equal(parse_duration("10m"), 600);
    assert_int_equal(parse_duration("12h"), 43200);
    assert_int_equal(parse_duration("30d"), 30 * 86400);
    assert_int_equal(parse_duration("2w"), 14 * 86400);
    assert_int_equal(parse_duration("+2w"), 14 * 86400);
    assert_int_equal(parse_duration("0s"), 0);
    for (const char *bad : {"", "+", "s", "90", "90S", "1y", "-5d", "+-5d", "++5d", " 5d", "5d ", "5 d", "1.5h",
                            "99999999999999999999s", "9223372036854775807s", "16534698w"}) {
        try {
            parse_duration(bad);
            fail_msg("parse_duration(\"%s\") accepted", bad);
        } catch (const WhenError &e) {
            assert_non_null(std::strstr(e.what(), "invalid duration"));
        }
    }
    try {
        parse_duration(std::string_view("5d\0", 3));
        fail_msg("a NUL byte accepted");
    } catch (const WhenError &) {
    }
}

void test_refuse_other(void **) {
    REFUSED("");
    REFUSED("never");
    REFUSED("Never");
    REFUSED("now");
    REFUSED("tomorrow");
    REFUSED("0");
    REFUSED("1767225600");  // epoch seconds are not a documented form
    REFUSED("T");
    REFUSED("Z");
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock),
        cmocka_unit_test(test_now_seconds_is_not_behind_the_clock),
        cmocka_unit_test(test_format_iso8601),
        cmocka_unit_test(test_parse_date),
        cmocka_unit_test(test_parse_datetime),
        cmocka_unit_test(test_parse_relative),
        cmocka_unit_test(test_refuse_not_after_now),
        cmocka_unit_test(test_refuse_bad_dates),
        cmocka_unit_test(test_refuse_bad_relative),
        cmocka_unit_test(test_refuse_overflow),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_refuse_other),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

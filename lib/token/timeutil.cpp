// SPDX-License-Identifier: Apache-2.0
#include "token/timeutil.hpp"

#include <time.h>

#include <charconv>
#include <limits>

namespace cptoken {
namespace {

// 9999-12-31T23:59:59Z: later times would not print as ISO 8601.
constexpr Seconds latest_time = 253402300799;

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

unsigned days_in_month(unsigned year, unsigned month) noexcept {
    static constexpr unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

// Exactly `width` decimal digits at text[pos], or -1.
int fixed_digits(std::string_view text, std::size_t pos, std::size_t width) noexcept {
    if (pos + width > text.size()) return -1;
    int value = 0;
    for (std::size_t i = pos; i < pos + width; ++i) {
        if (text[i] < '0' || text[i] > '9') return -1;
        value = value * 10 + (text[i] - '0');
    }
    return value;
}

Seconds parse_absolute(std::string_view text) {
    // YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ
    const bool date_only = text.size() == 10;
    if (!date_only && text.size() != 20) throw WhenError("");
    const int year = fixed_digits(text, 0, 4), month = fixed_digits(text, 5, 2), day = fixed_digits(text, 8, 2);
    if (text[4] != '-' || text[7] != '-' || year < 1970 || month < 1 || month > 12 || day < 1 ||
        static_cast<unsigned>(day) > days_in_month(year, month))
        throw WhenError("");
    int hour = 0, minute = 0, second = 0;
    if (!date_only) {
        hour = fixed_digits(text, 11, 2), minute = fixed_digits(text, 14, 2), second = fixed_digits(text, 17, 2);
        if (text[10] != 'T' || text[13] != ':' || text[16] != ':' || text[19] != 'Z' || hour < 0 || hour > 23 ||
            minute < 0 || minute > 59 || second < 0 || second > 59)
            throw WhenError("");
    }
    return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
}

// N followed by s, m, h, d or w; at most latest_time seconds. Throws WhenError("").
Seconds parse_count_and_unit(std::string_view text) {
    if (text.size() < 2) throw WhenError("");
    std::int64_t scale = 0;
    switch (text.back()) {
        case 's': scale = 1; break;
        case 'm': scale = 60; break;
        case 'h': scale = 3600; break;
        case 'd': scale = 86400; break;
        case 'w': scale = 7 * 86400; break;
        default: throw WhenError("");
    }
    const std::string_view digits = text.substr(0, text.size() - 1);
    std::int64_t count = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), count);
    if (error != std::errc() || end != digits.data() + digits.size() || digits.front() < '0' || digits.front() > '9' ||
        count > latest_time / scale)
        throw WhenError("");
    return count * scale;
}

}  // namespace

// Not time(): on Linux it reads the coarse clock, up to a tick (about 4 ms)
// behind, and a token would be admitted for those milliseconds past its expiry.
Seconds now_seconds() noexcept { return static_cast<Seconds>(now_nanoseconds() / 1000000000); }

std::int64_t now_nanoseconds() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::int64_t monotonic_microseconds() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

std::string format_iso8601(Seconds t) {
    const time_t seconds = static_cast<time_t>(t);
    tm utc{};
    char out[32];
    if (!::gmtime_r(&seconds, &utc) || ::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &utc) == 0)
        return "invalid-time";
    return out;
}

Seconds parse_when(std::string_view text, Seconds now) {
    Seconds when = 0;
    try {
        if (!text.empty() && text.front() == '+') {
            const Seconds duration = parse_count_and_unit(text.substr(1));  // at most latest_time
            // A clock past 9999 (only a fuzzer's) could overflow the sum; everything after 9999 is refused below.
            when = now > latest_time ? latest_time + 1 : now + duration;
        } else {
            when = parse_absolute(text);
        }
    } catch (const WhenError &) {
        throw WhenError("invalid time '" + std::string(text) +
                        "': use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or +N with s, m, h, d or w");
    }
    if (when <= now) throw WhenError("time '" + std::string(text) + "' is not in the future");
    if (when > latest_time) throw WhenError("time '" + std::string(text) + "' is after 9999-12-31T23:59:59Z");
    return when;
}

Seconds parse_duration(std::string_view text) {
    try {
        return parse_count_and_unit(!text.empty() && text.front() == '+' ? text.substr(1) : text);
    } catch (const WhenError &) {
        throw WhenError("invalid duration '" + std::string(text) +
                        "': use N followed by s, m, h, d or w (90s, 10m, 12h, 30d, 2w)");
    }
}

}  // namespace cptoken

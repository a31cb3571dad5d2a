// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: --expires WHEN comes from the admin's command line (and
// bulk-create files). parse_when must either refuse with WhenError or return
// a time after `now` and no later than 9999-12-31T23:59:59Z, for any `now`;
// whatever it returns from 1970 on prints as ISO 8601 and parses back to
// the same second.
//
// Input: 8 bytes of `now` (little endian), then the text.
#include <cstdint>
#include <cstring>
#include <string>

#include "token/timeutil.hpp"

using namespace cptoken;

namespace {

constexpr Seconds latest_time = 253402300799;  // 9999-12-31T23:59:59Z

void check(bool property) {
    if (!property) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    Seconds now = 0;
    const std::size_t now_size = size < sizeof now ? size : sizeof now;
    std::memcpy(&now, data, now_size);  // little endian
    const std::string text(reinterpret_cast<const char *>(data) + now_size, size - now_size);
    Seconds when = 0;
    try {
        when = parse_when(text, now);
    } catch (const WhenError &) {
        return 0;
    }  // anything else escapes and libFuzzer reports it
    check(when > now && when <= latest_time);
    const bool absolute = text.front() != '+';
    if (absolute) check(when >= 0 && (text.size() != 10 || when % 86400 == 0));  // a date alone is midnight UTC
    // Dates print from 1970 on (a relative time from a clock before 1970 may land earlier).
    if (when < 0) return 0;
    const std::string printed = format_iso8601(when);
    try {
        check(printed.size() == 20 && parse_when(printed, now) == when);
    } catch (const WhenError &) {
        __builtin_trap();
    }
    return 0;
}

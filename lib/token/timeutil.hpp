// SPDX-License-Identifier: Apache-2.0
// Time: the clock, ISO 8601 output, and the WHEN and DURATION arguments of the tool.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cptoken {

/// Seconds since the UNIX epoch, UTC.
using Seconds = std::int64_t;

Seconds now_seconds() noexcept;
std::int64_t now_nanoseconds() noexcept;
/// Microseconds of a clock that never steps (for intervals, not dates).
std::int64_t monotonic_microseconds() noexcept;

/// "2026-11-27T21:20:17Z".
std::string format_iso8601(Seconds t);

/// Thrown by parse_when with a message fit for the user.
struct WhenError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Parses an expiry: "YYYY-MM-DD" (00:00:00 UTC that day),
/// "YYYY-MM-DDTHH:MM:SSZ", or "+N" followed by s, m, h, d or w (from `now`).
/// Throws WhenError if the text is none of these or names a time that is
/// not after `now` or after 9999-12-31T23:59:59Z.
Seconds parse_when(std::string_view text, Seconds now);

/// Parses a duration: N followed by s, m, h, d or w ("90s", "10m", "12h",
/// "30d", "2w"), with an optional leading '+'; "0s" is zero. Throws
/// WhenError if the text is none of these or longer than 9999 years.
Seconds parse_duration(std::string_view text);

}  // namespace cptoken

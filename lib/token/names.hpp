// SPDX-License-Identifier: Apache-2.0
// Which user names and token names the store accepts.
#pragma once

#include <cstddef>
#include <string_view>

namespace cptoken {

inline constexpr std::size_t max_user_length = 64;
inline constexpr std::size_t max_token_name_length = 50;

/// 1-64 characters of [a-z0-9._-], starting with a letter or a digit.
bool is_valid_user(std::string_view user) noexcept;

/// 1-50 characters of [A-Za-z0-9_-] (cPanel's rule for token names).
bool is_valid_token_name(std::string_view name) noexcept;

/// What a log line may show for a user field a client sent: "-" if empty,
/// the field itself if it is a valid user name without a token's shape in any
/// letter case (32 characters of [A-Za-z0-9]), else "(invalid)" or
/// "(token-shaped)". So a token pasted into the user field, even lowercased,
/// never reaches a log. The result is `user` or a static string.
std::string_view loggable_user(std::string_view user) noexcept;

}  // namespace cptoken

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

}  // namespace cptoken

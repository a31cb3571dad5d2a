// SPDX-License-Identifier: Apache-2.0
#include "token/names.hpp"

#include "token/token.hpp"

namespace cptoken {
namespace {

bool is_lower_alnum(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) noexcept { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

// Any letter case: a lowercased token is still the token to anyone who reads the log.
bool looks_like_token(std::string_view text) noexcept {
    if (text.size() != token_length) return false;
    for (char c : text)
        if (!is_alnum(c)) return false;
    return true;
}

}  // namespace

bool is_valid_user(std::string_view user) noexcept {
    if (user.empty() || user.size() > max_user_length || !is_lower_alnum(user.front())) return false;
    for (char c : user)
        if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-') return false;
    return true;
}

bool is_valid_token_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > max_token_name_length) return false;
    for (char c : name)
        if (!is_alnum(c) && c != '_' && c != '-') return false;
    return true;
}

std::string_view loggable_user(std::string_view user) noexcept {
    if (user.empty()) return "-";
    if (!is_valid_user(user)) return "(invalid)";
    if (looks_like_token(user)) return "(token-shaped)";
    return user;
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
#include "manager/params.hpp"

#include <algorithm>
#include <charconv>
#include <utility>

#include <nlohmann/json.hpp>

namespace cptoken::manager {
namespace {

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// One form component decoded: '+' is a space, %XX a byte. nullopt for a
// broken escape or a NUL (nothing we accept holds one, and C code after us
// would cut the value there).
std::optional<std::string> form_decoded(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;
            const int high = hex_value(text[i + 1]), low = hex_value(text[i + 2]);
            if (high < 0 || low < 0) return std::nullopt;
            c = static_cast<char>(high * 16 + low);
            i += 2;
        }
        if (c == '\0') return std::nullopt;
        out.push_back(c);
    }
    return out;
}

// Objects and arrays may nest one level (an array as a member's value):
// counted before parsing, so that a body of 64 KiB of '[' never reaches a
// recursive parser or destructor.
bool nesting_at_most(std::string_view text, int limit) noexcept {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') {
            if (++depth > limit) return false;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return true;
}

// A scalar as the text cPanel's clients mean by it; nullopt for null (skipped).
std::optional<std::string> scalar_text(const nlohmann::json &value, bool &ok) {
    if (value.is_null()) return std::nullopt;
    if (value.is_string()) {
        const auto &text = value.get_ref<const std::string &>();
        if (text.find('\0') != std::string::npos) ok = false;
        return text;
    }
    if (value.is_boolean()) return value.get<bool>() ? "1" : "0";
    if (value.is_number()) return value.dump();
    ok = false;
    return std::nullopt;
}

}  // namespace

bool add_form_params(std::string_view text, Params &params) {
    Params added;
    while (!text.empty()) {
        const auto amp = text.find('&');
        const std::string_view pair = text.substr(0, amp);
        text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
        if (pair.empty()) continue;
        const auto eq = pair.find('=');
        auto name = form_decoded(pair.substr(0, eq));
        auto value = form_decoded(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
        if (!name || !value) return false;
        added.emplace(std::move(*name), std::move(*value));
    }
    params.merge(added);
    return true;
}

bool add_json_params(std::string_view text, Params &params) {
    if (!nesting_at_most(text, 2)) return false;
    const nlohmann::json body = nlohmann::json::parse(text, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return false;
    Params added;
    bool ok = true;
    for (const auto &[name, value] : body.items()) {
        if (name.find('\0') != std::string::npos) return false;
        if (value.is_array()) {
            for (const auto &element : value) {
                if (element.is_array() || element.is_object()) return false;
                if (auto textual = scalar_text(element, ok)) added.emplace(name, std::move(*textual));
            }
        } else if (auto textual = scalar_text(value, ok)) {
            added.emplace(name, std::move(*textual));
        }
        if (!ok) return false;
    }
    params.merge(added);
    return true;
}

std::vector<std::string> repeated_param(const Params &params, std::string_view name) {
    std::vector<std::string> values;
    const std::string key(name);
    const auto [first, last] = params.equal_range(key);
    for (auto it = first; it != last; ++it) values.push_back(it->second);
    // name-N: the numbered ones in number order, each number's values in the order given.
    std::vector<std::pair<unsigned long, const std::string *>> numbered;
    const std::string prefix = key + "-";
    for (auto it = params.lower_bound(prefix); it != params.end() && it->first.starts_with(prefix); ++it) {
        const std::string_view digits = std::string_view(it->first).substr(prefix.size());
        unsigned long number = 0;
        const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
        if (digits.empty() || error != std::errc() || end != digits.data() + digits.size()) continue;
        numbered.emplace_back(number, &it->second);
    }
    std::stable_sort(numbered.begin(), numbered.end(),
                     [](const auto &a, const auto &b) { return a.first < b.first; });
    for (const auto &[number, value] : numbered) values.push_back(*value);
    return values;
}

}  // namespace cptoken::manager

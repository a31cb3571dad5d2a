// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: scopes come from admins and imported files, paths from
// clients through httpd. A scope must never cover a path that another
// reading could take elsewhere: what scope_covers() accepts is checked
// against a plain segment-by-segment reference written here again.
//
// Input: a line taken as a scope, the rest as a path.
#include <fuzzer/FuzzedDataProvider.h>

#include <cctype>
#include <string>
#include <string_view>
#include <vector>

#include "token/record.hpp"
#include "token/scope.hpp"

using namespace cptoken;

namespace {

void check(bool property) {
    if (!property) __builtin_trap();
}

std::vector<std::string> segments(const std::string &path) {
    std::vector<std::string> out;
    std::string current;
    for (std::size_t i = 1; i < path.size(); ++i) {
        if (path[i] == '/') {
            out.push_back(current);
            current.clear();
        } else {
            current += path[i];
        }
    }
    out.push_back(current);
    return out;
}

std::string lowercase(std::string text) {
    for (char &c : text)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return text;
}

// Printable ASCII, but '\' and ';' (a path parameter to servlet containers).
bool reference_plain(unsigned char c) { return c > ' ' && c < 0x7f && c != '\\' && c != ';'; }

// A path no backend could read another way: absolute, every byte plain,
// no dot or empty segment but a last one, nothing encoded that decodes to
// '.', '/' or a byte that is not plain.
bool reference_unambiguous(const std::string &path) {
    if (path.empty() || path[0] != '/') return false;
    for (const char c : path)
        if (!reference_plain(static_cast<unsigned char>(c))) return false;
    const std::string lower = lowercase(path);
    for (std::size_t i = 0; i + 2 < path.size(); ++i) {
        if (path[i] != '%' || !std::isxdigit(static_cast<unsigned char>(path[i + 1])) ||
            !std::isxdigit(static_cast<unsigned char>(path[i + 2])))
            continue;
        const int byte = std::stoi(path.substr(i + 1, 2), nullptr, 16);
        if (byte == '.' || byte == '/' || !reference_plain(static_cast<unsigned char>(byte))) return false;
    }
    const auto parts = segments(path);
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (parts[i] == "." || parts[i] == "..") return false;
        if (parts[i].empty() && i + 1 != parts.size()) return false;
    }
    return true;
}

bool reference_covers(const std::string &scope, const std::string &path) {
    if (!reference_unambiguous(path)) return false;
    std::vector<std::string> want = segments(scope);
    while (!want.empty() && want.back().empty()) want.pop_back();  // "/a/" is "/a", "/" is no segment
    std::vector<std::string> have = segments(path);
    if (!have.empty() && have.back().empty()) have.pop_back();
    if (have.size() < want.size()) return false;
    for (std::size_t i = 0; i < want.size(); ++i)
        if (want[i] != have[i]) return false;
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    FuzzedDataProvider input(data, size);
    const std::string scope = input.ConsumeRandomLengthString(2048);
    const std::string path = input.ConsumeRemainingBytesAsString();

    check(is_comparable_path(path) == reference_unambiguous(path));
    if (is_valid_scope(scope)) {
        check(scope[0] == '/' && scope.find('%') == std::string::npos && scope.size() <= max_scope_length);
        // A valid scope is itself an unambiguous path, unless it has a ';' (stored ones are still
        // read; such a scope covers nothing).
        const bool semicolon = scope.find(';') != std::string::npos;
        check(reference_unambiguous(scope) == !semicolon);
        check(scope_covers(scope, path) == reference_covers(scope, path));
        check(scope_covers(scope, scope) == !semicolon);
        // The token's verdict follows the scope, and safe-methods follows the method.
        TokenRecord record;
        record.scopes = {scope};
        const bool covered = scope_covers(scope, path);
        check((check_scope(record, "GET", path) == ScopeVerdict::allowed) == covered);
        // A Destination naming the path is judged as the path, once decoded.
        const std::string_view destination[] = {path};
        const ScopeVerdict moved = check_destination(record, destination);
        if (moved == ScopeVerdict::allowed) {
            const auto raw = destination_path(path);
            check(raw && reference_unambiguous(std::string(*raw)));
            const auto decoded = percent_decoded(*raw);
            check(decoded && reference_covers(scope, *decoded));
        }
        record.read_only = true;
        check(check_scope(record, "POST", path) == ScopeVerdict::not_safe_method);
    }
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// lib/cluster/: the token set's layout in etcd.
#include "cluster/mirror_keys.hpp"

#include <stdexcept>

#include "token/names.hpp"
#include "token/token.hpp"

namespace cptoken::etcd {

namespace {

constexpr std::string_view tokens_dir = "tokens/", names_dir = "names/";

}  // namespace

std::string gen_key(std::string_view prefix) { return std::string(prefix) + "gen"; }

std::string schema_key(std::string_view prefix) { return std::string(prefix) + "meta/schema_version"; }

std::string usage_prefix(std::string_view prefix) {
    std::string out(prefix);
    if (!out.empty() && out.back() == '/') out.pop_back();
    return out + "-usage/";
}

std::string etcd_key(std::string_view prefix, const StoreWrite &write) {
    if (write.database == StoreWrite::Database::tokens) {
        Digest digest{};
        if (write.key.size() != digest.size()) throw std::invalid_argument("a tokens key that is no digest");
        std::copy(write.key.begin(), write.key.end(), digest.begin());
        return std::string(prefix) + std::string(tokens_dir) + digest_hex(digest);
    }
    const auto nul = write.key.find('\0');
    if (nul == std::string::npos || !is_valid_user(std::string_view(write.key).substr(0, nul)) ||
        write.key.find('\0', nul + 1) != std::string::npos || nul + 1 == write.key.size())
        throw std::invalid_argument("a names key that is not a user and a name");
    return std::string(prefix) + std::string(names_dir) + write.key.substr(0, nul) + "/" + write.key.substr(nul + 1);
}

std::optional<StoreWrite> store_write(std::string_view prefix, std::string_view key, std::string value,
                                      bool deleted) {
    if (!key.starts_with(prefix)) return std::nullopt;
    key.remove_prefix(prefix.size());
    StoreWrite write;
    if (key.starts_with(tokens_dir)) {
        const auto digest = digest_from_hex(key.substr(tokens_dir.size()));
        // Not a digest: no key of ours. Kept under an impossible name, so that
        // apply_mirror() counts it refused rather than it passing unseen.
        write.database = StoreWrite::Database::tokens;
        write.key = digest ? std::string(reinterpret_cast<const char *>(digest->data()), digest->size()) : std::string();
    } else if (key.starts_with(names_dir)) {
        key.remove_prefix(names_dir.size());
        const auto slash = key.find('/');
        write.database = StoreWrite::Database::names;
        if (slash != std::string_view::npos && is_valid_user(key.substr(0, slash)))
            write.key = std::string(key.substr(0, slash)) + '\0' + std::string(key.substr(slash + 1));
    } else {
        return std::nullopt;
    }
    if (!deleted) write.value.emplace(std::move(value));
    return write;
}

void check_prefix(std::string_view prefix) {
    if (prefix.size() < 2 || prefix.front() != '/' || prefix.back() != '/' ||
        prefix.find("//") != std::string_view::npos)
        throw std::invalid_argument("the etcd prefix must start and end with '/', without \"//\" (like /cptoken/v1/)");
}

}  // namespace cptoken::etcd

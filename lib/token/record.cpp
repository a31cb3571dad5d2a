// SPDX-License-Identifier: Apache-2.0
#include "token/record.hpp"

#include <algorithm>

#include "token/codec.hpp"
#include "token/names.hpp"
#include "token/scope.hpp"

namespace cptoken {
namespace {

constexpr std::uint8_t record_format = 1;

// Field tags. Unknown tags are kept aside (later_fields) so that a later
// version can add fields; from first_restriction_tag up they are
// restrictions, which verify_token refuses when it does not know them. The
// end tag closes every record, so that a record cut between two fields
// (which would drop its expiry or allowlist) is refused, not widened.
// Tags 6 and 7 (rotation) are informational on purpose: a reader that does
// not know them still refuses a rotated token once its grace ends, since the
// grace end is the record's expiry. The service, scopes and read-only flag
// are restrictions: an older reader refuses such a token instead of letting
// it reach other paths or the other service. A cpanel token carries no
// service field, so that it encodes as before and older readers admit it.
enum Tag : std::uint8_t {
    tag_end = 0,
    tag_user = 1,
    tag_name = 2,
    tag_created = 3,
    tag_expires = 4,
    tag_network = 5,
    tag_predecessor = 6,
    tag_rotated_at = 7,
    tag_limit = 8,
    tag_imported_from = 9,
    tag_service = 0x80,    // 1 byte: 1 whm (cpanel is the field's absence)
    tag_scope = 0x81,      // a URL-path prefix, repeated
    tag_read_only = 0x82,  // empty
};

void put_field(std::string &out, Tag tag, std::string_view value) {
    out.push_back(static_cast<char>(tag));
    put_be(out, value.size(), 2);
    out.append(value);
}

std::string encode_network(const Network &network) {
    std::string out;
    out.push_back(static_cast<char>(network.base.family));
    out.push_back(static_cast<char>(network.prefix));
    out.append(reinterpret_cast<const char *>(network.base.bytes.data()), network.base.family == 4 ? 4 : 16);
    return out;
}

std::optional<Network> decode_network(std::string_view in) noexcept {
    if (in.size() < 2) return std::nullopt;
    Network network;
    network.base.family = static_cast<std::uint8_t>(in[0]);
    network.prefix = static_cast<std::uint8_t>(in[1]);
    const std::size_t length = network.base.family == 4 ? 4 : network.base.family == 6 ? 16 : 0;
    if (length == 0 || in.size() != 2 + length || network.prefix > length * 8) return std::nullopt;
    for (std::size_t i = 0; i < length; ++i) network.base.bytes[i] = static_cast<std::uint8_t>(in[2 + i]);
    if (!is_valid_network(network)) return std::nullopt;
    return network;
}

}  // namespace

const char *service_name(Service service) noexcept { return service == Service::whm ? "whm" : "cpanel"; }

std::optional<Service> parse_service(std::string_view name) noexcept {
    if (name == "cpanel") return Service::cpanel;
    if (name == "whm") return Service::whm;
    return std::nullopt;
}

bool is_valid_limit(std::string_view name) noexcept {
    if (name.empty() || name.size() > 100) return false;
    for (const char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '-' || c == '.' || c == ':';
        if (!ok) return false;
    }
    return true;
}

std::optional<std::uint8_t> TokenRecord::unknown_restriction() const noexcept {
    // later_fields comes from decode_record, which checked every length.
    for (std::size_t pos = 0; pos + 3 <= later_fields.size();) {
        const auto tag = static_cast<std::uint8_t>(later_fields[pos]);
        if (tag >= first_restriction_tag) return tag;
        pos += 3 + get_be(later_fields, pos + 1, 2);
    }
    return std::nullopt;
}

std::string encode_record(const TokenRecord &record) {
    std::string out;
    out.push_back(static_cast<char>(record_format));
    put_field(out, tag_user, record.user);
    put_field(out, tag_name, record.name);
    put_field(out, tag_created, be64(record.created));
    if (!record.never_expires()) put_field(out, tag_expires, be64(record.expires));
    for (const Network &network : record.allowed_ips) put_field(out, tag_network, encode_network(network));
    for (const Digest &digest : record.predecessors)
        put_field(out, tag_predecessor, std::string_view(reinterpret_cast<const char *>(digest.data()), digest.size()));
    if (record.rotated()) put_field(out, tag_rotated_at, be64(record.rotated_at));
    for (const std::string &limit : record.limits) put_field(out, tag_limit, limit);
    if (!record.imported_from.empty()) put_field(out, tag_imported_from, record.imported_from);
    if (record.service != Service::cpanel) put_field(out, tag_service, std::string(1, static_cast<char>(record.service)));
    for (const std::string &scope : record.scopes) put_field(out, tag_scope, scope);
    if (record.read_only) put_field(out, tag_read_only, {});
    out.append(record.later_fields);
    put_field(out, tag_end, {});
    return out;
}

std::optional<TokenRecord> decode_record(std::string_view payload) {
    if (payload.empty() || static_cast<std::uint8_t>(payload[0]) != record_format) return std::nullopt;
    TokenRecord record;
    bool has_user = false, has_name = false, has_created = false, has_expires = false, has_rotated_at = false,
         has_imported_from = false, has_service = false, has_end = false;
    std::size_t pos = 1;
    while (pos < payload.size()) {
        if (has_end) return std::nullopt;  // bytes after the end
        if (payload.size() - pos < 3) return std::nullopt;
        const auto tag = static_cast<std::uint8_t>(payload[pos]);
        const std::size_t length = get_be(payload, pos + 1, 2);
        pos += 3;
        if (payload.size() - pos < length) return std::nullopt;
        const std::string_view value = payload.substr(pos, length);
        pos += length;
        switch (tag) {
            case tag_end:
                if (length != 0) return std::nullopt;
                has_end = true;
                break;
            case tag_user:
                if (has_user || !is_valid_user(value)) return std::nullopt;
                record.user = value, has_user = true;
                break;
            case tag_name:
                if (has_name || !is_valid_token_name(value)) return std::nullopt;
                record.name = value, has_name = true;
                break;
            case tag_created: {
                const auto created = from_be64(value);
                if (has_created || !created) return std::nullopt;
                record.created = *created, has_created = true;
                break;
            }
            case tag_expires: {
                const auto expires = from_be64(value);
                if (has_expires || !expires || *expires == 0) return std::nullopt;
                record.expires = *expires, has_expires = true;
                break;
            }
            case tag_network: {
                const auto network = decode_network(value);
                if (!network || record.allowed_ips.size() == max_allowed_networks) return std::nullopt;
                record.allowed_ips.push_back(*network);
                break;
            }
            case tag_predecessor: {
                Digest digest;
                if (value.size() != digest.size() || record.predecessors.size() == max_predecessors) return std::nullopt;
                std::copy(value.begin(), value.end(), digest.begin());
                record.predecessors.push_back(digest);
                break;
            }
            case tag_rotated_at: {
                const auto rotated_at = from_be64(value);
                if (has_rotated_at || !rotated_at || *rotated_at == 0) return std::nullopt;
                record.rotated_at = *rotated_at, has_rotated_at = true;
                break;
            }
            case tag_limit:
                if (!is_valid_limit(value) || record.limits.size() == max_limits) return std::nullopt;
                record.limits.emplace_back(value);
                break;
            case tag_imported_from:
                if (has_imported_from || value.empty() || value[0] != '/' ||
                    value.find('\0') != std::string_view::npos)
                    return std::nullopt;
                record.imported_from = value, has_imported_from = true;
                break;
            case tag_service:
                // cpanel is the field's absence: a stored 0 is not a record this code writes.
                if (has_service || value.size() != 1 || static_cast<std::uint8_t>(value[0]) != 1) return std::nullopt;
                record.service = Service::whm, has_service = true;
                break;
            case tag_scope:
                if (!is_valid_scope(value) || record.scopes.size() == max_scopes) return std::nullopt;
                record.scopes.emplace_back(value);
                break;
            case tag_read_only:
                if (record.read_only || length != 0) return std::nullopt;
                record.read_only = true;
                break;
            default:  // a field from a later version: kept as it came
                record.later_fields.append(payload.substr(pos - 3 - length, 3 + length));
                break;
        }
    }
    if (!has_end || !has_user || !has_name || !has_created) return std::nullopt;
    return record;
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
#include "store/lsheader.hpp"

#include "token/codec.hpp"

namespace cptoken {
namespace {

constexpr std::size_t extension_block_size = 8;

}  // namespace

std::string ls_encode(std::uint64_t timestamp_ns, std::uint64_t txn_id, std::uint8_t flags,
                      std::string_view payload) {
    std::string out;
    out.reserve(ls_header_size + payload.size());
    put_be(out, timestamp_ns, 8);
    put_be(out, txn_id, 8);
    out.push_back(0);  // header version
    out.push_back(static_cast<char>(flags));
    put_be(out, 0, 4);  // reserved
    put_be(out, 0, 2);  // extension blocks: we never write any
    out.append(payload);
    return out;
}

std::string ls_tombstone(std::uint64_t timestamp_ns, std::uint64_t txn_id) {
    return ls_encode(timestamp_ns, txn_id, ls_flag_deleted, {});
}

std::optional<LsValue> ls_decode(std::string_view value) noexcept {
    if (value.size() < ls_header_size || value[16] != 0) return std::nullopt;
    const std::size_t header = ls_header_size + get_be(value, 22, 2) * extension_block_size;
    if (value.size() < header) return std::nullopt;
    LsValue out;
    out.timestamp_ns = get_be(value, 0, 8);
    out.txn_id = get_be(value, 8, 8);
    out.flags = static_cast<std::uint8_t>(value[17]);
    out.payload = value.substr(header);
    return out;
}

}  // namespace cptoken

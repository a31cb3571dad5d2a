// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: a stored value (Lightning Stream header + record) from
// an untrusted file must never crash the decoder, and whatever decodes must
// be a valid record that encodes back to an equal record (fields of a later
// version included).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/lsheader.hpp"
#include "token/names.hpp"
#include "token/record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    for (std::string_view payload : {input, cptoken::ls_decode(input) ? cptoken::ls_decode(input)->payload : input}) {
        const auto record = cptoken::decode_record(payload);
        if (!record) continue;
        if (!cptoken::is_valid_user(record->user) || !cptoken::is_valid_token_name(record->name) ||
            record->allowed_ips.size() > cptoken::max_allowed_networks)
            std::abort();
        // Fields of a later version: a restriction is one from 0x80 up.
        const auto restriction = record->unknown_restriction();
        if (restriction && *restriction < cptoken::first_restriction_tag) std::abort();
        const auto again = cptoken::decode_record(cptoken::encode_record(*record));
        if (!again || !(*again == *record)) std::abort();
    }
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the Authorization header comes straight from clients.
// Parsing must never crash, and what it returns must be usable as is.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "token/credentials.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view header(reinterpret_cast<const char *>(data), size);
    const auto all = cptoken::scheme_cpanel | cptoken::scheme_whm | cptoken::scheme_basic;
    const auto parsed = cptoken::parse_authorization(header, all);
    if (parsed.credentials) {
        const auto &c = *parsed.credentials;
        if (c.user.empty() || c.token.empty() || c.user.find(':') != std::string::npos ||
            c.user.find('\0') != std::string::npos || c.token.find('\0') != std::string::npos)
            std::abort();
    }
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: cPanel token files are written by another system (and,
// for cPanel users' files, partly by the users' own actions): reading one
// must never crash, only map it or throw ImportError, and what it maps must
// be what a record here may hold.
//
// Input: the first byte picks the service, the rest is the file's text.
#include <fuzzer/FuzzedDataProvider.h>

#include <string>

#include "admin/cpanel_import.hpp"
#include "token/names.hpp"
#include "token/network.hpp"

using namespace cptoken;

namespace {

void check(bool property) {
    if (!property) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    FuzzedDataProvider input(data, size);
    const Service service = input.ConsumeBool() ? Service::whm : Service::cpanel;
    const std::string text = input.ConsumeRemainingBytesAsString();
    std::vector<CpanelEntry> entries;
    try {
        entries = parse_cpanel_tokens(text, "/var/cpanel/authn/api_tokens_v2/cpanel/alice.json", service);
    } catch (const ImportError &) {
        return 0;  // refused, with a message: fine
    }
    for (const CpanelEntry &entry : entries) {
        check(is_valid_token_name(entry.name));
        check(entry.created >= 0 && entry.expires >= 0);
        check(entry.allowed_ips.size() <= max_allowed_networks);
        for (const Network &network : entry.allowed_ips) check(is_valid_network(network));
        check(entry.limits.size() <= max_limits);
        for (const std::string &limit : entry.limits) check(is_valid_limit(limit));
        check(entry.limited || entry.limits.empty());
        check(!entry.read_only || entry.limited);
    }
    return 0;
}

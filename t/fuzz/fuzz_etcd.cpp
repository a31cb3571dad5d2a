// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: what an etcd member (or anything answering on its port)
// sends the mirror agent. The first byte picks a chunk size; the rest is a
// watch stream cut into chunks, split into lines and parsed, and each line is
// also read as a range and a txn answer. Only EtcdError may come out.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cluster/etcd_wire.hpp"

using namespace cptoken::etcd;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t chunk = 1 + data[0] % 64;
    const std::string_view stream(reinterpret_cast<const char *>(data) + 1, size - 1);
    LineSplitter splitter(1 << 16);
    try {
        for (std::size_t at = 0; at < stream.size(); at += chunk) splitter.feed(stream.substr(at, chunk));
        splitter.finish();
    } catch (const EtcdError &) {
        return 0;  // a line past the bound
    }
    while (auto line = splitter.next_line()) {
        if (line->empty() || line->find('\n') != std::string::npos) std::abort();
        try {
            const WatchResponse r = parse_watch_line(*line);
            if (r.kind == WatchResponse::Kind::events && r.events.empty()) std::abort();
        } catch (const EtcdError &) {
        }
        const auto parsed = nlohmann::json::parse(*line, nullptr, false);
        try {
            range_response_from_json(parsed);
        } catch (const EtcdError &) {
        }
        try {
            txn_response_from_json(parsed);
        } catch (const EtcdError &) {
        }
        try {
            status_from_json(parsed);
        } catch (const EtcdError &) {
        }
        (void)error_from_response(400, *line);
    }
    return 0;
}

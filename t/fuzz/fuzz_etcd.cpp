// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: what an etcd member (or anything answering on its port)
// sends the mirror agent. The first byte picks a chunk size; the rest is a
// watch stream cut into chunks, split into lines and parsed, and each line is
// also read as every other answer. Only EtcdError may come out.
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
        try {
            range_response_from_json(*line);
        } catch (const EtcdError &) {
        }
        try {
            txn_response_from_json(*line);
        } catch (const EtcdError &) {
        }
        try {
            status_from_json(*line);
        } catch (const EtcdError &) {
        }
        for (auto parse : {+[](std::string_view text) { put_response_from_json(text); },
                           +[](std::string_view text) { delete_response_from_json(text); },
                           +[](std::string_view text) { authenticate_response_from_json(text); }}) {
            try {
                parse(*line);
            } catch (const EtcdError &) {
            }
        }
        (void)error_from_response(400, *line);
    }
    return 0;
}

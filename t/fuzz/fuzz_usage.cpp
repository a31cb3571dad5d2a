// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the usage store as httpd's group can leave it, through
// the code path root runs (cptoken list, show, fsck). httpd's group can
// write usage.slots, so root never opens it: a child that became nobody of
// the store's group reads or checks it and sends lines, which root checks. Root
// must end with usage values that pass every check, or a StoreError; never a
// crash, whatever the file holds or the child sends.
//
// Run as root (the code path is root's: as anyone else the work is done in
// process).
//
// The first input byte chooses:
//   even: a corrupted usage.slots. A valid store (60 tokens' uses) is made
//         once per process; each input patches a copy (patched_file.hpp).
//         read_usage and fsck's check of the usage table then run on it,
//         each in its unprivileged child. (prune's rebuild reads the old
//         table the same way, after waiting for httpd's children.)
//   odd:  a hostile child. The rest, split at '\n', is what the child sends
//         (it adds its own end line); root reads it with read_usage's line
//         parser. Each line is also parsed here: one that passes must hold a
//         time in range and come back the same through usage_line.
#include <grp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "patched_file.hpp"
#include "store/fsck.hpp"
#include "store/store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"
#include "store/unprivileged.hpp"
#include "store/usage_store.hpp"

using namespace cptoken;
namespace fs = std::filesystem;

namespace {

constexpr Seconds jan1 = 1767225600;  // 2026-01-01T00:00:00Z

struct World {
    std::string dir;      // holds the store; nobody of its group may enter
    std::string store;    // the store
    std::string original; // its valid usage.slots
    gid_t gid = 0;

    World() {
        if (::geteuid() != 0) {
            std::fprintf(stderr, "fuzz_usage: run it as root: it fuzzes root's code path, which reads the usage "
                                 "store in a child that becomes nobody\n");
            std::abort();
        }
        const group *nogroup = ::getgrnam("nogroup");
        gid = nogroup ? nogroup->gr_gid : ::getgid();
        const char *tmp = std::getenv("TMPDIR");
        std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/cptoken-fuzz-usage-XXXXXX";
        if (!mkdtemp(pattern.data())) std::abort();
        dir = pattern;
        ::chmod(dir.c_str(), 0711);
        store = dir + "/store";
        init_store(store, gid);
        // Fixed digests, so that a crash input replays; half the tokens are live.
        TokenStore tokens(store, Access::read_write);
        UsageStore usage(store, Access::read_write);
        for (int i = 0; i < 60; ++i) {
            const Digest digest = token_digest("TOKEN" + std::to_string(i));
            if (i % 2) tokens.add(digest, TokenRecord{"alice", "token-" + std::to_string(i), jan1, 0, {}});
            usage.merge(usage_key(digest),
                        Usage{jan1 + i, i % 3 ? "192.0.2.7" : "2001:db8::1", static_cast<std::uint64_t>(i + 1)});
        }
        std::ifstream in(store + "/" + usage_store_file, std::ios::binary);
        original.assign(std::istreambuf_iterator<char>(in), {});
    }
    ~World() {
        std::error_code ignored;
        fs::remove_all(dir, ignored);
    }
};

World &world() {
    static World instance;
    return instance;
}

void corrupt_store(World &w, const std::uint8_t *data, std::size_t size) {
    const std::string file = patched_file(w.original, data, size);
    {
        // In place: the file keeps its group and mode, which the child needs.
        std::ofstream out(w.store + "/" + usage_store_file, std::ios::binary | std::ios::trunc);
        out.write(file.data(), static_cast<std::streamsize>(file.size()));
    }
    const Seconds latest = now_seconds() + usage_clock_skew;
    try {
        for (const auto &[digest, usage] : read_usage(w.store))
            if (usage.last_used > latest || usage.last_used < 946684800) std::abort();
    } catch (const StoreError &) {
    }
    try {
        fsck_usage_store(w.store);
    } catch (const StoreError &) {
    }
}

// A line root accepts must be a usage value as the child writes it.
void check_line(std::string_view line, Seconds latest) {
    const auto parsed = parse_usage_line(line, latest);
    if (!parsed) return;
    if (parsed->second.last_used > latest || parsed->second.last_used < 946684800) std::abort();
    const auto again = parse_usage_line(usage_line(parsed->first, parsed->second), latest);
    if (!again || again->first != parsed->first || again->second.last_used != parsed->second.last_used ||
        again->second.uses != parsed->second.uses || again->second.last_used_ip != parsed->second.last_used_ip)
        std::abort();
    for (const char c : parsed->second.last_used_ip)
        if (c < 0x21 || c > 0x7e) std::abort();
}

void hostile_child(World &w, std::string_view answer) {
    const Seconds latest = now_seconds() + usage_clock_skew;
    for (std::size_t start = 0; start <= answer.size();) {
        const auto end = std::min(answer.find('\n', start), answer.size());
        check_line(answer.substr(start, end - start), latest);
        start = end + 1;
    }
    try {
        run_unprivileged(
            w.gid,
            [answer](const std::function<void(std::string_view)> &send) {
                for (std::size_t start = 0; start <= answer.size();) {
                    const auto end = std::min(answer.find('\n', start), answer.size());
                    send(answer.substr(start, end - start));
                    start = end + 1;
                }
            },
            [latest](std::string_view line) {
                if (!parse_usage_line(line, latest)) throw StoreError(StoreError::Kind::corrupt, "not a usage line");
            });
    } catch (const StoreError &) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    World &w = world();
    if (size == 0) return 0;
    if (data[0] & 1)
        hostile_child(w, std::string_view(reinterpret_cast<const char *>(data + 1), size - 1));
    else
        corrupt_store(w, data + 1, size - 1);
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: a token store file with corrupt pages (a bad disk, a
// half-copied file, another host's bug). Opening it read-only and reading
// it as the module and the tool do (find, find_by_name, list) must fail
// closed: StoreError, or records as the codec decodes them; never a crash.
//
// A valid store is made once per process under /tmp; each input patches a
// copy of its tokens.mdb (patched_file.hpp says how).
//
// liblmdb 0.9.24 trusts its pages; what keeps this target from crashing is
// ours: the size checks, the assertion guard of Txn::read and the meta
// pages' page size checked before mdb_env_open. t/fuzz/crashes-store/ keeps
// one input of each kind of crash inside liblmdb found before those (named
// after the corruption); `make fuzz` replays them with the corpus.
// build/fuzz_store -fork=1 -ignore_crashes=1 collects new crash inputs.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "patched_file.hpp"
#include "store/store.hpp"
#include "token/token.hpp"

using namespace cptoken;
namespace fs = std::filesystem;

namespace {

struct World {
    std::string dir;
    std::string original;  // the valid tokens.mdb
    std::vector<StoredToken> tokens;

    World() {
        // Under $TMPDIR if set: a crash leaves its directory behind.
        const char *tmp = std::getenv("TMPDIR");
        std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/cptoken-fuzz-store-XXXXXX";
        if (!mkdtemp(pattern.data())) std::abort();
        dir = pattern;
        const std::string origin = dir + "/origin";
        init_store(origin, getgid());
        // Enough tokens for branch pages in both databases, and tombstones.
        // Fixed digests, so that a crash input replays.
        TokenStore writer(origin, Access::read_write);
        for (int i = 0; i < 60; ++i) {
            const std::string user = i % 3 ? "alice" : "bob";
            TokenRecord record{user, "token-" + std::to_string(i), 1767225600, i % 2 ? 0 : 1900000000, {}};
            if (i % 5 == 0) record.allowed_ips = {*parse_network("192.0.2.0/24"), *parse_network("2001:db8::/32")};
            const Digest digest = token_digest("TOKEN" + std::to_string(i));
            writer.add(digest, record);
            tokens.push_back({digest, record});
        }
        for (int i = 0; i < 60; i += 7) writer.revoke(tokens[i].record.user, tokens[i].record.name);
        std::ifstream in(origin + "/" + token_store_file, std::ios::binary);
        original.assign(std::istreambuf_iterator<char>(in), {});
        fs::create_directory(dir + "/copy");
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    World &w = world();
    const std::string file = patched_file(w.original, data, size);

    const std::string store = w.dir + "/copy";
    fs::remove(store + "/" + token_store_file + "-lock");  // a fresh reader table, as after a reboot
    {
        std::ofstream out(store + "/" + token_store_file, std::ios::binary | std::ios::trunc);
        out.write(file.data(), static_cast<std::streamsize>(file.size()));
    }
    try {
        TokenStore tokens(store, Access::read_only);
        for (const StoredToken &token : w.tokens) {
            try {
                tokens.find(token.digest);
            } catch (const StoreError &) {
            }
            try {
                tokens.find_by_name(token.record.user, token.record.name);
            } catch (const StoreError &) {
            }
        }
        try {
            tokens.list();
        } catch (const StoreError &) {
        }
        tokens.list("alice");
    } catch (const StoreError &) {
        // fail closed
    }  // anything else escapes and libFuzzer reports it
    return 0;
}

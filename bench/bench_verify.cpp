// SPDX-License-Identifier: Apache-2.0
// Microbenchmark: one verification in lib/ as the module runs it (parse the
// Authorization header, digest, B-tree lookup, decision) against stores of
// BENCH_SIZES tokens (default 1k, 100k, 1M, 10M). Stores are built once in
// BENCH_DIR/verify-N and reused. Prints Google Benchmark's table, then the
// figures the speed targets are about.
//
// Two working sets per store, because how many distinct tokens the traffic
// uses matters as much as how many the store holds:
//   verify/N         the same number of distinct tokens at every size
//                    (1,000, all of the smallest store), spread over the
//                    store: the store's size is the only thing that changes;
//   verify_spread/N  10,000 distinct tokens (all of them if fewer): at 10M
//                    their paths through the tree no longer fit in the CPU
//                    caches and TLB, so this is the cache-miss-bound case.
// Each with the store's record cache (as httpd runs it: a token in use is
// found without walking the B-tree while the store is unchanged), and again
// without it (*_uncached: the first use of a token after any write).
#include <benchmark/benchmark.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "token/credentials.hpp"
#include "store/store.hpp"
#include "token/token.hpp"
#include "auth/verify.hpp"

using namespace cptoken;

namespace {

// Distinct tokens presented, rotating: the spread set, and its first part,
// the set of the same size at every store size.
constexpr std::size_t sample_size = 10000;
constexpr std::size_t equal_set_size = 1000;
// Tokens written per transaction while building a store.
constexpr std::size_t batch_size = 250000;

std::string env_or(const char *name, const char *fallback) {
    const char *value = std::getenv(name);
    return value && *value ? value : fallback;
}

std::vector<std::size_t> sizes_from_env() {
    std::vector<std::size_t> sizes;
    std::stringstream list(env_or("BENCH_SIZES", "1000,100000,1000000,10000000"));
    for (std::string item; std::getline(list, item, ',');) sizes.push_back(std::stoull(item));
    return sizes;
}

bool exists(const std::string &path) {
    struct stat st{};
    return ::stat(path.c_str(), &st) == 0;
}

// The store of `size` tokens, built if missing; returns the headers of a
// sample of its tokens ("cpanel USER:TOKEN"), in random order.
std::vector<std::string> prepare_store(const std::string &dir, std::size_t size) {
    const std::string sample_file = dir + "/sample.txt";
    if (!exists(sample_file)) {
        std::fprintf(stderr, "building a store of %zu tokens in %s ...\n", size, dir.c_str());
        std::filesystem::remove_all(dir);
        init_store(dir, ::getgid());
        TokenStore store(dir, Access::read_write);
        std::mt19937_64 random(size);
        std::vector<std::string> sample;
        const Seconds now = now_seconds();
        for (std::size_t done = 0; done < size;) {
            std::vector<StoredToken> batch;
            for (; batch.size() < batch_size && done < size; ++done) {
                const std::string user = "user" + std::to_string(done % 5000);
                const std::string token = generate_token();
                batch.push_back({token_digest(token), {user, "t" + std::to_string(done), now, 0, {}}});
                // Reservoir sampling: an even spread over the whole store.
                if (sample.size() < sample_size)
                    sample.push_back("cpanel " + user + ":" + token);
                else if (std::uniform_int_distribution<std::size_t>(0, done)(random) < sample_size)
                    sample[std::uniform_int_distribution<std::size_t>(0, sample_size - 1)(random)] =
                        "cpanel " + user + ":" + token;
            }
            store.add_many(batch);
        }
        std::shuffle(sample.begin(), sample.end(), random);
        std::ofstream out(sample_file + ".tmp");
        for (const std::string &header : sample) out << header << "\n";
        out.close();
        std::rename((sample_file + ".tmp").c_str(), sample_file.c_str());
    }
    std::vector<std::string> headers;
    std::ifstream in(sample_file);
    for (std::string line; std::getline(in, line);) headers.push_back(line);
    return headers;
}

// One request's worth of work, as in the module's check_authn.
Verdict verify_header(const TokenStore &store, const std::string &header, const Address &client, Seconds now) {
    constexpr unsigned schemes = scheme_cpanel | scheme_basic;
    const ParsedCredentials parsed = parse_authorization(header, schemes);
    return verify_token(store, parsed.credentials->user, parsed.credentials->token, client, now,
                        services_for(parsed.credentials->scheme, schemes));
}

void verify_headers(benchmark::State &state, const TokenStore &store, const std::vector<std::string> &headers,
                    Reason expected) {
    const Address client = *parse_address("127.0.0.1");
    const Seconds now = now_seconds();
    // One untimed pass first: the store's pages come from disk on first
    // touch (a freshly built 10M store is not all in the page cache), and
    // that is start-up, not the steady state measured here.
    for (const std::string &header : headers) benchmark::DoNotOptimize(verify_header(store, header, client, now));
    std::size_t i = 0;
    for (auto _ : state) {
        const Verdict verdict = verify_header(store, headers[i], client, now);
        if (verdict.reason != expected) {
            state.SkipWithError("unexpected verdict");
            break;
        }
        benchmark::DoNotOptimize(verdict);
        if (++i == headers.size()) i = 0;
    }
}

// Keeps each run's time per iteration for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
public:
    std::map<std::string, double> ns;
    void ReportRuns(const std::vector<Run> &runs) override {
        for (const Run &run : runs)
            if (!run.error_occurred) ns[run.benchmark_name()] = run.GetAdjustedRealTime();
        ConsoleReporter::ReportRuns(runs);
    }
};

}  // namespace

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    const std::string base = env_or("BENCH_DIR", "build/bench");
    std::filesystem::create_directories(base);
    const std::vector<std::size_t> sizes = sizes_from_env();
    SummaryReporter reporter;

    // One store open at a time: LMDB allows one environment per file per process.
    for (std::size_t size : sizes) {
        const std::string dir = base + "/verify-" + std::to_string(size);
        const std::vector<std::string> spread = prepare_store(dir, size);
        const std::vector<std::string> equal(spread.begin(),
                                             spread.begin() + std::min(equal_set_size, spread.size()));
        std::vector<std::string> bad;
        for (std::size_t i = 0; i < 1000; ++i) bad.push_back("cpanel user1:" + generate_token());
        const std::string n = std::to_string(size);
        {
            TokenStore store(dir, Access::read_only);  // as the module opens it: with its record cache
            benchmark::ClearRegisteredBenchmarks();
            benchmark::RegisterBenchmark(("verify/" + n).c_str(), [&](benchmark::State &state) {
                verify_headers(state, store, equal, Reason::accepted);
            });
            benchmark::RegisterBenchmark(("verify_spread/" + n).c_str(), [&](benchmark::State &state) {
                verify_headers(state, store, spread, Reason::accepted);
            });
            benchmark::RegisterBenchmark(("verify_unknown/" + n).c_str(), [&](benchmark::State &state) {
                verify_headers(state, store, bad, Reason::unknown);
            });
            benchmark::RunSpecifiedBenchmarks(&reporter);
        }
        {
            TokenStore store(dir, Access::read_only, 0);  // every lookup walks the B-tree
            benchmark::ClearRegisteredBenchmarks();
            benchmark::RegisterBenchmark(("verify_uncached/" + n).c_str(), [&](benchmark::State &state) {
                verify_headers(state, store, equal, Reason::accepted);
            });
            benchmark::RegisterBenchmark(("verify_spread_uncached/" + n).c_str(), [&](benchmark::State &state) {
                verify_headers(state, store, spread, Reason::accepted);
            });
            benchmark::RunSpecifiedBenchmarks(&reporter);
        }
    }

    const char *columns[][2] = {{"verify/", "1k in use"},
                                {"verify_spread/", "10k in use"},
                                {"verify_uncached/", "1k, no cache"},
                                {"verify_spread_uncached/", "10k, no cache"},
                                {"verify_unknown/", "unknown token"}};
    std::printf("\nOne verification (parse, digest, lookup, decision), ns per call\n"
                "(valid tokens with the store's record cache, as in httpd, and without it,\n"
                "as for the first use of a token after any write to the store):\n");
    std::printf("  %10s", "tokens");
    for (const auto &column : columns) std::printf("  %14s", column[1]);
    std::printf("\n");
    for (std::size_t size : sizes) {
        std::printf("  %10zu", size);
        for (const auto &column : columns) std::printf("  %14.0f", reporter.ns[column[0] + std::to_string(size)]);
        std::printf("\n");
    }
    const std::string smallest = std::to_string(sizes.front()), largest = std::to_string(sizes.back());
    for (const auto &column : columns) {
        const double small = reporter.ns[column[0] + smallest], large = reporter.ns[column[0] + largest];
        if (small > 0 && large > 0)
            std::printf("  %-14s %s tokens / %s tokens = %.2fx\n", column[1], largest.c_str(), smallest.c_str(),
                        large / small);
    }
    std::printf("  (target: at most 1.5x from 1k to 10M tokens)\n");
    benchmark::Shutdown();
    return 0;
}

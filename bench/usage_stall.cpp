// SPDX-License-Identifier: Apache-2.0
// Last used under load, without httpd: what an httpd child's request threads
// pay in UsageWriter::note() while the child's writer thread records, and
// whether every token used shows as used afterwards (issue 23).
//
// THREADS threads note uses for ROTATE distinct tokens, in turn (every use is
// a token's first use in the interval when ROTATE is large, as in the 1M-token
// benchmark), each at RATE uses a second (0: as fast as it can; 10,000 is
// about what one wrk connection gets from one httpd child), for SECONDS, into
// a fresh store whose usage store already holds PREFILL values (a usage store
// that a million tokens have written to makes each of the writer's
// transactions touch as many leaf pages as it writes tokens). Interval: 60 s,
// the default. Then the writer is stopped, as at the end of a child, and the
// usage store is read back.
//
// Prints, for the request side: notes made, the time one note() took
// (p50, p99, p99.9, max) and how many took over 1 ms (a request that waited
// for the writer); for the truth of last used: tokens used, tokens the usage
// store shows as never used, and uses made against uses recorded; and the
// CPU time of the writer's thread (what it takes from the requests on a busy
// machine).
//
// Build and run (no Makefile target: it is a one-off probe of lib/):
//   make build/libcptoken.a
//   g++ -std=c++20 -O2 -g -Ilib bench/usage_stall.cpp build/libcptoken.a -llmdb -lcrypto -pthread -o build/usage_stall
//   build/usage_stall [ROTATE [SECONDS [RATE [THREADS [PREFILL [MAX_TOKENS]]]]]]
// Defaults: 1000000 5 10000 1 0 16384 (MAX_TOKENS: the writer's room). Timings depend on what else the machine runs.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"
#include "store/usage_recorder.hpp"
#include "store/usage_store.hpp"

using namespace cptoken;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<Digest> random_digests(std::size_t count, std::uint64_t seed) {
    std::mt19937_64 random(seed);
    std::vector<Digest> digests(count);
    for (Digest &digest : digests)
        for (std::size_t i = 0; i < digest.size(); i += 8) {
            const std::uint64_t word = random();
            std::memcpy(digest.data() + i, &word, 8);
        }
    return digests;
}

std::int64_t percentile(std::vector<std::int64_t> &sorted_ns, double fraction) {
    if (sorted_ns.empty()) return 0;
    return sorted_ns[std::min(sorted_ns.size() - 1, static_cast<std::size_t>(fraction * sorted_ns.size()))];
}

}  // namespace

int main(int argc, char **argv) {
    const auto arg = [&](int i, std::uint64_t fallback) {
        return argc > i ? std::strtoull(argv[i], nullptr, 10) : fallback;
    };
    const std::size_t rotate = arg(1, 1000000);
    const std::uint64_t seconds = arg(2, 5);
    const std::uint64_t rate = arg(3, 10000);
    const std::size_t threads = std::max<std::uint64_t>(1, arg(4, 1));
    const std::size_t prefill = arg(5, 0);
    const std::size_t max_tokens = arg(6, UsageRecorder::default_max_tokens);
    const std::int64_t interval_us = 60 * 1000000LL;

    char pattern[] = "/tmp/usage_stall.XXXXXX";
    if (!mkdtemp(pattern)) {
        std::perror("mkdtemp");
        return 2;
    }
    const std::string dir = std::string(pattern) + "/db";
    init_store(dir, getgid());
    if (prefill > 0) {
        UsageStore usage(dir, Access::read_write);
        const auto others = random_digests(prefill, 2);
        std::vector<NotedUses> batch;
        for (const Digest &digest : others) {
            batch.push_back(NotedUses{digest, now_nanoseconds(), "192.0.2.9", 1});
            if (batch.size() == 100000) {
                usage.add(batch);
                batch.clear();
            }
        }
        usage.add(batch);
    }

    const auto digests = random_digests(rotate, 1);
    std::vector<std::vector<std::int64_t>> latencies(threads);
    std::vector<std::uint64_t> made(threads, 0);
    std::vector<std::uint8_t> used(rotate, 0);  // written by one thread per index (disjoint slices)
    std::string reports;
    std::vector<double> worker_cpu(threads, 0);
    double process_cpu = 0;
    const auto cpu_seconds = [](int who) {
        rusage usage{};
        getrusage(who, &usage);
        return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    };
    {
        process_cpu = -cpu_seconds(RUSAGE_SELF);
        UsageWriter writer(dir, [&](const std::string &message) { reports += "  report: " + message + "\n"; },
                           max_tokens);
        std::vector<std::thread> workers;
        const auto end = Clock::now() + std::chrono::seconds(seconds);
        for (std::size_t t = 0; t < threads; ++t)
            workers.emplace_back([&, t] {
                // Each thread has its own slice of the tokens, so that uses and
                // "used" are counted without sharing.
                const std::size_t first = rotate * t / threads, last = rotate * (t + 1) / threads;
                std::size_t next = first;
                auto due = Clock::now();
                const auto step = rate ? std::chrono::nanoseconds(1000000000 / rate) : std::chrono::nanoseconds(0);
                latencies[t].reserve(rate ? rate * seconds + 16 : 1 << 22);
                for (;;) {
                    if (rate) {
                        due += step;
                        while (Clock::now() < due) {
                        }
                    }
                    if (Clock::now() >= end) break;
                    const auto before = Clock::now();
                    writer.note(digests[next], now_nanoseconds(), "192.0.2.1", interval_us, monotonic_microseconds());
                    latencies[t].push_back((Clock::now() - before).count());
                    used[next] = 1;
                    ++made[t];
                    if (++next == last) next = first;
                }
                worker_cpu[t] = cpu_seconds(RUSAGE_THREAD);
            });
        for (auto &worker : workers) worker.join();
        if (!writer.stop(std::chrono::seconds(60))) std::printf("the writer did not finish within 60 s\n");
        process_cpu += cpu_seconds(RUSAGE_SELF);
    }
    double writer_cpu = process_cpu;  // the rest: the writer's thread (this one waits in join and stop)
    for (double cpu : worker_cpu) writer_cpu -= cpu;

    std::vector<std::int64_t> all;
    std::uint64_t uses_made = 0;
    for (std::size_t t = 0; t < threads; ++t) {
        all.insert(all.end(), latencies[t].begin(), latencies[t].end());
        uses_made += made[t];
    }
    std::sort(all.begin(), all.end());
    std::uint64_t slow = 0;
    std::int64_t slow_ns = 0;
    for (std::int64_t ns : all)
        if (ns > 1000000) {
            ++slow;
            slow_ns += ns;
        }

    std::uint64_t tokens_used = 0, never_used = 0, uses_recorded = 0;
    {
        UsageStore usage(dir, Access::read_only);
        for (std::size_t i = 0; i < rotate; ++i) {
            if (!used[i]) continue;
            ++tokens_used;
            if (const auto found = usage.find(digests[i]))
                uses_recorded += found->uses;
            else
                ++never_used;
        }
    }
    std::filesystem::remove_all(pattern);

    std::printf("usage_stall: %zu tokens rotating, %llu s, %s, %zu thread(s), usage store prefilled with %zu\n", rotate,
                static_cast<unsigned long long>(seconds),
                rate ? (std::to_string(rate) + " uses/s per thread").c_str() : "as fast as possible", threads, prefill);
    std::printf("  notes: %llu; note() p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f ms\n",
                static_cast<unsigned long long>(all.size()), percentile(all, 0.5) / 1e3, percentile(all, 0.99) / 1e3,
                percentile(all, 0.999) / 1e3, all.empty() ? 0.0 : all.back() / 1e6);
    std::printf("  notes over 1 ms: %llu, %.1f ms in all\n", static_cast<unsigned long long>(slow), slow_ns / 1e6);
    std::printf("  tokens used: %llu; shown as never used: %llu\n", static_cast<unsigned long long>(tokens_used),
                static_cast<unsigned long long>(never_used));
    std::printf("  uses made: %llu; uses recorded: %llu\n", static_cast<unsigned long long>(uses_made),
                static_cast<unsigned long long>(uses_recorded));
    std::printf("  writer thread CPU: %.3f s\n", writer_cpu);
    std::fputs(reports.c_str(), stdout);
    return 0;
}

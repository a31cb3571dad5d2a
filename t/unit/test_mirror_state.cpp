// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/store/mirror_state.hpp: the line, reading it, and the
// freshness rule CPTokenMaxStaleness and the cptoken-status handler apply.

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <atomic>
#include <filesystem>

#include "store/mirror_proof.hpp"
#include "store/mirror_state.hpp"
#include "support.hpp"

using namespace cptoken;
using namespace std::chrono_literals;
using test_support::write_text;
using test_support::fx;

namespace {

MirrorState live_state(std::int64_t verified_ns) {
    MirrorState state;
    state.boot_id = this_boot_id();
    state.verified_ns = verified_ns;
    state.applied_revision = 42;
    state.cluster_id = "14841639068965178418";
    state.state = "live";
    return state;
}

void test_line_round_trip(void **) {
    const MirrorState state = live_state(123456789);
    const auto parsed = parse_mirror_state(mirror_state_line(state));
    assert_true(parsed.has_value());
    assert_string_equal(parsed->boot_id.c_str(), state.boot_id.c_str());
    assert_int_equal(parsed->verified_ns, 123456789);
    assert_int_equal(parsed->applied_revision, 42);
    assert_string_equal(parsed->cluster_id.c_str(), "14841639068965178418");
    assert_string_equal(parsed->state.c_str(), "live");
}

void test_not_a_line(void **) {
    assert_false(parse_mirror_state("").has_value());
    assert_false(parse_mirror_state("cptoken-mirror 2 boot=a verified=1 revision=1 cluster=1 state=live\n").has_value());
    assert_false(parse_mirror_state("cptoken-mirror 1 boot=a verified=-1 revision=1 cluster=1 state=live\n").has_value());
    assert_false(parse_mirror_state("cptoken-mirror 1 boot=a verified=1 revision=1 cluster=1\n").has_value());
    assert_false(parse_mirror_state("cptoken-mirror 1 boot=a verified=1 revision=1 cluster=1 state=dead\n").has_value());
}

void test_read(void **state) {
    const std::string dir = fx(state).tmp;
    assert_false(read_mirror_state(dir).has_value());  // none: a single host
    write_mirror_state(dir, live_state(7));
    const auto read = read_mirror_state(dir);
    assert_true(read.has_value());
    assert_int_equal(read->verified_ns, 7);
    write_text(dir + "/" + mirror_state_file, "garbage\n");
    EXPECT_STORE_ERROR(corrupt, read_mirror_state(dir));
    write_text(dir + "/" + mirror_state_file, std::string(600, 'x'));
    EXPECT_STORE_ERROR(corrupt, read_mirror_state(dir));
}

void test_this_boot_only(void **) {
    const std::int64_t now = boottime_nanoseconds();
    assert_true(verified_this_boot(live_state(now)).has_value());
    MirrorState other_boot = live_state(now);
    other_boot.boot_id = "00000000-0000-0000-0000-000000000000";
    assert_false(verified_this_boot(other_boot).has_value());
    assert_false(verified_age(other_boot).has_value());
    assert_false(verified_this_boot(live_state(0)).has_value());  // never proven
    const auto age = verified_age(live_state(now - 2'000'000'000));
    assert_true(age.has_value());
    assert_true(*age >= 2s && *age < 60s);
}

void test_proof_age(void **) {
    assert_int_equal(proof_age(100, 350)->count(), 250);
    assert_int_equal(proof_age(100, 100)->count(), 0);
    assert_false(proof_age(101, 100).has_value());  // ahead of now: no proof
}

void test_fresh_enough(void **) {
    assert_true(fresh_enough(std::nullopt, 0s));  // off: whatever the mirror says
    assert_true(fresh_enough(100s, 0s));
    assert_false(fresh_enough(std::nullopt, 30s));  // never verified
    assert_true(fresh_enough(29s, 30s));
    assert_true(fresh_enough(30s, 30s));
    assert_false(fresh_enough(30s + 1ns, 30s));
}


void test_cache_missing_and_corrupt(void **state) {
    const std::string dir = fx(state).tmp;
    MirrorProofCache cache(dir);
    MirrorFreshness judged = cache.judge(30s);
    assert_false(judged.fresh);
    assert_false(judged.age.has_value());
    assert_non_null(std::strstr(judged.why_unverified.c_str(), "no mirror.state"));
    write_text(dir + "/" + mirror_state_file, "garbage\n");
    std::this_thread::sleep_for(MirrorProofCache::reread_interval + 50ms);
    judged = cache.judge(30s);
    assert_false(judged.fresh);
    assert_non_null(std::strstr(judged.why_unverified.c_str(), "not a mirror state"));
}

void test_cache_notices_a_proof(void **state) {
    const std::string dir = fx(state).tmp;
    MirrorProofCache cache(dir);
    assert_false(cache.judge(30s).fresh);
    write_mirror_state(dir, live_state(boottime_nanoseconds()));
    std::this_thread::sleep_for(MirrorProofCache::reread_interval + 50ms);
    const MirrorFreshness judged = cache.judge(30s);
    assert_true(judged.fresh);
    assert_true(judged.age.has_value());
    assert_true(judged.why_unverified.empty());
}

// Keeping the proof never makes a store look fresher than it is: the age is
// judged at each call, between two reads of the file too.
// An attempt that a loaded machine delays past its 100 ms margin, or past
// reread_interval, tells nothing and is made again.
void test_cache_ages_between_reads(void **state) {
    const std::string dir = fx(state).tmp;
    for (int attempt = 0; attempt < 20; ++attempt) {
        MirrorProofCache cache(dir);
        write_mirror_state(dir, live_state(boottime_nanoseconds() - 900'000'000));
        const auto first_read = std::chrono::steady_clock::now();
        if (!cache.judge(1s).fresh) continue;
        std::this_thread::sleep_for(150ms);  // within reread_interval: the file is not read again
        const MirrorFreshness judged = cache.judge(1s);
        if (std::chrono::steady_clock::now() - first_read >= MirrorProofCache::reread_interval) continue;
        assert_false(judged.fresh);
        assert_true(*judged.age > 1s);
        return;
    }
    fail_msg("no attempt judged twice within reread_interval");
}

// Worker and event MPMs: many threads judge while the agent rewrites the
// file. A store whose every proof is too old is never judged fresh.
void test_cache_threads_never_see_a_stale_store_fresh(void **state) {
    const std::string dir = fx(state).tmp;
    MirrorProofCache cache(dir);
    std::atomic<bool> done{false}, fresh_seen{false};
    std::vector<std::thread> readers;
    for (int i = 0; i < 4; ++i)
        readers.emplace_back([&] {
            while (!done.load())
                if (cache.judge(5s).fresh) fresh_seen = true;
        });
    const auto end = std::chrono::steady_clock::now() + 1200ms;
    for (int round = 0; std::chrono::steady_clock::now() < end; ++round) {
        if (round % 3 == 2)
            std::filesystem::remove(dir + "/" + mirror_state_file);
        else
            write_mirror_state(dir, live_state(boottime_nanoseconds() - 6'000'000'000));
        std::this_thread::sleep_for(20ms);
    }
    done = true;
    for (auto &reader : readers) reader.join();
    assert_false(fresh_seen.load());
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_round_trip),
        cmocka_unit_test(test_not_a_line),
        cmocka_unit_test_setup_teardown(test_read, test_support::setup, test_support::teardown),
        cmocka_unit_test(test_this_boot_only),
        cmocka_unit_test(test_proof_age),
        cmocka_unit_test(test_fresh_enough),
        cmocka_unit_test_setup_teardown(test_cache_missing_and_corrupt, test_support::setup, test_support::teardown),
        cmocka_unit_test_setup_teardown(test_cache_notices_a_proof, test_support::setup, test_support::teardown),
        cmocka_unit_test_setup_teardown(test_cache_ages_between_reads, test_support::setup, test_support::teardown),
        cmocka_unit_test_setup_teardown(test_cache_threads_never_see_a_stale_store_fresh, test_support::setup,
                                        test_support::teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

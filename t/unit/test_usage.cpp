// SPDX-License-Identifier: Apache-2.0
// Unit tests for last used: the usage table (lib/store/usage_table.hpp) and
// the usage store over it (lib/store/usage_store.hpp) on real files, bytes
// planted as httpd's group could write them, processes and threads recording
// at once; the recorder an httpd child uses (lib/store/usage_recorder.hpp);
// the rebuild that prune and init run; and the root helper that reads usage
// for `cptoken sync` once it gave root up (lib/store/usage_helper.hpp).
#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "store/lsheader.hpp"
#include "store/map_fault_guard.hpp"
#include "store/store.hpp"
#include "store/usage_helper.hpp"
#include "store/usage_recorder.hpp"
#include "store/usage_store.hpp"
#include "store/usage_table.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"

using namespace test_support;
using namespace cptoken;

namespace {

constexpr Seconds jan1 = 1767225600;  // 2026-01-01T00:00:00Z

std::string table_path(const std::string &store) { return store + "/usage.slots"; }

std::optional<Address> ip(const char *text) { return parse_address(text); }

// ---- bytes as httpd's group could write them (usage_table.cpp's layout)

constexpr std::size_t header = 4096, slot_bytes = 64;

std::uint64_t slot_count_of(const std::string &path) {
    return (std::filesystem::file_size(path) - header) / slot_bytes;
}

std::uint64_t home_of(const std::string &path, const UsageKey &key) {
    std::uint64_t word;
    std::memcpy(&word, key.data(), 8);
    return word & (slot_count_of(path) - 1);
}

// `count` new digests whose home slots lie at least 4 slots apart and 4 from
// the table's end: bytes planted at one key's home (and the slots after it)
// then never land on another's. Random digests collide often enough in a
// new store's 1,024 slots (9 keys: 1 run in 30) to make a test flaky.
std::vector<Digest> digests_apart(const std::string &path, std::size_t count) {
    constexpr std::uint64_t gap = 4;
    const std::uint64_t slots = slot_count_of(path);
    std::vector<Digest> digests;
    std::vector<std::uint64_t> homes;
    while (digests.size() < count) {
        const Digest d = new_digest();
        const std::uint64_t home = home_of(path, usage_key(d));
        bool apart = home + gap <= slots;
        for (const std::uint64_t other : homes) apart = apart && (home > other ? home - other : other - home) >= gap;
        if (!apart) continue;
        digests.push_back(d);
        homes.push_back(home);
    }
    return digests;
}

void write_at(const std::string &path, std::uint64_t offset, const void *bytes, std::size_t size) {
    const int fd = open(path.c_str(), O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, size, static_cast<off_t>(offset)), static_cast<ssize_t>(size));
    close(fd);
}

// Writes a whole slot: state, address lock, key, uses, time, address bytes.
void plant_slot(const std::string &path, std::uint64_t index, std::uint32_t state, const UsageKey &key,
                std::uint64_t uses, std::int64_t when, std::uint32_t address_lock = 0,
                const std::array<std::uint8_t, 16> &address = {}) {
    unsigned char slot[slot_bytes] = {};
    std::memcpy(slot, &state, 4);
    std::memcpy(slot + 4, &address_lock, 4);
    std::memcpy(slot + 8, key.data(), 16);
    std::memcpy(slot + 24, &uses, 8);
    std::memcpy(slot + 32, &when, 8);
    std::memcpy(slot + 40, address.data(), 16);
    write_at(path, header + index * slot_bytes, slot, sizeof slot);
}

// ---------------------------------------------------------------- the table

void test_record_and_find(void **state) {
    const std::string store = fx(state).store;
    const Digest a = new_digest(), b = new_digest(), never = new_digest();
    {
        UsageStore usage(store, Access::read_write);
        assert_false(usage.find(a).has_value());
        assert_true(usage.record(a, jan1, ip("192.0.2.7")));
        assert_true(usage.record(b, jan1 + 100, ip("2001:db8::1")));
        assert_true(usage.record(a, jan1 + 4399, ip("10.0.0.1")));
    }
    const UsageStore usage(store, Access::read_only);
    const auto found = usage.find(a);
    assert_true(found.has_value());
    assert_int_equal(found->last_used, jan1 + 4399);
    assert_string_equal(found->last_used_ip.c_str(), "10.0.0.1");
    assert_int_equal(found->uses, 2);
    assert_string_equal(usage.find(b)->last_used_ip.c_str(), "2001:db8::1");
    assert_false(usage.find(never).has_value());
    std::size_t seen = 0;
    usage.each([&](const UsageKey &key, const Usage &) {
        assert_true(key == usage_key(a) || key == usage_key(b));
        ++seen;
    });
    assert_int_equal(seen, 2);
}

// Uses arrive in any order (threads, children): the count is the sum, the
// time and address those of the newest use; an unknown address is unknown.
void test_newest_use_wins_and_every_use_counts(void **state) {
    UsageStore usage(fx(state).store, Access::read_write);
    const Digest d = new_digest();
    usage.record(d, jan1 + 10, ip("2001:db8::2"));
    usage.record(d, jan1 + 5, ip("192.0.2.1"));
    usage.record(d, jan1 + 7, std::nullopt);
    auto found = usage.find(d);
    assert_int_equal(found->uses, 3);
    assert_int_equal(found->last_used, jan1 + 10);
    assert_string_equal(found->last_used_ip.c_str(), "2001:db8::2");
    usage.record(d, jan1 + 11, std::nullopt);
    found = usage.find(d);
    assert_int_equal(found->last_used, jan1 + 11);
    assert_string_equal(found->last_used_ip.c_str(), "");
    usage.record(d, jan1 + 12, ip("::ffff:192.0.2.9"));  // IPv4-mapped: shown as IPv4
    assert_string_equal(usage.find(d)->last_used_ip.c_str(), "192.0.2.9");
}

// Times planted as stored (httpd's group can write any 8 bytes there): only
// 2000-01-01..now + usage_clock_skew reads as a use.
void test_time_out_of_range_reads_as_never(void **state) {
    const std::string store = fx(state).store;
    const std::int64_t now = now_seconds();
    const std::vector<std::pair<std::int64_t, bool>> times = {
        {946684800, true},                     // 2000-01-01T00:00:00Z
        {now + usage_clock_skew - 5, true},    // another host's clock a little ahead
        {now + usage_clock_skew + 60, false},  // forged, or a clock far ahead
        {253402300799, false},                 // 9999-12-31T23:59:59Z
        {946684799, false}, {0, false}, {-1, false}, {INT64_MAX, false}, {INT64_MIN, false}};
    const std::vector<Digest> digests = digests_apart(table_path(store), times.size());
    for (std::size_t i = 0; i < times.size(); ++i) {
        const UsageKey key = usage_key(digests[i]);
        plant_slot(table_path(store), home_of(table_path(store), key), 2, key, 1, times[i].first);
    }
    const UsageStore usage(store, Access::read_only);
    for (std::size_t i = 0; i < times.size(); ++i)
        if (usage.find(digests[i]).has_value() != times[i].second)
            fail_msg("time %lld %s", static_cast<long long>(times[i].first), times[i].second ? "lost" : "shown");
}

// A forged use in the future would hide every later use (the newest wins):
// a real use replaces it.
void test_a_use_in_the_future_is_replaced(void **state) {
    const std::string store = fx(state).store;
    const Digest d = new_digest();
    const UsageKey key = usage_key(d);
    plant_slot(table_path(store), home_of(table_path(store), key), 2, key, 7, 253402300799);
    UsageStore usage(store, Access::read_write);
    assert_false(usage.find(d).has_value());
    const Seconds now = now_seconds();
    usage.record(d, now, ip("192.0.2.7"));
    const auto found = usage.find(d);
    assert_true(found.has_value());
    assert_int_equal(found->last_used, now);
    assert_string_equal(found->last_used_ip.c_str(), "192.0.2.7");
}

// Slots httpd's group filled with anything: states that are none of ours,
// a claim left half made, an address being written (its lock odd) are
// stepped over or read as unknown, never trusted, and uses still land.
void test_hostile_slots(void **state) {
    const std::string store = fx(state).store, path = table_path(store);
    const std::vector<Digest> apart = digests_apart(path, 3);
    const Digest &d = apart[0], &stuck = apart[1], &locked = apart[2];
    const UsageKey key = usage_key(d);
    const std::uint64_t home = home_of(path, key);
    plant_slot(path, home, 0xdeadbeef, usage_key(new_digest()), 1, jan1);  // a state of no meaning
    plant_slot(path, home + 1, 1, UsageKey{}, 0, 0);                       // claimed, never keyed
    UsageStore usage(store, Access::read_write);
    assert_true(usage.record(d, jan1, ip("192.0.2.7")));
    assert_int_equal(usage.find(d)->uses, 1);

    const UsageKey stuck_key = usage_key(stuck);
    plant_slot(path, home_of(path, stuck_key), 1, UsageKey{}, 0, 0);  // its home slot: a claim left half made
    assert_true(usage.record(stuck, jan1, ip("192.0.2.8")));           // lands further on
    assert_int_equal(usage.find(stuck)->uses, 1);

    const UsageKey locked_key = usage_key(locked);
    plant_slot(path, home_of(path, locked_key), 2, locked_key, 3, jan1, 7, {1, 2, 3});  // address lock odd
    auto found = usage.find(locked);
    assert_int_equal(found->uses, 3);
    assert_string_equal(found->last_used_ip.c_str(), "");  // being written: unknown
    usage.record(locked, jan1 + 1, ip("192.0.2.9"));          // the lock is taken: this address is left out
    found = usage.find(locked);
    assert_int_equal(found->uses, 4);
    assert_int_equal(found->last_used, jan1 + 1);
}

// A table without room for a new token: the use is not recorded and is
// counted; tokens it holds keep being recorded.
void test_no_room_is_counted(void **state) {
    UsageStore usage(fx(state).store, Access::read_write);
    assert_int_equal(usage.room(), 512);  // a new store's table: 1,024 slots
    std::vector<Digest> recorded;
    std::uint64_t refused = 0;
    for (int i = 0; i < 1200; ++i) {
        const Digest d = new_digest();
        if (usage.record(d, jan1, std::nullopt))
            recorded.push_back(d);
        else
            ++refused;
    }
    assert_true(refused >= 1200 - 1024);
    assert_int_equal(usage.lost(), refused);
    assert_true(usage.record(recorded.front(), jan1 + 1, std::nullopt));
    assert_int_equal(usage.find(recorded.front())->uses, 2);
}

// What is not a table is refused at open, before anything is read through a map.
void test_open_refuses_what_is_not_a_table(void **state) {
    const std::string store = fx(state).store, path = table_path(store);
    const auto size = std::filesystem::file_size(path);
    std::filesystem::rename(path, path + ".kept");
    EXPECT_STORE_ERROR(missing, UsageStore(store, Access::read_only));
    const auto corrupt = [&](const std::function<void()> &damage) {
        std::filesystem::copy_file(path + ".kept", path, std::filesystem::copy_options::overwrite_existing);
        damage();
        EXPECT_STORE_ERROR(corrupt, UsageStore(store, Access::read_write));
    };
    corrupt([&] { std::filesystem::resize_file(path, size - 64); });
    corrupt([&] { std::filesystem::resize_file(path, size + 4096); });
    corrupt([&] { std::filesystem::resize_file(path, 100); });
    corrupt([&] { write_at(path, 0, "CPTKUSGX", 8); });
    const std::uint32_t version = 2, slot_size = 32;
    corrupt([&] { write_at(path, 8, &version, 4); });
    corrupt([&] { write_at(path, 12, &slot_size, 4); });
    const std::uint64_t not_a_power = 1000, huge = std::uint64_t{1} << 60;
    corrupt([&] { write_at(path, 16, &not_a_power, 8); });
    corrupt([&] { write_at(path, 16, &huge, 8); });
    std::filesystem::remove(path);
    assert_int_equal(symlink((path + ".kept").c_str(), path.c_str()), 0);
    EXPECT_STORE_ERROR(access, UsageStore(store, Access::read_only));
}

// A table truncated or overwritten in place while open is no longer
// written through its map (that would kill the writer past the file's end).
void test_intact_notices_a_change_in_place(void **state) {
    const std::string store = fx(state).store, path = table_path(store);
    const auto size = std::filesystem::file_size(path);
    UsageStore usage(store, Access::read_write);
    assert_true(usage.intact());
    write_at(path, 0, "garbage!", 8);
    assert_false(usage.intact());
    write_at(path, 0, "CPTKUSG1", 8);
    assert_true(usage.intact());
    std::filesystem::resize_file(path, size / 2);
    assert_false(usage.intact());
}

// Processes and threads record at once, the same tokens and new ones: every
// use is counted, no slot is claimed twice.
void test_processes_and_threads_count_every_use(void **state) {
    const std::string store = fx(state).store;
    std::vector<Digest> shared;
    for (int i = 0; i < 40; ++i) shared.push_back(new_digest());
    constexpr int processes = 3, threads = 2, rounds = 4000;
    std::vector<pid_t> children;
    for (int p = 0; p < processes; ++p) {
        const pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            UsageStore usage(store, Access::read_write);
            std::vector<std::thread> workers;
            for (int t = 0; t < threads; ++t)
                workers.emplace_back([&, t] {
                    for (int i = 0; i < rounds; ++i)
                        usage.record(shared[static_cast<std::size_t>(i + t) % shared.size()], jan1 + i,
                                     ip("192.0.2.7"));
                });
            for (auto &worker : workers) worker.join();
            _exit(0);
        }
        children.push_back(pid);
    }
    for (const pid_t pid : children) {
        int status = 0;
        waitpid(pid, &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    const UsageStore usage(store, Access::read_only);
    std::uint64_t total = 0, keys = 0;
    usage.each([&](const UsageKey &, const Usage &used) {
        total += used.uses;
        ++keys;
        assert_true(used.last_used >= jan1 + rounds - 1 - static_cast<Seconds>(shared.size()));
    });
    assert_int_equal(keys, shared.size());
    assert_int_equal(total, processes * threads * rounds);
}

// ---------------------------------------------------------------- lines to root

void test_usage_line_round_trip_and_checks(void **) {
    const Digest d = new_digest();
    Usage usage;
    usage.last_used = jan1;
    usage.uses = 12;
    usage.last_used_ip = "2001:db8::1";
    const std::string line = usage_line(usage_key(d), usage);
    const auto parsed = parse_usage_line(line, now_seconds());
    assert_true(parsed.has_value());
    assert_true(parsed->first == usage_key(d));
    assert_int_equal(parsed->second.last_used, jan1);
    assert_int_equal(parsed->second.uses, 12);
    assert_string_equal(parsed->second.last_used_ip.c_str(), "2001:db8::1");
    const std::string hex = line.substr(0, 32);
    for (const std::string &bad : std::vector<std::string>{hex + " 1767225600 1", hex + "0 1767225600 1 -", hex.substr(1) + " 1767225600 1 -",
                                  hex + " 946684799 1 -", hex + " 99999999999 1 -", hex + " 1767225600 -1 -",
                                  hex + " 1767225600 1 not-an-address", hex + "  1767225600 1 -",
                                  "ABCDEF" + hex.substr(6) + " 1767225600 1 -", hex + " 1767225600 1 - "})
        if (parse_usage_line(bad, now_seconds())) fail_msg("accepted: %s", bad.c_str());
    assert_true(parse_usage_line(hex + " 1767225600 1 -", now_seconds()).has_value());
}

// ---------------------------------------------------------------- the recorder

// Polls: true once `done` holds, false after 5 s.
template <class Done>
bool within_5s(Done done) {
    for (int i = 0; i < 500; ++i) {
        if (done()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

struct Reports {
    std::mutex mutex;
    std::vector<std::string> said;
    UsageRecorder::Report sink() {
        return [this](const std::string &message) {
            std::lock_guard<std::mutex> lock(mutex);
            said.push_back(message);
        };
    }
    std::size_t count() {
        std::lock_guard<std::mutex> lock(mutex);
        return said.size();
    }
};

std::uint64_t uses_of(const std::string &store, const Digest &digest) {
    const auto found = UsageStore(store, Access::read_only).find(digest);
    return found ? found->uses : 0;
}

// A use is in the table when record() returns: no thread, no interval.
void test_recorder_records_at_once(void **state) {
    const std::string store = fx(state).store;
    Reports reports;
    UsageRecorder recorder(store, reports.sink());
    const Digest d = new_digest();
    recorder.record(d, jan1, ip("192.0.2.7"));
    assert_int_equal(uses_of(store, d), 1);
    recorder.record(d, jan1 + 1, std::nullopt);
    const auto found = UsageStore(store, Access::read_only).find(d);
    assert_int_equal(found->uses, 2);
    assert_string_equal(found->last_used_ip.c_str(), "");
    assert_int_equal(reports.count(), 0);
}

// The store directory replaced (a restored or new store moved into place),
// or its table made again (a rebuild): the recorder follows within
// usage_follow_interval.
void test_recorder_follows_a_replaced_directory(void **state) {
    Fixture &f = fx(state);
    UsageRecorder recorder(f.store, nullptr);
    const Digest d = new_digest();
    recorder.record(d, jan1, ip("192.0.2.7"));
    const std::string fresh = f.tmp + "/fresh", old = f.tmp + "/old";
    init_store(fresh, getgid());
    std::filesystem::rename(f.store, old);
    std::filesystem::rename(fresh, f.store);
    std::this_thread::sleep_for(usage_follow_interval + std::chrono::milliseconds(50));
    recorder.record(d, jan1 + 1, ip("192.0.2.7"));
    assert_int_equal(uses_of(f.store, d), 1);
    assert_int_equal(uses_of(old, d), 1);
}

// No table: the use is not recorded, the admin is told once, and recording
// starts again once a table is in place.
void test_recorder_reports_a_missing_table_once(void **state) {
    Fixture &f = fx(state);
    Reports reports;
    UsageRecorder recorder(f.tmp + "/nowhere", reports.sink());
    const Digest d = new_digest();
    recorder.record(d, jan1, ip("192.0.2.7"));
    recorder.record(d, jan1, ip("192.0.2.7"));
    assert_int_equal(reports.count(), 1);
    assert_non_null(strstr(reports.said[0].c_str(), "last-used"));
    std::filesystem::rename(f.store, f.tmp + "/nowhere");
    std::this_thread::sleep_for(usage_follow_interval + std::chrono::milliseconds(50));
    recorder.record(d, jan1, ip("192.0.2.7"));
    assert_int_equal(uses_of(f.tmp + "/nowhere", d), 1);
    assert_int_equal(reports.count(), 1);
}

// A table truncated in place (httpd's group can) is not written through its
// map again: the process lives on, the admin is told once. In a child: the
// write past the new end faults (SIGBUS), and the recorder must survive it
// as an httpd child would, not under cmocka's handler.
void test_recorder_leaves_a_table_changed_in_place(void **state) {
    const std::string store = fx(state).store;
    assert_child_succeeded(status_of_child([&] {
        install_map_fault_handler();  // over the default status_of_child put back
        Reports reports;
        UsageRecorder recorder(store, reports.sink());
        recorder.record(new_digest(), jan1, ip("192.0.2.7"));
        if (reports.count() != 0) return 1;
        std::filesystem::resize_file(table_path(store), 4096);  // the header's page only
        for (int i = 0; i < 20; ++i) recorder.record(new_digest(), jan1, ip("192.0.2.7"));
        if (reports.count() != 1 || !strstr(reports.said[0].c_str(), "changed in place")) return 2;
        std::filesystem::resize_file(table_path(store), 0);  // the header's page too
        recorder.record(new_digest(), jan1, ip("192.0.2.7"));
        return reports.count() == 1 ? 0 : 3;
    }));
}

// A table cut short where no use meets it is still left within a second,
// at the recorder's look at its path.
void test_recorder_notices_a_change_in_place_within_a_second(void **state) {
    const std::string store = fx(state).store;
    Reports reports;
    UsageRecorder recorder(store, reports.sink());
    recorder.record(new_digest(), jan1, ip("192.0.2.7"));
    const auto size = std::filesystem::file_size(table_path(store));
    std::filesystem::resize_file(table_path(store), size + 4096);  // grown: no use faults
    std::this_thread::sleep_for(usage_follow_interval + std::chrono::milliseconds(50));
    recorder.record(new_digest(), jan1, ip("192.0.2.7"));
    assert_int_equal(reports.count(), 1);
    assert_non_null(strstr(reports.said[0].c_str(), "changed in place"));
}

// No room: said once, with what to do.
void test_recorder_reports_no_room_once(void **state) {
    Reports reports;
    UsageRecorder recorder(fx(state).store, reports.sink());
    for (int i = 0; i < 1500; ++i) recorder.record(new_digest(), jan1, ip("192.0.2.7"));
    assert_int_equal(reports.count(), 1);
    assert_non_null(strstr(reports.said[0].c_str(), "cptoken prune"));
}

// ---------------------------------------------------------------- rebuild

// prune's rebuild: room for the store's tokens, the uses of live tokens
// kept, those of tokens gone dropped; the uses of tokens refused for want
// of room before are recorded after it.
void test_rebuild_keeps_live_uses_and_makes_room(void **state) {
    const std::string store = fx(state).store;
    std::vector<Digest> tokens;
    {
        TokenStore writer(store, Access::read_write);
        std::vector<StoredToken> many;
        for (int i = 0; i < 3000; ++i) {
            many.push_back(StoredToken{new_digest(), rec("alice", "t" + std::to_string(i))});
            tokens.push_back(many.back().digest);
        }
        writer.add_many(many);
    }
    const Digest gone = new_digest();
    {
        UsageStore usage(store, Access::read_write);
        for (int i = 0; i < 300; ++i) usage.record(tokens[i], jan1 + i, ip("192.0.2.7"));
        usage.record(gone, jan1, ip("192.0.2.7"));
    }
    const UsageRebuild rebuilt = rebuild_usage(store);
    assert_int_equal(rebuilt.kept, 300);
    assert_int_equal(rebuilt.dropped, 1);
    assert_true(rebuilt.room >= 3000);
    UsageStore usage(store, Access::read_write);
    assert_int_equal(usage.find(tokens[299])->last_used, jan1 + 299);
    assert_false(usage.find(gone).has_value());
    for (const Digest &d : tokens) assert_true(usage.record(d, jan1, std::nullopt));
    assert_int_equal(usage.lost(), 0);
    assert_false(std::filesystem::exists(store + "/usage.slots.old"));
    struct stat st{};
    assert_int_equal(stat(table_path(store).c_str(), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0660);
}

// The helper answers each question with the table as it is then (through
// read_usage's unprivileged child), and passes on why it cannot.
void test_helper_reads_the_table_whenever_asked(void **state) {
    const std::string store = fx(state).store;
    const Digest a = new_digest(), b = new_digest();
    {
        UsageStore usage(store, Access::read_write);
        usage.record(a, jan1, ip("192.0.2.7"));
    }
    UsageHelper helper(store);
    UsageByKey first = helper.read();
    assert_int_equal(first.size(), 1);
    assert_int_equal(first.at(usage_key(a)).uses, 1);
    assert_string_equal(first.at(usage_key(a)).last_used_ip.c_str(), "192.0.2.7");
    {
        UsageStore usage(store, Access::read_write);
        usage.record(a, jan1 + 60, ip("2001:db8::1"));
        usage.record(b, jan1 + 30, std::nullopt);
    }
    const UsageByKey second = helper.read();
    assert_int_equal(second.size(), 2);
    assert_int_equal(second.at(usage_key(a)).uses, 2);
    assert_int_equal(second.at(usage_key(a)).last_used, jan1 + 60);
    assert_int_equal(second.at(usage_key(b)).last_used, jan1 + 30);
    assert_int_equal(std::filesystem::remove(table_path(store)), 1);
    try {
        helper.read();
        fail_msg("a missing table read as no uses");
    } catch (const StoreError &e) {
        assert_non_null(std::strstr(e.what(), "usage.slots"));  // read_usage's reason, passed on
        assert_null(std::strstr(e.what(), "usage helper"));      // not a helper gone or garbled
    }
}

// A usage.mdb of 0.13 and before: its uses are imported, then it goes.
void test_rebuild_imports_the_old_usage_store(void **state) {
    const std::string store = fx(state).store;
    const Digest used = new_digest();
    TokenStore(store, Access::read_write).add(used, rec("alice", "old"));
    {
        MDB_env *env = nullptr;
        assert_int_equal(mdb_env_create(&env), 0);
        mdb_env_set_maxdbs(env, 4);
        assert_int_equal(mdb_env_open(env, (store + "/usage.mdb").c_str(), MDB_NOSUBDIR, 0660), 0);
        MDB_txn *txn = nullptr;
        mdb_txn_begin(env, nullptr, 0, &txn);
        MDB_dbi dbi;
        assert_int_equal(mdb_dbi_open(txn, "usage", MDB_CREATE, &dbi), 0);
        std::string payload(1, '\x02');
        for (const std::uint64_t field : {static_cast<std::uint64_t>(jan1), std::uint64_t{41}})
            for (int shift = 56; shift >= 0; shift -= 8) payload += static_cast<char>(field >> shift);
        payload += "192.0.2.7";
        const std::string value = ls_encode(1, 1, 0, payload);
        MDB_val key{used.size(), const_cast<std::uint8_t *>(used.data())};
        MDB_val val{value.size(), const_cast<char *>(value.data())};
        assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
        assert_int_equal(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
        for (const char *name : {"/usage.mdb", "/usage.mdb-lock"})  // as init made them: httpd's group wrote them
            assert_int_equal(chmod((store + name).c_str(), 0660), 0);
    }
    rebuild_usage(store);
    const auto found = UsageStore(store, Access::read_only).find(used);
    assert_true(found.has_value());
    assert_int_equal(found->uses, 41);
    assert_int_equal(found->last_used, jan1);
    assert_string_equal(found->last_used_ip.c_str(), "192.0.2.7");
    assert_false(std::filesystem::exists(store + "/usage.mdb"));
    assert_false(std::filesystem::exists(store + "/usage.mdb-lock"));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_record_and_find, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_newest_use_wins_and_every_use_counts, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_time_out_of_range_reads_as_never, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_use_in_the_future_is_replaced, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_slots, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_no_room_is_counted, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_what_is_not_a_table, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_intact_notices_a_change_in_place, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_processes_and_threads_count_every_use, setup_init, teardown),
        cmocka_unit_test(test_usage_line_round_trip_and_checks),
        cmocka_unit_test_setup_teardown(test_recorder_records_at_once, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_recorder_follows_a_replaced_directory, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_recorder_reports_a_missing_table_once, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_recorder_leaves_a_table_changed_in_place, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_recorder_notices_a_change_in_place_within_a_second, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_recorder_reports_no_room_once, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild_keeps_live_uses_and_makes_room, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild_imports_the_old_usage_store, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_helper_reads_the_table_whenever_asked, setup_init, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

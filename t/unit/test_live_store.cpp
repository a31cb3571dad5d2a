// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/store/live_store.hpp on real LMDB files in a temporary
// directory. LMDB forbids opening one environment twice in a process: a
// directory that the LiveStore holds open is never opened again here (a
// forked child writes to it instead), and stores written here are closed
// before the LiveStore can look at them. Times are made up: current() takes
// the clock as an argument.

#include <signal.h>
#include <stdlib.h>
#include <grp.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "store/live_store.hpp"
#include "token/record.hpp"
#include "store/store.hpp"
#include "token/token.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"
using namespace test_support;

using namespace cptoken;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t interval = LiveStore::check_interval_us;
constexpr std::int64_t t0 = 1767225600LL * 1000000;  // 2026-01-01, in microseconds







// Runs fn, which must throw StoreError of `kind`; returns its message.

// current(now), failing the test on any exception.
std::shared_ptr<const TokenStore> current_ok(LiveStore &live, std::int64_t now, int line) {
    try {
        auto store = live.current(now);
        if (!store) fail_msg("line %d: current(%lld) returned null", line, (long long)now);
        return store;
    } catch (const std::exception &e) {
        fail_msg("line %d: current(%lld) threw: %s", line, (long long)now, e.what());
    }
    return nullptr;
}
#define CURRENT_OK(live, now) current_ok(live, now, __LINE__)

// A new store at `dir` holding one token of alice named `name`; closed on return.
void make_store(const std::string &dir, const Digest &digest, const std::string &name) {
    assert_int_equal(init_store(dir, getgid()), InitOutcome::created);
    TokenStore s(dir, Access::read_write);
    s.add(digest, rec("alice", name));
}

std::string found_name(const TokenStore &s, const Digest &d) {
    const auto r = s.find(d);
    return r ? r->name : std::string();
}

// Whether this process maps the file `path` was at (by device and inode, so
// that renames and unlinks do not matter).
struct FileId {
    dev_t dev;
    ino_t ino;
};
FileId file_id(const std::string &path) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) fail_msg("stat %s: %s", path.c_str(), strerror(errno));
    return {st.st_dev, st.st_ino};
}
// How many mappings of that file this process has (one per open environment).
int mappings(FileId id) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    int n = 0;
    while (std::getline(maps, line)) {
        std::istringstream fields(line);
        std::string range, perms, offset, dev;
        unsigned long long ino = 0;
        if (!(fields >> range >> perms >> offset >> dev >> ino)) continue;
        unsigned maj = 0, min = 0;
        if (sscanf(dev.c_str(), "%x:%x", &maj, &min) != 2) continue;
        if (ino == id.ino && maj == major(id.dev) && min == minor(id.dev)) ++n;
    }
    return n;
}

bool mapped(FileId id) { return mappings(id) > 0; }

void rename_or_fail(const std::string &from, const std::string &to) {
    if (rename(from.c_str(), to.c_str()) != 0)
        fail_msg("rename %s %s: %s", from.c_str(), to.c_str(), strerror(errno));
}

// ---------------------------------------------------------------- tests

// No store yet: refused. A data file that cannot be opened is not tried
// again before the next check; another file appearing at the path is, at once
// (the end of a store directory swap made with two `mv`).
void test_missing_not_retried(void **state) {
    Fixture &f = fx(state);
    LiveStore live(f.store);
    assert_string_equal(live.dir().c_str(), f.store.c_str());
    EXPECT_STORE_ERROR(missing, live.current(t0));
    EXPECT_STORE_ERROR(missing, live.current(t0));
    // Not an LMDB file: refused, and that file is not opened again until the check.
    assert_int_equal(mkdir(f.store.c_str(), 0750), 0);
    const std::string file = f.store + "/" + token_store_file;
    { std::ofstream(file) << std::string(8192, 'x'); }
    const std::string first_error = EXPECT_STORE_ERROR(corrupt, live.current(t0 + 1));
    const FileId garbage = file_id(file);
    EXPECT_STORE_ERROR(corrupt, live.current(t0 + interval / 2));
    EXPECT_STORE_ERROR(corrupt, live.current(t0 + interval));  // the check: tried again, refused again
    assert_false(mapped(garbage));
    // The store appears (a directory moved into place): used from the next call.
    const Digest d = new_digest();
    make_store(f.tmp + "/ready", d, "first");
    fs::remove_all(f.store);
    rename_or_fail(f.tmp + "/ready", f.store);
    auto s = CURRENT_OK(live, t0 + interval + 1);
    assert_string_equal(found_name(*s, d).c_str(), "first");
    assert_false(s->find(new_digest()).has_value());
    // And from then on, between checks too.
    auto again = CURRENT_OK(live, t0 + interval + 2);
    assert_ptr_equal(again.get(), s.get());
}

// A missing store seen by open_now(): thrown, and the first current() tries
// again (open_now does not start the interval).
void test_open_now_missing(void **state) {
    Fixture &f = fx(state);
    LiveStore live(f.store);
    EXPECT_STORE_ERROR(missing, live.open_now());
    EXPECT_STORE_ERROR(missing, live.current(t0));
    // A directory without tokens.mdb is missing too.
    assert_int_equal(mkdir(f.store.c_str(), 0750), 0);
    EXPECT_STORE_ERROR(missing, live.current(t0 + interval));
    EXPECT_STORE_ERROR(missing, live.open_now());
}

// open_now() on an initialised store; tokens added before it opened, and
// after (by another process), are found.
void test_open_now_finds(void **state) {
    Fixture &f = fx(state);
    const Digest before = new_digest(), after = new_digest();
    make_store(f.store, before, "before");  // closed before the LiveStore opens it
    LiveStore live(f.store);
    live.open_now();
    auto s = CURRENT_OK(live, t0);
    assert_string_equal(found_name(*s, before).c_str(), "before");
    assert_false(s->find(after).has_value());
    write_in_child(f.store, [&](TokenStore &writer) { writer.add(after, rec("alice", "after")); });
    // Same environment, new transaction: the new token is visible at once.
    assert_string_equal(found_name(*s, after).c_str(), "after");
    auto s2 = CURRENT_OK(live, t0 + 1);
    assert_ptr_equal(s2.get(), s.get());
    assert_string_equal(found_name(*s2, after).c_str(), "after");
    // A check that finds the same files keeps the same store.
    auto s3 = CURRENT_OK(live, t0 + interval);
    assert_ptr_equal(s3.get(), s.get());
    auto s4 = CURRENT_OK(live, t0 + 5 * interval);
    assert_ptr_equal(s4.get(), s.get());
    assert_string_equal(found_name(*s4, before).c_str(), "before");
    // open_now() again on the same files changes nothing.
    live.open_now();
    assert_ptr_equal(CURRENT_OK(live, t0 + 5 * interval + 1).get(), s.get());
}

// A new directory moved into place is opened at the next call, between
// checks too: a token revoked there right after the swap must be refused by
// the next request. The old store stays usable while held and closes when
// let go.
void test_replacement(void **state) {
    Fixture &f = fx(state);
    const Digest old_d = new_digest(), new_d = new_digest();
    make_store(f.store, old_d, "old");
    LiveStore live(f.store);
    live.open_now();
    auto old_store = CURRENT_OK(live, t0);
    assert_string_equal(found_name(*old_store, old_d).c_str(), "old");
    const FileId old_file = file_id(f.store + "/" + token_store_file);
    assert_true(mapped(old_file));

    const std::string moved = f.tmp + "/store.old";
    rename_or_fail(f.store, moved);
    make_store(f.store, new_d, "new");  // a fresh directory: not the one the LiveStore holds

    // The next call, long before the check: the new one.
    auto new_store = CURRENT_OK(live, t0 + 1);
    assert_true(new_store.get() != old_store.get());
    assert_string_equal(found_name(*new_store, new_d).c_str(), "new");
    assert_false(new_store->find(old_d).has_value());
    // The old store, still held, still answers from its own files.
    assert_string_equal(found_name(*old_store, old_d).c_str(), "old");
    assert_false(old_store->find(new_d).has_value());
    assert_true(mapped(old_file));
    // Let go of it: closed (unmapped), and the live one unaffected.
    old_store.reset();
    assert_false(mapped(old_file));
    std::error_code ec;
    fs::remove_all(moved, ec);
    assert_false(static_cast<bool>(ec));
    for (std::int64_t t : {t0 + 2, t0 + interval, t0 + 2 * interval}) {
        auto later = CURRENT_OK(live, t);
        assert_ptr_equal(later.get(), new_store.get());
        assert_string_equal(found_name(*later, new_d).c_str(), "new");
    }
}

// The old store is closed at the swap if nobody holds it.
void test_replacement_closes_unused(void **state) {
    Fixture &f = fx(state);
    const Digest old_d = new_digest(), new_d = new_digest();
    make_store(f.store, old_d, "old");
    LiveStore live(f.store);
    assert_string_equal(found_name(*CURRENT_OK(live, t0), old_d).c_str(), "old");
    const FileId old_file = file_id(f.store + "/" + token_store_file);
    assert_true(mapped(old_file));
    rename_or_fail(f.store, f.tmp + "/store.old");
    make_store(f.store, new_d, "new");
    const FileId new_file = file_id(f.store + "/" + token_store_file);
    assert_false(mapped(new_file));
    assert_string_equal(found_name(*CURRENT_OK(live, t0 + 1), new_d).c_str(), "new");
    assert_false(mapped(old_file));
    assert_true(mapped(new_file));
}

// tokens.mdb replaced in place under the same lock file: refused (corrupt),
// at every later check, until a whole directory is moved into place.
void test_inplace_replacement_refused(void **state) {
    Fixture &f = fx(state);
    const Digest a = new_digest(), b = new_digest(), c = new_digest();
    make_store(f.store, a, "a");
    const std::string other = f.tmp + "/other";
    make_store(other, b, "b");  // closed: only its file is used below
    LiveStore live(f.store);
    live.open_now();
    auto held = CURRENT_OK(live, t0);
    assert_string_equal(found_name(*held, a).c_str(), "a");

    const std::string file = f.store + "/" + token_store_file;
    const FileId lock_before = file_id(file + "-lock");
    fs::copy_file(other + "/" + token_store_file, file + ".new");
    rename_or_fail(file + ".new", file);
    const FileId lock_after = file_id(file + "-lock");
    assert_int_equal(lock_before.ino, lock_after.ino);

    // Another data file at the path: looked at by the next call.
    const std::string message = EXPECT_STORE_ERROR(corrupt, live.current(t0 + 1));
    if (message.find("whole") == std::string::npos || message.find("director") == std::string::npos)
        fail_msg("the message does not say to replace the whole directory: %s", message.c_str());
    // Between checks and at later checks: still refused.
    EXPECT_STORE_ERROR(corrupt, live.current(t0 + interval));
    EXPECT_STORE_ERROR(corrupt, live.current(t0 + interval + 1));
    EXPECT_STORE_ERROR(corrupt, live.current(t0 + 2 * interval));
    EXPECT_STORE_ERROR(corrupt, live.current(t0 + 3 * interval + 7));
    EXPECT_STORE_ERROR(corrupt, live.open_now());
    // The store held from before still reads its own (old) file.
    assert_string_equal(found_name(*held, a).c_str(), "a");
    assert_false(held->find(b).has_value());
    held.reset();
    EXPECT_STORE_ERROR(corrupt, live.current(t0 + 4 * interval));  // last check: t0 + 3 * interval + 7

    // A whole directory moved into place: accepted again by the next call.
    rename_or_fail(f.store, f.tmp + "/store.bad");
    make_store(f.store, c, "c");
    auto fresh = CURRENT_OK(live, t0 + 4 * interval + 6);
    assert_string_equal(found_name(*fresh, c).c_str(), "c");
    assert_false(fresh->find(a).has_value());
    assert_false(fresh->find(b).has_value());
    assert_ptr_equal(CURRENT_OK(live, t0 + 6 * interval).get(), fresh.get());
}

// A restored backup moved into place: a directory with tokens.mdb alone
// (TokenStore::backup() writes one file) until init makes its commit record,
// as the docs say. A copy without it is refused. The store opened at the swap
// stays the one in use, and the files are opened once.
void test_restored_backup(void **state) {
    Fixture &f = fx(state);
    const Digest a = new_digest(), b = new_digest();
    make_store(f.store, a, "a");
    const std::string other = f.tmp + "/other", backup = f.tmp + "/backup.mdb";
    make_store(other, b, "b");
    {
        TokenStore s(other, Access::read_write);  // backup() takes the writer lock
        s.backup(backup);
    }
    LiveStore live(f.store);
    auto old_store = CURRENT_OK(live, t0);
    assert_string_equal(found_name(*old_store, a).c_str(), "a");

    const std::string restore = f.tmp + "/restore";
    assert_int_equal(mkdir(restore.c_str(), 0750), 0);
    fs::copy_file(backup, restore + "/" + token_store_file);
    {
        LiveStore unconverted(restore);
        const std::string message = EXPECT_STORE_ERROR(missing, unconverted.open_now());
        if (message.find("init") == std::string::npos) fail_msg("the refusal does not say to run init: %s", message.c_str());
    }
    init_store(restore, std::nullopt);
    rename_or_fail(f.store, f.tmp + "/store.old");
    rename_or_fail(restore, f.store);
    const FileId data = file_id(f.store + "/" + token_store_file);

    auto restored = CURRENT_OK(live, t0 + interval);
    assert_string_equal(found_name(*restored, b).c_str(), "b");
    assert_false(restored->find(a).has_value());
    assert_int_equal(mappings(data), 1);
    // Requests in flight hold `restored`; later calls, before and at the next
    // check, must go on with the same store, not open the files a second time.
    for (std::int64_t t : {t0 + interval + 1, t0 + 2 * interval - 1, t0 + 2 * interval, t0 + 3 * interval}) {
        auto s = CURRENT_OK(live, t);
        if (s.get() != restored.get())
            fail_msg("current(t0 + %lld us): the unchanged restored store was opened again (%d mappings of "
                     "tokens.mdb while the first is held)",
                     (long long)(t - t0), mappings(data));
        assert_string_equal(found_name(*s, b).c_str(), "b");
    }
    assert_int_equal(mappings(data), 1);
}

// The directory removed: missing at the next check, and found again by the
// next call once a new store is created there.
void test_dir_removed(void **state) {
    Fixture &f = fx(state);
    const Digest a = new_digest(), b = new_digest();
    make_store(f.store, a, "a");
    LiveStore live(f.store);
    auto held = CURRENT_OK(live, t0);
    std::error_code ec;
    fs::remove_all(f.store, ec);
    assert_false(static_cast<bool>(ec));
    // Not checked yet: the open store still answers.
    assert_string_equal(found_name(*CURRENT_OK(live, t0 + interval - 1), a).c_str(), "a");
    EXPECT_STORE_ERROR(missing, live.current(t0 + interval));
    EXPECT_STORE_ERROR(missing, live.current(t0 + interval + 1));
    EXPECT_STORE_ERROR(missing, live.current(t0 + 2 * interval));
    assert_string_equal(found_name(*held, a).c_str(), "a");  // unlinked, still mapped
    // (held keeps the old inodes in use, so the new files cannot reuse them)
    make_store(f.store, b, "b");
    auto s = CURRENT_OK(live, t0 + 2 * interval + 1);
    assert_string_equal(found_name(*s, b).c_str(), "b");
    assert_false(s->find(a).has_value());
}

// The same with nothing held: the old files are freed when the LiveStore
// lets go, and the new store's files may get their inode numbers back (ext4
// often reuses them). Whatever the numbers, a new store made by init at the
// path must be opened. Whether a round hits the harmful case (the new lock
// file gets the old lock's number, tokens.mdb does not) depends on the file
// system's allocator, so a failure here may not show on every run.
void test_dir_removed_and_recreated(void **state) {
    Fixture &f = fx(state);
    LiveStore live(f.store);
    std::int64_t now = t0;
    Digest previous{};
    FileId previous_data{}, previous_lock{};
    int reused = 0;
    for (int round = 0; round < 12; ++round) {
        const Digest d = new_digest();
        make_store(f.store, d, "round" + std::to_string(round));
        const FileId data = file_id(f.store + "/" + token_store_file);
        const FileId lock = file_id(f.store + "/" + token_store_file + "-lock");
        if (round > 0 && (data.ino == previous_data.ino || lock.ino == previous_lock.ino)) ++reused;
        previous_data = data, previous_lock = lock;
        try {
            auto s = live.current(now);
            if (found_name(*s, d) != "round" + std::to_string(round))
                fail_msg("round %d: the new token is not found", round);
            if (round > 0 && s->find(previous)) fail_msg("round %d: the old token is still found", round);
        } catch (const StoreError &e) {
            fail_msg("round %d (tokens.mdb inode %llu, lock inode %llu): %s: %s", round,
                     (unsigned long long)data.ino, (unsigned long long)lock.ino, kind_name(e.kind()), e.what());
        }
        previous = d;
        std::error_code ec;
        fs::remove_all(f.store, ec);
        assert_false(static_cast<bool>(ec));
        now += interval;
        EXPECT_STORE_ERROR(missing, live.current(now));
        now += interval;
    }
    print_message("inode numbers reused in %d of 11 rounds\n", reused);
}

// Readers on 8 threads while the directory is swapped under them: a call
// begun after a swap's rename() returned gets that store or a later one.
void test_threads(void **state) {
    Fixture &f = fx(state);
    constexpr int max_swaps = 8, threads = 8, calls = 2000;
    std::vector<Digest> gens;
    for (int i = 0; i <= max_swaps; ++i) gens.push_back(new_digest());
    make_store(f.store, gens[0], "gen0");
    LiveStore live(f.store);
    live.open_now();
    std::atomic<std::int64_t> clock{t0};
    std::atomic<int> swapped{0};  // swaps whose rename() has returned
    std::atomic<bool> go{false};
    std::atomic<int> running{threads};
    std::atomic<long> answered{0}, refused{0}, bad{0};
    std::mutex bad_mutex;
    std::string first_bad;
    auto note_bad = [&](const std::string &what) {
        ++bad;
        std::lock_guard<std::mutex> lock(bad_mutex);
        if (first_bad.empty()) first_bad = what;
    };

    auto reader = [&](int id) {
        std::shared_ptr<const TokenStore> kept;  // holds some stores across swaps
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < calls; ++i) {
            try {
                const int done = swapped.load();
                auto s = live.current(clock.load());
                int found = 0, generation = -1;
                for (std::size_t g = 0; g < gens.size(); ++g)
                    if (s->find(gens[g])) ++found, generation = static_cast<int>(g);
                if (found != 1) note_bad("a store with " + std::to_string(found) + " generation tokens");
                else if (generation < done)
                    note_bad("a call made after swap " + std::to_string(done) + " got generation " +
                             std::to_string(generation));
                else ++answered;
                if (i % 50 == id) kept = s;
                if (i % 50 == id + 25) kept.reset();
            } catch (const StoreError &) {
                ++refused;
            } catch (const std::exception &e) {
                note_bad(std::string("another exception: ") + e.what());
            }
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
        --running;
    };

    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back(reader, i);
    go = true;
    int swaps = 0, swaps_while_running = 0;
    while (swaps < max_swaps && (running.load() > 0 || swaps < 3)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ++swaps;
        if (running.load() > 0) ++swaps_while_running;
        // Made aside and moved into place, as the docs say: readers open a
        // new data file at the path at once, and must not see one half made.
        const std::string next = f.tmp + "/store.next";
        make_store(next, gens[swaps], "gen" + std::to_string(swaps));
        rename_or_fail(f.store, f.tmp + "/store.old" + std::to_string(swaps));
        rename_or_fail(next, f.store);
        ++swapped;
        // Every other swap within the same second: seen through the watch
        // (or the stat that follows a change), not at the check.
        if (swaps % 2 == 0) clock += interval;
    }
    for (auto &t : pool) t.join();

    print_message("%d swaps (%d while reading), %ld answers, %ld refusals\n", swaps, swaps_while_running,
                  answered.load(), refused.load());
    if (bad.load() != 0) fail_msg("%ld bad results, first: %s", bad.load(), first_bad.c_str());
    assert_int_equal(answered.load() + refused.load(), (long)threads * calls);
    assert_true(answered.load() > 0);
    assert_true(swaps_while_running >= 1);
    auto last = CURRENT_OK(live, clock.load());
    assert_string_equal(found_name(*last, gens[swaps]).c_str(), ("gen" + std::to_string(swaps)).c_str());
}

// ---------------------------------------------------------------- who could change the store

// An httpd user and group of the test's own (no account needed: the check
// compares numbers and only names them).
const ReaderIdentity httpd_user{4242, {4243, 4244}};

// A store-shaped directory at `dir` (the files need not be LMDB files:
// nothing is opened), root's, mode 02750, in a `parent` made with `mode`,
// `uid` and `gid`.
void make_store_files(const std::string &dir) {
    assert_int_equal(mkdir(dir.c_str(), 02750), 0);
    for (const char *name : {"tokens.mdb", "tokens.mdb-committed"}) std::ofstream(dir + "/" + name) << "x";
}

void make_dir(const std::string &path, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
    assert_int_equal(mkdir(path.c_str(), 0700), 0);
    assert_int_equal(chown(path.c_str(), uid, gid), 0);
    assert_int_equal(chmod(path.c_str(), mode), 0);
}

void expect_refused(const std::string &dir, const ReaderIdentity &reader, bool trust_own, const std::string &says) {
    try {
        refuse_store_reader_could_change(dir, reader, trust_own);
    } catch (const StoreError &e) {
        assert_int_equal(e.kind(), StoreError::Kind::access);
        if (std::string(e.what()).find(says) == std::string::npos)
            fail_msg("%s: the refusal does not say '%s': %s", dir.c_str(), says.c_str(), e.what());
        return;
    }
    fail_msg("%s: not refused (wanted: %s)", dir.c_str(), says.c_str());
}

void expect_trusted(const std::string &dir, const ReaderIdentity &reader, bool trust_own) {
    try {
        refuse_store_reader_could_change(dir, reader, trust_own);
    } catch (const std::exception &e) {
        fail_msg("%s: refused: %s", dir.c_str(), e.what());
    }
}

bool can_chown() {
    if (geteuid() == 0) return true;
    print_message("skipped: needs root to give files to another user\n");
    return false;
}

void test_store_files_of_the_reader(void **state) {
    if (!can_chown()) skip();
    Fixture &f = fx(state);
    make_store_files(f.store);
    expect_trusted(f.store, httpd_user, false);
    expect_trusted(f.store, ReaderIdentity{0, {0}}, false);  // root is not asked
    for (const char *name : {"", "/tokens.mdb", "/tokens.mdb-committed"}) {
        const std::string path = f.store + name;
        assert_int_equal(lchown(path.c_str(), 4242, -1), 0);
        expect_refused(f.store, httpd_user, false, path + " belongs to user uid 4242, whom httpd runs as");
        expect_refused(f.store, httpd_user, false, "CPTokenTrustOwnStore On");
        expect_trusted(f.store, httpd_user, true);
        expect_trusted(f.store, ReaderIdentity{4245, {4246}}, false);  // another user's store
        assert_int_equal(lchown(path.c_str(), 0, -1), 0);
    }
    expect_trusted(f.store + "/missing", httpd_user, false);  // left to the open
}

void test_directories_on_the_way(void **state) {
    if (!can_chown()) skip();
    Fixture &f = fx(state);
    struct Case {
        mode_t mode;
        uid_t uid;
        gid_t gid;
        const char *says;  // nullptr: trusted
        bool even_trusting_own;
    };
    const Case cases[] = {
        {0755, 0, 0, nullptr, false},
        {0755, 4242, 0, "belongs to user uid 4242", false},
        {0555, 4242, 0, "belongs to user uid 4242", false},  // an owner may chmod
        {0775, 0, 4243, "can be written by group gid 4243", false},
        {0775, 0, 4244, "can be written by group gid 4244", false},  // a supplementary group
        {0775, 0, 4245, nullptr, false},                             // not its group
        {01775, 0, 4243, nullptr, false},  // sticky: root's entry stays root's
        {0777, 0, 0, "can be written by anyone", true},
        {01777, 0, 0, nullptr, false},
        {0757, 0, 4243, "can be written by anyone", true},
    };
    int n = 0;
    for (const Case &c : cases) {
        const std::string parent = f.tmp + "/p" + std::to_string(n++);
        make_dir(parent, c.mode, c.uid, c.gid);
        make_store_files(parent + "/store");
        const std::string store = parent + "/store";
        if (!c.says) {
            expect_trusted(store, httpd_user, false);
            continue;
        }
        expect_refused(store, httpd_user, false, parent + " " + c.says);
        expect_refused(store, httpd_user, false, "another store in place of " + store);
        if (c.even_trusting_own)
            expect_refused(store, httpd_user, true, parent + " " + c.says);
        else
            expect_trusted(store, httpd_user, true);
    }
    // Sticky, but the entry is the reader's: it may rename its own.
    const std::string sticky = f.tmp + "/sticky";
    make_dir(sticky, 01777);
    make_store_files(sticky + "/store");
    assert_int_equal(lchown((sticky + "/store").c_str(), 4242, -1), 0);
    expect_refused(sticky + "/store", httpd_user, false,
                   sticky + "/store belongs to user uid 4242, whom httpd runs as, in " + sticky);
    expect_trusted(sticky + "/store", httpd_user, true);
    // Every level counts, not only the store's parent; "." and ".." are walked as the kernel does.
    const std::string high = f.tmp + "/high";
    make_dir(high, 0775, 0, 4243);
    make_dir(high + "/a", 0755);
    make_dir(high + "/a/b", 0755);
    make_store_files(high + "/a/b/store");
    expect_refused(high + "/a/b/store", httpd_user, false, high + " can be written by group gid 4243");
    expect_refused(f.tmp + "/p0/./../high/a/b/store", httpd_user, false, high + " can be written by group");
}

void test_symbolic_links_followed(void **state) {
    if (!can_chown()) skip();
    Fixture &f = fx(state);
    make_store_files(f.store);
    // A link in a directory the reader owns: it could point it elsewhere.
    make_dir(f.tmp + "/links", 0755, 4242);
    fs::create_directory_symlink(f.store, f.tmp + "/links/db");
    expect_refused(f.tmp + "/links/db", httpd_user, false, f.tmp + "/links belongs to user uid 4242");
    // A sound link (absolute or relative) to a store under a directory its group can write.
    make_dir(f.tmp + "/open", 0775, 0, 4243);
    make_store_files(f.tmp + "/open/store");
    make_dir(f.tmp + "/sound", 0755);
    fs::create_directory_symlink(f.tmp + "/open/store", f.tmp + "/sound/absolute");
    fs::create_directory_symlink("../open/store", f.tmp + "/sound/relative");
    for (const char *link : {"/sound/absolute", "/sound/relative"})
        expect_refused(f.tmp + link, httpd_user, false, f.tmp + "/open can be written by group gid 4243");
    // A sound link to a sound store.
    fs::create_directory_symlink(f.store, f.tmp + "/sound/fine");
    expect_trusted(f.tmp + "/sound/fine", httpd_user, false);
    // A loop ends.
    fs::create_directory_symlink(f.tmp + "/sound/loop", f.tmp + "/sound/loop");
    expect_refused(f.tmp + "/sound/loop", httpd_user, false, "too many levels of symbolic links");
}

// ---------------------------------------------------------------- the watch on the path

// Each change that makes the path lead to other files ends the quiet, seen
// at once (the kernel queues the event before rename() returns), and is a
// change of the path; another entry written beside the path ends the quiet
// until read, and is not; writes to the store through LMDB do neither.
void test_directory_watch(void **state) {
    Fixture &f = fx(state);
    const std::string deep = f.tmp + "/a/b";
    fs::create_directories(deep);
    const std::string store = deep + "/store";
    make_store(store, new_digest(), "first");
    fs::create_directory_symlink(deep, f.tmp + "/link");
    const std::string via_link = f.tmp + "/link/store";  // a/b reached through a link

    DirectoryWatch watch;
    assert_false(watch.quiet());  // nothing watched: nothing is known
    const auto watched = [&](const std::string &dir) {
        if (!watch.watch(dir, token_store_file)) fail_msg("cannot watch %s", dir.c_str());
        if (!watch.quiet()) fail_msg("a fresh watch on %s is not quiet", dir.c_str());
    };

    watched(store);
    {
        TokenStore s(store, Access::read_write);
        s.add(new_digest(), rec("alice", "second"));
    }
    if (!watch.quiet()) fail_msg("a write through LMDB ended the quiet: every commit would cost each reader a walk");

    struct Change {
        const char *what;
        std::string dir;  // watched
        bool of_the_path;
        std::function<void()> make;
    };
    const std::string aside = f.tmp + "/aside";
    const std::vector<Change> changes = {
        {"the store directory moved away", store, true,
         [&] { rename_or_fail(store, aside); rename_or_fail(aside, store); }},
        {"a file renamed over tokens.mdb", store, true,
         [&] {
             const std::string data = store + "/" + token_store_file;
             fs::copy_file(data, store + "/copy");
             rename_or_fail(store + "/copy", data);
         }},
        {"a directory two levels up renamed", store, true,
         [&] { rename_or_fail(f.tmp + "/a", aside); rename_or_fail(aside, f.tmp + "/a"); }},
        {"a link on the way pointed elsewhere", via_link, true,
         [&] {
             fs::create_directory_symlink(deep, f.tmp + "/link.new");
             rename_or_fail(f.tmp + "/link.new", f.tmp + "/link");
         }},
        {"the directory a link leads to replaced", via_link, true,
         [&] { rename_or_fail(deep, aside); rename_or_fail(aside, deep); }},
        {"the store directory replaced by a new one", store, true,
         [&] { fs::rename(store, aside); make_store(store, new_digest(), "again"); fs::remove_all(aside); }},
        {"a file created beside the store directory", store, false,
         [&] { std::ofstream(deep + "/new-file") << "x"; }},
        {"a state file renamed into the store directory, as the mirror agent does", store, false,
         [&] {
             std::ofstream(store + "/mirror.state.new") << "x";
             rename_or_fail(store + "/mirror.state.new", store + "/mirror.state");
         }},
        {"a directory made beside one on the way", store, false, [&] { fs::create_directory(f.tmp + "/c"); }},
    };
    for (const Change &change : changes) {
        watched(change.dir);
        change.make();
        if (watch.quiet()) fail_msg("still quiet after %s", change.what);
        if (watch.quiet()) fail_msg("quiet when asked again after %s: a change must stay seen", change.what);
        if (watch.path_changed() != change.of_the_path)
            fail_msg("%s: path_changed() says %s", change.what, change.of_the_path ? "no" : "yes");
        if (!change.of_the_path && !watch.quiet())
            fail_msg("not quiet again once %s was read", change.what);
    }

    // Watching another path forgets the first: its directories are no longer watched.
    const std::string other = f.tmp + "/other";
    make_store(other, new_digest(), "other");
    watched(other);
    rename_or_fail(store, deep + "/moved");  // within a/b, which is not on the way to `other`
    rename_or_fail(deep + "/moved", store);
    if (!watch.quiet()) fail_msg("a change on the path watched before ended the quiet of the new one");

    // A path that does not lead anywhere (yet) is not watched.
    assert_false(watch.watch(f.tmp + "/missing/store", token_store_file));
    assert_false(watch.quiet());
    assert_true(watch.path_changed());
    watched(store);  // and a new watch replaces a failed one
}

// After the watch saw a change, the call watches the path again: a second
// swap within the same second is seen at once too, and so is a swap right
// after the check.
void test_swaps_within_a_second(void **state) {
    Fixture &f = fx(state);
    std::vector<Digest> gens;
    for (int i = 0; i < 4; ++i) gens.push_back(new_digest());
    make_store(f.store, gens[0], "gen0");
    LiveStore live(f.store);
    assert_string_equal(found_name(*CURRENT_OK(live, t0), gens[0]).c_str(), "gen0");
    std::int64_t now = t0;
    for (int i = 1; i < 4; ++i) {
        const std::string next = f.tmp + "/store.next";
        make_store(next, gens[i], "gen" + std::to_string(i));
        rename_or_fail(f.store, f.tmp + "/store.old" + std::to_string(i));
        rename_or_fail(next, f.store);
        now += i == 3 ? interval : 1;  // the last one after the check set the watch again
        auto s = CURRENT_OK(live, now);
        if (found_name(*s, gens[i]) != "gen" + std::to_string(i)) fail_msg("swap %d not seen by the next call", i);
        if (i == 3) {
            make_store(next, gens[0], "gen0-again");
            rename_or_fail(f.store, f.tmp + "/store.old4");
            rename_or_fail(next, f.store);
            if (found_name(*CURRENT_OK(live, now + 1), gens[0]) != "gen0-again")
                fail_msg("a swap right after the check was not seen by the next call");
        }
    }
}

// Without inotify (an httpd child beyond the user's inotify instances: 128
// by default, fewer than a large prefork's children), every call stats the
// path, as before the watch: a store directory moved into place is still
// opened by the very next call. Run in a child that is another user, whose
// instances it exhausts, so that root's stay untouched.
void test_swap_seen_without_inotify(void **state) {
    if (!can_chown()) skip();
    Fixture &f = fx(state);
    const Digest old_d = new_digest(), new_d = new_digest();
    make_store(f.store, old_d, "old");
    int ready[2], swapped[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(swapped), 0);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        // The store's group (the test's) reads it; user 4242 owns nothing of it.
        if (setgroups(0, nullptr) != 0 || setgid(getgid()) != 0 || setuid(4242) != 0) _exit(10);
        std::vector<int> instances;
        for (int fd; (fd = inotify_init1(IN_CLOEXEC)) >= 0;) instances.push_back(fd);
        if (errno != EMFILE) _exit(11);
        LiveStore live(f.store);
        char byte = 0;
        try {
            auto first = live.current(t0);
            if (found_name(*first, old_d) != "old") _exit(12);
            first.reset();
            if (write(ready[1], "r", 1) != 1 || read(swapped[0], &byte, 1) != 1) _exit(13);
            auto next = live.current(t0 + 1);  // long before the next check
            _exit(found_name(*next, new_d) == "new" && !next->find(old_d) ? 0 : 14);
        } catch (...) {
            _exit(15);
        }
    }
    char byte = 0;
    assert_int_equal(read(ready[0], &byte, 1), 1);
    rename_or_fail(f.store, f.tmp + "/store.old");
    make_store(f.store, new_d, "new");
    assert_int_equal(write(swapped[1], "s", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("child exited %d (10: setuid, 11: inotify not exhausted, 12: first store, 13: pipe, 14: the swap "
                 "was not seen by the next call, 15: an exception)",
                 WEXITSTATUS(status));
    for (int fd : {ready[0], ready[1], swapped[0], swapped[1]}) close(fd);
}

}  // namespace

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_missing_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_now_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_now_finds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replacement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replacement_closes_unused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inplace_replacement_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restored_backup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_removed_and_recreated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swaps_within_a_second, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_seen_without_inotify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_files_of_the_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directories_on_the_way, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symbolic_links_followed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

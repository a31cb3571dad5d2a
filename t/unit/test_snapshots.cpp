// Snapshots: no read and no write on a snapshot older than the data file's
// newest, whatever the lock file says (httpd's group can write it); a data
// file changed in place is refused; waits and full reader tables are
// explained. Uses real stores and, where another process is needed, fork().

#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "live_store.hpp"
#include "store.hpp"
#include "usage_store.hpp"
#include "token.hpp"

#include "support.hpp"

using namespace cptoken;
using namespace test_support;

namespace {

// LMDB 0.9 on x86_64: the newest transaction id in the lock file's header.
constexpr off_t lock_txnid_offset = 48;

std::string lock_file(void **state) { return fx(state).store + "/tokens.mdb-lock"; }
std::string data_file(void **state) { return fx(state).store + "/tokens.mdb"; }

// What a process of the store's group can do: rewrite the snapshot id.
void shift_lock_txnid(const std::string &lock, std::int64_t delta) {
    const int fd = open(lock.c_str(), O_RDWR);
    assert_true(fd >= 0);
    void *map = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    std::uint64_t id = 0;
    std::memcpy(&id, static_cast<char *>(map) + lock_txnid_offset, sizeof id);
    id += delta;
    std::memcpy(static_cast<char *>(map) + lock_txnid_offset, &id, sizeof id);
    munmap(map, 4096);
    close(fd);
}

bool contains(const std::string &text, const char *part) { return text.find(part) != std::string::npos; }

void test_rolled_back_lock_file_refuses_reads_and_writes(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    const Digest revoked = new_digest(), kept = new_digest();
    store.add(revoked, rec("alice", "revoked"));
    store.add(kept, rec("alice", "kept"));
    store.revoke("alice", "revoked");
    assert_false(store.find(revoked).has_value());

    shift_lock_txnid(lock_file(state), -1);  // back to the snapshot before the revocation
    std::string message = EXPECT_STORE_ERROR(inconsistent, store.find(revoked));
    assert_true(contains(message, "lock file was changed outside LMDB"));
    EXPECT_STORE_ERROR(inconsistent, store.list());
    message = EXPECT_STORE_ERROR(inconsistent, store.add(new_digest(), rec("alice", "new")));
    assert_true(contains(message, "nothing was written"));

    shift_lock_txnid(lock_file(state), +1);  // as the lock file should be
    assert_false(store.find(revoked).has_value());
    assert_true(store.find(kept).has_value());
    store.add(new_digest(), rec("alice", "new"));
    assert_int_equal(store.list("alice").size(), 2);
}

void test_backup_of_a_rolled_back_snapshot_is_not_kept(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    const Digest revoked = new_digest();
    store.add(revoked, rec("alice", "revoked"));
    store.revoke("alice", "revoked");
    shift_lock_txnid(lock_file(state), -1);
    const std::string backup = fx(state).tmp + "/backup.mdb";
    EXPECT_STORE_ERROR(inconsistent, store.backup(backup));
    assert_false(std::filesystem::exists(backup));  // nothing that could bring the token back

    shift_lock_txnid(lock_file(state), +1);
    store.backup(backup);
    const std::string restored = fx(state).tmp + "/restored";
    std::filesystem::create_directory(restored);
    std::filesystem::copy_file(backup, restored + "/tokens.mdb");
    assert_false(TokenStore(restored, Access::read_only).find(revoked).has_value());
}

void test_lock_file_ahead_of_the_data_file_is_refused(void **state) {
    TokenStore store(fx(state).store, Access::read_write);
    const Digest digest = new_digest();
    store.add(digest, rec("alice", "a"));
    shift_lock_txnid(lock_file(state), +1);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_STORE_ERROR(inconsistent, store.find(digest));
    // Not the shape of a commit in flight: refused without waiting.
    assert_true(std::chrono::steady_clock::now() - start < StoreSettings::commit_in_flight_wait);
    EXPECT_STORE_ERROR(inconsistent, store.revoke("alice", "a"));
    shift_lock_txnid(lock_file(state), -1);
    assert_true(store.find(digest).has_value());
}

// A child process that holds the writer lock of `file` for `seconds`.
pid_t hold_writer_lock(const std::string &file, unsigned seconds, int ready_fd) {
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid != 0) return pid;
    MDB_env *env = nullptr;
    MDB_txn *txn = nullptr;
    if (mdb_env_create(&env) || mdb_env_set_maxreaders(env, StoreSettings::max_readers) ||
        mdb_env_set_maxdbs(env, 8) || mdb_env_set_mapsize(env, StoreSettings::map_size) ||
        mdb_env_open(env, file.c_str(), MDB_NOSUBDIR, 0640) || mdb_txn_begin(env, nullptr, 0, &txn))
        _exit(1);
    if (write(ready_fd, "x", 1) != 1) _exit(1);
    sleep(seconds);
    mdb_txn_abort(txn);
    _exit(0);
}

void test_write_waiting_for_the_lock_says_so(void **state) {
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    const pid_t holder = hold_writer_lock(data_file(state), 5, ready[1]);
    char byte = 0;
    assert_int_equal(read(ready[0], &byte, 1), 1);

    TokenStore store(fx(state).store, Access::read_write);
    std::vector<std::string> notices;
    store.set_lock_wait_notice([&](const std::string &message) { notices.push_back(message); });
    store.add(new_digest(), rec("alice", "a"));  // blocks until the holder lets go
    int status = 0;
    waitpid(holder, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(notices.size(), 1);
    assert_true(contains(notices[0], "still waiting for the write lock"));
    assert_true(contains(notices[0], "tokens.mdb"));

    notices.clear();  // an uncontended write says nothing
    store.add(new_digest(), rec("alice", "b"));
    assert_int_equal(notices.size(), 0);
    close(ready[0]);
    close(ready[1]);
}

void test_full_reader_table_says_what_is_known(void **state) {
    // A lock file made by another program with LMDB's default table (126
    // slots, as mdb_stat or Lightning Stream make it), all slots held.
    std::filesystem::remove(lock_file(state));
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    const pid_t holder = fork();
    assert_true(holder >= 0);
    if (holder == 0) {
        MDB_env *env = nullptr;
        if (mdb_env_create(&env) || mdb_env_set_maxreaders(env, 2) ||
            mdb_env_open(env, data_file(state).c_str(), MDB_NOSUBDIR | MDB_RDONLY | MDB_NOTLS, 0640))
            _exit(1);
        MDB_txn *a = nullptr, *b = nullptr;
        if (mdb_txn_begin(env, nullptr, MDB_RDONLY, &a) || mdb_txn_begin(env, nullptr, MDB_RDONLY, &b)) _exit(1);
        if (write(ready[1], "x", 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    char byte = 0;
    assert_int_equal(read(ready[0], &byte, 1), 1);
    const std::string message = EXPECT_STORE_ERROR(full, TokenStore(fx(state).store, Access::read_only));
    kill(holder, SIGKILL);
    waitpid(holder, nullptr, 0);
    assert_true(contains(message, "all 2 slots"));
    assert_true(contains(message, "mdb_stat -rr"));
    assert_false(contains(message, "ServerLimit"));  // nothing says httpd holds them
    close(ready[0]);
    close(ready[1]);
}

void test_truncated_data_file_is_refused(void **state) {
    {
        TokenStore writer(fx(state).store, Access::read_write);
        for (int i = 0; i < 200; ++i) writer.add(new_digest(), rec("alice", "t" + std::to_string(i)));
    }
    const TokenStore store(fx(state).store, Access::read_only);
    store.recheck_file();  // as written by LMDB: fine
    const auto size = std::filesystem::file_size(data_file(state));
    std::filesystem::resize_file(data_file(state), size / 2);
    std::string message = EXPECT_STORE_ERROR(corrupt, store.recheck_file());
    assert_true(contains(message, "changed in place"));
    std::filesystem::resize_file(data_file(state), 0);
    message = EXPECT_STORE_ERROR(corrupt, store.recheck_file());
    assert_true(contains(message, "changed in place"));
}

// Two races between a reader's checks and commits landing meanwhile, each
// of which made a healthy store look damaged: an httpd child then stopped
// recording uses, or refused requests (the token store until httpd
// restarted, for the first):
// - a commit growing the file between the reader's look at its size and at
//   its newest snapshot made it look cut short;
// - several commits landing between a read transaction's start and its look
//   at the newest snapshot made the lock file look rolled back.
// Two processes write the usage store (fast commits without fsync, as
// httpd's children do; one in large batches that grow the file) while this
// one opens it and reads, as often as it can, for a second: more processes
// than cores, so that each is paused at any point.
void test_store_written_under_checks_is_not_taken_for_damaged(void **state) {
    const std::string dir = fx(state).store;
    std::vector<pid_t> writers;
    for (const int batch : {1, 50}) {
        const pid_t writer = fork();
        assert_true(writer >= 0);
        if (writer == 0) {
            UsageStore usage(dir, Access::read_write);
            const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(1);
            while (std::chrono::steady_clock::now() < end) {
                std::vector<NotedUses> noted;
                for (int j = 0; j < batch; ++j) noted.push_back({new_digest(), 1767225600000000000, "192.0.2.1", 1});
                usage.add(noted);
            }
            _exit(0);
        }
        writers.push_back(writer);
    }
    std::string failure;
    int opens = 0;
    for (int status = 0; waitpid(writers.back(), &status, WNOHANG) == 0; ++opens) {
        try {
            const UsageStore usage(dir, Access::read_only);  // opening checks the file's size
            for (int k = 0; k < 50; ++k) usage.find(new_digest());  // each read checks its snapshot
        } catch (const StoreError &e) {
            failure = e.what();
        }
    }
    waitpid(writers.front(), nullptr, 0);
    print_message("%d opens of the usage store, 50 reads each, while two processes wrote it\n", opens);
    assert_string_equal(failure.c_str(), "");
}

void test_truncated_files_are_refused_at_open(void **state) {
    const std::string dir = fx(state).store;
    {
        TokenStore writer(dir, Access::read_write);
        for (int i = 0; i < 200; ++i) writer.add(new_digest(), rec("alice", "t" + std::to_string(i)));
        UsageStore(dir, Access::read_write).add({NotedUses{new_digest(), 1767225600000000000, "192.0.2.1", 1}});
    }
    const auto size = std::filesystem::file_size(data_file(state));
    for (const auto cut : {size - 4096, size / 2, std::uintmax_t{2 * 4096 + 100}}) {
        std::filesystem::resize_file(data_file(state), cut);
        expect_corrupt_in_child([&] { TokenStore(dir, Access::read_only).list(); }, "token store cut short");
    }
    const std::string usage = dir + "/usage.mdb";
    std::filesystem::resize_file(usage, std::filesystem::file_size(usage) - 4096);
    expect_corrupt_in_child([&] { UsageStore(dir, Access::read_only).find(new_digest()); }, "usage store cut short");
}

void test_live_store_refuses_a_file_changed_in_place_until_replaced(void **state) {
    const std::string dir = fx(state).store;
    const Digest digest = new_digest();
    TokenStore(dir, Access::read_write).add(digest, rec("alice", "a"));
    LiveStore live(dir);
    std::int64_t now = 1000000;
    assert_true(live.current(now)->find(digest).has_value());

    std::filesystem::resize_file(data_file(state), 0);
    now += 2 * LiveStore::check_interval_us;
    std::string message = EXPECT_STORE_ERROR(corrupt, live.current(now));
    assert_true(contains(message, "refusing this store until its directory is replaced"));
    now += 2 * LiveStore::check_interval_us;  // and at every later check
    EXPECT_STORE_ERROR(corrupt, live.current(now));

    // A whole new directory moved into place is taken.
    std::filesystem::rename(dir, fx(state).tmp + "/broken");
    init_store(dir, getgid());
    const Digest fresh = new_digest();
    TokenStore(dir, Access::read_write).add(fresh, rec("alice", "fresh"));
    now += 2 * LiveStore::check_interval_us;
    assert_true(live.current(now)->find(fresh).has_value());
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rolled_back_lock_file_refuses_reads_and_writes, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_backup_of_a_rolled_back_snapshot_is_not_kept, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_lock_file_ahead_of_the_data_file_is_refused, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_write_waiting_for_the_lock_says_so, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_full_reader_table_says_what_is_known, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_data_file_is_refused, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_files_are_refused_at_open, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_store_written_under_checks_is_not_taken_for_damaged, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_live_store_refuses_a_file_changed_in_place_until_replaced, setup_init,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// SPDX-License-Identifier: Apache-2.0
// Snapshots: readers without the lock file read one whole snapshot, the
// newest committed, even under a writer in a tight loop; a commit never
// published, a data file older than its record or changed in place is
// refused; the lock file is the writers' alone; waits are explained. Uses
// real stores and, where another process is needed, fork().

#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "store/commit_record.hpp"
#include "store/live_store.hpp"
#include "token/network.hpp"
#include "store/store.hpp"
#include "store/usage_store.hpp"
#include "token/token.hpp"

#include "support.hpp"

using namespace cptoken;
using namespace test_support;

namespace {

std::string lock_file(void **state) { return fx(state).store + "/tokens.mdb-lock"; }
std::string data_file(void **state) { return fx(state).store + "/tokens.mdb"; }
std::string record_file(void **state) { return data_file(state) + commit_record_suffix; }

bool contains(const std::string &text, const char *part) { return text.find(part) != std::string::npos; }

// A writer committing as fast as it can, in another process, while three
// threads here read without the lock file: every read is of one whole
// snapshot, the newest when it began. The writer edits one token on every
// commit (its name counts the commits, its allowlist grows and shrinks so
// that its record moves between pages), adds another token, and never
// brings back a revoked one; LMDB reuses the pages it freed two commits
// before. Reads that overlap a commit are made again (read_retries).
void test_reads_under_a_writer_in_a_tight_loop_are_whole(void **state) {
    const std::string dir = fx(state).store;
    const Digest live = new_digest(), revoked = new_digest();
    {
        TokenStore writer(dir, Access::read_write);
        writer.add(live, rec("alice", "g000000"));
        writer.add(revoked, rec("alice", "revoked"));
        writer.revoke("alice", "revoked");
    }
    const TokenStore reader(dir, Access::read_only);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    const pid_t writer_pid = fork();
    assert_true(writer_pid >= 0);
    if (writer_pid == 0) {
        alarm(60);
        TokenStore writer(dir, Access::read_write);
        if (write(ready[1], "x", 1) != 1) _exit(1);
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
        for (int generation = 1; std::chrono::steady_clock::now() < end; ++generation) {
            char name[16];
            std::snprintf(name, sizeof name, "g%06d", generation);
            const auto old = writer.list("alice");
            TokenChanges changes;
            changes.name = name;
            std::vector<Network> networks;
            for (int i = 0; i < generation % 40; ++i) networks.push_back(*parse_network("10." + std::to_string(i) + ".0.0/16"));
            changes.allowed_ips = networks;
            for (const StoredToken &token : old)
                if (token.digest == live) writer.edit("alice", token.record.name, changes);
            writer.add(new_digest(), rec("bob", "n" + std::to_string(generation)));
        }
        _exit(0);
    }
    char byte = 0;
    assert_int_equal(read(ready[0], &byte, 1), 1);
    std::atomic<int> wrong{0};
    std::atomic<long> reads{0};
    std::vector<std::thread> threads;
    std::string first_wrong;
    std::mutex first_wrong_mutex;
    for (int t = 0; t < 3; ++t)
        threads.emplace_back([&] {
            int seen = -1;
            const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
            while (std::chrono::steady_clock::now() < end) {
                std::string why;
                try {
                    const auto found = reader.find(live);
                    int generation = -1;
                    if (!found || std::sscanf(found->name.c_str(), "g%d", &generation) != 1)
                        why = "the live token was not found whole";
                    else if (generation < seen)
                        why = "generation " + std::to_string(generation) + " read after " + std::to_string(seen);
                    else if (found->allowed_ips.size() != static_cast<std::size_t>(generation % 40))
                        why = "a record of generation " + std::to_string(generation) + " with " +
                              std::to_string(found->allowed_ips.size()) + " networks";
                    else
                        seen = generation;
                    if (reader.find(revoked)) why = "the revoked token was found";
                    if (reader.find(new_digest())) why = "an unknown token was found";
                } catch (const std::exception &e) {
                    why = e.what();
                }
                reads += 3;
                if (why.empty()) continue;
                if (wrong++ == 0) {
                    std::lock_guard<std::mutex> lock(first_wrong_mutex);
                    first_wrong = why;
                }
            }
        });
    for (std::thread &thread : threads) thread.join();
    int status = 0;
    assert_int_equal(waitpid(writer_pid, &status, 0), writer_pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    const auto last = reader.find(live);
    print_message("%ld reads, %llu made again, %s at the end\n", reads.load(),
                  static_cast<unsigned long long>(reader.read_retries()), last ? last->name.c_str() : "none");
    if (wrong > 0) fail_msg("%d wrong reads; the first: %s", wrong.load(), first_wrong.c_str());
    assert_true(reader.read_retries() > 0);  // the path was taken
    close(ready[0]);
    close(ready[1]);
}

// What a reader process did while it was paused under commits.
struct PausedReads {
    long reads = 0, refused = 0, wrong = 0;  // wrong: an unknown token found, or the one token not
    int status = 0;  // the reader's wait status
};

// A reader process's three threads look up tokens the store does not have
// (each lookup walks the tree: a found record would come from the cache) while a writer
// here commits every `commit_every`; the reader is stopped with SIGSTOP for
// `pause`, `pauses` times, wherever it is: about half the stops land in the
// middle of a read.
PausedReads pause_a_reader(const std::string &dir, std::chrono::milliseconds commit_every,
                           std::chrono::milliseconds pause, int pauses) {
    const Digest live = new_digest();
    { TokenStore(dir, Access::read_write).add(live, rec("alice", "ci")); }
    int result[2];
    assert_int_equal(pipe(result), 0);
    void *shared = mmap(nullptr, sizeof(std::atomic<bool>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shared != MAP_FAILED);
    auto *reading = new (shared) std::atomic<bool>(true);
    const pid_t reader_pid = fork();
    assert_true(reader_pid >= 0);
    if (reader_pid == 0) {
        alarm(60);
        const TokenStore reader(dir, Access::read_only);
        std::vector<Digest> unknown(64);
        for (Digest &digest : unknown) digest = new_digest();
        std::atomic<long> reads{0}, refused{0}, found{0};
        std::vector<std::thread> threads;  // three reads in flight when the process stops
        for (int t = 0; t < 3; ++t)
            threads.emplace_back([&, t] {
                for (std::size_t i = static_cast<std::size_t>(t); reading->load(); ++i, ++reads) try {
                        if (reader.find(unknown[i % unknown.size()])) ++found;
                    } catch (const StoreError &e) {
                        if (refused++ == 0) std::fprintf(stderr, "refused: %s\n", e.what());
                    }
            });
        for (std::thread &thread : threads) thread.join();
        if (!reader.find(live)) ++found;  // wrong too
        const long counts[3] = {reads.load(), refused.load(), found.load()};
        _exit(write(result[1], counts, sizeof counts) == sizeof counts ? 0 : 1);
    }
    close(result[1]);  // the child's end: a reader that dies leaves read() an end of file, not a hang
    std::atomic<bool> writing{true};
    std::thread writer([&] {
        TokenStore store(dir, Access::read_write);
        for (int i = 0; writing; ++i) {
            store.add(new_digest(), rec("bob", "n" + std::to_string(i)));
            std::this_thread::sleep_for(commit_every);
        }
    });
    for (int i = 0; i < pauses; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        kill(reader_pid, SIGSTOP);
        std::this_thread::sleep_for(pause);  // commits land meanwhile
        kill(reader_pid, SIGCONT);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    *reading = false;
    writing = false;
    writer.join();
    long counts[3] = {0, 0, 0};
    const ssize_t got = read(result[0], counts, sizeof counts);
    PausedReads paused;
    assert_int_equal(waitpid(reader_pid, &paused.status, 0), reader_pid);
    close(result[0]);
    munmap(shared, sizeof(std::atomic<bool>));
    if (got == sizeof counts) paused.reads = counts[0], paused.refused = counts[1], paused.wrong = counts[2];
    print_message("%ld reads, %d pauses of %lld ms under a commit every %lld ms: %ld refused, %ld wrong, status %#x\n",
                  paused.reads, pauses, static_cast<long long>(pause.count()),
                  static_cast<long long>(commit_every.count()), paused.refused, paused.wrong, paused.status);
    return paused;
}

// A reader stopped in the middle of a read for longer than the whole wait
// (commit_in_flight_wait: a loaded machine, a debugger, SIGSTOP) while
// commits land: when it runs again, its read overlapped a commit and must
// simply be made again, not refused because the wait was used up before
// it could try twice. Up to 0.17.3 every such pause cost a refusal (an
// httpd request answered 500). Two commits at most land in a pause: a page
// of the paused read's snapshot is not reused before the third.
void test_a_reader_paused_past_the_wait_reads_again(void **state) {
    const PausedReads paused = pause_a_reader(fx(state).store, std::chrono::milliseconds(130),
                                              StoreSettings::commit_in_flight_wait + std::chrono::milliseconds(50), 10);
    assert_true(WIFEXITED(paused.status) && WEXITSTATUS(paused.status) == 0);
    assert_int_equal(paused.wrong, 0);
    assert_int_equal(paused.refused, 0);
}

// A reader paused long enough under enough commits for pages of its
// snapshot to be rewritten (docs/store.md, "One residue"): liblmdb may walk
// a rewritten page when it runs again. Up to 0.17.3 an assertion of
// liblmdb's on such a page aborted the process (an httpd child and every
// request it had); now that read is made again like any read a commit
// overlapped.
void test_a_page_rewritten_under_a_paused_read_does_not_kill_the_reader(void **state) {
    const PausedReads paused =
        pause_a_reader(fx(state).store, std::chrono::milliseconds(2), std::chrono::milliseconds(200), 25);
    if (!WIFEXITED(paused.status) || WEXITSTATUS(paused.status) != 0)
        fail_msg("the reader died (wait status %#x, signal %d)", paused.status,
                 WIFSIGNALED(paused.status) ? WTERMSIG(paused.status) : 0);
    assert_int_equal(paused.wrong, 0);
    assert_int_equal(paused.refused, 0);
}

// Commits a change to tokens.mdb through LMDB alone, as a writer killed
// between its commit and publishing it leaves the store.
void commit_without_publishing(void **state) {
    MDB_env *env = nullptr;
    MDB_txn *txn = nullptr;
    MDB_dbi dbi = 0;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, StoreSettings::map_size);
    assert_int_equal(mdb_env_open(env, data_file(state).c_str(), MDB_NOSUBDIR, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val key{4, const_cast<char *>("test")}, value{0, nullptr};
    assert_int_equal(mdb_put(txn, dbi, &key, &value, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

// Readers refuse the store, saying `why` and what to do; once the store's
// owner opens it (any command, one that only reads too), they read it again.
void expect_refused_until_the_owner_opens(const std::string &dir, const Digest &digest, const char *why) {
    const std::string message = EXPECT_STORE_ERROR(inconsistent, TokenStore(dir, Access::read_only).find(digest));
    assert_true(contains(message, why));
    assert_true(contains(message, "cptoken list"));
    { TokenStore owner(dir, Access::read_write); }
    assert_true(TokenStore(dir, Access::read_only).find(digest).has_value());
}

// A commit made without publishing it (a writer killed between the two):
// readers wait for it, then refuse the store, saying what to do; the next
// open by the owner publishes it.
void test_commit_never_published_is_refused_until_the_owner_opens(void **state) {
    const std::string dir = fx(state).store;
    const Digest digest = new_digest();
    TokenStore(dir, Access::read_write).add(digest, rec("alice", "a"));
    commit_without_publishing(state);
    const auto started = std::chrono::steady_clock::now();
    expect_refused_until_the_owner_opens(dir, digest, "died between its commit and its record");
    assert_true(std::chrono::steady_clock::now() - started >= StoreSettings::commit_in_flight_wait);
}

// An older copy of tokens.mdb written over it in place (same file, an older
// snapshot): its commit record names a newer one, so readers refuse it
// rather than read what was revoked since.
void test_data_file_older_than_its_record_is_refused(void **state) {
    const std::string dir = fx(state).store;
    const Digest digest = new_digest();
    TokenStore(dir, Access::read_write).add(digest, rec("alice", "a"));
    const std::string before = fx(state).tmp + "/before.mdb";
    std::filesystem::copy_file(data_file(state), before);
    TokenStore(dir, Access::read_write).revoke("alice", "a");
    assert_false(TokenStore(dir, Access::read_only).find(digest).has_value());
    {
        std::ifstream in(before, std::ios::binary);
        std::ofstream out(data_file(state), std::ios::binary | std::ios::in | std::ios::out);
        out << in.rdbuf();
    }
    const std::string message = EXPECT_STORE_ERROR(inconsistent, TokenStore(dir, Access::read_only).find(digest));
    assert_true(contains(message, "older than its commit record"));
    // The owner's next command does not take the copy for a lost commit.
    { TokenStore owner(dir, Access::read_write); }
    EXPECT_STORE_ERROR(inconsistent, TokenStore(dir, Access::read_only).find(digest));
}

// A power cut can leave the commit record naming a commit whose meta page
// never reached the disk: the record is published before LMDB's meta page
// is synced, so that readers need not wait for the disk. Such a commit was
// never reported done (the record says which commit the disk had last).
// Readers refuse the store, saying so; the owner's next command, even one
// that only reads, makes the record name the data file's newest commit.
void test_a_commit_lost_to_a_power_cut_is_forgotten_by_the_owner(void **state) {
    const std::string dir = fx(state).store;
    const Digest digest = new_digest();
    TokenStore(dir, Access::read_write).add(digest, rec("alice", "a"));
    {
        CommitRecord record(record_file(state), true);
        record.publish(record.load() + 1);  // as if the commit after it had reached the record only
    }
    expect_refused_until_the_owner_opens(dir, digest, "lost to a crash");
}

// A store holding one token, and a LiveStore that has opened it;
// at_next_check() asks it again once its next check is due.
struct OpenedLiveStore {
    const Digest digest = new_digest();
    LiveStore live;
    std::int64_t now = 1000000;
    explicit OpenedLiveStore(const std::string &dir) : live(holding_a_token(dir, digest)) {
        assert_true(live.current(now)->find(digest).has_value());
    }
    std::shared_ptr<const TokenStore> at_next_check() {
        now += 2 * LiveStore::check_interval_us;
        return live.current(now);
    }
    static std::string holding_a_token(const std::string &dir, const Digest &digest) {
        TokenStore(dir, Access::read_write).add(digest, rec("alice", "a"));
        return dir;
    }
};

// A commit not yet published when a child's once-a-second check reads the
// store (its writer slow to reach the disk, or killed before publishing) is
// no change in place: the child keeps the store, and once the owner
// publishes the commit its requests are answered again, without a restart.
void test_live_store_keeps_a_store_whose_commit_is_late(void **state) {
    const std::string dir = fx(state).store;
    OpenedLiveStore opened(dir);
    commit_without_publishing(state);
    std::shared_ptr<const TokenStore> store;
    try {
        store = opened.at_next_check();
    } catch (const StoreError &e) {
        fail_msg("the check refused the store: %s", e.what());
    }
    // A request answered from a read (the cache holds only what was read at
    // the published snapshot) says why it cannot be answered.
    EXPECT_STORE_ERROR(inconsistent, store->find(new_digest()));

    { TokenStore owner(dir, Access::read_write); }  // publishes it
    assert_true(opened.at_next_check()->find(opened.digest).has_value());
}

// The lock file is the writers' alone: init makes it 0600; a reader never
// opens or creates it; a writer refuses one that anyone else can open (a
// store of 0.11), and init converts that store.
void test_lock_file_is_the_writers_alone(void **state) {
    const std::string dir = fx(state).store;
    struct stat st{};
    assert_int_equal(stat(lock_file(state).c_str(), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(record_file(state).c_str(), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);

    assert_int_equal(unlink(lock_file(state).c_str()), 0);
    const Digest digest = new_digest();
    {
        const TokenStore reader(dir, Access::read_only);
        assert_false(reader.find(digest).has_value());
    }
    assert_int_equal(stat(lock_file(state).c_str(), &st), -1);  // not made by a reader

    TokenStore(dir, Access::read_write).add(digest, rec("alice", "a"));
    assert_int_equal(stat(lock_file(state).c_str(), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    assert_int_equal(chmod(lock_file(state).c_str(), 0660), 0);  // as 0.11 made it
    const std::string message = EXPECT_STORE_ERROR(access, TokenStore(dir, Access::read_write));
    assert_true(contains(message, "init"));
    std::vector<std::string> changes;
    assert_int_equal(static_cast<int>(init_store(dir, std::nullopt, &changes)), static_cast<int>(InitOutcome::repaired));
    assert_int_equal(stat(lock_file(state).c_str(), &st), -1);  // removed unopened; the next writer makes its own
    TokenStore(dir, Access::read_write).revoke("alice", "a");
    assert_int_equal(stat(lock_file(state).c_str(), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_false(TokenStore(dir, Access::read_only).find(digest).has_value());
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
// Two processes write the token store (one token a commit, and batches of
// 50 that grow the file) while this one opens it and reads, as often as it
// can, for a second: more processes than cores, so that each is paused at
// any point. (The usage store was the LMDB file written fastest, by httpd's
// children, until it became a usage table.)
void test_store_written_under_checks_is_not_taken_for_damaged(void **state) {
    const std::string dir = fx(state).store;
    std::vector<pid_t> writers;
    for (const int batch : {1, 50}) {
        const pid_t writer = fork();
        assert_true(writer >= 0);
        if (writer == 0) {
            TokenStore tokens(dir, Access::read_write);
            const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(1);
            for (int round = 0; std::chrono::steady_clock::now() < end; ++round) {
                std::vector<StoredToken> more;
                for (int j = 0; j < batch; ++j) {
                    StoredToken token;
                    token.digest = new_digest();
                    token.record = rec("u" + std::to_string(batch), "t" + std::to_string(round) + "-" + std::to_string(j));
                    more.push_back(token);
                }
                tokens.add_many(more);
            }
            _exit(0);
        }
        writers.push_back(writer);
    }
    std::string failure;
    int opens = 0;
    for (int status = 0; waitpid(writers.back(), &status, WNOHANG) == 0; ++opens) {
        try {
            const TokenStore tokens(dir, Access::read_only);  // opening checks the file's size
            for (int k = 0; k < 50; ++k) tokens.find(new_digest());  // each read checks its snapshot
        } catch (const StoreError &e) {
            failure = e.what();
        }
    }
    waitpid(writers.front(), nullptr, 0);
    print_message("%d opens of the token store, 50 reads each, while two processes wrote it\n", opens);
    assert_string_equal(failure.c_str(), "");
}

void test_truncated_files_are_refused_at_open(void **state) {
    const std::string dir = fx(state).store;
    {
        TokenStore writer(dir, Access::read_write);
        for (int i = 0; i < 200; ++i) writer.add(new_digest(), rec("alice", "t" + std::to_string(i)));
        UsageStore(dir, Access::read_write).record(new_digest(), 1767225600, parse_address("192.0.2.1"));
    }
    const auto size = std::filesystem::file_size(data_file(state));
    for (const auto cut : {size - 4096, size / 2, std::uintmax_t{2 * 4096 + 100}}) {
        std::filesystem::resize_file(data_file(state), cut);
        expect_corrupt_in_child([&] { TokenStore(dir, Access::read_only).list(); }, "token store cut short");
    }
    const std::string usage = dir + "/usage.slots";
    std::filesystem::resize_file(usage, std::filesystem::file_size(usage) - 4096);
    expect_corrupt_in_child([&] { UsageStore(dir, Access::read_only).find(new_digest()); }, "usage table cut short");
}

// liblmdb divides by the page size a meta page names when it opens the file:
// a damaged 0 there was SIGFPE in every reader (t/fuzz/crashes-store/
// meta-pagesize-sigfpe). Either meta page, whichever liblmdb would pick.
void test_a_meta_page_naming_an_impossible_page_size_is_refused(void **state) {
    const std::string dir = fx(state).store;
    TokenStore(dir, Access::read_write).add(new_digest(), rec("alice", "a"));
    const std::string file = data_file(state);
    const std::string good = read_file(file);
    const long page = sysconf(_SC_PAGESIZE);
    for (const long meta_at : {0L, page})
        for (const std::uint32_t page_size : {0u, 3u, 4095u, 1u << 20}) {
            std::string damaged = good;
            std::memcpy(damaged.data() + meta_at + 40, &page_size, sizeof page_size);
            write_text(file, damaged);
            expect_corrupt_in_child([&] { TokenStore(dir, Access::read_only).list(); }, "page size in a meta page");
            expect_corrupt_in_child([&] { TokenStore(dir, Access::read_write).list(); }, "the same, for the owner");
        }
    write_text(file, good);
    assert_int_equal(TokenStore(dir, Access::read_only).list().size(), 1);
}

void test_live_store_refuses_a_file_changed_in_place_until_replaced(void **state) {
    const std::string dir = fx(state).store;
    OpenedLiveStore opened(dir);
    std::filesystem::resize_file(data_file(state), 0);
    std::string message = EXPECT_STORE_ERROR(corrupt, opened.at_next_check());
    assert_true(contains(message, "refusing this store until its directory is replaced"));
    EXPECT_STORE_ERROR(corrupt, opened.at_next_check());  // and at every later check

    // A whole new directory moved into place is taken.
    std::filesystem::rename(dir, fx(state).tmp + "/broken");
    init_store(dir, getgid());
    const Digest fresh = new_digest();
    TokenStore(dir, Access::read_write).add(fresh, rec("alice", "fresh"));
    assert_true(opened.at_next_check()->find(fresh).has_value());
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_under_a_writer_in_a_tight_loop_are_whole, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_reader_paused_past_the_wait_reads_again, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_page_rewritten_under_a_paused_read_does_not_kill_the_reader, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_never_published_is_refused_until_the_owner_opens, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_data_file_older_than_its_record_is_refused, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_commit_lost_to_a_power_cut_is_forgotten_by_the_owner, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_live_store_keeps_a_store_whose_commit_is_late, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_lock_file_is_the_writers_alone, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_write_waiting_for_the_lock_says_so, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_data_file_is_refused, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_files_are_refused_at_open, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_store_written_under_checks_is_not_taken_for_damaged, setup_init, teardown),
        cmocka_unit_test_setup_teardown(test_a_meta_page_naming_an_impossible_page_size_is_refused, setup_init,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_live_store_refuses_a_file_changed_in_place_until_replaced, setup_init,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

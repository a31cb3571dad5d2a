// SPDX-License-Identifier: Apache-2.0
// What several unit tests share: fixtures that must not fail, a record in
// one line, a temporary store directory, StoreError checks. Include it after
// every C++ header: it brings cmocka, whose fail() macro would clash with
// std::basic_ios::fail().
#pragma once

#include <lmdb.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "token/network.hpp"
#include "token/record.hpp"
#include "store/commit_record.hpp"
#include "store/store.hpp"
#include "token/token.hpp"

// cmocka needs these first.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
extern "C" {
#include <cmocka.h>
}

namespace test_support {

/// Whether heap_in_use() means anything: under ASan, malloc is ASan's, and
/// glibc's counters do not see it.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool heap_measurable = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool heap_measurable = false;
#else
inline constexpr bool heap_measurable = true;
#endif
#else
inline constexpr bool heap_measurable = true;
#endif

/// Bytes glibc's malloc has handed out and not had back, in its arenas and
/// in blocks of their own (large ones are mmapped).
inline std::size_t heap_in_use() {
    const struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

inline cptoken::Network net(const char *text) {
    auto network = cptoken::parse_network(text);
    if (!network) fail_msg("parse_network(\"%s\") failed", text);
    return *network;
}

inline cptoken::Address addr(const char *text) {
    auto address = cptoken::parse_address(text);
    if (!address) fail_msg("parse_address(\"%s\") failed", text);
    return *address;
}

/// A record created at 2026-01-01T00:00:00Z.
inline cptoken::TokenRecord rec(const std::string &user, const std::string &name, cptoken::Seconds expires = 0,
                                std::vector<cptoken::Network> ips = {}) {
    return cptoken::TokenRecord{user, name, 1767225600, expires, std::move(ips)};
}

inline cptoken::Digest new_digest() { return cptoken::token_digest(cptoken::generate_token()); }

/// A test's own directory under /tmp: `store` is where its store goes.
struct Fixture {
    std::string tmp;    // mkdtemp directory, removed at teardown
    std::string store;  // tmp/store
};

inline int setup(void **state) {
    char pattern[] = "/tmp/cptoken-unit-XXXXXX";
    if (!mkdtemp(pattern)) return -1;
    // Root reads the usage store through a child that is user nobody of the store's group: it must get in.
    if (chmod(pattern, 0711) != 0) return -1;
    *state = new Fixture{pattern, std::string(pattern) + "/store"};
    return 0;
}

inline int teardown(void **state) {
    auto *f = static_cast<Fixture *>(*state);
    std::error_code ec;
    std::filesystem::remove_all(f->tmp, ec);
    delete f;
    return 0;
}

inline Fixture &fx(void **state) { return *static_cast<Fixture *>(*state); }

/// The bytes of the file at `path` ("" if it cannot be read).
inline std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Writes `text` as the whole file at `path`.
inline void write_text(const std::string &path, const std::string &text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline const char *kind_name(cptoken::StoreError::Kind kind) {
    using Kind = cptoken::StoreError::Kind;
    switch (kind) {
        case Kind::missing: return "missing";
        case Kind::access: return "access";
        case Kind::corrupt: return "corrupt";
        case Kind::not_found: return "not_found";
        case Kind::duplicate: return "duplicate";
        case Kind::full: return "full";
        case Kind::inconsistent: return "inconsistent";
    }
    return "?";
}

/// Runs fn, which must throw StoreError of `kind` with a message; returns it.
inline std::string expect_store_error(const std::function<void()> &fn, cptoken::StoreError::Kind kind, int line) {
    try {
        fn();
    } catch (const cptoken::StoreError &e) {
        if (e.kind() != kind)
            fail_msg("line %d: StoreError kind %s (%s), expected %s", line, kind_name(e.kind()), e.what(),
                     kind_name(kind));
        if (std::string(e.what()).empty()) fail_msg("line %d: StoreError with an empty message", line);
        return e.what();
    } catch (const std::exception &e) {
        fail_msg("line %d: another exception: %s, expected StoreError %s", line, e.what(), kind_name(kind));
    }
    fail_msg("line %d: no exception, expected StoreError %s", line, kind_name(kind));
    return {};
}
#define EXPECT_STORE_ERROR(kind, ...) \
    test_support::expect_store_error([&] { __VA_ARGS__; }, cptoken::StoreError::Kind::kind, __LINE__)

/// Runs `body` in a forked child whose fatal signals are the defaults a
/// process starts with, not cmocka's (which it installs around each test,
/// over any handler the code under test installed in an earlier one), and
/// returns how the child ended (waitpid's status). `body` returns the
/// child's exit status: 0 for success. At most 60 s.
inline int status_of_child(const std::function<int()> &body) {
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        for (int sig : {SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGABRT}) signal(sig, SIG_DFL);
        int code = 1;
        try {
            code = body();
        } catch (...) {
            code = 125;
        }
        _exit(code);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

/// Fails the test unless the child exited with 0 (status_of_child); the
/// message starts with `what`.
inline void assert_child_succeeded(int status, const char *what = "the child") {
    if (WIFSIGNALED(status)) fail_msg("%s: died of signal %d", what, WTERMSIG(status));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail_msg("%s: exit %d", what, WEXITSTATUS(status));
}

/// Runs `write` on the store at `dir` in a forked child, while this process
/// keeps its own TokenStore open (LMDB: one environment per file per
/// process; httpd children read while cptoken writes in another process).
inline void write_in_child(const std::string &dir, const std::function<void(cptoken::TokenStore &)> &write) {
    assert_child_succeeded(status_of_child([&] {
        cptoken::TokenStore s(dir, cptoken::Access::read_write);
        write(s);
        return 0;
    }), "writer child");
}

/// Runs `read` in a forked child, where it must throw StoreError corrupt: a
/// store that LMDB would read past its end must be refused, and a SIGBUS
/// there shows as this test's failure instead of ending the test program.
inline void expect_corrupt_in_child(const std::function<void()> &read, const char *what) {
    assert_child_succeeded(status_of_child([&] {
        try {
            read();
        } catch (const cptoken::StoreError &e) {
            return e.kind() == cptoken::StoreError::Kind::corrupt ? 0 : 2;
        }
        return 3;  // read as if it were fine
    }), what);
}

/// setup() and a store made by init_store() for this process's group.
inline int setup_init(void **state) {
    if (setup(state) != 0) return -1;
    auto *f = static_cast<Fixture *>(*state);
    try {
        cptoken::init_store(f->store, getgid());
    } catch (const std::exception &e) {
        print_error("init_store failed: %s\n", e.what());
        return -1;
    }
    return 0;
}

// ---- raw LMDB access, only while no TokenStore on the same files is open

struct RawEnv {
    MDB_env *env = nullptr;
    explicit RawEnv(const std::string &file, bool write = false) {
        int rc = mdb_env_create(&env);
        if (rc == 0) rc = mdb_env_set_maxdbs(env, 16);
        if (rc == 0) rc = mdb_env_set_maxreaders(env, cptoken::StoreSettings::max_readers);
        if (rc == 0) rc = mdb_env_set_mapsize(env, cptoken::StoreSettings::map_size);
        if (rc == 0) rc = mdb_env_open(env, file.c_str(), MDB_NOSUBDIR | (write ? 0 : MDB_RDONLY), 0600);
        if (rc != 0) {
            if (env) mdb_env_close(env);
            env = nullptr;
            fail_msg("raw open of %s: %s", file.c_str(), mdb_strerror(rc));
        }
    }
    ~RawEnv() {
        if (env) mdb_env_close(env);
    }
    // Returns MDB_SUCCESS / MDB_NOTFOUND and the value.
    int get(const char *db, std::string_view key, std::string *value) {
        MDB_txn *txn = nullptr;
        int rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
        if (rc != 0) fail_msg("mdb_txn_begin: %s", mdb_strerror(rc));
        MDB_dbi dbi;
        rc = mdb_dbi_open(txn, db, 0, &dbi);
        if (rc != 0) {
            mdb_txn_abort(txn);
            fail_msg("mdb_dbi_open(%s): %s", db, mdb_strerror(rc));
        }
        MDB_val k{key.size(), const_cast<char *>(key.data())}, v;
        rc = mdb_get(txn, dbi, &k, &v);
        if (rc == 0 && value) value->assign(static_cast<const char *>(v.mv_data), v.mv_size);
        mdb_txn_abort(txn);
        return rc;
    }
    void put(const char *db, std::string_view key, std::string_view value) {
        MDB_txn *txn = nullptr;
        int rc = mdb_txn_begin(env, nullptr, 0, &txn);
        if (rc != 0) fail_msg("mdb_txn_begin: %s", mdb_strerror(rc));
        MDB_dbi dbi;
        rc = mdb_dbi_open(txn, db, 0, &dbi);
        MDB_val k{key.size(), const_cast<char *>(key.data())};
        MDB_val v{value.size(), const_cast<char *>(value.data())};
        if (rc == 0) rc = mdb_put(txn, dbi, &k, &v, 0);
        const std::uint64_t id = mdb_txn_id(txn);
        if (rc == 0) rc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
        if (rc != 0) fail_msg("raw put: %s", mdb_strerror(rc));
        published(id);
    }
    // A writer of the token store publishes its commits (as cptoken does);
    // the usage store has no commit record.
    void published(std::uint64_t id) {
        const char *path = nullptr;
        mdb_env_get_path(env, &path);
        const std::string record = std::string(path) + cptoken::commit_record_suffix;
        if (access(record.c_str(), F_OK) == 0) cptoken::CommitRecord(record, true).publish(id);
    }
    std::size_t count(const char *db) {
        MDB_txn *txn = nullptr;
        mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
        MDB_dbi dbi;
        int rc = mdb_dbi_open(txn, db, 0, &dbi);
        MDB_stat st{};
        if (rc == 0) rc = mdb_stat(txn, dbi, &st);
        mdb_txn_abort(txn);
        if (rc != 0) fail_msg("mdb_stat(%s): %s", db, mdb_strerror(rc));
        return st.ms_entries;
    }
};

}  // namespace test_support

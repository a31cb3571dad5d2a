// What several unit tests share: fixtures that must not fail, a record in
// one line, a temporary store directory, StoreError checks. Include it after
// every C++ header: it brings cmocka, whose fail() macro would clash with
// std::basic_ios::fail().
#pragma once

#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "network.hpp"
#include "record.hpp"
#include "store.hpp"
#include "token.hpp"

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

/// Runs `write` on the store at `dir` in a forked child, while this process
/// keeps its own TokenStore open (LMDB: one environment per file per
/// process; httpd children read while cptoken writes in another process).
inline void write_in_child(const std::string &dir, const std::function<void(cptoken::TokenStore &)> &write) {
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        try {
            cptoken::TokenStore s(dir, cptoken::Access::read_write);
            write(s);
        } catch (...) {
            _exit(1);
        }
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail_msg("writer child failed, status 0x%x", status);
}

/// Runs `read` in a forked child, where it must throw StoreError corrupt: a
/// store that LMDB would read past its end must be refused, and a SIGBUS
/// there shows as this test's failure instead of ending the test program.
inline void expect_corrupt_in_child(const std::function<void()> &read, const char *what) {
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        for (int sig : {SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGABRT}) signal(sig, SIG_DFL);  // not cmocka's
        try {
            read();
        } catch (const cptoken::StoreError &e) {
            _exit(e.kind() == cptoken::StoreError::Kind::corrupt ? 0 : 2);
        }
        _exit(3);  // read as if it were fine
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) fail_msg("%s: died of signal %d", what, WTERMSIG(status));
    if (WEXITSTATUS(status) != 0) fail_msg("%s: child exit %d", what, WEXITSTATUS(status));
}

}  // namespace test_support

// SPDX-License-Identifier: Apache-2.0
// write_through_map: a write through a shared map of a file cut short under
// it returns false instead of killing the process, again and again, from
// any thread; a fault it does not guard still kills the process as before.
// Real files, real faults (SIGBUS), fork() where the process must die.

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "store/map_fault_guard.hpp"

#include "support.hpp"

using namespace cptoken;
using namespace test_support;

namespace {

constexpr std::size_t file_pages = 4, page = 4096;

// A file of four pages, mapped shared and writable.
struct MappedFile {
    std::string path;
    int fd = -1;
    char *map = nullptr;
    explicit MappedFile(const std::string &dir) : path(dir + "/mapped") {
        fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(::ftruncate(fd, file_pages * page), 0);
        void *m = ::mmap(nullptr, file_pages * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        assert_true(m != MAP_FAILED);
        map = static_cast<char *>(m);
    }
    ~MappedFile() {
        ::munmap(map, file_pages * page);
        ::close(fd);
    }
    void cut_to(std::size_t pages) { assert_int_equal(::ftruncate(fd, static_cast<off_t>(pages * page)), 0); }
};

struct Write {
    char *at;
};

void write_one(void *context) { *static_cast<Write *>(context)->at = 'x'; }

bool guarded_write(MappedFile &file, std::size_t offset) {
    Write w{file.map + offset};
    return write_through_map(file.map, file_pages * page, write_one, &w);
}

void test_a_write_past_the_end_is_refused_not_fatal(void **state) {
    MappedFile file(fx(state).tmp);
    assert_child_succeeded(status_of_child([&] {
        if (!guarded_write(file, 3 * page)) return 1;
        file.cut_to(1);
        if (!guarded_write(file, 10)) return 2;            // still in the file
        if (guarded_write(file, 3 * page)) return 3;       // past its end: SIGBUS caught
        if (guarded_write(file, 2 * page + 1)) return 4;   // and again: SIGBUS unblocked after the first
        return file.map[10] == 'x' ? 0 : 5;
    }));
}

void test_threads_each_catch_their_own(void **state) {
    MappedFile file(fx(state).tmp);
    file.cut_to(1);
    assert_child_succeeded(status_of_child([&] {
        std::atomic<int> refused{0}, kept{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&, t] {
                for (int i = 0; i < 200; ++i) {
                    if (guarded_write(file, (i % 2 ? 2 * page : 0) + static_cast<std::size_t>(t))) ++kept;
                    else ++refused;
                }
            });
        for (auto &thread : threads) thread.join();
        return kept.load() == 400 && refused.load() == 400 ? 0 : 1;
    }));
}

// The guard installed, then a fault outside any guarded write: the process
// dies of SIGBUS as it would have without the guard.
void test_an_unguarded_fault_still_kills(void **state) {
    MappedFile file(fx(state).tmp);
    file.cut_to(1);
    const int status = status_of_child([&] {
        if (guarded_write(file, 3 * page)) return 1;  // installs the handler, catches this one
        install_map_fault_handler();                  // again: must not take itself for the earlier one
        file.map[3 * page] = 'y';                     // unguarded: must kill
        return 2;
    });
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGBUS);
}

// A SIGBUS sent with kill() is not a fault of a guarded write: the handler
// that was there before gets it (here, one that counts).
std::atomic<int> earlier_handler_calls{0};
void earlier_handler(int) { ++earlier_handler_calls; }

void test_a_sigbus_sent_by_kill_reaches_the_earlier_handler(void **state) {
    MappedFile file(fx(state).tmp);
    assert_child_succeeded(status_of_child([&] {
        signal(SIGBUS, earlier_handler);
        if (!guarded_write(file, 0)) return 1;  // installs the guard's handler over it
        raise(SIGBUS);
        return earlier_handler_calls.load() == 1 ? 0 : 2;
    }));
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_write_past_the_end_is_refused_not_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_each_catch_their_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_unguarded_fault_still_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_sigbus_sent_by_kill_reaches_the_earlier_handler, setup, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

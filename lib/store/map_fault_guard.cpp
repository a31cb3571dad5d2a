// SPDX-License-Identifier: Apache-2.0
// lib/store/: the LMDB stores, tokens and last used; uses token/.
#include "store/map_fault_guard.hpp"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>

#include <mutex>

namespace cptoken {

namespace {

struct Guard {
    sigjmp_buf jump;
    const char *begin;
    const char *end;
};

// The guard of the write this thread is running, if any. Initial-exec: a
// slot of its own in each thread from the start, so that the handler never
// allocates it (in a thread that faulted inside malloc, say).
__attribute__((tls_model("initial-exec"))) thread_local Guard *t_guard = nullptr;

struct sigaction previous_action{};
std::once_flag installed;

void on_sigbus(int signal, siginfo_t *info, void *) {
    Guard *const guard = t_guard;
    const char *const address = static_cast<const char *>(info->si_addr);
    if (guard && info->si_code > 0 && address >= guard->begin && address < guard->end) siglongjmp(guard->jump, 1);
    // Not a fault of a guarded write: what was there before handles it, the
    // fault happening again when this returns (SIGBUS is blocked until then),
    // a signal sent by kill() delivered again.
    sigaction(signal, &previous_action, nullptr);
    if (info->si_code <= 0) raise(signal);
}

// Separate from write_through_map so that nothing it keeps lives across
// sigsetjmp's second return.
bool run_guarded(Guard &guard, void (*write)(void *), void *context) noexcept {
    if (sigsetjmp(guard.jump, 0) != 0) return false;  // no mask saved: no system call
    t_guard = &guard;
    write(context);
    return true;
}

}  // namespace

void install_map_fault_handler() noexcept {
    // Installed over itself, it would keep itself as the handler before it,
    // and hand an unguarded fault back to itself for ever.
    struct sigaction now{};
    if (sigaction(SIGBUS, nullptr, &now) == 0 && (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_sigbus) return;
    struct sigaction action{};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_action);
}

bool write_through_map(const void *begin, std::size_t length, void (*write)(void *context), void *context) noexcept {
    std::call_once(installed, install_map_fault_handler);
    Guard guard;
    guard.begin = static_cast<const char *>(begin);
    guard.end = guard.begin + length;
    const bool whole = run_guarded(guard, write, context);
    t_guard = nullptr;
    if (!whole) {
        // The handler was left by siglongjmp, with SIGBUS still blocked in
        // this thread: a later fault would then kill the process at once.
        sigset_t bus;
        sigemptyset(&bus);
        sigaddset(&bus, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &bus, nullptr);
    }
    return whole;
}

}  // namespace cptoken

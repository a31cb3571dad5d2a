// SPDX-License-Identifier: Apache-2.0
// Writes through a shared map of a file that others may cut short. A page
// of the map beyond the file's end faults with SIGBUS, which kills the
// process; httpd's group can truncate the usage table under every child's
// map. Checking the file's size before each write costs a system call per
// request and still leaves a window between the check and the write; this
// guard catches the fault instead, for the writes it runs.
#pragma once

#include <cstddef>

namespace cptoken {

/// Runs `write(context)` and returns true; returns false if, in this thread,
/// it touched a page of [begin, begin + length) that no longer has a file
/// page behind it (SIGBUS). `write` is then left by siglongjmp, half done:
/// it must make no object with a destructor and take no lock. The first call
/// installs a SIGBUS handler for the process; a SIGBUS it does not guard
/// (another address, another thread, sent by kill) goes to the handler that
/// was there before, as if this one had never been installed. No system
/// call on the path without a fault.
/// A SIGBUS handler installed after the guard's takes its place: guarded
/// writes then die as unguarded ones.
bool write_through_map(const void *begin, std::size_t length, void (*write)(void *context), void *context) noexcept;

/// Installs the guard's handler again, over whatever SIGBUS handler is there
/// now (which then gets what the guard does not), unless it is the guard's:
/// for a process that replaced it since the first guarded write (a test
/// framework does).
void install_map_fault_handler() noexcept;

}  // namespace cptoken

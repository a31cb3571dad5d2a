// SPDX-License-Identifier: Apache-2.0
// Work on files that httpd's group can write (the usage store), done for
// root by a child process that first gives up every privilege but that
// group's: no process more privileged than httpd's user maps, locks or
// parses such a file. What the child finds comes back as text lines, which
// the caller checks byte by byte.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

namespace cptoken {

/// The longest line a child may send.
inline constexpr std::size_t unprivileged_line_max = 1024;

/// Runs `work` in a child process that has become user nobody with group
/// `gid` and no other group (and can never regain privileges) before it does
/// anything else, keeping no descriptor but its pipe and no mapping of a
/// token store file. `work` sends lines (without '\n', at most
/// unprivileged_line_max bytes each) with `send`; a StoreError it throws is
/// passed on. Each line reaches `receive` here as it arrives. Throws
/// StoreError (access) if the child cannot drop its privileges, dies, sends
/// an over-long line or a partial answer; or the StoreError of the child,
/// with its kind and message (non-printable bytes replaced).
void run_unprivileged(gid_t gid, const std::function<void(const std::function<void(std::string_view)> &send)> &work,
                      const std::function<void(std::string_view line)> &receive);

/// run_unprivileged() as user `uid` with group `gid` alone instead of
/// nobody: for work root does as a store's owner (init). `what` says what the
/// child does in errors ("making the store as user cptoken").
void run_as_user(uid_t uid, gid_t gid, std::string_view what,
                 const std::function<void(const std::function<void(std::string_view)> &send)> &work,
                 const std::function<void(std::string_view line)> &receive);

/// run_unprivileged() with the group of the store directory DIR, if this
/// process is root; anyone else runs `work` here, its lines going straight to
/// `receive`, but the store's owner outside that group, who writes tokens and
/// never opens what httpd's group writes: then StoreError (access). Throws
/// StoreError as run_unprivileged, and missing if DIR is.
void as_store_group(const std::string &dir,
                    const std::function<void(const std::function<void(std::string_view)> &send)> &work,
                    const std::function<void(std::string_view line)> &receive);

}  // namespace cptoken

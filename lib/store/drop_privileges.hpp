// SPDX-License-Identifier: Apache-2.0
// How a child that root forks gives up root for good before it opens
// anything a less privileged user could have written: what the children of
// run_unprivileged() and the usage reader do first, in this order.
#pragma once

#include <sys/types.h>

#include <initializer_list>

namespace cptoken {

/// User nobody's uid (65534 where there is no such user; never 0).
uid_t nobody_uid();

/// Leaves this freshly forked process nothing of its parent's that a
/// compromise of it could use: every descriptor but those in `keep` closed,
/// stdin, stdout and stderr (unless kept) on /dev/null (what it prints is not
/// root's terminal's), and every mapping of a token store file unmapped (a
/// shared mapping of the owner's lock file or of the data file open to
/// write). Its parent's token stores are never used here afterwards. Returns
/// false if it could not.
bool shed_inherited_state(std::initializer_list<int> keep) noexcept;

/// Becomes user `uid` with `gid` as its only group, for good: it checks
/// that root cannot be had back, and sets PR_SET_NO_NEW_PRIVS (no exec
/// gains privileges). Returns false, with errno set, if it cannot.
bool become_for_good(uid_t uid, gid_t gid) noexcept;

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// Usage for a long-running process that gives up root on a store of another
// owner (the mirror agent, `cptoken sync`, publishing its host's usage): the
// owner may not open the usage table (httpd's group writes it), and only
// root can start the child that may (read_usage: nobody of the store's
// group). So, before giving root up, the process forks a helper that stays
// root and reads the table whenever asked, for the rest of its life.
//
// Protocol on a socketpair, one question at a time:
//   asker:  one byte
//   helper: usage_line()\n ... end\n  |  error MESSAGE\n
// The helper takes nothing from the asker but that byte; its lines are those
// root already checked (read_usage), and the asker checks them again
// (parse_usage_line).
#pragma once

#include <sys/types.h>

#include <string>

#include "store/open_fd.hpp"
#include "store/usage_store.hpp"

namespace cptoken {

class UsageHelper {
public:
    /// As root, before giving root up: forks the helper for the store in
    /// DIR. It ends when this object goes (the socket closes) or this process
    /// dies (PR_SET_PDEATHSIG). Throws StoreError (access) if not root or the
    /// fork fails.
    explicit UsageHelper(const std::string &dir);
    ~UsageHelper();
    UsageHelper(const UsageHelper &) = delete;
    UsageHelper &operator=(const UsageHelper &) = delete;

    /// Every use in the usage table now, as read_usage() gives it. Throws
    /// StoreError: what the helper's read_usage threw (as access, with its
    /// message), corrupt for a line that does not parse, access if the helper
    /// is gone or takes longer than a minute.
    UsageByKey read();

private:
    OpenFd socket_;
    pid_t pid_ = -1;
};

}  // namespace cptoken

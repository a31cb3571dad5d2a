// SPDX-License-Identifier: Apache-2.0
// Reading a file that someone other than root may have written (cPanel's
// token files, which users' actions change): read only if nobody but root
// and the user it belongs to could have written it, opened so that only a
// regular file is ever read and the open never blocks (a FIFO swapped in
// for a file would hang root forever), and read with a bound on its size.
//
// "Root" here is root and the user this process runs as: root's cptoken
// working on a store of another owner becomes that owner, who could write
// the store itself anyway.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace cptoken {

/// Why a user-written file is not read: the reason alone, without the path
/// (the caller names the file).
struct FileRefused : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Throws FileRefused unless only root can change what the directory `dir`
/// (absolute) holds: it and every directory above it, to "/", are owned by
/// root and can be written by neither their group nor others. A directory
/// above `dir` may be sticky instead (like /tmp): there nobody but root can
/// rename or remove root's entries. Symlinks in `dir` are resolved first.
void check_directory_only_root_writes(const std::string &dir);

/// The text of the file at `path` (absolute), which belongs to the user
/// named `user`. Throws FileRefused if its directory fails
/// check_directory_only_root_writes; if it cannot be opened or read; if it
/// is a symlink or anything but a regular file; if its owner is neither
/// root nor `user` (root alone when there is no such user on this system),
/// or its group or others can write it; or if it holds more than
/// `max_bytes`. It is opened from the checked directory with O_NOFOLLOW |
/// O_NONBLOCK | O_NOCTTY and judged on the open descriptor, so that nothing
/// can be swapped in between.
std::string read_user_written_file(const std::string &path, const std::string &user, std::size_t max_bytes);

}  // namespace cptoken

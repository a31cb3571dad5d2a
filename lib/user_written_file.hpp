// Reading a file that someone other than root may have written (cPanel's
// token files, which users' actions change): opened so that only a regular
// file is ever read and the open never blocks (a FIFO swapped in for a file
// would hang root forever), and read with a bound on its size.
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

/// The text of the file at `path`, opened with O_NOFOLLOW | O_NONBLOCK |
/// O_NOCTTY: throws FileRefused if it cannot be opened or read, is a
/// symlink or anything but a regular file (judged on the open descriptor,
/// so nothing can be swapped in between), or holds more than `max_bytes`.
std::string read_user_written_file(const std::string &path, std::size_t max_bytes);

}  // namespace cptoken

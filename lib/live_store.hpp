// A token store that follows its directory: opened on first use, and
// reopened when the files at its path are replaced (a restored backup moved
// into place, a fresh `cptoken init`). For long-running readers (httpd
// children); thread-safe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "store.hpp"

namespace cptoken {

/// Which file a store's data file at DIR is: device and inode (zero for a
/// missing file). Two differ when the file was replaced.
struct StoreFileIds {
    dev_t data_dev = 0;
    ino_t data_ino = 0;

    /// The file DIR/`data_file` is now.
    static StoreFileIds at(const std::string &dir, const char *data_file);
    bool operator==(const StoreFileIds &) const = default;
};

class LiveStore {
public:
    /// Checks the files at most once per this many microseconds.
    static constexpr std::int64_t check_interval_us = 1000000;

    /// Nothing is opened until open_now() or current(). A store that cannot
    /// be opened is tried again at the next check, not on every call (or at
    /// once when another data file appears at the path).
    explicit LiveStore(std::string dir);

    /// Opens the store now (in httpd's child_init). Throws StoreError.
    void open_now();

    /// The store to use for one request, at `now_us`, microseconds of a
    /// monotonic clock (monotonic_microseconds(): a wall clock stepped back
    /// would pause the checks). Each call stats the data file at the path:
    /// another file there (a store directory moved into place) is opened at
    /// once, so that no write made in it is missed (the old store is closed
    /// when its last user lets go). At most once per check_interval_us it
    /// also notices a store gone, and checks that the open data file was not
    /// changed in place (TokenStore::recheck_file). Throws StoreError if there
    /// is no usable store: missing, unreadable, tokens.mdb replaced without
    /// its commit record (older or newer than it), or changed in place
    /// (unsafe with LMDB: move a whole directory into place instead); the
    /// last is refused until the files at the path are replaced again.
    std::shared_ptr<const TokenStore> current(std::int64_t now_us);

    const std::string &dir() const noexcept { return dir_; }

private:
    void reopen_if_replaced();

    const std::string dir_;
    const std::string data_path_;  // dir_/tokens.mdb, stat'ed on every call
    std::mutex mutex_;  // guards store_ and ids_
    std::shared_ptr<const TokenStore> store_;
    StoreFileIds ids_;  // of the last store opened
    dev_t refused_data_dev_ = 0;  // the data file the last failed check saw
    ino_t refused_data_ino_ = 0;
    std::unique_ptr<StoreError> last_error_;
    std::atomic<std::int64_t> next_check_us_{0};
};

}  // namespace cptoken

#include "live_store.hpp"

#include <sys/stat.h>

namespace cptoken {

LiveStore::LiveStore(std::string dir) : dir_(std::move(dir)), data_path_(dir_ + "/" + token_store_file) {}

StoreFileIds StoreFileIds::at(const std::string &dir, const char *data_file) {
    StoreFileIds ids;
    struct stat st{};
    if (::stat((dir + "/" + data_file).c_str(), &st) == 0) ids.data_dev = st.st_dev, ids.data_ino = st.st_ino;
    return ids;
}

void LiveStore::open_now() {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
        reopen_if_replaced();
    } catch (const StoreError &e) {
        last_error_ = std::make_unique<StoreError>(e);
        throw;
    }
}

// Called with mutex_ held.
void LiveStore::reopen_if_replaced() {
    const StoreFileIds now = StoreFileIds::at(dir_, token_store_file);
    if (now == ids_ && ids_.data_ino != 0) {  // still the files opened last
        // Refused after a change in place: until the files are replaced.
        if (!store_) throw *last_error_;
        try {
            store_->recheck_file();
        } catch (const StoreError &e) {
            store_.reset();
            throw StoreError(e.kind(), std::string(e.what()) +
                                           "; refusing this store until its directory is replaced (move a whole "
                                           "store directory into place) or httpd restarts");
        }
        return;
    }
    store_.reset();  // the old store closes when its last request lets go
    try {
        store_ = std::make_shared<const TokenStore>(dir_, Access::read_only);
    } catch (...) {
        ids_ = StoreFileIds{};  // the old files are closed: their inode numbers may be reused
        throw;
    }
    // What we opened: the data file by its descriptor.
    const auto [data_dev, data_ino] = store_->data_file_id();
    ids_ = StoreFileIds{data_dev, data_ino};
    store_->recheck_file();  // the state later checks compare with
}

std::shared_ptr<const TokenStore> LiveStore::current(std::int64_t now_us) {
    // One stat a call, outside the lock: a data file at the path that is
    // neither the open one nor one that just failed to open is checked now,
    // not at the next interval. Otherwise a write made in a store directory
    // moved into place (revoke, create) would be missed for up to a second
    // by a child still reading the old files.
    struct stat st{};
    const bool data_present = ::stat(data_path_.c_str(), &st) == 0;
    std::lock_guard<std::mutex> lock(mutex_);
    const bool data_replaced = data_present && !(st.st_dev == ids_.data_dev && st.st_ino == ids_.data_ino) &&
                               !(st.st_dev == refused_data_dev_ && st.st_ino == refused_data_ino_);
    if (data_replaced || now_us >= next_check_us_.load(std::memory_order_relaxed)) {
        next_check_us_.store(now_us + check_interval_us, std::memory_order_relaxed);
        try {
            reopen_if_replaced();
        } catch (const StoreError &e) {
            last_error_ = std::make_unique<StoreError>(e);
            // Not tried again before the next check, unless another file appears.
            if (data_present) refused_data_dev_ = st.st_dev, refused_data_ino_ = st.st_ino;
            throw;
        }
        refused_data_dev_ = 0, refused_data_ino_ = 0;
    }
    // Until the next check, a store that could not be opened is not retried.
    if (!store_) throw last_error_ ? *last_error_ : StoreError(StoreError::Kind::missing, dir_ + ": not opened");
    return store_;
}

}  // namespace cptoken

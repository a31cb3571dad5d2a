#include "live_store.hpp"

#include <sys/stat.h>

namespace cptoken {

LiveStore::LiveStore(std::string dir) : LiveStore(std::move(dir), nullptr) {}

LiveStore::LiveStore(std::string dir, std::function<void(const TokenStore &)> on_open)
    : dir_(std::move(dir)), data_path_(dir_ + "/" + token_store_file), on_open_(std::move(on_open)) {}

StoreFileIds StoreFileIds::at(const std::string &dir, const char *data_file) {
    StoreFileIds ids;
    const std::string data = dir + "/" + data_file;
    struct stat st{};
    if (::stat(data.c_str(), &st) == 0) ids.data_dev = st.st_dev, ids.data_ino = st.st_ino;
    if (::stat((data + "-lock").c_str(), &st) == 0) ids.lock_dev = st.st_dev, ids.lock_ino = st.st_ino;
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
    // ids_ stays that of the last store opened, so this refusal lasts until
    // the lock file is replaced too (or httpd restarts).
    const bool same_lock = ids_.lock_ino != 0 && now.lock_dev == ids_.lock_dev && now.lock_ino == ids_.lock_ino;
    const bool other_data = now.data_ino != 0 && !(now.data_dev == ids_.data_dev && now.data_ino == ids_.data_ino);
    if (same_lock && other_data) {
        // The lock file records the state of the data file it was made with;
        // reading another data file through it could return wrong snapshots.
        store_.reset();
        throw StoreError(StoreError::Kind::corrupt,
                         dir_ + "/" + token_store_file +
                             " was replaced while its lock file stayed: move a whole store directory into place "
                             "instead, or restart httpd");
    }
    store_.reset();  // the old store closes when its last request lets go
    try {
        store_ = std::make_shared<const TokenStore>(dir_, Access::read_only);
    } catch (...) {
        ids_ = StoreFileIds{};  // the old files are closed: their inode numbers may be reused
        throw;
    }
    // What we opened: the data file by its descriptor, and the lock file LMDB
    // has just opened (or created, for a restored backup that had none).
    const auto [data_dev, data_ino] = store_->data_file_id();
    ids_ = StoreFileIds::at(dir_, token_store_file);
    ids_.data_dev = data_dev, ids_.data_ino = data_ino;
    store_->recheck_file();  // the state later checks compare with
    if (on_open_) on_open_(*store_);
    store_->take_reader_slot();
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

// SPDX-License-Identifier: Apache-2.0
#include "store/usage_recorder.hpp"

#include <sys/stat.h>

#include "store/lmdb_env.hpp"
#include "token/network.hpp"
#include "token/timeutil.hpp"

namespace cptoken {

UsageRecorder::UsageRecorder(std::string dir, Report report) : dir_(std::move(dir)), report_(std::move(report)) {}

void UsageRecorder::report_once(std::atomic<bool> &said, const std::string &message) noexcept {
    if (said.exchange(true) || !report_) return;
    try {
        report_(message);
    } catch (...) {
    }
}

std::shared_ptr<UsageStore> UsageRecorder::current() noexcept {
    const std::int64_t now = monotonic_microseconds();
    std::lock_guard<std::mutex> lock(mutex_);
    if (now < next_look_us_) return store_;
    next_look_us_ = now + std::chrono::duration_cast<std::chrono::microseconds>(usage_follow_interval).count();
    const std::string path = lmdb::path_in(dir_, usage_store_file);
    struct stat st{};
    const bool there = ::stat(path.c_str(), &st) == 0;
    if (store_ && there && std::pair{st.st_dev, st.st_ino} == ids_) return store_;
    store_.reset();
    try {
        store_ = std::make_shared<UsageStore>(dir_, Access::read_write);
        ids_ = store_->data_file_id();
    } catch (const std::exception &e) {
        report_once(said_failure_, std::string("cannot record last-used times in ") + path + ": " + e.what() +
                                       "; uses are not recorded until it works again (requests are not "
                                       "affected; said once per process)");
    }
    return store_;
}

void UsageRecorder::record(const Digest &digest, Seconds when, std::string_view client_ip) noexcept {
    const std::shared_ptr<UsageStore> store = current();
    if (!store) return;
    if (!store->intact()) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (store_ == store) store_.reset();  // opened again at the next look, if it is a table again
        }
        report_once(said_changed_, "cannot record last-used times in " + lmdb::path_in(dir_, usage_store_file) +
                                       ": the file was changed in place (truncated or overwritten); uses are not "
                                       "recorded until a usage table is in place again (cptoken init makes one; "
                                       "requests are not affected; said once per process)");
        return;
    }
    if (!store->record(digest, when, parse_address(client_ip)))
        report_once(said_full_, "the usage table " + lmdb::path_in(dir_, usage_store_file) + " has no room for "
                                "more tokens: the uses of tokens new to it are not recorded (they show LAST USED "
                                "never or older) until `cptoken prune` (run daily) makes it again with room for "
                                "the store's tokens (said once per process)");
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
#include "store/usage_recorder.hpp"

#include <sys/stat.h>

#include "store/lmdb_env.hpp"
#include "token/timeutil.hpp"

namespace cptoken {

namespace {
// Generations of every recorder's table come from one counter, so that a
// thread never takes another recorder's (or a dead one's) for its own.
std::atomic<std::uint64_t> next_generation{1};

// The table each thread last used, and its generation: most uses read two
// atomics and take no lock (a lock per use made the threads of an event
// child queue on it). It keeps a replaced table mapped until this thread's
// next use.
struct ThreadView {
    std::uint64_t generation = 0;
    std::shared_ptr<UsageStore> store;
};
thread_local ThreadView t_view;
}  // namespace

UsageRecorder::UsageRecorder(std::string dir, Report report)
    : dir_(std::move(dir)), report_(std::move(report)), generation_(next_generation.fetch_add(1)) {}

void UsageRecorder::report_once(std::atomic<bool> &said, const std::string &message) noexcept {
    if (said.exchange(true) || !report_) return;
    try {
        report_(message);
    } catch (...) {
    }
}

void UsageRecorder::look(std::int64_t now_us) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (now_us < next_look_us_.load(std::memory_order_relaxed)) return;  // another thread just looked
    next_look_us_.store(now_us + std::chrono::duration_cast<std::chrono::microseconds>(usage_follow_interval).count(),
                        std::memory_order_relaxed);
    const std::string path = lmdb::path_in(dir_, usage_store_file);
    struct stat st{};
    const bool there = ::stat(path.c_str(), &st) == 0;
    if (store_ && there && std::pair{st.st_dev, st.st_ino} == ids_) {
        if (store_->intact()) return;
        // Cut short or overwritten in place, and seen before a use met it.
        store_.reset();
        generation_.store(next_generation.fetch_add(1), std::memory_order_release);
        report_changed();
        return;
    }
    store_.reset();
    try {
        store_ = std::make_shared<UsageStore>(dir_, Access::read_write);
        ids_ = store_->data_file_id();
    } catch (const std::exception &e) {
        report_once(said_failure_, std::string("cannot record last-used times in ") + path + ": " + e.what() +
                                       "; uses are not recorded until it works again (requests are not "
                                       "affected; said once per process)");
    }
    generation_.store(next_generation.fetch_add(1), std::memory_order_release);
}

void UsageRecorder::drop(const UsageStore *broken) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (store_.get() != broken) return;
    store_.reset();  // opened again at the next look, if it is a table again
    generation_.store(next_generation.fetch_add(1), std::memory_order_release);
}

UsageStore *UsageRecorder::current() noexcept {
    const std::int64_t now = monotonic_microseconds();
    if (now >= next_look_us_.load(std::memory_order_relaxed)) look(now);
    const std::uint64_t generation = generation_.load(std::memory_order_acquire);
    if (t_view.generation != generation) {
        std::lock_guard<std::mutex> lock(mutex_);
        t_view.generation = generation_.load(std::memory_order_relaxed);
        t_view.store = store_;
    }
    return t_view.store.get();
}

void UsageRecorder::record(const Digest &digest, Seconds when, const std::optional<Address> &client) noexcept {
    UsageStore *const store = current();
    if (!store || store->record(digest, when, client)) return;
    // Not recorded: a table without room, or one changed under the map,
    // which record() survived (it checks no size: a system call per use).
    if (!store->intact()) {
        drop(store);
        report_changed();
        return;
    }
    report_once(said_full_, "the usage table " + lmdb::path_in(dir_, usage_store_file) + " has no room for "
                            "more tokens: the uses of tokens new to it are not recorded (they show LAST USED "
                            "never or older) until `cptoken prune` (run daily) makes it again with room for "
                            "the store's tokens (said once per process)");
}

void UsageRecorder::report_changed() noexcept {
    report_once(said_changed_, "cannot record last-used times in " + lmdb::path_in(dir_, usage_store_file) +
                                   ": the file was changed in place (truncated or overwritten); uses are not "
                                   "recorded until a usage table is in place again (cptoken init makes one; "
                                   "requests are not affected; said once per process)");
}

}  // namespace cptoken

#include "usage_recorder.hpp"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "live_store.hpp"
#include "timeutil.hpp"

namespace cptoken {

// ---------------------------------------------------------------- recorder

std::size_t UsageRecorder::DigestHash::operator()(const Digest &digest) const noexcept {
    std::size_t hash = 0;
    std::memcpy(&hash, digest.data(), sizeof hash);
    return hash;
}

UsageRecorder::UsageRecorder(std::size_t max_tokens) : max_tokens_(max_tokens) {}

bool UsageRecorder::note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip,
                         std::int64_t interval_us, std::int64_t now_us) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = pending_.find(digest);
    if (found == pending_.end()) {
        if (pending_.size() >= max_tokens_) {
            ++dropped_;
            return false;
        }
        found = pending_.emplace(digest, Pending{}).first;
    }
    Pending &pending = found->second;
    const bool first_to_write = pending.uses == 0;  // gives the token a due time the writer does not know yet
    // The shortest interval of the locations that used it since the last write.
    pending.interval_us = first_to_write ? interval_us : std::min(pending.interval_us, interval_us);
    ++pending.uses;
    if (used_at_ns >= pending.last_used_ns) {
        pending.last_used_ns = used_at_ns;
        pending.client_size = client_ip.size() <= max_ip_text ? static_cast<std::uint8_t>(client_ip.size()) : 0;
        std::copy_n(client_ip.data(), pending.client_size, pending.client.data());
    }
    return first_to_write || pending.due_at(now_us);
}

NotedUses UsageRecorder::to_write(const Digest &digest, const Pending &pending) {
    NotedUses out;
    out.digest = digest;
    out.last_used_ns = pending.last_used_ns;
    out.last_used_ip.assign(pending.client.data(), pending.client_size);
    out.uses = pending.uses;
    return out;
}

std::vector<NotedUses> UsageRecorder::take_due(std::int64_t now_us) {
    std::vector<NotedUses> due;
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = pending_.begin(); it != pending_.end();) {
        Pending &pending = it->second;
        if (!pending.due_at(now_us)) {
            ++it;
        } else if (pending.uses == 0) {
            it = pending_.erase(it);  // its next use is due at once anyway
        } else {
            due.push_back(to_write(it->first, pending));
            pending.uses = 0;
            pending.written_us = now_us;
            ++it;
        }
    }
    return due;
}

std::vector<NotedUses> UsageRecorder::take_all() {
    std::vector<NotedUses> all;
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &[digest, pending] : pending_)
        if (pending.uses > 0) all.push_back(to_write(digest, pending));
    pending_.clear();
    return all;
}

std::optional<std::int64_t> UsageRecorder::next_due_us() const {
    std::optional<std::int64_t> next;
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &[digest, pending] : pending_)
        if (pending.uses > 0 && (!next || pending.due_us() < *next)) next = pending.due_us();
    return next;
}

std::int64_t UsageRecorder::shortest_interval_us(std::int64_t longest) const {
    std::int64_t shortest = longest;
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &[digest, pending] : pending_)
        if (pending.uses > 0) shortest = std::min(shortest, pending.interval_us);
    return shortest;
}

std::size_t UsageRecorder::tracked() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return pending_.size();
}

std::uint64_t UsageRecorder::dropped() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return dropped_;
}

// ---------------------------------------------------------------- writer

struct UsageWriter::Shared {
    const std::string dir;
    const Report report;
    UsageRecorder recorder;

    std::mutex mutex;  // guards the flags below and the thread's start
    std::condition_variable changed;
    bool wake = false, stopping = false, done = false;
    std::thread thread;

    // The writer thread's own.
    std::unique_ptr<UsageStore> store;
    StoreFileIds store_ids;
    bool reported_failure = false, reported_dropped = false;

    Shared(std::string dir_, Report report_, std::size_t max_tokens)
        : dir(std::move(dir_)), report(std::move(report_)), recorder(max_tokens) {}

    // The usage store at `dir` now: reopened when its files were replaced.
    UsageStore &current_store() {
        const StoreFileIds at_path = StoreFileIds::at(dir, usage_store_file);
        if (!store || at_path != store_ids) {
            store.reset();
            store = std::make_unique<UsageStore>(dir, Access::read_write);
            store_ids = at_path;
        }
        return *store;
    }

    void write(const std::vector<NotedUses> &uses) {
        if (!uses.empty()) {
            try {
                current_store().add(uses);
            } catch (const std::exception &e) {
                store.reset();  // opened again for the next write
                if (!reported_failure && report)
                    report("cannot record last-used times in " + dir + "/" + usage_store_file + ": " + e.what() +
                           "; uses are not recorded until it works again (requests are not affected; said once "
                           "per process)");
                reported_failure = true;
            }
        }
        if (!reported_dropped && recorder.dropped() > 0 && report) {
            report("more than " + std::to_string(UsageRecorder::default_max_tokens) +
                   " tokens used within one last-used interval in this process: uses of further tokens are not "
                   "counted (said once per process)");
            reported_dropped = true;
        }
    }

    void run() {
        std::unique_lock<std::mutex> lock(mutex);
        std::optional<std::int64_t> last_write;
        while (!stopping) {
            const auto next = recorder.next_due_us();
            const std::int64_t now = monotonic_microseconds();
            if (!wake && (!next || *next > now)) {
                if (next)
                    changed.wait_for(lock, std::chrono::microseconds(*next - now));
                else
                    changed.wait(lock);
                continue;
            }
            // Something is due. One write per gap at most: the uses noted
            // meanwhile (the first uses of many tokens) join it. `wake` stays
            // set while waiting, so that notes do not wake this thread again.
            const std::int64_t gap = recorder.shortest_interval_us(UsageWriter::longest_write_gap_us);
            if (last_write && now < *last_write + gap) {
                changed.wait_for(lock, std::chrono::microseconds(*last_write + gap - now));
                continue;
            }
            wake = false;
            lock.unlock();
            const auto due = recorder.take_due(now);
            write(due);
            lock.lock();
            if (!due.empty()) last_write = now;
        }
        lock.unlock();
        write(recorder.take_all());
        lock.lock();
        done = true;
        changed.notify_all();
    }
};

UsageWriter::UsageWriter(std::string dir, Report report, std::size_t max_tokens)
    : shared_(std::make_shared<Shared>(std::move(dir), std::move(report), max_tokens)) {}

UsageWriter::~UsageWriter() { stop(std::chrono::seconds(1)); }

void UsageWriter::note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip,
                       std::int64_t interval_us, std::int64_t now_us) {
    const bool look_again = shared_->recorder.note(digest, used_at_ns, client_ip, interval_us, now_us);
    std::lock_guard<std::mutex> lock(shared_->mutex);
    if (shared_->stopping) return;
    if (!shared_->thread.joinable()) {
        // The thread starts with every signal blocked (it inherits the mask):
        // signals sent to an httpd child are for the child's own threads, and
        // prefork's would otherwise interrupt this one instead of its accept().
        sigset_t all, before;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &before);
        try {
            // The thread holds the shared state too: it may outlive this object (see stop()).
            shared_->thread = std::thread([shared = shared_] { shared->run(); });
        } catch (...) {
            pthread_sigmask(SIG_SETMASK, &before, nullptr);
            throw;
        }
        pthread_sigmask(SIG_SETMASK, &before, nullptr);
    }
    if (look_again && !shared_->wake) {
        shared_->wake = true;
        shared_->changed.notify_all();
    }
}

bool UsageWriter::stop(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(shared_->mutex);
    shared_->stopping = true;
    shared_->changed.notify_all();
    if (!shared_->thread.joinable()) return true;
    const bool finished = shared_->changed.wait_for(lock, wait, [this] { return shared_->done; });
    std::thread thread = std::move(shared_->thread);
    lock.unlock();
    if (finished)
        thread.join();
    else
        thread.detach();
    return finished;
}

std::size_t UsageWriter::tracked() const { return shared_->recorder.tracked(); }

}  // namespace cptoken

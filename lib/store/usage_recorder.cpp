// SPDX-License-Identifier: Apache-2.0
#include "store/usage_recorder.hpp"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <new>
#include <thread>
#include <type_traits>

#include "store/live_store.hpp"
#include "token/timeutil.hpp"

namespace cptoken {

// ---------------------------------------------------------------- recorder

std::size_t UsageRecorder::DigestHash::operator()(const Digest &digest) const noexcept {
    std::size_t hash = 0;
    std::memcpy(&hash, digest.data(), sizeof hash);
    return hash;
}

namespace {
// The notes' table takes 1/16 of the room (twice: one filled, one merged);
// the rest remembers the tokens written within their interval.
std::size_t notes_capacity_for(std::size_t max_tokens) { return std::max<std::size_t>(1, max_tokens / 16); }

// How often the writer looks at every token remembered (to forget the ones
// whose interval passed) when nothing it holds back is due.
constexpr std::int64_t look_every_us = 1000000;
}  // namespace

UsageRecorder::Notes::Notes(std::size_t capacity)
    : capacity_(capacity),
      slot_count_(std::bit_ceil(2 * capacity)),
      slots_(static_cast<Slot *>(std::calloc(slot_count_, sizeof(Slot)))) {
    static_assert(std::is_trivially_copyable_v<Slot>, "slots are made by calloc");
    if (!slots_) throw std::bad_alloc();
    filled_.reserve(capacity);
}

UsageRecorder::Uses *UsageRecorder::Notes::find_or_add(const Digest &digest, bool &added) {
    const std::size_t mask = slot_count_ - 1;
    for (std::size_t index = DigestHash{}(digest) & mask;; index = (index + 1) & mask) {
        Slot &slot = slots_[index];
        if (slot.filled && slot.digest == digest) {
            added = false;
            return &slot.uses;
        }
        if (!slot.filled) {  // at most half the slots are filled: an empty one always ends the probe
            if (filled_.size() >= capacity_) return nullptr;
            slot.filled = true;
            slot.digest = digest;
            slot.uses = Uses{};
            filled_.push_back(static_cast<std::uint32_t>(index));
            added = true;
            return &slot.uses;
        }
    }
}

void UsageRecorder::Notes::clear() {
    for (std::uint32_t index : filled_) slots_[index].filled = false;
    filled_.clear();
}

UsageRecorder::UsageRecorder(std::size_t max_tokens)
    : notes_capacity_(notes_capacity_for(max_tokens)),
      remembered_capacity_(std::max(notes_capacity_, max_tokens - std::min(max_tokens, 2 * notes_capacity_))),
      notes_(std::make_unique<Notes>(notes_capacity_)),
      spare_(std::make_unique<Notes>(notes_capacity_)) {}

void UsageRecorder::Uses::add(std::int64_t used_at_ns, std::string_view client_ip, std::int64_t interval) {
    interval_us = count == 0 ? interval : std::min(interval_us, interval);
    ++count;
    if (used_at_ns >= last_used_ns) {
        last_used_ns = used_at_ns;
        client_size = client_ip.size() <= max_ip_text ? static_cast<std::uint8_t>(client_ip.size()) : 0;
        std::copy_n(client_ip.data(), client_size, client.data());
    }
}

void UsageRecorder::Uses::add(const Uses &more) {
    if (more.count == 0) return;
    interval_us = count == 0 ? more.interval_us : std::min(interval_us, more.interval_us);
    count += more.count;
    if (more.last_used_ns >= last_used_ns) {
        last_used_ns = more.last_used_ns;
        client_size = more.client_size;
        client = more.client;
    }
}

UsageRecorder::Noted UsageRecorder::note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip,
                                         std::int64_t interval_us, std::int64_t /*now_us*/) {
    std::lock_guard<std::mutex> lock(mutex_);
    bool added = false;
    Uses *uses = notes_->find_or_add(digest, added);
    if (!uses) return Noted::full;
    uses->add(used_at_ns, client_ip, interval_us);
    notes_shortest_interval_us_ = std::min(notes_shortest_interval_us_, interval_us);
    return added && (notes_->size() == 1 || notes_->size() == (notes_capacity_ + 1) / 2) ? Noted::look
                                                                                           : Noted::quietly;
}

void UsageRecorder::count_dropped() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++dropped_;
}

NotedUses UsageRecorder::to_write(const Digest &digest, const Uses &uses) {
    NotedUses out;
    out.digest = digest;
    out.last_used_ns = uses.last_used_ns;
    out.last_used_ip.assign(uses.client.data(), uses.client_size);
    out.uses = uses.count;
    return out;
}

// Constant time under the lock: the filled table for the empty spare.
std::unique_ptr<UsageRecorder::Notes> UsageRecorder::take_notes() {
    // None if an earlier take threw before giving its table back: note()
    // must never be left without one.
    if (!spare_) spare_ = std::make_unique<Notes>(notes_capacity_);
    std::unique_ptr<UsageRecorder::Notes> taken = std::move(spare_);
    std::lock_guard<std::mutex> lock(mutex_);
    notes_.swap(taken);
    notes_shortest_interval_us_ = INT64_MAX;
    takes_.fetch_add(1, std::memory_order_release);
    return taken;
}

// Emptied without the lock: the spare of the next take.
void UsageRecorder::give_back(std::unique_ptr<Notes> taken) {
    taken->clear();
    spare_ = std::move(taken);
}

std::vector<NotedUses> UsageRecorder::take_due(std::int64_t now_us) {
    std::unique_ptr<Notes> taken = take_notes();
    std::vector<NotedUses> due;
    std::vector<std::pair<const Digest *, const Uses *>> first_in_interval;  // not written within it: due now
    std::optional<std::int64_t> next_due = held_next_due_us_;
    std::int64_t shortest = held_shortest_interval_us_;
    taken->for_each([&](const Digest &digest, const Uses &uses) {
        auto found = remembered_.find(digest);
        if (found == remembered_.end()) {
            first_in_interval.emplace_back(&digest, &uses);
            return;
        }
        Remembered &token = found->second;
        token.held.add(uses);
        next_due = std::min(next_due.value_or(INT64_MAX), token.due_us());
        shortest = std::min(shortest, token.held.interval_us);
    });
    held_next_due_us_ = next_due;
    held_shortest_interval_us_ = shortest;
    // The takes of a crowded table come many a second: they only merge, and
    // every token remembered is looked at when something held is due, or
    // once a second.
    if ((next_due && *next_due <= now_us) || last_look_us_ == never || now_us - last_look_us_ >= look_every_us)
        look_at_remembered(now_us, due);
    const std::size_t room = remembered_capacity_ - std::min(remembered_capacity_, remembered_.size());
    if (first_in_interval.size() > room) {
        // Many at once: fewer passes over the tokens remembered.
        forget_least_recently_written(std::max(first_in_interval.size() - room, remembered_capacity_ / 8), due);
        look_at_remembered(now_us, due);  // held uses may have gone with the forgotten tokens
    }
    for (const auto &[digest, uses] : first_in_interval) {
        due.push_back(to_write(*digest, *uses));
        Remembered &token = remembered_[*digest];
        token.written_us = now_us;
        token.held.interval_us = uses->interval_us;
    }
    remembered_count_ = remembered_.size();
    give_back(std::move(taken));
    return due;
}

// Writes the uses held back that are due, forgets the tokens whose interval
// passed with nothing to write, and finds when the next held uses are due.
void UsageRecorder::look_at_remembered(std::int64_t now_us, std::vector<NotedUses> &due) {
    std::optional<std::int64_t> next_due;
    std::int64_t shortest = INT64_MAX;
    for (auto it = remembered_.begin(); it != remembered_.end();) {
        Remembered &token = it->second;
        if (!token.due_at(now_us)) {
            if (token.held.count > 0) {
                next_due = std::min(next_due.value_or(INT64_MAX), token.due_us());
                shortest = std::min(shortest, token.held.interval_us);
            }
            ++it;
        } else if (token.held.count == 0) {
            it = remembered_.erase(it);  // its next use is due at once anyway
        } else {
            due.push_back(to_write(it->first, token.held));
            token.held.count = 0;
            token.written_us = now_us;
            ++it;
        }
    }
    held_next_due_us_ = next_due;
    held_shortest_interval_us_ = shortest;
    last_look_us_ = now_us;
}

// More tokens used within their interval than remembered: the ones written
// longest ago go (their held uses written now, before their interval ends),
// rather than any use of the new ones.
void UsageRecorder::forget_least_recently_written(std::size_t how_many, std::vector<NotedUses> &due) {
    std::vector<std::pair<std::int64_t, const Digest *>> by_write;
    by_write.reserve(remembered_.size());
    for (const auto &[digest, token] : remembered_) by_write.emplace_back(token.written_us, &digest);
    how_many = std::min(how_many, by_write.size());
    std::nth_element(by_write.begin(), by_write.begin() + static_cast<std::ptrdiff_t>(how_many), by_write.end(),
                     [](const auto &a, const auto &b) { return a.first < b.first; });
    std::vector<Digest> going;
    going.reserve(how_many);
    for (std::size_t i = 0; i < how_many; ++i) going.push_back(*by_write[i].second);
    for (const Digest &digest : going) {
        const auto found = remembered_.find(digest);
        if (found->second.held.count > 0) due.push_back(to_write(found->first, found->second.held));
        remembered_.erase(found);
    }
}

std::vector<NotedUses> UsageRecorder::take_all() {
    std::unique_ptr<Notes> taken = take_notes();
    std::vector<NotedUses> all;
    taken->for_each([&](const Digest &digest, const Uses &uses) {
        auto found = remembered_.find(digest);
        if (found == remembered_.end())
            all.push_back(to_write(digest, uses));
        else
            found->second.held.add(uses);
    });
    for (const auto &[digest, token] : remembered_)
        if (token.held.count > 0) all.push_back(to_write(digest, token.held));
    remembered_.clear();
    remembered_count_ = 0;
    held_next_due_us_.reset();
    held_shortest_interval_us_ = INT64_MAX;
    give_back(std::move(taken));
    return all;
}

std::optional<std::int64_t> UsageRecorder::next_due_us() const { return held_next_due_us_; }

bool UsageRecorder::crowded() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return notes_->size() >= (notes_capacity_ + 1) / 2;
}

std::int64_t UsageRecorder::shortest_interval_us(std::int64_t longest) const {
    std::int64_t shortest = std::min(longest, held_shortest_interval_us_.load());
    std::lock_guard<std::mutex> lock(mutex_);
    return std::min(shortest, notes_shortest_interval_us_);
}

std::size_t UsageRecorder::tracked() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return notes_->size() + remembered_count_;
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
    bool wake = false;  // notes wait to be taken
    bool stopping = false, done = false;
    std::thread thread;
    std::atomic<bool> started{false};  // the thread was started: read by note() without the lock

    // Held back by note() (stop_from_signals); set before the first note.
    sigset_t held_signals{};
    bool holds_signals = false;

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
            report("more than " + std::to_string(recorder.notes_capacity()) +
                   " distinct tokens used before this process's last-used writer could take them, which it did not "
                   "within " + std::to_string(UsageWriter::longest_note_wait.count()) +
                   " ms (it did not keep up): their uses are not recorded, and those tokens may show an older last "
                   "use or none (said once per process)");
            reported_dropped = true;
        }
    }

    void run() {
        std::unique_lock<std::mutex> lock(mutex);
        std::optional<std::int64_t> last_take;
        while (!stopping) {
            // When to take the notes: new notes one gap after the last take
            // (the first uses of many tokens share one transaction instead of
            // costing one each), at once when they crowd the notes' table;
            // uses held back at their due time. Every call here is constant
            // time: note() never waits behind this loop.
            const std::int64_t now = monotonic_microseconds();
            std::optional<std::int64_t> take_at = recorder.next_due_us();
            if (wake) {
                const std::int64_t gap = recorder.shortest_interval_us(UsageWriter::longest_write_gap_us);
                const std::int64_t notes_at =
                    !last_take || recorder.crowded() ? now : std::max(now, *last_take + gap);
                take_at = std::min(take_at.value_or(notes_at), notes_at);
            }
            if (!take_at) {
                changed.wait(lock);
                continue;
            }
            if (*take_at > now) {
                changed.wait_for(lock, std::chrono::microseconds(*take_at - now));
                continue;
            }
            wake = false;  // notes made from now on wake this thread again
            lock.unlock();
            const auto due = recorder.take_due(now);
            write(due);
            lock.lock();
            last_take = now;
            changed.notify_all();  // note()s waiting for room (the table was full)
        }
        lock.unlock();
        write(recorder.take_all());
        lock.lock();
        done = true;
        changed.notify_all();
    }
};

namespace {
// Holds back `signals` (none if null) on this thread for its lifetime.
class SignalsHeld {
public:
    explicit SignalsHeld(const sigset_t *signals) : active_(signals != nullptr) {
        if (active_) pthread_sigmask(SIG_BLOCK, signals, &before_);
    }
    ~SignalsHeld() {
        if (active_) pthread_sigmask(SIG_SETMASK, &before_, nullptr);
    }
    SignalsHeld(const SignalsHeld &) = delete;
    SignalsHeld &operator=(const SignalsHeld &) = delete;

private:
    bool active_;
    sigset_t before_;
};
}  // namespace

UsageWriter::UsageWriter(std::string dir, Report report, std::size_t max_tokens)
    : shared_(std::make_shared<Shared>(std::move(dir), std::move(report), max_tokens)) {}

UsageWriter::~UsageWriter() { stop(std::chrono::seconds(1)); }

void UsageWriter::note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip,
                       std::int64_t interval_us, std::int64_t now_us) {
    const SignalsHeld held(shared_->holds_signals ? &shared_->held_signals : nullptr);
    UsageRecorder &recorder = shared_->recorder;
    const auto note_it = [&] { return recorder.note(digest, used_at_ns, client_ip, interval_us, now_us); };
    UsageRecorder::Noted noted = note_it();
    // Most notes end here: the thread runs and already knows of waiting notes.
    if (noted == UsageRecorder::Noted::quietly && shared_->started.load(std::memory_order_acquire)) return;
    std::unique_lock<std::mutex> lock(shared_->mutex);
    if (shared_->stopping) {
        if (noted == UsageRecorder::Noted::full) recorder.count_dropped();
        return;
    }
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
        shared_->started.store(true, std::memory_order_release);
    }
    if (noted == UsageRecorder::Noted::full) {
        // The thread did not take the notes in time: on a machine too busy to
        // give it the CPU (issue 23: uses lost at full load). This thread
        // waits for the next take rather than lose the use, which also leaves
        // the CPU to the writer; the client has its answer already.
        // Other threads may fill each new table first: try after every take.
        const auto give_up_at = std::chrono::steady_clock::now() + UsageWriter::longest_note_wait;
        while (noted == UsageRecorder::Noted::full && !shared_->stopping) {
            const std::uint64_t seen = recorder.takes();
            lock.unlock();
            noted = note_it();  // a take since the last try may have made room
            lock.lock();
            if (noted != UsageRecorder::Noted::full) break;
            shared_->wake = true;
            shared_->changed.notify_all();
            if (!shared_->changed.wait_until(lock, give_up_at,
                                             [&] { return shared_->stopping || recorder.takes() != seen; }))
                break;
        }
        if (noted == UsageRecorder::Noted::full) {
            recorder.count_dropped();
            return;
        }
    }
    if (noted == UsageRecorder::Noted::look) {  // at most twice per take: the first note, and the table half full
        shared_->wake = true;
        shared_->changed.notify_all();
    }
}

void UsageWriter::stop_from_signals(std::initializer_list<int> signals) {
    sigemptyset(&shared_->held_signals);
    for (const int signal : signals) sigaddset(&shared_->held_signals, signal);
    shared_->holds_signals = signals.size() > 0;
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

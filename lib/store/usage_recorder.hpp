// SPDX-License-Identifier: Apache-2.0
// Last used, from an httpd child: the uses of each token are noted in memory
// after the response (UsageRecorder), and a thread of the child's own writes
// them to the usage store (UsageWriter), at most once per token per interval.
// No request ever waits for the usage store, and no failure of it reaches a
// request.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "token/token.hpp"
#include "store/usage_store.hpp"

namespace cptoken {

/// The uses one process has noted and not yet written, per token. Every use
/// is counted; a token's uses are written at once when it was not written
/// within its interval, else once its last write is `interval` old. Times are
/// passed in (wall clock for the time of use, a monotonic clock for
/// intervals), so the rules can be tested without waiting.
///
/// Two sides, so that a request never waits for the writer's work (issue 23:
/// requests stalled while the writer scanned every token under the lock
/// note() takes):
/// - note(), from any thread, adds the use to a small table of notes, under a
///   lock held for one hash-table operation;
/// - take_due(), from one thread (the writer), swaps that table for an empty
///   one under the same lock, then, without it, merges the notes into the
///   tokens it remembers (when each was last written) and returns what is due.
/// take_due(), take_all() and next_due_us() belong to that one thread.
///
/// Memory is bounded by max_tokens (~200 bytes each): 1/16 of them for the
/// notes between two takes (twice: the table being filled and the one being
/// merged), the rest for the tokens written within their interval. When more
/// tokens are used within an interval than it remembers, the least recently
/// written are forgotten (their waiting uses written early): a token may then
/// be written more than once per interval, but no use is lost. The writer
/// takes the notes as soon as the table is half full; a note() that finds it
/// full says so (Noted::full) and the caller waits for a take (UsageWriter).
class UsageRecorder {
public:
    static constexpr std::size_t default_max_tokens = 16384;

    explicit UsageRecorder(std::size_t max_tokens = default_max_tokens);

    /// What note() did with a use.
    enum class Noted {
        quietly,  ///< noted; the writer knows there are notes to take
        look,     ///< noted; the writer should look: the first note since it last took them, or the table
                  ///< just became half full (take them now)
        full,     ///< not noted: the notes' table is full until the writer takes it (count_dropped() if given up)
    };

    /// Notes one use of `digest`, made at `used_at_ns` (wall clock) from
    /// `client_ip` (text as httpd has it; empty or longer than an IPv6
    /// address: unknown), by a location whose writes are `interval_us` apart.
    /// Any thread; one hash-table operation under the notes' lock. `now_us`
    /// (monotonic) is not needed: the writer reads its own clock.
    Noted note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip, std::int64_t interval_us,
               std::int64_t now_us);

    /// How many times the writer took the notes: a note() that found the
    /// table full may succeed once this changed. Any thread.
    std::uint64_t takes() const { return takes_.load(std::memory_order_acquire); }

    /// Counts a use given up after note() found the table full.
    void count_dropped();

    /// The writer's thread: takes the notes and returns the uses due at
    /// `now_us`, which then count as written at `now_us`. Forgets the tokens
    /// with nothing to write whose interval has passed.
    std::vector<NotedUses> take_due(std::int64_t now_us);

    /// The writer's thread: every use not yet written (at the end of the process).
    std::vector<NotedUses> take_all();

    /// The writer's thread: when the uses it holds back (used again within
    /// their interval, as of the last take) are due; nullopt if none. Notes
    /// not taken yet are not looked at: the writer knows of them from note().
    std::optional<std::int64_t> next_due_us() const;

    /// True if the notes' table is half full: the writer takes it at once.
    bool crowded() const;

    /// The shortest interval of the notes not taken yet and of the uses held
    /// back, at most `longest`. Any thread; constant time.
    std::int64_t shortest_interval_us(std::int64_t longest) const;

    /// Tokens in memory now: notes not taken yet, and tokens remembered.
    std::size_t tracked() const;
    /// Uses given up because the notes' table was full (count_dropped()).
    std::uint64_t dropped() const;
    /// Distinct tokens noted between two takes at most.
    std::size_t notes_capacity() const { return notes_capacity_; }

private:
    static constexpr std::size_t max_ip_text = 46;  // INET6_ADDRSTRLEN
    static constexpr std::int64_t never = INT64_MIN;
    // Uses of one token: noted since the last take (in the notes' table), or,
    // for a token remembered, held back since its last write.
    struct Uses {
        std::int64_t interval_us = 0;  // the shortest interval of these uses
        std::int64_t last_used_ns = 0;
        std::array<char, max_ip_text> client{};  // no allocation per token
        std::uint8_t client_size = 0;            // 0: unknown
        std::uint64_t count = 0;
        void add(std::int64_t used_at_ns, std::string_view client_ip, std::int64_t interval);
        void add(const Uses &more);
    };
    // A token written within its interval, and its uses since.
    struct Remembered {
        std::int64_t written_us = never;  // monotonic time of the last write
        Uses held;  // held.interval_us: that of the written uses until others are held
        std::int64_t due_us() const { return written_us + held.interval_us; }
        bool due_at(std::int64_t now_us) const { return now_us - written_us >= held.interval_us; }
    };
    struct DigestHash {
        std::size_t operator()(const Digest &digest) const noexcept;  // SHA-512 bytes are uniform already
    };
    // The notes between two takes: open addressing in slots made once, so
    // that note() never allocates (a node per use, freed by the writer's
    // thread, made requests wait on malloc's arena lock).
    class Notes {
    public:
        explicit Notes(std::size_t capacity);
        /// The uses of `digest`, added if there is room; nullptr if not.
        Uses *find_or_add(const Digest &digest, bool &added);
        std::size_t size() const { return filled_.size(); }
        template <class Visit>
        void for_each(Visit visit) const {
            for (std::uint32_t index : filled_) visit(slots_[index].digest, slots_[index].uses);
        }
        void clear();

    private:
        struct Slot {
            Digest digest{};
            Uses uses;
            bool filled = false;
        };
        struct Free {
            void operator()(Slot *slots) const noexcept { std::free(slots); }
        };
        const std::size_t capacity_, slot_count_;  // slot_count_: a power of two, at least twice capacity_
        // calloc: all-zero bytes are empty slots, and the pages of slots never
        // filled are never touched (no memory for a child's unused room).
        std::unique_ptr<Slot[], Free> slots_;
        std::vector<std::uint32_t> filled_;  // the slots in use, in the order they were filled
    };
    static NotedUses to_write(const Digest &digest, const Uses &uses);
    std::unique_ptr<Notes> take_notes();
    void give_back(std::unique_ptr<Notes> taken);
    void look_at_remembered(std::int64_t now_us, std::vector<NotedUses> &due);
    void forget_least_recently_written(std::size_t how_many, std::vector<NotedUses> &due);

    const std::size_t notes_capacity_, remembered_capacity_;

    // Shared with note(): guarded by mutex_, every operation constant time.
    mutable std::mutex mutex_;
    std::unique_ptr<Notes> notes_;
    std::int64_t notes_shortest_interval_us_ = INT64_MAX;
    std::uint64_t dropped_ = 0;
    std::atomic<std::uint64_t> takes_{0};  // changed under mutex_, read by any thread
    std::atomic<std::size_t> remembered_count_{0};  // for tracked(), from any thread

    // The writer's own: never touched by note().
    std::unique_ptr<Notes> spare_;  // the empty table note() gets at the next take
    std::unordered_map<Digest, Remembered, DigestHash> remembered_;
    std::optional<std::int64_t> held_next_due_us_;
    std::atomic<std::int64_t> held_shortest_interval_us_{INT64_MAX};
    std::int64_t last_look_us_ = never;  // the last pass over every token remembered
};

/// Writes the uses of a UsageRecorder to DIR/usage.mdb from a thread of its
/// own, started on the first note() with every signal blocked, in one
/// transaction per take of the notes: at most one a second, more often only
/// for a shorter interval or when more than 1/32 of max_tokens distinct tokens
/// were noted since the last take. Follows DIR: when the usage files at
/// its path are replaced (a store directory moved into place), the next
/// write goes to the new ones. A failed write is dropped and `report` is
/// called, once per writer, with a message for the admin; so is the first
/// use dropped because the notes' table was full.
class UsageWriter {
public:
    using Report = std::function<void(const std::string &message)>;

    /// Two writes are at least this far apart (or a pending token's interval,
    /// if shorter): the first uses of many tokens share one transaction
    /// instead of costing one each.
    static constexpr std::int64_t longest_write_gap_us = 1000000;

    /// How long note() waits for the thread to take the notes when their
    /// table is full before it gives the use up (counted, reported once).
    static constexpr std::chrono::milliseconds longest_note_wait{100};

    UsageWriter(std::string dir, Report report, std::size_t max_tokens = UsageRecorder::default_max_tokens);
    /// stop(std::chrono::seconds(1)).
    ~UsageWriter();
    UsageWriter(const UsageWriter &) = delete;
    UsageWriter &operator=(const UsageWriter &) = delete;

    /// UsageRecorder::note(), waking the thread when it should look. Takes a
    /// lock for one hash-table operation, and the thread's lock at most twice
    /// per take; never touches the store. Waits for the thread only when the
    /// notes' table is full (a machine too busy to give the thread the CPU),
    /// at most longest_note_wait, then gives the use up.
    /// Throws std::system_error if the thread cannot be started.
    void note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip, std::int64_t interval_us,
              std::int64_t now_us);

    /// Makes note() hold back `signals` on its thread while it runs. For a
    /// process that calls stop() from those signals' handlers (prefork ends
    /// a child from its SIGTERM handler): stop() must never interrupt note()
    /// holding the locks it needs, and a use noted is a use written. Call
    /// before the first note(); costs note() two system calls.
    void stop_from_signals(std::initializer_list<int> signals);

    /// Writes every use noted and stops the thread, waiting at most `wait`
    /// for it (a write blocked on the store's writer lock, held by another
    /// process, can take forever). Returns false if it did not finish in
    /// time: it is then left to finish or die with the process.
    bool stop(std::chrono::milliseconds wait);

    /// Tokens tracked now (for tests).
    std::size_t tracked() const;

private:
    struct Shared;
    std::shared_ptr<Shared> shared_;  // also held by the thread, which may outlive this object
};

}  // namespace cptoken

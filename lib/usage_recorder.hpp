// Last used, from an httpd child: the uses of each token are noted in memory
// after the response (UsageRecorder), and a thread of the child's own writes
// them to the usage store (UsageWriter), at most once per token per interval.
// No request ever waits for the usage store, and no failure of it reaches a
// request.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "token.hpp"
#include "usage_store.hpp"

namespace cptoken {

/// The uses one process has noted and not yet written, per token. Every use
/// is counted; a token is due for a write when it has uses to write and was
/// never written, or its last write is `interval` old. Times are passed in
/// (wall clock for the time of use, a monotonic clock for intervals), so the
/// rules can be tested without waiting. Thread-safe.
class UsageRecorder {
public:
    /// Tokens tracked at most (~200 bytes each: 3.2 MiB). A token is tracked
    /// from its first use until its interval has passed with nothing to write.
    static constexpr std::size_t default_max_tokens = 16384;

    explicit UsageRecorder(std::size_t max_tokens = default_max_tokens);

    /// Notes one use of `digest`, made at `used_at_ns` (wall clock) from
    /// `client_ip` (text as httpd has it; empty or longer than an IPv6
    /// address: unknown), at `now_us` (monotonic), by a location
    /// whose writes are `interval_us` apart. Returns true if the writer
    /// should look again: the token is due now, or this is its first use to
    /// write since its last write (a due time the writer did not know). A
    /// token not yet tracked while max_tokens are is not noted; dropped()
    /// counts such uses.
    bool note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip, std::int64_t interval_us,
              std::int64_t now_us);

    /// The uses due at `now_us`, which then count as written at `now_us`.
    /// Forgets the tokens with nothing to write whose interval has passed.
    std::vector<NotedUses> take_due(std::int64_t now_us);

    /// Every use not yet written (at the end of the process).
    std::vector<NotedUses> take_all();

    /// When take_due() will next have something (`now_us` or earlier if a
    /// token is due already); nullopt if no use waits.
    std::optional<std::int64_t> next_due_us() const;

    /// The shortest interval of the tokens with uses to write, at most `longest`.
    std::int64_t shortest_interval_us(std::int64_t longest) const;

    /// Tokens tracked now.
    std::size_t tracked() const;
    /// Uses not noted because max_tokens were tracked.
    std::uint64_t dropped() const;

private:
    static constexpr std::size_t max_ip_text = 46;  // INET6_ADDRSTRLEN
    struct Pending {
        std::int64_t written_us = never;  // monotonic time of the last write
        std::int64_t interval_us = 0;
        std::int64_t last_used_ns = 0;
        std::array<char, max_ip_text> client{};  // no allocation per token
        std::uint8_t client_size = 0;            // 0: unknown
        std::uint64_t uses = 0;  // since the last write
        std::int64_t due_us() const { return written_us == never ? never : written_us + interval_us; }
        bool due_at(std::int64_t now_us) const { return written_us == never || now_us - written_us >= interval_us; }
    };
    struct DigestHash {
        std::size_t operator()(const Digest &digest) const noexcept;  // SHA-512 bytes are uniform already
    };
    static constexpr std::int64_t never = INT64_MIN;
    static NotedUses to_write(const Digest &digest, const Pending &pending);

    const std::size_t max_tokens_;
    mutable std::mutex mutex_;
    std::unordered_map<Digest, Pending, DigestHash> pending_;
    std::uint64_t dropped_ = 0;
};

/// Writes the uses of a UsageRecorder to DIR/usage.mdb from a thread of its
/// own, started on the first note() with every signal blocked, in one
/// transaction per write: at most one a second. Follows DIR: when the usage files at
/// its path are replaced (a store directory moved into place), the next
/// write goes to the new ones. A failed write is dropped and `report` is
/// called, once per writer, with a message for the admin; so is the first
/// use dropped because too many tokens were tracked.
class UsageWriter {
public:
    using Report = std::function<void(const std::string &message)>;

    /// Two writes are at least this far apart (or a pending token's interval,
    /// if shorter): the first uses of many tokens share one transaction
    /// instead of costing one each.
    static constexpr std::int64_t longest_write_gap_us = 1000000;

    UsageWriter(std::string dir, Report report, std::size_t max_tokens = UsageRecorder::default_max_tokens);
    /// stop(std::chrono::seconds(1)).
    ~UsageWriter();
    UsageWriter(const UsageWriter &) = delete;
    UsageWriter &operator=(const UsageWriter &) = delete;

    /// UsageRecorder::note(), waking the thread when it should look again. Takes
    /// a lock for a few hash-table operations; never touches the store.
    /// Throws std::system_error if the thread cannot be started.
    void note(const Digest &digest, std::int64_t used_at_ns, std::string_view client_ip, std::int64_t interval_us,
              std::int64_t now_us);

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

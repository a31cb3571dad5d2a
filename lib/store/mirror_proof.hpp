// SPDX-License-Identifier: Apache-2.0
// CPTokenMaxStaleness at every request: whether the store in DIR, a mirror
// of etcd, is known to be fresh enough to decide on tokens (issue 24).
//
// The request path must not read DIR/mirror.state each time (issue 23): a
// MirrorProofCache keeps, per process, when the store was last verified and
// reads the file again at most every reread_interval. The age is computed at
// every call from the kept proof and the boot clock now, so keeping it only
// delays noticing a *newer* proof; it can never make a stale store look
// fresh. The status handler reads the file itself, fresh, each time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "store/mirror_state.hpp"

namespace cptoken {

/// Why there is no proof of freshness in this boot, for a log line or a
/// status answer: `state` is what DIR/mirror.state says (nullopt: no file).
/// Empty if `state` does hold a proof of this boot.
std::string why_unverified(const std::optional<MirrorState> &state);

/// One judgement of a store's freshness.
struct MirrorFreshness {
    bool fresh = true;
    std::optional<std::chrono::nanoseconds> age;  ///< of the proof; nullopt: none in this boot
    std::string why_unverified;  ///< if there is no proof: why (why_unverified(), or the file's error)
};

/// Thread-safe (worker and event MPMs): one per store directory per process.
class MirrorProofCache {
public:
    /// How long a read of mirror.state is kept before the file is read again.
    static constexpr std::chrono::milliseconds reread_interval{250};

    explicit MirrorProofCache(std::string dir) : dir_(std::move(dir)) {}

    /// Judges the store under `max_staleness` (> 0) now: reads mirror.state
    /// if the last read is older than reread_interval (or there was none),
    /// else only the boot clock. A missing, unreadable or corrupt file is no
    /// proof (not fresh). Never throws for what the file holds.
    MirrorFreshness judge(std::chrono::seconds max_staleness);

private:
    void reread(std::int64_t now_ns);

    const std::string dir_;
    std::mutex reread_mutex_;  // one reader of the file at a time; guards unverified_why_
    std::atomic<std::int64_t> next_read_ns_{0};   // boot clock; 0: never read
    std::atomic<std::int64_t> verified_ns_{0};    // the kept proof (this boot's clock); 0: none
    std::string unverified_why_;                  // when verified_ns_ is 0: why
};

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// lib/store/: whether a mirror of etcd is fresh enough, at every request.
#include "store/mirror_proof.hpp"

#include <exception>

#include "store/store.hpp"

namespace cptoken {

std::string why_unverified(const std::optional<MirrorState> &state) {
    if (!state) return std::string("no ") + mirror_state_file + ": no mirror agent has proven this store";
    if (verified_this_boot(*state)) return {};
    if (state->verified_ns > 0 && !state->boot_id.empty() && state->boot_id != this_boot_id())
        return "verified before this host's last boot, not since";
    return "never verified in this boot";
}

void MirrorProofCache::reread(std::int64_t now_ns) {
    std::lock_guard<std::mutex> lock(reread_mutex_);
    // Another thread may have read it while this one waited for the lock.
    if (now_ns < next_read_ns_.load(std::memory_order_acquire)) return;
    std::int64_t verified = 0;
    std::string why;
    try {
        const auto state = read_mirror_state(dir_);
        if (const auto proven = state ? verified_this_boot(*state) : std::nullopt)
            verified = *proven;
        else
            why = why_unverified(state);
    } catch (const std::exception &e) {  // unreadable or corrupt: no proof, and the log says why
        why = e.what();
    }
    unverified_why_ = std::move(why);
    verified_ns_.store(verified, std::memory_order_relaxed);
    // Released last: a thread that sees the new deadline sees the new proof.
    next_read_ns_.store(now_ns + std::chrono::nanoseconds(reread_interval).count(), std::memory_order_release);
}

MirrorFreshness MirrorProofCache::judge(std::chrono::seconds max_staleness) {
    std::int64_t now = boottime_nanoseconds();
    if (now >= next_read_ns_.load(std::memory_order_acquire)) {
        reread(now);
        now = boottime_nanoseconds();  // the age is judged after the read, never before a proof it found
    }
    MirrorFreshness freshness;
    const std::int64_t verified = verified_ns_.load(std::memory_order_relaxed);
    if (verified > 0) freshness.age = proof_age(verified, now);
    freshness.fresh = fresh_enough(freshness.age, max_staleness);
    if (!freshness.age) {
        if (verified > 0) {
            freshness.why_unverified = "the proof is ahead of this host's boot clock";
        } else {
            std::lock_guard<std::mutex> lock(reread_mutex_);
            freshness.why_unverified = unverified_why_;
        }
        // A proof found by another thread since verified_ns_ was loaded: this call still refuses.
        if (freshness.why_unverified.empty()) freshness.why_unverified = "never verified in this boot";
    }
    return freshness;
}

}  // namespace cptoken

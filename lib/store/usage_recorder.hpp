// SPDX-License-Identifier: Apache-2.0
// Last used, from an httpd child: each use a token admitted is recorded in
// the usage table at once, from the request's own thread, in constant time
// and without a lock (UsageStore::record). No request waits for another, no
// thread of our own runs, and no failure of the usage store reaches a
// decision.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "store/usage_store.hpp"
#include "token/network.hpp"
#include "token/token.hpp"

namespace cptoken {

/// Records the uses of one httpd child in DIR's usage table, following DIR:
/// at most usage_follow_interval after the table at its path was replaced
/// (a rebuild, a store directory moved into place), uses go to the new one.
/// Thread-safe. Failures are reported once per recorder, with a message for
/// the admin, through `report`: a table that cannot be opened, one changed
/// in place (never written through its map again), one without room.
class UsageRecorder {
public:
    using Report = std::function<void(const std::string &message)>;

    UsageRecorder(std::string dir, Report report);

    /// Records one use of `digest` at `when` (wall clock, seconds) from
    /// `client` (none: unknown). Never throws.
    void record(const Digest &digest, Seconds when, const std::optional<Address> &client) noexcept;

private:
    // The table to write to now (null if none works), as this thread last
    // saw it: a lock only when another thread replaced it.
    UsageStore *current() noexcept;
    // Looks at the table's path (at most once per usage_follow_interval)
    // and opens it again if it was replaced or is not open.
    void look(std::int64_t now_us) noexcept;
    // Drops `broken` if it is still the table in use.
    void drop(const UsageStore *broken) noexcept;
    void report_once(std::atomic<bool> &said, const std::string &message) noexcept;
    void report_changed() noexcept;

    const std::string dir_;
    const Report report_;
    std::mutex mutex_;  // guards store_ and ids_, and changes to generation_
    std::shared_ptr<UsageStore> store_;
    std::pair<dev_t, ino_t> ids_{};
    std::atomic<std::uint64_t> generation_;  // changes with store_: unique among all recorders
    std::atomic<std::int64_t> next_look_us_{0};
    std::atomic<bool> said_failure_{false}, said_changed_{false}, said_full_{false};
};

}  // namespace cptoken

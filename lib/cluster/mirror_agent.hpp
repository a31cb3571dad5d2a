// SPDX-License-Identifier: Apache-2.0
// The mirror agent (`cptoken sync`, issue 24): keeps a local token store a
// copy of the token set in etcd, and proves once a second that it is current
// (DIR/mirror.state), so that httpd can refuse to trust a stale copy.
//
// How (research/etcd-mirror.md §7.4):
//   - a full read (every key under P at one revision R, paginated) applied as
//     ONE LMDB transaction, the store's mirror point set to R: on first
//     start, when etcd is another cluster or went back in time (restored from
//     a snapshot), when the watch's start was compacted, and when a
//     reconciliation found drift. The read runs in a thread of its own, the
//     lowest in priority of the agent's (httpd's share against the agent's
//     is the unit's CPUWeight), while the watch goes on from R + 1: each
//     change is applied at once, ahead of the read, without moving the
//     point, and again over the read in its transaction, so a revoke never
//     waits for a full read;
//   - every --reconcile-every, a reconciliation in a thread of its own, the
//     lowest in priority of the agent's: etcd read whole and compared with
//     a snapshot of the store, beside the watch, to catch what a watch bug
//     may have lost ("drift") without holding back the changes that go on
//     coming;
//   - otherwise a watch from applied_revision + 1, each answer one LMDB
//     transaction, the point moved to the highest kv.mod_revision applied
//     (never header.revision: a catch-up answer stops at 1000 revisions but
//     says the store's revision);
//   - a freshness proof on a second connection, in a second thread: a
//     linearizable read of P gen (mod_revision Mg), and mirror.state's
//     verified time set to when that read was sent only if the store holds
//     Mg. Two threads because Watch::next() blocks up to the watchdog, and a
//     timeout there ends the stream: the proof cannot wait for it;
//   - this host's usage published every --usage-every, in a third thread
//     with a third connection, so that a slow put never delays a proof.
//
// This file is the logic without a command line; cptoken.cpp's cmd_sync is
// the thin front. The pure decisions are free functions, unit-tested in
// t/unit/test_etcd_mirror_agent.cpp; the rest runs against a real etcd in
// t/cluster/test_mirror_agent.py. Nothing here logs a value: values are
// token records.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cluster/cluster_config.hpp"
#include "cluster/etcd_wire.hpp"
#include "store/store.hpp"
#include "store/usage_store.hpp"
#include "token/siphash.hpp"

namespace cptoken::etcd {

/// How the agent runs.
struct AgentOptions {
    ClusterConfig cluster;  ///< endpoints, TLS, user, prefix
    std::string db;         ///< the store directory (made by `cptoken init`)
    /// Between two reconciliations (a full read compared with the store), ±10 % jitter.
    std::chrono::milliseconds reconcile_every{std::chrono::minutes(10)};
    /// No answer on the watch for this long: the member is frozen or cut off;
    /// watch another. Must exceed etcd's progress notify interval
    /// (--experimental-watch-progress-notify-interval: set it to 10s).
    std::chrono::milliseconds watchdog{std::chrono::seconds(30)};
    std::chrono::milliseconds proof_every{std::chrono::seconds(1)};
    /// How long the watch may stay behind a proof's read before its stream
    /// is dropped for another member's.
    std::chrono::milliseconds catch_up_allowance{std::chrono::seconds(2)};
    std::int64_t page_size = 10000;
    /// Where this host publishes its usage (cluster_usage.hpp): its name,
    /// and how often; 0: never (nor with `once`).
    std::string host_name;
    std::chrono::milliseconds usage_every{std::chrono::seconds(5)};
    /// How this host's usage is read; empty: read_usage(db), which needs root
    /// or httpd's group (a store owner outside it gives a UsageHelper's read).
    std::function<UsageByKey()> read_usage;
    bool once = false;  ///< one full read, then return
    /// Tests only: end the process (as kill -9 would: no cleanup) right after
    /// the Nth watch answer was committed. 0: never.
    unsigned exit_after_applies = 0;
};

/// Where the agent writes its log: one line per call, without a newline.
using AgentLog = std::function<void(const std::string &line)>;

/// Runs the agent until `stop` becomes true (a signal handler sets it), or
/// after one full read with `once`. Returns 0 on a clean stop, 1 when
/// `once` was stopped before its read was applied. Stopping
/// takes at most about the watchdog (a watch read in flight) or one request
/// timeout (a read in flight while etcd has no quorum). etcd being away is
/// never an error: the agent retries with backoff and the store's
/// verified time ages. Throws StoreError if the store cannot be opened or
/// written (the process should end: systemd restarts it), EtcdError from a
/// --once read that failed, SchemaTooNew from a --once read that was
/// refused.
int run_mirror_agent(const AgentOptions &options, const std::atomic<bool> &stop, const AgentLog &log);

// ----------------------------------------------------------------- pure parts

/// A full read that etcd's meta/schema_version says this code cannot read.
class SchemaTooNew : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A full read mapped to the store's writes.
struct MappedRead {
    std::vector<StoreWrite> writes;
    std::vector<std::int64_t> mod_revisions;  ///< of each write, in the same order
    std::int64_t gen_revision = 0;            ///< P gen's mod_revision; 0 if absent
    std::optional<std::string> schema_value;  ///< P meta/schema_version's value, if present
};

/// Adds one page of a full read under `prefix` to `read` (store_write()), so
/// that a read is mapped as it arrives, never held whole as etcd sent it;
/// keys that hold no token data are left out, except gen and
/// meta/schema_version, whose facts are kept. The page's values are moved
/// into `read`. Never throws but std::bad_alloc.
void map_full_read(std::string_view prefix, std::vector<KeyValue> &&page, MappedRead &read);

/// Throws SchemaTooNew unless `schema_value` (absent: fine, an empty prefix)
/// is a decimal number not above StoreSettings::schema_version. A value that
/// is no number is refused too (fail closed).
void check_schema(const std::optional<std::string> &schema_value);

/// Why the store must be read whole before the watch can resume from its
/// applied revision + 1, given what etcd said at that revision (a count-only
/// range at `point->applied_revision`: its header); nullopt: resume. Reasons:
/// never synced, another cluster id, etcd's revision below the applied one
/// (restored from a snapshot). A compacted revision is told by the range's
/// error, not here.
std::optional<std::string> full_read_reason(const std::optional<MirrorPoint> &point, const ResponseHeader &etcd_now);

/// One watch answer's events as the store's writes, and the point they take
/// the store to: applied_revision the highest kv.mod_revision (never
/// header.revision), gen_revision moved when P gen is among them. Events at
/// or below `point.applied_revision` (already applied) are skipped.
/// `schema_changed` says an event touched meta/schema_version (read whole
/// again: check_schema() decides).
struct MappedEvents {
    std::vector<StoreWrite> writes;
    MirrorPoint point;
    bool schema_changed = false;
};
MappedEvents map_events(std::string_view prefix, const std::vector<WatchEvent> &events, const MirrorPoint &point);

/// What a freshness proof's read (P gen: mod_revision `gen_revision`, answer
/// header `header`) proves of a store at `point`.
enum class Proof {
    fresh,          ///< the store holds every admin write made before the read was sent
    behind,         ///< the watch has not applied the newest admin write yet
    other_cluster,  ///< etcd is not the cluster the store mirrors: read it whole
    went_back,      ///< etcd's revision is below the store's: restored, read it whole
    never_synced,   ///< no mirror point yet
};
Proof prove(const std::optional<MirrorPoint> &point, std::int64_t gen_revision, const ResponseHeader &header);

/// Keys a reconciliation found that the watch should already have brought:
/// `differ` etcd keys at or below the store's applied revision whose value
/// the store lacks or holds otherwise (values apply_mirror() refuses left
/// out: they are never stored); `gone` store keys etcd no longer has (a
/// delete after the applied revision counts too: a rare race, and deletes
/// only come from prune).
struct Drift {
    std::size_t differ = 0;
    std::size_t gone = 0;
    std::size_t total() const noexcept { return differ + gone; }
};

/// Counts drift between a snapshot of the store and etcd's full read, page
/// by page. It keeps of the store only a SipHash-2-4-128 of each key and
/// of each value, under keys drawn for this count (32 bytes a key, not a
/// copy of the store, and no value etcd sends can be made to match another
/// by choice). First every held() key, then the read's pages through
/// compare(), then drift(). Never throws but std::bad_alloc, and
/// std::runtime_error from the constructor when no random key can be drawn.
class DriftCount {
public:
    DriftCount();
    /// One key and value the store holds (TokenStore::mirror_snapshot()'s visitor).
    void held(StoreWrite::Database database, std::string_view key, std::string_view value);
    /// One page of etcd's read, as map_full_read() maps it (each key once in
    /// the whole read). `applied_revision`: the store's point in the
    /// snapshot held; etcd keys changed after it are not due yet.
    void compare(const MappedRead &page, std::int64_t applied_revision);
    Drift drift() const;

private:
    struct Entry {
        SipTag key;
        SipTag value;
        bool operator<(const Entry &other) const noexcept { return key < other.key; }
    };
    SipTag key_tag(StoreWrite::Database database, std::string_view key) const noexcept;

    SipKey tokens_key_{}, names_key_{}, value_key_{};
    std::vector<Entry> held_;
    bool sorted_ = false;
    std::size_t in_both_ = 0;  ///< etcd's keys found among held_
    std::size_t differ_ = 0;
};

/// The wait before reconnect attempt `attempt` (0: the first after a
/// failure): 100 ms doubling up to 5 s, with full jitter in [half, whole]
/// so that agents do not retry in step.
std::chrono::milliseconds backoff_delay(unsigned attempt, std::mt19937 &random);

/// `every` ±10 %.
std::chrono::milliseconds jittered(std::chrono::milliseconds every, std::mt19937 &random);

}  // namespace cptoken::etcd

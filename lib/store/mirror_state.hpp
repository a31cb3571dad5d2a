// SPDX-License-Identifier: Apache-2.0
// DIR/mirror.state: how fresh a store that mirrors etcd is (issue 24).
//
// The mirror agent (`cptoken sync`) proves once a second, with a
// linearizable read, that the store holds every admin write made so far,
// and says so here; httpd's children read it (CPTokenMaxStaleness,
// `SetHandler cptoken-status`). One line of text, replaced whole by a
// rename, so that a reader never sees half of it:
//
//   cptoken-mirror 1 boot=<boot id> verified=<ns> revision=<n> cluster=<id> state=<syncing|live>
//
// `verified` is CLOCK_BOOTTIME, not wall time: moving the clock cannot make
// a stale store look fresh, and after a reboot (another boot id) the store
// counts as never verified until the agent proves it again. The file is the
// store owner's, mode 0640 in the store's group: httpd reads it, only the
// agent writes it. Its applied revision is for people and load balancers;
// the one writers trust is in tokens.mdb, committed with the data
// (TokenStore::mirror_point()).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace cptoken {

inline constexpr const char *mirror_state_file = "mirror.state";

/// What DIR/mirror.state says.
struct MirrorState {
    std::string boot_id;                  ///< of the boot `verified` was taken in
    std::int64_t verified_ns = 0;         ///< CLOCK_BOOTTIME when the proof's read was sent; 0: never
    std::int64_t applied_revision = 0;    ///< highest etcd revision applied to tokens.mdb
    std::string cluster_id;               ///< etcd's cluster id (decimal), as etcd says it
    std::string state = "syncing";        ///< "syncing" (full read under way or not started) or "live"
};

/// CLOCK_BOOTTIME in nanoseconds (counts while suspended; never steps).
std::int64_t boottime_nanoseconds() noexcept;

/// This boot's id (/proc/sys/kernel/random/boot_id), read once; empty if
/// it cannot be read (then nothing is ever verified).
const std::string &this_boot_id();

/// The state's line, as written to the file (with its newline).
std::string mirror_state_line(const MirrorState &state);

/// Parses a line written by mirror_state_line(); nullopt if it is not one
/// (another format, a field missing or not a number).
std::optional<MirrorState> parse_mirror_state(const std::string &text);

/// Writes DIR/mirror.state (through mirror.state.new and a rename), mode
/// 0640; the group is the directory's (a store directory is setgid). Throws
/// StoreError (access) if it cannot.
void write_mirror_state(const std::string &dir, const MirrorState &state);

/// Reads DIR/mirror.state; nullopt if there is none. Throws StoreError
/// (access: cannot be read; corrupt: not a state line).
std::optional<MirrorState> read_mirror_state(const std::string &dir);

/// When `state` was verified, on this boot's CLOCK_BOOTTIME (ns); nullopt if
/// never in this boot (no proof yet, or another boot id). What a reader keeps
/// to judge the age of a proof again at each request (proof_age).
std::optional<std::int64_t> verified_this_boot(const MirrorState &state);

/// How long before `now_ns` a proof taken at `verified_ns` was (both this
/// boot's CLOCK_BOOTTIME); nullopt if it is ahead of now (not a proof we can
/// trust).
std::optional<std::chrono::nanoseconds> proof_age(std::int64_t verified_ns, std::int64_t now_ns);

/// How long ago `state` was verified, by this host's boot clock; nullopt if
/// never in this boot (no proof yet, another boot id, or a time ahead of now).
std::optional<std::chrono::nanoseconds> verified_age(const MirrorState &state);

/// CPTokenMaxStaleness: whether a store whose proof is `age` old (nullopt:
/// never verified in this boot) may be used under a limit of `max_staleness`
/// (0: no limit, the store is always used). At the limit exactly it still may.
bool fresh_enough(std::optional<std::chrono::nanoseconds> age, std::chrono::seconds max_staleness);

}  // namespace cptoken

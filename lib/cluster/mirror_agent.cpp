// SPDX-License-Identifier: Apache-2.0
// lib/cluster/: the mirror agent (cptoken sync).
#include "cluster/mirror_agent.hpp"

#include <malloc.h>
#include <openssl/rand.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <mutex>
#include <thread>

#include "cluster/cluster_usage.hpp"
#include "cluster/etcd_client.hpp"
#include "cluster/mirror_keys.hpp"
#include "store/mirror_state.hpp"
#include "store/usage_store.hpp"

namespace cptoken::etcd {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

// ----------------------------------------------------------------- pure parts

void map_full_read(std::string_view prefix, std::vector<KeyValue> &&page, MappedRead &read) {
    const std::string gen = gen_key(prefix), schema = schema_key(prefix);
    for (KeyValue &kv : page) {
        if (kv.key == gen) read.gen_revision = kv.mod_revision;
        if (kv.key == schema) read.schema_value = kv.value;
        if (auto write = store_write(prefix, kv.key, std::move(kv.value))) {
            read.writes.push_back(std::move(*write));
            read.mod_revisions.push_back(kv.mod_revision);
        }
    }
}

void check_schema(const std::optional<std::string> &schema_value) {
    if (!schema_value) return;
    std::uint64_t version = 0;
    const char *end = schema_value->data() + schema_value->size();
    const auto [parsed_end, error] = std::from_chars(schema_value->data(), end, version);
    if (schema_value->empty() || error != std::errc() || parsed_end != end)
        throw SchemaTooNew("etcd's meta/schema_version is not a number: not applied");
    if (version > StoreSettings::schema_version)
        throw SchemaTooNew("etcd holds store schema " + std::to_string(version) + ", this cptoken reads up to " +
                           std::to_string(StoreSettings::schema_version) + ": not applied; upgrade cptoken");
}

std::optional<std::string> full_read_reason(const std::optional<MirrorPoint> &point, const ResponseHeader &etcd_now) {
    // prove()'s rule, with no admin write to wait for: only what a watch cannot follow remains.
    switch (prove(point, 0, etcd_now)) {
        case Proof::never_synced:
            return "the store has never been synced";
        case Proof::other_cluster:
            return "etcd is cluster " + std::to_string(etcd_now.cluster_id) + ", the store mirrors cluster " +
                   (point->cluster_id.empty() ? std::string("(none)") : point->cluster_id);
        case Proof::went_back:
            return "etcd's revision " + std::to_string(etcd_now.revision) + " is below the applied " +
                   std::to_string(point->applied_revision) + " (restored from a snapshot?)";
        case Proof::fresh:
        case Proof::behind:
            break;
    }
    return std::nullopt;
}

MappedEvents map_events(std::string_view prefix, const std::vector<WatchEvent> &events, const MirrorPoint &point) {
    MappedEvents out;
    out.point = point;
    const std::string gen = gen_key(prefix), schema = schema_key(prefix);
    for (const WatchEvent &event : events) {
        if (event.kv.mod_revision <= point.applied_revision) continue;
        out.point.applied_revision = std::max(out.point.applied_revision, event.kv.mod_revision);
        if (event.kv.key == gen) out.point.gen_revision = event.kv.mod_revision;
        if (event.kv.key == schema) out.schema_changed = true;
        if (auto write = store_write(prefix, event.kv.key, event.kv.value, event.type == WatchEvent::Type::del))
            out.writes.push_back(std::move(*write));
    }
    return out;
}

Proof prove(const std::optional<MirrorPoint> &point, std::int64_t gen_revision, const ResponseHeader &header) {
    if (!point) return Proof::never_synced;
    if (point->cluster_id != std::to_string(header.cluster_id)) return Proof::other_cluster;
    if (header.revision < point->applied_revision) return Proof::went_back;
    return point->applied_revision >= gen_revision ? Proof::fresh : Proof::behind;
}

DriftCount::DriftCount() {
    for (SipKey *key : {&tokens_key_, &names_key_, &value_key_})
        if (RAND_bytes(key->data(), static_cast<int>(key->size())) != 1)
            throw std::runtime_error("cannot draw the drift count's keys (OpenSSL RAND_bytes)");
}

SipTag DriftCount::key_tag(StoreWrite::Database database, std::string_view key) const noexcept {
    return siphash128(database == StoreWrite::Database::tokens ? tokens_key_ : names_key_, key);
}

void DriftCount::held(StoreWrite::Database database, std::string_view key, std::string_view value) {
    held_.push_back({key_tag(database, key), siphash128(value_key_, value)});
    sorted_ = false;
}

void DriftCount::compare(const MappedRead &page, std::int64_t applied_revision) {
    if (!sorted_) std::sort(held_.begin(), held_.end()), sorted_ = true;
    for (std::size_t i = 0; i < page.writes.size(); ++i) {
        const StoreWrite &write = page.writes[i];
        if (!is_store_value(write)) continue;  // refused at every read: reported as refused, not as drift
        const Entry wanted{key_tag(write.database, write.key), {}};
        const auto found = std::lower_bound(held_.begin(), held_.end(), wanted);
        const bool is_held = found != held_.end() && found->key == wanted.key;
        if (is_held) ++in_both_;
        if (page.mod_revisions[i] > applied_revision) continue;  // newer than the store's point: not yet due
        if (!is_held || !write.value || found->value != siphash128(value_key_, *write.value)) ++differ_;
    }
}

Drift DriftCount::drift() const { return Drift{differ_, held_.size() - in_both_}; }

milliseconds backoff_delay(unsigned attempt, std::mt19937 &random) {
    const std::int64_t ceiling = std::min<std::int64_t>(5000, std::int64_t{100} << std::min(attempt, 6u));
    return milliseconds(std::uniform_int_distribution<std::int64_t>(ceiling / 2, ceiling)(random));
}

milliseconds jittered(milliseconds every, std::mt19937 &random) {
    const std::int64_t spread = every.count() / 10;
    return milliseconds(every.count() + std::uniform_int_distribution<std::int64_t>(-spread, spread)(random));
}

// ----------------------------------------------------------------- the agent

namespace {

const char *proof_name(Proof proof) {
    switch (proof) {
    case Proof::fresh: return "fresh";
    case Proof::behind: return "behind";
    case Proof::other_cluster: return "etcd is another cluster";
    case Proof::went_back: return "etcd's revision went back";
    case Proof::never_synced: return "never synced";
    }
    return "?";
}

// A full read frees what it held (about 350 bytes a key) in many small
// blocks that malloc keeps for reuse, and each thread has an arena of its
// own: without this, an agent idle for days would keep the peak of its last
// read (hundreds of MB at a million tokens).
void give_back_freed_memory() { ::malloc_trim(0); }

// The reason of a full read that repairs drift (the reconciler's): mirror.state stays live meanwhile.
constexpr std::string_view drift_repair = "reconciliation found drift";

// A helper thread's read cut short because the agent stops.
struct Stopping {};

/// Why the watch loop leaves a stream.
struct Leave {
    std::optional<std::string> full_read;  ///< read whole first, for this reason
    bool back_off = false;                 ///< wait before the next attempt
};

class Agent {
public:
    Agent(const AgentOptions &options, const std::atomic<bool> &stop, const AgentLog &log)
        : options_(options), stop_(stop), log_(log), prefix_(options.cluster.prefix),
          store_(options.db, Access::read_write), random_(std::random_device{}()) {
        point_ = store_.mirror_point();
        state_.boot_id = this_boot_id();
        // A proof of an earlier run stays what it was (it ages); the state says syncing until this run is live.
        try {
            if (auto previous = read_mirror_state(options.db); previous && previous->boot_id == state_.boot_id)
                state_.verified_ns = previous->verified_ns;
        } catch (const StoreError &) {
            // A state line we cannot read is replaced, with no proof in it.
        }
        if (point_) {
            state_.applied_revision = point_->applied_revision;
            state_.cluster_id = point_->cluster_id;
        }
        state_.state = "syncing";
        write_state();
    }

    int run() {
        if (options_.once) {
            Client client(options_.cluster.client);
            try {
                full_read(client, point_ ? "--once" : "--once: the store has never been synced");
            } catch (const Stopping &) {
                log_("stopped before the full read was in: nothing applied");
                return 1;
            }
            return 0;
        }
        std::thread prover([this] { prove_loop(); });
        std::thread publisher([this] { publish_loop(); });
        std::thread reconciler([this] { reconcile_loop(); });
        const auto join_helpers = [&] {
            helpers_stop_ = true;
            prover.join();
            publisher.join();
            reconciler.join();
        };
        try {
            watch_loop();
        } catch (...) {
            join_helpers();
            throw;
        }
        join_helpers();
        log_("stopped at revision " + std::to_string(current_point() ? current_point()->applied_revision : 0));
        return 0;
    }

private:
    const AgentOptions &options_;
    const std::atomic<bool> &stop_;
    const AgentLog &log_;
    const std::string prefix_;
    // Written by the watch thread only; the reconciler reads snapshots of it
    // beside the writes (LMDB readers never wait for the writer; MDB_NOTLS).
    TokenStore store_;
    std::mt19937 random_;  // the watch thread's

    // Shared between the watch thread and the prover, under mutex_.
    std::mutex mutex_;
    std::optional<MirrorPoint> point_;  ///< as committed in the store
    MirrorState state_;                 ///< as written to mirror.state
    std::atomic<bool> reconnect_wanted_{false};
    std::optional<std::string> full_read_wanted_;  ///< the prover's or the reconciler's reason
    std::atomic<bool> helpers_stop_{false};  ///< the prover, the publisher and the reconciler end (the watch thread ended)

    std::optional<MirrorPoint> current_point() {
        std::lock_guard lock(mutex_);
        return point_;
    }

    /// Writes mirror.state; call with mutex_ held (or before the prover runs).
    void write_state() { write_mirror_state(options_.db, state_); }

    /// Sleeps until `until` unless the agent is told to stop first (or
    /// `also_stop`, when given, is set); returns false then. In steps of
    /// 100 ms at most: a signal handler only sets a flag.
    bool sleep_until(Steady::time_point until, const std::atomic<bool> *also_stop = nullptr) {
        while (!stop_ && !(also_stop && *also_stop)) {
            const auto now = Steady::now();
            if (now >= until) return true;
            std::this_thread::sleep_for(std::min<Steady::duration>(until - now, milliseconds(100)));
        }
        return false;
    }
    bool pause(milliseconds duration) { return sleep_until(Steady::now() + duration); }

    // --------------------------------------------------------- full read

    /// A full read as read_whole() hands it over.
    struct WholeRead {
        MappedRead mapped;
        ResponseHeader header;      ///< the first page's: R and the cluster
        std::int64_t sent_ns = 0;   ///< when the first page (a linearizable read) was sent
        std::int64_t revision() const noexcept { return header.revision; }
    };

    /// What the watch said while a full read at R went on: every change
    /// after R, in order, already applied to the store ahead of the read.
    struct ChangesBeside {
        std::vector<StoreWrite> writes;
        MirrorPoint point;            ///< applied_revision: the last change's (R if none); gen_revision: 0 unless P gen changed
        std::size_t answers = 0;
        bool schema_changed = false;  ///< seen, and not applied: another full read follows
    };

    /// Every key under the prefix at one revision R, mapped a page at a
    /// time. `on_revision` learns R once the pages have passed P
    /// meta/schema_version, and only if its schema is one this code reads:
    /// changes after R may be applied from then on. Throws EtcdError
    /// (compacted(): read again), SchemaTooNew, Stopping once `cancel` is set.
    WholeRead read_whole(Client &client, const std::atomic<bool> *cancel,
                         const std::function<void(std::int64_t)> &on_revision) {
        WholeRead read;
        read.sent_ns = boottime_nanoseconds();
        const std::string schema = schema_key(prefix_);
        bool schema_known = false;
        client.read_prefix(
            prefix_, options_.page_size,
            [&](std::vector<KeyValue> &&page) {
                if (cancel && *cancel) throw Stopping{};
                const bool past_schema = page.empty() || page.back().key >= schema;  // pages come in key order
                map_full_read(prefix_, std::move(page), read.mapped);
                if (!schema_known && past_schema) {
                    schema_known = true;
                    check_schema(read.mapped.schema_value);
                    if (on_revision) on_revision(read.header.revision);
                }
            },
            &read.header);
        return read;
    }

    /// read_whole() in a thread of its own at the lowest CPU priority: the
    /// agent's other threads (the watch, the proof) come first within the
    /// agent's share of the CPU. (Its share against httpd's is not a
    /// thread's to set: the unit's CPUWeight sets it, docs/scale-out.md.)
    /// With `beside`, this thread meanwhile watches from R + 1 and applies
    /// each change to the store at once, ahead of the read, without moving
    /// the store's point: a revoke made during a full read (about 18 s a
    /// million tokens) takes effect as fast as any other. The changes also
    /// go to `beside`, to be applied again over the read. Throws as
    /// read_whole() does; Stopping when the agent stops.
    WholeRead read_whole_niced(Client &client, ChangesBeside *beside) {
        std::mutex mutex;
        std::condition_variable changed;
        std::optional<std::int64_t> revision;
        std::optional<WholeRead> read;
        std::exception_ptr error;
        bool done = false;
        std::atomic<bool> cancel{false};
        std::thread reader([&] {
            // Linux: a thread's nice value is its own, and raising it needs no privilege.
            ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
            try {
                Client reader_client(options_.cluster.client);
                WholeRead whole = read_whole(reader_client, &cancel, [&](std::int64_t r) {
                    std::lock_guard lock(mutex);
                    revision = r;
                    changed.notify_all();
                });
                std::lock_guard lock(mutex);
                read = std::move(whole);
            } catch (...) {
                std::lock_guard lock(mutex);
                error = std::current_exception();
            }
            std::lock_guard lock(mutex);
            done = true;
            changed.notify_all();
        });
        struct Join {
            std::thread &thread;
            std::atomic<bool> &cancel;
            ~Join() {
                cancel = true;
                thread.join();
            }
        } join{reader, cancel};
        const auto reader_done = [&] {
            std::lock_guard lock(mutex);
            return done;
        };
        // Waits until `ready` (under the mutex), telling the reader to stop once the agent stops.
        const auto wait_for_reader = [&](const auto &ready) {
            std::unique_lock lock(mutex);
            while (!ready()) {
                if (stop_) cancel = true;
                changed.wait_for(lock, milliseconds(100));
            }
        };
        wait_for_reader([&] { return revision || done; });
        if (revision && beside) {
            beside->point.applied_revision = *revision;
            follow_beside(client, *beside, reader_done);
        }
        wait_for_reader([&] { return done; });
        if (error) std::rethrow_exception(error);
        return std::move(*read);
    }

    /// The watch from beside.point + 1 until `reader_done`; ends early (and
    /// quietly: the read goes on, and the watch after it resumes where this
    /// one stopped) on anything but changes.
    void follow_beside(Client &client, ChangesBeside &beside, const std::function<bool()> &reader_done) {
        try {
            WatchRequest request;
            request.key = prefix_;
            request.range_end = prefix_range_end(prefix_);
            request.start_revision = beside.point.applied_revision + 1;
            request.progress_notify = true;
            Watch watch = client.watch(request, options_.watchdog);
            log_("beside the read, the watch goes on from revision " + std::to_string(request.start_revision) + " on " +
                 watch.endpoint());
            while (!stop_ && !reader_done()) {
                const std::optional<WatchResponse> answer = watch.next_until(Steady::now() + milliseconds(100));
                if (!answer || answer->kind == WatchResponse::Kind::created ||
                    answer->kind == WatchResponse::Kind::progress)
                    continue;
                if (answer->kind != WatchResponse::Kind::events) return;  // the watch after the read will say why
                MappedEvents mapped = map_events(prefix_, answer->events, beside.point);
                if (mapped.schema_changed) {
                    beside.schema_changed = true;
                    return;
                }
                if (mapped.point.applied_revision == beside.point.applied_revision) continue;
                const MirrorApplied applied = store_.apply_mirror(mapped.writes, std::nullopt, false);
                if (applied.refused)
                    log_("refused " + std::to_string(applied.refused) + " values that are not a store's (deleted locally)");
                beside.point = mapped.point;
                std::move(mapped.writes.begin(), mapped.writes.end(), std::back_inserter(beside.writes));
                ++beside.answers;
            }
        } catch (const EtcdError &) {
            // As above: the read goes on; the watch after it starts from where this one stopped.
        }
    }

    void full_read(Client &client, const std::string &reason) {
        // A repair of drift finds the store right but for a few keys: mirror.state
        // goes on saying live (the prover still proves freshness).
        if (reason != drift_repair) {
            std::lock_guard lock(mutex_);
            state_.state = "syncing";
            write_state();
        }
        log_("reading whole (" + reason + ")");
        const auto started = Steady::now();
        WholeRead read;
        ChangesBeside beside;
        for (int attempt = 0;; ++attempt) {
            beside = ChangesBeside{};
            try {
                read = read_whole_niced(client, options_.once ? nullptr : &beside);
                break;
            } catch (const EtcdError &e) {
                // Compacted past R while paging (a huge read and an eager compactor): read again at a newer R.
                if (!e.compacted() || attempt == 2) throw;
            }
        }
        const auto read_ms = std::chrono::duration_cast<milliseconds>(Steady::now() - started).count();
        check_schema(read.mapped.schema_value);  // throws SchemaTooNew: nothing applied, the store ages
        MirrorPoint point{read.revision(), read.mapped.gen_revision, std::to_string(read.header.cluster_id)};
        // The changes the watch brought meanwhile go over the read in the same
        // transaction: a token revoked during the read is never live again.
        if (beside.point.applied_revision > point.applied_revision) point.applied_revision = beside.point.applied_revision;
        if (beside.point.gen_revision > point.gen_revision) point.gen_revision = beside.point.gen_revision;
        const std::size_t keys = read.mapped.writes.size();
        std::move(beside.writes.begin(), beside.writes.end(), std::back_inserter(read.mapped.writes));
        const MirrorApplied applied = store_.apply_mirror(read.mapped.writes, point, true);
        {
            std::lock_guard lock(mutex_);
            point_ = point;
            state_.applied_revision = point.applied_revision;
            state_.cluster_id = point.cluster_id;
            state_.verified_ns = std::max(state_.verified_ns, read.sent_ns);
            state_.state = "live";
            full_read_wanted_.reset();
            if (beside.schema_changed) full_read_wanted_ = "meta/schema_version changed";
            write_state();
        }
        const auto total_ms = std::chrono::duration_cast<milliseconds>(Steady::now() - started).count();
        log_("full read (" + reason + "): " +
             std::to_string(keys) + " keys at revision " +
             std::to_string(read.revision()) + " of cluster " + point.cluster_id + " in " + std::to_string(total_ms) +
             " ms (read " + std::to_string(read_ms) + " ms), " + std::to_string(applied.changed) + " changed" +
             (beside.answers ? "; " + std::to_string(beside.answers) + " watch answers applied during the read, to revision " +
                                   std::to_string(point.applied_revision)
                             : std::string()));
        if (applied.refused)
            log_("refused " + std::to_string(applied.refused) + " values that are not a store's (deleted locally)");
    }

    // --------------------------------------------------------- watch

    void watch_loop() {
        Client client(options_.cluster.client);
        std::optional<std::string> full_reason;
        if (!current_point()) full_reason = "the store has never been synced";
        unsigned failures = 0;
        log_("started: mirroring " + prefix_ + " into " + options_.db);
        while (!stop_) {
            try {
                if (full_reason) {
                    full_read(client, *full_reason);
                    full_reason.reset();
                    give_back_freed_memory();
                }
                const Leave leave = follow(client, failures);
                full_reason = leave.full_read;
                if (leave.back_off && !pause(backoff_delay(failures++, random_))) break;
            } catch (const Stopping &) {
                break;  // a full read cut short: nothing of it applied
            } catch (const SchemaTooNew &e) {
                log_(e.what());
                full_reason = "schema check";
                if (!pause(backoff_delay(failures++, random_))) break;
            } catch (const EtcdError &e) {
                log_(std::string("reconnect: ") + e.what());
                if (!pause(backoff_delay(failures++, random_))) break;
            }
        }
    }

    /// Resumes from the store's point and applies what the watch says until
    /// something ends it. Throws EtcdError (back off and try again).
    Leave follow(Client &client, unsigned &failures) {
        const std::optional<MirrorPoint> point = current_point();
        const std::int64_t applied = point->applied_revision;
        // The resume check: the watch must start above the compaction point (a
        // watch from exactly it loses a DELETE on 3.4.23), in the same cluster,
        // not ahead of etcd.
        RangeRequest check;
        check.key = prefix_;
        check.range_end = prefix_range_end(prefix_);
        check.revision = applied;
        check.count_only = true;
        RangeResponse now;
        try {
            now = client.range(check);
        } catch (const EtcdError &e) {
            // Both are gRPC 11 (OutOfRange); only the text tells them apart, and only the log needs to.
            if (e.compacted())
                return {"revision " + std::to_string(applied) +
                        (std::string_view(e.what()).find("future revision") != std::string_view::npos
                             ? " is ahead of etcd (restored from a snapshot?)"
                             : " is compacted")};
            throw;
        }
        if (auto reason = full_read_reason(point, now.header)) return {reason};

        WatchRequest request;
        request.key = prefix_;
        request.range_end = prefix_range_end(prefix_);
        request.start_revision = applied + 1;
        request.progress_notify = true;
        Watch watch = client.watch(request, options_.watchdog);
        note_logins(client, watch_logins_, "watch");
        reconnect_wanted_ = false;
        log_("watching from revision " + std::to_string(applied + 1) + " on " + watch.endpoint());
        for (;;) {
            if (stop_) return {};
            WatchResponse answer = watch.next();
            switch (answer.kind) {
            case WatchResponse::Kind::created:
                set_live();
                break;
            case WatchResponse::Kind::canceled:
                if (answer.compact_revision > 0)
                    return {"the watch was canceled: compacted at revision " + std::to_string(answer.compact_revision)};
                log_("reconnect: the watch was canceled: " + answer.cancel_reason);
                return {std::nullopt, true};
            case WatchResponse::Kind::events:
                if (auto reason = apply(answer)) return {reason};
                failures = 0;
                break;
            case WatchResponse::Kind::progress:
                // Below the store: a member that lags a read made elsewhere, or etcd went back. Not
                // told apart here (a progress answer is the member's own view): the resume check's
                // linearizable read on the next member tells, and reads whole only if etcd went back.
                if (auto point_now = current_point(); answer.header.revision < point_now->applied_revision) {
                    client.move_on();
                    log_("reconnect: the watch on " + watch.endpoint() + " says revision " +
                         std::to_string(answer.header.revision) + ", below the applied " +
                         std::to_string(point_now->applied_revision));
                    return {std::nullopt, true};
                }
                failures = 0;
                break;
            case WatchResponse::Kind::stream_error:
            case WatchResponse::Kind::disconnected:
            case WatchResponse::Kind::timeout:
                // The stream is over and the client has moved on to the next member.
                log_("reconnect: " + answer.message);
                return {std::nullopt, true};
            }
            {
                std::lock_guard lock(mutex_);
                if (full_read_wanted_) return {*full_read_wanted_};
            }
            if (reconnect_wanted_.exchange(false)) {
                client.move_on();
                log_("reconnect: the watch on " + watch.endpoint() + " stayed behind a quorum read for " +
                     std::to_string(options_.catch_up_allowance.count()) + " ms");
                return {};
            }
        }
    }

    void set_live() {
        std::lock_guard lock(mutex_);
        if (state_.state != "live") {
            state_.state = "live";
            write_state();
        }
    }

    /// One watch answer, one LMDB transaction. Returns a reason to read whole instead.
    std::optional<std::string> apply(const WatchResponse &answer) {
        const MirrorPoint before = *current_point();
        MappedEvents mapped = map_events(prefix_, answer.events, before);
        if (mapped.schema_changed) return "meta/schema_version changed";
        if (mapped.point.applied_revision == before.applied_revision) return std::nullopt;  // all applied before
        const MirrorApplied applied = store_.apply_mirror(mapped.writes, mapped.point, false);
        {
            std::lock_guard lock(mutex_);
            point_ = mapped.point;
            state_.applied_revision = mapped.point.applied_revision;
        }
        if (applied.refused)
            log_("refused " + std::to_string(applied.refused) + " values that are not a store's (deleted locally)");
        if (answer.events.size() >= 1000)
            log_("caught up " + std::to_string(answer.events.size()) + " events to revision " +
                 std::to_string(mapped.point.applied_revision));
        if (options_.exit_after_applies && ++applies_ == options_.exit_after_applies) {
            log_("test: ending like kill -9 after " + std::to_string(applies_) + " applied watch answers, at revision " +
                 std::to_string(mapped.point.applied_revision));
            std::_Exit(137);
        }
        return std::nullopt;
    }
    unsigned applies_ = 0;
    unsigned watch_logins_ = 0;  // the watch thread's
    unsigned proof_logins_ = 0;  // the prover's

    /// Says when `client` logged in to etcd again (an expired token, a
    /// restarted member): worth knowing, and how the tests see it happen.
    void note_logins(const Client &client, unsigned &seen, const char *which) {
        const unsigned now = client.authentications();
        if (now > 1 && now != seen) log_(std::string(which) + " connection logged in to etcd again (" + std::to_string(now) + " logins)");
        seen = now;
    }

    // --------------------------------------------------------- usage

    /// This host's usage to etcd, every usage_every: only the shards that
    /// changed. Usage is informational: a failure is logged (once a streak)
    /// and never stops the agent.
    void publish_loop() {
        if (options_.usage_every.count() <= 0) return;
        Client client(options_.cluster.client);
        PublishedShards published;
        bool failing = false;
        auto next = Steady::now();
        while (!stop_ && !helpers_stop_) {
            next += options_.usage_every;
            try {
                const UsageByKey usage = options_.read_usage ? options_.read_usage() : read_usage(options_.db);
                publish_usage(client, prefix_, options_.host_name, usage, published);
                if (failing) log_("usage published again");
                failing = false;
            } catch (const std::exception &e) {
                if (!failing) log_(std::string("cannot publish this host's usage: ") + e.what());
                failing = true;
            }
            sleep_until(next, &helpers_stop_);
            if (Steady::now() > next + options_.usage_every) next = Steady::now();
        }
    }

    // --------------------------------------------------------- reconciliation

    /// Every reconcile_every, etcd read whole and compared with a snapshot of
    /// the store, beside the watch: changes (revokes) go on being applied
    /// while it reads, so a reconciliation never holds one back. Drift asks
    /// the watch thread for a full read. It only verifies, so it runs at the
    /// lowest CPU priority: httpd, on the same host, and the watch come first.
    void reconcile_loop() {
        // Linux: a thread's nice value is its own, and raising it needs no privilege.
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
        Client client(options_.cluster.client);
        std::mt19937 random(std::random_device{}());
        while (sleep_until(Steady::now() + jittered(options_.reconcile_every, random), &helpers_stop_)) {
            try {
                reconcile(client);
            } catch (const Stopping &) {
                return;
            } catch (const std::exception &e) {  // EtcdError, StoreError: the next one will tell
                log_(std::string("reconciliation skipped: ") + e.what());
            }
            give_back_freed_memory();
        }
    }

    void reconcile(Client &client) {
        {
            std::lock_guard lock(mutex_);
            if (state_.state != "live" || full_read_wanted_) return;  // a full read is running or due anyway
        }
        const auto started = Steady::now();
        DriftCount count;
        const std::optional<MirrorPoint> point = store_.mirror_snapshot(
            [&](StoreWrite::Database database, std::string_view key, std::string_view value) {
                if (stop_ || helpers_stop_) throw Stopping{};
                count.held(database, key, value);
            });
        if (!point) return;
        MappedRead page_read;  // one page at a time: the read is never held whole
        ResponseHeader header;
        std::size_t keys = 0;
        const std::int64_t revision = client.read_prefix(
            prefix_, options_.page_size,
            [&](std::vector<KeyValue> &&page) {
                if (stop_ || helpers_stop_) throw Stopping{};
                page_read.writes.clear(), page_read.mod_revisions.clear();
                map_full_read(prefix_, std::move(page), page_read);
                // Keys etcd changed after the snapshot's point are not due yet (compare() leaves them out).
                count.compare(page_read, point->applied_revision);
                keys += page_read.writes.size();
            },
            &header);
        // Another cluster: the prover sees it too, and asks for the full read that follows.
        if (std::to_string(header.cluster_id) != point->cluster_id) return;
        const Drift drift = count.drift();
        const auto took_ms = std::chrono::duration_cast<milliseconds>(Steady::now() - started).count();
        log_("reconciliation (every " + std::to_string(options_.reconcile_every.count() / 1000) + " s): " +
             std::to_string(keys) + " keys at revision " + std::to_string(revision) +
             " compared with the store at revision " + std::to_string(point->applied_revision) + " in " +
             std::to_string(took_ms) + " ms");
        log_("drift: " + std::to_string(drift.total()) + " keys (" + std::to_string(drift.differ) + " differ, " +
             std::to_string(drift.gone) + " gone) at applied revision " +
             std::to_string(point->applied_revision) + (drift.total() ? ": reading whole" : ""));
        if (drift.total()) {
            std::lock_guard lock(mutex_);
            if (!full_read_wanted_) full_read_wanted_ = std::string(drift_repair);
        }
    }

    // --------------------------------------------------------- freshness proof

    void prove_loop() {
        Client client(options_.cluster.client);
        RangeRequest gen;
        gen.key = gen_key(prefix_);
        gen.keys_only = true;
        bool behind = false;  // since behind_since, with the store at applied_when_behind
        Steady::time_point behind_since{};
        std::int64_t applied_when_behind = 0;
        bool failing = false;
        Proof last = Proof::fresh;
        auto next = Steady::now();
        while (!stop_ && !helpers_stop_) {
            next += options_.proof_every;
            const std::int64_t sent_ns = boottime_nanoseconds();
            try {
                const RangeResponse answer = client.range(gen);
                const std::int64_t gen_revision = answer.kvs.empty() ? 0 : answer.kvs.front().mod_revision;
                if (failing) log_("freshness proof works again");
                failing = false;
                std::lock_guard lock(mutex_);
                const Proof proof = prove(point_, gen_revision, answer.header);
                if (proof != last && (proof == Proof::other_cluster || proof == Proof::went_back))
                    log_(std::string("freshness proof: ") + proof_name(proof) + ": reading whole");
                last = proof;
                switch (proof) {
                case Proof::fresh:
                    behind = false;
                    state_.verified_ns = std::max(state_.verified_ns, sent_ns);
                    write_state();
                    break;
                case Proof::behind:
                    // The allowance runs while the watch applies nothing: a long catch-up that moves
                    // on is left alone.
                    if (!behind || point_->applied_revision > applied_when_behind) {
                        behind = true;
                        behind_since = Steady::now();
                        applied_when_behind = point_->applied_revision;
                    } else if (Steady::now() - behind_since > options_.catch_up_allowance) {
                        reconnect_wanted_ = true;
                        behind_since = Steady::now();  // ask again only after another allowance
                    }
                    break;
                case Proof::other_cluster:
                case Proof::went_back:
                    full_read_wanted_ = std::string("freshness proof: ") + proof_name(proof);
                    break;
                case Proof::never_synced:
                    break;
                }
                note_logins(client, proof_logins_, "proof");
            } catch (const EtcdError &e) {
                note_logins(client, proof_logins_, "proof");
                // Nothing changes: verified ages, which is the point.
                if (!failing) log_(std::string("freshness proof failed (verified now ages): ") + e.what());
                failing = true;
            } catch (const StoreError &e) {
                if (!failing) log_(std::string("freshness proof: cannot write mirror.state: ") + e.what());
                failing = true;
            }
            sleep_until(next, &helpers_stop_);
            if (Steady::now() > next + options_.proof_every) next = Steady::now();  // a slow read: no burst after it
        }
    }
};

}  // namespace

int run_mirror_agent(const AgentOptions &options, const std::atomic<bool> &stop, const AgentLog &log) {
    check_prefix(options.cluster.prefix);
    Agent agent(options, stop, log);
    return agent.run();
}

}  // namespace cptoken::etcd

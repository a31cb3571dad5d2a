// SPDX-License-Identifier: Apache-2.0
// lib/cluster/: cluster mode's writer.
#include "cluster/etcd_writer.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "cluster/mirror_keys.hpp"
#include "store/lsheader.hpp"
#include "token/token.hpp"

namespace cptoken::etcd {

namespace {

// etcd's answer when its space quota is reached: puts are refused, deletes
// and reads still work.
constexpr int grpc_resource_exhausted = 8;

bool out_of_space(const EtcdError &e) {
    return e.grpc_code() == grpc_resource_exhausted || std::string_view(e.what()).find("space exceeded") != std::string_view::npos;
}

// An answer that may come after etcd applied the change: a timeout, a
// connection lost once sent, a 503 (no leader yet).
bool outcome_unknown(const EtcdError &e) {
    return e.reached_server() && (e.http_status() == 0 || e.http_status() == 503 || e.grpc_code() == grpc::unavailable ||
                                  e.grpc_code() == grpc::deadline_exceeded);
}

// A write that takes a key away: a delete or a tombstone.
bool removes(const StoreWrite &write) {
    if (!write.value) return true;
    const auto decoded = ls_decode(*write.value);
    return decoded && decoded->deleted();
}

std::string nonce() {
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        throw StoreError(StoreError::Kind::access, "the random number generator failed");
    return bytes_hex(std::string_view(reinterpret_cast<const char *>(bytes), sizeof bytes));
}

// etcd could not be reached or refused: StoreError (access) with etcd's
// reason and what became of the change.
[[noreturn]] void refuse_as_unwritten(const std::exception &e, const std::string &what) {
    const std::string reason = e.what();
    throw StoreError(StoreError::Kind::access, (reason.starts_with("etcd") ? "" : "etcd: ") + reason + "; " + what);
}

}  // namespace

EtcdWriter::EtcdWriter(const ClusterConfig &config, const TokenStore &mirror,
                       std::function<void(const std::string &)> notice, WriterLimits limits)
    : client_(config.client), prefix_(config.prefix), mirror_(mirror), notice_(std::move(notice)), limits_(limits) {}

RemoteWriter::Outcome EtcdWriter::publish(const std::vector<StoreWrite> &writes, const MirrorPoint &base) {
    std::int64_t moved_to = 0;
    const auto revision = write_all(writes, base.gen_revision, {}, moved_to);
    if (!revision) {
        if (!wait_for_mirror(0, moved_to))
            throw StoreError(StoreError::Kind::access,
                             "another admin write came first, and this host's mirror has not applied it after " +
                                 std::to_string(limits_.mirror_wait.count() / 1000) +
                                 " s: is `cptoken sync` running here? Nothing was written");
        return Outcome::conflict;
    }
    if (wait_for_mirror(*revision, 0))
        notice_("written to etcd at revision " + std::to_string(*revision) + "; this host's mirror holds it");
    else
        notice_("written to etcd at revision " + std::to_string(*revision) + ", but this host's mirror has not applied "
                "it after " + std::to_string(limits_.mirror_wait.count() / 1000) + " s: is `cptoken sync` running here?");
    return Outcome::committed;
}

std::int64_t EtcdWriter::push(const std::vector<StoreWrite> &writes) {
    std::int64_t moved_to = 0;
    const auto revision = write_all(writes, 0, {RequestOp::put(schema_key(prefix_), std::to_string(StoreSettings::schema_version))},
                                    moved_to);
    if (!revision)
        throw StoreError(StoreError::Kind::duplicate, "etcd already holds a token set under " + prefix_ +
                                                          ": push copies a store into an empty prefix only");
    return *revision;
}

std::optional<std::int64_t> EtcdWriter::write_all(const std::vector<StoreWrite> &writes, std::int64_t gen,
                                                  std::vector<RequestOp> first_ops, std::int64_t &moved_to) {
    // What revokes goes first, then records, then the names that point at
    // them: a change cut short between two transactions has then revoked
    // what it revokes, and never leaves a name without its token.
    std::vector<const StoreWrite *> ordered;
    for (const StoreWrite &write : writes) ordered.push_back(&write);
    std::stable_sort(ordered.begin(), ordered.end(), [](const StoreWrite *a, const StoreWrite *b) {
        const auto rank = [](const StoreWrite *w) { return removes(*w) ? 0 : w->database == StoreWrite::Database::tokens ? 1 : 2; };
        return rank(a) < rank(b);
    });
    const bool only_removes = std::all_of(ordered.begin(), ordered.end(), [](const StoreWrite *w) { return removes(*w); });

    std::vector<std::vector<RequestOp>> chunks(1, std::move(first_ops));
    std::size_t bytes = 0;
    for (const StoreWrite *write : ordered) {
        std::string key;
        try {
            key = etcd_key(prefix_, *write);
        } catch (const std::invalid_argument &e) {
            throw StoreError(StoreError::Kind::corrupt, std::string("cannot write to etcd: ") + e.what());
        }
        const std::size_t size = key.size() + (write->value ? write->value->size() : 0);
        if (!chunks.back().empty() &&
            (chunks.back().size() + 1 >= limits_.max_txn_ops || bytes + size > limits_.max_txn_bytes)) {
            chunks.emplace_back();
            bytes = 0;
        }
        bytes += size;
        chunks.back().push_back(write->value ? RequestOp::put(std::move(key), *write->value)
                                             : RequestOp::delete_range(std::move(key)));
    }

    for (std::size_t i = 0; i < chunks.size(); ++i) {
        std::optional<std::int64_t> revision;
        try {
            revision = commit(chunks[i], gen, moved_to);
        } catch (const EtcdError &e) {  // commit() lets only "out of space" through
            if (!only_removes)
                throw StoreError(StoreError::Kind::full,
                                 "etcd is out of space (its quota is reached): nothing was written; revocations still "
                                 "work. Free space (compact, defrag, raise --quota-backend-bytes) and disarm the alarm");
            // Revoke with deletes, which etcd still takes: a revocation must
            // never wait for an admin to make room.
            TxnRequest txn;
            txn.compare.push_back(Compare::modified_at(gen_key(prefix_), gen));
            for (const RequestOp &op : chunks[i]) txn.success.push_back(RequestOp::delete_range(op.key));
            try {
                const TxnResponse answer = client_.txn(txn);
                if (answer.succeeded) revision = answer.header.revision;
                else moved_to = gen + 1;  // P gen moved: wait for whatever came
            } catch (const EtcdError &again) {
                refuse_as_unwritten(again, "the change was not made");
            }
            if (revision) notice_("etcd is out of space (its quota): the revocation was made with deletes; free "
                                  "space (compact, defrag, raise --quota-backend-bytes) and disarm the alarm");
        }
        if (!revision) {
            if (i == 0) return std::nullopt;
            throw StoreError(StoreError::Kind::inconsistent,
                             "another admin write reached etcd between the parts of this change: " + std::to_string(i) +
                                 " of " + std::to_string(chunks.size()) +
                                 " transactions were written (revocations first, then tokens, then their names); run "
                                 "the command again for the rest");
        }
        gen = *revision;
    }
    last_revision_ = gen;
    return gen;
}

std::optional<std::int64_t> EtcdWriter::commit(std::vector<RequestOp> ops, std::int64_t gen_revision,
                                               std::int64_t &moved_to) {
    const std::string gen = gen_key(prefix_), mark = nonce();
    const std::string first_key = ops.empty() ? std::string() : ops.front().key;
    const std::optional<std::string> first_value =
        ops.empty() || ops.front().kind != RequestOp::Kind::put ? std::nullopt : std::optional(ops.front().value);
    TxnRequest txn;
    txn.compare.push_back(Compare::modified_at(gen, gen_revision));
    txn.success = std::move(ops);
    txn.success.push_back(RequestOp::put(gen, mark));
    RangeRequest read_gen;
    read_gen.key = gen;
    txn.failure.push_back(RequestOp::get(read_gen));
    try {
        const TxnResponse answer = client_.txn(txn);
        if (answer.succeeded) return answer.header.revision;
        const auto &failure = answer.responses;
        moved_to = failure.empty() || failure.front().range.kvs.empty() ? 0 : failure.front().range.kvs.front().mod_revision;
        return std::nullopt;
    } catch (const EtcdError &e) {
        if (!outcome_unknown(e)) {
            if (out_of_space(e)) throw;
            refuse_as_unwritten(e, "the change was not made");
        }
        // The answer was lost: etcd may have made the change. P gen says so,
        // if no other write came since; else the change's first value does
        // (its header's stamp is this write's alone).
        try {
            const RangeResponse now = client_.range(read_gen);
            if (!now.kvs.empty() && now.kvs.front().value == mark) return now.kvs.front().mod_revision;
            const std::int64_t gen_now = now.kvs.empty() ? 0 : now.kvs.front().mod_revision;
            if (gen_now != gen_revision && first_value) {
                RangeRequest read_first;
                read_first.key = first_key;
                const RangeResponse first = client_.range(read_first);
                if (!first.kvs.empty() && first.kvs.front().value == *first_value) return first.kvs.front().mod_revision;
            }
            moved_to = gen_now;
            return std::nullopt;  // not made: made again on the mirror as it is then
        } catch (const EtcdError &again) {
            refuse_as_unwritten(again, "whether the change was made is unknown: look with `cptoken list` once etcd answers");
        }
    }
}

bool EtcdWriter::wait_for_mirror(std::int64_t revision, std::int64_t gen_revision) const {
    const auto deadline = std::chrono::steady_clock::now() + limits_.mirror_wait;
    auto pause = std::chrono::microseconds(500);
    for (;;) {
        const auto point = mirror_.mirror_point();
        if (point && point->applied_revision >= revision && point->gen_revision >= gen_revision) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(20000));
    }
}

}  // namespace cptoken::etcd

// SPDX-License-Identifier: Apache-2.0
// Cluster mode's writer (issue 24): the changes a command makes on the local
// mirror (TokenStore::write_through) committed to etcd instead, in one
// transaction, guarded by the generation key:
//
//   compare  P gen  mod_revision == the one the mirror holds
//   success  the change's puts and deletes, and P gen = a fresh nonce
//   failure  range P gen
//
// Every admin write puts P gen, so the compare holds only if no admin write
// came after the state the change was decided on: two hosts racing for one
// name, or revoking what the other edits, get one winner; the loser's change
// is made again once its mirror holds the winner's (and then it may find the
// name taken). A change bigger than one etcd transaction (--max-txn-ops,
// 1.5 MiB) goes in several, each comparing P gen with the one before: all
// land, or the command says how far it got.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cluster/cluster_config.hpp"
#include "cluster/etcd_client.hpp"
#include "store/store.hpp"

namespace cptoken::etcd {

struct WriterLimits {
    /// etcd's --max-txn-ops (default 128): one of them is P gen's put.
    std::size_t max_txn_ops = 128;
    /// Bytes of keys and values per transaction, well under etcd's 1.5 MiB
    /// request limit once base64 and JSON are added.
    std::size_t max_txn_bytes = 900 * 1024;
    /// How long a write waits for this host's mirror to hold it (or, after a
    /// conflict, the write that won) before saying so.
    std::chrono::milliseconds mirror_wait{10000};
};

class EtcdWriter : public RemoteWriter {
public:
    /// Writes to the token set `config` names; `mirror` is this host's store
    /// (whose mirror_point() says what its agent applied), `notice` gets a line
    /// for the admin once a write is in etcd: at which revision, and whether
    /// this host's mirror holds it yet.
    EtcdWriter(const ClusterConfig &config, const TokenStore &mirror,
               std::function<void(const std::string &)> notice, WriterLimits limits = {});

    /// RemoteWriter::publish. Returns committed once the last transaction
    /// committed (and this host's mirror holds it, or `notice` was told it
    /// does not yet); conflict if another admin write came after `base`
    /// (once the mirror holds it). When etcd is out of space, a change that
    /// only revokes or deletes is made with deletes, which etcd still takes.
    /// Throws StoreError: access (etcd cannot be reached or refuses; the
    /// message says whether the change may have been made), full (etcd is out
    /// of space and the change adds something), inconsistent (a
    /// change of several transactions cut short by another write: the
    /// message says how much was written), corrupt (a key this store cannot
    /// have in etcd).
    Outcome publish(const std::vector<StoreWrite> &writes, const MirrorPoint &base) override;

    /// Copies a store into an empty prefix (cptoken push): `writes`
    /// (TokenStore::all_writes()), tokens keeping their digests, and P
    /// meta/schema_version, in as many transactions as needed, the first one
    /// only if P gen does not exist. Returns the last one's revision. Throws
    /// StoreError: duplicate (the prefix holds a token set), the rest as
    /// publish().
    std::int64_t push(const std::vector<StoreWrite> &writes);

    /// The revision of the last transaction committed; 0 before any.
    std::int64_t last_revision() const noexcept { return last_revision_; }

private:
    // Writes `writes` (and `first_ops` in the first transaction) in as many
    // transactions as the limits need, the first one only if P gen was last
    // put at `gen`, each next one if it was put by the one before. Returns
    // the last revision, or nullopt if the first compare failed (P gen's
    // revision then in `moved_to`).
    std::optional<std::int64_t> write_all(const std::vector<StoreWrite> &writes, std::int64_t gen,
                                          std::vector<RequestOp> first_ops, std::int64_t &moved_to);
    // Commits `ops` after P gen was last put at `gen_revision`; returns the
    // commit's revision, or nullopt if P gen moved (with its revision in
    // `moved_to`).
    std::optional<std::int64_t> commit(std::vector<RequestOp> ops, std::int64_t gen_revision, std::int64_t &moved_to);
    // Waits until this host's mirror holds revision `revision` (its gen at
    // least `gen_revision`); false if it did not within limits_.mirror_wait.
    bool wait_for_mirror(std::int64_t revision, std::int64_t gen_revision) const;

    Client client_;
    std::string prefix_;
    const TokenStore &mirror_;
    std::function<void(const std::string &)> notice_;
    WriterLimits limits_;
    std::int64_t last_revision_ = 0;
};

}  // namespace cptoken::etcd

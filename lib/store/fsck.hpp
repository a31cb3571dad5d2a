// SPDX-License-Identifier: Apache-2.0
// Checking a store for what no single cptoken leaves behind but a merge of
// two hosts' stores by Lightning Stream can (an orphaned token, a name that
// points nowhere), and for what stops Lightning Stream itself (a value
// without its header).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace cptoken {

/// One problem fsck_store() found. Never holds a token: digests and keys
/// appear as hex prefixes of at most 16 characters.
struct FsckFinding {
    enum class Kind {
        orphan,              ///< a live token no live name reaches (nor its current token, for a rotated one)
        dangling_name,       ///< a live name whose digest has no live token of that user and name
        bad_header,          ///< a value whose Lightning Stream header does not decode
        bad_record,          ///< a live token record that does not decode
        usage_table,         ///< the usage table is not one, or lost uses for want of room
    };
    Kind kind = Kind::orphan;
    std::string file;           ///< the store file (DIR/tokens.mdb, DIR/usage.slots)
    std::string database;       ///< meta, tokens, names or usage
    std::string key_prefix;     ///< hex of the key's first bytes (bad header, bad record)
    std::string user, name;     ///< the token's (orphan, dangling name, bad record when a name points to it)
    std::string digest_prefix;  ///< hex of the digest's first 8 bytes (orphan, dangling name, bad record)
    std::string message;        ///< what it is, what it breaks and what to do, for an admin
    bool repaired = false;      ///< tombstoned by this run (orphan, dangling name)
};

/// "orphan", "dangling name", "bad header", "bad record".
const char *fsck_kind_name(FsckFinding::Kind kind) noexcept;

/// Checks the token store in DIR (every value of meta, tokens and names has a
/// Lightning Stream header; every live record decodes; every live record is
/// reached by its name or from its current token; every live name points to
/// a live record of that user and name) and the usage store, if there is one
/// (its headers only: httpd's group writes it). Read-only unless `repair`: then, in one write transaction (as
/// TokenStore::batch), it tombstones the orphans and the dangling names it
/// finds there and marks them repaired; bad headers and records are only
/// reported. `lock_wait_notice` is told if that write waits for the writer
/// lock (TokenStore::set_lock_wait_notice). Throws StoreError as TokenStore
/// does when the token store cannot be opened or written.
std::vector<FsckFinding> fsck_store(const std::string &dir, bool repair,
                                    const std::function<void(const std::string &)> &lock_wait_notice = {});

/// fsck_store() of the token store alone.
std::vector<FsckFinding> fsck_token_store(const std::string &dir, bool repair,
                                          const std::function<void(const std::string &)> &lock_wait_notice = {});

/// fsck_store() of the usage store alone (as root, through an unprivileged
/// child: as_store_group); none if there is no usage store. Throws
/// StoreError if it cannot be read.
std::vector<FsckFinding> fsck_usage_store(const std::string &dir);

}  // namespace cptoken

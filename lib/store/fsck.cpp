// SPDX-License-Identifier: Apache-2.0
#include "store/fsck.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <thread>
#include <map>
#include <optional>
#include <string_view>
#include <tuple>

#include "store/commit_record.hpp"
#include "store/lmdb_env.hpp"
#include "store/lsheader.hpp"
#include "token/names.hpp"
#include "token/record.hpp"
#include "store/store.hpp"
#include "store/unprivileged.hpp"
#include "store/usage_store.hpp"
#include "token/token.hpp"

namespace cptoken {

using namespace lmdb;

namespace {

// Keys and digests are named by this many leading bytes (16 hex characters):
// enough to tell them apart, never a whole digest.
constexpr std::size_t prefix_bytes = 8;

std::string hex_prefix(std::string_view bytes) { return bytes_hex(bytes.substr(0, prefix_bytes)); }

std::string key_text(std::string_view key) {
    return "key " + hex_prefix(key) + (key.size() > prefix_bytes ? "..." : "");
}

const char *const restore_advice =
    "restore the store from a backup (cptoken backup) or let Lightning Stream bring the value from another host";

// The stored value under `key` in `dbi`, header and all; nullopt if absent.
std::optional<std::string_view> stored_value(const Env &env, Txn &txn, MDB_dbi dbi, std::string_view key) {
    MDB_val k = as_val(key), value;
    const int rc = txn.read(dbi, &k, &value);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "cannot read ", env.file());
    return as_view(value);
}

// The finding for a value of database `name` in `file` whose header does not
// decode, its key given by its hex prefix (and whether it is longer).
FsckFinding bad_header(const std::string &file, const char *name, const std::string &key_prefix, bool longer) {
    FsckFinding finding;
    finding.kind = FsckFinding::Kind::bad_header;
    finding.file = file;
    finding.database = name;
    finding.key_prefix = key_prefix;
    finding.message = file + ", database " + name + ", key " + key_prefix + (longer ? "..." : "") +
                      ": the value has no valid Lightning Stream header; Lightning Stream stops syncing this "
                      "store on it; " + restore_advice;
    return finding;
}

// Reports every value of database `name` whose header does not decode.
void check_headers(const Env &env, Txn &txn, MDB_dbi dbi, const char *name, std::vector<FsckFinding> &out) {
    env.for_each_entry(txn, dbi, [&](std::string_view key, std::string_view value) {
        if (!ls_decode(value)) out.push_back(bad_header(env.file(), name, hex_prefix(key), key.size() > prefix_bytes));
    });
}

// The findings of the token store open in `env`, read in `txn`; with
// `repair`, `txn` is a write transaction and orphans and dangling names are
// tombstoned in it.
void check_token_store(Env &env, Txn &txn, bool repair, std::vector<FsckFinding> &out) {
    const MDB_dbi meta = env.open_db(txn, "meta", false), tokens = env.open_db(txn, "tokens", false),
                  names = env.open_db(txn, "names", false);
    check_headers(env, txn, meta, "meta", out);

    // Walk the names: each live one must point to a live record of its own user and name. The rotated
    // tokens its token links to (predecessors) are reachable too, if they are of the same user (as
    // TokenStore follows them); kept by digest with the user that links them: few, only those in grace.
    std::map<std::string, std::string, std::less<>> linked_rotated;
    std::map<std::string, std::pair<std::string, std::string>, std::less<>> named_but_undecodable;
    std::vector<std::string> dangling_keys;
    check_headers(env, txn, names, "names", out);
    env.for_each_entry(txn, names, [&](std::string_view key, std::string_view value) {
        const auto entry = ls_decode(value);
        if (!entry || entry->deleted()) return;  // a bad header is reported above
        // The key's length comes from the page: only a sane one is read whole (as TokenStore::list does).
        const auto separator = key.size() <= max_user_length + 1 + max_token_name_length ? key.find('\0')
                                                                                          : std::string_view::npos;
        const std::string user(separator == std::string_view::npos ? "" : key.substr(0, separator));
        const std::string name(separator == std::string_view::npos ? "" : key.substr(separator + 1));
        std::string problem, digest_prefix;
        if (separator == std::string_view::npos) {
            problem = "is not a user and a name";
        } else if (entry->payload.size() != Digest{}.size()) {
            problem = "does not hold a digest";
        } else {
            digest_prefix = hex_prefix(entry->payload);
            const auto stored = stored_value(env, txn, tokens, entry->payload);
            const auto target = stored ? ls_decode(*stored) : std::nullopt;
            if (stored && !target) return;  // its bad header is reported with the tokens
            if (!target || target->deleted()) {
                problem = "points to no live token";
            } else if (auto record = decode_record(target->payload); !record) {
                named_but_undecodable.emplace(std::string(entry->payload), std::pair{user, name});
                return;  // reported as a bad record
            } else if (record->user != user || record->name != name) {
                problem = "points to the token of " + record->user + "/" + record->name;
            } else {
                for (const Digest &old : record->predecessors)
                    linked_rotated.emplace(std::string(reinterpret_cast<const char *>(old.data()), old.size()), user);
                return;
            }
        }
        FsckFinding finding;
        finding.kind = FsckFinding::Kind::dangling_name;
        finding.file = env.file();
        finding.database = "names";
        finding.key_prefix = hex_prefix(key);
        finding.user = user;
        finding.name = name;
        finding.digest_prefix = digest_prefix;
        finding.message = (separator == std::string_view::npos ? "a name entry (" + key_text(key) + ")"
                                                               : "the name " + user + "/" + name) +
                          " in " + env.file() + " " + problem + (digest_prefix.empty() ? "" : " (digest " + digest_prefix + ")") +
                          ": `cptoken list` and `revoke` fail on it; fsck --repair removes the name";
        out.push_back(std::move(finding));
        dangling_keys.emplace_back(key);
    });

    // Walk the tokens: each live record must decode and be reached by its name or from its current token.
    std::vector<std::string> orphan_digests;
    check_headers(env, txn, tokens, "tokens", out);
    env.for_each_entry(txn, tokens, [&](std::string_view key, std::string_view value) {
        const auto stored = ls_decode(value);
        if (!stored || stored->deleted()) return;
        FsckFinding finding;
        finding.file = env.file();
        finding.database = "tokens";
        finding.key_prefix = finding.digest_prefix = hex_prefix(key);
        const auto record = key.size() == Digest{}.size() ? decode_record(stored->payload) : std::nullopt;
        if (!record) {
            finding.kind = FsckFinding::Kind::bad_record;
            std::string named;
            if (const auto by = named_but_undecodable.find(key); by != named_but_undecodable.end()) {
                std::tie(finding.user, finding.name) = by->second;
                named = ", named " + finding.user + "/" + finding.name;
            }
            finding.message = env.file() + ", database tokens, digest " + finding.digest_prefix + named +
                              ": a token record in " + env.file() +
                              " cannot be decoded (what `cptoken list` says when it meets it); requests with that "
                              "token are refused; " + restore_advice;
            out.push_back(std::move(finding));
            return;
        }
        const auto name_entry = stored_value(env, txn, names, std::string(record->user) + '\0' + record->name);
        const auto name_value = name_entry ? ls_decode(*name_entry) : std::nullopt;
        if (name_entry && !name_value) return;  // its name's bad header is reported: it may point here
        if (name_value && !name_value->deleted() && name_value->payload == key) return;
        if (record->rotated()) {
            const auto link = linked_rotated.find(key);
            if (link != linked_rotated.end() && link->second == record->user) return;
        }
        finding.kind = FsckFinding::Kind::orphan;
        finding.user = record->user;
        finding.name = record->name;
        const std::string who = record->user + "/" + record->name + " (digest " + finding.digest_prefix + ")";
        finding.message =
            (record->rotated() ? "a rotated token of " + who + " that its current token no longer links to"
                               : who + ", a live token that no name reaches (two hosts made the same name at once?)") +
            ": it still admits requests, and `cptoken revoke " + record->user + " " + record->name +
            "` cannot reach it; fsck --repair revokes it";
        out.push_back(std::move(finding));
        orphan_digests.emplace_back(key);
    });

    if (!repair) return;
    // Tombstones, as revoke writes them: Lightning Stream carries them to the other hosts. A token looks
    // orphaned when the value that reaches it (its current token's record, a name) is unreadable: then no
    // orphan is revoked until those are restored.
    const bool links_unknown = std::any_of(out.begin(), out.end(), [](const FsckFinding &f) {
        return f.kind == FsckFinding::Kind::bad_record ||
               (f.kind == FsckFinding::Kind::bad_header && f.database != "meta");
    });
    for (const std::string &key : dangling_keys) env.put_tombstone(txn, names, as_val(key));
    if (!links_unknown)
        for (const std::string &digest : orphan_digests) env.put_tombstone(txn, tokens, as_val(digest));
    for (FsckFinding &finding : out) {
        if (finding.kind == FsckFinding::Kind::dangling_name) finding.repaired = true;
        if (finding.kind != FsckFinding::Kind::orphan) continue;
        finding.repaired = !links_unknown;
        if (links_unknown)
            finding.message += " (not now: a bad header or record in tokens or names may be what links to it; "
                               "fix those first)";
    }
}

}  // namespace

const char *fsck_kind_name(FsckFinding::Kind kind) noexcept {
    switch (kind) {
        case FsckFinding::Kind::orphan: return "orphan";
        case FsckFinding::Kind::dangling_name: return "dangling name";
        case FsckFinding::Kind::bad_header: return "bad header";
        case FsckFinding::Kind::bad_record: return "bad record";
        case FsckFinding::Kind::usage_table: return "usage table";
    }
    return "?";
}

std::vector<FsckFinding> fsck_token_store(const std::string &dir, bool repair,
                                          const std::function<void(const std::string &)> &lock_wait_notice) {
    std::vector<FsckFinding> out;
    if (repair) {
        TokenStore store(dir, Access::read_write);
        store.set_lock_wait_notice(lock_wait_notice);
        store.batch([&](TokenBatch &batch) {
            check_token_store(batch.env(), batch.txn(), true, out);
            return std::any_of(out.begin(), out.end(), [](const FsckFinding &f) { return f.repaired; });
        });
    } else {
        // Not through TokenStore: a broken header on the schema version is a finding, not a refusal to open.
        const std::string file = path_in(dir, token_store_file);
        Env env(file, access_for_reading(dir), 0640, true);
        // Without the lock file, the walk is kept only if no commit was
        // published while it ran (as TokenStore reads), else made again.
        std::optional<CommitRecord> committed;
        if (env.lock_free()) committed.emplace(file + commit_record_suffix, false);
        for (int attempt = 0;; ++attempt) {
            const std::uint64_t published = committed ? committed->load() : 0;
            std::vector<FsckFinding> found;
            {
                Txn txn(env.get(), false, env.file());
                const bool whole_so_far = !committed || txn.id() == published;
                if (whole_so_far) {
                    env.check_size(txn.id());
                    check_token_store(env, txn, false, found);
                    // What a newer schema means is not this code's to judge: refused as TokenStore refuses it,
                    // unless the schema version's own header is broken (a finding above).
                    if (std::none_of(found.begin(), found.end(), [](const FsckFinding &f) { return f.database == "meta"; }))
                        check_schema_version(env, txn);
                }
                if (whole_so_far && (!committed || committed->still(published))) {
                    out = std::move(found);
                    break;
                }
            }
            if (attempt == 100)
                throw StoreError(StoreError::Kind::inconsistent,
                                 "every walk of " + file + " overlapped a commit: run fsck as the store's owner");
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    return out;
}

std::vector<FsckFinding> fsck_usage_store(const std::string &dir) {
    std::vector<FsckFinding> out;
    // The usage table may be missing (init makes it). httpd's group writes
    // it, so it is opened, as root, by an unprivileged child (as_store_group),
    // which sends one line: how many uses it lost for want of room.
    const std::string usage_file = path_in(dir, usage_store_file);
    const auto finding = [&](const std::string &message) {
        FsckFinding f;
        f.kind = FsckFinding::Kind::usage_table;
        f.file = usage_file;
        f.message = usage_file + ": " + message;
        out.push_back(f);
    };
    try {
        std::optional<std::uint64_t> lost;
        as_store_group(
            dir,
            [&](const std::function<void(std::string_view)> &send) {
                send(std::to_string(UsageStore(dir, Access::read_only).lost()));
            },
            [&](std::string_view line) {
                std::uint64_t value = 0;
                const auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), value);
                if (error != std::errc() || end != line.data() + line.size() || line.empty() || lost)
                    corrupt("the process checking the usage store of " + dir + " sent a bad line");
                lost = value;
            });
        if (lost && *lost > 0)
            finding(std::to_string(*lost) + " uses were not recorded for want of room (those tokens may show LAST "
                    "USED never or older); cptoken prune makes the table again with room for the store's tokens");
    } catch (const StoreError &e) {
        if (e.kind() == StoreError::Kind::missing) return out;
        if (e.kind() != StoreError::Kind::corrupt) throw;
        finding(std::string("not a usable usage table (") + e.what() + "); last uses are not recorded; "
                "cptoken prune makes a new one (the last uses it held are lost)");
    }
    return out;
}

std::vector<FsckFinding> fsck_store(const std::string &dir, bool repair,
                                    const std::function<void(const std::string &)> &lock_wait_notice) {
    std::vector<FsckFinding> out = fsck_token_store(dir, repair, lock_wait_notice);
    const std::vector<FsckFinding> usage = fsck_usage_store(dir);
    out.insert(out.end(), usage.begin(), usage.end());
    return out;
}

}  // namespace cptoken

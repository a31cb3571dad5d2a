// SPDX-License-Identifier: Apache-2.0
// The commit record: DIR/tokens.mdb-committed, one page that only the
// store's owner writes and httpd's group reads. It holds the id of the
// newest transaction whose commit to tokens.mdb has completed, and the id of
// the store it is for (kept in tokens.mdb too: another store's data file put
// in place alone is refused rather than read against this record).
//
// httpd's children read tokens.mdb without LMDB's lock file (MDB_NOLOCK):
// that file is the owner's alone, so that nothing httpd's group can write is
// ever mapped or locked by a more privileged process. What the lock file did
// for readers, this record does: a reader keeps a snapshot only if it is the
// published one before the read and still the published one after it
// (docs/store.md, "Readers without a lock file", says why that suffices).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace cptoken {

inline constexpr const char *commit_record_suffix = "-committed";

class CommitRecord {
public:
    /// The file's size: one page, so that it is mapped whole.
    static constexpr std::size_t file_size = 4096;

    /// The length of a store id.
    static constexpr std::size_t store_id_size = 16;

    /// Creates FILE (it must not exist) holding `txnid` for the store
    /// `store_id`, with `mode` and group `gid`, written to disk before it
    /// returns. Throws StoreError: access (FILE exists, or any system error).
    static void create(const std::string &file, std::uint64_t txnid, std::string_view store_id, mode_t mode,
                       gid_t gid);

    /// Maps FILE: read-only, or read-write for the store's owner (publish()).
    /// Throws StoreError: missing (with the command that makes it), access,
    /// corrupt (not a commit record: wrong size or magic).
    CommitRecord(const std::string &file, bool writable);
    ~CommitRecord();
    CommitRecord(const CommitRecord &) = delete;
    CommitRecord &operator=(const CommitRecord &) = delete;

    /// The newest published transaction id (an acquire load).
    std::uint64_t load() const noexcept;

    /// True if nothing was published since `txnid` was: every read made
    /// before this call is ordered before the check.
    bool still(std::uint64_t txnid) const noexcept;

    /// Raises the published id to `txnid` (never lowers it), with a full
    /// barrier, so that every write the caller makes afterwards is seen
    /// after it. Only for a commit that has completed, or the newest
    /// committed one seen under the writer lock.
    void publish(std::uint64_t txnid) noexcept;

    /// Sets the published id to `txnid`, lower or not, for the store
    /// `store_id`: only `cptoken init`, under the writer lock.
    void reset(std::uint64_t txnid, std::string_view store_id) noexcept;

    /// The newest transaction id known to be on disk in the data file, its
    /// meta page included: the last commit a writer reported done. 0 in a
    /// record written before 0.17.3.
    std::uint64_t acknowledged() const noexcept;

    /// Records that transaction `txnid` is on disk (after its meta page was
    /// synced, before persist()).
    void acknowledge(std::uint64_t txnid) noexcept;

    /// True if the record names the transaction after `newest`, the data
    /// file's newest, and that one was never acknowledged: a commit
    /// published but lost to a crash before its meta page reached the disk,
    /// not an older copy of the data file written over it.
    bool lost_commit_after(std::uint64_t newest) const noexcept;

    /// Lowers the published id to `newest` if lost_commit_after(newest);
    /// returns whether it did. Only under the writer lock, where `newest`
    /// cannot change.
    bool forget_lost_commit(std::uint64_t newest) noexcept;

    /// The id of the store the record is for.
    std::string store_id() const;

    /// Writes the record to disk (msync): after a crash, a record behind the
    /// data file would keep readers refusing the store until the next write.
    /// Throws StoreError: access.
    void persist() const;

    /// Device and inode of the open file.
    std::pair<dev_t, ino_t> file_id() const noexcept { return {dev_, ino_}; }

private:
    std::uint64_t *word() const noexcept;
    std::uint64_t *acknowledged_word() const noexcept;

    std::string file_;
    void *map_ = nullptr;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

}  // namespace cptoken

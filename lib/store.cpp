#include "store.hpp"

#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "lsheader.hpp"
#include "names.hpp"

namespace cptoken {
namespace {

constexpr const char *schema_key = "schema_version";

std::string path_in(const std::string &dir, const char *file) { return dir + "/" + file; }

[[noreturn]] void fail(int rc, const std::string &what) {
    StoreError::Kind kind = StoreError::Kind::access;
    switch (rc) {
        case ENOENT: kind = StoreError::Kind::missing; break;
        case MDB_CORRUPTED: case MDB_INVALID: case MDB_VERSION_MISMATCH: case MDB_INCOMPATIBLE:
        case MDB_PAGE_NOTFOUND: case MDB_BAD_DBI: case MDB_PANIC:
            kind = StoreError::Kind::corrupt; break;
        case MDB_READERS_FULL: case MDB_MAP_FULL: case MDB_MAP_RESIZED: case MDB_TXN_FULL:
            kind = StoreError::Kind::full; break;
        default: break;
    }
    std::string message = what + ": " + mdb_strerror(rc);
    if (rc == MDB_READERS_FULL)
        message += " (StoreSettings::max_readers = " + std::to_string(StoreSettings::max_readers) +
                   ": more httpd threads than reader slots; lower ServerLimit x ThreadLimit)";
    throw StoreError(kind, message);
}

// Throws unless rc is MDB_SUCCESS; the message, `what` followed by
// `subject` (usually a file), is only put together then: some calls run on
// every request.
void check(int rc, std::string_view what, std::string_view subject = {}) {
    if (rc != MDB_SUCCESS) fail(rc, std::string(what).append(subject));
}

[[noreturn]] void corrupt(const std::string &what) { throw StoreError(StoreError::Kind::corrupt, what); }

MDB_val as_val(std::string_view bytes) { return {bytes.size(), const_cast<char *>(bytes.data())}; }
MDB_val as_val(const Digest &digest) { return {digest.size(), const_cast<unsigned char *>(digest.data())}; }
std::string_view as_view(const MDB_val &val) { return {static_cast<const char *>(val.mv_data), val.mv_size}; }

std::string name_key(std::string_view user, std::string_view name) {
    std::string key(user);
    key.push_back('\0');  // sorts before every name character: list order is by user, then name
    key.append(name);
    return key;
}

// Read transactions kept for reuse: renewing a reset transaction costs a
// fraction of beginning a new one (no allocation, no reader-slot search),
// which matters at one lookup per request. Needs MDB_NOTLS, so that a reset
// transaction keeps its own reader slot and any thread may renew it.
class ReaderPool {
public:
    ReaderPool() = default;
    ReaderPool(const ReaderPool &) = delete;
    ReaderPool &operator=(const ReaderPool &) = delete;
    ~ReaderPool() {
        for (MDB_txn *txn : idle_) mdb_txn_abort(txn);
    }
    // A renewed transaction, or nullptr if none is idle.
    MDB_txn *take() {
        MDB_txn *txn = nullptr;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (idle_.empty()) return nullptr;
            txn = idle_.back();
            idle_.pop_back();
        }
        if (mdb_txn_renew(txn) == MDB_SUCCESS) return txn;
        mdb_txn_abort(txn);
        return nullptr;
    }
    void give_back(MDB_txn *txn) {
        mdb_txn_reset(txn);
        std::lock_guard<std::mutex> lock(mutex_);
        idle_.push_back(txn);
    }

private:
    std::mutex mutex_;
    std::vector<MDB_txn *> idle_;
};

// Records find() has read, each with the id of the transaction it was read
// in. A read transaction with the same id sees the same snapshot, so the
// record is exactly what the B-tree holds; any write (a revoke, an edit, a
// create) gives later transactions a new id, and the entry no longer
// matches. What this saves is the walk through the tree: with a million
// tokens, four pages that are rarely still in the CPU's caches and TLB
// between two requests. Only found records are kept: unknown tokens (an
// attack) cannot fill it. Sets of 4 entries chosen by the digest, random
// replacement (LRU would miss every time on a rotation longer than a set).
// A set's tags share one cache line, so a lookup reads one line of tags
// and then only the entry that matches.
class RecordCache {
public:
    explicit RecordCache(std::size_t slots) : sets_(slots / ways) {}
    RecordCache(const RecordCache &) = delete;
    RecordCache &operator=(const RecordCache &) = delete;

    std::optional<TokenRecord> get(const Digest &digest, std::size_t txn_id) {
        if (sets_ == 0 || txn_id == 0) return std::nullopt;
        const std::uint64_t prefix = prefix_of(digest);
        std::lock_guard<std::mutex> lock(mutex_);
        if (tags_.empty()) return std::nullopt;
        const std::size_t set = prefix % sets_;
        for (std::size_t way = 0; way < ways; ++way) {
            const Tag &tag = tags_[set].way[way];
            if (tag.txn_id != txn_id || tag.prefix != prefix) continue;
            const Entry &entry = entries_[set * ways + way];
            if (entry.digest == digest) return entry.record;
        }
        return std::nullopt;
    }

    void put(const Digest &digest, std::size_t txn_id, const TokenRecord &record) {
        if (sets_ == 0 || txn_id == 0) return;
        const std::uint64_t prefix = prefix_of(digest);
        std::lock_guard<std::mutex> lock(mutex_);
        if (tags_.empty()) {  // on first use: the tool rarely needs it
            tags_.resize(sets_);
            entries_.resize(sets_ * ways);
        }
        const std::size_t set = prefix % sets_;
        std::size_t victim = next_victim_++ % ways;
        for (std::size_t way = 0; way < ways; ++way)
            if (tags_[set].way[way].txn_id != txn_id || tags_[set].way[way].prefix == prefix) {
                victim = way;  // empty (txn id 0), stale, or this digest's own
                break;
            }
        tags_[set].way[victim] = Tag{prefix, txn_id};
        entries_[set * ways + victim] = Entry{digest, record};
    }

private:
    static constexpr std::size_t ways = 4;
    struct Tag {
        std::uint64_t prefix = 0;
        std::size_t txn_id = 0;  // 0: empty (read transactions of a store have ids from 1)
    };
    struct alignas(64) Set {
        Tag way[ways];
    };
    struct Entry {
        Digest digest{};
        TokenRecord record;
    };

    // The digest's first 8 bytes: a SHA-512 digest is evenly spread.
    static std::uint64_t prefix_of(const Digest &digest) {
        std::uint64_t bits = 0;
        std::memcpy(&bits, digest.data(), sizeof bits);
        return bits;
    }

    const std::size_t sets_;
    std::mutex mutex_;
    std::vector<Set> tags_;
    std::vector<Entry> entries_;
    std::size_t next_victim_ = 0;
};

// A transaction that aborts unless committed (a read transaction from a
// pool goes back to it instead).
class Txn {
public:
    Txn(MDB_env *env, bool write, const std::string &file, ReaderPool *pool = nullptr)
        : pool_(write ? nullptr : pool) {
        if (pool_) txn_ = pool_->take();
        if (!txn_) check(mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn_), "cannot begin a transaction on ", file);
    }
    ~Txn() {
        if (!txn_) return;
        if (pool_)
            pool_->give_back(txn_);
        else
            mdb_txn_abort(txn_);
    }
    Txn(const Txn &) = delete;
    Txn &operator=(const Txn &) = delete;
    void commit(const std::string &file) {
        const int rc = mdb_txn_commit(txn_);
        txn_ = nullptr;
        check(rc, "cannot commit to ", file);
    }
    MDB_txn *get() const { return txn_; }

private:
    ReaderPool *pool_ = nullptr;
    MDB_txn *txn_ = nullptr;
};

// One LMDB environment (one .mdb file with its -lock file) and its databases.
class Env {
public:
    Env(const std::string &file, Access access, unsigned mode_if_created, bool must_exist) : file_(file) {
        struct stat st{};
        if (must_exist && ::stat(file.c_str(), &st) != 0) {
            const int err = errno;
            if (err == ENOENT)
                throw StoreError(StoreError::Kind::missing, "no store at " + file + " (create it with: cptoken init)");
            fail(err, "cannot open " + file);
        }
        check(mdb_env_create(&env_), "cannot create an LMDB environment");
        check(mdb_env_set_mapsize(env_, StoreSettings::map_size), "cannot set the map size of ", file);
        check(mdb_env_set_maxreaders(env_, StoreSettings::max_readers), "cannot set max readers of ", file);
        check(mdb_env_set_maxdbs(env_, 8), "cannot set max databases of ", file);
        const unsigned flags = MDB_NOSUBDIR | MDB_NOTLS | (access == Access::read_only ? MDB_RDONLY : 0);
        const int rc = mdb_env_open(env_, file.c_str(), flags, mode_if_created);
        if (rc != MDB_SUCCESS) {
            mdb_env_close(env_);
            env_ = nullptr;
            fail(rc, "cannot open " + file);
        }
        // Slots of killed processes would pin old pages and fill the table.
        int dead = 0;
        mdb_reader_check(env_, &dead);
    }
    ~Env() {
        if (env_) mdb_env_close(env_);
    }
    Env(const Env &) = delete;
    Env &operator=(const Env &) = delete;

    MDB_env *get() const { return env_; }
    const std::string &file() const { return file_; }

    // Opens (or, in a write transaction with create, creates) a named database.
    MDB_dbi open_db(Txn &txn, const char *name, bool create) {
        MDB_dbi dbi = 0;
        const int rc = mdb_dbi_open(txn.get(), name, create ? MDB_CREATE : 0, &dbi);
        if (rc == MDB_NOTFOUND) corrupt(file_ + " has no '" + name + "' database: not a cptoken store");
        check(rc, "cannot open database '" + std::string(name) + "' in ", file_);
        return dbi;
    }

    // The payload of a live value; nullopt if absent or a tombstone.
    std::optional<std::string_view> get_live(Txn &txn, MDB_dbi dbi, MDB_val key) const {
        MDB_val value;
        const int rc = mdb_get(txn.get(), dbi, &key, &value);
        if (rc == MDB_NOTFOUND) return std::nullopt;
        check(rc, "cannot read ", file_);
        const auto decoded = ls_decode(as_view(value));
        if (!decoded) corrupt("a value in " + file_ + " has a broken header");
        if (decoded->deleted()) return std::nullopt;
        return decoded->payload;
    }

    void put(Txn &txn, MDB_dbi dbi, MDB_val key, std::string_view payload, std::uint8_t flags = 0) {
        const std::string stored = ls_encode(now_nanoseconds(), mdb_txn_id(txn.get()), flags, payload);
        MDB_val value = as_val(stored);
        check(mdb_put(txn.get(), dbi, &key, &value, 0), "cannot write to ", file_);
    }

    // Deletes are tombstones, so that replication can carry them to other hosts.
    void put_tombstone(Txn &txn, MDB_dbi dbi, MDB_val key) { put(txn, dbi, key, {}, ls_flag_deleted); }

private:
    std::string file_;
    MDB_env *env_ = nullptr;
};

// Group ownership and mode, applied to files LMDB created with the caller's
// umask and primary group.
void set_owner_mode(const std::string &path, gid_t group, mode_t mode) {
    if (::chown(path.c_str(), static_cast<uid_t>(-1), group) != 0 || ::chmod(path.c_str(), mode) != 0)
        fail(errno, "cannot set the permissions of " + path);
}

void write_schema_version(Env &env, Txn &txn, MDB_dbi meta) {
    std::string version(4, '\0');
    for (int i = 0; i < 4; ++i) version[i] = static_cast<char>(StoreSettings::schema_version >> (24 - 8 * i));
    env.put(txn, meta, as_val(schema_key), version);
}

void check_schema_version(Env &env, Txn &txn, MDB_dbi meta) {
    const auto version = env.get_live(txn, meta, as_val(schema_key));
    if (!version || version->size() != 4) corrupt(env.file() + " has no schema version: not a cptoken store");
    std::uint32_t number = 0;
    for (unsigned char c : *version) number = (number << 8) | c;
    if (number > StoreSettings::schema_version)
        corrupt(env.file() + " has schema version " + std::to_string(number) + ", newer than this software (" +
                std::to_string(StoreSettings::schema_version) + "): upgrade mod_cptoken");
    if (number < 1) corrupt(env.file() + " has an invalid schema version " + std::to_string(number));
}

}  // namespace

// ---------------------------------------------------------------- init

InitOutcome init_store(const std::string &dir, gid_t group) {
    const std::string tokens_file = path_in(dir, token_store_file), usage_file = path_in(dir, usage_store_file);
    struct stat st{};
    if (::stat(tokens_file.c_str(), &st) == 0) return InitOutcome::already_present;

    if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) fail(errno, "cannot create " + dir);
    set_owner_mode(dir, group, 02750);

    // The usage store first: tokens.mdb existing is what marks a finished init.
    {
        Env usage(usage_file, Access::read_write, 0660, false);
        Txn txn(usage.get(), true, usage_file);
        usage.open_db(txn, "usage", true);
        txn.commit(usage_file);
    }
    set_owner_mode(usage_file, group, 0660);
    set_owner_mode(usage_file + "-lock", group, 0660);
    {
        Env tokens(tokens_file, Access::read_write, 0640, false);
        Txn txn(tokens.get(), true, tokens_file);
        const MDB_dbi meta = tokens.open_db(txn, "meta", true);
        tokens.open_db(txn, "tokens", true);
        tokens.open_db(txn, "names", true);
        write_schema_version(tokens, txn, meta);
        txn.commit(tokens_file);
    }
    set_owner_mode(tokens_file, group, 0640);
    set_owner_mode(tokens_file + "-lock", group, 0660);
    return InitOutcome::created;
}

// ---------------------------------------------------------------- tokens

struct TokenStore::Impl {
    Env env;
    ReaderPool readers;  // after env: its transactions end before the environment closes
    MDB_dbi meta = 0, tokens = 0, names = 0;
    mutable RecordCache cache;

    Impl(const std::string &dir, Access access, std::size_t cache_slots)
        : env(path_in(dir, token_store_file), access, 0640, true), cache(cache_slots) {
        Txn txn(env.get(), false, env.file());
        meta = env.open_db(txn, "meta", false);
        tokens = env.open_db(txn, "tokens", false);
        names = env.open_db(txn, "names", false);
        check_schema_version(env, txn, meta);
        txn.commit(env.file());  // keeps the database handles for the life of the environment
        if (access == Access::read_write) keep_lock_file_usable(dir);
    }

    // If the lock file was deleted, LMDB has just made it with our umask and
    // group: give it back to the store's group so that httpd can still read.
    void keep_lock_file_usable(const std::string &dir) {
        struct stat dir_stat{}, lock_stat{};
        const std::string lock = env.file() + "-lock";
        if (::stat(dir.c_str(), &dir_stat) != 0 || ::stat(lock.c_str(), &lock_stat) != 0) return;
        if (lock_stat.st_gid != dir_stat.st_gid || (lock_stat.st_mode & 07777) != 0660)
            set_owner_mode(lock, dir_stat.st_gid, 0660);
    }

    std::optional<TokenRecord> record_of(Txn &txn, const Digest &digest) const {
        const auto payload = env.get_live(txn, tokens, as_val(digest));
        if (!payload) return std::nullopt;
        auto record = decode_record(*payload);
        if (!record) corrupt("a token record in " + env.file() + " cannot be decoded");
        return record;
    }

    std::optional<StoredToken> by_name(Txn &txn, std::string_view user, std::string_view name) const {
        const auto payload = env.get_live(txn, names, as_val(name_key(user, name)));
        if (!payload) return std::nullopt;
        StoredToken found;
        if (payload->size() != found.digest.size()) corrupt("a name entry in " + env.file() + " is broken");
        std::memcpy(found.digest.data(), payload->data(), found.digest.size());
        auto record = record_of(txn, found.digest);
        if (!record || record->user != user || record->name != name)
            corrupt("the name " + std::string(user) + "/" + std::string(name) + " in " + env.file() +
                    " points to no matching token");
        found.record = std::move(*record);
        return found;
    }

    StoredToken must_find(Txn &txn, std::string_view user, std::string_view name) const {
        auto found = by_name(txn, user, name);
        if (!found)
            throw StoreError(StoreError::Kind::not_found,
                             "user " + std::string(user) + " has no token named '" + std::string(name) + "'");
        return std::move(*found);
    }

    void remove(Txn &txn, const StoredToken &token) {
        env.put_tombstone(txn, names, as_val(name_key(token.record.user, token.record.name)));
        env.put_tombstone(txn, tokens, as_val(token.digest));
    }

    std::vector<StoredToken> live_tokens(Txn &txn, std::string_view user) const {
        std::vector<StoredToken> out;
        MDB_cursor *cursor = nullptr;
        check(mdb_cursor_open(txn.get(), names, &cursor), "cannot read ", env.file());
        const std::string prefix = user.empty() ? std::string() : name_key(user, "");
        MDB_val key = as_val(prefix), value;
        int rc = mdb_cursor_get(cursor, &key, &value, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
        try {
            for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) {
                const std::string_view key_text = as_view(key);
                // The length comes from the page: a corrupt one would have us read past the end of the file.
                if (key_text.size() > max_user_length + 1 + max_token_name_length)
                    corrupt("a name key in " + env.file() + " is broken");
                if (key_text.substr(0, prefix.size()) != prefix) break;
                const auto separator = key_text.find('\0');
                if (separator == std::string_view::npos) corrupt("a name key in " + env.file() + " is broken");
                auto found = by_name(txn, key_text.substr(0, separator), key_text.substr(separator + 1));
                if (found) out.push_back(std::move(*found));
            }
        } catch (...) {
            mdb_cursor_close(cursor);
            throw;
        }
        mdb_cursor_close(cursor);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) fail(rc, "cannot read " + env.file());
        return out;
    }

    // Keys of tombstones in `dbi` written before `cutoff_ns`.
    std::vector<std::string> old_tombstones(Txn &txn, MDB_dbi dbi, std::uint64_t cutoff_ns) const {
        std::vector<std::string> keys;
        MDB_cursor *cursor = nullptr;
        check(mdb_cursor_open(txn.get(), dbi, &cursor), "cannot read ", env.file());
        MDB_val key, value;
        int rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
        for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) {
            const auto decoded = ls_decode(as_view(value));
            if (decoded && decoded->deleted() && decoded->timestamp_ns < cutoff_ns)
                keys.emplace_back(as_view(key));
        }
        mdb_cursor_close(cursor);
        if (rc != MDB_NOTFOUND) fail(rc, "cannot read " + env.file());
        return keys;
    }

    template <class Change>
    auto write(Change change) {
        int dead = 0;
        mdb_reader_check(env.get(), &dead);
        Txn txn(env.get(), true, env.file());
        auto result = change(txn);
        txn.commit(env.file());
        return result;
    }
};

TokenStore::TokenStore(const std::string &dir, Access access, std::size_t cache_slots)
    : impl_(std::make_unique<Impl>(dir, access, cache_slots)) {}
TokenStore::~TokenStore() = default;

std::optional<TokenRecord> TokenStore::find(const Digest &digest) const {
    Txn txn(impl_->env.get(), false, impl_->env.file(), &impl_->readers);
    const std::size_t snapshot = mdb_txn_id(txn.get());
    if (auto cached = impl_->cache.get(digest, snapshot)) return cached;
    auto record = impl_->record_of(txn, digest);
    if (record) impl_->cache.put(digest, snapshot, *record);
    return record;
}

std::optional<StoredToken> TokenStore::find_by_name(std::string_view user, std::string_view name) const {
    Txn txn(impl_->env.get(), false, impl_->env.file());
    return impl_->by_name(txn, user, name);
}

std::vector<StoredToken> TokenStore::list(std::string_view user) const {
    Txn txn(impl_->env.get(), false, impl_->env.file());
    return impl_->live_tokens(txn, user);
}

void TokenStore::add(const Digest &digest, const TokenRecord &record) { add_many({{digest, record}}); }

void TokenStore::add_many(const std::vector<StoredToken> &tokens) {
    impl_->write([&](Txn &txn) {
        for (const StoredToken &token : tokens) {
            const TokenRecord &record = token.record;
            if (impl_->by_name(txn, record.user, record.name))
                throw StoreError(StoreError::Kind::duplicate,
                                 "user " + record.user + " already has a token named '" + record.name + "'");
            if (impl_->record_of(txn, token.digest))
                throw StoreError(StoreError::Kind::duplicate, "a token with the same digest already exists");
            impl_->env.put(txn, impl_->tokens, as_val(token.digest), encode_record(record));
            impl_->env.put(txn, impl_->names, as_val(name_key(record.user, record.name)),
                           std::string_view(reinterpret_cast<const char *>(token.digest.data()), token.digest.size()));
        }
        return 0;
    });
}

TokenRecord TokenStore::edit(std::string_view user, std::string_view name, const TokenChanges &changes) {
    return impl_->write([&](Txn &txn) {
        StoredToken token = impl_->must_find(txn, user, name);
        TokenRecord &record = token.record;
        if (changes.name && *changes.name != record.name) {
            if (impl_->by_name(txn, user, *changes.name))
                throw StoreError(StoreError::Kind::duplicate,
                                 "user " + std::string(user) + " already has a token named '" + *changes.name + "'");
            impl_->env.put_tombstone(txn, impl_->names, as_val(name_key(user, record.name)));
            record.name = *changes.name;
            impl_->env.put(txn, impl_->names, as_val(name_key(user, record.name)),
                           std::string_view(reinterpret_cast<const char *>(token.digest.data()), token.digest.size()));
        }
        if (changes.expires) record.expires = *changes.expires;
        if (changes.allowed_ips) record.allowed_ips = *changes.allowed_ips;
        impl_->env.put(txn, impl_->tokens, as_val(token.digest), encode_record(record));
        return record;
    });
}

void TokenStore::revoke(std::string_view user, std::string_view name) {
    impl_->write([&](Txn &txn) {
        impl_->remove(txn, impl_->must_find(txn, user, name));
        return 0;
    });
}

std::size_t TokenStore::revoke_all(std::string_view user) {
    if (user.empty()) throw StoreError(StoreError::Kind::not_found, "no user given");
    return impl_->write([&](Txn &txn) {
        const auto tokens = impl_->live_tokens(txn, user);
        for (const StoredToken &token : tokens) impl_->remove(txn, token);
        return tokens.size();
    });
}

PruneResult TokenStore::prune(Seconds now) {
    return impl_->write([&](Txn &txn) {
        PruneResult result;
        for (const StoredToken &token : impl_->live_tokens(txn, {})) {
            if (!token.record.expired_at(now)) continue;
            impl_->remove(txn, token);
            ++result.expired_removed;
        }
        const Seconds cutoff = now - StoreSettings::tombstone_retention_seconds;
        const std::uint64_t cutoff_ns = cutoff > 0 ? static_cast<std::uint64_t>(cutoff) * 1000000000u : 0;
        for (MDB_dbi dbi : {impl_->names, impl_->tokens}) {
            for (const std::string &key : impl_->old_tombstones(txn, dbi, cutoff_ns)) {
                MDB_val k = as_val(key);
                check(mdb_del(txn.get(), dbi, &k, nullptr), "cannot delete from ", impl_->env.file());
                ++result.tombstones_dropped;
            }
        }
        return result;
    });
}

std::pair<dev_t, ino_t> TokenStore::data_file_id() const {
    mdb_filehandle_t fd = -1;
    struct stat st{};
    if (mdb_env_get_fd(impl_->env.get(), &fd) != MDB_SUCCESS || ::fstat(fd, &st) != 0)
        fail(errno, "cannot stat " + impl_->env.file());
    return {st.st_dev, st.st_ino};
}

void TokenStore::backup(const std::string &file) const {
    check(mdb_env_copy2(impl_->env.get(), file.c_str(), MDB_CP_COMPACT), "cannot back up to ", file);
}

// ---------------------------------------------------------------- usage

namespace {
constexpr std::uint8_t usage_format = 1;
}

struct UsageStore::Impl {
    Env env;
    MDB_dbi usage = 0;

    Impl(const std::string &dir, Access access) : env(path_in(dir, usage_store_file), access, 0660, true) {
        Txn txn(env.get(), false, env.file());
        usage = env.open_db(txn, "usage", false);
        txn.commit(env.file());
    }
};

UsageStore::UsageStore(const std::string &dir, Access access) : impl_(std::make_unique<Impl>(dir, access)) {}
UsageStore::~UsageStore() = default;

std::optional<Usage> UsageStore::find(const Digest &digest) const {
    Txn txn(impl_->env.get(), false, impl_->env.file());
    const auto payload = impl_->env.get_live(txn, impl_->usage, as_val(digest));
    if (!payload) return std::nullopt;
    // format byte, 8-byte time, then the address text
    if (payload->size() < 9 || static_cast<std::uint8_t>((*payload)[0]) != usage_format) return std::nullopt;
    Usage usage;
    std::uint64_t when = 0;
    for (int i = 1; i <= 8; ++i) when = (when << 8) | static_cast<unsigned char>((*payload)[i]);
    usage.last_used = static_cast<Seconds>(when);
    usage.last_used_ip = std::string(payload->substr(9));
    return usage;
}

void UsageStore::record(const Digest &digest, const Usage &usage) {
    std::string payload(1, static_cast<char>(usage_format));
    for (int shift = 56; shift >= 0; shift -= 8)
        payload.push_back(static_cast<char>(static_cast<std::uint64_t>(usage.last_used) >> shift));
    payload += usage.last_used_ip;
    Txn txn(impl_->env.get(), true, impl_->env.file());
    impl_->env.put(txn, impl_->usage, as_val(digest), payload);
    txn.commit(impl_->env.file());
}

}  // namespace cptoken

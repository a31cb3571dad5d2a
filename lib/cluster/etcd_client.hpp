// SPDX-License-Identifier: Apache-2.0
// lib/cluster/: an etcd v3 client over the JSON gateway (/v3/...), with
// libcurl. etcd 3.4.23 (Debian 12) to 3.7 speak the same gateway. No httpd:
// cptoken (the writers, the mirror agent) and the tests link it, never the
// module. The wire format and its pure parts are in etcd_wire.hpp.
//
// A Client is not thread-safe: give each thread its own, and use a Watch in
// the thread of the Client that opened it (a failing stream tells its Client
// to move on to the next member). Every call throws
// EtcdError (etcd_wire.hpp) on failure; nothing here logs, and no error
// message carries the password or the auth token.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cluster/etcd_wire.hpp"

namespace cptoken::etcd {

/// How to reach etcd, named as etcdctl names them.
struct ClientOptions {
    std::vector<std::string> endpoints;  ///< "http://127.0.0.1:2379", "https://etcd1:2379"; tried in shuffled order
    std::string cacert;                  ///< --cacert: CA bundle that verifies the members (https)
    std::string cert;                    ///< --cert: client certificate (CN-less: the gateway refuses a CN)
    std::string key;                     ///< --key: its private key
    std::string user;                    ///< --user: empty means no authentication
    std::string password;                ///< never logged, never in an error
    std::chrono::milliseconds connect_timeout{2000};
    std::chrono::milliseconds request_timeout{10000};  ///< one unary call on one member
    bool shuffle = true;                 ///< false: try endpoints in the given order (tests)
};

class Watch;

class Client {
public:
    /// Checks the options (at least one endpoint; throws std::invalid_argument
    /// otherwise). Connects lazily, on the first call.
    explicit Client(ClientOptions options);
    ~Client();
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    /// /v3/kv/range. A read goes to the next member on a connection error, a
    /// timeout or a 503; throws EtcdError once every member failed, or at
    /// once on any other error (e.g. compacted(): grpc 11, 403).
    RangeResponse range(const RangeRequest &request);

    /// Every key under `prefix` at one revision, `page_size` keys per call:
    /// the first page is a linearizable read at the latest revision R, every
    /// next one reads at R from just after the last key. `on_page` gets each
    /// page's keys in key order. Returns R; `first_header`, when given, gets
    /// the first page's header (the cluster id R belongs to). Throws
    /// EtcdError, compacted() when R was compacted away during the read (read
    /// again). A big prefix is read in pieces, each paged to its own end
    /// (etcd's cost per page grows with the keys after it in its range):
    /// the same keys, in the same order.
    std::int64_t read_prefix(const std::string &prefix, std::int64_t page_size,
                             const std::function<void(std::vector<KeyValue> &&)> &on_page,
                             ResponseHeader *first_header = nullptr);

    struct Snapshot {
        std::int64_t revision = 0;
        std::vector<KeyValue> kvs;
    };
    /// read_prefix() gathered into one vector.
    Snapshot read_prefix(const std::string &prefix, std::int64_t page_size = 10000);

    /// /v3/kv/txn: the answer says whether the compares held (succeeded) and
    /// holds the answers of the branch that ran. A write: it goes to another
    /// member only when the request surely never reached this one (connect
    /// failed); after a timeout or a 503 the outcome is unknown and EtcdError
    /// is thrown (read back before retrying).
    TxnResponse txn(const TxnRequest &request);

    /// /v3/kv/put; returns the answer's header (header.revision: the put's).
    /// Errors as txn().
    ResponseHeader put(const std::string &key, const std::string &value);

    /// /v3/kv/deleterange of `key` (range_end empty) or [key, range_end);
    /// returns how many keys were deleted. Errors as txn().
    std::int64_t delete_range(const std::string &key, const std::string &range_end = {});

    /// /v3/kv/compaction up to `revision` (physical: returns once the space
    /// is reclaimed). Throws EtcdError, compacted() if it already was.
    void compact(std::int64_t revision, bool physical = true);

    /// /v3/maintenance/status of the member currently used (cluster id,
    /// revision, leader, version). Throws EtcdError like range().
    Status status();

    /// Opens a watch stream (its own connection) on the current member,
    /// moving on to the next when the member cannot be reached or says
    /// nothing within `watchdog`; the first answer (created, or canceled) is
    /// already read and is what the first Watch::next() returns. Throws
    /// EtcdError (503, gRPC 14, every member's reason) once every member
    /// failed, e.g. during an election, when each refuses with "no leader":
    /// back off and call again. Throws at once on a non-200 answer other than
    /// 503. An expired token (a 401, or on 3.4 a stream canceled as
    /// Unauthenticated) logs in again and retries once.
    Watch watch(const WatchRequest &request, std::chrono::milliseconds watchdog);

    /// Logs in now (POST /v3/auth/authenticate); calls do it themselves when
    /// a user is set and again on 401 / gRPC 16, once per call. Throws
    /// EtcdError (a wrong password: 400 with gRPC 3).
    void authenticate();

    /// The member the next call goes to first.
    const std::string &current_endpoint() const;
    /// Moves on to the next member, for a caller that found the current one
    /// wanting although it answered (a watch that stays behind a quorum
    /// read). Never throws.
    void move_on() noexcept;
    /// Times authenticate() ran, for tests and the agent's log.
    unsigned authentications() const noexcept;

    struct State;  ///< opaque: endpoints, auth token, connection; shared with open Watch streams

private:
    // read_prefix()'s pages of one range, `page` its first.
    void read_range_pieces(RangeRequest request, const std::function<void(std::vector<KeyValue> &&)> &on_page,
                           RangeResponse page);

    std::shared_ptr<State> state_;
};

/// One watch stream. next() hands out what etcd says, one answer at a time;
/// after disconnected, stream_error, timeout or canceled the stream is over
/// (a canceled stream is closed here: etcd leaves it open) and next() keeps
/// returning that last answer. Resume with Client::watch() from the highest
/// kv.mod_revision applied + 1, never from a header.revision.
class Watch {
public:
    Watch(Watch &&) noexcept;
    Watch &operator=(Watch &&) noexcept;
    ~Watch();

    /// The next answer; waits for it at most the watchdog given at open
    /// (then Kind::timeout, and the member is marked as the one to avoid).
    /// Throws EtcdError only on a line that cannot be parsed or is too long.
    WatchResponse next();
    /// next(), but nullopt once `until` has come with no answer: the stream
    /// goes on, and its watchdog still counts from the last answer. For a
    /// caller with something else to look at between answers.
    std::optional<WatchResponse> next_until(std::chrono::steady_clock::time_point until);
    /// The member this stream is on.
    const std::string &endpoint() const;
    /// The stream is over (see above).
    bool done() const noexcept;

private:
    friend class Client;
    struct Stream;
    explicit Watch(std::unique_ptr<Stream> stream);
    std::unique_ptr<Stream> stream_;
};

}  // namespace cptoken::etcd

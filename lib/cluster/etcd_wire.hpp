// SPDX-License-Identifier: Apache-2.0
// lib/cluster/: talking to etcd, the source of truth when several front-ends
// share one token set (issue 24). Only cptoken and the tests link it (it needs
// libcurl); the module never does.
//
// This header is the wire format of etcd's v3 JSON gateway (/v3/...), with no
// network: the types a caller sees, how they become JSON and come back from
// it, the error mapping, and the line framing of a watch stream. Everything
// here is pure, so the unit tests cover it without an etcd.
//
// proto3 JSON, as etcd 3.4 to 3.7 speak it: keys and values are base64, int64
// numbers are strings, and fields at their default (false, 0, PUT, EQUAL, "")
// are left out, so every parser here defaults them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace simdjson::dom {
class parser;
}

namespace cptoken::etcd {

/// gRPC status codes that etcd's answers carry (google.golang.org/grpc/codes).
namespace grpc {
inline constexpr int none = -1;  ///< the answer carried no gRPC code (plain-text 404, transport error)
inline constexpr int ok = 0;
inline constexpr int unknown = 2;
inline constexpr int invalid_argument = 3;
inline constexpr int deadline_exceeded = 4;
inline constexpr int permission_denied = 7;
inline constexpr int out_of_range = 11;  ///< "required revision has been compacted"
inline constexpr int unavailable = 14;
inline constexpr int unauthenticated = 16;
}  // namespace grpc

/// Every failure of the etcd client: an HTTP status (0 when no HTTP answer
/// came: connection refused, timeout, TLS), a gRPC code (grpc::none when
/// the answer had none) and etcd's message. Never carries a password or an
/// auth token.
class EtcdError : public std::runtime_error {
public:
    EtcdError(long http_status, int grpc_code, const std::string &message, bool reached_server = true);
    long http_status() const noexcept { return http_status_; }
    int grpc_code() const noexcept { return grpc_code_; }
    /// False when the request surely never reached etcd (connect failed):
    /// only then may a write be sent again elsewhere without re-reading.
    bool reached_server() const noexcept { return reached_server_; }
    /// A bad or expired auth token (401 or gRPC 16): authenticate again.
    bool unauthenticated() const noexcept { return http_status_ == 401 || grpc_code_ == grpc::unauthenticated; }
    /// The revision asked for has been compacted away (gRPC 11).
    bool compacted() const noexcept { return grpc_code_ == grpc::out_of_range; }
    /// Another member may answer (no HTTP answer at all, or 503).
    bool try_elsewhere() const noexcept { return http_status_ == 0 || http_status_ == 503; }

private:
    long http_status_;
    int grpc_code_;
    bool reached_server_;
};

/// The EtcdError a non-200 unary answer means: `{"error":..,"message":..,"code":N}`
/// as the gateway sends it, or any other body (a plain-text 404) as the
/// message, cut to a readable length. Never throws.
EtcdError error_from_response(long http_status, std::string_view body) noexcept;

/// Standard base64 with padding, as protobuf's JSON mapping writes bytes.
std::string base64_encode(std::string_view bytes);
/// Strict base64 decoding (lib/token's); throws EtcdError (grpc::none) on
/// anything that is not.
std::string base64_decode(std::string_view text);

/// The end of the range holding every key that starts with `prefix`: the
/// prefix with its last byte that is not 0xff plus one, and what follows it
/// dropped. "\0" (etcd's "to the end of the keyspace") when there is no such
/// byte. Throws std::invalid_argument for an empty prefix.
std::string prefix_range_end(std::string_view prefix);

struct ResponseHeader {
    std::uint64_t cluster_id = 0;
    std::uint64_t member_id = 0;
    std::int64_t revision = 0;  ///< the store's revision when the answer was made (0 if absent)
    std::uint64_t raft_term = 0;
};

struct KeyValue {
    std::string key;
    std::string value;
    std::int64_t create_revision = 0;
    std::int64_t mod_revision = 0;
    std::int64_t version = 0;
    std::int64_t lease = 0;
};

/// /v3/kv/range. `range_end` empty: the one key; prefix_range_end(p): every
/// key under p. `revision` 0: the latest.
struct RangeRequest {
    std::string key;
    std::string range_end;
    std::int64_t limit = 0;
    std::int64_t revision = 0;
    bool serializable = false;  ///< answered by the member alone: may be stale
    bool keys_only = false;
    bool count_only = false;
};

struct RangeResponse {
    ResponseHeader header;
    std::vector<KeyValue> kvs;
    bool more = false;        ///< more keys in the range than `limit` let through
    std::int64_t count = 0;   ///< keys in the whole range at that revision
};

/// One condition of a txn: `target` of `key` compared with a number or,
/// for Target::value, with `value`.
struct Compare {
    enum class Target { version, create, mod, value };
    enum class Result { equal, greater, less, not_equal };
    std::string key;
    Target target = Target::version;
    Result result = Result::equal;
    std::int64_t number = 0;  ///< version, create_revision or mod_revision
    std::string value;        ///< for Target::value

    /// The key does not exist (CREATE == 0): create-if-absent.
    static Compare absent(std::string key);
    /// The key was last written at `revision` (MOD == revision): compare-and-swap.
    static Compare modified_at(std::string key, std::int64_t revision);
};

/// One operation of a txn branch.
struct RequestOp {
    enum class Kind { put, delete_range, range };
    Kind kind = Kind::put;
    std::string key;
    std::string value;      ///< put
    std::string range_end;  ///< delete_range and range
    RangeRequest range;     ///< range (its key and range_end are the ones above)

    static RequestOp put(std::string key, std::string value);
    static RequestOp delete_range(std::string key, std::string range_end = {});
    static RequestOp get(RangeRequest request);
};

struct TxnRequest {
    std::vector<Compare> compare;
    std::vector<RequestOp> success;
    std::vector<RequestOp> failure;
};

/// The answer to one RequestOp, in order.
struct OpResponse {
    RequestOp::Kind kind = RequestOp::Kind::put;
    ResponseHeader header;
    RangeResponse range;       ///< Kind::range
    std::int64_t deleted = 0;  ///< Kind::delete_range
};

struct TxnResponse {
    ResponseHeader header;
    bool succeeded = false;  ///< absent in the JSON when false
    std::vector<OpResponse> responses;
};

struct Status {
    ResponseHeader header;  ///< cluster_id, member_id (the answering member), revision
    std::string version;    ///< etcd's version, "3.4.23"
    std::uint64_t leader = 0;
    std::int64_t db_size = 0;
    std::int64_t raft_index = 0;
};

/// /v3/watch create_request.
struct WatchRequest {
    std::string key;
    std::string range_end;
    std::int64_t start_revision = 0;  ///< inclusive; 0: from now
    bool progress_notify = true;      ///< progress answers while idle (--experimental-watch-progress-notify-interval)
    bool prev_kv = false;
};

struct WatchEvent {
    enum class Type { put, del };
    Type type = Type::put;  ///< absent in the JSON for PUT
    KeyValue kv;
    std::optional<KeyValue> prev_kv;
};

/// One thing a watch stream says, typed.
struct WatchResponse {
    enum class Kind {
        created,        ///< the watch exists; events follow
        canceled,       ///< etcd ended it: compaction (compact_revision > 0) or cancel_reason
        events,         ///< one or more events, in revision order
        progress,       ///< no events: everything up to header.revision was sent
        stream_error,   ///< an {"error":{..}} object (no leader...) or a non-200 answer
        disconnected,   ///< the stream ended (EOF) or broke (a member killed)
        timeout,        ///< the watchdog: no line for longer than allowed
    };
    Kind kind = Kind::progress;
    ResponseHeader header;  ///< header.revision: the store's, NOT the last event's (catch-up batches)
    std::int64_t watch_id = 0;
    std::int64_t compact_revision = 0;
    std::string cancel_reason;
    std::vector<WatchEvent> events;
    long http_status = 0;  ///< stream_error
    int grpc_code = grpc::none;  ///< stream_error
    std::string message;   ///< stream_error, disconnected, timeout

    /// The highest kv.mod_revision in `events` (0 without events): what a
    /// mirror has applied after this answer.
    std::int64_t max_mod_revision() const noexcept;
};

// Requests as JSON bodies (nlohmann), answers from their text (simdjson: a
// full read is hundreds of megabytes of answers). The parsers throw EtcdError
// (grpc::none) on text that is not JSON or a shape they cannot read (bad
// base64, a number that is not one); unknown fields are ignored, as etcd
// does, and a field of another type where an object belongs reads as absent.
nlohmann::json to_json(const RangeRequest &request);
nlohmann::json to_json(const TxnRequest &request);
nlohmann::json to_json(const WatchRequest &request);  ///< {"create_request":{..}}
ResponseHeader header_from_json(std::string_view text);  ///< a header object alone
RangeResponse range_response_from_json(std::string_view text);
TxnResponse txn_response_from_json(std::string_view text);
Status status_from_json(std::string_view text);
ResponseHeader put_response_from_json(std::string_view text);    ///< /v3/kv/put's answer: its header
std::int64_t delete_response_from_json(std::string_view text);   ///< /v3/kv/deleterange's: "deleted"
std::string authenticate_response_from_json(std::string_view text);  ///< /v3/auth/authenticate's: the token

/// Reads range answers one after another with one parser, whose buffers
/// stay allocated from one answer to the next: a full read's pages are
/// megabytes each, and fresh buffers for every page cost the agent more in
/// page faults than the parse. range_response_from_json()'s rules.
class RangeReader {
public:
    RangeReader();
    ~RangeReader();
    RangeReader(const RangeReader &) = delete;
    RangeReader &operator=(const RangeReader &) = delete;
    RangeResponse read(std::string_view text);

private:
    std::unique_ptr<simdjson::dom::parser> parser_;
};

/// One line of a watch stream as a typed answer: {"result":{..}} (canceled
/// is checked before created: a refused watch says both), {"error":{..}} (the
/// gateway's stream error), or a unary error body {"error":"..","code":N}.
/// Throws EtcdError (grpc::none) on a line that is none of these.
WatchResponse parse_watch_line(std::string_view line);

/// Cuts a byte stream into lines, one JSON object each, whatever the chunk
/// boundaries. A line may be very long (a catch-up answer of 1000 revisions);
/// feed() throws EtcdError once a line grows past `max_line_bytes`, so that a
/// runaway stream cannot eat the memory.
class LineSplitter {
public:
    explicit LineSplitter(std::size_t max_line_bytes = 256u << 20) : max_line_bytes_(max_line_bytes) {}
    /// Adds a chunk; complete lines (without their '\n', a trailing '\r'
    /// dropped, blank lines skipped) are queued for next_line().
    void feed(std::string_view chunk);
    /// The stream ended: a last line without '\n' (the gateway ends a stream
    /// with an unterminated error object) is queued too.
    void finish();
    /// The next complete line, if any.
    std::optional<std::string> next_line();
    bool has_line() const noexcept { return !lines_.empty(); }
    /// Bytes of the line not complete yet.
    std::size_t pending_bytes() const noexcept { return partial_.size(); }

private:
    void push(std::string line);
    std::size_t max_line_bytes_;
    std::string partial_;
    std::deque<std::string> lines_;
};

}  // namespace cptoken::etcd

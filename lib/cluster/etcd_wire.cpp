// SPDX-License-Identifier: Apache-2.0
#include "cluster/etcd_wire.hpp"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <limits>

#include "token/credentials.hpp"

namespace cptoken::etcd {

using nlohmann::json;
// etcd's answers are read with simdjson's DOM, not nlohmann's: a full read
// brings hundreds of megabytes of them, and building nlohmann's tree of maps
// and strings cost the agent more than half its CPU (bench/results). The
// requests, small, are still written with nlohmann.
using Value = simdjson::dom::element;

namespace {

[[noreturn]] void bad_shape(const std::string &what) {
    throw EtcdError(0, grpc::none, "etcd answer not understood: " + what);
}

std::string cut(std::string_view text, std::size_t limit = 300) {
    std::string out(text.substr(0, limit));
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == ' ')) out.pop_back();
    if (text.size() > limit) out += "...";
    return out;
}

// The document of one answer; it lives as long as `parser`.
Value parse_document(simdjson::dom::parser &parser, std::string_view text) {
    Value root;
    if (parser.parse(text.data(), text.size()).get(root) != simdjson::SUCCESS) bad_shape("not JSON: " + cut(text, 80));
    return root;
}

// A member of an object: nullopt when absent, null, or when `object` is no
// object (proto3's default, and a wrong type read as absent, as before).
std::optional<Value> field(const Value &object, std::string_view name) {
    simdjson::dom::object members;
    Value value;
    if (object.get(members) != simdjson::SUCCESS || members.at_key(name).get(value) != simdjson::SUCCESS ||
        value.is_null())
        return std::nullopt;
    return value;
}

// A nested object; nullopt (read as an empty one) when it is absent or not an object.
std::optional<Value> object_field(const Value &object, std::string_view name) {
    auto value = field(object, name);
    if (value && !value->is_object()) return std::nullopt;
    return value;
}

template <typename Int>
Int number_field(const Value &object, const char *name) {
    const auto value = field(object, name);
    if (!value) return 0;
    switch (value->type()) {
    case simdjson::dom::element_type::INT64: {
        // A negative JSON number in a uint64 field is a shape we cannot read.
        const std::int64_t v = value->get_int64().value_unsafe();
        if (v < 0 && !std::numeric_limits<Int>::is_signed) bad_shape(std::string(name) + " negative");
        return static_cast<Int>(v);
    }
    case simdjson::dom::element_type::UINT64: {  // above INT64_MAX
        const std::uint64_t v = value->get_uint64().value_unsafe();
        if (v > static_cast<std::uint64_t>(std::numeric_limits<Int>::max())) bad_shape(std::string(name) + " too large");
        return static_cast<Int>(v);
    }
    case simdjson::dom::element_type::STRING: {
        const std::string_view text = value->get_string().value_unsafe();
        Int number = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec != std::errc() || end != text.data() + text.size() || text.empty())
            bad_shape(std::string(name) + " is not a number");
        return number;
    }
    default:
        bad_shape(std::string(name) + " is not a number");
    }
}

std::int64_t int64_field(const Value &object, const char *name) { return number_field<std::int64_t>(object, name); }
std::uint64_t uint64_field(const Value &object, const char *name) { return number_field<std::uint64_t>(object, name); }

bool bool_field(const Value &object, const char *name) {
    const auto value = field(object, name);
    bool flag = false;
    return value && value->get(flag) == simdjson::SUCCESS && flag;
}

std::string string_field(const Value &object, const char *name) {
    const auto value = field(object, name);
    std::string_view text;
    return value && value->get(text) == simdjson::SUCCESS ? std::string(text) : std::string();
}

std::string bytes_field(const Value &object, const char *name) {
    const auto value = field(object, name);
    if (!value) return {};
    std::string_view text;
    if (value->get(text) != simdjson::SUCCESS) bad_shape(std::string(name) + " is not base64");
    return base64_decode(text);
}

ResponseHeader header_of(const std::optional<Value> &object) {
    ResponseHeader h;
    if (!object) return h;
    h.cluster_id = uint64_field(*object, "cluster_id");
    h.member_id = uint64_field(*object, "member_id");
    h.revision = int64_field(*object, "revision");
    h.raft_term = uint64_field(*object, "raft_term");
    return h;
}

// An absent kv (nullopt) is an empty one; anything but an object is refused.
KeyValue key_value_of(const std::optional<Value> &object) {
    KeyValue kv;
    if (!object) return kv;
    if (!object->is_object()) bad_shape("a key-value that is not an object");
    kv.key = bytes_field(*object, "key");
    kv.value = bytes_field(*object, "value");
    kv.create_revision = int64_field(*object, "create_revision");
    kv.mod_revision = int64_field(*object, "mod_revision");
    kv.version = int64_field(*object, "version");
    kv.lease = int64_field(*object, "lease");
    return kv;
}

RangeResponse range_response_of(const Value &object) {
    RangeResponse r;
    if (!object.is_object()) bad_shape("a range answer that is not an object");
    r.header = header_of(object_field(object, "header"));
    simdjson::dom::array kvs;
    if (const auto value = field(object, "kvs"); value && value->get(kvs) == simdjson::SUCCESS) {
        r.kvs.reserve(kvs.size());
        for (const Value kv : kvs) r.kvs.push_back(key_value_of(kv));
    }
    r.more = bool_field(object, "more");
    r.count = int64_field(object, "count");
    return r;
}

const char *target_name(Compare::Target target) {
    switch (target) {
    case Compare::Target::version: return "VERSION";
    case Compare::Target::create: return "CREATE";
    case Compare::Target::mod: return "MOD";
    case Compare::Target::value: return "VALUE";
    }
    return "VERSION";
}

const char *result_name(Compare::Result result) {
    switch (result) {
    case Compare::Result::equal: return "EQUAL";
    case Compare::Result::greater: return "GREATER";
    case Compare::Result::less: return "LESS";
    case Compare::Result::not_equal: return "NOT_EQUAL";
    }
    return "EQUAL";
}

json to_json(const Compare &c) {
    json out = {{"key", base64_encode(c.key)}, {"target", target_name(c.target)}, {"result", result_name(c.result)}};
    switch (c.target) {
    case Compare::Target::version: out["version"] = std::to_string(c.number); break;
    case Compare::Target::create: out["create_revision"] = std::to_string(c.number); break;
    case Compare::Target::mod: out["mod_revision"] = std::to_string(c.number); break;
    case Compare::Target::value: out["value"] = base64_encode(c.value); break;
    }
    return out;
}

json to_json(const RequestOp &op) {
    switch (op.kind) {
    case RequestOp::Kind::put:
        return {{"request_put", {{"key", base64_encode(op.key)}, {"value", base64_encode(op.value)}}}};
    case RequestOp::Kind::delete_range: {
        json del = {{"key", base64_encode(op.key)}};
        if (!op.range_end.empty()) del["range_end"] = base64_encode(op.range_end);
        return {{"request_delete_range", del}};
    }
    case RequestOp::Kind::range: {
        RangeRequest r = op.range;
        r.key = op.key;
        r.range_end = op.range_end;
        return {{"request_range", to_json(r)}};
    }
    }
    return {};
}

OpResponse op_response_of(const Value &object) {
    OpResponse out;
    if (const auto range = field(object, "response_range")) {
        out.kind = RequestOp::Kind::range;
        out.range = range_response_of(*range);
        out.header = out.range.header;
    } else if (const auto del = field(object, "response_delete_range")) {
        out.kind = RequestOp::Kind::delete_range;
        out.header = header_of(object_field(*del, "header"));
        out.deleted = int64_field(*del, "deleted");
    } else if (const auto put = field(object, "response_put")) {
        out.kind = RequestOp::Kind::put;
        out.header = header_of(object_field(*put, "header"));
    } else {
        bad_shape("a txn answer of unknown kind");
    }
    return out;
}

WatchEvent event_of(const Value &object) {
    if (!object.is_object()) bad_shape("an event that is not an object");
    WatchEvent event;
    const std::string type = string_field(object, "type");
    if (type == "DELETE") event.type = WatchEvent::Type::del;
    else if (type.empty() || type == "PUT") event.type = WatchEvent::Type::put;
    else bad_shape("event type " + cut(type, 40));
    event.kv = key_value_of(object_field(object, "kv"));
    if (const auto prev = object_field(object, "prev_kv")) event.prev_kv = key_value_of(prev);
    return event;
}

}  // namespace

EtcdError::EtcdError(long http_status, int grpc_code, const std::string &message, bool reached_server)
    : std::runtime_error(message), http_status_(http_status), grpc_code_(grpc_code), reached_server_(reached_server) {}

EtcdError error_from_response(long http_status, std::string_view body) noexcept {
    try {
        simdjson::dom::parser parser;
        Value parsed;
        if (parser.parse(body.data(), body.size()).get(parsed) == simdjson::SUCCESS && parsed.is_object()) {
            int code = grpc::none;
            std::int64_t number = 0;
            if (const auto value = field(parsed, "code"); value && value->get(number) == simdjson::SUCCESS &&
                                                          number >= std::numeric_limits<int>::min() &&
                                                          number <= std::numeric_limits<int>::max())
                code = static_cast<int>(number);
            std::string message = string_field(parsed, "message");
            if (message.empty()) message = string_field(parsed, "error");
            if (!message.empty() || code != grpc::none)
                return EtcdError(http_status, code, "etcd: " + cut(message) + " (HTTP " + std::to_string(http_status) + ")");
        }
        return EtcdError(http_status, grpc::none, "etcd: HTTP " + std::to_string(http_status) + ": " + cut(body));
    } catch (...) {
        return EtcdError(http_status, grpc::none, "etcd: HTTP error");
    }
}

std::string base64_encode(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3), '\0');
    if (bytes.empty()) return out;
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                                  reinterpret_cast<const unsigned char *>(bytes.data()), static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string base64_decode(std::string_view text) {
    auto bytes = base64_decode_strict(text);
    if (!bytes) bad_shape("bad base64");
    return std::move(*bytes);
}

std::string prefix_range_end(std::string_view prefix) {
    if (prefix.empty()) throw std::invalid_argument("prefix_range_end: empty prefix");
    std::string end(prefix);
    for (std::size_t i = end.size(); i-- > 0;) {
        if (static_cast<unsigned char>(end[i]) < 0xff) {
            end[i] = static_cast<char>(static_cast<unsigned char>(end[i]) + 1);
            end.resize(i + 1);
            return end;
        }
    }
    return std::string(1, '\0');  // every byte 0xff: to the end of the keyspace
}

Compare Compare::absent(std::string key) {
    return Compare{std::move(key), Target::create, Result::equal, 0, {}};
}

Compare Compare::modified_at(std::string key, std::int64_t revision) {
    return Compare{std::move(key), Target::mod, Result::equal, revision, {}};
}

RequestOp RequestOp::put(std::string key, std::string value) {
    RequestOp op;
    op.kind = Kind::put;
    op.key = std::move(key);
    op.value = std::move(value);
    return op;
}

RequestOp RequestOp::delete_range(std::string key, std::string range_end) {
    RequestOp op;
    op.kind = Kind::delete_range;
    op.key = std::move(key);
    op.range_end = std::move(range_end);
    return op;
}

RequestOp RequestOp::get(RangeRequest request) {
    RequestOp op;
    op.kind = Kind::range;
    op.key = request.key;
    op.range_end = request.range_end;
    op.range = std::move(request);
    return op;
}

json to_json(const RangeRequest &r) {
    json out = {{"key", base64_encode(r.key)}};
    if (!r.range_end.empty()) out["range_end"] = base64_encode(r.range_end);
    if (r.limit) out["limit"] = std::to_string(r.limit);
    if (r.revision) out["revision"] = std::to_string(r.revision);
    if (r.serializable) out["serializable"] = true;
    if (r.keys_only) out["keys_only"] = true;
    if (r.count_only) out["count_only"] = true;
    return out;
}

json to_json(const TxnRequest &t) {
    json out = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
    for (const auto &c : t.compare) out["compare"].push_back(to_json(c));
    for (const auto &op : t.success) out["success"].push_back(to_json(op));
    for (const auto &op : t.failure) out["failure"].push_back(to_json(op));
    return out;
}

json to_json(const WatchRequest &w) {
    json create = {{"key", base64_encode(w.key)}};
    if (!w.range_end.empty()) create["range_end"] = base64_encode(w.range_end);
    if (w.start_revision) create["start_revision"] = std::to_string(w.start_revision);
    if (w.progress_notify) create["progress_notify"] = true;
    if (w.prev_kv) create["prev_kv"] = true;
    return {{"create_request", create}};
}

ResponseHeader header_from_json(std::string_view text) {
    simdjson::dom::parser parser;
    const Value object = parse_document(parser, text);
    return object.is_object() ? header_of(object) : ResponseHeader{};
}

RangeResponse range_response_from_json(std::string_view text) { return RangeReader().read(text); }

RangeReader::RangeReader() : parser_(std::make_unique<simdjson::dom::parser>()) {}
RangeReader::~RangeReader() = default;
RangeResponse RangeReader::read(std::string_view text) { return range_response_of(parse_document(*parser_, text)); }

TxnResponse txn_response_from_json(std::string_view text) {
    simdjson::dom::parser parser;
    const Value object = parse_document(parser, text);
    TxnResponse t;
    if (!object.is_object()) bad_shape("a txn answer that is not an object");
    t.header = header_of(object_field(object, "header"));
    t.succeeded = bool_field(object, "succeeded");
    simdjson::dom::array responses;
    if (const auto value = field(object, "responses"); value && value->get(responses) == simdjson::SUCCESS)
        for (const Value r : responses) t.responses.push_back(op_response_of(r));
    return t;
}

Status status_from_json(std::string_view text) {
    simdjson::dom::parser parser;
    const Value object = parse_document(parser, text);
    Status s;
    if (!object.is_object()) bad_shape("a status answer that is not an object");
    s.header = header_of(object_field(object, "header"));
    s.version = string_field(object, "version");
    s.leader = uint64_field(object, "leader");
    s.db_size = int64_field(object, "dbSize");
    s.raft_index = int64_field(object, "raftIndex");
    return s;
}

ResponseHeader put_response_from_json(std::string_view text) {
    simdjson::dom::parser parser;
    return header_of(object_field(parse_document(parser, text), "header"));
}

std::int64_t delete_response_from_json(std::string_view text) {
    simdjson::dom::parser parser;
    return int64_field(parse_document(parser, text), "deleted");
}

std::string authenticate_response_from_json(std::string_view text) {
    simdjson::dom::parser parser;
    const Value object = parse_document(parser, text);
    const auto token = field(object, "token");
    if (!token || !token->is_string()) bad_shape("no token in the answer to authenticate");
    return string_field(object, "token");
}

std::int64_t WatchResponse::max_mod_revision() const noexcept {
    std::int64_t highest = 0;
    for (const auto &e : events) highest = std::max(highest, e.kv.mod_revision);
    return highest;
}

WatchResponse parse_watch_line(std::string_view line) {
    simdjson::dom::parser parser;
    Value parsed;
    if (parser.parse(line.data(), line.size()).get(parsed) != simdjson::SUCCESS || !parsed.is_object())
        bad_shape("a watch line that is not a JSON object: " + cut(line, 80));
    WatchResponse out;
    if (const auto r = object_field(parsed, "result")) {
        out.header = header_of(object_field(*r, "header"));
        out.watch_id = int64_field(*r, "watch_id");
        simdjson::dom::array events;
        if (const auto value = field(*r, "events"); value && value->get(events) == simdjson::SUCCESS)
            for (const Value e : events) out.events.push_back(event_of(e));
        if (bool_field(*r, "canceled")) {
            out.kind = WatchResponse::Kind::canceled;
            out.compact_revision = int64_field(*r, "compact_revision");
            out.cancel_reason = string_field(*r, "cancel_reason");
        } else if (bool_field(*r, "created")) {
            out.kind = WatchResponse::Kind::created;
        } else if (!out.events.empty()) {
            out.kind = WatchResponse::Kind::events;
        } else {
            out.kind = WatchResponse::Kind::progress;
        }
        return out;
    }
    simdjson::dom::object members = parsed.get_object().value_unsafe();
    Value error;
    if (members.at_key("error").get(error) == simdjson::SUCCESS) {
        out.kind = WatchResponse::Kind::stream_error;
        if (error.is_object()) {
            // 3.4 and 3.5: {"error":{"grpc_code":14,"http_code":503,"message":..,"http_status":..}};
            // 3.6 and later (gateway v2): {"error":{"code":14,"message":..}}, no HTTP code,
            // so "unavailable" stands for the 503 that 3.4 and 3.5 sent with it.
            const char *code = field(error, "grpc_code") ? "grpc_code" : field(error, "code") ? "code" : nullptr;
            out.grpc_code = code ? static_cast<int>(int64_field(error, code)) : grpc::none;
            out.http_status = static_cast<long>(int64_field(error, "http_code"));
            if (out.http_status == 0 && out.grpc_code == grpc::unavailable) out.http_status = 503;
            out.message = string_field(error, "message");
        } else {  // a unary-style body: {"error":"..","message":"..","code":N}
            out.grpc_code = field(parsed, "code") ? static_cast<int>(int64_field(parsed, "code")) : grpc::none;
            out.message = string_field(parsed, "message");
            if (out.message.empty()) out.message = string_field(parsed, "error");
        }
        return out;
    }
    bad_shape("a watch line with neither result nor error: " + cut(line, 80));
}

void LineSplitter::push(std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\r") == std::string::npos) return;
    lines_.push_back(std::move(line));
}

void LineSplitter::feed(std::string_view chunk) {
    while (!chunk.empty()) {
        const auto newline = chunk.find('\n');
        const auto take = newline == std::string_view::npos ? chunk.size() : newline;
        if (partial_.size() + take > max_line_bytes_)
            throw EtcdError(0, grpc::none, "etcd watch: a line longer than " + std::to_string(max_line_bytes_) + " bytes");
        partial_.append(chunk.substr(0, take));
        if (newline == std::string_view::npos) return;
        push(std::move(partial_));
        partial_.clear();
        chunk.remove_prefix(newline + 1);
    }
}

void LineSplitter::finish() {
    if (!partial_.empty()) push(std::move(partial_));
    partial_.clear();
}

std::optional<std::string> LineSplitter::next_line() {
    if (lines_.empty()) return std::nullopt;
    std::string line = std::move(lines_.front());
    lines_.pop_front();
    return line;
}

}  // namespace cptoken::etcd

// SPDX-License-Identifier: Apache-2.0
// Unit tests for lib/cluster/etcd_wire.hpp, the etcd gateway's wire format
// without a network: watch line framing across chunk boundaries, the
// unterminated error object that ends a stream, a 20 MB line, proto3
// defaults, base64, range ends and the error mapping. The JSON lines are the
// shapes etcd 3.4.23 sent in the lab (docs: research/etcd-mirror.md §1.2-1.4).

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cluster/etcd_wire.hpp"

// Last: it brings cmocka, whose fail() macro would clash with std::basic_ios::fail().
#include "support.hpp"

using namespace cptoken::etcd;
using nlohmann::json;

namespace {

std::vector<std::string> drain(LineSplitter &splitter) {
    std::vector<std::string> lines;
    while (auto line = splitter.next_line()) lines.push_back(*line);
    return lines;
}

void expect_etcd_error(void (*call)(), int grpc_code) {
    try {
        call();
    } catch (const EtcdError &e) {
        assert_int_equal(e.grpc_code(), grpc_code);
        return;
    }
    fail_msg("no EtcdError");
}

const char *const created_line =
    R"({"result":{"header":{"cluster_id":"6874972268025113517","member_id":"11589547545632636093","revision":"5","raft_term":"2"},"created":true}})";
const char *const events_line =
    R"({"result":{"header":{"cluster_id":"1","member_id":"2","revision":"1318","raft_term":"2"},"events":[)"
    R"({"kv":{"key":"L2NwdG9rZW4vYQ==","create_revision":"17","mod_revision":"17","version":"1","value":"eA=="}},)"
    R"({"type":"DELETE","kv":{"key":"L2NwdG9rZW4vYg==","mod_revision":"1016"},"prev_kv":{"key":"L2NwdG9rZW4vYg==","value":"eQ=="}}]}})";
const char *const error_line =
    R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}})";

void lines_split_at_every_byte_come_out_whole(void **) {
    const std::string stream = std::string(created_line) + "\n" + events_line + "\r\n\n" + error_line;  // last: no '\n'
    for (std::size_t chunk = 1; chunk <= 7; ++chunk) {
        LineSplitter splitter;
        for (std::size_t at = 0; at < stream.size(); at += chunk) splitter.feed(std::string_view(stream).substr(at, chunk));
        std::vector<std::string> lines = drain(splitter);
        assert_int_equal(lines.size(), 2);  // the error object is not a line until the stream ends
        assert_string_equal(lines[0].c_str(), created_line);
        assert_string_equal(lines[1].c_str(), events_line);  // '\r' dropped, the blank line skipped
        splitter.finish();
        lines = drain(splitter);
        assert_int_equal(lines.size(), 1);
        assert_string_equal(lines[0].c_str(), error_line);
    }
}

void the_unterminated_error_object_is_a_stream_error(void **) {
    LineSplitter splitter;
    splitter.feed(std::string(created_line) + "\n" + error_line);
    assert_int_equal(parse_watch_line(*splitter.next_line()).kind, WatchResponse::Kind::created);
    assert_false(splitter.has_line());
    splitter.finish();
    const WatchResponse r = parse_watch_line(*splitter.next_line());
    assert_int_equal(r.kind, WatchResponse::Kind::stream_error);
    assert_int_equal(r.grpc_code, grpc::unavailable);
    assert_int_equal(r.http_status, 503);
    assert_string_equal(r.message.c_str(), "etcdserver: no leader");
}

void the_error_object_of_etcd_3_6_and_later_is_the_same_stream_error(void **) {
    // 3.6+'s gateway: "code" in place of 3.4's (and 3.5's) grpc_code, and no http_code.
    const WatchResponse r = parse_watch_line(R"({"error":{"code":14,"message":"etcdserver: no leader"}})");
    assert_int_equal(r.kind, WatchResponse::Kind::stream_error);
    assert_int_equal(r.grpc_code, grpc::unavailable);
    assert_int_equal(r.http_status, 503);  // so that the client moves on to another member
    assert_string_equal(r.message.c_str(), "etcdserver: no leader");
    const WatchResponse denied = parse_watch_line(R"({"error":{"code":7,"message":"etcdserver: permission denied"}})");
    assert_int_equal(denied.grpc_code, grpc::permission_denied);
    assert_int_equal(denied.http_status, 0);
}

void a_20_mb_line_comes_out_whole_and_a_bound_holds(void **) {
    // One catch-up answer: 1000 revisions of 20 kB values, fed in curl's 16 kB chunks.
    std::string value(15000, 'v');
    json events = json::array();
    for (int rev = 1; rev <= 1000; ++rev)
        events.push_back({{"kv", {{"key", base64_encode("/cptoken/v1/k" + std::to_string(rev))}, {"mod_revision", std::to_string(rev)},
                                  {"value", base64_encode(value)}}}});
    const std::string line = json{{"result", {{"header", {{"revision", "5000"}}}, {"events", events}}}}.dump();
    assert_true(line.size() > 20'000'000);
    const std::string stream = line + "\n" + created_line + "\n";
    LineSplitter splitter;
    for (std::size_t at = 0; at < stream.size(); at += 16384) splitter.feed(std::string_view(stream).substr(at, 16384));
    const auto big = splitter.next_line();
    assert_true(big.has_value());
    assert_int_equal(big->size(), line.size());
    const WatchResponse r = parse_watch_line(*big);
    assert_int_equal(r.kind, WatchResponse::Kind::events);
    assert_int_equal(r.events.size(), 1000);
    assert_int_equal(r.events.back().kv.value.size(), value.size());
    assert_int_equal(r.max_mod_revision(), 1000);
    assert_int_equal(r.header.revision, 5000);  // the store's revision, not the batch's: never a resume point
    assert_string_equal(splitter.next_line()->c_str(), created_line);

    LineSplitter bounded(1000);
    bounded.feed(std::string(999, 'x') + "\n");  // 999 bytes: fine
    assert_true(bounded.has_line());
    try {
        bounded.feed(std::string(600, 'x'));
        bounded.feed(std::string(600, 'x'));
        fail_msg("a line past the bound was accepted");
    } catch (const EtcdError &) {
    }
}

void proto3_defaults_are_read_as_defaults(void **) {
    // A PUT event has no "type"; a DELETE's kv has no value; absent numbers are 0.
    const WatchResponse r = parse_watch_line(events_line);
    assert_int_equal(r.kind, WatchResponse::Kind::events);
    assert_int_equal(r.events[0].type, WatchEvent::Type::put);
    assert_string_equal(r.events[0].kv.key.c_str(), "/cptoken/a");
    assert_string_equal(r.events[0].kv.value.c_str(), "x");
    assert_int_equal(r.events[0].kv.mod_revision, 17);
    assert_false(r.events[0].prev_kv.has_value());
    assert_int_equal(r.events[1].type, WatchEvent::Type::del);
    assert_int_equal(r.events[1].kv.mod_revision, 1016);
    assert_int_equal(r.events[1].kv.version, 0);
    assert_true(r.events[1].kv.value.empty());
    assert_string_equal(r.events[1].prev_kv->value.c_str(), "y");
    assert_int_equal(r.max_mod_revision(), 1016);
    assert_int_equal(r.watch_id, 0);

    // A failed txn has no "succeeded"; a range without matches has no kvs, more or count.
    const TxnResponse failed = txn_response_from_json(R"({"header":{"revision":"4"},"responses":[{"response_range":{"header":{"revision":"4"},"kvs":[{"key":"YQ==","create_revision":"4","value":"eA=="}],"count":"1"}}]})");
    assert_false(failed.succeeded);
    assert_int_equal(failed.header.revision, 4);
    assert_int_equal(failed.responses[0].kind, RequestOp::Kind::range);
    assert_int_equal(failed.responses[0].range.kvs[0].create_revision, 4);
    const TxnResponse won = txn_response_from_json(R"({"header":{"revision":"5"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"5"}}},{"response_delete_range":{"header":{},"deleted":"2"}}]})");
    assert_true(won.succeeded);
    assert_int_equal(won.responses[1].deleted, 2);
    const RangeResponse empty = range_response_from_json(R"({"header":{"revision":"9"}})");
    assert_true(empty.kvs.empty());
    assert_false(empty.more);
    assert_int_equal(empty.count, 0);

    // Progress: neither created nor events. Compaction: canceled, with no header revision.
    const WatchResponse progress = parse_watch_line(R"({"result":{"header":{"revision":"7"}}})");
    assert_int_equal(progress.kind, WatchResponse::Kind::progress);
    assert_int_equal(progress.header.revision, 7);
    const WatchResponse compacted =
        parse_watch_line(R"({"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"canceled":true,"compact_revision":"6"}})");
    assert_int_equal(compacted.kind, WatchResponse::Kind::canceled);
    assert_int_equal(compacted.compact_revision, 6);
    assert_int_equal(compacted.header.revision, 0);
    // Refused: created and canceled both true; canceled wins.
    const WatchResponse refused = parse_watch_line(
        R"({"result":{"header":{},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied"}})");
    assert_int_equal(refused.kind, WatchResponse::Kind::canceled);
    assert_int_equal(refused.watch_id, -1);
    assert_true(refused.cancel_reason.find("permission denied") != std::string::npos);

    // Numbers as strings or as JSON numbers (etcd takes both); the large ids as uint64.
    const ResponseHeader h = header_from_json(R"({"cluster_id":"18446744073709551615","revision":12})");
    assert_true(h.cluster_id == 18446744073709551615u);
    assert_int_equal(h.revision, 12);
    const Status s = status_from_json(R"({"header":{"revision":"3"},"version":"3.4.23","dbSize":"20480","leader":"11589547545632636093","raftIndex":"9"})");
    assert_string_equal(s.version.c_str(), "3.4.23");
    assert_true(s.leader == 11589547545632636093u);
    assert_int_equal(s.db_size, 20480);

    // The small answers: put's header, deleterange's count, authenticate's token.
    assert_int_equal(put_response_from_json(R"({"header":{"revision":"8","raft_term":"2"}})").revision, 8);
    assert_int_equal(delete_response_from_json(R"({"header":{"revision":"9"},"deleted":"3"})"), 3);
    assert_int_equal(delete_response_from_json(R"({"header":{"revision":"9"}})"), 0);
    assert_string_equal(authenticate_response_from_json(R"({"header":{},"token":"abc.42"})").c_str(), "abc.42");
}

void malformed_answers_throw(void **) {
    expect_etcd_error([] { parse_watch_line(R"({"result":{"events":[{"kv":{"key":"not base64!"}}]}})"); }, grpc::none);
    expect_etcd_error([] { parse_watch_line(R"({"result":{"header":{"revision":"12x"}}})"); }, grpc::none);
    expect_etcd_error([] { parse_watch_line(R"({"result":{"events":[{"type":"EXPIRE","kv":{}}]}})"); }, grpc::none);
    expect_etcd_error([] { parse_watch_line("not json"); }, grpc::none);
    expect_etcd_error([] { parse_watch_line(R"({"neither":1})"); }, grpc::none);
    expect_etcd_error([] { header_from_json(R"({"cluster_id":-1})"); }, grpc::none);
    expect_etcd_error([] { parse_watch_line(R"({"result":{"events":[5]}})"); }, grpc::none);
    // Found by fuzz_etcd: an answer of the wrong type where an object belongs is read
    // as an absent one, never as nlohmann's own exception escaping to the caller.
    const TxnResponse odd = txn_response_from_json(R"({"header":7,"responses":[{"response_delete_range":5},{"response_put":"x"}]})");
    assert_int_equal(odd.responses.size(), 2);
    assert_int_equal(odd.responses[0].deleted, 0);
    assert_int_equal(odd.header.revision, 0);
    expect_etcd_error([] { txn_response_from_json(R"({"responses":[{"response_range":[]}]})"); }, grpc::none);
    // An answer cut short (a transfer that broke off) or not JSON at all is refused, not read as empty.
    expect_etcd_error([] { range_response_from_json(R"({"header":{"revision":"9"},"kvs":[{"key":"YQ==")"); }, grpc::none);
    expect_etcd_error([] { status_from_json("<html>bad gateway</html>"); }, grpc::none);
    expect_etcd_error([] { authenticate_response_from_json(R"({"header":{}})"); }, grpc::none);
    expect_etcd_error([] { authenticate_response_from_json(R"({"token":7})"); }, grpc::none);
}

void base64_round_trips_and_matches_etcd(void **) {
    assert_string_equal(base64_encode("/cptoken/").c_str(), "L2NwdG9rZW4v");
    assert_string_equal(base64_encode("/cptoken0").c_str(), "L2NwdG9rZW4w");
    assert_string_equal(base64_encode("x").c_str(), "eA==");
    assert_string_equal(base64_encode("").c_str(), "");
    std::string all;
    for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
    for (std::size_t n = 0; n <= all.size(); n += 37) assert_true(base64_decode(base64_encode(all.substr(0, n))) == all.substr(0, n));
    expect_etcd_error([] { base64_decode("eA="); }, grpc::none);
}

void range_end_is_the_prefix_plus_one(void **) {
    assert_string_equal(prefix_range_end("/cptoken/").c_str(), "/cptoken0");
    assert_string_equal(prefix_range_end("/cptoken/v1/").c_str(), "/cptoken/v10");
    assert_string_equal(prefix_range_end("a").c_str(), "b");
    assert_true(prefix_range_end(std::string("a\xff\xff", 3)) == "b");   // trailing 0xff bytes go
    assert_true(prefix_range_end(std::string("\xff\xff", 2)) == std::string(1, '\0'));  // to the end of the keyspace
    try {
        prefix_range_end("");
        fail_msg("an empty prefix was accepted");
    } catch (const std::invalid_argument &) {
    }
}

void requests_carry_proto_names_and_base64(void **) {
    const json range = to_json(RangeRequest{"/cptoken/", prefix_range_end("/cptoken/"), 1000, 42, true, true, false});
    assert_string_equal(range["key"].get<std::string>().c_str(), "L2NwdG9rZW4v");
    assert_string_equal(range["range_end"].get<std::string>().c_str(), "L2NwdG9rZW4w");
    assert_string_equal(range["limit"].get<std::string>().c_str(), "1000");
    assert_string_equal(range["revision"].get<std::string>().c_str(), "42");
    assert_true(range["serializable"].get<bool>() && range["keys_only"].get<bool>());
    assert_false(range.contains("count_only"));

    TxnRequest txn;
    txn.compare.push_back(Compare::absent("names/alice/t3"));
    txn.compare.push_back(Compare::modified_at("tokens/d", 17));
    txn.success.push_back(RequestOp::put("names/alice/t3", "x"));
    txn.success.push_back(RequestOp::delete_range("old/", "old0"));
    txn.failure.push_back(RequestOp::get(RangeRequest{"names/alice/t3", {}, 0, 0, false, false, false}));
    const json t = to_json(txn);
    assert_true(t["compare"][0] == json::parse(R"({"key":"bmFtZXMvYWxpY2UvdDM=","target":"CREATE","result":"EQUAL","create_revision":"0"})"));
    assert_true(t["compare"][1]["mod_revision"] == "17" && t["compare"][1]["target"] == "MOD");
    assert_true(t["success"][0]["request_put"]["value"] == "eA==");
    assert_true(t["success"][1]["request_delete_range"]["range_end"] == base64_encode("old0"));
    assert_true(t["failure"][0]["request_range"]["key"] == "bmFtZXMvYWxpY2UvdDM=");

    const json w = to_json(WatchRequest{"/cptoken/", "/cptoken0", 1017, true, true});
    assert_true(w == json::parse(R"({"create_request":{"key":"L2NwdG9rZW4v","range_end":"L2NwdG9rZW4w","start_revision":"1017","progress_notify":true,"prev_kv":true}})"));
}

void errors_map_to_status_and_code(void **) {
    struct Case {
        long status;
        const char *body;
        int code;
        bool unauthenticated, compacted, elsewhere;
    };
    const Case cases[] = {
        {401, R"({"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16})", 16, true, false, false},
        {403, R"({"error":"etcdserver: permission denied","message":"etcdserver: permission denied","code":7})", 7, false, false, false},
        {400, R"({"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11})", 11, false, true, false},
        {503, R"({"error":"etcdserver: request timed out","message":"etcdserver: request timed out","code":14})", 14, false, false, true},
        {404, "404 page not found\n", grpc::none, false, false, false},
    };
    for (const auto &c : cases) {
        const EtcdError e = error_from_response(c.status, c.body);
        assert_int_equal(e.http_status(), c.status);
        assert_int_equal(e.grpc_code(), c.code);
        assert_int_equal(e.unauthenticated(), c.unauthenticated);
        assert_int_equal(e.compacted(), c.compacted);
        assert_int_equal(e.try_elsewhere(), c.elsewhere);
        assert_true(e.reached_server());
    }
    assert_true(std::string(error_from_response(404, "404 page not found\n").what()).find("404 page not found") != std::string::npos);
    assert_true(std::string(error_from_response(500, std::string(5000, 'z')).what()).size() < 400);  // cut
    const EtcdError refused(0, grpc::none, "connect", false);
    assert_true(refused.try_elsewhere());
    assert_false(refused.reached_server());
    // A non-200 answer to a watch is one body, read as a stream error too.
    const WatchResponse r = parse_watch_line(cases[0].body);
    assert_int_equal(r.kind, WatchResponse::Kind::stream_error);
    assert_int_equal(r.grpc_code, grpc::unauthenticated);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lines_split_at_every_byte_come_out_whole),
        cmocka_unit_test(the_unterminated_error_object_is_a_stream_error),
        cmocka_unit_test(the_error_object_of_etcd_3_6_and_later_is_the_same_stream_error),
        cmocka_unit_test(a_20_mb_line_comes_out_whole_and_a_bound_holds),
        cmocka_unit_test(proto3_defaults_are_read_as_defaults),
        cmocka_unit_test(malformed_answers_throw),
        cmocka_unit_test(base64_round_trips_and_matches_etcd),
        cmocka_unit_test(range_end_is_the_prefix_plus_one),
        cmocka_unit_test(requests_carry_proto_names_and_base64),
        cmocka_unit_test(errors_map_to_status_and_code),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

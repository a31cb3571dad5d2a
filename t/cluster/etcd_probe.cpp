// SPDX-License-Identifier: Apache-2.0
// etcd_probe: lib/cluster's etcd client as a small command-line program, so
// that t/cluster/test_etcd_client.py can drive it against a real cluster and
// check what a user of the client sees. One JSON object per output line.
//
//   etcd_probe --endpoints URL[,URL..] [--user U --password-file F] [--cacert F --cert F --key F]
//              [--in-order] COMMAND ...
//     put KEY VALUE | status | compact REV | del KEY [--prefix] | cas KEY MOD VALUE
//     get KEY [--prefix] [--rev N] [--limit N] [--count-only] [--keys-only] [--serializable]
//     race PREFIX ROUNDS            two clients on two members race create-if-absent per round
//     read PREFIX PAGE [--pause] [--quiet]  paginated read at one revision (--pause: wait for a stdin
//                                   line after page 1; --quiet: only the summary, for timing)
//     watch PREFIX START WATCHDOG_MS [--follow] [--until N]
//     reauth KEY SLEEP_S [--watch] [--after-line]
//                                   read, sleep (and wait for a line on stdin), read again or watch
//                                   (the token expires or is lost meanwhile)
//     latency PREFIX N              put N keys, time until the watch delivers each
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.hpp"

using namespace cptoken::etcd;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::mutex out_mutex;

void emit(const json &line) {
    std::lock_guard lock(out_mutex);
    std::cout << line.dump() << '\n' << std::flush;
}

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

json error_json(const EtcdError &e) {
    return {{"kind", "error"}, {"http", e.http_status()}, {"grpc", e.grpc_code()}, {"message", e.what()}};
}

const char *kind_name(WatchResponse::Kind kind) {
    switch (kind) {
    case WatchResponse::Kind::created: return "created";
    case WatchResponse::Kind::canceled: return "canceled";
    case WatchResponse::Kind::events: return "events";
    case WatchResponse::Kind::progress: return "progress";
    case WatchResponse::Kind::stream_error: return "stream_error";
    case WatchResponse::Kind::disconnected: return "disconnected";
    case WatchResponse::Kind::timeout: return "timeout";
    }
    return "?";
}

struct Args {
    ClientOptions options;
    std::vector<std::string> rest;
};

Args parse_args(int argc, char **argv) {
    Args args;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--endpoints" && i + 1 < argc) {
            std::string list = argv[++i];
            for (std::size_t start = 0; start <= list.size();) {
                const auto comma = list.find(',', start);
                args.options.endpoints.push_back(list.substr(start, comma - start));
                if (comma == std::string::npos) break;
                start = comma + 1;
            }
        } else if (a == "--user" && i + 1 < argc) {
            args.options.user = argv[++i];
        } else if (a == "--password-file" && i + 1 < argc) {
            std::ifstream in(argv[++i]);
            std::getline(in, args.options.password);
        } else if (a == "--cacert" && i + 1 < argc) {
            args.options.cacert = argv[++i];
        } else if (a == "--cert" && i + 1 < argc) {
            args.options.cert = argv[++i];
        } else if (a == "--key" && i + 1 < argc) {
            args.options.key = argv[++i];
        } else if (a == "--in-order") {
            args.options.shuffle = false;
        } else {
            args.rest.push_back(a);
        }
    }
    return args;
}

bool has_flag(const std::vector<std::string> &rest, const std::string &flag) {
    return std::find(rest.begin(), rest.end(), flag) != rest.end();
}

std::string flag_value(const std::vector<std::string> &rest, const std::string &flag, const std::string &fallback) {
    const auto it = std::find(rest.begin(), rest.end(), flag);
    return it != rest.end() && it + 1 != rest.end() ? *(it + 1) : fallback;
}

int race(const ClientOptions &options, const std::string &prefix, int rounds) {
    // Each racer starts on its own member, as two front-ends would.
    std::vector<ClientOptions> racer_options(2, options);
    for (auto &o : racer_options) o.shuffle = false;
    std::rotate(racer_options[1].endpoints.begin(), racer_options[1].endpoints.begin() + 1, racer_options[1].endpoints.end());
    std::barrier start_line(2);
    auto racer = [&](const char *name, const ClientOptions &o) {
        Client client(o);
        for (int round = 0; round < rounds; ++round) {
            const std::string key = prefix + "race/" + std::to_string(round);
            TxnRequest txn;
            txn.compare.push_back(Compare::absent(key));
            txn.success.push_back(RequestOp::put(key, name));
            txn.failure.push_back(RequestOp::get(RangeRequest{key, {}, 0, 0, false, false, false}));
            start_line.arrive_and_wait();
            const TxnResponse answer = client.txn(txn);
            json line = {{"round", round}, {"racer", name}, {"won", answer.succeeded}, {"endpoint", client.current_endpoint()},
                         {"revision", answer.header.revision}};
            if (!answer.succeeded && !answer.responses.empty() && !answer.responses[0].range.kvs.empty())
                line["seen"] = answer.responses[0].range.kvs[0].value;
            emit(line);
        }
    };
    std::thread a(racer, "A", std::cref(racer_options[0]));
    std::thread b(racer, "B", std::cref(racer_options[1]));
    a.join();
    b.join();
    return 0;
}

int read(Client &client, const std::string &prefix, std::int64_t page, bool pause, bool quiet) {
    const auto start = Clock::now();
    std::size_t pages = 0, count = 0;
    const std::int64_t revision = client.read_prefix(prefix, page, [&](std::vector<KeyValue> &&kvs) {
        ++pages;
        if (!quiet)
            for (const auto &kv : kvs) emit({{"k", kv.key}, {"v", kv.value}, {"mod", kv.mod_revision}});
        count += kvs.size();
        if (pause && pages == 1) {
            emit({{"kind", "first-page"}});
            std::string go;
            std::getline(std::cin, go);
        }
    });
    emit({{"kind", "done"}, {"revision", revision}, {"count", count}, {"pages", pages}, {"ms", ms_since(start)}});
    return 0;
}

int watch(Client &client, const std::string &prefix, std::int64_t start, int watchdog_ms, bool follow, long until) {
    WatchRequest request{prefix, prefix_range_end(prefix), start, true, false};
    Watch stream = client.watch(request, std::chrono::milliseconds(watchdog_ms));
    std::int64_t applied = start - 1;  // the highest kv.mod_revision seen: the resume point
    long events = 0;
    for (;;) {
        const WatchResponse r = stream.next();
        json line = {{"kind", kind_name(r.kind)}, {"header_rev", r.header.revision}, {"endpoint", stream.endpoint()}};
        if (r.kind == WatchResponse::Kind::events) {
            line["count"] = r.events.size();
            line["max_mod"] = r.max_mod_revision();
            emit(line);
            for (const auto &e : r.events) {
                emit({{"kind", "event"}, {"type", e.type == WatchEvent::Type::put ? "PUT" : "DELETE"}, {"k", e.kv.key},
                      {"v", e.kv.value}, {"mod", e.kv.mod_revision}});
                applied = std::max(applied, e.kv.mod_revision);
            }
            events += static_cast<long>(r.events.size());
            if (until && events >= until) return 0;
            continue;
        }
        if (r.kind == WatchResponse::Kind::canceled) {
            line["compact_revision"] = r.compact_revision;
            line["reason"] = r.cancel_reason;
        }
        if (!r.message.empty()) line["message"] = r.message;
        if (r.kind == WatchResponse::Kind::stream_error) line["grpc"] = r.grpc_code, line["http"] = r.http_status;
        emit(line);
        if (r.kind == WatchResponse::Kind::canceled) return 0;
        if (stream.done()) {
            if (!follow) return 0;
            request.start_revision = applied + 1;
            const auto t0 = Clock::now();
            // As the agent will: when no member takes the watch (an election), back off and try again.
            for (int attempt = 1;; ++attempt) {
                try {
                    stream = client.watch(request, std::chrono::milliseconds(watchdog_ms));
                    break;
                } catch (const EtcdError &e) {
                    if (attempt == 50) throw;
                    emit({{"kind", "reopen-failed"}, {"message", e.what()}});
                    std::this_thread::sleep_for(std::chrono::milliseconds(200));
                }
            }
            emit({{"kind", "reopened"}, {"endpoint", stream.endpoint()}, {"from", request.start_revision}, {"ms", ms_since(t0)}});
        }
    }
}

int latency(const ClientOptions &options, Client &writer, const std::string &prefix, int n) {
    Client watcher(options);
    const std::int64_t from = writer.status().header.revision + 1;
    Watch stream = watcher.watch(WatchRequest{prefix, prefix_range_end(prefix), from, false, false}, std::chrono::seconds(5));
    if (stream.next().kind != WatchResponse::Kind::created) return 2;
    std::vector<double> put_ms, seen_ms;
    for (int i = 0; i < n; ++i) {
        const std::string key = prefix + "lat/" + std::to_string(i);
        const auto t0 = Clock::now();
        writer.put(key, "x");
        put_ms.push_back(ms_since(t0));
        for (bool seen = false; !seen;) {
            const WatchResponse r = stream.next();
            if (r.kind != WatchResponse::Kind::events && r.kind != WatchResponse::Kind::progress) return 3;
            for (const auto &e : r.events) seen = seen || e.kv.key == key;
        }
        seen_ms.push_back(ms_since(t0));
    }
    auto pct = [](std::vector<double> v, double p) {
        std::sort(v.begin(), v.end());
        return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
    };
    emit({{"kind", "latency"}, {"n", n}, {"put_p50_ms", pct(put_ms, 0.5)}, {"put_p99_ms", pct(put_ms, 0.99)},
          {"seen_p50_ms", pct(seen_ms, 0.5)}, {"seen_p99_ms", pct(seen_ms, 0.99)}});
    return 0;
}

int run(const Args &args) {
    const auto &rest = args.rest;
    if (rest.empty()) return 64;
    const std::string &command = rest[0];
    Client client(args.options);
    if (command == "put" && rest.size() >= 3) {
        const ResponseHeader h = client.put(rest[1], rest[2]);
        emit({{"kind", "put"}, {"revision", h.revision}});
        return 0;
    }
    if (command == "get" && rest.size() >= 2) {
        RangeRequest request{rest[1], {}, std::stoll(flag_value(rest, "--limit", "0")), std::stoll(flag_value(rest, "--rev", "0")),
                             has_flag(rest, "--serializable"), has_flag(rest, "--keys-only"), has_flag(rest, "--count-only")};
        if (has_flag(rest, "--prefix")) request.range_end = prefix_range_end(rest[1]);
        const RangeResponse r = client.range(request);
        json line = {{"kind", "get"}, {"revision", r.header.revision}, {"count", r.count}, {"more", r.more}, {"kvs", json::array()}};
        for (const auto &kv : r.kvs) line["kvs"].push_back({{"k", kv.key}, {"v", kv.value}, {"mod", kv.mod_revision}, {"version", kv.version}});
        if (!r.kvs.empty()) line["v"] = r.kvs[0].value;
        emit(line);
        return 0;
    }
    if (command == "del" && rest.size() >= 2) {
        const std::int64_t deleted = client.delete_range(rest[1], has_flag(rest, "--prefix") ? prefix_range_end(rest[1]) : "");
        emit({{"kind", "del"}, {"deleted", deleted}});
        return 0;
    }
    if (command == "compact" && rest.size() >= 2) {
        client.compact(std::stoll(rest[1]));
        emit({{"kind", "compact"}});
        return 0;
    }
    if (command == "cas" && rest.size() >= 4) {  // KEY MOD VALUE: put VALUE if KEY was last written at MOD
        TxnRequest txn;
        txn.compare.push_back(Compare::modified_at(rest[1], std::stoll(rest[2])));
        txn.success.push_back(RequestOp::put(rest[1], rest[3]));
        txn.failure.push_back(RequestOp::get(RangeRequest{rest[1], {}, 0, 0, false, false, false}));
        const TxnResponse r = client.txn(txn);
        json line = {{"kind", "cas"}, {"succeeded", r.succeeded}, {"revision", r.header.revision}};
        if (!r.succeeded && !r.responses.empty() && !r.responses[0].range.kvs.empty())
            line["current_mod"] = r.responses[0].range.kvs[0].mod_revision;
        emit(line);
        return 0;
    }
    if (command == "status") {
        const Status s = client.status();
        emit({{"kind", "status"}, {"cluster_id", std::to_string(s.header.cluster_id)}, {"revision", s.header.revision},
              {"leader", std::to_string(s.leader)}, {"member", std::to_string(s.header.member_id)}, {"version", s.version}});
        return 0;
    }
    if (command == "race" && rest.size() >= 3) return race(args.options, rest[1], std::stoi(rest[2]));
    if (command == "read" && rest.size() >= 3) return read(client, rest[1], std::stoll(rest[2]), has_flag(rest, "--pause"), has_flag(rest, "--quiet"));
    if (command == "watch" && rest.size() >= 4)
        return watch(client, rest[1], std::stoll(rest[2]), std::stoi(rest[3]), has_flag(rest, "--follow"),
                     std::stol(flag_value(rest, "--until", "0")));
    if (command == "reauth" && rest.size() >= 3) {
        const RangeRequest get{rest[1], {}, 0, 0, false, false, false};
        client.range(get);
        std::this_thread::sleep_for(std::chrono::seconds(std::stoi(rest[2])));
        if (has_flag(rest, "--after-line")) {  // the test says when: after it restarted a member
            emit({{"kind", "waiting"}});
            std::string line;
            std::getline(std::cin, line);
        }
        if (has_flag(rest, "--watch")) {  // the first call after the sleep opens a watch instead
            Watch stream = client.watch(WatchRequest{rest[1], {}, 1, false, false}, std::chrono::seconds(5));
            const WatchResponse first = stream.next();
            const WatchResponse second = stream.next();
            emit({{"kind", "reauth"}, {"first", kind_name(first.kind)}, {"second", kind_name(second.kind)},
                  {"count", second.events.size()}, {"reason", first.cancel_reason}, {"authentications", client.authentications()}});
            return 0;
        }
        const RangeResponse r = client.range(get);
        emit({{"kind", "reauth"}, {"count", r.count}, {"authentications", client.authentications()}});
        return 0;
    }
    if (command == "latency" && rest.size() >= 3) return latency(args.options, client, rest[1], std::stoi(rest[2]));
    return 64;
}

}  // namespace

int main(int argc, char **argv) {
    const Args args = parse_args(argc, argv);
    try {
        const int rc = run(args);
        if (rc == 64) std::cerr << "usage: see the top of t/cluster/etcd_probe.cpp\n";
        return rc;
    } catch (const EtcdError &e) {
        emit(error_json(e));
        return 3;
    } catch (const std::exception &e) {
        emit({{"kind", "error"}, {"message", e.what()}});
        return 4;
    }
}

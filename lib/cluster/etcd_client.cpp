// SPDX-License-Identifier: Apache-2.0
#include "cluster/etcd_client.hpp"

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <utility>

namespace cptoken::etcd {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw EtcdError(0, grpc::none, "etcd: libcurl failed to start");
    });
}

/// Connection-level failures where the request was never sent: safe to send
/// anywhere else, even a write.
bool never_sent(CURLcode code) {
    return code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY ||
           code == CURLE_SSL_CONNECT_ERROR || code == CURLE_UNSUPPORTED_PROTOCOL || code == CURLE_URL_MALFORMAT;
}

EtcdError transport_error(const std::string &endpoint, CURLcode code, const char *detail) {
    std::string message = "etcd " + endpoint + ": " + curl_easy_strerror(code);
    if (detail && *detail) message += std::string(" (") + detail + ")";
    return EtcdError(0, grpc::none, message, !never_sent(code));
}

struct HeaderList {
    curl_slist *list = nullptr;
    HeaderList() = default;
    HeaderList(const HeaderList &) = delete;
    HeaderList &operator=(const HeaderList &) = delete;
    ~HeaderList() { curl_slist_free_all(list); }
    void add(const std::string &line) {
        curl_slist *grown = curl_slist_append(list, line.c_str());
        if (!grown) throw std::bad_alloc();
        list = grown;
    }
};

void set_transport_options(CURL *easy, const ClientOptions &options) {
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    // The gateway speaks HTTP/1.1; over TLS, ALPN would otherwise offer h2, which etcd's port takes for gRPC.
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!options.cacert.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, options.cacert.c_str());
    if (!options.cert.empty()) curl_easy_setopt(easy, CURLOPT_SSLCERT, options.cert.c_str());
    if (!options.key.empty()) curl_easy_setopt(easy, CURLOPT_SSLKEY, options.key.c_str());
}

/// The common request headers; the auth token, when there is one, as etcd
/// 3.4 wants it: raw, without "Bearer".
void add_request_headers(HeaderList &headers, const std::string &token) {
    headers.add("Content-Type: application/json");
    headers.add("Expect:");  // no 100-continue round trip for large bodies
    if (!token.empty()) headers.add("Authorization: " + token);
}

size_t append_to_string(char *data, size_t size, size_t count, void *out) {
    static_cast<std::string *>(out)->append(data, size * count);
    return size * count;
}

}  // namespace

struct Client::State {
    ClientOptions options;
    std::vector<std::string> endpoints;
    std::size_t current = 0;
    std::string token;  // the auth token; never logged
    unsigned authentications = 0;
    CURL *easy = nullptr;
    // The last answer's body, kept with its capacity: a full read's pages are
    // megabytes each, and a string grown anew for every one cost the agent
    // reallocations and page faults. Valid until the next post().
    std::string answer;
    RangeReader range_reader;

    ~State() {
        if (easy) curl_easy_cleanup(easy);
    }

    const std::string &endpoint() const { return endpoints[current]; }
    /// Moves on from `failed` to the next member, unless someone already did.
    void avoid(std::size_t failed) {
        if (current == failed) current = (current + 1) % endpoints.size();
    }

    /// One POST of `body` to `path` on the current member: the HTTP status,
    /// with the body in `answer`, or EtcdError (http_status 0) when no HTTP
    /// answer came.
    long post(const std::string &path, const std::string &body, bool with_token) {
        if (!easy && !(easy = curl_easy_init())) throw EtcdError(0, grpc::none, "etcd: curl_easy_init failed", false);
        curl_easy_reset(easy);  // keeps the connection cache
        set_transport_options(easy, options);
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(options.request_timeout.count()));
        const std::string url = endpoint() + path;
        curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
        HeaderList headers;
        add_request_headers(headers, with_token ? token : std::string());
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.list);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
        answer.clear();
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, append_to_string);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, &answer);
        char detail[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, detail);
        const CURLcode rc = curl_easy_perform(easy);
        curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
        if (rc != CURLE_OK) throw transport_error(endpoint(), rc, detail);
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        return status;
    }

    /// POST with failover. `idempotent`: a read, sent to the next member on
    /// any error that another member may not have (no answer, 503). Else a
    /// write, sent elsewhere only when it never left. A 401 / gRPC 16 logs in
    /// again and retries once. The body of a 200, valid until the next call.
    const std::string &call(const std::string &path, const json &request, bool idempotent) {
        const std::string body = request.dump();
        std::optional<EtcdError> last;
        bool logged_in_again = false;
        for (std::size_t tried = 0; tried < endpoints.size();) {
            // Logging in tries every member itself: its failure is final here.
            if (!options.user.empty() && token.empty()) authenticate();
            const std::size_t member = current;
            try {
                const long status = post(path, body, true);
                if (status == 200) return answer;
                EtcdError error = error_from_response(status, answer);
                if (error.unauthenticated() && !options.user.empty() && !logged_in_again) {
                    logged_in_again = true;
                    token.clear();
                    continue;
                }
                throw error;
            } catch (const EtcdError &error) {
                const bool elsewhere = idempotent ? error.try_elsewhere() : !error.reached_server();
                if (!elsewhere) throw;
                last = error;
                avoid(member);
                ++tried;
            }
        }
        throw EtcdError(last->http_status(), last->grpc_code(),
                        "etcd: no member answered " + path + "; last: " + last->what(), last->reached_server());
    }

    void authenticate() {
        const json request = {{"name", options.user}, {"password", options.password}};
        const std::string body = request.dump();
        std::optional<EtcdError> last;
        for (std::size_t tried = 0; tried < endpoints.size(); ++tried) {
            const std::size_t member = current;
            try {
                const long status = post("/v3/auth/authenticate", body, false);
                if (status != 200) throw error_from_response(status, answer);
                try {
                    token = authenticate_response_from_json(answer);
                } catch (const EtcdError &garbled) {  // an answer, not a member to avoid: never tried elsewhere
                    throw EtcdError(status, grpc::none, "etcd " + endpoint() + ": " + garbled.what());
                }
                ++authentications;
                return;
            } catch (const EtcdError &error) {
                if (!error.try_elsewhere()) throw;
                last = error;
                avoid(member);
            }
        }
        throw EtcdError(last->http_status(), last->grpc_code(), std::string("etcd: no member answered authenticate; last: ") + last->what());
    }
};

Client::Client(ClientOptions options) : state_(std::make_shared<State>()) {
    if (options.endpoints.empty()) throw std::invalid_argument("etcd: no endpoint");
    global_init();
    state_->endpoints = options.endpoints;
    for (auto &e : state_->endpoints)
        while (!e.empty() && e.back() == '/') e.pop_back();
    if (options.shuffle) {
        std::random_device seed;
        std::shuffle(state_->endpoints.begin(), state_->endpoints.end(), std::mt19937(seed()));
    }
    state_->options = std::move(options);
}

Client::~Client() = default;

const std::string &Client::current_endpoint() const { return state_->endpoint(); }
unsigned Client::authentications() const noexcept { return state_->authentications; }
void Client::move_on() noexcept { state_->avoid(state_->current); }
void Client::authenticate() { state_->authenticate(); }

RangeResponse Client::range(const RangeRequest &request) {
    return state_->range_reader.read(state_->call("/v3/kv/range", to_json(request), true));
}

namespace {

// The smallest key greater than every key that starts with `stem`; empty if
// there is none (stem all 0xff).
std::string after_every_key_starting_with(std::string stem) {
    while (!stem.empty() && static_cast<unsigned char>(stem.back()) == 0xff) stem.pop_back();
    if (!stem.empty()) stem.back() = static_cast<char>(static_cast<unsigned char>(stem.back()) + 1);
    return stem;
}

// How many characters past the part that `last` shares with a piece's end
// the rest of a big piece is cut at: pieces of 1/16 (hex) to 1/36 of what
// is left, per character.
constexpr std::size_t cut_depth = 4;

}  // namespace

// Pages through [request.key, request.range_end) at request.revision. A
// page's cost in etcd grows with the keys after it in its range (3.4 walks
// them all; later releases still count them: etcd-io/etcd#11057), so paging
// through a big range would cost the square of its size. When more than 4
// pages are left after a page, the rest is cut into pieces at the keys after
// every key that starts with the first few characters of the page's last
// key past the range's end's, and each piece is read the same way: the
// same keys, in order.
void Client::read_range_pieces(RangeRequest request, const std::function<void(std::vector<KeyValue> &&)> &on_page,
                               RangeResponse page) {
    for (;;) {
        const bool more = page.more && !page.kvs.empty();
        const std::string last = page.kvs.empty() ? std::string() : page.kvs.back().key;
        const std::int64_t left = page.count - static_cast<std::int64_t>(page.kvs.size());
        on_page(std::move(page.kvs));
        if (!more) return;
        const std::string next = last + '\0';  // the smallest key after the last one
        if (left > 4 * request.limit) {
            const std::string &end = request.range_end;
            std::size_t shared = 0;
            while (shared < last.size() && shared < end.size() && last[shared] == end[shared]) ++shared;
            std::vector<std::string> cuts;  // increasing: longer stems end sooner
            for (std::size_t length = std::min(last.size(), shared + cut_depth); length > shared; --length) {
                std::string cut = after_every_key_starting_with(last.substr(0, length));
                if (cut > next && cut < end && (cuts.empty() || cut > cuts.back())) cuts.push_back(std::move(cut));
            }
            if (!cuts.empty()) {
                std::string start = next;
                cuts.push_back(end);
                for (const std::string &cut : cuts) {
                    RangeRequest piece = request;
                    piece.key = start;
                    piece.range_end = cut;
                    read_range_pieces(piece, on_page, range(piece));
                    start = cut;
                }
                return;
            }
        }
        request.key = next;
        page = range(request);
    }
}

std::int64_t Client::read_prefix(const std::string &prefix, std::int64_t page_size,
                                 const std::function<void(std::vector<KeyValue> &&)> &on_page,
                                 ResponseHeader *first_header) {
    if (page_size <= 0) throw std::invalid_argument("etcd: read_prefix needs a page size");
    RangeRequest request;
    request.key = prefix;
    request.range_end = prefix_range_end(prefix);
    request.limit = page_size;
    RangeResponse page = range(request);  // linearizable, at the latest revision: it fixes R
    const std::int64_t revision = page.header.revision;
    if (first_header) *first_header = page.header;
    request.revision = revision;
    read_range_pieces(request, on_page, std::move(page));
    return revision;
}

Client::Snapshot Client::read_prefix(const std::string &prefix, std::int64_t page_size) {
    Snapshot snapshot;
    snapshot.revision = read_prefix(prefix, page_size, [&](std::vector<KeyValue> &&kvs) {
        std::move(kvs.begin(), kvs.end(), std::back_inserter(snapshot.kvs));
    });
    return snapshot;
}

TxnResponse Client::txn(const TxnRequest &request) {
    return txn_response_from_json(state_->call("/v3/kv/txn", to_json(request), false));
}

ResponseHeader Client::put(const std::string &key, const std::string &value) {
    const json request = {{"key", base64_encode(key)}, {"value", base64_encode(value)}};
    return put_response_from_json(state_->call("/v3/kv/put", request, false));
}

std::int64_t Client::delete_range(const std::string &key, const std::string &range_end) {
    json request = {{"key", base64_encode(key)}};
    if (!range_end.empty()) request["range_end"] = base64_encode(range_end);
    return delete_response_from_json(state_->call("/v3/kv/deleterange", request, false));
}

void Client::compact(std::int64_t revision, bool physical) {
    json request = {{"revision", std::to_string(revision)}};
    if (physical) request["physical"] = true;
    state_->call("/v3/kv/compaction", request, false);
}

Status Client::status() { return status_from_json(state_->call("/v3/maintenance/status", json::object(), true)); }

// ---------------------------------------------------------------------------
// Watch: one curl easy handle in its own multi handle, so that next() can wait
// for a line with a deadline (the watchdog) instead of blocking in curl.

struct Watch::Stream {
    std::shared_ptr<Client::State> client;
    std::size_t member = 0;
    std::string endpoint;
    std::chrono::milliseconds watchdog{0};
    CURLM *multi = nullptr;
    CURL *easy = nullptr;
    HeaderList headers;
    std::string body;
    LineSplitter splitter;
    std::string error_body;  // the body of a non-200 answer, bounded
    std::optional<EtcdError> callback_error;  // thrown in the write callback, rethrown by next()
    bool transfer_done = false;
    CURLcode result = CURLE_OK;
    char detail[CURL_ERROR_SIZE] = "";
    std::optional<WatchResponse> pending;  // the first answer, read by Client::watch()
    std::optional<WatchResponse> last;     // set once the stream is over
    std::optional<Clock::time_point> silent_until;  // the watchdog's deadline, from the last answer on

    ~Stream() { close(); }

    void close() {
        if (multi && easy) curl_multi_remove_handle(multi, easy);
        if (easy) curl_easy_cleanup(easy);
        if (multi) curl_multi_cleanup(multi);
        easy = nullptr;
        multi = nullptr;
    }

    long http_status() const {
        long status = 0;
        if (easy) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        return status;
    }

    static size_t on_data(char *data, size_t size, size_t count, void *self_ptr) {
        auto *self = static_cast<Stream *>(self_ptr);
        const std::string_view chunk(data, size * count);
        try {
            if (self->http_status() != 200) {
                if (self->error_body.size() < 64 * 1024) self->error_body.append(chunk.substr(0, 64 * 1024));
            } else {
                self->splitter.feed(chunk);
            }
            return chunk.size();
        } catch (const EtcdError &error) {
            self->callback_error = error;
            return 0;  // aborts the transfer: no exception may cross libcurl's C frames
        } catch (...) {
            self->callback_error = EtcdError(0, grpc::none, "etcd watch: out of memory");
            return 0;
        }
    }

    void open(const ClientOptions &options, const std::string &token, const WatchRequest &request) {
        multi = curl_multi_init();
        easy = curl_easy_init();
        if (!multi || !easy) throw EtcdError(0, grpc::none, "etcd: curl init failed", false);
        set_transport_options(easy, options);
        const std::string url = endpoint + "/v3/watch";
        curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
        add_request_headers(headers, token);
        // clientv3's WithRequireLeader: a member that loses its leader ends the stream instead of going quiet.
        headers.add("Grpc-Metadata-hasleader: true");
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.list);
        body = to_json(request).dump();
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, this);
        curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, detail);
        curl_multi_add_handle(multi, easy);
    }

    WatchResponse end(WatchResponse response, bool member_at_fault) {
        if (member_at_fault) client->avoid(member);
        close();
        last = response;
        return response;
    }

    std::optional<WatchResponse> next(std::optional<Clock::time_point> until) {
        if (pending) {
            WatchResponse first = std::move(*pending);
            pending.reset();
            return first;
        }
        if (last) return *last;
        if (!silent_until) silent_until = Clock::now() + watchdog;
        const auto deadline = *silent_until;
        for (;;) {
            if (auto line = splitter.next_line()) {
                silent_until.reset();
                WatchResponse response = parse_watch_line(*line);
                if (response.kind == WatchResponse::Kind::canceled) return end(std::move(response), false);
                if (response.kind == WatchResponse::Kind::stream_error) {
                    const bool member_at_fault = response.http_status == 503 || response.grpc_code == grpc::unavailable;
                    return end(std::move(response), member_at_fault);
                }
                return response;
            }
            if (callback_error) {
                const EtcdError error = *callback_error;
                WatchResponse broken;
                broken.kind = WatchResponse::Kind::disconnected;
                broken.message = error.what();
                end(std::move(broken), false);
                throw error;
            }
            if (transfer_done) {
                splitter.finish();
                if (splitter.has_line()) continue;  // the unterminated last line: often the gateway's error object
                const long status = http_status();
                WatchResponse over;
                if (result == CURLE_OK && status != 200 && status != 0) {
                    const EtcdError error = error_from_response(status, error_body);
                    over.kind = WatchResponse::Kind::stream_error;
                    over.http_status = status;
                    over.grpc_code = error.grpc_code();
                    over.message = error.what();
                    return end(std::move(over), status == 503);
                } else {
                    over.kind = WatchResponse::Kind::disconnected;
                    over.message = result == CURLE_OK ? "etcd " + endpoint + ": the watch stream ended"
                                                      : transport_error(endpoint, result, detail).what();
                }
                return end(std::move(over), true);
            }
            const auto now = Clock::now();
            if (now >= deadline) {
                WatchResponse timeout;
                timeout.kind = WatchResponse::Kind::timeout;
                timeout.message = "etcd " + endpoint + ": nothing on the watch stream for " +
                                  std::to_string(watchdog.count()) + " ms";
                return end(std::move(timeout), true);
            }
            if (until && now >= *until) return std::nullopt;
            int running = 0;
            curl_multi_perform(multi, &running);
            int queued = 0;
            while (CURLMsg *message = curl_multi_info_read(multi, &queued)) {
                if (message->msg == CURLMSG_DONE) {
                    transfer_done = true;
                    result = message->data.result;
                }
            }
            if (transfer_done || splitter.has_line() || callback_error) continue;
            const auto wake = std::min(deadline, until.value_or(deadline));
            const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now);
            curl_multi_poll(multi, nullptr, 0, static_cast<int>(std::clamp<std::int64_t>(wait.count(), 1, 1000)), nullptr);
        }
    }
};

Watch::Watch(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}
Watch::Watch(Watch &&) noexcept = default;
Watch &Watch::operator=(Watch &&) noexcept = default;
Watch::~Watch() = default;
WatchResponse Watch::next() { return *stream_->next(std::nullopt); }
std::optional<WatchResponse> Watch::next_until(Clock::time_point until) { return stream_->next(until); }
const std::string &Watch::endpoint() const { return stream_->endpoint; }
bool Watch::done() const noexcept { return stream_->last.has_value() && !stream_->pending; }

Watch Client::watch(const WatchRequest &request, std::chrono::milliseconds watchdog) {
    State &state = *state_;
    std::string failures;  // every member's reason, for the one error
    bool logged_in_again = false;
    for (std::size_t tried = 0; tried < state.endpoints.size();) {
        if (!state.options.user.empty() && state.token.empty()) state.authenticate();
        auto stream = std::make_unique<Watch::Stream>();
        stream->client = state_;
        stream->member = state.current;
        stream->endpoint = state.endpoint();
        stream->watchdog = watchdog;
        stream->open(state.options, state.token, request);
        WatchResponse first = *stream->next(std::nullopt);
        // etcd 3.4's gateway refuses a watch with an expired token not with a 401 but
        // with a 200 stream whose first answer is created + canceled, the reason in text.
        const bool token_refused = first.kind == WatchResponse::Kind::canceled &&
                                   (first.cancel_reason.find("code = Unauthenticated") != std::string::npos ||
                                    first.cancel_reason.find("invalid auth token") != std::string::npos);
        if (token_refused && !state.options.user.empty() && !logged_in_again) {
            logged_in_again = true;
            state.token.clear();
            continue;
        }
        switch (first.kind) {
        case WatchResponse::Kind::created:
        case WatchResponse::Kind::canceled:
        case WatchResponse::Kind::events:
        case WatchResponse::Kind::progress:
            stream->pending = std::move(first);
            return Watch(std::move(stream));
        case WatchResponse::Kind::stream_error:
            if ((first.http_status == 401 || first.grpc_code == grpc::unauthenticated) && !state.options.user.empty() &&
                !logged_in_again) {
                logged_in_again = true;
                state.token.clear();
                continue;
            }
            if (first.http_status != 503 && first.grpc_code != grpc::unavailable)
                throw EtcdError(first.http_status, first.grpc_code, first.message);
            break;
        case WatchResponse::Kind::disconnected:
        case WatchResponse::Kind::timeout:
            break;
        }
        failures += (failures.empty() ? "" : "; ") + first.message;
        ++tried;  // next() has moved the client on to the next member
    }
    // During an election every member refuses a watch that requires a leader (503 "no
    // leader"): the caller backs off and tries again.
    throw EtcdError(503, grpc::unavailable, "etcd: no member opened the watch: " + failures);
}

}  // namespace cptoken::etcd

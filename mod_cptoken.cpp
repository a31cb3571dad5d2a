// SPDX-License-Identifier: Apache-2.0
// mod_cptoken: cPanel-style API tokens for Apache httpd 2.4.
//
// Glue only: this file translates between httpd and lib/, where every
// decision is made (parsing the header, the token check, the store).
//   AuthType cpanel                    check_authn hook + note_auth_failure
//   AuthBasicProvider cptoken          authn provider "cptoken"
//   per-token restrictions             check_authz hook (declines or denies)
//   scopes and safe-methods tokens     fixups hook: every URI a request reaches (403)
//   CPTokenExpiryHeader                insert_filter/insert_error_filter hooks + output filter
//   last used (CPTokenLastUsed)        log_transaction hook: the use written in place in the
//                                      usage table (UsageRecorder), from the request's thread
//   stores (CPTokenDB)                 opened in child_init (LiveStore); one httpd's user could
//                                      change is refused unless CPTokenTrustOwnStore On
//   CPTokenMaxStaleness                check_authn hook, first: 503 while a mirror of etcd is not
//                                      known to be fresh (mirror.state, kept per child: MirrorProofCache)
//   SetHandler cptoken-status          mod_cptoken_status.cpp (a load balancer's health check)
//   SetHandler cptoken-manager         mod_cptoken_manager.cpp (the manager's API), registered
//                                      here; it learns who was admitted through mod_cptoken.hpp
//   usage reader (CPTokenUsageSocket)  started by the parent at post_config, for the manager's
//                                      children (configured_usage_socket(): mod_cptoken_usage.hpp)
//   CPTokenEtcd                        the manager's writes to etcd: mod_cptoken_etcd.hpp, in
//                                      mod_cptoken_manager.so only (mod_cptoken.so has no etcd client)
// Every hook is a noexcept trampoline: no exception crosses into httpd, and
// any failure refuses the request (500), never admits it.

#include "mod_cptoken_usage.hpp"

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "mod_auth.h"
#include "ap_provider.h"
#include "util_filter.h"
#include "unixd.h"
#include "apr_strings.h"
#include "apr_thread_proc.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "token/credentials.hpp"
#include "store/live_store.hpp"
#include "store/mirror_proof.hpp"
#include "token/names.hpp"
#include "token/scope.hpp"
#include "token/token.hpp"
#include "store/usage_reader.hpp"
#include "store/usage_recorder.hpp"
#include "auth/verify.hpp"
#include "mod_cptoken.hpp"
#include "mod_cptoken_etcd.hpp"

extern "C" {
extern module AP_MODULE_DECLARE_DATA cptoken_module;
}
APLOG_USE_MODULE(cptoken);

namespace {

using namespace cptoken;

// Log tags: stable, for admins and fail2ban.
#define TAG_LOADED "CPT0001: "         // the module's version, once per configuration load (notice)
#define TAG_REFUSED "CPT0100: "        // a request refused, with the reason
#define TAG_ADMITTED "CPT0101: "       // a request admitted (info), with the token's name
#define TAG_FORBIDDEN "CPT0102: "      // an admitted token outside its scopes or safe methods: 403
#define TAG_OVERRIDE "CPT0103: "       // a method-override header removed for a safe-methods token (debug)
#define TAG_STORE "CPT0200: "          // the store cannot be used: 500
#define TAG_CONFIG "CPT0201: "         // configuration error: 500
#define TAG_USAGE "CPT0203: "          // last-used times cannot be recorded (once per child)
#define TAG_NO_STORE "CPT0204: "       // configtest: a CPTokenDB names no store (warning)
#define TAG_USAGE_READER "CPT0205: "   // the usage reader (CPTokenUsageSocket): started, ended, cannot start
#define TAG_STALE "CPT0207: "          // the store is not known to be fresh (CPTokenMaxStaleness): 503
#define TAG_INTERNAL "CPT0299: "       // unexpected exception: 500

constexpr unsigned default_schemes = scheme_cpanel | scheme_basic;
constexpr unsigned max_last_used_interval = 86400;
// CPTokenMaxStaleness: a day. A mirror not proven fresh for longer is no
// bound on revocations worth the name; 0 (off) is the single host's case.
constexpr unsigned max_max_staleness = 86400;

// ------------------------------------------------------------ config

struct DirConfig {
    int store_index;    // into the store registry; -1: unset (default store)
    unsigned schemes;   // Scheme flags; 0: unset (default_schemes)
    int forward;        // CPTokenForwardAuthorization: -1 unset, 0 off, 1 on
    int expiry_header;  // CPTokenExpiryHeader: -1 unset, 0 off, 1 on
    int last_used;      // CPTokenLastUsed: -1 unset (on), 0 off, 1 on
    int max_staleness;  // CPTokenMaxStaleness, seconds: -1 unset (0: off)
};

// The store directories named in the configuration, in order; index 0 is the
// default. Filled while reading the configuration; each child opens them in
// child_init (LMDB environments must not cross fork()).
struct StoreDir {
    std::string path;
    bool configured;  // named by CPTokenDB: opened at child start
};
std::vector<StoreDir> g_store_dirs;
// CPTokenTrustOwnStore On: the stores may be httpd's own user's (a non-root
// user's private httpd). Off (the default): a store that user could change
// is refused (refuse_store_reader_could_change). Main server config only:
// it is about whom the children run as, the same for every store.
bool g_trust_own_store = false;
std::vector<std::unique_ptr<LiveStore>> g_stores;  // per child, parallel to g_store_dirs
std::vector<std::unique_ptr<UsageRecorder>> g_usage;  // per child, parallel to g_store_dirs
// CPTokenMaxStaleness: per child, parallel to g_store_dirs. Nothing is read
// until a location with a limit asks.
struct StoreFreshness {
    explicit StoreFreshness(const std::string &dir) : proof(dir) {}
    MirrorProofCache proof;
    std::atomic<std::int64_t> next_log_ns{0};  // boot clock: CPT0207 at most once a second
};
std::vector<std::unique_ptr<StoreFreshness>> g_freshness;
// The first store a CPTokenDB names: the one the usage reader serves.
std::string g_first_store_dir;
// CPTokenUsageSocket (main server config only): where the usage reader of
// the manager instance listens; empty: none.
std::string g_usage_socket;

void reset_store_dirs() {
    g_store_dirs.clear();
    g_store_dirs.push_back({default_store_dir, false});
    g_trust_own_store = false;
    g_first_store_dir.clear();
    g_usage_socket.clear();
    httpd_module::set_manager_etcd({}, {});
}

int register_store_dir(const std::string &path) {
    if (g_first_store_dir.empty()) g_first_store_dir = path;
    for (std::size_t i = 0; i < g_store_dirs.size(); ++i) {
        if (g_store_dirs[i].path == path) {
            g_store_dirs[i].configured = true;
            return static_cast<int>(i);
        }
    }
    g_store_dirs.push_back({path, true});
    return static_cast<int>(g_store_dirs.size() - 1);
}

void *create_dir_config(apr_pool_t *pool, char *) {
    auto *config = static_cast<DirConfig *>(apr_pcalloc(pool, sizeof(DirConfig)));
    config->store_index = -1;
    config->schemes = 0;
    config->forward = -1;
    config->expiry_header = -1;
    config->last_used = -1;
    config->max_staleness = -1;
    return config;
}

void *merge_dir_config(apr_pool_t *pool, void *base_v, void *add_v) {
    const auto *base = static_cast<const DirConfig *>(base_v);
    const auto *add = static_cast<const DirConfig *>(add_v);
    auto *merged = static_cast<DirConfig *>(apr_pcalloc(pool, sizeof(DirConfig)));
    merged->store_index = add->store_index != -1 ? add->store_index : base->store_index;
    merged->schemes = add->schemes != 0 ? add->schemes : base->schemes;
    merged->forward = add->forward != -1 ? add->forward : base->forward;
    merged->expiry_header = add->expiry_header != -1 ? add->expiry_header : base->expiry_header;
    merged->last_used = add->last_used != -1 ? add->last_used : base->last_used;
    merged->max_staleness = add->max_staleness != -1 ? add->max_staleness : base->max_staleness;
    return merged;
}

const char *set_store_dir(cmd_parms *cmd, void *config_v, const char *arg) {
    std::string path = ap_server_root_relative(cmd->pool, arg);
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    static_cast<DirConfig *>(config_v)->store_index = register_store_dir(path);
    return nullptr;
}

const char *set_trust_own_store(cmd_parms *cmd, void *, int on) {
    if (const char *error = ap_check_cmd_context(cmd, GLOBAL_ONLY)) return error;
    g_trust_own_store = on != 0;
    return nullptr;
}

const char *set_usage_socket(cmd_parms *cmd, void *, const char *arg) {
    if (const char *error = ap_check_cmd_context(cmd, GLOBAL_ONLY)) return error;
    g_usage_socket = ap_server_root_relative(cmd->pool, arg);
    return nullptr;
}

// The manager's writes to etcd (mod_cptoken_etcd.hpp): main server config
// only, like the store's owner the manager's children run as.
const char *set_etcd(cmd_parms *cmd, void *, int argc, char *const argv[]) {
    if (const char *error = ap_check_cmd_context(cmd, GLOBAL_ONLY)) return error;
    if (argc == 0) return "CPTokenEtcd needs etcd's endpoints, URL[,URL...]";
    const std::string error = httpd_module::set_manager_etcd(
        std::vector<std::string>(argv, argv + argc),
        [cmd](const std::string &file) { return std::string(ap_server_root_relative(cmd->pool, file.c_str())); });
    return error.empty() ? nullptr : apr_pstrdup(cmd->pool, error.c_str());
}

const char *set_schemes(cmd_parms *cmd, void *config_v, int argc, char *const argv[]) {
    unsigned schemes = 0;
    for (int i = 0; i < argc; ++i) {
        const auto scheme = parse_scheme_name(argv[i]);
        if (!scheme)
            return apr_psprintf(cmd->pool, "CPTokenSchemes: unknown scheme '%s' (use cpanel, whm, basic)", argv[i]);
        schemes |= *scheme;
    }
    if (schemes == 0) return "CPTokenSchemes needs at least one of cpanel, whm, basic";
    static_cast<DirConfig *>(config_v)->schemes = schemes;
    return nullptr;
}

const char *set_forward(cmd_parms *, void *config_v, int on) {
    static_cast<DirConfig *>(config_v)->forward = on ? 1 : 0;
    return nullptr;
}

const char *set_expiry_header(cmd_parms *, void *config_v, int on) {
    static_cast<DirConfig *>(config_v)->expiry_header = on ? 1 : 0;
    return nullptr;
}

const char *set_last_used(cmd_parms *, void *config_v, int on) {
    static_cast<DirConfig *>(config_v)->last_used = on ? 1 : 0;
    return nullptr;
}

// A directive's number of seconds, 0 to `max`; nullopt for anything else.
std::optional<unsigned> parse_seconds(const char *arg, unsigned max) {
    const char *const arg_end = arg + std::strlen(arg);
    unsigned seconds = 0;  // from_chars: digits only, no sign or space
    const auto [end, error] = std::from_chars(arg, arg_end, seconds);
    if (error != std::errc() || end != arg_end || end == arg || seconds > max) return std::nullopt;
    return seconds;
}

// Checked as before 0.14, when it set how often a child wrote a token's last
// use; every use is recorded at once now, so a valid value changes nothing.
const char *set_last_used_interval(cmd_parms *cmd, void *, const char *arg) {
    if (!parse_seconds(arg, max_last_used_interval))
        return apr_psprintf(cmd->pool, "CPTokenLastUsedInterval: '%s' is not a number of seconds from 0 to %u", arg,
                            max_last_used_interval);
    return nullptr;
}

const char *set_max_staleness(cmd_parms *cmd, void *config_v, const char *arg) {
    const auto seconds = parse_seconds(arg, max_max_staleness);
    if (!seconds)
        return apr_psprintf(cmd->pool,
                            "CPTokenMaxStaleness: '%s' is not a number of seconds from 0 (off) to %u", arg,
                            max_max_staleness);
    static_cast<DirConfig *>(config_v)->max_staleness = static_cast<int>(*seconds);
    return nullptr;
}

// httpd's directive table stores every handler as a `const char *(*)()`.
template <class Handler>
cmd_func as_cmd_func(Handler handler) {
    return reinterpret_cast<cmd_func>(reinterpret_cast<void (*)()>(handler));
}

const command_rec directives[] = {
    AP_INIT_TAKE1("CPTokenDB", as_cmd_func(set_store_dir), nullptr, RSRC_CONF | ACCESS_CONF,
                  "the token store directory made by 'cptoken init' (default /var/lib/cptoken)"),
    AP_INIT_TAKE1("CPTokenMaxStaleness", as_cmd_func(set_max_staleness), nullptr, RSRC_CONF | ACCESS_CONF,
                  "seconds: answer 503 while the store, a mirror of etcd, was last proven fresh longer ago "
                  "(mirror.state; default 0: off, for a single host)"),
    AP_INIT_FLAG("CPTokenTrustOwnStore", as_cmd_func(set_trust_own_store), nullptr, RSRC_CONF,
                 "On: use a store httpd's own user owns or could replace, for an httpd that runs as the store's "
                 "owner on purpose (default Off: refuse it, 500)"),
    AP_INIT_TAKE1("CPTokenUsageSocket", as_cmd_func(set_usage_socket), nullptr, RSRC_CONF,
                  "unix socket of the usage reader that httpd's parent starts for the first CPTokenDB store, "
                  "which gives the manager's children last used without their opening the usage store"),
    AP_INIT_TAKE_ARGV("CPTokenEtcd", as_cmd_func(set_etcd), nullptr, RSRC_CONF,
                      "the manager's writes to a mirror go to etcd: URL[,URL...] [prefix=P] [cacert=FILE] "
                      "[cert=FILE key=FILE] [user=NAME password-file=FILE] (mod_cptoken_manager.so only)"),
    AP_INIT_TAKE_ARGV("CPTokenSchemes", as_cmd_func(set_schemes), nullptr,
                      RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
                      "Authorization schemes accepted: any of cpanel, whm, basic (default: cpanel basic)"),
    AP_INIT_FLAG("CPTokenForwardAuthorization", as_cmd_func(set_forward), nullptr,
                 RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
                 "On: pass the Authorization header on after a successful check (default Off: remove it)"),
    AP_INIT_FLAG("CPTokenExpiryHeader", as_cmd_func(set_expiry_header), nullptr, RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
                 "On: answer requests admitted by an expiring token with CPToken-Expires (default Off)"),
    AP_INIT_FLAG("CPTokenLastUsed", as_cmd_func(set_last_used), nullptr, RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
                 "Off: do not record when and from where tokens are used here (default On)"),
    AP_INIT_TAKE1("CPTokenLastUsedInterval", as_cmd_func(set_last_used_interval), nullptr,
                  RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
                  "accepted for configurations written before 0.14, without effect: every use is recorded at once"),
    {nullptr, {nullptr}, nullptr, 0, RAW_ARGS, nullptr},
};

// ------------------------------------------------------------ helpers

const DirConfig &config_of(const request_rec *r) {
    return *static_cast<const DirConfig *>(ap_get_module_config(r->per_dir_config, &cptoken_module));
}

unsigned schemes_of(const DirConfig &config) { return config.schemes ? config.schemes : default_schemes; }

int store_index_of(const request_rec *r) { return config_of(r).store_index == -1 ? 0 : config_of(r).store_index; }

std::chrono::seconds max_staleness_of(const request_rec *r) {
    return std::chrono::seconds(std::max(config_of(r).max_staleness, 0));
}

// The store of this request's location. Throws StoreError.
std::shared_ptr<const TokenStore> store_for(request_rec *r) {
    const int index = store_index_of(r);
    if (static_cast<std::size_t>(index) >= g_stores.size())
        throw StoreError(StoreError::Kind::missing, "token store not set up in this process");
    return g_stores[index]->current(monotonic_microseconds());
}

const char *authorization_header_name(request_rec *r) {
    return r->proxyreq == PROXYREQ_PROXY ? "Proxy-Authorization" : "Authorization";
}

// The token field of a log line: the token's name, "NAME (rotated)" for one
// replaced by `cptoken rotate` (so that an admin sees who still uses it), "-"
// when no token was found.
std::string token_label(const TokenRecord *record) {
    if (!record) return "-";
    return record->rotated() ? record->name + " (rotated)" : record->name;
}

// The fields every admission and refusal line ends with: user="..." client=... token="...".
// loggable_user(): a token pasted into the user field, in any letter case, never reaches the log.
std::string who_fields(request_rec *r, std::string_view user, const TokenRecord *record) {
    const std::string_view shown = loggable_user(user);
    return "user=\"" + std::string(shown) + "\" client=" + (r->useragent_ip ? r->useragent_ip : "-") + " token=\"" +
           token_label(record) + "\"";
}

void log_refusal(request_rec *r, int level, const char *reason, std::string_view user, const TokenRecord *record) {
    ap_log_rerror(APLOG_MARK, level, 0, r, TAG_REFUSED "refused: reason=\"%s\" %s", reason,
                  who_fields(r, user, record).c_str());
}

void log_admission(request_rec *r, const TokenRecord &record) {
    if (!APLOG_R_IS_LEVEL(r, APLOG_INFO)) return;  // every request passes here: no strings built for nothing
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, TAG_ADMITTED "admitted: %s", who_fields(r, record.user, &record).c_str());
}

// What this module keeps about a request in its request_config.
struct RequestState {
    const char *user;    // whom the token authenticated (for check_authz); null: not admitted here
    const char *header;  // the Authorization header it was admitted with (for restore_credentials)
    Scheme scheme;       // that header's scheme: Basic is replayed by browsers (the manager's same-origin rules)
    bool forwarded;      // admission left the header for the backend
    bool restored_unforwarded;  // restore_credentials put back a header the earlier request had removed
    const char *expires;  // the admitting token's expiry, RFC 3339 UTC (for CPToken-Expires); null: never
    const Digest *digest;  // the admitting token's digest (the manager's handler finds its record again)
    const Digest *used;   // the same, if its use is to be recorded (log_transaction); null otherwise
    int store_index;      // where: into g_usage
    // The admitting token's record, kept only if it has scopes or safe
    // methods only (check_uri_scope checks every URI the request reaches);
    // null for a token without such restrictions. Freed with r->pool.
    const TokenRecord *restricted;
    bool forbidden;  // check_uri_scope refused this request (403): not a use of the token
};

const RequestState *state_of(const request_rec *r) {
    return static_cast<const RequestState *>(ap_get_module_config(r->request_config, &cptoken_module));
}

RequestState &state_for(request_rec *r) {
    auto *state = static_cast<RequestState *>(ap_get_module_config(r->request_config, &cptoken_module));
    if (!state) {
        state = static_cast<RequestState *>(apr_pcalloc(r->pool, sizeof(RequestState)));
        ap_set_module_config(r->request_config, &cptoken_module, state);
    }
    return *state;
}

apr_status_t delete_record(void *record) {
    delete static_cast<TokenRecord *>(record);
    return APR_SUCCESS;
}

// A copy of `record` that lives as long as r->pool (internal redirects share it; subrequests' pools
// are inside it). Throws std::bad_alloc.
const TokenRecord *pool_owned_copy(request_rec *r, const TokenRecord &record) {
    auto copy = std::make_unique<TokenRecord>(record);
    apr_pool_cleanup_register(r->pool, copy.get(), delete_record, apr_pool_cleanup_null);
    return copy.release();
}

// ------------------------------------------------------------ CPTokenMaxStaleness

// Whether the store of r's location, a mirror of etcd, may decide on tokens
// now (always, without reading anything, when the location sets no limit).
// If not: a CPT0207 line, at most once a second per process and store (an
// outage would otherwise write one per request), with the age and the
// limit; never a token.
bool store_fresh_enough(request_rec *r) {
    const std::chrono::seconds limit = max_staleness_of(r);
    if (limit.count() == 0) return true;
    const int index = store_index_of(r);
    if (static_cast<std::size_t>(index) >= g_freshness.size())
        throw StoreError(StoreError::Kind::missing, "token store not set up in this process");
    StoreFreshness &store = *g_freshness[index];
    const MirrorFreshness freshness = store.proof.judge(limit);
    if (freshness.fresh) return true;
    constexpr std::int64_t one_second_ns = 1000000000;
    const std::int64_t now = boottime_nanoseconds();
    std::int64_t next_log = store.next_log_ns.load(std::memory_order_relaxed);
    if (now >= next_log && store.next_log_ns.compare_exchange_strong(next_log, now + one_second_ns)) {
        const double age_seconds = freshness.age ? std::chrono::duration<double>(*freshness.age).count() : 0;
        const char *how_old = freshness.age ? apr_psprintf(r->pool, "not verified for %.1f s", age_seconds)
                                            : apr_pstrcat(r->pool, "no proof of freshness (",
                                                          freshness.why_unverified.c_str(), ")", nullptr);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      TAG_STALE "token store %s not known to be fresh: %s, CPTokenMaxStaleness %ld s; refusing "
                      "tokens until it is proven fresh (said at most once a second per process)",
                      g_store_dirs[index].path.c_str(), how_old, static_cast<long>(limit.count()));
    }
    return false;
}

// A request this module would check a token for: any at an AuthType cpanel
// location; at an AuthType Basic one, those whose password has a token's
// shape (AuthBasicProvider cptoken looks up no other, and htpasswd users of
// the same location keep working).
bool would_check_token(request_rec *r) {
    const char *type = ap_auth_type(r);
    if (!type) return false;
    if (strcasecmp(type, "cpanel") == 0) return true;
    if (strcasecmp(type, "basic") != 0) return false;
    const char *header = apr_table_get(r->headers_in, authorization_header_name(r));
    if (!header) return false;
    const ParsedCredentials parsed = parse_authorization(header, scheme_basic);
    return parsed.credentials && has_token_shape(parsed.credentials->token);
}

// CPTokenMaxStaleness: a token is not checked against a store that may miss
// revocations. 503 with Retry-After, never 401 (a client retries a 503, but
// may throw a token away after a 401), never admitted. Before every
// authentication module (mod_auth_basic's providers included: a provider
// cannot answer 503).
int refuse_stale_store(request_rec *r) {
    if (max_staleness_of(r).count() == 0 || !would_check_token(r)) return DECLINED;
    if (store_fresh_enough(r)) return DECLINED;
    apr_table_setn(r->err_headers_out, "Retry-After", httpd_module::stale_retry_after_seconds);
    return HTTP_SERVICE_UNAVAILABLE;
}

// Successful check: a CPT0101 line (at info), the user, the variables for logs, CGI and mod_headers,
// the record if check_uri_scope will need it, and the header (`header`, the Authorization value the
// token came in) kept for restore_credentials. The header is removed unless the location forwards
// it and, if it was restored for this re-check, the earlier request did too:
// a redirect must not carry it to a backend the original location kept it from.
void admit(request_rec *r, const TokenRecord &record, const Digest &digest, const char *header, Scheme scheme) {
    log_admission(r, record);
    r->user = apr_pstrmemdup(r->pool, record.user.data(), record.user.size());
    apr_table_setn(r->subprocess_env, "CPTOKEN_NAME", apr_pstrmemdup(r->pool, record.name.data(), record.name.size()));
    const char *expires = record.never_expires() ? nullptr : apr_pstrdup(r->pool, format_iso8601(record.expires).c_str());
    apr_table_setn(r->subprocess_env, "CPTOKEN_EXPIRES", expires ? expires : "");
    RequestState &state = state_for(r);
    // Only restricted tokens pay for a copy; the others leave it null (a re-admission included).
    state.restricted = record.read_only || !record.scopes.empty() ? pool_owned_copy(r, record) : nullptr;
    state.user = r->user;
    state.expires = expires;
    state.header = apr_pstrdup(r->pool, header);
    state.scheme = scheme;
    const DirConfig &config = config_of(r);
    state.forwarded = config.forward == 1 && !state.restored_unforwarded;
    if (!state.forwarded) apr_table_unset(r->headers_in, authorization_header_name(r));
    state.digest = static_cast<const Digest *>(apr_pmemdup(r->pool, digest.data(), sizeof digest));
    state.store_index = store_index_of(r);
    state.used = config.last_used != 0 ? state.digest : nullptr;
}

// The client address (mod_remoteip's, behind trusted proxies) as lib/ wants it.
std::optional<Address> client_address(const request_rec *r) {
    const apr_sockaddr_t *sa = r->useragent_addr;
    if (!sa || (sa->family != APR_INET && sa->family != APR_INET6) || sa->ipaddr_len > 16) return std::nullopt;
    Address address;
    address.family = sa->family == APR_INET ? 4 : 6;
    std::memcpy(address.bytes.data(), sa->ipaddr_ptr, sa->ipaddr_len);
    return address;  // an IPv4-mapped IPv6 address matches IPv4 networks (contains())
}

// `scheme`: what the credentials came with, which decides the services
// whose tokens may be used here (services_for).
Verdict verify(request_rec *r, std::string_view user, std::string_view token, Scheme scheme) {
    const auto client = client_address(r);
    if (!client) {
        // An address we cannot read would match no allowlist: refuse outright.
        Verdict verdict;
        verdict.reason = Reason::address_not_allowed;
        return verdict;
    }
    const auto store = store_for(r);
    // Now, not r->request_time: the headers may arrive long after the request line.
    return verify_token(*store, user, token, client, now_seconds(), services_for(scheme, schemes_of(config_of(r))));
}

// The state of the nearest request, along internal redirects (r->prev) and
// subrequests (r->main), that a token admitted; null if none was.
const RequestState *admitted_state(const request_rec *r) {
    for (; r; r = r->prev ? r->prev : r->main) {
        const RequestState *state = state_of(r);
        if (state && state->user) return state;
    }
    return nullptr;
}

// ------------------------------------------------------------ hooks

// httpd authenticates again an internal redirect or a subrequest whose
// configuration differs from the original request's (DirectoryIndex into a
// <FilesMatch>, a RewriteRule): by then admit() has removed the header. Put
// it back from the request that was admitted, so that the new request is
// checked against its own configuration like any other (by this module or
// by mod_auth_basic), and removed again if admitted (admit() forwards it only
// if the request it came from did).
int restore_credentials(request_rec *r) {
    if (!r->prev && !r->main) return DECLINED;  // an original request: nothing to restore
    const char *name = authorization_header_name(r);
    if (apr_table_get(r->headers_in, name)) return DECLINED;
    const RequestState *admitted = admitted_state(r->prev ? r->prev : r->main);
    if (admitted && admitted->header) {
        apr_table_set(r->headers_in, name, admitted->header);
        if (!admitted->forwarded) state_for(r).restored_unforwarded = true;
    }
    return DECLINED;
}

int check_authn(request_rec *r) {
    const char *type = ap_auth_type(r);
    if (!type || strcasecmp(type, "cpanel") != 0) return DECLINED;
    if (!ap_auth_name(r)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, TAG_CONFIG "AuthType cpanel needs an AuthName for %s", r->uri);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    r->ap_auth_type = const_cast<char *>("cpanel");

    const char *header = apr_table_get(r->headers_in, authorization_header_name(r));
    if (!header) {
        log_refusal(r, APLOG_INFO, "no credentials", {}, nullptr);
        ap_note_auth_failure(r);
        return HTTP_UNAUTHORIZED;
    }
    const ParsedCredentials parsed = parse_authorization(header, schemes_of(config_of(r)));
    if (!parsed.credentials) {
        log_refusal(r, APLOG_ERR,
                    parsed.error == CredentialsError::wrong_scheme ? "scheme not accepted" : "malformed credentials",
                    {}, nullptr);
        ap_note_auth_failure(r);
        return HTTP_UNAUTHORIZED;
    }
    const Credentials &credentials = *parsed.credentials;
    const Verdict verdict = verify(r, credentials.user, credentials.token, credentials.scheme);
    if (verdict.accepted()) {
        admit(r, *verdict.record, verdict.digest, header, credentials.scheme);
        return OK;
    }
    log_refusal(r, APLOG_ERR, describe(verdict.reason), credentials.user,
                verdict.record ? &*verdict.record : nullptr);
    ap_note_auth_failure(r);
    return HTTP_UNAUTHORIZED;
}

// Challenges for every scheme the location accepts.
int note_auth_failure(request_rec *r, const char *auth_type) {
    if (!auth_type || strcasecmp(auth_type, "cpanel") != 0) return DECLINED;
    const char *header = r->proxyreq == PROXYREQ_PROXY ? "Proxy-Authenticate" : "WWW-Authenticate";
    const unsigned schemes = schemes_of(config_of(r));
    const char *realm = ap_escape_quotes(r->pool, ap_auth_name(r) ? ap_auth_name(r) : "");
    if (schemes & scheme_cpanel) apr_table_add(r->err_headers_out, header, apr_pstrcat(r->pool, "cpanel realm=\"", realm, "\"", nullptr));
    if (schemes & scheme_whm) apr_table_add(r->err_headers_out, header, apr_pstrcat(r->pool, "whm realm=\"", realm, "\"", nullptr));
    if (schemes & scheme_basic) apr_table_add(r->err_headers_out, header, apr_pstrcat(r->pool, "Basic realm=\"", realm, "\"", nullptr));
    return OK;
}

// Per-token restrictions, after authentication and before Require. Today the
// only one: the user must still be the token's owner (no other module may
// have changed r->user since). Declines or denies, never OK, so that the
// Require lines always run. Also the place, after every authentication
// module, to keep out a restored header that another module admitted.
int check_authz(request_rec *r) {
    const RequestState *state = state_of(r);
    if (!state) return DECLINED;
    if (!state->user) {
        if (state->restored_unforwarded) apr_table_unset(r->headers_in, authorization_header_name(r));
        return DECLINED;
    }
    if (!r->user || std::strcmp(r->user, state->user) != 0) {
        log_refusal(r, APLOG_ERR, "user changed after authentication", r->user ? r->user : "", nullptr);
        ap_note_auth_failure(r);
        return HTTP_UNAUTHORIZED;
    }
    return DECLINED;
}

// A path for a log field in double quotes. httpd's error log escapes control
// characters and backslashes itself, and would double any backslash escape
// added here (ap_escape_logitem's \" would show as \\"), so only the quote
// is left to do: as %22, which cannot end the field.
std::string loggable_path(std::string_view path) {
    std::string out;
    out.reserve(path.size());
    for (const char c : path) {
        if (c == '"')
            out.append("%22");
        else
            out.push_back(c);
    }
    return out;
}

std::optional<std::string_view> header_in(const request_rec *r, const char *name) {
    const char *value = apr_table_get(r->headers_in, name);
    return value ? std::optional<std::string_view>(value) : std::nullopt;
}

// Every value of the request header `name`, in order: a proxied backend
// may read any of them.
std::vector<std::string_view> headers_in(const request_rec *r, const char *name) {
    std::vector<std::string_view> values;
    apr_table_do(
        [](void *out, const char *, const char *value) {
            static_cast<std::vector<std::string_view> *>(out)->emplace_back(value);
            return 1;
        },
        &values, r->headers_in, name, nullptr);
    return values;
}

// A safe-methods token's request goes on without the headers that would
// make a backend take it for another method. Removed from this request's
// headers, which its internal redirects and subrequests start from.
void remove_method_overrides(request_rec *r) {
    for (const char *name : method_override_headers) {
        if (!apr_table_get(r->headers_in, name)) continue;
        apr_table_unset(r->headers_in, name);
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, TAG_OVERRIDE "removed %s: the token allows safe methods only",
                      name);
    }
}

// Scopes and safe-methods tokens, for every URI a request reaches. A fixups hook
// runs for each request httpd processes, internal redirects and subrequests
// included, even those whose configuration is the same as their parent's, for
// which httpd skips authentication (AP_AUTH_INTERNAL_PER_CONF) and copies
// r->user. r->uri is the path after httpd's decoding and dot-segment removal
// (check_scope refuses what is still ambiguous). A scoped token's Destination
// header is held to its scopes, and a safe-methods token's request to no body.
// Outside: 403, no challenge (the token is valid; asking for another would not
// help). Inside: declines.
int check_uri_scope(request_rec *r) {
    const RequestState *admitted = admitted_state(r);
    if (!admitted || !admitted->restricted) return DECLINED;
    const TokenRecord &record = *admitted->restricted;
    ScopeVerdict verdict = check_scope(record, r->method ? r->method : "", r->uri ? r->uri : "");
    if (verdict == ScopeVerdict::allowed)
        verdict = check_body(record, carries_body(header_in(r, "Content-Length"), header_in(r, "Transfer-Encoding")));
    if (verdict == ScopeVerdict::allowed && !record.scopes.empty())
        verdict = check_destination(record, headers_in(r, "Destination"));  // WebDAV COPY and MOVE write there
    if (verdict == ScopeVerdict::allowed) {
        if (record.read_only) remove_method_overrides(r);
        return DECLINED;
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, TAG_FORBIDDEN "forbidden: reason=\"%s\" method=%s path=\"%s\" %s",
                  describe(verdict), r->method ? r->method : "-", loggable_path(r->uri ? r->uri : "").c_str(),
                  who_fields(r, record.user, &record).c_str());
    state_for(r).forbidden = true;
    return HTTP_FORBIDDEN;
}

// AuthBasicProvider cptoken. A credential that is not one of our tokens lets
// the next provider try; one of our tokens refused stops the chain. A token
// of the other service too: the client gets the same 401 as for an unknown
// token, the log its own reason at error, and mod_auth_basic then logs
// AH01617, which fail2ban does not count, rather than AH01618, which it
// would count a second time beside our CPT0100.
authn_status check_password(request_rec *r, const char *user, const char *password) {
    // refuse_stale_store answered 503 before, unless another module than mod_auth_basic asks
    // (AuthFormProvider cptoken): a provider cannot answer 503, but it never admits from a stale store.
    if (has_token_shape(password) && !store_fresh_enough(r)) return AUTH_GENERAL_ERROR;
    const Verdict verdict = verify(r, user, password, scheme_basic);
    switch (verdict.reason) {
        case Reason::accepted:
            admit(r, *verdict.record, verdict.digest, apr_table_get(r->headers_in, authorization_header_name(r)),
                  scheme_basic);
            return AUTH_GRANTED;
        case Reason::malformed:
        case Reason::mistyped:
        case Reason::unknown:
            log_refusal(r, APLOG_INFO, describe(verdict.reason), user, nullptr);
            return AUTH_USER_NOT_FOUND;
        default:
            log_refusal(r, APLOG_ERR, describe(verdict.reason), user, verdict.record ? &*verdict.record : nullptr);
            return AUTH_DENIED;
    }
}

// ------------------------------------------------------------ CPToken-Expires

// CPTokenExpiryHeader On: the response to a request a token admitted tells
// the client when that token expires, so that a CI job can warn before it
// dies. The expiry is known at admission but the status only when the
// response goes out, so a filter sets the header then, on error responses
// too (insert_error_filter), and leaves it off a 401.

const char *const expiry_header_name = "CPToken-Expires";
const char *const expiry_filter_name = "CPTOKEN_EXPIRES";

// The request the client asked for: the first of a chain of internal redirects.
const request_rec *client_request(const request_rec *r) {
    while (r->prev) r = r->prev;
    return r;
}

// Called for every response (insert_filter) and every error response httpd
// makes itself (insert_error_filter): with the directive Off, one config
// check. The setting of the location the client asked for counts, as for
// CPTokenForwardAuthorization: an ErrorDocument elsewhere keeps the header,
// a redirect from a location with Off does not gain it.
void insert_expiry_filter(request_rec *r) {
    if (r->main) return;  // a subrequest's output goes through its main request's filters
    if (config_of(client_request(r)).expiry_header != 1) return;
    const RequestState *admitted = admitted_state(r);
    if (!admitted) return;
    // ctx: the value, or null for a token that never expires (the filter then only removes a backend's).
    ap_add_output_filter(expiry_filter_name, const_cast<char *>(admitted->expires), r, r->connection);
}

// Runs once, before the headers go out, then leaves the chain. Set, not
// added: a proxied backend's own CPToken-Expires must not survive beside
// ours (nor speak for a token that never expires). Never on a 401 (407 for
// a forward proxy), whoever refused.
void apply_expiry_header(request_rec *r, const char *expires) {
    apr_table_unset(r->headers_out, expiry_header_name);
    const bool refused = r->status == HTTP_UNAUTHORIZED || r->status == HTTP_PROXY_AUTHENTICATION_REQUIRED;
    if (expires && !refused)
        apr_table_setn(r->err_headers_out, expiry_header_name, expires);  // sent with any status
    else
        apr_table_unset(r->err_headers_out, expiry_header_name);
}

// ------------------------------------------------------------ last used

// After the response: record the use of the token that admitted the request
// the client got its answer from (the last of a chain of internal
// redirects), in the usage table, at once and in constant time. A request
// the token's restrictions refused (403) is no use, even if its
// ErrorDocument page was served within them.
int note_use(request_rec *r) {
    const request_rec *served = r;
    for (;; served = served->next) {
        const RequestState *state = state_of(served);
        if (state && state->forbidden) return DECLINED;
        if (!served->next) break;
    }
    const RequestState *admitted = admitted_state(served);
    if (!admitted || !admitted->used) return DECLINED;
    if (static_cast<std::size_t>(admitted->store_index) >= g_usage.size()) return DECLINED;
    g_usage[admitted->store_index]->record(*admitted->used, static_cast<Seconds>(apr_time_sec(r->request_time)),
                                           client_address(r));
    return DECLINED;
}

// ------------------------------------------------------------ usage reader

// The manager instance's children run as the store's owner and must not
// open the usage store, which httpd's group writes (usage_reader.hpp): with
// CPTokenUsageSocket, httpd's parent (root) starts a reader for them that
// becomes user nobody of the store's group. It serves the first store a
// CPTokenDB names (the manager serves one store), else the default one. It
// lives as long as this configuration: a restart or a stop kills it (pconf's
// cleanup); if it ends meanwhile, httpd tells us (an "other child") and it
// is started again at once. Each question is answered by a child of the
// reader, so a usage store that crashes liblmdb costs that answer only.
struct UsageReader {
    std::string store, socket;
    uid_t client = 0;
    pid_t parent = 0;  // httpd's parent, which alone stops it: children run pconf's cleanups at exit too
    apr_proc_t proc{};
    apr_pool_t *pool = nullptr;
    server_rec *server = nullptr;
};
UsageReader g_reader;
// Whether the reader was started; children inherit it from the parent.
bool g_reader_started = false;

extern "C" void usage_reader_event(int reason, void *data, apr_wait_t status) noexcept;

void start_reader() {
    g_reader.proc.pid = start_usage_reader(g_reader.store, g_reader.socket, g_reader.client);
    g_reader_started = true;
    apr_proc_other_child_register(&g_reader.proc, usage_reader_event, &g_reader, nullptr, g_reader.pool);
    struct stat st{};
    const gid_t gid = ::stat(g_reader.store.c_str(), &st) == 0 ? st.st_gid : 0;
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, g_reader.server,
                 TAG_USAGE_READER "usage reader for the store in %s (%s) started as user nobody of group %ld, "
                 "pid %ld, on %s for uid %ld",
                 g_reader.store.c_str(), g_first_store_dir.empty() ? "the default store" : "the first CPTokenDB",
                 static_cast<long>(gid), static_cast<long>(g_reader.proc.pid), g_reader.socket.c_str(),
                 static_cast<long>(g_reader.client));
}

void log_cannot_start(const std::exception &e) {
    g_reader_started = false;
    g_reader.proc.pid = -1;
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, g_reader.server,
                 TAG_USAGE_READER "CPTokenUsageSocket %s: the usage reader for %s cannot start: %s; the manager "
                 "shows last used as unavailable until httpd is restarted",
                 g_reader.socket.c_str(), g_reader.store.c_str(), e.what());
}

// httpd's parent reaped the reader (or lost it): once more.
void usage_reader_ended(int reason, apr_wait_t status) {
    if (reason != APR_OC_REASON_DEATH && reason != APR_OC_REASON_LOST) return;  // a restart: the cleanup stops it
    apr_proc_other_child_unregister(&g_reader);
    int mpm_state = AP_MPMQ_RUNNING;
    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) == APR_SUCCESS && mpm_state == AP_MPMQ_STOPPING) {
        g_reader.proc.pid = -1;  // httpd stops or restarts: the next configuration starts its own
        return;
    }
    const long pid = g_reader.proc.pid;
    if (reason == APR_OC_REASON_LOST && pid > 0) ::kill(static_cast<pid_t>(pid), SIGKILL);  // never two readers
    const std::string how = reason == APR_OC_REASON_LOST ? "was lost"
                            : WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                                                  : "ended with status " + std::to_string(WEXITSTATUS(status));
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, g_reader.server,
                 TAG_USAGE_READER "the usage reader (pid %ld) %s: starting it again", pid, how.c_str());
    try {
        start_reader();
    } catch (const std::exception &e) {
        log_cannot_start(e);
    }
}

apr_status_t stop_reader(void *) {
    if (::getpid() != g_reader.parent || g_reader.proc.pid <= 0) return APR_SUCCESS;
    ::kill(g_reader.proc.pid, SIGKILL);
    while (::waitpid(g_reader.proc.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    g_reader.proc.pid = -1;
    g_reader_started = false;
    struct stat st{};
    if (::lstat(g_reader.socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(g_reader.socket.c_str());
    return APR_SUCCESS;
}

// post_config, before any other module's: the reader is a fork of this
// process, and must not hold a copy of what they load (keys, the manager's
// secrets). Not in the first pass (httpd reads its configuration twice).
int start_usage_reader_at_post_config(apr_pool_t *pconf, server_rec *s) {
    g_reader_started = false;
    if (g_usage_socket.empty() || ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) return OK;
    g_reader.store = g_first_store_dir.empty() ? default_store_dir : g_first_store_dir;
    g_reader.socket = g_usage_socket;
    g_reader.client = ap_unixd_config.user_id;
    g_reader.parent = ::getpid();
    g_reader.pool = pconf;
    g_reader.server = s;
    g_reader.proc = apr_proc_t{};
    g_reader.proc.pid = -1;
    apr_pool_cleanup_register(pconf, nullptr, stop_reader, apr_pool_cleanup_null);
    try {
        start_reader();
    } catch (const std::exception &e) {
        log_cannot_start(e);
    }
    return OK;
}

int pre_config(apr_pool_t *, apr_pool_t *, apr_pool_t *) {
    reset_store_dirs();
    return OK;
}

int post_config(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *, server_rec *s) {
    // Like other modules: in the Server header (ServerTokens Full) and in httpd's "resuming normal
    // operations" line, which is what an admin greps to learn which build runs.
    ap_add_version_component(pconf, "mod_cptoken/" CPTOKEN_VERSION);
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) return OK;
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, TAG_LOADED "mod_cptoken " CPTOKEN_VERSION " loaded");
    return OK;
}

// httpd -t (apache2ctl configtest): a CPTokenDB naming no store passes the
// syntax check, and every request under it would get 500 after the restart.
// A warning, not an error: the store may well be made before the restart.
void test_config(server_rec *s) {
    set_httpd_group(ap_unixd_config.group_id);  // the group the command must give the store
    for (const StoreDir &dir : g_store_dirs)
        if (dir.configured)
            if (const auto missing = missing_store(dir.path))
                ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, TAG_NO_STORE "CPTokenDB %s: %s", dir.path.c_str(),
                             missing->c_str());
}

apr_status_t close_stores(void *) {
    g_freshness.clear();
    g_usage.clear();
    g_stores.clear();
    return APR_SUCCESS;
}

void child_init(apr_pool_t *pchild, server_rec *s) {
    set_httpd_group(::getegid());  // the group a store must have for us: what errors tell the admin to give
    g_stores.clear();
    g_usage.clear();
    g_freshness.clear();
    for (const StoreDir &dir : g_store_dirs) {
        g_freshness.push_back(std::make_unique<StoreFreshness>(dir.path));
        g_usage.push_back(std::make_unique<UsageRecorder>(dir.path, [s](const std::string &message) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, TAG_USAGE "%s", message.c_str());
        }));
        g_stores.push_back(std::make_unique<LiveStore>(dir.path, g_trust_own_store));
        if (!dir.configured) continue;  // the default store opens on first use
        try {
            g_stores.back()->open_now();
        } catch (const std::exception &e) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, TAG_STORE "cannot open the token store: %s", e.what());
        }
    }
    apr_pool_cleanup_register(pchild, nullptr, close_stores, apr_pool_cleanup_null);
}

// ------------------------------------------------------------ trampolines

// Logs what escaped a hook; the caller then refuses the request.
void log_exception(request_rec *r) noexcept {
    try {
        throw;
    } catch (const StoreError &e) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, TAG_STORE "token store unusable: %s", e.what());
    } catch (const std::exception &e) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, TAG_INTERNAL "internal error: %s", e.what());
    } catch (...) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, TAG_INTERNAL "internal error");
    }
}

extern "C" {

static int check_authn_hook(request_rec *r) noexcept {
    try {
        return check_authn(r);
    } catch (...) {
        log_exception(r);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
}

static int refuse_stale_store_hook(request_rec *r) noexcept {
    try {
        return refuse_stale_store(r);
    } catch (...) {
        log_exception(r);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
}

static int restore_credentials_hook(request_rec *r) noexcept {
    try {
        return restore_credentials(r);
    } catch (...) {
        log_exception(r);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
}

static int check_authz_hook(request_rec *r) noexcept {
    try {
        return check_authz(r);
    } catch (...) {
        log_exception(r);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
}

static int check_uri_scope_hook(request_rec *r) noexcept {
    try {
        return check_uri_scope(r);
    } catch (...) {
        log_exception(r);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
}

static int note_auth_failure_hook(request_rec *r, const char *auth_type) noexcept {
    try {
        return note_auth_failure(r, auth_type);
    } catch (...) {
        log_exception(r);
        return DECLINED;
    }
}

static authn_status check_password_provider(request_rec *r, const char *user, const char *password) noexcept {
    try {
        return check_password(r, user, password);
    } catch (...) {
        log_exception(r);
        return AUTH_GENERAL_ERROR;
    }
}

static int note_use_hook(request_rec *r) noexcept {
    try {
        return note_use(r);
    } catch (...) {
        log_exception(r);  // the response is sent: only this use goes unrecorded
        return DECLINED;
    }
}

static void insert_expiry_filter_hook(request_rec *r) noexcept {
    try {
        insert_expiry_filter(r);
    } catch (...) {
        log_exception(r);  // no header: the response itself is not at stake
    }
}

static apr_status_t expiry_filter(ap_filter_t *f, apr_bucket_brigade *brigade) noexcept {
    try {
        apply_expiry_header(f->r, static_cast<const char *>(f->ctx));
    } catch (...) {
        log_exception(f->r);
    }
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, brigade);
}

static int pre_config_hook(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp) noexcept {
    try {
        return pre_config(pconf, plog, ptemp);
    } catch (...) {
        return HTTP_INTERNAL_SERVER_ERROR;  // httpd refuses to start
    }
}

void usage_reader_event(int reason, void *, apr_wait_t status) noexcept {
    try {
        usage_reader_ended(reason, status);
    } catch (...) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g_reader.server, TAG_INTERNAL "usage reader: internal error");
    }
}

static int start_usage_reader_hook(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *, server_rec *s) noexcept {
    try {
        return start_usage_reader_at_post_config(pconf, s);
    } catch (...) {
        return OK;  // logged where it can be; last used is then unavailable, nothing else
    }
}

static int post_config_hook(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s) noexcept {
    try {
        return post_config(pconf, plog, ptemp, s);
    } catch (...) {
        return OK;  // only a warning was at stake
    }
}

static void test_config_hook(apr_pool_t *, server_rec *s) noexcept {
    try {
        test_config(s);
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, TAG_INTERNAL "configuration test failed: %s", e.what());
    }
}

static void child_init_hook(apr_pool_t *pchild, server_rec *s) noexcept {
    try {
        child_init(pchild, s);
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, TAG_INTERNAL "child init failed: %s", e.what());
    } catch (...) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, TAG_INTERNAL "child init failed");
    }
}

}  // extern "C"

const authn_provider basic_provider = {check_password_provider, nullptr};

void register_hooks(apr_pool_t *pool) {
    reset_store_dirs();
    ap_hook_pre_config(pre_config_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_post_config(start_usage_reader_hook, nullptr, nullptr, APR_HOOK_REALLY_FIRST);
    ap_hook_test_config(test_config_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_check_authn(restore_credentials_hook, nullptr, nullptr, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_check_authn(check_authn_hook, nullptr, nullptr, APR_HOOK_MIDDLE, AP_AUTH_INTERNAL_PER_CONF);
    // After restore_credentials (a restored Basic header is judged too), before mod_auth_basic (middle).
    ap_hook_check_authn(refuse_stale_store_hook, nullptr, nullptr, APR_HOOK_FIRST + 1, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_check_authz(check_authz_hook, nullptr, nullptr, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_note_auth_failure(note_auth_failure_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    // Not an auth hook: fixups run for every request, so the optimisation httpd applies to auth hooks
    // stays on for every module. Really first: before mod_rewrite's per-directory rules and mod_dir.
    ap_hook_fixups(check_uri_scope_hook, nullptr, nullptr, APR_HOOK_REALLY_FIRST);
    // Before the access log: its line for a request says the use is noted.
    static const char *const log_after_us[] = {"mod_log_config.c", nullptr};
    ap_hook_log_transaction(note_use_hook, nullptr, log_after_us, APR_HOOK_MIDDLE);
    ap_register_output_filter(expiry_filter_name, expiry_filter, nullptr, AP_FTYPE_CONTENT_SET);
    ap_hook_insert_filter(insert_expiry_filter_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_insert_error_filter(insert_expiry_filter_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_register_auth_provider(pool, AUTHN_PROVIDER_GROUP, "cptoken", AUTHN_PROVIDER_VERSION, &basic_provider,
                              AP_AUTH_INTERNAL_PER_CONF);
    httpd_module::register_manager_hooks(pool);  // SetHandler cptoken-manager (mod_cptoken_manager.cpp)
    httpd_module::register_status_hooks(pool);   // SetHandler cptoken-status (mod_cptoken_status.cpp)
}

}  // namespace

// ------------------------------------------------------------ for the manager's handler (mod_cptoken.hpp)

namespace cptoken::httpd_module {

bool admitted_by_token(const request_rec *r) { return admitted_state(r) != nullptr; }

bool browser_replays_credentials(const request_rec *r) {
    const RequestState *admitted = admitted_state(r);
    return !admitted || admitted->scheme == scheme_basic;
}

std::optional<StoredToken> admitting_token(request_rec *r) {
    const RequestState *admitted = admitted_state(r);
    if (!admitted || !admitted->digest) return std::nullopt;
    // Looked up in the store the handler will write: a token of another store manages nothing here.
    auto record = store_for(r)->find(*admitted->digest);
    if (!record || !r->user || record->user != r->user) return std::nullopt;
    return StoredToken{*admitted->digest, std::move(*record)};
}

const std::string &store_dir(const request_rec *r) { return g_store_dirs[store_index_of(r)].path; }

std::chrono::seconds max_staleness(const request_rec *r) { return max_staleness_of(r); }

std::string who_fields(request_rec *r, std::string_view user, const TokenRecord *record) {
    return ::who_fields(r, user, record);
}

void log_exception(request_rec *r) noexcept { ::log_exception(r); }

}  // namespace cptoken::httpd_module

std::string configured_usage_socket() { return g_reader_started ? g_usage_socket : std::string(); }

// ------------------------------------------------------------ module record

extern "C" {
__attribute__((visibility("default"))) module AP_MODULE_DECLARE_DATA cptoken_module = {
    // STANDARD20_MODULE_STUFF, spelled out to name the module mod_cptoken.c
    // (not mod_cptoken.cpp), so that <IfModule mod_cptoken.c> and
    // LogLevel cptoken:info work as admins expect.
    MODULE_MAGIC_NUMBER_MAJOR,
    MODULE_MAGIC_NUMBER_MINOR,
    -1,
    "mod_cptoken.c",
    nullptr,
    nullptr,
    MODULE_MAGIC_COOKIE,
    nullptr,
    create_dir_config,
    merge_dir_config,
    nullptr,  // server config: everything is per directory
    nullptr,
    directives,
    register_hooks,
    AP_MODULE_FLAG_NONE,
};
}

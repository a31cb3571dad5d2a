// SPDX-License-Identifier: Apache-2.0
// mod_cptoken's manager handler: `SetHandler cptoken-manager`, on the
// manager instance (an httpd of its own whose children own the token store),
// answers cPanel's UAPI Tokens, our CPTokens and WHM API 1 api_token_* for
// r->user (docs/manager.md).
//
// Glue only: lib/manager decides what a call does and who may make it. Here:
//   the function                 from the end of the URI (.../execute/MODULE/FN, .../json-api/FN)
//   the parameters               query string; POST form or JSON object (at most 64 KiB, else 413)
//   who is calling               one of our tokens (mod_cptoken.hpp), or ambient credentials
//                                (Basic, cookies, SSO: whatever set r->user)
//   same-origin rules            writes with credentials browsers replay (ambient ones, and our
//                                tokens sent as Basic) need POST, Sec-Fetch-Site and Origin of
//                                this site and the page token (X-CPToken-CSRF); else 403
//   headers                      no-store, no referrer, nosniff, a strict CSP; no CORS, ever
//   the store                    opened read-write for each call (the manager's children own it);
//                                in cluster mode (CPTokenEtcd) its writes go to etcd instead
// Refusals are logged with CPT0104, writes with CPT0105; never a token secret.

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

#include <strings.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "manager/csrf.hpp"
#include "manager/manager.hpp"
#include "manager/params.hpp"
#include "store/live_store.hpp"
#include "store/store.hpp"
#include "store/usage_reader.hpp"
#include "token/timeutil.hpp"
#include "mod_cptoken.hpp"
#include "mod_cptoken_etcd.hpp"
#include "mod_cptoken_usage.hpp"

extern "C" {
extern module AP_MODULE_DECLARE_DATA cptoken_module;
}
APLOG_USE_MODULE(cptoken);

namespace {

using namespace cptoken;
using namespace cptoken::manager;
namespace glue = cptoken::httpd_module;

// Log tags: stable, for admins and fail2ban (docs/directives.md).
#define TAG_MANAGER_REFUSED "CPT0104: "  // a manager request refused (403, 404, 405, 413, 415), with the reason
#define TAG_MANAGER_WROTE "CPT0105: "    // a manager call that changed tokens (info), with what it did
#define TAG_MANAGER_USAGE "CPT0206: "    // the manager cannot show last used (once per child)
#define TAG_MANAGER_ETCD "CPT0208: "     // a manager child cannot write to etcd: CPTokenEtcd's password unreadable
#define TAG_INTERNAL "CPT0299: "         // unexpected: here, no random key for page tokens (httpd does not start)

const char *const handler_name = "cptoken-manager";
const char *const csrf_header = "X-CPToken-CSRF";

// The key of the page tokens: made in post_config, so each generation of
// the manager's processes has its own and its children inherit it.
CsrfKey g_csrf_key{};

// ------------------------------------------------------------ the store

// The token store is opened for each call and closed after it: a writer
// keeps the pages it freed while it stays open (StoreSettings::page_reuse_delay:
// the readers without a lock file get that long), so none stays open between
// calls; and a store moved into place is simply the one the next call opens.
// Calls are rare, and LMDB's writer lock serialises them. When the store
// mirrors etcd, its agent alone writes it: with CPTokenEtcd the call's
// changes go to etcd, as `cptoken --etcd` sends them, and the answer comes
// once this host's mirror holds them; without it the store refuses them.

// ------------------------------------------------------------ the request

// Every answer of the manager, errors included (err_headers_out).
void set_manager_headers(request_rec *r) {
    apr_table_t *h = r->err_headers_out;
    apr_table_setn(h, "Cache-Control", "no-store");
    apr_table_setn(h, "Pragma", "no-cache");
    apr_table_setn(h, "Referrer-Policy", "no-referrer");
    apr_table_setn(h, "X-Content-Type-Options", "nosniff");
    apr_table_setn(h, "Content-Security-Policy",
                   "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
}

int send_json(request_rec *r, int status, const std::string &body) {
    r->status = status;
    ap_set_content_type(r, "application/json");
    ap_set_content_length(r, static_cast<apr_off_t>(body.size()));
    ap_rwrite(body.data(), static_cast<int>(body.size()), r);
    return OK;
}

// A refusal: logged (CPT0104, without any secret), answered in the API's envelope with `status`.
int refuse(request_rec *r, const Route &route, int status, int level, const std::string &reason,
           const TokenRecord *caller = nullptr) {
    ap_log_rerror(APLOG_MARK, level, 0, r, TAG_MANAGER_REFUSED "manager refused: reason=\"%s\" function=%s status=%d %s",
                  reason.c_str(), function_label(route).c_str(), status,
                  glue::who_fields(r, r->user ? r->user : "", caller).c_str());
    // A body not read must not be read now, for the next request of the connection.
    if (status == HTTP_REQUEST_ENTITY_TOO_LARGE) r->connection->keepalive = AP_CONN_CLOSE;
    return send_json(r, status, refusal(route.api, route.function, reason, status).body);
}

std::string_view header_value(const request_rec *r, const char *name) {
    const char *value = apr_table_get(r->headers_in, name);
    return value ? value : std::string_view();
}

// Why a write by ambient credentials is not proven same-origin; nullopt if
// it is. Browsers replay Basic credentials and cookies cross-site, but a
// cross-site page can neither send a same-origin Sec-Fetch-Site or Origin
// nor read the page token (no CORS), which only GET .../CPTokens/session gives.
std::optional<std::string> cross_site_reason(request_rec *r) {
    if (r->method_number != M_POST || r->header_only)
        return "a write with browser credentials must be a POST";
    if (const char *site = apr_table_get(r->headers_in, "Sec-Fetch-Site"); site && std::strcmp(site, "same-origin") != 0)
        return "Sec-Fetch-Site is not same-origin";
    if (const char *origin = apr_table_get(r->headers_in, "Origin");
        origin && !origin_matches_host(origin, header_value(r, "Host")))
        return "Origin is not this site";
    const char *presented = apr_table_get(r->headers_in, csrf_header);
    if (!presented) return "no X-CPToken-CSRF page token (GET .../CPTokens/session gives it)";
    if (!csrf_token_matches(g_csrf_key, r->user, presented)) return "wrong X-CPToken-CSRF page token";
    return std::nullopt;
}

// The media type of a Content-Type value, lowercase, without parameters.
std::string media_type(std::string_view content_type) {
    content_type = content_type.substr(0, content_type.find(';'));
    while (!content_type.empty() && std::isspace(static_cast<unsigned char>(content_type.back())))
        content_type.remove_suffix(1);
    while (!content_type.empty() && std::isspace(static_cast<unsigned char>(content_type.front())))
        content_type.remove_prefix(1);
    std::string out(content_type);
    for (char &c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

enum class BodyRead { ok, too_large, failed };

// The request body, at most max_body_bytes: a Content-Length beyond that is
// refused before a byte is read, a chunked body as soon as it passes it.
BodyRead read_body(request_rec *r, std::string &body) {
    if (ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK) != OK) return BodyRead::failed;
    if (r->remaining > static_cast<apr_off_t>(max_body_bytes)) return BodyRead::too_large;
    if (!ap_should_client_block(r)) return BodyRead::ok;
    char buffer[8192];
    long got;
    while ((got = ap_get_client_block(r, buffer, sizeof buffer)) > 0) {
        if (body.size() + static_cast<std::size_t>(got) > max_body_bytes) return BodyRead::too_large;
        body.append(buffer, static_cast<std::size_t>(got));
    }
    return got < 0 ? BodyRead::failed : BodyRead::ok;
}

void note_usage_unavailable(request_rec *r, const std::string &notice) {
    static std::atomic<bool> said{false};  // once per child: every list would say it again
    if (said.exchange(true)) return;
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, TAG_MANAGER_USAGE "%s (said once per process)", notice.c_str());
}

int handle_manager(request_rec *r) {
    if (!r->handler || std::strcmp(r->handler, handler_name) != 0) return DECLINED;
    set_manager_headers(r);
    const std::optional<Route> found = route_of(r->uri ? r->uri : "");
    const Route route = found.value_or(Route{Api::uapi, "", ""});
    // A subrequest (mod_include, mod_negotiation) is not a call: only the client's own requests act.
    if (!found || r->main) return refuse(r, route, HTTP_NOT_FOUND, APLOG_INFO, "no manager function at this path");
    if (!r->user || !*r->user)
        return refuse(r, route, HTTP_FORBIDDEN, APLOG_ERR,
                      "no authenticated user: the manager's locations need authentication (AuthType cpanel, Basic, ...)");
    std::optional<StoredToken> caller;
    if (glue::admitted_by_token(r)) {
        caller = glue::admitting_token(r);
        if (!caller) return refuse(r, route, HTTP_FORBIDDEN, APLOG_ERR, "the token that was admitted is gone from the store");
    }
    const TokenRecord *caller_record = caller ? &caller->record : nullptr;
    r->allowed = (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_POST);
    if (r->method_number != M_GET && r->method_number != M_POST)
        return refuse(r, route, HTTP_METHOD_NOT_ALLOWED, APLOG_INFO, "method not allowed (GET or POST)", caller_record);
    // A token in Authorization: cpanel|whm keeps cPanel's GET convention; anything a browser replays
    // by itself (Basic, with a password or one of our tokens, cookies, SSO) proves it is this site's page.
    if (glue::browser_replays_credentials(r) &&
        function_kind(route.api, route.module, route.function) == FunctionKind::write)
        if (const auto why = cross_site_reason(r)) return refuse(r, route, HTTP_FORBIDDEN, APLOG_ERR, *why, caller_record);

    Params params;
    if (r->args && !add_form_params(r->args, params))
        return refuse(r, route, HTTP_OK, APLOG_INFO, "The query string is not valid URL encoding.", caller_record);
    if (r->method_number == M_POST) {
        std::string body;
        switch (read_body(r, body)) {
            case BodyRead::too_large:
                return refuse(r, route, HTTP_REQUEST_ENTITY_TOO_LARGE, APLOG_INFO,
                              "The request body is larger than " + std::to_string(max_body_bytes / 1024) + " KiB.",
                              caller_record);
            case BodyRead::failed:
                r->connection->keepalive = AP_CONN_CLOSE;
                return HTTP_BAD_REQUEST;
            case BodyRead::ok: break;
        }
        if (!body.empty()) {
            const std::string type = media_type(header_value(r, "Content-Type"));
            bool parsed = false;
            if (type == "application/x-www-form-urlencoded")
                parsed = add_form_params(body, params);
            else if (type == "application/json")
                parsed = add_json_params(body, params);
            else
                return refuse(r, route, HTTP_UNSUPPORTED_MEDIA_TYPE, APLOG_INFO,
                              "Send parameters as application/x-www-form-urlencoded or application/json.",
                              caller_record);
            if (!parsed)
                return refuse(r, route, HTTP_OK, APLOG_INFO,
                              type == "application/json"
                                  ? "The request body is not a JSON object of strings, numbers, booleans and arrays of them."
                                  : "The request body is not valid URL encoding.",
                              caller_record);
        }
    }

    ManagerRequest request;
    request.api = route.api;
    request.module = route.module;
    request.function = route.function;
    request.params = std::move(params);
    request.user = r->user;
    request.caller = std::move(caller);
    request.now = now_seconds();
    request.client = r->useragent_ip ? r->useragent_ip : "";
    request.csrf_token = csrf_token(g_csrf_key, r->user);

    TokenStore store(glue::store_dir(r), Access::read_write);
    if (glue::manager_writes_to_etcd())
        glue::write_to_etcd(store, [r, &route](const std::string &line) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, TAG_MANAGER_WROTE "manager: %s: %s", function_label(route).c_str(),
                          line.c_str());
        });
    // Last used from the usage reader (child_init); without one the API says it is unavailable.
    const ManagerResponse response = handle_call(request, store, usage_source());
    if (!response.notice.empty()) note_usage_unavailable(r, response.notice);
    if (!response.audit.empty())
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, TAG_MANAGER_WROTE "manager: %s: %s %s",
                      function_label(route).c_str(), response.audit.c_str(),
                      glue::who_fields(r, r->user, request.caller ? &request.caller->record : nullptr).c_str());
    return send_json(r, response.http_status, response.body);
}

int post_config(apr_pool_t *, apr_pool_t *, apr_pool_t *, server_rec *) {
    g_csrf_key = make_csrf_key();  // a new generation of processes, a new key: old page tokens stop
    return OK;
}

// Last used for this child's answers: from the usage reader httpd's parent
// started (CPTokenUsageSocket), never from usage.slots, which www-data writes.
void child_init(apr_pool_t *, server_rec *s) {
    if (const std::string error = glue::read_child_etcd_settings(); !error.empty())
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, TAG_MANAGER_ETCD "%s; the manager's writes fail (500)", error.c_str());
    const std::string socket = configured_usage_socket();
    if (socket.empty()) return;
    set_usage_source([socket](const std::vector<Digest> &digests) { return query_usage(socket, digests); });
}

// ------------------------------------------------------------ trampolines

extern "C" {

static int handle_manager_hook(request_rec *r) noexcept {
    try {
        return handle_manager(r);
    } catch (...) {
        glue::log_exception(r);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
}

static int post_config_hook(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s) noexcept {
    try {
        return post_config(pconf, plog, ptemp, s);
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, TAG_INTERNAL "cannot start: %s", e.what());
        return HTTP_INTERNAL_SERVER_ERROR;  // httpd refuses to start: no page token without a key
    }
}

static void child_init_hook(apr_pool_t *pchild, server_rec *s) noexcept {
    try {
        child_init(pchild, s);
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, TAG_INTERNAL "child init failed: %s", e.what());
    }
}

}  // extern "C"

}  // namespace

namespace cptoken::httpd_module {

void register_manager_hooks(apr_pool_t *) {
    ap_hook_post_config(post_config_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_handler(handle_manager_hook, nullptr, nullptr, APR_HOOK_MIDDLE);
}

}  // namespace cptoken::httpd_module

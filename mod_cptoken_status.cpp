// SPDX-License-Identifier: Apache-2.0
// mod_cptoken's status handler: `SetHandler cptoken-status` answers a load
// balancer's health check for a front-end whose token store mirrors etcd
// (issue 24): 200 while the location's store is fresh enough for
// CPTokenMaxStaleness, 503 exactly when requests that need a token would be
// refused there (mod_cptoken.cpp, refuse_stale_store), so that a partitioned
// front-end leaves the pool by itself. On a single host (no mirror, limit 0)
// it is always 200.
//
// Glue only: lib/store/mirror_state.hpp reads DIR/mirror.state and holds the
// rule (fresh_enough). Read fresh at every call, never from the request
// path's cache: a health check is rare, and must tell what the file says now.
//   the answer       JSON: status, mirror, state, revision, age_seconds,
//                    max_staleness, and why when stale; no-store
//   methods          GET and HEAD; others 405
// Nothing is logged: a load balancer asks every few seconds, and the
// requests it speaks for log CPT0207 themselves.

#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "http_request.h"

#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "store/mirror_proof.hpp"
#include "store/mirror_state.hpp"
#include "store/store.hpp"
#include "mod_cptoken.hpp"

extern "C" {
extern module AP_MODULE_DECLARE_DATA cptoken_module;
}

namespace {

using namespace cptoken;
using json = nlohmann::json;
namespace glue = cptoken::httpd_module;

const char *const handler_name = "cptoken-status";

// ------------------------------------------------------------ helpers

// What the location's store says of its freshness, as JSON, and whether
// requests needing a token would be served there.
json status_of(const std::string &dir, std::chrono::seconds max_staleness, bool &fresh) {
    std::optional<MirrorState> state;
    std::string unreadable;  // the file is there but says nothing we can use
    try {
        state = read_mirror_state(dir);
    } catch (const StoreError &e) {
        unreadable = e.kind() == StoreError::Kind::corrupt ? std::string(mirror_state_file) + " is corrupt"
                                                           : std::string(mirror_state_file) + " cannot be read";
    }
    const auto age = state ? verified_age(*state) : std::nullopt;
    fresh = fresh_enough(age, max_staleness);
    json body = {
        {"status", fresh ? "ok" : "stale"},
        {"mirror", state.has_value() || !unreadable.empty()},
        {"state", state ? json(state->state) : json(nullptr)},
        {"revision", state ? json(state->applied_revision) : json(nullptr)},
        {"cluster", state && !state->cluster_id.empty() ? json(state->cluster_id) : json(nullptr)},
        {"age_seconds", age ? json(std::chrono::duration<double>(*age).count()) : json(nullptr)},
        {"max_staleness", max_staleness.count()},
    };
    if (!fresh)
        body["reason"] = !unreadable.empty() ? unreadable
                         : age            ? "not verified for longer than max_staleness"
                                          : why_unverified(state);
    return body;
}

// ------------------------------------------------------------ the handler

int handle_status(request_rec *r) {
    if (!r->handler || std::strcmp(r->handler, handler_name) != 0) return DECLINED;
    apr_table_setn(r->err_headers_out, "Cache-Control", "no-store");
    ap_allow_methods(r, REPLACE_ALLOW, "GET", "HEAD", nullptr);  // the Allow header of a 405
    if (r->method_number != M_GET) return HTTP_METHOD_NOT_ALLOWED;
    bool fresh = false;
    const std::string body = status_of(glue::store_dir(r), glue::max_staleness(r), fresh).dump() + "\n";
    r->status = fresh ? HTTP_OK : HTTP_SERVICE_UNAVAILABLE;
    if (!fresh) apr_table_setn(r->err_headers_out, "Retry-After", glue::stale_retry_after_seconds);
    ap_set_content_type(r, "application/json");
    ap_set_content_length(r, static_cast<apr_off_t>(body.size()));
    if (!r->header_only) ap_rwrite(body.data(), static_cast<int>(body.size()), r);
    return OK;
}

// ------------------------------------------------------------ trampolines

extern "C" {

static int handle_status_hook(request_rec *r) noexcept {
    try {
        return handle_status(r);
    } catch (...) {
        glue::log_exception(r);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
}

}  // extern "C"

}  // namespace

namespace cptoken::httpd_module {

void register_status_hooks(apr_pool_t *) { ap_hook_handler(handle_status_hook, nullptr, nullptr, APR_HOOK_MIDDLE); }

}  // namespace cptoken::httpd_module

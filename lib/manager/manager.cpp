// SPDX-License-Identifier: Apache-2.0
#include "manager/manager.hpp"

#include <algorithm>
#include <charconv>
#include <mutex>
#include <set>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "token/names.hpp"
#include "token/network.hpp"

namespace cptoken::manager {

// nlohmann::json keeps object members sorted by name: cPanel's own order
// ("data", "errors", "messages", "metadata", "status", "warnings").
using json = nlohmann::json;

namespace {

std::mutex g_usage_mutex;
UsageSource g_usage_source;

// The latest expiry accepted: 9999-12-31T23:59:59Z, as the tool's.
constexpr Seconds latest_expiry = 253402300799;

// A function's failure: the API's error (status 0 / result 0), nothing written.
struct ApiError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// cPanel quotes what it names in curly quotes.
std::string curly(std::string_view text) { return "\u201c" + std::string(text) + "\u201d"; }

std::string missing_param(std::string_view name) { return "Provide the " + curly(name) + " parameter."; }

std::string invalid_name(std::string_view name) {
    return curly(name) + " is not a valid API token name. An API token name must not be longer than 50 characters "
                          "and may only contain the following 64 characters: a-z A-Z 0-9 _ -";
}

std::string no_such_token(std::string_view name) { return "The API token " + curly(name) + " does not exist."; }

// What a URL segment may be for an error to name it; anything else is not repeated back.
bool is_plain_word(std::string_view word) {
    if (word.empty() || word.size() > 64) return false;
    return std::all_of(word.begin(), word.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    });
}

const char *service_title(Service service) { return service == Service::whm ? "WHM" : "cPanel"; }

// A WHM token with the ACL "all" has every privilege of its owner, as one without ACLs.
bool has_limits(const TokenRecord &record) {
    if (record.limits.empty()) return false;
    return !(record.service == Service::whm &&
             std::find(record.limits.begin(), record.limits.end(), "all") != record.limits.end());
}

// Why a token may not manage tokens, or nullopt if it is a full-access token.
std::optional<std::string> limitation(const TokenRecord &record) {
    if (record.read_only) return "safe methods only";
    if (!record.scopes.empty()) return "scopes";
    if (has_limits(record)) return record.service == Service::whm ? "WHM privileges" : "cPanel features";
    return std::nullopt;
}

std::optional<long long> whole_number(std::string_view text) {
    long long value = 0;
    const char *begin = text.data(), *end = text.data() + text.size();
    if (begin != end && *begin == '+') ++begin;  // "+5" from a form is 5
    const auto [stop, error] = std::from_chars(begin, end, value);
    if (begin == end || error != std::errc() || stop != end) return std::nullopt;
    return value;
}

json networks_json(const std::vector<Network> &networks) {
    json out = json::array();
    for (const Network &network : networks) out.push_back(to_string(network));
    return out;
}

// Last used as the API shows it: known (a map, a missing digest never
// used) or unknown.
struct UsageView {
    bool available = false;
    std::map<Digest, Usage> uses;
};

// The token object of UAPI list and CPTokens (cPanel's fields, then ours).
json token_object(const StoredToken &token, const UsageView &usage, Seconds now) {
    const TokenRecord &record = token.record;
    json out;
    out["name"] = record.name;
    out["create_time"] = record.created;
    out["expires_at"] = record.never_expires() ? json(nullptr) : json(record.expires);
    out["has_full_access"] = has_limits(record) ? 0 : 1;
    out["features"] = has_limits(record) ? json(record.limits) : json::array();
    out["readonly"] = record.read_only ? 1 : 0;
    if (usage.available) {
        const auto found = usage.uses.find(token.digest);
        const bool used = found != usage.uses.end();
        out["last_used"] = used ? json(found->second.last_used) : json(nullptr);
        out["last_used_ip"] = used && !found->second.last_used_ip.empty() ? json(found->second.last_used_ip) : json(nullptr);
        out["uses"] = used ? found->second.uses : 0;
    } else {
        out["last_used"] = nullptr;
        out["last_used_ip"] = nullptr;
        out["uses"] = nullptr;
    }
    out["allowed_ips"] = networks_json(record.allowed_ips);
    out["scopes"] = record.scopes;
    out["expired"] = record.expired_at(now) ? 1 : 0;
    out["rotated"] = record.rotated() ? 1 : 0;
    // A rotated token's expiry is the end of its grace.
    out["grace_ends"] = record.rotated() && !record.never_expires() ? json(record.expires) : json(nullptr);
    return out;
}

// WHM's ACLs of a token: every privilege ("all") unless it has limits.
std::vector<std::string> acl_names(const TokenRecord &record) {
    return has_limits(record) ? record.limits : std::vector<std::string>{"all"};
}

// The token object of WHM API 1 create and update (acls as an array).
json whm_token_object(const TokenRecord &record) {
    json out;
    out["acls"] = acl_names(record);
    out["create_time"] = record.created;
    out["expires_at"] = record.never_expires() ? json(nullptr) : json(record.expires);
    out["name"] = record.name;
    out["whitelist_ips"] = record.allowed_ips.empty() ? json(nullptr) : networks_json(record.allowed_ips);
    return out;
}

// What a function returns when it succeeds.
struct Outcome {
    json data;
    json metadata = json::object();  // beyond the envelope's own fields
    std::string audit;               // what was written; empty: nothing
    bool data_absent = false;        // WHM API 1: a function that answers with metadata only
};

struct Function;

ManagerResponse envelope_for(Api api, const std::string &function, const Outcome *outcome, const std::string *error);

class Call {
public:
    Call(const ManagerRequest &request, TokenStore &store, const UsageSource &usage)
        : request_(request), store_(store), usage_source_(usage),
          service_(request.api == Api::whm ? Service::whm : Service::cpanel) {}

    ManagerResponse run();

    // ---- UAPI Tokens
    Outcome create_full_access();
    Outcome list();
    Outcome rename();
    Outcome revoke_one();
    // ---- UAPI CPTokens
    Outcome get();
    Outcome set_expiration();
    Outcome set_allowed_ips();
    Outcome rotate();
    Outcome revoke_many();
    Outcome revoke_all();
    Outcome revoke_unused();
    Outcome session();
    // ---- WHM API 1
    Outcome api_token_create();
    Outcome api_token_list();
    Outcome api_token_update();
    Outcome api_token_revoke();

private:
    // -- parameters
    std::optional<std::string> single(std::string_view name) const;
    std::string required(std::string_view name) const;
    std::string required_name(std::string_view name) const;
    Seconds expiry_from(const std::string &text) const;
    std::vector<Network> networks_from(const std::vector<std::string> &texts) const;
    // -- who may do what
    void check_caller(bool will_write) const;
    // -- tokens
    std::optional<StoredToken> current(std::string_view name) const;
    StoredToken existing(std::string_view name) const;
    std::vector<StoredToken> tokens() const;
    UsageView usage_of(const std::vector<StoredToken> &tokens);
    std::string new_token(const TokenRecord &record);
    TokenRecord edited(std::string_view name, const TokenChanges &changes);
    json token_with_usage(const std::string &name);

    ManagerResponse envelope(const Outcome *outcome, const std::string *error) const;

    const ManagerRequest &request_;
    TokenStore &store_;
    const UsageSource &usage_source_;
    const Service service_;
    std::string notice_;
};

struct Function {
    Api api;
    const char *module;  // "" for WHM API 1
    const char *name;
    FunctionKind kind;
    Outcome (Call::*run)();
};

constexpr FunctionKind reads = FunctionKind::read, writes = FunctionKind::write;

const Function functions[] = {
    {Api::uapi, "Tokens", "create_full_access", writes, &Call::create_full_access},
    {Api::uapi, "Tokens", "list", reads, &Call::list},
    {Api::uapi, "Tokens", "rename", writes, &Call::rename},
    {Api::uapi, "Tokens", "revoke", writes, &Call::revoke_one},
    {Api::uapi, "CPTokens", "get", reads, &Call::get},
    {Api::uapi, "CPTokens", "set_expiration", writes, &Call::set_expiration},
    {Api::uapi, "CPTokens", "set_allowed_ips", writes, &Call::set_allowed_ips},
    {Api::uapi, "CPTokens", "rotate", writes, &Call::rotate},
    {Api::uapi, "CPTokens", "revoke", writes, &Call::revoke_many},
    {Api::uapi, "CPTokens", "revoke_all", writes, &Call::revoke_all},
    {Api::uapi, "CPTokens", "revoke_unused", writes, &Call::revoke_unused},
    {Api::uapi, "CPTokens", "session", reads, &Call::session},
    {Api::whm, "", "api_token_create", writes, &Call::api_token_create},
    {Api::whm, "", "api_token_list", reads, &Call::api_token_list},
    {Api::whm, "", "api_token_update", writes, &Call::api_token_update},
    {Api::whm, "", "api_token_revoke", writes, &Call::api_token_revoke},
};

const Function *find_function(Api api, std::string_view module, std::string_view name) {
    for (const Function &function : functions)
        if (function.api == api && (api == Api::whm || module == function.module) && name == function.name)
            return &function;
    return nullptr;
}

// ------------------------------------------------------------ the call

ManagerResponse Call::run() {
    const Function *function = find_function(request_.api, request_.module, request_.function);
    try {
        if (!function) {
            if (request_.api == Api::whm)
                throw ApiError("Unknown app requested for this version (1) of the API" +
                               (is_plain_word(request_.function) ? ": " + request_.function : std::string()) + ".");
            const bool module_known = std::any_of(std::begin(functions), std::end(functions), [&](const Function &f) {
                return f.api == Api::uapi && request_.module == f.module;
            });
            if (!module_known)
                throw ApiError("Failed to load module" +
                               (is_plain_word(request_.module) ? " " + curly(request_.module) : std::string()) + ".");
            throw ApiError("Could not find function" +
                           (is_plain_word(request_.function) ? " " + curly(request_.function) : std::string()) +
                           " in module " + curly(request_.module) + ".");
        }
        if (request_.api == Api::whm) {
            const auto version = single("api.version");
            if (version != "1") throw ApiError("This server offers WHM API 1 only: call it with api.version=1.");
        }
        // cPanel's API acts for whoever authenticated, and so does this one: a parameter naming
        // someone else must not look as if it was obeyed.
        for (const char *foreign : {"user", "cpanel_jsonapi_user"})
            if (request_.params.count(foreign))
                throw ApiError("This API acts for the authenticated user only: the " + curly(foreign) +
                               " parameter is not accepted.");
        if (!is_valid_user(request_.user))
            throw ApiError("This account cannot have API tokens: its name is not 1-64 characters of a-z 0-9 . _ - "
                           "starting with a letter or a digit.");
        check_caller(function->kind == FunctionKind::write);
        const Outcome outcome = (this->*function->run)();
        return envelope(&outcome, nullptr);
    } catch (const ApiError &e) {
        const std::string message = e.what();
        return envelope(nullptr, &message);
    }
}

ManagerResponse Call::envelope(const Outcome *outcome, const std::string *error) const {
    ManagerResponse response = envelope_for(request_.api, request_.function, outcome, error);
    response.notice = notice_;
    return response;
}

// The API's envelope around a function's outcome, or around its error.
ManagerResponse envelope_for(Api api, const std::string &function, const Outcome *outcome, const std::string *error) {
    json body;
    if (api == Api::uapi) {
        body["data"] = outcome ? outcome->data : json(nullptr);
        body["errors"] = error ? json::array({*error}) : json(nullptr);
        body["messages"] = nullptr;
        body["metadata"] = outcome ? outcome->metadata : json::object();
        body["status"] = outcome ? 1 : 0;
        body["warnings"] = nullptr;
    } else {
        if (outcome && !outcome->data_absent) body["data"] = outcome->data;
        json metadata = outcome ? outcome->metadata : json::object();
        metadata["command"] = function;
        metadata["reason"] = error ? *error : "OK";
        metadata["result"] = outcome ? 1 : 0;
        metadata["version"] = 1;
        body["metadata"] = std::move(metadata);
    }
    ManagerResponse response;
    response.succeeded = outcome != nullptr;
    // Everything beyond ASCII as \u escapes; invalid UTF-8 (a name that was refused) replaced.
    response.body = body.dump(-1, ' ', true, json::error_handler_t::replace);
    if (outcome) response.audit = outcome->audit;
    return response;
}

// ------------------------------------------------------------ parameters

std::optional<std::string> Call::single(std::string_view name) const {
    const auto [first, last] = request_.params.equal_range(std::string(name));
    if (first == last) return std::nullopt;
    if (std::next(first) != last) throw ApiError("Provide the " + curly(name) + " parameter only once.");
    return first->second;
}

std::string Call::required(std::string_view name) const {
    auto value = single(name);
    if (!value) throw ApiError(missing_param(name));
    return std::move(*value);
}

std::string Call::required_name(std::string_view name) const {
    std::string value = required(name);
    if (!is_valid_token_name(value)) throw ApiError(invalid_name(value));
    return value;
}

// cPanel's expires_at: unix seconds; empty or 0 never; otherwise in the future.
Seconds Call::expiry_from(const std::string &text) const {
    if (text.empty()) return 0;
    const auto value = whole_number(text);
    if (!value || *value < 0 || *value > latest_expiry)
        throw ApiError("The " + curly("expires_at") +
                       " parameter must be a unix time (whole seconds since 1970, before the year 10000), or 0 for "
                       "never.");
    if (*value == 0) return 0;
    if (*value <= request_.now) throw ApiError("The " + curly(text) + " value must be a future date.");
    return *value;
}

// An allowlist as WHM takes it: at most 100 addresses or CIDR networks,
// given twice kept once.
std::vector<Network> Call::networks_from(const std::vector<std::string> &texts) const {
    if (texts.size() > max_allowed_networks)
        throw ApiError("You have entered " + curly(std::to_string(texts.size())) +
                       " IP addresses, which is above the limit of " + std::to_string(max_allowed_networks) + ".");
    std::vector<Network> networks;
    for (const std::string &text : texts) {
        const auto network = parse_network(text);
        if (!network) {
            std::string message = "Invalid IP address or CIDR range specified: " + text;
            if (const auto meant = parse_network_clearing_host_bits(text))
                message += " (host bits are set: did you mean " + to_string(*meant) + "?)";
            throw ApiError(message);
        }
        if (std::find(networks.begin(), networks.end(), *network) == networks.end()) networks.push_back(*network);
    }
    return networks;
}

// ------------------------------------------------------------ who may do what

// A token manages the tokens of its own service only, and writes only with
// full access (a safe-methods, scoped or limited token reads). Ambient
// credentials are the user's own: all of it (the handler held their writes
// to the same-origin rules).
void Call::check_caller(bool will_write) const {
    if (!request_.caller) return;
    const TokenRecord &caller = request_.caller->record;
    if (caller.service != service_)
        throw ApiError(std::string("This API token cannot manage ") + service_title(service_) +
                       " tokens: it is a " + service_title(caller.service) + " token.");
    if (!will_write) return;
    if (const auto why = limitation(caller))
        throw ApiError("This API token cannot manage tokens: it is limited (" + *why + ").");
}

// ------------------------------------------------------------ tokens

// The user's current token NAME of this API's service.
std::optional<StoredToken> Call::current(std::string_view name) const {
    auto found = store_.find_by_name(request_.user, name);
    if (!found || found->record.service != service_) return std::nullopt;
    return found;
}

StoredToken Call::existing(std::string_view name) const {
    auto found = current(name);
    if (!found) throw ApiError(no_such_token(name));
    return std::move(*found);
}

// The user's live tokens of this API's service, each current one followed by its rotated ones.
std::vector<StoredToken> Call::tokens() const {
    std::vector<StoredToken> all = store_.list(request_.user);
    std::erase_if(all, [&](const StoredToken &token) { return token.record.service != service_; });
    return all;
}

UsageView Call::usage_of(const std::vector<StoredToken> &tokens) {
    UsageView view;
    if (!usage_source_) return view;
    std::vector<Digest> digests;
    for (const StoredToken &token : tokens) digests.push_back(token.digest);
    try {
        view.uses = usage_source_(digests);
        view.available = true;
    } catch (const std::exception &e) {
        notice_ = std::string("last used is unavailable: ") + e.what();
        view.uses.clear();
    }
    return view;
}

// Adds a token with `record` and returns its secret, shown this once.
std::string Call::new_token(const TokenRecord &record) {
    std::size_t live = 0;
    for (const StoredToken &token : store_.list(request_.user)) live += token.record.rotated() ? 0 : 1;
    if (live >= max_tokens_per_user)
        throw ApiError("You cannot have more than " + std::to_string(max_tokens_per_user) +
                       " API tokens. Revoke the ones you no longer use first.");
    std::string token = generate_token();
    try {
        store_.add(token_digest(token), record);
    } catch (const StoreError &e) {
        if (e.kind() != StoreError::Kind::duplicate) throw;
        throw ApiError("A conflicting API token with the name " + curly(record.name) + " already exists.");
    }
    return token;
}

// store.edit() of the user's token NAME of this service, with the API's errors.
TokenRecord Call::edited(std::string_view name, const TokenChanges &changes) {
    existing(name);
    try {
        return store_.edit(request_.user, name, changes);
    } catch (const StoreError &e) {
        if (e.kind() == StoreError::Kind::not_found) throw ApiError(no_such_token(name));
        if (e.kind() == StoreError::Kind::duplicate && changes.name)
            throw ApiError("An API token with the name " + curly(*changes.name) + " already exists.");
        throw;
    }
}

json Call::token_with_usage(const std::string &name) {
    const StoredToken token = existing(name);
    return token_object(token, usage_of({token}), request_.now);
}

// ------------------------------------------------------------ UAPI Tokens

Outcome Call::create_full_access() {
    const std::string name = required_name("name");
    const Seconds expires = expiry_from(single("expires_at").value_or(""));
    const std::string readonly = single("readonly").value_or("0");
    if (readonly != "0" && readonly != "1" && !readonly.empty())
        throw ApiError("The " + curly("readonly") + " parameter must be 0 or 1.");
    TokenRecord record{request_.user, name, request_.now, expires, {}};
    record.service = service_;
    record.read_only = readonly == "1";
    Outcome outcome;
    outcome.data = {{"create_time", record.created}, {"token", new_token(record)}};
    outcome.audit = "created token " + name + (record.read_only ? " (safe methods only)" : "");
    return outcome;
}

Outcome Call::list() {
    const std::vector<StoredToken> all = tokens();
    const UsageView usage = usage_of(all);
    Outcome outcome;
    outcome.data = json::array();
    for (const StoredToken &token : all) outcome.data.push_back(token_object(token, usage, request_.now));
    outcome.metadata["transformed"] = 1;
    outcome.metadata["cptoken_usage"] = usage.available ? "available" : "unavailable";
    return outcome;
}

Outcome Call::rename() {
    const std::string name = required("name");
    const std::string new_name = required("new_name");
    if (new_name == name)
        throw ApiError(curly("new_name") + " must be a different value from " + curly("name") + ".");
    if (!is_valid_token_name(new_name)) throw ApiError(invalid_name(new_name));
    if (!is_valid_token_name(name)) throw ApiError(no_such_token(name));
    TokenChanges changes;
    changes.name = new_name;
    edited(name, changes);
    Outcome outcome;
    outcome.data = nullptr;
    outcome.audit = "renamed token " + name + " to " + new_name;
    return outcome;
}

// cPanel's revoke never fails on a name it does not know: data 1 if a token went, 0 if there was none.
Outcome Call::revoke_one() {
    const std::string name = required("name");
    if (name.empty()) throw ApiError(missing_param("name"));
    Outcome outcome;
    outcome.data = 0;
    if (!is_valid_token_name(name) || !current(name)) return outcome;
    try {
        store_.revoke(request_.user, name);
    } catch (const StoreError &e) {
        if (e.kind() != StoreError::Kind::not_found) throw;
        return outcome;  // revoked meanwhile
    }
    outcome.data = 1;
    outcome.audit = "revoked token " + name;
    return outcome;
}

// ------------------------------------------------------------ UAPI CPTokens

Outcome Call::get() {
    const std::string name = required("name");
    if (!is_valid_token_name(name)) throw ApiError(no_such_token(name));
    Outcome outcome;
    outcome.data = token_with_usage(name);
    return outcome;
}

Outcome Call::set_expiration() {
    const std::string name = required_name("name");
    TokenChanges changes;
    changes.expires = expiry_from(required("expires_at"));
    edited(name, changes);
    Outcome outcome;
    outcome.data = token_with_usage(name);
    outcome.audit = "set the expiry of token " + name + " to " +
                    (*changes.expires ? format_iso8601(*changes.expires) : std::string("never"));
    return outcome;
}

Outcome Call::set_allowed_ips() {
    const std::string name = required_name("name");
    const std::vector<std::string> given = repeated_param(request_.params, "allowed_ip");
    const std::string any = single("any").value_or("0");
    if (any != "0" && any != "1" && !any.empty()) throw ApiError("The " + curly("any") + " parameter must be 0 or 1.");
    if (any == "1" && !given.empty())
        throw ApiError("Provide either " + curly("allowed_ip") + " or " + curly("any") + ", not both.");
    if (any != "1" && given.empty())
        throw ApiError("Provide the " + curly("allowed_ip") + " parameter (repeated, or allowed_ip-0, allowed_ip-1, "
                       "...), or " + curly("any") + "=1 to allow any address.");
    TokenChanges changes;
    changes.allowed_ips = networks_from(given);
    edited(name, changes);
    Outcome outcome;
    outcome.data = token_with_usage(name);
    std::string list;
    for (const Network &network : *changes.allowed_ips) list += (list.empty() ? "" : ", ") + to_string(network);
    outcome.audit = "set the allowed addresses of token " + name + " to " + (list.empty() ? "any" : list);
    return outcome;
}

Outcome Call::rotate() {
    const std::string name = required_name("name");
    const std::string grace_text = single("grace").value_or("0");
    const auto grace = grace_text.empty() ? std::optional<long long>(0) : whole_number(grace_text);
    if (!grace || *grace < 0 || *grace > max_rotation_grace)
        throw ApiError("The " + curly("grace") + " parameter must be a number of seconds from 0 to " +
                       std::to_string(max_rotation_grace) + ".");
    const StoredToken old = existing(name);
    if (old.record.expired_at(request_.now))
        throw ApiError("The API token " + curly(name) + " has expired: it cannot be rotated. Create a new one.");
    const std::string token = generate_token();
    Rotation rotation;
    try {
        rotation = store_.rotate(request_.user, name, token_digest(token), request_.now, *grace);
    } catch (const StoreError &e) {
        if (e.kind() == StoreError::Kind::not_found) throw ApiError(no_such_token(name));
        if (e.kind() == StoreError::Kind::full)
            throw ApiError("The API token " + curly(name) + " has " + std::to_string(max_predecessors) +
                           " replaced tokens still in their grace period: wait for one to end, or rotate with "
                           "grace 0.");
        throw;
    }
    Outcome outcome;
    outcome.data = {{"create_time", rotation.token.record.created},
                    {"token", token},
                    {"grace_ends", rotation.grace_ends ? json(rotation.grace_ends) : json(nullptr)}};
    outcome.audit = "rotated token " + name + " (grace " + std::to_string(*grace) + " s)";
    return outcome;
}

// Each name on its own: one unknown or invalid name never stops the others' revocation.
Outcome Call::revoke_many() {
    std::vector<std::string> names = repeated_param(request_.params, "name");
    if (names.empty()) throw ApiError(missing_param("name"));
    std::vector<std::string> revoked, not_found;
    std::set<std::string> seen;
    store_.batch([&](TokenBatch &batch) {
        revoked.clear(), not_found.clear(), seen.clear();
        for (const std::string &name : names) {
            if (!seen.insert(name).second) continue;
            const auto token = is_valid_token_name(name) ? batch.find_by_name(request_.user, name) : std::nullopt;
            if (token && token->record.service == service_) {
                batch.revoke(request_.user, name);
                revoked.push_back(name);
            } else {
                not_found.push_back(name);
            }
        }
        return !revoked.empty();
    });
    Outcome outcome;
    outcome.data = {{"revoked", revoked}, {"not_found", not_found}};
    if (!revoked.empty()) {
        outcome.audit = "revoked tokens";
        for (const std::string &name : revoked) outcome.audit += " " + name;
    }
    return outcome;
}

Outcome Call::revoke_all() {
    std::size_t count = 0;
    store_.batch([&](TokenBatch &batch) {
        count = 0;
        for (const StoredToken &token : batch.list(request_.user))
            if (!token.record.rotated() && token.record.service == service_)
                count += batch.revoke(request_.user, token.record.name);
        return count > 0;
    });
    Outcome outcome;
    outcome.data = {{"revoked", count}};
    if (count) outcome.audit = "revoked all " + std::to_string(count) + " " + service_name(service_) + " tokens";
    return outcome;
}

// A token is unused for N days if neither it nor a token it replaced (still
// in its grace) was used since; never used counts from its creation. The
// token that authenticated this call is in use: never revoked here.
Outcome Call::revoke_unused() {
    const std::string days_text = required("days");
    const auto days = whole_number(days_text);
    if (!days || *days < 1 || *days > max_unused_days)
        throw ApiError("The " + curly("days") + " parameter must be a whole number of days from 1 to " +
                       std::to_string(max_unused_days) + ".");
    const UsageView usage = usage_of(tokens());
    if (!usage.available)
        throw ApiError("Last used is unavailable here, so unused tokens cannot be told apart: nothing was revoked.");
    const Seconds cutoff = request_.now - static_cast<Seconds>(*days) * 86400;
    const auto used_since_cutoff = [&](const StoredToken &token) {
        const auto found = usage.uses.find(token.digest);
        const bool used = found != usage.uses.end();
        if (!used && token.record.rotated()) return false;  // a replaced token never used keeps nothing
        return !unused_since(token.record, used ? std::optional<Usage>(found->second) : std::nullopt, cutoff);
    };
    std::vector<std::string> revoked;
    store_.batch([&](TokenBatch &batch) {
        revoked.clear();
        // The store as it is now (list() gives each current token followed by its rotated ones).
        const std::vector<StoredToken> all = batch.list(request_.user);
        for (std::size_t i = 0; i < all.size();) {
            std::size_t end = i + 1;
            while (end < all.size() && all[end].record.rotated()) ++end;
            const StoredToken &head = all[i];
            bool keep = head.record.rotated() || head.record.service != service_;
            for (std::size_t k = i; k < end && !keep; ++k)
                keep = used_since_cutoff(all[k]) || (request_.caller && all[k].digest == request_.caller->digest);
            if (!keep) {
                batch.revoke(request_.user, head.record.name);
                revoked.push_back(head.record.name);
            }
            i = end;
        }
        return !revoked.empty();
    });
    Outcome outcome;
    outcome.data = {{"revoked", revoked}};
    if (!revoked.empty()) {
        outcome.audit = "revoked tokens unused for " + std::to_string(*days) + " days:";
        for (const std::string &name : revoked) outcome.audit += " " + name;
    }
    return outcome;
}

Outcome Call::session() {
    Outcome outcome;
    outcome.data = {{"user", request_.user}, {"csrf_token", request_.csrf_token}, {"service", service_name(service_)}};
    return outcome;
}

// ------------------------------------------------------------ WHM API 1

// acl / acl-N, kept as information: a token with any ACL but "all" is
// limited (and so cannot manage tokens here); no ACL, or "all", is full access.
static std::vector<std::string> acls_from(const std::vector<std::string> &given) {
    if (given.size() > max_limits)
        throw ApiError("Provide at most " + std::to_string(max_limits) + " ACLs.");
    std::vector<std::string> acls;
    for (const std::string &acl : given) {
        if (!is_valid_limit(acl)) throw ApiError("Invalid ACL name: " + acl);
        if (acl == "all") return {};
        if (std::find(acls.begin(), acls.end(), acl) == acls.end()) acls.push_back(acl);
    }
    return acls;
}

Outcome Call::api_token_create() {
    const std::string name = required_name("token_name");
    const Seconds expires = expiry_from(single("expires_at").value_or(""));
    std::vector<std::string> ips = repeated_param(request_.params, "whitelist_ip");
    if (ips.size() == 1 && ips.front() == "any") ips.clear();
    TokenRecord record{request_.user, name, request_.now, expires, networks_from(ips)};
    record.service = service_;
    record.limits = acls_from(repeated_param(request_.params, "acl"));
    const std::string token = new_token(record);
    Outcome outcome;
    outcome.data = whm_token_object(record);
    outcome.data["token"] = token;
    outcome.audit = "created token " + name;
    return outcome;
}

Outcome Call::api_token_list() {
    std::vector<StoredToken> all = tokens();
    // Keyed by name, as WHM's: the current tokens (a rotated one shares its name).
    std::erase_if(all, [](const StoredToken &token) { return token.record.rotated(); });
    const UsageView usage = usage_of(all);
    json listed = json::object();
    for (const StoredToken &token : all) {
        const TokenRecord &record = token.record;
        json entry = whm_token_object(record);
        json acls = json::object();
        for (const std::string &acl : acl_names(record)) acls[acl] = 1;
        entry["acls"] = std::move(acls);
        const json ours = token_object(token, usage, request_.now);
        for (const char *key : {"last_used", "last_used_ip", "uses", "scopes", "readonly", "expired"})
            entry[key] = ours[key];
        listed[record.name] = std::move(entry);
    }
    Outcome outcome;
    outcome.data = {{"tokens", std::move(listed)}};
    outcome.metadata["cptoken_usage"] = usage.available ? "available" : "unavailable";
    return outcome;
}

Outcome Call::api_token_update() {
    const std::string name = required_name("token_name");
    if (!repeated_param(request_.params, "acl").empty())
        throw ApiError("The ACLs of a token cannot be changed here (they are kept as information only): "
                       "create a new token instead.");
    TokenChanges changes;
    if (const auto new_name = single("new_name"); new_name && *new_name != name) {
        if (!is_valid_token_name(*new_name)) throw ApiError(invalid_name(*new_name));
        changes.name = *new_name;
    }
    if (const auto expires = single("expires_at")) changes.expires = expiry_from(*expires);
    // WHM clears the list with whitelist_ip=any; any=1 (as CPTokens/set_allowed_ips) does too.
    std::vector<std::string> ips = repeated_param(request_.params, "whitelist_ip");
    const std::string any = single("any").value_or("0");
    if (any != "0" && any != "1" && !any.empty()) throw ApiError("The " + curly("any") + " parameter must be 0 or 1.");
    if (any == "1" && !ips.empty())
        throw ApiError("Provide either " + curly("whitelist_ip") + " or " + curly("any") + ", not both.");
    if (any == "1") changes.allowed_ips = std::vector<Network>{};
    if (!ips.empty()) {
        if (ips.size() == 1 && ips.front() == "any") ips.clear();
        changes.allowed_ips = networks_from(ips);
    }
    if (!changes.name && !changes.expires && !changes.allowed_ips)
        throw ApiError("Specify a new name, updated ACLs, or IPs.");
    const TokenRecord record = edited(name, changes);
    Outcome outcome;
    outcome.data = whm_token_object(record);
    outcome.audit = "updated token " + name + (changes.name ? " (now " + *changes.name + ")" : std::string());
    return outcome;
}

Outcome Call::api_token_revoke() {
    const std::vector<std::string> names = repeated_param(request_.params, "token_name");
    if (names.empty()) throw ApiError(missing_param("token_name"));
    std::vector<std::string> revoked;
    store_.batch([&](TokenBatch &batch) {
        revoked.clear();
        for (const std::string &name : names) {
            if (!is_valid_token_name(name)) continue;
            const auto token = batch.find_by_name(request_.user, name);
            if (!token || token->record.service != service_) continue;
            batch.revoke(request_.user, name);
            revoked.push_back(name);
        }
        return !revoked.empty();
    });
    Outcome outcome;
    outcome.data_absent = true;
    if (!revoked.empty()) {
        outcome.audit = "revoked tokens";
        for (const std::string &name : revoked) outcome.audit += " " + name;
    }
    return outcome;
}

}  // namespace

// ------------------------------------------------------------ interface

void set_usage_source(UsageSource source) {
    std::lock_guard<std::mutex> lock(g_usage_mutex);
    g_usage_source = std::move(source);
}

UsageSource usage_source() {
    std::lock_guard<std::mutex> lock(g_usage_mutex);
    return g_usage_source;
}

FunctionKind function_kind(Api api, std::string_view module, std::string_view function) noexcept {
    const Function *found = find_function(api, module, function);
    return found ? found->kind : FunctionKind::unknown;
}

ManagerResponse handle_call(const ManagerRequest &request, TokenStore &store, const UsageSource &usage) {
    return Call(request, store, usage).run();
}

ManagerResponse refusal(Api api, const std::string &function, const std::string &message, int http_status) {
    ManagerResponse response = envelope_for(api, function, nullptr, &message);
    response.http_status = http_status;
    return response;
}

std::optional<Route> route_of(std::string_view path) {
    std::vector<std::string_view> segments;  // "/a/b/" is "", "a", "b", ""
    for (std::size_t start = 0;;) {
        const auto slash = path.find('/', start);
        segments.push_back(path.substr(start, slash - start));
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    const std::size_t n = segments.size();
    const auto plain = [](std::string_view segment) { return !segment.empty(); };
    if (n >= 3 && segments[n - 3] == "execute" && plain(segments[n - 2]) && plain(segments[n - 1]))
        return Route{Api::uapi, std::string(segments[n - 2]), std::string(segments[n - 1])};
    if (n >= 2 && segments[n - 2] == "json-api" && plain(segments[n - 1]))
        return Route{Api::whm, "", std::string(segments[n - 1])};
    return std::nullopt;
}

std::string function_label(const Route &route) {
    if (function_kind(route.api, route.module, route.function) == FunctionKind::unknown) return "(unknown)";
    return route.api == Api::uapi ? route.module + "::" + route.function : route.function;
}

}  // namespace cptoken::manager

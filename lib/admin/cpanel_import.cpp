// SPDX-License-Identifier: Apache-2.0
// lib/admin/: changing tokens from outside sources (cPanel's files); uses token/ and store/.
#include "admin/cpanel_import.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "token/names.hpp"
#include "admin/user_written_file.hpp"

namespace cptoken {

namespace {

using json = nlohmann::ordered_json;  // entries reported in the file's order
namespace fs = std::filesystem;

// The latest time format_iso8601 and parse_when deal in: 9999-12-31T23:59:59Z.
constexpr Seconds latest_time = 253402300799;

// How a message names an entry: a digest prefix, never the whole digest.
std::string entry_label(const Digest &digest, std::string_view name) {
    std::string label = "token " + digest_hex(digest).substr(0, 16);
    if (!name.empty()) label += " (\"" + std::string(name) + "\")";
    return label;
}

[[noreturn]] void bad(std::string_view path, const std::string &what) {
    throw ImportError(std::string(path) + ": " + what);
}

// Text from the file quoted in a message: short, and one line.
std::string quote_text(std::string_view text) {
    std::string out(text.substr(0, 60));
    for (char &c : out)
        if (static_cast<unsigned char>(c) < 0x20) c = '?';
    return "\"" + out + (text.size() > 60 ? "...\"" : "\"");
}

// An epoch time as cPanel writes it: a non-negative integer (Perl may write
// it as a string of digits); nullopt for null.
std::optional<Seconds> epoch_of(const json &value, const std::string &where) {
    if (value.is_null()) return std::nullopt;
    std::optional<Seconds> seconds;
    if (value.is_number_unsigned()) {
        if (value.get<std::uint64_t>() <= static_cast<std::uint64_t>(latest_time)) seconds = value.get<Seconds>();
    } else if (value.is_number_integer()) {
        if (value.get<std::int64_t>() >= 0 && value.get<std::int64_t>() <= latest_time) seconds = value.get<Seconds>();
    } else if (value.is_string()) {
        const std::string &text = value.get_ref<const std::string &>();
        if (!text.empty() && text.size() <= 12 && std::all_of(text.begin(), text.end(), [](char c) {
                return c >= '0' && c <= '9';
            }) && std::stoll(text) <= latest_time)
            seconds = std::stoll(text);
    }
    if (!seconds) throw ImportError(where + ": expected a time in seconds since 1970 (up to 9999-12-31), or null");
    return seconds;
}

// A flag as cPanel writes it: true/false, 1/0 (Perl), or "1"/"0"; absent or null: false.
bool flag_of(const json &entry, const char *key, const std::string &where) {
    const auto found = entry.find(key);
    if (found == entry.end() || found->is_null()) return false;
    if (found->is_boolean()) return found->get<bool>();
    if (found->is_number_integer() && (*found == 0 || *found == 1)) return *found == 1;
    if (found->is_string() && (*found == "0" || *found == "1")) return *found == "1";
    throw ImportError(where + ": " + key + " must be true, false, 1 or 0");
}

// A list of feature or ACL names: an array of names, or (acls) an object
// whose keys are names and whose values are flags (the granted ones count).
std::vector<std::string> limits_of(const json &value, const char *key, bool object_allowed, const std::string &where) {
    std::vector<std::string> names;
    const std::string field = where + ": " + key;
    if (value.is_array()) {
        for (const json &item : value) {
            if (!item.is_string() || !is_valid_limit(item.get_ref<const std::string &>()))
                throw ImportError(field + ": " + (item.is_string() ? quote_text(item.get_ref<const std::string &>()) + " is"
                                                                   : std::string("an item is")) +
                                  " not a valid name (1-100 characters of A-Z a-z 0-9 _ - . :)");
            names.push_back(item.get<std::string>());
        }
    } else if (value.is_object() && object_allowed) {
        for (const auto &[name, granted] : value.items()) {
            if (!is_valid_limit(name))
                throw ImportError(field + ": " + quote_text(name) + " is not a valid name (1-100 characters of A-Z a-z 0-9 _ - . :)");
            if (flag_of(value, name.c_str(), field)) names.push_back(name);
        }
    } else {
        throw ImportError(field + (object_allowed ? ": expected a list of names or an object of flags"
                                                  : ": expected a list of names"));
    }
    if (names.size() > max_limits)
        throw ImportError(field + ": more than " + std::to_string(max_limits) + " names");
    return names;
}

std::vector<Network> allowlist_of(const json &value, const std::string &where, std::vector<std::string> &notes) {
    std::vector<Network> networks;
    if (value.is_null()) return networks;
    const std::string field = where + ": whitelist_ips";
    if (!value.is_array()) throw ImportError(field + ": expected a list of addresses or networks");
    if (value.size() > max_allowed_networks)
        throw ImportError(field + ": " + std::to_string(value.size()) + " entries, more than cPanel's " +
                          std::to_string(max_allowed_networks));
    for (const json &item : value) {
        const auto text = item.is_string() ? std::optional<std::string>(item.get<std::string>()) : std::nullopt;
        const auto network = text ? parse_network_clearing_host_bits(*text) : std::nullopt;
        if (!network)
            throw ImportError(field + ": " + (text ? quote_text(*text) + " is" : std::string("an item is")) +
                              " not an IPv4 or IPv6 address or network");
        if (!parse_network(*text)) notes.push_back(*text + " normalised to " + to_string(*network));
        networks.push_back(*network);
    }
    return networks;
}

CpanelEntry entry_of(const std::string &key, const json &value, std::size_t position, std::string_view path,
                     Service service) {
    CpanelEntry entry;
    // The name first, so that every later message can say which entry it is about.
    const auto name = value.is_object() ? value.find("name") : value.end();
    const bool name_valid = value.is_object() && name != value.end() && name->is_string() &&
                            is_valid_token_name(name->get_ref<const std::string &>());
    const auto digest = digest_from_hex(key);
    if (!digest)  // the key is not echoed: it could be anything, a token pasted by mistake too
        bad(path, "entry " + std::to_string(position) +
                      (name_valid ? " (\"" + name->get<std::string>() + "\")" : std::string()) +
                      ": the key is not a SHA-512 digest (128 lowercase hex digits)");
    entry.digest = *digest;
    const std::string where = std::string(path) + ": " + entry_label(entry.digest, name_valid ? name->get<std::string>() : "");
    if (!value.is_object()) throw ImportError(where + ": expected an object");
    if (!name_valid)
        throw ImportError(where + (name == value.end() ? ": no name"
                                                       : ": the name is not 1-50 characters of A-Z a-z 0-9 _ -"));
    entry.name = name->get<std::string>();

    const auto created = value.find("create_time");
    if (created == value.end()) throw ImportError(where + ": no create_time");
    const auto created_at = epoch_of(*created, where + ": create_time");
    if (!created_at) throw ImportError(where + ": create_time: expected a time in seconds since 1970, not null");
    entry.created = *created_at;
    const auto expires = value.find("expires_at");
    if (expires != value.end()) entry.expires = epoch_of(*expires, where + ": expires_at").value_or(0);
    const auto allowlist = value.find("whitelist_ips");
    if (allowlist != value.end()) entry.allowed_ips = allowlist_of(*allowlist, where, entry.notes);

    // What cPanel would refuse this token that a token here would not be refused.
    const bool full_access = flag_of(value, "has_full_access", where);
    const bool read_only = flag_of(value, "readonly", where);
    if (service == Service::cpanel) {
        const auto features = value.find("features");
        const bool has_features = features != value.end() && !features->is_null();
        std::vector<std::string> names = has_features ? limits_of(*features, "features", false, where)
                                                      : std::vector<std::string>{};
        if (!full_access) entry.limited = true, entry.limits = std::move(names);
    } else {
        // cPanel: no acls, or "all" among the granted ones, is full access (what the reseller has).
        const auto acls = value.find("acls");
        if (acls != value.end() && !acls->is_null()) {
            std::vector<std::string> granted = limits_of(*acls, "acls", true, where);
            if (std::find(granted.begin(), granted.end(), "all") == granted.end())
                entry.limited = true, entry.limits = std::move(granted);
        }
    }
    if (read_only) {
        entry.limited = entry.read_only = true;
        if (entry.limits.size() == max_limits) throw ImportError(where + ": more than " + std::to_string(max_limits) + " limits");
        entry.limits.push_back("readonly");
    }
    return entry;
}

// An absolute path without "." or ".." parts or a trailing slash.
std::string absolute_path(const std::string &path) {
    std::string out = fs::absolute(fs::path(path)).lexically_normal().string();
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    return out;
}

// The *.json regular files directly in `dir`, sorted; nothing if it does not exist.
std::vector<std::string> token_files_in(const std::string &dir) {
    std::vector<std::string> files;
    std::error_code error;
    fs::directory_iterator it(dir, error);
    if (error) {
        if (error == std::errc::no_such_file_or_directory) return files;
        throw ImportError("cannot list it: " + error.message());
    }
    for (; it != fs::directory_iterator(); it.increment(error)) {
        const std::string name = it->path().filename().string();
        if (name.starts_with(".") || !name.ends_with(".json")) continue;
        if (it->symlink_status(error).type() != fs::file_type::regular) continue;
        files.push_back(absolute_path(it->path().string()));
    }
    if (error) throw ImportError("cannot list it: " + error.message());
    std::sort(files.begin(), files.end());
    return files;
}

}  // namespace

std::optional<Service> service_of_path(std::string_view path) {
    const std::string dir = fs::path(path).parent_path().filename().string();
    if (dir == "cpanel") return Service::cpanel;
    if (dir == "whostmgr") return Service::whm;
    return std::nullopt;
}

std::string user_of_path(std::string_view path) {
    const std::string name = fs::path(path).filename().string();
    const std::string user = name.ends_with(".json") ? name.substr(0, name.size() - 5) : std::string();
    if (!is_valid_user(user))
        bad(path, "the file's name is not USER.json with a cPanel user name (1-64 characters of a-z 0-9 . _ -, "
                  "starting with a letter or digit)");
    return user;
}

std::vector<CpanelEntry> parse_cpanel_tokens(std::string_view text, std::string_view path, Service service) {
    // Refused as the parser goes deeper, before the DOM grows: nesting costs memory by the byte.
    struct TooDeep {};
    const auto bound_depth = [](int depth, json::parse_event_t event, json &) {
        if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
            depth >= max_cpanel_json_depth)
            throw TooDeep{};
        return true;
    };
    json document;
    try {
        document = json::parse(text, bound_depth);
    } catch (const TooDeep &) {
        bad(path, "nested deeper than " + std::to_string(max_cpanel_json_depth) + " levels: not a token file");
    } catch (const json::parse_error &e) {
        // Not e.what(): it quotes the text, which may hold digests.
        bad(path, "not JSON (error at byte " + std::to_string(e.byte) + ")");
    } catch (const json::exception &) {  // out_of_range: a number no integer type holds (1e999)
        bad(path, "not JSON this tool can read: a number out of range");
    }
    if (!document.is_object()) bad(path, "expected a JSON object {\"tokens\": {...}}");
    const auto tokens = document.find("tokens");
    if (tokens == document.end() || !tokens->is_object())
        bad(path, "expected an object {\"tokens\": {...}} with the tokens by their SHA-512 digest");
    std::vector<CpanelEntry> entries;
    std::size_t position = 0;
    for (const auto &[key, value] : tokens->items()) entries.push_back(entry_of(key, value, ++position, path, service));
    return entries;
}

CpanelFile read_cpanel_file(const std::string &path, std::optional<Service> service) {
    CpanelFile file;
    file.path = path;
    file.user = user_of_path(path);
    if (!service) service = service_of_path(path);
    if (!service)
        bad(path, "cannot tell the service from the directory (cpanel or whostmgr): give --service cpanel or whm");
    file.service = *service;
    std::string text;
    try {
        text = read_user_written_file(path, file.user, max_cpanel_file_bytes);
    } catch (const FileRefused &e) {
        bad(path, e.what());
    }
    file.entries = parse_cpanel_tokens(text, path, file.service);
    return file;
}

CpanelFiles read_cpanel_files(const ImportSources &sources, std::optional<Service> service) {
    // Which service a file is follows from the arguments: a usage error, found before anything is read.
    if (!service)
        for (const std::string &path : sources.files)
            if (!service_of_path(path))
                bad(path, "cannot tell the service from the directory (cpanel or whostmgr): give --service cpanel or whm");
    CpanelFiles out;
    out.skipped = sources.skipped;
    for (const std::string &path : sources.files) {
        try {
            out.read.push_back(read_cpanel_file(path, service));
        } catch (const ImportError &e) {
            std::string reason = e.what();
            if (reason.starts_with(path + ": ")) reason.erase(0, path.size() + 2);
            out.skipped.push_back({path, std::move(reason)});
        }
    }
    return out;
}

ImportSources expand_import_paths(const std::vector<std::string> &paths) {
    ImportSources sources;
    std::set<std::string> seen;
    auto add_file = [&](const std::string &file) {
        if (seen.insert(file).second) sources.files.push_back(file);
    };
    auto add_directory = [&](const std::string &dir) {
        if (std::find(sources.directories.begin(), sources.directories.end(), dir) != sources.directories.end())
            return;
        std::vector<std::string> listed;
        try {
            // What a directory anyone but root can change lists, or no longer lists, says nothing.
            struct stat st{};
            if (::stat(dir.c_str(), &st) == 0) check_directory_only_root_writes(dir);
            listed = token_files_in(dir);
        } catch (const FileRefused &e) {  // not listed, so nothing in it is gone; the other PATHs go on
            sources.skipped.push_back({dir, e.what()});
            return;
        } catch (const ImportError &e) {
            sources.skipped.push_back({dir, e.what()});
            return;
        }
        sources.directories.push_back(dir);
        for (const std::string &file : listed) add_file(file);
    };
    for (const std::string &given : paths) {
        const std::size_t files_before = sources.files.size(), skipped_before = sources.skipped.size();
        auto note_if_empty = [&] {
            if (sources.files.size() == files_before && sources.skipped.size() == skipped_before)
                sources.empty.push_back(given);
        };
        const std::string path = absolute_path(given);
        struct stat st{};
        if (::stat(path.c_str(), &st) != 0) throw ImportError("cannot read " + given + ": " + std::strerror(errno));
        if (S_ISREG(st.st_mode)) {
            add_file(path);
            continue;
        }
        if (!S_ISDIR(st.st_mode)) throw ImportError(given + " is neither a token file nor a directory");
        const std::string name = fs::path(path).filename().string();
        std::error_code error;
        const bool top = name != "cpanel" && name != "whostmgr" &&
                         (name == "api_tokens_v2" || fs::is_directory(path + "/cpanel", error) ||
                          fs::is_directory(path + "/whostmgr", error));
        if (!top) {
            add_directory(path);
            note_if_empty();
            continue;
        }
        for (const char *service_dir : {"/cpanel", "/whostmgr"}) add_directory(path + service_dir);
        note_if_empty();
    }
    return sources;
}

void refuse_empty_directories(const ImportSources &sources) {
    if (!sources.empty.empty())
        throw ImportError(sources.empty.front() +
                          " holds no token files: --sync would revoke every token imported from it; give "
                          "--allow-empty if that is meant");
}

const char *import_action_name(ImportAction action) noexcept {
    switch (action) {
        case ImportAction::added: return "added";
        case ImportAction::unchanged: return "unchanged";
        case ImportAction::updated: return "updated";
        case ImportAction::differs: return "differs";
        case ImportAction::skipped: return "skipped";
        case ImportAction::conflict: return "conflict";
        case ImportAction::revoked: return "revoked";
        case ImportAction::gone: return "gone";
        case ImportAction::note: return "note";
    }
    return "?";
}

namespace {

std::string joined(const std::vector<std::string> &items, std::size_t at_most = 10) {
    std::string text;
    for (std::size_t i = 0; i < items.size() && i < at_most; ++i) text += (i ? ", " : "") + items[i];
    if (items.size() > at_most) text += ", ... (" + std::to_string(items.size()) + " in all)";
    return text;
}

// Why an entry is not imported; empty if it is.
std::string skip_reason(const CpanelEntry &entry, Service service, const ImportOptions &options) {
    if (entry.expires != 0 && entry.expires <= options.now) return "expired " + format_iso8601(entry.expires);
    if (!entry.limited || options.with_limited) return {};
    std::vector<std::string> names = entry.limits;
    if (entry.read_only) names.pop_back();  // the "readonly" entry_of() added
    const char *kind = service == Service::cpanel ? "features" : "acls";
    std::string what = names.empty() ? std::string("no ") + kind : std::string(kind) + " " + joined(names);
    if (entry.read_only) what = "read-only; " + what;
    return "limited: " + what + "; use --with-limited";
}

// The fields import-cpanel keeps in step with the file that differ, for the report.
std::vector<std::string> differences(const TokenRecord &stored, const TokenRecord &wanted) {
    std::vector<std::string> changed;
    if (stored.name != wanted.name) changed.push_back("name was " + stored.name);
    if (stored.created != wanted.created) changed.push_back("created");
    if (stored.expires != wanted.expires) changed.push_back("expiry");
    if (stored.allowed_ips != wanted.allowed_ips) changed.push_back("allowlist");
    if (stored.service != wanted.service) changed.push_back("service");
    if (stored.limits != wanted.limits) changed.push_back("limits");
    return changed;
}

// A token the run writes (added, or updated under --sync) and its line in the report.
struct Planned {
    StoredToken token;
    std::size_t step;
    bool accepted = true;
};

std::string name_key(const std::string &user, const std::string &name) { return user + '\0' + name; }

// Drops the planned writes whose new name stays with another token: one that
// is not revoked in this run and not renamed away by an accepted write, or an
// earlier planned write. Repeated until nothing changes, since dropping a
// rename keeps its old name taken (names may be traded in a run).
void drop_name_conflicts(TokenBatch &batch, std::vector<Planned> &planned, const std::set<Digest> &revoked,
                         std::vector<ImportStep> &steps) {
    for (bool changed = true; changed;) {
        changed = false;
        std::map<Digest, const Planned *> renamed;  // accepted writes by digest
        for (const Planned &p : planned)
            if (p.accepted) renamed.emplace(p.token.digest, &p);
        std::set<std::string> claimed;
        for (Planned &p : planned) {
            if (!p.accepted) continue;
            const TokenRecord &record = p.token.record;
            bool taken = !claimed.insert(name_key(record.user, record.name)).second;
            if (!taken) {
                const auto holder = batch.find_by_name(record.user, record.name);
                if (holder && holder->digest != p.token.digest && !revoked.contains(holder->digest)) {
                    const auto moving = renamed.find(holder->digest);
                    taken = moving == renamed.end() || moving->second->token.record.name == record.name;
                }
            }
            if (!taken) continue;
            p.accepted = false;
            changed = true;
            steps[p.step].action = ImportAction::conflict;
            steps[p.step].detail = "name taken by another token";
        }
    }
}

}  // namespace

std::vector<ImportStep> import_cpanel(TokenStore &store, const std::vector<CpanelFile> &files,
                                      const ImportSources &sources, const ImportOptions &options) {
    const std::set<std::string> listed_files(sources.files.begin(), sources.files.end());
    const std::set<std::string> listed_directories(sources.directories.begin(), sources.directories.end());
    std::vector<ImportStep> steps;
    // Every file's digests are recorded before any entry is decided: a digest
    // also listed in another file is still in this one, so --sync never takes
    // it for gone (a user listing root's digest must not revoke root's token).
    std::map<std::string, std::map<Digest, std::string>> in_file;  // file -> digest -> why skipped ("" if not)
    std::map<Digest, std::vector<std::string>> listed_in;           // digest -> the files listing it
    for (const CpanelFile &file : files) {
        auto &entries_here = in_file[file.path];
        for (const CpanelEntry &entry : file.entries) {
            if (entries_here.emplace(entry.digest, skip_reason(entry, file.service, options)).second)
                listed_in[entry.digest].push_back(file.path);
        }
    }
    store.batch([&](TokenBatch &batch) {
        steps.clear();
        std::vector<Planned> planned;
        std::set<std::pair<std::string, Digest>> decided;  // (file, digest): a repeat within a file is one entry
        for (const CpanelFile &file : files) {
            for (const CpanelEntry &entry : file.entries) {
                auto step = [&](ImportAction action, std::string detail) {
                    steps.push_back({action, file.path, file.user, entry.name, file.service, std::move(detail)});
                };
                if (!decided.emplace(file.path, entry.digest).second) {
                    step(ImportAction::conflict, "the same digest is listed twice");
                    continue;
                }
                const std::string &skipped = in_file.at(file.path).at(entry.digest);
                if (!skipped.empty()) {
                    step(ImportAction::skipped, skipped);
                    continue;
                }
                TokenRecord wanted{file.user, entry.name, entry.created, entry.expires, entry.allowed_ips};
                wanted.service = file.service;
                wanted.limits = entry.limits;
                wanted.imported_from = file.path;
                const auto stored = batch.find(entry.digest);
                if (!stored && listed_in[entry.digest].size() > 1) {
                    // No token here says whose it is: it goes to none of them.
                    std::vector<std::string> others;
                    for (const std::string &other : listed_in[entry.digest])
                        if (other != file.path) others.push_back(other);
                    step(ImportAction::conflict, "the same digest is also listed in " + joined(others));
                } else if (!stored) {
                    planned.push_back({{entry.digest, wanted}, steps.size()});
                    step(ImportAction::added, {});
                } else if (stored->user != file.user) {
                    step(ImportAction::conflict, "the same digest is a token of another user");
                } else if (stored->rotated()) {
                    step(ImportAction::conflict, "replaced here with cptoken rotate: no longer followed");
                } else if (stored->imported_from.empty()) {
                    step(ImportAction::conflict, "the same digest is a token made here with cptoken create");
                } else if (stored->imported_from != file.path) {
                    step(ImportAction::conflict, "already imported from " + stored->imported_from);
                } else if (const auto changed = differences(*stored, wanted); changed.empty()) {
                    step(ImportAction::unchanged, {});
                } else if (!options.sync) {
                    step(ImportAction::differs, joined(changed, changed.size()) + "; --sync applies it");
                } else {
                    TokenRecord updated = *stored;  // scopes and read-only set with cptoken edit stay
                    updated.name = wanted.name;
                    updated.created = wanted.created;
                    updated.expires = wanted.expires;
                    updated.allowed_ips = wanted.allowed_ips;
                    updated.service = wanted.service;
                    updated.limits = wanted.limits;
                    planned.push_back({{entry.digest, std::move(updated)}, steps.size()});
                    step(ImportAction::updated, joined(changed, changed.size()));
                }
                for (const std::string &note : entry.notes)
                    steps.push_back({ImportAction::note, file.path, file.user, entry.name, file.service, note});
            }
        }

        // What the files no longer hold goes with --sync, and is reported without it (it keeps working
        // until then). Rotated tokens and tokens made here are not followed.
        std::vector<StoredToken> to_revoke;
        std::set<Digest> revoked;
        for (StoredToken &token : batch.list()) {
            const TokenRecord &record = token.record;
            if (record.rotated() || record.imported_from.empty()) continue;
            std::string why;
            const auto file = in_file.find(record.imported_from);
            if (file != in_file.end()) {
                const auto entry = file->second.find(token.digest);
                if (entry == file->second.end())
                    why = "no longer in " + record.imported_from;
                else if (!entry->second.empty())
                    why = "now skipped: " + entry->second;
                else
                    continue;
            } else if (listed_directories.contains(fs::path(record.imported_from).parent_path().string()) &&
                       !listed_files.contains(record.imported_from)) {
                why = record.imported_from + " is gone";  // a file listed but skipped is not gone
            } else {
                continue;
            }
            if (!options.sync) {
                steps.push_back({ImportAction::gone, record.imported_from, record.user, record.name,
                                 record.service, why + "; --sync revokes it"});
                continue;
            }
            steps.push_back({ImportAction::revoked, record.imported_from, record.user, record.name, record.service,
                             why});
            revoked.insert(token.digest);
            to_revoke.push_back(std::move(token));
        }
        drop_name_conflicts(batch, planned, revoked, steps);

        for (const StoredToken &token : to_revoke) batch.revoke(token.record.user, token.record.name);
        std::vector<StoredToken> writes;
        for (const Planned &p : planned)
            if (p.accepted) writes.push_back(p.token);
        batch.put_many(writes);
        return !options.dry_run;
    });
    return steps;
}

}  // namespace cptoken

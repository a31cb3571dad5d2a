// SPDX-License-Identifier: Apache-2.0
// cptoken: the admin tool. Argument parsing and output only; every decision
// is made in lib/.
//
// Exit codes: 0 done, 1 a refusal or not found, 2 bad usage. Errors go to
// stderr as one line starting with "cptoken: ". No token is ever printed
// except by `create`, `bulk-create` and `rotate`, which make it.

#include <grp.h>
#include <pwd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <csignal>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <variant>
#include <string>
#include <vector>

#include "admin/cpanel_import.hpp"
#include "cluster/cluster_config.hpp"
#include "cluster/cluster_usage.hpp"
#include "cluster/etcd_writer.hpp"
#include "cluster/mirror_agent.hpp"
#include "store/fsck.hpp"
#include "token/names.hpp"
#include "token/network.hpp"
#include "token/record.hpp"
#include "token/scope.hpp"
#include "store/store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"
#include "store/usage_helper.hpp"
#include "store/usage_store.hpp"
#include "auth/verify.hpp"

using namespace cptoken;
using json = nlohmann::ordered_json;

namespace {

// Bad usage: a wrong argument value. Exit code 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// A refusal or something not found. Exit code 1.
struct Refusal : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ------------------------------------------------------------ arguments

// The rules of lib/names, as --help and the errors state them.
const std::string user_rule = "1-" + std::to_string(max_user_length) +
                              " characters of a-z 0-9 . _ -, starting with a letter or digit";
const std::string token_name_rule =
    "1-" + std::to_string(max_token_name_length) + " characters of A-Z a-z 0-9 _ -, unique per user";

void require_user(const std::string &user) {
    if (!is_valid_user(user)) throw UsageError("invalid user name '" + user + "': " + user_rule);
}

void require_token_name(const std::string &name) {
    if (!is_valid_token_name(name)) throw UsageError("invalid token name '" + name + "': " + token_name_rule);
}

Seconds parse_expiry(const std::string &text, Seconds now) {
    try {
        return parse_when(text, now);
    } catch (const WhenError &e) {
        throw UsageError(e.what());
    }
}

std::vector<Network> parse_allowlist(const std::vector<std::string> &texts) {
    if (texts.size() > max_allowed_networks)
        throw UsageError("too many --allow-ip: at most " + std::to_string(max_allowed_networks));
    std::vector<Network> networks;
    for (const std::string &text : texts) {
        const auto network = parse_network(text);
        if (network) {
            // Given twice is allowed twice: kept once, as `list` would show it.
            if (std::find(networks.begin(), networks.end(), *network) == networks.end()) networks.push_back(*network);
            continue;
        }
        if (text.find(',') != std::string::npos)
            throw UsageError("invalid --allow-ip '" + text + "': one address or network each; repeat --allow-ip for "
                             "more (--allow-ip 10.0.0.1 --allow-ip 10.0.0.2)");
        // Host bits set is the likely slip: name the network that was probably meant.
        if (const auto meant = parse_network_clearing_host_bits(text))
            throw UsageError("invalid --allow-ip '" + text + "': it has host bits set; did you mean " +
                             to_string(*meant) + "?");
        throw UsageError("invalid --allow-ip '" + text +
                         "': expected an IPv4 or IPv6 address or network (CIDR, host bits zero)");
    }
    return networks;
}

Service parse_service_option(const std::string &text) {
    const auto service = parse_service(text);
    if (!service) throw UsageError("invalid --service '" + text + "': expected cpanel or whm");
    return *service;
}

std::vector<std::string> parse_scopes(const std::vector<std::string> &texts) {
    if (texts.size() > max_scopes) throw UsageError("too many --scope: at most " + std::to_string(max_scopes));
    for (const std::string &text : texts) {
        if (!is_valid_scope(text))
            throw UsageError("invalid --scope '" + text +
                             "': expected a URL path starting with / (such as /execute/Email/), without ?, #, %, "
                             "\\, . or .. segments or //");
        // A stored scope with ';' is still read (it covers nothing); a new one is refused.
        if (!is_comparable_path(text))
            throw UsageError("invalid --scope '" + text + "': a path with ';' is outside every scope");
    }
    return texts;
}

// The command on the line: the first word that is neither an option nor the value of --db (the one
// option taking a value that may come before the command).
std::optional<std::string> command_word(int argc, char **argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        // The global options that take a value (cluster mode's too).
        static constexpr std::string_view with_value[] = {"--db",       "--etcd",     "--etcd-prefix",
                                                          "--etcd-cacert", "--etcd-cert", "--etcd-key",
                                                          "--etcd-user", "--etcd-password-file"};
        if (std::find(std::begin(with_value), std::end(with_value), arg) != std::end(with_value)) {
            ++i;
            continue;
        }
        if (!arg.starts_with("-")) return std::string(arg);
    }
    return std::nullopt;
}

// Edits (insert, delete, change, swap two neighbours) from `a` to `b`.
std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i)
        for (std::size_t j = 1; j <= b.size(); ++j) {
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    return d[a.size()][b.size()];
}

// What `word` was probably meant to be among `words` (commands, or a command's options): the only one it
// begins, or the closest one within a typo or two (one for words of up to 3 letters, so that "ls" does not
// become "init"). Empty if none is close.
std::string nearest_word(const std::string &word, const std::vector<std::string> &words) {
    std::vector<std::string> extended;
    for (const std::string &candidate : words)
        if (candidate.starts_with(word)) extended.push_back(candidate);
    if (extended.size() == 1) return extended.front();
    const std::size_t significant = word.size() - (word.starts_with("--") ? 2 : 0);
    const std::size_t allowed = significant <= 3 ? 1 : 2;
    std::string best;
    std::size_t best_distance = allowed + 1;
    for (const std::string &candidate : words) {
        const std::size_t distance = edit_distance(word, candidate);
        if (distance < best_distance) best = candidate, best_distance = distance;
    }
    return best;
}

// CLI11 says "The following arguments were not expected: +1d --expire" for a mistyped option: name it,
// and the option probably meant, among the command's own and the global ones.
void refuse_unknown_options(int argc, char **argv, const CLI::App &app, const CLI::App &command) {
    std::vector<std::string> known;
    for (const CLI::App *scope : {&app, &command})
        for (const CLI::Option *option : scope->get_options())
            for (const std::string &name : option->get_lnames()) known.push_back("--" + name);
    bool after_command = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--") return;  // what follows is not an option
        if (arg == command.get_name()) after_command = true;
        if (!after_command || !arg.starts_with("--")) continue;
        const std::string name = arg.substr(0, arg.find('='));
        if (std::find(known.begin(), known.end(), name) != known.end()) continue;
        const std::string meant = nearest_word(name, known);
        throw UsageError("unknown option '" + name + "'" + (meant.empty() ? "" : "; did you mean '" + meant + "'?") +
                         " (see cptoken " + command.get_name() + " --help)");
    }
}

// The group named `name`; none if `name` is empty (init then keeps or picks one).
std::optional<uid_t> user_id(const std::string &name) {
    if (name.empty()) return std::nullopt;
    const passwd *found = ::getpwnam(name.c_str());
    if (!found) throw UsageError("unknown user '" + name + "'");
    return found->pw_uid;
}

std::optional<gid_t> group_id(const std::string &name) {
    if (name.empty()) return std::nullopt;
    const group *found = ::getgrnam(name.c_str());
    if (!found) throw UsageError("unknown group '" + name + "'");
    return found->gr_gid;
}

// ------------------------------------------------------------ output

// What reaches a terminal: printable ASCII as it is, anything else escaped as
// JSON would show it (\u00e9 for an e with an accent, \u001b for ESC), a byte
// that is not UTF-8 as \xNN. The stores are validated when read; this keeps
// an escape sequence that got past them (or into an error message) from ever
// reaching a root terminal, and shows the admin what they typed.
std::string printable(std::string_view text) {
    std::string out;
    char escape[16];
    for (std::size_t i = 0; i < text.size();) {
        const auto byte = static_cast<unsigned char>(text[i]);
        if (byte >= 0x20 && byte < 0x7f) {
            out.push_back(static_cast<char>(byte));
            ++i;
            continue;
        }
        // A UTF-8 sequence: its length from the lead byte, then continuation bytes only.
        const std::size_t length = byte >= 0xc2 && byte <= 0xdf ? 2 : byte >= 0xe0 && byte <= 0xef ? 3
                                   : byte >= 0xf0 && byte <= 0xf4 ? 4 : 1;
        std::uint32_t code = length == 1 ? byte : byte & (0x7f >> length);
        bool valid = i + length <= text.size();
        for (std::size_t k = 1; valid && k < length; ++k) {
            const auto next = static_cast<unsigned char>(text[i + k]);
            valid = (next & 0xc0) == 0x80;
            code = code << 6 | (next & 0x3f);
        }
        if (byte < 0x80 || (length > 1 && valid)) {
            std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(code));
            i += byte < 0x80 ? 1 : length;
        } else {
            std::snprintf(escape, sizeof escape, "\\x%02x", static_cast<unsigned>(byte));
            ++i;
        }
        out += escape;
    }
    return out;
}

std::string last_used_text(const std::optional<Usage> &used) {
    if (!used) return "never";
    return format_iso8601(used->last_used) + (used->last_used_ip.empty() ? "" : " from " + used->last_used_ip);
}

std::string allowlist_text(const std::vector<Network> &networks) {
    if (networks.empty()) return "any";
    std::string text;
    for (const Network &network : networks) text += (text.empty() ? "" : ", ") + to_string(network);
    return text;
}

std::string list_text(const std::vector<std::string> &items) {
    std::string text;
    for (const std::string &item : items) text += (text.empty() ? "" : ", ") + item;
    return text;
}

std::string scopes_text(const TokenRecord &record) { return record.scopes.empty() ? "any" : list_text(record.scopes); }

std::string expiry_text(const TokenRecord &record) {
    return record.never_expires() ? "never" : format_iso8601(record.expires);
}

// A token replaced by `rotate` is shown under the name it had, marked.
std::string name_text(const TokenRecord &record) {
    return record.rotated() ? record.name + " (rotated)" : record.name;
}

json token_json(const TokenRecord &record, const std::optional<Usage> &usage) {
    json out;
    out["user"] = record.user;
    out["name"] = record.name;
    out["created"] = format_iso8601(record.created);
    out["expires"] = record.never_expires() ? json(nullptr) : json(format_iso8601(record.expires));
    out["last_used"] = usage ? json(format_iso8601(usage->last_used)) : json(nullptr);
    out["last_used_ip"] = usage && !usage->last_used_ip.empty() ? json(usage->last_used_ip) : json(nullptr);
    out["uses"] = usage ? usage->uses : 0;
    if (record.allowed_ips.empty()) {
        out["allowed_ips"] = nullptr;
    } else {
        out["allowed_ips"] = json::array();
        for (const Network &network : record.allowed_ips) out["allowed_ips"].push_back(to_string(network));
    }
    out["service"] = service_name(record.service);
    out["scopes"] = record.scopes.empty() ? json(nullptr) : json(record.scopes);
    out["read_only"] = record.read_only;
    out["limits"] = record.limits.empty() ? json(nullptr) : json(record.limits);
    out["imported_from"] = record.imported_from.empty() ? json(nullptr) : json(record.imported_from);
    out["rotated"] = record.rotated();
    // A rotated token's expiry is the end of its grace.
    out["grace_ends"] = record.rotated() && !record.never_expires() ? json(format_iso8601(record.expires)) : json(nullptr);
    return out;
}

// ensure_ascii: control characters and everything beyond ASCII come out as \u escapes.
void print_json(const json &value) {
    std::cout << value.dump(2, ' ', true, json::error_handler_t::replace) << "\n";
}

void notice_on_stderr(const std::string &message) { std::cerr << "cptoken: " << message << std::endl; }

// Cluster mode (issue 24): --etcd and its options, for every command.
etcd::ClusterFlags g_cluster;

// The settings of cluster mode; nullopt on a single host (no --etcd).
// Checked (and its password file read) once per run, on first use.
const std::optional<etcd::ClusterConfig> &cluster_mode() {
    static const std::optional<etcd::ClusterConfig> config = [] {
        if (g_cluster.endpoints.empty()) return std::optional<etcd::ClusterConfig>();
        try {
            return std::optional(etcd::cluster_config(g_cluster));
        } catch (const std::invalid_argument &e) {
            throw UsageError(e.what());
        }
    }();
    return config;
}

// ------------------------------------------------------------ root on another owner's store

// Root does a command's store work as the store's owner, when the store has
// one (become_store_owner: for good, so that a compromised owner cannot
// reach root through the files it writes). The usage store is httpd's
// group's to write, so only a child that became nobody of that group opens
// it, and only root can start one (as_store_group): what a command needs of
// the usage store is done first, while this process is root, and kept here
// (or the StoreError it threw) until the command asks for it.
template <class Result>
using Ahead = std::optional<std::variant<Result, StoreError>>;

template <class Result>
void do_ahead(Ahead<Result> &ahead, const std::function<Result()> &work) {
    try {
        ahead = work();
    } catch (const StoreError &e) {
        ahead = e;
    }
}

// What `work` gives, as it gave it ahead if it was done ahead.
template <class Result>
Result done_ahead_or_now(const Ahead<Result> &ahead, const std::function<Result()> &work) {
    if (!ahead) return work();
    if (const auto *error = std::get_if<StoreError>(&*ahead)) throw *error;
    return std::get<Result>(*ahead);
}

Ahead<UsageByKey> g_usage_ahead;                     // list, show, edit --json
// sync publishes usage for as long as it runs: a helper that stays root reads it.
std::unique_ptr<UsageHelper> g_usage_helper;
Ahead<UsageRebuild> g_usage_rebuilt_ahead;           // prune: the usage table made again
Ahead<std::vector<FsckFinding>> g_usage_checked_ahead;  // fsck

// Usage is optional: a store without a readable usage file still lists, and
// says on stderr that every token shows as never used. nullopt then.
// Read as root through an unprivileged child (read_usage): httpd's group writes it.
// In cluster mode, the uses are every front-end's as their agents last
// published them (this host's too), added up; this host's alone if etcd
// cannot be read.
std::optional<UsageByKey> usage_in(const std::string &db) {
    const auto &cluster = cluster_mode();
    if (cluster) {
        try {
            etcd::Client client(cluster->client);
            UsageByKey usage;
            const std::size_t skipped =
                etcd::add_cluster_usage(client, cluster->prefix, {}, now_seconds() + usage_clock_skew, usage);
            if (skipped)
                notice_on_stderr("skipped " + std::to_string(skipped) + " line(s) of hosts' usage in etcd that are "
                                 "not usage lines");
            return usage;
        } catch (const std::exception &e) {
            notice_on_stderr(std::string("cannot read the front-ends' usage from etcd (") + e.what() +
                             "): the uses shown are this host's alone");
        }
    }
    try {
        return done_ahead_or_now<UsageByKey>(g_usage_ahead, [&db] { return read_usage(db); });
    } catch (const StoreError &e) {
        notice_on_stderr(std::string("cannot read the usage store (") + e.what() +
                         "): every token shows as never used, with 0 uses");
        return std::nullopt;
    }
}

std::optional<Usage> usage_of(const std::optional<UsageByKey> &usage, const Digest &digest) {
    return usage ? cptoken::usage_of(*usage, digest) : std::nullopt;
}

// After a command that added tokens: a store grown past its usage table's
// room gets a new table at once if this process is root (which starts the
// nobody child that copies the uses); else that is said, and the daily
// prune (root's) makes the room.
void make_usage_room(const std::string &db) {
    try {
        const std::size_t stored = TokenStore(db, access_for_reading(db)).stored_count();
        if (!usage_needs_room(db, stored)) return;
        if (::geteuid() != 0) {
            notice_on_stderr("the usage table of " + db + " has no room for more tokens: the uses of the new ones "
                             "are not recorded until `cptoken prune` runs as root (daily) and makes room");
            return;
        }
        const UsageRebuild rebuilt = rebuild_usage(db);
        notice_on_stderr("the usage table now has room for " + std::to_string(rebuilt.room) + " tokens");
    } catch (const StoreError &e) {
        notice_on_stderr(std::string("cannot make room in the usage table (") + e.what() +
                         "); `cptoken prune` as root does it");
    }
}

// `handler`, then make_usage_room() if it did its work (exit 0, or 3: some
// files skipped by import-cpanel).
template <class Options>
auto adding_tokens(int (*handler)(const std::string &, const Options &)) {
    return [handler](const std::string &db, const Options &options) {
        const int rc = handler(db, options);
        if (rc == 0 || rc == 3) make_usage_room(db);
        return rc;
    };
}

using Table = std::vector<std::vector<std::string>>;

// Terminal columns `text` takes: its characters (printable ASCII, and the marker of a cut cell).
std::size_t columns_of(std::string_view text) {
    return std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; });
}

std::vector<std::size_t> column_widths(const Table &rows) {
    std::vector<std::size_t> widths;
    for (const auto &row : rows)
        for (std::size_t i = 0; i < row.size(); ++i) {
            if (widths.size() <= i) widths.push_back(0);
            widths[i] = std::max(widths[i], columns_of(row[i]));
        }
    return widths;
}

// Cells already made printable, in columns two spaces apart.
void print_cells(const Table &rows) {
    const std::vector<std::size_t> widths = column_widths(rows);
    for (const auto &row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) line += std::string(widths[i] - columns_of(row[i]) + 2, ' ');
        }
        std::cout << line << "\n";
    }
}

void print_table(Table rows) {
    for (auto &row : rows)
        for (std::string &cell : row) cell = printable(cell);
    print_cells(rows);
}

// ------------------------------------------------------------ list in a terminal

// The columns of the terminal stdout is: $COLUMNS, else the terminal's own width. 0 when stdout is not a
// terminal: scripts that read `list` get every character, as ever.
std::size_t terminal_columns() {
    if (!::isatty(STDOUT_FILENO)) return 0;
    if (const char *columns = std::getenv("COLUMNS")) {
        char *end = nullptr;
        const long value = std::strtol(columns, &end, 10);
        if (end != columns && *end == '\0' && value > 0 && value < 100000) return static_cast<std::size_t>(value);
    }
    winsize size{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
    return 80;
}

// How a cut cell ends: an ellipsis where the locale says the terminal shows UTF-8, else "...".
std::string cut_marker() {
    for (const char *variable : {"LC_ALL", "LC_CTYPE", "LANG"}) {
        const char *value = std::getenv(variable);
        if (!value || !*value) continue;
        std::string locale(value);
        std::transform(locale.begin(), locale.end(), locale.begin(), [](unsigned char c) { return std::tolower(c); });
        return locale.find("utf-8") != std::string::npos || locale.find("utf8") != std::string::npos ? "\u2026"
                                                                                                       : "...";
    }
    return "...";
}

// `text` (printable) in at most `width` columns, ending in `marker` if it was cut.
std::string cut_to(const std::string &text, std::size_t width, const std::string &marker) {
    if (text.size() <= width) return text;
    const std::size_t marker_columns = columns_of(marker);
    if (width <= marker_columns) return text.substr(0, width);
    return text.substr(0, width - marker_columns) + marker;
}

// The first networks that fit in `width` columns with ", +N more" after them.
std::string allowlist_within(const std::vector<Network> &networks, std::size_t width, const std::string &marker) {
    const std::string all = allowlist_text(networks);
    if (all.size() <= width) return all;
    for (std::size_t kept = networks.size() - 1; kept > 0; --kept) {
        const std::vector<Network> first(networks.begin(), networks.begin() + static_cast<std::ptrdiff_t>(kept));
        const std::string text = allowlist_text(first) + ", +" + std::to_string(networks.size() - kept) + " more";
        if (text.size() <= width) return text;
    }
    return cut_to(std::to_string(networks.size()) + " networks", width, marker);
}

// The list table narrowed to `width` columns: the widest of USER, NAME, LAST USED and ALLOWED IPS gives up a
// column at a time, down to a floor that keeps each readable; then their cells are cut with a marker (NAME
// keeps "(rotated)", ALLOWED IPS drops whole networks). If the floors do not fit either, lines wrap.
void fit_list_to(Table &rows, const std::vector<const TokenRecord *> &records, std::size_t width) {
    enum { user_column = 0, name_column = 1, created_column = 3, last_used_column = 5, allowed_column = 7 };
    const std::pair<std::size_t, std::size_t> floors[] = {
        {user_column, 8}, {name_column, 16}, {last_used_column, 20}, {allowed_column, 26}};
    std::vector<std::size_t> widths = column_widths(rows);
    std::size_t total = 2 * (widths.size() - 1);
    for (std::size_t w : widths) total += w;
    while (total > width) {
        std::size_t *widest = nullptr;
        for (const auto &[column, floor] : floors)
            if (widths[column] > floor && (!widest || widths[column] > *widest)) widest = &widths[column];
        if (!widest) break;
        --*widest, --total;
    }
    // Still too wide: CREATED gives up its time of day (show and --json keep it).
    const std::size_t date_only = std::string_view("YYYY-MM-DD").size();
    const bool created_as_date = total > width && widths[created_column] > date_only;
    const std::string marker = cut_marker();
    for (std::size_t i = 1; i < rows.size(); ++i) {
        if (created_as_date) rows[i][created_column].resize(date_only);
        const TokenRecord &record = *records[i - 1];
        std::vector<std::string> &row = rows[i];
        row[user_column] = cut_to(row[user_column], widths[user_column], marker);
        row[last_used_column] = cut_to(row[last_used_column], widths[last_used_column], marker);
        row[allowed_column] = allowlist_within(record.allowed_ips, widths[allowed_column], marker);
        if (row[name_column].size() > widths[name_column]) {
            const std::string rotated = record.rotated() ? " (rotated)" : "";
            row[name_column] = widths[name_column] >= rotated.size() + 5
                                   ? cut_to(printable(record.name), widths[name_column] - rotated.size(), marker) + rotated
                                   : cut_to(row[name_column], widths[name_column], marker);
        }
    }
}

// ------------------------------------------------------------ commands

// A write blocked on the writer lock says so rather than hanging silently.
void say_when_waiting(TokenStore &store) { store.set_lock_wait_notice(notice_on_stderr); }

// A writing command's store: its writes go to etcd in cluster mode.
void prepare_writes(TokenStore &store) {
    say_when_waiting(store);
    if (const auto &cluster = cluster_mode())
        store.write_through(std::make_shared<etcd::EtcdWriter>(*cluster, store, notice_on_stderr));
}

// Each command has its own options, bound to its subcommand by define(),
// and its handler cmd_NAME(db, options).

void allow_ip_option(CLI::App *sub, std::vector<std::string> &allow_ips) {
    sub->add_option("--allow-ip", allow_ips, "allow only this address or CIDR network (repeatable)")
        ->allow_extra_args(false);
}

void json_flag(CLI::App *sub, bool &json) { sub->add_flag("--json", json, "print JSON"); }

void scope_option(CLI::App *sub, std::vector<std::string> &scopes) {
    sub->add_option("--scope", scopes, "reach only this URL-path prefix, such as /execute/Email/ (repeatable)")
        ->allow_extra_args(false);
}

const char *const safe_methods_help =
    "allow only GET, HEAD, OPTIONS without a body (no method-override header); this limits the method, "
    "not GET calls that change state (cPanel UAPI, WHM API 1: use --scope for those)";

// --safe-methods and --any-method were called --read-only and --read-write,
// which promised more than a method can keep: cPanel's UAPI and WHM API 1
// change state on GET. The old names still work, hidden from --help, and
// say so.
void safe_methods_flag(CLI::App *sub, bool &safe_methods, bool &old_name) {
    sub->add_flag("--safe-methods", safe_methods, safe_methods_help);
    sub->add_flag("--read-only", old_name, "the old name of --safe-methods")->group("");
}

// After the command's work, so that a failure stays one line on stderr.
void say_if_old_method_flag(bool used) {
    if (used)
        notice_on_stderr(
            "--read-only and --read-write are now called --safe-methods and --any-method: a safe-methods token may "
            "use GET, HEAD and OPTIONS without a body, which does not stop GET calls that change state (cPanel's "
            "UAPI and WHM API 1 take them); limit those with --scope");
}

// What a new token may reach: create and bulk-create.
struct RestrictionOptions {
    std::string service = "cpanel";
    std::vector<std::string> scopes;
    bool safe_methods = false, old_safe_methods = false;
    void define(CLI::App *sub) {
        sub->add_option("--service", service, "cpanel (the default: Authorization: cpanel) or whm (Authorization: whm)");
        scope_option(sub, scopes);
        safe_methods_flag(sub, safe_methods, old_safe_methods);
    }
    void apply(TokenRecord &record) const {
        record.service = parse_service_option(service);
        record.scopes = parse_scopes(scopes);
        record.read_only = safe_methods || old_safe_methods;
    }
};

// The USER NAME arguments of a command on one token.
struct TokenArguments {
    std::string user, name;
    void define(CLI::App *sub) {
        sub->add_option("USER", user, "the account: " + user_rule)->required();
        sub->add_option("NAME", name, "the token's name: " + token_name_rule)->required();
    }
};

// Options given with an empty value (--expires "") are kept as such, and refused.
struct InitOptions {
    std::string group, owner;
    void define(CLI::App *sub) {
        sub->add_option("--group", group, "group that httpd runs as (it may read tokens, write usage)");
        sub->add_option("--owner", owner,
                        "user that owns the store and writes tokens, e.g. the manager's (default: root; an "
                        "existing store keeps its owner)");
    }
};

struct CreateOptions : TokenArguments {
    std::optional<std::string> expires;
    std::vector<std::string> allow_ips;
    RestrictionOptions restrictions;
    bool json = false;
    void define(CLI::App *sub) {
        TokenArguments::define(sub);
        sub->add_option("--expires", expires, "YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or +N[smhdw]");
        allow_ip_option(sub, allow_ips);
        restrictions.define(sub);
        json_flag(sub, json);
    }
};

struct BulkCreateOptions {
    std::string file;
    std::vector<std::string> allow_ips;
    RestrictionOptions restrictions;
    bool json = false;
    void define(CLI::App *sub) {
        sub->add_option("FILE", file, "input file, or - for stdin (default)");
        allow_ip_option(sub, allow_ips);
        restrictions.define(sub);
        json_flag(sub, json);
    }
};

struct RotateOptions : TokenArguments {
    std::optional<std::string> grace;
    bool json = false;
    void define(CLI::App *sub) {
        TokenArguments::define(sub);
        sub->add_option("--grace", grace, "how long the old token keeps working: N[smhdw] (default: it stops at once)");
        json_flag(sub, json);
    }
};

struct ListOptions {
    std::string user;
    std::optional<std::string> unused_for, service;
    bool json = false;
    void define(CLI::App *sub) {
        sub->add_option("USER", user, "only this account's tokens: " + user_rule);
        sub->add_option("--service", service, "only tokens of this service: cpanel or whm");
        sub->add_option("--unused-for", unused_for,
                        "only tokens not used for DURATION (90s, 10m, 12h, 30d, 2w), or never used and created that "
                        "long ago");
        json_flag(sub, json);
    }
};

struct ShowOptions : TokenArguments {
    bool json = false;
    void define(CLI::App *sub) {
        TokenArguments::define(sub);
        json_flag(sub, json);
    }
};

struct EditOptions : TokenArguments {
    std::optional<std::string> new_name, expires;
    std::vector<std::string> allow_ips, scopes;
    bool any_ip = false, any_scope = false, safe_methods = false, any_method = false, json = false;
    bool old_safe_methods = false, old_any_method = false;  // --read-only, --read-write
    void define(CLI::App *sub) {
        TokenArguments::define(sub);
        sub->add_option("--name", new_name, "new name");
        sub->add_option("--expires", expires, "new expiry, or never");
        allow_ip_option(sub, allow_ips);
        sub->add_flag("--any-ip", any_ip, "allow any address")->excludes(sub->get_option("--allow-ip"));
        scope_option(sub, scopes);
        sub->add_flag("--any-scope", any_scope, "reach any path the location allows")->excludes(sub->get_option("--scope"));
        safe_methods_flag(sub, safe_methods, old_safe_methods);
        CLI::Option *any = sub->add_flag("--any-method", any_method, "allow every method again (undo --safe-methods)");
        CLI::Option *old_any = sub->add_flag("--read-write", old_any_method, "the old name of --any-method")->group("");
        for (CLI::Option *lifts : {any, old_any})
            lifts->excludes(sub->get_option("--safe-methods"))->excludes(sub->get_option("--read-only"));
        json_flag(sub, json);
    }
};

struct RevokeOptions {
    std::string user, name;
    bool all = false;
    void define(CLI::App *sub) {
        sub->add_option("USER", user, "the account: " + user_rule)->required();
        sub->add_option("NAME", name, "the token's name: " + token_name_rule);
        sub->add_flag("--all", all, "revoke every token of USER");
    }
};

struct CheckOptions {
    std::string user;
    std::optional<std::string> ip, service, path;
    std::string method = "GET";
    void define(CLI::App *sub) {
        sub->add_option("USER", user, "the account the token is sent for: " + user_rule)->required();
        sub->add_option("--ip", ip, "client address to check against the allowlist");
        sub->add_option("--service", service, "check as the cpanel or the whm scheme would (default: either)");
        sub->add_option("--path", path, "URL path to check against the token's scopes");
        sub->add_option("--method", method, "HTTP method to check with --path against --safe-methods (default GET)")
            ->needs(sub->get_option("--path"));
    }
};

struct PruneOptions {
    void define(CLI::App *) {}
};

struct FsckOptions {
    bool repair = false, json = false;
    void define(CLI::App *sub) {
        sub->add_flag("--repair", repair, "revoke orphaned tokens and remove dangling names (in one transaction)");
        json_flag(sub, json);
    }
};

struct BackupOptions {
    std::string file;
    void define(CLI::App *sub) { sub->add_option("FILE", file)->required(); }
};

struct PushOptions {
    void define(CLI::App *) {}
};

struct ImportCpanelOptions {
    std::vector<std::string> paths;
    std::optional<std::string> service;
    bool dry_run = false, sync = false, with_limited = false, allow_empty = false, json = false;
    void define(CLI::App *sub) {
        sub->add_option("PATH", paths,
                        "cPanel token file (api_tokens_v2/cpanel/USER.json, .../whostmgr/USER.json) or a directory "
                        "of them (api_tokens_v2: both)")
            ->required();
        sub->add_option("--service", service, "cpanel or whm for every file (default: from its directory)");
        sub->add_flag("--dry-run", dry_run, "print what would happen, change nothing");
        sub->add_flag("--sync", sync,
                      "follow the files: apply changed names, expiry and allowlists; revoke tokens imported from them "
                      "that are gone");
        sub->add_flag("--allow-empty", allow_empty,
                      "with --sync, follow a directory PATH that holds no token files (revoking every token "
                      "imported from it); refused without");
        sub->add_flag("--with-limited", with_limited,
                      "import limited tokens (cPanel features, WHM acls, read-only) too; safe only where the backend "
                      "enforces them");
        json_flag(sub, json);
    }
};

int cmd_init(const std::string &db, const InitOptions &o) {
    std::vector<std::string> changes;
    const InitOutcome outcome = init_store(db, group_id(o.group), user_id(o.owner), &changes);
    if (outcome == InitOutcome::already_present) {
        std::cout << "token store in " << db
                  << " already exists with the right owner, group and modes; nothing changed\n";
    } else if (outcome == InitOutcome::repaired) {
        for (const std::string &change : changes) std::cout << change << "\n";
    } else {
        struct stat st{};
        const group *g = ::stat(db.c_str(), &st) == 0 ? ::getgrgid(st.st_gid) : nullptr;
        const passwd *owner = st.st_uid != ::geteuid() ? ::getpwuid(st.st_uid) : nullptr;
        std::cout << "created token store in " << db << " for group "
                  << (g ? std::string(g->gr_name) : std::to_string(st.st_gid))
                  << (st.st_uid == ::geteuid() ? std::string()
                                               : ", owned by " + (owner ? std::string(owner->pw_name)
                                                                        : std::to_string(st.st_uid)))
                  << "\n";
    }
    return 0;
}

json created_json(const TokenRecord &record, const std::string &token) {
    json out;
    out["user"] = record.user;
    out["name"] = record.name;
    out["token"] = token;
    const json fields = token_json(record, std::nullopt);
    for (const char *key : {"created", "expires", "allowed_ips", "service", "scopes", "read_only"}) out[key] = fields[key];
    return out;
}

int cmd_create(const std::string &db, const CreateOptions &o) {
    require_user(o.user);
    require_token_name(o.name);
    const Seconds now = now_seconds();
    TokenRecord record{o.user, o.name, now, o.expires ? parse_expiry(*o.expires, now) : 0,
                       parse_allowlist(o.allow_ips)};
    o.restrictions.apply(record);
    TokenStore store(db, Access::read_write);
    prepare_writes(store);
    const std::string token = generate_token();
    store.add(token_digest(token), record);
    if (o.json)
        print_json(created_json(record, token));
    else
        std::cout << token << "\n";
    say_if_old_method_flag(o.restrictions.old_safe_methods);
    return 0;
}

int cmd_rotate(const std::string &db, const RotateOptions &o) {
    require_user(o.user);
    require_token_name(o.name);
    const Seconds now = now_seconds();
    Seconds grace = 0;
    if (o.grace) {
        try {
            grace = parse_duration(*o.grace);
        } catch (const WhenError &e) {
            throw UsageError(std::string("--grace: ") + e.what());
        }
    }
    TokenStore store(db, Access::read_write);
    prepare_writes(store);
    const std::string token = generate_token();
    const Rotation rotation = store.rotate(o.user, o.name, token_digest(token), now, grace);
    if (o.json) {
        json out = created_json(rotation.token.record, token);
        out["grace_ends"] = rotation.grace_ends ? json(format_iso8601(rotation.grace_ends)) : json(nullptr);
        print_json(out);
    } else {
        std::cout << token << "\n";
    }
    return 0;
}

// Lines "USER NAME [WHEN]" ('#' comments and blank lines skipped), all
// checked before anything is written, then created in one transaction.
int cmd_bulk_create(const std::string &db, const BulkCreateOptions &o) {
    const bool from_stdin = o.file.empty() || o.file == "-";
    std::ifstream file;
    if (!from_stdin) {
        file.open(o.file);
        if (!file) throw Refusal("cannot read " + o.file);
    }
    std::istream &in = from_stdin ? std::cin : file;
    const Seconds now = now_seconds();
    TokenRecord common;  // allowlist and restrictions, the same for every token
    common.allowed_ips = parse_allowlist(o.allow_ips);
    o.restrictions.apply(common);
    std::vector<StoredToken> tokens;
    std::vector<std::string> plaintexts;
    std::vector<std::size_t> line_of;  // each token's input line
    std::map<std::pair<std::string, std::string>, std::size_t> first_line;
    std::string line;
    for (std::size_t number = 1; std::getline(in, line); ++number) {
        std::istringstream fields(line);
        std::string user, name, when, extra;
        if (!(fields >> user) || user.front() == '#') continue;
        const std::string where = "line " + std::to_string(number) + ": ";
        if (!(fields >> name) || (fields >> when && fields >> extra))
            throw UsageError(where + "expected USER NAME [WHEN]");
        try {
            require_user(user);
            require_token_name(name);
            if (const auto [seen, added] = first_line.emplace(std::pair{user, name}, number); !added)
                throw UsageError(user + " " + name + " is on line " + std::to_string(seen->second) +
                                 " too: a user's token names are unique");
            TokenRecord record = common;
            record.user = user, record.name = name, record.created = now;
            record.expires = when.empty() ? 0 : parse_expiry(when, now);
            plaintexts.push_back(generate_token());
            tokens.push_back({token_digest(plaintexts.back()), std::move(record)});
            line_of.push_back(number);
        } catch (const UsageError &e) {
            throw UsageError(where + e.what());
        }
    }
    TokenStore store(db, Access::read_write);
    prepare_writes(store);
    // add_many refuses a name taken as well, but could not say on which line.
    for (std::size_t i = 0; i < tokens.size(); ++i)
        if (store.find_by_name(tokens[i].record.user, tokens[i].record.name))
            throw Refusal("line " + std::to_string(line_of[i]) + ": user " + tokens[i].record.user +
                          " already has a token named '" + tokens[i].record.name + "'; nothing was created");
    store.add_many(tokens);
    if (o.json) {
        json out = json::array();
        for (std::size_t i = 0; i < tokens.size(); ++i) out.push_back(created_json(tokens[i].record, plaintexts[i]));
        print_json(out);
    } else {
        std::string text;
        for (std::size_t i = 0; i < tokens.size(); ++i)
            text += tokens[i].record.user + " " + tokens[i].record.name + " " + plaintexts[i] + "\n";
        std::cout << text;
    }
    say_if_old_method_flag(o.restrictions.old_safe_methods);
    return 0;
}

int cmd_list(const std::string &db, const ListOptions &o) {
    if (!o.user.empty()) require_user(o.user);
    std::optional<Seconds> cutoff;
    if (o.unused_for) {
        try {
            cutoff = now_seconds() - parse_duration(*o.unused_for);
        } catch (const WhenError &e) {
            throw UsageError(std::string("--unused-for: ") + e.what());
        }
    }
    const std::optional<Service> service = o.service ? std::optional(parse_service_option(*o.service)) : std::nullopt;
    // The tokens first: a store refused is said once, not also as an unreadable usage store.
    const auto tokens = TokenStore(db, access_for_reading(db)).list(o.user);
    const auto usage = usage_in(db);
    // Without the uses, every token would look unused: a list to revoke by must not be guessed.
    if (cutoff && !usage) throw Refusal("--unused-for needs the usage store, which cannot be read (see above)");
    std::vector<std::pair<const StoredToken *, std::optional<Usage>>> shown;
    for (const StoredToken &token : tokens) {
        if (service && token.record.service != *service) continue;
        auto used = usage_of(usage, token.digest);
        if (!cutoff || unused_since(token.record, used, *cutoff)) shown.emplace_back(&token, std::move(used));
    }
    if (o.json) {
        json out = json::array();
        for (const auto &[token, used] : shown) out.push_back(token_json(token->record, used));
        print_json(out);
        return 0;
    }
    Table rows{{"USER", "NAME", "SERVICE", "CREATED", "EXPIRES", "LAST USED", "USES", "ALLOWED IPS"}};
    std::vector<const TokenRecord *> records;
    for (const auto &[token, used] : shown) {
        rows.push_back({token->record.user, name_text(token->record), service_name(token->record.service),
                        format_iso8601(token->record.created),
                        expiry_text(token->record), last_used_text(used), std::to_string(used ? used->uses : 0),
                        allowlist_text(token->record.allowed_ips)});
        records.push_back(&token->record);
    }
    for (auto &row : rows)
        for (std::string &cell : row) cell = printable(cell);
    if (const std::size_t width = terminal_columns()) fit_list_to(rows, records, width);
    print_cells(rows);
    return 0;
}

// Limits and the source file only for imported tokens, which alone have them.
void print_details(const TokenRecord &record, const std::optional<Usage> &used) {
    std::vector<std::vector<std::string>> rows{{"user:", record.user},
                                               {"name:", name_text(record)},
                                               {"service:", service_name(record.service)},
                                               {"created:", format_iso8601(record.created)},
                                               {"expires:", expiry_text(record)},
                                               {"last used:", used ? format_iso8601(used->last_used) : "never"},
                                               {"last used ip:", used && !used->last_used_ip.empty() ? used->last_used_ip : "-"},
                                               {"uses:", std::to_string(used ? used->uses : 0)},
                                               {"allowed ips:", allowlist_text(record.allowed_ips)},
                                               {"scopes:", scopes_text(record)},
                                               {"safe methods only:", record.read_only ? "yes" : "no"}};
    if (!record.limits.empty())
        rows.push_back({record.service == Service::whm ? "acls:" : "features:", list_text(record.limits)});
    if (!record.imported_from.empty()) rows.push_back({"imported from:", record.imported_from});
    print_table(rows);
}

int cmd_show(const std::string &db, const ShowOptions &o) {
    require_user(o.user);
    require_token_name(o.name);
    // list() gives each current token followed by its rotated ones.
    const auto tokens = TokenStore(db, access_for_reading(db)).list(o.user);
    const auto current = std::find_if(tokens.begin(), tokens.end(), [&](const StoredToken &token) {
        return !token.record.rotated() && token.record.name == o.name;
    });
    if (current == tokens.end()) throw Refusal("user " + o.user + " has no token named '" + o.name + "'");
    const auto rotated_end =
        std::find_if(current + 1, tokens.end(), [](const StoredToken &token) { return !token.record.rotated(); });
    const auto usage = usage_in(db);
    if (o.json) {
        json out = token_json(current->record, usage_of(usage, current->digest));
        out["rotated_tokens"] = json::array();
        for (auto old = current + 1; old != rotated_end; ++old)
            out["rotated_tokens"].push_back(token_json(old->record, usage_of(usage, old->digest)));
        print_json(out);
        return 0;
    }
    print_details(current->record, usage_of(usage, current->digest));
    for (auto old = current + 1; old != rotated_end; ++old) {
        std::cout << "\n";
        print_details(old->record, usage_of(usage, old->digest));
    }
    return 0;
}

int cmd_edit(const std::string &db, const EditOptions &o) {
    require_user(o.user);
    require_token_name(o.name);
    TokenChanges changes;
    if (o.new_name) {
        require_token_name(*o.new_name);
        changes.name = *o.new_name;
    }
    if (o.expires) changes.expires = *o.expires == "never" ? 0 : parse_expiry(*o.expires, now_seconds());
    if (!o.allow_ips.empty()) changes.allowed_ips = parse_allowlist(o.allow_ips);
    if (o.any_ip) changes.allowed_ips = std::vector<Network>{};
    if (!o.scopes.empty()) changes.scopes = parse_scopes(o.scopes);
    if (o.any_scope) changes.scopes = std::vector<std::string>{};
    if (o.safe_methods || o.old_safe_methods) changes.read_only = true;
    if (o.any_method || o.old_any_method) changes.read_only = false;
    if (!changes.name && !changes.expires && !changes.allowed_ips && !changes.scopes && !changes.read_only)
        throw UsageError(
            "nothing to change: give --name, --expires, --allow-ip, --any-ip, --scope, --any-scope, --safe-methods "
            "or --any-method");
    TokenStore store(db, Access::read_write);
    prepare_writes(store);
    const TokenRecord record = store.edit(o.user, o.name, changes);
    if (o.json) {
        const auto edited = store.find_by_name(record.user, record.name);
        print_json(token_json(record, edited ? usage_of(usage_in(db), edited->digest) : std::nullopt));
    } else
        std::cout << "updated token '" << record.name << "' of " << record.user << "\n";
    say_if_old_method_flag(o.old_safe_methods || o.old_any_method);
    return 0;
}

int cmd_revoke(const std::string &db, const RevokeOptions &o) {
    require_user(o.user);
    if (o.all == !o.name.empty()) throw UsageError("revoke takes either a token NAME or --all");
    TokenStore store(db, Access::read_write);
    prepare_writes(store);
    if (o.all) {
        const std::size_t count = store.revoke_all(o.user);
        std::cout << "revoked " << count << " token" << (count == 1 ? "" : "s") << " of " << o.user << "\n";
        return 0;
    }
    require_token_name(o.name);
    store.revoke(o.user, o.name);
    std::cout << "revoked token '" << o.name << "' of " << o.user << "\n";
    return 0;
}

// The terminal's settings while the token is typed without echo, so that a signal can put them back.
termios g_terminal_before_prompt;

extern "C" void restore_terminal_and_die(int signal_number) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &g_terminal_before_prompt);
    ::signal(signal_number, SIG_DFL);
    ::raise(signal_number);
}

// A terminal on stdin means someone types or pastes the token: ask for it on stderr (stdout carries the
// verdict) and keep it off the screen, as passwd does. From a pipe, read it silently as before.
std::string read_token_line(const std::string &user) {
    std::string token;
    if (!::isatty(STDIN_FILENO) || ::tcgetattr(STDIN_FILENO, &g_terminal_before_prompt) != 0) {
        std::getline(std::cin, token);
        return token;
    }
    termios quiet = g_terminal_before_prompt;
    quiet.c_lflag &= ~ECHO;
    quiet.c_lflag |= ECHONL;  // Enter still moves to the next line
    const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
    for (int signal_number : signals) ::signal(signal_number, restore_terminal_and_die);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    std::cerr << "Token for " << user << ": " << std::flush;  // once echo is off: what follows stays hidden
    std::getline(std::cin, token);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &g_terminal_before_prompt);
    for (int signal_number : signals) ::signal(signal_number, SIG_DFL);
    return token;
}

std::string read_token_from_stdin(const std::string &user) {
    std::string token = read_token_line(user);
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t'))
        token.pop_back();
    return token;
}

int cmd_check(const std::string &db, const CheckOptions &o) {
    require_user(o.user);
    std::optional<Address> client;
    if (o.ip) {
        client = parse_address(*o.ip);
        if (!client) throw UsageError("invalid --ip '" + *o.ip + "': expected an IPv4 or IPv6 address");
    }
    const unsigned services = o.service ? service_bit(parse_service_option(*o.service)) : all_services;
    if (o.path && (o.path->empty() || o.path->front() != '/'))
        throw UsageError("invalid --path '" + *o.path + "': expected a URL path starting with /");
    const TokenStore store(db, access_for_reading(db));
    const Seconds now = now_seconds();
    const std::string token = read_token_from_stdin(o.user);
    if (token.empty()) throw UsageError("no token on stdin: check reads the token to check from stdin (one line)");
    const Verdict verdict = verify_token(store, o.user, token, client, now, services);
    const std::string who = verdict.record ? "token '" + name_text(*verdict.record) + "' of " + verdict.record->user : "";
    switch (verdict.reason) {
        case Reason::accepted: {
            const TokenRecord &record = *verdict.record;
            if (o.path) {
                const ScopeVerdict scope = check_scope(record, o.method, *o.path);
                if (scope != ScopeVerdict::allowed) {
                    std::cout << "forbidden: " << who << " is valid, but " << describe(scope) << " (" << o.method << " "
                              << printable(*o.path) << "; scopes: " << scopes_text(record)
                              << (record.read_only ? ", safe methods only" : "") << ")\n";
                    return 1;
                }
            }
            std::cout << "accepted: " << who << (client ? " from " + to_string(*client) : "") << ", expires "
                      << expiry_text(record) << ", allowed from " << allowlist_text(record.allowed_ips) << ", service "
                      << service_name(record.service) << ", scopes " << scopes_text(record)
                      << (record.read_only ? ", safe methods only" : "") << "\n";
            return 0;
        }
        case Reason::malformed:
            std::cout << "refused: malformed token: expected 32 characters of A-Z and 0-9\n";
            break;
        case Reason::mistyped:
            std::cout << "refused: unknown token, and its checksum does not match: probably mistyped\n";
            break;
        case Reason::unknown:
            std::cout << "refused: unknown token (never issued here, or revoked)\n";
            break;
        case Reason::wrong_user:
            std::cout << "refused: " << who << " belongs to another user, not " << o.user << "\n";
            break;
        case Reason::expired:
            std::cout << "refused: " << who << " expired at " << format_iso8601(verdict.record->expires) << "\n";
            break;
        case Reason::address_not_allowed:
            std::cout << "refused: address " << to_string(*client) << " is not allowed for " << who
                      << "; allowed: " << allowlist_text(verdict.record->allowed_ips) << "\n";
            break;
        case Reason::wrong_service:
            std::cout << "refused: " << who << " is a " << service_name(verdict.record->service) << " token, not a "
                      << service_name(verdict.record->service == Service::whm ? Service::cpanel : Service::whm)
                      << " one\n";
            break;
        case Reason::unknown_restriction: {
            char tag[8];
            std::snprintf(tag, sizeof tag, "0x%02x", *verdict.record->unknown_restriction());
            std::cout << "refused: " << who << " has a restriction (record field " << tag
                      << ") this version does not understand; upgrade cptoken and mod_cptoken\n";
            break;
        }
    }
    return 1;
}

int cmd_prune(const std::string &db, const PruneOptions &) {
    const Seconds now = now_seconds();
    PruneResult result;
    bool pruned = true;
    {
        TokenStore store(db, Access::read_write);
        prepare_writes(store);
        // The daily prune of a front-end in cluster mode without --etcd: its
        // usage table still needs making again; the tokens are pruned in etcd.
        pruned = cluster_mode() || !store.mirror_point();
        if (pruned) result = store.prune(now);
    }
    if (pruned)
        std::cout << "pruned " << result.expired_removed << " expired token" << (result.expired_removed == 1 ? "" : "s")
                  << ", dropped " << result.tombstones_dropped << " old tombstone"
                  << (result.tombstones_dropped == 1 ? "" : "s") << "\n";
    else
        std::cout << db << " mirrors etcd: its tokens are pruned there, by `cptoken --etcd URL[,URL...] prune` on "
                     "one admin host\n";
    // The usage table made again: without the uses of tokens that are gone
    // (revoked, pruned, rotated out), with room for the store's tokens.
    UsageRebuild rebuilt;
    try {
        rebuilt = done_ahead_or_now<UsageRebuild>(g_usage_rebuilt_ahead, [&] { return rebuild_usage(db); });
    } catch (const StoreError &e) {
        // httpd's group writes that store: its damage is said apart from the tokens' prune, which is done.
        throw StoreError(e.kind(), std::string("the tokens are pruned, but not the usage store: ") + e.what());
    }
    std::cout << "forgot the uses of " << rebuilt.dropped << " token" << (rebuilt.dropped == 1 ? "" : "s")
              << " no longer in the store; the usage table has room for " << rebuilt.room << " tokens\n";
    return 0;
}

int cmd_backup(const std::string &db, const BackupOptions &o) {
    struct stat st{};
    if (::stat(o.file.c_str(), &st) == 0) throw Refusal(o.file + " already exists; not overwriting it");
    TokenStore store(db, Access::read_write);
    say_when_waiting(store);
    ::umask(077);  // a backup holds every digest: owner only
    store.backup(o.file);
    std::cout << "backed up the token store to " << o.file << "\n";
    return 0;
}

// Moving from one host to many: the store's tokens and names, as they are
// (digests, tombstones), into an empty prefix; then each front-end's agent
// mirrors them (docs/scale-out.md).
int cmd_push(const std::string &db, const PushOptions &) {
    const auto &cluster = cluster_mode();
    if (!cluster) throw UsageError("push copies the store to etcd: give --etcd URL[,URL...]");
    const TokenStore store(db, access_for_reading(db));
    const std::vector<StoreWrite> writes = store.all_writes();
    etcd::EtcdWriter writer(*cluster, store, notice_on_stderr);
    const std::int64_t revision = writer.push(writes);
    std::size_t tokens = 0;
    for (const StoreWrite &write : writes) tokens += write.database == StoreWrite::Database::tokens;
    std::cout << "copied " << tokens << " token record(s) and " << writes.size() - tokens << " name(s) of " << db
              << " to etcd under " << cluster->prefix << " at revision " << revision
              << "; start `cptoken sync` on every front-end\n";
    return 0;
}

// One line per finding ("orphan: alice/deploy (digest ...): ..."), then one per repair, then a summary.
// Exit 0 for a clean store, 1 if anything was found, repaired or not.
int cmd_fsck(const std::string &db, const FsckOptions &o) {
    std::vector<FsckFinding> findings = fsck_token_store(db, o.repair, notice_on_stderr);
    const auto usage_findings =
        done_ahead_or_now<std::vector<FsckFinding>>(g_usage_checked_ahead, [&db] { return fsck_usage_store(db); });
    findings.insert(findings.end(), usage_findings.begin(), usage_findings.end());
    if (o.json) {
        json out = json::array();
        for (const FsckFinding &f : findings) {
            std::string kind = fsck_kind_name(f.kind);
            std::replace(kind.begin(), kind.end(), ' ', '_');
            const auto text_or_null = [](const std::string &text) { return text.empty() ? json(nullptr) : json(text); };
            out.push_back({{"kind", kind},
                           {"file", f.file},
                           {"database", text_or_null(f.database)},
                           {"key_prefix", text_or_null(f.key_prefix)},
                           {"user", text_or_null(f.user)},
                           {"name", text_or_null(f.name)},
                           {"digest_prefix", text_or_null(f.digest_prefix)},
                           {"repaired", f.repaired},
                           {"message", f.message}});
        }
        print_json(out);
        return findings.empty() ? 0 : 1;
    }
    std::string text;
    std::size_t repaired = 0;
    for (const FsckFinding &f : findings) text += printable(std::string(fsck_kind_name(f.kind)) + ": " + f.message) + "\n";
    for (const FsckFinding &f : findings) {
        if (!f.repaired) continue;
        ++repaired;
        const std::string who = f.user.empty() ? "key " + f.key_prefix : f.user + "/" + f.name;
        text += printable(f.kind == FsckFinding::Kind::orphan
                              ? "repaired: revoked the orphaned token " + who + " (digest " + f.digest_prefix + ")"
                              : "repaired: removed the dangling name " + who) +
                "\n";
    }
    if (findings.empty()) {
        text += "fsck: " + printable(db) + ": no problems found\n";
    } else {
        text += "fsck: " + printable(db) + ": " + std::to_string(findings.size()) + " problem" +
                (findings.size() == 1 ? "" : "s") + " found";
        if (o.repair) text += ", " + std::to_string(repaired) + " repaired";
        text += "\n";
    }
    std::cout << text;
    return findings.empty() ? 0 : 1;
}

// One line per step: "added alice/deploy (cpanel) from FILE", "revoked alice/deploy (cpanel) (no longer in
// FILE)", "note: alice/deploy: 10.0.0.5/24 normalised to 10.0.0.0/24".
std::string import_step_text(const ImportStep &step) {
    const std::string who = step.user + "/" + step.name;
    if (step.action == ImportAction::note) return "note: " + who + ": " + step.detail;
    std::string line = std::string(import_action_name(step.action)) + " " + who + " (" + service_name(step.service) + ")";
    if (step.action != ImportAction::revoked && step.action != ImportAction::gone) line += " from " + step.file;
    if (!step.detail.empty()) line += " (" + step.detail + ")";
    return line;
}

// Exit 0 when the run applied (or would apply) whole, 1 if an entry was left
// out for a conflict, 3 if a file was skipped (the others still applied), 2 for
// bad arguments (then nothing is written).
int cmd_import_cpanel(const std::string &db, const ImportCpanelOptions &o) {
    const std::optional<Service> service = o.service ? std::optional(parse_service_option(*o.service)) : std::nullopt;
    ImportSources sources;
    CpanelFiles files;
    try {  // every file is read and checked before the store is opened
        sources = expand_import_paths(o.paths);
        if (o.sync && !o.allow_empty) refuse_empty_directories(sources);
        files = read_cpanel_files(sources, service);
    } catch (const ImportError &e) {
        throw UsageError(e.what());
    }
    TokenStore store(db, Access::read_write);
    prepare_writes(store);
    const std::vector<ImportStep> steps =
        import_cpanel(store, files.read, sources, {o.sync, o.with_limited, o.dry_run, now_seconds()});

    // Each skipped file on stderr, where cron's mail and the journal's errors look.
    std::string errors;
    for (const SkippedFile &skipped : files.skipped)
        errors += "cptoken: " + printable("skipped " + skipped.path + ": " + skipped.reason) + "\n";
    std::cerr << errors;
    json counts = json::object();
    for (ImportAction action : all_import_actions) counts[import_action_name(action)] = 0;
    for (const ImportStep &step : steps) counts[import_action_name(step.action)] = counts[import_action_name(step.action)].get<int>() + 1;
    const int status = !files.skipped.empty() ? 3 : counts["conflict"].get<int>() > 0 ? 1 : 0;
    if (o.json) {
        json out;
        out["dry_run"] = o.dry_run;
        out["files"] = sources.files;
        out["actions"] = json::array();
        for (const ImportStep &step : steps)
            out["actions"].push_back({{"file", step.file},
                                      {"user", step.user},
                                      {"name", step.name},
                                      {"service", service_name(step.service)},
                                      {"action", import_action_name(step.action)},
                                      {"detail", step.detail.empty() ? json(nullptr) : json(step.detail)}});
        out["counts"] = counts;
        out["skipped_files"] = json::array();
        for (const SkippedFile &skipped : files.skipped)
            out["skipped_files"].push_back({{"file", skipped.path}, {"reason", skipped.reason}});
        print_json(out);
        return status;
    }
    std::string text;
    for (const ImportStep &step : steps) text += printable(import_step_text(step)) + "\n";
    const std::size_t read = files.read.size();
    text += std::to_string(read) + " file" + (read == 1 ? "" : "s");
    if (!files.skipped.empty()) text += " read, " + std::to_string(files.skipped.size()) + " skipped";
    text += ":";
    for (const auto &[action, count] : counts.items())
        text += " " + std::to_string(count.get<int>()) + " " + action + ",";
    text.back() = '\n';
    if (o.dry_run) text += "dry run: nothing was changed\n";
    std::cout << text;
    return status;
}

// ------------------------------------------------------------ sync (cluster mode's mirror agent)

struct SyncOptions {
    std::string reconcile_every = "10m", watchdog = "30s", usage_every = "5s";
    std::optional<std::string> host_name;
    bool once = false;
    unsigned exit_after_applies = 0;
    void define(CLI::App *sub) {
        sub->add_option("--usage-every", usage_every,
                        "publish this host's usage (last use, uses) to etcd this often, N[smhdw] (default 5s; 0s: "
                        "never)");
        sub->add_option("--host-name", host_name, "this host's name among the front-ends (default: its hostname)");
        sub->add_option("--reconcile-every", reconcile_every,
                        "compare the whole store with etcd this often, N[smhdw] (default 10m, jittered)");
        sub->add_option("--watchdog", watchdog,
                        "watch another member after this long without a word from etcd, N[smhdw] (default 30s; "
                        "above etcd's --experimental-watch-progress-notify-interval)");
        sub->add_flag("--once", once, "read etcd whole into the store once, then exit");
        // Tests only: ends the process as kill -9 would, right after the Nth watch answer is committed.
        sub->add_option("--test-exit-after-applies", exit_after_applies)->group("");
    }
};

// Set by SIGTERM and SIGINT: the agent stops at its next look (a lock-free atomic: safe in a handler).
std::atomic<bool> g_stop_sync{false};
extern "C" void stop_sync(int) { g_stop_sync = true; }

std::chrono::milliseconds duration_option(const char *option, const std::string &text, bool zero_allowed = false) {
    try {
        const Seconds seconds = parse_duration(text);
        if (seconds <= 0 && !zero_allowed) throw UsageError(std::string(option) + ": must be more than 0s");
        return std::chrono::seconds(seconds);
    } catch (const WhenError &e) {
        throw UsageError(std::string(option) + ": " + e.what());
    }
}

int cmd_sync(const std::string &db, const SyncOptions &o) {
    const auto &cluster = cluster_mode();
    if (!cluster) throw UsageError("sync mirrors etcd: give --etcd URL[,URL...] (or $CPTOKEN_ETCD_ENDPOINTS)");
    etcd::AgentOptions options;
    options.cluster = *cluster;
    options.db = db;
    options.reconcile_every = duration_option("--reconcile-every", o.reconcile_every);
    options.watchdog = duration_option("--watchdog", o.watchdog);
    options.usage_every = duration_option("--usage-every", o.usage_every, true);
    if (o.host_name) {
        options.host_name = *o.host_name;
    } else {
        char name[256] = "";
        if (::gethostname(name, sizeof name - 1) != 0 || !*name)
            throw UsageError("cannot tell this host's name: give --host-name NAME");
        options.host_name = name;
    }
    try {
        etcd::host_usage_prefix(options.cluster.prefix, options.host_name);  // the rule a host's usage keys need
    } catch (const std::invalid_argument &e) {
        throw UsageError("invalid --host-name: " + std::string(e.what()));
    }
    options.once = o.once;
    options.exit_after_applies = o.exit_after_applies;
    // The agent's threads never fork: the child of a threaded process may run
    // into a lock another thread held at the fork (seen with ASan's allocator:
    // the publisher hung on its child). Root reads the usage table through a
    // helper forked now, before the threads start, as for a store of another owner.
    if (!g_usage_helper && ::geteuid() == 0 && !options.once && options.usage_every.count() > 0)
        g_usage_helper = std::make_unique<UsageHelper>(db);
    if (g_usage_helper) options.read_usage = [] { return g_usage_helper->read(); };
    struct sigaction action{};
    action.sa_handler = stop_sync;  // no SA_RESTART: a sleep or poll in progress ends early
    sigemptyset(&action.sa_mask);
    for (const int signal_number : {SIGTERM, SIGINT}) ::sigaction(signal_number, &action, nullptr);
    std::mutex log_mutex;  // two threads log; each line whole
    const etcd::AgentLog log = [&log_mutex](const std::string &line) {
        std::lock_guard lock(log_mutex);
        std::cerr << "cptoken sync: " << printable(line) << std::endl;
    };
    try {
        return etcd::run_mirror_agent(options, g_stop_sync, log);
    } catch (const etcd::SchemaTooNew &e) {
        throw Refusal(e.what());
    }
}

int run(int argc, char **argv) {
    const char *env_db = std::getenv("CPTOKEN_DB");
    std::string db = env_db && *env_db ? env_db : default_store_dir;

    CLI::App app{"cptoken: create, list, edit and revoke API tokens for mod_cptoken"};
    app.name("cptoken");
    app.require_subcommand(1, 1);
    app.fallthrough();
    app.add_option("--db", db, "store directory (default: $CPTOKEN_DB, else /var/lib/cptoken)");
    if (const char *endpoints = std::getenv("CPTOKEN_ETCD_ENDPOINTS")) g_cluster.endpoints = endpoints;
    app.add_option("--etcd", g_cluster.endpoints,
                   "cluster mode: etcd's endpoints, URL[,URL...] (default: $CPTOKEN_ETCD_ENDPOINTS); writes go to "
                   "etcd, this store mirrors it (docs/scale-out.md)")
        ->group("Cluster mode");
    app.add_option("--etcd-prefix", g_cluster.prefix, "where the token set is in etcd (default: /cptoken/v1/)")
        ->group("Cluster mode");
    app.add_option("--etcd-cacert", g_cluster.cacert, "CA bundle that verifies etcd's members")->group("Cluster mode");
    app.add_option("--etcd-cert", g_cluster.cert, "client certificate (without a CN)")->group("Cluster mode");
    app.add_option("--etcd-key", g_cluster.key, "its private key")->group("Cluster mode");
    app.add_option("--etcd-user", g_cluster.user, "etcd user to log in as")->group("Cluster mode");
    app.add_option("--etcd-password-file", g_cluster.password_file, "file whose first line is that user's password")
        ->group("Cluster mode");
    app.set_version_flag("--version", "cptoken " CPTOKEN_VERSION, "print the version and exit");

    // The one subcommand given runs its handler once parsing is done.
    std::function<int()> chosen;
    std::vector<std::string> commands;
    // `usage_work`: what the command needs of the usage store, done ahead
    // (while root) when root works on a store of another owner.
    auto command = [&](const char *name, const char *help, auto &options, auto handler,
                       std::function<void(const std::string &db)> usage_work = {}) {
        CLI::App *sub = app.add_subcommand(name, help);
        commands.push_back(name);
        options.define(sub);
        sub->final_callback([&chosen, &db, &options, handler, name, usage_work] {
            chosen = [&db, &options, handler, name, usage_work] {
                // Root works on a store of another owner as that owner (init makes stores, as root).
                if (std::string_view(name) != "init") {
                    if (usage_work && store_owner_to_become(db)) usage_work(db);
                    cluster_mode();  // reads --etcd-password-file, which may be root's alone
                    become_store_owner(db);
                }
                return handler(db, options);
            };
        });
    };
    const auto read_usage_ahead = [](const std::string &store) {
        do_ahead<UsageByKey>(g_usage_ahead, [&store] { return read_usage(store); });
    };
    InitOptions init;
    command("init", "create the store directory and files", init, cmd_init);
    CreateOptions create;
    command("create", "create a token and print it, once", create, adding_tokens(cmd_create));
    BulkCreateOptions bulk;
    command("bulk-create",
            "create many tokens in one transaction from lines 'USER NAME [WHEN]'; prints 'USER NAME TOKEN'", bulk,
            adding_tokens(cmd_bulk_create));
    RotateOptions rotate;
    command("rotate", "replace a token by a new one and print it, once; the old one works on for --grace", rotate,
            adding_tokens(cmd_rotate));
    ListOptions list;
    command("list", "list tokens (of USER)", list, cmd_list, read_usage_ahead);
    ShowOptions show;
    command("show", "show one token", show, cmd_show, read_usage_ahead);
    EditOptions edit;
    command("edit", "change a token's name, expiry, allowlist, scopes or safe-methods flag; the token stays", edit,
            cmd_edit, [&edit, &read_usage_ahead](const std::string &store) {
                if (edit.json) read_usage_ahead(store);
            });
    RevokeOptions revoke;
    command("revoke", "revoke a token, or all of a user's with --all", revoke, cmd_revoke);
    CheckOptions check;
    command("check", "tell whether the token on stdin is accepted, and why not", check, cmd_check);
    PruneOptions prune;
    // Ahead, the usage table is made again without the uses of tokens gone before this run; those pruned now
    // go at the next run.
    command("prune", "delete expired tokens and old tombstones", prune, cmd_prune, [](const std::string &store) {
        do_ahead<UsageRebuild>(g_usage_rebuilt_ahead, [&store] { return rebuild_usage(store); });
    });
    ImportCpanelOptions importer;
    command("import-cpanel", "import cPanel's API token files (the tokens keep working), once or with --sync from cron",
            importer, adding_tokens(cmd_import_cpanel));
    FsckOptions fsck;
    command("fsck",
            "check the store for orphaned tokens, dangling names, values Lightning Stream cannot sync; "
            "--repair fixes the first two",
            fsck, cmd_fsck, [](const std::string &store) {
                do_ahead<std::vector<FsckFinding>>(g_usage_checked_ahead, [&store] { return fsck_usage_store(store); });
            });
    BackupOptions backup;
    command("backup", "write a consistent copy of the token store", backup, cmd_backup);
    PushOptions push;
    command("push", "copy the store into an empty etcd prefix (moving to cluster mode; needs --etcd)", push, cmd_push);
    SyncOptions sync;
    command("sync", "cluster mode: mirror etcd's token set into this store and prove it fresh, until stopped",
            sync, cmd_sync, [](const std::string &store) { g_usage_helper = std::make_unique<UsageHelper>(store); });

    // CLI11 would call a mistyped command a missing one.
    if (const auto word = command_word(argc, argv);
        word && std::find(commands.begin(), commands.end(), *word) == commands.end()) {
        const std::string meant = nearest_word(*word, commands);
        throw UsageError("unknown command '" + *word + "'" + (meant.empty() ? "" : "; did you mean '" + meant + "'?") +
                         " (commands: " + list_text(commands) + ")");
    }
    if (const auto word = command_word(argc, argv))
        refuse_unknown_options(argc, argv, app, *app.get_subcommand(*word));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp &e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion &e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp &e) {
        return app.exit(e);
    } catch (const CLI::ParseError &e) {
        std::cerr << "cptoken: " << e.what() << " (see cptoken --help)\n";
        return 2;
    }
    return chosen();
}

}  // namespace

int main(int argc, char **argv) {
    try {
        return run(argc, argv);
    } catch (const UsageError &e) {
        std::cerr << "cptoken: " << printable(e.what()) << "\n";
        return 2;
    } catch (const Refusal &e) {
        std::cerr << "cptoken: " << printable(e.what()) << "\n";
        return 1;
    } catch (const StoreError &e) {
        std::cerr << "cptoken: " << printable(e.what()) << "\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "cptoken: " << printable(e.what()) << "\n";
        return 1;
    }
}

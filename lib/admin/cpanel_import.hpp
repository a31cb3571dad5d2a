// SPDX-License-Identifier: Apache-2.0
// Importing cPanel's API token files (cptoken import-cpanel): reading them,
// and making the store follow them in one transaction.
//
// cPanel keeps each user's tokens in /var/cpanel/authn/api_tokens_v2/
// SERVICE/USER.json (SERVICE: cpanel or whostmgr), as
//   {"tokens": {"<sha512 hex of the token>": {"name": ..., "create_time": EPOCH,
//    "expires_at": EPOCH|0|null, "whitelist_ips": [...], "has_full_access": ...,
//    "features": [...], "acls": [...] or {"acl": 0|1}, "readonly": 0|1}}}
// The digest is what this store keys tokens by, so clients keep their tokens.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "token/network.hpp"
#include "token/record.hpp"
#include "store/store.hpp"
#include "token/timeutil.hpp"
#include "token/token.hpp"

namespace cptoken {

/// A cPanel token file that cannot be imported, or a PATH that names none.
/// The message names the file and the entry (by name, or a 16-hex digest
/// prefix, never a whole digest) and what is wrong.
struct ImportError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The most bytes read from one cPanel token file. cPanel's are a few
/// hundred bytes per token; a larger file is refused, unparsed.
inline constexpr std::size_t max_cpanel_file_bytes = std::size_t{1} << 20;
/// The deepest nesting of JSON arrays and objects parsed in one file. cPanel
/// nests 4 deep ({"tokens": {DIGEST: {"whitelist_ips": [...]}}}); the bound
/// keeps a file of nested arrays from costing root memory by the byte.
inline constexpr int max_cpanel_json_depth = 16;

/// One token of a cPanel file, mapped to what a record here keeps.
struct CpanelEntry {
    Digest digest{};
    std::string name;
    Seconds created = 0;
    Seconds expires = 0;               ///< 0: never (expires_at 0, null or absent)
    std::vector<Network> allowed_ips;  ///< empty: any address; host bits cleared
    /// One line per network whose host bits were set in the file and are
    /// cleared here: "10.0.0.5/24 normalised to 10.0.0.0/24".
    std::vector<std::string> notes;
    /// Limited in cPanel (a cpanel token without full access, a whm token
    /// with acls that do not grant "all", a read-only token): here it would
    /// reach more.
    bool limited = false;
    bool read_only = false;  ///< cPanel's "readonly": limited too (not this module's --read-only)
    /// What limits it in cPanel: its features (cpanel) or granted acls
    /// (whm), then "readonly" for a read-only token. Empty if not limited.
    std::vector<std::string> limits;
};

/// A cPanel token file, read and checked whole.
struct CpanelFile {
    std::string path;  ///< absolute, as imported_from records it
    std::string user;  ///< the file's name without .json
    Service service = Service::cpanel;
    std::vector<CpanelEntry> entries;  ///< in the file's order
};

/// The service a file's directory names: "cpanel" is cpanel, "whostmgr"
/// is whm; nullopt for any other directory.
std::optional<Service> service_of_path(std::string_view path);

/// The user a cPanel file belongs to: its name without ".json". Throws
/// ImportError if the name is not USER.json with a valid user name.
std::string user_of_path(std::string_view path);

/// Maps the text of the cPanel file at `path` (for messages) to its entries,
/// in the file's order. Throws ImportError for text that is not JSON, a
/// shape other than {"tokens": {DIGEST: {...}}}, a key that is not 128
/// lowercase hex digits, a missing or invalid name, a create_time or
/// expires_at that is not an epoch time, whitelist_ips that is not a list
/// of at most max_allowed_networks addresses or networks, a flag that is
/// not a boolean or 0/1, features or acls that are not lists (acls: or an
/// object of flags) of at most max_limits valid names.
std::vector<CpanelEntry> parse_cpanel_tokens(std::string_view text, std::string_view path, Service service);

/// Reads and maps the cPanel file at `path` (absolute): its user from its
/// name, its service from its directory unless `service` is given. Throws
/// ImportError as parse_cpanel_tokens, if its service cannot be told, and
/// if read_user_written_file refuses it (it cannot be opened or read, is not
/// a regular file, or is larger than max_cpanel_file_bytes).
CpanelFile read_cpanel_file(const std::string &path, std::optional<Service> service);

/// A file (or a directory) left out of a run, and why.
struct SkippedFile {
    std::string path;
    std::string reason;  ///< without the path
};

/// What the PATH arguments of import-cpanel name.
struct ImportSources {
    /// Token files, absolute, each once, in the order given (a directory's
    /// sorted by name).
    std::vector<std::string> files;
    /// The directories whose files were listed (absolute): a token imported
    /// from a file directly in one of them that is no longer there was
    /// revoked in cPanel with its file.
    std::vector<std::string> directories;
    /// Directories that could not be listed: nothing in them is gone.
    std::vector<SkippedFile> skipped;
    /// Directory PATHs (as given) that listed no token file and skipped
    /// nothing: with --sync, every token imported from them would go.
    std::vector<std::string> empty;
};

/// Expands PATH arguments: a file is itself; a directory named cpanel or
/// whostmgr (or any directory without such subdirectories) gives its
/// *.json regular files; api_tokens_v2 (or any directory with a cpanel or
/// whostmgr subdirectory) gives those of both subdirectories. A directory
/// that anyone but root could change (check_directory_only_root_writes),
/// or that cannot be listed, is skipped. Hidden files,
/// symlinks, other names and subdirectories are ignored. Throws ImportError
/// for a PATH that does not exist or is neither a file nor a directory.
ImportSources expand_import_paths(const std::vector<std::string> &paths);

/// Throws ImportError naming the first of `sources.empty`: a directory that
/// lists no file at all is more likely a failed copy or a missing mount than
/// every user revoking every token, so --sync takes --allow-empty for it.
void refuse_empty_directories(const ImportSources &sources);

/// The files of a run: those read, and those skipped (with the directories
/// that could not be listed).
struct CpanelFiles {
    std::vector<CpanelFile> read;
    std::vector<SkippedFile> skipped;
};

/// Reads every file of `sources` on its own (read_cpanel_file): one that
/// cannot be opened, read or parsed is skipped, with why, and the others
/// are read all the same. Throws ImportError (before reading anything) if
/// a file's service cannot be told: that takes --service.
CpanelFiles read_cpanel_files(const ImportSources &sources, std::optional<Service> service);

/// What import_cpanel did (or, in a dry run, would do) with an entry or token.
enum class ImportAction {
    added,      ///< a new token
    unchanged,  ///< already here as in the file
    updated,    ///< --sync: name, expiry, allowlist... changed as in the file
    differs,    ///< differs from the file; left as it is without --sync
    skipped,    ///< expired, or limited without --with-limited: not imported
    conflict,   ///< left out: its name or digest belongs to another token
    revoked,    ///< --sync: no longer in its file (or now skipped), or its file is gone
    gone,       ///< what --sync would revoke, left working without it
    note,       ///< something changed on the way in (a network normalised)
};
inline constexpr ImportAction all_import_actions[] = {
    ImportAction::added,    ImportAction::unchanged, ImportAction::updated, ImportAction::differs, ImportAction::skipped,
    ImportAction::conflict, ImportAction::revoked,   ImportAction::gone,    ImportAction::note};

/// "added", "unchanged", ... as printed and in JSON.
const char *import_action_name(ImportAction action) noexcept;

/// One line of the report.
struct ImportStep {
    ImportAction action;
    std::string file;  ///< the cPanel file (absolute)
    std::string user, name;
    Service service = Service::cpanel;
    std::string detail;  ///< why, or what changed; may be empty
};

struct ImportOptions {
    bool sync = false;          ///< follow the files: apply changes, revoke what is gone
    bool with_limited = false;  ///< import limited tokens too (keeping their limits)
    bool dry_run = false;       ///< decide and report, write nothing
    Seconds now = 0;            ///< what "expired" is measured against
};

/// Makes the store follow `files` (read_cpanel_files' read) in one write
/// transaction (TokenStore::batch), deciding from what the store holds
/// inside it. Tokens made here (imported_from empty), other users' tokens and
/// tokens replaced by rotate are never touched; a name held by another token
/// is never taken. A digest several files list is a conflict in each file
/// whose user does not own its token here, or in all of them if it is not
/// here yet. With `sync`, tokens imported from one of `files` whose
/// entry is gone from that file (or is now skipped), and tokens imported
/// from a file directly in one of `sources.directories` that is not among
/// `sources.files` (it was not there when listed), are revoked. A file
/// listed but not read (skipped) is neither: its tokens stay as they are.
/// Returns the steps: each file's entries in order (notes after their
/// entry), then revocations. Throws StoreError as TokenStore writes do;
/// nothing is written then, nor in a dry run.
std::vector<ImportStep> import_cpanel(TokenStore &store, const std::vector<CpanelFile> &files,
                                      const ImportSources &sources, const ImportOptions &options);

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// Last used for the manager. Its children run as the store's owner, who
// writes tokens and must not open the usage store, which httpd's group
// writes (no process more privileged than that group maps or parses what it
// can write: issue 20, H1). The manager's root parent starts a reader
// instead: a process that became user nobody of the store's group, which
// answers the children's questions over a unix socket only they can reach,
// in the lines run_unprivileged's children send root (usage_line), each
// checked by the asker (parse_usage_line).
//
// Protocol, one question per connection:
//   asker:  DIGEST_HEX\n ... \n          (at most usage_reader_max_digests, then an empty line)
//   reader: usage_line()\n ...           (the digests it has uses of, by key: their first 16 bytes)
//           end\n | error KIND MESSAGE\n (KIND: StoreError::Kind as a number)
// The reader never opens the usage store itself: each question is answered
// by a child of its own (alarm-bounded) that opens it read-only, so a
// usage table that kills its reader (cut short under its map) kills that
// child and the one answer, never the reader or httpd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "store/usage_store.hpp"

namespace cptoken {

/// The most digests one question may hold; query_usage() asks in batches.
inline constexpr std::size_t usage_reader_max_digests = 10000;

/// How long the reader gives a question, and the asker the whole exchange.
inline constexpr std::chrono::seconds usage_reader_timeout{5};

/// In the root parent: forks the reader (nobody, group of DIR), bound to
/// SOCKET (0600, owned by `client_uid`); returns its pid. Throws StoreError.
///
/// The reader binds and listens as root, in a directory the caller made,
/// which must be root's and writable by no one else (a socket left there by
/// a reader before is replaced); then it gives up everything as
/// run_unprivileged's children do (drop_privileges.hpp), dies with this
/// process (PR_SET_PDEATHSIG), and tells this process it is ready before
/// start_usage_reader returns. It takes connections only from `client_uid`
/// and root, one at a time. Throws StoreError: missing (no store in DIR),
/// access (not root, a bad socket path or directory, or the reader could
/// not bind or drop its privileges or reach DIR).
pid_t start_usage_reader(const std::string &dir, const std::string &socket, uid_t client_uid);

/// In a child: the uses of `digests` (missing: never used). Throws
/// StoreError if the reader cannot be reached or answers badly.
///
/// Every line is checked byte by byte (parse_usage_line: hex digest, times
/// in range, an address that parses), and must be for a digest asked, once;
/// one bad line and nothing of the answer is used. Bounded in size and in
/// time (usage_reader_timeout). The reader's own refusal (its usage store
/// missing or unreadable) comes back as a StoreError of that kind.
std::map<Digest, Usage> query_usage(const std::string &socket, const std::vector<Digest> &digests);

}  // namespace cptoken

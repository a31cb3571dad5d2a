// SPDX-License-Identifier: Apache-2.0
// Cluster mode's settings (issue 24), from what an admin gives cptoken
// (--etcd, --etcd-prefix, --etcd-cacert, --etcd-cert, --etcd-key,
// --etcd-user, --etcd-password-file; CPTOKEN_ETCD_ENDPOINTS), checked once
// for every command: the writers and the mirror agent.
#pragma once

#include <string>

#include "cluster/etcd_client.hpp"

namespace cptoken::etcd {

/// What cptoken was told about etcd.
struct ClusterFlags {
    std::string endpoints;  ///< comma-separated URLs; empty: not in cluster mode
    std::string prefix;     ///< empty: default_prefix
    std::string cacert, cert, key;
    std::string user;
    std::string password_file;  ///< the password's file (its first line): never on the command line
};

/// How to reach the token set in etcd.
struct ClusterConfig {
    ClientOptions client;
    std::string prefix;
};

/// What cluster_config() does with the password file: read it, or only check
/// it (for httpd's parent, which must not hold the password: the result then
/// has none).
enum class PasswordFile { read, check };

/// Checks `flags` and reads the password file. Throws std::invalid_argument
/// with a message for the admin: no endpoint, an endpoint that is not
/// http(s)://HOST:PORT, a bad prefix, --etcd-cert without --etcd-key (or the
/// reverse), --etcd-user without --etcd-password-file (or the reverse), a
/// password file that cannot be opened or (when read) read, is empty, or
/// can be read by others than its owner and group.
ClusterConfig cluster_config(const ClusterFlags &flags, PasswordFile password_file = PasswordFile::read);

}  // namespace cptoken::etcd

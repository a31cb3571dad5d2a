// SPDX-License-Identifier: Apache-2.0
// The manager's writes in cluster mode (CPTokenEtcd, docs/scale-out.md).
//
// The module is built twice from the same files but one:
//   mod_cptoken.so          the front-ends' module: mod_cptoken_no_etcd.cpp,
//                           no etcd client, no libcurl in httpd's children
//   mod_cptoken_manager.so  the manager instance's: mod_cptoken_etcd.cpp and
//                           lib/cluster (libcurl), so that the manager of a
//                           mirror writes to etcd as `cptoken --etcd` does
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace cptoken {
class TokenStore;
}

namespace cptoken::httpd_module {

/// CPTokenEtcd's arguments: the endpoints (URL[,URL...]), then NAME=VALUE
/// settings named as cptoken's --etcd-NAME options (prefix, cacert, cert,
/// key, user, password-file); `file_path` makes a file's name absolute
/// (ServerRoot-relative). Checks them, but does not read the password file:
/// httpd's parent never holds the password. An empty list forgets them (each
/// reading of the configuration starts so). Returns the error for the admin,
/// empty if they are taken; mod_cptoken.so takes none.
std::string set_manager_etcd(const std::vector<std::string> &arguments,
                             const std::function<std::string(const std::string &)> &file_path);

/// Whether the manager's writes go to etcd (CPTokenEtcd was taken).
bool manager_writes_to_etcd();

/// In a child (child_init, as httpd's User: the store's owner): reads the
/// password file. Returns why the child cannot write to etcd (to be logged),
/// empty if it can or if CPTokenEtcd was not given.
std::string read_child_etcd_settings();

/// From now on, `store`'s writes go to etcd (TokenStore::write_through);
/// `notice` gets the writer's lines for the admin (the revision, whether
/// this host's mirror holds the change yet). Only if manager_writes_to_etcd();
/// throws std::logic_error otherwise. In a child that could not read its
/// settings every write throws StoreError (access) with the reason.
void write_to_etcd(TokenStore &store, std::function<void(const std::string &)> notice);

}  // namespace cptoken::httpd_module

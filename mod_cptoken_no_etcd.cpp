// SPDX-License-Identifier: Apache-2.0
// mod_cptoken.so's side of mod_cptoken_etcd.hpp: the front-ends' module has
// no etcd client, so that httpd's children carry no HTTP client they never
// use; CPTokenEtcd belongs to mod_cptoken_manager.so.
#include "mod_cptoken_etcd.hpp"

#include <stdexcept>

namespace cptoken::httpd_module {

std::string set_manager_etcd(const std::vector<std::string> &arguments,
                             const std::function<std::string(const std::string &)> &) {
    if (arguments.empty()) return {};
    return "CPTokenEtcd: mod_cptoken.so has no etcd client; the manager instance loads mod_cptoken_manager.so, "
           "the build of this module with one (docs/scale-out.md)";
}

bool manager_writes_to_etcd() { return false; }

std::string read_child_etcd_settings() { return {}; }

void write_to_etcd(TokenStore &, std::function<void(const std::string &)>) {
    throw std::logic_error("mod_cptoken.so cannot write to etcd");
}

}  // namespace cptoken::httpd_module

// SPDX-License-Identifier: Apache-2.0
// mod_cptoken_manager.so's side of mod_cptoken_etcd.hpp: CPTokenEtcd, and the
// manager's writes to etcd through the admin tool's writer (lib/cluster).
#include "mod_cptoken_etcd.hpp"

#include <memory>
#include <optional>
#include <stdexcept>

#include "cluster/cluster_config.hpp"
#include "cluster/etcd_writer.hpp"
#include "store/store.hpp"

namespace cptoken::httpd_module {

namespace {

// CPTokenEtcd's settings, taken while httpd reads its configuration.
std::optional<etcd::ClusterFlags> g_flags;

// In each child: the settings with the password (read_child_etcd_settings),
// or why there are none.
std::optional<etcd::ClusterConfig> g_config;
std::string g_config_error = "CPTokenEtcd: this process has not read its settings";

// A child without its settings still reads; each write fails with the reason.
class CannotWrite : public RemoteWriter {
public:
    explicit CannotWrite(std::string why) : why_(std::move(why)) {}
    Outcome publish(const std::vector<StoreWrite> &, const MirrorPoint &) override {
        throw StoreError(StoreError::Kind::access, why_ + ": nothing was written to etcd");
    }

private:
    std::string why_;
};

}  // namespace

std::string set_manager_etcd(const std::vector<std::string> &arguments,
                             const std::function<std::string(const std::string &)> &file_path) {
    g_flags.reset();
    if (arguments.empty()) return {};
    etcd::ClusterFlags flags;
    flags.endpoints = arguments[0];
    for (std::size_t i = 1; i < arguments.size(); ++i) {
        const std::string &argument = arguments[i];
        const std::size_t equals = argument.find('=');
        const std::string name = argument.substr(0, equals);
        const std::string value = equals == std::string::npos ? "" : argument.substr(equals + 1);
        std::string *setting = name == "prefix"          ? &flags.prefix
                               : name == "cacert"        ? &flags.cacert
                               : name == "cert"          ? &flags.cert
                               : name == "key"           ? &flags.key
                               : name == "user"          ? &flags.user
                               : name == "password-file" ? &flags.password_file
                                                         : nullptr;
        if (!setting || equals == std::string::npos || value.empty())
            return "CPTokenEtcd: '" + argument + "' is not NAME=VALUE with NAME one of prefix, cacert, cert, key, "
                   "user, password-file";
        *setting = name == "prefix" || name == "user" ? value : file_path(value);
    }
    // The password file is checked now and read by the children
    // (read_child_etcd_settings), never by httpd's parent, whose forks (the
    // usage reader, CPTokenUsageSocket) must not hold it.
    try {
        etcd::cluster_config(flags, etcd::PasswordFile::check);
    } catch (const std::invalid_argument &e) {
        return std::string("CPTokenEtcd: ") + e.what();
    }
    g_flags = std::move(flags);
    return {};
}

bool manager_writes_to_etcd() { return g_flags.has_value(); }

std::string read_child_etcd_settings() {
    if (!g_flags) return {};
    try {
        g_config = etcd::cluster_config(*g_flags);
    } catch (const std::invalid_argument &e) {
        g_config_error = std::string("CPTokenEtcd: ") + e.what();
    }
    return g_config ? std::string() : g_config_error;
}

void write_to_etcd(TokenStore &store, std::function<void(const std::string &)> notice) {
    if (!g_flags) throw std::logic_error("CPTokenEtcd was not given");
    if (!g_config) return store.write_through(std::make_shared<CannotWrite>(g_config_error));
    store.write_through(std::make_shared<etcd::EtcdWriter>(*g_config, store, std::move(notice)));
}

}  // namespace cptoken::httpd_module

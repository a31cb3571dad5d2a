// SPDX-License-Identifier: Apache-2.0
// lib/cluster/: cluster mode's settings.
#include "cluster/cluster_config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "cluster/mirror_keys.hpp"
#include "store/open_fd.hpp"

namespace cptoken::etcd {

namespace {

[[noreturn]] void refuse_password_file(const std::string &file, const std::string &why) {
    throw std::invalid_argument("--etcd-password-file " + file + ": " + why);
}

// The password file, open, once it is known to be a regular file others cannot read.
OpenFd open_password_file(const std::string &file) {
    OpenFd fd(::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) refuse_password_file(file, std::strerror(errno));
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) refuse_password_file(file, std::strerror(errno));
    if (!S_ISREG(st.st_mode)) refuse_password_file(file, "not a regular file");
    if (st.st_mode & S_IROTH) refuse_password_file(file, "anyone can read it; make it 0600 or 0640");
    return fd;
}

std::string read_password(const std::string &file) {
    const OpenFd fd = open_password_file(file);
    const auto refuse = [&](const std::string &why) { refuse_password_file(file, why); };
    std::string text(4096, '\0');
    const ssize_t got = ::read(fd.get(), text.data(), text.size());
    if (got < 0) refuse(std::strerror(errno));
    text.resize(static_cast<std::size_t>(got));
    text = text.substr(0, text.find('\n'));
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.empty()) refuse("its first line is empty");
    return text;
}

void check_endpoint(const std::string &endpoint) {
    const bool http = endpoint.starts_with("http://"), https = endpoint.starts_with("https://");
    const std::string rest = endpoint.substr(http ? 7 : https ? 8 : 0);
    if ((!http && !https) || rest.empty() || rest.find_first_of("/?#@ ") != std::string::npos)
        throw std::invalid_argument("etcd endpoint '" + endpoint + "' is not http://HOST:PORT or https://HOST:PORT");
}

}  // namespace

ClusterConfig cluster_config(const ClusterFlags &flags, PasswordFile password_file) {
    ClusterConfig config;
    std::size_t start = 0;
    while (start <= flags.endpoints.size()) {
        const std::size_t comma = std::min(flags.endpoints.find(',', start), flags.endpoints.size());
        std::string endpoint = flags.endpoints.substr(start, comma - start);
        if (!endpoint.empty()) {
            check_endpoint(endpoint);
            config.client.endpoints.push_back(std::move(endpoint));
        }
        start = comma + 1;
    }
    if (config.client.endpoints.empty())
        throw std::invalid_argument("no etcd endpoint: give --etcd URL[,URL...] or set CPTOKEN_ETCD_ENDPOINTS");
    config.prefix = flags.prefix.empty() ? default_prefix : flags.prefix;
    check_prefix(config.prefix);
    if (flags.cert.empty() != flags.key.empty())
        throw std::invalid_argument("--etcd-cert and --etcd-key go together");
    if (flags.user.empty() != flags.password_file.empty())
        throw std::invalid_argument("--etcd-user and --etcd-password-file go together");
    config.client.cacert = flags.cacert;
    config.client.cert = flags.cert;
    config.client.key = flags.key;
    config.client.user = flags.user;
    if (!flags.password_file.empty()) {
        if (password_file == PasswordFile::read)
            config.client.password = read_password(flags.password_file);
        else
            open_password_file(flags.password_file);
    }
    return config;
}

}  // namespace cptoken::etcd

// SPDX-License-Identifier: Apache-2.0
#include "store/drop_privileges.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "store/store.hpp"

namespace cptoken {

uid_t nobody_uid() {
    char buffer[4096];
    passwd entry{}, *found = nullptr;
    if (::getpwnam_r("nobody", &entry, buffer, sizeof buffer, &found) == 0 && found && found->pw_uid != 0)
        return found->pw_uid;
    return 65534;
}

bool shed_inherited_state(std::initializer_list<int> keep) noexcept {
    std::vector<int> kept(keep);
    std::sort(kept.begin(), kept.end());
    const auto is_kept = [&kept](int fd) { return std::binary_search(kept.begin(), kept.end(), fd); };
    const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) return false;
    for (int fd = 0; fd <= 2; ++fd)
        if (!is_kept(fd) && ::dup2(null_fd, fd) < 0) return false;
    // Everything from 3 up but the kept ones (null_fd among them).
    unsigned first = 3;
    for (const int fd : kept) {
        if (fd < 3) continue;
        if (static_cast<unsigned>(fd) > first) ::close_range(first, static_cast<unsigned>(fd) - 1, 0);
        first = static_cast<unsigned>(fd) + 1;
    }
    ::close_range(first, ~0U, 0);

    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> store_maps;
    std::FILE *maps = std::fopen("/proc/self/maps", "re");
    if (!maps) return false;
    char entry[4096];
    unsigned long start = 0, end = 0;
    while (std::fgets(entry, sizeof entry, maps))
        if (std::strstr(entry, token_store_file) && std::sscanf(entry, "%lx-%lx", &start, &end) == 2)
            store_maps.emplace_back(start, end);
    std::fclose(maps);
    for (const auto &[from, to] : store_maps)
        if (::munmap(reinterpret_cast<void *>(from), to - from) != 0) return false;
    return true;
}

bool become_for_good(uid_t uid, gid_t gid) noexcept {
    if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) return false;
    if (uid != 0 && ::setuid(0) == 0) {
        errno = EPERM;  // root came back: this process must not go on
        return false;
    }
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
}

}  // namespace cptoken

// SPDX-License-Identifier: Apache-2.0
// LD_PRELOAD shim for t/httpd/test_snapshots.py: a busy disk, on which every
// sync takes CPTOKEN_TEST_SYNC_MS milliseconds. A write to a file opened with
// O_DSYNC or O_SYNC (LMDB's meta page, by default) lands in the page cache at
// once, where readers of the map see it, and returns only after that time, as
// the kernel's does while the device writes it; fsync, fdatasync and a
// synchronous msync wait as long before they sync. With
// CPTOKEN_TEST_FAIL_FDATASYNC=N, the Nth fdatasync and every later one fail
// with EIO (a disk that stops taking writes).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void wait_for_the_disk(void) {
    const char *text = getenv("CPTOKEN_TEST_SYNC_MS");
    const long ms = text ? strtol(text, NULL, 10) : 0;
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&left, &left) != 0) {
    }
}

static int syncs_each_write(int fd) {
    const int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & (O_DSYNC | O_SYNC)) != 0;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset) {
    const ssize_t written = NEXT(pwrite)(fd, buf, n, offset);
    if (written > 0 && syncs_each_write(fd)) wait_for_the_disk();
    return written;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t offset) {
    const ssize_t written = NEXT(pwrite64)(fd, buf, n, offset);
    if (written > 0 && syncs_each_write(fd)) wait_for_the_disk();
    return written;
}

int fdatasync(int fd) {
    static long calls = 0;
    const char *fail_from = getenv("CPTOKEN_TEST_FAIL_FDATASYNC");
    wait_for_the_disk();
    if (fail_from && ++calls >= strtol(fail_from, NULL, 10)) {
        errno = EIO;
        return -1;
    }
    return NEXT(fdatasync)(fd);
}

int fsync(int fd) {
    wait_for_the_disk();
    return NEXT(fsync)(fd);
}

int msync(void *address, size_t length, int flags) {
    if (flags & MS_SYNC) wait_for_the_disk();
    return NEXT(msync)(address, length, flags);
}

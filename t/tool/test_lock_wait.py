# SPDX-License-Identifier: Apache-2.0
"""A write that has to wait for LMDB's writer lock says so on stderr after a
few seconds, instead of hanging silently, and completes once the lock is
free. The lock is held by a real LMDB writer: mdb_load (lmdb-utils) keeps
its write transaction open while it waits for input."""

import fcntl
import os
import select
import struct
import subprocess
import termios
import time

from conftest import CPTOKEN, Store, run

HEADER = "VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n"
WAITING = "still waiting for the write lock"


def holds_write_lock(loader):
    """Whether mdb_load has read the whole header and blocks reading its data:
    it begins its write transaction between the two."""
    unread = struct.unpack("i", fcntl.ioctl(loader.stdin.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    try:
        with open(f"/proc/{loader.pid}/syscall") as f:
            call = f.read().split()
    except OSError:
        return False
    return unread == 0 and call[:2] == ["0", "0x0"]  # read(0, ...)


def stderr_until(proc, text, timeout):
    """What PROC wrote to stderr until TEXT appeared (or it ended, or TIMEOUT s)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.1)[0]:
            chunk = os.read(proc.stderr.fileno(), 4096)  # unbuffered: communicate() reads the rest
            if not chunk:
                break
            seen += chunk.decode()
    return seen


def test_write_blocked_by_another_writer_says_so_then_completes(tmp_path):
    store = Store(tmp_path / "db")
    store.init()
    holder = subprocess.Popen(["mdb_load", "-n", "-s", "holder", str(store.path / "tokens.mdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        holder.stdin.write(HEADER)
        holder.stdin.flush()
        deadline = time.monotonic() + 30
        while not holds_write_lock(holder) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holds_write_lock(holder), "mdb_load did not begin its write transaction"
        writer = subprocess.Popen([CPTOKEN, "--db", str(store.path), "create", "alice", "waited"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = stderr_until(writer, WAITING, 60)
        assert writer.poll() is None, "the write did not wait for the lock held by mdb_load"
    finally:
        holder.stdin.close()  # mdb_load commits and lets go
        holder.wait(timeout=30)
    out, err = writer.communicate(timeout=30)
    err = said + err
    assert writer.returncode == 0, err
    assert err.count(WAITING) == 1, err
    assert "fuser -v" in err, err
    assert [t["name"] for t in store.list_json()] == ["waited"]


def test_uncontended_write_says_nothing(tmp_path):
    store = Store(tmp_path / "db")
    store.init()
    r = run("--db", store.path, "create", "alice", "quick")
    assert r.rc == 0 and r.err == "", r


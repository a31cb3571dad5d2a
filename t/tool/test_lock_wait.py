# SPDX-License-Identifier: Apache-2.0
"""A write that has to wait for LMDB's writer lock says so on stderr after a
few seconds, instead of hanging silently, and completes once the lock is
free. The lock is held by a real LMDB writer: mdb_load (lmdb-utils) keeps
its write transaction open while it waits for input."""

import subprocess
import time

from conftest import CPTOKEN, Store, run

HEADER = "VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n"


def test_write_blocked_by_another_writer_says_so_then_completes(tmp_path):
    store = Store(tmp_path / "db")
    store.init()
    holder = subprocess.Popen(["mdb_load", "-n", "-s", "holder", str(store.path / "tokens.mdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        holder.stdin.write(HEADER)
        holder.stdin.flush()
        time.sleep(0.5)  # mdb_load has begun its write transaction
        writer = subprocess.Popen([CPTOKEN, "--db", str(store.path), "create", "alice", "waited"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4.5)
        assert writer.poll() is None, "the write did not wait for the lock held by mdb_load"
    finally:
        holder.stdin.close()  # mdb_load commits and lets go
        holder.wait(timeout=30)
    out, err = writer.communicate(timeout=30)
    assert writer.returncode == 0, err
    assert err.count("still waiting for the write lock") == 1, err
    assert "fuser -v" in err, err
    assert [t["name"] for t in store.list_json()] == ["waited"]


def test_uncontended_write_says_nothing(tmp_path):
    store = Store(tmp_path / "db")
    store.init()
    r = run("--db", store.path, "create", "alice", "quick")
    assert r.rc == 0 and r.err == "", r


# SPDX-License-Identifier: Apache-2.0
"""Stores shared between hosts: every write must win the merge against the
value it replaces, whatever the writing host's clock says.

Hosts that share a token set run Lightning Stream, which merges each key
by the timestamp of its 24-byte header: the newer stamp wins, and on equal
stamps the lower value. `merge_into` below applies that rule to two store
files on this machine (Lightning Stream itself is not needed to check what
our writes stamp). The clock of the host that revokes is set back a day
with libfaketime."""

import struct
from pathlib import Path

import lmdb
import pytest

from conftest import Store, run, assert_accepted, assert_refused

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SYNCED = ("tokens", "names")


def open_env(store, write=False):
    # Same reader table as cptoken's, so that this open never sizes the lock file smaller.
    return lmdb.open(str(store.path / "tokens.mdb"), subdir=False, max_dbs=8, max_readers=16384,
                     readonly=not write, lock=True)


def values(store):
    """{(db, key): stored value with its header} of the synced databases."""
    env = open_env(store)
    try:
        out = {}
        with env.begin() as txn:
            for db in SYNCED:
                for key, value in txn.cursor(env.open_db(db.encode(), txn=txn)):
                    out[(db, bytes(key))] = bytes(value)
        return out
    finally:
        env.close()


def stamp(value):
    return struct.unpack(">Q", value[:8])[0]


def merge_into(dest, source):
    """Lightning Stream's merge of `source`'s values into `dest`: per key,
    the newer header timestamp wins; on equal stamps, the lower value."""
    incoming = values(source)
    env = open_env(dest, write=True)
    try:
        with env.begin(write=True) as txn:
            for (db, key), value in incoming.items():
                dbi = env.open_db(db.encode(), txn=txn)
                mine = txn.get(key, db=dbi)
                if mine is None or stamp(value) > stamp(mine) or (stamp(value) == stamp(mine) and value < mine):
                    txn.put(key, value, db=dbi)
    finally:
        env.close()


@pytest.fixture
def hosts(tmp_path):
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    for s in (a, b):
        assert s.init().rc == 0
    return a, b


def clock_back(days=1):
    assert FAKETIME.is_file(), f"{FAKETIME} is missing (Debian package libfaketime; make test installs it)"
    return {"LD_PRELOAD": str(FAKETIME), "FAKETIME": f"-{days}d"}


def test_revoke_on_a_host_whose_clock_is_behind_wins_the_merge(hosts):
    a, b = hosts
    token = a.create("alice", "deploy")
    merge_into(b, a)
    assert_accepted(b.check("alice", token))

    r = b.run("revoke", "alice", "deploy", env=clock_back())
    assert r.rc == 0, r
    created = values(a)
    revoked = values(b)
    for key, value in created.items():
        assert stamp(revoked[key]) > stamp(value), f"{key[0]}: the revoke is stamped before the create"

    merge_into(a, b)
    assert_refused(a.check("alice", token), "unknown")
    merge_into(b, a)  # and nothing comes back the other way
    assert_refused(b.check("alice", token), "unknown")


def test_edit_on_a_host_whose_clock_is_behind_wins_the_merge(hosts):
    a, b = hosts
    token = a.create("alice", "deploy")
    merge_into(b, a)
    r = b.run("edit", "alice", "deploy", "--allow-ip", "192.0.2.0/24", env=clock_back())
    assert r.rc == 0, r
    merge_into(a, b)
    assert_refused(a.check("alice", token, ip="198.51.100.7"), "not allowed")
    assert_accepted(a.check("alice", token, ip="192.0.2.7"))


def test_rotate_on_a_host_whose_clock_is_behind_wins_the_merge(hosts):
    a, b = hosts
    old = a.create("alice", "deploy")
    merge_into(b, a)
    r = b.run("rotate", "alice", "deploy", env=clock_back())
    assert r.rc == 0, r
    new = r.out.strip().splitlines()[-1]
    merge_into(a, b)
    assert_refused(a.check("alice", old), "unknown")
    assert_accepted(a.check("alice", new))

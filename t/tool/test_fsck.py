# SPDX-License-Identifier: Apache-2.0
"""cptoken fsck: what a Lightning Stream merge of two hosts' stores can leave,
made on purpose with python3-lmdb as LS would leave it, found and repaired.

python3-lmdb opens a store with subdir=False and max_readers=16384 (the
reader table cptoken asks for) and is closed before cptoken runs, except
where a test holds a store open on purpose, as another process would.
"""

import json

import lmdb
import pytest

from conftest import Store, assert_accepted, assert_refused, assert_usage_error, run


def open_env(path, readonly=False, max_readers=16384):
    return lmdb.open(str(path), subdir=False, max_readers=max_readers, max_dbs=8, readonly=readonly, lock=True)


def entries(store, db):
    """Every (key, value) of database `db` in the token store, values with their headers."""
    env = open_env(store.path / "tokens.mdb", readonly=True)
    try:
        with env.begin() as txn:
            return list(txn.cursor(db=env.open_db(db, txn=txn, create=False)))
    finally:
        env.close()


def put_raw(path, db, items):
    """Writes (key, value) pairs verbatim into database `db` of the store file at `path`."""
    env = open_env(path)
    try:
        with env.begin(write=True) as txn:
            handle = env.open_db(db, txn=txn, create=False)
            for key, value in items:
                txn.put(key, value, db=handle)
    finally:
        env.close()


def fsck(store, *args):
    return store.run("fsck", *args)


def fsck_json(store, *args):
    r = fsck(store, "--json", *args)
    assert r.err == "", r
    return r.rc, json.loads(r.out)


@pytest.fixture
def raced(store, other_store):
    """Hosts A (`store`) and B (`other_store`) both created alice/deploy; LS
    brought B's record and B's name entry (the newer one, which wins the
    merge) to A. Returns (A, A's token, B's token)."""
    mine = store.create("alice", "deploy")
    theirs = other_store.create("alice", "deploy")  # after A's: its name entry is stamped later
    put_raw(store.path / "tokens.mdb", b"tokens", entries(other_store, b"tokens"))
    put_raw(store.path / "tokens.mdb", b"names", entries(other_store, b"names"))
    return store, mine, theirs


def test_same_name_race_leaves_an_orphan_that_repair_revokes(raced):
    store, mine, theirs = raced
    r = fsck(store)
    assert r.rc == 1, r
    orphans = [line for line in r.out.splitlines() if line.startswith("orphan:")]
    assert len(orphans) == 1, r.out
    assert "alice/deploy" in orphans[0] and "revoke alice deploy" in orphans[0], r.out
    assert mine not in r.out and theirs not in r.out  # never a token
    # The orphan still admits requests, and so does the token the name reaches.
    assert_accepted(store.check("alice", mine))
    assert_accepted(store.check("alice", theirs))
    assert [t["name"] for t in store.list_json()] == ["deploy"]

    r = fsck(store, "--repair")
    assert r.rc == 1, r  # it found something
    assert "repaired: revoked the orphaned token alice/deploy" in r.out, r.out
    assert_refused(store.check("alice", mine), "unknown")
    assert_accepted(store.check("alice", theirs))

    r = fsck(store)
    assert r.rc == 0, r
    assert "no problems found" in r.out, r.out


def test_orphan_in_json(raced):
    store, mine, _ = raced
    rc, findings = fsck_json(store)
    assert rc == 1
    assert len(findings) == 1, findings
    orphan = findings[0]
    assert orphan["kind"] == "orphan"
    assert (orphan["user"], orphan["name"]) == ("alice", "deploy")
    assert 0 < len(orphan["digest_prefix"]) <= 16
    assert orphan["repaired"] is False
    assert mine not in json.dumps(findings)
    rc, findings = fsck_json(store, "--repair")
    assert rc == 1 and [f["repaired"] for f in findings] == [True], findings
    assert fsck_json(store) == (0, [])


def test_value_without_header_in_names_is_reported(store):
    token = store.create("alice", "deploy")
    (_, digest), = entries(store, b"names")
    put_raw(store.path / "tokens.mdb", b"names", [(b"alice\0raw", digest[24:])])  # the digest, its header gone
    r = fsck(store)
    assert r.rc == 1, r
    lines = [line for line in r.out.splitlines() if line.startswith("bad header:")]
    assert len(lines) == 1, r.out
    assert "tokens.mdb" in lines[0] and "names" in lines[0] and "Lightning Stream" in lines[0], lines[0]
    # Only reported: --repair leaves it (restore it, or let LS bring it), and says so by exiting 1.
    r = fsck(store, "--repair")
    assert r.rc == 1 and "repaired:" not in r.out, r
    assert dict(entries(store, b"names"))[b"alice\0raw"] == digest[24:]
    assert_accepted(store.check("alice", token))


def test_clean_store_exits_0(store):
    store.create("alice", "deploy")
    store.run("rotate", "alice", "deploy", "--grace", "1h")  # a rotated token in its grace is no orphan
    r = fsck(store)
    assert (r.rc, r.err) == (0, ""), r
    assert r.out == f"fsck: {store.path}: no problems found\n"
    assert fsck_json(store) == (0, [])
    assert fsck(store, "--repair").rc == 0


def test_missing_usage_store_is_fine(store):
    (store.path / "usage.slots").unlink()
    assert fsck(store).rc == 0


def test_usage_errors_and_missing_store(store, tmp_path):
    assert_usage_error(fsck(store, "extra"))
    assert_usage_error(fsck(store, "--fix"))
    r = fsck(Store(tmp_path / "none"))
    assert r.rc == 1 and "init" in r.err, r



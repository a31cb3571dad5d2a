# SPDX-License-Identifier: Apache-2.0
"""`cptoken prune` and `cptoken backup FILE`."""

import os
import shutil
import stat
import subprocess
import time

from conftest import (CPTOKEN, Store, assert_accepted, assert_refusal, assert_refused,
                      assert_usage_error, base_env)


def test_prune_removes_expired_and_keeps_the_rest(store):
    gone = store.create("alice", "short", "--expires", "+2s")
    keep1 = store.create("alice", "long", "--expires", "+1d")
    keep2 = store.create("alice", "forever")
    keep3 = store.create("bob", "short")
    time.sleep(3)
    r = store.run("prune")
    assert r.rc == 0, r
    assert gone not in r.out and gone not in r.err
    assert sorted((e["user"], e["name"]) for e in store.list_json()) == \
        [("alice", "forever"), ("alice", "long"), ("bob", "short")]
    assert_refusal(store.run("show", "alice", "short"))
    assert_accepted(store.check("alice", keep1))
    assert_accepted(store.check("alice", keep2))
    assert_accepted(store.check("bob", keep3))
    # The pruned token is gone: no longer "expired", simply unknown.
    assert_refused(store.check("alice", gone), "unknown")
    # And its name can be used again.
    store.create("alice", "short")


def test_prune_with_nothing_expired_changes_nothing(store):
    store.create("alice", "a", "--expires", "+1d")
    store.create("alice", "b")
    before = store.list_json()
    r = store.run("prune")
    assert r.rc == 0, r
    assert store.list_json() == before


def test_prune_on_empty_store(store):
    r = store.run("prune")
    assert r.rc == 0, r
    assert store.list_json() == []


def restore(backup_file, tmp_path, name="restored"):
    """As cptoken(8) says: the backup as tokens.mdb of a new directory, then init."""
    s = Store(tmp_path / name)
    s.path.mkdir(mode=0o700)
    shutil.copyfile(backup_file, s.path / "tokens.mdb")
    r = s.init()
    assert r.rc == 0, r
    assert stat.S_IMODE(os.stat(s.path / "tokens.mdb").st_mode) == 0o640
    return s


def test_prune_through_a_symlinked_store_dir_rebuilds_the_store_it_names(store, tmp_path):
    """CPTokenDB is often a symbolic link a restored store is swapped in
    through: prune makes the usage table of the store the link names (it
    refused one before: 'no token store')."""
    from test_usage_values import USED_AT, plant, usage_value
    token = store.create("alice", "used")
    plant(store, {token: usage_value(USED_AT, b"192.0.2.7", 3)})
    link = tmp_path / "live"
    os.symlink(store.path, link)
    r = Store(link).run("prune")
    assert r.rc == 0 and "room for" in r.out, r
    assert store.show_json("alice", "used")["uses"] == 3
    assert not os.path.islink(store.path / "usage.slots") and (store.path / "usage.slots").is_file()


def test_backup_restores_to_the_same_tokens(store, tmp_path):
    t1 = store.create("alice", "ci", "--expires", "2099-01-02", "--allow-ip", "10.0.0.0/8")
    t2 = store.create("bob", "deploy")
    store.create("carol", "gone")
    assert store.run("revoke", "carol", "gone").rc == 0
    before = store.list_json()
    f = tmp_path / "backup.mdb"
    r = store.run("backup", f)
    assert r.rc == 0, r
    assert f.is_file() and f.stat().st_size > 0
    restored = restore(f, tmp_path)
    assert restored.list_json() == before
    assert_accepted(restored.check("alice", t1, ip="10.1.1.1"))
    assert_refused(restored.check("alice", t1, ip="11.1.1.1"), "not allowed")
    assert_accepted(restored.check("bob", t2))
    # The original is untouched by the backup.
    assert store.list_json() == before
    assert_accepted(store.check("bob", t2))


def test_backup_of_empty_store(store, tmp_path):
    f = tmp_path / "backup.mdb"
    assert store.run("backup", f).rc == 0
    assert restore(f, tmp_path).list_json() == []


def test_backup_refuses_existing_file_and_leaves_it_alone(store, tmp_path):
    store.create("alice", "ci")
    f = tmp_path / "backup.mdb"
    f.write_bytes(b"precious data\n")
    mtime = f.stat().st_mtime_ns
    assert_refusal(store.run("backup", f))
    assert f.read_bytes() == b"precious data\n"
    assert f.stat().st_mtime_ns == mtime


def test_backup_refuses_existing_empty_file(store, tmp_path):
    f = tmp_path / "backup.mdb"
    f.touch()
    assert_refusal(store.run("backup", f))
    assert f.read_bytes() == b""


def test_backup_without_file_is_usage_error(store):
    assert_usage_error(store.run("backup"))


def test_backup_during_writes_is_consistent(store, tmp_path):
    """A backup taken while creates run opens cleanly and holds whole tokens."""
    first = {f"pre{i}": store.create("alice", f"pre{i}") for i in range(5)}
    env = base_env()
    procs = [subprocess.Popen([CPTOKEN, "--db", str(store.path), "create", "alice", f"live{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for i in range(10)]
    f = tmp_path / "backup.mdb"
    r = store.run("backup", f)
    for p in procs:
        p.communicate(timeout=30)
        assert p.returncode == 0
    assert r.rc == 0, r
    restored = restore(f, tmp_path)
    entries = restored.list_json()
    names = {e["name"] for e in entries}
    assert set(first) <= names
    assert names <= set(first) | {f"live{i}" for i in range(10)}
    for name, token in first.items():
        assert_accepted(restored.check("alice", token))

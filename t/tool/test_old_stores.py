# SPDX-License-Identifier: Apache-2.0
"""Stores made by earlier versions keep working: every token of the kept
store (t/data/stores/vN/, made by make-vN.py) gets exactly the answer
`cptoken check` gave when the store was made, and list/show show the
recorded fields. A store of a newer schema than this code is refused with a
message that names both versions."""

import os
import stat
import sys
from pathlib import Path

import pytest

from conftest import Store, assert_accepted, assert_refusal, run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data" / "stores"))
import oldstores  # noqa: E402


def old_store(version, tmp_path):
    s = Store(tmp_path / "db")
    r = s.init()
    assert r.rc == 0, f"init failed: {r}"
    oldstores.copy_store(version, s.path)
    # The upgrade step (docs/store.md): init adopts the old file, as the package's postinst does.
    r = s.init()
    assert r.rc == 0, f"init of the old store failed: {r}"
    return s


# Wording renamed since a store was recorded (the decisions are the same): 0.13 calls --read-only
# --safe-methods, since it limits the method, not the effect.
RENAMED = [("method not allowed for a read-only token", "method not allowed for a safe-methods token"),
           (", read-only", ", safe methods only")]


def as_said_now(text):
    for before, now in RENAMED:
        text = text.replace(before, now)
    return text


def check_args(c):
    return ["check", c["user"], "--ip", c["ip"], "--service", c["service"], "--path", c["path"],
            "--method", c["method"]]


@pytest.mark.parametrize("version", oldstores.VERSIONS)
def test_every_token_gets_the_recorded_answer(version, tmp_path):
    store = old_store(version, tmp_path)
    wrong = []
    for t in oldstores.recorded(version)["tokens"]:
        for c in t["checks"]:
            r = store.run(*check_args(c), input=t["token"] + "\n")
            if (r.rc, r.out) != (c["tool"]["rc"], as_said_now(c["tool"]["out"])):
                wrong.append(f"{t['user']}/{t['name']} ({t['what']}) {' '.join(check_args(c))}: "
                             f"recorded {c['tool']['rc']} {c['tool']['out']!r}, now {r.rc} {r.out!r} {r.err!r}")
    assert not wrong, "\n".join(wrong)


def recorded_fields(now, then):
    """`now` (a listed token) cut to the fields `then` recorded: a later
    version may add fields, never change the recorded ones."""
    return {k: now.get(k, "<missing>") for k in then}


@pytest.mark.parametrize("version", oldstores.VERSIONS)
def test_list_and_show_show_the_recorded_fields(version, tmp_path):
    store = old_store(version, tmp_path)
    data = oldstores.recorded(version)
    listing = store.list_json()
    assert [recorded_fields(n, t) for n, t in zip(listing, data["list"])] == data["list"]
    assert len(listing) == len(data["list"])
    for key, then in data["show"].items():
        now = store.show_json(*key.split("/"))
        rotated_then = then.pop("rotated_tokens")
        assert recorded_fields(now, then) == then, key
        rotated_now = now["rotated_tokens"]
        assert [recorded_fields(n, t) for n, t in zip(rotated_now, rotated_then)] == rotated_then, key
        assert len(rotated_now) == len(rotated_then), key
    for key in data["absent"]:
        user, name = key.split("/")
        r = store.run("show", user, name)
        assert_refusal(r)
        assert f"has no token named '{name}'" in r.err, r.err


@pytest.mark.parametrize("version", oldstores.VERSIONS)
def test_fsck_finds_nothing_wrong(version, tmp_path):
    r = old_store(version, tmp_path).run("fsck")
    assert r.rc == 0, r


def this_version():
    out = run("--version").out.split()
    assert out[0] == "cptoken", out
    return out[1]


@pytest.mark.parametrize("command", [["list"], ["check", "alice"], ["create", "alice", "new"], ["fsck"]])
def test_a_newer_schema_is_refused_naming_both_versions(tmp_path, command):
    store = old_store(oldstores.VERSIONS[-1], tmp_path)
    newer = oldstores.recorded(oldstores.VERSIONS[-1])["schema_version"] + 1
    oldstores.set_schema_version(store.path, newer)
    token = oldstores.recorded(oldstores.VERSIONS[-1])["tokens"][0]["token"]
    r = store.run(*command, input=token + "\n")
    assert_refusal(r)
    assert (f"has schema version {newer}; this mod_cptoken {this_version()} reads up to schema {newer - 1}: "
            "upgrade mod_cptoken") in r.err, r.err
    assert token not in r.err


def test_a_store_laid_out_by_0_11_is_converted_by_init(store):
    """0.11 shared tokens.mdb-lock with httpd's group (0660) and had no
    commit record: every command refuses it and says to run init; init
    removes that lock file unopened, makes the record and the store id, and
    every token is kept."""
    import lmdb  # python3-lmdb

    token = store.create("alice", "ci")
    before = store.list_json()
    (store.path / "tokens.mdb-committed").unlink()
    env = lmdb.open(str(store.path / "tokens.mdb"), subdir=False, max_dbs=8, lock=False)
    with env.begin(write=True) as txn:
        assert txn.delete(b"store_id", db=env.open_db(b"meta", txn=txn))
    env.close()
    os.chmod(store.path / "tokens.mdb-lock", 0o660)

    for args in (["list"], ["create", "bob", "x"]):
        r = store.run(*args)
        assert r.rc == 1, r
        assert f"cptoken --db {store.path} init" in r.err, r.err

    r = store.init()
    assert r.rc == 0, r
    assert "tokens.mdb-lock: removed" in r.out and "tokens.mdb-committed: created" in r.out, r.out
    assert stat.S_IMODE(os.stat(store.path / "tokens.mdb-lock").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path / "tokens.mdb-committed").st_mode) == 0o640
    assert store.list_json() == before
    assert_accepted(store.check("alice", token))

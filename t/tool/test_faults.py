# SPDX-License-Identifier: Apache-2.0
"""Faults under the tool: a full disk, a read-only filesystem, SIGKILL in the
middle of a large write, a store directory renamed away under a running
command. Each ends closed: exit 1 with a message that says what happened
(never a raw LMDB code), and the store exactly as before, or (after a kill)
exactly the old or exactly the new state, checked record by record.

The full and read-only cases put the store on a small tmpfs (needs root:
skipped, with the reason, where mounting is not permitted)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import lmdb
import pytest

from conftest import CPTOKEN, Store, assert_accepted, assert_refusal, base_env
from test_import_cpanel import digest, entry, new_token, write_tokens

STORE_FILES = ("tokens.mdb",)  # the usage table is httpd's to write: these commands leave it alone


def dump(directory):
    """Every key and value of every database in the token store, read
    without the lock file (no slot taken, nothing written): {file: {db: {key: value}}}.
    Only call it while no cptoken runs on the store."""
    out = {}
    for file in STORE_FILES:
        path = Path(directory) / file
        if not path.exists():
            continue
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=8, max_readers=16384)
        try:
            databases = {}
            with env.begin() as txn:
                names = [key for key, _ in txn.cursor()]
                databases[b""] = dict(txn.cursor())
                for name in names:
                    db = env.open_db(name, txn=txn, create=False)
                    databases[name] = dict(txn.cursor(db=db))
            out[file] = databases
        finally:
            env.close()
    return out


def snapshot(store):
    """What the admin and the store show: `list --json` and every record."""
    return store.list_json(), dump(store.path)


def fill(directory):
    """Fills the filesystem holding `directory` to the last byte with a filler file; returns its path."""
    filler = Path(directory) / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as f:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(f.fileno(), chunk[:size])
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def assert_fails_closed(r, *words):
    """Exit 1, one line on stderr saying `words`, and no raw LMDB code."""
    assert_refusal(r)
    message = r.err.lower()
    for word in words:
        assert word.lower() in message, f"the message should say {word!r}: {r.err!r}"
    assert "mdb_" not in message and "no space left on device" not in message, r.err


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs at tmp_path/fs, unmounted afterwards."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mount_point
    if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.fixture
def small_store(tmpfs):
    """A store on the tmpfs with a few tokens (one expiring soon, for prune)."""
    s = Store(tmpfs / "db")
    assert s.init().rc == 0
    s.create("alice", "ci")
    s.create("bob", "deploy", "--expires", "+1s")
    return s


def cpanel_file(directory, count):
    """cPanel token files of `count` entries in all, outside the store: their
    directory. At most 1000 entries a file (users carol0, carol1, ...), as a
    file is read only up to 1 MiB (issue 20)."""
    top = Path(directory) / "api_tokens_v2" / "cpanel"
    for n, start in enumerate(range(0, count, 1000)):
        write_tokens(top / f"carol{n}.json", {new_token(): entry(f"t{i}") for i in range(start, min(count, start + 1000))})
    return top


def bulk_lines(count, user="dave"):
    return "".join(f"{user} b{i}\n" for i in range(count))


# --- a full disk ---------------------------------------------------------

FULL_DISK_COMMANDS = {
    "create": lambda tmp: (("create", "alice", "new"), None),
    "bulk-create": lambda tmp: (("bulk-create",), bulk_lines(2000)),
    "rotate": lambda tmp: (("rotate", "alice", "ci"), None),
    "import-cpanel": lambda tmp: (("import-cpanel", cpanel_file(tmp, 2000)), None),
    "prune": lambda tmp: (("prune",), None),
}


@pytest.mark.parametrize("command", FULL_DISK_COMMANDS)
def test_full_disk_changes_nothing_and_says_so(small_store, tmp_path, command):
    args, stdin = FULL_DISK_COMMANDS[command](tmp_path)
    if command == "prune":
        time.sleep(1.5)  # bob's token has expired: prune has something to write
    before = snapshot(small_store)
    filler = fill(small_store.path.parent)
    r = small_store.run(*args, input=stdin)
    assert_fails_closed(r, "full", str(small_store.path), "nothing was written")
    assert snapshot(small_store) == before
    # Space freed: the same command works.
    filler.unlink()
    r = small_store.run(*args, input=stdin)
    assert r.rc == 0, r
    assert snapshot(small_store) != before


# --- a read-only filesystem ----------------------------------------------

def test_read_only_filesystem_reads_work_and_writes_fail_clearly(small_store, tmpfs):
    token = small_store.create("alice", "check")
    before = snapshot(small_store)
    assert subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)]).returncode == 0
    try:
        assert small_store.list_json() == before[0]
        assert_accepted(small_store.check("alice", token))
        r = small_store.run("fsck")
        assert r.rc == 0 and "no problems found" in r.out, r
        for args, stdin in ((("create", "alice", "new"), None), (("rotate", "alice", "ci"), None),
                            (("revoke", "alice", "ci"), None), (("bulk-create",), "alice b1\n"),
                            (("prune",), None)):
            r = small_store.run(*args, input=stdin)
            assert_fails_closed(r, "read-only", str(small_store.path), "nothing was written")
            assert "Read-only file system" not in r.err, r.err
        assert dump(small_store.path) == before[1]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)])
    assert snapshot(small_store) == before


# --- SIGKILL in the middle of a large write ------------------------------

def changed(old, new):
    """Per file and database: the keys added, removed or changed from `old` to `new`."""
    out = {}
    for file in set(old) | set(new):
        for db in set(old.get(file, {})) | set(new.get(file, {})):
            a, b = old.get(file, {}).get(db, {}), new.get(file, {}).get(db, {})
            keys = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
            if keys and db:  # the main database holds the others' roots: it changes with any of them
                out[(file, db)] = keys
    return out


def shape(changes):
    """What must match between two runs of the same command: the name keys
    changed (the same users and names), and how many records of each other
    database changed (new tokens have new random digests)."""
    return {where: (frozenset(keys) if where[1] == b"names" else len(keys)) for where, keys in changes.items()}


KILL_COMMANDS = {
    "bulk-create": lambda tmp, pristine: (("bulk-create",), bulk_lines(20000)),
    "rotate": lambda tmp, pristine: (("rotate", "alice", "ci"), None),
    "import-cpanel": lambda tmp, pristine: (("import-cpanel", cpanel_file(tmp, 5000)), None),
    "revoke --all": lambda tmp, pristine: (("revoke", "erin", "--all"), None),
}


@pytest.mark.parametrize("command", KILL_COMMANDS)
def test_sigkill_leaves_the_old_or_the_new_state(tmp_path, command):
    pristine = Store(tmp_path / "pristine")
    assert pristine.init().rc == 0
    pristine.create("alice", "ci")
    assert pristine.run("bulk-create", input=bulk_lines(3000, "erin")).rc == 0
    args, stdin = KILL_COMMANDS[command](tmp_path, pristine)
    old = dump(pristine.path)

    # The whole command once, on a copy: what the new state looks like.
    reference = Store(tmp_path / "reference")
    shutil.copytree(pristine.path, reference.path)
    started = time.monotonic()
    assert reference.run(*args, input=stdin).rc == 0
    duration = time.monotonic() - started
    new_shape = shape(changed(old, dump(reference.path)))
    assert new_shape

    outcomes = set()
    for i, fraction in enumerate((0.1, 0.3, 0.5, 0.7, 0.9, 1.0)):
        victim = Store(tmp_path / f"victim{i}")
        shutil.copytree(pristine.path, victim.path)
        p = subprocess.Popen([CPTOKEN, "--db", str(victim.path), *map(str, args)], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=base_env())
        if stdin:
            p.stdin.write(stdin.encode())
        p.stdin.close()
        time.sleep(duration * fraction)
        p.send_signal(signal.SIGKILL)
        p.wait()
        after = changed(old, dump(victim.path))
        assert not after or shape(after) == new_shape, f"a mix of old and new after a kill at {fraction:.0%}"
        outcomes.add("new" if after else "old")
        # The killed writer's slot and lock go with it: the store works on.
        assert victim.run("list", "alice", "--json").rc == 0
        assert victim.run("create", "alice", "after-kill").rc == 0
        shutil.rmtree(victim.path)
    print(f"{command}: {duration:.2f}s, kills left {sorted(outcomes)}")


# --- a store directory that vanishes under a running tool ----------------

def test_store_directory_renamed_away_during_bulk_create(tmp_path):
    store = Store(tmp_path / "db")
    assert store.init().rc == 0
    store.create("alice", "ci")
    old = dump(store.path)
    moved = tmp_path / "db.moved"
    lines = tmp_path / "lines"
    lines.write_text(bulk_lines(20000))
    for delay in (0.0, 0.05, 0.2):
        with open(lines) as stdin:
            p = subprocess.Popen([CPTOKEN, "--db", str(store.path), "bulk-create"], stdin=stdin,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env(), text=True)
        time.sleep(delay)
        store.path.rename(moved)
        out, err = p.communicate(timeout=60)
        # Nothing half-written at the path: the command made nothing there.
        assert not store.path.exists()
        after = changed(old, dump(moved))
        if p.returncode == 0:
            # It finished on the directory it had opened: every token is there, whole.
            assert len(out.splitlines()) == 20000
            assert len(after[("tokens.mdb", b"names")]) == 20000
        else:
            assert p.returncode == 1 and out == "" and err.startswith("cptoken: ") and len(err.splitlines()) == 1
            assert after == {}, err
        print(f"renamed after {delay}s: exit {p.returncode} {err.strip()}")
        shutil.rmtree(moved)
        assert store.init().rc == 0
        store.create("alice", "ci")
        old = dump(store.path)

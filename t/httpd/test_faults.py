# SPDX-License-Identifier: Apache-2.0
"""Faults under a running httpd: a full filesystem under the store, a usage
store that cannot grow, a usage store overwritten with garbage. Each ends
closed: every decision stays exactly right under concurrent requests, no
child crashes, the admin finds one clear line in the error log (never one
per request), and the token store is never touched.

The full cases put the store on a small tmpfs under the server's directory
(the www-data children must reach it; needs root: skipped, with the reason,
where mounting is not permitted). The tool's side of the same faults is
t/tool/test_faults.py."""

import errno
import http.client
import json
import os
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import lmdb
import pytest

from conftest import ALL_MPMS, Store, assert_admitted, assert_refused, wait_until
from test_last_used import location, usage

UNKNOWN = "cpanel alice:" + "Q" * 32  # well formed, in no store


@pytest.fixture
def tmpfs_store(srv):
    """A store on a 2 MiB tmpfs at SRV/fs/db, the tmpfs unmounted afterwards
    (httpd, which holds the store open, is stopped first)."""
    mount_point = srv.dir / "fs"
    mount_point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield Store(mount_point / "db").init()
    finally:
        srv.stop()
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory):
    """Fills the filesystem holding `directory` to the last byte with a filler
    file; returns its path (as t/tool/test_faults.py does)."""
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


def burst(srv, expected, threads=8, per_thread=25):
    """Concurrent requests: `threads` keep-alive connections, each sending
    `per_thread` requests that cycle through `expected` ({Authorization value:
    status}). Returns what went otherwise: Counter((authorization, status or
    the client's exception)). A keep-alive connection the server closed
    between two requests (as HTTP lets it) is opened again for the next."""
    wrong = Counter()
    lock = threading.Lock()
    auths = list(expected)

    def one(conn, auth):
        conn.request("GET", "/api/x", headers={"Authorization": auth})
        r = conn.getresponse()
        r.read()
        return r.status

    def client(offset):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=15)
        try:
            for i in range(per_thread):
                auth = auths[(offset + i) % len(auths)]
                try:
                    try:
                        status = one(conn, auth)
                    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                        conn.close()
                        status = one(conn, auth)
                except Exception as e:  # noqa: BLE001 - counted, and the test fails on it
                    status = repr(e)
                    conn.close()
                if status != expected[auth]:
                    with lock:
                        wrong[(auth, status)] += 1
        finally:
            conn.close()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not any(w.is_alive() for w in workers), "a client hung"
    return wrong


def crashes(srv):
    return [line for line in srv.lines() if "exit signal" in line]


def listed(store):
    return store.run("list", "--json").stdout


def records(store):
    """Every key and value of every database in tokens.mdb, read without the
    lock file (nothing written, no slot taken): {db: {key: value}}. Pages a
    failed write left in the file's free space are not records: the bytes of
    the file may differ where its records do not."""
    env = lmdb.open(str(store.path / "tokens.mdb"), subdir=False, readonly=True, lock=False, max_dbs=8)
    try:
        with env.begin() as txn:
            names = [key for key, _ in txn.cursor()]
            out = {b"": dict(txn.cursor())}
            for name in names:
                out[name] = dict(txn.cursor(db=env.open_db(name, txn=txn, create=False)))
        return out
    finally:
        env.close()


def children_that_said(srv, since, tag):
    """{pid: number of lines} of the `tag` lines after `since`."""
    return Counter(line.split("[pid ")[1].split("]")[0].split(":")[0] for line in srv.lines(since, tag))


def bulk_lines(store, user, count):
    """A bulk-create file of `count` tokens of `user` named t0, t1, ..., beside
    the tmpfs (its filesystem is left as it is)."""
    lines = store.path.parent.parent / f"{user}.lines"
    lines.write_text("".join(f"{user} t{i}\n" for i in range(count)))
    return lines


def bulk_tokens(store, user, count):
    """`count` tokens of `user` named t0, t1, ... made by one bulk-create."""
    p = store.run("bulk-create", bulk_lines(store, user, count))
    tokens = [line.split()[2] for line in p.stdout.splitlines()]
    assert len(tokens) == count, p.stdout[:200]
    return tokens


# --- a full filesystem under the token store -----------------------------

@ALL_MPMS
def test_full_disk_leaves_every_decision_and_the_next_write_works(srv, tmpfs_store):
    srv.allow("CPT0100")
    store = tmpfs_store
    a = store.create("alice", "a")
    r = store.create("alice", "r")
    store.revoke("alice", "r")
    bob = bulk_tokens(store, "bob", 300)
    srv.start(location(last_used="Off"), db=store.path)
    expected = {f"cpanel alice:{a}": 200, f"cpanel bob:{bob[0]}": 200, f"cpanel alice:{r}": 401, UNKNOWN: 401}
    assert not burst(srv, expected, threads=2, per_thread=4)

    before = listed(store), records(store)
    filler = fill(store.path.parent)
    # Writes that need new pages: a small one may still fit in the pages
    # LMDB freed in earlier writes, and then rightly succeeds.
    for args in (("bulk-create", bulk_lines(store, "carol", 500)), ("revoke", "bob", "--all")):
        p = store.run(*args, check=False)
        assert p.returncode == 1 and p.stdout == "", p
        assert "full" in p.stderr and "nothing was written" in p.stderr, p.stderr
    assert (listed(store), records(store)) == before

    # httpd decides exactly as before, under concurrent requests.
    assert not burst(srv, expected)
    assert not crashes(srv)

    # Space freed: the next create and revoke work and httpd follows them.
    filler.unlink()
    new = store.create("alice", "new")
    assert_admitted(srv.get(auth=f"cpanel alice:{new}"))
    store.revoke("alice", "a")
    assert_refused(srv.get(auth=f"cpanel alice:{a}"))
    assert_admitted(srv.get(auth=f"cpanel bob:{bob[0]}"), "bob")
    assert not crashes(srv)


# --- the usage store cannot grow -----------------------------------------

@ALL_MPMS
def test_a_full_filesystem_does_not_stop_recording_uses(srv, tmpfs_store):
    """The usage table's blocks are allocated when it is made: a use never
    needs room on the filesystem (a hole written through a map on a full
    one would kill the child)."""
    store = tmpfs_store
    a = store.create("alice", "a")
    many = bulk_tokens(store, "bob", 200)
    srv.start(location(interval=0), db=store.path)
    filler = fill(store.path.parent)
    expected = {f"cpanel alice:{a}": 200}
    expected.update({f"cpanel bob:{t}": 200 for t in many})
    assert not burst(srv, expected, threads=2, per_thread=len(expected))  # each thread cycles through them all
    filler.unlink()
    uses = uses_by_name(store)
    assert all(uses[f"t{i}"] >= 1 for i in range(200)), uses
    assert not srv.lines(0, "CPT0203") and not crashes(srv)


def uses_by_name(store, user="bob"):
    """{name: uses} of `user`'s tokens, from one `cptoken list --json`."""
    return {t["name"]: t["uses"] for t in json.loads(store.run("list", user, "--json").stdout)}


def small_table(path, slots):
    """Replaces the usage table at `path` by an empty one of `slots` slots,
    in place (same file, owner, group and mode)."""
    header = b"CPTKUSG1" + (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + slots.to_bytes(8, "little")
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(header + bytes(4096 - len(header)) + bytes(64 * slots))


@ALL_MPMS
def test_a_full_usage_table_changes_no_decision_and_prune_makes_room(srv):
    """A table with room for fewer tokens than are used (as one the
    manager's additions outgrew; here 16 slots, 100 tokens): the uses of tokens that find no slot
    are not recorded, said once per child, decisions unchanged; `cptoken
    prune` makes it again with room, and the children follow it."""
    srv.allow("CPT0100", "CPT0203")
    store = srv.store
    r = store.create("alice", "r")
    store.revoke("alice", "r")
    many = bulk_tokens(store, "bob", 100)
    small_table(store.path / "usage.slots", 16)
    srv.start(location(interval=0))
    mark = srv.mark()
    expected = {f"cpanel alice:{r}": 401, UNKNOWN: 401}
    expected.update({f"cpanel bob:{t}": 200 for t in many})
    assert not burst(srv, expected, threads=2, per_thread=len(expected))
    lines = srv.wait_lines(mark, "CPT0203", timeout=5)
    assert lines and "no room" in lines[0] and "cptoken prune" in lines[0], lines
    assert max(children_that_said(srv, mark, "CPT0203").values()) == 1, lines
    uses = uses_by_name(store)
    unrecorded = [i for i in range(100) if uses[f"t{i}"] == 0]
    assert len(unrecorded) >= 100 - 16, "a table of 16 slots cannot hold 100 tokens"

    p = store.run("prune")
    assert p.returncode == 0 and "room for 512 tokens" in p.stdout, p
    time.sleep(1.2)  # the children look at the table's path once a second
    assert not burst(srv, {f"cpanel bob:{many[i]}": 200 for i in unrecorded}, threads=1,
                     per_thread=len(unrecorded))
    uses = uses_by_name(store)
    assert all(uses[f"t{i}"] >= 1 for i in unrecorded)
    assert not crashes(srv)


# --- the usage store overwritten with garbage ----------------------------

def garbage(path, size):
    """Overwrites `path` in place (same inode, as `cat junk > usage.slots`
    does) with `size` bytes that are no usage table."""
    data = (b"not an lmdb file\xff\x00" * (size // 18 + 1))[:size]
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def assert_decisions_unchanged(srv, a, r):
    expected = {f"cpanel alice:{a}": 200, f"cpanel alice:{r}": 401, UNKNOWN: 401}
    assert not burst(srv, expected, threads=4, per_thread=15)


@ALL_MPMS
def test_usage_store_garbage_before_start(srv):
    srv.allow("CPT0100", "CPT0203")
    store = srv.store
    a = store.create("alice", "a")
    r = store.create("alice", "r")
    store.revoke("alice", "r")
    tokens_before = records(store)
    garbage(store.path / "usage.slots", 65536)
    srv.start(location(interval=0))
    assert_decisions_unchanged(srv, a, r)
    lines = srv.wait_lines(0, "CPT0203", timeout=5)
    assert lines and "usage.slots" in lines[0], srv.lines()
    assert max(children_that_said(srv, 0, "CPT0203").values()) == 1, lines
    assert not crashes(srv)
    assert records(store) == tokens_before


@ALL_MPMS
@pytest.mark.parametrize("size", ["same", "shorter", "longer"])
def test_usage_store_garbage_while_running(srv, size):
    srv.allow("CPT0100", "CPT0203")
    store = srv.store
    a = store.create("alice", "a")
    r = store.create("alice", "r")
    store.revoke("alice", "r")
    srv.start(location(interval=0))
    assert_decisions_unchanged(srv, a, r)
    assert wait_until(lambda: usage(store, "alice", "a")[2] >= 1, 5)
    tokens_before = records(store)
    usage_file = store.path / "usage.slots"
    length = usage_file.stat().st_size
    garbage(usage_file, {"same": length, "shorter": 4096, "longer": length + (1 << 20)}[size])
    mark = srv.mark()
    assert_decisions_unchanged(srv, a, r)
    assert_decisions_unchanged(srv, a, r)
    lines = srv.wait_lines(mark, "CPT0203", timeout=5)
    assert lines and "usage.slots" in lines[0], srv.lines(mark)
    assert not crashes(srv), crashes(srv)
    assert records(store) == tokens_before

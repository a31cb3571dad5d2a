"""No decision is made on a snapshot older than the token file's newest, and
nothing is decided from what an overwritten file or a cache said.

The lock file (tokens.mdb-lock) must be writable by httpd's group, since LMDB
readers take their slots there; it also names the current snapshot. A process
of that group (a PHP script under mod_php, say) can rewrite that id and make
readers and the next writer use an older snapshot, in which a revoked token
is live. The data file's own meta pages, which the group cannot write, name
the true newest one: readers and writers compare the two."""

import json
import os
import shutil
import struct
import subprocess
import time

from conftest import ALL_MPMS, PYTHON, assert_admitted, assert_refused

N = 6

# LMDB 0.9 on x86_64: the lock file's header holds the id of the newest
# transaction, 8 bytes little endian at offset 48 (after magic, format and
# the writer mutex).
LOCK_TXNID_OFFSET = 48


def shift_lock_txnid(lock, delta):
    """Adds `delta` to the snapshot id in the lock file, as the httpd user
    (www-data) can: runs as that user, like an attacker's script would."""
    code = ("import mmap,struct,os,sys;f=os.open(sys.argv[1],os.O_RDWR);m=mmap.mmap(f,4096);"
            f"n=struct.unpack_from('<Q',m,{LOCK_TXNID_OFFSET})[0];"
            f"struct.pack_into('<Q',m,{LOCK_TXNID_OFFSET},n+({delta}));m.flush()")
    p = subprocess.run(["runuser", "-u", "www-data", "--", PYTHON, "-c", code, str(lock)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"the httpd user could not write the lock file: {p.stderr}"


def check(store, user, token):
    """`cptoken check USER` with the token on stdin."""
    env = dict(os.environ, LC_ALL="C")
    env.pop("CPTOKEN_DB", None)
    from conftest import CPTOKEN
    return subprocess.run([CPTOKEN, "--db", str(store.path), "check", user], input=token + "\n",
                          capture_output=True, text=True, env=env, timeout=30)


def assert_never_admitted(srv, token, user="alice"):
    statuses = [srv.get(auth=f"cpanel {user}:{token}").status for _ in range(N)]
    assert 200 not in statuses, f"a revoked token was admitted: {statuses}"
    return statuses


@ALL_MPMS
def test_lock_file_rolled_back_does_not_bring_a_revoked_token_back(srv):
    srv.allow("CPT0100", "CPT0200")
    revoked = srv.store.create("alice", "revoked")
    kept = srv.store.create("alice", "kept")
    srv.start()
    for _ in range(N):  # every child has both in its record cache
        assert_admitted(srv.get(auth=f"cpanel alice:{revoked}"))
        assert_admitted(srv.get(auth=f"cpanel alice:{kept}"))
    srv.store.revoke("alice", "revoked")
    assert_refused(srv.get(auth=f"cpanel alice:{revoked}"))

    shift_lock_txnid(srv.store.path / "tokens.mdb-lock", -1)
    mark = srv.mark()
    statuses = assert_never_admitted(srv, revoked)
    assert set(statuses) == {500}, f"a store whose lock file lies must answer 500: {statuses}"
    lines = srv.wait_lines(mark, "CPT0200", 1)
    assert lines and all("lock file was changed outside LMDB" in l for l in lines), lines
    assert revoked not in srv.log_text() and kept not in srv.log_text()

    # The tool refuses too: no "accepted", no write on the older snapshot.
    r = check(srv.store, "alice", revoked)
    assert r.returncode != 0 and "accepted" not in r.stdout, (r.stdout, r.stderr)
    assert "lock file was changed outside LMDB" in r.stderr, r.stderr
    before = (srv.store.path / "tokens.mdb").read_bytes()
    r = srv.store.run("create", "alice", "another", check=False)
    assert r.returncode != 0 and r.stdout == "", (r.stdout, r.stderr)
    assert "lock file was changed outside LMDB" in r.stderr and "fuser" in r.stderr, r.stderr
    assert (srv.store.path / "tokens.mdb").read_bytes() == before, "a write was made on the old snapshot"

    # Recovery as the message says: stop every process that has the store
    # open, and the next one to open it rebuilds the lock file.
    srv.stop()
    names = [t["name"] for t in json.loads(srv.store.run("list", "--json").stdout)]
    assert names == ["kept"], names
    srv.store.create("alice", "after")
    srv.proc = None
    srv.start()
    assert_refused(srv.get(auth=f"cpanel alice:{revoked}"))
    assert_admitted(srv.get(auth=f"cpanel alice:{kept}"))


def test_lock_file_pushed_forward_is_refused_too(srv):
    srv.allow("CPT0200")
    token = srv.store.create("alice", "a")
    srv.start()
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    shift_lock_txnid(srv.store.path / "tokens.mdb-lock", +1)
    mark = srv.mark()
    statuses = [srv.get(auth=f"cpanel alice:{token}").status for _ in range(N)]
    assert set(statuses) == {500}, statuses
    assert srv.wait_lines(mark, "CPT0200", 1), srv.lines(mark)


@ALL_MPMS
def test_store_overwritten_in_place_with_a_revoked_copy(srv):
    """`cat copy/tokens.mdb > tokens.mdb`, the copy at the same transaction id
    as the live file, so that only the contents differ: within the module's
    one-second check, no request is decided from the old contents or the
    record cache any more; what is decided agrees with `cptoken check`."""
    srv.allow("CPT0100", "CPT0200")
    token = srv.store.create("alice", "a")
    srv.start()
    copy_dir = srv.dir / "copy"
    shutil.copytree(srv.store.path, copy_dir)
    from conftest import Store
    copy = Store(copy_dir)
    copy.revoke("alice", "a")               # the copy: one write later
    srv.store.create("alice", "b")           # the live store: one write later too
    for _ in range(N):                      # every child caches the token
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))

    with open(srv.store.path / "tokens.mdb", "r+b") as live:
        live.write((copy_dir / "tokens.mdb").read_bytes())
        live.truncate()
    assert check(srv.store, "alice", token).returncode == 1
    time.sleep(1.2)
    assert_never_admitted(srv, token)


def test_store_truncated_in_place_fails_closed_without_crashing(srv):
    srv.allow("CPT0200")
    token = srv.store.create("alice", "a")
    srv.start()
    for _ in range(N):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    os.truncate(srv.store.path / "tokens.mdb", 0)
    time.sleep(1.2)
    mark = srv.mark()
    statuses = [srv.get(auth=f"cpanel alice:{token}").status for _ in range(N)]
    assert set(statuses) == {500}, statuses
    lines = srv.wait_lines(mark, "CPT0200", 1)
    assert lines and all("changed in place" in l for l in lines), lines
    crashes = [l for l in srv.lines() if "exit signal" in l]
    assert not crashes, crashes


@ALL_MPMS
def test_store_cut_short_before_start_is_500_not_a_crash_loop(srv):
    """A tokens.mdb cut short while httpd was down (a disk full during a copy,
    a bad restore): children must not die of SIGBUS reading it at start."""
    srv.allow("CPT0200")
    token = srv.store.create("alice", "a")
    for i in range(200):  # a file of several pages
        srv.store.run("create", "alice", f"t{i}")
    data = srv.store.path / "tokens.mdb"
    os.truncate(data, data.stat().st_size // 2)
    srv.start()
    mark = srv.mark()
    statuses = [srv.get(auth=f"cpanel alice:{token}").status for _ in range(N)]
    assert set(statuses) == {500}, statuses
    lines = srv.wait_lines(mark, "CPT0200", 1)
    assert lines and all("changed in place" in l for l in lines), lines
    time.sleep(1.5)  # children that died would be reported meanwhile
    crashes = [l for l in srv.lines() if "exit signal" in l]
    assert not crashes, crashes[:3]

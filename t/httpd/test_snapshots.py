# SPDX-License-Identifier: Apache-2.0
"""No decision is made on a snapshot older than the token file's newest, and
nothing is decided from what an overwritten file or a cache said.

httpd's children read tokens.mdb without its lock file (the writers' alone)
and keep a read only if the commit record (tokens.mdb-committed) names its
snapshot before and after it; a read that a commit overlapped is made
again. These tests run that under a writer committing as fast as cptoken
can, and against files changed in place."""

import json
import os
import struct
import shutil
import subprocess
import threading
import time
import http.client
from collections import Counter
from pathlib import Path

from conftest import ALL_MPMS, PYTHON, assert_admitted, assert_refused
from test_concurrency import Traffic
from test_faults import bulk_tokens

N = 6


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
def test_answers_stay_right_while_a_writer_commits_in_a_tight_loop(srv):
    """A writer commits again and again (edits of one token, creates of
    others) while four keep-alive connections ask about tokens whose answer
    never changes: every answer is the right one, never a 500. The clients
    ask for 4 s and until the writer has made 20 commits: on a busy machine
    (httpd under ASan) four clients that are never kept waiting leave the
    writer's `cptoken` runs little CPU."""
    srv.allow("CPT0100")  # the revoked token's refusals
    kept = srv.store.create("alice", "kept")
    churn = srv.store.create("alice", "churn")
    revoked = srv.store.create("alice", "revoked")
    srv.store.revoke("alice", "revoked")
    srv.start()
    stop = threading.Event()
    commits = [0]
    enough = 20  # commits the writer must have made while the clients asked

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            srv.store.run("edit", "alice", "churn", "--expires", "+1d" if n % 2 else "never")
            srv.store.create("bob", f"n{n}")
            commits[0] += 2

    wrong = []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        start = time.monotonic()
        try:
            while (time.monotonic() < start + 4 or commits[0] < enough) and time.monotonic() < start + 60:
                for token, want in ((kept, 200), (churn, 200), (revoked, 401)):
                    try:
                        conn.request("GET", "/api/x", headers={"Authorization": f"cpanel alice:{token}"})
                        r = conn.getresponse()
                    except http.client.RemoteDisconnected:
                        # httpd closed an idle keep-alive connection (a child stopped as surplus) just
                        # as this request went out: not an answer; ask again on a new connection.
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                        continue
                    r.read()
                    if r.status != want:
                        wrong.append((want, r.status))
                    if r.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert commits[0] >= enough, f"only {commits[0]} commits: the writer did not run"
    assert not wrong, f"{len(wrong)} wrong answers (wanted, got), first: {wrong[:5]}"
    # A closed connection is asked again above; a child that died is not an answer either.
    crashed = [line for line in srv.lines() if "exit signal" in line]
    assert not crashed, crashed


def slow_disk(directory, ms, fail_fdatasync_from=None):
    """The environment that gives a command a disk whose every sync takes
    `ms` milliseconds and, with `fail_fdatasync_from` = N, whose Nth
    fdatasync and later ones fail (t/httpd/slow_sync.c, built into `directory`)."""
    shim = Path(directory) / "slow_sync.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(Path(__file__).parent / "slow_sync.c"),
                    "-ldl"], check=True, capture_output=True)
    env = {"LD_PRELOAD": str(shim), "CPTOKEN_TEST_SYNC_MS": str(ms)}
    if fail_fdatasync_from:
        env["CPTOKEN_TEST_FAIL_FDATASYNC"] = str(fail_fdatasync_from)
    return env


@ALL_MPMS
def test_a_commit_slow_to_reach_the_disk_refuses_no_request(srv):
    """A busy disk makes a commit's last sync slow (seen in CI: beyond the
    200 ms a reader waits for a commit to be published). Readers see the new
    snapshot as soon as LMDB has written its meta page; the tool must publish
    it then, not after the disk has it, or every request in between gets 500
    (CPT0200, "a writer died between its commit and its record"). Each command
    still returns only once its change is on disk, and is then in force."""
    srv.allow("CPT0100")  # the revoked tokens' refusals
    stable = srv.store.create("alice", "stable")
    srv.start()
    disk = slow_disk(srv.dir, 400)

    def fn(i):
        return srv.get(auth=f"cpanel alice:{stable}").status

    with Traffic(srv, 3, fn) as t:
        for k in range(3):
            started = time.monotonic()
            token = srv.store.run("create", "bob", f"t{k}", env=disk).stdout.strip()
            assert time.monotonic() - started >= 0.8, "the command did not wait for the disk: the shim is not in use"
            assert_admitted(srv.get(auth=f"cpanel bob:{token}"), "bob")
            srv.store.run("revoke", "bob", f"t{k}", env=disk)
            assert_refused(srv.get(auth=f"cpanel bob:{token}"))
    statuses = Counter(outcome for _, _, outcome, _ in t.results)
    assert statuses[200] > 30, statuses
    assert set(statuses) == {200}, f"requests refused while a commit reached the disk: {statuses}"


def test_a_commit_the_disk_does_not_take_is_said_to_be_in_force(srv):
    """The sync of the meta page fails after the commit was published
    (LMDB's own sync of the data pages went through): the command exits 1
    and says that the change is made and in force but may not be on disk,
    so that the admin knows to revoke what they did not mean to keep."""
    p = srv.store.run("create", "bob", "t", check=False, env=slow_disk(srv.dir, 0, fail_fdatasync_from=2))
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "in force, but may not be on disk" in p.stderr, p.stderr
    listed = srv.store.run("list", "bob", "--json").stdout
    assert '"t"' in listed, listed


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


def assert_refused_at_start_without_crashes(srv, token, reason):
    """Every request 500 with CPT0200 giving REASON, and no child dead of it."""
    mark = srv.mark()
    statuses = [srv.get(auth=f"cpanel alice:{token}").status for _ in range(N)]
    assert set(statuses) == {500}, statuses
    lines = srv.wait_lines(mark, "CPT0200", 1)
    assert lines and all(reason in l for l in lines), lines
    time.sleep(1.5)  # children that died would be reported meanwhile
    crashes = [l for l in srv.lines() if "exit signal" in l]
    assert not crashes, crashes[:3]


@ALL_MPMS
def test_store_cut_short_before_start_is_500_not_a_crash_loop(srv):
    """A tokens.mdb cut short while httpd was down (a disk full during a copy,
    a bad restore): children must not die of SIGBUS reading it at start."""
    srv.allow("CPT0200")
    token = srv.store.create("alice", "a")
    bulk_tokens(srv.store, "alice", 200)  # a file of several pages, in one commit (200 took 14-23 s)
    data = srv.store.path / "tokens.mdb"
    os.truncate(data, data.stat().st_size // 2)
    srv.start()
    assert_refused_at_start_without_crashes(srv, token, "changed in place")


@ALL_MPMS
def test_store_with_a_page_size_of_zero_is_500_not_a_crash_loop(srv):
    """A meta page naming a page size of 0 (a damaged disk): liblmdb divides
    by it when it opens the file, which killed every child (SIGFPE)."""
    srv.allow("CPT0200")
    token = srv.store.create("alice", "a")
    with open(srv.store.path / "tokens.mdb", "r+b") as f:
        f.seek(40)  # the page size in meta page 0 (mm_dbs[FREE_DBI].md_pad)
        f.write(struct.pack("<I", 0))
    srv.start()
    assert_refused_at_start_without_crashes(srv, token, "names a page size of 0 bytes")

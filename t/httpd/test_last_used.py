# SPDX-License-Identifier: Apache-2.0
"""Last used, recorded by the module: after a request a token admitted, the
time, the client address and the count are in the usage table before the
request's access-log line, every use at once whatever
CPTokenLastUsedInterval says (kept for old configurations), with no thread
of the module's own; they follow a store directory swap, cost nothing with
CPTokenLastUsed Off, and a usage table that cannot be written never changes
a decision."""

import http.client
import json
import os
import time

from conftest import (ALL_MPMS, CPANEL_AUTH, ISO_RE, Store, api_location, assert_admitted, child_pids,
                      wait_until)
from test_config import configtest


def usage(store, user, name):
    """(last_used, last_used_ip, uses) as `cptoken show --json` gives them."""
    shown = json.loads(store.run("show", user, name, "--json").stdout)
    return shown["last_used"], shown["last_used_ip"], shown["uses"]


def location(interval=None, last_used=None, path="/api"):
    more = ""
    if interval is not None:
        more += f"\n    CPTokenLastUsedInterval {interval}"
    if last_used is not None:
        more += f"\n    CPTokenLastUsed {last_used}"
    return api_location(path, auth=CPANEL_AUTH + more)


class KeepAlive:
    """One keep-alive connection: one child serves every request on it."""

    def __init__(self, srv, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        self.token = token

    def send(self, count, path="/api/x"):
        for _ in range(count):
            self.conn.request("GET", path, headers={"Authorization": f"cpanel alice:{self.token}"})
            r = self.conn.getresponse()
            r.read()
            assert r.status == 200, r.status

    def close(self):
        self.conn.close()


@ALL_MPMS
def test_last_used_appears_after_a_request_with_the_address(srv):
    token = srv.store.create("alice", "ci")
    srv.start(location(interval=0))
    assert usage(srv.store, "alice", "ci") == (None, None, 0)
    before = int(time.time())
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert wait_until(lambda: usage(srv.store, "alice", "ci")[2] == 1, 5), usage(srv.store, "alice", "ci")
    last_used, ip, uses = usage(srv.store, "alice", "ci")
    assert ISO_RE.match(last_used) and ip == "127.0.0.1"
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before)) <= last_used

    assert_admitted(srv.get(auth=f"cpanel alice:{token}", v6=True))
    assert wait_until(lambda: usage(srv.store, "alice", "ci")[2] == 2, 5)
    assert usage(srv.store, "alice", "ci")[1] == "::1"
    table = srv.store.run("list").stdout.splitlines()
    assert table[0].split()[:9] == ["USER", "NAME", "SERVICE", "CREATED", "EXPIRES", "LAST", "USED", "USES", "ALLOWED"]
    assert " from ::1 " in table[1] and table[1].split()[-2] == "2", table


@ALL_MPMS
def test_default_config_records_last_used(srv):
    """The bug of issue 9: after 200s, `cptoken list` said LAST USED never.
    No directive at all: the default (On, every 60 s) writes a first use
    within about a second."""
    token = srv.store.create("alice", "ci")
    srv.start()
    for _ in range(3):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))

    def last_used():
        return json.loads(srv.store.run("list", "--json").stdout)[0]["last_used"]
    assert wait_until(last_used, 5), srv.store.run("list").stdout
    assert ISO_RE.match(last_used())


@ALL_MPMS
def test_refused_requests_are_not_uses(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci", "--allow-ip", "192.0.2.1")
    srv.start(location(interval=0))
    assert srv.get(auth=f"cpanel alice:{token}").status == 401
    assert srv.get(auth="cpanel alice:" + "A" * 32).status == 401
    time.sleep(0.5)
    assert usage(srv.store, "alice", "ci") == (None, None, 0)


@ALL_MPMS
def test_forbidden_requests_are_not_uses(srv):
    """A token admitted and then refused by its scope (403, CPT0102), even
    where the 403 page is an ErrorDocument inside the scope, was not used;
    the same child then records another token's use, so the writer had its
    chance to write the first."""
    srv.allow("CPT0102")
    scoped = srv.store.create("alice", "scoped", "--scope", "/api/in", "--scope", "/errors")
    other = srv.store.create("alice", "other")
    (srv.htdocs / "errors").mkdir(mode=0o755)
    (srv.htdocs / "errors" / "403.html").write_text("not for this token\n")
    (srv.htdocs / "errors" / "403.html").chmod(0o644)
    srv.start(location(interval=0) + "\nErrorDocument 403 /errors/403.html\n")
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    for path in ("/api/out/x", "/api/out/y"):
        conn.request("GET", path, headers={"Authorization": f"cpanel alice:{scoped}"})
        r = conn.getresponse()
        assert r.read() == b"not for this token\n" and r.status == 403, r.status
    conn.request("GET", "/api/in/x", headers={"Authorization": f"cpanel alice:{other}"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
    conn.close()
    assert wait_until(lambda: usage(srv.store, "alice", "other")[2] == 1, 5), usage(srv.store, "alice", "other")
    assert usage(srv.store, "alice", "scoped") == (None, None, 0)
    listed = {t["name"]: t for t in json.loads(srv.store.run("list", "--json").stdout)}
    assert listed["scoped"]["last_used"] is None and listed["scoped"]["uses"] == 0, listed["scoped"]


@ALL_MPMS
def test_every_use_is_recorded_before_its_access_log_line(srv):
    """With an interval of an hour (which meant one write an hour per child
    before 0.14): each use is in the table once its request is logged."""
    token = srv.store.create("alice", "ci")
    srv.start(location(interval=3600))
    client = KeepAlive(srv, token)
    for sent in range(1, 6):
        client.send(1)
        assert wait_until(lambda: sum('"GET /api/x ' in line for line in srv.access_lines()) == sent, 5)
        assert usage(srv.store, "alice", "ci")[2] == sent
    client.close()
    srv.stop()
    assert usage(srv.store, "alice", "ci")[2] == 5


@ALL_MPMS
def test_usage_follows_a_replaced_store_directory(srv):
    srv.allow("CPT0100", "CPT0203")  # a use written while no store is in place
    ta = srv.store.create("alice", "old")
    b = Store(srv.dir / "store.next").init()
    tb = b.create("bob", "new")
    srv.start(location(interval=0))
    assert_admitted(srv.get(auth=f"cpanel alice:{ta}"))
    assert wait_until(lambda: usage(srv.store, "alice", "old")[2] == 1, 5)

    old = Store(srv.dir / "store.old")
    os.rename(srv.store.path, old.path)
    os.rename(b.path, srv.store.path)
    time.sleep(1.2)
    for _ in range(3):
        assert_admitted(srv.get(auth=f"cpanel bob:{tb}"), "bob")
    assert wait_until(lambda: usage(srv.store, "bob", "new")[2] == 3, 5), usage(srv.store, "bob", "new")
    assert usage(old, "alice", "old")[2] == 1


def threads_of(pids):
    return {pid: len(os.listdir(f"/proc/{pid}/task")) for pid in pids}


def settled_threads_of(pids):
    """threads_of(pids) once the children have started all their threads
    (the same in two looks 0.3 s apart): worker and event start theirs after
    the port answers, and slowly under a sanitizer."""
    seen = threads_of(pids)
    for _ in range(20):
        time.sleep(0.3)
        now = threads_of([p for p in pids if os.path.exists(f"/proc/{p}")])
        if now == seen:
            break
        seen = now
    return seen


@ALL_MPMS
def test_off_writes_nothing_and_no_thread_is_started(srv):
    token = srv.store.create("alice", "ci")
    srv.start(location(interval=0, last_used="Off") + location(interval=0, path="/on"))
    usage_file = srv.store.path / "usage.slots"
    before = usage_file.read_bytes()
    pids = child_pids(srv)
    threads = settled_threads_of(pids)
    for _ in range(20):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    time.sleep(0.5)
    assert usage_file.read_bytes() == before
    assert usage(srv.store, "alice", "ci") == (None, None, 0)

    # The same server records the uses of a location with it on, from the
    # request's own thread: no child has a thread more.
    client = KeepAlive(srv, token)
    client.send(1, "/on/x")
    assert wait_until(lambda: usage(srv.store, "alice", "ci")[2] == 1, 5)
    client.close()
    assert threads_of([p for p in pids if os.path.exists(f"/proc/{p}")]) == \
        {p: n for p, n in threads.items() if os.path.exists(f"/proc/{p}")}


@ALL_MPMS
def test_unwritable_usage_store_changes_no_decision(srv):
    srv.allow("CPT0203")
    token = srv.store.create("alice", "ci")
    os.chmod(srv.store.path / "usage.slots", 0o640)  # httpd's group may read it, not write it
    srv.start(location(interval=0))
    mark = srv.mark()
    for _ in range(10):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    lines = srv.wait_lines(mark, "CPT0203")
    assert "last-used" in lines[0] and "usage.slots" in lines[0], lines
    time.sleep(0.5)
    # Once per child, not once per request.
    children = {l.split("[pid ")[1].split("]")[0].split(":")[0] for l in srv.lines(mark, "CPT0203")}
    assert len(srv.lines(mark, "CPT0203")) == len(children), srv.lines(mark, "CPT0203")
    assert usage(srv.store, "alice", "ci") == (None, None, 0)


@ALL_MPMS
def test_missing_usage_store_changes_no_decision(srv):
    srv.allow("CPT0203")
    token = srv.store.create("alice", "ci")
    os.unlink(srv.store.path / "usage.slots")
    srv.start(location(interval=0))
    for _ in range(5):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert srv.wait_lines(0, "CPT0203")
    assert srv.store.run("list").returncode == 0


def test_interval_takes_seconds_from_0_to_a_day(srv):
    for good in ("0", "60", "86400"):
        rc, out = configtest(srv, location(interval=good))
        assert rc == 0, out
    for bad in ("-1", "86401", "1m", "abc", "", "+5", " 5"):
        rc, out = configtest(srv, location(interval=f'"{bad}"'))
        assert rc != 0 and "CPTokenLastUsedInterval" in out, (bad, out)
    rc, out = configtest(srv, location(last_used="maybe"))
    assert rc != 0 and "CPTokenLastUsed" in out, out

"""The reader table of the token store's lock file is sized by whichever
process creates that file. Lightning Stream opens the store with LMDB's
default of 126 slots and has no option to change it: if it creates the lock
file, httpd's children are limited to 126 concurrent readers. Each child
says so when it opens such a store (CPT0202); the fix in the docs is to let
cptoken create (or grow) the lock file while nothing has the store open, and
only then start Lightning Stream and httpd, in any order.

The stand-in for Lightning Stream is a process that opens the store exactly
as it does: read-write, LMDB's default reader table, held open."""

import subprocess
import time

import pytest

from conftest import PYTHON, REALM, api_location, wait_until

# 160 children of one thread each, and requests that each take half a
# second at the backend: a load of 160 concurrent clients keeps every child
# busy at once, and each child keeps the reader slot it took.
BIG_EVENT = """
ServerLimit 160
ThreadLimit 1
ThreadsPerChild 1
StartServers 160
MinSpareThreads 1
MaxSpareThreads 320
MaxRequestWorkers 160
""" + api_location("/slow")

HOLDER = r"""
import sys, time, lmdb
env = lmdb.open(sys.argv[1], subdir=False, max_dbs=64, map_size=16 << 30, mode=0o664)  # max_readers: 126
print("open", env.info()["max_readers"], flush=True)
time.sleep(600)
"""


class Holder:
    """A process that holds the store open as Lightning Stream does."""

    def __init__(self, store):
        self.proc = subprocess.Popen([PYTHON, "-c", HOLDER, str(store.path / "tokens.mdb")],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: __import__("os").umask(0o002))
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["open"], f"the holder did not open the store: {self.proc.stderr.read()}"
        self.slots = int(line[1])

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holder():
    made = []

    def start(store):
        made.append(Holder(store))
        return made[-1]
    yield start
    for h in made:
        h.close()


def start_big(srv):
    """Starts the 160-child event httpd; returns once every child runs."""
    srv.start(BIG_EVENT.replace("@REALM@", REALM))

    def children():
        p = subprocess.run(["ps", "--ppid", str(srv.proc.pid), "-o", "pid="], capture_output=True, text=True)
        return len(p.stdout.split())
    assert wait_until(lambda: children() >= 160, timeout=20), f"only {children()} children started"
    time.sleep(0.5)  # their child_init


def concurrent_statuses(srv, token, clients=160, requests=480):
    """(complete, failed, non-2xx) of `requests` requests from `clients` concurrent clients (ab)."""
    p = subprocess.run(["ab", "-q", "-n", str(requests), "-c", str(clients), "-s", "20",
                        "-H", f"Authorization: cpanel alice:{token}", srv.url("/slow/x")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    field = {l.split(":")[0]: int(l.split()[-1]) for l in p.stdout.splitlines()
             if l.startswith(("Complete requests:", "Failed requests:", "Non-2xx responses:"))}
    return field["Complete requests"], field["Failed requests"], field.get("Non-2xx responses", 0)


def reader_slots_in_use(store):
    """Reader slots held in the token store's lock file (mdb_stat -r)."""
    p = subprocess.run(["mdb_stat", "-r", "-n", str(store.path / "tokens.mdb")], capture_output=True, text=True)
    assert "Reader Table Status" in p.stdout, p.stderr  # (it exits 1 after printing it: mdb_stat's own business)
    return sum(1 for l in p.stdout.splitlines() if l.split()[:1] and l.split()[0].isdigit())


def test_a_lock_file_made_by_lightning_stream_is_reported_at_child_start(srv, holder):
    token = srv.store.create("alice", "deploy")
    (srv.store.path / "tokens.mdb-lock").unlink()
    ls = holder(srv.store)  # Lightning Stream first, on a store without a lock file
    assert ls.slots == 126
    start_big(srv)
    srv.allow("CPT0202", "CPT0200")
    assert wait_until(lambda: len(srv.lines(tag="CPT0202")) >= 100, 10)  # said by each child that opens the store
    lines = srv.lines(tag="CPT0202")
    assert ":error]" in lines[0], lines[0]
    assert "has 126 slots, fewer than the 224 this httpd may use" in lines[0], lines[0]
    assert f"cptoken --db {srv.store.path} init --group GROUP" in lines[0], lines[0]
    # What it warns of: each child keeps a reader slot, so children past the
    # 126th cannot read the store, and say so at start.
    assert wait_until(lambda: reader_slots_in_use(srv.store) == 126, 10)
    assert wait_until(lambda: len(srv.lines(tag="CPT0200")) >= 160 - 126, 10), srv.lines(tag="CPT0200")[:3]
    full = srv.lines(tag="CPT0200")
    assert all("no free reader slot" in l and "all 126 slots" in l for l in full), full[:3]


def test_the_documented_order_gives_every_concurrent_request_a_reader(srv, holder):
    token = srv.store.create("alice", "deploy")
    (srv.store.path / "tokens.mdb-lock").unlink()
    holder(srv.store).close()  # a lock file of 126 slots was left behind, as above
    # The docs' order: with nothing holding the store open, cptoken makes the
    # table full size; then Lightning Stream, then httpd.
    srv.store.init()
    ls = holder(srv.store)
    assert ls.slots > 126
    srv.allow("AH00484")  # every worker busy: the load is meant to reach them all
    start_big(srv)
    assert wait_until(lambda: reader_slots_in_use(srv.store) >= 160, 10)
    assert concurrent_statuses(srv, token) == (480, 0, 0)
    assert srv.lines(tag="CPT0202") == []
    assert srv.lines(tag="CPT0200") == []

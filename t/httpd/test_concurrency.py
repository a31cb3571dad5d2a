# SPDX-License-Identifier: Apache-2.0
"""Concurrent clients while the tool writes to the store or the store is
replaced: never a 500, never a wrong verdict."""

import ctypes
import os
import threading
import time

from conftest import ALL_MPMS, Store, assert_admitted, assert_refused


class Traffic:
    """Client loops running `fn(i)` until stopped; collects (time answered, loop, outcome, time sent)."""

    def __init__(self, srv, loops, fn):
        self.results = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i, fn)) for i in range(loops)]

    def _run(self, i, fn):
        while not self.stop_flag.is_set():
            sent = time.monotonic()
            try:
                outcome = fn(i)
            except AssertionError as e:
                outcome = ("curl", str(e)[:200])
            with self.lock:
                self.results.append((time.monotonic(), i, outcome, sent))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join()


@ALL_MPMS
def test_tool_writes_during_traffic(srv):
    """cptoken create/edit/revoke in a loop while 3 clients use a stable token."""
    srv.allow("CPT0100")
    stable = srv.store.create("alice", "stable")
    srv.start()

    def fn(i):
        r = srv.get(auth=f"cpanel alice:{stable}", v6=(i == 2))
        return r.status, r.backend_headers.get("x-remote-user") if r.status == 200 else None

    with Traffic(srv, 3, fn) as t:
        for k in range(12):
            tok = srv.store.create("bob", f"t{k}", "--expires", "+1d")
            srv.store.edit("bob", f"t{k}", "--allow-ip", "127.0.0.1")
            assert_admitted(srv.get(auth=f"cpanel bob:{tok}"), "bob")
            srv.store.revoke("bob", f"t{k}")
            assert_refused(srv.get(auth=f"cpanel bob:{tok}"))
    bad = [r for r in t.results if r[2] != (200, "alice")]
    assert len(t.results) > 30, len(t.results)
    assert not bad, f"{len(bad)} of {len(t.results)} requests went wrong: {bad[:5]}"


def exchange(a, b):
    """Swaps two directories atomically (renameat2 RENAME_EXCHANGE), so that
    there is never a moment without a store at either path."""
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if libc.renameat2(AT_FDCWD, os.fsencode(str(a)), AT_FDCWD, os.fsencode(str(b)), RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@ALL_MPMS
def test_store_replaced_during_traffic(srv):
    """Clients alternate between the old store's token and the new one's while
    another store is swapped in atomically: only 200 or 401, never 500; after
    1.2 s only the new token is admitted."""
    srv.allow("CPT0100")
    ta = srv.store.create("alice", "old")
    nxt = Store(srv.dir / "store.next").init()
    box = {"tb": nxt.create("bob", "new")}
    srv.start()
    tb_ready = threading.Event()

    def fn(i):
        if i % 2 == 0 or not tb_ready.is_set():
            r = srv.get(auth=f"cpanel alice:{ta}")
            return ("ta", r.status)
        r = srv.get(auth=f"cpanel bob:{box['tb']}")
        return ("tb", r.status)

    with Traffic(srv, 4, fn) as t:
        time.sleep(1.0)
        t_rename = time.monotonic()
        exchange(nxt.path, srv.store.path)
        tb_ready.set()
        switched = time.monotonic()
        time.sleep(2.5)
    statuses = {o[1] for _, _, o, _ in t.results}
    assert statuses <= {200, 401}, f"unexpected statuses: {[r for r in t.results if r[2][1] not in (200, 401)][:5]}"
    # Judged by when a request was sent: one sent before the switch may come back late.
    late = [(o, round(sent - switched, 2)) for _, _, o, sent in t.results if sent > switched + 1.5]
    assert late, "no requests after the switch"
    wrong = [x for x in late if (x[0][0] == "ta" and x[0][1] != 401) or (x[0][0] == "tb" and x[0][1] != 200)]
    assert not wrong, f"verdicts more than 1.2 s after the switch: {wrong[:10]}"
    early = [o for ts, _, o, _ in t.results if ts < t_rename]
    assert early and all(o == ("ta", 200) for o in early), early[:10]

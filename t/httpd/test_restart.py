# SPDX-License-Identifier: Apache-2.0
"""Graceful restarts (SIGUSR1) under traffic: every request is answered 200,
and the store keeps working in the new generation of children.

These tests assert answers, never speed: on a loaded machine the requests
may crawl, so the only time limits are generous ones against a hang."""

import os
import signal
import threading

from conftest import ALL_MPMS, Store, assert_admitted, assert_refused, child_pids, wait_until

TOTAL = 200         # requests per run, over two client loops
HANG_TIMEOUT = 120  # seconds: only to stop a run that hangs, never a speed limit


def resumed(srv):
    """How many times httpd said it is ready (once at start, once per restart)."""
    return sum("resuming normal operations" in l for l in srv.lines())


@ALL_MPMS
def test_graceful_restart_under_traffic(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, HANG_TIMEOUT)
    results = []
    lock = threading.Lock()

    def loop(n, **kw):
        for _ in range(n):
            try:
                r = srv.get(auth=f"cpanel alice:{token}", **kw)
                outcome = (r.status, r.backend_headers.get("x-remote-user") if r.status == 200 else r.body[:200])
            except AssertionError as e:  # curl itself failed (reset, refused)
                outcome = ("curl", str(e))
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=loop, args=(TOTAL // 2,)),
               threading.Thread(target=loop, args=(TOTAL // 2,), kwargs={"v6": True})]
    for t in threads:
        t.start()
    try:
        # Restart while both loops still have requests to send.
        for i, at in enumerate((TOTAL // 5, TOTAL // 2)):
            assert wait_until(lambda: len(results) >= at, HANG_TIMEOUT), \
                f"the clients hang: {len(results)} requests answered"
            srv.graceful()
            assert wait_until(lambda: resumed(srv) >= 2 + i, HANG_TIMEOUT), \
                "httpd did not come back from the graceful restart:\n" + srv.log_text()
    finally:
        for t in threads:
            t.join()
    assert resumed(srv) == 3
    assert len(results) == TOTAL
    bad = [r for r in results if r != (200, "alice")]
    assert not bad, f"{len(bad)} of {len(results)} requests were not 200 for alice: {bad[:10]}"


@ALL_MPMS
def test_store_works_after_graceful_restart(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, HANG_TIMEOUT)
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")
    srv.graceful()
    assert wait_until(lambda: resumed(srv) >= 2, HANG_TIMEOUT)
    for _ in range(6):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")
    fresh = srv.store.create("bob", "after-restart")
    assert_admitted(srv.get(user=f"bob:{fresh}"), "bob")
    srv.store.revoke("alice", "ci")
    for _ in range(6):
        assert_refused(srv.get(auth=f"cpanel alice:{token}"))


@ALL_MPMS
def test_hard_restart(srv):
    """SIGHUP: the children are replaced at once; tokens keep working."""
    # A hard restart closes the old children's keep-alive sockets under them;
    # event's listener then logs AH03093, httpd's own restart noise (as at stop).
    srv.allow("AH03093")
    token = srv.store.create("alice", "ci")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, HANG_TIMEOUT)
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: resumed(srv) >= 2, HANG_TIMEOUT)
    for _ in range(4):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")


def test_graceful_restart_picks_up_a_new_cptokendb(srv):
    """Changing CPTokenDB in the config and restarting gracefully switches stores."""
    srv.allow("CPT0100")
    ta = srv.store.create("alice", "a")
    other = Store(srv.dir / "other").init()
    tb = other.create("alice", "b")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, HANG_TIMEOUT)
    assert_admitted(srv.get(auth=f"cpanel alice:{ta}"), "alice")
    assert_refused(srv.get(auth=f"cpanel alice:{tb}"))
    text = srv.conf.read_text()
    srv.conf.write_text(text.replace(f'CPTokenDB "{srv.store.path}"', f'CPTokenDB "{other.path}"'))
    old_generation = set(child_pids(srv))
    srv.graceful()
    assert wait_until(lambda: resumed(srv) >= 2, HANG_TIMEOUT)
    # An old child still accepting could answer with the old store: wait until none is left.
    assert wait_until(lambda: not old_generation & set(child_pids(srv)), HANG_TIMEOUT), "old children linger"
    for _ in range(6):
        assert_admitted(srv.get(auth=f"cpanel alice:{tb}"), "alice")
        assert_refused(srv.get(auth=f"cpanel alice:{ta}"))

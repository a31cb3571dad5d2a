"""Graceful restarts (SIGUSR1) under traffic: every request is answered 200,
and the store keeps working in the new generation of children."""

import os
import signal
import threading
import time

from conftest import ALL_MPMS, Store, assert_admitted, assert_refused, wait_until

TOTAL = 200      # requests per run, over two client loops
DEADLINE = 15.0  # seconds


def resumed(srv):
    """How many times httpd said it is ready (once at start, once per restart)."""
    return sum("resuming normal operations" in l for l in srv.lines())


@ALL_MPMS
def test_graceful_restart_under_traffic(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, 10)
    results = []
    lock = threading.Lock()
    end = time.monotonic() + DEADLINE

    def loop(n, **kw):
        for _ in range(n):
            if time.monotonic() > end:
                return
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
        for i, at in enumerate((TOTAL // 5, TOTAL // 2)):
            assert wait_until(lambda: len(results) >= at or time.monotonic() > end, DEADLINE)
            srv.graceful()
            assert wait_until(lambda: resumed(srv) >= 2 + i, 10), \
                "httpd did not come back from the graceful restart:\n" + srv.log_text()
    finally:
        for t in threads:
            t.join()
    assert resumed(srv) == 3
    bad = [r for r in results if r != (200, "alice")]
    assert not bad, f"{len(bad)} of {len(results)} requests were not 200 for alice: {bad[:10]}"
    assert len(results) >= TOTAL // 2, f"only {len(results)} requests in {DEADLINE}s"


@ALL_MPMS
def test_store_works_after_graceful_restart(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, 10)
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")
    srv.graceful()
    assert wait_until(lambda: resumed(srv) >= 2, 10)
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
    token = srv.store.create("alice", "ci")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, 10)
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: resumed(srv) >= 2, 10)
    for _ in range(4):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")


def test_graceful_restart_picks_up_a_new_cptokendb(srv):
    """Changing CPTokenDB in the config and restarting gracefully switches stores."""
    srv.allow("CPT0100")
    ta = srv.store.create("alice", "a")
    other = Store(srv.dir / "other").init()
    tb = other.create("alice", "b")
    srv.start()
    assert wait_until(lambda: resumed(srv) >= 1, 10)
    assert_admitted(srv.get(auth=f"cpanel alice:{ta}"), "alice")
    assert_refused(srv.get(auth=f"cpanel alice:{tb}"))
    text = srv.conf.read_text()
    srv.conf.write_text(text.replace(f'CPTokenDB "{srv.store.path}"', f'CPTokenDB "{other.path}"'))
    srv.graceful()
    assert wait_until(lambda: resumed(srv) >= 2, 10)
    time.sleep(0.5)  # let the old generation finish
    for _ in range(6):
        assert_admitted(srv.get(auth=f"cpanel alice:{tb}"), "alice")
        assert_refused(srv.get(auth=f"cpanel alice:{ta}"))

# SPDX-License-Identifier: Apache-2.0
"""`cptoken rotate` seen by a real httpd under every MPM: the old token works
inside its grace and not after, the new one at once, revoke during the grace
stops both, and the CPT0101 admission line says which token was used."""

import time

from conftest import ALL_MPMS, assert_admitted, assert_refused, wait_until


def admitted_lines(srv, since):
    return srv.lines(since, "CPT0101")


@ALL_MPMS
def test_rotation_with_grace(srv, mpm):
    srv.allow("CPT0100")
    srv.start()
    old = srv.store.create("alice", "deploy")
    assert_admitted(srv.get(auth=f"cpanel alice:{old}"))
    # 5 s: the three requests below must land inside the grace on a loaded machine (ASan).
    new = srv.store.run("rotate", "alice", "deploy", "--grace", "5s").stdout.strip()
    rotated_at = time.time()

    mark = srv.mark()
    assert_admitted(srv.get(auth=f"cpanel alice:{old}"))
    assert_admitted(srv.get(auth=f"cpanel alice:{new}"))
    assert_admitted(srv.get(user=f"alice:{old}"))  # HTTP Basic too
    lines = srv.wait_lines(mark, "CPT0101", count=3)
    assert len(lines) == 3, "\n".join(lines)
    assert 'admitted: user="alice" client=127.0.0.1 token="deploy (rotated)"' in lines[0], lines[0]
    assert lines[1].endswith('admitted: user="alice" client=127.0.0.1 token="deploy"'), lines[1]
    assert 'token="deploy (rotated)"' in lines[2], lines[2]
    assert "[cptoken:info]" in lines[0]
    assert old not in srv.log_text() and new not in srv.log_text()

    # After the grace: the old token is refused (as expired), the new one still works.
    time.sleep(max(0.0, rotated_at + 5.2 - time.time()))
    mark = srv.mark()
    assert_refused(srv.get(auth=f"cpanel alice:{old}"))
    assert_admitted(srv.get(auth=f"cpanel alice:{new}"))
    [refusal] = srv.wait_lines(mark, "CPT0100")
    assert 'reason="token expired"' in refusal and 'token="deploy (rotated)"' in refusal, refusal


@ALL_MPMS
def test_rotation_without_grace(srv, mpm):
    srv.allow("CPT0100")
    srv.start()
    old = srv.store.create("alice", "deploy")
    assert_admitted(srv.get(auth=f"cpanel alice:{old}"))
    new = srv.store.run("rotate", "alice", "deploy").stdout.strip()
    mark = srv.mark()
    assert_refused(srv.get(auth=f"cpanel alice:{old}"))
    assert_admitted(srv.get(auth=f"cpanel alice:{new}"))
    assert 'reason="unknown token"' in srv.wait_lines(mark, "CPT0100")[0]
    [admitted] = srv.wait_lines(mark, "CPT0101")
    assert admitted.endswith('token="deploy"'), admitted


@ALL_MPMS
def test_revoke_during_grace_stops_both(srv, mpm):
    srv.allow("CPT0100")
    srv.start()
    old = srv.store.create("alice", "deploy")
    new = srv.store.run("rotate", "alice", "deploy", "--grace", "1h").stdout.strip()
    assert_admitted(srv.get(auth=f"cpanel alice:{old}"))
    assert_admitted(srv.get(auth=f"cpanel alice:{new}"))
    srv.store.revoke("alice", "deploy")
    assert_refused(srv.get(auth=f"cpanel alice:{old}"))
    assert_refused(srv.get(auth=f"cpanel alice:{new}"))


def test_admissions_not_logged_below_info(srv):
    """CPT0101 is at info: at the default LogLevel warn, an admitted request
    writes nothing to the error log."""
    srv.start(loglevel="warn")
    token = srv.store.create("alice", "deploy")
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert wait_until(lambda: srv.access_lines(), 3)
    assert srv.lines(tag="CPT0101") == []

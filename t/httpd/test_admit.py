# SPDX-License-Identifier: Apache-2.0
"""Admission with `AuthType cpanel`: both header forms, every MPM; the very
next request after a change made by the tool sees it (no reload)."""

import calendar
import time

from conftest import (ALL_MPMS, ISO_RE, assert_admitted, assert_refused, basic, level_of)

# Enough requests to reach more than one child (prefork) or thread.
N = 8


@ALL_MPMS
def test_cpanel_header_admits(srv):
    token = srv.store.create("alice", "ci")
    srv.start()
    for _ in range(N):
        r = srv.get(auth=f"cpanel alice:{token}")
        assert_admitted(r, "alice")
        assert r.backend_headers["x-cptoken-name"] == "ci"
    assert r.json["path"] == "/api/x"


@ALL_MPMS
def test_basic_form_admits(srv):
    token = srv.store.create("alice", "ci")
    srv.start()
    for _ in range(N):
        r = srv.get(user=f"alice:{token}")
        assert_admitted(r, "alice")


def test_post_is_admitted_and_reaches_the_backend(srv):
    token = srv.store.create("alice", "ci")
    srv.start()
    r = srv.get("/api/items?x=1", auth=f"cpanel alice:{token}", method="POST", data="a=1&b=2")
    assert_admitted(r, "alice")
    assert r.json["method"] == "POST"
    assert r.json["path"] == "/api/items?x=1"


def test_scheme_is_case_insensitive(srv):
    token = srv.store.create("alice", "ci")
    srv.start()
    for scheme in ("CPANEL", "Cpanel", "cPanel"):
        assert_admitted(srv.get(auth=f"{scheme} alice:{token}"), "alice")
    for scheme in ("basic", "BASIC", "bAsIc"):
        assert_admitted(srv.get(auth=f"{scheme} " + basic("alice", token)[6:]), "alice")


def test_two_users_each_get_their_own_name(srv):
    ta = srv.store.create("alice", "ci")
    tb = srv.store.create("bob", "deploy")
    srv.start()
    r = srv.get(auth=f"cpanel alice:{ta}")
    assert_admitted(r, "alice")
    assert r.backend_headers["x-cptoken-name"] == "ci"
    r = srv.get(user=f"bob:{tb}")
    assert_admitted(r, "bob")
    assert r.backend_headers["x-cptoken-name"] == "deploy"


def test_token_over_ipv6(srv):
    token = srv.store.create("alice", "ci")
    srv.start()
    assert_admitted(srv.get(auth=f"cpanel alice:{token}", v6=True), "alice")
    assert_admitted(srv.get(user=f"alice:{token}", v6=True), "alice")


@ALL_MPMS
def test_revoke_applies_to_the_next_request(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    keep = srv.store.create("alice", "other")
    srv.start()
    for _ in range(N):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")
    srv.store.revoke("alice", "ci")
    mark = srv.mark()
    for i in range(N):
        assert_refused(srv.get(auth=f"cpanel alice:{token}"))
        assert_refused(srv.get(user=f"alice:{token}"))
    lines = srv.wait_lines(mark, "CPT0100", 2 * N)
    assert len(lines) == 2 * N, "\n".join(lines)
    # The user's other token is untouched.
    for _ in range(N):
        assert_admitted(srv.get(auth=f"cpanel alice:{keep}"), "alice")


def test_expired_token_is_refused(srv):
    srv.allow("CPT0100")
    srv.start()
    # +4s: 3-4 s of life, room for a slow first request on a loaded machine.
    token = srv.store.create("alice", "short", "--expires", "+4s")
    r = srv.get(auth=f"cpanel alice:{token}")
    assert_admitted(r, "alice")
    expires = r.backend_headers["x-cptoken-expires"]
    assert ISO_RE.match(expires), r.backend_headers
    time.sleep(max(0.0, calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ")) + 1.1 - time.time()))
    mark = srv.mark()
    assert_refused(srv.get(auth=f"cpanel alice:{token}"))
    assert_refused(srv.get(user=f"alice:{token}"))
    lines = srv.wait_lines(mark, "CPT0100", 2)
    assert len(lines) == 2, lines
    for line in lines:
        assert level_of(line) == "error", line
        reason = line.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in line else ""
        assert "expired" in reason, f"the reason should say expired: {line}"
        assert "short" in line, f"the token name should be logged: {line}"


def test_edit_expiry_and_name_apply_to_the_next_request(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start()
    auth = f"cpanel alice:{token}"
    r = srv.get(auth=auth)
    assert_admitted(r)
    assert r.backend_headers["x-cptoken-name"] == "ci"
    assert r.backend_headers.get("x-cptoken-expires", "") == ""

    srv.store.edit("alice", "ci", "--expires", "2099-01-02T03:04:05Z")
    r = srv.get(auth=auth)
    assert_admitted(r)
    assert r.backend_headers["x-cptoken-expires"] == "2099-01-02T03:04:05Z"

    srv.store.edit("alice", "ci", "--name", "renamed")
    r = srv.get(auth=auth)
    assert_admitted(r)
    assert r.backend_headers["x-cptoken-name"] == "renamed"

    srv.store.edit("alice", "renamed", "--expires", "never")
    r = srv.get(auth=auth)
    assert_admitted(r)
    assert r.backend_headers.get("x-cptoken-expires", "") == ""

    # An expiry moved into the near past (via +1s and a wait) refuses at once.
    srv.store.edit("alice", "renamed", "--expires", "+1s")
    time.sleep(2.1)
    assert_refused(srv.get(auth=auth))


def test_revoke_all_applies_to_the_next_request(srv):
    srv.allow("CPT0100")
    t1 = srv.store.create("alice", "one")
    t2 = srv.store.create("alice", "two")
    tb = srv.store.create("bob", "keep")
    srv.start()
    assert_admitted(srv.get(auth=f"cpanel alice:{t1}"), "alice")
    assert_admitted(srv.get(auth=f"cpanel alice:{t2}"), "alice")
    srv.store.run("revoke", "alice", "--all")
    assert_refused(srv.get(auth=f"cpanel alice:{t1}"))
    assert_refused(srv.get(user=f"alice:{t2}"))
    assert_admitted(srv.get(auth=f"cpanel bob:{tb}"), "bob")


def test_user_names_with_dots_and_dashes(srv):
    token = srv.store.create("dev.ops-1_x", "ci")
    srv.start()
    assert_admitted(srv.get(auth=f"cpanel dev.ops-1_x:{token}"), "dev.ops-1_x")
    assert_admitted(srv.get(user=f"dev.ops-1_x:{token}"), "dev.ops-1_x")

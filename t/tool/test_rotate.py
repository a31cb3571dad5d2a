# SPDX-License-Identifier: Apache-2.0
"""`cptoken rotate USER NAME [--grace DURATION] [--json]`, and how list,
show, check, revoke and prune treat a rotated token."""

import json
import re
import time

import pytest

from conftest import (ISO_RE, LIST_KEYS, ROTATE_KEYS, SHOW_KEYS, TOKEN_RE, assert_accepted, assert_refusal,
                      assert_refused, assert_usage_error, iso_to_epoch)


def rotate(store, user, name, *extra):
    """Rotates and returns the new token (asserts success)."""
    r = store.run("rotate", user, name, *extra)
    assert r.rc == 0, f"rotate {user} {name} {extra} failed: {r}"
    assert TOKEN_RE.match(r.out.rstrip("\n")), r.out
    assert r.err == ""
    return r.out.rstrip("\n")


def table_rows(out):
    """(user, name column, expires column) of each row of a list table."""
    lines = out.splitlines()
    header = lines[0]
    starts = [header.index(col) for col in ("USER", "NAME", "SERVICE", "EXPIRES", "LAST USED")]
    return [(line[starts[0]:starts[1]].strip(), line[starts[1]:starts[2]].strip(), line[starts[3]:starts[4]].strip())
            for line in lines[1:]]


def test_rotate_without_grace_stops_the_old_token_at_once(store):
    old = store.create("alice", "deploy")
    new = rotate(store, "alice", "deploy")
    assert new != old
    assert_accepted(store.check("alice", new))
    assert_refused(store.check("alice", old), "unknown")
    [entry] = store.list_json()
    assert entry["name"] == "deploy" and entry["rotated"] is False and entry["grace_ends"] is None


def test_rotate_with_grace_keeps_the_old_token_working(store):
    old = store.create("alice", "deploy")
    before = int(time.time())
    new = rotate(store, "alice", "deploy", "--grace", "1h")
    after = int(time.time())
    assert_accepted(store.check("alice", new))
    r = store.check("alice", old)
    assert_accepted(r)
    assert "deploy (rotated)" in r.out  # check says which token it was
    entries = store.list_json()
    assert [(e["name"], e["rotated"]) for e in entries] == [("deploy", False), ("deploy", True)]
    ends = iso_to_epoch(entries[1]["grace_ends"])
    assert before + 3600 <= ends <= after + 3600
    assert entries[1]["expires"] == entries[1]["grace_ends"]


def test_new_token_takes_over_expiry_and_allowlist(store):
    store.create("alice", "deploy", "--expires", "2099-01-02T03:04:05Z", "--allow-ip", "10.0.0.0/8",
                 "--allow-ip", "2001:db8::/32")
    new = rotate(store, "alice", "deploy", "--grace", "10m")
    current = store.show_json("alice", "deploy")
    assert current["expires"] == "2099-01-02T03:04:05Z"
    assert current["allowed_ips"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert_accepted(store.check("alice", new, ip="10.1.2.3"))
    assert_refused(store.check("alice", new, ip="192.0.2.1"), "not allowed")
    # The rotated token keeps the allowlist too.
    [rotated] = current["rotated_tokens"]
    assert rotated["allowed_ips"] == ["10.0.0.0/8", "2001:db8::/32"]


def test_grace_never_outlives_the_expiry(store):
    store.create("alice", "deploy", "--expires", "+1h")
    expires = store.show_json("alice", "deploy")["expires"]
    r = store.run("rotate", "alice", "deploy", "--grace", "2w", "--json")
    assert r.rc == 0, r
    assert json.loads(r.out)["grace_ends"] == expires


@pytest.mark.parametrize("grace,seconds", [("90s", 90), ("+90s", 90), ("10m", 600), ("12h", 43200),
                                          ("30d", 30 * 86400), ("2w", 14 * 86400), ("+2w", 14 * 86400)])
def test_grace_forms(store, grace, seconds):
    store.create("alice", "deploy")
    before = int(time.time())
    r = store.run("rotate", "alice", "deploy", "--grace", grace, "--json")
    after = int(time.time())
    assert r.rc == 0, r
    obj = json.loads(r.out)
    assert before + seconds <= iso_to_epoch(obj["grace_ends"]) <= after + seconds


@pytest.mark.parametrize("grace", ["0s", "+0s", "0w"])
def test_grace_zero_is_none(store, grace):
    old = store.create("alice", "deploy")
    r = store.run("rotate", "alice", "deploy", "--grace", grace, "--json")
    assert r.rc == 0, r
    assert json.loads(r.out)["grace_ends"] is None
    assert_refused(store.check("alice", old), "unknown")


@pytest.mark.parametrize("grace", ["", "0", "5", "5x", "-5s", "+-5s", "1.5h", "1h30m", "h", "5 s", "5S", "never",
                                   "2099-01-01", "99999999999999999999s", "99999999w"])
def test_bad_grace_is_a_usage_error(store, grace):
    old = store.create("alice", "deploy")
    r = store.run("rotate", "alice", "deploy", "--grace", grace)
    assert_usage_error(r)
    assert "grace" in r.err
    # Nothing changed.
    assert_accepted(store.check("alice", old))
    assert len(store.list_json()) == 1


@pytest.mark.parametrize("args", [["rotate"], ["rotate", "alice"], ["rotate", "Alice", "deploy"],
                                  ["rotate", "alice", "bad.name"], ["rotate", "alice", "deploy", "--grace"],
                                  ["rotate", "alice", "deploy", "--bogus"]])
def test_rotate_usage_errors(store, args):
    store.create("alice", "deploy")
    assert_usage_error(store.run(*args))


@pytest.mark.parametrize("user,name", [("alice", "nope"), ("bob", "deploy")])
def test_rotate_unknown_is_exit_1(store, user, name):
    old = store.create("alice", "deploy")
    before = store.list_json()
    assert_refusal(store.run("rotate", user, name, "--grace", "1h"))
    assert store.list_json() == before
    assert_accepted(store.check("alice", old))


def test_rotate_expired_is_exit_1(store):
    store.create("alice", "deploy", "--expires", "+1s")
    time.sleep(1.2)
    r = store.run("rotate", "alice", "deploy", "--grace", "1h")
    assert_refusal(r)
    assert "expired" in r.err
    [entry] = store.list_json()
    assert entry["rotated"] is False


def test_rotate_json(store):
    store.create("alice", "deploy", "--expires", "2099-01-02", "--allow-ip", "10.0.0.0/8")
    r = store.run("rotate", "alice", "deploy", "--grace", "1h", "--json")
    assert r.rc == 0, r
    obj = json.loads(r.out)
    assert set(obj) == ROTATE_KEYS
    assert obj["user"] == "alice" and obj["name"] == "deploy"
    assert TOKEN_RE.match(obj["token"])
    assert ISO_RE.match(obj["created"]) and ISO_RE.match(obj["grace_ends"])
    assert obj["expires"] == "2099-01-02T00:00:00Z"
    assert obj["allowed_ips"] == ["10.0.0.0/8"]
    assert_accepted(store.check("alice", obj["token"]))
    # The token is printed once, by rotate, and never by list or show.
    for out in (store.run("list").out, store.run("list", "--json").out, store.run("show", "alice", "deploy").out,
                store.run("show", "alice", "deploy", "--json").out):
        assert obj["token"] not in out


def test_list_table_shows_rotated_under_the_same_name(store):
    store.create("alice", "deploy")
    store.create("alice", "other")
    rotate(store, "alice", "deploy", "--grace", "1h")
    rotate(store, "alice", "deploy", "--grace", "2h")
    r = store.run("list")
    assert r.rc == 0, r
    rows = table_rows(r.out)
    assert [(u, n) for u, n, _ in rows] == [("alice", "deploy"), ("alice", "deploy (rotated)"),
                                           ("alice", "deploy (rotated)"), ("alice", "other")]
    assert rows[0][2] == "never"
    # EXPIRES of a rotated token: the end of its grace, newest rotation first.
    ends = [e["grace_ends"] for e in store.list_json() if e["rotated"]]
    assert [row[2] for row in rows[1:3]] == ends
    assert iso_to_epoch(ends[0]) - iso_to_epoch(ends[1]) in range(3600 - 5, 3600 + 6)


def test_list_json_has_rotated_entries_as_objects(store):
    store.create("alice", "deploy")
    rotate(store, "alice", "deploy", "--grace", "1h")
    entries = store.list_json("alice")
    assert len(entries) == 2
    for e in entries:
        assert set(e) == LIST_KEYS
        assert e["name"] == "deploy"
    assert entries[0]["rotated"] is False and entries[0]["grace_ends"] is None
    assert entries[1]["rotated"] is True and ISO_RE.match(entries[1]["grace_ends"])


def test_show_prints_current_then_rotated(store):
    store.create("alice", "deploy")
    rotate(store, "alice", "deploy", "--grace", "1h")
    r = store.run("show", "alice", "deploy")
    assert r.rc == 0, r
    blocks = r.out.split("\n\n")
    assert len(blocks) == 2
    assert re.search(r"^name:\s+deploy$", blocks[0], re.M), blocks[0]
    assert re.search(r"^name:\s+deploy \(rotated\)$", blocks[1], re.M), blocks[1]
    grace_end = store.list_json()[1]["grace_ends"]
    assert re.search(r"^expires:\s+" + grace_end + "$", blocks[1], re.M), blocks[1]

    obj = store.show_json("alice", "deploy")
    assert set(obj) == SHOW_KEYS
    assert obj["rotated"] is False
    [old] = obj["rotated_tokens"]
    assert set(old) == LIST_KEYS
    assert old["rotated"] is True and old["grace_ends"] == grace_end and old["name"] == "deploy"


def test_revoke_during_grace_revokes_both(store):
    old = store.create("alice", "deploy")
    new = rotate(store, "alice", "deploy", "--grace", "1h")
    keep = store.create("alice", "keep")
    r = store.run("revoke", "alice", "deploy")
    assert r.rc == 0, r
    assert_refused(store.check("alice", old), "unknown")
    assert_refused(store.check("alice", new), "unknown")
    assert_accepted(store.check("alice", keep))
    assert [e["name"] for e in store.list_json()] == ["keep"]


def test_revoke_all_counts_rotated(store):
    old = store.create("alice", "deploy")
    new = rotate(store, "alice", "deploy", "--grace", "1h")
    r = store.run("revoke", "alice", "--all")
    assert r.rc == 0, r
    assert r.out == "revoked 2 tokens of alice\n"
    for t in (old, new):
        assert_refused(store.check("alice", t), "unknown")


def test_edit_name_follows_and_other_edits_do_not(store):
    old = store.create("alice", "deploy")
    new = rotate(store, "alice", "deploy", "--grace", "1h")
    assert store.run("edit", "alice", "deploy", "--name", "ship").rc == 0
    assert [(e["name"], e["rotated"]) for e in store.list_json()] == [("ship", False), ("ship", True)]
    assert "ship (rotated)" in store.check("alice", old).out
    assert store.run("edit", "alice", "ship", "--allow-ip", "192.0.2.1").rc == 0
    assert_refused(store.check("alice", new, ip="198.51.100.1"), "not allowed")
    assert_accepted(store.check("alice", old, ip="198.51.100.1"))  # keeps its own allowlist: revoke to stop it


def test_old_token_refused_after_grace_then_pruned(store):
    old = store.create("alice", "deploy")
    new = rotate(store, "alice", "deploy", "--grace", "4s")  # room for two commands under ASan (leak-test)
    assert_accepted(store.check("alice", old))
    r = store.run("prune")
    assert r.out.startswith("pruned 0 expired tokens"), r
    time.sleep(4.2)
    assert_refused(store.check("alice", old), "expired")
    assert_accepted(store.check("alice", new))
    assert [e["rotated"] for e in store.list_json()] == [False, True]  # listed until pruned
    r = store.run("prune")
    assert r.rc == 0, r
    assert r.out.startswith("pruned 1 expired token,"), r
    assert [e["rotated"] for e in store.list_json()] == [False]
    assert_refused(store.check("alice", old), "unknown")
    assert_accepted(store.check("alice", new))


def test_too_many_in_grace_is_exit_1(store):
    store.create("alice", "deploy")
    for _ in range(8):
        rotate(store, "alice", "deploy", "--grace", "1h")
    r = store.run("rotate", "alice", "deploy", "--grace", "1h")
    assert_refusal(r)
    assert "revoke alice deploy" in r.err
    assert len(store.list_json()) == 9
    rotate(store, "alice", "deploy")  # without grace: allowed

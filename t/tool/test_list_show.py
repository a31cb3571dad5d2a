# SPDX-License-Identifier: Apache-2.0
"""`cptoken list [USER] [--json]` and `cptoken show USER NAME [--json]`."""

import json
import re

import pytest

from conftest import ISO_RE, LIST_KEYS, SHOW_KEYS, assert_refusal

COLUMNS = ["USER", "NAME", "CREATED", "EXPIRES", "LAST USED", "ALLOWED IPS"]


def table(out):
    """(header line, data lines) of `list` output; blank lines dropped."""
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines, "list printed nothing, not even a header"
    return lines[0], lines[1:]


def rows(out):
    """(user, name) of every data line: the first two columns."""
    _, data = table(out)
    return [tuple(l.split()[:2]) for l in data]


def line_for(out, user, name):
    _, data = table(out)
    found = [l for l in data if l.split()[:2] == [user, name]]
    assert len(found) == 1, f"no single line for {user} {name} in {out!r}"
    return found[0]


def test_empty_store_json_is_empty_array(store):
    r = store.run("list", "--json")
    assert r.rc == 0, r
    assert json.loads(r.out) == []


def test_empty_store_table_has_header_only(store):
    r = store.run("list")
    assert r.rc == 0, r
    header, data = table(r.out)
    assert data == []
    for c in COLUMNS:
        assert c in header, f"{c!r} missing from header {header!r}"


def test_header_has_all_columns_in_order(store):
    store.create("alice", "ci")
    r = store.run("list")
    assert r.rc == 0, r
    header, _ = table(r.out)
    positions = [header.find(c) for c in COLUMNS]
    assert all(p >= 0 for p in positions), header
    assert positions == sorted(positions), header


def test_table_is_sorted_by_user_then_name(store):
    for user, name in [("bob", "gamma"), ("alice", "gamma"), ("bob", "alpha"),
                       ("alice", "beta"), ("alice", "alpha"), ("carol", "alpha")]:
        store.create(user, name)
    r = store.run("list")
    assert r.rc == 0, r
    assert rows(r.out) == [("alice", "alpha"), ("alice", "beta"), ("alice", "gamma"),
                           ("bob", "alpha"), ("bob", "gamma"), ("carol", "alpha")]


def test_table_shows_never_and_any_for_unrestricted_token(store):
    store.create("alice", "ci")
    r = store.run("list")
    line = line_for(r.out, "alice", "ci")
    rest = line.split()[2:]
    assert rest.count("never") == 2, f"EXPIRES and LAST USED should both be 'never': {line!r}"
    assert rest[-1] == "any", f"ALLOWED IPS should be 'any': {line!r}"


def test_table_shows_expiry_and_networks(store):
    store.create("alice", "ci", "--expires", "2099-01-02", "--allow-ip", "10.0.0.0/8",
                 "--allow-ip", "127.0.0.1")
    r = store.run("list")
    line = line_for(r.out, "alice", "ci")
    assert "2099-01-02" in line, line
    assert re.search(r"(10\.0\.0\.0/8,\s*127\.0\.0\.1|127\.0\.0\.1,\s*10\.0\.0\.0/8)", line), line
    assert "any" not in line.split()[2:], line
    # LAST USED is still never; EXPIRES is not.
    assert line.split()[2:].count("never") == 1, line


def test_list_json_entries_have_exactly_the_documented_keys(store):
    store.create("alice", "ci")
    store.create("bob", "deploy", "--expires", "2099-01-02T03:04:05Z", "--allow-ip", "10.0.0.0/8")
    entries = store.list_json()
    assert isinstance(entries, list) and len(entries) == 2
    by = {(e["user"], e["name"]): e for e in entries}
    for e in entries:
        assert set(e) == LIST_KEYS, sorted(e)
        assert ISO_RE.match(e["created"]), e["created"]
        assert e["last_used"] is None
        assert e["last_used_ip"] is None
    a = by[("alice", "ci")]
    assert a["expires"] is None
    assert a["allowed_ips"] is None
    b = by[("bob", "deploy")]
    assert b["expires"] == "2099-01-02T03:04:05Z"
    assert b["allowed_ips"] == ["10.0.0.0/8"]


def test_list_json_keeps_created_from_create(store):
    obj = store.create_json("alice", "ci")
    [entry] = store.list_json()
    assert entry["created"] == obj["created"]


@pytest.fixture
def similar_users(store):
    for user in ["a", "ab", "a-b", "a.b", "b"]:
        store.create(user, "one")
        store.create(user, "two")
    return store


@pytest.mark.parametrize("user", ["a", "ab", "a-b", "a.b"])
def test_list_user_shows_only_that_user_json(similar_users, user):
    entries = similar_users.list_json(user)
    assert sorted((e["user"], e["name"]) for e in entries) == [(user, "one"), (user, "two")]


@pytest.mark.parametrize("user", ["a", "ab", "a-b"])
def test_list_user_shows_only_that_user_table(similar_users, user):
    r = similar_users.run("list", user)
    assert r.rc == 0, r
    assert rows(r.out) == [(user, "one"), (user, "two")]


def test_list_all_json_has_every_token(similar_users):
    assert len(similar_users.list_json()) == 10


def test_list_never_prints_tokens(store):
    tokens = [store.create("alice", "ci"), store.create("bob", "ci", "--allow-ip", "10.0.0.0/8")]
    outputs = [store.run("list"), store.run("list", "--json"), store.run("list", "alice"),
               store.run("show", "alice", "ci"), store.run("show", "bob", "ci", "--json")]
    for r in outputs:
        assert r.rc == 0, r
        for t in tokens:
            assert t not in r.out and t not in r.err


def test_show_human_names_user_and_token_name(store):
    store.create("alice", "deploy-key_7")
    r = store.run("show", "alice", "deploy-key_7")
    assert r.rc == 0, r
    assert "alice" in r.out
    assert "deploy-key_7" in r.out


def test_show_human_includes_expiry_and_networks(store):
    store.create("alice", "ci", "--expires", "2099-01-02", "--allow-ip", "10.0.0.0/8")
    r = store.run("show", "alice", "ci")
    assert r.rc == 0, r
    assert "2099-01-02" in r.out
    assert "10.0.0.0/8" in r.out


def test_show_json_equals_list_entry(store):
    store.create("alice", "ci", "--expires", "2099-01-02", "--allow-ip", "10.0.0.0/8",
                 "--allow-ip", "::1")
    store.create("alice", "other")
    obj = store.show_json("alice", "ci")
    assert set(obj) == SHOW_KEYS
    assert obj.pop("rotated_tokens") == []
    [entry] = [e for e in store.list_json() if e["name"] == "ci"]
    assert obj == entry


@pytest.mark.parametrize("user,name", [("alice", "nope"), ("nobody", "ci"), ("bob", "ci")])
def test_show_unknown_is_not_found(store, user, name):
    store.create("alice", "ci")
    store.create("bob", "other")
    assert_refusal(store.run("show", user, name))
    assert_refusal(store.run("show", user, name, "--json"))

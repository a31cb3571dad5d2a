# SPDX-License-Identifier: Apache-2.0
"""`cptoken edit USER NAME [--name NEW] [--expires WHEN|never]
[--allow-ip CIDR]... [--any-ip] [--json]`."""

import json
import time

import pytest

from conftest import (ISO_RE, LIST_KEYS, assert_accepted, assert_refusal, assert_refused,
                      assert_usage_error, iso_to_epoch)


def test_rename_keeps_token_working(store):
    token = store.create("alice", "old")
    before = store.show_json("alice", "old")
    r = store.run("edit", "alice", "old", "--name", "new")
    assert r.rc == 0, r
    assert_refusal(store.run("show", "alice", "old"))
    after = store.show_json("alice", "new")
    assert after["created"] == before["created"]
    assert after["expires"] == before["expires"]
    assert after["allowed_ips"] == before["allowed_ips"]
    assert [e["name"] for e in store.list_json()] == ["new"]
    assert_accepted(store.check("alice", token))


def test_old_name_is_free_after_rename(store):
    t1 = store.create("alice", "old")
    assert store.run("edit", "alice", "old", "--name", "new").rc == 0
    t2 = store.create("alice", "old")
    assert t1 != t2
    assert sorted(e["name"] for e in store.list_json()) == ["new", "old"]
    assert_accepted(store.check("alice", t1))
    assert_accepted(store.check("alice", t2))


def test_rename_to_taken_name_is_refused(store):
    ta = store.create("alice", "a")
    tb = store.create("alice", "b")
    before = store.list_json()
    assert_refusal(store.run("edit", "alice", "a", "--name", "b"))
    assert store.list_json() == before
    assert_accepted(store.check("alice", ta))
    assert_accepted(store.check("alice", tb))


def test_rename_to_name_of_another_users_token_is_fine(store):
    store.create("alice", "a")
    store.create("bob", "b")
    assert store.run("edit", "alice", "a", "--name", "b").rc == 0
    assert sorted((e["user"], e["name"]) for e in store.list_json()) == [("alice", "b"), ("bob", "b")]


@pytest.mark.parametrize("user,name", [("alice", "nope"), ("nobody", "ci"), ("bob", "ci")])
def test_edit_unknown_token_is_not_found(store, user, name):
    store.create("alice", "ci")
    store.create("bob", "other")
    before = store.list_json()
    assert_refusal(store.run("edit", user, name, "--name", "renamed"))
    assert_refusal(store.run("edit", user, name, "--expires", "+1d"))
    assert store.list_json() == before


def test_edit_expiry(store):
    token = store.create("alice", "ci", "--allow-ip", "10.0.0.0/8")
    assert store.run("edit", "alice", "ci", "--expires", "2099-05-06").rc == 0
    obj = store.show_json("alice", "ci")
    assert obj["expires"] == "2099-05-06T00:00:00Z"
    assert obj["allowed_ips"] == ["10.0.0.0/8"], "changing the expiry must keep the allowlist"
    assert_accepted(store.check("alice", token))


def test_edit_relative_expiry(store):
    store.create("alice", "ci")
    t0 = int(time.time())
    assert store.run("edit", "alice", "ci", "--expires", "+2h").rc == 0
    t1 = int(time.time())
    exp = iso_to_epoch(store.show_json("alice", "ci")["expires"])
    assert t0 + 7200 - 2 <= exp <= t1 + 7200 + 2


def test_edit_expires_never_removes_expiry(store):
    token = store.create("alice", "ci", "--expires", "+1d")
    assert store.show_json("alice", "ci")["expires"] is not None
    assert store.run("edit", "alice", "ci", "--expires", "never").rc == 0
    assert store.show_json("alice", "ci")["expires"] is None
    r = store.run("list")
    line = [l for l in r.out.splitlines() if l.split()[:2] == ["alice", "ci"]][0]
    assert line.split()[2:].count("never") == 2, line
    assert_accepted(store.check("alice", token))


def test_edit_allow_ip_replaces_list(store):
    token = store.create("alice", "ci", "--allow-ip", "10.0.0.0/8", "--expires", "2099-01-02")
    r = store.run("edit", "alice", "ci", "--allow-ip", "192.168.0.0/16", "--allow-ip", "::1")
    assert r.rc == 0, r
    obj = store.show_json("alice", "ci")
    assert sorted(obj["allowed_ips"]) == sorted(["192.168.0.0/16", "::1"])
    assert obj["expires"] == "2099-01-02T00:00:00Z", "changing the allowlist must keep the expiry"
    assert_refused(store.check("alice", token, ip="10.1.2.3"), "not allowed")
    assert_accepted(store.check("alice", token, ip="192.168.7.7"))
    assert_accepted(store.check("alice", token, ip="::1"))


def test_edit_allow_ip_on_unrestricted_token(store):
    token = store.create("alice", "ci")
    assert store.run("edit", "alice", "ci", "--allow-ip", "127.0.0.1").rc == 0
    assert store.show_json("alice", "ci")["allowed_ips"] == ["127.0.0.1"]
    assert_refused(store.check("alice", token, ip="127.0.0.2"), "not allowed")
    assert_accepted(store.check("alice", token, ip="127.0.0.1"))


def test_edit_any_ip_clears_list(store):
    token = store.create("alice", "ci", "--allow-ip", "10.0.0.0/8")
    assert store.run("edit", "alice", "ci", "--any-ip").rc == 0
    assert store.show_json("alice", "ci")["allowed_ips"] is None
    assert_accepted(store.check("alice", token, ip="203.0.113.9"))
    r = store.run("list")
    line = [l for l in r.out.splitlines() if l.split()[:2] == ["alice", "ci"]][0]
    assert line.split()[-1] == "any", line


def test_edit_allow_ip_with_any_ip_is_usage_error(store):
    store.create("alice", "ci", "--allow-ip", "10.0.0.0/8")
    before = store.list_json()
    assert_usage_error(store.run("edit", "alice", "ci", "--allow-ip", "127.0.0.1", "--any-ip"))
    assert store.list_json() == before


@pytest.mark.parametrize("args", [
    ["--expires", "2000-01-01"],
    ["--expires", "soon"],
    ["--expires", "+1y"],
    pytest.param(["--expires", ""], id="expires-empty"),
    pytest.param(["--allow-ip", ""], id="allow-ip-empty"),
    ["--allow-ip", "300.1.1.1"],
    ["--allow-ip", "10.0.0.1/8"],
    ["--allow-ip", "1.2.3.4/33"],
    ["--name", "new", "--allow-ip", "10.0.0.1/8"],
    ["--name", "new", "--expires", "2000-01-01"],
])
def test_edit_invalid_value_is_usage_error_and_changes_nothing(store, args):
    token = store.create("alice", "ci", "--allow-ip", "10.0.0.0/8", "--expires", "2099-01-02")
    before = store.list_json()
    assert_usage_error(store.run("edit", "alice", "ci", *args))
    assert store.list_json() == before
    assert_accepted(store.check("alice", token, ip="10.0.0.1"))


def test_edit_101_networks_is_usage_error(store):
    store.create("alice", "ci")
    before = store.list_json()
    args = []
    for i in range(101):
        args += ["--allow-ip", f"10.{i}.0.0/16"]
    assert_usage_error(store.run("edit", "alice", "ci", *args))
    assert store.list_json() == before


def test_edit_several_fields_at_once(store):
    token = store.create("alice", "ci")
    r = store.run("edit", "alice", "ci", "--name", "cd", "--expires", "2099-03-04T05:06:07Z",
                  "--allow-ip", "10.0.0.0/8")
    assert r.rc == 0, r
    obj = store.show_json("alice", "cd")
    assert obj["expires"] == "2099-03-04T05:06:07Z"
    assert obj["allowed_ips"] == ["10.0.0.0/8"]
    assert_accepted(store.check("alice", token, ip="10.9.9.9"))


def test_edit_json_prints_updated_object(store):
    token = store.create("alice", "ci")
    r = store.run("edit", "alice", "ci", "--name", "cd", "--expires", "2099-01-02",
                  "--allow-ip", "127.0.0.1", "--json")
    assert r.rc == 0, r
    obj = json.loads(r.out)
    assert obj["user"] == "alice"
    assert obj["name"] == "cd"
    assert obj["expires"] == "2099-01-02T00:00:00Z"
    assert obj["allowed_ips"] == ["127.0.0.1"]
    assert ISO_RE.match(obj["created"])
    assert set(obj) == LIST_KEYS
    assert obj == {k: v for k, v in store.show_json("alice", "cd").items() if k != "rotated_tokens"}
    assert token not in r.out and token not in r.err

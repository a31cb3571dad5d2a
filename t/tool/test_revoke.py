# SPDX-License-Identifier: Apache-2.0
"""`cptoken revoke USER NAME` and `cptoken revoke USER --all`."""

import pytest

from conftest import assert_accepted, assert_refusal, assert_refused, assert_usage_error


def test_revoked_token_is_refused_as_unknown(store):
    token = store.create("alice", "ci")
    assert_accepted(store.check("alice", token))
    r = store.run("revoke", "alice", "ci")
    assert r.rc == 0, r
    assert token not in r.out and token not in r.err
    assert_refused(store.check("alice", token), "unknown")


def test_revoked_token_disappears_from_list_and_show(store):
    store.create("alice", "ci")
    store.create("alice", "keep")
    assert store.run("revoke", "alice", "ci").rc == 0
    assert [e["name"] for e in store.list_json()] == ["keep"]
    assert_refusal(store.run("show", "alice", "ci"))


def test_revoke_keeps_other_tokens(store):
    t1 = store.create("alice", "ci")
    t2 = store.create("alice", "keep")
    t3 = store.create("bob", "ci")
    assert store.run("revoke", "alice", "ci").rc == 0
    assert_accepted(store.check("alice", t2))
    assert_accepted(store.check("bob", t3))
    assert_refused(store.check("alice", t1), "unknown")


def test_revoke_twice_is_not_found(store):
    store.create("alice", "ci")
    assert store.run("revoke", "alice", "ci").rc == 0
    assert_refusal(store.run("revoke", "alice", "ci"))


@pytest.mark.parametrize("user,name", [("alice", "nope"), ("nobody", "ci"), ("bob", "ci")])
def test_revoke_unknown_is_not_found(store, user, name):
    store.create("alice", "ci")
    store.create("bob", "other")
    before = store.list_json()
    assert_refusal(store.run("revoke", user, name))
    assert store.list_json() == before


def test_name_is_free_again_after_revoke(store):
    old = store.create("alice", "ci")
    assert store.run("revoke", "alice", "ci").rc == 0
    new = store.create("alice", "ci")
    assert new != old
    assert_accepted(store.check("alice", new))
    assert_refused(store.check("alice", old), "unknown")


def test_revoke_all_revokes_only_that_users_tokens(store):
    alice = [store.create("alice", n) for n in ("a", "b", "c")]
    others = {u: store.create(u, "a") for u in ("alice2", "alic", "bob", "alice.x", "alice-x")}
    r = store.run("revoke", "alice", "--all")
    assert r.rc == 0, r
    for t in alice:
        assert t not in r.out and t not in r.err
        assert_refused(store.check("alice", t), "unknown")
    for u, t in others.items():
        assert_accepted(store.check(u, t))
    assert store.list_json("alice") == []
    assert sorted(e["user"] for e in store.list_json()) == sorted(others)


@pytest.mark.parametrize("args", [
    ["revoke", "alice"],
    ["revoke", "alice", "ci", "--all"],
    ["revoke", "--all"],
])
def test_revoke_needs_exactly_one_of_name_and_all(store, args):
    token = store.create("alice", "ci")
    before = store.list_json()
    assert_usage_error(store.run(*args))
    assert store.list_json() == before
    assert_accepted(store.check("alice", token))

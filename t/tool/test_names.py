# SPDX-License-Identifier: Apache-2.0
"""Which user names and token names are accepted."""

import pytest

from conftest import assert_usage_error

GOOD_USERS = ["a", "9lives", "alice", "a.b-c_d", "x" * 64, "0"]
BAD_USERS = ["Alice", "-alice", ".alice", "_alice", "x" * 65, "al ice", "al@ice",
             "al:ice", "al/ice", "élise", "alice\t"]
GOOD_NAMES = ["a", "CI_deploy-2", "x" * 50, "0", "_", "a-"]
BAD_NAMES = ["x" * 51, "bad name", "bad.name", "bad/name", "bad:name", "naïve", "a@b"]


@pytest.mark.parametrize("user", GOOD_USERS)
def test_valid_user_is_accepted(store, user):
    store.create(user, "ci")
    assert [(t["user"], t["name"]) for t in store.list_json()] == [(user, "ci")]


@pytest.mark.parametrize("user", BAD_USERS)
def test_invalid_user_is_refused_by_create(store, user):
    assert_usage_error(store.run("create", user, "ci"))
    assert store.list_json() == []


def test_empty_user_is_refused_by_create(store):
    assert_usage_error(store.run("create", "", "ci"))
    assert store.list_json() == []


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_token_name_is_accepted(store, name):
    store.create("alice", name)
    assert [t["name"] for t in store.list_json()] == [name]


@pytest.mark.parametrize("name", BAD_NAMES + [""])
def test_invalid_token_name_is_refused_by_create(store, name):
    assert_usage_error(store.run("create", "alice", name))
    assert store.list_json() == []


@pytest.mark.parametrize("args", [
    ["list", "Alice"],
    ["show", "Alice", "ci"],
    ["show", "alice", "bad name"],
    ["revoke", "Alice", "ci"],
    ["revoke", "alice", "bad.name"],
    ["revoke", "-alice", "--all"],
    ["edit", "Alice", "ci", "--name", "cd"],
    ["edit", "alice", "bad.name", "--name", "cd"],
])
def test_invalid_names_are_usage_errors_in_other_commands(store, args):
    store.create("alice", "ci")
    before = store.list_json()
    assert_usage_error(store.run(*args))
    assert store.list_json() == before


@pytest.mark.parametrize("new", ["bad.name", "x" * 51, ""])
def test_edit_rename_to_invalid_name_is_usage_error(store, new):
    store.create("alice", "ci")
    before = store.list_json()
    assert_usage_error(store.run("edit", "alice", "ci", "--name", new))
    assert store.list_json() == before

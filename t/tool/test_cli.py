# SPDX-License-Identifier: Apache-2.0
"""The command line as a whole: help, usage errors, --db / $CPTOKEN_DB,
and commands on a directory that was never initialised."""

import json
import os

import pytest

from conftest import Store, assert_refusal, assert_usage_error, run


def test_help_exits_0():
    r = run("--help")
    assert r.rc == 0, r
    assert "create" in r.out and "init" in r.out, r.out


def test_no_subcommand_is_usage_error(tmp_path):
    assert_usage_error(run("--db", tmp_path / "db"))


def test_unknown_subcommand_is_usage_error(store):
    assert_usage_error(store.run("frobnicate"))


@pytest.mark.parametrize("args", [
    ["list", "--bogus"],
    ["create", "alice", "ci", "--bogus"],
    ["show", "alice", "ci", "-z"],
    ["check", "alice", "--verbose-please"],
])
def test_unknown_option_is_usage_error(store, args):
    assert_usage_error(store.run(*args))


@pytest.mark.parametrize("args", [
    ["create"],
    ["create", "alice"],
    ["show", "alice"],
    ["edit", "alice"],
    ["revoke"],
    ["check"],
    ["backup"],
    ["create", "alice", "ci", "--expires"],
    ["create", "alice", "ci", "--allow-ip"],
    ["check", "alice", "--ip"],
])
def test_missing_argument_is_usage_error(store, args):
    assert_usage_error(store.run(*args))


@pytest.mark.parametrize("args", [
    ["list", "alice", "bob"],
    ["show", "alice", "ci", "extra"],
    ["prune", "extra"],
])
def test_extra_argument_is_usage_error(store, args):
    assert_usage_error(store.run(*args))


def test_cptoken_db_env_is_used_without_db(tmp_path):
    d = tmp_path / "envdb"
    env = {"CPTOKEN_DB": str(d)}
    r = run("init", env=env)
    assert r.rc == 0, r
    assert (d / "tokens.mdb").exists()
    r = run("create", "alice", "ci", env=env)
    assert r.rc == 0, r
    names = [(t["user"], t["name"]) for t in Store(d).list_json()]
    assert names == [("alice", "ci")]
    r = run("list", "--json", env=env)
    assert r.rc == 0, r
    assert [(t["user"], t["name"]) for t in json.loads(r.out)] == [("alice", "ci")]


def test_db_option_wins_over_env(tmp_path):
    env_dir, opt_dir = tmp_path / "envdb", tmp_path / "optdb"
    env = {"CPTOKEN_DB": str(env_dir)}
    assert run("init", env=env).rc == 0
    assert run("--db", opt_dir, "init", env=env).rc == 0
    assert run("--db", opt_dir, "create", "alice", "ci", env=env).rc == 0
    assert Store(env_dir).list_json() == []
    assert [t["name"] for t in Store(opt_dir).list_json()] == ["ci"]


UNINIT_COMMANDS = [
    ["list"],
    ["list", "--json"],
    ["create", "alice", "ci"],
    ["show", "alice", "ci"],
    ["edit", "alice", "ci", "--name", "cd"],
    ["revoke", "alice", "ci"],
    ["revoke", "alice", "--all"],
    ["check", "alice"],
    ["prune"],
]


@pytest.mark.parametrize("args", UNINIT_COMMANDS, ids=lambda a: " ".join(a))
def test_command_on_empty_dir_says_run_init(tmp_path, args):
    d = tmp_path / "empty"
    d.mkdir()
    r = run("--db", d, *args, input="A" * 32 + "\n")
    assert_refusal(r)
    assert f"cptoken --db {d} init --group GROUP" in r.err, r.err
    assert os.listdir(d) == [], "a command on a store that was never initialised must not create files"


@pytest.mark.parametrize("args", UNINIT_COMMANDS, ids=lambda a: " ".join(a))
def test_command_on_missing_dir_says_run_init(tmp_path, args):
    d = tmp_path / "missing"
    r = run("--db", d, *args, input="A" * 32 + "\n")
    assert_refusal(r)
    assert f"cptoken --db {d} init --group GROUP" in r.err, r.err
    assert not d.exists(), "a command on a missing store must not create the directory"


def test_backup_on_uninitialised_dir_says_run_init(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    r = run("--db", d, "backup", tmp_path / "copy.mdb")
    assert_refusal(r)
    assert f"cptoken --db {d} init --group GROUP" in r.err, r.err
    assert not (tmp_path / "copy.mdb").exists()

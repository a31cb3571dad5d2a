# SPDX-License-Identifier: Apache-2.0
"""Command-line habits an admin expects: --version, a mistyped command that
names the commands, a network with host bits set that names the one meant,
the rules of USER and NAME in --help, and a write command run by a user who
is not root that says root is needed."""

import grp
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import CPTOKEN, HERE, Store, assert_refusal, assert_usage_error, base_env, run

REPO = HERE.parent.parent
VERSION = (REPO / "VERSION").read_text().strip()
COMMANDS = ["init", "create", "bulk-create", "rotate", "list", "show", "edit", "revoke", "check", "prune",
            "import-cpanel", "fsck", "backup"]


# ---------------------------------------------------------------- --version

def test_version_prints_the_version_file():
    r = run("--version")
    assert r.rc == 0, r
    assert r.out == f"cptoken {VERSION}\n", r.out
    assert r.err == ""


def test_version_agrees_with_the_debian_changelog():
    changelog = REPO / "debian" / "changelog"
    if not changelog.exists():
        pytest.skip("no debian/changelog in this tree")
    first = changelog.read_text().splitlines()[0]  # "mod-cptoken (0.11.0-1) unstable; urgency=medium"
    upstream = first.split("(", 1)[1].split(")", 1)[0].rsplit("-", 1)[0]
    assert upstream == VERSION, f"debian/changelog says {upstream}, VERSION says {VERSION}"


# ---------------------------------------------------------------- unknown command

@pytest.mark.parametrize("typed, meant", [
    ("lst", "list"), ("creat", "create"), ("revokee", "revoke"), ("improt-cpanel", "import-cpanel"),
    ("bulk", "bulk-create"),
])
def test_mistyped_command_suggests_the_nearest(store, typed, meant):
    r = store.run(typed)
    assert_usage_error(r)
    assert f"unknown command '{typed}'" in r.err, r.err
    assert f"did you mean '{meant}'?" in r.err, r.err
    for command in COMMANDS:
        assert command in r.err, f"{command} missing from {r.err!r}"


def test_unknown_command_far_from_any_lists_the_commands_without_a_guess(store):
    r = store.run("frobnicate", "alice")
    assert_usage_error(r)
    assert "unknown command 'frobnicate'" in r.err, r.err
    assert "did you mean" not in r.err
    for command in COMMANDS:
        assert command in r.err


def test_db_value_is_not_taken_for_a_command(tmp_path):
    # --db's value looks like a word, yet the command is the word after it.
    r = run("--db", "lst", "lst")
    assert_usage_error(r)
    assert "unknown command 'lst'" in r.err
    r = run("--db", tmp_path / "create", "list")
    assert r.rc == 1 and "unknown command" not in r.err and "no token store" in r.err, r


# ---------------------------------------------------------------- --allow-ip with host bits

@pytest.mark.parametrize("typed, meant", [("10.0.0.1/8", "10.0.0.0/8"), ("192.0.2.77/24", "192.0.2.0/24"),
                                          ("2001:db8::1/32", "2001:db8::/32")])
def test_create_with_host_bits_suggests_the_network(store, typed, meant):
    r = store.run("create", "alice", "ci", "--allow-ip", "203.0.113.9", "--allow-ip", typed)
    assert_usage_error(r)
    assert f"'{typed}'" in r.err and "host bits set" in r.err, r.err
    assert f"did you mean {meant}?" in r.err, r.err
    assert store.list_json() == []


def test_edit_with_host_bits_suggests_the_network(store):
    store.create("alice", "ci", "--allow-ip", "203.0.113.9")
    r = store.run("edit", "alice", "ci", "--allow-ip", "10.0.0.1/8")
    assert_usage_error(r)
    assert "did you mean 10.0.0.0/8?" in r.err, r.err
    assert store.show_json("alice", "ci")["allowed_ips"] == ["203.0.113.9"]


def test_bulk_create_with_host_bits_suggests_the_network(store):
    r = store.run("bulk-create", "--allow-ip", "10.0.0.1/8", input="alice ci\nbob ci\n")
    assert_usage_error(r)
    assert "did you mean 10.0.0.0/8?" in r.err, r.err
    assert store.list_json() == []


def test_garbage_network_has_no_suggestion(store):
    r = store.run("create", "alice", "ci", "--allow-ip", "10.0.0.300/8")
    assert_usage_error(r)
    assert "did you mean" not in r.err


# ---------------------------------------------------------------- --help states the rules

USER_RULE = "1-64 characters of a-z 0-9 . _ -, starting with a letter or digit"
NAME_RULE = "1-50 characters of A-Z a-z 0-9 _ -"


@pytest.mark.parametrize("command", ["create", "rotate", "show", "edit", "revoke"])
def test_help_states_user_and_name_rules(command):
    r = run(command, "--help")
    assert r.rc == 0, r
    user_line = next(l for l in r.out.splitlines() if l.strip().startswith("USER"))
    name_line = next(l for l in r.out.splitlines() if l.strip().startswith("NAME"))
    assert USER_RULE in user_line, r.out
    assert NAME_RULE in name_line, r.out


@pytest.mark.parametrize("command", ["list", "check"])
def test_help_states_user_rule(command):
    r = run(command, "--help")
    assert r.rc == 0, r
    assert USER_RULE in next(l for l in r.out.splitlines() if l.strip().startswith("USER")), r.out


def test_invalid_name_error_states_the_same_rule(store):
    r = store.run("create", "alice", "a b")
    assert_usage_error(r)
    assert NAME_RULE in r.err


# ---------------------------------------------------------------- not root

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def root_store():
    """A store made by root the way init makes it, in a directory others may
    enter (tmp_path is root's own, 0700), so that nobody meets the store's
    own permissions."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    parent = Path(tempfile.mkdtemp(prefix="cptoken-nonroot-"))
    os.chmod(parent, 0o755)
    s = Store(parent / "db")
    assert s.init().rc == 0
    s.create("alice", "ci")
    yield s
    shutil.rmtree(parent, ignore_errors=True)


def run_as_nobody(*args, input=""):
    p = subprocess.run([*NOBODY, CPTOKEN, *[str(a) for a in args]], input=input, capture_output=True, text=True,
                       env=base_env(), timeout=30)
    return p


@pytest.mark.parametrize("args", [
    ["create", "alice", "new"],
    ["revoke", "alice", "ci"],
    ["revoke", "alice", "--all"],
    ["edit", "alice", "ci", "--any-ip"],
    ["rotate", "alice", "ci"],
    ["prune"],
    ["fsck", "--repair"],
    ["backup", "/tmp/cptoken-nobody-backup-never-written"],
])
def test_write_command_as_non_root_says_root_is_needed(root_store, args):
    p = run_as_nobody("--db", root_store.path, *args)
    assert p.returncode == 1, p
    assert p.stdout == ""
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert "needs root" in p.stderr and "user nobody" in p.stderr, p.stderr
    assert "init --group" not in p.stderr, "joining the store's group would not let nobody write tokens"
    assert [t["name"] for t in root_store.list_json()] == ["ci"]


def test_bulk_create_as_non_root_says_root_is_needed(root_store):
    p = run_as_nobody("--db", root_store.path, "bulk-create", input="bob ci\n")
    assert p.returncode == 1 and "needs root" in p.stderr, p


def test_init_as_non_root_says_root_is_needed(root_store):
    for path in (root_store.path, root_store.path.parent / "new"):
        p = run_as_nobody("--db", path, "init")
        assert p.returncode == 1, p
        assert "needs root" in p.stderr and "user nobody" in p.stderr, p.stderr
        assert len(p.stderr.splitlines()) == 1
    assert not (root_store.path.parent / "new").exists()


@pytest.mark.parametrize("args", [["list"], ["show", "alice", "ci"], ["check", "alice"]], ids=lambda a: a[0])
def test_read_command_as_outsider_names_the_stores_group_not_the_callers(root_store, args):
    """The audit: as nobody, `list` said to run `init --group nogroup`; root running that locks
    httpd (www-data) out. The caller's group is never the answer: the store's group, or root."""
    os.chown(root_store.path, -1, grp.getgrnam("www-data").gr_gid)
    assert root_store.init().rc == 0  # the store's files follow its directory's group
    p = run_as_nobody("--db", root_store.path, *args, input="A" * 32 + "\n")
    assert p.returncode == 1, p
    assert "Permission denied" in p.stderr, p.stderr
    assert "--group nogroup" not in p.stderr, p.stderr
    assert "www-data" in p.stderr and "root" in p.stderr, p.stderr


# ---------------------------------------------------------------- rough edges (issue 21)

@pytest.mark.parametrize("args,wrong,meant", [
    (["create", "alice", "x", "--expire", "+1d"], "--expire", "--expires"),
    (["list", "--unused", "30d"], "--unused", "--unused-for"),
    (["edit", "alice", "x", "--allow-ips", "10.0.0.1"], "--allow-ips", "--allow-ip"),
    (["revoke", "alice", "--al"], "--al", "--all"),
])
def test_mistyped_option_names_the_option_meant(store, args, wrong, meant):
    r = store.run(*args)
    assert_usage_error(r)
    assert f"unknown option '{wrong}'; did you mean '{meant}'?" in r.err, r.err
    assert "The following arguments were not expected" not in r.err


def test_unknown_option_far_from_any_says_so(store):
    r = store.run("create", "alice", "x", "--colour", "red")
    assert_usage_error(r)
    assert "unknown option '--colour'" in r.err and "did you mean" not in r.err, r.err


def test_non_ascii_input_is_shown_escaped_with_the_rule(store):
    r = store.run("create", "alice", "caf\u00e9")
    assert_usage_error(r)
    assert "'caf\\u00e9'" in r.err and NAME_RULE in r.err, r.err
    r = store.run("create", "b\u00f6b", "x")
    assert_usage_error(r)
    assert "b\\u00f6b" in r.err, r.err


def test_repeated_allow_ip_is_kept_once(store):
    out = json.loads(store.run("create", "alice", "x", "--allow-ip", "10.0.0.0/8", "--allow-ip", "10.0.0.0/8",
                               "--allow-ip", "192.0.2.1", "--json").out)
    assert out["allowed_ips"] == ["10.0.0.0/8", "192.0.2.1"], out
    assert store.show_json("alice", "x")["allowed_ips"] == ["10.0.0.0/8", "192.0.2.1"]


def test_comma_list_of_allow_ip_says_repeat_it(store):
    r = store.run("create", "alice", "x", "--allow-ip", "10.0.0.1,10.0.0.2")
    assert_usage_error(r)
    assert "repeat --allow-ip" in r.err, r.err


def test_check_with_empty_stdin_is_a_usage_error(store):
    store.create("alice", "x")
    for given in ("", "\n"):
        r = store.run("check", "alice", input=given)
        assert_usage_error(r)
        assert "no token" in r.err and "stdin" in r.err, r.err


def test_bulk_create_duplicates_name_their_lines(store):
    r = store.run("bulk-create", input="alice a\nbob b\n# note\nalice a\n")
    assert_usage_error(r)
    assert "line 4" in r.err and "line 1" in r.err and "alice" in r.err, r.err
    assert store.list_json() == []
    store.create("bob", "taken")
    r = store.run("bulk-create", input="alice c\nbob taken\n")
    assert r.rc == 1 and "line 2" in r.err and "taken" in r.err, r
    assert [t["name"] for t in store.list_json()] == ["taken"]


def test_edit_json_keeps_the_uses_of_a_used_token(store):
    from test_usage_values import plant, usage_value
    token = store.create("alice", "used")
    plant(store, {token: usage_value(1767225600, b"192.0.2.7", 5)})
    out = json.loads(store.run("edit", "alice", "used", "--expires", "+30d", "--json").out)
    assert out["last_used"] == "2026-01-01T00:00:00Z" and out["uses"] == 5, out

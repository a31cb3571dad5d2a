# SPDX-License-Identifier: Apache-2.0
"""Bash completion (conf/bash_completion/cptoken): bash with the script
sourced, the completion function called as bash calls it (COMP_WORDS,
COMP_CWORD), and COMPREPLY checked. Users and token names come from the
store through the built cptoken."""

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import CPTOKEN, HERE, Store, base_env

SCRIPT = HERE.parent.parent / "conf" / "bash_completion" / "cptoken"
COMMANDS = {"init", "create", "bulk-create", "rotate", "list", "show", "edit", "revoke", "check", "prune",
            "import-cpanel", "fsck", "backup", "sync", "push"}


def complete(*words, prefix=(), env=None):
    """COMPREPLY for the line `cptoken WORDS...`, the cursor in the last word.
    `prefix`: commands run as a prefix of bash (setpriv ...)."""
    words = [CPTOKEN, *[str(w) for w in words]]
    script = (f"source {shlex.quote(str(SCRIPT))}\n"
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\n"
              f"COMP_LINE={shlex.quote(' '.join(words))}\n"
              f"COMP_POINT=${{#COMP_LINE}}\n"
              "_cptoken\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    p = subprocess.run([*prefix, "bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                       env=base_env(env), timeout=30)
    assert p.returncode == 0, p
    assert p.stderr == "", p.stderr
    return sorted(line for line in p.stdout.splitlines() if line)


@pytest.fixture
def tokens(store):
    store.create("alice", "deploy")
    store.create("alice", "mail")
    store.create("bob", "ci")
    store.run("rotate", "alice", "deploy", "--grace", "1d")
    return store


def test_commands():
    assert set(complete("")) == COMMANDS
    assert complete("re") == ["revoke"]
    assert complete("--db", "/tmp", "li") == ["list"]


def test_global_options_before_the_command():
    assert complete("--") == ["--db", "--etcd", "--etcd-cacert", "--etcd-cert", "--etcd-key", "--etcd-password-file",
                              "--etcd-prefix", "--etcd-user", "--help", "--version"]
    # A cluster option's value is not taken for the command.
    assert complete("--etcd", "http://127.0.0.1:2379", "pu") == ["push"]


@pytest.mark.parametrize("command, expected", [
    ("create", {"--expires", "--allow-ip", "--service", "--scope", "--safe-methods", "--json"}),
    ("edit", {"--name", "--expires", "--allow-ip", "--any-ip", "--scope", "--any-scope", "--safe-methods",
              "--any-method", "--json"}),
    ("revoke", {"--all"}),
    ("check", {"--ip", "--service", "--path", "--method"}),
    ("list", {"--service", "--unused-for", "--json"}),
    ("fsck", {"--repair", "--json"}),
    ("import-cpanel", {"--service", "--dry-run", "--sync", "--allow-empty", "--with-limited", "--json"}),
])
def test_each_commands_options(command, expected):
    assert set(complete(command, "--")) == expected | {"--db", "--help"}


def test_options_completed_are_those_of_each_commands_help():
    for command in COMMANDS:
        r = subprocess.run([CPTOKEN, command, "--help"], capture_output=True, text=True, env=base_env())
        in_help = set(re.findall(r"^\s+(?:-h,)?(--[a-z-]+)", r.stdout, re.M))
        assert set(complete(command, "--")) == in_help | {"--db"}, command


def test_init_owner_completes_users_and_group_groups():
    assert set(complete("init", "--")) == {"--group", "--owner", "--db", "--help"}
    assert "daemon" in complete("init", "--owner", "dae")
    assert "www-data" in complete("init", "--owner", "daemon", "--group", "www")
    # --owner's value is not taken for an argument: the option after it still completes.
    assert complete("init", "--owner", "daemon", "--gr") == ["--group"]


def test_service_and_method_values():
    assert complete("create", "alice", "ci", "--service", "") == ["cpanel", "whm"]
    assert complete("list", "--service", "w") == ["whm"]
    assert "POST" in complete("check", "alice", "--path", "/x", "--method", "")


def test_db_completes_directories(tmp_path):
    (tmp_path / "store-a").mkdir()
    (tmp_path / "store-b").mkdir()
    (tmp_path / "stray-file").write_text("")
    assert complete("--db", f"{tmp_path}/st") == [f"{tmp_path}/store-a", f"{tmp_path}/store-b"]
    assert complete("list", "--db", f"{tmp_path}/store-") == [f"{tmp_path}/store-a", f"{tmp_path}/store-b"]


def test_users_from_the_store_on_the_line(tokens):
    assert complete("--db", tokens.path, "show", "") == ["alice", "bob"]
    assert complete("--db", tokens.path, "revoke", "a") == ["alice"]
    assert complete("list", "--db", tokens.path, "") == ["alice", "bob"]  # --db may follow the command


def test_users_from_cptoken_db(tokens):
    assert complete("check", "", env={"CPTOKEN_DB": str(tokens.path)}) == ["alice", "bob"]


@pytest.mark.parametrize("command", ["show", "edit", "rotate", "revoke"])
def test_names_of_existing_tokens_of_that_user(tokens, command):
    assert complete("--db", tokens.path, command, "alice", "") == ["deploy", "mail"]  # the rotated one once
    assert complete("--db", tokens.path, command, "bob", "") == ["ci"]
    assert complete("--db", tokens.path, command, "alice", "--json", "m") == ["mail"]


def test_create_offers_no_names(tokens):
    assert complete("--db", tokens.path, "create", "alice", "") == []


def test_option_values_are_not_taken_for_arguments(tokens):
    # --grace's value is not USER: the next word is still NAME.
    assert complete("--db", tokens.path, "rotate", "--grace", "1d", "alice", "") == ["deploy", "mail"]


def test_nothing_without_a_store(tmp_path):
    assert complete("--db", tmp_path / "none", "show", "") == []
    assert complete("--db", tmp_path / "none", "show", "alice", "") == []


def test_quietly_nothing_for_a_user_who_cannot_read_the_store():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    parent = Path(tempfile.mkdtemp(prefix="cptoken-completion-"))
    try:
        os.chmod(parent, 0o755)
        s = Store(parent / "db")
        assert s.init().rc == 0
        s.create("alice", "deploy")
        assert complete("--db", s.path, "show", "") == ["alice"]
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        assert complete("--db", s.path, "show", "", prefix=nobody) == []
        assert set(complete("", prefix=nobody)) == COMMANDS
    finally:
        shutil.rmtree(parent, ignore_errors=True)

# SPDX-License-Identifier: Apache-2.0
"""`cptoken list` on a terminal fits the terminal's width: long cells are
cut with a marker and long allowlists end in "+N more". Into a pipe or a
file (scripts), and with --json, every character stays."""

import fcntl
import json
import os
import struct
import subprocess
import termios

from conftest import CPTOKEN, base_env, read_terminal

LONG_USER = "averyveryverylongusernamethatgoesonandonandon"
LONG_NAME = "a-rather-long-token-name-for-the-deploy-job-x"
NETWORKS = [f"10.{i}.0.0/16" for i in range(30)]


def on_terminal(store, *args, columns=None, window=None, lang="C.UTF-8"):
    """Runs cptoken with stdout on a pseudo-terminal (of `window` columns, or
    $COLUMNS=`columns`); returns (exit code, its lines)."""
    master, slave = os.openpty()
    if window:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, window, 0, 0))
    env = {"LC_ALL": lang}
    if columns:
        env["COLUMNS"] = str(columns)
    environment = base_env(env)
    if not columns:
        environment.pop("COLUMNS", None)
    p = subprocess.Popen([CPTOKEN, "--db", str(store.path), *args], stdout=slave, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=environment)
    os.close(slave)
    out = read_terminal(master)
    os.close(master)
    assert p.wait(timeout=30) == 0, p.stderr.read()
    return out.decode("utf-8").replace("\r\n", "\n").splitlines()


def long_store(store):
    allow = [a for n in NETWORKS for a in ("--allow-ip", n)]
    store.create(LONG_USER, LONG_NAME, *allow)
    store.run("rotate", LONG_USER, LONG_NAME, "--grace", "1d")
    store.create("bob", "ci")
    return store


def test_list_on_a_terminal_fits_its_width(store):
    long_store(store)
    lines = on_terminal(store, "list", columns=130)
    assert len(lines) == 4, lines  # header, the token, its rotated one, bob's: no line wrapped or split
    assert all(len(line) <= 130 for line in lines), "\n".join(lines)
    current, rotated, bob = lines[1], lines[2], lines[3]
    assert LONG_NAME not in current and "\u2026" in current, current
    assert "10.0.0.0/16" in current and "more" in current, current
    more = int(current.split("+")[-1].split()[0])
    shown = sum(n in current for n in NETWORKS)
    assert shown + more == len(NETWORKS), current
    assert rotated.split()[1].endswith("\u2026") and "(rotated)" in rotated, rotated
    assert bob.split()[:2] == ["bob", "ci"] and bob.rstrip().endswith("any"), bob


def test_list_uses_the_terminals_own_width_without_columns(store):
    long_store(store)
    lines = on_terminal(store, "list", window=140)
    assert len(lines) == 4 and all(len(line) <= 140 for line in lines), "\n".join(lines)


def test_list_marker_is_ascii_outside_utf8_locales(store):
    long_store(store)
    lines = on_terminal(store, "list", columns=130, lang="C")
    assert all(line.isascii() for line in lines)
    assert "..." in lines[1], lines[1]


def test_list_that_fits_is_not_cut(store):
    store.create("alice", "ci", "--allow-ip", "192.0.2.0/24")
    assert on_terminal(store, "list", columns=200) == store.run("list").out.splitlines()


def test_list_into_a_pipe_keeps_everything(store):
    long_store(store)
    r = store.run("list", env={"COLUMNS": "60"})
    assert r.rc == 0
    lines = r.out.splitlines()
    assert LONG_NAME in lines[1] and f"{LONG_NAME} (rotated)" in lines[2]
    assert LONG_USER in lines[1]
    assert ", ".join(NETWORKS) in lines[1]


def test_list_json_on_a_terminal_keeps_everything(store):
    long_store(store)
    tokens = json.loads("\n".join(on_terminal(store, "list", "--json", columns=60)))
    current = next(t for t in tokens if not t["rotated"] and t["user"] == LONG_USER)
    assert current["name"] == LONG_NAME and current["allowed_ips"] == NETWORKS

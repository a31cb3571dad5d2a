# SPDX-License-Identifier: Apache-2.0
"""`cptoken check` with a terminal on stdin asks for the token and reads it
without echo, instead of waiting silently with the token shown as typed."""

import os
import subprocess
import termios

from conftest import CPTOKEN, base_env, read_terminal


def check_on_a_terminal(store, user, typed):
    """Runs check with a pseudo-terminal as stdin and stderr (stdout a pipe,
    as in $(...)), types `typed` and Enter; returns (exit code, stdout, what
    the terminal showed, the terminal's echo flag afterwards)."""
    master, slave = os.openpty()
    try:
        p = subprocess.Popen([CPTOKEN, "--db", str(store.path), "check", user], stdin=slave, stderr=slave,
                             stdout=subprocess.PIPE, env=base_env(), start_new_session=True)
        shown = read_terminal(master, b": ")
        os.write(master, typed.encode() + b"\n")
        out, _ = p.communicate(timeout=30)
        shown += read_terminal(master, b"\n\n", timeout=0.5)
        echo = bool(termios.tcgetattr(slave)[3] & termios.ECHO)
        return p.returncode, out.decode(), shown.decode(errors="replace"), echo
    finally:
        os.close(master)
        os.close(slave)


def test_check_prompts_on_a_terminal_and_does_not_echo_the_token(store):
    token = store.create("alice", "ci")
    rc, out, shown, echo = check_on_a_terminal(store, "alice", token)
    assert shown.startswith("Token for alice: "), shown
    assert token not in shown, "the token was echoed to the terminal"
    assert rc == 0 and out.startswith("accepted: token 'ci' of alice"), out
    assert echo, "the terminal was left without echo"


def test_check_on_a_terminal_refuses_a_wrong_token_the_same_way(store):
    store.create("alice", "ci")
    rc, out, shown, echo = check_on_a_terminal(store, "alice", "A" * 32)
    assert shown.startswith("Token for alice: ") and "A" * 32 not in shown, shown
    assert rc == 1 and out.startswith("refused:"), out
    assert echo


def test_check_from_a_pipe_prints_no_prompt(store):
    token = store.create("alice", "ci")
    r = store.check("alice", token)
    assert r.rc == 0 and r.out.startswith("accepted"), r
    assert r.err == ""

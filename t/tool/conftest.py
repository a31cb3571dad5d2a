# SPDX-License-Identifier: Apache-2.0
"""Helpers for the black-box tests of the `cptoken` admin tool.

The binary comes from $CPTOKEN (set by `make tool-test`), else
../../build/cptoken relative to this file. Every test works in its own
store directory under tmp_path; /var/lib/cptoken is never touched.
"""

import calendar
import json
import os
import re
import select
import subprocess
import time
from collections import namedtuple
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CPTOKEN = os.environ.get("CPTOKEN") or str((HERE / ".." / ".." / "build" / "cptoken").resolve())

TOKEN_RE = re.compile(r"^[A-Z0-9]{32}$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

LIST_KEYS = {"user", "name", "created", "expires", "last_used", "last_used_ip", "uses", "allowed_ips", "service",
             "scopes", "read_only", "limits", "imported_from", "rotated", "grace_ends"}
SHOW_KEYS = LIST_KEYS | {"rotated_tokens"}
CREATE_KEYS = {"user", "name", "token", "created", "expires", "allowed_ips", "service", "scopes", "read_only"}
ROTATE_KEYS = CREATE_KEYS | {"grace_ends"}

Result = namedtuple("Result", "rc out err")


def read_terminal(fd, wanted=None, timeout=10.0):
    """What a pseudo-terminal's master `fd` shows until `wanted` appears, or
    the timeout, or every process has closed the terminal."""
    seen = b""
    end = time.monotonic() + timeout
    while (wanted is None or wanted not in seen) and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


def base_env(extra=None):
    """The caller's environment without CPTOKEN_DB (so that a stray value
    never points a test at a real store), plus `extra`."""
    env = dict(os.environ)
    env.pop("CPTOKEN_DB", None)
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def run(*args, input=None, env=None, timeout=30, umask=None):
    """Runs cptoken with `args`; returns Result(rc, out, err) as text."""
    kwargs = {}
    if umask is not None:
        kwargs["preexec_fn"] = lambda: os.umask(umask)
    p = subprocess.run(
        [CPTOKEN, *[str(a) for a in args]],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=base_env(env),
        timeout=timeout,
        **kwargs,
    )
    # Under make leak-test, cptoken is built with AddressSanitizer: any report fails the test,
    # whatever exit code the test expected.
    if "ERROR: LeakSanitizer" in p.stderr or "ERROR: AddressSanitizer" in p.stderr:
        pytest.fail(f"cptoken {' '.join(map(str, args))}: sanitizer report:\n{p.stderr[-3000:]}")
    return Result(p.returncode, p.stdout, p.stderr)


def assert_error(r, rc):
    """A failed command: exit code `rc`, nothing on stdout, exactly one line
    on stderr that starts with 'cptoken: ' (so no stack trace)."""
    assert r.rc == rc, f"expected exit {rc}, got {r.rc}; stdout={r.out!r} stderr={r.err!r}"
    assert r.out == "", f"stdout must be empty on errors, got {r.out!r}"
    lines = r.err.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {r.err!r}"
    assert lines[0].startswith("cptoken: "), f"stderr must start with 'cptoken: ', got {r.err!r}"


def assert_usage_error(r):
    assert_error(r, 2)


def assert_refusal(r):
    assert_error(r, 1)


def mutate(token, pos=0):
    """The token with the character at `pos` replaced by another one of the
    token alphabet (a typo)."""
    c = token[pos]
    repl = TOKEN_ALPHABET[(TOKEN_ALPHABET.index(c) + 7) % len(TOKEN_ALPHABET)]
    assert repl != c
    return token[:pos] + repl + token[pos + 1:]


def iso_to_epoch(s):
    """'2099-01-02T03:04:05Z' -> seconds since the epoch."""
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


class Store:
    """A store directory and shortcuts that pass `--db DIR`."""

    def __init__(self, path):
        self.path = Path(path)

    def run(self, *args, **kw):
        return run("--db", self.path, *args, **kw)

    def init(self, *args, **kw):
        return self.run("init", *args, **kw)

    def create(self, user, name, *extra):
        """Creates a token and returns its text (asserts success)."""
        r = self.run("create", user, name, *extra)
        assert r.rc == 0, f"create {user} {name} {extra} failed: {r}"
        assert TOKEN_RE.match(r.out.rstrip("\n")), r.out
        return r.out.rstrip("\n")

    def create_json(self, user, name, *extra):
        r = self.run("create", user, name, *extra, "--json")
        assert r.rc == 0, f"create --json {user} {name} {extra} failed: {r}"
        return json.loads(r.out)

    def list_json(self, *user):
        r = self.run("list", *user, "--json")
        assert r.rc == 0, f"list --json failed: {r}"
        return json.loads(r.out)

    def show_json(self, user, name):
        r = self.run("show", user, name, "--json")
        assert r.rc == 0, f"show --json {user} {name} failed: {r}"
        return json.loads(r.out)

    def check(self, user, token, ip=None, newline=True):
        args = ["check", user]
        if ip is not None:
            args += ["--ip", ip]
        return self.run(*args, input=token + ("\n" if newline else ""))


def assert_accepted(r):
    assert r.rc == 0, f"expected accepted (exit 0), got {r}"
    assert r.out.lower().startswith("accepted"), r.out


def assert_refused(r, *words):
    assert r.rc == 1, f"expected refused (exit 1), got {r}"
    assert r.out.lower().startswith("refused"), r.out
    first = r.out.splitlines()[0].lower()
    for w in words:
        assert w.lower() in first, f"refusal line should mention {w!r}: {r.out!r}"


@pytest.fixture(autouse=True)
def store_dirs_reachable(tmp_path):
    """As on a real system (/var/lib), the directories above a store let its
    group in: root reads the usage store as user nobody of that group
    (cptoken(8)), and httpd's children need the same. pytest makes them 0700."""
    for d in [tmp_path, *tmp_path.parents]:
        if d in (Path("/"), Path("/tmp")):
            break
        os.chmod(d, 0o711)


@pytest.fixture
def store(tmp_path):
    """A freshly initialised store in tmp_path/db."""
    s = Store(tmp_path / "db")
    r = s.init()
    assert r.rc == 0, f"init failed: {r}"
    return s


@pytest.fixture
def other_store(tmp_path):
    """A second, independent store (for tokens never issued in `store`)."""
    s = Store(tmp_path / "other")
    r = s.init()
    assert r.rc == 0, f"init failed: {r}"
    return s


@pytest.fixture
def new_store(tmp_path):
    """A store path that has not been initialised."""
    return Store(tmp_path / "db")

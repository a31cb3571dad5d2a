# SPDX-License-Identifier: Apache-2.0
"""Failed commands change nothing; errors have one shape; parallel writers."""

import json
import subprocess

import pytest

from conftest import CPTOKEN, TOKEN_RE, assert_accepted, assert_error, base_env


FAILING = [
    (1, ["create", "alice", "ci"]),                                 # duplicate
    (2, ["create", "alice", "new", "--allow-ip", "10.0.0.1/8"]),   # bad CIDR
    (2, ["create", "alice", "new", "--expires", "2000-01-01"]),    # past
    (2, ["create", "alice", "new", "--bogus"]),                    # unknown option
    (1, ["edit", "alice", "ci", "--name", "cd"]),                  # name taken
    (1, ["edit", "alice", "nope", "--name", "x"]),                 # unknown token
    (2, ["edit", "alice", "ci", "--allow-ip", "1.2.3.4", "--any-ip"]),
    (2, ["edit", "alice", "ci", "--expires", "yesterday"]),
    (1, ["revoke", "alice", "nope"]),
    (2, ["revoke", "alice"]),
    (2, ["revoke", "alice", "ci", "--all"]),
    (1, ["show", "alice", "nope"]),
]


@pytest.mark.parametrize("rc,args", FAILING, ids=lambda x: " ".join(x) if isinstance(x, list) else str(x))
def test_failed_command_leaves_store_unchanged(store, rc, args):
    ta = store.create("alice", "ci", "--allow-ip", "10.0.0.0/8", "--expires", "2099-01-02")
    tb = store.create("alice", "cd")
    tc = store.create("bob", "ci")
    before = store.list_json()
    r = store.run(*args)
    assert_error(r, rc)
    for t in (ta, tb, tc):
        assert t not in r.err
    assert store.list_json() == before
    assert_accepted(store.check("alice", ta, ip="10.0.0.1"))
    assert_accepted(store.check("alice", tb))
    assert_accepted(store.check("bob", tc))


def test_twenty_parallel_creates(store):
    env = base_env()
    procs = [subprocess.Popen([CPTOKEN, "--db", str(store.path), "create", "alice", f"t{i:02d}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(20)]
    tokens = []
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, f"create t{i:02d} failed: rc={p.returncode} err={err!r}"
        assert TOKEN_RE.match(out.strip()), out
        tokens.append(out.strip())
    assert len(set(tokens)) == 20
    entries = store.list_json("alice")
    assert sorted(e["name"] for e in entries) == [f"t{i:02d}" for i in range(20)]
    for t in tokens:
        assert_accepted(store.check("alice", t))


def test_parallel_creates_of_the_same_name_only_one_wins(store):
    env = base_env()
    procs = [subprocess.Popen([CPTOKEN, "--db", str(store.path), "create", "alice", "same"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(8)]
    results = [(p.communicate(timeout=60), p.returncode) for p in procs]
    rcs = sorted(rc for _, rc in results)
    assert rcs == [0] + [1] * 7, rcs
    [winner] = [out.strip() for (out, _), rc in results if rc == 0]
    assert [e["name"] for e in store.list_json()] == ["same"]
    assert_accepted(store.check("alice", winner))


def test_store_survives_a_reader_killed_mid_way(store):
    """A process killed while holding the store does not block later writes."""
    token = store.create("alice", "ci")
    p = subprocess.Popen([CPTOKEN, "--db", str(store.path), "check", "alice"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=base_env())
    p.kill()
    p.communicate(timeout=30)
    store.create("alice", "after")
    assert_accepted(store.check("alice", token))
    assert sorted(e["name"] for e in store.list_json()) == ["after", "ci"]


def test_json_outputs_are_valid_json_only(store):
    store.create("alice", "ci", "--allow-ip", "::1")
    for args in (["list", "--json"], ["list", "alice", "--json"], ["show", "alice", "ci", "--json"]):
        r = store.run(*args)
        assert r.rc == 0, r
        json.loads(r.out)

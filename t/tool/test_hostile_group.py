# SPDX-License-Identifier: Apache-2.0
"""httpd's group against root (issue 19): a store made by `cptoken init
--group www-data` has no file or directory that www-data can write but the
usage store, which root never opens; and www-data writing whatever it can
into the store's files (the robust-mutex links of an LMDB lock file, as an
attacker would) while root runs list, create, revoke, prune, fsck and backup
in a loop neither crashes nor hangs root's commands, and every answer is
right.

On 0.11 (a1e9a0b) the second test fails: tokens.mdb-lock was 0660
root:www-data and root's commands died in glibc's unlock, writing through
the pointers www-data put there."""

import json
import os
import subprocess
import time

from conftest import CPTOKEN, Store, run

PYTHON = "/usr/bin/python3"

# Writes into every store file www-data can open to write, for `seconds`:
# the robust-list links of LMDB's two mutexes in a lock file (offsets
# 32/40 and 88/96) and the same offsets of any other file. Prints the files
# it could open.
HAMMER = r"""
import mmap, os, struct, sys, time
d, seconds = sys.argv[1], float(sys.argv[2])
maps = []
for name in sorted(os.listdir(d)):
    try:
        fd = os.open(os.path.join(d, name), os.O_RDWR)
    except OSError:
        continue
    if os.fstat(fd).st_size >= 4096:
        maps.append((name, mmap.mmap(fd, 4096)))
print(" ".join(name for name, _ in maps), flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _, m in maps:
        for off, v in ((32, 0x4141414141414140), (40, 0x4242424242424240),
                       (88, 0x4141414141414140), (96, 0x4242424242424240)):
            struct.pack_into("<Q", m, off, v)
"""

# What www-data can do to the store directory and each file in it.
PROBE = r"""
import os, sys
d = sys.argv[1]
out = []
try:
    fd = os.open(os.path.join(d, "planted"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    out.append("dir")
    os.close(fd)
except OSError:
    pass
for name in sorted(os.listdir(d)):
    try:
        os.close(os.open(os.path.join(d, name), os.O_WRONLY))
        out.append(name)
    except OSError:
        pass
print(" ".join(out))
"""


def as_www_data(code, *args, **kw):
    return subprocess.run(["runuser", "-u", "www-data", "--", PYTHON, "-c", code, *map(str, args)],
                          capture_output=True, text=True, **kw)


def test_www_data_can_write_nothing_of_the_token_store(tmp_path):
    s = Store(tmp_path / "db")
    assert s.init("--group", "www-data").rc == 0
    s.create("alice", "ci")
    p = as_www_data(PROBE, s.path, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["usage.slots"], p.stdout


def test_root_commands_survive_www_data_writing_into_the_store(tmp_path):
    s = Store(tmp_path / "db")
    assert s.init("--group", "www-data").rc == 0
    kept = s.create("alice", "kept")
    hammer = subprocess.Popen(["runuser", "-u", "www-data", "--", PYTHON, "-c", HAMMER, str(s.path), "12"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    opened = hammer.stdout.readline().split()
    problems = []
    rounds = 0
    try:
        end = time.monotonic() + 8
        while time.monotonic() < end or rounds < 3:  # a loaded machine takes longer, not fewer rounds
            rounds += 1
            name = f"t{rounds}"
            steps = [
                ("create", s.run("create", "bob", name, timeout=20)),
                ("list", s.run("list", "--json", timeout=20)),
                ("revoke", s.run("revoke", "bob", name, timeout=20)),
                ("prune", s.run("prune", timeout=20)),
                ("fsck", s.run("fsck", timeout=20)),
                ("backup", s.run("backup", tmp_path / f"backup{rounds}.mdb", timeout=20)),
            ]
            for what, r in steps:
                if r.rc < 0:
                    problems.append(f"{what} killed by signal {-r.rc}: {r.err}")
                elif what == "prune" and r.rc == 1:
                    # The usage store is www-data's to break: the tokens were pruned, and it says so.
                    if not r.out.startswith("pruned ") or "usage store" not in r.err:
                        problems.append(f"prune: {r}")
                elif what == "fsck" and r.rc == 1:
                    # Findings in the usage store www-data overwrote are right; none in the token store.
                    if "tokens.mdb" in r.out or "usage" not in r.out + r.err:
                        problems.append(f"fsck: {r}")
                elif r.rc != 0:
                    problems.append(f"{what}: {r}")
            listed = [(t["user"], t["name"]) for t in json.loads(steps[1][1].out or "[]")]
            if ("alice", "kept") not in listed or ("bob", name) not in listed:
                problems.append(f"list round {rounds}: {listed}")
            if s.list_json("bob"):
                problems.append(f"round {rounds}: bob's revoked token still listed")
    finally:
        hammer.kill()
        hammer.wait()
    assert opened == ["usage.slots"], f"www-data could open {opened} to write"
    assert not problems, "\n".join(problems[:10])
    r = s.check("alice", kept)
    assert r.rc == 0 and r.out.startswith("accepted"), r


def test_root_works_on_a_store_of_another_owner_as_that_owner(tmp_path):
    """Once the store has an owner of its own (the manager's user), root's
    cptoken does its store work as that owner: a compromised owner must not
    reach root through the writers' lock file either. What it writes
    belongs to the owner, and it never opens the lock file as root."""
    import pwd
    owner = pwd.getpwnam("daemon")
    s = Store(tmp_path / "db")
    assert s.init("--group", "www-data").rc == 0
    token = s.create("alice", "ci")
    for p in [s.path, *s.path.iterdir()]:
        os.chown(p, owner.pw_uid, -1)
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, owner.pw_uid, -1)

    fresh = s.create("bob", "deploy")
    assert s.run("revoke", "alice", "ci").rc == 0
    r = s.run("backup", out / "copy.mdb")
    assert r.rc == 0, r
    assert os.stat(out / "copy.mdb").st_uid == owner.pw_uid  # written as the owner, not as root
    assert os.stat(s.path / "tokens.mdb-lock").st_uid == owner.pw_uid
    assert s.check("bob", fresh).out.startswith("accepted")
    assert s.check("alice", token).out.startswith("refused")


USED_AT_TEXT = "2026-01-01T00:00:00Z"


def owned_by_daemon_with_used_tokens(tmp_path):
    """A www-data store whose owner is daemon (the manager's user), with a
    recorded use of `used` and a revoked token `gone` that was used too.
    Returns (store, daemon's passwd entry)."""
    import pwd
    from test_usage_values import USED_AT, plant, usage_value
    owner = pwd.getpwnam("daemon")
    s = Store(tmp_path / "db")
    assert s.init("--group", "www-data").rc == 0
    used, gone = s.create("alice", "used"), s.create("alice", "gone")
    plant(s, {used: usage_value(USED_AT, b"192.0.2.7"), gone: usage_value(USED_AT, b"192.0.2.8")})
    assert s.run("revoke", "alice", "gone").rc == 0
    for p in [s.path, *s.path.iterdir()]:
        os.chown(p, owner.pw_uid, -1)
    return s, owner


def test_root_reads_the_usage_of_another_owners_store_as_nobody_not_as_the_owner(tmp_path):
    """Root's cptoken becomes the store's owner (daemon) for its store work;
    the usage store, which www-data writes, must still be read and pruned as
    nobody of www-data, never by the owner, who is more privileged than
    www-data (it writes tokens). The usage files here are root's, 0660
    www-data: nobody of www-data opens them, daemon cannot. Before: list
    showed every token as never used (daemon opened them itself: Permission
    denied), and with daemon's own usage files it mapped them."""
    s, _ = owned_by_daemon_with_used_tokens(tmp_path)
    os.chown(s.path / "usage.slots", 0, -1)
    r = s.run("list", "--json")
    assert r.rc == 0 and r.err == "", r
    entry, = json.loads(r.out)
    assert (entry["last_used"], entry["last_used_ip"]) == (USED_AT_TEXT, "192.0.2.7"), entry
    shown = s.show_json("alice", "used")
    assert shown["last_used"] == USED_AT_TEXT, shown
    r = s.run("fsck")
    assert r.rc == 0, r
    r = s.run("prune")
    assert r.rc == 0, r
    assert "forgot the uses of 1 token no longer in the store" in r.out, r.out
    assert s.show_json("alice", "used")["last_used"] == USED_AT_TEXT


def test_the_store_owner_never_opens_the_usage_store(tmp_path):
    """The owner running cptoken itself (as the manager's user would) cannot
    start a nobody child: it says the usage store is not its to read and
    shows no uses, rather than map a file www-data writes. Before: it read
    usage.mdb, its own file, with LMDB (the usage store of 0.13)."""
    s, _ = owned_by_daemon_with_used_tokens(tmp_path)
    p = subprocess.run(["runuser", "-u", "daemon", "--", CPTOKEN,
                        "--db", str(s.path), "list", "--json"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p
    entry, = json.loads(p.stdout)
    assert entry["last_used"] is None and entry["uses"] == 0, entry
    assert "cannot read the usage store" in p.stderr and "owns the store" in p.stderr, p.stderr
    p = subprocess.run(["runuser", "-u", "daemon", "--", CPTOKEN, "--db", str(s.path), "prune"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stdout.startswith("pruned "), p
    assert "usage store" in p.stderr and "owns the store" in p.stderr, p.stderr

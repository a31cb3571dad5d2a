# SPDX-License-Identifier: Apache-2.0
"""USES in list/show, and `list --unused-for DURATION`: the tokens not used
for that long, or never used and created longer ago, the ones safe to
revoke. Uses are planted into usage.slots as httpd writes them (see
test_usage_values.py); an old creation time comes from libfaketime."""

import hashlib
import json
import time
from pathlib import Path

import pytest

from conftest import assert_error, run
from test_usage_values import HEADER, SLOT, plant, usage_value

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
DAY = 86400


def names(store, *args):
    out = json.loads(store.run("list", "--json", *args).out)
    return sorted(e["name"] for e in out)


@pytest.fixture
def tokens(store):
    """stale: used 40 days ago; fresh: used now; new: never used, created now;
    old: never used, created 40 days ago (bob's)."""
    assert FAKETIME.is_file(), f"{FAKETIME} is missing (Debian package libfaketime; make test installs it)"
    now = int(time.time())
    stale = store.create("alice", "stale")
    fresh = store.create("alice", "fresh")
    store.create("alice", "new")
    r = run("--db", store.path, "create", "bob", "old", env={"LD_PRELOAD": str(FAKETIME), "FAKETIME": "-40d"})
    assert r.rc == 0, r.err
    plant(store, {stale: usage_value(now - 40 * DAY, b"192.0.2.7", 3), fresh: usage_value(now, b"192.0.2.8", 42)})
    store.fresh = fresh
    return store


def test_uses_are_shown(tokens):
    entries = {e["name"]: e for e in json.loads(tokens.run("list", "--json").out)}
    assert entries["fresh"]["uses"] == 42 and entries["stale"]["uses"] == 3
    assert entries["new"]["uses"] == 0 and entries["new"]["last_used"] is None
    lines = tokens.run("list").out.splitlines()
    assert lines[0].split() == ["USER", "NAME", "SERVICE", "CREATED", "EXPIRES", "LAST", "USED", "USES", "ALLOWED",
                                "IPS"]
    rows = {l.split()[1]: l.split() for l in lines[1:]}
    assert rows["fresh"][-2] == "42" and rows["fresh"][5:8] == [rows["fresh"][5], "from", "192.0.2.8"]
    assert rows["new"][-2] == "0" and rows["new"][5] == "never"
    details = dict(l.split(":", 1) for l in tokens.run("show", "alice", "fresh").out.splitlines())
    assert details["uses"].strip() == "42"
    assert json.loads(tokens.run("show", "alice", "new", "--json").out)["uses"] == 0


@pytest.mark.parametrize("duration", ["30d", "+30d", "4w", "720h", "43200m", "2592000s"])
def test_unused_for_lists_stale_and_old_never_used(tokens, duration):
    assert names(tokens, "--unused-for", duration) == ["old", "stale"]


def test_unused_for_longer_than_any_lists_nothing(tokens):
    assert names(tokens, "--unused-for", "50d") == []
    assert tokens.run("list", "--unused-for", "50d").out.splitlines()[0].startswith("USER")


def test_unused_for_counts_from_now(tokens):
    assert names(tokens, "--unused-for", "1h") == ["old", "stale"]
    time.sleep(1.1)  # "new" was created and "fresh" last used over a second ago
    assert names(tokens, "--unused-for", "1s") == ["fresh", "new", "old", "stale"]


def test_unused_for_with_a_user_and_as_a_table(tokens):
    assert names(tokens, "alice", "--unused-for", "30d") == ["stale"]
    rows = [l.split()[1] for l in tokens.run("list", "--unused-for", "30d").out.splitlines()[1:]]
    assert sorted(rows) == ["old", "stale"]


@pytest.mark.parametrize("bad", ["30", "abc", "-5d", "30y", "1.5d", "", "d", "++3d"])
def test_bad_duration_is_a_usage_error(tokens, bad):
    r = tokens.run("list", "--unused-for", bad)
    assert_error(r, 2)
    assert "--unused-for" in r.err and "duration" in r.err, r.err
    assert r.out == ""


def stored_keys(store):
    """The key (first 16 bytes of the digest, hex) of every slot in use in usage.slots."""
    data = (store.path / "usage.slots").read_bytes()
    slots = (data[HEADER + i:HEADER + i + SLOT] for i in range(0, len(data) - HEADER, SLOT))
    return sorted(slot[8:24].hex() for slot in slots if int.from_bytes(slot[:4], "little") == 2)


def test_prune_forgets_the_uses_of_tokens_that_are_gone(tokens):
    """stale and fresh have uses; revoking stale and pruning makes the usage
    table again without stale's use (it does not fill with every token ever
    used) and with fresh's use as it was."""
    fresh_key = hashlib.sha512(tokens.fresh.encode()).digest()[:16].hex()
    assert len(stored_keys(tokens)) == 2
    tokens.run("revoke", "alice", "stale")
    before = {e["name"]: e for e in json.loads(tokens.run("list", "--json").out)}
    r = tokens.run("prune")
    assert r.rc == 0, r
    assert "forgot the uses of 1 token no longer in the store" in r.out, r.out
    assert "the usage table has room for" in r.out, r.out
    after = {e["name"]: e for e in json.loads(tokens.run("list", "--json").out)}
    assert after == before and after["fresh"]["uses"] == 42
    assert stored_keys(tokens) == [fresh_key]
    assert "forgot the uses of 0 tokens" in tokens.run("prune").out

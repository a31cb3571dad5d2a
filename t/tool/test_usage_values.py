# SPDX-License-Identifier: Apache-2.0
"""What `list` and `show` print from the usage store, which httpd's group can
write: a planted escape sequence never reaches the terminal, a bad address
reads as unknown, a time out of range as never used, a good record is shown.

Values are planted the way an httpd-group process could: straight into
usage.mdb, with the real `mdb_load` (lmdb-utils), each with its 24-byte
Lightning Stream header in front."""

import hashlib
import json
import subprocess
import time

import pytest

from conftest import CPTOKEN, ISO_RE, base_env, run

USED_AT = 1767225600  # 2026-01-01T00:00:00Z
USED_AT_TEXT = "2026-01-01T00:00:00Z"

# Each shaped to do harm on a terminal: clear screen, set the window title
# (OSC, ended by BEL), a fake line, a C1 CSI, and a DEL.
HOSTILE_ADDRESSES = [
    b"\x1b[2J",
    b"\x1b]0;owned\x07192.0.2.7",
    b"192.0.2.7\nalice  fake  2099-01-01T00:00:00Z",
    b"\xc2\x9b2J",
    b"192.0.2.7\x7f",
]


def usage_value(when, address, uses=1):
    """An ls header (timestamp, txn id, version 0, flags 0, reserved, no
    extensions) and the usage payload: format 2, 8-byte time, 8-byte count,
    address."""
    header = time.time_ns().to_bytes(8, "big") + (1).to_bytes(8, "big") + bytes(8)
    return header + b"\x02" + (when % 2**64).to_bytes(8, "big") + (uses % 2**64).to_bytes(8, "big") + address


def plant(store, records):
    """Writes {token: value} into DIR/usage.mdb with mdb_load."""
    lines = ["VERSION=3", "format=bytevalue", "type=btree", "mapsize=17179869184", "maxreaders=16384",
             "HEADER=END"]
    for token, value in records.items():
        lines += [" " + hashlib.sha512(token.encode()).hexdigest(), " " + value.hex()]
    lines.append("DATA=END")
    subprocess.run(["mdb_load", "-n", "-s", "usage", str(store.path / "usage.mdb")],
                   input="\n".join(lines) + "\n", text=True, check=True, capture_output=True, timeout=30)


def run_raw(store, *args):
    """`cptoken --db DIR ARGS`; stdout as bytes, so that nothing is decoded away."""
    p = subprocess.run([CPTOKEN, "--db", str(store.path), *args], capture_output=True, env=base_env(), timeout=30)
    assert p.returncode == 0, f"cptoken {' '.join(args)} failed ({p.returncode}): {p.stderr!r}"
    return p.stdout


def assert_terminal_safe(out):
    bad = sorted({b for b in out if (b < 0x20 and b != 0x0A) or b >= 0x7F})
    assert not bad, f"output holds control or non-ASCII bytes {[hex(b) for b in bad]}: {out!r}"


@pytest.mark.parametrize("address", HOSTILE_ADDRESSES, ids=range(len(HOSTILE_ADDRESSES)))
def test_planted_address_never_reaches_the_terminal(store, address):
    planted = store.create("alice", "planted")
    good = store.create("alice", "good")
    plant(store, {planted: usage_value(USED_AT, address), good: usage_value(USED_AT, b"192.0.2.7")})

    for args in (["list"], ["list", "alice"], ["show", "alice", "planted"]):
        out = run_raw(store, *args)
        assert_terminal_safe(out)
    for args in (["list", "--json"], ["show", "alice", "planted", "--json"]):
        assert_terminal_safe(run_raw(store, *args))

    # The use is kept, its address is unknown.
    entries = {e["name"]: e for e in json.loads(run_raw(store, "list", "--json"))}
    assert entries["planted"]["last_used"] == USED_AT_TEXT
    assert entries["planted"]["last_used_ip"] is None
    shown = json.loads(run_raw(store, "show", "alice", "planted", "--json"))
    assert shown.pop("rotated_tokens") == [] and shown == entries["planted"]
    details = dict(l.split(":", 1) for l in run_raw(store, "show", "alice", "planted").decode().splitlines())
    assert details["last used ip"].strip() == "-"
    assert details["last used"].strip() == USED_AT_TEXT
    rows = {l.split()[1]: l for l in run_raw(store, "list").decode().splitlines()[1:]}
    assert USED_AT_TEXT in rows["planted"] and " from " not in rows["planted"], rows["planted"]
    assert len(rows) == 2, rows

    # The good record next to it is shown whole.
    assert entries["good"]["last_used"] == USED_AT_TEXT
    assert entries["good"]["last_used_ip"] == "192.0.2.7"
    assert f"{USED_AT_TEXT} from 192.0.2.7" in rows["good"], rows["good"]


def test_address_is_shown_in_canonical_form(store):
    token = store.create("alice", "v6")
    plant(store, {token: usage_value(USED_AT, b"2001:DB8:0:0::1")})
    assert store.show_json("alice", "v6")["last_used_ip"] == "2001:db8::1"


@pytest.mark.parametrize("when", [0, 946684799, 253402300800, -1], ids=["epoch", "1999", "year-10000", "negative"])
def test_time_out_of_range_reads_as_never_used(store, when):
    token = store.create("alice", "odd-time")
    plant(store, {token: usage_value(when, b"192.0.2.7")})
    entry = store.show_json("alice", "odd-time")
    assert entry["last_used"] is None and entry["last_used_ip"] is None, entry
    out = run_raw(store, "show", "alice", "odd-time").decode()
    assert "never" in out and "192.0.2.7" not in out, out
    row = run_raw(store, "list").decode().splitlines()[1]
    assert "never" in row and "192.0.2.7" not in row, row


def test_valid_record_is_shown(store):
    token = store.create("alice", "used")
    plant(store, {token: usage_value(USED_AT, b"192.0.2.7")})
    entry = store.show_json("alice", "used")
    assert entry["last_used"] == USED_AT_TEXT and ISO_RE.match(entry["last_used"])
    assert entry["last_used_ip"] == "192.0.2.7"
    details = run_raw(store, "show", "alice", "used").decode()
    assert "192.0.2.7" in details and USED_AT_TEXT in details


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def test_use_in_the_future_is_not_a_use(store):
    """A forged last use of 9999-12-31 must not hide a stale token from
    --unused-for: a time later than now (plus a few minutes of skew between
    hosts) is not a use."""
    r = run("--db", store.path, "create", "alice", "forged", "--json",
            env={"LD_PRELOAD": FAKETIME, "FAKETIME": "-40d"})
    assert r.rc == 0, r.err
    forged = json.loads(r.out)["token"]
    soon = store.create("alice", "soon")
    now = int(time.time())
    plant(store, {forged: usage_value(253402300799, b"203.0.113.77", 7),
                  soon: usage_value(now + 3600, b"203.0.113.78", 1)})
    for name in ("forged", "soon"):
        entry = store.show_json("alice", name)
        assert entry["last_used"] is None and entry["last_used_ip"] is None, entry
        assert "203.0.113.7" not in run_raw(store, "show", "alice", name).decode()
    assert [e["name"] for e in json.loads(run_raw(store, "list", "--json", "--unused-for", "30d"))] == ["forged"]


def test_use_within_the_skew_is_a_use(store):
    token = store.create("alice", "skewed")
    plant(store, {token: usage_value(int(time.time()) + 60, b"192.0.2.7")})
    assert store.show_json("alice", "skewed")["last_used_ip"] == "192.0.2.7"


def break_usage_store(store):
    """What httpd's group can do: the usage store's data file overwritten."""
    with open(store.path / "usage.mdb", "r+b") as f:
        f.write(bytes(8192))


def test_unreadable_usage_store_is_said_on_stderr(store):
    token = store.create("alice", "used")
    plant(store, {token: usage_value(USED_AT, b"192.0.2.7")})
    break_usage_store(store)
    for args in (["list"], ["list", "--json"], ["show", "alice", "used"], ["show", "alice", "used", "--json"]):
        r = store.run(*args)
        assert r.rc == 0, r
        assert "alice" in r.out and "used" in r.out, r
        assert "usage store" in r.err and "never used" in r.err, (args, r.err)


def test_unused_for_refuses_without_the_usage_store(store):
    store.create("alice", "used")
    break_usage_store(store)
    r = store.run("list", "--unused-for", "1d")
    assert r.rc == 1 and r.out == "", r
    assert "--unused-for" in r.err and "usage store" in r.err, r.err


def test_broken_lock_file_of_the_usage_store_is_said(store):
    """Eight bytes in usage.mdb-lock while httpd holds it open: every token
    would read as never used, silently."""
    store.create("alice", "used")
    holder = subprocess.Popen(["/usr/bin/python3", "-c", "import lmdb, sys\n"
                               "e = lmdb.open(sys.argv[1], subdir=False, max_dbs=2)\n"
                               "print('held', flush=True)\nsys.stdin.read()", str(store.path / "usage.mdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open(store.path / "usage.mdb-lock", "r+b") as f:
            f.write(b"\xff" * 8)
        r = store.run("list")
        assert r.rc == 0 and "usage store" in r.err, r
        assert store.run("list", "--unused-for", "1d").rc == 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)

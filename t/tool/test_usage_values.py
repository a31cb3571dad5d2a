# SPDX-License-Identifier: Apache-2.0
"""What `list` and `show` print from the usage store, which httpd's group can
write: planted bytes never reach the terminal, a time out of range reads as
never used, an address being written as unknown, a good record is shown.

Values are planted the way an httpd-group process could: slots written
straight into usage.slots (lib/store/usage_table.cpp's layout: a 4096-byte
header, then 64-byte slots of state, address lock, key, uses, time,
address), at the slot each token's key leads to."""

import hashlib
import ipaddress
import json
import subprocess
import time

import pytest

from conftest import CPTOKEN, ISO_RE, base_env, run

USED_AT = 1767225600  # 2026-01-01T00:00:00Z
USED_AT_TEXT = "2026-01-01T00:00:00Z"

HEADER, SLOT = 4096, 64

# 16 address bytes shaped to do harm on a terminal if printed as they are:
# clear screen, set the window title (OSC, ended by BEL), a fake line, a C1
# CSI, and a DEL.
HOSTILE_ADDRESSES = [
    b"\x1b[2J",
    b"\x1b]0;owned\x07192.0.2.7",
    b"192.0.2.7\nalice  fake  2099-01-01T00:00:00Z",
    b"\xc2\x9b2J",
    b"192.0.2.7\x7f",
]


def address_bytes(address):
    """16 bytes as the table holds an address: an IP given as text in its
    binary form (IPv4 mapped), any other bytes as they are, cut or padded."""
    try:
        ip = ipaddress.ip_address(address.decode())
        if ip.version == 4:
            ip = ipaddress.IPv6Address("::ffff:" + str(ip))
        return ip.packed
    except (UnicodeDecodeError, ValueError):
        return (address + bytes(16))[:16]


def usage_value(when, address, uses=1, lock=0):
    """A slot's values: the time of the last use, its address, the count,
    the address lock (odd: being written)."""
    return {"when": when, "address": address_bytes(address), "uses": uses, "lock": lock}


def plant(store, records):
    """Writes {token: usage_value} into DIR/usage.slots, each at the first
    slot from its key's home that is free or already its own."""
    path = store.path / "usage.slots"
    with open(path, "r+b") as f:
        count = (path.stat().st_size - HEADER) // SLOT
        for token, value in records.items():
            key = hashlib.sha512(token.encode()).digest()[:16]
            home = int.from_bytes(key[:8], "little") & (count - 1)
            for probe in range(count):
                offset = HEADER + ((home + probe) % count) * SLOT
                f.seek(offset)
                slot = f.read(SLOT)
                if int.from_bytes(slot[:4], "little") == 0 or slot[8:24] == key:
                    break
            f.seek(offset)
            f.write((2).to_bytes(4, "little") + value["lock"].to_bytes(4, "little") + key +
                    (value["uses"] % 2**64).to_bytes(8, "little") +
                    (value["when"] % 2**64).to_bytes(8, "little") + value["address"] + bytes(8))


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
    """Any 16 bytes are some IPv6 address: shown in canonical form, never as bytes."""
    planted = store.create("alice", "planted")
    good = store.create("alice", "good")
    plant(store, {planted: usage_value(USED_AT, address), good: usage_value(USED_AT, b"192.0.2.7")})

    for args in (["list"], ["list", "alice"], ["show", "alice", "planted"]):
        out = run_raw(store, *args)
        assert_terminal_safe(out)
    for args in (["list", "--json"], ["show", "alice", "planted", "--json"]):
        assert_terminal_safe(run_raw(store, *args))

    entries = {e["name"]: e for e in json.loads(run_raw(store, "list", "--json"))}
    assert entries["planted"]["last_used"] == USED_AT_TEXT
    shown_ip = entries["planted"]["last_used_ip"]
    assert shown_ip == str(ipaddress.ip_address(shown_ip)), shown_ip
    shown = json.loads(run_raw(store, "show", "alice", "planted", "--json"))
    assert shown.pop("rotated_tokens") == [] and shown == entries["planted"]
    rows = {l.split()[1]: l for l in run_raw(store, "list").decode().splitlines()[1:]}
    assert len(rows) == 2, rows

    # The good record next to it is shown whole.
    assert entries["good"]["last_used"] == USED_AT_TEXT
    assert entries["good"]["last_used_ip"] == "192.0.2.7"
    assert f"{USED_AT_TEXT} from 192.0.2.7" in rows["good"], rows["good"]


def test_address_being_written_reads_as_unknown(store):
    """An odd address lock: a writer was cut short (or httpd's group says
    so): the use counts, its address is unknown."""
    token = store.create("alice", "half")
    plant(store, {token: usage_value(USED_AT, b"192.0.2.7", uses=3, lock=5)})
    entry = store.show_json("alice", "half")
    assert entry["last_used"] == USED_AT_TEXT and entry["uses"] == 3, entry
    assert entry["last_used_ip"] is None, entry
    details = dict(l.split(":", 1) for l in run_raw(store, "show", "alice", "half").decode().splitlines())
    assert details["last used ip"].strip() == "-"


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
    """What httpd's group can do: the usage table's header overwritten."""
    with open(store.path / "usage.slots", "r+b") as f:
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


def test_a_truncated_usage_table_is_said(store):
    """Cut short in place (httpd's group can): refused before anything reads past its end."""
    store.create("alice", "used")
    with open(store.path / "usage.slots", "r+b") as f:
        f.truncate(4096 + 64 * 10)
    r = store.run("list")
    assert r.rc == 0 and "usage store" in r.err, r
    assert store.run("list", "--unused-for", "1d").rc == 1

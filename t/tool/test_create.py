# SPDX-License-Identifier: Apache-2.0
"""`cptoken create USER NAME [--expires WHEN] [--allow-ip CIDR]... [--json]`."""

import json
import re
import time

import pytest

from conftest import (CREATE_KEYS, ISO_RE, TOKEN_RE, assert_accepted, assert_refusal,
                      assert_usage_error, iso_to_epoch)


def test_create_prints_only_the_token(store):
    r = store.run("create", "alice", "ci")
    assert r.rc == 0, r
    assert re.fullmatch(r"[A-Z0-9]{32}\n", r.out), repr(r.out)
    token = r.out.strip()
    assert token not in r.err


def test_created_token_is_accepted_by_check(store):
    token = store.create("alice", "ci")
    assert_accepted(store.check("alice", token))


def test_tokens_are_distinct(store):
    tokens = {store.create("alice", f"t{i}") for i in range(10)}
    assert len(tokens) == 10


def test_create_json_has_exactly_the_documented_keys(store):
    t0 = int(time.time())
    r = store.run("create", "alice", "ci", "--json")
    t1 = int(time.time())
    assert r.rc == 0, r
    obj = json.loads(r.out)
    assert isinstance(obj, dict)
    assert set(obj) == CREATE_KEYS
    assert obj["user"] == "alice"
    assert obj["name"] == "ci"
    assert TOKEN_RE.match(obj["token"]), obj["token"]
    assert ISO_RE.match(obj["created"]), obj["created"]
    assert t0 - 2 <= iso_to_epoch(obj["created"]) <= t1 + 2
    assert obj["expires"] is None
    assert obj["allowed_ips"] is None
    assert obj["token"] not in r.err
    assert_accepted(store.check("alice", obj["token"]))


def test_create_json_output_is_one_object_only(store):
    r = store.run("create", "alice", "ci", "--json")
    assert r.rc == 0, r
    # json.loads refuses trailing garbage (a second object, a bare token line).
    json.loads(r.out)


@pytest.mark.parametrize("when,want", [
    ("2099-01-02", "2099-01-02T00:00:00Z"),
    ("2099-01-02T03:04:05Z", "2099-01-02T03:04:05Z"),
    ("2040-02-29", "2040-02-29T00:00:00Z"),
])
def test_create_absolute_expiry(store, when, want):
    obj = store.create_json("alice", "ci", "--expires", when)
    assert obj["expires"] == want
    assert store.show_json("alice", "ci")["expires"] == want


@pytest.mark.parametrize("when,seconds", [
    ("+90s", 90),
    ("+30m", 30 * 60),
    ("+12h", 12 * 3600),
    ("+1d", 86400),
    ("+2w", 14 * 86400),
])
def test_create_relative_expiry(store, when, seconds):
    t0 = int(time.time())
    obj = store.create_json("alice", "ci", "--expires", when)
    t1 = int(time.time())
    assert ISO_RE.match(obj["expires"] or ""), obj["expires"]
    exp = iso_to_epoch(obj["expires"])
    assert t0 + seconds - 2 <= exp <= t1 + seconds + 2, (obj["expires"], t0, seconds)


@pytest.mark.parametrize("when", [
    "2000-01-01",
    "2000-01-01T00:00:00Z",
    time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400)),  # yesterday
    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60)),  # a minute ago
], ids=["date", "time", "yesterday", "a-minute-ago"])  # ids that do not change with the clock (pytest -n)
def test_create_expiry_in_the_past_is_usage_error(store, when):
    assert_usage_error(store.run("create", "alice", "ci", "--expires", when))
    assert store.list_json() == []


@pytest.mark.parametrize("when", [
    "tomorrow", pytest.param("", id="empty"), "+", "+1", "+1y", "+-1d", "+1.5h", "+d", "1d",
    "2099-13-01", "2099-02-30", "2100-02-29", "2099-1-2", "99-01-02",
    "2099-01-02T03:04:05", "2099-01-02 03:04:05Z", "2099-01-02T25:00:00Z",
    "2099-01-02T03:04:05+02:00", "2099-01-02T03:04Z",
])
def test_create_malformed_expiry_is_usage_error(store, when):
    assert_usage_error(store.run("create", "alice", "ci", "--expires", when))
    assert store.list_json() == []


def test_far_future_relative_expiry_is_refused_or_printed_as_iso(store):
    """+1000000w is past year 9999: refuse it, or print a valid YYYY-... time."""
    r = store.run("create", "alice", "ci", "--expires", "+1000000w", "--json")
    if r.rc == 0:
        obj = json.loads(r.out)
        assert ISO_RE.match(obj["expires"]), f"expires is not YYYY-MM-DDTHH:MM:SSZ: {obj['expires']!r}"
    else:
        assert_usage_error(r)
        assert store.list_json() == []


@pytest.mark.parametrize("given,shown", [
    (["127.0.0.1"], ["127.0.0.1"]),
    (["127.0.0.1/32"], ["127.0.0.1"]),
    (["10.0.0.0/8"], ["10.0.0.0/8"]),
    (["::1"], ["::1"]),
    (["2001:db8::/32"], ["2001:db8::/32"]),
    (["10.0.0.0/8", "192.168.1.5", "2001:db8::/48"], ["10.0.0.0/8", "192.168.1.5", "2001:db8::/48"]),
    (["0.0.0.0/0"], ["0.0.0.0/0"]),
])
def test_create_allow_ip_shown_in_json(store, given, shown):
    args = []
    for g in given:
        args += ["--allow-ip", g]
    obj = store.create_json("alice", "ci", *args)
    assert isinstance(obj["allowed_ips"], list)
    assert sorted(obj["allowed_ips"]) == sorted(shown)
    assert sorted(store.show_json("alice", "ci")["allowed_ips"]) == sorted(shown)


def test_create_accepts_100_networks(store):
    args = []
    for i in range(100):
        args += ["--allow-ip", f"10.{i}.0.0/16"]
    obj = store.create_json("alice", "ci", *args)
    assert len(obj["allowed_ips"]) == 100


def test_create_refuses_101_networks(store):
    args = []
    for i in range(101):
        args += ["--allow-ip", f"10.{i}.0.0/16"]
    assert_usage_error(store.run("create", "alice", "ci", *args))
    assert store.list_json() == []


@pytest.mark.parametrize("cidr", [
    "300.1.1.1", "10.0.0.1/8", "1.2.3.4/33", "1.2.3", "1.2.3.4.5", "abc", pytest.param("", id="empty"),
    "::1/129", "10.0.0.0/", "/8", "1.2.3.4/-1", "1.2.3.4/x", "[::1]", "fe80::1%eth0",
    "2001:db8::1/32", "localhost",
])
def test_create_bad_cidr_is_usage_error(store, cidr):
    assert_usage_error(store.run("create", "alice", "ci", "--allow-ip", cidr))
    assert store.list_json() == []


def test_create_one_bad_cidr_among_good_ones_creates_nothing(store):
    r = store.run("create", "alice", "ci", "--allow-ip", "10.0.0.0/8", "--allow-ip", "10.0.0.1/8")
    assert_usage_error(r)
    assert store.list_json() == []


def test_duplicate_name_for_same_user_is_refused(store):
    token = store.create("alice", "ci")
    before = store.list_json()
    r = store.run("create", "alice", "ci")
    assert_refusal(r)
    assert store.list_json() == before
    assert_accepted(store.check("alice", token))


def test_same_name_for_another_user_is_fine(store):
    ta = store.create("alice", "ci")
    tb = store.create("bob", "ci")
    assert ta != tb
    assert sorted((t["user"], t["name"]) for t in store.list_json()) == [("alice", "ci"), ("bob", "ci")]
    assert_accepted(store.check("alice", ta))
    assert_accepted(store.check("bob", tb))

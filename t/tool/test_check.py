# SPDX-License-Identifier: Apache-2.0
"""`cptoken check USER [--ip ADDR]`, token on stdin: the verdict and why."""

import time

import pytest

from conftest import assert_accepted, assert_refused, assert_usage_error, mutate


def no_leak(r, *secrets):
    for s in secrets:
        assert s not in r.out, f"check must not print the token: {r.out!r}"
        assert s not in r.err, f"check must not print the token on stderr: {r.err!r}"


def test_accepted_with_trailing_newline(store):
    token = store.create("alice", "ci")
    r = store.check("alice", token, newline=True)
    assert_accepted(r)
    no_leak(r, token)


def test_accepted_without_trailing_newline(store):
    token = store.create("alice", "ci")
    assert_accepted(store.check("alice", token, newline=False))


def test_accepted_line_is_one_line(store):
    token = store.create("alice", "ci")
    r = store.check("alice", token)
    assert_accepted(r)
    assert len(r.out.splitlines()) == 1, r.out


@pytest.mark.parametrize("make_bad", [
    lambda t: t.lower(),
    lambda t: t[:31],
    lambda t: t + "A",
    lambda t: t[:16] + " " + t[17:],
    lambda t: t[:31] + "-",
], ids=["lowercase", "31chars", "33chars", "space", "dash"])  # empty: a usage error (test_cli_habits)
def test_malformed_token(store, make_bad):
    token = store.create("alice", "ci")
    bad = make_bad(token)
    r = store.check("alice", bad)
    assert_refused(r, "malformed")
    no_leak(r, token)
    if len(bad) >= 8:
        no_leak(r, bad)


@pytest.mark.parametrize("pos", [0, 13, 27, 31])
def test_mistyped_token(store, pos):
    token = store.create("alice", "ci")
    typo = mutate(token, pos)
    r = store.check("alice", typo)
    assert_refused(r, "mistyped")
    no_leak(r, token, typo)


def test_never_issued_token_with_valid_checksum_is_unknown(store, other_store):
    store.create("alice", "ci")
    foreign = other_store.create("alice", "ci")
    r = store.check("alice", foreign)
    assert_refused(r, "unknown")
    no_leak(r, foreign)


def test_revoked_token_is_unknown(store):
    token = store.create("alice", "ci")
    assert store.run("revoke", "alice", "ci").rc == 0
    r = store.check("alice", token)
    assert_refused(r, "unknown")
    no_leak(r, token)


def test_another_users_token(store):
    token = store.create("alice", "ci")
    store.create("bob", "ci")
    r = store.check("bob", token)
    assert_refused(r, "another user")
    no_leak(r, token)


def test_another_users_token_for_user_without_tokens(store):
    token = store.create("alice", "ci")
    assert_refused(store.check("mallory", token), "another user")


def test_expired_token(store):
    token = store.create("alice", "ci", "--expires", "+4s")  # 3-4 s of life: room for a slow check (ASan)
    assert_accepted(store.check("alice", token))
    time.sleep(5)
    r = store.check("alice", token)
    assert_refused(r, "expired")
    no_leak(r, token)
    # Still listed (only prune removes it), and the other checks still apply first.
    assert [e["name"] for e in store.list_json()] == ["ci"]


def test_address_not_allowed_names_the_allowlist(store):
    token = store.create("alice", "ci", "--allow-ip", "10.0.0.0/8", "--allow-ip", "192.168.1.5")
    r = store.check("alice", token, ip="11.0.0.1")
    assert_refused(r, "not allowed")
    line = r.out.splitlines()[0]
    assert "10.0.0.0/8" in line and "192.168.1.5" in line, line
    no_leak(r, token)


@pytest.mark.parametrize("allow,ip", [
    ("10.0.0.0/8", "10.255.0.1"),
    ("127.0.0.1", "127.0.0.1"),
    ("127.0.0.1", "::ffff:127.0.0.1"),
    ("10.0.0.0/8", "::ffff:10.1.2.3"),
    ("2001:db8::/32", "2001:db8:ffff::5"),
    ("::1", "::1"),
    ("0.0.0.0/0", "203.0.113.7"),
])
def test_address_in_allowlist_is_accepted(store, allow, ip):
    token = store.create("alice", "ci", "--allow-ip", allow)
    assert_accepted(store.check("alice", token, ip=ip))


@pytest.mark.parametrize("allow,ip", [
    ("10.0.0.0/8", "11.0.0.1"),
    ("127.0.0.1", "127.0.0.2"),
    ("127.0.0.1", "::ffff:127.0.0.2"),
    ("2001:db8::/32", "2001:db9::1"),
    ("::1", "127.0.0.1"),
    ("127.0.0.1", "::1"),
    ("192.168.1.0/24", "192.168.2.1"),
])
def test_address_outside_allowlist_is_refused(store, allow, ip):
    token = store.create("alice", "ci", "--allow-ip", allow)
    r = store.check("alice", token, ip=ip)
    assert_refused(r, "not allowed")
    assert allow in r.out.splitlines()[0]


def test_without_ip_the_allowlist_is_not_checked(store):
    token = store.create("alice", "ci", "--allow-ip", "10.0.0.0/8")
    assert_accepted(store.check("alice", token))


def test_unrestricted_token_is_accepted_from_any_address(store):
    token = store.create("alice", "ci")
    assert_accepted(store.check("alice", token, ip="203.0.113.9"))
    assert_accepted(store.check("alice", token, ip="2001:db8::9"))


@pytest.mark.parametrize("ip", ["300.1.1.1", "10.0.0.0/8", "abc", pytest.param("", id="empty"), "1.2.3", "[::1]", "::1::2"])
def test_bad_ip_is_usage_error(store, ip):
    token = store.create("alice", "ci")
    r = store.check("alice", token, ip=ip)
    assert_usage_error(r)
    no_leak(r, token)

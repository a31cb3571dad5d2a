# SPDX-License-Identifier: Apache-2.0
"""The token never appears in the error log or the access log, whatever
happened to the request (admitted, refused for any reason), even with the
module's own log level at trace8."""

import time

import pytest

from conftest import BASIC_PROVIDER_AUTH, Store, api_location, b64, basic, wait_until


def exercise(srv):
    """Sends every kind of request with alice's tokens; returns the tokens."""
    ok = srv.store.create("alice", "ok")
    pinned = srv.store.create("alice", "pinned", "--allow-ip", "192.0.2.1")
    short = srv.store.create("alice", "short", "--expires", "+1s")
    revoked = srv.store.create("alice", "revoked")
    unknown = Store(srv.dir / "other").init().create("alice", "elsewhere")
    srv.store.revoke("alice", "revoked")
    time.sleep(2.1)
    n = 0
    for t in (ok, pinned, short, revoked, unknown):
        for kw in ({"auth": f"cpanel alice:{t}"}, {"user": f"alice:{t}"},
                   {"auth": f"cpanel bob:{t}"}, {"user": f"bob:{t}"},
                   {"auth": f"whm alice:{t}"}, {"auth": f"cpanel alice:{t}X"},
                   {"auth": f"cpanel alice:{t[:-1]}"}, {"auth": basic("alice", t) + "*"},
                   {"auth": f"cpanel alice:{t}", "v6": True},
                   {"auth": f"cpanel alice:{t}", "interface": "127.0.0.2"}):
            srv.get(**kw)
            n += 1
    wait_until(lambda: len(srv.access_lines()) >= n, 3)
    return [ok, pinned, short, revoked, unknown]


def assert_no_token_in_logs(srv, tokens):
    err = srv.log_bytes()
    acc = srv.access_log.read_bytes()
    assert err and acc
    for t in tokens:
        for form in (t, t[:-1], b64(f"alice:{t}"), b64(f"bob:{t}")):
            assert form.encode() not in err, f"a token ({form[:6]}...) appears in the error log"
            assert form.encode() not in acc, f"a token ({form[:6]}...) appears in the access log"
        # Also a partial token (16 characters from the middle).
        assert t[8:24].encode() not in err and t[8:24].encode() not in acc


@pytest.mark.parametrize("loglevel", ["warn cptoken:info", "warn cptoken:trace8"])
def test_token_never_logged(srv, loglevel):
    srv.allow("CPT0100")
    srv.start(loglevel=loglevel)
    tokens = exercise(srv)
    assert srv.lines(tag="CPT0100"), "refusals should have been logged"
    assert_no_token_in_logs(srv, tokens)




@pytest.mark.parametrize("provider", [False, True], ids=["authtype-cpanel", "basic-provider"])
def test_lowercased_token_as_user_never_logged(srv, provider):
    """A lowercased token is a valid user name: our refusal lines must still
    not show it. (Under AuthBasicProvider, mod_auth_basic's own AH01618 line
    shows the user field: httpd's line, not ours, see docs/security.md.)"""
    srv.allow("CPT0100", "AH01617", "AH01618")
    srv.start(api_location(auth=BASIC_PROVIDER_AUTH) if provider else None)
    token = srv.store.create("alice", "ok")
    other = Store(srv.dir / "other").init().create("alice", "elsewhere")
    attempts = [{"user": f"{t.lower()}:{password}"} for t in (token, other) for password in (token, other)]
    if not provider:
        attempts += [{"auth": f"cpanel {t.lower()}:{password}"} for t in (token, other) for password in (token, other)]
    for kw in attempts:
        assert srv.get(**kw).status == 401
    ours = srv.wait_lines(0, "CPT0100", count=len(attempts))
    assert len(ours) == len(attempts), "every refusal should have been logged:\n" + srv.log_text()
    for line in ours:
        for t in (token, other):
            assert t.lower() not in line.lower(), f"a token ({t[:4]}...) appears in a CPT0100 line: {line}"
        assert 'user="(token-shaped)"' in line, line

# SPDX-License-Identifier: Apache-2.0
"""`Require user ...` with AuthType cpanel, and the module as an authn
provider behind mod_auth_basic (alone and in chains with mod_authn_file)."""

import os
import subprocess
import time

from conftest import (Store, api_location, assert_admitted, assert_refused)

# mod_auth_basic's own error lines on refusals: wrong password, unknown user,
# wrong scheme. They come with the Basic provider whatever the provider says.
BASIC_TAGS = ("AH01617", "AH01618", "AH01614", "CPT0100")


def htpasswd(srv, *pairs):
    """An htpasswd file (bcrypt) with the given (user, password) pairs, readable by www-data."""
    path = srv.dir / "htpasswd"
    first = True
    for user, password in pairs:
        args = ["htpasswd", "-b", "-B", "-C", "4"] + (["-c"] if first else []) + [str(path), user, password]
        p = subprocess.run(args, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        first = False
    os.chmod(path, 0o644)
    return path


def basic_location(providers, htfile=None, require="valid-user"):
    auth = f"""    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider {providers}
    Require {require}"""
    if htfile:
        auth += f'\n    AuthUserFile "{htfile}"'
    return api_location(auth=auth)


def test_require_user_admits_only_that_user(srv):
    srv.allow("CPT0100", "AH01631")
    ta = srv.store.create("alice", "ci")
    tb = srv.store.create("bob", "ci")
    srv.start(api_location(auth="""    AuthType cpanel
    AuthName "@REALM@"
    Require user alice"""))
    assert_admitted(srv.get(auth=f"cpanel alice:{ta}"), "alice")
    assert_admitted(srv.get(user=f"alice:{ta}"), "alice")
    mark = srv.mark()
    assert_refused(srv.get(auth=f"cpanel bob:{tb}"))
    assert_refused(srv.get(user=f"bob:{tb}"))
    assert srv.wait_lines(mark, "AH01631", 2)


def test_require_user_list(srv):
    srv.allow("CPT0100", "AH01631")
    ta = srv.store.create("alice", "ci")
    tb = srv.store.create("bob", "ci")
    tc = srv.store.create("carol", "ci")
    srv.start(api_location(auth="""    AuthType cpanel
    AuthName "@REALM@"
    Require user alice bob"""))
    assert_admitted(srv.get(auth=f"cpanel alice:{ta}"), "alice")
    assert_admitted(srv.get(auth=f"cpanel bob:{tb}"), "bob")
    assert_refused(srv.get(auth=f"cpanel carol:{tc}"))


def test_basic_provider_cptoken(srv):
    srv.allow(*BASIC_TAGS)
    token = srv.store.create("alice", "ci")
    other = Store(srv.dir / "other").init().create("alice", "x")
    srv.start(basic_location("cptoken"))
    r = srv.get(user=f"alice:{token}")
    assert_admitted(r, "alice")
    assert r.backend_headers["x-cptoken-name"] == "ci"
    assert r.backend_headers.get("x-cptoken-expires", "") == ""
    assert "authorization" not in r.backend_headers, "CPTokenForwardAuthorization is Off by default"
    mark = srv.mark()
    assert_refused(srv.get(user=f"alice:{other}"), ("basic",))
    lines = srv.wait_lines(mark, "CPT0100")
    assert len(lines) == 1 and 'reason="' in lines[0] and "client=127.0.0.1" in lines[0], lines
    assert_refused(srv.get(user=f"bob:{token}"), ("basic",))
    assert_refused(srv.get(), ("basic",))
    # The cpanel header form is AuthType cpanel's business, not mod_auth_basic's.
    assert_refused(srv.get(auth=f"cpanel alice:{token}"), ("basic",))


def test_basic_provider_revoke_applies_to_the_next_request(srv):
    srv.allow(*BASIC_TAGS)
    token = srv.store.create("alice", "ci")
    srv.start(basic_location("cptoken"))
    assert_admitted(srv.get(user=f"alice:{token}"), "alice")
    srv.store.revoke("alice", "ci")
    assert_refused(srv.get(user=f"alice:{token}"), ("basic",))


def test_chain_file_then_cptoken(srv):
    srv.allow(*BASIC_TAGS)
    token = srv.store.create("alice", "ci")
    ht = htpasswd(srv, ("carol", "carol-password"))
    srv.start(basic_location("file cptoken", ht))
    assert_admitted(srv.get(user="carol:carol-password"), "carol")
    assert_admitted(srv.get(user=f"alice:{token}"), "alice")
    assert_refused(srv.get(user="carol:wrong"), ("basic",))
    assert_refused(srv.get(user="alice:wrong"), ("basic",))


def test_chain_cptoken_then_file(srv):
    srv.allow(*BASIC_TAGS)
    token = srv.store.create("alice", "ci")
    ht = htpasswd(srv, ("carol", "carol-password"))
    srv.start(basic_location("cptoken file", ht))
    assert_admitted(srv.get(user="carol:carol-password"), "carol")
    assert_admitted(srv.get(user=f"alice:{token}"), "alice")
    assert_refused(srv.get(user="carol:wrong"), ("basic",))


def test_chain_unknown_token_falls_through_to_the_next_provider(srv):
    """A token-shaped password unknown to the store: cptoken lets `file` decide."""
    srv.allow(*BASIC_TAGS)
    unknown = Store(srv.dir / "other").init().create("carol", "x")
    ht = htpasswd(srv, ("carol", unknown))
    srv.start(basic_location("cptoken file", ht))
    assert_admitted(srv.get(user=f"carol:{unknown}"), "carol")


def test_chain_known_token_of_another_user_stops_the_chain(srv):
    """bob's htpasswd password is alice's token: cptoken knows it and refuses;
    `file` (which would accept) must not get a say."""
    srv.allow(*BASIC_TAGS)
    ta = srv.store.create("alice", "ci")
    ht = htpasswd(srv, ("bob", ta))
    srv.start(basic_location("cptoken file", ht))
    assert_refused(srv.get(user=f"bob:{ta}"), ("basic",))


def test_chain_known_token_refused_by_allowlist_stops_the_chain(srv):
    srv.allow(*BASIC_TAGS)
    ta = srv.store.create("alice", "pinned", "--allow-ip", "192.0.2.1")
    ht = htpasswd(srv, ("alice", ta))
    srv.start(basic_location("cptoken file", ht))
    assert_refused(srv.get(user=f"alice:{ta}"), ("basic",))


def test_chain_known_token_refused_for_expiry_stops_the_chain(srv):
    srv.allow(*BASIC_TAGS)
    ta = srv.store.create("alice", "ci")
    ht = htpasswd(srv, ("alice", ta))
    srv.start(basic_location("cptoken file", ht))
    assert_admitted(srv.get(user=f"alice:{ta}"), "alice")
    srv.store.edit("alice", "ci", "--expires", "+1s")
    time.sleep(2.1)
    assert_refused(srv.get(user=f"alice:{ta}"), ("basic",))


def test_basic_provider_with_require_user(srv):
    srv.allow(*BASIC_TAGS, "AH01631")
    ta = srv.store.create("alice", "ci")
    tb = srv.store.create("bob", "ci")
    srv.start(basic_location("cptoken", require="user alice"))
    assert_admitted(srv.get(user=f"alice:{ta}"), "alice")
    assert_refused(srv.get(user=f"bob:{tb}"), ("basic",))


def test_basic_provider_not_a_token_logs_info_and_basic_error(srv):
    """With `AuthBasicProvider cptoken`, a password that is not one of our
    tokens may belong to the next provider in a chain, so the module logs it
    at info only; when no provider accepts it, mod_auth_basic logs AH01618 at
    error (matched by conf/fail2ban-cptoken.conf), so guessing is still seen."""
    srv.allow(*BASIC_TAGS)
    srv.store.create("alice", "ci")
    unknown = Store(srv.dir / "other").init().create("alice", "x")
    srv.start(basic_location("cptoken"))
    for password in (unknown, "not-a-token"):
        mark = srv.mark()
        assert_refused(srv.get(user=f"alice:{password}"), ("basic",))
        lines = srv.wait_lines(mark, "CPT0100")
        assert len(lines) == 1, lines
        assert "[cptoken:info]" in lines[0], f"expected a CPT0100 line at level info, got: {lines[0]}"
        basic = srv.wait_lines(mark, "AH01618")
        assert len(basic) == 1 and "[auth_basic:error]" in basic[0], basic
        assert password not in "".join(lines + basic)


def test_basic_provider_known_token_refused_logs_error(srv):
    """A token of ours refused (here: another user's) stops the chain and is
    logged at error, like every refusal of AuthType cpanel."""
    srv.allow(*BASIC_TAGS)
    token = srv.store.create("alice", "ci")
    srv.start(basic_location("cptoken"))
    mark = srv.mark()
    assert_refused(srv.get(user=f"bob:{token}"), ("basic",))
    lines = srv.wait_lines(mark, "CPT0100")
    assert len(lines) == 1 and "[cptoken:error]" in lines[0], lines
    assert 'reason="token belongs to another user"' in lines[0]

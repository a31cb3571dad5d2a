# SPDX-License-Identifier: Apache-2.0
"""Tokens imported from cPanel's files (`cptoken import-cpanel`) seen by a
real httpd under every MPM: clients keep the tokens they have, allowlists
included, and `--sync` after an entry is removed refuses the very next request."""

import hashlib
import json
import random

from conftest import ALL_MPMS, TOKEN_RE, assert_admitted, assert_refused

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def cpanel_token():
    """A token as cPanel makes them: 32 characters of [A-Z0-9], no checksum of ours."""
    token = "".join(random.SystemRandom().choice(ALPHABET) for _ in range(32))
    assert TOKEN_RE.match(token)
    return token


def write_cpanel_file(path, tokens):
    """`tokens`: token text -> (name, whitelist_ips or None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tokens": {
        hashlib.sha512(token.encode()).hexdigest(): {
            "name": name, "create_time": 1700000000, "expires_at": None, "has_full_access": 1,
            **({"whitelist_ips": ips} if ips is not None else {}),
        } for token, (name, ips) in tokens.items()}}))


@ALL_MPMS
def test_imported_tokens_authenticate_with_their_allowlists(srv, mpm):
    srv.allow("CPT0100")
    anywhere, pinned, network = cpanel_token(), cpanel_token(), cpanel_token()
    f = srv.dir / "api_tokens_v2" / "cpanel" / "alice.json"
    write_cpanel_file(f, {anywhere: ("deploy", None), pinned: ("pinned", ["127.0.0.1"]),
                          network: ("net", ["127.0.0.1/31"])})  # host bits set, as cPanel allows
    srv.store.run("import-cpanel", f.parent.parent)
    srv.start()

    assert_admitted(srv.get(auth=f"cpanel alice:{anywhere}"))
    assert_admitted(srv.get(user=f"alice:{anywhere}", interface="127.0.0.2"))
    assert_admitted(srv.get(auth=f"cpanel alice:{pinned}", interface="127.0.0.1"))
    assert_refused(srv.get(auth=f"cpanel alice:{pinned}", interface="127.0.0.2"))
    assert_admitted(srv.get(auth=f"cpanel alice:{network}", interface="127.0.0.1"))
    assert_refused(srv.get(auth=f"cpanel alice:{network}", interface="127.0.0.2"))
    assert_refused(srv.get(auth=f"cpanel bob:{anywhere}"))
    for token in (anywhere, pinned, network):
        assert token not in srv.log_text()


@ALL_MPMS
def test_sync_revokes_a_removed_entry_at_the_next_request(srv, mpm):
    srv.allow("CPT0100")
    kept, removed = cpanel_token(), cpanel_token()
    top = srv.dir / "api_tokens_v2"
    f = top / "cpanel" / "alice.json"
    write_cpanel_file(f, {kept: ("kept", None), removed: ("removed", None)})
    srv.store.run("import-cpanel", top)
    srv.start()
    assert_admitted(srv.get(auth=f"cpanel alice:{removed}"))  # in every child's cache from now on
    assert_admitted(srv.get(auth=f"cpanel alice:{kept}"))

    write_cpanel_file(f, {kept: ("kept", None)})
    r = srv.store.run("import-cpanel", top, "--sync")
    assert f"revoked alice/removed (cpanel) (no longer in {f})" in r.stdout.splitlines(), r.stdout
    mark = srv.mark()
    assert_refused(srv.get(auth=f"cpanel alice:{removed}"))
    [line] = srv.wait_lines(mark, "CPT0100")
    assert 'reason="unknown token' in line, line  # no checksum of ours: also said to be mistyped
    assert_admitted(srv.get(auth=f"cpanel alice:{kept}"))

# SPDX-License-Identifier: Apache-2.0
"""CPTokenExpiryHeader On: the answer to a request admitted by a token that
expires carries `CPToken-Expires: <expiry, RFC 3339 UTC>`, on success, on
error answers (404, ErrorDocument, a proxied backend that is down) and on
proxied answers, where it replaces the backend's own. Never for a token that
never expires, never on a 401, never with the directive Off or unset."""

import json

from conftest import BASIC_PROVIDER_AUTH, ALL_MPMS, CPANEL_AUTH, ISO_RE, api_location, free_port

HEADER = "CPToken-Expires"
ON = "    CPTokenExpiryHeader On"
# mod_proxy when the backend's port is closed (retry=0: the worker is not disabled): connect failed, no connection.
PROXY_DOWN_TAGS = ("AH00957", "AH01114")
# mod_authz_core: "user alice: authorization failure" for Require user bob.
AUTHZ_TAGS = ("AH01631",)
# mod_auth_basic, for a password no provider accepts.
BASIC_TAGS = ("AH01617", "AH01618")
BOGUS = "1999-01-01T00:00:00Z"


def site(srv):
    """Static files: /files (protected), /docs (protected, with an ErrorDocument
    in the unprotected /errors) and /plain (unprotected; the backend of /relay)."""
    for name, files in (("files", {"hello.txt": "hello\n"}), ("docs", {}),
                        ("errors", {"404.html": "custom not found\n", "401.html": "custom refusal\n"}),
                        ("plain", {"x": "plain\n"})):
        d = srv.htdocs / name
        d.mkdir()
        d.chmod(0o755)
        for f, text in files.items():
            (d / f).write_text(text)


def body(srv, *, closed_port):
    """One server with every case; only the locations that say On have the header."""
    return "\n".join([
        api_location("/api", more=ON),
        api_location("/basic", auth=BASIC_PROVIDER_AUTH, more=ON),
        api_location("/bob", auth=CPANEL_AUTH.replace("valid-user", "user bob"), more=ON),
        api_location("/bobdoc", auth=CPANEL_AUTH.replace("valid-user", "user bob"),
                     more=ON + "\n    ErrorDocument 401 /errors/401.html"),
        api_location("/off", more="    CPTokenExpiryHeader Off"),
        api_location("/default"),
        f"""
<Directory "@HTDOCS@/files">
{CPANEL_AUTH}
{ON}
    DirectoryIndex hello.txt
</Directory>
<Directory "@HTDOCS@/docs">
{CPANEL_AUTH}
{ON}
    ErrorDocument 404 /errors/404.html
</Directory>
<Directory "@HTDOCS@/plain">
    Header always set {HEADER} "{BOGUS}"
</Directory>
ProxyPass "/down" "http://127.0.0.1:{closed_port}/down" retry=0
<Location "/down">
{CPANEL_AUTH}
{ON}
</Location>
ProxyPass "/relay" "http://127.0.0.1:@PORT@/plain"
<Location "/relay">
{CPANEL_AUTH}
{ON}
</Location>
"""])


def start(srv):
    site(srv)
    srv.start(body(srv, closed_port=free_port()), extra_modules="LoadModule dir_module @MODDIR@/mod_dir.so")


def expiry_of(srv, user, name):
    """The expiry as `cptoken show --json` gives it."""
    expires = json.loads(srv.store.run("show", "--json", user, name).stdout)["expires"]
    assert expires and ISO_RE.match(expires), expires
    return expires


def assert_header(r, want, what):
    got = r.header(HEADER)
    assert got == ([want] if want else []), f"{what}: {HEADER} {got!r}, expected {want!r}; {r!r}"


@ALL_MPMS
def test_on_success(srv):
    token = srv.store.create("alice", "ci", "--expires", "+30d")
    start(srv)
    expires = expiry_of(srv, "alice", "ci")
    for path, kw, what in (
            ("/api/x", {"auth": f"cpanel alice:{token}"}, "proxied, cpanel"),
            ("/api/x", {"user": f"alice:{token}"}, "proxied, Basic under AuthType cpanel"),
            ("/basic/x", {"user": f"alice:{token}"}, "proxied, AuthBasicProvider cptoken"),
            ("/files/hello.txt", {"auth": f"cpanel alice:{token}"}, "static file"),
            ("/files/", {"auth": f"cpanel alice:{token}"}, "static file by DirectoryIndex")):
        r = srv.get(path, **kw)
        assert r.status == 200, f"{what}: {r!r}"
        assert_header(r, expires, what)


@ALL_MPMS
def test_on_errors(srv):
    srv.allow(*PROXY_DOWN_TAGS)
    token = srv.store.create("alice", "ci", "--expires", "+30d")
    start(srv)
    expires = expiry_of(srv, "alice", "ci")
    auth = f"cpanel alice:{token}"

    r = srv.get("/files/missing.txt", auth=auth)
    assert r.status == 404, r
    assert_header(r, expires, "404")

    r = srv.get("/docs/missing.txt", auth=auth)
    assert r.status == 404 and r.body == b"custom not found\n", r
    assert_header(r, expires, "404 with an ErrorDocument in a location without the directive")

    r = srv.get("/down/x", auth=auth)
    assert r.status in (502, 503), r
    assert_header(r, expires, "proxied, backend down")


@ALL_MPMS
def test_replaces_the_backends_header(srv):
    dated = srv.store.create("alice", "ci", "--expires", "+30d")
    never = srv.store.create("alice", "forever")
    start(srv)
    expires = expiry_of(srv, "alice", "ci")
    # The backend (httpd itself, /plain) really sends one.
    assert_header(srv.get("/plain/x"), BOGUS, "the backend, asked directly")
    r = srv.get("/relay/x", auth=f"cpanel alice:{dated}")
    assert r.status == 200 and r.body == b"plain\n", r
    assert_header(r, expires, "proxied to a backend that sends its own")
    r = srv.get("/relay/x", auth=f"cpanel alice:{never}")
    assert r.status == 200 and r.body == b"plain\n", r
    assert_header(r, None, "token that never expires, proxied to a backend that sends one")


@ALL_MPMS
def test_absent(srv):
    dated = srv.store.create("alice", "ci", "--expires", "+30d")
    never = srv.store.create("alice", "forever")
    start(srv)
    for path, kw, what in (
            ("/api/x", {"auth": f"cpanel alice:{never}"}, "token that never expires"),
            ("/basic/x", {"user": f"alice:{never}"}, "token that never expires, AuthBasicProvider"),
            ("/files/hello.txt", {"auth": f"cpanel alice:{never}"}, "token that never expires, static"),
            ("/off/x", {"auth": f"cpanel alice:{dated}"}, "CPTokenExpiryHeader Off"),
            ("/default/x", {"auth": f"cpanel alice:{dated}"}, "no CPTokenExpiryHeader")):
        r = srv.get(path, **kw)
        assert r.status == 200, f"{what}: {r!r}"
        assert_header(r, None, what)


@ALL_MPMS
def test_never_on_a_401(srv):
    srv.allow("CPT0100", *AUTHZ_TAGS, *BASIC_TAGS)
    dated = srv.store.create("alice", "ci", "--expires", "+30d")
    start(srv)
    unknown = "A" * 32
    for path, kw, what in (
            ("/api/x", {}, "no credentials"),
            ("/api/x", {"auth": f"cpanel alice:{unknown}"}, "unknown token"),
            ("/basic/x", {"user": f"alice:{unknown}"}, "unknown token, AuthBasicProvider"),
            ("/bob/x", {"auth": f"cpanel alice:{dated}"}, "admitted, then denied by Require user bob"),
            ("/bob/x", {"user": f"alice:{dated}"}, "admitted by Basic, then denied by Require user bob"),
            ("/bobdoc/x", {"auth": f"cpanel alice:{dated}"}, "admitted, denied, ErrorDocument 401")):
        r = srv.get(path, **kw)
        assert r.status == 401, f"{what}: {r!r}"
        assert_header(r, None, what)
    r = srv.get("/bobdoc/x", auth=f"cpanel alice:{dated}")
    assert r.body == b"custom refusal\n", r


REWRITE = "LoadModule rewrite_module @MODDIR@/mod_rewrite.so"


def test_the_location_the_client_asked_for_wins(srv):
    """A per-directory RewriteRule sends the request on into another location:
    the setting of the first one counts, as for CPTokenForwardAuthorization."""
    dated = srv.store.create("alice", "ci", "--expires", "+30d")
    for name in ("quiet", "loud"):
        d = srv.htdocs / name
        d.mkdir()
        d.chmod(0o755)
    srv.start("\n".join([api_location("/api", more=ON), api_location("/default"), f"""
<Directory "@HTDOCS@/quiet">
    RewriteEngine On
    RewriteRule ^go$ /api/from-quiet [L]
</Directory>
<Directory "@HTDOCS@/loud">
{ON}
    RewriteEngine On
    RewriteRule ^go$ /default/from-loud [L]
</Directory>
"""]), extra_modules=REWRITE)
    expires = expiry_of(srv, "alice", "ci")
    auth = f"cpanel alice:{dated}"
    r = srv.get("/quiet/go", auth=auth)
    assert r.status == 200 and r.json["path"] == "/api/from-quiet", r
    assert_header(r, None, "asked for a location without the directive, sent on into one with On")
    r = srv.get("/loud/go", auth=auth)
    assert r.status == 200 and r.json["path"] == "/default/from-loud", r
    assert_header(r, expires, "asked for a location with On, sent on into one without the directive")

# SPDX-License-Identifier: Apache-2.0
"""Scoped and safe-methods tokens through a real httpd: a token with scopes
reaches only the URL paths under them (whole segments, after httpd's own
decoding and dot-segment removal), for every URI the request reaches
(internal redirects, subrequests, ErrorDocument pages), and a safe-methods
token only GET, HEAD and OPTIONS, without a body or method-override
headers. Outside: 403 without a challenge and a CPT0102 line; inside,
Require decides as usual."""

import http.client

import pytest

from conftest import BASIC_PROVIDER_AUTH, ALL_MPMS, CPANEL_AUTH, api_location, assert_admitted

MODULES = """LoadModule rewrite_module @MODDIR@/mod_rewrite.so
LoadModule include_module @MODDIR@/mod_include.so
LoadModule dir_module @MODDIR@/mod_dir.so"""

OUTSIDE = 'reason="path outside the token\'s scopes"'
NOT_SAFE = 'reason="method not allowed for a safe-methods token"'

# Server-context rules: mod_rewrite does not pass them on to virtual hosts, so each host repeats them.
SERVER_REWRITES = """    RewriteEngine On
    RewriteRule ^/s/in/pt-out$ /s/out/secret.html [PT]
    RewriteRule ^/s/out/pt-in$ /s/in/page.html [PT]
    RewriteRule ^/s/in/map-out$ /s/out/secret.html"""


def site(srv):
    """htdocs/s/in (the scope), htdocs/s/out and htdocs/s/cfg (outside)."""
    files = {
        "s/in/page.html": "in page\n",
        "s/in/notfound.html": "in-scope not found page\n",
        "s/in/ssi-in.shtml": 'ssi [<!--#include virtual="/s/in/page.html" -->]\n',
        "s/in/ssi-out.shtml": 'ssi [<!--#include virtual="/s/out/secret.html" -->]\n',
        "s/in/dir-in/index.html": "in index\n",
        "s/in/dir-out/placeholder.txt": "x\n",
        "s/in/err-out/placeholder.txt": "x\n",
        "s/out/secret.html": "out secret\n",
        "s/out/notfound.html": "out-of-scope not found page\n",
        "s/out/ssi-in.shtml": 'ssi [<!--#include virtual="/s/in/page.html" -->]\n',
        "s/cfg/secret.html": "cfg secret\n",
    }
    for rel, text in files.items():
        path = srv.htdocs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in srv.htdocs.rglob("*"):
        d.chmod(0o755 if d.is_dir() else 0o644)


def body(srv):
    h = srv.htdocs
    vhosts = "".join(f"""
<VirtualHost 127.0.0.1:@PORT@>
    ServerName {name}
{settings}
{SERVER_REWRITES}
</VirtualHost>
""" for name, settings in (("plain.test", ""),
                           ("noslash.test", "    MergeSlashes Off\n    AllowEncodedSlashes NoDecode"),
                           ("decode.test", "    AllowEncodedSlashes On")))
    return api_location() + f"""
<Location "/s">
{CPANEL_AUTH}
    ErrorDocument 403 "outside your token's scope"
</Location>
<Directory "{h}/s">
    Options +Includes
    RewriteEngine On
    RewriteRule ^in/to-out$ /s/out/secret.html [L]
    RewriteRule ^in/to-cfg$ /s/cfg/secret.html [L]
    RewriteRule ^out/to-in$ /s/in/page.html [L]
    RewriteRule ^in/to-api$ /api/x [L]
    ErrorDocument 404 /s/in/notfound.html
</Directory>
<FilesMatch "\\.shtml$">
    SetOutputFilter INCLUDES
    ForceType text/html
</FilesMatch>
<Directory "{h}/s/cfg">
    Header set X-Cfg yes
</Directory>
<Directory "{h}/s/in/dir-in">
    DirectoryIndex index.html
</Directory>
<Directory "{h}/s/in/dir-out">
    DirectoryIndex /s/out/secret.html
</Directory>
<Directory "{h}/s/in/err-out">
    ErrorDocument 404 /s/out/notfound.html
</Directory>
{vhosts}"""


def start(srv, loglevel="warn cptoken:info"):
    # mod_include's "[include:error] ... unable to include ... subrequest setup returned 403" has no
    # AH tag; test_scope_through_httpd checks that it is the one expected.
    srv.allow("CPT0102", "[include")
    site(srv)
    srv.start(body(srv), extra_modules=MODULES, loglevel=loglevel)


def get(srv, path, token, host="plain.test", **kw):
    return srv.get(path, auth=f"cpanel alice:{token}", headers=[f"Host: {host}"], args=["--path-as-is"], **kw)


def assert_forbidden(srv, r, mark, what, reason=OUTSIDE, path=None):
    """403 without a challenge, and a CPT0102 line (for `path`, if given)."""
    assert r.status == 403, f"{what}: expected 403, got {r!r}\n" + "\n".join(srv.lines(mark))
    assert r.challenges == [], f"{what}: a 403 must carry no WWW-Authenticate: {r.challenges}"
    lines = srv.wait_lines(mark, "CPT0102")
    assert lines and all(reason in line and "[cptoken:error]" in line for line in lines), f"{what}: {lines}"
    if path:
        assert any(f'path="{path}"' in line for line in lines), f"{what}: no CPT0102 for {path}: {lines}"
    assert "secret" not in r.body.decode(errors="replace"), f"{what}: {r!r}"


@ALL_MPMS
def test_scope_through_httpd(srv):
    start(srv)
    token = srv.store.create("alice", "scoped", "--scope", "/s/in", "--scope", "/api/in/")

    def ok(path, want, host="plain.test"):
        r = get(srv, path, token, host)
        assert r.status == 200 and r.body == want, f"{path} ({host}): {r!r}\n" + "\n".join(srv.lines())

    def forbidden(path, host="plain.test", logged=None):
        mark = srv.mark()
        assert_forbidden(srv, get(srv, path, token, host), mark, f"{path} ({host})", path=logged)

    # Inside and outside; whole segments.
    ok("/s/in/page.html", b"in page\n")
    ok("/s/in//page.html", b"in page\n")  # MergeSlashes On (the default): httpd merged them
    forbidden("/s/out/secret.html", logged="/s/out/secret.html")
    forbidden("/s/inx/page.html")
    forbidden("/s/", logged="/s/")
    r = get(srv, "/api/in/x", token)
    assert_admitted(r)
    assert r.json["path"] == "/api/in/x"
    forbidden("/api/inside")
    # The 403 is the location's plain-text ErrorDocument.
    r = get(srv, "/s/out/secret.html", token)
    assert r.status == 403 and r.body == b"outside your token's scope", r

    # Path tricks: httpd decodes and removes dot segments before the check.
    for trick in ("/s/in/../out/secret.html", "/s/in/%2e%2e/out/secret.html", "/s/in/%2E%2E/out/secret.html",
                  "/s/in/./../out/secret.html", "/s/in/%2e/%2e%2e/out/secret.html"):
        forbidden(trick, logged="/s/out/secret.html")
    forbidden("/s/in/%5c..%5cout/secret.html")  # a backslash is never compared
    forbidden("/s/in/%252e%252e/out/secret.html")  # decoded once to %2e%2e: left encoded, refused
    # "//" that httpd keeps (MergeSlashes Off), %2F that it keeps (NoDecode).
    forbidden("/s/in//page.html", "noslash.test", logged="/s/in//page.html")
    forbidden("/api/in/..%2Fout/x", "noslash.test", logged="/api/in/..%2Fout/x")
    forbidden("/api/in/..%2fout/x", "noslash.test")
    # AllowEncodedSlashes On: decoded, then dot segments removed again.
    forbidden("/api/in/..%2Fout/x", "decode.test", logged="/api/out/x")
    r = get(srv, "/api/in/a%2Fb", token, "decode.test")
    assert_admitted(r)

    # Internal redirects by a per-directory RewriteRule. to-out lands in the
    # same per-directory configuration, for which httpd skips
    # authentication: one admission (CPT0101), then the scope refuses.
    mark = srv.mark()
    forbidden("/s/in/to-out", logged="/s/out/secret.html")
    assert len(srv.lines(mark, "CPT0101")) == 1, srv.lines(mark)
    mark = srv.mark()
    forbidden("/s/in/to-cfg", logged="/s/cfg/secret.html")  # another configuration: authenticated again
    assert len(srv.lines(mark, "CPT0101")) == 2, srv.lines(mark)
    forbidden("/s/out/to-in", logged="/s/out/to-in")  # the first URI is already outside
    # Server-context RewriteRule: [PT] changes the path httpd works with,
    # which is what the scope sees; without [PT] it maps a URL path to a
    # file, as Alias does, and the path stays the client's.
    forbidden("/s/in/pt-out", logged="/s/out/secret.html")
    ok("/s/out/pt-in", b"in page\n")
    r = get(srv, "/s/in/map-out", token)
    assert r.status == 200 and r.body == b"out secret\n", r

    # Subrequests: mod_include and mod_dir's DirectoryIndex.
    ok("/s/in/ssi-in.shtml", b"ssi [in page\n]\n")
    mark = srv.mark()
    r = get(srv, "/s/in/ssi-out.shtml", token)
    assert r.status == 200 and b"secret" not in r.body and b"an error occurred" in r.body, r
    assert any('path="/s/out/secret.html"' in line for line in srv.wait_lines(mark, "CPT0102")), srv.lines(mark)
    assert [line for line in srv.lines(mark) if "[include:error]" in line and
            'unable to include "/s/out/secret.html"' in line and "returned 403" in line], srv.lines(mark)
    forbidden("/s/out/ssi-in.shtml")
    ok("/s/in/dir-in/", b"in index\n")
    forbidden("/s/in/dir-out/", logged="/s/out/secret.html")

    # ErrorDocument: a page within the scope is served; one outside is
    # refused in turn, and httpd sends its own page for the first error,
    # saying that the ErrorDocument could not be used.
    r = get(srv, "/s/in/missing", token)
    assert r.status == 404 and r.body == b"in-scope not found page\n", r
    mark = srv.mark()
    r = get(srv, "/s/in/err-out/missing", token)
    assert r.status == 404 and b"out-of-scope not found page" not in r.body, r
    assert b"error was encountered while trying to use an ErrorDocument" in r.body, r
    assert any('path="/s/out/notfound.html"' in line for line in srv.wait_lines(mark, "CPT0102")), srv.lines(mark)


def test_whole_segments(srv):
    srv.allow("CPT0102")
    srv.start(api_location())
    token = srv.store.create("alice", "email", "--scope", "/api/execute/Email/")
    for path in ("/api/execute/Email", "/api/execute/Email/", "/api/execute/Email/list_pops",
                 "/api/execute/Email/list_pops?regex=x"):
        assert_admitted(srv.get(path, auth=f"cpanel alice:{token}"))
    for path in ("/api/execute/EmailX", "/api/execute/EmailX/list_pops", "/api/execute/email/list_pops",
                 "/api/execute/", "/api/execute/Emai"):
        mark = srv.mark()
        assert_forbidden(srv, srv.get(path, auth=f"cpanel alice:{token}"), mark, path)


@ALL_MPMS
def test_safe_methods(srv):
    srv.allow("CPT0102")
    srv.start(api_location())
    ro = srv.store.create("alice", "ro", "--safe-methods")
    root_ro = srv.store.create("alice", "root-ro", "--scope", "/", "--safe-methods")
    plain = srv.store.create("alice", "plain")
    for token in (ro, root_ro):
        for method in ("GET", "OPTIONS"):
            r = srv.get("/api/x", auth=f"cpanel alice:{token}", method=method)
            assert_admitted(r)
            assert r.json["method"] == method
        r = srv.get("/api/x", auth=f"cpanel alice:{token}", args=["--head"])
        assert r.status == 200 and r.challenges == [], r
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            mark = srv.mark()
            r = srv.get("/api/x", auth=f"cpanel alice:{token}", method=method, data="x")
            assert_forbidden(srv, r, mark, method, NOT_SAFE)
            assert f"method={method} " in srv.lines(mark, "CPT0102")[0]
    # A token without restrictions is not affected.
    for method in ("GET", "POST", "PUT", "DELETE"):
        assert_admitted(srv.get("/api/x", auth=f"cpanel alice:{plain}", method=method, data="x"))
    assert_admitted(srv.get("/api/../api/x", auth=f"cpanel alice:{plain}", args=["--path-as-is"]))


@pytest.mark.parametrize("provider", [False, True], ids=["authtype", "provider"])
def test_forbidden_line_and_require(srv, provider):
    """CPT0102 names the method, the escaped path, the user and the token,
    never the token itself; Require still decides inside the scope; the
    Basic provider's tokens are held to their scopes too."""
    srv.allow("CPT0102", "AH01631")
    auth = BASIC_PROVIDER_AUTH if provider else CPANEL_AUTH
    srv.start(api_location(auth=auth) + api_location("/bob", auth=auth.replace("valid-user", "user bob")))
    token = srv.store.create("alice", "ci", "--scope", "/api/in", "--scope", "/bob")
    mark = srv.mark()
    r = srv.get('/api/out/%22quoted%22%0a%5c', user=f"alice:{token}")
    assert r.status == 403 and r.challenges == [], r
    lines = srv.lines(mark, "CPT0102")
    assert len(lines) == 1, srv.lines(mark)
    # httpd's error log escapes the newline and the backslash; the module the quotes.
    assert lines[0].endswith('CPT0102: forbidden: reason="path outside the token\'s scopes" method=GET '
                             'path="/api/out/%22quoted%22\\n\\\\" user="alice" client=127.0.0.1 token="ci"'), lines
    assert token not in srv.log_text()
    assert_admitted(srv.get("/api/in/x", user=f"alice:{token}"))
    # Inside its scope, Require decides: alice is not bob (401 from authz).
    assert srv.get("/bob/x", user=f"alice:{token}").status == 401


OVERRIDES = ("X-HTTP-Method-Override: DELETE", "X-HTTP-Method: PUT", "X-Method-Override: POST")
BODY_REFUSED = 'reason="request body not allowed for a safe-methods token"'


def raw(srv, method, path, token, body=None, headers=None, chunked=False):
    """One request with http.client (HEAD and OPTIONS with a body, a chunked GET): (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        hdrs = {"Authorization": f"cpanel alice:{token}", **(headers or {})}
        if chunked:
            hdrs["Transfer-Encoding"] = "chunked"
            conn.request(method, path, body=iter([body]), headers=hdrs, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@ALL_MPMS
def test_safe_methods_strip_overrides_and_refuse_bodies(srv):
    """UAPI and WHM API 1 change state on GET: a safe-methods token's request
    loses the method-override headers (a backend would take them as the
    method), and a GET, HEAD or OPTIONS that carries a body (a backend may
    read it as a POST's) gets 403."""
    start(srv, loglevel="warn cptoken:debug")
    safe = srv.store.create("alice", "safe", "--safe-methods")
    plain = srv.store.create("alice", "plain")

    for token, kept in ((safe, False), (plain, True)):
        mark = srv.mark()
        r = srv.get("/api/x", auth=f"cpanel alice:{token}", headers=OVERRIDES)
        assert_admitted(r)
        seen = r.backend_headers
        for h in OVERRIDES:
            name = h.split(":")[0].lower()
            assert (name in seen) == kept, (token == safe, name, seen)
        # Said at debug, once per header removed.
        assert len(srv.lines(mark, "CPT0103")) == (0 if kept else 3), srv.lines(mark)
    assert all("[cptoken:debug]" in line and "safe methods only" in line for line in srv.lines(0, "CPT0103"))
    # After an internal redirect (a per-directory RewriteRule into the proxied location) too.
    r = srv.get("/s/in/to-api", auth=f"cpanel alice:{safe}", headers=["Host: plain.test", *OVERRIDES])
    assert_admitted(r)
    assert not {h.split(":")[0].lower() for h in OVERRIDES} & set(r.backend_headers), r.backend_headers

    # Bodies: a length, however given, or chunked; refused before the backend.
    for method, kw in (("GET", {"body": b"email=x"}), ("GET", {"body": b"x", "chunked": True}),
                       ("HEAD", {"body": b"x"}), ("OPTIONS", {"body": b"{}"}),
                       ("GET", {"body": b"x", "headers": {"Content-Length": "01"}})):
        mark = srv.mark()
        status, body = raw(srv, method, "/api/x", safe, **kw)
        assert status == 403, (method, kw, status, body)
        assert b'"headers"' not in body, body
        lines = srv.wait_lines(mark, "CPT0102")
        assert lines and BODY_REFUSED in lines[0] and f"method={method} " in lines[0], lines
    # An empty body is no body; a token without the flag may send one.
    assert raw(srv, "GET", "/api/x", safe, body=b"")[0] == 200
    assert raw(srv, "GET", "/api/x", safe, headers={"Content-Length": "0"})[0] == 200
    assert raw(srv, "GET", "/api/x", plain, body=b"email=x")[0] == 200
    assert raw(srv, "GET", "/api/x", plain, body=b"x", chunked=True)[0] == 200


@ALL_MPMS
def test_semicolons_and_non_ascii_are_outside_every_scope(srv):
    """A servlet container (Tomcat, Jetty) reads `/in/..;/out/x` as
    `/out/x`, and a backend may fold an overlong UTF-8 `%c0%ae` into a dot:
    a segment with ';' (raw or %3b) or a byte outside printable ASCII (raw
    or encoded) is outside every scope, `/` included."""
    srv.allow("CPT0102")
    srv.start(api_location())
    token = srv.store.create("alice", "scoped", "--scope", "/api/in")
    whole = srv.store.create("alice", "whole", "--scope", "/")
    plain = srv.store.create("alice", "plain")
    for path in ("/api/in/..;/out/x", "/api/in/%2e%2e;/out/x", "/api/in/..%3b/out/x", "/api/in/..%3B/out/x",
                 "/api/in/x;jsessionid=1", "/api/in/%253b", "/api/in/%c0%ae%c0%ae/out/x", "/api/in/%c0%ae%c0%ae",
                 "/api/in/a%20b", "/api/in/a%09b", "/api/in/a%7fb", "/api/in/%e2%80%a8", "/api/in/%2520"):
        for t in (token, whole):
            mark = srv.mark()
            r = srv.get(path, auth=f"cpanel alice:{t}", args=["--path-as-is"])
            assert_forbidden(srv, r, mark, path)
        # A token without scopes is not affected.
        assert_admitted(srv.get(path, auth=f"cpanel alice:{plain}", args=["--path-as-is"]))
    for path in ("/api/in/x", "/api/in/a-b_c.d~e!$&'()*+,=:@", "/api/in/100%25"):
        assert_admitted(srv.get(path, auth=f"cpanel alice:{token}", args=["--path-as-is"]))


def send(srv, method, path, token, headers):
    """One request with http.client, `headers` a list of (name, value) pairs, repeats allowed."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"cpanel alice:{token}")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@ALL_MPMS
def test_destination_within_scopes(srv):
    """WebDAV's COPY and MOVE write where the Destination header says: for a
    scoped token (any method), a Destination outside its scopes, on this
    host or another, or one that cannot be read, gets 403."""
    srv.allow("CPT0102")
    srv.start(api_location())
    token = srv.store.create("alice", "scoped", "--scope", "/api/in")
    plain = srv.store.create("alice", "plain")
    here = f"http://127.0.0.1:{srv.port}"
    outside = (f"{here}/api/out/b", "/api/out/b", "http://elsewhere.example/api/out/b", f"{here}/api/in/../out/b",
               f"{here}/api/in/%2e%2e/out/b", f"{here}/api/in/..;/out/b", f"{here}/api/in/%2F..%2Fout",
               "https://127.0.0.1/api", f"{here}/", f"{here}")
    malformed = ("api/in/b", "../in/b", f"{here}/api/in/%zz", "", "http:/api/in/b", "mailto:a@b")
    for method in ("MOVE", "COPY", "GET"):
        for destination in outside + malformed:
            mark = srv.mark()
            status, body = send(srv, method, "/api/in/a", token, [("Destination", destination)])
            assert status == 403 and b'"headers"' not in body, (method, destination, status, body)
            lines = srv.wait_lines(mark, "CPT0102")
            assert lines and "destination" in lines[0], (destination, lines)
        for destination in (f"{here}/api/in/b", "/api/in/b", "http://elsewhere.example/api/in/x/y?z=1",
                            f"{here}/api/in/b%41#frag", "HTTPS://u@[::1]:8443/api/in"):
            status, body = send(srv, method, "/api/in/a", token, [("Destination", destination)])
            assert status == 200, (method, destination, status, body)
    # Two Destination headers: a backend may read either.
    mark = srv.mark()
    status, _ = send(srv, "MOVE", "/api/in/a", token, [("Destination", "/api/in/b"), ("Destination", "/api/out/b")])
    assert status == 403
    assert srv.wait_lines(mark, "CPT0102")
    # Without scopes, the Destination is the location's business.
    for destination in outside + malformed[:1]:
        status, _ = send(srv, "MOVE", "/api/in/a", plain, [("Destination", destination)])
        assert status == 200, (destination, status)

# SPDX-License-Identifier: Apache-2.0
"""A request admitted in a location that strips the Authorization header
(CPTokenForwardAuthorization Off, the default), then sent internally into a
location that forwards it (a per-directory RewriteRule, an ErrorDocument):
the header put back for the second check must not reach that backend. The
second location forwards it only if the first one did too."""

import subprocess

import pytest

from conftest import CPANEL_AUTH, api_location, basic

MODULES = "LoadModule rewrite_module @MODDIR@/mod_rewrite.so"


FORWARDING_AUTH = CPANEL_AUTH + "\n    CPTokenForwardAuthorization On"


def body(app, forward_first, second_auth=FORWARDING_AUTH):
    return f"""
<Location "/app">
{CPANEL_AUTH}
    CPTokenForwardAuthorization {forward_first}
</Location>
<Directory "{app}">
    RewriteEngine On
    RewriteRule ^tobackend$ /fwd/rewritten [L]
    ErrorDocument 404 /fwd/error-document
</Directory>
""" + api_location("/fwd", auth=second_auth)


def site(srv):
    app = srv.htdocs / "app"
    app.mkdir()
    app.chmod(0o755)
    return app


# (path asked for, path the backend sees). The ErrorDocument's answer takes
# the proxied backend's status (200): only where it went matters here.
ROUTES = [("/app/tobackend", "/fwd/rewritten"), ("/app/missing", "/fwd/error-document")]


@pytest.mark.parametrize("path,backend_path", ROUTES, ids=["rewrite", "errordocument"])
def test_not_forwarded_when_the_first_location_strips_it(srv, path, backend_path):
    token = srv.store.create("alice", "ci")
    srv.start(body(site(srv), "Off"), extra_modules=MODULES)
    for kw in ({"auth": f"cpanel alice:{token}"}, {"user": f"alice:{token}"}):
        r = srv.get(path, **kw)
        assert r.json["path"] == backend_path, f"{path}: {r!r}\n" + "\n".join(srv.lines())
        assert r.backend_headers.get("x-remote-user") == "alice", r.backend_headers
        assert "authorization" not in r.backend_headers, \
            f"{path}: the backend of the forwarding location got the header the first location strips"
        assert token not in r.body.decode()


@pytest.mark.parametrize("path,backend_path", ROUTES, ids=["rewrite", "errordocument"])
def test_forwarded_when_both_locations_forward_it(srv, path, backend_path):
    token = srv.store.create("alice", "ci")
    srv.start(body(site(srv), "On"), extra_modules=MODULES)
    for kw, header in (({"auth": f"cpanel alice:{token}"}, f"cpanel alice:{token}"),
                       ({"user": f"alice:{token}"}, basic("alice", token))):
        r = srv.get(path, **kw)
        assert r.json["path"] == backend_path, f"{path}: {r!r}\n" + "\n".join(srv.lines())
        assert r.backend_headers.get("x-remote-user") == "alice", r.backend_headers
        assert r.backend_headers.get("authorization") == header, r.backend_headers


def test_not_forwarded_when_another_module_admits_it(srv):
    """The second location is mod_authn_file's, whose password for alice
    happens to be her token: it admits the restored header, which must
    still not reach its backend."""
    token = srv.store.create("alice", "ci")
    htpasswd = srv.dir / "htpasswd"
    subprocess.run(["htpasswd", "-b", "-c", "-B", "-C", "4", str(htpasswd), "alice", token], check=True,
                   capture_output=True)
    htpasswd.chmod(0o644)
    file_auth = f"""    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider file
    AuthUserFile "{htpasswd}"
    Require valid-user"""
    srv.start(body(site(srv), "Off", file_auth), extra_modules=MODULES)
    r = srv.get("/app/tobackend", user=f"alice:{token}")
    assert r.json["path"] == "/fwd/rewritten", f"{r!r}\n" + "\n".join(srv.lines())
    assert r.backend_headers.get("x-remote-user") == "alice", r.backend_headers
    assert "authorization" not in r.backend_headers, "a header restored for a re-check reached the backend"
    # Control: straight to that location, the header is that location's to forward.
    r = srv.get("/fwd/direct", user=f"alice:{token}")
    assert r.backend_headers.get("authorization") == basic("alice", token), r.backend_headers

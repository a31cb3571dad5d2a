# SPDX-License-Identifier: Apache-2.0
"""Admitted requests that httpd re-processes internally: DirectoryIndex
subrequests, mod_rewrite per-directory internal redirects, ErrorDocument.
httpd re-runs authentication for them whenever their per-directory
configuration differs from the original request's (for instance a
<FilesMatch> for index files, as Debian's PHP config has), so a token that
was admitted must stay admitted there too."""

import subprocess

import pytest

from conftest import BASIC_PROVIDER_AUTH, CPANEL_AUTH, assert_refused

MODULES = """LoadModule dir_module @MODDIR@/mod_dir.so
LoadModule rewrite_module @MODDIR@/mod_rewrite.so"""


def site(srv):
    app = srv.htdocs / "app"
    app.mkdir()
    app.chmod(0o755)
    (app / "index.html").write_text("index of app\n")
    (app / "other.html").write_text("other page\n")
    (app / "notfound.html").write_text("custom not found\n")
    return app


def body(app, *, files_section, forward="Off", provider=False):
    auth = BASIC_PROVIDER_AUTH if provider else CPANEL_AUTH
    files = """
<FilesMatch "\\.html$">
    Header set X-Html yes
</FilesMatch>""" if files_section else ""
    return f"""
<Location "/app">
{auth}
    CPTokenForwardAuthorization {forward}
</Location>
<Directory "{app}">
    DirectoryIndex index.html
    RewriteEngine On
    RewriteRule ^alias$ other.html [L]
    ErrorDocument 404 /app/notfound.html
</Directory>
{files}
"""


@pytest.mark.parametrize("files_section", [False, True], ids=["plain", "filesmatch"])
@pytest.mark.parametrize("forward", ["Off", "On"])
def test_directory_index(srv, files_section, forward):
    token = srv.store.create("alice", "ci")
    app = site(srv)
    srv.start(body(app, files_section=files_section, forward=forward), extra_modules=MODULES)
    for kw in ({"auth": f"cpanel alice:{token}"}, {"user": f"alice:{token}"}):
        r = srv.get("/app/", **kw)
        assert r.status == 200 and r.body == b"index of app\n", \
            f"GET /app/ (DirectoryIndex) with a valid token: {r!r}\n" + "\n".join(srv.lines())


@pytest.mark.parametrize("files_section", [False, True], ids=["plain", "filesmatch"])
def test_directory_index_basic_provider(srv, files_section):
    srv.allow("AH01614", "AH01617", "AH01618")
    token = srv.store.create("alice", "ci")
    app = site(srv)
    srv.start(body(app, files_section=files_section, provider=True), extra_modules=MODULES)
    for kw in ({"user": f"alice:{token}"},):
        r = srv.get("/app/", **kw)
        assert r.status == 200 and r.body == b"index of app\n", \
            f"GET /app/ (DirectoryIndex) with a valid token: {r!r}\n" + "\n".join(srv.lines())


@pytest.mark.parametrize("files_section", [False, True], ids=["plain", "filesmatch"])
@pytest.mark.parametrize("forward", ["Off", "On"])
def test_rewrite_internal_redirect(srv, files_section, forward):
    token = srv.store.create("alice", "ci")
    app = site(srv)
    srv.start(body(app, files_section=files_section, forward=forward), extra_modules=MODULES)
    r = srv.get("/app/alias", auth=f"cpanel alice:{token}")
    assert r.status == 200 and r.body == b"other page\n", \
        f"GET /app/alias (per-directory RewriteRule) with a valid token: {r!r}\n" + "\n".join(srv.lines())


@pytest.mark.parametrize("files_section", [False, True], ids=["plain", "filesmatch"])
def test_error_document(srv, files_section):
    token = srv.store.create("alice", "ci")
    app = site(srv)
    srv.start(body(app, files_section=files_section), extra_modules=MODULES)
    r = srv.get("/app/missing.html", auth=f"cpanel alice:{token}")
    assert r.status == 404 and r.body == b"custom not found\n", \
        f"GET /app/missing.html with a valid token: {r!r}\n" + "\n".join(srv.lines())
    assert r.challenges == []


def test_refused_request_stays_refused_through_directory_index(srv):
    srv.allow("CPT0100")
    app = site(srv)
    srv.start(body(app, files_section=True), extra_modules=MODULES)
    r = srv.get("/app/")
    assert_refused(r)
    assert b"index of app" not in r.body


@pytest.mark.parametrize("files_section", [False, True], ids=["plain", "filesmatch"])
def test_directory_index_control_with_authn_file(srv, files_section):
    """The same site behind mod_authn_file works: the re-authentication of
    the subrequest is httpd's normal behaviour, not a quirk of this config."""
    ht = srv.dir / "htpasswd"
    subprocess.run(["htpasswd", "-b", "-c", "-B", "-C", "4", str(ht), "carol", "pw"], check=True,
                   capture_output=True)
    ht.chmod(0o644)
    app = site(srv)
    conf = body(app, files_section=files_section, provider=True).replace(
        "AuthBasicProvider cptoken", f'AuthBasicProvider file\n    AuthUserFile "{ht}"')
    srv.start(conf, extra_modules=MODULES)
    r = srv.get("/app/", user="carol:pw")
    assert r.status == 200 and r.body == b"index of app\n", r
    r = srv.get("/app/alias", user="carol:pw")
    assert r.status == 200 and r.body == b"other page\n", r

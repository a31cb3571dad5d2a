# SPDX-License-Identifier: Apache-2.0
"""What reaches the backend: the Authorization header only with
CPTokenForwardAuthorization On; REMOTE_USER, CPTOKEN_NAME and CPTOKEN_EXPIRES
for mod_headers, the access log and CGI."""


from conftest import (CPANEL_AUTH, ISO_RE, api_location, assert_admitted, basic, wait_until)


def test_authorization_not_forwarded_by_default(srv):
    token = srv.store.create("alice", "ci")
    srv.start()
    for kw in ({"auth": f"cpanel alice:{token}"}, {"user": f"alice:{token}"}):
        r = srv.get(**kw)
        assert_admitted(r, "alice")
        assert "authorization" not in r.backend_headers, r.backend_headers
        assert token not in r.body.decode()


def test_authorization_not_forwarded_with_off(srv):
    token = srv.store.create("alice", "ci")
    srv.start(api_location(auth=CPANEL_AUTH + "\n    CPTokenForwardAuthorization Off"))
    r = srv.get(auth=f"cpanel alice:{token}")
    assert_admitted(r, "alice")
    assert "authorization" not in r.backend_headers, r.backend_headers


def test_authorization_forwarded_with_on(srv):
    token = srv.store.create("alice", "ci")
    srv.start(api_location(auth=CPANEL_AUTH + "\n    CPTokenForwardAuthorization On"))
    r = srv.get(auth=f"cpanel alice:{token}")
    assert_admitted(r, "alice")
    assert r.backend_headers.get("authorization") == f"cpanel alice:{token}"
    r = srv.get(user=f"alice:{token}")
    assert_admitted(r, "alice")
    assert r.backend_headers.get("authorization") == basic("alice", token)


def test_env_at_the_backend(srv):
    never = srv.store.create("alice", "forever")
    dated = srv.store.create("alice", "dated", "--expires", "2099-01-02")
    srv.start()
    r = srv.get(auth=f"cpanel alice:{never}")
    assert_admitted(r, "alice")
    h = r.backend_headers
    assert h["x-cptoken-name"] == "forever"
    assert h.get("x-cptoken-expires", "") == "", h
    r = srv.get(auth=f"cpanel alice:{dated}")
    assert_admitted(r, "alice")
    h = r.backend_headers
    assert h["x-cptoken-name"] == "dated"
    assert h["x-cptoken-expires"] == "2099-01-02T00:00:00Z", h
    assert ISO_RE.match(h["x-cptoken-expires"])


def test_env_in_the_access_log(srv):
    srv.allow("CPT0100")
    never = srv.store.create("alice", "forever")
    dated = srv.store.create("bob", "dated", "--expires", "2099-01-02")
    srv.start()
    assert_admitted(srv.get("/api/one", auth=f"cpanel alice:{never}"), "alice")
    assert_admitted(srv.get("/api/two", user=f"bob:{dated}"), "bob")
    assert srv.get("/api/three").status == 401

    def three():
        lines = srv.access_lines()
        return lines if len(lines) >= 3 else None
    lines = wait_until(three)
    assert lines, srv.access_lines()
    by_path = {l.split('"')[1].split()[1]: l for l in lines}
    one, two, refused = by_path["/api/one"], by_path["/api/two"], by_path["/api/three"]
    assert ' alice "GET' in one and 'name="forever"' in one and 'expires=""' in one, one
    assert ' bob "GET' in two and 'name="dated"' in two and 'expires="2099-01-02T00:00:00Z"' in two, two
    assert " 401 " in refused and 'name="-"' in refused, refused
    text = "\n".join(lines)
    assert never not in text and dated not in text


CGI_SCRIPT = """#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "REMOTE_USER=$REMOTE_USER"
echo "AUTH_TYPE=$AUTH_TYPE"
echo "CPTOKEN_NAME=$CPTOKEN_NAME"
echo "CPTOKEN_EXPIRES=$CPTOKEN_EXPIRES"
echo "HTTP_AUTHORIZATION=${HTTP_AUTHORIZATION-unset}"
"""


def test_env_in_cgi(srv):
    token = srv.store.create("alice", "cgi", "--expires", "2099-01-02T03:04:05Z")
    never = srv.store.create("alice", "cgi-never")
    cgi = srv.htdocs / "cgi"
    cgi.mkdir()
    cgi.chmod(0o755)
    script = cgi / "env.sh"
    script.write_text(CGI_SCRIPT)
    script.chmod(0o755)
    body = f"""
<Directory "{cgi}">
    Options +ExecCGI
    SetHandler cgi-script
    AuthType cpanel
    AuthName "@REALM@"
    Require valid-user
</Directory>
"""
    srv.start(body, extra_modules="LoadModule cgid_module @MODDIR@/mod_cgid.so\nScriptSock \"@DIR@/run/cgisock\"")
    r = srv.get("/cgi/env.sh", auth=f"cpanel alice:{token}")
    assert r.status == 200, r
    env = dict(l.split("=", 1) for l in r.body.decode().splitlines() if "=" in l)
    assert env["REMOTE_USER"] == "alice", env
    assert env["AUTH_TYPE"].lower() == "cpanel", env
    assert env["CPTOKEN_NAME"] == "cgi", env
    assert env["CPTOKEN_EXPIRES"] == "2099-01-02T03:04:05Z", env
    assert env["HTTP_AUTHORIZATION"] == "unset", env
    r = srv.get("/cgi/env.sh", user=f"alice:{never}")
    assert r.status == 200, r
    env = dict(l.split("=", 1) for l in r.body.decode().splitlines() if "=" in l)
    assert env["CPTOKEN_NAME"] == "cgi-never" and env["CPTOKEN_EXPIRES"] == "", env

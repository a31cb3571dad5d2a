# SPDX-License-Identifier: Apache-2.0
"""WWW-Authenticate: one challenge per accepted scheme on a 401, none on
200, 403 or 404; CPTokenSchemes chooses the schemes."""

from conftest import (CPANEL_AUTH, REALM, api_location, assert_admitted, assert_refused, basic)


def schemes_body(schemes):
    return api_location(auth=CPANEL_AUTH + f"\n    CPTokenSchemes {schemes}")


def test_default_schemes_challenge_cpanel_and_basic(srv):
    srv.allow("CPT0100")
    srv.start()
    r = srv.get()
    assert r.status == 401
    assert sorted(r.challenges) == sorted([f'cpanel realm="{REALM}"', f'Basic realm="{REALM}"']), r.challenges


def test_realm_comes_from_authname(srv):
    srv.allow("CPT0100")
    srv.start(api_location(auth=CPANEL_AUTH.replace('"@REALM@"', '"Hosting API"')))
    r = srv.get()
    assert_refused(r, realm="Hosting API")


def test_whm_only(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci", "--service", "whm")
    srv.start(schemes_body("whm"))
    assert_refused(srv.get(), ("whm",))
    assert_admitted(srv.get(auth=f"whm alice:{token}"), "alice")
    assert_admitted(srv.get(auth=f"WHM alice:{token}"), "alice")
    assert_refused(srv.get(auth=f"cpanel alice:{token}"), ("whm",))
    assert_refused(srv.get(user=f"alice:{token}"), ("whm",))


def test_cpanel_only_refuses_basic(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start(schemes_body("cpanel"))
    assert_refused(srv.get(), ("cpanel",))
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")
    assert_refused(srv.get(user=f"alice:{token}"), ("cpanel",))
    assert_refused(srv.get(auth=f"whm alice:{token}"), ("cpanel",))


def test_basic_only(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start(schemes_body("basic"))
    assert_refused(srv.get(), ("basic",))
    assert_admitted(srv.get(user=f"alice:{token}"), "alice")
    assert_refused(srv.get(auth=f"cpanel alice:{token}"), ("basic",))


def test_all_three_schemes(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    whm = srv.store.create("alice", "whm", "--service", "whm")  # the whm scheme admits whm tokens only
    srv.start(schemes_body("cpanel whm basic"))
    assert_refused(srv.get(), ("cpanel", "whm", "basic"))
    for auth in (f"cpanel alice:{token}", f"whm alice:{whm}", basic("alice", token), basic("alice", whm)):
        assert_admitted(srv.get(auth=auth), "alice")


def test_no_challenge_on_200_404_403(srv):
    srv.allow("AH01631")  # mod_authz_core: "user alice: authorization failure"
    token = srv.store.create("alice", "ci")
    (srv.htdocs / "files").mkdir()
    (srv.htdocs / "files" / "hello.txt").write_text("hello\n")
    (srv.htdocs / "forbidden").mkdir()
    (srv.htdocs / "forbidden" / "hello.txt").write_text("hello\n")
    for p in (srv.htdocs / "files", srv.htdocs / "forbidden"):
        p.chmod(0o755)
    body = api_location() + """
<Location "/files">
    AuthType cpanel
    AuthName "@REALM@"
    Require valid-user
</Location>
<Location "/forbidden">
    AuthType cpanel
    AuthName "@REALM@"
    Require user nobody
    AuthzSendForbiddenOnFailure On
</Location>
"""
    srv.start(body)
    auth = f"cpanel alice:{token}"

    r = srv.get("/api/x", auth=auth)
    assert r.status == 200 and r.challenges == [], r

    r = srv.get("/files/hello.txt", auth=auth)
    assert r.status == 200 and r.body == b"hello\n" and r.challenges == [], r

    r = srv.get("/files/missing.txt", auth=auth)
    assert r.status == 404, r
    assert r.challenges == [], f"a 404 must carry no WWW-Authenticate: {r.challenges}"

    r = srv.get("/forbidden/hello.txt", auth=auth)
    assert r.status == 403, r
    assert r.challenges == [], f"a 403 must carry no WWW-Authenticate: {r.challenges}"

    r = srv.get("/forbidden/hello.txt", user=f"alice:{token}")
    assert r.status == 403 and r.challenges == [], r

# SPDX-License-Identifier: Apache-2.0
"""The manager's API against real httpd instances (docs/manager.md).

Each test gets a manager instance (its own httpd, children running as the
store's owner, user `cptoken`, with `SetHandler cptoken-manager` and
`CPTokenTrustOwnStore On`) and, where a test needs it, a main instance
(children www-data, as always) protecting /api with the same store, as the
shipped setup has them. The manager's locations, as the contract puts them:
  /execute/Tokens/..., /execute/CPTokens/...   AuthType cpanel, cPanel tokens
  /json-api/api_token_...                      AuthType cpanel, WHM tokens
  /cptoken/execute/...                         the page's calls: Basic (htpasswd)
Every function, its error paths and the envelopes are checked, and the
security points: writes only by full-access tokens (header calls) or with
POST + same origin + the page token (Basic), one user's tokens only, no
CORS, no-store, no secret in any log, a token made here admitted by the
main instance on the next request and refused right after it is revoked.
"""

import grp
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ALL_MPMS, MOD_MANAGER, Httpd, TOKEN_RE, assert_admitted, assert_refused

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from system_user import system_user  # noqa: E402  (t/system_user.py, shared with t/cluster)

MANAGER_USER = "cptoken"
PAGE_USER, PAGE_PASSWORD = "alice", "correct horse battery"
CURLY_OPEN, CURLY_CLOSE = "\u201c", "\u201d"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def curly(text):
    return f"{CURLY_OPEN}{text}{CURLY_CLOSE}"


def manager_user():
    """The store owner the manager's children run as (made if missing, as `cptoken init --owner` will)."""
    return system_user(MANAGER_USER)


def give_store_to(path, owner):
    """The store to `owner`, as `cptoken init --owner` will make it: every file the owner's, the group
    (www-data, httpd's readers) and the modes init set kept: the directory 02750, tokens.mdb and its commit
    record 0640, the token store's lock file 0600 (its writer's alone), the usage files 0660."""
    for p in [path, *path.iterdir()]:
        os.lchown(p, owner.pw_uid, -1)
    modes = {path: 0o2750, path / "tokens.mdb": 0o640, path / "tokens.mdb-committed": 0o640,
             path / "tokens.mdb-lock": 0o600, path / "usage.slots": 0o660}
    for p, mode in modes.items():
        if p.exists():
            assert os.lstat(p).st_mode & 0o7777 == mode, f"{p}: mode {oct(os.lstat(p).st_mode & 0o7777)}"
    assert grp.getgrgid(os.lstat(path).st_gid).gr_name == "www-data"


MANAGER_BODY = r"""
CPTokenTrustOwnStore On
# The manager's children own the store and never open usage.slots (www-data writes it).
CPTokenLastUsed Off
<Location "/execute/">
    SetHandler cptoken-manager
    AuthType cpanel
    AuthName "@REALM@"
    CPTokenSchemes cpanel
    Require valid-user
</Location>
<Location "/json-api/">
    SetHandler cptoken-manager
    AuthType cpanel
    AuthName "@REALM@"
    CPTokenSchemes whm
    Require valid-user
</Location>
<Location "/cptoken/">
    AuthType Basic
    AuthName "cptoken page"
    AuthBasicProvider file
    AuthUserFile "@DIR@/htpasswd"
    Require valid-user
</Location>
<Location "/cptoken/execute/">
    SetHandler cptoken-manager
</Location>
# A manager location the admin forgot to protect: the handler acts for nobody.
<Location "/open/execute/">
    SetHandler cptoken-manager
</Location>
# Our tokens as Basic passwords: browsers replay those like any Basic credentials.
<Location "/basic/execute/">
    SetHandler cptoken-manager
    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider cptoken
    Require valid-user
</Location>
"""


class Manager:
    """A manager instance and, on demand, the main instance in front of the same store."""

    def __init__(self, mgr, main):
        self.mgr = mgr
        self.main = main
        self.store = mgr.store
        self.main_started = False

    # -- calls with a token (Authorization: cpanel|whm USER:TOKEN)

    def uapi(self, module, function, token, user="alice", query="", **kw):
        path = f"/execute/{module}/{function}" + (f"?{query}" if query else "")
        return self.mgr.get(path, auth=f"cpanel {user}:{token}", **kw)

    def whm(self, function, token, user="alice", query="", **kw):
        q = "api.version=1" + (f"&{query}" if query else "")
        return self.mgr.get(f"/json-api/{function}?{q}", auth=f"whm {user}:{token}", **kw)

    # -- the page's calls (Basic, which browsers replay)

    def page(self, module, function, query="", user=f"{PAGE_USER}:{PAGE_PASSWORD}", **kw):
        path = f"/cptoken/execute/{module}/{function}" + (f"?{query}" if query else "")
        return self.mgr.get(path, user=user, **kw)

    def origin(self):
        return f"http://127.0.0.1:{self.mgr.port}"

    def csrf(self, user=f"{PAGE_USER}:{PAGE_PASSWORD}"):
        r = self.page("CPTokens", "session", user=user)
        assert r.status == 200, r
        return r.json["data"]["csrf_token"]

    def page_write(self, module, function, data, csrf=None, headers=(), **kw):
        """A write as the page makes it: POST, same origin, the page token."""
        h = [f"Origin: {self.origin()}", "Sec-Fetch-Site: same-origin",
             "Content-Type: application/x-www-form-urlencoded", *headers]
        if csrf is not False:
            h.append(f"X-CPToken-CSRF: {csrf or self.csrf()}")
        return self.page(module, function, method="POST", data=data, headers=h, **kw)

    # -- the main instance

    def protected(self, user, token):
        if not self.main_started:
            self.main.start(db=str(self.store.path))
            self.main_started = True
        return self.main.get("/api/x", auth=f"cpanel {user}:{token}")

    def tokens(self):
        """Every token in the store, as root's `cptoken list --json` sees it."""
        return json.loads(self.store.run("list", "--json").stdout)


@pytest.fixture
def manager(basedir, backend, mpm):
    owner = manager_user()
    mgr = Httpd(basedir, backend, mpm)
    main = Httpd(basedir, backend, mpm)
    try:
        give_store_to(mgr.store.path, owner)
        mgr.run_as = (MANAGER_USER, grp.getgrgid(owner.pw_gid).gr_name)
        mgr.module = MOD_MANAGER  # as the shipped manager.conf loads it
        htpasswd = mgr.dir / "htpasswd"
        subprocess.run(["htpasswd", "-cbB", str(htpasswd), PAGE_USER, PAGE_PASSWORD], check=True, capture_output=True)
        subprocess.run(["htpasswd", "-bB", str(htpasswd), "bob", "bobs password"], check=True, capture_output=True)
        os.chmod(htpasswd, 0o644)
        mgr.start(MANAGER_BODY, loglevel="warn cptoken:info")
        yield Manager(mgr, main)
    finally:
        main.stop()
        mgr.stop()
    for s in (mgr, main):
        bad = s.unexpected_lines()
        assert not bad, "unexpected error-log lines (allowed tags: %s):\n%s" % (sorted(s.allowed), "\n".join(bad))


# ---------------------------------------------------------------- helpers

def uapi_ok(r):
    """HTTP 200, status 1, cPanel's flat envelope; returns data."""
    assert r.status == 200, r
    body = r.json
    assert sorted(body) == ["data", "errors", "messages", "metadata", "status", "warnings"], body
    assert body["status"] == 1 and body["errors"] is None and body["messages"] is None and body["warnings"] is None, body
    return body["data"]


def uapi_error(r, text):
    """HTTP 200 with status 0: a function's failure, in the envelope."""
    assert r.status == 200, r
    body = r.json
    assert sorted(body) == ["data", "errors", "messages", "metadata", "status", "warnings"], body
    assert body["status"] == 0 and body["data"] is None and body["metadata"] == {}, body
    assert len(body["errors"]) == 1 and text in body["errors"][0], body
    return body["errors"][0]


def whm_result(r, command, result=1, reason="OK"):
    assert r.status == 200, r
    body = r.json
    meta = body["metadata"]
    assert meta["command"] == command and meta["result"] == result and meta["version"] == 1, body
    assert reason in meta["reason"], body
    return body.get("data")


def assert_manager_headers(r):
    assert r.header("Cache-Control") == ["no-store"], r.headers
    assert r.header("Pragma") == ["no-cache"], r.headers
    assert r.header("Referrer-Policy") == ["no-referrer"], r.headers
    assert r.header("X-Content-Type-Options") == ["nosniff"], r.headers
    assert r.header("Content-Security-Policy") == [CSP], r.headers
    assert_no_cors(r)


def assert_no_cors(r):
    cors = [n for n, _ in r.headers if n.lower().startswith("access-control-")]
    assert not cors, r.headers


def first_token(m, user="alice", name="ci", *extra):
    """A full-access cPanel token made by root's cptoken, for the calls."""
    return m.store.create(user, name, *extra)


# ---------------------------------------------------------------- UAPI Tokens

def test_create_list_rename_revoke_with_a_token(manager):
    m = manager
    ci = first_token(m)
    r = m.uapi("Tokens", "create_full_access", ci, query="name=deploy")
    data = uapi_ok(r)
    assert sorted(data) == ["create_time", "token"] and TOKEN_RE.match(data["token"])
    assert abs(data["create_time"] - time.time()) < 60
    assert r.json["metadata"] == {}
    assert r.header("Content-Type") == ["application/json"]
    assert_manager_headers(r)
    # The exact envelope, keys in cPanel's order.
    assert r.body.decode() == ('{"data":{"create_time":%d,"token":"%s"},"errors":null,"messages":null,'
                               '"metadata":{},"status":1,"warnings":null}' % (data["create_time"], data["token"]))

    r = m.uapi("Tokens", "list", ci)
    listed = uapi_ok(r)
    assert r.json["metadata"] == {"transformed": 1, "cptoken_usage": "unavailable"}
    assert [t["name"] for t in listed] == ["ci", "deploy"]
    deploy = listed[1]
    assert deploy == {"name": "deploy", "create_time": data["create_time"], "expires_at": None,
                      "has_full_access": 1, "features": [], "readonly": 0, "last_used": None,
                      "last_used_ip": None, "uses": None, "allowed_ips": [], "scopes": [], "expired": 0,
                      "rotated": 0, "grace_ends": None}

    assert uapi_ok(m.uapi("Tokens", "rename", ci, query="name=deploy&new_name=deploy-2")) is None
    assert [t["name"] for t in m.tokens()] == ["ci", "deploy-2"]
    assert uapi_ok(m.uapi("Tokens", "revoke", ci, query="name=deploy-2")) == 1
    assert uapi_ok(m.uapi("Tokens", "revoke", ci, query="name=deploy-2")) == 0
    assert [t["name"] for t in m.tokens()] == ["ci"]


def test_post_form_and_post_json_work_like_get(manager):
    m = manager
    ci = first_token(m)
    form = m.uapi("Tokens", "create_full_access", ci, method="POST", data="name=by_form&readonly=1")
    assert TOKEN_RE.match(uapi_ok(form)["token"])
    body = json.dumps({"name": "by_json", "expires_at": int(time.time()) + 3600, "readonly": False})
    js = m.uapi("Tokens", "create_full_access", ci, method="POST", data=body,
                headers=["Content-Type: application/json; charset=utf-8"])
    assert TOKEN_RE.match(uapi_ok(js)["token"])
    tokens = {t["name"]: t for t in m.tokens()}
    assert tokens["by_form"]["read_only"] is True and tokens["by_form"]["expires"] is None
    assert tokens["by_json"]["read_only"] is False and tokens["by_json"]["expires"] is not None
    # Query and body together; a JSON array repeats a parameter.
    r = m.uapi("CPTokens", "revoke", ci, query="name=by_form", method="POST",
               data=json.dumps({"name": ["by_json", "nope"]}), headers=["Content-Type: application/json"])
    assert uapi_ok(r) == {"revoked": ["by_form", "by_json"], "not_found": ["nope"]}


@ALL_MPMS
def test_create_full_access_is_admitted_next_and_refused_after_revoke(manager):
    """The point of it all: a token made through the API works on the main instance on the very next
    request, and is refused right after it is revoked there."""
    m = manager
    m.main.allow("CPT0100")
    ci = first_token(m)
    made = uapi_ok(m.uapi("Tokens", "create_full_access", ci, query="name=deploy"))["token"]
    assert_admitted(m.protected("alice", made))
    assert uapi_ok(m.uapi("Tokens", "revoke", ci, query="name=deploy")) == 1
    assert_refused(m.protected("alice", made))
    # Rotation through the API: the new value works at once, the old one after its grace only.
    r = uapi_ok(m.uapi("Tokens", "create_full_access", ci, query="name=rotating"))
    old = r["token"]
    fresh = uapi_ok(m.uapi("CPTokens", "rotate", ci, query="name=rotating"))["token"]
    assert_admitted(m.protected("alice", fresh))
    assert_refused(m.protected("alice", old))


CREATE_ERRORS = [
    ("", "Provide the " + curly("name") + " parameter."),
    ("name=a+b", curly("a b") + " is not a valid API token name. An API token name must not be longer than 50 "
                                "characters and may only contain the following 64 characters: a-z A-Z 0-9 _ -"),
    ("name=" + "x" * 51, "is not a valid API token name"),
    ("name=ci", "A conflicting API token with the name " + curly("ci") + " already exists."),
    ("name=new&expires_at=1000", "The " + curly("1000") + " value must be a future date."),
    ("name=new&expires_at=soon", "parameter must be a unix time"),
    ("name=new&readonly=2", "The " + curly("readonly") + " parameter must be 0 or 1."),
    ("name=a&name=b", "Provide the " + curly("name") + " parameter only once."),
    ("name=new&user=bob", "This API acts for the authenticated user only"),
    ("name=%zz", "The query string is not valid URL encoding."),
]


@pytest.mark.parametrize("query, error", CREATE_ERRORS)
def test_create_full_access_errors_write_nothing(manager, query, error):
    m = manager
    ci = first_token(m)
    before = m.tokens()
    uapi_error(m.uapi("Tokens", "create_full_access", ci, query=query), error)
    assert m.tokens() == before


RENAME_ERRORS = [
    ("new_name=x", "Provide the " + curly("name") + " parameter."),
    ("name=deploy", "Provide the " + curly("new_name") + " parameter."),
    ("name=deploy&new_name=deploy", curly("new_name") + " must be a different value from " + curly("name") + "."),
    ("name=deploy&new_name=no%20good", curly("no good") + " is not a valid API token name."),
    ("name=nope&new_name=x", "The API token " + curly("nope") + " does not exist."),
    ("name=deploy&new_name=ci", "An API token with the name " + curly("ci") + " already exists."),
    ("name=bobs&new_name=mine", "The API token " + curly("bobs") + " does not exist."),
]


@pytest.mark.parametrize("query, error", RENAME_ERRORS)
def test_rename_errors_write_nothing(manager, query, error):
    m = manager
    ci = first_token(m)
    m.store.create("alice", "deploy")
    m.store.create("bob", "bobs")
    before = m.tokens()
    uapi_error(m.uapi("Tokens", "rename", ci, query=query), error)
    assert m.tokens() == before


# ---------------------------------------------------------------- CPTokens

def test_cptokens_functions(manager):
    m = manager
    ci = first_token(m)
    m.store.create("alice", "deploy")
    soon = int(time.time()) + 86400
    got = uapi_ok(m.uapi("CPTokens", "get", ci, query="name=deploy"))
    assert got["name"] == "deploy" and got["expires_at"] is None and got["uses"] is None

    r = m.uapi("CPTokens", "set_expiration", ci, query=f"name=deploy&expires_at={soon}")
    assert uapi_ok(r)["expires_at"] == soon
    assert uapi_ok(m.uapi("CPTokens", "set_expiration", ci, query="name=deploy&expires_at=0"))["expires_at"] is None

    r = m.uapi("CPTokens", "set_allowed_ips", ci, query="name=deploy&allowed_ip=192.0.2.0/24&allowed_ip-1=2001:db8::1")
    assert uapi_ok(r)["allowed_ips"] == ["192.0.2.0/24", "2001:db8::1"]
    assert {t["name"]: t for t in m.tokens()}["deploy"]["allowed_ips"] == ["192.0.2.0/24", "2001:db8::1"]
    assert uapi_ok(m.uapi("CPTokens", "set_allowed_ips", ci, query="name=deploy&any=1"))["allowed_ips"] == []

    rotated = uapi_ok(m.uapi("CPTokens", "rotate", ci, query="name=deploy&grace=600"))
    assert sorted(rotated) == ["create_time", "grace_ends", "token"]
    assert TOKEN_RE.match(rotated["token"]) and rotated["grace_ends"] - rotated["create_time"] == 600
    listed = uapi_ok(m.uapi("Tokens", "list", ci))
    assert [(t["name"], t["rotated"]) for t in listed] == [("ci", 0), ("deploy", 0), ("deploy", 1)]

    session = uapi_ok(m.uapi("CPTokens", "session", ci))
    assert session["user"] == "alice" and session["service"] == "cpanel" and re.match(r"^[0-9a-f]{64}$",
                                                                                      session["csrf_token"])

    # Last used is not available without the usage reader: revoke_unused refuses rather than guess.
    uapi_error(m.uapi("CPTokens", "revoke_unused", ci, query="days=30"), "Last used is unavailable here")
    assert len(m.tokens()) == 3

    m.store.create("alice", "other")
    r = m.uapi("CPTokens", "revoke", ci, query="name=deploy&name-0=nope&name-1=other")
    assert uapi_ok(r) == {"revoked": ["deploy", "other"], "not_found": ["nope"]}
    m.store.create("alice", "x1")
    m.store.create("bob", "b1")
    assert uapi_ok(m.uapi("CPTokens", "revoke_all", ci)) == {"revoked": 2}  # x1 and ci itself
    assert [(t["user"], t["name"]) for t in m.tokens()] == [("bob", "b1")]


CPTOKENS_ERRORS = [
    ("get", "", "Provide the " + curly("name") + " parameter."),
    ("get", "name=bobs", "The API token " + curly("bobs") + " does not exist."),
    ("set_expiration", "name=deploy", "Provide the " + curly("expires_at") + " parameter."),
    ("set_expiration", "name=deploy&expires_at=5", "must be a future date"),
    ("set_expiration", "name=nope&expires_at=0", "does not exist."),
    ("set_allowed_ips", "name=deploy", "Provide the " + curly("allowed_ip") + " parameter"),
    ("set_allowed_ips", "name=deploy&allowed_ip=10.0.0.300", "Invalid IP address or CIDR range specified: 10.0.0.300"),
    ("set_allowed_ips", "name=deploy&allowed_ip=10.0.0.5/24", "did you mean 10.0.0.0/24?"),
    ("set_allowed_ips", "name=deploy&any=1&allowed_ip=10.0.0.1", "not both"),
    ("rotate", "name=nope", "does not exist."),
    ("rotate", "name=deploy&grace=-1", "The " + curly("grace") + " parameter must be a number of seconds"),
    ("revoke", "", "Provide the " + curly("name") + " parameter."),
    ("revoke_unused", "", "Provide the " + curly("days") + " parameter."),
    ("revoke_unused", "days=0", "must be a whole number of days from 1"),
    ("revoke_all", "user=bob", "This API acts for the authenticated user only"),
    ("nothing", "", "Could not find function " + curly("nothing") + " in module " + curly("CPTokens") + "."),
]


@pytest.mark.parametrize("function, query, error", CPTOKENS_ERRORS)
def test_cptokens_errors_write_nothing(manager, function, query, error):
    m = manager
    ci = first_token(m)
    m.store.create("alice", "deploy")
    m.store.create("bob", "bobs")
    before = m.tokens()
    uapi_error(m.uapi("CPTokens", function, ci, query=query), error)
    assert m.tokens() == before


def test_unknown_module_and_paths(manager):
    m = manager
    m.mgr.allow("CPT0100")
    ci = first_token(m)
    uapi_error(m.uapi("Email", "list_pops", ci), "Failed to load module " + curly("Email") + ".")
    uapi_error(m.uapi("Tokens", "get", ci), "Could not find function " + curly("get") + " in module " +
               curly("Tokens") + ".")
    # A path that names no function: 404, in the envelope, nothing done.
    r = m.mgr.get("/execute/Tokens/", auth=f"cpanel alice:{ci}")
    assert r.status == 404 and r.json["status"] == 0, r
    assert_manager_headers(r)
    # No credentials: 401 from the module, as every protected location.
    assert_refused(m.mgr.get("/execute/Tokens/list"), schemes=("cpanel",))


def test_methods(manager):
    m = manager
    ci = first_token(m)
    for method in ("PUT", "DELETE", "PATCH"):
        r = m.uapi("Tokens", "list", ci, method=method)
        assert r.status == 405, r
        assert_manager_headers(r)
    # HEAD is GET without the body (curl -I prints the headers where the body would be).
    r = m.uapi("Tokens", "list", ci, method="HEAD", args=["-I"])
    assert r.status == 200 and b'"status"' not in r.body, r
    assert_manager_headers(r)


# ---------------------------------------------------------------- bodies

def test_body_over_64_kib_is_413_and_writes_nothing(manager):
    m = manager
    ci = first_token(m)
    before = m.tokens()
    big = "name=big&pad=" + "x" * (64 * 1024)
    r = m.uapi("Tokens", "create_full_access", ci, method="POST", data=big)
    assert r.status == 413, r
    assert r.json["status"] == 0 and "larger than 64 KiB" in r.json["errors"][0]
    assert_manager_headers(r)
    # Chunked, without a length: refused once it passes the limit.
    r = m.uapi("Tokens", "create_full_access", ci, method="POST", data=big, headers=["Transfer-Encoding: chunked"])
    assert r.status == 413, r
    assert m.tokens() == before
    # Just under the limit is read.
    fits = "name=fits&pad=" + "x" * (64 * 1024 - len("name=fits&pad="))
    assert TOKEN_RE.match(uapi_ok(m.uapi("Tokens", "create_full_access", ci, method="POST", data=fits))["token"])


@pytest.mark.parametrize("content_type, body, status, error", [
    ("text/plain", "name=x", 415, "Send parameters as application/x-www-form-urlencoded or application/json."),
    ("application/json", "{not json", 200, "The request body is not a JSON object"),
    ("application/json", '["name", "x"]', 200, "The request body is not a JSON object"),
    ("application/json", '{"name": {"nested": 1}}', 200, "The request body is not a JSON object"),
    ("application/json", "[" * 5000, 200, "The request body is not a JSON object"),
    ("application/x-www-form-urlencoded", "name=%4", 200, "The request body is not valid URL encoding."),
])
def test_bad_bodies_get_the_envelope_and_write_nothing(manager, content_type, body, status, error):
    m = manager
    ci = first_token(m)
    before = m.tokens()
    r = m.uapi("Tokens", "create_full_access", ci, method="POST", data=body, headers=[f"Content-Type: {content_type}"])
    assert r.status == status, r
    assert r.json["status"] == 0 and error in r.json["errors"][0], r
    assert m.tokens() == before


# ---------------------------------------------------------------- who may write

@pytest.mark.parametrize("option, why", [
    (("--safe-methods",), "safe methods only"),
    (("--scope", "/execute/"), "scopes"),
])
def test_limited_tokens_can_read_but_not_write(manager, option, why):
    m = manager
    limited = m.store.create("alice", "limited", *option)
    m.store.create("alice", "deploy")
    before = m.tokens()
    for module, function, query in [("Tokens", "create_full_access", "name=x"), ("Tokens", "rename",
                                     "name=deploy&new_name=y"), ("Tokens", "revoke", "name=deploy"),
                                    ("CPTokens", "rotate", "name=deploy"), ("CPTokens", "revoke_all", ""),
                                    ("CPTokens", "set_expiration", "name=deploy&expires_at=0")]:
        uapi_error(m.uapi(module, function, limited, query=query),
                   f"This API token cannot manage tokens: it is limited ({why}).")
    assert m.tokens() == before
    assert [t["name"] for t in uapi_ok(m.uapi("Tokens", "list", limited))] == ["deploy", "limited"]


def test_safe_methods_token_cannot_post(manager):
    m = manager
    m.mgr.allow("CPT0102")
    limited = m.store.create("alice", "limited", "--safe-methods")
    r = m.uapi("Tokens", "create_full_access", limited, method="POST", data="name=x")
    assert r.status == 403, r
    assert [t["name"] for t in m.tokens()] == ["limited"]


def test_a_whm_token_cannot_reach_the_cpanel_api(manager):
    m = manager
    m.mgr.allow("CPT0100")
    w = m.store.create("alice", "w", "--service", "whm")
    assert_refused(m.uapi("Tokens", "list", w), schemes=("cpanel",))  # the location takes cPanel tokens only
    cp = first_token(m)
    assert_refused(m.whm("api_token_list", cp), schemes=("whm",))


def test_user_a_cannot_touch_b(manager):
    m = manager
    m.mgr.allow("CPT0100")
    ci = first_token(m)
    m.store.create("bob", "deploy")
    bob_token = m.store.create("bob", "bobs")
    before = m.tokens()
    assert [t["name"] for t in uapi_ok(m.uapi("Tokens", "list", ci))] == ["ci"]
    uapi_error(m.uapi("Tokens", "rename", ci, query="name=deploy&new_name=x"), "does not exist.")
    assert uapi_ok(m.uapi("Tokens", "revoke", ci, query="name=deploy")) == 0
    assert uapi_ok(m.uapi("CPTokens", "revoke", ci, query="name=bobs")) == {"revoked": [], "not_found": ["bobs"]}
    uapi_error(m.uapi("CPTokens", "get", ci, query="name=bobs"), "does not exist.")
    uapi_error(m.uapi("CPTokens", "revoke_all", ci, query="user=bob"), "acts for the authenticated user only")
    assert m.tokens() == before
    # alice's token for bob's name is refused at the door.
    assert_refused(m.uapi("Tokens", "list", ci, user="bob"), schemes=("cpanel",))
    assert [t["name"] for t in uapi_ok(m.uapi("Tokens", "list", bob_token, user="bob"))] == ["bobs", "deploy"]


# ---------------------------------------------------------------- WHM API 1

def test_whm_functions(manager):
    m = manager
    root = m.store.create("alice", "root_ci", "--service", "whm")
    m.store.create("alice", "cpanel_one")
    soon = int(time.time()) + 3600
    r = m.whm("api_token_create", root,
              query=f"token_name=ci&expires_at={soon}&whitelist_ip=192.0.2.5&whitelist_ip-1=198.51.100.0/24"
                    f"&acl-0=list-accts&acl-1=create-acct")
    data = whm_result(r, "api_token_create")
    assert sorted(r.json) == ["data", "metadata"] and sorted(r.json["metadata"]) == ["command", "reason", "result",
                                                                                      "version"]
    assert data["acls"] == ["list-accts", "create-acct"] and data["expires_at"] == soon and data["name"] == "ci"
    assert data["whitelist_ips"] == ["192.0.2.5", "198.51.100.0/24"] and TOKEN_RE.match(data["token"])
    assert_manager_headers(r)
    made = {t["name"]: t for t in m.tokens()}["ci"]
    assert made["service"] == "whm" and made["limits"] == ["list-accts", "create-acct"]

    listed = whm_result(m.whm("api_token_list", root), "api_token_list")
    assert sorted(listed["tokens"]) == ["ci", "root_ci"]
    assert listed["tokens"]["ci"]["acls"] == {"list-accts": 1, "create-acct": 1}
    assert listed["tokens"]["root_ci"]["acls"] == {"all": 1}
    assert listed["tokens"]["root_ci"]["whitelist_ips"] is None

    r = m.whm("api_token_update", root, query="token_name=ci&new_name=ci2&expires_at=0&whitelist_ip=any")
    updated = whm_result(r, "api_token_update")
    assert updated["name"] == "ci2" and updated["expires_at"] is None and updated["whitelist_ips"] is None
    assert "token" not in updated

    r = m.whm("api_token_revoke", root, query="token_name=ci2&token_name-1=cpanel_one")
    assert whm_result(r, "api_token_revoke") is None and "data" not in r.json
    assert sorted(t["name"] for t in m.tokens()) == ["cpanel_one", "root_ci"]


@pytest.mark.parametrize("function, query, reason", [
    ("api_token_create", "", "Provide the " + curly("token_name") + " parameter."),
    ("api_token_create", "token_name=root_ci", "A conflicting API token with the name " + curly("root_ci")),
    ("api_token_create", "token_name=x&whitelist_ip=nope", "Invalid IP address or CIDR range specified: nope"),
    ("api_token_create", "token_name=x&expires_at=1", "must be a future date"),
    ("api_token_update", "token_name=root_ci", "Specify a new name, updated ACLs, or IPs."),
    ("api_token_update", "token_name=nope&new_name=x", "The API token " + curly("nope") + " does not exist."),
    ("api_token_update", "token_name=root_ci&acl=all", "The ACLs of a token cannot be changed here"),
    ("api_token_revoke", "", "Provide the " + curly("token_name") + " parameter."),
    ("api_token_get_details", "token=X", "Unknown app requested for this version (1) of the API"),
])
def test_whm_errors_write_nothing(manager, function, query, reason):
    m = manager
    root = m.store.create("alice", "root_ci", "--service", "whm")
    before = m.tokens()
    assert whm_result(m.whm(function, root, query=query), function, 0, reason) is None
    assert m.tokens() == before


def test_whm_needs_api_version_1(manager):
    m = manager
    root = m.store.create("alice", "root_ci", "--service", "whm")
    r = m.mgr.get("/json-api/api_token_create?token_name=x", auth=f"whm alice:{root}")
    whm_result(r, "api_token_create", 0, "WHM API 1 only")
    assert len(m.tokens()) == 1


# ---------------------------------------------------------------- the page: ambient credentials

def test_page_reads_with_basic(manager):
    m = manager
    m.store.create("alice", "deploy")
    r = m.page("Tokens", "list")
    assert [t["name"] for t in uapi_ok(r)] == ["deploy"]
    assert_manager_headers(r)
    session = uapi_ok(m.page("CPTokens", "session"))
    assert session["user"] == "alice" and len(session["csrf_token"]) == 64
    # bob's page token is not alice's.
    assert m.csrf(user="bob:bobs password") != session["csrf_token"]


def test_page_write_with_post_same_origin_and_page_token(manager):
    m = manager
    m.main.allow("CPT0100")
    r = m.page_write("Tokens", "create_full_access", "name=from_page")
    made = uapi_ok(r)["token"]
    assert_manager_headers(r)
    assert_admitted(m.protected("alice", made))
    # JSON works too, and the browser may leave Sec-Fetch-Site and Origin out (older browsers, curl).
    csrf = m.csrf()
    r = m.page("CPTokens", "revoke", method="POST", data=json.dumps({"name": ["from_page"]}),
               headers=["Content-Type: application/json", f"X-CPToken-CSRF: {csrf}"])
    assert uapi_ok(r) == {"revoked": ["from_page"], "not_found": []}
    assert_refused(m.protected("alice", made))


@pytest.mark.parametrize("how, change", [
    ("GET instead of POST", dict(method="GET")),
    ("no page token", dict(csrf=False)),
    ("a wrong page token", dict(csrf="0" * 64)),
    ("bob's page token", dict(csrf="bob")),
    ("a cross-site fetch", dict(headers=["Sec-Fetch-Site: cross-site"])),
    ("a same-site fetch", dict(headers=["Sec-Fetch-Site: same-site"])),
    ("another origin", dict(headers=["Origin: https://evil.example"])),
    ("an opaque origin", dict(headers=["Origin: null"])),
])
def test_a_cross_site_write_is_403_and_writes_nothing(manager, how, change):
    m = manager
    m.mgr.allow("CPT0104")
    m.store.create("alice", "deploy")
    before = m.tokens()
    mark = m.mgr.mark()
    csrf = change.get("csrf")
    if csrf == "bob":
        csrf = m.csrf(user="bob:bobs password")
    if change.get("method") == "GET":
        r = m.page("Tokens", "revoke", query="name=deploy", headers=[f"X-CPToken-CSRF: {m.csrf()}"])
    else:
        headers = ["Content-Type: application/x-www-form-urlencoded", *change.get("headers", [])]
        if csrf is not False:
            headers.append(f"X-CPToken-CSRF: {csrf or m.csrf()}")
        r = m.page("Tokens", "revoke", method="POST", data="name=deploy", headers=headers)
    assert r.status == 403, (how, r)
    assert r.json["status"] == 0, r
    assert_manager_headers(r)
    assert m.tokens() == before
    lines = m.mgr.wait_lines(mark, "CPT0104")
    assert lines and 'user="alice"' in lines[-1] and "function=Tokens::revoke" in lines[-1], lines


def test_a_token_sent_as_basic_is_held_to_the_page_rules(manager):
    """A browser that was given a token at a Basic prompt replays it cross-site like a password."""
    m = manager
    m.mgr.allow("CPT0104")
    ci = first_token(m)
    basic = f"alice:{ci}"
    assert [t["name"] for t in uapi_ok(m.mgr.get("/basic/execute/Tokens/list", user=basic))] == ["ci"]
    r = m.mgr.get("/basic/execute/Tokens/create_full_access?name=x", user=basic)
    assert r.status == 403, r
    r = m.mgr.get("/basic/execute/Tokens/create_full_access", user=basic, method="POST", data="name=x",
                  headers=["Sec-Fetch-Site: cross-site"])
    assert r.status == 403, r
    assert [t["name"] for t in m.tokens()] == ["ci"]
    csrf = uapi_ok(m.mgr.get("/basic/execute/CPTokens/session", user=basic))["csrf_token"]
    r = m.mgr.get("/basic/execute/Tokens/create_full_access", user=basic, method="POST", data="name=x",
                  headers=[f"X-CPToken-CSRF: {csrf}", "Sec-Fetch-Site: same-origin"])
    assert TOKEN_RE.match(uapi_ok(r)["token"])
    assert m.mgr.lines(0, "CPT0104") and all('token="ci"' in l for l in m.mgr.lines(0, "CPT0104"))


def test_token_calls_keep_cpanels_get_convention(manager):
    """Header-token calls keep cPanel's GET convention: a browser never adds that header by itself."""
    m = manager
    ci = first_token(m)
    r = m.uapi("Tokens", "create_full_access", ci, query="name=by_get",
               headers=["Sec-Fetch-Site: cross-site", "Origin: https://evil.example"])
    assert TOKEN_RE.match(uapi_ok(r)["token"])


def test_no_cors_even_for_a_preflight(manager):
    m = manager
    m.mgr.allow("CPT0100")
    ci = first_token(m)
    r = m.mgr.get("/execute/Tokens/list", method="OPTIONS",
                  headers=["Origin: https://evil.example", "Access-Control-Request-Method: POST",
                           "Access-Control-Request-Headers: authorization"])
    assert r.status in (401, 405), r
    assert_no_cors(r)
    r = m.uapi("Tokens", "list", ci, headers=["Origin: https://evil.example"])
    assert r.status == 200
    assert_no_cors(r)


# ---------------------------------------------------------------- logs

def test_no_secret_in_any_log(manager):
    m = manager
    ci = first_token(m)
    secrets = [ci]
    secrets.append(uapi_ok(m.uapi("Tokens", "create_full_access", ci, query="name=deploy"))["token"])
    secrets.append(uapi_ok(m.uapi("CPTokens", "rotate", ci, query="name=deploy&grace=60"))["token"])
    root = m.store.create("alice", "root_ci", "--service", "whm")
    secrets.append(root)
    secrets.append(whm_result(m.whm("api_token_create", root, query="token_name=w"), "api_token_create")["token"])
    secrets.append(uapi_ok(m.page_write("Tokens", "create_full_access", "name=paged"))["token"])
    secrets.append(m.csrf())
    m.page_write("CPTokens", "revoke_all", "")
    time.sleep(0.3)
    logs = m.mgr.log_text() + "\n".join(m.mgr.access_lines())
    for secret in secrets:
        assert secret not in logs
    # Each write is in the error log, at info, with who did it and how.
    wrote = m.mgr.lines(0, "CPT0105")
    assert any("Tokens::create_full_access: created token deploy" in l and 'token="ci"' in l for l in wrote), wrote
    assert any("CPTokens::revoke_all: revoked all" in l and 'user="alice"' in l and 'token="-"' in l
               for l in wrote), wrote


def test_manager_children_write_tokens_and_never_map_the_usage_store(manager):
    """www-data writes usage.slots: the manager's children (the store's owner) must not open it."""
    m = manager
    ci = first_token(m)
    for i in range(6):  # reach every child
        uapi_ok(m.uapi("Tokens", "create_full_access", ci, query=f"name=t{i}"))
    children = subprocess.run(["ps", "-o", "pid=,user=", "--ppid", str(m.mgr.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    pids = children[0::2]
    assert pids and set(children[1::2]) == {MANAGER_USER}, children
    maps = {pid: open(f"/proc/{pid}/maps").read() for pid in pids}
    assert any("tokens.mdb" in text for text in maps.values()), maps.keys()
    for pid, text in maps.items():
        assert "usage.slots" not in text, pid


# ---------------------------------------------------------------- failing closed

def test_a_location_without_authentication_acts_for_nobody(manager):
    m = manager
    m.mgr.allow("CPT0104")
    for path in ("/open/execute/Tokens/list", "/open/execute/Tokens/create_full_access?name=x"):
        r = m.mgr.get(path)
        assert r.status == 403 and r.json["status"] == 0, r
        assert_manager_headers(r)
    assert "no authenticated user" in m.mgr.lines(0, "CPT0104")[-1]
    assert m.tokens() == []


def test_a_manager_that_does_not_own_the_store_writes_nothing(srv):
    """Children that are not the store's owner (here www-data, a root-owned store) cannot open it
    read-write: 500 with CPT0200, never a write, while reads through the module go on."""
    srv.allow("CPT0200")
    ci = srv.store.create("alice", "ci")
    srv.start(MANAGER_BODY.replace("CPTokenTrustOwnStore On\n", ""))
    r = srv.get("/execute/Tokens/create_full_access?name=x", auth=f"cpanel alice:{ci}")
    assert r.status == 500, r
    assert_manager_headers(r)
    assert "token store unusable" in srv.lines(0, "CPT0200")[-1]
    assert [t["name"] for t in json.loads(srv.store.run("list", "--json").stdout)] == ["ci"]

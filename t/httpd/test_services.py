# SPDX-License-Identifier: Apache-2.0
"""cPanel and WHM tokens kept apart: the `cpanel` scheme admits cpanel
tokens only, `whm` whm tokens only, and Basic (under AuthType cpanel and as
AuthBasicProvider cptoken) the services the location names in
CPTokenSchemes (cpanel when it names neither). A token of the other service
gets exactly the answer an unknown token gets; only the error log tells
them apart."""

from conftest import BASIC_PROVIDER_AUTH, ALL_MPMS, CPANEL_AUTH, Store, api_location, assert_admitted

WRONG_SERVICE = 'reason="token belongs to the other service (cpanel/whm)"'

# path -> (AuthType, CPTokenSchemes)
LOCATIONS = {
    "/both": ("cpanel", "cpanel whm"),
    "/all": ("cpanel", "cpanel whm basic"),
    "/cb": ("cpanel", "cpanel basic"),
    "/wb": ("cpanel", "whm basic"),
    "/b": ("cpanel", "basic"),
    "/pcb": ("provider", "cpanel basic"),
    "/pwb": ("provider", "whm basic"),
    "/pb": ("provider", "basic"),
}



def body():
    out = []
    for path, (kind, schemes) in LOCATIONS.items():
        auth = CPANEL_AUTH if kind == "cpanel" else BASIC_PROVIDER_AUTH
        out.append(api_location(path, auth=auth, more=f"    CPTokenSchemes {schemes}"))
    return "".join(out)


def start(srv):
    # mod_auth_basic's lines for refused Basic credentials (AuthBasicProvider).
    srv.allow("CPT0100", "AH01617", "AH01618")
    srv.start(body())


def request(srv, path, scheme, token):
    if scheme == "basic":
        return srv.get(path + "/x", user=f"alice:{token}")
    return srv.get(path + "/x", auth=f"{scheme} alice:{token}")


def assert_refused_like_unknown(srv, path, scheme, token, unknown):
    """401 with the same status, challenges and body as an unknown token's,
    and one CPT0100 line with the wrong-service reason and the token's name."""
    mark = srv.mark()
    r = request(srv, path, scheme, token)
    lines = srv.wait_lines(mark, "CPT0100")
    u = request(srv, path, scheme, unknown)
    assert r.status == 401, f"{scheme} at {path}: expected 401, got {r!r}"
    assert (r.status, sorted(r.challenges), r.body) == (u.status, sorted(u.challenges), u.body), \
        f"{scheme} at {path}: a token of the other service is answered differently from an unknown one:\n{r!r}\n{u!r}"
    assert len(lines) == 1 and WRONG_SERVICE in lines[0] and "[cptoken:error]" in lines[0], \
        f"{scheme} at {path}: {lines}"
    assert token not in srv.log_text()


def test_cpanel_token_is_refused_under_the_whm_scheme(srv):
    """The issue's bug: before services, a cpanel token passed under `whm`
    (and as Basic where the location names only whm)."""
    start(srv)
    token = srv.store.create("alice", "ci")
    unknown = Store(srv.dir / "other").init().create("alice", "elsewhere")
    assert_admitted(request(srv, "/both", "cpanel", token))
    assert_refused_like_unknown(srv, "/both", "whm", token, unknown)
    assert_refused_like_unknown(srv, "/wb", "basic", token, unknown)
    assert_refused_like_unknown(srv, "/pwb", "basic", token, unknown)


@ALL_MPMS
def test_each_scheme_admits_its_own_service(srv):
    start(srv)
    cp = srv.store.create("alice", "cp")
    whm = srv.store.create("alice", "whm", "--service", "whm")
    unknown = Store(srv.dir / "other").init().create("alice", "elsewhere")
    # (path, scheme) -> the service it admits
    admits = {
        ("/both", "cpanel"): "cpanel", ("/both", "whm"): "whm",
        ("/all", "cpanel"): "cpanel", ("/all", "whm"): "whm", ("/all", "basic"): "both",
        ("/cb", "cpanel"): "cpanel", ("/cb", "basic"): "cpanel",
        ("/wb", "whm"): "whm", ("/wb", "basic"): "whm",
        ("/b", "basic"): "cpanel",
        ("/pcb", "basic"): "cpanel", ("/pwb", "basic"): "whm", ("/pb", "basic"): "cpanel",
    }
    for (path, scheme), service in admits.items():
        for token, name, token_service in ((cp, "cp", "cpanel"), (whm, "whm", "whm")):
            if service in ("both", token_service):
                r = request(srv, path, scheme, token)
                assert_admitted(r)
                assert r.backend_headers["x-cptoken-name"] == name, (path, scheme, r)
            else:
                assert_refused_like_unknown(srv, path, scheme, token, unknown)


def test_wrong_service_is_logged_with_the_token_name(srv):
    start(srv)
    srv.store.create("alice", "cp")
    whm = srv.store.create("alice", "deploy", "--service", "whm")
    mark = srv.mark()
    assert request(srv, "/cb", "cpanel", whm).status == 401
    assert request(srv, "/pcb", "basic", whm).status == 401
    lines = srv.wait_lines(mark, "CPT0100", 2)
    assert len(lines) == 2, lines
    for line in lines:
        assert WRONG_SERVICE in line and 'user="alice"' in line and 'token="deploy"' in line, line
    # AuthBasicProvider: a token of ours refused stops the chain, and
    # mod_auth_basic logs AH01617 (not AH01618, which fail2ban would count
    # beside the CPT0100).
    assert srv.lines(mark, "AH01617") and not srv.lines(mark, "AH01618"), srv.lines(mark)

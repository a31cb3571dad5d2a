# SPDX-License-Identifier: Apache-2.0
"""`make demo`, the README's first command (conf/demo/run.sh): it starts,
the token it prints is admitted on the cPanel vhost (the backend sees the
user and no Authorization header), the manager answers cPanel's and WHM's
token APIs and serves the page, a revoke is refused on the next request, and
`make demo-stop` stops it all. 0.16.0 shipped a manager.conf the demo no
longer rewrote (it loaded /usr/lib/mod_cptoken/mod_cptoken_manager.so), so
`make demo` failed on every machine without the package.

The demo's ports are fixed (2082, 2083, 2087, 2090): this test stops a demo
that is running, as `make demo` itself does."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import CPTOKEN, MOD, SANITIZER_RUNTIME, curl

REPO = Path(__file__).resolve().parent.parent.parent
STATE = Path("/tmp/mod_cptoken-demo")
BUILD = Path(MOD).parent
PORTS = (2082, 2083, 2087, 2090)

pytestmark = pytest.mark.skipif(
    bool(SANITIZER_RUNTIME) or not (BUILD / "cptoken").is_file() or os.geteuid() != 0,
    reason="the demo runs the normal build (cptoken beside the module), as root")


def listening(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_demo():
    subprocess.run(["bash", str(REPO / "conf/demo/stop.sh"), "--quiet"], timeout=60)


def test_make_demo_serves_its_token_manages_tokens_and_stops():
    started = subprocess.run(["bash", str(REPO / "conf/demo/run.sh")], env=dict(os.environ, BUILD=str(BUILD)),
                             capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        facts = json.loads((STATE / "demo.json").read_text())
        user, token = facts["cpanel"]["user"], facts["cpanel"]["token"]
        assert token in started.stdout  # the token to try is printed

        # The protected vhost: the token as cPanel sends it, and as HTTP Basic.
        r = curl(facts["cpanel"]["url"], auth=f"cpanel {user}:{token}", args=["-k"])
        assert r.status == 200, r
        assert r.backend_headers.get("x-remote-user") == user, r
        assert "authorization" not in r.backend_headers, r
        assert curl(facts["cpanel"]["url"], user=f"{user}:{token}", args=["-k"]).status == 200
        assert curl(facts["cpanel"]["url"], auth=f"cpanel {user}:{'A' * 32}", args=["-k"]).status == 401

        # The manager, through the vhosts: cPanel's UAPI Tokens, WHM API 1 and the page.
        r = curl(facts["cpanel"]["url"] + "execute/Tokens/list", auth=f"cpanel {user}:{token}", args=["-k"])
        assert r.status == 200 and r.json["status"] == 1, r
        assert [t["name"] for t in r.json["data"]] == ["demo"], r
        whm = facts["whm"]
        as_root = f"whm {whm['user']}:{whm['token']}"
        r = curl(whm["url"] + "json-api/api_token_create?api.version=1&token_name=ci", auth=as_root, args=["-k"])
        assert r.status == 200 and r.json["metadata"]["result"] == 1, r  # the query string reached the manager
        r = curl(whm["url"] + "json-api/api_token_list?api.version=1", auth=as_root, args=["-k"])
        assert r.status == 200 and r.json["metadata"]["command"] == "api_token_list", r
        assert sorted(r.json["data"]["tokens"]) == ["ci", "demo"], r
        # Unauthenticated, the manager's path answers the manager's 401, not the backend.
        assert curl(whm["url"] + "json-api/api_token_list?api.version=1", args=["-k"]).status == 401
        page = facts["page"]
        assert curl(page["url"], user=f"{page['user']}:{page['password']}", args=["-k"]).status == 200

        # Revoked: refused on the next request.
        subprocess.run([CPTOKEN, "--db", facts["store"], "revoke", user, "demo"], check=True, capture_output=True)
        assert curl(facts["cpanel"]["url"], auth=f"cpanel {user}:{token}", args=["-k"]).status == 401
    finally:
        stop_demo()
    assert not any(listening(port) for port in PORTS)

# SPDX-License-Identifier: Apache-2.0
"""Several requests on one kept-alive connection (curl --next): each is
judged on its own credentials; nothing carries over from the previous one."""

import json
import subprocess

from conftest import ALL_MPMS


@ALL_MPMS
def test_credentials_do_not_carry_over_on_a_connection(srv):
    srv.allow("CPT0100")
    ta = srv.store.create("alice", "a")
    tb = srv.store.create("bob", "b")
    srv.start()
    url = srv.url("/api/x")
    work = srv.dir / "work"
    steps = [f"cpanel alice:{ta}", None, f"cpanel bob:{tb}", f"cpanel bob:{ta}", f"cpanel alice:{ta}", None]
    cmd = ["curl", "-s", "-g", "--noproxy", "*", "--max-time", "20"]
    for i, auth in enumerate(steps):
        if i:
            cmd.append("--next")
        cmd += ["-o", str(work / f"body{i}"), "-w", "%{http_code} %{num_connects}\\n"]
        if auth:
            cmd += ["-H", f"Authorization: {auth}"]
        cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = [line.split() for line in p.stdout.splitlines()]
    assert [g[0] for g in got] == ["200", "401", "200", "401", "200", "401"], got
    assert sum(int(g[1]) for g in got) == 1, f"the requests did not share one connection: {got}"
    users = [json.loads((work / f"body{i}").read_text())["headers"]["X-Remote-User"] for i in (0, 2, 4)]
    assert users == ["alice", "bob", "alice"], users

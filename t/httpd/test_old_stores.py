# SPDX-License-Identifier: Apache-2.0
"""Stores made by earlier versions keep working in httpd: every token of the
kept store (t/data/stores/vN/) gets the recorded status (200, 401, 403) for
each recorded request, sent with curl as the scheme it names. A store of a
newer schema answers 500 with a CPT0200 line naming both versions."""

import sys
from pathlib import Path

import pytest

from conftest import api_location

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data" / "stores"))
import oldstores  # noqa: E402

BODY = api_location(more="    CPTokenSchemes cpanel whm basic")


def use_old_store(srv, version, schema=None):
    """Copies `version`'s store over srv's (made by `cptoken init --group
    www-data`), its schema version raised to `schema` if given, and runs
    init on it as an upgrade does."""
    oldstores.copy_store(version, srv.store.path)
    if schema is not None:
        oldstores.set_schema_version(srv.store.path, schema)
    srv.store.init()  # the upgrade step (docs/store.md): adopts the old file, as the package's postinst does


def request(srv, token, c):
    kw = {"auth": f"{c['service']} {c['user']}:{token}"}
    if c["ip"] == "::1":
        kw["v6"] = True
    else:
        kw["interface"] = c["ip"]
    if c["method"] == "HEAD":
        kw["args"] = ["-I"]  # curl -X HEAD would wait for a body
    elif c["method"] != "GET":
        kw["method"] = c["method"]
    return srv.get(c["path"], **kw)


@pytest.mark.parametrize("version", oldstores.VERSIONS)
def test_every_token_gets_the_recorded_status(srv, version):
    use_old_store(srv, version)
    srv.allow("CPT0100", "CPT0101", "CPT0102")
    srv.start(BODY)
    wrong = []
    for t in oldstores.recorded(version)["tokens"]:
        for c in t["checks"]:
            r = request(srv, t["token"], c)
            seen = r.backend_headers.get("x-remote-user") if r.status == 200 and c["method"] != "HEAD" else None
            if r.status != c["http"] or (seen is not None and seen != c["user"]):
                wrong.append(f"{t['user']}/{t['name']} ({t['what']}) {c}: expected {c['http']}, got {r!r}")
    assert not wrong, "\n".join(wrong)
    assert not any(t["token"] in srv.log_text() for t in oldstores.recorded(version)["tokens"])


def test_a_newer_schema_is_refused_naming_both_versions(srv):
    version = oldstores.VERSIONS[-1]
    data = oldstores.recorded(version)
    newer = data["schema_version"] + 1
    use_old_store(srv, version, schema=newer)
    this = srv.store.run("--version").stdout.split()[1]
    srv.allow("CPT0200")
    srv.start(BODY)
    mark = srv.mark()
    token = data["tokens"][0]
    r = srv.get(auth=f"cpanel {token['user']}:{token['token']}")
    assert r.status == 500, r
    lines = srv.wait_lines(mark, "CPT0200")
    want = f"has schema version {newer}; this mod_cptoken {this} reads up to schema {newer - 1}: upgrade mod_cptoken"
    assert any(want in line for line in lines), lines
    assert token["token"] not in srv.log_text()

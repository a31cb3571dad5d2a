# SPDX-License-Identifier: Apache-2.0
"""The client address is r->useragent_addr: mod_remoteip (with trusted
proxies) sets it; the module itself never reads X-Forwarded-For."""

from conftest import DEFAULT_BODY, assert_admitted, assert_refused

REMOTEIP = "LoadModule remoteip_module @MODDIR@/mod_remoteip.so"
TRUST_LOCAL = """
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
"""


def test_x_forwarded_for_ignored_without_remoteip(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "pinned", "--allow-ip", "192.0.2.7")
    srv.start()
    assert_refused(srv.get(auth=f"cpanel alice:{token}", headers=["X-Forwarded-For: 192.0.2.7"]))


def test_remoteip_from_a_trusted_proxy(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "pinned", "--allow-ip", "192.0.2.7")
    srv.start(TRUST_LOCAL + DEFAULT_BODY, extra_modules=REMOTEIP)
    auth = f"cpanel alice:{token}"
    assert_admitted(srv.get(auth=auth, headers=["X-Forwarded-For: 192.0.2.7"]), "alice")
    # Another forwarded address, or none: refused.
    mark = srv.mark()
    assert_refused(srv.get(auth=auth, headers=["X-Forwarded-For: 192.0.2.8"]))
    [line] = srv.wait_lines(mark, "CPT0100")
    assert "client=192.0.2.8" in line, line
    assert_refused(srv.get(auth=auth))


def test_remoteip_from_an_untrusted_client(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "pinned", "--allow-ip", "192.0.2.7")
    srv.start(TRUST_LOCAL + DEFAULT_BODY, extra_modules=REMOTEIP)
    mark = srv.mark()
    assert_refused(srv.get(auth=f"cpanel alice:{token}", headers=["X-Forwarded-For: 192.0.2.7"],
                           interface="127.0.0.2"))
    [line] = srv.wait_lines(mark, "CPT0100")
    assert "client=127.0.0.2" in line, line

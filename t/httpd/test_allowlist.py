# SPDX-License-Identifier: Apache-2.0
"""Per-token IP allowlists, checked against the client's address
(127.0.0.0/8 is all local on Linux: curl --interface 127.0.0.2 is another client)."""

from conftest import assert_admitted, assert_refused, level_of


def refusal_line(srv, mark):
    lines = srv.wait_lines(mark, "CPT0100")
    assert len(lines) == 1, lines
    assert level_of(lines[0]) == "error", lines[0]
    return lines[0]


def test_allow_ipv4_address(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "pinned", "--allow-ip", "127.0.0.1")
    srv.start()
    auth = f"cpanel alice:{token}"
    assert_admitted(srv.get(auth=auth), "alice")
    assert_admitted(srv.get(user=f"alice:{token}", interface="127.0.0.1"), "alice")

    mark = srv.mark()
    assert_refused(srv.get(auth=auth, interface="127.0.0.2"))
    line = refusal_line(srv, mark)
    assert "client=127.0.0.2" in line, line
    assert "pinned" in line, line
    assert token not in line

    mark = srv.mark()
    assert_refused(srv.get(auth=auth, v6=True))
    line = refusal_line(srv, mark)
    assert "client=::1" in line, line


def test_allow_ipv6_address(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "v6", "--allow-ip", "::1")
    srv.start()
    auth = f"cpanel alice:{token}"
    assert_admitted(srv.get(auth=auth, v6=True), "alice")
    assert_admitted(srv.get(user=f"alice:{token}", v6=True), "alice")
    assert_refused(srv.get(auth=auth))
    assert_refused(srv.get(auth=auth, interface="127.0.0.2"))


def test_allow_cidr_network(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "net", "--allow-ip", "127.0.0.0/31")
    srv.start()
    auth = f"cpanel alice:{token}"
    assert_admitted(srv.get(auth=auth, interface="127.0.0.1"), "alice")
    assert_refused(srv.get(auth=auth, interface="127.0.0.2"))
    assert_refused(srv.get(auth=auth, interface="127.0.0.3"))


def test_several_networks(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "multi", "--allow-ip", "127.0.0.2", "--allow-ip", "::1/128")
    srv.start()
    auth = f"cpanel alice:{token}"
    assert_admitted(srv.get(auth=auth, interface="127.0.0.2"), "alice")
    assert_admitted(srv.get(auth=auth, v6=True), "alice")
    assert_refused(srv.get(auth=auth, interface="127.0.0.1"))


def test_edit_any_ip_applies_to_the_next_request(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "pinned", "--allow-ip", "127.0.0.1")
    srv.start()
    auth = f"cpanel alice:{token}"
    assert_refused(srv.get(auth=auth, interface="127.0.0.2"))
    srv.store.edit("alice", "pinned", "--any-ip")
    assert_admitted(srv.get(auth=auth, interface="127.0.0.2"), "alice")
    assert_admitted(srv.get(auth=auth, v6=True), "alice")


def test_edit_allow_ip_applies_to_the_next_request(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "open")
    srv.start()
    auth = f"cpanel alice:{token}"
    assert_admitted(srv.get(auth=auth, interface="127.0.0.1"), "alice")
    srv.store.edit("alice", "open", "--allow-ip", "127.0.0.2")
    assert_refused(srv.get(auth=auth, interface="127.0.0.1"))
    assert_admitted(srv.get(auth=auth, interface="127.0.0.2"), "alice")


def test_allowlist_on_a_dual_stack_listener(srv):
    """Listen [::]:PORT takes IPv4 clients as v4-mapped addresses
    (::ffff:127.0.0.1): they must match IPv4 allowlists."""
    srv.allow("CPT0100")
    token = srv.store.create("alice", "pinned", "--allow-ip", "127.0.0.1")
    srv.start(listen="Listen [::]:@PORT@")
    auth = f"cpanel alice:{token}"
    assert_admitted(srv.get(auth=auth), "alice")
    assert_refused(srv.get(auth=auth, interface="127.0.0.2"))
    assert_refused(srv.get(auth=auth, v6=True))

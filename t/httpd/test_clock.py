# SPDX-License-Identifier: Apache-2.0
"""Time: expiry is judged when the token is checked, not when the request
line arrived; the store's once-a-second checks run on a monotonic clock, so a
wall clock stepped back does not pause them."""

import calendar
import json
import os
import socket
import time
from pathlib import Path

import pytest

from conftest import SANITIZER_RUNTIME, Store, assert_admitted, assert_refused

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def slow_request(port, path, authorization, headers_after):
    """Sends the request line at once, the Authorization header only after
    `headers_after` seconds (a slow client); returns the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        time.sleep(headers_after)
        s.sendall(f"Authorization: {authorization}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0].decode()
    assert status_line.startswith("HTTP/1.1 "), data[:200]
    return int(status_line.split()[1])


def test_expiry_is_judged_when_the_header_arrives(srv):
    srv.allow("CPT0100")
    srv.start()  # first: a slow start (ASan, a loaded machine) would eat the token's life
    token = srv.store.create("alice", "short", "--expires", "+3s")
    expires = json.loads(srv.store.run("show", "alice", "short", "--json").stdout)["expires"]
    expires = calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ"))
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    # The request line arrives before expiry, the header 2 s after it.
    status = slow_request(srv.port, "/api/x", f"cpanel alice:{token}", expires - time.time() + 2)
    assert status == 401, f"an expired token was admitted because its request line came before expiry: {status}"
    assert any('reason="token expired"' in l for l in srv.lines(tag="CPT0100")), srv.lines()


def test_store_replacement_is_noticed_after_the_clock_steps_back(srv):
    """httpd under libfaketime, whose wall clock is then stepped back an hour:
    a store moved into place is still picked up within a second or two."""
    if SANITIZER_RUNTIME:
        pytest.skip("httpd does not start with both libfaketime and the ASan runtime preloaded (make httpd-asan-test)")
    srv.allow("CPT0203")  # a use written while no store is in place
    assert FAKETIME.is_file(), f"{FAKETIME} is missing (Debian package libfaketime; make test installs it)"
    srv.allow("CPT0100")
    offset = srv.dir / "faketime"
    offset.write_text("+0\n")
    old = srv.store.create("alice", "old")
    srv.start(env={"LD_PRELOAD": str(FAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset),
                   "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    for _ in range(6):  # every child has checked its store at the current time
        assert_admitted(srv.get(auth=f"cpanel alice:{old}"))
    offset.write_text("-3600\n")
    time.sleep(0.2)
    nxt = Store(srv.dir / "store.next").init()
    new = nxt.create("alice", "new")
    os.rename(srv.store.path, srv.dir / "store.old")
    os.rename(nxt.path, srv.store.path)
    time.sleep(1.5)
    for _ in range(6):
        assert_admitted(srv.get(auth=f"cpanel alice:{new}"))
        assert_refused(srv.get(auth=f"cpanel alice:{old}"))

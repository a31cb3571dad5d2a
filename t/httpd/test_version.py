# SPDX-License-Identifier: Apache-2.0
"""The module says which version runs, as other modules do: a CPT0001
notice in the error log at each configuration load, mod_cptoken/VERSION in
httpd's "resuming normal operations" line, and in the Server header when
ServerTokens is Full."""

from pathlib import Path

from conftest import DEFAULT_BODY, wait_until

VERSION = (Path(__file__).resolve().parent.parent.parent / "VERSION").read_text().strip()


def resumed_lines(srv):
    return [l for l in srv.lines() if "resuming normal operations" in l]


def test_error_log_names_the_version_at_start_and_restart(srv):
    srv.start(loglevel="warn")  # an admin's usual level: the notice still shows
    assert wait_until(lambda: resumed_lines(srv), 10), srv.log_text()
    loaded = srv.lines(tag="CPT0001")
    assert len(loaded) == 1, srv.log_text()
    assert "[cptoken:notice]" in loaded[0] and loaded[0].endswith(f"CPT0001: mod_cptoken {VERSION} loaded"), loaded
    assert f"mod_cptoken/{VERSION}" in resumed_lines(srv)[0], resumed_lines(srv)

    srv.graceful()
    assert wait_until(lambda: len(resumed_lines(srv)) >= 2, 20), srv.log_text()
    assert len(srv.lines(tag="CPT0001")) == 2, srv.log_text()


# httpd's own answer (the 401 of a request without credentials): an admitted
# request carries the proxied backend's Server header instead.
def test_server_header_with_server_tokens_full(srv):
    srv.start("ServerTokens Full\n" + DEFAULT_BODY)
    r = srv.get()
    assert r.status == 401
    assert any(f"mod_cptoken/{VERSION}" in v for v in r.header("Server")), r.headers


def test_server_header_hides_it_with_server_tokens_prod(srv):
    srv.start("ServerTokens Prod\n" + DEFAULT_BODY)
    r = srv.get()
    assert r.status == 401
    assert r.header("Server") == ["Apache"], r.headers

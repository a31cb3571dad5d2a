# SPDX-License-Identifier: Apache-2.0
"""Every refusal looks the same to the client: 401 (never 500), the same body
bytes, the same challenges; the reason goes to the error log (one CPT0100 line
per refusal, at level error, except 'no credentials' at info), never the token."""

import base64

import pytest

from conftest import Store, assert_refused, b64, basic, level_of

LONG = 8000  # just under httpd's LimitRequestFieldSize (8190 for name + value)


B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def noncanonical(encoded):
    """The same bytes for a lenient decoder: the last character before the
    padding with its unused low bits set (strict base64 refuses it)."""
    i = encoded.index("=") - 1
    v = B64_ALPHABET.index(encoded[i])
    assert v % 4 == 0
    return encoded[:i] + B64_ALPHABET[v | 1] + encoded[i + 1:]


def cases(alice, unknown):
    """name -> (curl keyword arguments, expected log level, text the log line must hold)."""
    long_value = "cpanel alice:" + "A" * (LONG - len("cpanel alice:"))
    assert len(long_value) == LONG
    return {
        "no_header": ({}, "info", None),
        "other_users_token": ({"auth": f"cpanel bob:{alice}"}, "error", "alice-ci-token"),
        "other_users_token_basic": ({"user": f"bob:{alice}"}, "error", "alice-ci-token"),
        "bearer": ({"auth": "Bearer x"}, "error", None),
        "digest": ({"auth": 'Digest username="alice", realm="cptoken test", nonce="abc", '
                            'uri="/api/x", response="6629fae49393a05397450978507c4ef1"'}, "error", None),
        "whm_not_enabled": ({"auth": f"whm alice:{alice}"}, "error", None),
        "scheme_only": ({"auth": "cpanel"}, "error", None),
        "basic_bang": ({"auth": "Basic !!!"}, "error", None),
        "basic_unpadded_junk": ({"auth": "Basic YWxpY2U"}, "error", None),
        "basic_trailing_junk": ({"auth": basic("alice", alice) + "*"}, "error", None),
        # Strict base64 of a valid alice:TOKEN (38 bytes: one '=' of padding).
        "basic_noncanonical": ({"auth": "Basic " + noncanonical(b64("alice:" + alice))}, "error", None),
        "basic_unpadded": ({"auth": "Basic " + b64("alice:" + alice).rstrip("=")}, "error", None),
        "basic_extra_padding": ({"auth": "Basic " + b64("alice:" + alice) + "="}, "error", None),
        "basic_inner_space": ({"auth": "Basic " + b64("alice:" + alice)[:12] + " " + b64("alice:" + alice)[12:]},
                              "error", None),
        "basic_no_colon": ({"auth": "Basic " + b64("alice" + alice)}, "error", None),
        "empty_token": ({"auth": "cpanel alice:"}, "error", None),
        "empty_user": ({"auth": f"cpanel :{alice}"}, "error", None),
        "no_colon": ({"auth": "cpanel alice"}, "error", None),
        "token_too_long": ({"auth": f"cpanel alice:{alice}X"}, "error", None),
        "token_too_short": ({"auth": f"cpanel alice:{alice[:-1]}"}, "error", None),
        "header_8000_bytes": ({"auth": long_value}, "error", None),
        "nul_in_basic_user": ({"auth": "Basic " + b64(b"alice\0:" + alice.encode())}, "error", None),
        "nul_in_basic_token": ({"auth": "Basic " + b64(b"alice:" + alice[:2].encode() + b"\0"
                                                     + alice[2:].encode())}, "error", None),
        "header_twice": ({"headers": [f"Authorization: cpanel alice:{alice}"] * 2}, "error", None),
        "basic_8000_bytes": ({"auth": "Basic " + b64("alice:" + "A" * ((LONG - 6) // 4 * 3 - 6))}, "error", None),
        "unknown_token": ({"auth": f"cpanel alice:{unknown}"}, "error", None),
        "unknown_token_basic": ({"user": f"alice:{unknown}"}, "error", None),
    }


CASE_NAMES = list(cases("A" * 32, "B" * 32))


@pytest.fixture
def tokens(srv):
    """alice's token in srv's store, and a well-formed token from another store."""
    alice = srv.store.create("alice", "alice-ci-token")
    srv.store.create("bob", "deploy")
    other = Store(srv.dir / "other").init()
    unknown = other.create("alice", "elsewhere")
    return alice, unknown


@pytest.mark.parametrize("case", CASE_NAMES)
def test_refusal(srv, tokens, case):
    srv.allow("CPT0100")
    alice, unknown = tokens
    kw, level, must_hold = cases(alice, unknown)[case]
    srv.start()

    baseline = srv.get()
    assert_refused(baseline)

    mark = srv.mark()
    r = srv.get(**kw)
    assert_refused(r)
    assert r.body == baseline.body, f"the 401 body differs from the no-credentials one:\n{r.body!r}"
    assert r.header("Content-Type") == baseline.header("Content-Type")

    lines = srv.wait_lines(mark, "CPT0100")
    assert len(lines) == 1, "expected one CPT0100 line, got:\n" + "\n".join(srv.lines(mark))
    line = lines[0]
    assert level_of(line) == level, f"expected level {level}: {line}"
    assert 'reason="' in line, line
    assert "client=127.0.0.1" in line, line
    if must_hold:
        assert must_hold in line, f"the log line should name the token ({must_hold}): {line}"
    raw = srv.log_bytes()
    assert alice.encode() not in raw, "the token appears in the error log"
    assert b64(f"alice:{alice}").encode() not in raw
    assert b"\0" not in raw, "a NUL byte reached the error log"
    # The backend never saw the request (an admitted one would answer with JSON).
    assert not r.body.startswith(b"{")


def test_refusal_line_names_user_and_client(srv, tokens):
    srv.allow("CPT0100")
    alice, unknown = tokens
    srv.start()
    mark = srv.mark()
    assert_refused(srv.get(auth=f"cpanel carol:{unknown}", interface="127.0.0.2"))
    [line] = srv.wait_lines(mark, "CPT0100")
    assert "carol" in line and "client=127.0.0.2" in line and 'reason="' in line, line
    assert unknown not in line


def test_log_escapes_the_user(srv, tokens):
    srv.allow("CPT0100")
    alice, _ = tokens
    srv.start()
    mark = srv.mark()
    evil = b'ev"il\x1b[31m\x7fuser'
    assert_refused(srv.get(auth="Basic " + base64.b64encode(evil + b":" + alice.encode()).decode()))
    lines = srv.wait_lines(mark, "CPT0100")
    assert len(lines) == 1, srv.lines(mark)
    raw = srv.log_bytes()[mark:]
    assert b"\x1b" not in raw, f"a raw ESC reached the error log: {raw!r}"
    assert b"\x7f" not in raw, f"a raw DEL reached the error log: {raw!r}"
    # The user's bytes split no line: every line after the mark is a whole log line (a slow start-up
    # may still be writing its own lines after the mark).
    assert all(line.startswith(b"[") for line in raw.splitlines()), raw
    assert alice.encode() not in srv.log_bytes()


def test_many_refusals_never_500(srv, tokens):
    """A burst of mixed bad credentials over several connections: all 401."""
    srv.allow("CPT0100")
    alice, unknown = tokens
    srv.start()
    for kw, _, _ in list(cases(alice, unknown).values()) * 2:
        assert srv.get(**kw).status == 401


def test_header_over_the_limit_is_refused_by_httpd(srv, tokens):
    """> 8190 bytes is httpd's own 400, before any module runs (documented, not ours)."""
    srv.allow("AH00561")
    srv.start()
    r = srv.get(auth="cpanel alice:" + "A" * 8200)
    assert r.status == 400

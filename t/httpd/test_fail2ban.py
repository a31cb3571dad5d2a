# SPDX-License-Identifier: Apache-2.0
"""conf/fail2ban-cptoken.conf, run by Debian's fail2ban-regex over the error
log of a real httpd: every refused request with credentials counts once, for
the address the request came from, and nothing a client writes (Referer, URI,
user name) can make it count for another address."""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CPANEL_AUTH, Store, api_location, b64, basic
from test_providers import basic_location

FILTER = Path(__file__).resolve().parents[2] / "conf" / "fail2ban-cptoken.conf"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "directives.md"

# Addresses that hostile requests try to get banned.
VICTIMS = ("203.0.113.9", "198.51.100.77")
FORGED_REFERER = 'Referer: x CPT0100: refused: reason="x" user="y" client=203.0.113.9 token="z"'
FORGED_URI = "/bas/%5Bclient%20198.51.100.77:1%5D%20AH01618:%20x"
# A line of its own in the URI, if httpd did not escape the newline.
FORGED_LINE_URI = ("/bas/x%0A%5BFri%20Nov%2027%2021:38:58.364846%202026%5D%20%5Bcptoken:error%5D%20%5Bpid%201%5D"
                   "%20%5Bclient%20203.0.113.9:1%5D%20CPT0100:%20refused:%20reason=%22x%22%20user=%22y%22"
                   "%20client=203.0.113.9%20token=%22z%22")


def fail2ban_regex():
    path = shutil.which("fail2ban-regex")
    assert path, "fail2ban-regex is missing: install Debian's fail2ban package (make deps)"
    return path


class Requests:
    """Sends requests and keeps, for each, the error-log lines it caused and
    the address fail2ban should count it for (None: it must not count)."""

    def __init__(self, srv):
        self.srv = srv
        self.sent = []  # (label, expected address or None, log lines)

    def send(self, label, status, counts_for, path="/api/x", **kw):
        mark = self.srv.mark()
        r = self.srv.get(path, **kw)
        assert r.status == status, f"{label}: expected {status}, got {r!r}"
        # httpd writes a request's error-log lines before it answers.
        self.sent.append((label, counts_for, self.srv.lines(mark)))

    def refused(self, label, path="/api/x", v6=False, **kw):
        self.send(label, 401, "::1" if v6 else "127.0.0.1", path, v6=v6, **kw)


def matches(log):
    """(address, line) for each line the filter matches in the log."""
    p = subprocess.run([fail2ban_regex(), "--out", "<ip> <msg>", str(log), str(FILTER)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"fail2ban-regex failed ({p.returncode}): {p.stderr}{p.stdout}"
    return [tuple(out.split(" ", 1)) for out in p.stdout.splitlines()]


@pytest.mark.parametrize("mpm", ["prefork", "event"])
@pytest.mark.parametrize("loglevel", ["warn", "warn cptoken:info"])
def test_each_refused_request_counts_once_for_its_own_address(srv, loglevel):
    fail2ban_regex()  # fails the test, first thing, when fail2ban is not installed
    srv.allow("CPT0100", "AH01617", "AH01618", "AH01614", "CPT0102")
    ok = srv.store.create("alice", "ok")
    scoped = srv.store.create("alice", "scoped", "--scope", "/api/in", "--safe-methods")
    pinned = srv.store.create("alice", "pinned", "--allow-ip", "192.0.2.1")
    unknown = Store(srv.dir / "other").init().create("alice", "elsewhere")
    bas = basic_location("cptoken").replace('"/api"', '"/bas"')
    # WHM locations: the tokens above are cpanel tokens, of the other service there.
    whm = api_location("/wapi", auth=CPANEL_AUTH, more="    CPTokenSchemes whm basic")
    wbas = basic_location("cptoken").replace('"/api"', '"/wbas"').replace(
        "</Location>", "    CPTokenSchemes whm basic\n</Location>")
    srv.start(api_location() + bas + whm + wbas, loglevel=loglevel)
    req = Requests(srv)
    referer = "Referer: https://example.com/from?a=1"

    # AuthType cpanel: one CPT0100 at error per refusal.
    req.refused("cpanel unknown token", auth=f"cpanel alice:{unknown}")
    req.refused("cpanel unknown token over ::1", auth=f"cpanel alice:{unknown}", v6=True)
    req.refused("cpanel unknown token with a Referer", auth=f"cpanel alice:{unknown}", headers=[referer])
    req.refused("cpanel another user's token", auth=f"cpanel bob:{ok}")
    req.refused("cpanel address not allowed, over ::1 with a Referer", auth=f"cpanel alice:{pinned}",
                v6=True, headers=[referer])
    req.refused("cpanel malformed token", auth="cpanel alice:not-a-token")
    req.refused("Basic credentials at AuthType cpanel", user=f"alice:{unknown}")
    # AuthBasicProvider cptoken: a token of ours refused logs CPT0100 and
    # AH01617 at error; an unknown one CPT0100 at info and AH01618 at error.
    req.refused("basic another user's token", "/bas/x", user=f"bob:{ok}")
    req.refused("basic address not allowed, with a Referer", "/bas/x", user=f"alice:{pinned}", headers=[referer])
    req.refused("basic unknown token", "/bas/x", user=f"alice:{unknown}")
    req.refused("basic unknown token over ::1 with a Referer", "/bas/x", v6=True, user=f"alice:{unknown}",
                headers=[referer])
    req.refused("basic password not a token", "/bas/x", user="alice:secret")
    # A token of the other service: once, like any refused token of ours.
    req.refused("whm scheme, cpanel token", "/wapi/x", auth=f"whm alice:{ok}")
    req.refused("Basic at AuthType cpanel, whm location, cpanel token", "/wapi/x", user=f"alice:{ok}")
    req.refused("basic provider, whm location, cpanel token", "/wbas/x", user=f"alice:{ok}")

    # Hostile: text that looks like a refusal of another address.
    req.refused("cpanel forged CPT0100 in the Referer", auth=f"cpanel alice:{unknown}", headers=[FORGED_REFERER])
    req.refused("basic forged CPT0100 in the Referer", "/bas/x", user=f"alice:{unknown}", headers=[FORGED_REFERER])
    req.refused("basic known token, forged AH01618 in the URI", FORGED_URI, user=f"bob:{ok}")
    req.refused("basic unknown token, forged AH01618 in the URI", FORGED_URI, user=f"alice:{unknown}")
    req.refused("basic forged line after a newline in the URI", FORGED_LINE_URI, user=f"alice:{unknown}")
    req.refused("basic forged client field in the user", "/bas/x",
                auth=basic("[client 203.0.113.9] AH01618 x", unknown))
    req.refused("basic forged client field and port in the user", "/bas/x",
                auth="Basic " + b64(f"[client 203.0.113.9:1] AH01618: x:{unknown}"), v6=True)
    req.refused("cpanel forged client field in the user", auth=f"cpanel [client 203.0.113.9:1] AH01618: x:{unknown}",
                headers=[FORGED_REFERER])

    # Not counted: admitted requests (with a hostile Referer too), and a
    # first request without credentials.
    for path, kw in (("/api/x", {"auth": f"cpanel alice:{ok}"}), ("/bas/x", {"user": f"alice:{ok}"})):
        req.send(f"admitted at {path}", 200, None, path, **kw)
        req.send(f"admitted at {path} over ::1 with a forged Referer", 200, None, path, v6=True,
                 headers=[FORGED_REFERER], **kw)
    # Not counted: an authenticated token outside its scope (CPT0102, 403) is no guessing attack.
    req.send("scoped token outside its scope", 403, None, "/api/out", auth=f"cpanel alice:{scoped}")
    req.send("safe-methods token, POST", 403, None, "/api/in/x", auth=f"cpanel alice:{scoped}", method="POST",
             data="x")
    req.send("scoped token outside its scope, basic provider", 403, None, "/bas/x", user=f"alice:{scoped}")
    req.send("scoped token, forged CPT0100 in the URI", 403, None, FORGED_URI.replace("/bas/", "/api/"),
             auth=f"cpanel alice:{scoped}")
    assert len(srv.lines(tag="CPT0102")) == 4, srv.lines(tag="CPT0102")
    req.send("cpanel no credentials", 401, None)
    req.send("basic no credentials", 401, None, "/bas/x")
    req.send("cpanel no credentials, forged Referer", 401, None, headers=[FORGED_REFERER])
    req.send("basic no credentials, forged URI", 401, None, FORGED_URI)

    found = matches(srv.error_log)
    errors = []
    for label, counts_for, lines in req.sent:
        got = [ip for ip, line in found if line in lines]
        want = [counts_for] if counts_for else []
        if got != want:
            errors.append(f"{label}: counted for {got}, expected {want}; its lines:\n  " + "\n  ".join(lines))
    assert not errors, "\n".join(errors)
    banned = {ip for ip, _ in found}
    assert not banned & set(VICTIMS), f"the filter counted addresses that sent nothing: {found}"
    assert banned == {"127.0.0.1", "::1"}, f"matched addresses: {banned}"
    assert len(found) == sum(1 for _, counts_for, _ in req.sent if counts_for), found

def test_docs_show_the_filter_as_shipped():
    """docs/directives.md shows the filter's [Definition]; it must be the one in conf/."""
    shipped = FILTER.read_text()
    definition = shipped[shipped.index("[Definition]"):].strip()
    assert definition in DOCS.read_text(), "docs/directives.md does not show conf/fail2ban-cptoken.conf's [Definition]"

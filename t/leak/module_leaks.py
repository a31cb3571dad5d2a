#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""make module-leak-test: the module in a real httpd under Valgrind; no leak.

What it runs: one real httpd (`/usr/sbin/apache2 -X`, prefork in a single
process, so that the process Valgrind watches is the one that serves the
requests) with the normally built module ($MOD_CPTOKEN, -O2 -g), under

    valgrind --leak-check=full --show-leak-kinds=definite,indirect
             --errors-for-leak-kinds=definite,indirect --num-callers=40
             --trace-children=no --keep-debuginfo=yes --xml=yes ...

The config and store come from t/httpd/conftest.py (its Httpd and Store),
with a workload that walks every path the module has per request and per
child: admitted `cpanel` and Basic tokens (AuthType cpanel, and
AuthBasicProvider cptoken), the whm scheme and service, no credentials,
malformed and wrong-scheme headers, unknown, mistyped, revoked, wrong user,
wrong service, expired and allowlist-refused tokens, a rotated token in its
grace, scoped and safe-methods tokens (admitted, and 403 outside), the
CPToken-Expires filter, CPTokenForwardAuthorization, an internal redirect
and an SSI subrequest into a location with another configuration (the
header restored and checked again), last-used recording (in the usage
table, from the request's thread), the store directory missing (500) and
then a new store directory moved into place (LiveStore and the recorder
reopen). Then a
second httpd, a manager instance (its child runs as the store's owner,
user cptoken, with SetHandler cptoken-manager), walks the manager's
handler: every function with a token, the page's calls with Basic and the
page token, each refusal (status 0, 403, 404, 405, 413, 415), and its store
missing and back (500, then reopened). Every
answer is checked, so that a path not walked fails the run rather than
passing it. httpd is then stopped with SIGTERM, so that the child's pool
cleanup closes the stores (a location with interval 3600, which no longer
holds uses back, finds every use in the store after the stop), and
Valgrind does its leak check at exit.

What fails: a "definitely lost" or "indirectly lost" loss record, or any
other Valgrind error (invalid read or write, uninitialised value, bad free),
with a frame in mod_cptoken.so (our glue and lib/, linked into it); the
records are printed with their stacks. Valgrind writes XML (--xml-file),
which names the object of every frame even when the frame has source lines:
that is how a frame is ours. Also: an unexpected status, an error-log line
at warn or above that the workload does not explain, httpd not stopping.
Leaks without a frame of ours (httpd's, APR's or libc's own one-time
allocations; none with Debian's httpd today) are counted and printed, not
failed: they are not this module's to fix, and they do not grow with
requests. The text log (--log-file) is kept beside the XML.

    CPTOKEN=build/cptoken MOD_CPTOKEN=build/mod_cptoken.so /usr/bin/python3 t/leak/module_leaks.py
Run as root (httpd's child runs as www-data). About 10 s on 2 cores for
some 350 requests (a request costs httpd little CPU, so Valgrind's slowdown
shows mostly at start and exit; the time is printed). LEAK_ROUNDS (default
10) sets how many times the workload's cases repeat; LEAK_KEEP=1 keeps the
directory with the logs (its path is printed).
"""

import grp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "httpd"))
import conftest as harness  # noqa: E402  (the real-httpd tests' harness)
import test_manager_api as manager_setup  # noqa: E402  (the manager instance as its tests make it)

ROUNDS = int(os.environ.get("LEAK_ROUNDS", "10"))
LATE_USES = 12  # uses on the interval-3600 location, written only when the child stops
MODULE_SO = os.path.realpath(harness.MOD)
REPO = str(Path(__file__).resolve().parent.parent.parent)

VALGRIND = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect", "--num-callers=40", "--trace-children=no",
            "--child-silent-after-fork=yes",
            # httpd unloads its modules when apr_terminate() destroys the pools at exit: keep our
            # symbols, or the stacks of our leaks would show ??? where our frames were.
            "--keep-debuginfo=yes", "--vgdb=no"]

LEAK_KINDS = {"Leak_DefinitelyLost": "definitely lost", "Leak_IndirectlyLost": "indirectly lost"}

# A static site behind the module (no backend needed): /api is AuthType
# cpanel; /all accepts every scheme and forwards the header; /basic is
# mod_auth_basic with our provider; /late records uses once an hour, so that
# all but its first use are written only when the child stops. /api/to-all
# (mod_rewrite) and /api/ssi.shtml (mod_include) reach /all, whose
# configuration differs: httpd authenticates that request again.
EXTRA_MODULES = """LoadModule rewrite_module @MODDIR@/mod_rewrite.so
LoadModule include_module @MODDIR@/mod_include.so"""

BODY = r"""
CPTokenLastUsedInterval 0
CPTokenExpiryHeader On
<Location "/api">
    AuthType cpanel
    AuthName "@REALM@"
    Require valid-user
</Location>
<Location "/all">
    AuthType cpanel
    AuthName "@REALM@"
    Require valid-user
    CPTokenSchemes cpanel whm basic
    CPTokenForwardAuthorization On
</Location>
<Location "/basic">
    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider cptoken
    Require valid-user
</Location>
<Location "/late">
    AuthType cpanel
    AuthName "@REALM@"
    Require valid-user
    CPTokenLastUsedInterval 3600
</Location>
<Directory "@HTDOCS@/api">
    Options +Includes
    RewriteEngine On
    RewriteRule ^to-all$ /all/x [L]
</Directory>
<FilesMatch "\.shtml$">
    SetOutputFilter INCLUDES
    ForceType text/html
</FilesMatch>
"""

# Error-log lines at warn and above that the workload causes: refusals
# (CPT0100, and mod_auth_basic's AH01617/AH01618 after our provider said
# no), 403 outside a scope (CPT0102), the store missing (CPT0200) and the
# writer finding no usage store meanwhile (CPT0203).
ALLOWED_TAGS = ("CPT0100", "CPT0102", "CPT0200", "CPT0203", "AH01617", "AH01618")

# Every refusal reason the workload must have produced (CPT0100 lines).
REASONS = ("no credentials", "scheme not accepted", "malformed credentials", "malformed user or token",
           "unknown token", "unknown token, checksum mismatch (mistyped)", "token belongs to another user",
           "token expired", "client address not allowed for this token",
           "token belongs to the other service (cpanel/whm)")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class ValgrindHttpd(harness.Httpd):
    """The tests' httpd, as one process (-X) under Valgrind."""

    stop_timeout = 180  # the leak check at exit takes a while under Valgrind

    def command(self):
        return [*VALGRIND, f"--log-file={self.dir / 'valgrind.log'}", "--xml=yes",
                f"--xml-file={self.dir / 'valgrind.xml'}", *super().command(), "-X"]

    def stop(self):
        proc = self.proc
        super().stop()
        self.exit_status = proc.returncode if proc else None


# ---------------------------------------------------------------- the workload

class Workload:
    def __init__(self, srv):
        self.srv = srv
        self.requests = 0
        self.wrong = []  # (what, expected, got)

    def expect(self, what, status, path="/api/x", body_has=None, header=None, **kw):
        r = self.srv.get(path, **kw)
        self.requests += 1
        problem = None
        if r.status != status:
            problem = f"status {r.status}"
        elif body_has is not None and body_has not in r.body.decode(errors="replace"):
            problem = f"body {r.body[:200]!r} lacks {body_has!r}"
        elif header is not None and not r.header(header):
            problem = f"no {header} header"
        if problem:
            self.wrong.append(f"{what}: expected {status}, got {problem}")
        return r


def make_site(htdocs):
    for rel, text in {"api/x": "api\n", "api/in/x": "in\n", "api/out/x": "out\n", "all/x": "all page\n",
                      "basic/x": "basic\n", "late/x": "late\n",
                      "api/ssi.shtml": '[<!--#include virtual="/all/x" -->]\n'}.items():
        path = htdocs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for p in htdocs.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)


def mistype(token):
    """The token with one of its random characters changed: its checksum no longer holds."""
    c = "A" if token[5] != "A" else "B"
    return token[:5] + c + token[6:]


def uses(store, user, name):
    """The uses of a token that `cptoken show` finds in the usage store."""
    return json.loads(store.run("show", user, name, "--json").stdout)["uses"]


def first_store_round(w, t):
    """Every path once, against the first store; `t`: the tokens by name."""
    ci = t["ci"]
    w.expect("no credentials", 401)
    w.expect("cpanel admitted", 200, auth=f"cpanel alice:{ci}")
    w.expect("Basic under AuthType cpanel admitted", 200, user=f"alice:{ci}")
    w.expect("Basic provider admitted", 200, "/basic/x", user=f"alice:{ci}")
    w.expect("expiring token admitted, with CPToken-Expires", 200, auth=f"cpanel alice:{t['soon']}",
             header="CPToken-Expires")
    w.expect("every scheme, header forwarded", 200, "/all/x", user=f"alice:{ci}")
    w.expect("whm token, whm scheme", 200, "/all/x", auth=f"whm alice:{t['whm']}")
    w.expect("cpanel token, whm scheme: wrong service", 401, "/all/x", auth=f"whm alice:{ci}")
    w.expect("whm scheme where not accepted", 401, auth=f"whm alice:{t['whm']}")
    w.expect("unknown token", 401, auth=f"cpanel alice:{t['unknown']}")
    w.expect("unknown token, Basic provider", 401, "/basic/x", user=f"alice:{t['unknown']}")
    w.expect("mistyped token", 401, auth=f"cpanel alice:{mistype(ci)}")
    w.expect("revoked token", 401, auth=f"cpanel alice:{t['gone']}")
    w.expect("wrong user", 401, auth=f"cpanel bob:{ci}")
    w.expect("wrong user, Basic provider", 401, "/basic/x", user=f"bob:{ci}")
    w.expect("expired token", 401, auth=f"cpanel alice:{t['expired']}")
    w.expect("address not allowed", 401, auth=f"cpanel alice:{t['pinned']}")
    w.expect("rotated token in its grace", 200, auth=f"cpanel alice:{t['deploy-old']}")
    w.expect("its successor", 200, auth=f"cpanel alice:{t['deploy']}")
    w.expect("scoped token inside", 200, "/api/in/x", auth=f"cpanel alice:{t['scoped']}")
    w.expect("scoped token outside", 403, "/api/out/x", auth=f"cpanel alice:{t['scoped']}")
    w.expect("safe-methods token, GET", 200, auth=f"cpanel alice:{t['ro']}")
    w.expect("safe-methods token, POST", 403, auth=f"cpanel alice:{t['ro']}", method="POST", data="x=1")
    w.expect("safe-methods token, override headers removed", 200, auth=f"cpanel alice:{t['ro']}",
             headers=["X-HTTP-Method-Override: DELETE", "X-Method-Override: PUT"])
    w.expect("safe-methods token, GET with a body", 403, auth=f"cpanel alice:{t['ro']}", method="GET", data="x=1")
    w.expect("scoped token, ';' in the path", 403, "/api/in/..;/out/x", auth=f"cpanel alice:{t['scoped']}",
             args=["--path-as-is"])
    w.expect("scoped token, Destination inside", 200, "/api/in/x", auth=f"cpanel alice:{t['scoped']}",
             headers=["Destination: http://127.0.0.1/api/in/y"])
    w.expect("scoped token, Destination outside", 403, "/api/in/x", auth=f"cpanel alice:{t['scoped']}",
             headers=["Destination: http://127.0.0.1/api/out/y"])
    w.expect("malformed token", 401, auth="cpanel alice:SHORT")
    w.expect("malformed Basic", 401, auth="Basic !!!")
    w.expect("other scheme", 401, auth="Bearer x")
    w.expect("internal redirect into /all", 200, "/api/to-all", auth=f"cpanel alice:{ci}", body_has="all page")
    w.expect("SSI subrequest into /all", 200, "/api/ssi.shtml", auth=f"cpanel alice:{ci}", body_has="[all page")


def second_store_round(w, t):
    w.expect("new store: cpanel admitted", 200, auth=f"cpanel bob:{t['new']}")
    w.expect("new store: Basic provider admitted", 200, "/basic/x", user=f"bob:{t['new']}")
    w.expect("new store: the old store's token is unknown", 401, auth=f"cpanel alice:{t['ci']}")
    w.expect("new store: wrong user", 401, auth=f"cpanel alice:{t['new']}")
    w.expect("new store: redirect", 200, "/api/to-all", auth=f"cpanel bob:{t['new']}", body_has="all page")


def run_workload(w, srv, t, store_b):
    for _ in range(ROUNDS):
        first_store_round(w, t)
    # Every use is in the usage table once answered.
    want = 3 * ROUNDS  # cpanel, Basic under cpanel, and the provider; redirects count where they ended
    if not harness.wait_until(lambda: uses(srv.store, "alice", "ci") >= want, 30, 0.5):
        w.wrong.append(f"last used: alice/ci has {uses(srv.store, 'alice', 'ci')} uses written, expected >= {want}")
    log(f"first store: {w.requests} requests")

    # The store directory missing (past LiveStore's once-a-second check): 500, nothing admitted.
    old = harness.Store(srv.dir / "store.old")
    os.rename(srv.store.path, old.path)
    time.sleep(1.5)
    for _ in range(3):
        w.expect("store missing", 500, auth=f"cpanel alice:{t['ci']}")
    # A new store directory moved into place: reopened at the next request.
    os.rename(store_b.path, srv.store.path)
    for _ in range(ROUNDS):
        second_store_round(w, t)
    for _ in range(LATE_USES):
        w.expect("interval 3600", 200, "/late/x", auth=f"cpanel bob:{t['late']}")
    log(f"after the swap: {w.requests} requests in all")


# ---------------------------------------------------------------- the manager's workload

# Refusals the manager's workload causes: the module's 401 and 403 (CPT0100,
# CPT0102), the handler's (CPT0104), its store missing (CPT0200).
MANAGER_ALLOWED_TAGS = ("CPT0100", "CPT0102", "CPT0104", "CPT0200")
PAGE = f"{manager_setup.PAGE_USER}:{manager_setup.PAGE_PASSWORD}"


def page_token(w):
    r = w.expect("page session", 200, "/cptoken/execute/CPTokens/session", user=PAGE, body_has='"status":1')
    return r.json["data"]["csrf_token"] if r.status == 200 else "-"


def manager_round(w, srv, i, t):
    """Every path of the manager's handler once; `i` makes this round's names, `t` the tokens by name."""
    a, wa, ro = f"cpanel alice:{t['ci']}", f"whm alice:{t['root']}", f"cpanel alice:{t['ro']}"
    ok, failed = '"status":1', '"status":0'
    w.expect("create", 200, f"/execute/Tokens/create_full_access?name=t{i}", auth=a, body_has=ok)
    w.expect("list", 200, "/execute/Tokens/list", auth=a, body_has=ok)
    w.expect("rename", 200, f"/execute/Tokens/rename?name=t{i}&new_name=r{i}", auth=a, body_has=ok)
    w.expect("get", 200, f"/execute/CPTokens/get?name=r{i}", auth=a, body_has=ok)
    w.expect("set_expiration", 200, f"/execute/CPTokens/set_expiration?name=r{i}&expires_at=4102444800", auth=a,
             body_has=ok)
    w.expect("set_allowed_ips", 200, f"/execute/CPTokens/set_allowed_ips?name=r{i}&allowed_ip=192.0.2.0/24",
             auth=a, body_has=ok)
    w.expect("rotate", 200, f"/execute/CPTokens/rotate?name=r{i}&grace=60", auth=a, body_has=ok)
    w.expect("revoke_unused without last used", 200, "/execute/CPTokens/revoke_unused?days=1", auth=a,
             body_has=failed)
    w.expect("create by POST form", 200, "/execute/Tokens/create_full_access", auth=a, method="POST",
             data=f"name=f{i}&readonly=1", body_has=ok)
    w.expect("revoke several by POST JSON", 200, "/execute/CPTokens/revoke", auth=a, method="POST",
             data=json.dumps({"name": [f"r{i}", "nope"]}), headers=["Content-Type: application/json"], body_has=ok)
    w.expect("revoke", 200, f"/execute/Tokens/revoke?name=f{i}", auth=a, body_has='"data":1')
    w.expect("a bad name", 200, "/execute/Tokens/create_full_access?name=a+b", auth=a, body_has=failed)
    w.expect("unknown function", 200, "/execute/Tokens/nothing", auth=a, body_has=failed)
    w.expect("no function", 404, "/execute/Tokens/", auth=a)
    w.expect("PUT", 405, "/execute/Tokens/list", auth=a, method="PUT")
    w.expect("413", 413, "/execute/Tokens/create_full_access", auth=a, method="POST", data="x" * (65 * 1024))
    w.expect("415", 415, "/execute/Tokens/create_full_access", auth=a, method="POST", data="name=x",
             headers=["Content-Type: text/plain"])
    w.expect("bad JSON", 200, "/execute/Tokens/create_full_access", auth=a, method="POST", data="{",
             headers=["Content-Type: application/json"], body_has=failed)
    w.expect("bad query", 200, "/execute/Tokens/list?x=%zz", auth=a, body_has=failed)
    whm = "/json-api/{}?api.version=1&{}"
    w.expect("whm create", 200, whm.format("api_token_create", f"token_name=w{i}&whitelist_ip=192.0.2.1&acl=x"),
             auth=wa, body_has='"result":1')
    w.expect("whm list", 200, whm.format("api_token_list", ""), auth=wa, body_has='"result":1')
    w.expect("whm update", 200, whm.format("api_token_update", f"token_name=w{i}&new_name=v{i}"), auth=wa,
             body_has='"result":1')
    w.expect("whm revoke", 200, whm.format("api_token_revoke", f"token_name=v{i}"), auth=wa, body_has='"result":1')
    w.expect("whm unknown", 200, whm.format("api_token_get_details", "token=x"), auth=wa, body_has='"result":0')
    csrf = page_token(w)
    same = [f"X-CPToken-CSRF: {csrf}", "Sec-Fetch-Site: same-origin", f"Origin: http://127.0.0.1:{srv.port}"]
    w.expect("page write", 200, "/cptoken/execute/Tokens/create_full_access", user=PAGE, method="POST",
             data=f"name=p{i}", headers=same, body_has=ok)
    w.expect("page write, cross-site", 403, "/cptoken/execute/Tokens/revoke", user=PAGE, method="POST",
             data=f"name=p{i}", headers=[f"X-CPToken-CSRF: {csrf}", "Sec-Fetch-Site: cross-site"])
    w.expect("page write, no page token", 403, "/cptoken/execute/Tokens/revoke", user=PAGE, method="POST",
             data=f"name=p{i}")
    w.expect("page revoke", 200, "/cptoken/execute/Tokens/revoke", user=PAGE, method="POST", data=f"name=p{i}",
             headers=same, body_has='"data":1')
    w.expect("token as Basic, write without the page token", 403, "/basic/execute/Tokens/revoke",
             user=f"alice:{t['ci']}", method="POST", data="name=x")
    w.expect("no authentication", 403, "/open/execute/Tokens/list")
    w.expect("a safe-methods token's POST", 403, "/execute/Tokens/list", auth=ro, method="POST", data="x=1")
    w.expect("a safe-methods token cannot write", 200, "/execute/Tokens/revoke?name=x", auth=ro, body_has="limited")


def run_manager_workload(w, srv, t):
    for i in range(ROUNDS):
        manager_round(w, srv, i, t)
    # The store gone from under the child's open store: 500, then found again once it is back.
    aside = srv.dir / "store.aside"
    os.rename(srv.store.path, aside)
    w.expect("manager, store missing", 500, "/cptoken/execute/Tokens/list", user=PAGE)
    os.rename(aside, srv.store.path)
    w.expect("manager, store back", 200, "/cptoken/execute/Tokens/list", user=PAGE, body_has='"status":1')
    w.expect("page revoke_all", 200, "/cptoken/execute/CPTokens/revoke_all", user=PAGE, method="POST",
             headers=[f"X-CPToken-CSRF: {page_token(w)}"], body_has='"revoked":')
    log(f"manager: {w.requests} requests")


def start_manager(base):
    """A manager instance under Valgrind, as t/httpd/test_manager_api.py makes one (its child runs as
    the store's owner); returns it and the tokens its workload uses."""
    owner = manager_setup.manager_user()
    srv = ValgrindHttpd(base, 1, "prefork")
    s = srv.store
    t = {"ci": s.create("alice", "ci"), "root": s.create("alice", "root", "--service", "whm"),
         "ro": s.create("alice", "ro", "--safe-methods")}
    manager_setup.give_store_to(s.path, owner)
    srv.run_as = (manager_setup.MANAGER_USER, grp.getgrgid(owner.pw_gid).gr_name)
    htpasswd = srv.dir / "htpasswd"
    subprocess.run(["htpasswd", "-cbB", str(htpasswd), manager_setup.PAGE_USER, manager_setup.PAGE_PASSWORD],
                   check=True, capture_output=True)
    os.chmod(htpasswd, 0o644)
    srv.allow(*MANAGER_ALLOWED_TAGS)
    srv.start(manager_setup.MANAGER_BODY, timeout=120)
    return srv, t


# ---------------------------------------------------------------- Valgrind's report

def frame_of(el):
    return {k: el.findtext(k) for k in ("obj", "fn", "dir", "file", "line")}


def is_ours(frame):
    obj = frame["obj"] or ""
    if obj and os.path.realpath(obj) == MODULE_SO:
        return True
    return (frame["fn"] or "").startswith("cptoken::") or (frame["dir"] or "").startswith(REPO)


def frame_text(frame):
    where = f"{frame['file']}:{frame['line']}" if frame["file"] else os.path.basename(frame["obj"] or "???")
    mark = "  <- ours" if is_ours(frame) else ""
    return f"{frame['fn'] or '???'} ({where}){mark}"


def parse_valgrind(xml_path):
    """(our records, others' leak records, others' error count, our leaked bytes, others' leaked bytes).
    Raises ValueError if httpd died of a signal."""
    root = ET.parse(xml_path).getroot()
    fatal = root.find("fatal_signal")
    if fatal is not None:
        raise ValueError(f"httpd died of {fatal.findtext('signame')}: "
                         + "; ".join(frame_text(frame_of(f)) for f in fatal.iter("frame")))
    ours, others_leaks, others_errors = [], [], 0
    our_bytes = other_bytes = 0
    for err in root.iter("error"):
        kind = err.findtext("kind") or "?"
        stacks = [[frame_of(f) for f in s.iter("frame")] for s in err.findall("stack")]
        what = err.findtext("what") or err.findtext("xwhat/text") or kind
        leaked = int(err.findtext("xwhat/leakedbytes") or 0)
        mine = any(is_ours(f) for s in stacks for f in s)
        record = (kind, what, stacks)
        if mine:
            ours.append(record)
            our_bytes += leaked
        elif kind in LEAK_KINDS:
            # httpd's, APR's or libc's own (no frame of ours): counted, not
            # failed. Not ours to fix, and one-time: they do not grow with
            # requests, which our frames would show.
            others_leaks.append(record)
            other_bytes += leaked
        else:
            others_errors += 1
    return ours, others_leaks, others_errors, our_bytes, other_bytes


def print_record(record):
    kind, what, stacks = record
    print(f"  {kind}: {what}")
    for i, stack in enumerate(stacks):
        for j, frame in enumerate(stack):
            print(f"      {'at' if j == 0 else 'by'} {frame_text(frame)}")
        if i + 1 < len(stacks):
            print("    and:")


def valgrind_failures(srv, w, label):
    """Reads the Valgrind report of a stopped `srv`, prints what it found, and returns the failures."""
    failures = []
    xml = srv.dir / "valgrind.xml"
    try:
        ours, others_leaks, others_errors, our_bytes, other_bytes = parse_valgrind(xml)
    except (ET.ParseError, FileNotFoundError, ValueError) as e:
        failures.append(f"{label}: valgrind's report {xml}: {e}")
        ours, others_leaks, others_errors, our_bytes, other_bytes = [], [], 0, 0, 0
    if ours:
        print(f"\nValgrind ({label}): {len(ours)} records with a frame in {MODULE_SO}:")
        for record in ours:
            print_record(record)
    our_leaks = sum(1 for k, _, _ in ours if k in LEAK_KINDS)
    if ours:
        failures.append(f"{label}: Valgrind records with a frame of ours: {our_leaks} leaks ({our_bytes} bytes "
                        f"lost), {len(ours) - our_leaks} other errors")
    print(f"\nmodule-leak-test ({label}): {w.requests} requests; our leaks {our_leaks} ({our_bytes} bytes), "
          f"our other errors {len(ours) - our_leaks}; httpd's own (no frame of ours, not failed): "
          f"{len(others_leaks)} loss records, {other_bytes} bytes definitely/indirectly lost, "
          f"{others_errors} other errors")
    return failures


# ---------------------------------------------------------------- main

def main():
    t0 = time.monotonic()
    harness.module_available()
    assert shutil.which("valgrind"), "valgrind is not installed (make deps)"
    base = Path(tempfile.mkdtemp(prefix="cptoken-leak-"))
    os.chmod(base, 0o755)
    failures = []
    try:
        srv = ValgrindHttpd(base, 1, "prefork")  # no backend: the locations serve files
        make_site(srv.htdocs)
        s = srv.store
        t = {"ci": s.create("alice", "ci"), "soon": s.create("alice", "soon", "--expires", "2099-01-01T00:00:00Z"),
             "whm": s.create("alice", "whm", "--service", "whm"), "gone": s.create("alice", "gone"),
             "expired": s.create("alice", "expired", "--expires", "+1s"),
             "pinned": s.create("alice", "pinned", "--allow-ip", "10.0.0.0/8"),
             "deploy-old": s.create("alice", "deploy"),
             "scoped": s.create("alice", "scoped", "--scope", "/api/in"), "ro": s.create("alice", "ro", "--safe-methods"),
             "unknown": harness.Store(srv.dir / "other").init().create("alice", "elsewhere")}
        s.revoke("alice", "gone")
        t["deploy"] = s.run("rotate", "alice", "deploy", "--grace", "1h").stdout.strip()
        store_b = harness.Store(srv.dir / "store.next").init()
        t["new"], t["late"] = store_b.create("bob", "new"), store_b.create("bob", "late")
        expired_at = time.time() + 2

        srv.allow(*ALLOWED_TAGS)
        srv.start(BODY, extra_modules=EXTRA_MODULES, timeout=120)
        log(f"httpd -X up under valgrind after {time.monotonic() - t0:.1f} s (port {srv.port}; {srv.dir})")
        time.sleep(max(0.0, expired_at - time.time()))
        w = Workload(srv)
        try:
            run_workload(w, srv, t, store_b)
        except Exception as e:  # noqa: BLE001 -- reported; Valgrind's report is still read
            failures.append(f"workload: {type(e).__name__}: {e}")
        finally:
            t_stop = time.monotonic()
            srv.stop()
            log(f"httpd stopped (exit status {srv.exit_status}) in {time.monotonic() - t_stop:.1f} s")
        failures += w.wrong
        late = uses(srv.store, "bob", "late")
        if late != LATE_USES:
            failures.append(f"the child's stop did not write the uses it held: bob/late has {late} uses, "
                            f"expected {LATE_USES}")
        reasons = {line.split('reason="', 1)[1].split('"', 1)[0] for line in srv.lines(tag="CPT0100")}
        missing = [r for r in REASONS if r not in reasons]
        if missing:
            failures.append(f"refusal reasons never logged (a path not walked): {missing}")
        bad = srv.unexpected_lines()
        if bad:
            failures.append("unexpected error-log lines:\n    " + "\n    ".join(bad))

        failures += valgrind_failures(srv, w, "module")

        # The manager instance: its own httpd, child as the store's owner.
        manager, mt = start_manager(base)
        log(f"manager httpd -X up under valgrind (port {manager.port}; {manager.dir})")
        mw = Workload(manager)
        try:
            run_manager_workload(mw, manager, mt)
        except Exception as e:  # noqa: BLE001 -- reported; Valgrind's report is still read
            failures.append(f"manager workload: {type(e).__name__}: {e}")
        finally:
            manager.stop()
        failures += [f"manager: {wrong}" for wrong in mw.wrong]
        bad = manager.unexpected_lines()
        if bad:
            failures.append("manager: unexpected error-log lines:\n    " + "\n    ".join(bad))
        failures += valgrind_failures(manager, mw, "manager")
        print(f"module-leak-test: {time.monotonic() - t0:.0f} s in all")
    except BaseException as e:  # pytest.fail() from the harness is a BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        failures.append(f"{type(e).__name__}: {e}")
    finally:
        if os.environ.get("LEAK_KEEP") or failures:
            print(f"logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

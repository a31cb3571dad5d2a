#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Makes t/data/stores/v1/: a token store of schema version 1 (mod_cptoken
0.11.0) with known tokens, and tokens.json, what each token got then.

Run once, with the cptoken of that version, and commit the result:

    /usr/bin/python3 t/data/stores/make-v1.py build/cptoken

It works in /tmp/cptoken-make-v1 (removed first; fixed, so that the path an
imported token records is always the same) and writes v1/tokens.mdb (a
compacted `cptoken backup` of the store: a few pages, no lock file) and
v1/tokens.json. No usage store: `cptoken init` makes an empty one.

tokens.json holds, per token: user, name, token (the plaintext: test data,
never used anywhere else), what it is, and its checks: the request (user,
client address, service, path, method), what `cptoken check` answered then
(exit code, output) and the HTTP status httpd answers it with (written here
by hand: 200 admitted, 401 refused, 403 outside the token's scope or
read-only). Also `list --json` and `show --json` of every token as they
were then, and the names that must not be found (revoked, renamed away).
t/tool/test_old_stores.py and t/httpd/test_old_stores.py hold every later
version to exactly that.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "v1"
WORK = Path("/tmp/cptoken-make-v1")
DB = WORK / "db"
CPANEL_FILE = WORK / "api_tokens_v2" / "cpanel" / "carol.json"
# The imported token's plaintext is chosen here (cPanel's files hold digests only).
IMPORTED_TOKEN = "IMPORTEDV1CAROL0000000000000001X"

CPTOKEN = str(Path(sys.argv[1] if len(sys.argv) > 1 else HERE / ".." / ".." / ".." / "build" / "cptoken").resolve())


def run(*args, stdin=""):
    env = {k: v for k, v in os.environ.items() if k != "CPTOKEN_DB"}
    env["LC_ALL"] = "C"
    return subprocess.run([CPTOKEN, "--db", str(DB), *map(str, args)], input=stdin, capture_output=True,
                          text=True, env=env, timeout=30)


def ok(*args):
    p = run(*args)
    if p.returncode != 0:
        sys.exit(f"cptoken {' '.join(map(str, args))} failed: {p.stderr}{p.stdout}")
    return p.stdout.strip()


def check(user="alice", ip="127.0.0.1", service="cpanel", path="/api/x", method="GET", http=200):
    """A request: who it is sent for, from where, with which scheme, to
    which path with which method, and the status httpd answers."""
    return {"user": user, "ip": ip, "service": service, "path": path, "method": method, "http": http}


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    ok("init")
    tokens = []

    def add(user, name, token, what, checks):
        tokens.append({"user": user, "name": name, "token": token, "what": what, "checks": checks})

    # First, so that it has expired by the time everything else is made.
    expired = ok("create", "alice", "expired", "--expires", "+2s")
    expired_at = time.time() + 2
    add("alice", "expired", expired, "expired (created with --expires +2s)", [check(http=401)])

    add("alice", "plain", ok("create", "alice", "plain"), "no restriction", [check()])
    add("bob", "plain", ok("create", "bob", "plain"), "another user's token",
        [check(user="bob"), check(user="alice", http=401)])
    add("alice", "until-2099", ok("create", "alice", "until-2099", "--expires", "2099-01-01T00:00:00Z"),
        "expires 2099-01-01", [check()])
    add("alice", "ipv4", ok("create", "alice", "ipv4", "--allow-ip", "127.0.0.1", "--allow-ip", "10.1.0.0/16"),
        "IPv4 allowlist", [check(), check(ip="127.0.0.2", http=401)])
    add("alice", "ipv6", ok("create", "alice", "ipv6", "--allow-ip", "::1", "--allow-ip", "2001:db8::/32"),
        "IPv6 allowlist", [check(ip="::1"), check(ip="127.0.0.1", http=401)])
    add("root", "whm", ok("create", "root", "whm", "--service", "whm"), "whm service",
        [check(user="root", service="whm"), check(user="root", service="cpanel", http=401)])
    add("alice", "scoped", ok("create", "alice", "scoped", "--scope", "/api/execute/", "--scope", "/api/json/list"),
        "scopes /api/execute/ and /api/json/list",
        [check(path="/api/execute/Email/list_pops"), check(path="/api/json/list"),
         check(path="/api/x", http=403), check(path="/api/json/listing", http=403)])
    add("alice", "read-only", ok("create", "alice", "read-only", "--read-only"), "read-only",
        [check(), check(method="HEAD"), check(method="POST", http=403)])

    # Rotation: the old token works on until its grace ends (2100 and later), beside its successor.
    rotated = ok("create", "alice", "rotated")
    successor = ok("rotate", "alice", "rotated", "--grace", "3900w")
    add("alice", "rotated", rotated, "rotated, in its grace (3900 weeks from when it was made)", [check()])
    add("alice", "rotated", successor, "the successor of the rotated token", [check()])

    # Imported from a cPanel token file, limited (features), with an allowlist.
    CPANEL_FILE.parent.mkdir(parents=True)
    CPANEL_FILE.write_text(json.dumps({"tokens": {hashlib.sha512(IMPORTED_TOKEN.encode()).hexdigest(): {
        "name": "imported", "create_time": 1700000000, "expires_at": 0, "has_full_access": 0,
        "features": ["email", "ftp"], "whitelist_ips": ["127.0.0.1"]}}}))
    ok("import-cpanel", "--with-limited", CPANEL_FILE)
    add("carol", "imported", IMPORTED_TOKEN, f"imported from {CPANEL_FILE} (limits email, ftp; 127.0.0.1 only)",
        [check(user="carol"), check(user="carol", ip="127.0.0.2", http=401)])

    revoked = ok("create", "alice", "revoked")
    ok("revoke", "alice", "revoked")
    add("alice", "revoked", revoked, "revoked (a tombstone)", [check(http=401)])

    renamed = ok("create", "alice", "before-rename")
    ok("edit", "alice", "before-rename", "--name", "after-rename")
    add("alice", "after-rename", renamed, "created as before-rename, renamed", [check()])

    while time.time() <= expired_at + 0.5:
        time.sleep(0.2)

    for t in tokens:
        for c in t["checks"]:
            args = ["check", c["user"], "--ip", c["ip"], "--service", c["service"], "--path", c["path"],
                    "--method", c["method"]]
            p = run(*args, stdin=t["token"] + "\n")
            c["tool"] = {"rc": p.returncode, "out": p.stdout}
            if (p.returncode == 0) != (c["http"] == 200):
                sys.exit(f"{t['user']}/{t['name']}: cptoken check answered {p.returncode} {p.stdout!r}, "
                         f"but httpd is expected to answer {c['http']}")

    listing = json.loads(ok("list", "--json"))
    shows = {}
    for t in listing:
        shows[f"{t['user']}/{t['name']}"] = json.loads(ok("show", t["user"], t["name"], "--json"))
    absent = ["alice/revoked", "alice/before-rename"]
    for name in absent:
        if run("show", *name.split("/")).returncode != 1:
            sys.exit(f"{name} should not be found")

    OUT.mkdir(exist_ok=True)
    data = OUT / "tokens.mdb"
    data.unlink(missing_ok=True)
    ok("backup", data)
    data.chmod(0o644)
    version = subprocess.run([CPTOKEN, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    (OUT / "tokens.json").write_text(json.dumps({
        "schema_version": 1,
        "made_by": version,
        "made_with": "t/data/stores/make-v1.py",
        "tokens": tokens,
        "list": listing,
        "show": shows,
        "absent": absent,
    }, indent=1) + "\n")
    shutil.rmtree(WORK)
    print(f"wrote {data} ({data.stat().st_size} bytes) and {OUT / 'tokens.json'}")


if __name__ == "__main__":
    main()

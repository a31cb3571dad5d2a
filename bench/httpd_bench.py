#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""httpd side-by-side benchmark of mod_cptoken (see bench/README.md).

One private httpd (event MPM, Debian's default sizes, 127.0.0.1, keep-alive)
serves the same tiny file under several locations, each protected a
different way; wrk drives each in turn with the same Lua client
(bench/rotate.lua, which rotates over many Authorization headers and counts
every response's status). Then the instructions per request of each
location under callgrind (httpd -X, two sessions of different lengths: the
difference cancels start-up and shut-down), which, unlike req/s on a small
VM, repeat from run to run. Then: the memory of httpd's children with a small
and a large token store, the delay from `cptoken revoke` to the first 401,
and the rate of `cptoken bulk-create` and of single `cptoken create`.

Run as root (httpd starts as root, its children run as www-data):

    CPTOKEN=build/cptoken MOD_CPTOKEN=build/mod_cptoken.so \\
        BENCH_DIR=/var/tmp/mod_cptoken-bench /usr/bin/python3 bench/httpd_bench.py [--smoke]

Standard library only. Exit status: 0 when every check passed, 1 when a
location answered a status it should not (or another check failed), 2 on a
setup error (missing tool, httpd would not start).
"""

import argparse
import base64
import concurrent.futures
import datetime
import hashlib
import http.client
import json
import os
import platform
import pwd
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "rotate.lua"
APACHE = "/usr/sbin/apache2"
MODDIR = "/usr/lib/apache2/modules"
HTTXT2DBM = "/usr/sbin/httxt2dbm"
HTPASSWD = shutil.which("htpasswd") or "/usr/bin/htpasswd"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
VALGRIND = shutil.which("valgrind") or "/usr/bin/valgrind"
HTTPD_USER = "www-data"
REALM = "bench"


class SetupError(Exception):
    """Something needed to run the benchmark is missing or broken (exit 2)."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- settings

FULL = dict(tokens=1_000_000, rotate=10_000, bcrypt=500, duration=6, warmup=2, rounds=5,
            threads=2, connections=32, mem_small=1000, mem_large=None,
            revoke_trials=20, bulk=None, single_creates=200,
            cg_n1=200, cg_n2=1200, cg_bcrypt_n1=20, cg_bcrypt_n2=60,
            serial_duration=3, serial_rounds=3)
SMOKE = dict(tokens=2000, rotate=200, bcrypt=50, duration=1, warmup=1, rounds=1,
             threads=2, connections=32, mem_small=200, mem_large=None,
             revoke_trials=3, bulk=None, single_creates=20,
             cg_n1=50, cg_n2=250, cg_bcrypt_n1=5, cg_bcrypt_n2=15,
             serial_duration=1, serial_rounds=1)
ENV = dict(tokens="BENCH_TOKENS", rotate="BENCH_ROTATE", bcrypt="BENCH_BCRYPT_USERS",
           duration="BENCH_DURATION", warmup="BENCH_WARMUP", rounds="BENCH_ROUNDS", threads="BENCH_THREADS",
           connections="BENCH_CONNECTIONS", mem_small="BENCH_MEM_SMALL",
           mem_large="BENCH_MEM_LARGE", revoke_trials="BENCH_REVOKE_TRIALS",
           bulk="BENCH_BULK", single_creates="BENCH_SINGLE_CREATES",
           cg_n1="BENCH_CG_N1", cg_n2="BENCH_CG_N2", cg_bcrypt_n1="BENCH_CG_BCRYPT_N1",
           cg_bcrypt_n2="BENCH_CG_BCRYPT_N2", serial_duration="BENCH_SERIAL_DURATION",
           serial_rounds="BENCH_SERIAL_ROUNDS")
SECTIONS = ("locations", "serial", "memory", "revocation", "create", "instructions")


def positive_int(text, name):
    try:
        v = int(str(text).replace("_", "").replace(",", ""))
    except ValueError:
        raise SetupError(f"{name}: not a whole number: {text!r}")
    if v < 1:
        raise SetupError(f"{name}: must be at least 1, got {v}")
    return v


def settings(argv):
    ap = argparse.ArgumentParser(description="httpd side-by-side benchmark of mod_cptoken "
                                 "(sizes also from BENCH_* variables, see bench/README.md)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 s per location, 1 round")
    for key, env in ENV.items():
        ap.add_argument("--" + key.replace("_", "-"), metavar="N", help=f"(env {env})")
    ap.add_argument("--dir", help="work and cache directory (env BENCH_DIR, default /var/tmp/mod_cptoken-bench)")
    ap.add_argument("--only", metavar="LIST",
                    help="run only these sections, comma-separated: " + ",".join(SECTIONS) + " (env BENCH_ONLY)")
    ap.add_argument("--callgrind", metavar="0|1",
                    help="the instructions-per-request section under callgrind (env BENCH_CALLGRIND, default 1)")
    a = ap.parse_args(argv)
    s = dict(SMOKE if a.smoke else FULL)
    for key, env in ENV.items():
        v = getattr(a, key)
        if v is None:
            v = os.environ.get(env)
        if v not in (None, ""):
            s[key] = positive_int(v, env)
    if s["mem_large"] is None:
        s["mem_large"] = s["tokens"]
    if s["bulk"] is None:
        s["bulk"] = s["tokens"]
    s["rotate"] = min(s["rotate"], s["tokens"])
    for n1, n2 in (("cg_n1", "cg_n2"), ("cg_bcrypt_n1", "cg_bcrypt_n2")):
        if s[n2] <= s[n1]:
            raise SetupError(f"{ENV[n2]} ({s[n2]}) must be larger than {ENV[n1]} ({s[n1]})")
    cg = a.callgrind if a.callgrind is not None else os.environ.get("BENCH_CALLGRIND", "")
    if cg.strip() not in ("", "0", "1"):
        raise SetupError(f"BENCH_CALLGRIND: 0 or 1, got {cg!r}")
    s["callgrind"] = cg.strip() != "0"
    lu = os.environ.get("BENCH_LAST_USED", "").strip()
    if lu not in ("", "0", "1"):
        raise SetupError(f"BENCH_LAST_USED: 0 or 1, got {lu!r}")
    s["last_used"] = lu != "0"
    paths = os.environ.get("BENCH_PATHS", "")
    s["paths"] = [x.strip() for x in paths.split(",") if x.strip() and x.strip() != "/open"]
    known = ("/cptoken", "/cptoken-basic", "/floor", "/file-bcrypt", "/dbm", "/socache", "/cptoken-bad")
    for x in s["paths"]:
        if x not in known:
            raise SetupError(f"BENCH_PATHS: unknown location {x!r} (known: /open, {', '.join(known)})")
    only = a.only if a.only is not None else os.environ.get("BENCH_ONLY", "")
    s["only"] = [x.strip() for x in only.split(",") if x.strip()]
    for x in s["only"]:
        if x not in SECTIONS:
            raise SetupError(f"BENCH_ONLY: unknown section {x!r} (known: {', '.join(SECTIONS)})")
    s["smoke"] = a.smoke
    d = a.dir or os.environ.get("BENCH_DIR") or ("/var/tmp/mod_cptoken-bench-smoke" if a.smoke else "/var/tmp/mod_cptoken-bench")
    s["dir"] = Path(d).resolve()
    s["cptoken"] = str(Path(os.environ.get("CPTOKEN") or ROOT / "build" / "cptoken").resolve())
    s["module"] = str(Path(os.environ.get("MOD_CPTOKEN") or ROOT / "build" / "mod_cptoken.so").resolve())
    return s


def want(s, section):
    """Whether this run includes a section (BENCH_ONLY; BENCH_CALLGRIND=0 drops
    the instructions section)."""
    if section == "instructions" and not s["callgrind"]:
        return False
    return not s["only"] or section in s["only"]


def check_tools(s):
    missing = []
    for what, path in (("httpd", APACHE), ("wrk", WRK), ("htpasswd", HTPASSWD),
                       ("httxt2dbm", HTTXT2DBM), ("cptoken (CPTOKEN)", s["cptoken"]),
                       ("mod_cptoken.so (MOD_CPTOKEN)", s["module"])):
        if not os.path.exists(path):
            missing.append(f"{what}: {path}")
    for m in ("mod_mpm_event", "mod_authn_core", "mod_authz_core", "mod_authz_user", "mod_auth_basic",
              "mod_authn_file", "mod_authn_dbm", "mod_authn_socache", "mod_socache_shmcb", "mod_authn_anon"):
        if not os.path.exists(f"{MODDIR}/{m}.so"):
            missing.append(f"{m}: {MODDIR}/{m}.so")
    if want(s, "instructions"):
        for what, path in (("valgrind", VALGRIND), ("mod_mpm_prefork", f"{MODDIR}/mod_mpm_prefork.so")):
            if not os.path.exists(path):
                missing.append(f"{what}: {path} (or BENCH_CALLGRIND=0)")
    if missing:
        raise SetupError("missing: " + "; ".join(missing) + " (make deps; make)")
    if os.geteuid() != 0:
        raise SetupError("run as root: httpd starts as root and its children run as www-data")


# ---------------------------------------------------------------- helpers

def run(cmd, *, timeout=120, stdin=None, stdout=subprocess.PIPE, input_text=None, check=True):
    env = dict(os.environ)
    env.pop("CPTOKEN_DB", None)
    env["LC_ALL"] = "C"
    p = subprocess.run([str(c) for c in cmd], stdin=stdin if input_text is None else None,
                       input=input_text, stdout=stdout, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise SetupError(f"{' '.join(map(str, cmd))} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def make_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


def user_name(i):
    return f"u{i:07d}"


def password(i):
    return f"pw-{i:07d}-bench"


def sha1_hash(pw):
    # {SHA} wants padded base64 (see the research notes).
    return "{SHA}" + base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()


def basic(user, secret):
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def sample(n, k):
    """k indices spread evenly over range(n)."""
    k = min(k, n)
    return [i * n // k for i in range(k)]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------- fixtures (cached in BENCH_DIR/fixtures)

class Fixtures:
    """Generated inputs, each built once into a temporary name and renamed,
    so that an interrupted build is never mistaken for a finished one."""

    def __init__(self, s):
        self.s = s
        self.dir = make_dir(s["dir"] / "fixtures")

    def _build(self, name, builder):
        final = self.dir / name
        if final.exists():
            log(f"  fixture {name}: cached")
            return final
        tmp = self.dir / (name + ".tmp")
        rmtree(tmp)
        make_dir(tmp)
        t0 = time.monotonic()
        try:
            builder(tmp)
        except BaseException:
            rmtree(tmp)
            raise
        os.rename(tmp, final)
        log(f"  fixture {name}: built in {time.monotonic() - t0:.1f} s")
        return final

    def cptoken(self, *args, timeout=600, **kw):
        return run([self.s["cptoken"], *args], timeout=timeout, **kw)

    def store(self, n):
        """A store of n tokens (user u%07d, name t, one token each): DIR/db, and
        DIR/tokens.txt with 'USER NAME TOKEN' lines."""
        def build(tmp):
            self.cptoken("--db", tmp / "db", "init", "--group", HTTPD_USER)
            with open(tmp / "in.txt", "w") as f:
                for i in range(n):
                    f.write(f"{user_name(i)} t\n")
            with open(tmp / "in.txt") as fin, open(tmp / "tokens.txt", "w") as fout:
                run([self.s["cptoken"], "--db", tmp / "db", "bulk-create", "-"],
                    stdin=fin, stdout=fout, timeout=3600)
            os.unlink(tmp / "in.txt")
            got = sum(1 for _ in open(tmp / "tokens.txt"))
            if got != n:
                raise SetupError(f"bulk-create printed {got} lines for {n} tokens")
        return self._build(f"store-{n}", build)

    def bad_tokens(self, k):
        """k well-formed tokens (valid checksums) issued by a scratch store that is
        then thrown away: unknown to every other store."""
        def build(tmp):
            self.cptoken("--db", tmp / "db", "init")
            lines = "".join(f"x{i:07d} t\n" for i in range(k))
            out = self.cptoken("--db", tmp / "db", "bulk-create", "-", input_text=lines).stdout
            toks = [l.split()[2] for l in out.splitlines() if l.strip()]
            if len(toks) != k:
                raise SetupError(f"bulk-create printed {len(toks)} tokens for {k}")
            (tmp / "tokens.txt").write_text("\n".join(toks) + "\n")
            rmtree(tmp / "db")
        return self._build(f"bad-{k}", build) / "tokens.txt"

    def dbm(self, n, kind="SDBM"):
        """n users with {SHA} hashes in a DBM made by httxt2dbm: DIR/users(.pag/.dir)."""
        def build(tmp):
            with open(tmp / "users.txt", "w") as f:
                for i in range(n):
                    f.write(f"{user_name(i)} {sha1_hash(password(i))}\n")
            run([HTTXT2DBM, "-f", kind, "-i", tmp / "users.txt", "-o", tmp / "users"], timeout=1800)
            os.unlink(tmp / "users.txt")
            for p in tmp.iterdir():
                os.chmod(p, 0o644)
        return self._build(f"dbm-{kind.lower()}-{n}", build) / "users"

    def sha1_file(self, n):
        """An htpasswd file of n users with {SHA} hashes."""
        def build(tmp):
            with open(tmp / "htpasswd", "w") as f:
                for i in range(n):
                    f.write(f"{user_name(i)}:{sha1_hash(password(i))}\n")
            os.chmod(tmp / "htpasswd", 0o644)
        return self._build(f"sha1-{n}", build) / "htpasswd"

    def bcrypt_file(self, n):
        """An htpasswd file of n users made by `htpasswd -nbB` (bcrypt, cost 5),
        several at a time (one htpasswd -b per user would rewrite the file each time)."""
        def one(i):
            p = run([HTPASSWD, "-nbB", user_name(i), password(i)], timeout=60)
            line = p.stdout.strip().splitlines()[0]
            if not line.startswith(user_name(i) + ":$2y$"):
                raise SetupError(f"htpasswd -nbB printed {line!r}")
            return line

        def build(tmp):
            with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
                lines = list(ex.map(one, range(n)))
            (tmp / "htpasswd").write_text("\n".join(lines) + "\n")
            os.chmod(tmp / "htpasswd", 0o644)
        return self._build(f"bcrypt-{n}", build) / "htpasswd"


def read_tokens(store_dir, indices):
    """(user, name, token) of the given line numbers of store_dir/tokens.txt."""
    want = set(indices)
    got = {}
    with open(store_dir / "tokens.txt") as f:
        for i, line in enumerate(f):
            if i in want:
                u, n, t = line.split()
                got[i] = (u, n, t)
    return [got[i] for i in indices]


# ---------------------------------------------------------------- httpd

CONF = r"""
ServerRoot "@DIR@"
PidFile "@DIR@/httpd.pid"
DefaultRuntimeDir "@DIR@/run"
ServerName 127.0.0.1
Listen 127.0.0.1:@PORT@
@USER@
ErrorLog "@DIR@/error.log"
LogLevel warn

@MPM@
# Debian's apache2.conf, except MaxKeepAliveRequests (100 there): unlimited,
# so that wrk's connections stay open for the whole run.
Timeout 300
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5

LoadModule authn_core_module @MODDIR@/mod_authn_core.so
LoadModule authz_core_module @MODDIR@/mod_authz_core.so
LoadModule authz_user_module @MODDIR@/mod_authz_user.so
LoadModule auth_basic_module @MODDIR@/mod_auth_basic.so
LoadModule authn_file_module @MODDIR@/mod_authn_file.so
LoadModule authn_dbm_module @MODDIR@/mod_authn_dbm.so
LoadModule socache_shmcb_module @MODDIR@/mod_socache_shmcb.so
LoadModule authn_socache_module @MODDIR@/mod_authn_socache.so
LoadModule authn_anon_module @MODDIR@/mod_authn_anon.so
LoadModule cptoken_module "@MODULE@"

# As Debian's apache2.conf: no .htaccess files anywhere (without this, httpd
# tries to open one in every directory from / down, on every request).
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
DocumentRoot "@HTDOCS@"
<Directory "@HTDOCS@">
    Require all granted
</Directory>

CPTokenDB "@STORE@"
@LAST_USED@
@SOCACHE@
@LOCATIONS@
"""

# BENCH_LAST_USED=0: the same run with last used off (main() sets it).
LAST_USED_CONF = ""

USER_GROUP = """User www-data
Group www-data"""

MPM_EVENT = """LoadModule mpm_event_module @MODDIR@/mod_mpm_event.so
# Debian's /etc/apache2/mods-available/mpm_event.conf
StartServers            2
MinSpareThreads         25
MaxSpareThreads         75
ThreadLimit             64
ThreadsPerChild         25
MaxRequestWorkers       150
MaxConnectionsPerChild  0"""

# For the callgrind section: one process (-X), started as www-data, so no
# User/Group (httpd does not change user when it is not root).
MPM_PREFORK = """LoadModule mpm_prefork_module @MODDIR@/mod_mpm_prefork.so
MaxConnectionsPerChild  0"""

LOC_OPEN = """
<Location "@PATH@">
    Require all granted
</Location>
"""

LOC_CPANEL = """
<Location "@PATH@">
    AuthType cpanel
    AuthName "@REALM@"
    Require valid-user
</Location>
"""

LOC_CPTOKEN_BASIC = """
<Location "@PATH@">
    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider cptoken
    Require valid-user
</Location>
"""

# httpd's own authentication with nothing to check: mod_auth_basic decodes
# the header, mod_authn_anon accepts any user and password, mod_authz_user's
# valid-user admits. The floor under any Basic provider.
LOC_FLOOR = """
<Location "@PATH@">
    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider anon
    Anonymous *
    Anonymous_MustGiveEmail off
    Anonymous_LogEmail off
    Require valid-user
</Location>
"""

LOC_FILE = """
<Location "@PATH@">
    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider file
    AuthUserFile "@FILE@"
    Require valid-user
</Location>
"""

LOC_DBM = """
<Location "@PATH@">
    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider dbm
    AuthDBMType @DBMTYPE@
    AuthDBMUserFile "@FILE@"
    Require valid-user
</Location>
"""

LOC_SOCACHE = """
<Location "@PATH@">
    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider socache file
    AuthUserFile "@FILE@"
    AuthnCacheProvideFor file
    AuthnCacheContext "bench-socache"
    AuthnCacheTimeout 3600
    Require valid-user
</Location>
"""


class Location:
    def __init__(self, path, label, template, headers, expect=200, file=None, challenge=None,
                 prime=False):
        self.path = path
        self.label = label          # how it is protected, for the table
        self.template = template
        self.headers = headers      # the file of Authorization values wrk rotates over
        self.expect = expect        # the only status this location may answer under load
        self.file = file
        self.challenge = challenge  # the scheme of the 401 without credentials (None: 200)
        self.prime = prime          # send every header once before the run (socache)

    def conf(self, dbmtype="SDBM"):
        return (self.template.replace("@PATH@", self.path).replace("@REALM@", REALM)
                .replace("@FILE@", str(self.file or "")).replace("@DBMTYPE@", dbmtype))


ACTIVE = []   # httpds running; stopped by stop_all() whatever happens
ALL = []      # every httpd made in this run, for the error-log scan


class Httpd:
    def __init__(self, base, name, store, locations, socache_bytes=0, dbmtype="SDBM", module=None,
                 mpm=MPM_EVENT, user=USER_GROUP):
        self.dir = base / name
        rmtree(self.dir)
        make_dir(self.dir)
        make_dir(self.dir / "run")
        self.htdocs = make_dir(self.dir / "htdocs")
        for loc in locations:
            f = self.htdocs / loc.path.strip("/")
            f.write_text("ok\n")
            os.chmod(f, 0o644)
        self.locations = locations
        self.port = free_port()
        socache = ""
        if socache_bytes:
            socache = f'AuthnCacheSOCache "shmcb:{self.dir}/run/authn-socache({socache_bytes})"'
        text = CONF.replace("@MPM@", mpm).replace("@USER@", user)
        text = text.replace("@LOCATIONS@", "".join(l.conf(dbmtype) for l in locations))
        for k, v in {"@DIR@": str(self.dir), "@PORT@": str(self.port), "@MODDIR@": MODDIR,
                     "@MODULE@": module, "@HTDOCS@": str(self.htdocs), "@STORE@": str(store),
                     "@SOCACHE@": socache, "@LAST_USED@": LAST_USED_CONF}.items():
            text = text.replace(k, v)
        self.conf = self.dir / "httpd.conf"
        self.conf.write_text(text)
        self.error_log = self.dir / "error.log"
        self.proc = None
        self.out = None
        self.stopped_at = None
        ALL.append(self)

    def start(self, timeout=30):
        self.out = open(self.dir / "stdout.txt", "wb")
        self.proc = subprocess.Popen([APACHE, "-f", str(self.conf), "-D", "FOREGROUND"],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        ACTIVE.append(self)
        return self.wait_listening(self.dir / "stdout.txt", timeout, "httpd")

    def wait_listening(self, stdout_path, timeout, what):
        """Returns self once the port accepts connections; stops the process
        and raises SetupError with its output if it exits or times out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            if port_open(self.port):
                return self
            time.sleep(0.05)
        out = stdout_path.read_text(errors="replace")
        err = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
        self.stop()
        raise SetupError(f"{what} did not start ({self.conf}):\n{out[-3000:]}\n{err[-3000:]}")

    def stop(self):
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.stopped_at = time.time()
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)   # our own httpd's group only
                    except ProcessLookupError:
                        pass
                    self.proc.wait(timeout=10)
        finally:
            self.proc = None
            if self.out:
                self.out.close()
            if self in ACTIVE:
                ACTIVE.remove(self)

    def children(self):
        """PIDs of the parent's children (the httpd processes that serve requests)."""
        parent = self.proc.pid
        kids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/status") as f:
                    for line in f:
                        if line.startswith("PPid:"):
                            if int(line.split()[1]) == parent:
                                kids.append(int(d))
                            break
            except OSError:
                continue
        return sorted(kids)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


def stop_all():
    for h in list(ACTIVE):
        try:
            h.stop()
        except Exception as e:  # keep stopping the others
            log(f"warning: stopping httpd in {h.dir}: {e}")


def request(port, path, auth=None, timeout=10):
    """One request on a new connection: (status, [WWW-Authenticate values])."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Authorization": auth} if auth else {})
        r = c.getresponse()
        r.read()
        return r.status, r.headers.get_all("WWW-Authenticate") or []
    finally:
        c.close()


def first_line(path):
    with open(path) as f:
        return f.readline().rstrip("\n")


def preflight(h, locations=None, timeout=10):
    """Every location (or those given): without credentials (200 for /open, else
    401 with the right challenge: a check that the section really applies), and
    with its first credential (the expected status)."""
    problems = []
    for loc in (h.locations if locations is None else locations):
        st, ch = request(h.port, loc.path, timeout=timeout)
        if loc.challenge is None:
            if st != 200:
                problems.append(f"{loc.path} without credentials: {st}, expected 200")
        else:
            if st != 401:
                problems.append(f"{loc.path} without credentials: {st}, expected 401")
            elif not any(c.lower().startswith(loc.challenge.lower() + " ") for c in ch):
                problems.append(f"{loc.path}: challenges {ch}, expected one for {loc.challenge}")
        st, _ = request(h.port, loc.path, first_line(loc.headers), timeout=timeout)
        if st != loc.expect:
            problems.append(f"{loc.path} with its first credential: {st}, expected {loc.expect}")
    return problems


def prime(h, loc, workers=2, deadline_s=600):
    """Sends each of loc's headers once (keep-alive, a few connections): fills
    mod_authn_socache's cache before the timed run. Returns bad statuses."""
    headers = [l for l in open(loc.headers).read().splitlines() if l]
    bad = {}
    lock = threading.Lock()
    end = time.monotonic() + deadline_s

    def work(part):
        c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        try:
            for auth in part:
                if time.monotonic() > end:
                    break
                try:
                    c.request("GET", loc.path, headers={"Authorization": auth})
                    r = c.getresponse()
                    r.read()
                    st = r.status
                except (OSError, http.client.HTTPException):
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
                    st = "error"
                if st != loc.expect:
                    with lock:
                        bad[st] = bad.get(st, 0) + 1
        finally:
            c.close()

    parts = [headers[i::workers] for i in range(workers)]
    ts = [threading.Thread(target=work, args=(p,), daemon=True) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join(deadline_s + 30)
    return bad


# ---------------------------------------------------------------- wrk

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def httpd_cpu_seconds(h):
    """User + system CPU time of every process of this httpd (its session):
    what serving the requests cost, whatever the scheduler did with wrk."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid pgrp session ... utime(12) stime(13)
        if int(fields[3]) == h.proc.pid:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def run_wrk(url, headers, threads, connections, duration, go, cpu_seconds, prefix=()):
    """One wrk run of rotate.lua on URL with the header lines in HEADERS; GO
    is the file its threads wait for. Returns rotate.lua's figures with
    `rps`, and `cpu_us`: the server's CPU per request, from cpu_seconds()
    (its CPU so far) before and after. PREFIX runs wrk under a command
    (taskset). Raises SetupError when wrk fails."""
    go.unlink(missing_ok=True)
    cmd = [*prefix, WRK, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
           "-s", str(LUA), url, str(headers), str(threads), str(go)]
    cpu_before = cpu_seconds()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=duration + 60)
    cpu_used = cpu_seconds() - cpu_before
    m = re.search(r"^CPTBENCH (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise SetupError(f"wrk failed on {url} ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
    r["cpu_us"] = cpu_used * 1e6 / r["requests"] if r["requests"] else 0.0
    r["statuses"] = {int(k): v for k, v in r["statuses"].items()}
    return r


def wrk(h, loc, s, duration=None):
    # rotate.lua starts sending once its last thread is ready
    return run_wrk(h.url(loc.path), loc.headers, s["threads"], s["connections"], duration or s["duration"],
                   h.dir / "wrk-go", lambda: httpd_cpu_seconds(h))


def warm_up(h, loc, s, failures, what):
    """An untimed wrk run on /open right after start: mpm_event starts its
    third child and the caches settle before anything is measured."""
    r = wrk(h, loc, s, duration=s["warmup"])
    p = status_problem(loc, r)
    if p:
        failures.append(f"{what} warm-up: {p}")


def status_problem(loc, r):
    """A message when a run got a status it should not (or nothing at all)."""
    wrong = {st: n for st, n in r["statuses"].items() if st != loc.expect}
    if wrong:
        return (f"{loc.path}: {sum(wrong.values())} responses with a wrong status "
                f"({fmt_statuses(wrong)}; expected only {loc.expect})")
    if not r["statuses"].get(loc.expect):
        return f"{loc.path}: no response at all ({r})"
    return None


def fmt_statuses(st):
    return ", ".join(f"{k}: {v}" for k, v in sorted(st.items()))


# ---------------------------------------------------------------- sections

def header_file(path, lines):
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


def make_locations(s, fx, run_dir):
    """The locations of the side-by-side table, their header files (written to
    run_dir/headers) and fixtures: (locations, store, socache_bytes). With
    BENCH_PATHS, only /open and those paths, and only their fixtures are made."""
    n, k = s["tokens"], s["rotate"]
    store = fx.store(n)
    idx = sample(n, k)
    toks = read_tokens(store, idx)
    hd = make_dir(run_dir / "headers")
    cpanel_h = header_file(hd / "cptoken.txt", [f"cpanel {u}:{t}" for u, _, t in toks])

    def bad_h():
        bad = [l for l in open(fx.bad_tokens(k)).read().split()]
        return header_file(hd / "cptoken-bad.txt", [f"cpanel {u}:{b}" for (u, _, _), b in zip(toks, bad)])

    # (path, what the location needs, made only when the location is kept)
    def basic_h():
        return header_file(hd / "cptoken-basic.txt", [basic(u, t) for u, _, t in toks])

    wanted = [
        ("/cptoken", lambda: Location("/cptoken", f"AuthType cpanel, {n:,} tokens, rotating over {len(toks):,}",
                                      LOC_CPANEL, cpanel_h, challenge="cpanel")),
        ("/cptoken-basic", lambda: Location(
            "/cptoken-basic", f"AuthType Basic + AuthBasicProvider cptoken, same store and tokens",
            LOC_CPTOKEN_BASIC, basic_h(), challenge="Basic")),
        ("/floor", lambda: Location(
            "/floor", "AuthType Basic + mod_authn_anon (any user, nothing checked): httpd's own part, the floor",
            LOC_FLOOR, basic_h(), challenge="Basic")),
        ("/file-bcrypt", lambda: Location(
            "/file-bcrypt", f"mod_authn_file, htpasswd -B (cost 5), rotating over {s['bcrypt']:,} users",
            LOC_FILE, header_file(hd / "file-bcrypt.txt", [basic(user_name(i), password(i))
                                                            for i in range(s["bcrypt"])]),
            file=fx.bcrypt_file(s["bcrypt"]), challenge="Basic")),
        ("/dbm", lambda: Location(
            "/dbm", f"mod_authn_dbm SDBM (httxt2dbm), {{SHA}}, {n:,} users, rotating over {len(idx):,}",
            LOC_DBM, header_file(hd / "dbm.txt", [basic(user_name(i), password(i)) for i in idx]),
            file=fx.dbm(n), challenge="Basic")),
        ("/socache", lambda: Location(
            "/socache", f"mod_authn_socache (shmcb) + mod_authn_file {{SHA}}, {k:,} users, all cached",
            LOC_SOCACHE, header_file(hd / "socache.txt", [basic(user_name(i), password(i)) for i in range(k)]),
            file=fx.sha1_file(k), challenge="Basic", prime=True)),
        ("/cptoken-bad", lambda: Location(
            "/cptoken-bad", f"AuthType cpanel, unknown tokens (expect 401), rotating over {len(toks):,}",
            LOC_CPANEL, bad_h(), expect=401, challenge="cpanel")),
    ]
    locs = [Location("/open", "no authentication (rotating cpanel headers, ignored)", LOC_OPEN, cpanel_h)]
    locs += [make() for path, make in wanted if not s["paths"] or path in s["paths"]]
    # mod_authn_socache keys all start with the context, so shmcb puts them all
    # in one of its subcaches: about 32 KiB of cache per user (research notes).
    socache_bytes = max(512000, 32768 * k) if any(l.path == "/socache" for l in locs) else 0
    return locs, store, socache_bytes


def bench_locations(s, fx, run_dir, failures, tag="bench"):
    """The side-by-side table: every location, s['rounds'] rounds, a fresh
    httpd each round. Within a round /open runs before the first location and
    after every location, so that each location's ratio is taken against the
    /open runs right beside it: on this VM throughput drifts by 10-40% within
    a minute, and a ratio to an /open run a minute away measures the drift.
    The order of the other locations is rotated each round."""
    locs, store, socache_bytes = make_locations(s, fx, run_dir)
    results = {l.path: [] for l in locs}
    open_loc, others = locs[0], locs[1:]
    for rnd in range(s["rounds"]):
        order = others[rnd % len(others):] + others[:rnd % len(others)]
        sequence = [open_loc]
        for loc in order:
            sequence += [loc, open_loc]
        h = Httpd(run_dir, f"{tag}-round{rnd + 1}", store / "db", locs, socache_bytes=socache_bytes,
                  module=s["module"])
        h.start()
        try:
            problems = preflight(h)
            if problems:
                raise SetupError("preflight failed (see " + str(h.error_log) + "):\n  " + "\n  ".join(problems))
            warm_up(h, open_loc, s, failures, f"round {rnd + 1}")
            for position, loc in enumerate(sequence):
                if loc.prime:
                    t0 = time.monotonic()
                    badp = prime(h, loc)
                    log(f"  round {rnd + 1}: primed {loc.path} in {time.monotonic() - t0:.1f} s")
                    if badp:
                        failures.append(f"{loc.path} priming: wrong statuses {badp}")
                r = wrk(h, loc, s)
                r["round"] = rnd + 1
                r["position"] = position
                results[loc.path].append(r)
                e = r["errors"]
                log(f"  round {rnd + 1}: {loc.path:15} {r['rps']:9.0f} req/s  {r['cpu_us']:6.1f} us CPU/req"
                    f"  p50 {r['p50_us'] / 1000:.2f} ms"
                    f"  p99 {r['p99_us'] / 1000:.2f} ms  [{fmt_statuses(r['statuses'])}]"
                    + (f"  errors c/r/w/t {e['connect']}/{e['read']}/{e['write']}/{e['timeout']}"
                       if e['connect'] + e['read'] + e['write'] + e['timeout'] else ""))
                p = status_problem(loc, r)
                if p:
                    failures.append(f"round {rnd + 1}: {p}")
        finally:
            h.stop()
    return locs, results


def beside_open(results, r, key):
    """The mean of `key` over the /open runs just before and just after run
    `r` in its round (for /open itself: its neighbours two places away)."""
    step = 2 if r.get("position", 0) % 2 == 0 else 1
    near = [o[key] for o in results.get("/open", [])
            if o["round"] == r["round"] and abs(o["position"] - r["position"]) == step]
    return sum(near) / len(near) if near else None


# ---------------------------------------------------------------- instructions per request (callgrind)

class CallgrindHttpd(Httpd):
    """httpd -X (prefork, one process) under callgrind, started as www-data from
    the beginning: callgrind cannot write its output once the process has
    changed user, so httpd must never setuid (no User/Group in the config;
    httpd does not change user when it is not root). Its directory belongs to
    www-data, which writes the pid file, the error log and callgrind's output."""

    def __init__(self, base, name, store, locations, socache_bytes=0, module=None):
        super().__init__(base, name, store, locations, socache_bytes=socache_bytes, module=module,
                         mpm=MPM_PREFORK, user="")
        pw = pwd.getpwnam(HTTPD_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.groups = os.getgrouplist(HTTPD_USER, pw.pw_gid)
        for root, dirs, files in os.walk(self.dir):
            for x in [root] + [os.path.join(root, f) for f in files]:
                os.chown(x, self.uid, self.gid)
        self.returncode = None
        self.out_file = None

    def start(self, tag, timeout=60):
        """Starts one session; its callgrind output is DIR/callgrind.out.TAG.PID."""
        try:
            os.unlink(self.dir / "httpd.pid")   # a stale pid file stops httpd from starting
        except FileNotFoundError:
            pass
        self.returncode = None
        self.out = open(self.dir / f"stdout.{tag}.txt", "wb")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": str(self.dir)}
        self.proc = subprocess.Popen(
            [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={self.dir}/callgrind.out.{tag}.%p",
             APACHE, "-X", "-f", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT, cwd=self.dir,
            env=env, user=self.uid, group=self.gid, extra_groups=self.groups, start_new_session=True)
        self.out_file = self.dir / f"callgrind.out.{tag}.{self.proc.pid}"
        ACTIVE.append(self)
        return self.wait_listening(self.dir / f"stdout.{tag}.txt", timeout, "httpd under callgrind")

    def stop(self):
        """SIGTERM to the process (valgrind is the httpd process) and wait for
        it to exit and write its output (the base class: SIGKILL after 30 s)."""
        p = self.proc
        super().stop()
        if p is not None:
            self.returncode = p.returncode

    def instructions(self):
        """The total Ir of the session that just ended (callgrind's summary line)."""
        try:
            text = self.out_file.read_text(errors="replace")
        except FileNotFoundError:
            raise SetupError(f"no callgrind output {self.out_file} (exit status {self.returncode})")
        ev = re.search(r"^events:\s*(.*)$", text, re.M)
        m = re.search(r"^summary:\s*(\d+)", text, re.M) or re.search(r"^totals:\s*(\d+)", text, re.M)
        if not ev or ev.group(1).split()[0] != "Ir" or not m:
            raise SetupError(f"{self.out_file}: no 'events: Ir' and summary line "
                             f"(exit status {self.returncode})")
        return int(m.group(1))


def send_rotating(conn, loc, count, statuses):
    """`count` GETs of loc.path on the keep-alive connection `conn`, each with
    the next of loc's headers from its first line; adds each status to
    `statuses`. Raises OSError or http.client.HTTPException."""
    headers = [l for l in open(loc.headers).read().splitlines() if l]
    for i in range(count):
        conn.request("GET", loc.path, headers={"Authorization": headers[i % len(headers)]})
        r = conn.getresponse()
        r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1


def cg_session(h, loc, n, n_prime, tag):
    """One httpd session under callgrind: the location's preflight, n_prime
    priming requests, then n counted requests, all but the preflight on one
    keep-alive connection, rotating over the location's header file from its
    first line. Returns (Ir of the whole session, {status: count} of the
    priming and counted requests, problems)."""
    statuses = {}
    h.start(tag)
    try:
        problems = preflight(h, [loc], timeout=120)
        c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=120)
        try:
            send_rotating(c, loc, n_prime, statuses)
            send_rotating(c, loc, n, statuses)
        except (OSError, http.client.HTTPException) as e:
            problems.append(f"request {sum(statuses.values()) + 1} of the session: {e!r}")
        finally:
            c.close()
        time.sleep(0.3)   # let httpd finish with the closed connection before SIGTERM
    finally:
        h.stop()
    if h.returncode not in (0, -signal.SIGTERM):
        problems.append(f"httpd under callgrind exited with status {h.returncode}")
    return h.instructions(), statuses, problems


def bench_instructions(s, fx, run_dir, failures):
    """Instructions per request under callgrind (user space of httpd): for each
    location two sessions of the same httpd -X, serving N1 and N2 requests;
    (Ir(N2) - Ir(N1)) / (N2 - N1), so that start-up and shut-down cancel out."""
    locs, store, socache_bytes = make_locations(s, fx, run_dir)
    # This httpd runs as www-data from the start: it must be able to read the
    # module, which may sit in a checkout only root can enter.
    module_copy = run_dir / "mod_cptoken.so"
    shutil.copyfile(s["module"], module_copy)
    os.chmod(module_copy, 0o755)
    h = CallgrindHttpd(run_dir, "callgrind", store / "db", locs, socache_bytes=socache_bytes,
                       module=str(module_copy))
    out = []
    t_all = time.monotonic()
    try:
        for loc in locs:
            bc = loc.path == "/file-bcrypt"
            n1, n2 = (s["cg_bcrypt_n1"], s["cg_bcrypt_n2"]) if bc else (s["cg_n1"], s["cg_n2"])
            # /socache: both sessions first send the headers the session will use, once
            # each (the same priming in both, so it cancels), so that every counted
            # request is a cache hit.
            n_prime = min(n2, sum(1 for l in open(loc.headers) if l.strip())) if loc.prime else 0
            t0 = time.monotonic()
            r = dict(path=loc.path, n1=n1, n2=n2, n_prime=n_prime, expect=loc.expect)
            try:
                ir = {}
                for n in (n1, n2):
                    ir[n], st, problems = cg_session(h, loc, n, n_prime, f"{loc.path.strip('/')}-{n}")
                    wrong = {k: v for k, v in st.items() if k != loc.expect}
                    if wrong or st.get(loc.expect, 0) != n + n_prime:
                        problems.append(f"statuses {fmt_statuses(st)} for {n_prime + n} requests, "
                                        f"expected only {loc.expect}")
                    for p in problems:
                        failures.append(f"instructions {loc.path} ({n} requests): {p}")
                r.update(ir1=ir[n1], ir2=ir[n2], per_req=(ir[n2] - ir[n1]) / (n2 - n1),
                         seconds=time.monotonic() - t0)
                log(f"  {loc.path:15} {r['per_req'] / 1000:9.1f} k instructions/request "
                    f"({n1} and {n2} requests, {r['seconds']:.0f} s)")
            except SetupError as e:
                failures.append(f"instructions {loc.path}: {e}")
                r["error"] = str(e).splitlines()[0]
            out.append(r)
    finally:
        h.stop()
    log(f"  instructions section: {time.monotonic() - t_all:.0f} s")
    return out


def proc_memory(pid):
    """kB figures of one process: VmRSS, RssAnon, RssFile, RssShmem (status) and
    Rss, Anonymous, Private_Dirty (smaps_rollup)."""
    m = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                m[k] = int(v.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Rss", "Anonymous", "Private_Dirty", "Pss"):
                m[k] = int(v.split()[0])
    m["File"] = m["Rss"] - m["Anonymous"] - m.get("RssShmem", 0)
    return m


def bench_memory(s, fx, run_dir, failures):
    """httpd children's memory with a small and a large store, after the same
    load: wrk on /cptoken for BENCH_DURATION, rotating over the same number of
    tokens (min(BENCH_ROTATE, BENCH_MEM_SMALL))."""
    out = []
    k = min(s["rotate"], s["mem_small"], s["mem_large"])
    for label, n in (("small", s["mem_small"]), ("large", s["mem_large"])):
        store = fx.store(n)
        toks = read_tokens(store, sample(n, k))
        hf = header_file(run_dir / "headers" / f"mem-{n}.txt", [f"cpanel {u}:{t}" for u, _, t in toks])
        loc = Location("/cptoken", "", LOC_CPANEL, hf, challenge="cpanel")
        open_loc = Location("/open", "", LOC_OPEN, hf)
        h = Httpd(run_dir, f"memory-{n}", store / "db", [open_loc, loc], module=s["module"])
        h.start()
        try:
            problems = preflight(h)
            if problems:
                raise SetupError("preflight failed:\n  " + "\n  ".join(problems))
            warm_up(h, open_loc, s, failures, f"memory ({n:,} tokens)")
            before = {pid: proc_memory(pid) for pid in h.children()}
            r = wrk(h, loc, s)
            p = status_problem(loc, r)
            if p:
                failures.append(f"memory ({n:,} tokens): {p}")
            time.sleep(0.2)
            kids = h.children()
            mem = {pid: proc_memory(pid) for pid in kids}
            out.append(dict(label=label, tokens=n, rotate=len(toks), rps=r["rps"],
                            statuses=r["statuses"], before=before, after=mem,
                            db_bytes=os.path.getsize(store / "db" / "tokens.mdb")))
            log(f"  memory {n:,} tokens: {len(kids)} children, after load anon "
                + ", ".join(f"{m['Anonymous']} kB" for m in mem.values()))
        finally:
            h.stop()
    return out


def revoke_trial(port, path, auth, revoke_cmd, rng, max_requests=20000, limit_s=10.0):
    """A keep-alive client sends `auth` continuously from a thread while this
    thread revokes the token. Returns what happened, times relative to the
    moment revoke returned."""
    recs = []            # (sent, received, status)
    shared = {"returned": None, "stop": False}

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        end = time.monotonic() + limit_s
        after_401 = 0
        try:
            while len(recs) < max_requests and time.monotonic() < end and not shared["stop"]:
                t0 = time.monotonic()
                try:
                    c.request("GET", path, headers={"Authorization": auth})
                    resp = c.getresponse()
                    resp.read()
                    st = resp.status
                except (OSError, http.client.HTTPException):
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    st = None
                t1 = time.monotonic()
                recs.append((t0, t1, st))
                ret = shared["returned"]
                if ret is not None and st == 401 and t0 > ret:
                    after_401 += 1
                    if after_401 >= 5:
                        break
        finally:
            c.close()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    end = time.monotonic() + 5
    while sum(1 for r in recs if r[2] == 200) < 20 and time.monotonic() < end and t.is_alive():
        time.sleep(0.005)
    ok_before = sum(1 for r in recs if r[2] == 200)
    if ok_before < 20:
        shared["stop"] = True
        t.join(15)
        return dict(error=f"the token was not accepted before revoke ({ok_before} x 200 of {len(recs)})")
    time.sleep(rng.uniform(0, 0.01))   # revoke at a random phase of the request loop
    t_call = time.monotonic()
    p = run(revoke_cmd, timeout=30, check=False)
    t_ret = time.monotonic()
    shared["returned"] = t_ret
    t.join(limit_s + 15)
    shared["stop"] = True
    if p.returncode != 0:
        return dict(error=f"revoke failed ({p.returncode}): {p.stderr.strip()}")
    recs = list(recs)
    sent_after = [r for r in recs if r[0] > t_ret]
    ok_after = [r for r in sent_after if r[2] == 200]
    first_401 = min((r[1] for r in recs if r[2] == 401), default=None)
    others = sorted({r[2] for r in recs if r[2] not in (200, 401)}, key=str)
    last_200 = max((r[1] for r in recs if r[2] == 200), default=None)
    return dict(requests=len(recs), revoke_ms=(t_ret - t_call) * 1000,
                sent_after=len(sent_after), ok_sent_after=len(ok_after),
                first_401_ms=None if first_401 is None else (first_401 - t_ret) * 1000,
                last_200_ms=None if last_200 is None else (last_200 - t_ret) * 1000,
                others=others)


def bench_revocation(s, fx, run_dir, failures):
    """Time from `cptoken revoke` returning to the first 401, in a fresh store
    of its own (the cached stores are never changed)."""
    trials = s["revoke_trials"]
    sd = make_dir(run_dir / "revoke-store")
    db = sd / "db"
    fx.cptoken("--db", db, "init", "--group", HTTPD_USER)
    names = [f"r{i:03d}" for i in range(trials)]
    out = fx.cptoken("--db", db, "bulk-create", "-", input_text="".join(f"rev {nm}\n" for nm in names)).stdout
    toks = {l.split()[1]: l.split()[2] for l in out.splitlines() if l.strip()}
    hf = header_file(sd / "first.txt", [f"cpanel rev:{toks[names[0]]}"])
    loc = Location("/cptoken", "", LOC_CPANEL, hf, challenge="cpanel")
    h = Httpd(run_dir, "revoke", db, [loc], module=s["module"])
    h.start()
    rng = random.Random(1)
    res = []
    try:
        problems = preflight(h)
        if problems:
            raise SetupError("preflight failed:\n  " + "\n  ".join(problems))
        for i, nm in enumerate(names):
            r = revoke_trial(h.port, loc.path, f"cpanel rev:{toks[nm]}",
                             [s["cptoken"], "--db", db, "revoke", "rev", nm], rng)
            r["trial"] = i + 1
            res.append(r)
            if "error" in r:
                failures.append(f"revocation trial {i + 1}: {r['error']}")
                continue
            if r["ok_sent_after"]:
                failures.append(f"revocation trial {i + 1}: {r['ok_sent_after']} requests sent after "
                                f"revoke returned got 200")
            if r["first_401_ms"] is None:
                failures.append(f"revocation trial {i + 1}: no 401 within the time limit")
            if r["others"]:
                failures.append(f"revocation trial {i + 1}: unexpected statuses {r['others']}")
    finally:
        h.stop()
    return res


def bench_create(s, fx, run_dir):
    """`cptoken bulk-create` of BENCH_BULK lines into a fresh store, then
    BENCH_SINGLE_CREATES single `cptoken create` commands into the same store."""
    n = s["bulk"]
    d = make_dir(run_dir / "bulk-store")
    db = d / "db"
    try:
        fx.cptoken("--db", db, "init", "--group", HTTPD_USER)
        with open(d / "in.txt", "w") as f:
            for i in range(n):
                f.write(f"{user_name(i)} t\n")
        with open(d / "in.txt") as fin, open(d / "out.txt", "w") as fout:
            t0 = time.monotonic()
            run([s["cptoken"], "--db", db, "bulk-create", "-"], stdin=fin, stdout=fout, timeout=3600)
            bulk_s = time.monotonic() - t0
        got = sum(1 for _ in open(d / "out.txt"))
        if got != n:
            raise SetupError(f"bulk-create printed {got} lines for {n}")
        m = s["single_creates"]
        t0 = time.monotonic()
        for i in range(m):
            p = run([s["cptoken"], "--db", db, "create", f"single{i:04d}", "t"], timeout=60)
            if not re.fullmatch(r"[A-Z0-9]{32}", p.stdout.strip()):
                raise SetupError(f"cptoken create printed {p.stdout!r}")
        single_s = time.monotonic() - t0
        size = os.path.getsize(db / "tokens.mdb")
    finally:
        rmtree(d)
    log(f"  bulk-create {n:,}: {bulk_s:.2f} s; {m} single creates: {single_s:.2f} s")
    return dict(n=n, bulk_s=bulk_s, bulk_rate=n / bulk_s, singles=m, single_s=single_s,
                single_rate=m / single_s, db_bytes=size)


# ---------------------------------------------------------------- error logs

TAG_RE = re.compile(r"\b(AH\d{5}|CPT\d{4}):")
WARN_RE = re.compile(r"^\[[^\]]*\] \[(?:[^\]:]*:)?(warn|error|crit|alert|emerg)\]")
# Expected: the refusals of /cptoken-bad and of revoked tokens (CPT0100), and
# mpm_event's AH03093 for keep-alive connections closed under it at shutdown.
EXPECTED_TAGS = {"CPT0100", "AH03093"}


def scan_logs(httpds):
    counts = {}
    unexpected = []
    for h in httpds:
        try:
            lines = h.error_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            if not WARN_RE.match(line):
                continue
            m = TAG_RE.search(line)
            tag = m.group(1) if m else "(no tag)"
            counts[(h.dir.name, tag)] = counts.get((h.dir.name, tag), 0) + 1
            if tag not in EXPECTED_TAGS:
                unexpected.append(f"{h.dir.name}: {line}")
            elif tag == "CPT0100" and 'reason="unknown token"' not in line:
                unexpected.append(f"{h.dir.name}: {line}")
    return counts, unexpected


# ---------------------------------------------------------------- report

def cpu_idle(seconds=1.0):
    """Share of CPU time idle over `seconds` (from /proc/stat): how busy the
    machine was with something else just before the run."""
    def snap():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return f[3] + f[4], sum(f)
    i0, t0 = snap()
    time.sleep(seconds)
    i1, t1 = snap()
    return 100.0 * (i1 - i0) / max(1, t1 - t0)


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ver = run([APACHE, "-v"], check=False).stdout.splitlines()
    wrkv = subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.splitlines()
    vg = subprocess.run([VALGRIND, "--version"], capture_output=True, text=True).stdout.strip() \
        if os.path.exists(VALGRIND) else "valgrind (missing)"
    return dict(nproc=os.cpu_count(), cpu=model, valgrind=vg or "valgrind",
                httpd=ver[0].split(":", 1)[1].strip() if ver else "?",
                wrk=wrkv[0].split(" Copyright")[0].strip() if wrkv else "?",
                kernel=platform.release(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                load=" ".join(open("/proc/loadavg").read().split()[:3]), idle=cpu_idle())


def ms(us):
    return f"{us / 1000:.2f}"


def location_summary(results, path):
    """The medians over the rounds of one location in a bench_locations()
    run: req/s, httpd CPU per request, p50 and p99, and each as a ratio to
    the /open runs beside it (None where not run)."""
    rs = results.get(path, [])
    if not rs:
        return None
    ratios, cpu_ratios, p99_ratios = [], [], []
    for r in rs:
        open_rps, open_cpu = beside_open(results, r, "rps"), beside_open(results, r, "cpu_us")
        open_p99 = beside_open(results, r, "p99_us")
        if open_rps:
            ratios.append(r["rps"] / open_rps)
        if open_cpu and r["cpu_us"]:
            cpu_ratios.append(open_cpu / r["cpu_us"])
        if open_p99:
            p99_ratios.append(r["p99_us"] / open_p99)
    return dict(rps=median([r["rps"] for r in rs]), ratio=median(ratios),
                cpu_us=median([r["cpu_us"] for r in rs]), cpu_ratio=median(cpu_ratios),
                p50_us=median([r["p50_us"] for r in rs]), p99_us=median([r["p99_us"] for r in rs]),
                p99_ratio=median(p99_ratios))


def locations_table(w, locs, results):
    """The side-by-side table of one bench_locations() run."""
    w("| location | req/s | ratio to /open | httpd CPU µs/req | CPU ratio | p50 ms | p99 ms | p99 ÷ /open's | per run | statuses (all rounds) | socket errors c/r/w/t |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for loc in locs:
        m = location_summary(results, loc.path)
        if m is None:
            w(f"| `{loc.path}` | - | - | - | - | - | - | - | not run | - | - |")
            continue
        rs = results[loc.path]
        st = {}
        for r in rs:
            for k, v in r["statuses"].items():
                st[k] = st.get(k, 0) + v
        err = [sum(r["errors"][x] for r in rs) for x in ("connect", "read", "write", "timeout")]
        per_run = " / ".join(format(r["rps"], ",.0f") for r in rs)
        w(f"| `{loc.path}` | {m['rps']:,.0f} | {m['ratio']:.3f} | "
          f"{m['cpu_us']:.1f} | {m['cpu_ratio']:.3f} | "
          f"{ms(m['p50_us'])} | {ms(m['p99_us'])} | "
          f"{m['p99_ratio']:.2f} | {per_run} | {fmt_statuses(st)} | {'/'.join(map(str, err))} |")
    w("")


def summary_json(s, results, serial, instr, failures):
    """What bench/table.py reads of a run (results.json beside results.md)."""
    def sections(res):
        return {path: location_summary(res, path) for path in res} if res else {}
    return dict(tokens=s["tokens"], rotate=s["rotate"], last_used=s["last_used"],
                full_load=sections(results), one_connection=sections(serial[1] if serial else None),
                instructions={r["path"]: r["per_req"] for r in instr if "per_req" in r},
                failures=failures)


def report(s, mach, locs, results, mem, rev, create, logcounts, unexpected, failures, load_end, elapsed,
           instr=(), serial=None):
    L = []
    w = L.append
    w(f"# httpd side by side: mod_cptoken and httpd's own auth modules{' (smoke run)' if s['smoke'] else ''}")
    w("")
    w(f"- machine: {mach['nproc']} CPUs, {mach['cpu']}, Linux {mach['kernel']}")
    w(f"- {mach['httpd']}, event MPM (Debian's sizes: 2 children x 25 threads to start, "
      f"MaxRequestWorkers 150), keep-alive, MaxKeepAliveRequests unlimited; {mach['wrk']}")
    w(f"- date: {mach['date']}; CPU idle in the second before the run {mach['idle']:.0f}%; "
      f"load average at start {mach['load']}, at end {load_end}; run took {elapsed / 60:.1f} min")
    w(f"- settings: BENCH_TOKENS={s['tokens']} BENCH_ROTATE={s['rotate']} "
      f"BENCH_BCRYPT_USERS={s['bcrypt']} BENCH_DURATION={s['duration']} BENCH_WARMUP={s['warmup']} "
      f"BENCH_ROUNDS={s['rounds']} "
      f"BENCH_THREADS={s['threads']} BENCH_CONNECTIONS={s['connections']} "
      f"BENCH_MEM_SMALL={s['mem_small']} BENCH_MEM_LARGE={s['mem_large']} "
      f"BENCH_REVOKE_TRIALS={s['revoke_trials']} BENCH_BULK={s['bulk']} "
      f"BENCH_SINGLE_CREATES={s['single_creates']} BENCH_CG_N1={s['cg_n1']} BENCH_CG_N2={s['cg_n2']} "
      f"BENCH_CG_BCRYPT_N1={s['cg_bcrypt_n1']} BENCH_CG_BCRYPT_N2={s['cg_bcrypt_n2']} "
      f"BENCH_SERIAL_DURATION={s['serial_duration']} BENCH_SERIAL_ROUNDS={s['serial_rounds']}"
      + ("" if s["callgrind"] else " BENCH_CALLGRIND=0")
      + ("" if s["last_used"] else " BENCH_LAST_USED=0")
      + (f" BENCH_ONLY={','.join(s['only'])}" if s["only"] else ""))
    w("- last used: " + ("on, the module's default (every use recorded in the usage table)" if s["last_used"]
                         else "off (CPTokenLastUsed Off at server level)"))
    w(f"- client: wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s -s bench/rotate.lua, "
      f"the same script on every location; a fresh httpd each round, warmed up by "
      f"{s['warmup']} s of wrk on /open (not counted), the order of the locations rotated each round")
    w("")
    if locs:
        w("## Requests per second")
        w("")
        w(f"Medians over {s['rounds']} round(s). Ratio: the median over the rounds of "
          f"(location / the mean of the two /open runs just before and just after it; each round "
          f"runs /open first and after every location). Latency: wrk's p50 and p99 (median over the rounds). "
          f"httpd CPU/req: user + system CPU time of all of httpd's processes during the run, divided "
          f"by the requests served; its ratio (/open's over the location's) is the throughput ratio "
          f"when httpd is the bottleneck, and it does not swing with how the VM schedules wrk "
          f"against httpd, as req/s does here (10-40% between identical runs).")
        w("")
        locations_table(w, locs, results)
        for loc in locs:
            w(f"- `{loc.path}`: {loc.label}; expected status {loc.expect}")
        w("")
        w("Socket errors: wrk's connect/read/write/timeout counts. Read errors are mostly keep-alive "
          "connections that mpm_event closed while all of a child's workers were busy "
          "(reconnects, see the research notes).")
        w("")
    if serial:
        w("## One connection at a time")
        w("")
        w(f"The same httpd, locations and script, driven by wrk -t1 -c1 -d{s['serial_duration']}s: one "
          f"keep-alive connection, one request in flight, so req/s is 1 / the round trip (client, "
          f"kernel and httpd in turn) and nothing queues. Same order as above ({s['serial_rounds']} "
          f"round(s), /open before the first location and after every location, ratios against the "
          f"two neighbouring /open runs). Under full load req/s swings by 10-40% between identical runs "
          f"on this VM; one connection at a time it moves by a few percent, so these ratios are the "
          f"steadier measure of what each check adds to a request.")
        w("")
        locations_table(w, *serial)
    if instr:
        w("## Instructions per request (callgrind)")
        w("")
        w(f"One httpd -X (prefork MPM, a single process, keep-alive, MaxKeepAliveRequests unlimited, "
          f"the same locations, fixtures and config text as above) under {mach['valgrind']} "
          f"`--tool=callgrind`, started as www-data (so it never changes user). For each location "
          f"two sessions of a fresh server: one serving N1 requests and one serving N2, on one "
          f"keep-alive connection (Python http.client), rotating over the location's header file "
          f"from its first line, every status checked. Instructions per request = "
          f"(Ir(N2) - Ir(N1)) / (N2 - N1): start-up, the preflight requests and shut-down cancel out. "
          f"Unlike req/s, these figures repeat: between identical runs here they moved by less than "
          f"0.5% (what is left depends on timing, such as how often httpd has to wait in poll() for "
          f"the next request).")
        w("")
        w("| location | k instructions/request | difference to /open (k) | /open ÷ location | N1 / N2 | Ir(N1) / Ir(N2) |")
        w("|---|---:|---:|---:|---|---|")
        base = next((r["per_req"] for r in instr if r["path"] == "/open" and "per_req" in r), None)
        for r in instr:
            if "per_req" not in r:
                w(f"| `{r['path']}` | error: {r.get('error', '?')} | | | | |")
                continue
            diff = "-" if base is None else f"{(r['per_req'] - base) / 1000:+,.1f}"
            ratio = "-" if base is None or r["per_req"] <= 0 else f"{base / r['per_req']:.3f}"
            w(f"| `{r['path']}`{' (401)' if r['expect'] != 200 else ''} | {r['per_req'] / 1000:,.1f} | "
              f"{diff} | {ratio} | {r['n1']} / {r['n2']} | {r['ir1']:,} / {r['ir2']:,} |")
        w("")
        so = next((r for r in instr if r["path"] == "/socache"), None)
        if so and so.get("n_prime"):
            w(f"`/socache` first sends each of the first {so['n_prime']:,} headers of its file once "
              f"(in both sessions, so it cancels), and then rotates over them: every counted request "
              f"is a cache hit, with {so['n_prime']:,} users in the cache ({s['rotate']:,} in the req/s "
              f"section above). shmcb puts all of them in one subcache and scans it on each lookup, "
              f"so a fuller cache costs more per request.")
            w("")
        w("These are user-space instructions of httpd only, all of its code and libraries "
          "(mod_cptoken, LMDB, APR, libc...). The kernel's share of a request (network and file I/O, "
          "the error-log write) is not counted, so real CPU ratios are closer to 1 than these. "
          "`/cptoken-bad` serves a 401 (and writes an error-log line) instead of the file, so it is "
          "not directly comparable with the others. `/file-bcrypt` runs fewer requests "
          f"({s['cg_bcrypt_n1']} / {s['cg_bcrypt_n2']}, bcrypt is slow under valgrind) and only reaches "
          "the first users of its file, so its scan of the file is shorter than above.")
        secs = sum(r.get("seconds", 0) for r in instr)
        w("")
        w(f"The callgrind sessions took {secs:.0f} s.")
        w("")
    if mem:
        w("## Memory of httpd's children")
        w("")
        k = mem[0]["rotate"]
        w(f"After {s['warmup']} s of wrk on `/open` (\"before load\") and then the same load on "
          f"`/cptoken` (wrk, {s['duration']} s, rotating over {k:,} tokens), "
          f"every child of the parent, in kB. VmRSS from /proc/PID/status; Rss, Anonymous (private) "
          f"and file-backed (Rss - Anonymous - RssShmem, mostly the memory-mapped store and the "
          f"libraries) from /proc/PID/smaps_rollup.")
        w("")
        w("| store | tokens.mdb | req/s | child | VmRSS | Rss | Anonymous | file-backed | shmem | before load: Anonymous | before load: file-backed |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for m in mem:
            for pid, x in sorted(m["after"].items()):
                b = m["before"].get(pid, {})
                ba = "-" if "Anonymous" not in b else format(b["Anonymous"], ",")
                bf = "-" if "File" not in b else format(b["File"], ",")
                w(f"| {m['tokens']:,} tokens | {m['db_bytes'] / 1048576:.0f} MiB | {m['rps']:,.0f} | {pid} | "
                  f"{x['VmRSS']:,} | {x['Rss']:,} | {x['Anonymous']:,} | {x['File']:,} | "
                  f"{x.get('RssShmem', 0):,} | {ba} | {bf} |")
        w("")
        w("\"-\": a child started during the load. File-backed pages of the store are the shared page "
          "cache, not a child's own memory; the kernel maps up to 64 KiB around each page a lookup "
          "touches (fault-around), so each lookup in a large store can add about 128 KiB to a "
          "child's Rss, shared with every other child.")
        w("")
        if len(mem) == 2:
            a = [median([x["Anonymous"] for x in m["after"].values()]) for m in mem]
            f_ = [median([x["File"] for x in m["after"].values()]) for m in mem]
            diff = a[1] - a[0]
            verdict = "holds" if diff <= max(2048, 0.1 * a[0]) else "DOES NOT HOLD"
            w(f"Median anonymous memory per child: {a[0]:,.0f} kB with {mem[0]['tokens']:,} tokens, "
              f"{a[1]:,.0f} kB with {mem[1]['tokens']:,} ({diff:+,.0f} kB). File-backed: {f_[0]:,.0f} "
              f"vs {f_[1]:,.0f} kB (pages of the store that were read). "
              f"Claim \"private memory does not grow with the store\" (within 2 MiB or 10%): **{verdict}**.")
            bf = [median([x["File"] for x in m["before"].values()]) for m in mem]
            if all(b == b for b in bf):
                w("")
                w(f"Before the `/cptoken` load (start-up and `/open` only), file-backed memory per child: "
                  f"{bf[0]:,.0f} kB with {mem[0]['tokens']:,} tokens, {bf[1]:,.0f} kB with "
                  f"{mem[1]['tokens']:,}: start-up {'does not read' if bf[1] <= bf[0] + 2048 else 'READS'} "
                  f"the store.")
            w("")
    if rev:
        w("## Revocation")
        w("")
        w("A keep-alive client (http.client, one connection) sends requests with token T in a loop in "
          "a thread; the main thread runs `cptoken revoke` (a fresh store of its own). Times in ms "
          "from the moment revoke returned; a negative delay means the first 401 arrived before "
          "the revoke process had exited (the transaction was already committed).")
        w("")
        w("| trial | requests | revoke took ms | sent after return | 200 among them | first 401 after return ms | last 200 ms |")
        w("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rev:
            if "error" in r:
                w(f"| {r['trial']} | error: {r['error']} | | | | | |")
                continue
            f4 = "none" if r["first_401_ms"] is None else f"{r['first_401_ms']:.2f}"
            l2 = "-" if r["last_200_ms"] is None else f"{r['last_200_ms']:.2f}"
            w(f"| {r['trial']} | {r['requests']} | {r['revoke_ms']:.1f} | {r['sent_after']} | "
              f"{r['ok_sent_after']} | {f4} | {l2} |")
        good = [r for r in rev if "error" not in r and r["first_401_ms"] is not None]
        if good:
            d = [r["first_401_ms"] for r in good]
            bad = sum(r["ok_sent_after"] for r in rev if "error" not in r)
            w("")
            w(f"{len(rev)} trials: requests sent after revoke returned that got 200: **{bad}** "
              f"(must be 0). Delay to the first 401: median {median(d):.2f} ms, max {max(d):.2f} ms.")
        w("")
    if create:
        c = create
        w("## Creating tokens")
        w("")
        w(f"- `cptoken bulk-create` of {c['n']:,} lines into a fresh store: {c['bulk_s']:.2f} s, "
          f"**{c['bulk_rate']:,.0f} tokens/s** (tokens.mdb {c['db_bytes'] / 1048576:.0f} MiB at the end)")
        w(f"- {c['singles']} single `cptoken create` commands into the same store: {c['single_s']:.2f} s, "
          f"**{c['single_rate']:,.1f} tokens/s** ({1000 * c['single_s'] / c['singles']:.1f} ms each, "
          f"process start included)")
        w("")
    w("## Error logs")
    w("")
    if logcounts:
        w("Lines at warn level or above, by httpd instance and tag (CPT0100 are the refusals of "
          "`/cptoken-bad` and of revoked tokens; AH03093 is mpm_event at shutdown):")
        w("")
        for (name, tag), nlines in sorted(logcounts.items()):
            w(f"- {name}: {tag} x {nlines:,}")
    else:
        w("No line at warn level or above.")
    if unexpected:
        w("")
        w(f"**Unexpected lines: {len(unexpected)}** (first 10):")
        w("")
        w("```")
        for u in unexpected[:10]:
            w(u)
        w("```")
    w("")
    if failures:
        w("## FAILED")
        w("")
        for f in failures:
            w(f"- {f}")
        w("")
    return "\n".join(L)


# ---------------------------------------------------------------- main

def main(argv):
    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    global LAST_USED_CONF
    try:
        s = settings(argv)
        LAST_USED_CONF = "" if s["last_used"] else "CPTokenLastUsed Off"
        check_tools(s)
    except SetupError as e:
        log(f"httpd_bench: {e}")
        return 2
    started = time.monotonic()
    bench_dir = make_dir(s["dir"])
    run_dir = bench_dir / "run"
    rmtree(run_dir)
    make_dir(run_dir)
    failures = []
    locs, results, mem, rev, create, instr, serial = [], {}, [], [], None, [], None
    mach = machine()
    log(f"httpd_bench: {'smoke' if s['smoke'] else 'full'} run in {bench_dir} "
        f"({s['tokens']:,} tokens, {s['rotate']:,} rotating, {s['duration']} s x {s['rounds']} rounds"
        + (f"; only {','.join(s['only'])}" if s["only"] else "")
        + ("" if s["callgrind"] else "; BENCH_CALLGRIND=0") + ")")
    code = 0
    try:
        fx = Fixtures(s)
        log("fixtures:")
        fx.store(s["tokens"])
        if want(s, "memory"):
            fx.store(s["mem_small"])
            fx.store(s["mem_large"])
        if want(s, "locations"):
            log("locations:")
            locs, results = bench_locations(s, fx, run_dir, failures)
        if want(s, "serial"):
            log("one connection:")
            one = dict(s, threads=1, connections=1, duration=s["serial_duration"], rounds=s["serial_rounds"])
            serial = bench_locations(one, fx, run_dir, failures, tag="serial")
        if want(s, "instructions"):
            log("instructions per request (callgrind):")
            instr = bench_instructions(s, fx, run_dir, failures)
        if want(s, "memory"):
            log("memory:")
            mem = bench_memory(s, fx, run_dir, failures)
        if want(s, "revocation"):
            log("revocation:")
            rev = bench_revocation(s, fx, run_dir, failures)
        for r in rev:
            if "error" not in r:
                f4 = "none" if r["first_401_ms"] is None else f"{r['first_401_ms']:.2f} ms"
                log(f"  trial {r['trial']}: {r['requests']} requests, first 401 {f4}, "
                    f"200 after return: {r['ok_sent_after']}")
        if want(s, "create"):
            log("create rates:")
            create = bench_create(s, fx, run_dir)
    except SetupError as e:
        failures.append(f"setup: {e}")
        code = 2
    except KeyboardInterrupt as e:
        log(f"httpd_bench: interrupted ({e}); stopping httpd")
        stop_all()
        return 130
    finally:
        stop_all()
    logcounts, unexpected = scan_logs(ALL)
    load_end = " ".join(open("/proc/loadavg").read().split()[:3])
    text = report(s, mach, locs, results, mem, rev, create, logcounts, unexpected, failures, load_end,
                  time.monotonic() - started, instr=instr, serial=serial)
    (bench_dir / "results.md").write_text(text + "\n")
    (bench_dir / "results.json").write_text(json.dumps(summary_json(s, results, serial, instr, failures)) + "\n")
    print(text, flush=True)
    if unexpected:
        log(f"httpd_bench: warning: {len(unexpected)} unexpected error-log lines (see results.md)")
    if failures:
        log("httpd_bench: FAILED:\n  " + "\n  ".join(failures))
        return code or 1
    log(f"httpd_bench: done; table in {bench_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

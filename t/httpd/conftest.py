# SPDX-License-Identifier: Apache-2.0
"""Harness of the real-server tests of mod_cptoken.

Each test gets its own private httpd (/usr/sbin/apache2 -f CONF -D FOREGROUND,
run as root with User/Group www-data), its own token store made with the real
`cptoken` tool, and talks to it with curl. Protected locations proxy to one
echo backend per session (echo_backend.py), which answers with the request's
headers as JSON, so a test sees exactly what a backend would see.

Paths: the module from $MOD_CPTOKEN (default ../../build/mod_cptoken.so), the
tool from $CPTOKEN (default ../../build/cptoken). A missing module fails the
tests; it never skips them. Everything httpd touches lives under one base
directory (mode 0755, so that the www-data children can reach it), removed at
the end of the session unless $CPTOKEN_HTTPD_KEEP is set.

Run: cd /work/main && /usr/bin/python3 -m pytest -q t/httpd   (as root: httpd
starts as root and its children run as www-data; needs curl and htpasswd).

Every test fails if its error log holds a line at warn level or above that
does not carry one of the tags the test declared with `srv.allow(...)`.
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ports import free_port  # noqa: E402,F401  (t/ports.py, shared with t/cluster; the tests import it from here)

HERE = Path(__file__).resolve().parent
MOD = os.environ.get("MOD_CPTOKEN") or str((HERE / ".." / ".." / "build" / "mod_cptoken.so").resolve())
# The manager instance's build of the module (with the etcd client: CPTokenEtcd), beside MOD.
MOD_MANAGER = os.environ.get("MOD_CPTOKEN_MANAGER") or str(Path(MOD).with_name("mod_cptoken_manager.so"))
CPTOKEN = os.environ.get("CPTOKEN") or str((HERE / ".." / ".." / "build" / "cptoken").resolve())
APACHE = "/usr/sbin/apache2"
MODDIR = "/usr/lib/apache2/modules"
PYTHON = "/usr/bin/python3"
# The sanitizer runtime httpd preloads when MOD_CPTOKEN was built with
# SANITIZE=1 (make httpd-asan-test); empty otherwise.
SANITIZER_RUNTIME = os.environ.get("CPTOKEN_HTTPD_PRELOAD", "")
SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")
MPMS = ("prefork", "worker", "event")
REALM = "cptoken test"
TOKEN_RE = re.compile(r"^[A-Z0-9]{32}$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

# Runs a test once per MPM: @ALL_MPMS above the test function.
ALL_MPMS = pytest.mark.parametrize("mpm", MPMS)

# Error-log lines at these levels fail a test unless it allows their tag.
BAD_LEVEL_RE = re.compile(r"^\[[^\]]*\] \[(?:[^\]:]*:)?(warn|error|crit|alert|emerg)\]")
LEVEL_RE = re.compile(r"^\[[^\]]*\] \[(?:[^\]:]*:)?([a-z0-9]+)\]")
TIME_RE = re.compile(r"^\[\w{3} (\w{3} +\d{1,2} \d{2}:\d{2}:\d{2})\.(\d{6}) (\d{4})\]")

# httpd's own noise while it shuts down (not the module's): mpm_event may log
# AH03093 "apr_pollset_add failure for keep alive" for a keep-alive
# connection, or AH03092 "process_lingering_close: apr_pollset_add failure"
# (EBADF) for one in lingering close, when the child's pollset is closed
# under it after SIGTERM (seen in CI under ASan, at a test's last stop and
# at one in the middle). The parent logs
# AH00045 "child process N still did not exit, sending a SIGTERM" when a
# child takes over 3 s to end (ASan on a loaded machine). Ignored only when
# logged while the test was stopping httpd, at any of its stops.
SHUTDOWN_NOISE = ("AH03093", "AH03092", "AH00045")


def line_time(line):
    """The wall-clock time of an error-log line, or None."""
    m = TIME_RE.match(line)
    if not m:
        return None
    t = time.strptime(" ".join(m.group(1).split()) + " " + m.group(3), "%b %d %H:%M:%S %Y")
    return time.mktime(t) + int(m.group(2)) / 1e6


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def basic(user, password):
    """The value of an Authorization header for HTTP Basic."""
    return "Basic " + b64(f"{user}:{password}")


# ---------------------------------------------------------------- the tool

class Store:
    """A token store directory; every call runs the real `cptoken --db DIR`."""

    def __init__(self, path):
        self.path = Path(path)

    def run(self, *args, check=True, env=None, timeout=30):
        env = {**os.environ, **(env or {})}
        env.pop("CPTOKEN_DB", None)
        env["LC_ALL"] = "C"
        p = subprocess.run([CPTOKEN, "--db", str(self.path), *[str(a) for a in args]],
                           capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, f"cptoken {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}{p.stdout}"
        return p

    def init(self):
        self.run("init", "--group", "www-data")
        return self

    def create(self, user, name, *extra):
        out = self.run("create", user, name, *extra).stdout.strip()
        assert TOKEN_RE.match(out), f"create printed {out!r}"
        return out

    def revoke(self, user, name):
        self.run("revoke", user, name)

    def edit(self, user, name, *args):
        self.run("edit", user, name, *args)


# ---------------------------------------------------------------- the client

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value), in order
        self.body = body

    def header(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def challenges(self):
        return self.header("WWW-Authenticate")

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"not JSON (status {self.status}): {self.body[:500]!r}")

    @property
    def backend_headers(self):
        """The headers the echo backend received, as {lower-case name: value}."""
        return {k.lower(): v for k, v in self.json["headers"].items()}

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:300]!r}>"


def curl(url, *, auth=None, user=None, headers=(), interface=None, method=None, data=None,
         timeout=15, workdir=None, args=()):
    """One request with the real curl. `auth` is a raw Authorization value,
    `user` a 'name:password' pair for curl -u (HTTP Basic), `args` more
    curl options (e.g. --path-as-is)."""
    d = tempfile.mkdtemp(dir=workdir, prefix="curl-")
    try:
        body_f, head_f = os.path.join(d, "body"), os.path.join(d, "head")
        cmd = ["curl", "-s", "-g", "--noproxy", "*", "--max-time", str(timeout),
               "-o", body_f, "-D", head_f, "-w", "%{http_code}"]
        if auth is not None:
            cmd += ["-H", f"Authorization: {auth}"]
        if user is not None:
            cmd += ["-u", user]
        for h in headers:
            cmd += ["-H", h]
        if interface:
            cmd += ["--interface", interface]
        if method:
            cmd += ["-X", method]
        if data is not None:
            cmd += ["--data-binary", data]
        cmd += list(args)
        cmd.append(url)
        p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
        code = p.stdout.decode().strip()
        assert p.returncode == 0 and code.isdigit() and code != "000", \
            f"curl failed (rc {p.returncode}, code {code!r}): {p.stderr.decode()} for {url}"
        raw = Path(head_f).read_bytes().decode("latin-1")
        blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip()]
        lines = blocks[-1].splitlines() if blocks else []
        hdrs = []
        for line in lines[1:]:
            if ":" in line:
                n, v = line.split(":", 1)
                hdrs.append((n.strip(), v.strip()))
        body = Path(body_f).read_bytes() if os.path.exists(body_f) else b""
        return Response(int(code), hdrs, body)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- ports

# free_port(): a port no other test process hands out meanwhile (t/ports.py).


def port_open(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False


def catches(pid, *signals):
    """Whether process `pid` has handlers for all of `signals`. httpd's parent
    sets its handlers for SIGTERM and SIGUSR1 when its MPM starts, after its
    port is open and after every module's post_config; sent before that, either
    signal kills it on the spot, without the cleanups a test may check."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return all(caught & (1 << (sig - 1)) for sig in signals)


def wait_until(pred, timeout=3.0, step=0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


def children_of(ppid):
    """The PIDs of the processes whose parent is PPID now."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(") ", 1)[1].split()[1]) == ppid:
                    pids.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def child_pids(srv):
    """The PIDs of SRV's httpd children now."""
    return children_of(srv.proc.pid)


# ---------------------------------------------------------------- config

CONF_TEMPLATE = r"""
ServerRoot "@DIR@"
PidFile "@DIR@/httpd.pid"
DefaultRuntimeDir "@DIR@/run"
ServerName 127.0.0.1
@LISTEN@
User @USER@
Group @GROUP@
Timeout 20
ErrorLog "@DIR@/error.log"

LoadModule mpm_@MPM@_module @MODDIR@/mod_mpm_@MPM@.so
<IfModule mpm_prefork_module>
    StartServers 2
    MinSpareServers 1
    MaxSpareServers 3
    ServerLimit 10
    MaxRequestWorkers 10
</IfModule>
<IfModule !mpm_prefork_module>
    StartServers 2
    ServerLimit 8
    ThreadLimit 4
    ThreadsPerChild 4
    MinSpareThreads 2
    MaxSpareThreads 12
    MaxRequestWorkers 16
</IfModule>

LoadModule authn_core_module @MODDIR@/mod_authn_core.so
LoadModule authz_core_module @MODDIR@/mod_authz_core.so
LoadModule authz_user_module @MODDIR@/mod_authz_user.so
LoadModule auth_basic_module @MODDIR@/mod_auth_basic.so
LoadModule authn_file_module @MODDIR@/mod_authn_file.so
LoadModule proxy_module @MODDIR@/mod_proxy.so
LoadModule proxy_http_module @MODDIR@/mod_proxy_http.so
LoadModule headers_module @MODDIR@/mod_headers.so
@EXTRA_MODULES@
LoadModule cptoken_module "@MODULE@"

LogLevel @LOGLEVEL@
LogFormat "%a %u \"%r\" %>s name=\"%{CPTOKEN_NAME}e\" expires=\"%{CPTOKEN_EXPIRES}e\"" cptoken
CustomLog "@DIR@/access.log" cptoken

DocumentRoot "@HTDOCS@"
<Directory "@HTDOCS@">
    Require all granted
</Directory>
ProxyTimeout 10

@BODY@
"""

# A protected location proxied to the echo backend. @PATH@, @AUTH@ (the
# authentication directives) and @MORE@ are filled in by api_location().
API_LOCATION = r"""
ProxyPass "@PATH@" "http://127.0.0.1:@BACKEND@@PATH@"
<Location "@PATH@">
@AUTH@
    RequestHeader set X-Remote-User expr=%{REMOTE_USER}
    RequestHeader set X-Cptoken-Name expr=%{reqenv:CPTOKEN_NAME}
    RequestHeader set X-Cptoken-Expires expr=%{reqenv:CPTOKEN_EXPIRES}
@MORE@
</Location>
"""

CPANEL_AUTH = """    AuthType cpanel
    AuthName "@REALM@"
    Require valid-user"""

# The same location's auth through mod_auth_basic and this module's provider.
BASIC_PROVIDER_AUTH = """    AuthType Basic
    AuthName "@REALM@"
    AuthBasicProvider cptoken
    Require valid-user"""


def api_location(path="/api", auth=CPANEL_AUTH, more=""):
    return API_LOCATION.replace("@PATH@", path).replace("@AUTH@", auth).replace("@MORE@", more)


DEFAULT_BODY = api_location()


def module_available():
    assert Path(MOD).is_file(), f"mod_cptoken is not built: {MOD} does not exist"
    assert Path(CPTOKEN).is_file(), f"cptoken is not built: {CPTOKEN} does not exist"


# ---------------------------------------------------------------- the server

def httpd_env(extra=None):
    """The environment to run apache2 in: ours, `extra`, and the sanitizer
    runtime first in LD_PRELOAD when the module was built with one."""
    env = {**os.environ, **(extra or {})}
    if SANITIZER_RUNTIME:  # make httpd-asan-test: httpd loads a sanitized module
        env["LD_PRELOAD"] = " ".join(filter(None, [SANITIZER_RUNTIME, env.get("LD_PRELOAD")]))
    return env


class Httpd:
    """A private httpd in its own directory, with its own store."""

    # Seconds stop() waits after SIGTERM before SIGKILL. A subclass that runs
    # httpd under a tool (t/leak/module_leaks.py: valgrind) gives it longer.
    stop_timeout = 20

    def __init__(self, base, backend_port, mpm):
        module_available()
        self.dir = Path(tempfile.mkdtemp(dir=base, prefix="srv-"))
        os.chmod(self.dir, 0o755)
        self.htdocs = self.dir / "htdocs"
        self.htdocs.mkdir()
        os.chmod(self.htdocs, 0o755)
        (self.dir / "run").mkdir()
        (self.dir / "work").mkdir()
        self.store = Store(self.dir / "store").init()
        self.backend_port = backend_port
        self.mpm = mpm
        self.port = None
        self.proc = None
        self.stops = []  # (SIGTERM sent, process gone) of each stop, for SHUTDOWN_NOISE
        self.allowed = set()
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.conf = self.dir / "httpd.conf"
        # Whom the children run as (User, Group): the manager instance's run as the store's owner.
        self.run_as = ("www-data", "www-data")
        # The module httpd loads: MOD, or MOD_MANAGER for a manager instance that writes to etcd.
        self.module = MOD

    # -- lifecycle

    def config_text(self, body, loglevel, extra_modules, listen=None, module=True):
        if listen is None:
            listen = "Listen 127.0.0.1:@PORT@\nListen [::1]:@PORT@"
        subst = {
            "@LISTEN@": listen,
            "@BODY@": body, "@EXTRA_MODULES@": extra_modules,
            "@DIR@": str(self.dir), "@HTDOCS@": str(self.htdocs), "@PORT@": str(self.port),
            "@MPM@": self.mpm, "@MODDIR@": MODDIR, "@MODULE@": self.module, "@LOGLEVEL@": loglevel,
            "@BACKEND@": str(self.backend_port), "@REALM@": REALM, "@STORE@": str(self.store.path),
            "@USER@": self.run_as[0], "@GROUP@": self.run_as[1],
        }
        text = CONF_TEMPLATE
        if not module:  # as after `apt-get remove`: the module's LoadModule gone, the sites still there
            text = text.replace('LoadModule cptoken_module "@MODULE@"\n', "")
        # Body first: it may itself hold @DIR@, @BACKEND@, @STORE@, ...
        text = text.replace("@BODY@", subst.pop("@BODY@"))
        for k, v in subst.items():
            text = text.replace(k, v)
        return text

    def start(self, body=None, *, db=True, loglevel="warn cptoken:info", extra_modules="", timeout=10,
              listen=None, env=None, module=True):
        """Writes the config and starts httpd; `db` adds `CPTokenDB <store>`
        at server level (or a path string to use instead); `env` adds
        variables to httpd's environment; `module=False` leaves mod_cptoken
        out."""
        assert self.proc is None
        if body is None:
            body = DEFAULT_BODY
        if db is True:
            body = f'CPTokenDB "{self.store.path}"\n' + body
        elif db:
            body = f'CPTokenDB "{db}"\n' + body
        self.port = free_port()
        self.conf.write_text(self.config_text(body, loglevel, extra_modules, listen, module))
        self.stdout = open(self.dir / "stdout.txt", "wb")
        self.proc = subprocess.Popen(self.command(),
                                     env=httpd_env(env),
                                     stdin=subprocess.DEVNULL, stdout=self.stdout,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.proc = None
                pytest.fail(f"httpd exited at start:\n{self.startup_output()}")
            if (port_open("127.0.0.1", self.port) and port_open("::1", self.port)
                    and catches(self.proc.pid, signal.SIGTERM, signal.SIGUSR1)):
                return self
            time.sleep(0.05)
        out = self.startup_output()
        self.stop()
        pytest.fail(f"httpd did not answer on port {self.port} (or its parent did not handle SIGTERM yet) "
                    f"within {timeout}s:\n{out}")

    def command(self):
        """The command line that runs this httpd in the foreground (a subclass may prefix a tool)."""
        return [APACHE, "-f", str(self.conf), "-D", "FOREGROUND"]

    def startup_output(self):
        out = (self.dir / "stdout.txt").read_text(errors="replace")
        return f"--- stdout/stderr ---\n{out}\n--- error.log ---\n{self.log_text()}"

    def stop(self):
        if self.proc is None:
            return
        sent = time.time()
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        finally:
            self.stops.append((sent, time.time()))
            self.proc = None
            self.stdout.close()

    def graceful(self):
        """Graceful restart (SIGUSR1 to the parent)."""
        os.kill(self.proc.pid, signal.SIGUSR1)

    # -- requests

    def url(self, path="/api/x", v6=False):
        host = "[::1]" if v6 else "127.0.0.1"
        return f"http://{host}:{self.port}{path}"

    def get(self, path="/api/x", *, v6=False, **kw):
        return curl(self.url(path, v6), workdir=self.dir / "work", **kw)

    # -- logs

    def allow(self, *tags):
        """Declares tags (e.g. 'CPT0100', 'AH01631') whose warn+ lines are expected."""
        self.allowed.update(tags)

    def log_bytes(self):
        try:
            return self.error_log.read_bytes()
        except FileNotFoundError:
            return b""

    def log_text(self):
        return self.log_bytes().decode("utf-8", errors="replace")

    def mark(self):
        """The current end of the error log; pass it to lines(since=...)."""
        return len(self.log_bytes())

    def lines(self, since=0, tag=None):
        text = self.log_bytes()[since:].decode("utf-8", errors="replace")
        out = text.splitlines()
        if tag:
            out = [l for l in out if f"{tag}:" in l]
        return out

    def wait_lines(self, since, tag, count=1, timeout=3.0):
        """Waits until at least `count` lines with `tag` follow `since`; returns them."""
        wait_until(lambda: len(self.lines(since, tag)) >= count, timeout)
        return self.lines(since, tag)

    def sanitizer_reports(self):
        """What AddressSanitizer or UBSan printed (children's stderr is the error log)."""
        out = ""
        for f in (self.error_log, self.dir / "stdout.txt"):
            try:
                text = f.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if SANITIZER_RE.search(text):
                out += f"--- {f.name} ---\n{text}"
        return out

    def access_lines(self):
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def logged_while_stopping(self, line):
        """Whether the line was logged during one of this httpd's stops (a test may stop it twice)."""
        t = line_time(line)
        return t is not None and any(sent - 0.01 <= t <= gone + 0.01 for sent, gone in self.stops)

    def unexpected_lines(self):
        bad = []
        for line in self.lines():
            if BAD_LEVEL_RE.match(line) and not any(f"{t}:" in line for t in self.allowed):
                if any(f"{t}:" in line for t in SHUTDOWN_NOISE) and self.logged_while_stopping(line):
                    continue
                bad.append(line)
        return bad


def level_of(line):
    m = LEVEL_RE.match(line)
    return m.group(1) if m else None


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def basedir():
    d = tempfile.mkdtemp(prefix="cptoken-httpd-")
    os.chmod(d, 0o755)
    yield Path(d)
    if not os.environ.get("CPTOKEN_HTTPD_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def backend(basedir):
    """The echo backend's port (one per session)."""
    port = free_port()
    log = open(basedir / "backend.log", "wb")
    p = subprocess.Popen([PYTHON, str(HERE / "echo_backend.py"), str(port), "--bind", "127.0.0.1", "--quiet"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: p.poll() is not None or port_open("127.0.0.1", port), 10), \
            "echo backend did not start"
        assert p.poll() is None, (basedir / "backend.log").read_text()
        yield port
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


@pytest.fixture
def mpm():
    """The MPM of tests that do not run under all three (see ALL_MPMS)."""
    return "event"


@pytest.fixture
def srv(basedir, backend, mpm):
    """A not yet started httpd with an initialised store; call srv.start(...)."""
    s = Httpd(basedir, backend, mpm)
    try:
        yield s
    finally:
        s.stop()
    bad = s.unexpected_lines()
    assert not bad, "unexpected error-log lines (allowed tags: %s):\n%s" % (
        sorted(s.allowed), "\n".join(bad))
    reports = s.sanitizer_reports()
    assert not reports, "sanitizer reports from httpd:\n" + reports[-5000:]


# ---------------------------------------------------------------- assertions

def challenges_for(schemes=("cpanel", "basic"), realm=REALM):
    want = []
    for s in schemes:
        if s == "cpanel":
            want.append(f'cpanel realm="{realm}"')
        elif s == "whm":
            want.append(f'whm realm="{realm}"')
        elif s == "basic":
            want.append(f'Basic realm="{realm}"')
    return want


def assert_admitted(r, user="alice"):
    assert r.status == 200, f"expected 200 for {user}, got {r!r}"
    assert r.challenges == [], f"a 200 must carry no WWW-Authenticate: {r.challenges}"
    got = r.backend_headers.get("x-remote-user")
    assert got == user, f"backend saw X-Remote-User {got!r}, expected {user!r}"


def assert_refused(r, schemes=("cpanel", "basic"), realm=REALM):
    """401 with exactly one challenge per accepted scheme."""
    assert r.status == 401, f"expected 401, got {r!r}"
    want = challenges_for(schemes, realm)
    assert sorted(r.challenges) == sorted(want), \
        f"WWW-Authenticate: expected {want}, got {r.challenges}"

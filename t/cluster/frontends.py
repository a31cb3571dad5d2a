# SPDX-License-Identifier: Apache-2.0
"""Front-ends of a token cluster (issue 24), for the cluster tests: each one
a store directory, its mirror agent (`cptoken sync`) and an httpd with the
built module, all on loopback, against an EtcdCluster.

    with Frontend(cluster.endpoints(), max_staleness=3) as a:
        token = a.cptoken("create", "alice", "t1").stdout.strip()
        assert a.status_of(token) == 200
"""

import grp
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = (HERE / ".." / "..").resolve()
sys.path.insert(0, str(ROOT / "t"))
from system_user import system_user  # noqa: E402  (t/system_user.py, shared with t/httpd)
from ports import free_port  # noqa: E402  (t/ports.py, shared with t/httpd)

CPTOKEN = os.environ.get("CPTOKEN") or str(ROOT / "build" / "cptoken")
MOD = os.environ.get("MOD_CPTOKEN") or str(ROOT / "build" / "mod_cptoken.so")
# The manager instance's build of the module, with the etcd client (CPTokenEtcd).
MOD_MANAGER = os.environ.get("MOD_CPTOKEN_MANAGER") or str(Path(MOD).with_name("mod_cptoken_manager.so"))
MANAGER_USER = "cptoken"  # the store's owner, whom a manager's children run as
APACHE = "/usr/sbin/apache2"
MODDIR = "/usr/lib/apache2/modules"

# What both httpds of a front-end have: @NAME@ keeps their files apart.
HTTPD_HEAD = r"""
ServerRoot "@DIR@"
PidFile "@DIR@/@NAME@.pid"
DefaultRuntimeDir "@DIR@/@NAME@-run"
ServerName 127.0.0.1
Listen 127.0.0.1:@PORT@
User @USER@
Group @GROUP@
ErrorLog "@DIR@/@NAME@-error.log"
LogLevel warn cptoken:info
LoadModule mpm_event_module @MODDIR@/mod_mpm_event.so
LoadModule authn_core_module @MODDIR@/mod_authn_core.so
LoadModule authz_core_module @MODDIR@/mod_authz_core.so
LoadModule authz_user_module @MODDIR@/mod_authz_user.so
LoadModule alias_module @MODDIR@/mod_alias.so
LoadModule cptoken_module "@MODULE@"
StartServers 1
ThreadsPerChild 8
MaxRequestWorkers 16
DocumentRoot "@DIR@/htdocs"
CPTokenDB "@STORE@"
"""

# The front-end's httpd (children www-data, httpd's group).
CONF = HTTPD_HEAD + r"""
<Directory "@DIR@/htdocs">
    Require all granted
</Directory>
@STALENESS@
<Location "/api">
    AuthType cpanel
    AuthName "cluster"
    Require valid-user
</Location>
<Location "/cptoken-status">
    SetHandler cptoken-status
</Location>
"""

# A manager instance (docs/manager.md) on a front-end: its children run as
# the store's owner; the API's locations as the shipped manager.conf has them.
MANAGER_CONF = HTTPD_HEAD + r"""
CPTokenTrustOwnStore On
CPTokenLastUsed Off
@ETCD@
<LocationMatch "^/execute/(Tokens|CPTokens)/">
    SetHandler cptoken-manager
    AuthType cpanel
    AuthName "cluster"
    CPTokenSchemes cpanel
    Require valid-user
</LocationMatch>
"""


def manager_user():
    """The store owner a manager's children run as (made if missing)."""
    return system_user(MANAGER_USER)


def start_httpd(conf, port, out, error_log):
    """apache2 -f CONF in the foreground, once it listens on `port`."""
    out_file = open(out, "ab")
    proc = subprocess.Popen([APACHE, "-f", str(conf), "-D", "FOREGROUND"], stdout=out_file,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    out_file.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"httpd exited:\n{Path(out).read_text()}\n{read_log(error_log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("httpd did not start")


def stop_httpd(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def read_log(path):
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


class Frontend:
    """One front-end: DIR/store (mirror), its agent and its httpd."""

    def __init__(self, endpoints, *, name="fe", max_staleness=None, agent_args=(), base=None, owner=None,
                 etcd_args=()):
        self.endpoints = list(endpoints)
        self.dir = Path(tempfile.mkdtemp(prefix=f"cptoken-{name}-", dir=base))
        os.chmod(self.dir, 0o755)
        self.store = self.dir / "store"
        self.max_staleness = max_staleness
        self.agent_args = list(agent_args)
        self.etcd_args = list(etcd_args)  # cluster mode's other options (TLS, user), for the tool and the agent
        self.owner = owner  # the store's owner (init --owner); None: root
        self.manager = None
        self.agent = None
        self.httpd = None
        self.port = None
        self._conn = None

    def __enter__(self):
        self.init()
        self.start_agent()
        self.wait_mirrored()
        self.start_httpd()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.stop_manager()
        self.stop_httpd()
        self.stop_agent()
        if not os.environ.get("KEEP_FRONTENDS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the tool

    def cptoken(self, *args, check=True, timeout=60, input=None, etcd=True):
        """Runs cptoken on this front-end's store (in cluster mode unless etcd=False)."""
        cmd = [CPTOKEN, "--db", str(self.store)]
        if etcd:
            cmd += ["--etcd", ",".join(self.endpoints), *self.etcd_args]
        r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"cptoken {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
        return r

    def init(self):
        if self.owner == MANAGER_USER:
            manager_user()
        owner = ["--owner", self.owner] if self.owner else []
        self.cptoken("init", "--group", "www-data", *owner, etcd=False)
        (self.dir / "htdocs" / "api").mkdir(parents=True)
        (self.dir / "htdocs" / "api" / "ok.txt").write_text("ok\n")
        os.chmod(self.dir / "htdocs", 0o755)
        os.chmod(self.dir / "htdocs" / "api", 0o755)
        os.chmod(self.dir / "htdocs" / "api" / "ok.txt", 0o644)

    # -- the agent

    def start_agent(self):
        assert self.agent is None
        self.agent_log = open(self.dir / "agent.log", "ab")
        self.agent = subprocess.Popen(
            [CPTOKEN, "--db", str(self.store), "--etcd", ",".join(self.endpoints), *self.etcd_args, "sync"]
            + self.agent_args,
            stdout=self.agent_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop_agent(self, sig=signal.SIGTERM):
        if self.agent is None:
            return
        if self.agent.poll() is None:
            self.agent.send_signal(sig)
            try:
                self.agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(timeout=10)
        self.agent = None
        self.agent_log.close()

    def agent_text(self):
        return (self.dir / "agent.log").read_text(errors="replace")

    def mirror_state(self):
        try:
            return dict(f.split("=", 1) for f in (self.store / "mirror.state").read_text().split()[2:])
        except FileNotFoundError:
            return {}

    def wait_mirrored(self, timeout=30):
        """Until the agent's first full read is in the store (mirror.state says live)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.mirror_state().get("state") == "live":
                return
            if self.agent is not None and self.agent.poll() is not None:
                raise AssertionError(f"the agent exited {self.agent.returncode}:\n{self.agent_text()}")
            time.sleep(0.02)
        raise AssertionError(f"no full read within {timeout} s:\n{self.agent_text()}")

    # -- httpd

    def _start(self, name, template, module, user, group, extra):
        """One of this front-end's httpds, from `template` (HTTPD_HEAD's @NAME@ = `name`, files
        DIR/NAME.*); `extra` substitutes the template's own placeholders. Returns (process, port)."""
        port = free_port()
        (self.dir / f"{name}-run").mkdir(exist_ok=True)
        text = template
        for k, v in {"@NAME@": name, "@DIR@": str(self.dir), "@PORT@": str(port), "@MODDIR@": MODDIR,
                     "@MODULE@": module, "@STORE@": str(self.store), "@USER@": user, "@GROUP@": group,
                     **extra}.items():
            text = text.replace(k, v)
        (self.dir / f"{name}.conf").write_text(text)
        return start_httpd(self.dir / f"{name}.conf", port, self.dir / f"{name}.out",
                           self.dir / f"{name}-error.log"), port

    def start_httpd(self):
        staleness = f"CPTokenMaxStaleness {self.max_staleness}" if self.max_staleness else ""
        self.httpd, self.port = self._start("httpd", CONF, MOD, "www-data", "www-data", {"@STALENESS@": staleness})

    def stop_httpd(self):
        if self.httpd is not None:
            stop_httpd(self.httpd)
            self.httpd = None

    # -- a manager instance (the store must be the manager user's: owner=MANAGER_USER)

    def start_manager(self, module=MOD_MANAGER, etcd=True, settings=()):
        """The manager's API on this front-end; with `etcd`, CPTokenEtcd names the cluster, with
        `settings` (NAME=VALUE) after the endpoints."""
        assert self.owner == MANAGER_USER and self.manager is None
        owner = pwd.getpwnam(self.owner)
        cptokenetcd = " ".join(["CPTokenEtcd", ",".join(self.endpoints), *settings]) if etcd else ""
        self.manager, self.manager_port = self._start("manager", MANAGER_CONF, module, owner.pw_name,
                                                      grp.getgrgid(owner.pw_gid).gr_name, {"@ETCD@": cptokenetcd})

    def stop_manager(self):
        if self.manager is not None:
            stop_httpd(self.manager)
            self.manager = None

    def manager_call(self, path, token, user="alice"):
        """(HTTP status, JSON body) of a manager call made with USER's `token`."""
        conn = http.client.HTTPConnection("127.0.0.1", self.manager_port, timeout=60)
        try:
            conn.request("GET", path, headers={"Authorization": f"cpanel {user}:{token}"})
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body.decode(errors="replace")

    def manager_error_log(self):
        return read_log(self.dir / "manager-error.log")

    def error_log(self):
        return read_log(self.dir / "httpd-error.log")

    def request(self, path, headers=None):
        """(status, headers, body) over one kept-alive connection."""
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self._conn.request("GET", path, headers=headers or {})
                r = self._conn.getresponse()
                body = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self._conn.close()
                    self._conn = None
                return r.status, dict(r.getheaders()), body
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def status_of(self, token, user="alice"):
        return self.request("/api/ok.txt", {"Authorization": f"cpanel {user}:{token}"})[0]

# SPDX-License-Identifier: Apache-2.0
"""A private etcd cluster on 127.0.0.1 for the cluster tests (issue 24).

Debian 12's etcd-server (3.4.23, /usr/bin/etcd) by default, or the etcd that
CPTOKEN_TEST_ETCD names (make cluster-test-current: 3.7.3, built from
t/cluster/etcd-current/; make cluster-test-3.6: 3.6.16; make cluster-test-3.5: 3.5.36),
runs SIZE members, each with its own client and peer
port (free ports picked at run time) and its own data directory under one
temporary base directory. Administration goes through etcdctl, the reference
client, so that the tests never check our C++ client with itself: Debian's
(etcd-client), or CPTOKEN_TEST_ETCDCTL, or the etcdctl beside
CPTOKEN_TEST_ETCD; snapshots are restored by etcdutl from 3.5 on (likewise
CPTOKEN_TEST_ETCDUTL). The server's version is asked once (etcd --version)
and picks the flags that version knows.

    with EtcdCluster(size=3, progress_notify_interval="1s") as cluster:
        cluster.endpoints()          # ["http://127.0.0.1:PORT", ...]
        cluster.kill(0, signal.SIGKILL); cluster.restart(0)
        cluster.enable_auth()        # root + roles cptoken-reader/-writer on PREFIX

Run with /usr/bin/python3 (Debian's, with python3-pytest). Every member's log
is BASE/mN.log; KEEP_ETCD=1 in the environment keeps BASE after the run.
"""

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ports import free_ports  # noqa: E402  (t/ports.py, shared with t/httpd)



def _tool(variable, name, default):
    """The binary VARIABLE names, else NAME beside a CPTOKEN_TEST_ETCD (the
    server and its own release's tools go together), else DEFAULT."""
    if os.environ.get(variable):
        return os.environ[variable]
    beside = Path(os.environ.get("CPTOKEN_TEST_ETCD") or "/nonexistent").with_name(name)
    return str(beside) if beside.is_file() else default


ETCD = os.environ.get("CPTOKEN_TEST_ETCD") or "/usr/bin/etcd"
ETCDCTL = _tool("CPTOKEN_TEST_ETCDCTL", "etcdctl", "/usr/bin/etcdctl")
ETCDUTL = _tool("CPTOKEN_TEST_ETCDUTL", "etcdutl", "/usr/bin/etcdutl")


def _server_version():
    """(major, minor, patch) of ETCD, from the first line of `etcd --version`
    ("etcd Version: 3.4.23"). Asked once, at import: every member of every
    test runs the same binary."""
    out = subprocess.run([ETCD, "--version"], capture_output=True, text=True, check=True).stdout
    words = out.split()
    if len(words) < 3 or words[:2] != ["etcd", "Version:"]:
        raise RuntimeError(f"{ETCD} --version: unexpected answer {out!r}")
    return tuple(int(part) for part in words[2].split("-")[0].split("."))


ETCD_VERSION = _server_version()
ETCD_VERSION_TEXT = ".".join(map(str, ETCD_VERSION))
PREFIX = "/cptoken/v1/"
READER_ROLE = "cptoken-reader"
WRITER_ROLE = "cptoken-writer"


def make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate
    WITHOUT a common name (etcd's gateway refuses a client certificate with a
    CN once auth is on: it would not use it). Returns their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    paths = {name: str(d / name) for name in ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")}
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=cptoken test CA", "-keyout", paths["ca.key"], "-out", paths["ca.crt"])
    for name, subject, extensions in (
            ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
            ("client", "/O=cptoken front-end", "extendedKeyUsage=clientAuth")):
        csr = str(d / f"{name}.csr")
        ext = d / f"{name}.ext"
        ext.write_text(extensions + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject,
                "-keyout", paths[f"{name}.key"], "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", paths["ca.crt"], "-CAkey", paths["ca.key"], "-CAcreateserial",
                "-days", "2", "-extfile", str(ext), "-out", paths[f"{name}.crt"])
    return paths


def prefix_range_end(prefix):
    """etcd's end of a prefix range: the prefix with its last byte + 1."""
    data = bytearray(prefix.encode())
    data[-1] += 1
    return bytes(data).decode()


class Member:
    def __init__(self, index, client_port, peer_port, base, scheme="http"):
        self.index = index
        self.name = f"m{index}"
        self.client_url = f"{scheme}://127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.data_dir = base / self.name
        self.log_path = base / f"{self.name}.log"
        self.proc = None


class EtcdCluster:
    def __init__(self, size=3, progress_notify_interval=None, auth_token_ttl=None,
                 extra_args=(), base_dir=None, start_timeout=30.0, tls=False):
        self.size = size
        self.progress_notify_interval = progress_notify_interval
        self.auth_token_ttl = auth_token_ttl
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="etcd-cluster-"))
        self.base.mkdir(parents=True, exist_ok=True)
        # tls: clients need https and a certificate from self.certs["ca.crt"]'s CA
        # (client.crt has no CN); the peers stay on plain http on loopback.
        self.certs = make_certificates(self.base / "tls") if tls else None
        ports = free_ports(2 * size)
        self.members = [Member(i, ports[2 * i], ports[2 * i + 1], self.base, "https" if tls else "http")
                        for i in range(size)]
        # A new token per cluster: a member from another test run can never join this one.
        self.cluster_token = "cptoken-test-" + uuid.uuid4().hex[:8]
        self.root_password = None

    # -- life cycle ---------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop_all()
        if not os.environ.get("KEEP_ETCD"):
            shutil.rmtree(self.base, ignore_errors=True)

    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def _command(self, m, state):
        cmd = [ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
               "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
               "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
               "--initial-cluster", self.initial_cluster(), "--initial-cluster-state", state,
               "--initial-cluster-token", self.cluster_token, "--logger", "zap", "--log-outputs", "stderr"]
        if self.progress_notify_interval:
            # 3.6 dropped the experimental- prefix (deprecating the old name); 3.7 knows only the new one.
            flag = "--watch-progress-notify-interval" if ETCD_VERSION >= (3, 6) \
                else "--experimental-watch-progress-notify-interval"
            cmd += [flag, self.progress_notify_interval]
        if self.auth_token_ttl:
            cmd += ["--auth-token-ttl", str(self.auth_token_ttl)]
        if self.certs:
            cmd += ["--cert-file", self.certs["server.crt"], "--key-file", self.certs["server.key"],
                    "--trusted-ca-file", self.certs["ca.crt"], "--client-cert-auth"]
        return cmd + self.extra_args

    def _spawn(self, i, state):
        m = self.members[i]
        log = open(m.log_path, "ab")
        m.proc = subprocess.Popen(self._command(m, state), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        log.close()

    def start(self):
        """Starts every member and waits until the cluster has a leader and
        every member answers."""
        for i in range(self.size):
            self._spawn(i, "new")
        self.wait_healthy()

    def wait_healthy(self, members=None, timeout=None):
        """Waits until each member (all by default) answers /health with
        {"health":"true"} (it has a leader and serves reads)."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        for i in (range(self.size) if members is None else members):
            while not self.healthy(i):
                m = self.members[i]
                if m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited with {m.proc.returncode}; see {m.log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd {m.name} not healthy; see {m.log_path}")
                time.sleep(0.05)

    def wait_for_leader(self, members, timeout=15.0):
        """Waits until MEMBERS (indexes) agree on a leader among themselves
        and a linearizable read through them succeeds: after the leader was
        killed or stopped, a write sent before the new election times out
        ("request timed out, possibly due to previous leader failure")."""
        endpoints = [self.members[i].client_url for i in members]
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = json.loads(self.etcdctl("endpoint", "status", "--write-out=json", endpoints=endpoints))
                ids = {s["Status"]["header"]["member_id"] for s in status}
                leaders = {s["Status"]["leader"] for s in status}
                if len(leaders) == 1 and leaders <= ids:
                    self.etcdctl("get", "--keys-only", "/", endpoints=endpoints)
                    return
            except (RuntimeError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"members {members} elected no leader within {timeout} s")
            time.sleep(0.1)

    def healthy(self, i):
        context = None
        if self.certs:
            context = ssl.create_default_context(cafile=self.certs["ca.crt"])
            context.load_cert_chain(self.certs["client.crt"], self.certs["client.key"])
        try:
            with urllib.request.urlopen(self.members[i].client_url + "/health", timeout=1, context=context) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False

    def endpoints(self):
        return [m.client_url for m in self.members]

    def pid(self, i):
        return self.members[i].proc.pid

    def running(self, i):
        p = self.members[i].proc
        return p is not None and p.poll() is None

    def kill(self, i, sig=signal.SIGKILL, timeout=20.0):
        """Sends SIG to member I. For SIGKILL and SIGTERM, waits until the
        process has exited (a member restarted before its predecessor let go
        of the data directory fails to start)."""
        p = self.members[i].proc
        p.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.wait(timeout=timeout)

    def restart(self, i, wait=True):
        """Starts member I again on its data directory (stopping it first
        with SIGTERM if it runs), and waits until it is healthy."""
        if self.running(i):
            self.kill(i, signal.SIGCONT)
            self.kill(i, signal.SIGTERM)
        self._spawn(i, "existing")
        if wait:
            self.wait_healthy([i])

    def stop_all(self, graceful=False):
        """Stops every member: SIGKILL by default (a test cluster's data is
        thrown away; SIGTERM makes each leader try to hand over to members
        that are stopping too, about 7 s), SIGTERM with GRACEFUL."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)  # a stopped member ignores SIGTERM until continued
                m.proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        for m in self.members:
            if m.proc is None:
                continue
            try:
                m.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()

    # -- administration, through etcdctl --------------------------------------

    def etcdctl(self, *args, endpoints=None, user=None, check=True, input=None):
        """Runs etcdctl against ENDPOINTS (every member by default), as root
        once auth is enabled, and returns its stdout."""
        cmd = [ETCDCTL, "--endpoints", ",".join(endpoints or self.endpoints()), "--command-timeout", "10s"]
        if user is None and self.root_password is not None:
            user = f"root:{self.root_password}"
        if user:
            cmd += ["--user", user]
        if self.certs:
            cmd += ["--cacert", self.certs["ca.crt"], "--cert", self.certs["client.crt"], "--key", self.certs["client.key"]]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, input=input,
                           env=dict(os.environ, ETCDCTL_API="3"))
        if check and r.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args[:2])} failed: {r.stderr.strip()}")
        return r.stdout

    def revision(self):
        """The cluster's current revision (a linearizable read)."""
        out = json.loads(self.etcdctl("get", "--write-out=json", "--keys-only", "/"))
        return int(out["header"]["revision"])

    def compact(self, rev, physical=True):
        self.etcdctl("compaction", *(["--physical"] if physical else []), str(rev))

    def snapshot_save(self, path, member=0):
        self.etcdctl("snapshot", "save", str(path), endpoints=[self.members[member].client_url])

    def snapshot_restore(self, path):
        """Stops every member and starts the cluster again from snapshot
        PATH: the same members and ports, new data directories, a new cluster
        token (so a new cluster id), and the snapshot's revision, older than
        anything written after the save."""
        self.stop_all()
        self.cluster_token = "cptoken-test-" + uuid.uuid4().hex[:8]
        # etcdutl took over the offline restore in 3.5 (etcdctl's was deprecated; 3.7's etcdctl has none).
        restore = [ETCDUTL] if ETCD_VERSION >= (3, 5) else [ETCDCTL]
        for m in self.members:
            shutil.rmtree(m.data_dir)
            subprocess.run(restore + ["snapshot", "restore", str(path), "--name", m.name,
                            "--data-dir", str(m.data_dir), "--initial-cluster", self.initial_cluster(),
                            "--initial-cluster-token", self.cluster_token,
                            "--initial-advertise-peer-urls", m.peer_url],
                           check=True, capture_output=True, env=dict(os.environ, ETCDCTL_API="3"))
        for i in range(self.size):
            self._spawn(i, "existing")
        self.wait_healthy()

    def enable_auth(self, root_password="root-pw", prefix=PREFIX):
        """Adds root, the role cptoken-reader (read on PREFIX) and the role
        cptoken-writer (readwrite on PREFIX), then enables auth."""
        self.etcdctl("user", "add", f"root:{root_password}")
        for role, perm in ((READER_ROLE, "read"), (WRITER_ROLE, "readwrite")):
            self.etcdctl("role", "add", role)
            self.etcdctl("role", "grant-permission", role, "--prefix=true", perm, prefix)
        self.etcdctl("auth", "enable")
        self.root_password = root_password

    def add_user(self, name, password, role):
        """A user with ROLE (call after enable_auth)."""
        self.etcdctl("user", "add", f"{name}:{password}")
        self.etcdctl("user", "grant-role", name, role)

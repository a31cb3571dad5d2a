# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the cluster tests: a private 3-member etcd per test
(etcd_cluster.py), the etcd client's probe (build/t/etcd_probe, or
$ETCD_PROBE), and a small gateway writer in Python for bulk loads, so that
the data under test is never written by the client under test.

Run: make cluster-test   (or: /usr/bin/python3 -m pytest -q t/cluster)
"""

import base64
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from etcd_cluster import EtcdCluster  # noqa: E402

PROBE = os.environ.get("ETCD_PROBE") or str((HERE / ".." / ".." / "build" / "t" / "etcd_probe").resolve())
# Measurements ("etcd-client: ..." lines) go here as well as to stdout: pytest-xdist's
# workers swallow stdout, and make cluster-test prints this file at the end.
MEASUREMENTS = os.environ.get("ETCD_MEASUREMENTS")


def measure(line, tag="etcd-client"):
    print(f"\n{tag}: {line}")
    if MEASUREMENTS:
        with open(MEASUREMENTS, "a") as f:
            f.write(f"{tag}: {line}\n")


@pytest.fixture
def cluster():
    with EtcdCluster(size=3, progress_notify_interval="1s") as c:
        yield c


class Probe:
    """Runs etcd_probe against a cluster; output is one JSON object a line."""

    def __init__(self, endpoints, user=None, password_file=None, in_order=False, tls=None):
        self.args = [PROBE, "--endpoints", ",".join(endpoints)]
        for flag, name in (("--cacert", "ca.crt"), ("--cert", "client.crt"), ("--key", "client.key")):
            if tls and tls.get(name):
                self.args += [flag, tls[name]]
        if user:
            self.args += ["--user", user, "--password-file", str(password_file)]
        if in_order:
            self.args.append("--in-order")

    def run(self, *command, timeout=60, check=True):
        r = subprocess.run(self.args + [str(c) for c in command], capture_output=True, text=True, timeout=timeout)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        if check and r.returncode != 0:
            raise AssertionError(f"etcd_probe {command[0]} exited {r.returncode}: {lines[-1:]} {r.stderr}")
        return lines

    def start(self, *command):
        """A probe running in the background; lines() reads what it printed so far."""
        return Running(subprocess.Popen(self.args + [str(c) for c in command], stdout=subprocess.PIPE,
                                        stdin=subprocess.PIPE, text=True))


class Running:
    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                with self._lock:
                    self.lines.append(json.loads(line))

    def snapshot(self):
        with self._lock:
            return list(self.lines)

    def wait_for(self, predicate, timeout=20.0):
        """Waits until a printed line satisfies PREDICATE; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.snapshot():
                if predicate(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no such line within {timeout} s; got {self.snapshot()[-5:]}")

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def finish(self, timeout=30):
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return self.snapshot()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        return self.finish()


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


class Gateway:
    """Bulk writes through one member's JSON gateway, with Python's own HTTP."""

    def __init__(self, endpoint):
        u = urlparse(endpoint)
        self.host, self.port = u.hostname, u.port

    def post(self, conn, path, body):
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = json.loads(r.read())
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {data}")
        return data

    def put_batches(self, batches, threads=4):
        """Each batch (a list of (key, value)) in one txn, THREADS at a time.
        Returns [(revision, batch)] in revision order."""
        written = []
        lock = threading.Lock()
        todo = list(batches)

        def worker():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            while True:
                with lock:
                    if not todo:
                        break
                    batch = todo.pop(0)
                ops = [{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in batch]
                rev = int(self.post(conn, "/v3/kv/txn", {"success": ops})["header"]["revision"])
                with lock:
                    written.append((rev, batch))
            conn.close()

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sorted(written, key=lambda item: item[0])


@pytest.fixture
def gateway(cluster):
    return Gateway(cluster.endpoints()[0])

#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Revokes made while the mirror agent reads etcd whole (issue 24): how long
from `cptoken --etcd revoke` until this host's store refuses the token, with
the agent's CPU weight as cptoken-sync.service sets it, on a busy
front-end. Up to 0.17.3 the watch waited for a full read, so a revoke made
during one waited for its end; a full read runs at start, after a compaction
past the agent's position, and on drift.

The agent runs as a daemon on CPU 0, which FR_BURNERS processes (2) keep
busy, each in a session of its own as httpd's children would be; with
FR_WEIGHT=1 (the default) the agent is in a CPU cgroup with the weight of
systemd's CPUWeight=5 (cluster_bench.py's -weight variant). It is stopped
once it has read FR_TOKENS tokens (50000) whole and watches, etcd is
compacted past it, and it is started again: it reads whole, and FR_REVOKES
revokes (5) are made one after another meanwhile on another front-end
(its own store and agent, not hindered). For each, the time from the
revoke's start to the first `cptoken check` on the busy front-end's store
that refuses the token, and whether the full read was still running then.
(A `cptoken --etcd` write made on the front-end that reads whole waits for
the read: it computes its change on that host's store, which is not
current until the read is in.)

Run: /usr/bin/python3 bench/full_read_revokes.py  (after make; about a minute;
CPTOKEN=OTHER_BUILD/cptoken for another build)
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cluster_bench as cb  # noqa: E402  (its etcd cluster, store maker, push and agent cgroup)

N = int(os.environ.get("FR_TOKENS", "50000"))
K = int(os.environ.get("FR_REVOKES", "5"))
BURNERS = int(os.environ.get("FR_BURNERS", "2"))
WEIGHT = os.environ.get("FR_WEIGHT", "1") != "0"
WORK = Path(os.environ.get("FR_DIR", "/var/tmp/mod_cptoken-full-read-revokes"))


def start_agent(mirror, eps, log_path, limited=True):
    prefix = ["taskset", "-c", "0"] if limited else []
    if WEIGHT and limited:
        prefix = cb.in_agent_cgroup() + prefix
    log = open(log_path, "a")
    return subprocess.Popen(prefix + [cb.CPTOKEN, "--db", str(mirror), "--etcd", ",".join(eps), "sync"],
                            stdout=log, stderr=subprocess.STDOUT)


def wait_log(log_path, text, after=0, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log_path.read_text().splitlines()[after:]
        if any(text in line for line in lines):
            return
        time.sleep(0.02)
    raise RuntimeError(f"no {text!r} in the agent's log within {timeout} s")


def refused(mirror, user, token):
    r = subprocess.run([cb.CPTOKEN, "--db", str(mirror), "check", user], input=token + "\n", capture_output=True,
                       text=True)
    return r.returncode != 0


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.chmod(WORK, 0o755)
    burners = []
    try:
        with cb.etcd_cluster.EtcdCluster(size=3, progress_notify_interval="1s", base_dir=str(WORK / "etcd")) as cluster:
            eps = cluster.endpoints()
            src = WORK / "src"
            cb.make_store(src, N, "u")
            tokens = {}  # K tokens more, whose secrets this script keeps
            lines = "".join(f"r{i:03d} t\n" for i in range(K))
            out = cb.cptoken(src, "bulk-create", input=lines).stdout.splitlines()
            for line in out:
                user, _, token = line.split()[:3]
                tokens[user] = token
            cb.push(src, eps, None)
            # Another front-end, whose agent runs unhindered: the revokes are made there.
            other = WORK / "other"
            cb.cptoken(other, "init", "--group", "www-data")
            other_log = WORK / "other.log"
            other_agent = start_agent(other, eps, other_log, limited=False)
            mirror = WORK / "mirror"
            cb.cptoken(mirror, "init", "--group", "www-data")
            log_path = WORK / "agent.log"
            agent = start_agent(mirror, eps, log_path)
            wait_log(log_path, "watching from")
            agent.terminate()
            agent.wait()
            # A write and a compaction past the agent's position while it is down: it reads whole at start.
            cluster.etcdctl("put", "/cptoken/v1/unrelated", "x")
            cluster.compact(cluster.revision())
            for _ in range(BURNERS):
                burners.append(subprocess.Popen(["setsid", "taskset", "-c", "0", "/usr/bin/python3", "-c",
                                                 "while True: pass"]))
            after = len(log_path.read_text().splitlines())
            agent = start_agent(mirror, eps, log_path)
            try:
                wait_log(log_path, "started: mirroring", after)
                time.sleep(0.5)
                wait_log(other_log, "watching from")
                results = []
                for user, token in tokens.items():
                    assert not refused(mirror, user, token), f"{user}'s token refused before its revoke"
                    started = time.monotonic()
                    revoke = subprocess.Popen([cb.CPTOKEN, "--db", str(other), "--etcd", ",".join(eps), "revoke",
                                               user, "t"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    while not refused(mirror, user, token):
                        if time.monotonic() - started > 120:
                            raise RuntimeError(f"{user}'s revoke never reached the mirror")
                    took = time.monotonic() - started
                    reading = not any("full read (" in line for line in log_path.read_text().splitlines()[after:])
                    results.append((took, reading))
                    revoke.wait()
                wait_log(log_path, "watching from", after)
            finally:
                agent.terminate()
                agent.wait()
                other_agent.terminate()
                other_agent.wait()
            text = log_path.read_text().splitlines()[after:]
            for line in text:
                if "full read (" in line or "reading whole" in line:
                    cb.say(line)
            cb.say(f"{'CPUWeight=5 cgroup' if WEIGHT else 'no cgroup'}, {BURNERS} busy processes on the agent's CPU, "
                   f"{N:,} tokens: revoke to refused: " +
                   ", ".join(f"{1000 * t:.0f} ms{' (during the read)' if r else ''}" for t, r in results))
    finally:
        for b in burners:
            b.kill()
            b.wait()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Revokes sent while the mirror agent reconciles (issue 24): how long each
`cptoken --etcd revoke` takes, which answers once this host's mirror holds
the change, with a reconciliation every 3 s over N tokens (RECON_TOKENS,
100000) and K revokes (RECON_REVOKES, 30) at random moments. Before 0.17.0
a reconciliation held the watch for its whole read. Also prints the
agent's memory (peak and resident) after its first full read and after the
reconciliations.

Run: /usr/bin/python3 bench/reconcile_revokes.py  (after make; about a minute)
"""

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("CBENCH_ONLY", "full")
import cluster_bench as cb  # noqa: E402  (its etcd cluster, store maker and push)

N = int(os.environ.get("RECON_TOKENS", "100000"))
K = int(os.environ.get("RECON_REVOKES", "30"))
WORK = Path(os.environ.get("RECON_DIR", "/var/tmp/mod_cptoken-reconcile"))


def memory_mib(pid):
    """The agent's peak (VmHWM), resident (VmRSS) and file-backed resident (RssFile: tokens.mdb's pages,
    shared with httpd) memory, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmHWM", "VmRSS", "RssFile")}


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.chmod(WORK, 0o755)
    try:
        with cb.etcd_cluster.EtcdCluster(size=3, progress_notify_interval="1s", base_dir=str(WORK / "etcd"),
                                         extra_args=["--quota-backend-bytes", str(8 << 30)]) as cluster:
            eps = cluster.endpoints()
            cb.make_store(WORK / "src", N, "u")
            cb.push(WORK / "src", eps, None)
            mirror = WORK / "mirror"
            cb.cptoken(mirror, "init", "--group", "www-data")
            log_path = WORK / "agent.log"
            with open(log_path, "w") as log:
                agent = subprocess.Popen([cb.CPTOKEN, "--db", mirror, "--etcd", ",".join(eps), "sync",
                                          "--reconcile-every", "3s"], stdout=log, stderr=subprocess.STDOUT)
                try:
                    while "watching from" not in log_path.read_text():
                        time.sleep(0.2)
                    after_read = memory_mib(agent.pid)
                    waits = []
                    for i in range(K):
                        time.sleep(random.uniform(0, 1.0))
                        started = time.monotonic()
                        cb.cptoken(mirror, "revoke", f"u{i:07d}", "t", endpoints=eps)
                        waits.append((time.monotonic() - started) * 1000)
                    # At least 3 reconciliations, then right after the end of one: its peak, and what it kept.
                    done = max(3, log_path.read_text().count("drift: ") + 1)
                    while log_path.read_text().count("drift: ") < done:
                        time.sleep(0.05)
                    time.sleep(0.5)  # its memory handed back
                    at_end = memory_mib(agent.pid)
                finally:
                    agent.terminate()
                    agent.wait()
            text = log_path.read_text()
            for line in text.splitlines():
                if "reconciliation" in line:
                    cb.say(line)
            waits.sort()
            cb.say(f"{K} revokes over {N:,} tokens, answered once the mirror held them: median "
                   f"{statistics.median(waits):.0f} ms, p90 {waits[int(0.9 * K) - 1]:.0f} ms, max {waits[-1]:.0f} ms; "
                   f"{text.count('drift: ')} reconciliations meanwhile")
            cb.say(f"agent's memory after the first full read: peak {after_read['VmHWM']:.0f} MiB, resident "
                   f"{after_read['VmRSS']:.0f} MiB; after {text.count('drift: ')} reconciliations: peak "
                   f"{at_end['VmHWM']:.0f} MiB, resident {at_end['VmRSS']:.0f} MiB (of which tokens.mdb's pages "
                   f"{at_end['RssFile']:.0f} MiB)")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()

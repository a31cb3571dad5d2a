#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Where httpd's CPU goes on one request, with `perf` (issue 23).

One httpd of bench/httpd_bench.py's kind (its fixtures, locations and
config), driven one connection at a time (wrk -t1 -c1, which is where a
per-request cost shows undiluted) on `/open`, then on each BENCH_PATHS
location (default `/cptoken`), while `perf record --call-graph dwarf`
samples httpd's processes. Prints, per location, the requests per second
and the share of httpd's CPU samples spent in (with what it calls) the
module's hook and its parts, and in the kernel's `stat` family. Then
counts, with `strace -f -c` on httpd's children over 2,000 requests (one
keep-alive connection), the system calls a request of each location makes
beyond `/open`'s: deterministic where the shares are noisy.

Run as root, after make (Debian's linux-perf and strace; about a minute):

    BENCH_TOKENS=2000 BENCH_ROTATE=2000 CPTOKEN=build/cptoken MOD_CPTOKEN=build/mod_cptoken.so \\
        BENCH_DIR=/var/tmp/mod_cptoken-bench /usr/bin/python3 bench/httpd_profile.py

PROFILE_SECONDS (3) is the length of each recording. With PROFILE_KEEP=1
the recordings stay in BENCH_DIR (perf-open.data, perf-cptoken.data, ...)
for `perf report -i`. The settings are httpd_bench.py's (BENCH_TOKENS,
BENCH_ROTATE, BENCH_PATHS, BENCH_DIR).
"""

import http.client
import os
import re
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("BENCH_PATHS", "/cptoken")
import httpd_bench as hb  # noqa: E402  (its fixtures, locations, httpd and wrk)

SECONDS = int(os.environ.get("PROFILE_SECONDS", "3"))
# What to report, by symbol (perf's --children share: the function and what it calls).
PARTS = [
    ("the module's hook (check_authn)", r"\(anonymous namespace\)::check_authn$"),
    ("  LiveStore::current (asks the watch on the store's path)", r"cptoken::LiveStore::current$"),
    ("  UsageRecorder::record (last used)", r"cptoken::UsageRecorder::record$"),
    ("    UsageTable::intact (the usage table's fstat)", r"cptoken::UsageTable::intact$"),
    ("  parse_authorization", r"cptoken::parse_authorization$"),
    ("  verify_token", r"cptoken::verify_token$"),
    ("  TokenStore::find_token", r"cptoken::TokenStore::find_token$"),
    ("stat family, all callers (kernel)", r"__do_sys_newfstatat$"),
]


def shares(data):
    """{symbol: children share in %} of httpd's samples in `data`."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--children", "--stdio", "-g", "none",
                          "--sort", "sym", "--percent-limit", "0.05"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(.*?)\s*$", line)
        if m:
            found.setdefault(m.group(2), float(m.group(1)))
    return found


# System calls whose count depends on timing (a worker handing an idle
# connection back to the listener), not on what a request does.
SCHEDULING = {"futex", "epoll_wait", "epoll_ctl", "epoll_pwait", "sched_yield"}


def syscalls_per_request(h, loc, run_dir, n=2000):
    """{system call: calls per request} of httpd's children over `n` requests
    to `loc`, one keep-alive connection, each with the next of loc's headers
    (strace -f -c attached to the children)."""
    out = run_dir / f"strace-{loc.path.strip('/')}.txt"
    attach = [arg for pid in h.children() for arg in ("-p", str(pid))]
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(out)] + attach,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    statuses = {}
    try:
        hb.send_rotating(conn, loc, n, statuses)
    finally:
        conn.close()
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    if set(statuses) != {loc.expect}:
        sys.exit(f"httpd_profile: {loc.path} answered {statuses}, not only {loc.expect}")
    counts = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and re.match(r"[\d.]+$", fields[0]) and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3]) / n
    return counts


def main():
    for tool in ("perf", "strace"):
        if not shutil.which(tool):
            sys.exit(f"httpd_profile: {tool} is missing (apt-get install linux-perf strace)")
    s = hb.settings([])
    fx = hb.Fixtures(s)
    run_dir = hb.make_dir(s["dir"] / "profile")
    locs, store, socache_bytes = hb.make_locations(s, fx, run_dir)
    h = hb.Httpd(run_dir, "profile", store / "db", locs, socache_bytes=socache_bytes, module=s["module"])
    h.start()
    one = dict(s, threads=1, connections=1)
    try:
        problems = hb.preflight(h)
        if problems:
            sys.exit("httpd_profile: preflight failed:\n  " + "\n  ".join(problems))
        for loc in locs:  # warm: caches filled, children started
            hb.wrk(h, loc, one, duration=2)
        for loc in locs:
            data = run_dir / f"perf-{loc.path.strip('/')}.data"
            load = subprocess.Popen([hb.WRK, "-t1", "-c1", f"-d{SECONDS + 2}s", "-s", str(hb.LUA),
                                     h.url(loc.path), str(loc.headers), "1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1)
            pids = ",".join(str(pid) for pid in [h.proc.pid] + h.children())
            subprocess.run(["perf", "record", "--call-graph", "dwarf,16384", "-p", pids, "-o", str(data),
                            "--", "sleep", str(SECONDS)], capture_output=True, check=True)
            text = load.communicate()[0]
            rps = re.search(r"Requests/sec:\s*([\d.]+)", text)
            found = shares(data)
            hb.log(f"{loc.path}: {float(rps.group(1)) if rps else 0:,.0f} req/s one connection at a time; "
                   f"share of httpd's CPU samples:")
            for label, pattern in PARTS:
                share = sum(v for k, v in found.items() if re.search(pattern, k))
                hb.log(f"  {share:5.2f}%  {label}")
        # What each request asks of the kernel: on a VM where a system call
        # costs more than the module's code, the figure that decides.
        calls = {loc.path: syscalls_per_request(h, loc, run_dir) for loc in locs}
        base = calls[locs[0].path]
        for loc in locs[1:]:
            mine = calls[loc.path]
            extra = {k: mine.get(k, 0) - base.get(k, 0) for k in set(mine) | set(base) if k not in SCHEDULING}
            extra = {k: v for k, v in extra.items() if abs(v) >= 0.05}
            hb.log(f"{loc.path}: system calls per request beyond {locs[0].path}'s "
                   f"({sum(v for k, v in base.items() if k not in SCHEDULING):.2f}, not counting "
                   f"{', '.join(sorted(SCHEDULING))}): "
                   + (", ".join(f"{k} {v:+.2f}" for k, v in sorted(extra.items())) or "none"))
    finally:
        h.stop()
        if os.environ.get("PROFILE_KEEP") == "1":
            for data in run_dir.glob("perf-*.data"):
                shutil.copy(data, s["dir"] / data.name)
        hb.rmtree(run_dir)


if __name__ == "__main__":
    main()

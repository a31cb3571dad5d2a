# SPDX-License-Identifier: Apache-2.0
"""The cluster mode's performance targets (issue 24), measured and printed.

    /usr/bin/python3 bench/cluster_bench.py        (make bench-cluster)

Not a test: it prints figures (lines starting `cluster-bench:`) and says
whether each target is met; it fails only when something does not run.
Everything runs on 127.0.0.1: a private 3-member etcd (t/cluster/etcd_cluster.py,
Debian's 3.4.23 unless CPTOKEN_TEST_ETCD names another) and, for the load
part, one front-end's store and httpd with the built module
(t/cluster/frontends.py), loaded by wrk with bench/rotate.lua.

Parts (CBENCH_ONLY=apply,full picks some; both by default):

- apply: the front-end's throughput while `cptoken sync` applies a full read
  of CBENCH_APPLY_TOKENS new tokens, against the same location with no
  agent running (target: >= 0.9). How the load overlaps the apply: etcd
  holds two token sets under two prefixes, one with only the measured token
  T (P0) and one with T and CBENCH_APPLY_TOKENS more (PA). While wrk runs,
  `cptoken --db STORE sync --once` runs back to back on the very store httpd
  reads, alternating PA and P0, so each full read adds (or, from P0, deletes)
  every one of those tokens in one LMDB transaction, for the whole run: the
  run's throughput is throughput during full reads, not diluted by idle
  time. The agent's own log gives each read's length and its read/apply
  split; the busy fraction (time inside full reads / run) is printed too.
  Each round: idle, loaded, idle; the ratio is loaded / mean of the two idle
  runs around it; the median over CBENCH_ROUNDS rounds is the figure.
- full: a full read of CBENCH_TOKENS tokens (target <= 30 s) into an empty
  store (`sync --once`), then 9 more on the same store; tokens.mdb's size
  after 1 and after 10 (target: no larger). The tokens get into etcd with
  `cptoken push` (timed and printed) from a store made with bulk-create, or
  a copy of CBENCH_FIXTURE (a store directory with tokens.mdb) when given.

  Each read also prints the agent's and every etcd member's CPU; after
  the reads, one page's time from four start keys shows how etcd's cost
  per page depends on the keys after it.

Knobs: CBENCH_TOKENS (1000000), CBENCH_APPLY_TOKENS (100000),
CBENCH_DURATION (s of wrk per run, 10), CBENCH_ROUNDS (3), CBENCH_THREADS
(2), CBENCH_CONNECTIONS (8: the front-end has 16 workers; more makes
mpm_event close kept-alive connections), CBENCH_FULL_READS (10), CBENCH_DIR
(work directory, /var/tmp/mod_cptoken-cbench; removed at the end unless
CBENCH_KEEP=1), CBENCH_FIXTURE (a store to push instead of making one),
CBENCH_ONLY, CBENCH_PERF=1 (the first full read under perf record; its top
symbols printed), CBENCH_PIN (the apply part's variants, default
shared,shared-nochange,pinned,pinned-nochange,frontend-weight: shared =
every process on both CPUs; pinned = wrk and httpd on CPU 0, etcd and the
agent on CPU 1; frontend = wrk, httpd and the agent on CPU 0, etcd on CPU 1,
as on a front-end whose etcd runs on other hosts; -nochange = the same full
reads with nothing to apply, for reference; -batch = the agent under `chrt
-b 0`, SCHED_BATCH, which does not preempt httpd when it wakes; -idle =
under `chrt -i 0`, SCHED_IDLE; -weight = in a CPU cgroup of its own with the
weight of systemd's CPUWeight=5, httpd's being 100: a thread's nice or
policy only ranks it within its own group, and httpd is in another).
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Reused, not copied: the tests' etcd cluster and front-end are what this measures.
sys.path.insert(0, str(ROOT / "t" / "cluster"))
os.environ.setdefault("CPTOKEN", str(ROOT / "build" / "cptoken"))
os.environ.setdefault("MOD_CPTOKEN", str(ROOT / "build" / "mod_cptoken.so"))
import etcd_cluster  # noqa: E402
import frontends  # noqa: E402
import httpd_bench  # noqa: E402  (its wrk run)

CPTOKEN = frontends.CPTOKEN


# Where wrk and the agent run (taskset prefixes): nowhere in particular, or, in
# the pinned variant, wrk and httpd on CPU 0 and the agent and etcd on CPU 1.
PIN = {"load": [], "agent": []}


AGENT_CGROUP_WEIGHT = 5  # the -weight variants: as systemd's CPUWeight=5 for the agent's unit (httpd's: 100)


def in_agent_cgroup():
    """A command prefix that runs the command in a CPU cgroup with AGENT_CGROUP_WEIGHT (cgroup v1's
    cpu.shares, or v2's cpu.weight), as systemd makes for a unit with CPUWeight=."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.shares").exists():
        group = v1 / "cbench-agent"
        group.mkdir(exist_ok=True)
        (group / "cpu.shares").write_text(str(AGENT_CGROUP_WEIGHT * 1024 // 100))
    else:
        root = Path("/sys/fs/cgroup")
        (root / "cgroup.subtree_control").write_text("+cpu")
        group = root / "cbench-agent"
        group.mkdir(exist_ok=True)
        (group / "cpu.weight").write_text(str(AGENT_CGROUP_WEIGHT))
    return ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh"]


def remove_agent_cgroup():
    """Removes the cgroup in_agent_cgroup() made, once its processes have ended (the kernel
    refuses to remove one that holds a process: then it stays, and is said)."""
    for group in (Path("/sys/fs/cgroup/cpu/cbench-agent"), Path("/sys/fs/cgroup/cbench-agent")):
        try:
            group.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            say(f"cannot remove the cgroup {group}: {e.strerror}")


def set_affinity(pids, cpus):
    for pid in pids:
        subprocess.run(["taskset", "-a", "-c", "-p", cpus, str(pid)], capture_output=True, check=True)


def session_pids(sid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[3]) == sid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def knob(name, default, kind=int):
    return kind(os.environ.get(name, default))


S = {
    "tokens": knob("CBENCH_TOKENS", 1000000),
    "apply_tokens": knob("CBENCH_APPLY_TOKENS", 100000),
    "duration": knob("CBENCH_DURATION", 10),
    "rounds": knob("CBENCH_ROUNDS", 3),
    "threads": knob("CBENCH_THREADS", 2),
    "connections": knob("CBENCH_CONNECTIONS", 8),
    "full_reads": knob("CBENCH_FULL_READS", 10),
    "dir": Path(os.environ.get("CBENCH_DIR", "/var/tmp/mod_cptoken-cbench")),
    "fixture": os.environ.get("CBENCH_FIXTURE", ""),
    "pin": list(filter(None, os.environ.get(
        "CBENCH_PIN", "shared,shared-nochange,pinned,pinned-nochange,frontend-weight").split(","))),
    "perf": knob("CBENCH_PERF", 0),
    "only": set(filter(None, os.environ.get("CBENCH_ONLY", "apply,full").split(","))),
}

FULL_READ = re.compile(r"full read \([^)]*\): (\d+) keys at revision (\d+) .* in (\d+) ms \(read (\d+) ms\), (\d+) changed")


def say(text):
    print(f"cluster-bench: {text}", flush=True)


def run(cmd, *, input=None, timeout=3600):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, input=input, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r


def cptoken(db, *args, endpoints=None, prefix=None, input=None, pin=()):
    cmd = list(pin) + [CPTOKEN, "--db", db]
    if endpoints:
        cmd += ["--etcd", ",".join(endpoints)]
    if prefix:
        cmd += ["--etcd-prefix", prefix]
    return run(cmd + list(args), input=input)


def make_store(db, count, user_prefix, first=None):
    """A single-host store at DB with COUNT tokens (users USER_PREFIX0000000..,
    name t), by bulk-creates of 100k (one bulk-create's memory stays small);
    FIRST, when given, is a store copied first (its tokens kept: the same
    digests under every prefix). Returns (USER, TOKEN) of one new token."""
    if first:
        shutil.copytree(first, db)
    else:
        cptoken(db, "init", "--group", "www-data")
    one = None
    for start in range(0, count, 100000):
        lines = "".join(f"{user_prefix}{i:07d} t\n" for i in range(start, min(count, start + 100000)))
        out = cptoken(db, "bulk-create", input=lines).stdout.split("\n", 1)[0].split()
        one = one or (out[0], out[2])
    return one


def push(db, endpoints, prefix):
    t0 = time.monotonic()
    cptoken(db, "push", endpoints=endpoints, prefix=prefix)
    return time.monotonic() - t0


def sync_once(db, endpoints, prefix=None):
    """One full read (`sync --once`): (wall s, the agent's figures from its log line)."""
    t0 = time.monotonic()
    r = cptoken(db, "sync", "--once", endpoints=endpoints, prefix=prefix, pin=PIN["agent"])
    wall = time.monotonic() - t0
    m = FULL_READ.search(r.stdout + r.stderr)
    if not m:
        raise RuntimeError(f"sync --once said no full read:\n{r.stdout}{r.stderr}")
    keys, revision, total_ms, read_ms, changed = map(int, m.groups())
    return wall, {"keys": keys, "total_ms": total_ms, "read_ms": read_ms, "apply_ms": total_ms - read_ms,
                  "changed": changed}


def sizes(path):
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def proc_cpu(pid):
    """User + system CPU s of process PID (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mb(n):
    return f"{n:,} B ({n / 1e6:.1f} MB)"


# ---------------------------------------------------------------- wrk

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def session_cpu(pid):
    """User + system CPU s of every process in session PID (httpd and its children)."""
    total = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == pid:
                total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def wrk(fe, headers):
    r = httpd_bench.run_wrk(f"http://127.0.0.1:{fe.port}/api/ok.txt", headers, S["threads"], S["connections"],
                            S["duration"], Path(headers).with_name("wrk-go"), lambda: session_cpu(fe.httpd.pid),
                            PIN["load"])
    bad = {k: v for k, v in r["statuses"].items() if k != 200}
    if bad:
        # Every request carries a token the store holds in both sets: anything but 200 is a finding.
        say(f"WARNING: statuses {r['statuses']} errors {r['errors']}")
    elif any(r["errors"].values()):
        # A few read errors are kept-alive connections mpm_event closed (as in the httpd benchmark).
        say(f"  wrk socket errors: {r['errors']} of {r['requests']:,} requests")
    return r


# ---------------------------------------------------------------- parts

def part_apply(cluster, work):
    n = S["apply_tokens"]
    eps = cluster.endpoints()
    base = work / "apply-base"
    user, token = make_store(base, 1, "bench")  # T: the token every request carries
    t0 = time.monotonic()
    make_store(work / "apply-full", n, "a", first=base)
    say(f"apply: made a store of {n:,} tokens (+T) in {time.monotonic() - t0:.1f} s (bulk-create)")
    p0, pa = "/cbench/p0/", "/cbench/pa/"
    push(base, eps, p0)
    say(f"apply: push of {n:,} tokens: {push(work / 'apply-full', eps, pa):.1f} s")
    headers = work / "headers"
    headers.write_text(f"cpanel {user}:{token}\n")

    # The front-end: a store that mirrors P0 (T only), and httpd on it. No
    # running agent: the full reads are sync --once, one after the other.
    fe = frontends.Frontend(eps, name="cbench", base=str(work))
    fe.init()
    sync_once(fe.store, eps, p0)
    fe.start_httpd()
    if fe.status_of(token, user) != 200:
        raise RuntimeError(f"T refused: {fe.error_log()}")
    try:
        for variant in S["pin"]:
            if variant.startswith("pinned") or variant.startswith("frontend"):
                # pinned: wrk and httpd on CPU 0, etcd and the agent on CPU 1: what is left of the
                # slowdown is the store's doing (LMDB, page cache), not two cores shared by all.
                # frontend: the agent's CPU (transfer, decoding, apply) on httpd's core too.
                agent_cpu = "1" if variant.startswith("pinned") else "0"
                scheduling = (["chrt", "-b", "0"] if variant.endswith("-batch") else
                              ["chrt", "-i", "0"] if variant.endswith("-idle") else
                              in_agent_cgroup() if variant.endswith("-weight") else [])
                PIN.update(load=["taskset", "-c", "0"], agent=scheduling + ["taskset", "-c", agent_cpu])
                set_affinity(session_pids(fe.httpd.pid), "0")
                set_affinity([cluster.pid(i) for i in range(cluster.size)], "1")
            try:
                measure_apply(fe, headers, eps, p0, pa, n, variant)
            finally:
                PIN.update(load=[], agent=[])
                set_affinity(session_pids(fe.httpd.pid) + [cluster.pid(i) for i in range(cluster.size)], "0,1")
        errors = [line for line in fe.error_log().splitlines()
                  if re.search(r"\[[a-z_]+:(warn|error|crit|alert|emerg)\]", line)]
        say(f"apply: httpd error log: {len(errors)} lines at warn or above" + (f", first: {errors[0]}" if errors else ""))
    finally:
        remove_agent_cgroup()
        fe.close()


def measure_apply(fe, headers, eps, p0, pa, n, variant):
    # The -nochange variants: the store holds PA throughout and every full read reads PA
    # again: the same read (etcd, the transfer, the decoding) with nothing to apply. Set
    # beside the plain variant, the difference is what the apply itself costs the front-end.
    nochange = variant.endswith("-nochange")
    if nochange:
        sync_once(fe.store, eps, pa)
    wrk(fe, headers)  # warm-up, not counted: mpm_event's children and caches settle
    rows = []
    for rnd in range(1, S["rounds"] + 1):
        idle1 = wrk(fe, headers)
        reads = []
        stop = threading.Event()

        def reader():
            # Back to back: PA adds N tokens, P0 takes them away again; both are full reads
            # applied in one transaction on the store httpd is reading.
            i = 0
            while not stop.is_set():
                t_start = time.monotonic()
                if nochange:
                    wall, f = sync_once(fe.store, eps, pa)
                    f.update(wall=wall, kind="same", start=t_start)
                else:
                    wall, f = sync_once(fe.store, eps, pa if i % 2 == 0 else p0)
                    f.update(wall=wall, kind="add" if i % 2 == 0 else "remove", start=t_start)
                reads.append(f)
                i += 1

        th = threading.Thread(target=reader)
        t_load = time.monotonic()
        th.start()
        loaded = wrk(fe, headers)
        t_end = time.monotonic()
        stop.set()
        th.join()
        # Leave the store as the idle runs expect it (P0); count the time inside reads within the run.
        if reads and reads[-1]["kind"] == "add":
            sync_once(fe.store, eps, p0)
        inside = [r for r in reads if r["start"] < t_end]
        busy = sum(min(r["start"] + r["wall"], t_end) - r["start"] for r in inside) / (t_end - t_load)
        idle2 = wrk(fe, headers)
        ratio = loaded["rps"] / ((idle1["rps"] + idle2["rps"]) / 2)
        cpu_idle = (idle1["cpu_us"] + idle2["cpu_us"]) / 2
        rows.append({"ratio": ratio, "busy": busy, "cpu_ratio": loaded["cpu_us"] / cpu_idle, "reads": inside})
        say(f"apply [{variant}] round {rnd}: idle {idle1['rps']:,.0f} / {idle2['rps']:,.0f} req/s, during full "
            f"reads {loaded['rps']:,.0f} req/s, ratio {ratio:.3f}; httpd CPU {cpu_idle:.1f} -> "
            f"{loaded['cpu_us']:.1f} us/req; p99 {idle1['p99_us'] / 1000:.2f} / {loaded['p99_us'] / 1000:.2f} "
            f"/ {idle2['p99_us'] / 1000:.2f} ms; {len(inside)} full reads, busy {busy:.0%} of the run")
        for r in inside:
            say(f"  full read ({r['kind']} {n:,}): {r['keys']} keys, {r['changed']} changed, "
                f"{r['total_ms']} ms (read {r['read_ms']} ms, apply {r['apply_ms']} ms), wall {r['wall']:.2f} s")
    if nochange:
        sync_once(fe.store, eps, p0)
    ratio = statistics.median(r["ratio"] for r in rows)
    adds = [r for row in rows for r in row["reads"] if r["kind"] in ("add", "same")]
    say(f"apply [{variant}]: throughput during {n:,}-token full reads / idle: median {ratio:.3f} over {len(rows)} "
        f"rounds ({', '.join(format(r['ratio'], '.3f') for r in rows)}); busy "
        f"{statistics.median(r['busy'] for r in rows):.0%}; httpd CPU/req loaded / idle: median "
        f"{statistics.median(r['cpu_ratio'] for r in rows):.3f}; " + ("reference (nothing applied)" if nochange else f"target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}"))
    if adds:
        say(f"apply [{variant}]: one full read {'of' if nochange else 'adding'} {n:,} tokens: median {statistics.median(r['total_ms'] for r in adds)} "
            f"ms (read {statistics.median(r['read_ms'] for r in adds)} ms, apply "
            f"{statistics.median(r['apply_ms'] for r in adds)} ms), {len(adds)} reads")


def part_full(cluster, work):
    n = S["tokens"]
    eps = cluster.endpoints()
    src = work / "full-src"
    t0 = time.monotonic()
    if S["fixture"]:
        shutil.copytree(S["fixture"], src)  # a copy: push must not touch the fixture
        say(f"full: copied {S['fixture']} in {time.monotonic() - t0:.1f} s")
    else:
        make_store(src, n, "u")
        say(f"full: made a store of {n:,} tokens in {time.monotonic() - t0:.1f} s (bulk-create)")
    say(f"full: push of {n:,} tokens into an empty prefix: {push(src, eps, None):.1f} s")
    shutil.rmtree(src)
    db = work / "full-mirror"
    cptoken(db, "init", "--group", "www-data")
    after = []
    members = [cluster.pid(i) for i in range(cluster.size)]
    for i in range(S["full_reads"]):
        # Where a full read's time goes: the agent's CPU (this process's children) and each
        # etcd member's, over the read. The agent reads from one member; the others idle.
        etcd0 = [proc_cpu(pid) for pid in members]
        child0 = os.times()
        if i == 0 and S["perf"]:
            perf = work / "perf-agent.data"
            PIN["agent"] = ["perf", "record", "-g", "-o", str(perf), "--"]
        try:
            wall, f = sync_once(db, eps)
        finally:
            PIN["agent"] = []
        child1 = os.times()
        etcd = [proc_cpu(pid) - c for pid, c in zip(members, etcd0)]
        agent_cpu = (child1.children_user - child0.children_user) + (child1.children_system - child0.children_system)
        after.append(sizes(db / "tokens.mdb"))
        say(f"full read {i + 1}: {f['keys']:,} keys, {f['changed']:,} changed: {wall:.1f} s "
            f"(agent: {f['total_ms'] / 1000:.1f} s, read {f['read_ms'] / 1000:.1f} s, apply "
            f"{f['apply_ms'] / 1000:.1f} s); CPU: agent {agent_cpu:.2f} s, etcd members "
            f"{' / '.join(format(c, '.1f') for c in etcd)} s; tokens.mdb {mb(after[-1][0])} apparent, "
            f"{mb(after[-1][1])} on disk")
        if i == 0 and S["perf"]:
            report = subprocess.run(["perf", "report", "-i", str(perf), "--no-children", "--stdio", "--sort",
                                     "dso,symbol", "-g", "none", "--percent-limit", "2"],
                                    capture_output=True, text=True).stdout
            for line in report.splitlines():
                if line.strip() and not line.startswith("#"):
                    say(f"  perf (agent): {line.strip()}")
        if i == 0:
            say(f"full read {n:,} tokens: {wall:.1f} s (read {f['read_ms'] / 1000:.1f} s, apply "
                f"{f['apply_ms'] / 1000:.1f} s); target <= 30 s: {'met' if wall <= 30 else 'NOT met'}")
    # One page of the read (10,000 keys, as the agent asks) from different start keys to the
    # prefix's end: if its time follows how many keys lie after the start, not the page's
    # size, the paged read costs etcd O(keys^2 / page).
    prefix = etcd_cluster.PREFIX
    end = etcd_cluster.prefix_range_end(prefix)
    for start, what in ((prefix, "all 2N keys"), (prefix + "tokens/", "N"), (prefix + "tokens/8", "N/2"),
                        (prefix + "tokens/f8", "N/32")):
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            cluster.etcdctl("get", start, end, "--limit", "10000", "--write-out=json",
                            endpoints=[cluster.endpoints()[0]])
            times.append(time.monotonic() - t0)
        say(f"one page of 10,000 keys from {start!r} (about {what} after it): "
            f"{statistics.median(times) * 1000:.0f} ms (etcdctl, median of 3)")
    k = len(after)
    say(f"tokens.mdb after 1 full read: {mb(after[0][0])} apparent, {mb(after[0][1])} on disk; after {k}: "
        f"{mb(after[-1][0])} apparent, {mb(after[-1][1])} on disk ({after[-1][0] - after[0][0]:+,} B); "
        f"target no larger: "
        f"{'met' if after[-1][0] <= after[0][0] and after[-1][1] <= after[0][1] else 'NOT met'}")


def main():
    work = S["dir"]
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)  # httpd's www-data children must reach the store
    say(f"settings: {json.dumps({k: str(v) for k, v in S.items()})}; etcd {etcd_cluster.ETCD_VERSION_TEXT}; "
        f"load average {os.getloadavg()}")
    # A million tokens is ~2M keys and about 1 GB of etcd's space with its history: the
    # default 2 GiB quota is close, so the setup scale-out.md advises.
    extra = ["--quota-backend-bytes", str(8 << 30)]
    try:
        with etcd_cluster.EtcdCluster(size=3, base_dir=str(work / "etcd"), extra_args=extra) as cluster:
            if "apply" in S["only"]:
                part_apply(cluster, work)
            if "full" in S["only"]:
                part_full(cluster, work)
            say(f"etcd data: {subprocess.run(['du', '-sh', str(work / 'etcd')], capture_output=True, text=True).stdout.split()[0]}")
    finally:
        say(f"load average at end {os.getloadavg()}")
        if not os.environ.get("CBENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""make stress: a soak of the module with an oracle for every response.

For each MPM, a private httpd (t/httpd/conftest.py's Httpd, so the same
config, error-log and sanitizer checks as the real-httpd tests) serves two
protected locations (AuthType cpanel, and Basic with AuthBasicProvider
cptoken) over a store of STRESS_TOKENS tokens. Client threads send a steady
load with keep-alive while a driver runs the admin's commands on a
schedule: create, bulk-create, edit (allowlist narrowed and widened, expiry,
rename), rotate (with and without grace), revoke, revoke --all, prune,
backup, a store-directory swap (a restored backup moved into place through
a symbolic link, atomically), a deliberate fault (the store path missing for
a moment) and graceful restarts (apache2 -k graceful).

The oracle: each token has a timeline of what its requests must get, by
wall-clock time. A state holds from the moment the command that made it
returned (or the moment an expiry passed) until the next command on that
token started; in between, either answer is right. So a request sent after
`revoke` returned must be refused, and a token no command touched must be
admitted. Every status is counted; a 5xx is allowed only for a request that
overlaps a deliberate fault window.

Printed at the end, per MPM: requests, wrong decisions, 5xx outside fault
windows, requests without an answer, child crashes, revoke-to-refusal
latency, each child's anonymous memory at start and end; exit status 1 if
any of the must-be-zero figures is not.

    STRESS_SECONDS=300 STRESS_MPMS=prefork,worker,event /usr/bin/python3 t/stress/stress.py
Run as root (httpd's children run as www-data). Paths: $CPTOKEN, $MOD_CPTOKEN
as for t/httpd. See bench/README.md ("Soak").
"""

import argparse
import base64
import functools
import http.client
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "httpd"))
import conftest as harness  # noqa: E402  (the real-httpd tests' harness)

ADMIT, REFUSE = "admit", "refuse"
INF = float("inf")
# How long a token stays among the "hot" ones the clients ask for most,
# after the driver last changed it.
HOT_SECONDS = 10.0


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- the oracle

class Token:
    """One secret, its user and name, and what its requests must get when."""
    __slots__ = ("user", "name", "secret", "segments", "hot_until", "rotated")

    def __init__(self, user, name, secret, since, expect=ADMIT):
        self.user, self.name, self.secret = user, name, secret
        self.segments = [[since, INF, expect]]  # [from, to, expect]; gaps: either answer is right
        self.hot_until = 0.0
        self.rotated = []  # the tokens it replaced that may be in their grace: revoke reaches them too

    def ends(self, t):
        """The state in force ends at t (a command on this token starts)."""
        self.segments[-1][1] = min(self.segments[-1][1], t)

    def then(self, t, expect, to=INF):
        self.segments.append([t, to, expect])

    def admits_until(self, t):
        """Admitted at most until t (a revoke starts): whatever it would have been later."""
        for seg in self.segments:
            if seg[2] == ADMIT and seg[1] > t:
                seg[1] = t

    def refused_from(self, t):
        """Refused for good from t (the revoke returned)."""
        last = self.segments[-1]
        if last[2] == REFUSE and last[0] <= t and last[1] == INF:
            return
        self.segments = [seg for seg in self.segments if seg[0] < t]
        self.segments.append([t, INF, REFUSE])

    def expected(self, sent, received):
        """ADMIT or REFUSE if the request's whole flight lies in one state, else None."""
        for since, to, expect in self.segments:
            if since <= sent and received <= to:
                return expect
        return None


class Model:
    """What the clients ask for and how each answer is judged; shared by the
    driver and the client threads under one lock."""

    def __init__(self, stable):
        self.lock = threading.Lock()
        self.stable = stable  # never touched by the driver: always admitted
        self.hot = []  # tokens the driver changed recently or may change next
        self.fault_windows = []  # [start, end]: 5xx allowed in them (end INF while open)
        self.counts = Counter()
        self.samples = {}  # kind -> a few example lines
        self.stop = threading.Event()

    def note(self, kind, line):
        self.counts[kind] += 1
        s = self.samples.setdefault(kind, [])
        if len(s) < 8:
            s.append(line)

    def pick(self, rnd):
        """A request to send: (token, another user to present it as, or None)."""
        r = rnd.random()
        with self.lock:
            if r < 0.45 and self.hot:
                return rnd.choice(self.hot), None
            tok = rnd.choice(self.stable)
        if r < 0.90:
            return tok, None
        if r < 0.95:  # right secret, wrong user: refused always
            return tok, "nobody" + tok.user
        # a well-formed secret that was never issued
        return Token(tok.user, tok.name, "".join(rnd.choice("ABCDEFGHJKMNPQRSTVWXYZ0123456789") for _ in range(32)),
                     0.0, REFUSE), None

    def in_fault_window(self, sent, received):
        with self.lock:
            return any(start <= received and sent <= end for start, end in self.fault_windows)

    def judge(self, tok, user_override, sent, received, status, path):
        c = self.counts
        with self.lock:
            expect = REFUSE if user_override else tok.expected(sent, received)
            c["requests"] += 1
            c[f"status {status}"] += 1
        what = f"{path} {tok.user if not user_override else user_override}/{tok.name} sent {sent:.3f} " \
               f"answered {received:.3f}: {status}, expected {expect}; its states {tok.segments}"
        with self.lock:
            if status >= 500:
                if any(s <= received and sent <= e for s, e in self.fault_windows):
                    c["5xx in fault windows"] += 1
                else:
                    self.note("5xx outside fault windows", what)
                return
            if status not in (200, 401, 403):
                self.note("unexpected statuses", what)
                return
            if expect is None:
                c["either answer right"] += 1
            elif (expect == ADMIT) != (status == 200):
                self.note("wrong decisions", what)
            else:
                c[f"checked {expect}"] += 1


# ---------------------------------------------------------------- the clients

def auth_header(tok, user, basic):
    if basic:
        return "Basic " + base64.b64encode(f"{user}:{tok.secret}".encode()).decode()
    return f"cpanel {user}:{tok.secret}"


def client(model, port, seed):
    rnd = random.Random(seed)
    conn = None
    while not model.stop.is_set():
        tok, user_override = model.pick(rnd)
        basic = rnd.random() < 0.3
        path = "/basic/x" if basic else "/api/x"
        headers = {"Authorization": auth_header(tok, user_override or tok.user, basic)}
        fresh = conn is None
        sent = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            received = time.time()
            if resp.will_close:
                conn.close()
                conn = None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            # A keep-alive connection that httpd closed (a graceful restart, its
            # keep-alive timeout) before reading the request: send it again, as
            # any HTTP client does. On a fresh connection it counts as no answer.
            conn.close()
            conn = None
            if fresh:
                _no_answer(model, sent, f"{type(e).__name__}: {e}")
            else:
                with model.lock:
                    model.counts["resent after httpd closed a keep-alive connection"] += 1
            continue
        except OSError as e:  # refused, timed out
            if conn:
                conn.close()
            conn = None
            _no_answer(model, sent, f"{type(e).__name__}: {e}")
            time.sleep(0.05)
            continue
        model.judge(tok, user_override, sent, received, status, path)
    if conn:
        conn.close()


def _no_answer(model, sent, why):
    if model.in_fault_window(sent, time.time()):
        with model.lock:
            model.counts["no answer in fault windows"] += 1
    else:
        with model.lock:
            model.note("no answer outside fault windows", f"sent {sent:.3f}: {why}")


# ---------------------------------------------------------------- the driver

class Driver:
    """Runs the admin's commands on a schedule and tells the model what each
    one means for the tokens' answers."""

    def __init__(self, model, srv, live, rnd, seconds, graceful_every=60.0):
        self.model, self.srv, self.live, self.rnd = model, srv, live, rnd
        self.seconds, self.graceful_every = seconds, graceful_every
        self.store = harness.Store(live)
        self.working = []  # admitted tokens the driver may change
        self.narrowed = []
        self.groups = []  # lists of tokens of one user, for revoke --all
        self.serial = 0
        self.actions = Counter()
        self.revoke_latency = []  # seconds from starting `revoke` to the refusal of the next request
        self.revoke_command = []  # seconds `revoke` took
        self.probe = None  # the driver's own keep-alive connection
        self.revoke_untimed = 0  # revokes whose probe needed a new connection
        self.command_time = Counter()
        self.generation = 0  # store directories made
        self.error = None
        self.journal = []  # (started, returned, command line): to explain a wrong decision

    # -- helpers

    def run(self, *args, expect_ok=True):
        t0 = time.time()
        # prune of the 100k-token store needs ~1 s of CPU and its 1.1 s wait
        # for httpd's children: 4-7 s beside one soak, 18-36 s beside the
        # three of make test on a slow 2-core VM. 30 s, the tests' limit,
        # failed one run in ~7.
        p = self.store.run(*args, check=False, timeout=120)
        t1 = time.time()
        if expect_ok and p.returncode != 0:
            raise RuntimeError(f"cptoken {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}{p.stdout}")
        self.command_time[args[0]] = max(self.command_time[args[0]], t1 - t0)
        self.journal.append((t0, t1, " ".join(map(str, args))))
        return t0, t1, p.stdout

    def next_name(self, prefix):
        self.serial += 1
        return f"{prefix}{self.serial}"

    def heat(self, *toks):
        now = time.time()
        with self.model.lock:
            for t in toks:
                t.hot_until = now + HOT_SECONDS
                if t not in self.model.hot:
                    self.model.hot.append(t)
            self.model.hot = [t for t in self.model.hot if t.hot_until > now or t in self.working]

    def take(self, pool):
        if not pool:
            return None
        return pool.pop(self.rnd.randrange(len(pool)))

    def begin(self, *toks):
        """A command on these tokens starts now: their current state ends."""
        t = time.time()
        with self.model.lock:
            for tok in toks:
                tok.ends(t)
        return t

    # -- the commands

    def create(self):
        user, name = f"w{self.rnd.randrange(20)}", self.next_name("c")
        _, t1, out = self.run("create", user, name)
        tok = Token(user, name, out.strip(), t1)
        assert harness.TOKEN_RE.match(tok.secret), out
        self.working.append(tok)
        self.heat(tok)

    def bulk_create(self, n=50):
        user = self.next_name("g")
        lines = "".join(f"{user} t{i}\n" for i in range(n))
        path = self.srv.dir / "work" / f"{user}.txt"
        path.write_text(lines)
        _, t1, out = self.run("bulk-create", path)
        group = []
        for line in out.splitlines():
            u, name, secret = line.split()
            group.append(Token(u, name, secret, t1))
        assert len(group) == n, out
        self.groups.append(group)
        self.heat(*group[:10])

    def narrow(self):
        tok = self.take(self.working)
        if not tok:
            return
        self.begin(tok)
        _, t1, _ = self.run("edit", tok.user, tok.name, "--allow-ip", "10.0.0.0/8")
        with self.model.lock:
            tok.then(t1, REFUSE)
        self.narrowed.append(tok)
        self.heat(tok)

    def widen(self):
        tok = self.take(self.narrowed)
        if not tok:
            return
        self.begin(tok)
        _, t1, _ = self.run("edit", tok.user, tok.name, "--any-ip")
        with self.model.lock:
            tok.then(t1, ADMIT)
        self.working.append(tok)
        self.heat(tok)

    def expire(self):
        """Sets an expiry 4-5 s ahead: admitted until then, refused after. (2 s
        ahead was refused by the tool as in the past whenever the edit started
        a second late on a loaded machine, which ended the run.)"""
        tok = self.take(self.working)
        if not tok:
            return
        when = int(time.time()) + 5
        t0 = time.time()
        with self.model.lock:
            tok.ends(when)
        _, t1, _ = self.run("edit", tok.user, tok.name, "--expires",
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)))
        with self.model.lock:
            if t1 >= when:  # a slow edit (a loaded machine): unknown from its start until it returned
                tok.ends(t0)
            tok.then(max(t1, when), REFUSE)
        self.heat(tok)

    def rename(self):
        if not self.working:
            return
        tok = self.rnd.choice(self.working)
        new = self.next_name("r")
        self.run("edit", tok.user, tok.name, "--name", new)
        for t in (tok, *tok.rotated):  # rotated tokens follow the name; no answer changes
            t.name = new
        self.heat(tok)

    def rotate(self, grace):
        tok = self.take(self.working)
        if not tok:
            return
        if grace:
            t0, t1, out = self.run("rotate", tok.user, tok.name, "--grace", f"{grace}s")
            with self.model.lock:  # its expiry is the tool's clock, in whole seconds, plus grace
                tok.ends(int(t0) + grace)
                tok.then(int(t1) + grace, REFUSE)
        else:
            self.begin(tok)
            _, t1, out = self.run("rotate", tok.user, tok.name)
            with self.model.lock:
                tok.then(t1, REFUSE)
        fresh = Token(tok.user, tok.name, out.strip(), t1)
        assert harness.TOKEN_RE.match(fresh.secret), out
        fresh.rotated = ([tok] if grace else []) + tok.rotated
        self.working.append(fresh)
        self.heat(tok, fresh)

    def revoke(self):
        tok = self.take(self.working)
        if not tok:
            return
        reached = (tok, *tok.rotated)  # `revoke USER NAME` reaches its rotated tokens too
        t0 = time.time()
        with self.model.lock:
            for t in reached:
                t.admits_until(t0)
        _, t1, _ = self.run("revoke", tok.user, tok.name)
        with self.model.lock:
            for t in reached:
                t.refused_from(t1)
        self.heat(tok)
        # The revoke-to-refusal latency an admin sees: from starting the
        # command to the refusal of the first request sent after it returned
        # (on a kept-alive connection, so that a TCP connect is not counted).
        reconnected = False
        for attempt in range(2):
            try:
                # No socket: closed (a graceful restart, MaxKeepAliveRequests); http.client connects again.
                reconnected = reconnected or self.probe is None or self.probe.sock is None
                if self.probe is None:
                    self.probe = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=15)
                sent = time.time()
                self.probe.request("GET", "/api/x", headers={"Authorization": auth_header(tok, tok.user, False)})
                resp = self.probe.getresponse()
                resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.probe.close()
                self.probe = None  # closed by a graceful restart or its keep-alive timeout: again
        else:
            raise RuntimeError("the revoke probe got no answer twice")
        received = time.time()
        self.model.judge(tok, None, sent, received, resp.status, "/api/x (driver)")
        self.revoke_command.append(t1 - t0)
        if reconnected:  # that would time httpd accepting a connection (a free prefork child, new children)
            self.revoke_untimed += 1
        else:
            self.revoke_latency.append(received - t0)

    def revoke_all(self):
        if not self.groups:
            return
        group = self.groups.pop(0)
        self.heat(*group[:10])
        self.begin(*group)
        _, t1, _ = self.run("revoke", group[0].user, "--all")
        with self.model.lock:
            for tok in group:
                tok.then(t1, REFUSE)

    def prune(self):
        self.run("prune")

    def backup(self):
        path = self.srv.dir / "work" / "backup.mdb"
        if path.exists():
            path.unlink()
        self.run("backup", path)
        return path

    def new_store_dir(self):
        """A copy of the live store in a new directory, as docs/directives.md
        says to restore a backup (copied, then adopted by init); nothing is
        written between the backup and the swap (this driver is the only
        writer)."""
        copy = self.backup()
        self.generation += 1
        d = self.srv.dir / f"store{self.generation}"
        d.mkdir(mode=0o700)
        shutil.copyfile(copy, d / "tokens.mdb")
        harness.Store(d).init()  # adopts it: modes, group, commit record
        return d

    def swap(self):
        """A restored store moved into place atomically: a new symbolic link renamed over the old."""
        d = self.new_store_dir()
        old = os.readlink(self.live)
        tmp = self.srv.dir / "live.tmp"
        os.symlink(d, tmp)
        t0 = time.time()
        os.rename(tmp, self.live)
        self.journal.append((t0, time.time(), f"swap: live -> {d.name}"))
        self._forget_later(old)

    def fault(self):
        """The store path missing for 0.3 s (two `mv`s): 5xx allowed meanwhile."""
        d = self.new_store_dir()
        old = os.readlink(self.live)
        with self.model.lock:
            window = [time.time(), INF]
            self.model.fault_windows.append(window)
        os.unlink(self.live)
        time.sleep(0.3)
        os.symlink(d, self.live)
        with self.model.lock:
            window[1] = time.time()
        self.journal.append((window[0], window[1], f"fault: live missing, then -> {d.name}"))
        self._forget_later(old)

    def _forget_later(self, old):
        # Children reopen within a second; requests in flight finish on the old files.
        threading.Timer(5.0, shutil.rmtree, args=(old,), kwargs={"ignore_errors": True}).start()

    def graceful(self):
        t0 = time.time()
        p = subprocess.run([harness.APACHE, "-f", str(self.srv.conf), "-k", "graceful"],
                           capture_output=True, text=True, env=harness.httpd_env(), timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"apache2 -k graceful failed: {p.stderr}{p.stdout}")
        self.journal.append((t0, time.time(), "apache2 -k graceful"))

    # -- the schedule

    def loop(self):
        periodic = [  # (every seconds, action)
            (10.0, self.prune), (15.0, self.backup), (20.0, self.swap),
            (self.graceful_every, self.graceful), (30.0, self.fault),
        ]
        frequent = [self.create, self.create, self.narrow, self.widen, self.expire, self.rename,
                    functools.partial(self.rotate, 0), functools.partial(self.rotate, 3), self.revoke, self.revoke,
                    self.revoke_all, self.bulk_create]
        start = time.time()
        # Staggered, so that the periodic actions do not all fall together.
        due = {i: start + every * (0.3 + 0.15 * i) for i, (every, _) in enumerate(periodic)}
        try:
            while not self.model.stop.is_set() and time.time() - start < self.seconds:
                now = time.time()
                for i, (every, action) in enumerate(periodic):
                    if now >= due[i]:
                        due[i] = now + every
                        self.actions[action.__name__] += 1
                        action()
                action = self.rnd.choice(frequent)
                if len(self.groups) < 2:
                    action = self.bulk_create
                if len(self.working) < 20:
                    action = self.create
                self.actions[getattr(action, "__name__", "rotate")] += 1
                action()
                self.heat()
                time.sleep(self.rnd.uniform(0.05, 0.15))
        except Exception as e:  # noqa: BLE001 -- reported, and fails the run
            self.error = f"driver: {type(e).__name__}: {e}"
            log(self.error)


# ---------------------------------------------------------------- memory

def anonymous_kb(pid):
    """A process's anonymous memory (heap, stacks: what a leak grows), in kB;
    None if it is gone. Not its private memory: pages of the store's map that
    no other process has touched count as private too, and they are the
    page cache, not the process's."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    return sum(int(l.split()[1]) for l in text.splitlines() if l.startswith("Anonymous:"))


def stores_mapped(pid):
    """How many distinct tokens.mdb files a process maps: one, or two for
    the moment a swapped-out store's last request finishes. More would mean
    old stores kept open."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return 0
    return len({l.split()[4] for l in lines if "/tokens.mdb" in l and "-lock" not in l})


class MemoryWatch:
    """Samples each child's anonymous memory every 2 s: the first sample
    after a warm-up (its caches filled) and the last one before it went."""

    def __init__(self, ppid, warmup):
        self.ppid, self.warmup = ppid, warmup
        self.seen = {}  # pid -> [first seen, first sample after warm-up, last sample]
        self.series = {}  # pid -> [(seconds since first seen, kB)]: the longest-lived is printed
        self.parent = [anonymous_kb(ppid), None]
        self.most_stores = 0  # token stores mapped by one child at once

    def longest_lived(self, points=6):
        """The samples of the child watched longest, at `points` evenly spaced moments."""
        if not self.series:
            return None
        samples = max(self.series.values(), key=lambda v: v[-1][0])
        step = max(1, (len(samples) - 1) // (points - 1))
        picked = samples[::step]
        if picked[-1] != samples[-1]:
            picked.append(samples[-1])
        return " ".join(f"{round(t)}s:{kb}" for t, kb in picked)

    def sample(self):
        now = time.time()
        for pid in harness.children_of(self.ppid):
            kb = anonymous_kb(pid)
            if kb is None:
                continue
            entry = self.seen.setdefault(pid, [now, None, None])
            self.series.setdefault(pid, []).append((now - entry[0], kb))
            self.most_stores = max(self.most_stores, stores_mapped(pid))
            if entry[1] is None and now - entry[0] >= self.warmup:
                entry[1] = kb
            if entry[1] is not None:
                entry[2] = kb
        self.parent[1] = anonymous_kb(self.ppid)

    def run(self, stop):
        while not stop.wait(2.0):
            self.sample()


# ---------------------------------------------------------------- one MPM

# A crashed child leaves a core file in the server's cores/ directory (kept
# with the run's files when a child crashed; see report()).
STRESS_BODY = r"""
CoreDumpDirectory "@DIR@/cores"
<Location "/api">
    AuthType cpanel
    AuthName "stress"
    Require valid-user
</Location>
<Location "/basic">
    AuthType Basic
    AuthName "stress"
    AuthBasicProvider cptoken
    Require valid-user
</Location>
"""


class StressHttpd(harness.Httpd):
    """The tests' httpd with room for the clients, the driver's probe and the
    children a graceful restart leaves finishing their connections."""

    def config_text(self, *args, **kwargs):
        text = super().config_text(*args, **kwargs)
        for old, new in (("    ServerLimit 10\n    MaxRequestWorkers 10", "    ServerLimit 32\n    MaxRequestWorkers 32"),
                         ("    MaxRequestWorkers 16", "    MaxRequestWorkers 32")):
            assert old in text, f"the tests' config changed: {old!r} not in it"
            text = text.replace(old, new)
        return text


def make_template(workdir, tokens):
    """A store of `tokens` tokens (users s0000.. with 10 each), its backup file and the tokens."""
    store = harness.Store(workdir / "template")
    store.init()
    lines = workdir / "template.txt"
    with open(lines, "w") as f:
        for i in range(tokens):
            f.write(f"s{i // 10:05d} t{i % 10}\n")
    t0 = time.time()
    out = store.run("bulk-create", lines).stdout
    log(f"created {tokens} tokens in {time.time() - t0:.1f} s")
    toks = []
    for line in out.splitlines():
        u, n, s = line.split()
        toks.append(Token(u, n, s, 0.0))
    assert len(toks) == tokens
    backup = workdir / "template.mdb"
    store.run("backup", backup)
    return backup, toks


def run_mpm(mpm, seconds, clients, template, stable_tokens, base, seed, graceful_every):
    srv = StressHttpd(base, 1, mpm)  # no backend: the locations serve a file
    (srv.dir / "cores").mkdir()
    os.chmod(srv.dir / "cores", 0o1777)
    for loc in ("api", "basic"):
        (srv.htdocs / loc).mkdir()
        (srv.htdocs / loc / "x").write_text("ok\n")
    first = srv.dir / "store0"
    first.mkdir(mode=0o700)
    shutil.copyfile(template, first / "tokens.mdb")
    harness.Store(first).init()  # adopts it: modes, group, commit record
    live = srv.dir / "live"
    os.symlink(first, live)
    # The template's tokens, with fresh timelines: admitted from the start.
    stable = [Token(t.user, t.name, t.secret, 0.0) for t in stable_tokens]
    model = Model(stable)
    rnd = random.Random(seed)
    driver = Driver(model, srv, live, rnd, seconds, graceful_every)
    # Refusals are logged at error level (for fail2ban): CPT0100, and
    # mod_auth_basic's AH01617 and AH01618 after our provider said no
    # (AH01618: an unknown token, which the next provider may know).
    srv.allow("CPT0100", "AH01617", "AH01618")
    srv.start(STRESS_BODY, db=str(live), loglevel="warn")
    harness.wait_until(lambda: any("resuming normal operations" in l for l in srv.lines()), 10)
    for i in range(20):  # tokens for the driver to change
        driver.create()
    driver.bulk_create()
    watch = MemoryWatch(srv.proc.pid, warmup=min(15.0, seconds / 4))
    mem_stop = threading.Event()
    threads = [threading.Thread(target=client, args=(model, srv.port, seed * 1000 + i), daemon=True)
               for i in range(clients)]
    threads.append(threading.Thread(target=watch.run, args=(mem_stop,), daemon=True))
    t_start = time.time()
    for t in threads:
        t.start()
    log(f"{mpm}: {clients} clients, {len(stable)} tokens, {seconds} s")
    driver.loop()
    model.stop.set()
    if driver.probe:
        driver.probe.close()
    mem_stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.time() - t_start
    watch.sample()
    srv.stop()
    time.sleep(0.2)
    return report(mpm, srv, model, driver, watch, elapsed)


# ---------------------------------------------------------------- figures

def crash_lines(srv):
    lines = [l for l in srv.lines() if "exit signal" in l or "AH00052" in l or "AH00060" in l]
    cores = sorted((srv.dir / "cores").glob("core*"))
    if lines or cores:
        global KEEP_FILES
        KEEP_FILES = True
        lines += [f"core file (kept, with the run's files): {c}" for c in cores]
    return lines


KEEP_FILES = bool(os.environ.get("CPTOKEN_HTTPD_KEEP"))


# What a deliberate fault may log, and for how long after it: a request
# refused for want of a store (CPT0200: logged after the answer, a moment
# after the window closed on a loaded machine), and a child finding no usage
# table to record uses in (CPT0203; it looks at its path once a second).
FAULT_LOG_TAGS = {"CPT0200": 0.5, "CPT0203": 2.0}
# What this load may log at any time: nothing (until 0.13, a child whose
# last-used writer thread fell behind said so; uses are recorded in place now).
LOAD_LOG_LINES = ()


def unexpected_log_lines(srv, model):
    """warn+ lines other than those a fault window explains."""
    bad = []
    for line in srv.unexpected_lines():
        t = harness.line_time(line)
        tail = next((v for k, v in FAULT_LOG_TAGS.items() if f"{k}:" in line), None)
        if tail is not None and t is not None and model.in_fault_window(t - tail, t):
            continue
        if any(text in line for text in LOAD_LOG_LINES):
            continue
        bad.append(line)
    return bad


def median_max_ms(seconds):
    if not seconds:
        return None
    return round(1000 * statistics.median(seconds)), round(1000 * max(seconds))


def report(mpm, srv, model, driver, watch, elapsed):
    c = model.counts
    crashes = crash_lines(srv)
    log_bad = unexpected_log_lines(srv, model)
    sanitizer = srv.sanitizer_reports()
    starts = [e[1] for e in watch.seen.values() if e[1] is not None]
    ends = [e[2] for e in watch.seen.values() if e[2] is not None]
    growth = [e[2] - e[1] for e in watch.seen.values() if e[1] is not None]
    fig = {
        "mpm": mpm,
        "seconds": round(elapsed),
        "requests": c["requests"],
        "req/s": round(c["requests"] / elapsed) if elapsed else 0,
        "checked admitted": c[f"checked {ADMIT}"],
        "checked refused": c[f"checked {REFUSE}"],
        "either answer right": c["either answer right"],
        "wrong decisions": c["wrong decisions"],
        "5xx outside fault windows": c["5xx outside fault windows"],
        "5xx in fault windows": c["5xx in fault windows"],
        "no answer outside fault windows": c["no answer outside fault windows"],
        "unexpected statuses": c["unexpected statuses"],
        "resent after a closed keep-alive": c["resent after httpd closed a keep-alive connection"],
        "child crashes": len(crashes),
        "unexpected error-log lines": len(log_bad),
        "sanitizer reports": 1 if sanitizer else 0,
        "statuses": {k[7:]: v for k, v in sorted(c.items()) if k.startswith("status ")},
        "driver actions": dict(sorted(driver.actions.items())),
        "revoke-to-refusal ms (median, max)": median_max_ms(driver.revoke_latency),
        "revoke command ms (median, max)": median_max_ms(driver.revoke_command),
        "revokes probed on a new connection (not timed)": driver.revoke_untimed,
        "slowest command ms": {k: round(1000 * v) for k, v in sorted(driver.command_time.items())},
        "children watched": len(watch.seen),
        "child anonymous kB at start (median, max)": (int(statistics.median(starts)), max(starts)) if starts else None,
        "child anonymous kB at end (median, max)": (int(statistics.median(ends)), max(ends)) if ends else None,
        "child anonymous kB growth (max)": max(growth) if growth else None,
        "parent anonymous kB (start, end)": tuple(watch.parent),
        "longest-lived child, kB at its age": watch.longest_lived(),
        "most token stores one child mapped": watch.most_stores,
        "driver error": driver.error,
    }
    must_be_zero = ("wrong decisions", "5xx outside fault windows", "no answer outside fault windows",
                    "unexpected statuses", "child crashes", "unexpected error-log lines", "sanitizer reports")
    ok = all(fig[k] == 0 for k in must_be_zero) and driver.error is None and c["requests"] > 0
    print(f"\n== {mpm} ==", flush=True)
    for k, v in fig.items():
        print(f"  {k:42} {v}")
    for kind in ("wrong decisions", "5xx outside fault windows", "no answer outside fault windows",
                 "unexpected statuses"):
        for line in model.samples.get(kind, []):
            print(f"  {kind}: {line}")
    wrong = model.samples.get("wrong decisions", [])
    if wrong:  # the commands around the first wrong decision
        first = float(wrong[0].split(" sent ")[1].split()[0])
        for t0, t1, what in driver.journal:
            if first - 3 <= t1 and t0 <= first + 1:
                print(f"  journal: {t0:.3f} .. {t1:.3f}  {what}")
    for line in (crashes + log_bad)[:20]:
        print(f"  log: {line}")
    if sanitizer:
        print(sanitizer[:5000])
    print(f"  => {'ok' if ok else 'FAILED'}", flush=True)
    fig["ok"] = ok
    return fig


def markdown(figs, args):
    rows = ["requests", "req/s", "checked admitted", "checked refused", "either answer right", "wrong decisions",
            "5xx outside fault windows", "5xx in fault windows", "no answer outside fault windows",
            "child crashes", "revoke-to-refusal ms (median, max)", "revoke command ms (median, max)",
            "children watched",
            "child anonymous kB at start (median, max)", "child anonymous kB at end (median, max)",
            "child anonymous kB growth (max)", "parent anonymous kB (start, end)",
            "longest-lived child, kB at its age", "most token stores one child mapped"]
    out = ["| | " + " | ".join(f["mpm"] for f in figs) + " |", "|---|" + "---:|" * len(figs)]
    for r in rows:
        out.append(f"| {r} | " + " | ".join(str(f[r]) for f in figs) + " |")
    out.append("")
    for f in figs:
        out.append(f"- {f['mpm']}: driver actions {f['driver actions']}; statuses {f['statuses']}")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("STRESS_SECONDS", 300)))
    ap.add_argument("--mpms", default=os.environ.get("STRESS_MPMS", "prefork,worker,event"))
    ap.add_argument("--tokens", type=int, default=int(os.environ.get("STRESS_TOKENS", 100000)))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("STRESS_CLIENTS", 8)))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("STRESS_SEED") or random.randrange(1 << 16)),
                    help="the driver's and the clients' choices (printed: give it again to repeat a schedule)")
    ap.add_argument("--graceful-every", type=float, default=float(os.environ.get("STRESS_GRACEFUL_EVERY", 60)),
                    help="seconds between graceful restarts (children live that long)")
    ap.add_argument("--results", default=os.environ.get("STRESS_RESULTS", ""),
                    help="also write the figures as a markdown table to this file")
    args = ap.parse_args()
    log(f"seed {args.seed} (STRESS_SEED), {args.tokens} tokens, {args.clients} clients, {args.seconds:g} s per MPM")
    base = Path(tempfile.mkdtemp(prefix="cptoken-stress-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    figs = []
    try:
        template, toks = make_template(base, args.tokens)
        for i, mpm in enumerate(args.mpms.split(",")):
            figs.append(run_mpm(mpm, args.seconds, args.clients, template, toks, base, args.seed + i,
                                args.graceful_every))
    finally:
        if KEEP_FILES:
            log(f"the run's files are kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    table = markdown(figs, args)
    print("\n" + table)
    if args.results:
        Path(args.results).write_text(table)
    return 0 if figs and all(f["ok"] for f in figs) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:  # httpd inherits it: a crashed child leaves a core file (where kernel.core_pattern is a plain name)
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass
    sys.exit(main())

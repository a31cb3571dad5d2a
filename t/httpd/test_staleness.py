# SPDX-License-Identifier: Apache-2.0
"""CPTokenMaxStaleness and `SetHandler cptoken-status` (issue 24): a store
that mirrors etcd is used only while DIR/mirror.state proves it fresh. Else
every request that needs a token gets 503 with Retry-After (never 401, never
admitted), one CPT0207 line a second per process says why, and the status
handler answers 503 too, for the load balancer. The tests write mirror.state
themselves, as the agent (`cptoken sync`) does: one line, replaced by a
rename, owned like the store's other files, on this boot's CLOCK_BOOTTIME."""

import http.client
import os
import re
import threading
import time
from collections import Counter

import pytest

from conftest import ALL_MPMS, CPANEL_AUTH, api_location, assert_admitted, wait_until
from test_config import configtest
from test_providers import BASIC_TAGS, basic_location, htpasswd

LIMIT = 5
RETRY_AFTER = "5"
BOOT_ID = open("/proc/sys/kernel/random/boot_id").read().strip()
OTHER_BOOT_ID = "00000000-0000-4000-8000-000000000000"

STATUS_LOCATION = """
<Location "/status">
    SetHandler cptoken-status
    Require all granted
</Location>
"""


def boottime_ns():
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def long_ago():
    """An age in seconds far past LIMIT, at most an hour, that this host's boot clock can hold: a
    proof is stamped on CLOCK_BOOTTIME, and a machine up for less than an hour (a new CI machine)
    has no stamp for an hour ago (the module reads it as never verified)."""
    age = min(3600, boottime_ns() // 10**9 - 1)
    assert age > 12 * LIMIT, f"this host booted {age + 1} s ago: too recently for the test"
    return age


def write_state(store, *, age=0.0, boot=BOOT_ID, verified=None, revision=42, state="live", text=None):
    """Writes STORE/mirror.state as the agent does (mirror.state.new, then a
    rename), owned and grouped as the store's data file, mode 0640: proven
    `age` seconds ago in boot `boot`, or exactly `text`."""
    if text is None:
        if verified is None:
            verified = boottime_ns() - int(age * 1e9)
        text = (f"cptoken-mirror 1 boot={boot} verified={verified} revision={revision} "
                f"cluster=14841639068965178418 state={state}\n")
    st = os.stat(store.path / "tokens.mdb")
    new = store.path / "mirror.state.new"
    new.write_text(text)
    os.chown(new, st.st_uid, st.st_gid)
    os.chmod(new, 0o640)
    os.rename(new, store.path / "mirror.state")


def start(srv, limit=LIMIT, more=""):
    """httpd with CPTokenMaxStaleness `limit` at server level, /api (AuthType
    cpanel), /basic (AuthBasicProvider cptoken) and /status."""
    srv.allow("CPT0207")
    body = (f"CPTokenMaxStaleness {limit}\n" + api_location() +
            basic_location("cptoken").replace('"/api"', '"/basic"').replace("/api", "/basic") +
            STATUS_LOCATION + more)
    return srv.start(body)


def assert_unavailable(r):
    assert r.status == 503, f"expected 503 for a stale store, got {r!r}"
    assert r.header("Retry-After") == [RETRY_AFTER], r.headers
    assert r.challenges == [], f"a 503 must not challenge for other credentials: {r.challenges}"


def stale_lines(srv, since=0):
    return srv.wait_lines(since, "CPT0207")


def assert_no_token_in_log(srv, *tokens):
    text = srv.log_text()
    for token in tokens:
        assert token not in text and token.lower() not in text, "a token reached the error log"


# ---------------------------------------------------------------- requests

@ALL_MPMS
def test_fresh_store_admits(srv):
    token = srv.store.create("alice", "ci")
    write_state(srv.store)
    start(srv)
    for _ in range(4):
        write_state(srv.store)  # the agent keeps proving it
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
        assert_admitted(srv.get("/basic/x", user=f"alice:{token}"))
    assert srv.lines(tag="CPT0207") == []


@ALL_MPMS
def test_stale_store_answers_503_with_the_age_and_the_limit(srv):
    token = srv.store.create("alice", "ci")
    write_state(srv.store, age=LIMIT + 5)
    start(srv)
    for _ in range(4):
        assert_unavailable(srv.get(auth=f"cpanel alice:{token}"))
        assert_unavailable(srv.get("/basic/x", user=f"alice:{token}"))
    # Refused before any check: no credentials, unknown tokens alike (a 401 would make a client drop them).
    assert_unavailable(srv.get())
    assert_unavailable(srv.get(auth="cpanel alice:" + "Q" * 32))
    lines = stale_lines(srv)
    assert lines, srv.log_text()
    m = re.search(r"not verified for (\d+\.\d+) s, CPTokenMaxStaleness (\d+) s", lines[0])
    assert m, lines[0]
    assert LIMIT + 5 <= float(m.group(1)) < LIMIT + 60 and int(m.group(2)) == LIMIT, lines[0]
    assert "[cptoken:error]" in lines[0] and str(srv.store.path) in lines[0], lines[0]
    assert srv.lines(tag="CPT0100") == [] and srv.lines(tag="CPT0101") == [], srv.log_text()
    assert_no_token_in_log(srv, token)


def test_stale_log_is_said_at_most_once_a_second_per_process(srv):
    token = srv.store.create("alice", "ci")
    write_state(srv.store, age=LIMIT + 5)
    start(srv)
    began = time.monotonic()
    for _ in range(30):
        assert_unavailable(srv.get(auth=f"cpanel alice:{token}"))
    elapsed = time.monotonic() - began
    lines = stale_lines(srv)
    pids = {re.search(r"\[pid (\d+)", l).group(1) for l in lines}
    assert len(lines) <= len(pids) * (int(elapsed) + 2), f"{len(lines)} lines in {elapsed:.1f} s:\n" + "\n".join(lines)


@pytest.mark.parametrize("case, reason", [
    ("missing", "no mirror.state"),
    ("other boot", "verified before this host's last boot"),
    ("never verified", "never verified in this boot"),
    ("corrupt", "is not a mirror state line"),
    ("ahead", "ahead of this host's boot clock"),
])
def test_no_proof_answers_503_and_says_why(srv, case, reason):
    token = srv.store.create("alice", "ci")
    if case == "other boot":
        write_state(srv.store, boot=OTHER_BOOT_ID)
    elif case == "never verified":
        write_state(srv.store, verified=0, state="syncing")
    elif case == "corrupt":
        write_state(srv.store, text="cptoken-mirror 1 boot=x verified=soon\n")
    elif case == "ahead":
        write_state(srv.store, verified=boottime_ns() + 3600 * 10**9)
    start(srv)
    assert_unavailable(srv.get(auth=f"cpanel alice:{token}"))
    assert_unavailable(srv.get("/basic/x", user=f"alice:{token}"))
    lines = stale_lines(srv)
    assert lines and "no proof of freshness" in lines[0] and reason in lines[0], srv.log_text()
    assert_no_token_in_log(srv, token)


@ALL_MPMS
def test_limit_0_reads_nothing_and_changes_nothing(srv):
    token = srv.store.create("alice", "ci")
    write_state(srv.store, text="garbage\n")
    start(srv, limit=0)
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    (srv.store.path / "mirror.state").unlink()
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    write_state(srv.store, age=long_ago())
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert_admitted(srv.get("/basic/x", user=f"alice:{token}"))
    assert srv.lines(tag="CPT0207") == []


def test_unset_is_off(srv):
    token = srv.store.create("alice", "ci")
    srv.start()  # no CPTokenMaxStaleness, no mirror.state: a single host
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))


def test_location_limit_overrides_the_server_one(srv):
    token = srv.store.create("alice", "ci")
    write_state(srv.store, age=LIMIT + 5)
    srv.allow("CPT0207")
    srv.start("CPTokenMaxStaleness 0\n" + api_location() +
              api_location("/strict", more=f"    CPTokenMaxStaleness {LIMIT}"))
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert_unavailable(srv.get("/strict/x", auth=f"cpanel alice:{token}"))


def test_htpasswd_users_beside_tokens_keep_working(srv):
    """AuthBasicProvider file cptoken: a password without a token's shape is
    not ours to refuse, whatever the mirror says."""
    srv.allow(*BASIC_TAGS)
    token = srv.store.create("alice", "ci")
    ht = htpasswd(srv, ("carol", "carol-password"))
    write_state(srv.store, age=LIMIT + 5)
    start(srv, more=basic_location("file cptoken", ht).replace('"/api"', '"/both"').replace("/api", "/both"))
    assert_admitted(srv.get("/both/x", user="carol:carol-password"), user="carol")
    assert_unavailable(srv.get("/both/x", user=f"alice:{token}"))


@ALL_MPMS
def test_recovery_without_restart(srv):
    token = srv.store.create("alice", "ci")
    write_state(srv.store, age=LIMIT + 5)
    start(srv)
    for _ in range(4):  # every child has seen the stale proof
        assert_unavailable(srv.get(auth=f"cpanel alice:{token}"))
    write_state(srv.store)
    proven = time.monotonic()
    # Read again within 250 ms; two seconds leave room for a curl per look on a busy machine (ASan, 4
    # workers on 2 cores), and still tell it from a proof only noticed at restart.
    assert wait_until(lambda: srv.get(auth=f"cpanel alice:{token}").status == 200, timeout=2.0, step=0.05), \
        "a fresh proof was not noticed within two seconds"
    noticed = time.monotonic() - proven
    # Every child, every thread: the proof is kept per process and read again within 250 ms.
    time.sleep(0.3)
    for _ in range(8):
        write_state(srv.store)
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert noticed < 2.0
    # And stale again: the kept proof ages without any read.
    write_state(srv.store, age=LIMIT - 1)
    time.sleep(1.5)
    for _ in range(4):
        assert_unavailable(srv.get(auth=f"cpanel alice:{token}"))


@ALL_MPMS
def test_concurrent_requests_while_the_proof_comes_and_goes(srv):
    """Threads of every child judge the kept proof while the agent's file
    comes, ages and goes: a valid token only ever gets 200 or 503, never 401
    (the client would drop it) nor 500, and a stale store never admits."""
    token = srv.store.create("alice", "ci")
    write_state(srv.store)
    start(srv)
    statuses = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("GET", "/api/x", headers={"Authorization": f"cpanel alice:{token}"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                continue
            with lock:
                statuses[status] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        for phase in range(12):
            if phase % 3 == 0:
                write_state(srv.store)
            elif phase % 3 == 1:
                write_state(srv.store, age=LIMIT + 5)
            else:
                (srv.store.path / "mirror.state").unlink()
            time.sleep(0.3)
        # Stale for good: once every child has read it again, nothing is admitted.
        write_state(srv.store, age=LIMIT + 5)
        time.sleep(0.5)
        with lock:
            flipping = Counter(statuses)
            statuses.clear()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(flipping) == {200, 503}, f"while the proof came and went: {dict(flipping)}"
    assert set(statuses) == {503}, f"while stale: {dict(statuses)}"
    assert srv.lines(tag="CPT0100") == [] and srv.lines(tag="CPT0200") == [], srv.log_text()
    assert all("[cptoken:error]" in line for line in srv.lines(tag="CPT0207"))
    assert_no_token_in_log(srv, token)


# ---------------------------------------------------------------- the status handler

@ALL_MPMS
def test_status_fresh_and_stale(srv):
    write_state(srv.store, age=1, revision=1234)
    start(srv)
    r = srv.get("/status")
    assert r.status == 200, r
    assert r.header("Content-Type") == ["application/json"], r.headers
    assert r.header("Cache-Control") == ["no-store"], r.headers
    body = r.json
    assert body["status"] == "ok" and body["mirror"] is True and body["state"] == "live", body
    assert body["revision"] == 1234 and body["max_staleness"] == LIMIT, body
    assert isinstance(body["age_seconds"], float) and 1 <= body["age_seconds"] < 30, body
    write_state(srv.store, age=LIMIT + 5, revision=1235, state="syncing")
    r = srv.get("/status")  # read fresh: no cache, no wait
    assert r.status == 503, r
    assert r.header("Retry-After") == [RETRY_AFTER] and r.header("Cache-Control") == ["no-store"], r.headers
    body = r.json
    assert body["status"] == "stale" and body["revision"] == 1235 and body["state"] == "syncing", body
    assert body["age_seconds"] >= LIMIT + 5, body
    assert srv.lines(tag="CPT0207") == []  # health checks log nothing


@pytest.mark.parametrize("case", ["missing", "corrupt", "other boot"])
def test_status_without_proof(srv, case):
    if case == "corrupt":
        write_state(srv.store, text="garbage\n")
    elif case == "other boot":
        write_state(srv.store, boot=OTHER_BOOT_ID)
    start(srv)
    r = srv.get("/status")
    assert r.status == 503, r
    body = r.json
    assert body["status"] == "stale" and body["age_seconds"] is None and body["reason"], body
    assert body["mirror"] is (case != "missing"), body


def test_status_of_a_single_host(srv):
    srv.start(STATUS_LOCATION)  # no limit, no mirror.state
    r = srv.get("/status")
    assert r.status == 200, r
    body = r.json
    assert body["status"] == "ok" and body["mirror"] is False and body["max_staleness"] == 0, body
    assert body["revision"] is None and body["age_seconds"] is None and body["state"] is None, body
    age = long_ago()
    write_state(srv.store, age=age)  # a mirror, but no limit here: still served, so still ok
    body = srv.get("/status").json
    assert body["status"] == "ok" and body["mirror"] is True and body["age_seconds"] >= age, body


def test_status_methods(srv):
    write_state(srv.store)
    start(srv)
    r = srv.get("/status", args=["-I"])  # HEAD (curl writes the headers where the body would go)
    assert r.status == 200 and b"{" not in r.body, r
    for method in ("POST", "PUT", "DELETE"):
        r = srv.get("/status", method=method, data="x")
        assert r.status == 405, r
        assert "GET" in r.header("Allow")[0], r.headers


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize("value", ["abc", "-1", "86401", "1.5", "", "5s"])
def test_garbage_is_a_config_error(srv, value):
    rc, out = configtest(srv, f'CPTokenMaxStaleness "{value}"\n' + api_location())
    assert rc != 0 and "CPTokenMaxStaleness" in out, out


@pytest.mark.parametrize("value", ["0", "30", "86400"])
def test_valid_limits_pass_configtest(srv, value):
    rc, out = configtest(srv, api_location(auth=CPANEL_AUTH + f"\n    CPTokenMaxStaleness {value}"))
    assert rc == 0, out

# SPDX-License-Identifier: Apache-2.0
"""Many front-ends, one token set (issue 24): real etcd (3 members), and per
front-end a store, its agent (`cptoken sync`) and an httpd with the module.
The writers are `cptoken --etcd ...` on any front-end. Lines starting with
"propagation:" are the measured times from a command's return to the first
request that gets the new answer on every front-end."""

import http.client
import json
import os
import pwd
import shutil
import statistics
import tempfile
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Gateway, b64, measure
from etcd_cluster import ETCD_VERSION_TEXT, EtcdCluster
from frontends import CPTOKEN, MANAGER_USER, MOD, Frontend, manager_user


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def until_everywhere(frontends, token, status, timeout=10.0, user="alice"):
    """Seconds until every front-end answers `status` for USER's `token`
    (polled over kept-alive connections, each front-end until it does)."""
    start = time.monotonic()
    for fe in frontends:
        while fe.status_of(token, user) != status:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{fe.dir.name} still not {status} after {timeout} s")
    return time.monotonic() - start


@pytest.fixture
def two(cluster):
    with Frontend(cluster.endpoints(), name="a") as a, Frontend(cluster.endpoints(), name="b") as b:
        yield a, b


def test_create_and_revoke_reach_every_frontend(two):
    a, b = two
    rounds = int(os.environ.get("PROPAGATION_ROUNDS", "100"))
    created, revoked = [], []
    for i in range(rounds):
        writer = (a, b)[i % 2]  # made anywhere
        token = writer.cptoken("create", "alice", f"t{i}").stdout.strip()
        created.append(until_everywhere(two, token, 200))
        writer.cptoken("revoke", "alice", f"t{i}")
        revoked.append(until_everywhere(two, token, 401))
    for what, times in (("create", created), ("revoke", revoked)):
        measure(f"{what} p50 {statistics.median(times) * 1000:.1f} ms p99 "
                f"{percentile(times, 99) * 1000:.1f} ms max {max(times) * 1000:.1f} ms "
                f"({len(times)} operations, 2 front-ends, etcd {ETCD_VERSION_TEXT})", tag="propagation")
    # Read your writes: the writer's own front-end had it when the command returned.
    token = a.cptoken("create", "alice", "mine").stdout.strip()
    assert a.status_of(token) == 200


@pytest.fixture
def managed(cluster):
    """Two front-ends; a's store is the manager user's, for a manager instance there."""
    with Frontend(cluster.endpoints(), name="a", owner=MANAGER_USER) as a, \
            Frontend(cluster.endpoints(), name="b") as b:
        yield a, b


def test_the_manager_writes_to_etcd(managed):
    """With CPTokenEtcd, mod_cptoken_manager.so sends the manager's writes to etcd as `cptoken --etcd`
    does: a token made or revoked through the API on one front-end is admitted or refused on every
    one, and on the manager's own front-end as soon as the call returns."""
    a, b = managed
    a.start_manager()
    admin = a.cptoken("create", "alice", "admin").stdout.strip()
    status, body = a.manager_call("/execute/Tokens/create_full_access?name=made-here", admin)
    assert status == 200 and body["status"] == 1, (body, a.manager_error_log())
    token = body["data"]["token"]
    assert a.status_of(token) == 200  # read your writes: this host's mirror held it when the call returned
    until_everywhere((a, b), token, 200)
    listed = json.loads(b.cptoken("list", "alice", "--json", etcd=False).stdout)
    assert "made-here" in [t["name"] for t in listed]
    status, body = a.manager_call("/execute/Tokens/revoke?name=made-here", admin)
    assert status == 200 and body["status"] == 1, body
    assert a.status_of(token) == 401
    until_everywhere((a, b), token, 401)
    # A name made on another host meanwhile is taken for the manager too.
    b.cptoken("create", "alice", "taken")
    status, body = a.manager_call("/execute/Tokens/create_full_access?name=taken", admin)
    assert status == 200 and body["status"] == 0 and "taken" in json.dumps(body["errors"]), body
    log = a.manager_error_log()
    assert "CPT0105: manager: Tokens::create_full_access: written to etcd at revision" in log, log
    assert "this host's mirror holds it" in log, log
    assert token not in log and admin not in log


def test_a_manager_without_cptokenetcd_changes_nothing(managed):
    """The front-ends' mod_cptoken.so (no CPTokenEtcd) on a mirror: a write would reach no other
    front-end and be undone by the agent, so the store refuses it: 500, the reason in the error log,
    nothing made anywhere."""
    a, b = managed
    a.start_manager(module=MOD, etcd=False)
    admin = a.cptoken("create", "alice", "admin").stdout.strip()
    status, _ = a.manager_call("/execute/Tokens/create_full_access?name=local-only", admin)
    assert status == 500
    assert "mirrors the token set in etcd (cluster mode)" in a.manager_error_log()
    names = [t["name"] for t in json.loads(b.cptoken("list", "alice", "--json", etcd=False).stdout)]
    assert names == ["admin"]
    status, body = a.manager_call("/execute/Tokens/list", admin)  # reads still work
    assert status == 200 and [t["name"] for t in body["data"]] == ["admin"], body


def test_a_name_raced_for_from_two_hosts_has_one_winner(two):
    a, b = two
    rounds = int(os.environ.get("RACE_ROUNDS", "200"))
    losses = {"a": 0, "b": 0}
    with ThreadPoolExecutor(2) as pool:
        for i in range(rounds):
            results = list(pool.map(lambda fe: fe.cptoken("create", "bob", f"race{i}", check=False), (a, b)))
            winners = [r for r in results if r.returncode == 0]
            losers = [r for r in results if r.returncode != 0]
            assert len(winners) == 1, [(r.returncode, r.stderr) for r in results]
            assert "already has a token named 'race" in losers[0].stderr, losers[0].stderr
            losses["a" if results[0].returncode else "b"] += 1
            token = winners[0].stdout.strip()
            assert a.status_of(token, "bob") == 200 or until_everywhere((a,), token, 200, 5, "bob") >= 0
    measure(f"name race, {rounds} rounds from 2 hosts: one winner each, lost by a {losses['a']}, "
            f"b {losses['b']}", tag="propagation")
    listed = a.cptoken("list", "bob", etcd=False).stdout
    assert sum(1 for line in listed.splitlines() if "race" in line) == rounds


def test_a_bulk_create_bigger_than_one_etcd_transaction(two):
    a, b = two
    count = 300  # 600 keys: 5 transactions of etcd's default 128 operations
    lines = "".join(f"carol c{i}\n" for i in range(count))
    out = a.cptoken("bulk-create", "-", input=lines).stdout.split()
    tokens = out[2::3]
    assert len(tokens) == count
    for token in (tokens[0], tokens[count // 2], tokens[-1]):
        until_everywhere((a, b), token, 200, user="carol")
    assert all(b.status_of(t, "carol") == 200 for t in tokens)
    assert len(b.cptoken("list", "carol", etcd=False).stdout.splitlines()) >= count


def test_push_moves_a_single_host_store_into_the_cluster(cluster, tmp_path):
    os.chmod(tmp_path, 0o755)
    single = tmp_path / "single"

    def run(*args, etcd=False, check=True, input=None):
        cmd = [CPTOKEN, "--db", str(single)] + (["--etcd", ",".join(cluster.endpoints())] if etcd else [])
        return subprocess.run(cmd + list(args), capture_output=True, text=True, check=check, input=input)

    run("init", "--group", "www-data")
    kept = run("create", "erin", "kept").stdout.strip()
    gone = run("create", "erin", "gone").stdout.strip()
    run("revoke", "erin", "gone")
    pushed = run("push", etcd=True)
    assert "copied 2 token record(s) and 2 name(s)" in pushed.stdout, pushed.stdout
    with Frontend(cluster.endpoints(), name="b") as b:
        assert b.status_of(kept, "erin") == 200
        assert b.status_of(gone, "erin") == 401
        listed = b.cptoken("list", "erin", etcd=False).stdout
        assert "kept" in listed and "gone" not in listed
        fresh = b.cptoken("create", "erin", "gone").stdout.strip()  # the revoked one's name is free again
        assert b.status_of(fresh, "erin") == 200
        # Without --etcd, a mirror takes no change (it would reach no other host)...
        local = b.cptoken("revoke", "erin", "kept", etcd=False, check=False)
        assert local.returncode == 1 and "mirrors the token set in etcd" in local.stderr, local.stderr
        assert b.status_of(kept, "erin") == 200
        # ...but its daily prune still remakes its usage table.
        pruned = b.cptoken("prune", etcd=False)
        assert "its tokens are pruned there" in pruned.stdout and "usage table has room" in pruned.stdout
    again = run("push", etcd=True, check=False)
    assert again.returncode == 1 and "already holds a token set" in again.stderr, again.stderr


def test_revoke_still_works_when_etcd_is_out_of_space():
    with EtcdCluster(size=3, progress_notify_interval="1s",
                     extra_args=["--quota-backend-bytes", str(8 << 20)]) as cluster:
        with Frontend(cluster.endpoints(), name="a") as a, Frontend(cluster.endpoints(), name="b") as b:
            token = a.cptoken("create", "dave", "keep").stdout.strip()
            until_everywhere((a, b), token, 200, user="dave")
            # Fill etcd outside the token prefix until it refuses puts: 1 MB values through the gateway
            # (one argument of etcdctl may hold at most 128 KiB).
            gateway = Gateway(cluster.endpoints()[0])
            conn = http.client.HTTPConnection(gateway.host, gateway.port, timeout=30)
            filler = os.urandom(512 * 1024).hex()[: 1000 * 1000]
            for i in range(200):
                try:
                    gateway.post(conn, "/v3/kv/put", {"key": b64(f"/filler/{i}"), "value": b64(filler)})
                except RuntimeError as e:
                    assert "space exceeded" in str(e)
                    break
            else:
                pytest.fail("etcd never ran out of space")
            conn.close()
            refused = a.cptoken("create", "dave", "more", check=False)
            assert refused.returncode == 1 and "out of space" in refused.stderr, refused.stderr
            revoked = b.cptoken("revoke", "dave", "keep")
            assert "out of space" in revoked.stderr
            until_everywhere((a, b), token, 401, user="dave")


def test_quorum_lost_turns_into_503_after_the_limit_and_back_by_itself(cluster):
    limit = 3
    with Frontend(cluster.endpoints(), name="a", max_staleness=limit) as a, \
            Frontend(cluster.endpoints(), name="b", max_staleness=limit) as b:
        token = a.cptoken("create", "alice", "quorum").stdout.strip()
        until_everywhere((a, b), token, 200)
        assert a.request("/cptoken-status")[0] == 200
        # How old each front-end's last proof is at the loss (a proof can land late on a busy machine).
        proof_age = max(time.clock_gettime_ns(time.CLOCK_BOOTTIME) - int(fe.mirror_state()["verified"])
                        for fe in (a, b)) / 1e9
        cluster.kill(1)
        cluster.kill(2)
        lost = time.monotonic()
        for fe in (a, b):
            while fe.status_of(token) != 503:
                assert time.monotonic() - lost < limit + 10, fe.error_log()[-2000:]
                time.sleep(0.05)
        # Not before the limit, counted from the last proof before the loss.
        assert time.monotonic() - lost >= limit - proof_age - 0.25, proof_age
        status, headers, body = a.request("/api/ok.txt", {"Authorization": f"cpanel alice:{token}"})
        assert status == 503 and int(headers["Retry-After"]) > 0
        status, _, body = a.request("/cptoken-status")
        assert status == 503 and b'"stale"' in body
        assert token not in a.error_log()
        cluster.restart(1)
        cluster.restart(2)
        back = time.monotonic()
        until_everywhere((a, b), token, 200, timeout=60)
        measure(f"quorum back: every front-end accepts again after "
                f"{time.monotonic() - back:.1f} s (agents and httpd never restarted)", tag="propagation")
        assert a.agent.poll() is None and b.agent.poll() is None
        assert a.request("/cptoken-status")[0] == 200


def test_list_adds_up_the_uses_of_every_frontend(cluster):
    args = ["--usage-every", "1s"]
    with Frontend(cluster.endpoints(), name="a", agent_args=args + ["--host-name", "fe-a"]) as a, \
            Frontend(cluster.endpoints(), name="b", agent_args=args + ["--host-name", "fe-b"]) as b:
        token = a.cptoken("create", "alice", "used").stdout.strip()
        until_everywhere((a, b), token, 200)
        for _ in range(2):
            assert a.status_of(token) == 200
        for _ in range(3):
            assert b.status_of(token) == 200
        # until_everywhere made uses too: count what each host's table says, through the agents' publishing.
        deadline = time.monotonic() + 20
        while True:
            listed = json.loads(a.cptoken("list", "alice", "--json").stdout)
            row = next(t for t in listed if t["name"] == "used")
            local_a = json.loads(a.cptoken("list", "alice", "--json", etcd=False).stdout)
            local_b = json.loads(b.cptoken("list", "alice", "--json", etcd=False).stdout)
            uses = [next(t for t in rows if t["name"] == "used")["uses"] for rows in (local_a, local_b)]
            if row["uses"] == sum(uses) and min(uses) > 0:
                break
            assert time.monotonic() < deadline, (row, uses)
            time.sleep(0.2)
        assert row["uses"] >= 5


def test_the_two_roles_of_the_docs(cluster, tmp_path):
    """docs/scale-out.md's roles: agents read the token set and write only
    their usage; admins write the token set. An agent's credentials cannot
    make a token."""
    cluster.enable_auth()  # cptoken-reader: read on P; cptoken-writer: readwrite on P
    cluster.etcdctl("role", "grant-permission", "cptoken-reader", "--prefix=true", "readwrite", "/cptoken/v1-usage/")
    cluster.etcdctl("role", "grant-permission", "cptoken-writer", "--prefix=true", "read", "/cptoken/v1-usage/")
    cluster.add_user("agent", "agent-pw", "cptoken-reader")
    cluster.add_user("admin", "admin-pw", "cptoken-writer")
    os.chmod(tmp_path, 0o755)
    for user in ("agent", "admin"):
        (tmp_path / f"{user}.pw").write_text(f"{user}-pw\n")
        os.chmod(tmp_path / f"{user}.pw", 0o600)
    agent = ["--etcd-user", "agent", "--etcd-password-file", str(tmp_path / "agent.pw")]
    admin = ["--etcd-user", "admin", "--etcd-password-file", str(tmp_path / "admin.pw")]
    with Frontend(cluster.endpoints(), name="a", agent_args=agent + ["--usage-every", "1s", "--host-name", "a"]) as a, \
            Frontend(cluster.endpoints(), name="b", agent_args=agent + ["--usage-every", "1s", "--host-name", "b"]) as b:
        token = a.cptoken("create", "alice", "roles", *admin).stdout.strip()
        until_everywhere((a, b), token, 200)
        refused = b.cptoken("create", "alice", "sneaky", *agent, check=False)
        assert refused.returncode == 1 and "permission denied" in refused.stderr, refused.stderr
        assert "sneaky" not in b.cptoken("list", "alice", etcd=False).stdout
        anonymous = b.cptoken("revoke", "alice", "roles", check=False)
        assert anonymous.returncode == 1
        assert b.status_of(token) == 200
        # The agents published their usage with their role: the admin sees both hosts' uses.
        deadline = time.monotonic() + 20
        while True:
            rows = json.loads(a.cptoken("list", "alice", "--json", *admin).stdout)
            if next(r for r in rows if r["name"] == "roles")["uses"] >= 2:
                break
            assert time.monotonic() < deadline, (rows, a.agent_text()[-1500:])
            time.sleep(0.2)
        assert "cannot publish" not in a.agent_text() + b.agent_text()
        # A manager logs in as the docs' admin, on a front-end whose store is the manager user's. The
        # password files are root's alone (mode 0600): the agent (root, then the store's owner) reads its
        # own before giving root up; httpd's parent never reads the manager's, its children (the owner) do.
        with Frontend(cluster.endpoints(), name="c", agent_args=agent + ["--usage-every", "1s", "--host-name", "c"],
                      owner=MANAGER_USER) as c:
            c.start_manager(settings=("user=admin", f"password-file={tmp_path / 'admin.pw'}"))
            # Each child logs it in its child_init, which may come after the listener answers.
            deadline = time.monotonic() + 10
            while "CPT0208: CPTokenEtcd: --etcd-password-file" not in c.manager_error_log():
                assert time.monotonic() < deadline, c.manager_error_log()
                time.sleep(0.05)
            status, _ = c.manager_call("/execute/Tokens/create_full_access?name=no-password", token)
            assert status == 500 and "nothing was written to etcd" in c.manager_error_log()
            status, body = c.manager_call("/execute/Tokens/list", token)  # reads still work
            assert status == 200 and body["status"] == 1, body
            c.stop_manager()
            owner = pwd.getpwnam(MANAGER_USER)
            for user in ("admin", "agent"):  # the manager's copies: its user's alone
                shutil.copy(tmp_path / f"{user}.pw", c.dir / f"{user}.pw")
                os.chown(c.dir / f"{user}.pw", owner.pw_uid, owner.pw_gid)
            c.start_manager(settings=("user=admin", f"password-file={c.dir / 'admin.pw'}"))
            status, body = c.manager_call("/execute/Tokens/create_full_access?name=from-the-manager", token)
            assert status == 200 and body["status"] == 1, (body, c.manager_error_log())
            until_everywhere((a, b, c), body["data"]["token"], 200)
            # With an agent's credentials the manager cannot make a token either.
            c.stop_manager()
            c.start_manager(settings=("user=agent", f"password-file={c.dir / 'agent.pw'}"))
            status, _ = c.manager_call("/execute/Tokens/create_full_access?name=sneaky", token)
            assert status == 500 and "permission denied" in c.manager_error_log()
            assert "sneaky" not in b.cptoken("list", "alice", etcd=False).stdout
            assert "admin-pw" not in c.manager_error_log() + c.agent_text()
            # c's agent gave root up (the store is the manager user's), yet publishes c's usage: through a
            # helper that stayed root and reads the usage table as nobody of httpd's group.
            before = next(r for r in json.loads(a.cptoken("list", "alice", "--json", *admin).stdout)
                          if r["name"] == "roles")["uses"]
            for _ in range(3):
                assert c.status_of(token) == 200
            deadline = time.monotonic() + 20
            while next(r for r in json.loads(a.cptoken("list", "alice", "--json", *admin).stdout)
                       if r["name"] == "roles")["uses"] < before + 3:
                assert time.monotonic() < deadline, c.agent_text()[-1500:]
                time.sleep(0.2)
            assert "cannot publish" not in c.agent_text()



def test_tls_end_to_end(tmp_path):
    """etcd with TLS and client certificates (docs/scale-out.md's setup): the agents, the tool and
    the manager, each with the CA, a certificate and its key. On the manager's front-end every
    one of them reads the files as the store's owner, so they are that user's copies (mode 0600)."""
    os.chmod(tmp_path, 0o755)
    with EtcdCluster(size=3, tls=True, progress_notify_interval="1s", base_dir=tmp_path / "etcd") as tls:
        certs = tls.certs
        owner = pwd.getpwnam(manager_user().pw_name)
        mine = Path(tempfile.mkdtemp(prefix="cptoken-tls-"))  # /tmp: the owner can reach it (not tmp_path)
        os.chmod(mine, 0o755)
        for name in ("ca.crt", "client.crt", "client.key"):
            shutil.copy(certs[name], mine / name)
            os.chown(mine / name, owner.pw_uid, owner.pw_gid)
            os.chmod(mine / name, 0o600)

        def flags(files):
            return ["--etcd-cacert", str(files["ca.crt"]), "--etcd-cert", str(files["client.crt"]),
                    "--etcd-key", str(files["client.key"])]

        owned = {name: mine / name for name in ("ca.crt", "client.crt", "client.key")}
        with Frontend(tls.endpoints(), name="a", owner=MANAGER_USER, etcd_args=flags(owned)) as a, \
                Frontend(tls.endpoints(), name="b", etcd_args=flags(certs)) as b:
            assert all(url.startswith("https://") for url in tls.endpoints())
            admin = b.cptoken("create", "alice", "admin").stdout.strip()
            until_everywhere((a, b), admin, 200)
            a.start_manager(settings=(f"cacert={owned['ca.crt']}", f"cert={owned['client.crt']}",
                                      f"key={owned['client.key']}"))
            status, body = a.manager_call("/execute/Tokens/create_full_access?name=over-tls", admin)
            assert status == 200 and body["status"] == 1, (body, a.manager_error_log())
            until_everywhere((a, b), body["data"]["token"], 200)
            a.cptoken("revoke", "alice", "admin")  # the tool on the manager's front-end, as its owner
            until_everywhere((a, b), admin, 401)
            # Without a client certificate etcd refuses the connection: nothing is written.
            refused = subprocess.run([CPTOKEN, "--db", str(b.store), "--etcd", ",".join(tls.endpoints()),
                                      "--etcd-cacert", certs["ca.crt"], "create", "alice", "no-cert"],
                                     capture_output=True, text=True, timeout=60)
            assert refused.returncode == 1 and "certificate" in refused.stderr, refused.stderr  # 3.4: bad, 3.6: required
            assert "no-cert" not in b.cptoken("list", "alice", etcd=False).stdout
        shutil.rmtree(mine)

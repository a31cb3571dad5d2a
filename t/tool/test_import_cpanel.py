# SPDX-License-Identifier: Apache-2.0
"""cptoken import-cpanel: cPanel token files written here, with the digests
of tokens the test knows, imported, then checked with `cptoken check` as a
client's request would be."""

import hashlib
import json
import os
import random
import time

import pytest

from conftest import TOKEN_ALPHABET, assert_accepted, assert_refused, iso_to_epoch

HOUR = 3600


def new_token():
    return "".join(random.SystemRandom().choice(TOKEN_ALPHABET) for _ in range(32))


def digest(token):
    return hashlib.sha512(token.encode()).hexdigest()


def entry(name, expires=None, ips=None, full=True, created=1700000000, **extra):
    value = {"name": name, "create_time": created, "expires_at": expires, "has_full_access": 1 if full else 0}
    if ips is not None:
        value["whitelist_ips"] = ips
    value.update(extra)
    return value


def write_tokens(path, tokens):
    """Writes a cPanel token file: `tokens` maps token text -> entry()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tokens": {digest(t): e for t, e in tokens.items()}}))
    return path


@pytest.fixture
def v2(tmp_path):
    """An api_tokens_v2 directory with its two service directories."""
    top = tmp_path / "api_tokens_v2"
    (top / "cpanel").mkdir(parents=True)
    (top / "whostmgr").mkdir()
    return top


def imp(store, *args, **kw):
    return store.run("import-cpanel", *[str(a) for a in args], **kw)


def imp_json(store, *args):
    r = imp(store, *args, "--json")
    assert r.rc in (0, 1, 3), r
    return r.rc, json.loads(r.out)


def actions(report):
    return sorted((a["user"], a["name"], a["action"]) for a in report["actions"])


def listing(store):
    return sorted((t["user"], t["name"], t["expires"], json.dumps(t["allowed_ips"]), t["created"])
                  for t in store.list_json())


def test_import_once_tokens_work_with_their_allowlists(store, v2):
    deploy, backup = new_token(), new_token()
    expires = int(time.time()) + 30 * 86400
    f = write_tokens(v2 / "cpanel" / "alice.json", {
        deploy: entry("deploy", expires=expires, ips=["127.0.0.1", "10.0.0.5/24"]),
        backup: entry("backup", expires=0, created=1600000000),
    })
    r = imp(store, f)
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert f"added alice/deploy (cpanel) from {f}" in lines
    assert f"added alice/backup (cpanel) from {f}" in lines
    assert "note: alice/deploy: 10.0.0.5/24 normalised to 10.0.0.0/24" in lines
    assert "2 added" in lines[-1]

    assert_accepted(store.check("alice", deploy, ip="127.0.0.1"))
    assert_accepted(store.check("alice", deploy, ip="10.0.0.77"))
    assert_refused(store.check("alice", deploy, ip="192.0.2.1"), "not allowed")
    assert_refused(store.check("bob", deploy, ip="127.0.0.1"), "another user")
    assert_accepted(store.check("alice", backup, ip="192.0.2.1"))
    shown = store.show_json("alice", "deploy")
    assert iso_to_epoch(shown["expires"]) == expires
    assert iso_to_epoch(shown["created"]) == 1700000000
    assert shown["allowed_ips"] == ["127.0.0.1", "10.0.0.0/24"]
    assert shown["service"] == "cpanel" and shown["imported_from"] == str(f) and shown["limits"] is None
    assert store.show_json("alice", "backup")["expires"] is None


def test_import_twice_is_harmless(store, v2):
    token = new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {token: entry("deploy", ips=["127.0.0.1"])})
    assert imp(store, f).rc == 0
    before = listing(store)
    r = imp(store, f)
    assert r.rc == 0, r
    assert f"unchanged alice/deploy (cpanel) from {f}" in r.out.splitlines()
    assert listing(store) == before
    assert_accepted(store.check("alice", token, ip="127.0.0.1"))


def test_dry_run_changes_nothing(store, v2):
    keep = store.create("alice", "manual")
    token = new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {token: entry("deploy")})
    before = store.list_json()
    r = imp(store, f, "--dry-run")
    assert r.rc == 0, r
    assert f"added alice/deploy (cpanel) from {f}" in r.out
    assert "dry run" in r.out
    assert store.list_json() == before
    assert_refused(store.check("alice", token), "unknown")

    assert imp(store, f).rc == 0
    f.write_text(json.dumps({"tokens": {}}))
    before = store.list_json()
    r = imp(store, v2, "--sync", "--dry-run")
    assert r.rc == 0, r
    assert "revoked alice/deploy (cpanel)" in r.out
    assert store.list_json() == before
    assert_accepted(store.check("alice", token))
    assert_accepted(store.check("alice", keep))


def test_sync_follows_the_file(store, v2):
    made_here = store.create("alice", "manual")
    removed, renamed, changed = new_token(), new_token(), new_token()
    f = v2 / "cpanel" / "alice.json"
    write_tokens(f, {removed: entry("gone"), renamed: entry("old-name"),
                     changed: entry("changed", ips=["127.0.0.1"])})
    assert imp(store, f).rc == 0
    r = store.run("edit", "alice", "changed", "--scope", "/execute/", "--read-only")
    assert r.rc == 0, r
    later = int(time.time()) + 7 * 86400
    write_tokens(f, {renamed: entry("new-name"), changed: entry("changed", expires=later, ips=["192.0.2.0/24"])})

    # Without --sync the differences are only reported; the removed token stays.
    r = imp(store, f)
    assert r.rc == 0, r
    assert any(line.startswith("differs alice/new-name (cpanel)") and "name was old-name" in line
               for line in r.out.splitlines()), r.out
    assert "revoked alice" not in r.out
    assert_accepted(store.check("alice", removed))

    r = imp(store, f, "--sync")
    assert r.rc == 0, r
    assert f"revoked alice/gone (cpanel) (no longer in {f})" in r.out.splitlines()
    assert any(line.startswith("updated alice/changed") and "expiry" in line and "allowlist" in line
               for line in r.out.splitlines()), r.out
    assert_refused(store.check("alice", removed), "unknown")
    assert_accepted(store.check("alice", renamed))
    assert store.show_json("alice", "new-name")
    assert [t["name"] for t in store.list_json("alice")] == ["changed", "manual", "new-name"]
    shown = store.show_json("alice", "changed")
    assert iso_to_epoch(shown["expires"]) == later and shown["allowed_ips"] == ["192.0.2.0/24"]
    assert shown["scopes"] == ["/execute/"] and shown["read_only"] is True  # set here, kept
    assert_refused(store.check("alice", changed, ip="127.0.0.1"), "not allowed")
    assert_accepted(store.check("alice", changed, ip="192.0.2.9"))
    assert_accepted(store.check("alice", made_here))  # never touched

    # Everything gone from the file: only the imported tokens go.
    f.write_text(json.dumps({"tokens": {}}))
    assert imp(store, f, "--sync").rc == 0
    assert [t["name"] for t in store.list_json("alice")] == ["manual"]


def test_sync_swaps_names(store, v2):
    a, b = new_token(), new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {a: entry("first"), b: entry("second")})
    assert imp(store, f).rc == 0
    write_tokens(f, {a: entry("second"), b: entry("first")})
    r = imp(store, f, "--sync")
    assert r.rc == 0, r
    assert sum(line.startswith("updated alice/") for line in r.out.splitlines()) == 2, r.out
    assert store.run("check", "alice", input=a + "\n").out.startswith("accepted: token 'second'")
    assert store.run("check", "alice", input=b + "\n").out.startswith("accepted: token 'first'")


def test_sync_revokes_tokens_of_a_vanished_file_under_a_directory(store, v2):
    alice, bob = new_token(), new_token()
    write_tokens(v2 / "cpanel" / "alice.json", {alice: entry("deploy")})
    bob_file = write_tokens(v2 / "cpanel" / "bob.json", {bob: entry("deploy")})
    bob_manual = store.create("bob", "manual")
    assert imp(store, v2).rc == 0
    bob_file.unlink()
    r = imp(store, v2, "--sync")
    assert r.rc == 0, r
    assert f"revoked bob/deploy (cpanel) ({bob_file} is gone)" in r.out.splitlines()
    assert_refused(store.check("bob", bob), "unknown")
    assert_accepted(store.check("bob", bob_manual))
    assert_accepted(store.check("alice", alice))


def test_sync_never_revokes_a_token_its_own_file_still_lists(store, v2):
    """Issue 20, M1: alice copies root's WHM digest (which tokens.mdb's group
    can read) into her own file. cpanel/ is read before whostmgr/, so root's
    entry was the repeat: reported as a conflict and never recorded for
    root.json, and --sync revoked root's token as no longer in root.json."""
    whm = new_token()
    root_file = write_tokens(v2 / "whostmgr" / "root.json", {whm: entry("reseller")})
    assert imp(store, v2).rc == 0
    alice_file = write_tokens(v2 / "cpanel" / "alice.json", {whm: entry("mine")})
    for args in ((v2, "--sync"), (v2,), (v2, "--sync")):
        r = imp(store, *args)
        assert r.rc == 1, r
        lines = r.out.splitlines()
        assert "revoked" not in r.out.replace("0 revoked", ""), r.out
        # The conflict is charged to alice's file, whose user does not own the token.
        assert f"conflict alice/mine (cpanel) from {alice_file} (the same digest is a token of another user)" \
            in lines, r.out
        assert f"unchanged root/reseller (whm) from {root_file}" in lines, r.out
        assert_accepted(store.check("root", whm))
    assert [(t["user"], t["name"]) for t in store.list_json()] == [("root", "reseller")]


def test_a_new_digest_listed_in_two_files_goes_to_neither(store, v2):
    token = new_token()
    alice_file = write_tokens(v2 / "cpanel" / "alice.json", {token: entry("deploy")})
    bob_file = write_tokens(v2 / "cpanel" / "bob.json", {token: entry("deploy")})
    r = imp(store, v2, "--sync")
    assert r.rc == 1, r
    lines = r.out.splitlines()
    assert f"conflict alice/deploy (cpanel) from {alice_file} (the same digest is also listed in {bob_file})" \
        in lines, r.out
    assert f"conflict bob/deploy (cpanel) from {bob_file} (the same digest is also listed in {alice_file})" \
        in lines, r.out
    assert store.list_json() == []
    bob_file.unlink()  # once only one file lists it, it is that file's
    assert imp(store, v2, "--sync").rc == 0
    assert_accepted(store.check("alice", token))


def test_sync_revokes_an_entry_that_is_now_skipped(store, v2):
    token = new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {token: entry("deploy")})
    assert imp(store, f).rc == 0
    write_tokens(f, {token: entry("deploy", full=False, features=["email"])})
    r = imp(store, f, "--sync")
    assert r.rc == 0, r
    assert "skipped alice/deploy" in r.out and "revoked alice/deploy (cpanel) (now skipped: limited" in r.out
    assert_refused(store.check("alice", token), "unknown")


def test_expired_and_limited_entries_are_skipped_and_reported(store, v2):
    expired, limited, readonly, whm_limited, whm_full = (new_token() for _ in range(5))
    f = write_tokens(v2 / "cpanel" / "alice.json", {
        expired: entry("old", expires=1700000001),
        limited: entry("mail", full=False, features=["email", "ftp"]),
        readonly: entry("reader", readonly=1),
    })
    w = write_tokens(v2 / "whostmgr" / "root.json", {
        whm_limited: entry("acl", acls=["list-accts", "create-acct"]),
        whm_full: entry("full"),
    })
    r = imp(store, v2)
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert f"skipped alice/old (cpanel) from {f} (expired 2023-11-14T22:13:21Z)" in lines
    assert f"skipped alice/mail (cpanel) from {f} (limited: features email, ftp; use --with-limited)" in lines
    assert f"skipped alice/reader (cpanel) from {f} (limited: read-only; no features; use --with-limited)" in lines
    assert f"skipped root/acl (whm) from {w} (limited: acls list-accts, create-acct; use --with-limited)" in lines
    assert f"added root/full (whm) from {w}" in lines
    for user, token in (("alice", expired), ("alice", limited), ("alice", readonly), ("root", whm_limited)):
        assert_refused(store.check(user, token), "unknown")

    rc, report = imp_json(store, v2, "--with-limited")
    assert rc == 0
    assert ("alice", "mail", "added") in actions(report) and ("root", "acl", "added") in actions(report)
    assert ("alice", "old", "skipped") in actions(report)
    assert_accepted(store.check("alice", limited))
    assert_accepted(store.check("root", whm_limited))
    assert_accepted(store.check("alice", readonly))
    assert store.show_json("alice", "mail")["limits"] == ["email", "ftp"]
    assert store.show_json("alice", "reader")["limits"] == ["readonly"]
    acl = store.show_json("root", "acl")
    assert acl["limits"] == ["list-accts", "create-acct"] and acl["service"] == "whm"


def test_whm_acls_all_is_full_access(store, v2):
    """Issue 20 (low): cPanel calls a WHM token with `all` among its acls
    full access; every WHM token with an acls key was skipped as limited."""
    listed, flagged, limited = new_token(), new_token(), new_token()
    w = write_tokens(v2 / "whostmgr" / "root.json", {
        listed: entry("listed", acls=["all"]),
        flagged: entry("flagged", acls={"all": 1, "list-accts": 0}),
        limited: entry("limited", acls={"all": 0, "list-accts": 1}),
    })
    r = imp(store, v2)
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert f"added root/listed (whm) from {w}" in lines, r.out
    assert f"added root/flagged (whm) from {w}" in lines, r.out
    assert f"skipped root/limited (whm) from {w} (limited: acls list-accts; use --with-limited)" in lines, r.out
    assert_accepted(store.check("root", listed))
    assert store.show_json("root", "listed")["limits"] is None


def test_a_plain_import_reports_tokens_gone_from_cpanel(store, v2):
    """Issue 20 (low): without --sync, tokens revoked in cPanel keep working
    here, and the run said nothing about them."""
    kept, removed, bobs = new_token(), new_token(), new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {kept: entry("kept"), removed: entry("removed")})
    bob_file = write_tokens(v2 / "cpanel" / "bob.json", {bobs: entry("ci")})
    assert imp(store, v2).rc == 0
    write_tokens(f, {kept: entry("kept")})
    bob_file.unlink()
    r = imp(store, v2)
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert f"gone alice/removed (cpanel) (no longer in {f}; --sync revokes it)" in lines, r.out
    assert f"gone bob/ci (cpanel) ({bob_file} is gone; --sync revokes it)" in lines, r.out
    assert "1 unchanged" in lines[-1] and "2 gone" in lines[-1], r.out
    assert_accepted(store.check("alice", removed))  # reported, not revoked
    rc, report = imp_json(store, v2)
    assert report["counts"]["gone"] == 2 and report["counts"]["revoked"] == 0
    assert ("alice", "removed", "gone") in actions(report)
    r = imp(store, v2, "--sync")
    assert r.rc == 0 and "revoked alice/removed" in r.out and "gone " not in r.out, r
    assert_refused(store.check("alice", removed), "unknown")


def test_sync_of_a_directory_with_no_files_takes_allow_empty(store, v2):
    """Issue 20 (low): a directory emptied by mistake (a copy that failed, a
    mount that is not there) would revoke every imported token."""
    token = new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {token: entry("deploy")})
    assert imp(store, v2).rc == 0
    f.unlink()
    for args in ((v2, "--sync"), (v2 / "cpanel", "--sync", "--dry-run")):
        r = imp(store, *args)
        assert r.rc == 2 and r.out == "", r
        assert r.err.startswith(f"cptoken: {args[0]} holds no token files: --sync would revoke every token "
                                "imported from it; give --allow-empty if that is meant"), r.err
        assert_accepted(store.check("alice", token))
    assert imp(store, v2).rc == 0  # without --sync nothing is revoked: no need to say it
    r = imp(store, v2, "--sync", "--allow-empty")
    assert r.rc == 0 and f"revoked alice/deploy (cpanel) ({f} is gone)" in r.out.splitlines(), r
    assert_refused(store.check("alice", token), "unknown")


def test_conflicts_are_reported_never_overwritten(store, v2):
    taken = store.create("alice", "deploy")
    mine, other, fine = new_token(), new_token(), new_token()
    bob_token = new_token()
    write_tokens(v2 / "cpanel" / "bob.json", {bob_token: entry("ci")})
    assert imp(store, v2 / "cpanel" / "bob.json").rc == 0
    f = write_tokens(v2 / "cpanel" / "alice.json",
                     {mine: entry("deploy"), bob_token: entry("stolen"), fine: entry("fine")})
    before = {t["name"]: t for t in store.list_json("alice")}
    r = imp(store, f)
    assert r.rc == 1, r
    lines = r.out.splitlines()
    assert f"conflict alice/deploy (cpanel) from {f} (name taken by another token)" in lines
    assert f"conflict alice/stolen (cpanel) from {f} (the same digest is a token of another user)" in lines
    assert f"added alice/fine (cpanel) from {f}" in lines  # the rest still applied
    assert_accepted(store.check("alice", taken))
    assert_refused(store.check("alice", mine), "unknown")
    assert_accepted(store.check("bob", bob_token))
    assert_accepted(store.check("alice", fine))
    assert store.list_json("alice")[0] == before["deploy"]
    # --sync never touches what cptoken create made either.
    r = imp(store, f, "--sync")
    assert r.rc == 1 and "conflict alice/deploy" in r.out
    assert_accepted(store.check("alice", taken))


def test_a_rotated_token_is_no_longer_followed(store, v2):
    token = new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {token: entry("deploy")})
    assert imp(store, f).rc == 0
    new = store.run("rotate", "alice", "deploy", "--grace", "1h").out.strip()
    write_tokens(f, {})
    r = imp(store, f, "--sync")
    assert r.rc == 0, r
    assert "revoked alice" not in r.out
    assert_accepted(store.check("alice", token))  # in its grace
    assert_accepted(store.check("alice", new))


def test_service_from_the_path_or_the_option(store, tmp_path):
    token = new_token()
    f = write_tokens(tmp_path / "elsewhere" / "alice.json", {token: entry("deploy")})
    r = imp(store, f)
    assert r.rc == 2 and "--service" in r.err and str(f) in r.err, r
    assert store.list_json() == []
    rc, report = imp_json(store, f, "--service", "whm")
    assert rc == 0
    assert [(a["service"], a["action"]) for a in report["actions"]] == [("whm", "added")]
    assert store.show_json("alice", "deploy")["service"] == "whm"
    r = imp(store, f, "--service", "whostmgr")
    assert r.rc == 2 and "--service" in r.err

    cp = tmp_path / "cpanel" / "carol.json"
    write_tokens(cp, {new_token(): entry("x")})
    rc, report = imp_json(store, cp, "--service", "whm")
    assert report["actions"][0]["service"] == "whm"


def test_json_shape(store, v2):
    token = new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {token: entry("deploy", ips=["10.1.2.3/8"])})
    rc, report = imp_json(store, v2)
    assert rc == 0
    assert set(report) == {"dry_run", "files", "actions", "counts", "skipped_files"}
    assert report["skipped_files"] == []
    assert report["files"] == [str(f)]
    assert report["dry_run"] is False
    assert report["actions"] == [
        {"file": str(f), "user": "alice", "name": "deploy", "service": "cpanel", "action": "added", "detail": None},
        {"file": str(f), "user": "alice", "name": "deploy", "service": "cpanel", "action": "note",
         "detail": "10.1.2.3/8 normalised to 10.0.0.0/8"},
    ]
    assert report["counts"] == {"added": 1, "unchanged": 0, "updated": 0, "differs": 0, "skipped": 0,
                                "conflict": 0, "revoked": 0, "gone": 0, "note": 1}
    assert digest(token) not in json.dumps(report) and digest(token)[:16] not in json.dumps(report)


def test_directory_argument_reads_both_services_and_ignores_other_files(store, v2):
    a, w = new_token(), new_token()
    write_tokens(v2 / "cpanel" / "alice.json", {a: entry("deploy")})
    write_tokens(v2 / "whostmgr" / "root.json", {w: entry("deploy")})
    (v2 / "cpanel" / "README").write_text("not a token file")
    (v2 / "cpanel" / "alice.json.tmp").write_text("{")
    (v2 / "cpanel" / ".bob.json").write_text("{")
    (v2 / "cpanel" / "sub").mkdir()
    (v2 / "cpanel" / "link.json").symlink_to(v2 / "cpanel" / "alice.json")
    rc, report = imp_json(store, v2)
    assert rc == 0
    assert report["files"] == [str(v2 / "cpanel" / "alice.json"), str(v2 / "whostmgr" / "root.json")]
    assert actions(report) == [("alice", "deploy", "added"), ("root", "deploy", "added")]
    # A service directory alone.
    rc, report = imp_json(store, v2 / "whostmgr")
    assert actions(report) == [("root", "deploy", "unchanged")]


BAD_FILES = [
    ("not-json", "alice.json", "{tokens", "not JSON"),
    ("wrong-shape", "alice.json", json.dumps({"tokens": []}), "expected an object"),
    ("no-tokens", "alice.json", json.dumps({"token": {}}), "expected an object"),
    ("bad-digest", "alice.json", json.dumps({"tokens": {"abc": entry("deploy")}}), 'entry 1 ("deploy")'),
    ("bad-address", "alice.json", json.dumps({"tokens": {"ab" * 64: entry("deploy", ips=["10.0.0.300"])}}),
     'token abababababababab ("deploy"): whitelist_ips: "10.0.0.300"'),
    ("bad-name", "alice.json", json.dumps({"tokens": {"ab" * 64: entry("de ploy")}}),
     "token abababababababab: the name"),
    ("bad-user", "Alice!.json", json.dumps({"tokens": {}}), "USER.json"),
    ("too-many-networks", "alice.json",
     json.dumps({"tokens": {"ab" * 64: entry("deploy", ips=[f"10.0.{i}.1" for i in range(101)])}}),
     'token abababababababab ("deploy"): whitelist_ips: 101 entries'),
    ("bad-expiry", "alice.json", json.dumps({"tokens": {"ab" * 64: entry("deploy", expires="soon")}}),
     "expires_at"),
    ("bad-features", "alice.json",
     json.dumps({"tokens": {"ab" * 64: entry("deploy", full=False, features="email")}}), "features"),
    # A number no integer holds: the JSON parser's out_of_range, found by fuzz_cpanel (was exit 1, unnamed).
    ("huge-number", "alice.json", '{"tokens": {"' + "ab" * 64 + '": {"name": "deploy", "create_time": 1e999}}}',
     "a number out of range"),
    ("too-large", "alice.json", json.dumps({"tokens": {}, "padding": "x" * (1 << 20)}), "larger than 1 MiB"),
    ("too-deep", "alice.json", '{"tokens": {}, "x": ' + "[" * 17 + "]" * 17 + "}", "nested deeper than 16 levels"),
]


@pytest.mark.parametrize("name,file_name,text,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_is_skipped_and_every_other_file_applies(store, v2, name, file_name, text, message):
    """Issue 20, M2: one user's broken file (or a hostile one) must not stop
    the revocations of everyone else's: it is skipped, named on stderr, its
    tokens left as they are, and the run exits 3."""
    carol, kept, before = new_token(), new_token(), new_token()
    carol_file = write_tokens(v2 / "cpanel" / "carol.json", {carol: entry("gone"), kept: entry("kept")})
    bad = v2 / "cpanel" / file_name
    if file_name == "alice.json":
        write_tokens(bad, {before: entry("before")})
    assert imp(store, v2).rc == 0
    write_tokens(carol_file, {kept: entry("kept")})  # revoked in cPanel: --sync revokes it here
    good = new_token()
    write_tokens(v2 / "cpanel" / "bob.json", {good: entry("fine")})
    bad.write_text(text)

    r = imp(store, v2, "--sync")
    assert r.rc == 3, r
    assert r.err.splitlines() == [r.err.splitlines()[0]] and r.err.startswith(f"cptoken: skipped {bad}: "), r.err
    assert message in r.err and "ab" * 64 not in r.err, r.err
    lines = r.out.splitlines()
    assert f"revoked carol/gone (cpanel) (no longer in {carol_file})" in lines, r.out
    assert f"added bob/fine (cpanel) from {v2 / 'cpanel' / 'bob.json'}" in lines, r.out
    assert "revoked alice" not in r.out
    assert lines[-1].startswith("2 files read, 1 skipped: "), r.out
    assert_refused(store.check("carol", carol), "unknown")
    assert_accepted(store.check("carol", kept))
    assert_accepted(store.check("bob", good))
    if file_name == "alice.json":
        assert_accepted(store.check("alice", before))  # its file could not be read: left as it is

    # Named on the command line, and in --json.
    rc, report = imp_json(store, v2 / "cpanel" / "bob.json", bad)
    assert rc == 3
    [skipped] = report["skipped_files"]
    assert skipped["file"] == str(bad) and message in skipped["reason"], report
    assert not skipped["reason"].startswith(str(bad))
    assert report["files"] == [str(v2 / "cpanel" / "bob.json"), str(bad)]


def test_a_file_too_large_or_too_deep_costs_root_little_memory(store, v2, tmp_path):
    """Issue 20, M2: a 16 MiB file of nested arrays took 640 MB of root's
    memory. Files are bounded in size and nesting before they are parsed."""
    import resource
    import subprocess
    import sys
    nested = v2 / "cpanel" / "alice.json"
    nested.write_text('{"tokens": {}, "x": ' + "[" * 500000 + "]" * 500000 + "}")  # under 1 MiB
    large = v2 / "cpanel" / "bob.json"
    large.write_text('{"tokens": {}, "x": [' + "[]," * 2000000 + "[]]}")  # 6 MiB of arrays
    # Peak memory of the import alone: measured in a fresh process, whose children are only that run.
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(p.stderr)")
    from conftest import CPTOKEN, base_env
    p = subprocess.run(["/usr/bin/python3", "-c", probe, CPTOKEN, "--db", store.path, "import-cpanel", v2],
                       capture_output=True, text=True, env=base_env(), timeout=60)
    rc, peak_kib = map(int, p.stdout.split("\n")[0].split())
    err = p.stdout.split("\n", 1)[1]
    assert rc == 3, p.stdout
    assert f"cptoken: skipped {nested}: nested deeper than 16 levels" in err, err
    assert f"cptoken: skipped {large}: larger than 1 MiB" in err, err
    assert peak_kib < 64 * 1024, f"peak {peak_kib} KiB"


def when_file_read(path, action):
    """Runs `action` in a thread as soon as the file at `path` has been read
    and closed (inotify's IN_CLOSE_NOWRITE): import-cpanel lists every
    directory before it reads any file, so this falls between the listing
    and the opening of the files after `path`."""
    import ctypes
    import struct
    import threading
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0
    IN_CLOSE_NOWRITE = 0x10
    assert libc.inotify_add_watch(fd, str(path.parent).encode(), IN_CLOSE_NOWRITE) >= 0

    def watch():
        try:
            while True:
                data = os.read(fd, 65536)
                while data:
                    _, mask, _, length = struct.unpack_from("iIII", data)
                    name = data[16:16 + length].rstrip(b"\0").decode()
                    if mask & IN_CLOSE_NOWRITE and name == path.name:
                        action()
                        return
                    data = data[16 + length:]
        finally:
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_fifo_swapped_in_never_hangs_root_and_the_others_apply(store, v2):
    """Issue 20, M2: a file listed as regular and then replaced by a FIFO
    blocked root's import in open() forever. Now it is skipped at once and
    every other file's revocations apply."""
    carol, kept = new_token(), new_token()
    carol_file = write_tokens(v2 / "cpanel" / "carol.json", {carol: entry("gone"), kept: entry("kept")})
    zed = new_token()
    zed_file = write_tokens(v2 / "cpanel" / "zed.json", {zed: entry("zed")})
    assert imp(store, v2).rc == 0
    write_tokens(carol_file, {kept: entry("kept")})
    # Many files before zed.json (read in name order), so that the swap lands before its open.
    for i in range(300):
        write_tokens(v2 / "cpanel" / f"u{i:03}.json", {new_token(): entry("t")})
    fifo = v2 / "cpanel" / ".fifo"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o644)
    watcher = when_file_read(v2 / "cpanel" / "u000.json", lambda: os.rename(fifo, zed_file))
    r = imp(store, v2, "--sync", timeout=20)  # subprocess.TimeoutExpired when it hangs
    watcher.join(5)
    assert zed_file.is_fifo()
    assert r.rc == 3, r
    assert f"cptoken: skipped {zed_file}: not a regular file (a FIFO)" in r.err.splitlines(), r.err
    assert f"revoked carol/gone (cpanel) (no longer in {carol_file})" in r.out.splitlines(), r.out
    assert_refused(store.check("carol", carol), "unknown")
    assert_accepted(store.check("zed", zed))  # its file could not be read: left as it is


def owned_by(path, user, mode=None):
    import pwd
    os.chown(path, pwd.getpwnam(user).pw_uid, -1)
    if mode is not None:
        os.chmod(path, mode)


# Who could have written a token file, and so chosen its tokens (issue 20, M3): (id, directory of the
# file under api_tokens_v2, file name, what to change (v2, file), the directory or file refused, message).
UNTRUSTED = [
    ("directory-of-a-user", "whostmgr", "daemon.json", lambda v2, f: owned_by(v2 / "whostmgr", "daemon"),
     "whostmgr", "the directory {v2}/whostmgr is owned by daemon"),
    ("directory-anyone-writes", "cpanel", "daemon.json", lambda v2, f: os.chmod(v2 / "cpanel", 0o777),
     "cpanel", "the directory {v2}/cpanel can be written by anyone (mode 0777)"),
    ("sticky-directory", "cpanel", "daemon.json", lambda v2, f: os.chmod(v2 / "cpanel", 0o1777),
     "cpanel", "the directory {v2}/cpanel can be written by anyone (mode 1777)"),
    ("directory-its-group-writes", "cpanel", "daemon.json", lambda v2, f: os.chmod(v2 / "cpanel", 0o775),
     "cpanel", "the directory {v2}/cpanel can be written by its group (mode 0775)"),
    ("ancestor-of-a-user", "cpanel", "daemon.json", lambda v2, f: owned_by(v2, "daemon"),
     "cpanel", "the directory {v2} is owned by daemon"),
    ("file-of-another-user", "whostmgr", "root.json", lambda v2, f: owned_by(f, "daemon"),
     "whostmgr/root.json", "owned by daemon, but only root or the user it names (root) may own it"),
    ("file-of-a-user-for-a-user-not-here", "cpanel", "alice.json", lambda v2, f: owned_by(f, "daemon"),
     "cpanel/alice.json", "owned by daemon, but only root or the user it names (alice) may own it"),
    ("file-its-group-writes", "cpanel", "alice.json", lambda v2, f: os.chmod(f, 0o664),
     "cpanel/alice.json", "can be written by its group (mode 0664)"),
    ("file-anyone-writes", "cpanel", "daemon.json", lambda v2, f: owned_by(f, "daemon", 0o666),
     "cpanel/daemon.json", "can be written by anyone (mode 0666)"),
]


@pytest.mark.parametrize("name,service_dir,file_name,change,refused,message", UNTRUSTED,
                         ids=[u[0] for u in UNTRUSTED])
def test_a_file_anyone_but_root_or_its_user_could_write_is_refused(store, v2, name, service_dir, file_name, change,
                                                                   refused, message):
    """Issue 20, M3: the account is the file's name and the service its
    directory's: a user who can put a file there mints tokens of their
    choice (WHM ones too). Such a file is skipped, and says why."""
    token, fine = new_token(), new_token()
    f = write_tokens(v2 / service_dir / file_name, {token: entry("mine")})
    os.chmod(f, 0o644)
    other_dir = "whostmgr" if service_dir == "cpanel" else "cpanel"
    write_tokens(v2 / other_dir / "carol.json", {fine: entry("fine")})
    change(v2, f)
    user = file_name[:-len(".json")]
    for args in ((v2,), (f,)):
        r = imp(store, *args)
        assert r.rc == 3, r
        at_fault = v2 / refused if args == (v2,) else f
        expected = message.format(v2=v2)
        assert any(line.startswith(f"cptoken: skipped {at_fault}: ") and expected in line
                   for line in r.err.splitlines()), r.err
        assert_refused(store.check(user, token), "unknown")
    if not (name == "ancestor-of-a-user"):
        assert_accepted(store.check("carol", fine))  # the other files still apply


def test_a_file_of_the_user_it_names_or_of_root_is_imported(store, v2):
    mine, roots = new_token(), new_token()
    f = write_tokens(v2 / "cpanel" / "daemon.json", {mine: entry("mine")})
    owned_by(f, "daemon", 0o600)
    g = write_tokens(v2 / "cpanel" / "alice.json", {roots: entry("deploy")})  # no such user: root's file
    os.chmod(g, 0o600)
    r = imp(store, v2)
    assert r.rc == 0, r
    assert_accepted(store.check("daemon", mine))
    assert_accepted(store.check("alice", roots))


def test_a_service_import_of_a_users_directory_is_refused(store, tmp_path):
    """The issue's case: `--service whm` over a directory a user owns gave
    that user the WHM tokens of their choice."""
    home = tmp_path / "home" / "daemon"
    token = new_token()
    f = write_tokens(home / "daemon.json", {token: entry("mine")})
    owned_by(home, "daemon", 0o755)
    owned_by(f, "daemon", 0o600)
    r = imp(store, home, "--service", "whm")
    assert r.rc == 3, r
    assert f"cptoken: skipped {home}: the directory {home} is owned by daemon" in r.err, r.err
    assert_refused(store.check("daemon", token), "unknown")
    assert store.list_json() == []


def test_as_the_store_owner_root_trusts_that_user_too(tmp_path, v2):
    """Root working on a store of another owner becomes that owner
    (cptoken(8)): the files that user owns count as root's, the rule holds
    for everyone else."""
    import pwd
    from conftest import Store
    s = Store(tmp_path / "db")
    assert s.init().rc == 0
    daemon = pwd.getpwnam("daemon")
    for p in [s.path, *s.path.iterdir()]:
        os.chown(p, daemon.pw_uid, -1)
    theirs, others = new_token(), new_token()
    f = write_tokens(v2 / "cpanel" / "alice.json", {theirs: entry("deploy")})
    owned_by(f, "daemon", 0o600)  # the store's owner's copy
    g = write_tokens(v2 / "cpanel" / "carol.json", {others: entry("deploy")})
    owned_by(g, "nobody", 0o644)
    r = imp(s, v2)
    assert r.rc == 3, r
    assert f"cptoken: skipped {g}: owned by nobody, but only root or the user it names (carol) may own it" \
        in r.err.splitlines(), r.err
    assert_accepted(s.check("alice", theirs))
    assert_refused(s.check("carol", others), "unknown")


def test_missing_path_and_bad_service_are_usage_errors(store, tmp_path):
    r = imp(store, tmp_path / "nothing.json")
    assert r.rc == 2 and "nothing.json" in r.err
    r = imp(store)
    assert r.rc == 2

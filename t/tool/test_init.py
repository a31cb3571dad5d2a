# SPDX-License-Identifier: Apache-2.0
"""`cptoken init [--group GROUP]`: directory, files, modes, group, idempotence."""

import grp
import os
import pwd
import stat

from conftest import Store, assert_refusal, assert_usage_error, run

FILES = {
    "tokens.mdb": 0o640,
    "tokens.mdb-committed": 0o640,
    "tokens.mdb-lock": 0o600,  # the writers' alone: httpd's children read without it
    "usage.slots": 0o660,
}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def snapshot(d):
    out = {".": (os.stat(d).st_mode, os.stat(d).st_gid)}
    for name in sorted(os.listdir(d)):
        st = os.stat(d / name)
        out[name] = (st.st_mode, st.st_gid, st.st_mtime_ns, st.st_size)
    return out


def test_init_with_group_creates_dir_and_files_with_modes_and_group(tmp_path):
    d = tmp_path / "db"
    r = run("--db", d, "init", "--group", "www-data")
    assert r.rc == 0, r
    gid = grp.getgrnam("www-data").gr_gid
    assert d.is_dir()
    assert mode(d) == 0o2750, oct(mode(d))
    assert os.stat(d).st_gid == gid
    for name, want in FILES.items():
        p = d / name
        assert p.is_file(), f"{name} missing"
        assert mode(p) == want, f"{name}: mode {oct(mode(p))}, want {oct(want)}"
        assert os.stat(p).st_gid == gid, f"{name}: gid {os.stat(p).st_gid}, want {gid}"


def test_init_modes_do_not_depend_on_umask(tmp_path):
    d = tmp_path / "db"
    r = run("--db", d, "init", "--group", "www-data", umask=0o077)
    assert r.rc == 0, r
    assert mode(d) == 0o2750, oct(mode(d))
    for name, want in FILES.items():
        assert mode(d / name) == want, f"{name}: mode {oct(mode(d / name))} under umask 077"


def test_init_without_group_creates_a_usable_store(tmp_path):
    d = tmp_path / "db"
    r = run("--db", d, "init")
    assert r.rc == 0, r
    for name in FILES:
        assert (d / name).is_file(), f"{name} missing"
    assert mode(d) == 0o2750, oct(mode(d))
    assert Store(d).list_json() == []


def test_init_twice_changes_nothing_and_says_so(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    r = s.init("--group", "www-data")
    assert r.rc == 0, r
    token = s.create("alice", "ci")
    listed = s.list_json()
    before = snapshot(d)
    r2 = s.init("--group", "www-data")
    assert r2.rc == 0, r2
    assert r2.out.strip() != "", "a second init should say the store is already there"
    assert r2.out != r.out, "a second init should not report the same as a fresh one"
    assert snapshot(d) == before
    assert s.list_json() == listed
    assert s.check("alice", token).rc == 0


def test_init_twice_without_group_changes_nothing(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    before = snapshot(d)
    r = s.init()
    assert r.rc == 0, r
    assert snapshot(d) == before


def test_init_unknown_group_is_usage_error_and_creates_nothing(tmp_path):
    d = tmp_path / "db"
    r = run("--db", d, "init", "--group", "no-such-group-cptoken")
    assert_usage_error(r)
    assert not d.exists()


def test_init_unknown_group_on_existing_store_changes_nothing(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    before = snapshot(d)
    assert_usage_error(s.init("--group", "no-such-group-cptoken"))
    assert snapshot(d) == before


# ---- an existing directory: whose it is, what it holds (security audit, issue 8)

WWW = grp.getgrnam("www-data").gr_gid
WWW_UID = pwd.getpwnam("www-data").pw_uid


def full_stat(path):
    st = os.lstat(path)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size)


def test_init_refuses_a_sticky_world_writable_dir_with_files_and_changes_nothing(tmp_path):
    """The audit turned a /tmp-like directory into root:www-data 02750."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    (d / "someone-elses-file").write_text("data\n")
    before = full_stat(d)
    r = run("--db", d, "init", "--group", "www-data")
    assert_refusal(r)
    assert "not empty" in r.err, r.err
    assert full_stat(d) == before
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o1777
    assert sorted(os.listdir(d)) == ["someone-elses-file"]


def test_init_refuses_a_dir_owned_by_another_user_and_changes_nothing(tmp_path):
    """The audit: a directory owned by www-data stayed so, letting that user replace tokens.mdb."""
    d = tmp_path / "db"
    d.mkdir()
    os.chown(d, WWW_UID, -1)
    before = full_stat(d)
    r = run("--db", d, "init", "--group", "www-data")
    assert_refusal(r)
    assert "www-data" in r.err and f"chown root {d}" in r.err, r.err
    assert full_stat(d) == before
    assert os.listdir(d) == []


def test_init_refuses_an_existing_store_in_a_dir_owned_by_another_user(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    os.chown(d, WWW_UID, -1)
    before = snapshot(d)
    assert_refusal(s.init("--group", "www-data"))
    assert snapshot(d) == before
    assert os.stat(d).st_uid == WWW_UID


def test_init_makes_a_store_in_an_empty_dir_of_its_own(tmp_path):
    d = tmp_path / "db"
    d.mkdir()
    os.chmod(d, 0o777)
    r = run("--db", d, "init", "--group", "www-data")
    assert r.rc == 0, r
    assert mode(d) == 0o2750 and os.stat(d).st_gid == WWW
    assert sorted(os.listdir(d)) == sorted(FILES)


def test_init_group_on_a_store_of_another_group_changes_it_and_says_so(tmp_path):
    """The audit: 'already exists; nothing changed', exit 0, and httpd then answers 500."""
    d = tmp_path / "db"
    s = Store(d)
    assert s.init().rc == 0  # the caller's group: root
    token = s.create("alice", "ci")
    r = s.init("--group", "www-data")
    assert r.rc == 0, r
    assert os.stat(d).st_gid == WWW
    for name in FILES:
        assert os.stat(d / name).st_gid == WWW, name
        assert f"{d / name}: group root -> www-data" in r.out.splitlines(), r.out
    assert f"{d}: group root -> www-data" in r.out.splitlines(), r.out
    assert "nothing changed" not in r.out
    assert s.check("alice", token).rc == 0


def test_init_repairs_owner_and_modes_of_a_store_and_keeps_its_group(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    token = s.create("alice", "ci")
    os.chmod(d, 0o2770)
    os.chown(d / "tokens.mdb", WWW_UID, -1)
    os.chmod(d / "tokens.mdb", 0o666)
    os.chmod(d / "usage.slots", 0o600)
    r = s.init()
    assert r.rc == 0, r
    assert sorted(r.out.splitlines()) == sorted([
        f"{d}: mode 2770 -> 2750",
        f"{d / 'tokens.mdb'}: owner www-data -> root",
        f"{d / 'tokens.mdb'}: mode 0666 -> 0640",
        f"{d / 'usage.slots'}: mode 0600 -> 0660",
    ]), r.out
    assert mode(d) == 0o2750 and os.stat(d).st_gid == WWW
    for name, want in FILES.items():
        st = os.stat(d / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (want, 0, WWW), name
    assert s.check("alice", token).rc == 0


def plant_symlink(d, name, tmp_path):
    """Replaces d/name by a symlink to a root 0600 file; returns the target."""
    target = tmp_path / "root-only"
    target.write_bytes(b"root's secret, not a lock file\n" * 10)
    os.chmod(target, 0o600)
    os.unlink(d / name)
    os.symlink(target, d / name)
    return target


def test_list_refuses_a_planted_lock_symlink_and_leaves_its_target_alone(tmp_path):
    """The audit: root's list followed tokens.mdb-lock and overwrote its target."""
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    s.create("alice", "ci")
    target = plant_symlink(d, "tokens.mdb-lock", tmp_path)
    before, content = full_stat(target), target.read_bytes()
    for args in (["list"], ["create", "bob", "x"], ["prune"]):
        r = s.run(*args)
        assert_refusal(r)
        assert f"{d / 'tokens.mdb-lock'} is a symbolic link" in r.err, r.err
    assert target.read_bytes() == content
    assert full_stat(target) == before


def test_list_does_not_write_through_a_planted_usage_table_symlink(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    s.create("alice", "ci")
    target = plant_symlink(d, "usage.slots", tmp_path)
    before, content = full_stat(target), target.read_bytes()
    s.run("list")
    assert target.read_bytes() == content
    assert full_stat(target) == before


def test_init_refuses_a_store_file_that_is_a_symlink_and_leaves_its_target_alone(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    target = plant_symlink(d, "tokens.mdb-lock", tmp_path)
    before = full_stat(target)
    r = s.init("--group", "www-data")
    assert_refusal(r)
    assert "symbolic link" in r.err, r.err
    assert full_stat(target) == before


def test_commands_refuse_a_group_writable_store_dir_until_init_repairs_it(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    os.chmod(d, 0o2770)
    r = s.run("list")
    assert_refusal(r)
    assert "written by its group" in r.err and f"cptoken --db {d} init" in r.err, r.err
    assert s.init().rc == 0
    assert s.run("list").rc == 0


def test_init_refuses_a_symlinked_store_dir_and_leaves_its_target_alone(tmp_path):
    """The audit: a user who controls the parent planted `store -> /root-only/empty-dir`; root's init
    regrouped the target to www-data 02750 and made a store there."""
    target = tmp_path / "root-only"
    target.mkdir(mode=0o700)
    link = tmp_path / "store"
    os.symlink(target, link)
    before = full_stat(target)
    r = run("--db", link, "init", "--group", "www-data")
    assert_refusal(r)
    assert "symbolic link" in r.err and str(target) in r.err, r.err
    assert full_stat(target) == before
    assert os.listdir(target) == []
    # The directory it names is fine to give.
    assert run("--db", target, "init", "--group", "www-data").rc == 0


# ---- init --owner: a store that the manager's user owns and writes (issue 22)

DAEMON = pwd.getpwnam("daemon")  # stands in for the manager's user (cptoken): not in www-data


def owners(d):
    """{name: (uid, gid, mode)} of the directory (".") and every file in it."""
    out = {".": (os.stat(d).st_uid, os.stat(d).st_gid, mode(d))}
    for name in sorted(os.listdir(d)):
        st = os.lstat(d / name)
        out[name] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return out


def owned_layout(uid):
    return {".": (uid, WWW, 0o2750), **{name: (uid, WWW, want) for name, want in FILES.items()}}


def as_daemon(*args, **kw):
    """cptoken ARGS as user daemon."""
    import subprocess
    from conftest import CPTOKEN, base_env
    p = subprocess.run(["runuser", "-u", "daemon", "--", CPTOKEN, *map(str, args)], capture_output=True, text=True,
                       env=base_env(), timeout=30, **kw)
    return p


def test_init_owner_makes_a_store_that_user_owns_and_writes(tmp_path):
    d = tmp_path / "db"
    r = run("--db", d, "init", "--group", "www-data", "--owner", "daemon")
    assert r.rc == 0, r
    assert r.out == f"created token store in {d} for group www-data, owned by daemon\n", r.out
    assert owners(d) == owned_layout(DAEMON.pw_uid)
    # The owner writes tokens itself (the manager's children) ...
    p = as_daemon("--db", d, "create", "alice", "from-owner")
    assert p.returncode == 0, p
    # ... and root's commands work on its store, as the owner.
    s = Store(d)
    token = s.create("alice", "from-root")
    assert s.check("alice", token).rc == 0
    assert s.check("alice", p.stdout.strip()).rc == 0
    assert [e["name"] for e in s.list_json("alice")] == ["from-owner", "from-root"]
    assert s.show_json("alice", "from-root")["last_used"] is None
    for args in (["prune"], ["fsck"], ["revoke", "alice", "from-owner"]):
        r = s.run(*args)
        assert r.rc == 0 and r.err == "", (args, r)
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, DAEMON.pw_uid, -1)
    assert s.run("backup", out / "copy.mdb").rc == 0
    assert os.stat(out / "copy.mdb").st_uid == DAEMON.pw_uid
    assert owners(d) == owned_layout(DAEMON.pw_uid)


def test_init_owner_unknown_user_is_usage_error_and_creates_nothing(tmp_path):
    d = tmp_path / "db"
    r = run("--db", d, "init", "--group", "www-data", "--owner", "no-such-user-cptoken")
    assert_usage_error(r)
    assert "no-such-user-cptoken" in r.err, r.err
    assert not d.exists()


def test_init_owner_in_the_stores_group_is_refused(tmp_path):
    """www-data owning a www-data store would let httpd's children (and PHP
    running as www-data) write tokens: the owner must not be a reader."""
    d = tmp_path / "db"
    r = run("--db", d, "init", "--group", "www-data", "--owner", "www-data")
    assert_refusal(r)
    assert "www-data" in r.err and "group" in r.err, r.err
    assert not d.exists()
    # Nor is an existing store given to it.
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    before = snapshot(d)
    assert_refusal(s.init("--owner", "www-data"))
    assert snapshot(d) == before and os.stat(d).st_uid == 0


def test_init_keeps_the_owner_of_an_existing_store_and_repairs_it_for_that_owner(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data", "--owner", "daemon").rc == 0
    token = s.create("alice", "ci")
    before = snapshot(d)
    r = s.init()
    assert r.rc == 0 and "nothing changed" in r.out, r
    assert snapshot(d) == before
    os.chmod(d / "tokens.mdb", 0o666)
    os.chown(d / "usage.slots", 0, -1)
    r = s.init("--group", "www-data")
    assert r.rc == 0, r
    assert sorted(r.out.splitlines()) == sorted([
        f"{d / 'tokens.mdb'}: mode 0666 -> 0640",
        f"{d / 'usage.slots'}: owner root -> daemon",
    ]), r.out
    assert owners(d) == owned_layout(DAEMON.pw_uid)
    assert s.check("alice", token).rc == 0


def test_init_owner_gives_a_root_store_to_that_user_and_back(tmp_path):
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data").rc == 0
    token = s.create("alice", "ci")
    r = s.init("--owner", "daemon")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert f"{d}: owner root -> daemon" in lines, r.out
    for name in ("tokens.mdb", "tokens.mdb-committed", "usage.slots"):
        assert f"{d / name}: owner root -> daemon" in lines, r.out
    # The old owner's lock file is not handed over: the next writer makes its own, the new owner's alone.
    assert f"{d / 'tokens.mdb-lock'}: removed (it was root's); a new one is daemon's alone" in lines, r.out
    assert not (d / "tokens.mdb-lock").exists()
    assert s.check("alice", token).rc == 0
    assert as_daemon("--db", d, "revoke", "alice", "ci").returncode == 0
    assert s.check("alice", token).rc == 1
    assert owners(d) == owned_layout(DAEMON.pw_uid)

    r = s.init("--owner", "root")
    assert r.rc == 0, r
    assert f"{d}: owner daemon -> root" in r.out.splitlines(), r.out
    assert s.create("bob", "back")
    assert owners(d) == owned_layout(0)


def test_init_owner_refuses_a_dir_of_a_third_user(tmp_path):
    d = tmp_path / "db"
    d.mkdir()
    os.chown(d, WWW_UID, -1)
    before = full_stat(d)
    r = run("--db", d, "init", "--group", "www-data", "--owner", "daemon")
    assert_refusal(r)
    assert "www-data" in r.err, r.err
    assert full_stat(d) == before and os.listdir(d) == []


def test_init_owner_never_gives_away_a_file_linked_from_elsewhere(tmp_path):
    """The owner can write the store directory: a hard link to another file
    planted there as a store file must not have root's init give that file
    to the owner."""
    d = tmp_path / "db"
    s = Store(d)
    assert s.init("--group", "www-data", "--owner", "daemon").rc == 0
    target = tmp_path / "root-only"
    target.write_bytes(b"root's, not a lock file\n")
    os.chmod(target, 0o600)
    os.unlink(d / "usage.slots")
    os.link(target, d / "usage.slots")
    before = full_stat(target)
    r = s.init("--group", "www-data")
    assert_refusal(r)
    assert "link" in r.err, r.err
    assert full_stat(target) == before


def test_init_owner_needs_root(tmp_path):
    d = tmp_path / "db"
    d.mkdir()
    os.chown(d, DAEMON.pw_uid, DAEMON.pw_gid)
    p = as_daemon("--db", d, "init", "--owner", "nobody")
    assert p.returncode == 1 and p.stdout == "", p
    assert "root" in p.stderr, p.stderr
    assert os.listdir(d) == []

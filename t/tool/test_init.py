"""`cptoken init [--group GROUP]`: directory, files, modes, group, idempotence."""

import grp
import os
import stat

from conftest import Store, assert_usage_error, run

FILES = {
    "tokens.mdb": 0o640,
    "tokens.mdb-lock": 0o660,
    "usage.mdb": 0o660,
    "usage.mdb-lock": 0o660,
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

# SPDX-License-Identifier: Apache-2.0
"""A store that httpd's own user could change is refused (500, CPT0200),
never trusted: a store (its directory, tokens.mdb or its commit record)
owned by the user httpd's children run as, or under a directory that user
owns, or that its group or anyone can write (anyone: unless sticky), since
anything running as www-data could then make itself a token or put another
store in its place. `CPTokenTrustOwnStore On` (main server config only)
opts in for an httpd that runs as the store's owner on purpose (a non-root
user's own httpd); a directory anyone can write stays refused."""

import os
import pwd
import shutil
import time

import pytest

from conftest import ALL_MPMS, DEFAULT_BODY, CPANEL_AUTH, api_location, assert_admitted
from test_config import configtest
from test_store import assert_500, refused_with

HTTPD_USER = pwd.getpwnam("www-data")
TRUST = "CPTokenTrustOwnStore On\n"


def chown_store(path, uid):
    """The store directory and every file in it to `uid` (the group stays)."""
    for p in [path, *path.iterdir()]:
        os.lchown(p, uid, -1)


def assert_says_what_to_do(line):
    assert "chown root" in line and "init --group www-data" in line and "CPTokenTrustOwnStore On" in line, line


@ALL_MPMS
def test_store_chowned_to_httpd_user_is_500(srv):
    """chown -R www-data of a root-made store: www-data could mint tokens."""
    srv.allow("CPT0200")
    token = srv.store.create("alice", "ci")
    chown_store(srv.store.path, HTTPD_USER.pw_uid)
    srv.start()
    lines = refused_with(srv, token, f"{srv.store.path} belongs to user www-data, whom httpd runs as")
    assert_says_what_to_do(lines[0])
    assert all(" [cptoken:error] " in line for line in srv.lines(0, "CPT0200")), srv.lines(0, "CPT0200")


@pytest.mark.parametrize("owned", ["tokens.mdb", "tokens.mdb-committed", ""])
def test_each_store_file_owned_by_httpd_user_is_500(srv, owned):
    srv.allow("CPT0200")
    token = srv.store.create("alice", "ci")
    path = srv.store.path / owned if owned else srv.store.path
    os.lchown(path, HTTPD_USER.pw_uid, -1)
    srv.start()
    assert_says_what_to_do(refused_with(srv, token, f"{path} belongs to user www-data")[0])


def move_store_under(srv, parent, mode, uid=0, gid=0):
    """The store moved to PARENT/store, PARENT made with `mode`, `uid`, `gid`."""
    parent.mkdir()
    os.chown(parent, uid, gid)
    os.chmod(parent, mode)
    target = parent / "store"
    shutil.move(str(srv.store.path), str(target))
    srv.store.path = target
    return target


@pytest.mark.parametrize("how, mode, owner, group, says", [
    ("owned by www-data", 0o755, "www-data", "root", "belongs to user www-data"),
    ("owned by www-data, not even writable", 0o555, "www-data", "root", "belongs to user www-data"),
    ("writable by group www-data", 0o775, "root", "www-data", "can be written by group www-data"),
    ("writable by anyone", 0o777, "root", "root", "can be written by anyone"),
])
def test_store_under_a_directory_httpd_can_change_is_500(srv, how, mode, owner, group, says):
    """A store directory swapped in under a parent www-data can write (or
    chmod): the store itself may be root's, its place is not."""
    srv.allow("CPT0200")
    token = srv.store.create("alice", "ci")
    parent = srv.dir / "parent"
    store = move_store_under(srv, parent, mode, pwd.getpwnam(owner).pw_uid, pwd.getpwnam(group).pw_gid
                             if group != "www-data" else HTTPD_USER.pw_gid)
    srv.start(db=str(store))
    lines = refused_with(srv, token, f"{parent} {says}")
    assert str(store) in lines[0], lines


def test_sticky_directory_anyone_can_write_is_fine_for_a_root_store(srv):
    """/tmp-like (1777): nobody but root may rename root's entries there."""
    token = srv.store.create("alice", "ci")
    store = move_store_under(srv, srv.dir / "sticky", 0o1777)
    srv.start(db=str(store))
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))


def test_symbolic_links_are_followed_and_checked_where_they_live(srv):
    """The directory holding a link to the store, and those on the way to
    its target, are checked as the kernel walks them."""
    srv.allow("CPT0200")
    token = srv.store.create("alice", "ci")
    # A link in a directory www-data owns, to a sound store: www-data could point it elsewhere.
    links = srv.dir / "links"
    links.mkdir(mode=0o755)
    os.chown(links, HTTPD_USER.pw_uid, -1)
    (links / "db").symlink_to(srv.store.path)
    srv.start(db=str(links / "db"))
    refused_with(srv, token, f"{links} belongs to user www-data")
    srv.stop()
    # A sound link to a store under such a directory.
    hidden = move_store_under(srv, srv.dir / "hidden", 0o775, 0, HTTPD_USER.pw_gid)
    sound = srv.dir / "sound-link"
    sound.symlink_to(hidden)
    srv.start(db=str(sound))
    refused_with(srv, token, f"{srv.dir / 'hidden'} can be written by group www-data")


def test_trust_own_store_admits_a_store_of_httpd_user(srv):
    """A non-root private setup: httpd runs as the store's owner on purpose."""
    token = srv.store.create("alice", "ci")
    chown_store(srv.store.path, HTTPD_USER.pw_uid)
    srv.start(TRUST + DEFAULT_BODY)
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    srv.stop()
    store = move_store_under(srv, srv.dir / "mine", 0o755, HTTPD_USER.pw_uid, HTTPD_USER.pw_gid)
    srv.start(TRUST + DEFAULT_BODY, db=str(store))
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))


def test_trust_own_store_still_refuses_a_directory_anyone_can_write(srv):
    srv.allow("CPT0200")
    token = srv.store.create("alice", "ci")
    parent = srv.dir / "open"
    store = move_store_under(srv, parent, 0o777)
    srv.start(TRUST + DEFAULT_BODY, db=str(store))
    refused_with(srv, token, f"{parent} can be written by anyone")


@ALL_MPMS
def test_store_chowned_under_a_running_httpd_is_refused_then_taken_back(srv):
    """Each child looks again once a second, not only when it opens the store."""
    srv.allow("CPT0200")
    token = srv.store.create("alice", "ci")
    srv.start()
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    chown_store(srv.store.path, HTTPD_USER.pw_uid)
    # Every child has looked again after a second; a few requests reach several children.
    time.sleep(1.2)
    for _ in range(4):
        assert_500(srv.get(auth=f"cpanel alice:{token}"))
    chown_store(srv.store.path, 0)
    time.sleep(1.2)
    for _ in range(4):
        assert_admitted(srv.get(auth=f"cpanel alice:{token}"))


def test_directive_is_on_or_off_in_the_main_server_only(srv):
    rc, out = configtest(srv, TRUST + DEFAULT_BODY)
    assert rc == 0, out
    rc, out = configtest(srv, "CPTokenTrustOwnStore Off\n" + DEFAULT_BODY)
    assert rc == 0, out
    rc, out = configtest(srv, "CPTokenTrustOwnStore maybe\n" + DEFAULT_BODY)
    assert rc != 0 and "CPTokenTrustOwnStore" in out, out
    rc, out = configtest(srv, api_location(auth=CPANEL_AUTH + "\n    CPTokenTrustOwnStore On"))
    assert rc != 0 and "CPTokenTrustOwnStore" in out, out
    rc, out = configtest(srv, DEFAULT_BODY + "\n<VirtualHost 127.0.0.1:1>\n    CPTokenTrustOwnStore On\n</VirtualHost>\n")
    assert rc != 0 and "CPTokenTrustOwnStore" in out, out


@ALL_MPMS
def test_store_of_the_managers_user_is_read_by_httpds_children(srv):
    """`cptoken init --owner daemon` (the manager's user, not httpd's):
    httpd's children admit its tokens, also one the owner wrote itself, and
    see a revocation by root's cptoken (as the owner) at once."""
    import subprocess
    from conftest import CPTOKEN
    srv.store.run("init", "--group", "www-data", "--owner", "daemon")
    assert srv.store.path.stat().st_uid == pwd.getpwnam("daemon").pw_uid
    token = srv.store.create("alice", "ci")
    p = subprocess.run(["runuser", "-u", "daemon", "--", CPTOKEN, "--db", str(srv.store.path), "create", "alice",
                        "manager"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p
    srv.start()
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert_admitted(srv.get(auth=f"cpanel alice:{p.stdout.strip()}"))
    srv.store.revoke("alice", "ci")
    assert srv.get(auth=f"cpanel alice:{token}").status == 401
    srv.allow("CPT0100")

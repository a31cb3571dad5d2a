# SPDX-License-Identifier: Apache-2.0
"""Configuration: where the directives are allowed, what httpd refuses to
start with, and the usual authz combinations around AuthType cpanel."""

import os
import subprocess

from conftest import (APACHE, CPANEL_AUTH, MOD_MANAGER, httpd_env, DEFAULT_BODY, api_location, assert_admitted,
                      assert_refused)


def configtest(srv, body):
    """`apache2 -t` on a config with `body`; returns (exit code, output)."""
    srv.port = srv.port or 1
    srv.conf.write_text(srv.config_text(f'CPTokenDB "{srv.store.path}"\n' + body, "warn", ""))
    p = subprocess.run([APACHE, "-t", "-f", str(srv.conf)], capture_output=True, text=True, timeout=30,
                       env=httpd_env())
    return p.returncode, p.stdout + p.stderr


def test_valid_config_passes_configtest(srv):
    rc, out = configtest(srv, api_location(auth=CPANEL_AUTH + """
    CPTokenSchemes cpanel whm basic
    CPTokenForwardAuthorization On"""))
    assert rc == 0, out


def test_unknown_scheme_is_a_config_error(srv):
    rc, out = configtest(srv, api_location(auth=CPANEL_AUTH + "\n    CPTokenSchemes cpanel bearer"))
    assert rc != 0, out
    assert "CPTokenSchemes" in out and "bearer" in out, out


def test_cptokendb_takes_one_argument(srv):
    rc, out = configtest(srv, 'CPTokenDB\n' + DEFAULT_BODY)
    assert rc != 0, out


def test_forward_authorization_takes_on_off(srv):
    rc, out = configtest(srv, api_location(auth=CPANEL_AUTH + "\n    CPTokenForwardAuthorization maybe"))
    assert rc != 0, out


def test_cptokenetcd_belongs_to_the_managers_build(srv):
    """The front-ends' mod_cptoken.so has no etcd client: CPTokenEtcd there stops httpd and says which
    module has one, rather than a manager that would silently not write to etcd."""
    rc, out = configtest(srv, "CPTokenEtcd http://127.0.0.1:2379\n" + DEFAULT_BODY)
    assert rc != 0, out
    assert "CPTokenEtcd: mod_cptoken.so has no etcd client" in out and "mod_cptoken_manager.so" in out, out


def test_cptokenetcd_settings_are_checked_at_start(srv, tmp_path):
    srv.module = MOD_MANAGER
    password = tmp_path / "etcd.password"
    password.write_text("secret\n")
    os.chmod(password, 0o600)
    good = f"CPTokenEtcd http://127.0.0.1:2379,http://127.0.0.1:22379 prefix=/t/v1/ user=admin password-file={password}\n"
    rc, out = configtest(srv, good + DEFAULT_BODY)
    assert rc == 0, out  # etcd itself is not asked at start: a manager starts while etcd is down
    for bad, said in [("CPTokenEtcd http://127.0.0.1:2379 colour=blue", "'colour=blue' is not NAME=VALUE"),
                      ("CPTokenEtcd http://127.0.0.1:2379 user=admin", "--etcd-user and --etcd-password-file go together"),
                      ("CPTokenEtcd ftp://127.0.0.1:2379", "is not http://HOST:PORT"),
                      ("CPTokenEtcd", "CPTokenEtcd needs etcd's endpoints"),
                      ('<Location "/x">\nCPTokenEtcd http://127.0.0.1:2379\n</Location>', "CPTokenEtcd")]:
        rc, out = configtest(srv, bad + "\n" + DEFAULT_BODY)
        assert rc != 0 and said in out, (bad, out)
    os.chmod(password, 0o644)  # the password would be anyone's
    rc, out = configtest(srv, good + DEFAULT_BODY)
    assert rc != 0 and "anyone can read it" in out, out


def test_relative_cptokendb_is_under_serverroot(srv):
    token = srv.store.create("alice", "ci")
    srv.start(DEFAULT_BODY, db="store")  # ServerRoot is srv.dir
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"), "alice")


def test_server_level_schemes_apply_to_locations(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci", "--service", "whm")
    srv.start("CPTokenSchemes whm\n" + DEFAULT_BODY)
    assert_refused(srv.get(), ("whm",))
    assert_admitted(srv.get(auth=f"whm alice:{token}"), "alice")
    assert_refused(srv.get(auth=f"cpanel alice:{token}"), ("whm",))


def htaccess_site(srv, text):
    d = srv.htdocs / "ht"
    d.mkdir()
    d.chmod(0o755)
    (d / "hello.txt").write_text("hello\n")
    (d / ".htaccess").write_text(text)
    os.chmod(d / ".htaccess", 0o644)
    return d


def test_htaccess_with_auth_directives(srv):
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci", "--service", "whm")
    d = htaccess_site(srv, 'AuthType cpanel\nAuthName "ht realm"\nCPTokenSchemes whm basic\nRequire valid-user\n')
    srv.start(f'<Directory "{d}">\n    AllowOverride AuthConfig\n</Directory>\n')
    r = srv.get("/ht/hello.txt")
    assert_refused(r, ("whm", "basic"), realm="ht realm")
    r = srv.get("/ht/hello.txt", auth=f"whm alice:{token}")
    assert r.status == 200 and r.body == b"hello\n", r
    assert srv.get("/ht/hello.txt", auth=f"cpanel alice:{token}").status == 401


def test_cptokendb_not_allowed_in_htaccess(srv):
    """CPTokenDB in .htaccess: httpd's own 500 ('not allowed here'); never admits."""
    srv.allow(".htaccess")
    token = srv.store.create("alice", "ci")
    other = srv.dir / "other"
    d = htaccess_site(srv, f'AuthType cpanel\nAuthName "x"\nCPTokenDB "{other}"\nRequire valid-user\n')
    srv.start(f'<Directory "{d}">\n    AllowOverride AuthConfig\n</Directory>\n')
    r = srv.get("/ht/hello.txt", auth=f"cpanel alice:{token}")
    assert r.status == 500, r
    assert "not allowed here" in srv.log_text()


def test_require_any_ip_or_token(srv):
    """<RequireAny> Require ip X, Require valid-user: X gets in without a
    token, everyone else needs one."""
    srv.allow("CPT0100")
    token = srv.store.create("alice", "ci")
    srv.start(api_location(auth="""    AuthType cpanel
    AuthName "@REALM@"
    <RequireAny>
        Require ip 127.0.0.2
        Require valid-user
    </RequireAny>"""),
              extra_modules="LoadModule authz_host_module @MODDIR@/mod_authz_host.so")
    r = srv.get(interface="127.0.0.2")
    assert r.status == 200, r
    assert_refused(srv.get(interface="127.0.0.1"))
    assert_admitted(srv.get(auth=f"cpanel alice:{token}", interface="127.0.0.1"), "alice")


def test_require_all_granted_needs_no_token(srv):
    srv.start(api_location(auth="""    AuthType cpanel
    AuthName "@REALM@"
    Require all granted"""))
    r = srv.get()
    assert r.status == 200 and r.challenges == [], r


def test_unprotected_location_next_to_a_protected_one(srv):
    srv.allow("CPT0100")
    srv.start(DEFAULT_BODY + api_location("/open", auth="    Require all granted"))
    assert srv.get("/open/x").status == 200
    assert_refused(srv.get("/api/x"))


def test_configtest_warns_of_a_cptokendb_without_a_store(srv, tmp_path):
    """`CPTokenDB /nonexistent` passed configtest silently, and every request under it got 500 after
    the restart: configtest says so (a warning: the store may be made before the restart), and names
    the command that makes it."""
    missing = tmp_path / "nonexistent"
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out = configtest(srv, api_location(auth=CPANEL_AUTH + f'\n    CPTokenDB "{missing}"') +
                         f'<Location "/other/">\n    AuthType cpanel\n    AuthName x\n    CPTokenDB "{empty}"\n'
                         '    Require valid-user\n</Location>\n')
    assert rc == 0 and "Syntax OK" in out, out
    for store in (missing, empty):
        line = next((l for l in out.splitlines() if "CPT0204" in l and str(store) in l), None)
        assert line, out
        assert f"cptoken --db {store} init --group www-data" in line, line
    assert str(srv.store.path) not in out, "the good store was warned of"

# SPDX-License-Identifier: Apache-2.0
"""The configuration files in conf/ work as shipped: each is included in a
real httpd, changed only where its comments tell the admin to change it
(certificate, ports, backend, store), and then answers as documented."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import curl, free_port, wait_until

CONF = Path(__file__).resolve().parents[2] / "conf"
SSL = "LoadModule ssl_module @MODDIR@/mod_ssl.so\nLoadModule socache_shmcb_module @MODDIR@/mod_socache_shmcb.so\n"
# The harness also waits for [::1]; the files' own Listen line takes 127.0.0.1.
V6_HTTPS = "Listen [::1]:@PORT@ https"
# mod_ssl's own start-up warnings (library version, no session cache): not the files' business.
SSL_NOISE = ("AH01882", "AH01873")


def certificate(srv):
    cert, key = srv.dir / "cert.pem", srv.dir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def vhost(srv, name, listen_port, manager_port=None):
    """conf/NAME as an admin would adapt it: certificate, port, backend, store, log directory; the
    manager's port (2090) becomes `manager_port` if given, else the backend's."""
    cert, key = certificate(srv)
    text = (CONF / name).read_text()
    if manager_port:
        text = text.replace("http://127.0.0.1:2090/", f"http://localhost:{manager_port}/")  # kept from the backend's below
    text = re.sub(r"^Listen \d+ https$", "Listen 127.0.0.1:@PORT@ https", text, flags=re.M)
    text = re.sub(r"<VirtualHost \*:\d+>", "<VirtualHost *:@PORT@>", text)
    text = re.sub(r"SSLCertificateFile\s+\S+", f"SSLCertificateFile {cert}", text)
    text = re.sub(r"SSLCertificateKeyFile\s+\S+", f"SSLCertificateKeyFile {key}", text)
    text = re.sub(r"http://127\.0\.0\.1:\d+/", "http://127.0.0.1:@BACKEND@/", text)
    text = text.replace("CPTokenDB /var/lib/cptoken", "CPTokenDB @STORE@")
    return text.replace("${APACHE_LOG_DIR}", "@DIR@")


def module_conf():
    """conf/cptoken.conf as a2enmod includes it beside the vhosts."""
    return (CONF / "cptoken.conf").read_text()


def get(srv, auth=None, path="/x"):
    return curl(f"https://127.0.0.1:{srv.port}{path}", auth=auth, args=["-k"], workdir=srv.dir / "work")


def test_cpanel_2083_vhost(srv):
    token = srv.store.create("alice", "deploy")
    whm = srv.store.create("root", "reseller", "--service", "whm")
    srv.start(module_conf() + vhost(srv, "cpanel-2083.conf", 2083), db=False, listen=V6_HTTPS, extra_modules=SSL)
    srv.allow("CPT0100", *SSL_NOISE)
    r = get(srv, f"cpanel alice:{token}")
    assert r.status == 200
    seen = r.backend_headers
    assert seen.get("x-remote-user") == "alice" and "authorization" not in seen
    assert get(srv).status == 401
    assert get(srv, f"whm root:{whm}").status == 401  # WHM tokens belong on 2087
    log = srv.dir / "cpanel-2083-access.log"  # written just after the response: wait for it
    assert wait_until(lambda: 'token="deploy"' in log.read_text(), 5), log.read_text()
    assert token not in log.read_text()


def test_whm_2087_vhost(srv):
    token = srv.store.create("root", "reseller", "--service", "whm")
    cpanel = srv.store.create("alice", "deploy")
    srv.start(module_conf() + vhost(srv, "whm-2087.conf", 2087), db=False, listen=V6_HTTPS, extra_modules=SSL)
    srv.allow("CPT0100", *SSL_NOISE)
    r = get(srv, f"whm root:{token}")
    assert r.status == 200 and r.backend_headers.get("x-remote-user") == "root"
    assert get(srv, f"cpanel alice:{cpanel}").status == 401
    assert get(srv, f"whm alice:{cpanel}").status == 401


# The manager's paths on each vhost, and paths beside them that are the backend's.
MANAGER_PATHS = {
    "cpanel-2083.conf": (["/execute/Tokens/list", "/execute/CPTokens/list", "/cptoken/", "/cptoken/app.js"],
                         ["/execute/Tokens", "/execute/Email/list_pops", "/cptokenx", "/json-api/api_token_list"]),
    "whm-2087.conf": (["/json-api/api_token_list?api.version=1", "/json-api/api_token_create",
                       "/json-api/api_token_revoke?token_name=x"],
                      ["/json-api/api_token_list/x", "/json-api/api_token_", "/json-api/listaccts",
                       "/json-api/api_token_LIST", "/execute/Tokens/list"]),
}


@pytest.mark.parametrize("name", sorted(MANAGER_PATHS))
def test_vhost_passes_the_managers_paths_to_the_manager_alone(srv, name):
    """The vhost lets the manager's paths through unauthenticated (the manager authenticates them)
    only to the manager: here nothing listens on its port, so they answer 503, never the backend's
    200. Every other path is the module's: 401 without credentials. Before 0.17.1 whm-2087.conf's
    ProxyPass "/json-api/api_token_" matched no function (mod_proxy matches whole path segments), so
    /json-api/api_token_list went to the backend unauthenticated, the Authorization header with it."""
    srv.start(module_conf() + vhost(srv, name, 0, manager_port=free_port()), db=False, listen=V6_HTTPS,
              extra_modules=SSL)
    srv.allow("CPT0100", "AH00957", "AH00959", "AH01114", "AH02454", *SSL_NOISE)  # proxy: manager unreachable
    manager, backend = MANAGER_PATHS[name]
    for path in manager:
        r = get(srv, path=path)
        assert r.status == 503, (path, r)
    for path in backend:
        r = get(srv, path=path)
        assert r.status == 401, (path, r)


@pytest.mark.parametrize("name", ["cpanel-2083.conf", "whm-2087.conf"])
def test_vhost_without_the_module_starts_and_serves_nothing(srv, name):
    """`apt-get remove` with the vhost enabled: the module is gone, the site is not. httpd must
    still start (before: `Invalid command 'CPTokenDB'`, and the next restart took every site down),
    and the location must stay closed, never open."""
    srv.start(vhost(srv, name, 0), db=False, listen=V6_HTTPS, extra_modules=SSL, module=False, loglevel="warn")
    srv.allow(*SSL_NOISE)
    r = get(srv)
    assert r.status == 403 and b"<h1>Forbidden</h1>" in r.body, r  # httpd's own page, not the backend's
    token = srv.store.create("alice", "deploy")
    assert get(srv, f"cpanel alice:{token}").status == 403


def test_one_log_format_ships():
    """The vhosts log with the module's `cptoken` LogFormat (conf/cptoken.conf); none defines its own."""
    formats = {name: re.findall(r"^\s*LogFormat .* cptoken$", (CONF / name).read_text(), flags=re.M)
               for name in ("cptoken.conf", "cpanel-2083.conf", "whm-2087.conf")}
    assert len(formats["cptoken.conf"]) == 1 and not formats["cpanel-2083.conf"] and not formats["whm-2087.conf"], \
        formats


def test_module_conf_log_format(srv):
    """conf/cptoken.conf, as a2enmod includes it: its LogFormat, for any vhost's CustomLog."""
    token = srv.store.create("alice", "ci")
    body = module_conf() + f"""
CPTokenDB @STORE@
CustomLog "@DIR@/tokens.log" cptoken
<Location "/">
    AuthType cpanel
    AuthName "API"
    Require valid-user
</Location>
"""
    srv.start(body, db=False)
    assert srv.get("/index.html", auth=f"cpanel alice:{token}").status in (200, 404)
    log = srv.dir / "tokens.log"  # written just after the response: wait for it
    assert wait_until(lambda: log.exists() and 'token="ci"' in log.read_text(), 5)
    assert "alice" in log.read_text() and token not in log.read_text()

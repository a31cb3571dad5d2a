#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make demo: a private httpd on https://127.0.0.1:2083 (cPanel tokens) and
# :2087 (WHM tokens) with mod_cptoken in front of an echo backend on
# 127.0.0.1:2082, the manager (users manage their own tokens: UAPI, WHM API 1
# and the page at /cptoken/) on 127.0.0.1:2090, a token store, tokens for
# alice (cPanel) and root (WHM) and a password for alice on the page. Its
# facts go to /tmp/mod_cptoken-demo/demo.json too. Everything lives in
# /tmp/mod_cptoken-demo; /etc/apache2 and the system's apache2 service are
# not touched. Stop it with `make demo-stop` (conf/demo/stop.sh). Running it
# again starts a fresh demo.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$REPO/build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
STATE=/tmp/mod_cptoken-demo
HTTPS_PORT=2083
WHM_PORT=2087
BACKEND_PORT=2082
MANAGER_PORT=2090
HTTPD=/usr/sbin/apache2
PYTHON=/usr/bin/python3
BACKEND=${ECHO_BACKEND:-$REPO/t/httpd/echo_backend.py}
CPTOKEN=$BUILD/cptoken
MODULE=$BUILD/mod_cptoken.so
MANAGER_MODULE=$BUILD/mod_cptoken_manager.so

die() { echo "demo: $*" >&2; exit 1; }

for f in "$CPTOKEN" "$MODULE" "$MANAGER_MODULE"; do
    [ -f "$f" ] || die "$f is missing: run 'make' first"
done
[ -x "$HTTPD" ] || die "$HTTPD is missing (Debian package apache2-bin): run 'make deps'"
[ -f "$BACKEND" ] || die "the echo backend $BACKEND is missing"
command -v openssl >/dev/null || die "openssl is missing (Debian package openssl): run 'make deps'"
command -v curl >/dev/null || die "curl is missing: run 'make deps'"

# A previous demo, if any, goes first.
bash "$REPO/conf/demo/stop.sh" --quiet

# Both ports must be free (bound the way httpd binds: SO_REUSEADDR, listen).
port_free() {
    "$PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(1)
except OSError:
    sys.exit(1)
PY
}
for p in "$HTTPS_PORT" "$WHM_PORT" "$BACKEND_PORT" "$MANAGER_PORT"; do
    if ! port_free "$p"; then
        echo "demo: port $p on 127.0.0.1 is already in use; the demo needs $HTTPS_PORT, $WHM_PORT, $BACKEND_PORT and $MANAGER_PORT." >&2
        command -v ss >/dev/null && ss -ltnp "sport = :$p" >&2 || true
        echo "demo: stop whatever listens there (a previous demo: make demo-stop) and run make demo again." >&2
        exit 1
    fi
done

# The state directory: 0755, so that httpd's children (www-data) can reach the store.
rm -rf "$STATE"
mkdir -m 0755 "$STATE"
mkdir -m 0755 "$STATE/logs" "$STATE/run" "$STATE/htdocs"
mkdir -m 0700 "$STATE/tls"

# The store, readable by the group httpd's children run as, owned by the
# manager's user (its children write it), and tokens. Not root: this user is
# all of them.
if [ "$(id -u)" = 0 ]; then
    GROUP=www-data MANAGER_USER=cptoken
    # (made by someone else meanwhile counts: useradd then fails, getent then finds it)
    getent passwd "$MANAGER_USER" >/dev/null ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$MANAGER_USER" ||
        getent passwd "$MANAGER_USER" >/dev/null ||
        die "cannot create the manager's user $MANAGER_USER"
    "$CPTOKEN" --db "$STATE/store" init --group "$GROUP" --owner "$MANAGER_USER" >/dev/null
else
    GROUP=$(id -gn) MANAGER_USER=$(id -un)
    "$CPTOKEN" --db "$STATE/store" init --group "$GROUP" >/dev/null
fi
TOKEN=$("$CPTOKEN" --db "$STATE/store" create alice demo --expires +7d)
WHM_TOKEN=$("$CPTOKEN" --db "$STATE/store" create root demo --service whm --expires +7d)
# alice's password for the page (Basic, as the manager's config sets it up).
PAGE_PASSWORD=$(openssl rand -hex 12)
htpasswd -bcB "$STATE/manager.htpasswd" alice "$PAGE_PASSWORD" >/dev/null 2>&1 ||
    die "htpasswd failed (Debian package apache2-utils): run 'make deps'"
chmod 0644 "$STATE/manager.htpasswd"

# A self-signed certificate for 127.0.0.1, made on the spot.
openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$STATE/tls/key.pem" -out "$STATE/tls/cert.pem" >/dev/null 2>&1 \
    || die "openssl could not make a certificate"

# The backend: answers every request with JSON {method, path, headers}.
nohup "$PYTHON" "$BACKEND" "$BACKEND_PORT" --bind 127.0.0.1 \
    >"$STATE/logs/backend.log" 2>&1 </dev/null &
echo $! >"$STATE/backend.pid"

# httpd, with its own configuration.
# Not root: httpd's children are this user, who owns the store; the module refuses that unless told.
if [ "$(id -u)" = 0 ]; then TRUST_OWN_STORE=""; else TRUST_OWN_STORE="CPTokenTrustOwnStore On"; fi
sed -e "s|@STATE@|$STATE|g" -e "s|@MODULE@|$MODULE|g" -e "s|@TRUST_OWN_STORE@|$TRUST_OWN_STORE|g" \
    -e "s|@HTTPS_PORT@|$HTTPS_PORT|g" -e "s|@WHM_PORT@|$WHM_PORT|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
    -e "s|@MANAGER_PORT@|$MANAGER_PORT|g" \
    "$REPO/conf/demo/httpd.conf.in" >"$STATE/httpd.conf"

# The manager: the shipped conf/cptoken-manager.conf, its paths moved here.
# Its page is copied where the manager's user can read it. Not root: no
# usage reader (it needs root to become nobody), so last used is unknown.
mkdir -m 0755 "$STATE/manager" "$STATE/manager/run" "$STATE/page"
cp "$REPO"/manager/page/* "$STATE/page/"
chmod 0644 "$STATE"/page/*
if [ "$(id -u)" = 0 ]; then USAGE_SOCKET="s|/run/cptoken-manager/usage.sock|$STATE/manager/run/usage.sock|"
else USAGE_SOCKET="s|^CPTokenUsageSocket .*|# CPTokenUsageSocket: needs root|"; fi
sed -e "s|^ServerRoot .*|ServerRoot \"$STATE/manager\"|" \
    -e "s|/run/cptoken-manager/httpd.pid|$STATE/manager.pid|" -e "$USAGE_SOCKET" \
    -e "s|/run/cptoken-manager|$STATE/manager/run|" \
    -e "s|/var/log/cptoken-manager/|$STATE/logs/manager-|" \
    -e "s|/usr/lib/mod_cptoken/mod_cptoken_manager.so|$MANAGER_MODULE|" \
    -e "s|/var/lib/cptoken|$STATE/store|" -e "s|/usr/share/mod_cptoken/manager|$STATE/page|g" \
    -e "s|/etc/cptoken/manager.htpasswd|$STATE/manager.htpasswd|" \
    -e "s|^Listen 127.0.0.1:2090|Listen 127.0.0.1:$MANAGER_PORT|" \
    -e "s|^User cptoken|User $MANAGER_USER|" -e "s|^Group cptoken|Group $(id -gn "$MANAGER_USER")|" \
    "$REPO/conf/cptoken-manager.conf" >"$STATE/manager.conf"

for conf in httpd.conf manager.conf; do
    if ! out=$("$HTTPD" -t -f "$STATE/$conf" 2>&1); then
        echo "$out" >&2
        bash "$REPO/conf/demo/stop.sh" --quiet
        die "httpd refused $STATE/$conf"
    fi
done
"$HTTPD" -f "$STATE/httpd.conf" -d "$STATE" -k start \
    || { bash "$REPO/conf/demo/stop.sh" --quiet; die "httpd did not start; see $STATE/logs/error.log"; }
"$HTTPD" -f "$STATE/manager.conf" -k start \
    || { bash "$REPO/conf/demo/stop.sh" --quiet; die "the manager did not start; see $STATE/logs/manager-error.log"; }

# Wait until both answer: the backend directly, httpd with a 401.
status() { curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$@" 2>/dev/null || true; }
for _ in $(seq 50); do
    [ "$(status "http://127.0.0.1:$BACKEND_PORT/")" = 200 ] && \
    [ "$(status "https://127.0.0.1:$HTTPS_PORT/")" = 401 ] && break
    sleep 0.2
done
# Each part answers as it should before the demo says it runs.
check() {  # check WHAT WANTED CURL_ARGS...
    local what=$1 wanted=$2 got
    shift 2
    got=$(status "$@")
    [ "$got" = "$wanted" ] && return 0
    echo "demo: $what got '$got' instead of $wanted. Last lines of the logs:" >&2
    tail -n 5 "$STATE/logs/error.log" "$STATE/logs/manager-error.log" "$STATE/logs/backend.log" >&2 || true
    bash "$REPO/conf/demo/stop.sh" --quiet
    exit 1
}
for _ in $(seq 50); do
    [ "$(status -H "Authorization: cpanel alice:$TOKEN" "https://127.0.0.1:$HTTPS_PORT/execute/Tokens/list")" = 200 ] && break
    sleep 0.2
done
check "a request with alice's token" 200 -H "Authorization: cpanel alice:$TOKEN" "https://127.0.0.1:$HTTPS_PORT/"
check "a request with root's WHM token" 200 -H "Authorization: whm root:$WHM_TOKEN" "https://127.0.0.1:$WHM_PORT/"
check "Tokens/list with alice's token" 200 -H "Authorization: cpanel alice:$TOKEN" \
    "https://127.0.0.1:$HTTPS_PORT/execute/Tokens/list"
check "api_token_list with root's WHM token" 200 -H "Authorization: whm root:$WHM_TOKEN" \
    "https://127.0.0.1:$WHM_PORT/json-api/api_token_list?api.version=1"
check "the page with alice's password" 200 -u "alice:$PAGE_PASSWORD" "https://127.0.0.1:$HTTPS_PORT/cptoken/"

# What a script (or a test) needs to use the demo.
"$PYTHON" - "$STATE/demo.json" "$STATE/store" "$TOKEN" "$WHM_TOKEN" "$PAGE_PASSWORD" \
    "$HTTPS_PORT" "$WHM_PORT" <<'PY'
import json, os, sys
path, store, token, whm_token, password, https_port, whm_port = sys.argv[1:]
facts = {
    "store": store,
    "cpanel": {"user": "alice", "token": token, "url": f"https://127.0.0.1:{https_port}/"},
    "whm": {"user": "root", "token": whm_token, "url": f"https://127.0.0.1:{whm_port}/"},
    "page": {"url": f"https://127.0.0.1:{https_port}/cptoken/", "user": "alice", "password": password},
}
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    json.dump(facts, out, indent=2)
    out.write("\n")
PY

URL="https://127.0.0.1:$HTTPS_PORT/"
REL_CPTOKEN=$CPTOKEN
case $CPTOKEN in "$PWD"/*) REL_CPTOKEN=${CPTOKEN#"$PWD"/} ;; esac
cat <<MSG

mod_cptoken demo is running (state in $STATE; its facts in $STATE/demo.json):
  https://127.0.0.1:$HTTPS_PORT  httpd with mod_cptoken, cPanel tokens (self-signed certificate, hence curl -k)
  https://127.0.0.1:$WHM_PORT  the same httpd, WHM tokens
  http://127.0.0.1:$BACKEND_PORT   the echo backend it proxies to (answers with the request it got, as JSON)
  http://127.0.0.1:$MANAGER_PORT   the manager (children as $MANAGER_USER, the store's owner), reached through both

The Manage API Tokens page: https://127.0.0.1:$HTTPS_PORT/cptoken/  (user alice, password $PAGE_PASSWORD)
cPanel's token API with alice's token, WHM's with root's:
  curl -sk -H "Authorization: cpanel alice:$TOKEN" "${URL}execute/Tokens/list"
  curl -sk -H "Authorization: whm root:$WHM_TOKEN" "https://127.0.0.1:$WHM_PORT/json-api/api_token_list?api.version=1"

Token for alice (name "demo", expires in 7 days; shown once, only its SHA-512 is stored):
  $TOKEN

These now answer 200, and the backend sees "X-Remote-User": "alice" and no Authorization header:
  curl -sk -H "Authorization: cpanel alice:$TOKEN" $URL
  curl -sk -u alice:$TOKEN $URL

Revoke the token:
  $REL_CPTOKEN --db $STATE/store revoke alice demo
and the same curl gets 401 (add -i to see the status line and the challenge).
Why? Ask the tool, or read the error log (one CPT0100 line per refusal):
  echo $TOKEN | $REL_CPTOKEN --db $STATE/store check alice --ip 127.0.0.1
  tail $STATE/logs/error.log
Access log (with the token's name): $STATE/logs/access.log

Stop: make demo-stop   (leaves $STATE for inspection)
MSG

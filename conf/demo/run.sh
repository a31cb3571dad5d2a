#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make demo: a private httpd on https://127.0.0.1:2083 with mod_cptoken in
# front of an echo backend on 127.0.0.1:2082, a token store and a token for
# alice. Everything lives in /tmp/mod_cptoken-demo; /etc/apache2 and the
# system's apache2 service are not touched. Stop it with `make demo-stop`
# (conf/demo/stop.sh). Running it again starts a fresh demo.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$REPO/build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
STATE=/tmp/mod_cptoken-demo
HTTPS_PORT=2083
BACKEND_PORT=2082
HTTPD=/usr/sbin/apache2
PYTHON=/usr/bin/python3
BACKEND=${ECHO_BACKEND:-$REPO/t/httpd/echo_backend.py}
CPTOKEN=$BUILD/cptoken
MODULE=$BUILD/mod_cptoken.so

die() { echo "demo: $*" >&2; exit 1; }

for f in "$CPTOKEN" "$MODULE"; do
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
for p in "$HTTPS_PORT" "$BACKEND_PORT"; do
    if ! port_free "$p"; then
        echo "demo: port $p on 127.0.0.1 is already in use; the demo needs $HTTPS_PORT and $BACKEND_PORT." >&2
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

# The store, readable by the group httpd's children run as, and a token.
if [ "$(id -u)" = 0 ]; then GROUP=www-data; else GROUP=$(id -gn); fi
"$CPTOKEN" --db "$STATE/store" init --group "$GROUP" >/dev/null
TOKEN=$("$CPTOKEN" --db "$STATE/store" create alice demo --expires +7d)

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
    -e "s|@HTTPS_PORT@|$HTTPS_PORT|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
    "$REPO/conf/demo/httpd.conf.in" >"$STATE/httpd.conf"
if ! out=$("$HTTPD" -t -f "$STATE/httpd.conf" -d "$STATE" 2>&1); then
    echo "$out" >&2
    bash "$REPO/conf/demo/stop.sh" --quiet
    die "httpd refused $STATE/httpd.conf"
fi
"$HTTPD" -f "$STATE/httpd.conf" -d "$STATE" -k start \
    || { bash "$REPO/conf/demo/stop.sh" --quiet; die "httpd did not start; see $STATE/logs/error.log"; }

# Wait until both answer: the backend directly, httpd with a 401.
status() { curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$@" 2>/dev/null || true; }
for _ in $(seq 50); do
    [ "$(status "http://127.0.0.1:$BACKEND_PORT/")" = 200 ] && \
    [ "$(status "https://127.0.0.1:$HTTPS_PORT/")" = 401 ] && break
    sleep 0.2
done
got=$(status -H "Authorization: cpanel alice:$TOKEN" "https://127.0.0.1:$HTTPS_PORT/")
if [ "$got" != 200 ]; then
    echo "demo: a request with alice's token got '$got' instead of 200. Last lines of the logs:" >&2
    tail -n 5 "$STATE/logs/error.log" "$STATE/logs/backend.log" >&2 || true
    bash "$REPO/conf/demo/stop.sh" --quiet
    exit 1
fi

URL="https://127.0.0.1:$HTTPS_PORT/"
REL_CPTOKEN=$CPTOKEN
case $CPTOKEN in "$PWD"/*) REL_CPTOKEN=${CPTOKEN#"$PWD"/} ;; esac
cat <<MSG

mod_cptoken demo is running (state in $STATE):
  https://127.0.0.1:$HTTPS_PORT  httpd with mod_cptoken (self-signed certificate, hence curl -k)
  http://127.0.0.1:$BACKEND_PORT   the echo backend it proxies to (answers with the request it got, as JSON)

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

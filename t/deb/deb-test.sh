#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make deb-test: the package as an admin meets it, in a clean Debian 12 root.
#
#   t/deb/deb-test.sh PACKAGE.deb WORKDIR
#
# WORKDIR/base is debootstrap's bookworm (minbase + apache2, curl, man-db and
# bash-completion), made once
# and kept while WORKDIR/base.stamp matches what it was made from. Each run
# copies it to WORKDIR/root, installs the package there with apt-get, enables
# the module, starts that root's httpd on a free port of 127.0.0.1 and checks
# with curl from this machine: no token 401, a token 200, revoked 401. Then it
# removes and purges the package (the store and its tokens stay) and installs
# it again (the store is left as it was, the kept token still admits).
#
# The root shares this machine's network but nothing of its /etc: it never
# touches /etc/apache2 here (checked at the end). Services do not start on
# install there (policy-rc.d), so apache2 never binds port 80. Its /proc is
# mounted while the test runs and unmounted on any exit.
set -euo pipefail

deb=$(realpath "$1")
work=$(realpath -m "$2")
base=$work/base
root=$work/root
log=$work/deb-test.log
suite=bookworm
packages=apache2,curl,man-db,bash-completion

[ "$(id -u)" = 0 ] || { echo "deb-test: needs root (debootstrap, chroot)" >&2; exit 2; }
[ -f "$deb" ] || { echo "deb-test: no package $deb" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "deb-test: debootstrap is missing (make deps)" >&2; exit 2; }

# The machine's own Debian mirror (deb822 or one-line sources), not security's.
mirror=${DEB_TEST_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list.d/*.list 2>/dev/null | grep -E '^(URIs:|deb )' |
    grep -o -E 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)}
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$work"
: > "$log"
started=$SECONDS
port=
host_apache=$(find /etc/apache2 -exec stat -c '%n %s %Y %a' {} + 2>/dev/null | sort | md5sum)

# One line per step; a step's output goes to the log. A step is a command run
# under set -e (not inside an `if`, where bash would ignore -e): any failing
# command in it ends the test, and the EXIT trap says which step and shows the log.
current_step=
step() {  # step WHAT COMMAND...
    current_step=$1
    local t0=$SECONDS
    shift
    echo "== $current_step" >> "$log"
    "$@" >> "$log" 2>&1
    printf 'deb-test: %-76s ok (%ds)\n' "$current_step" $((SECONDS - t0))
    current_step=
}
fail() { echo "$*" >&2; return 1; }
in_root() { chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "${@:2}"; }
run() { in_root "$root" "$@"; }

mounted_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
unmount_all() {  # everything mounted under $1, deepest first
    local m
    for m in $(mounted_under "$1"); do umount "$m" || umount -l "$m"; done
}
remove_tree() {  # never through a mount (--one-file-system, and refuse outright)
    unmount_all "$1"
    [ -z "$(mounted_under "$1")" ] || fail "still mounted under $1"
    rm -rf --one-file-system "$1"
}
stop_httpd() {
    local pidfile=$root/run/apache2/apache2.pid pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    run apache2ctl stop || kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -n "$current_step" ]; then
        printf 'deb-test: %-76s FAILED\n' "$current_step"
        tail -n 25 "$log" | sed 's/^/    /'
        echo "deb-test: log: $log"
    fi
    stop_httpd >> "$log" 2>&1 || true
    unmount_all "$root" 2>> "$log" || true
    unmount_all "$base.new" 2>> "$log" || true
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the clean root, cached --------------------------------------------------
stamp_key="suite=$suite variant=minbase include=$packages mirror=$mirror setup=2"
make_base() {
    remove_tree "$base.new"
    remove_tree "$base"
    debootstrap --variant=minbase "$suite" "$base.new" "$mirror"
    # No service starts on package installs in this root (apache2 would take port 80 of the machine).
    printf '#!/bin/sh\nexit 101\n' > "$base.new/usr/sbin/policy-rc.d"
    chmod 755 "$base.new/usr/sbin/policy-rc.d"
    mount -t proc proc "$base.new/proc"
    in_root "$base.new" apt-get update -q
    in_root "$base.new" apt-get install -y -q --no-install-recommends ${packages//,/ }
    in_root "$base.new" apt-get clean
    umount "$base.new/proc"
    mv "$base.new" "$base"
    echo "$stamp_key" > "$work/base.stamp"
}
if [ -d "$base" ] && [ "$(cat "$work/base.stamp" 2>/dev/null)" = "$stamp_key" ]; then
    printf 'deb-test: %-76s ok (cached)\n' "clean Debian 12 root (debootstrap $suite, $mirror)"
else
    step "clean Debian 12 root (debootstrap $suite, $mirror)" make_base
fi

fresh_root() {
    remove_tree "$root"
    cp -a "$base" "$root"
    mount -t proc proc "$root/proc"
    cp "$deb" "$root/tmp/"
    run apt-get update -q   # the package's dependencies (liblmdb0) come from the archive
}
step "copy of it in $root" fresh_root

pkg=/tmp/$(basename "$deb")
step "apt-get install ./$(basename "$deb")" run apt-get install -y -q "$pkg"

check_installed() {
    local f
    for f in /usr/sbin/cptoken /usr/lib/apache2/modules/mod_cptoken.so \
             /usr/lib/mod_cptoken/mod_cptoken_manager.so \
             /etc/apache2/mods-available/cptoken.load /etc/apache2/mods-available/cptoken.conf \
             /etc/fail2ban/filter.d/cptoken.conf /usr/share/man/man8/cptoken.8.gz \
             /usr/share/man/man8/mod_cptoken.8.gz /usr/share/bash-completion/completions/cptoken \
             /usr/share/doc/libapache2-mod-cptoken/README.md.gz \
             /usr/share/doc/libapache2-mod-cptoken/examples/cpanel-2083.conf \
             /lib/systemd/system/cptoken-prune.timer /lib/systemd/system/cptoken-prune.service \
             /etc/systemd/system/timers.target.wants/cptoken-prune.timer /etc/cron.daily/cptoken \
             /usr/share/doc/libapache2-mod-cptoken/README.Debian \
             /usr/share/doc/libapache2-mod-cptoken/changelog.gz \
             /usr/share/doc/libapache2-mod-cptoken/copyright \
             /etc/cptoken/manager.conf /lib/systemd/system/cptoken-manager.service \
             /lib/systemd/system/cptoken-sync.service \
             /usr/share/doc/libapache2-mod-cptoken/examples/cptoken-sync.default \
             /usr/share/mod_cptoken/manager/index.html /usr/share/mod_cptoken/manager/page.js; do
        [ -e "$root$f" ] || [ -L "$root$f" ] || fail "missing: $f"
    done
    [ ! -e "$root/etc/fail2ban/jail.d/cptoken.conf" ] || fail "a fail2ban jail is enabled"
    grep -q '^License: Apache-2.0$' "$root/usr/share/doc/libapache2-mod-cptoken/copyright" ||
        fail "debian/copyright names no Apache-2.0 licence"
    # apt must never run a prune: the postinst starts the timer, not the service.
    local postinst=$root/var/lib/dpkg/info/libapache2-mod-cptoken.postinst
    ! grep -E "(start|restart).*cptoken-prune\.service" "$postinst" || fail "postinst starts cptoken-prune.service"
    grep -q "cptoken-prune.timer" "$postinst" || fail "postinst does not start the timer"
    grep -q "^TimeoutStartSec=" "$root/lib/systemd/system/cptoken-prune.service" ||
        fail "cptoken-prune.service has no start timeout"
    # The manager: shipped, its user made, not enabled; its configuration as shipped passes configtest.
    run getent passwd cptoken > /dev/null || fail "no user cptoken"
    [ ! -e "$root/etc/systemd/system/multi-user.target.wants/cptoken-manager.service" ] ||
        fail "cptoken-manager.service is enabled by the package"
    ! grep -E "(start|restart).*cptoken-manager" "$postinst" || fail "postinst starts the manager"
    run apache2 -t -f /etc/cptoken/manager.conf
    # The mirror agent (cluster mode): shipped, neither enabled nor started (it needs /etc/default/cptoken-sync).
    [ ! -e "$root/etc/systemd/system/multi-user.target.wants/cptoken-sync.service" ] ||
        fail "cptoken-sync.service is enabled by the package"
    ! grep -E "(start|restart).*cptoken-sync" "$postinst" || fail "postinst starts the mirror agent"
    [ ! -e "$root/etc/apache2/mods-enabled/cptoken.load" ] || fail "the module is enabled by the package"
    [ "$(stat -c '%U:%G %a' "$root/var/lib/cptoken")" = "root:www-data 2750" ] ||
        fail "store: $(stat -c '%U:%G %a' "$root/var/lib/cptoken"), expected root:www-data 2750"
    [ -f "$root/var/lib/cptoken/tokens.mdb" ] || fail "no tokens.mdb in /var/lib/cptoken"
    # Nothing of the token store may be written by www-data: only the usage store is its to write.
    local writable
    writable=$(run runuser -u www-data -- find /var/lib/cptoken -writable | sort | tr '\n' ' ')
    [ "$writable" = "/var/lib/cptoken/usage.slots " ] ||
        fail "www-data can write: $writable"
}
step "files, timer enabled, module and manager not, store root:www-data 2750, nothing of the token store writable by www-data" check_installed

check_commands() {
    local version
    version=$(run cptoken --version) || fail "cptoken --version failed"
    [ "$version" = "cptoken $(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')" ] || fail "cptoken --version says '$version'"
    run man -P cat cptoken 2>/dev/null | grep -q "cptoken - create, list, edit and revoke" || fail "man cptoken shows no page"
    run man -P cat mod_cptoken 2>/dev/null | grep -q "AuthType cpanel" || fail "man mod_cptoken shows no page"
    run bash -c '. /usr/share/bash-completion/bash_completion; _completion_loader cptoken; complete -p cptoken' \
        | grep -q _cptoken || fail "bash completion for cptoken does not load"
}
step "cptoken --version, man cptoken, man mod_cptoken, completion" check_commands

short_created=
short_token() { short_created=$(date +%s); run cptoken create alice short --expires +1s > /dev/null; }
step "cptoken create alice short --expires +1s" short_token

configure_httpd() {
    port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    run a2enmod cptoken
    # Only the test vhost: this root's httpd must not take the machine's port 80.
    : > "$root/etc/apache2/ports.conf"
    run a2dissite 000-default
    mkdir -p "$root/var/www/html/api"
    echo "api ok" > "$root/var/www/html/api/index.html"
    cat > "$root/etc/apache2/sites-available/cptoken-test.conf" <<EOF
ServerName 127.0.0.1
Listen 127.0.0.1:$port
<VirtualHost 127.0.0.1:$port>
    DocumentRoot /var/www/html
    <Location "/api/">
        AuthType cpanel
        AuthName "API"
        Require valid-user
    </Location>
</VirtualHost>
EOF
    run a2ensite cptoken-test
    run apache2ctl configtest
}
step "a2enmod cptoken, a vhost with AuthType cpanel on /api/" configure_httpd

smoke() {
    cp "$(dirname "$(realpath "$0")")/../../debian/tests/smoke" "$root/tmp/smoke"
    run env CPTOKEN_SMOKE_PORT="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" \
        sh /tmp/smoke
}
step "debian/tests/smoke (the autopkgtest) in the root: 401, 200, revoked 401" smoke

start_httpd() {
    run apache2ctl start
    for _ in $(seq 50); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    fail "httpd does not answer on 127.0.0.1:$port"
}
step "that root's httpd started" start_httpd

status() {  # status TOKEN_OR_EMPTY: the HTTP status of GET /api/ from this machine
    if [ -n "$1" ]; then
        curl -s -o /dev/null -w '%{http_code}' -H "Authorization: cpanel alice:$1" "http://127.0.0.1:$port/api/"
    else
        curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/"
    fi
}
expect() {  # expect STATUS TOKEN_OR_EMPTY
    local got
    got=$(status "$2") || true   # curl's 000 when nothing answers
    [ "$got" = "$1" ] || fail "GET /api/ answered $got, expected $1"
    echo "GET /api/: $got"
}
token=
keep=
create_tokens() {
    token=$(run cptoken create alice deploy-test)
    keep=$(run cptoken create alice keep)
    [[ $token =~ ^[A-Z0-9]{32}$ && $keep =~ ^[A-Z0-9]{32}$ ]] || fail "cptoken create printed no token"
}
step "cptoken create alice deploy-test, alice keep (in the root)" create_tokens
step "curl 127.0.0.1:$port/api/ without a token: 401" expect 401 ""
step "curl with alice's token: 200" expect 200 "$token"
step "cptoken revoke alice deploy-test" run cptoken revoke alice deploy-test
step "curl with the revoked token: 401" expect 401 "$token"
step "curl with alice's other token: 200" expect 200 "$keep"

cron_prunes() {
    # No systemd runs in the root: the cron fallback prunes alice/short, once it has expired.
    while [ "$(date +%s)" -le $((short_created + 1)) ]; do sleep 0.2; done
    local list
    list=$(run cptoken list alice)
    grep -q ' short ' <<< "$list" || fail "alice/short is not in the store before the prune"
    run /etc/cron.daily/cptoken
    list=$(run cptoken list alice)
    echo "$list"
    grep -q ' keep ' <<< "$list" || fail "alice/keep is gone"
    ! grep -q ' short ' <<< "$list" || fail "/etc/cron.daily/cptoken did not prune alice/short"
}
step "/etc/cron.daily/cptoken (no systemd here) prunes the expired token" cron_prunes
step "httpd stopped" stop_httpd

# The shipped example, as README.Debian says to enable it: certificate, port and backend put in.
example_port=
example_status() {  # example_status: the HTTP status of GET / on the example vhost, no token
    curl -k -s -o /dev/null -w '%{http_code}' "https://127.0.0.1:$example_port/" || true
}
example_vhost() {
    example_port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
        -keyout "$root/etc/ssl/private/cpanel.example.com.key" -out "$root/etc/ssl/certs/cpanel.example.com.pem" 2>/dev/null
    sed -e "s/^Listen 2083 https/Listen 127.0.0.1:$example_port https/" -e "s/<VirtualHost \*:2083>/<VirtualHost *:$example_port>/" \
        "$root/usr/share/doc/libapache2-mod-cptoken/examples/cpanel-2083.conf" > "$root/etc/apache2/sites-available/cpanel-2083.conf"
    run a2enmod -q ssl proxy proxy_http headers
    run a2ensite -q cpanel-2083
    run apache2ctl configtest
    start_httpd
    [ "$(example_status)" = 401 ] || fail "the example vhost answered $(example_status) without a token, expected 401"
    stop_httpd
}
step "the example cpanel-2083.conf enabled (ssl, proxy): no token 401" example_vhost

store_state() { (cd "$root/var/lib/cptoken" && stat -c '%n %U:%G %a %s %Y' . * | sort); }
before_remove=
removed() {
    before_remove=$(store_state)
    run apt-get remove -y -q libapache2-mod-cptoken
    [ ! -e "$root/usr/sbin/cptoken" ] || fail "cptoken is still there"
    [ ! -e "$root/etc/apache2/mods-enabled/cptoken.load" ] || fail "the module is still enabled without its .so"
    [ -e "$root/etc/apache2/mods-available/cptoken.load" ] || fail "remove took the conffiles"
    [ "$(store_state)" = "$before_remove" ] || fail "remove changed the store"
    # The example vhost is still enabled: httpd must start, and its location stay closed.
    run apache2ctl configtest
    start_httpd
    [ "$(example_status)" = 403 ] || fail "without the module, the example vhost answered $(example_status), expected 403"
    local api
    api=$(status "")
    [ "$api" != 200 ] || fail "without the module, /api/ answered 200"
    stop_httpd
}
step "apt-get remove, example vhost enabled: httpd starts, its location 403, store kept" removed

reinstalled_after_remove() {
    run apt-get install -y -q "$pkg"
    [ -e "$root/etc/apache2/mods-enabled/cptoken.load" ] || fail "the module is not enabled again"
    start_httpd
    expect 200 "$keep"
    [ "$(example_status)" = 401 ] || fail "the example vhost answered $(example_status), expected 401"
    stop_httpd
    before_remove=$(store_state)  # the token's use was recorded
    run apt-get remove -y -q libapache2-mod-cptoken
    [ "$(store_state)" = "$before_remove" ] || fail "remove changed the store"
}
step "install again after remove: module enabled again, 200; removed again" reinstalled_after_remove

purged() {
    run apt-get purge -y -q libapache2-mod-cptoken
    [ ! -e "$root/etc/apache2/mods-available/cptoken.load" ] || fail "purge left cptoken.load"
    [ ! -e "$root/etc/cron.daily/cptoken" ] || fail "purge left the cron job"
    [ "$(store_state)" = "$before_remove" ] || fail "purge changed the store"
    ls -l "$root/var/lib/cptoken"
}
step "apt-get purge: conffiles gone, store and its tokens kept" purged

reinstalled() {
    # The admin's own choice, which a reinstall must keep: a group of its own for the store.
    run groupadd cptoken-readers
    run usermod -a -G cptoken-readers www-data
    run chgrp -R cptoken-readers /var/lib/cptoken
    before_remove=$(store_state)
    run apt-get install -y -q "$pkg"
    [ "$(store_state)" = "$before_remove" ] || fail "the install changed an existing store"
    local list
    list=$(run cptoken list alice)
    grep -q ' keep ' <<< "$list" || fail "alice/keep is not listed"
    # Purge forgot the module's state: a first install again, which leaves enabling to the admin.
    [ ! -e "$root/etc/apache2/mods-enabled/cptoken.load" ] || fail "the module is enabled after purge and install"
    run a2enmod cptoken
    start_httpd
    expect 200 "$keep"
    expect 401 "$token"
    stop_httpd
}
step "store given to group cptoken-readers; install again: untouched, alice/keep 200" reinstalled

untouched() {
    [ "$(find /etc/apache2 -exec stat -c '%n %s %Y %a' {} + 2>/dev/null | sort | md5sum)" = "$host_apache" ] ||
        fail "this machine's /etc/apache2 changed"
}
step "this machine's /etc/apache2 untouched" untouched
echo "deb-test: passed in $((SECONDS - started))s"

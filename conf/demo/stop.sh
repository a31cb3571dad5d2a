#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make demo-stop: stops the demo's httpd, its manager and echo backend (by their pid
# files) and leaves /tmp/mod_cptoken-demo for inspection.
set -uo pipefail

STATE=/tmp/mod_cptoken-demo
quiet=0
[ "${1:-}" = --quiet ] && quiet=1
say() { [ "$quiet" = 1 ] || echo "$@"; }

# stop NAME PIDFILE PATTERN: TERM the process if it is still the one we
# started (its command line matches PATTERN), then wait for it to exit.
stop() {
    local name=$1 pidfile=$2 pattern=$3 pid
    [ -f "$pidfile" ] || { say "$name: not running (no $pidfile)"; return 0; }
    pid=$(cat "$pidfile" 2>/dev/null)
    if [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] &&
       tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do
            [ -e "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -e "/proc/$pid" ]; then
            echo "$name (pid $pid) did not stop after 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        say "$name (pid $pid) stopped"
    else
        say "$name: not running"
    fi
    rm -f "$pidfile"
}

stop httpd "$STATE/httpd.pid" "$STATE/httpd.conf"
stop manager "$STATE/manager.pid" "$STATE/manager.conf"
stop "echo backend" "$STATE/backend.pid" "echo_backend"
say "state left in $STATE (logs in $STATE/logs)"

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Two builds of the module side by side, for a change on the request path:
# two httpds of bench/httpd_bench.py's kind (its config, store and headers),
# one loading MODULE_A, the other MODULE_B, and wrk runs alternating between
# them (/open, then /cptoken, on A, then on B; ROUNDS times), so that the
# drift of a VM's speed within a minute falls on both alike. Prints each
# build's median req/s and httpd CPU per request (its parent and children,
# from /proc), and the medians of its /cptoken ÷ /open ratios of both.
#
#   bench/compare_builds.sh MODULE_A MODULE_B
#
# CONF_A and CONF_B, if set, are lines added at the end of that httpd's
# config (server level), to compare two settings of one build, e.g. what
# last used costs:
#
#   CONF_A="CPTokenLastUsed On" CONF_B="CPTokenLastUsed Off" \
#       bench/compare_builds.sh build/mod_cptoken.so build/mod_cptoken.so
#
# Needs a run of bench/httpd_bench.py with the serial section before, in
# BENCH_DIR (default /var/tmp/mod_cptoken-bench): its run/serial-round1
# config and run/headers/cptoken.txt are reused. ROUNDS (8), SECONDS_EACH
# (3), CONNECTIONS (1: one at a time; 32: full load, two wrk threads).
# Root (httpd starts as root and becomes www-data); 127.0.0.1 only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
a=$(realpath "$1") b=$(realpath "$2")
bench_dir=${BENCH_DIR:-/var/tmp/mod_cptoken-bench}
rounds=${ROUNDS:-8} seconds=${SECONDS_EACH:-3} connections=${CONNECTIONS:-1}
threads=1
[ "$connections" -gt 1 ] && threads=2
source_dir=$bench_dir/run/serial-round1
headers=$bench_dir/run/headers/cptoken.txt
[ -f "$source_dir/httpd.conf" ] && [ -f "$headers" ] ||
    { echo "compare_builds: no httpd_bench run in $bench_dir (run it with BENCH_ONLY=serial first)" >&2; exit 2; }
work=$(mktemp -d /var/tmp/compare-builds.XXXXXX)
chmod 755 "$work"

start() {  # NAME MODULE PORT EXTRA_CONF
    local dir=$work/$1
    mkdir -p "$dir/run"
    cp -r "$source_dir/htdocs" "$dir/"
    sed -e "s#$source_dir#$dir#g" -e "s/^Listen .*/Listen 127.0.0.1:$3/" \
        -e "s#^LoadModule cptoken_module .*#LoadModule cptoken_module \"$2\"#" \
        "$source_dir/httpd.conf" > "$dir/httpd.conf"
    [ -z "$4" ] || printf '%s\n' "$4" >> "$dir/httpd.conf"
    chown -R www-data "$dir/run"
    apache2 -f "$dir/httpd.conf" -k start
}
stop() {
    for name in a b; do apache2 -f "$work/$name/httpd.conf" -k stop 2>/dev/null || true; done
    sleep 1
    rm -rf "$work"
}
trap stop EXIT

cpu_ticks() {  # NAME: CPU time (clock ticks) of that httpd's parent and children so far
    local parent
    parent=$(cat "$work/$1/httpd.pid")
    awk -v parent="$parent" '{ sub(/^.*\) /, ""); if ($2 == parent || FILENAME ~ "/" parent "/") t += $12 + $13 }
        END { print t + 0 }' /proc/[0-9]*/stat 2>/dev/null
}

measure() {  # NAME PORT PATH: "REQ/S CPU-US-PER-REQUEST" of one wrk run
    local before after
    before=$(cpu_ticks "$1")
    rm -f "$work/wrk-go"  # rotate.lua starts sending once its last thread is ready
    wrk -t$threads -c"$connections" -d"${seconds}s" -s "$here/rotate.lua" "http://127.0.0.1:$2$3" "$headers" $threads \
        "$work/wrk-go" |
        sed -n 's/^CPTBENCH //p' > "$work/wrk.json"
    after=$(cpu_ticks "$1")
    TICKS=$((after - before)) HZ=$(getconf CLK_TCK) /usr/bin/python3 -c '
import json, os
r = json.load(open(os.environ["WORK"] + "/wrk.json"))
print(round(r["requests"] / (r["duration_us"] / 1e6)), round(int(os.environ["TICKS"]) / int(os.environ["HZ"]) * 1e6 / r["requests"], 2))'
}
export WORK=$work

port_a=$((20000 + RANDOM % 20000)) port_b=$((40000 + RANDOM % 20000))
start a "$a" $port_a "${CONF_A:-}"
start b "$b" $port_b "${CONF_B:-}"
sleep 2
measure a $port_a /cptoken > /dev/null  # warm: caches, children
measure b $port_b /cptoken > /dev/null
for round in $(seq "$rounds"); do
    for which in "a $port_a" "b $port_b"; do
        set -- $which
        echo "$1 $(measure "$1" "$2" /open) $(measure "$1" "$2" /cptoken)"
    done
done > "$work/runs.txt"
A="$a${CONF_A:+ + $CONF_A}" B="$b${CONF_B:+ + $CONF_B}" CONNECTIONS=$connections /usr/bin/python3 - "$work/runs.txt" <<'EOF'
import os, statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"compare_builds: {os.environ['CONNECTIONS']} connection(s), medians of {len(rows) // 2} alternating rounds")
median = statistics.median
for name in "ab":
    runs = [(int(o), float(oc), int(c), float(cc)) for n, o, oc, c, cc in rows if n == name]
    ratios = [c / o for o, _, c, _ in runs]
    cpu_ratios = [oc / cc for _, oc, _, cc in runs]
    print(f"  {name.upper()} {os.environ[name.upper()]}:\n"
          f"    req/s /open {median(r[0] for r in runs):,.0f}, /cptoken {median(r[2] for r in runs):,.0f}, "
          f"ratio {median(ratios):.3f} (rounds: {' '.join(f'{r:.3f}' for r in ratios)})\n"
          f"    httpd CPU us/request /open {median(r[1] for r in runs):.2f}, /cptoken {median(r[3] for r in runs):.2f}, "
          f"/open's ÷ /cptoken's {median(cpu_ratios):.3f} (rounds: {' '.join(f'{r:.3f}' for r in cpu_ratios)})")
EOF

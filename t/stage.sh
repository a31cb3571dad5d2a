#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One stage of `make test`: runs COMMAND with its output in LOGDIR/NAME.log
# and prints one line, `NAME  ok  12 s`; on failure, the log's last lines
# and where the whole of it is, and the command's exit status.
#   t/stage.sh NAME LOGDIR COMMAND [ARG...]
set -u
name=$1 logdir=$2
shift 2
mkdir -p "$logdir"
log="$logdir/$name.log"
start=$(date +%s)
"$@" >"$log" 2>&1
status=$?
took=$(( $(date +%s) - start ))
if [ "$status" -eq 0 ]; then
    printf '%-12s ok      %4d s\n' "$name" "$took"
else
    printf '%-12s FAILED  %4d s  (exit %d; the whole output: %s)\n' "$name" "$took" "$status" "$log"
    tail -n 80 "$log" | sed 's/^/    /'
fi
exit "$status"

#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Issue 23's table: what the check costs at each store size, last used On
(the default) and Off, at full load and one connection at a time.

For each row (TOKENS:ROTATING, from TABLE_ROWS, default
2000:2000,1000000:10000,1000000:1000000) and for last used On, then Off, one
run of bench/httpd_bench.py with BENCH_ONLY=locations,serial,instructions
and BENCH_PATHS=/cptoken,/floor. Its results.md is kept as
BENCH_DIR/table/T-R-on.md (or -off.md); its results.json gives the
figures. Prints one table and writes it to BENCH_DIR/table.md:

  ratio to /open (httpd CPU ratio), p99 ÷ /open's, for /cptoken at full
  load and one connection; instructions per request over /open's
  (callgrind); the same ratios of /floor (httpd's own Basic authentication,
  nothing checked) for reference.

Every other BENCH_* setting passes through (BENCH_DIR, BENCH_ROUNDS,
BENCH_DURATION, BENCH_CALLGRIND=0 ...). Run as root, after make:

    CPTOKEN=build/cptoken MOD_CPTOKEN=build/mod_cptoken.so \\
        BENCH_DIR=/var/tmp/mod_cptoken-bench /usr/bin/python3 bench/table.py [--smoke]

About 3 minutes a run, six runs, plus building the 1M-token store once
(kept in BENCH_DIR/fixtures). --smoke passes --smoke on (tiny sizes) and
its default rows are 200:200, last used On only: it checks that the table
is made (Off is the same code with CPTokenLastUsed Off). Exit
status: 0, or 1 when a run failed or left a figure out (printed).
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rows_from(text):
    rows = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        tokens, _, rotating = item.partition(":")
        try:
            rows.append((int(tokens), int(rotating or tokens)))
        except ValueError:
            sys.exit(f"table: TABLE_ROWS: {item!r} is not TOKENS:ROTATING")
    return rows


def present(*xs):
    return all(x is not None and not (isinstance(x, float) and math.isnan(x)) for x in xs)


def cell(section, path):
    """(ratio (CPU ratio), p99 ratio) of one location, each None if missing."""
    m = section.get(path)
    if not m or not present(m["ratio"], m["cpu_ratio"]):
        return None, None
    return f"{m['ratio']:.3f} ({m['cpu_ratio']:.3f})", f"{m['p99_ratio']:.2f}" if present(m["p99_ratio"]) else None


def extra_instructions(instr):
    if "/cptoken" not in instr or "/open" not in instr:
        return None
    return f"+{(instr['/cptoken'] - instr['/open']) / 1000:.1f}k"


def main(argv):
    smoke = "--smoke" in argv
    rows = rows_from(os.environ.get("TABLE_ROWS") or ("200:200" if smoke else
                                                      "2000:2000,1000000:10000,1000000:1000000"))
    bench_dir = Path(os.environ.get("BENCH_DIR", "/var/tmp/mod_cptoken-bench"))
    keep = bench_dir / "table"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    lines = ["| tokens, in use | last used | full load: ratio (CPU ratio) | p99 ÷ /open's | "
             "one connection: ratio (CPU ratio) | p99 ÷ /open's | instructions over /open | "
             "/floor full load | /floor one connection |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    failed = []
    for tokens, rotating in rows:
        for last_used in ("1",) if smoke else ("1", "0"):
            name = f"{tokens}-{rotating}-{'on' if last_used == '1' else 'off'}"
            env = dict(os.environ, BENCH_TOKENS=str(tokens), BENCH_ROTATE=str(rotating),
                       BENCH_LAST_USED=last_used, BENCH_ONLY="locations,serial,instructions",
                       BENCH_PATHS="/cptoken,/floor", BENCH_DIR=str(bench_dir))
            print(f"table: {name}", file=sys.stderr, flush=True)
            for old in ("results.json", "results.md"):  # a failed run must not leave the last one's
                (bench_dir / old).unlink(missing_ok=True)
            run = subprocess.run([sys.executable, str(HERE / "httpd_bench.py")] + (["--smoke"] if smoke else []),
                                 env=env, stdout=subprocess.DEVNULL)
            if (bench_dir / "results.md").exists():
                shutil.copyfile(bench_dir / "results.md", keep / f"{name}.md")
            try:
                r = json.loads((bench_dir / "results.json").read_text())
            except (OSError, ValueError) as e:
                failed.append(f"{name}: no results ({e})")
                continue
            if run.returncode != 0:
                failed.append(f"{name}: httpd_bench.py exited {run.returncode}: " + "; ".join(r["failures"]))
            full, one = r["full_load"], r["one_connection"]
            figures = [*cell(full, "/cptoken"), *cell(one, "/cptoken"), extra_instructions(r["instructions"]),
                       cell(full, "/floor")[0], cell(one, "/floor")[0]]
            wanted = figures if os.environ.get("BENCH_CALLGRIND", "").strip() != "0" else figures[:4] + figures[5:]
            if None in wanted:
                failed.append(f"{name}: a figure is missing from its results.json")
            lines.append(f"| {tokens:,}, {rotating:,} | {'On' if last_used == '1' else 'Off'} | "
                         + " | ".join(f or "-" for f in figures) + " |")
    text = "\n".join(lines) + "\n"
    (bench_dir / "table.md").write_text(text)
    print(text, flush=True)
    print(f"table: each run's results.md in {keep}", file=sys.stderr)
    for f in failed:
        print(f"table: FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Incremental check (issue 26): a repository of 10,000 guests in which one spec changed,
checked with the cache, against checking that one spec cold (--no-cache): <= 2x.

The repository (specs/ and its built out/, in a directory with .git, as a repository
is) is built once; a first check then compares every guest and records it (the check
waits until the build's files are older than the cache's 2 s margin: files changed
within it are compared again, never taken from the cache). One spec is then changed,
and these are timed, interleaved, medians of --runs runs:

  - `cgsc check --specs-from LIST -o out` (the 10,000; exit 1: the changed guest drifts);
  - `cgsc check specs/CHANGED.toml -o out --no-cache`, the yardstick;
and, printed beside them: `check --all` with the cache, the cold full check, and the
incremental build (which writes the changed guest).

Usage: python3 bench/bench_incremental.py [--runs N] [--guests N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import cgsc_command, fleet_spec, precompile, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARGIN_S = 2.0   # output/cache.py MARGIN_NS


def run(argv, cwd) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def settle(newest: float) -> None:
    """Wait until files written up to `newest` are older than the cache's margin."""
    time.sleep(max(0.0, newest + MARGIN_S + 0.2 - time.time()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--guests", type=int, default=10000)
    args = ap.parse_args()
    precompile()
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else os.path.join(ROOT, "bench")
    rows = []
    with tempfile.TemporaryDirectory(dir=base, prefix="cgsc-bench-incremental-") as repo:
        os.mkdir(os.path.join(repo, ".git"))
        os.mkdir(os.path.join(repo, "specs"))
        specs = []
        for i in range(args.guests):
            path = os.path.join("specs", f"node-{i:05d}.toml")
            with open(os.path.join(repo, path), "w", encoding="utf-8") as fh:
                fh.write(fleet_spec(i))
            specs.append(path)
        with open(os.path.join(repo, "list"), "w", encoding="utf-8") as fh:
            fh.write("".join(s + "\n" for s in specs))
        cgsc = cgsc_command()
        subprocess.run(cgsc + ["build", "--specs-from", "list", "-o", "out"], cwd=repo,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        settle(time.time())
        cold_full = run(cgsc + ["check", "--specs-from", "list", "-o", "out"], cwd=repo)
        changed = specs[len(specs) // 2]
        with open(os.path.join(repo, changed), "a", encoding="utf-8") as fh:
            fh.write("# one change\n")
        incremental = cgsc + ["check", "--specs-from", "list", "-o", "out"]
        yardstick = cgsc + ["check", changed, "-o", "out", "--no-cache"]
        everything = cgsc + ["check", "--all", "-o", "out"]
        run(everything, cwd=repo)   # --all checks each guest with its manifest's targets: records
        times = {"inc": [], "one": [], "all": []}
        for r in range(args.runs + 1):
            for key, argv in (("inc", incremental), ("one", yardstick), ("all", everything)):
                took = run(argv, cwd=repo)
                if r:
                    times[key].append(took)
        inc, one, every = (statistics.median(times[k]) for k in ("inc", "one", "all"))
        build = run(cgsc + ["build", "--specs-from", "list", "-o", "out"], cwd=repo)
        shutil.rmtree(os.path.join(repo, "out", ".cgsc"), ignore_errors=True)
    rows.append((f"check of {args.guests} guests, one spec changed, cache",
                 f"{inc * 1000:.0f} ms vs that spec cold {one * 1000:.0f} ms = {inc / one:.2f} x",
                 "<= 2.00 x", inc / one <= 2.0))
    rows.append(("  check --all, the same repository, cache", f"{every * 1000:.0f} ms", "(reference)",
                 None))
    rows.append((f"  check of the {args.guests} guests with no cache", f"{cold_full * 1000:.0f} ms",
                 "(reference)", None))
    rows.append(("  build of the same, cache (writes the changed guest)", f"{build * 1000:.0f} ms",
                 "(reference)", None))
    return report(rows, 40, 12)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fleet review at scale: `cgsc build` and `cgsc check` of a 10,000-guest fleet must not be
more than 10 % slower than a baseline cgsc (the code before the cross-guest checks; pass
its command with --baseline), measured in the same run; exits 1 when missed.

The cross-guest checks (cgsc.pipeline.conflicts) compare every guest with every other on
its host, so they must stay linear: each guest's claims travel as a few hashes and are
compared through one bitmap pass. This bench is where that is measured: both commands,
both versions, A B A B interleaved so that machine noise hits both alike, each build into
a fresh directory on tmpfs (the durable commit's syncfs on a shared disk would measure
everyone else's writes), the specs listed with --specs-from. The figure is the median of
the per-pair ratios of CPU time (user + system, workers included: the work done, which
other jobs on a shared machine change far less than wall time); wall time is printed
beside it. It also reports peak RSS of both builds.

Usage: python3 bench/bench_fleet.py --baseline 'PATH/TO/OTHER/cgsc' [--fleet N] [--runs N]
(the baseline: a second worktree at the base revision with its own venv, for example).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Tuple

from bench import cgsc_command, machine, make_fleet, precompile

LIMIT = 1.10


def run(argv) -> Tuple[float, float]:
    """(CPU seconds, wall seconds) of one command and its worker processes (its output
    discarded); it must succeed. CPU time (user + system of the whole process tree) is the
    work done, which a machine shared with other jobs changes far less than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def peak_kib(argv) -> int:
    """Peak RSS of the largest process of a command (a child of a fresh interpreter)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    return int(subprocess.run([sys.executable, "-c", code, *argv], check=True,
                              capture_output=True, text=True).stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="the baseline cgsc command, as one string")
    ap.add_argument("--fleet", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    precompile()
    ours, theirs = cgsc_command(), shlex.split(args.baseline)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=os.path.join(root, "bench"), prefix=".work-") as work, \
            tempfile.TemporaryDirectory(dir=shm) as fast:
        specs = make_fleet(args.fleet, work)
        listed = os.path.join(work, "fleet.txt")
        with open(listed, "w", encoding="utf-8") as fh:
            fh.write("".join(s + "\n" for s in specs))
        sides = {"A": ours, "B": theirs}
        out = {side: os.path.join(fast, side) for side in sides}

        def build(side):
            shutil.rmtree(out[side], ignore_errors=True)
            return run(sides[side] + ["build", "--specs-from", listed, "-o", out[side]])

        def check(side):
            return run(sides[side] + ["check", "--specs-from", listed, "-o", out[side]])
        for side in sides:   # warm the page cache and write each side's bytecode
            build(side)
            check(side)
        ratios = {"build": [], "check": []}
        times = {(k, s): [] for k in ratios for s in sides}
        for _ in range(args.runs):
            for kind, step in (("build", build), ("check", check)):
                a, b = step("A"), step("B")
                times[(kind, "A")].append(a)
                times[(kind, "B")].append(b)
                ratios[kind].append(a[0] / b[0])
        rss = {side: peak_kib(sides[side] + ["build", "--specs-from", listed, "-o",
                                              out[side] + "-rss"]) for side in sides}
    print(f"machine: {machine()}; {args.fleet} specs, {args.runs} interleaved runs, "
          f"A = this tree, B = {args.baseline}")
    missed = 0
    for kind, found in ratios.items():
        ratio = statistics.median(found)
        cpu = {s: statistics.median(t[0] for t in times[(kind, s)]) for s in sides}
        wall = {s: statistics.median(t[1] for t in times[(kind, s)]) for s in sides}
        walls = statistics.median(a[1] / b[1] for a, b in zip(times[(kind, "A")], times[(kind, "B")]))
        ok = ratio <= LIMIT
        missed += not ok
        print(f"fleet {kind}, {args.fleet} specs: CPU A {cpu['A']:.2f} s, B {cpu['B']:.2f} s; "
              f"A/B median of pairs {ratio:.3f} (<= {LIMIT:.2f}) {'ok' if ok else 'MISSED'} "
              f"[pairs {', '.join(f'{r:.3f}' for r in found)}]; wall A {wall['A']:.2f} s "
              f"({args.fleet / wall['A']:.0f} specs/s), B {wall['B']:.2f} s, A/B {walls:.3f} (reference)")
    print(f"peak RSS of the build (largest process): A {rss['A'] / 1024:.1f} MiB, "
          f"B {rss['B'] / 1024:.1f} MiB ({rss['A'] / rss['B']:.2f} x)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

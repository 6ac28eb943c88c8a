#!/usr/bin/env python3
"""A digest of everything cgsc says and writes for the project's specs, to prove that a
change meant to keep behaviour (a refactoring, a move) kept it.

Runs the installed `cgsc` on every example, test case and invalid spec (build, validate,
check, explain as text and JSON), on a generated 1,000-spec fleet (build and check, one
process and workers), and on the commands that print catalogues (rules, schema, targets,
completion, every --help). Prints one line per run: the command, its exit status and the
sha256 of its stdout, its stderr and the output tree it wrote (every file's path, mode and
bytes). Two runs are equal when their listings are.

Usage: python3 tests/tools/output_snapshot.py > before.txt   (then again, and diff)
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEET = 1000


def cgsc() -> list:
    script = shutil.which("cgsc")
    return [script] if script else [sys.executable, "-m", "cgsc"]


def tree_digest(top: str) -> str:
    h = hashlib.sha256()
    if not os.path.isdir(top):
        return "-"
    for base, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, top)
            if rel.startswith(".cgsc" + os.sep):   # the lock and journal: not output
                continue
            st = os.lstat(path)
            h.update(f"{rel}\0{st.st_mode:o}\0".encode())
            with open(path, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:16]


def run(label: str, argv: list, out: str = "") -> None:
    proc = subprocess.run(cgsc() + argv, cwd=ROOT, capture_output=True)
    digest = lambda b: hashlib.sha256(b).hexdigest()[:16]   # noqa: E731
    tree = tree_digest(out) if out else "-"
    print(f"{label}\trc={proc.returncode}\tout={digest(proc.stdout)}\terr={digest(proc.stderr)}\ttree={tree}")


def fleet(tmp: str) -> list:
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from bench import FLEET_TEMPLATE   # the benchmark's own fleet: one definition
    paths = []
    os.makedirs(os.path.join(tmp, "fleet"))
    for i in range(FLEET):
        path = os.path.join(tmp, "fleet", f"node-{i:05d}.toml")
        with open(path, "w") as fh:
            fh.write(FLEET_TEMPLATE.format(i=i, vcpus=1 + i % 8, mem=1 + i % 16))
        paths.append(path)
    return paths


def main() -> int:
    specs = sorted(glob.glob("examples/*.toml") + glob.glob("examples/*/*.toml")
                   + glob.glob("tests/cases/*.toml") + glob.glob("tests/invalid/*.toml"),
                   key=lambda p: p)
    # a fixed place: messages name the output directory, so it must not vary between runs
    tmp = os.path.join(tempfile.gettempdir(), "cgsc-output-snapshot")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for spec in [os.path.relpath(os.path.join(ROOT, s), ROOT) for s in specs]:
            out = os.path.join(tmp, spec.replace("/", "_"))
            run(f"build {spec}", ["build", spec, "-o", out], out)
            run(f"check {spec}", ["check", spec, "-o", out], out)
            run(f"validate {spec}", ["validate", spec])
            run(f"explain {spec}", ["explain", spec])
            run(f"explain-json {spec}", ["explain", "--format", "json", spec])
            for fmt in ("json", "sarif", "github"):
                run(f"validate-{fmt} {spec}", ["validate", "--format", fmt, spec])
        paths = fleet(tmp)
        for jobs in ("1", "2"):
            out = os.path.join(tmp, "fleet-out-" + jobs)
            run(f"fleet build -j{jobs}", ["build", "-j", jobs, "-o", out] + paths, out)
            run(f"fleet check -j{jobs}", ["check", "-j", jobs, "-o", out] + paths, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for argv in (["rules"], ["schema"], ["targets"], ["--help"], ["--version"],
                 ["completion", "bash"], ["completion", "zsh"], ["completion", "fish"]):
        run(" ".join(argv), argv)
    for command in ("build", "validate", "check", "explain", "diff", "probe", "rules",
                    "schema", "targets", "completion"):
        run(f"{command} --help", [command, "--help"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

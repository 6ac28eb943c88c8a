"""Byte-identical output: every run, every hash seed, every working directory."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import EXAMPLES, ROOT, VALID_SPECS, rel


def _build(out, seed, cwd=ROOT):
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    specs = [rel(s) for s in VALID_SPECS]
    subprocess.run([sys.executable, "-m", "cgsc", "build", *specs, "-o", str(out)],
                   cwd=cwd, env=env, check=True, capture_output=True)
    return {p.relative_to(out): (p.read_bytes(), p.stat().st_mode) for p in out.rglob("*") if p.is_file()}


def test_two_builds_with_different_hash_seeds_are_byte_identical(tmp_path):
    first = _build(tmp_path / "a", 1)
    second = _build(tmp_path / "b", 4242)
    assert first == second
    assert len(first) >= 4 * len(EXAMPLES)


def test_output_does_not_depend_on_where_it_is_written(tmp_path):
    first = _build(tmp_path / "a", 0)
    second = _build(tmp_path / "deeper" / "elsewhere", 0)
    assert first == second

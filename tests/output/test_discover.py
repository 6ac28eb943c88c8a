"""`cgsc check --all` finds its guests (output/drift.py discover): every entry of a large
output directory is accounted for, by each core's share, as in one process."""

from __future__ import annotations

import json
import os

import pytest
from cgsc.output import drift


def _manifest(directory, spec, targets=("shell", "systemd"), bases=()):
    os.makedirs(directory)
    doc = {"spec": [{"path": spec}] + [{"path": b} for b in bases],
           "artifacts": [{"target": t} for t in targets] + [{"target": "reference-values"}]}
    with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh)


def _output_directory(tmp_path, count):
    """OUT with `count` guests whose spec exists and every kind of entry no spec builds,
    spread among them; (found, orphans) as discover() must give them, written here from
    how they were made."""
    os.makedirs(tmp_path / "specs" / "bases")
    (tmp_path / "specs" / "bases" / "b.toml").write_text("")
    found, orphans = [], []
    out = "out"
    os.makedirs(tmp_path / out / ".cgsc")   # cgsc's private state: never reported
    for i in range(count):
        name = f"g{i:05d}"
        directory = f"{out}/{name}"
        kind = i % 50
        if kind == 7:   # a stray file
            (tmp_path / directory).write_text("x")
            orphans.append((directory, f"unaccounted: {directory}: not a guest directory; "
                            "no spec builds it"))
        elif kind == 8:   # a symlink to a guest directory
            os.symlink(f"g{i - 1:05d}", tmp_path / directory)
            orphans.append((directory, f"unaccounted: {directory}: not a guest directory; "
                            "no spec builds it"))
        elif kind == 9:   # no manifest
            os.makedirs(tmp_path / directory)
            orphans.append((directory, f"unaccounted: {directory}: no manifest.json; no spec "
                            "accounts for its files"))
        elif kind == 10:   # a manifest that is a symlink
            os.makedirs(tmp_path / directory)
            os.symlink(f"../g{i - 1:05d}/manifest.json", tmp_path / directory / "manifest.json")
            orphans.append((directory, f"unaccounted: {directory}: no manifest.json; no spec "
                            "accounts for its files"))
        elif kind == 11:   # a spec that is gone
            _manifest(tmp_path / directory, f"specs/gone-{i}.toml")
            orphans.append((directory, f"orphan: {directory}: its spec specs/gone-{i}.toml is gone"))
        else:
            spec = f"specs/{name}.toml"
            (tmp_path / spec).write_text("")
            targets = ("libvirt",) if kind == 12 else ("shell", "systemd")
            bases = ("specs/bases/b.toml",) if kind == 13 else ()
            _manifest(tmp_path / directory, spec, targets, bases)
            found.append((spec, targets, directory, [str(tmp_path / b) for b in bases]))
    return found, orphans


@pytest.mark.parametrize("jobs", [None, 1, 2, 3])
def test_a_large_output_directory_is_read_by_every_core_as_by_one(tmp_path, monkeypatch, jobs):
    count = drift.DISCOVER_PARALLEL + 237
    found, orphans = _output_directory(tmp_path, count)
    (tmp_path / ".git").mkdir()   # the repository whose root manifests' paths are relative to
    monkeypatch.chdir(tmp_path)
    got_found, got_orphans = drift.discover("out", jobs)
    assert got_found == found
    assert [(o.path, o.detail) for o in got_orphans] == orphans
    assert {o.kind for o in got_orphans} == {"orphan"}


def test_spec_paths_are_relative_to_the_working_directory_wherever_it_is(tmp_path, monkeypatch):
    """Manifests name specs from the repository's root; check --all, run in a
    subdirectory or outside the repository, lists them from where it runs."""
    found, _orphans = _output_directory(tmp_path, 60)
    (tmp_path / ".git").mkdir()
    for where, prefix in ((tmp_path / "specs", ""), (tmp_path / "specs" / "bases", "../"),
                          (tmp_path.parent, f"{tmp_path.name}/specs/")):
        monkeypatch.chdir(where)
        root = os.path.relpath(tmp_path / "out")
        got, _orphans = drift.discover(root)
        assert [spec for spec, *_rest in got] == [
            prefix + spec[len("specs/"):] for spec, *_rest in found]

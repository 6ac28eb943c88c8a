"""Emit: write rendered artifacts atomically, with a manifest per guest.

Everything is rendered before this runs; a build that fails never gets here, so
the output directory stays exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Sequence

import cgsc

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GuestOutput:
    name: str
    mechanism: str
    spec_files: Sequence  # (path, sha256)
    artifacts: Sequence   # (target name, Artifact)
    warnings: Sequence[str]
    waivers: Sequence = ()   # (rule, reason)
    diagnostics: Sequence = ()   # the warnings as Diagnostics, for reports
    locate: object = None        # key path -> file:line in the spec
    requires: object = None      # target -> minimum {"qemu", "libvirt"} versions (cgsc.hostcheck)
    machine: str = ""            # the QEMU machine type, for the floating-machine note


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest(out: GuestOutput) -> str:
    doc = {
        "cgsc": cgsc.__version__,
        "guest": out.name,
        "mechanism": out.mechanism,
        "spec": [{"path": p, "sha256": h} for p, h in out.spec_files],
        "artifacts": [{"file": a.filename, "target": t, "mode": f"{a.mode:04o}",
                       "sha256": sha256(a.content), "requires": (out.requires or {}).get(t, {})}
                      for t, a in out.artifacts],
        "warnings": list(out.warnings),
        "waivers": [{"rule": r, "reason": why} for r, why in out.waivers],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def files_for(out: GuestOutput) -> Dict[str, tuple]:
    """filename -> (content, mode), manifest included."""
    files = {a.filename: (a.content, a.mode) for _t, a in out.artifacts}
    files[MANIFEST] = (manifest(out), 0o644)
    return files


class WriteError(Exception):
    """The output directory cannot take the artifacts (permissions, a file in the way...)."""


def _stage(path: str, content: str, mode: int) -> str:
    """Write content to a temporary file beside `path`; returns the temporary's path."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(content)
        os.chmod(tmp, mode)
    except BaseException:
        _discard([tmp])
        raise
    return tmp


def _discard(paths) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _previous_files(directory: str) -> List[str]:
    try:
        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as fh:
            return [a["file"] for a in json.load(fh).get("artifacts", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _makedirs(directory: str) -> List[str]:
    """os.makedirs that returns the directories it created, outermost first."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path)
    return list(reversed(missing))


def write_all(root: str, outputs: Sequence[GuestOutput]) -> None:
    """Write every guest's directory in two phases: stage every file as a temporary beside
    its destination (any failure removes them all and changes nothing), then rename each
    into place. Artifacts that a guest's previous manifest listed and this build no longer
    makes are removed."""
    staged: List[tuple] = []     # (temporary, destination)
    stale: List[str] = []
    created: List[str] = []      # directories this build made, removed again on failure
    try:
        for out in outputs:
            directory = os.path.join(root, out.name)
            created += _makedirs(directory)
            files = files_for(out)
            stale += [os.path.join(directory, f) for f in _previous_files(directory)
                      if f not in files and os.path.basename(f) == f]
            for name, (content, mode) in files.items():
                path = os.path.join(directory, name)
                staged.append((_stage(path, content, mode), path))
    except OSError as exc:
        _discard(tmp for tmp, _dest in staged)
        for directory in reversed(created):
            try:
                os.rmdir(directory)
            except OSError:
                pass
        raise WriteError(f"cannot write under {root}: {exc.strerror or exc}"
                         + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")) from exc
    for tmp, dest in staged:
        os.replace(tmp, dest)
    _discard(stale)

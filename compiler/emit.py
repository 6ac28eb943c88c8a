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


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest(out: GuestOutput) -> str:
    doc = {
        "cgsc": cgsc.__version__,
        "guest": out.name,
        "mechanism": out.mechanism,
        "spec": [{"path": p, "sha256": h} for p, h in out.spec_files],
        "artifacts": [{"file": a.filename, "target": t, "mode": f"{a.mode:04o}",
                       "sha256": sha256(a.content)} for t, a in out.artifacts],
        "warnings": list(out.warnings),
        "waivers": [{"rule": r, "reason": why} for r, why in out.waivers],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def files_for(out: GuestOutput) -> Dict[str, tuple]:
    """filename -> (content, mode), manifest included."""
    files = {a.filename: (a.content, a.mode) for _t, a in out.artifacts}
    files[MANIFEST] = (manifest(out), 0o644)
    return files


def write_atomic(path: str, content: str, mode: int) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _previous_files(directory: str) -> List[str]:
    try:
        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as fh:
            return [a["file"] for a in json.load(fh).get("artifacts", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def write_guest(root: str, out: GuestOutput) -> List[str]:
    """Write one guest's directory; returns the paths written. Drops artifacts that the
    previous manifest listed and this build no longer makes."""
    directory = os.path.join(root, out.name)
    os.makedirs(directory, exist_ok=True)
    files = files_for(out)
    previous = _previous_files(directory)
    written = []
    for name, (content, mode) in files.items():
        path = os.path.join(directory, name)
        write_atomic(path, content, mode)
        written.append(path)
    for stale in previous:
        if stale not in files and os.path.basename(stale) == stale:
            try:
                os.unlink(os.path.join(directory, stale))
            except FileNotFoundError:
                pass
    return written

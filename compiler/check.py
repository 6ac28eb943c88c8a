"""`cgsc check`: rebuild in memory and compare with what is on disk. Never writes."""

from __future__ import annotations

import difflib
import os
import stat
from typing import List, NamedTuple

from cgsc.emit import GuestOutput, files_for
from cgsc.rules import Rule

DRIFT = Rule(
    "CGS-CHECK-001", "a committed artifact differs from what its spec builds",
    "Deployment pipelines consume the committed artifacts; when they drift from the "
    "reviewed spec, the guest that launches is not the one that was reviewed.",
    "cgsc check", fix="Run `cgsc build` on the spec and commit the result.")


class Drift(NamedTuple):
    path: str        # the artifact's path on disk
    kind: str        # "changed", "missing", "extra", "mode"
    detail: str      # a unified diff, or a one-line description


def compare(root: str, out: GuestOutput) -> List[Drift]:
    directory = os.path.join(root, out.name)
    expected = files_for(out)
    drifts: List[Drift] = []
    for name, (content, mode) in sorted(expected.items()):
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                actual = fh.read()
            actual_mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            drifts.append(Drift(path, "missing", f"missing: {path}"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            drifts.append(Drift(path, "changed", f"unreadable: {path} ({exc})"))
            continue
        if actual != content:
            diff = difflib.unified_diff(actual.splitlines(keepends=True),
                                        content.splitlines(keepends=True),
                                        fromfile=f"{path} (on disk)", tofile=f"{path} (from spec)")
            drifts.append(Drift(path, "changed", _measurement_lines(name, actual, content)
                                + "".join(diff)))
        elif actual_mode != mode:
            drifts.append(Drift(path, "mode", f"mode {actual_mode:04o}, expected {mode:04o}: {path}"))
    if os.path.isdir(directory):
        for name in sorted(set(os.listdir(directory)) - set(expected)):
            path = os.path.join(directory, name)
            drifts.append(Drift(path, "extra", f"extra: {path}"))
    return drifts


def _measurement_lines(name: str, actual: str, expected: str) -> str:
    """For a changed manifest: the launch measurement change as readable lines."""
    import json

    from cgsc.attestation import digest_change
    from cgsc.emit import MANIFEST
    if name != MANIFEST:
        return ""
    try:
        old = json.loads(actual).get("attestation")
    except (ValueError, AttributeError):
        old = None
    lines = digest_change(old, json.loads(expected).get("attestation"))
    return "".join(line + "\n" for line in lines)

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
    kind: str        # "changed", "missing", "extra", "mode", "pending"
    detail: str      # a unified diff, or a one-line description


def finding(out: GuestOutput, drift: Drift):
    """A drift as a diagnostic located at the spec's [guest] name."""
    return out.locate(DRIFT.error(("guest", "name"), f"{drift.path}: {drift.kind}; run `cgsc build`",
                                  "commit what `cgsc build` writes"))


def compare(root: str, out: GuestOutput, pending: bool = False) -> List[Drift]:
    directory = os.path.join(root, out.name)
    expected = files_for(out)
    drifts: List[Drift] = []
    if pending:  # outdir.py: a committed build was interrupted; its files are half installed
        drifts.append(Drift(directory, "pending", f"interrupted build not yet finished: "
                            f"{directory} (the next `cgsc build` completes it)"))
    if os.path.islink(directory):  # never read through a symlink cgsc does not write through
        return drifts + [Drift(directory, "changed", f"a symlink, not cgsc's output: {directory}")]
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
            drifts.append(Drift(path, "changed", "".join(diff)))
        elif actual_mode != mode:
            drifts.append(Drift(path, "mode", f"mode {actual_mode:04o}, expected {mode:04o}: {path}"))
    if os.path.isdir(directory):
        for name in sorted(set(os.listdir(directory)) - set(expected)):
            path = os.path.join(directory, name)
            drifts.append(Drift(path, "extra", f"extra: {path}"))
    return drifts

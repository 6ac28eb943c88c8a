"""What `cgsc check` says about drift: each problem once, and the one command that fixes it.

A stale guest is one finding (CGS-CHECK-001, at its spec's [guest] name) listing its stale
artifacts; a directory no spec builds is one finding (CGS-CHECK-002). In text, the hints
are replaced by a summary that ends with the command to run; the unified diffs of changed
artifacts are printed only when asked for (`--diff`), since a two-line change to a base
shared by many guests is hundreds of lines of diff.
"""

from __future__ import annotations

import shlex
from typing import List, Sequence, Tuple

from ..core.diagnostics import Diagnostic
from ..output.drift import DRIFT, ORPHAN, Drift

SHOWN = 10   # spec paths a fix command lists before it stops being worth printing whole

PRUNE_HINT = ("if it should go: `cgsc build --prune` with every spec of the fleet removes the "
              "guest directories cgsc made that no spec builds any more; or restore its spec")
BY_HAND = ("cgsc did not make it (or cannot tell): remove it by hand if nothing needs it "
           "(`git rm -r`), or move it out of the output directory")


def orphan(drift: Drift) -> Diagnostic:
    """CGS-CHECK-002 for an entry of the output directory that no spec accounts for."""
    ours = drift.detail.startswith("orphan:")   # a guest directory with cgsc's manifest
    return ORPHAN.error((), drift.detail.split(": ", 2)[-1],
                        PRUNE_HINT if ours else BY_HAND).located(drift.path, 0)


def _command(words: Sequence[str], specs: Sequence[str], what: str) -> str:
    if not specs:
        return " ".join(shlex.quote(w) for w in words) + f" SPEC... ({what})"
    if len(specs) <= SHOWN:
        return " ".join(shlex.quote(w) for w in list(words) + list(specs))
    return " ".join(shlex.quote(w) for w in words) + f" SPEC... ({what}: {len(specs)} specs)"


def text(findings: Sequence[Diagnostic], results, orphans: Sequence[Drift], root: str,
         diffs: bool) -> Tuple[str, List[Diagnostic], List[str]]:
    """`cgsc check` in text: (stdout: a changed launch measurement in readable lines, and
    the unified diffs when asked for; the findings, each once, the hints of drift findings
    left to the summary's fix line; the summary lines). `results`: each checked guest's
    fleet.Result."""
    stale = [r for r in results if r.drifts]
    shown = [detail if diffs else note for r in stale for _path, _kind, detail, note in r.drifts]
    out = "".join(text if text.endswith("\n") else text + "\n" for text in shown if text)
    quiet = {DRIFT.id, ORPHAN.id}
    lines = summary([r.path for r in stale], sum(len(r.drifts) for r in stale), orphans,
                    len(results), [r.path for r in results], root, not diffs)
    return out, [d.hinted("") if d.rule in quiet else d for d in findings], lines


def summary(stale: Sequence[str], artifacts: int, orphans: Sequence[Drift], checked: int,
            everything: Sequence[str], root: str, diffs: bool) -> List[str]:
    """The closing lines of `cgsc check` in text. `stale`: the spec of each stale guest;
    `artifacts`: how many of their artifacts are; `everything`: every spec checked (the
    fleet, with --all); `diffs`: unified diffs were left out (no --diff)."""
    if not stale and not orphans:
        return [f"cgsc: {checked} guest(s) up to date"]
    said = []
    if stale:
        said.append(f"{len(stale)} guest{'s' if len(stale) != 1 else ''} out of date "
                    f"({artifacts} artifact{'s' if artifacts != 1 else ''})")
    if orphans:
        said.append(f"{len(orphans)} entr{'ies' if len(orphans) != 1 else 'y'} of {root}/ "
                    "that no spec builds")
    lines = ["cgsc: " + "; ".join(said)]
    prunable = [d for d in orphans if d.detail.startswith("orphan:")]
    out = ["-o", root]
    if prunable:
        fix = _command(["cgsc", "build", "--prune", *out], everything, "every spec of the fleet")
        lines.append(f"cgsc: fix: {fix} && git add -A {shlex.quote(root)}")
    elif stale:
        fix = _command(["cgsc", "build", *out], stale, "the specs above")
        lines.append(f"cgsc: fix: {fix} && git add {shlex.quote(root)}")
    if len(prunable) < len(orphans):
        lines.append("cgsc: what cgsc did not make under the output directory, it never removes: "
                     "see each CGS-CHECK-002 above")
    if diffs and stale:
        lines.append("cgsc: the full diff of each changed artifact: the same command with --diff")
    return lines

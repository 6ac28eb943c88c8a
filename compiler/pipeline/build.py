"""Build: compile specs, pick targets, render every artifact in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

from .. import targets
from ..core.diagnostics import ERROR, Diagnostic, SpecError, once
from ..core.rules import Rule
from ..host.compat import requirements
from ..spec.base import AbstractSpec
from .compile import Compiled, compile_spec
from .conflicts import Claim, Owner, Where, check, claims

# The manifest's `target` of the reference-value files ([attestation]): written for every
# build of a guest whose measurement is predicted, whichever targets are built.
REFERENCE_VALUES = "reference-values"
UNKNOWN_TARGET = Rule("CGS-TARGET-001", "unknown target",
                      "A target named in [targets] build or with --target is not installed.",
                      "the cgsc.targets entry-point group (docs/api.md)",
                      fix="Use an installed target (`cgsc targets` lists them).")

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
    skipped: Sequence = ()       # (target, rule, reason): targets a default build left out
    attestation: object = None   # LaunchPlan.attestation: reference values ([measurement])
    requires: object = None      # target -> minimum {"qemu", "libvirt"} versions (cgsc.host.compat)
    machine: str = ""            # the QEMU machine type, for the floating-machine note
    installed: Sequence = ()     # (file name, build.Where): artifacts installed under a
    #                              host-wide name (a systemd unit), and the key that names it
    spec: str = ""               # the spec path, as given
    host: str = ""               # [guest] host: the guests it shares a host with
    claims: Sequence = ()        # conflicts.claims: what it takes on its host
    reads: object = None         # compile.Reads: every file the compile read


def choose_targets(compiled: Compiled, requested: Sequence[str]):
    """(name, target) pairs to build, and the diagnostics of targets that cannot."""
    plan = compiled.plan
    explicit = list(requested) or list(compiled.build_targets or ())
    errors: List[Diagnostic] = []
    chosen = []
    if explicit:
        for i, name in enumerate(explicit):
            target = targets.get(name)
            path = ("targets", "build", i) if not requested else ("targets",)
            if target is None:
                errors.append(UNKNOWN_TARGET.error(
                    path, f"no target named {name!r}",
                    "installed targets: " + ", ".join(targets.available())))
                continue
            why = targets.refusals(target, plan)
            if why:
                errors.extend(why)
            elif (name, target) not in chosen:
                chosen.append((name, target))
    else:
        for name in targets.BUILTIN:
            target = targets.get(name)
            if not targets.refusals(target, plan):
                chosen.append((name, target))
    return chosen, errors


def skipped_targets(compiled: Compiled, requested: Sequence[str]) -> List[tuple]:
    """(target, rule ID, reason) of every built-in target a default build leaves out
    because it cannot express the spec; empty when targets are named."""
    if list(requested) or compiled.build_targets:
        return []
    out = []
    for name in targets.BUILTIN:
        why = targets.refusals(targets.get(name), compiled.plan)
        if why:
            out.append((name, why[0].rule, why[0].message))
    return out


def build_one(path: str, requested: Sequence[str] = (), host=None, strict: bool = False):
    """Compile and render one spec (checked against a host profile when given):
    (GuestOutput, []), (None, its diagnostics), or (None, []) for an abstract base, which
    is no guest. `strict` (or `strict = true` in the spec): unwaived warnings are errors."""
    try:
        compiled = compile_spec(path, host, targets=tuple(requested) or None)
    except SpecError as exc:
        return None, list(exc.diagnostics)
    except AbstractSpec:
        return None, []
    if (strict or compiled.strict) and compiled.warnings:
        return None, strictly(compiled, strict)
    plan = compiled.plan
    chosen, errors = choose_targets(compiled, requested)
    if errors:
        return None, [compiled.locate(d) for d in errors]
    artifacts = [(name, a) for name, target in chosen for a in target.render(plan)]
    artifacts += [(REFERENCE_VALUES, targets.Artifact(file, text))
                  for file, text in plan.references]
    named = compiled.data.get("targets", {}).get("systemd", {}).get("unit-name")
    unit_key = ("targets", "systemd", "unit-name") if named else ("guest", "name")
    installed = tuple((a.filename, Where(path, unit_key)) for name, a in artifacts if name == "systemd")
    on_host = any(name != "kubevirt" for name, _target in chosen)   # KubeVirt: pods, not a host
    return GuestOutput(plan.name, plan.confidential.mechanism, plan.spec_files,
                       artifacts, plan.warnings, plan.waivers, compiled.warnings,
                       compiled.locate,
                       skipped=tuple(skipped_targets(compiled, requested)),
                       attestation=plan.attestation,
                       requires=requirements(plan, [n for n, _t in chosen]),
                       machine=plan.machine, installed=installed, spec=path,
                       host=compiled.data["guest"].get("host", ""),
                       claims=claims(plan, compiled.data, installed, on_host),
                       reads=compiled.reads), []


def strictly(compiled: Compiled, flag: bool) -> List[Diagnostic]:
    """A strict build's errors: each unwaived warning, saying why it fails and how to accept
    it on record instead."""
    if flag:
        why = "--strict"
    else:
        at = compiled.locate(Diagnostic("", ("strict",), ""))
        why = f"strict = true, {at.file}:{at.line}" if at.line else "strict = true"
    return [Diagnostic(d.rule, d.path, f"{d.message} (a warning; fails under {why})",
                       (d.hint + "; " if d.hint else "") + f"or accept it on record: [waive] "
                       f'"{d.rule}" = "<reason>"', ERROR, d.file, d.line, d.column)
            for d in compiled.warnings]


def locator(where: Where):
    """A function that places a diagnostic at `where`: file, line, column."""
    at = where.located()
    return lambda d: d.located(at.file, at.line, at.column)


def owner(out: GuestOutput) -> Owner:
    """A built guest, for conflicts.Registry."""
    return Owner(out.spec, out.name, out.host, tuple(Claim._make(c) for c in out.claims))


def conflicts(built) -> List[tuple]:
    """(spec, error) for every guest of [GuestOutput] that claims what an earlier one
    holds: a name, a systemd unit, a host port, a file... (cgsc.pipeline.conflicts)."""
    return check((i, owner(out)) for i, out in enumerate(built))


def build(paths: Sequence[str], requested: Sequence[str] = (), host=None,
          strict: bool = False) -> List[GuestOutput]:
    """Compile and render every spec in memory (abstract bases are checked, and left out);
    raises SpecError carrying every diagnostic of every spec. (Writing a fleet streams
    instead: cgsc.output.fleet.)"""
    from ..core.filecache import session
    with session():   # each boot file read once for all of them
        return _build(paths, requested, host, strict)


def _build(paths: Sequence[str], requested: Sequence[str], host, strict: bool) -> List[GuestOutput]:
    outputs: List[GuestOutput] = []
    problems: List[tuple] = []
    for path in paths:
        out, errors = build_one(path, requested, host, strict)
        if errors:
            problems += [(path, d) for d in errors]
        elif out is not None:
            outputs.append(out)
    problems += conflicts(outputs)
    if problems:
        raise SpecError(once(problems))
    return outputs

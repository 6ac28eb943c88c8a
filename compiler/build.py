"""Build: compile specs, pick targets, render every artifact in memory."""

from __future__ import annotations

from typing import List, Sequence

from cgsc import targets
from cgsc.compile import Compiled, compile_spec
from cgsc.diagnostics import Diagnostic, SpecError
from cgsc.emit import GuestOutput
from cgsc.hostcheck import requirements
from cgsc.rules import Rule

UNKNOWN_TARGET = Rule("CGS-TARGET-001", "unknown target",
                      "A target named in [targets] build or with --target is not installed.",
                      fix="Use an installed target (`cgsc targets` lists them).")
DUPLICATE_NAME = Rule("CGS-TARGET-002", "two specs in one build have the same guest name",
                      "Their artifacts would overwrite each other in out/<name>/.",
                      fix="Give every guest its own [guest] name.")


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


def build_one(path: str, requested: Sequence[str] = (), host=None):
    """Compile and render one spec (checked against a host profile when given):
    (GuestOutput, []) or (None, its diagnostics)."""
    try:
        compiled = compile_spec(path, host)
    except SpecError as exc:
        return None, list(exc.diagnostics)
    plan = compiled.plan
    chosen, errors = choose_targets(compiled, requested)
    if errors:
        return None, [compiled.locate(d) for d in errors]
    artifacts = [(name, a) for name, target in chosen for a in target.render(plan)]
    return GuestOutput(plan.name, plan.confidential.mechanism, plan.spec_files,
                       artifacts, plan.warnings, plan.waivers, compiled.warnings,
                       compiled.locate,
                       skipped=tuple(skipped_targets(compiled, requested)),
                       attestation=plan.attestation,
                       requires=requirements(plan, [n for n, _t in chosen]),
                       machine=plan.machine), []


def duplicate(name: str, first_path: str, locate) -> Diagnostic:
    return locate(DUPLICATE_NAME.error(
        ("guest", "name"), f"{name!r} is also built from {first_path}",
        "give every guest its own name"))


def duplicate_names(built) -> List[Diagnostic]:
    """A duplicate() error for every guest of [(spec path, GuestOutput)] whose name an
    earlier one already has: their artifacts would overwrite each other."""
    first, out = {}, []
    for path, output in built:
        if output.name in first:
            out.append(duplicate(output.name, first[output.name], output.locate))
        else:
            first[output.name] = path
    return out


def build(paths: Sequence[str], requested: Sequence[str] = (), host=None) -> List[GuestOutput]:
    """Compile and render every spec in memory; raises SpecError carrying every diagnostic
    of every spec. (Writing a fleet streams instead: fleet.py.)"""
    outputs: List[GuestOutput] = []
    problems: List[Diagnostic] = []
    names = {}
    for path in paths:
        out, errors = build_one(path, requested, host)
        if errors:
            problems.extend(errors)
            continue
        if out.name in names:
            problems.append(duplicate(out.name, names[out.name], out.locate))
            continue
        names[out.name] = path
        outputs.append(out)
    if problems:
        raise SpecError(problems)
    return outputs

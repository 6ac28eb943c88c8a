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
            why = target.unsupported(plan)
            if why is not None:
                errors.append(why)
            elif (name, target) not in chosen:
                chosen.append((name, target))
    else:
        for name in targets.BUILTIN:
            target = targets.get(name)
            if target.unsupported(plan) is None:
                chosen.append((name, target))
    return chosen, errors


def build(paths: Sequence[str], requested: Sequence[str] = (), host=None) -> List[GuestOutput]:
    """Compile and render every spec; raises SpecError carrying every diagnostic of every spec."""
    outputs: List[GuestOutput] = []
    problems: List[Diagnostic] = []
    names = {}
    for path in paths:
        try:
            compiled = compile_spec(path, host) if host else compile_spec(path)
        except SpecError as exc:
            problems.extend(exc.diagnostics)
            continue
        plan = compiled.plan
        chosen, errors = choose_targets(compiled, requested)
        if errors:
            problems.extend(compiled.locate(d) for d in errors)
            continue
        if plan.name in names:
            problems.append(compiled.locate(DUPLICATE_NAME.error(
                ("guest", "name"), f"{plan.name!r} is also built from {names[plan.name]}",
                "give every guest its own name")))
            continue
        names[plan.name] = path
        artifacts = [(name, a) for name, target in chosen for a in target.render(plan)]
        outputs.append(GuestOutput(plan.name, plan.confidential.mechanism, plan.spec_files,
                                   artifacts, plan.warnings, plan.waivers, compiled.warnings,
                                   compiled.locate, requirements(plan, [n for n, _t in chosen]),
                                   plan.machine))
    if problems:
        raise SpecError(problems)
    return outputs



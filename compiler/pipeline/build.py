"""Build: compile specs, pick targets, render every artifact in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Sequence

from .. import targets
from ..core.diagnostics import Diagnostic, SpecError
from ..core.rules import Rule
from ..host.compat import requirements
from .compile import Compiled, compile_spec

# The manifest's `target` of the reference-value files ([attestation]): written for every
# build of a guest whose measurement is predicted, whichever targets are built.
REFERENCE_VALUES = "reference-values"
UNKNOWN_TARGET = Rule("CGS-TARGET-001", "unknown target",
                      "A target named in [targets] build or with --target is not installed.",
                      fix="Use an installed target (`cgsc targets` lists them).")
DUPLICATE_NAME = Rule("CGS-TARGET-002", "two specs in one build have the same guest name",
                      "Their artifacts would overwrite each other in out/<name>/.",
                      fix="Give every guest its own [guest] name.")
DUPLICATE_UNIT = Rule(
    "CGS-TARGET-003", "two guests in one build install the same systemd unit",
    "Units are installed under one name in /etc/systemd/system/: the second unit file would "
    "replace the first, so one guest would start with the other's command line and the "
    "other never.",
    fix="Give each guest its own [targets.systemd] unit-name (the default is <name>.service).")


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


def build_one(path: str, requested: Sequence[str] = (), host=None):
    """Compile and render one spec (checked against a host profile when given):
    (GuestOutput, []) or (None, its diagnostics)."""
    try:
        compiled = compile_spec(path, host, targets=tuple(requested) or None)
    except SpecError as exc:
        return None, list(exc.diagnostics)
    plan = compiled.plan
    chosen, errors = choose_targets(compiled, requested)
    if errors:
        return None, [compiled.locate(d) for d in errors]
    artifacts = [(name, a) for name, target in chosen for a in target.render(plan)]
    artifacts += [(REFERENCE_VALUES, targets.Artifact(file, text))
                  for file, text in plan.references]
    named = compiled.data.get("targets", {}).get("systemd", {}).get("unit-name")
    unit_key = ("targets", "systemd", "unit-name") if named else ("guest", "name")
    return GuestOutput(plan.name, plan.confidential.mechanism, plan.spec_files,
                       artifacts, plan.warnings, plan.waivers, compiled.warnings,
                       compiled.locate,
                       skipped=tuple(skipped_targets(compiled, requested)),
                       attestation=plan.attestation,
                       requires=requirements(plan, [n for n, _t in chosen]),
                       machine=plan.machine,
                       installed=tuple((a.filename, Where(path, unit_key))
                                       for name, a in artifacts if name == "systemd"),
                       reads=compiled.reads), []


class Where(NamedTuple):
    """A key of a spec, placed at its file and line only when a message needs it: the line
    index of a spec costs more to build than compiling it, and a fleet needs it for
    almost none of its specs."""
    spec: str
    key: tuple

    def located(self) -> Diagnostic:
        from ..spec.source import load
        try:
            return load(self.spec).locate(Diagnostic("", self.key, ""))
        except SpecError:  # the file changed under the build: its name is still right
            return Diagnostic("", self.key, "").located(self.spec, 0)


def claim(claimed: dict, path: str, name: str, installed) -> List[Diagnostic]:
    """Record a guest of one build (its spec path, name and GuestOutput.installed files)
    in `claimed`; errors, and nothing recorded, when an earlier guest has the name or one
    of the files: their artifacts would overwrite each other."""
    if name in claimed:
        return [duplicate(name, claimed[name], locator(Where(path, ("guest", "name"))))]
    problems = []
    for f, where in installed:
        other = claimed.get(("installed", f))   # the name of the guest that installs it
        if other is not None:
            at = where.located()
            problems.append(DUPLICATE_UNIT.error(
                at.path, f"{f!r} is also installed by guest {other!r} (from {claimed[other]})",
                "give each guest its own unit-name").located(at.file, at.line, at.column))
    if not problems:
        claimed[name] = path
        claimed.update({("installed", f): name for f, _at_ in installed})
    return problems


def locator(where: Where):
    """A function that places a diagnostic at `where`: file, line, column."""
    at = where.located()
    return lambda d: d.located(at.file, at.line, at.column)


def duplicate(name: str, first_path: str, locate) -> Diagnostic:
    return locate(DUPLICATE_NAME.error(
        ("guest", "name"), f"{name!r} is also built from {first_path}",
        "give every guest its own name"))


def duplicate_names(built) -> List[Diagnostic]:
    """An error for every guest of [(spec path, GuestOutput)] whose name or installed
    systemd unit an earlier one already has: their artifacts would overwrite each other."""
    claimed, out = {}, []
    for path, output in built:
        out += claim(claimed, path, output.name, output.installed)
    return out


def build(paths: Sequence[str], requested: Sequence[str] = (), host=None) -> List[GuestOutput]:
    """Compile and render every spec in memory; raises SpecError carrying every diagnostic
    of every spec. (Writing a fleet streams instead: cgsc.output.fleet.)"""
    from ..core.filecache import session
    with session():   # each boot file read once for all of them
        return _build(paths, requested, host)


def _build(paths: Sequence[str], requested: Sequence[str], host) -> List[GuestOutput]:
    outputs: List[GuestOutput] = []
    problems: List[Diagnostic] = []
    claimed = {}
    for path in paths:
        out, errors = build_one(path, requested, host)
        if errors:
            problems.extend(errors)
            continue
        clash = claim(claimed, path, out.name, out.installed)
        if clash:
            problems.extend(clash)
            continue
        outputs.append(out)
    if problems:
        raise SpecError(problems)
    return outputs

"""The pipeline: load -> validate -> normalize -> check -> lower. Pure; writes nothing."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional, Tuple

from ..core.diagnostics import ERROR, Diagnostic, SpecError, error, printable
from ..lower.guest_rules import check
from ..lower.limits import argv_problems
from ..lower.lowering import lower
from ..lower.plan import LaunchPlan
from ..spec.base import AbstractSpec, base_problems
from ..spec.model import normalize
from ..spec.paths import directory_of
from ..spec.source import load
from ..spec.validate import schema_errors
from ..spec.waivers import apply


@dataclass(frozen=True)
class Compiled:
    plan: LaunchPlan
    warnings: Tuple[Diagnostic, ...]
    waived: Tuple[Tuple[Diagnostic, str], ...]      # accepted warnings and their reasons
    build_targets: Optional[Tuple[str, ...]]   # [targets] build, when the spec says
    locate: Callable[[Diagnostic], Diagnostic]  # key path -> file:line in this spec
    data: dict                                  # the merged spec, for reports
    strict: bool = False                        # `strict = true`: its warnings fail gates
    reads: Optional["Reads"] = None             # every file the compile read (output/cache.py)


class Reads(NamedTuple):
    """What a compile read, for a cache to know when its result still holds: each file as
    opened, with the sha256 of the bytes used; the real path of each spec file and the
    spec's root (the recorded paths follow from them)."""
    files: Tuple[Tuple[str, str], ...]    # (path as opened, sha256): specs, then boot files
    reals: Tuple[Tuple[str, str], ...]    # (spec or base as opened, its real path)
    root: str


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[:len(b)] == b or b[:len(a)] == a


def _rules_despite_schema_errors(data: dict, errors: List[Diagnostic]) -> List[Diagnostic]:
    """Cross-field errors of a spec that also has schema errors, so that one run reports
    everything: only rules about keys the schema accepted, and only when the data can be
    normalized at all."""
    try:
        guest = normalize(data)
        found = check(guest) + _measure_rules(guest)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return []  # too broken to read as a guest: the schema errors say what to fix
    bad = [d.path for d in errors]
    return [d for d in found if d.severity == ERROR and not any(_overlaps(d.path, p) for p in bad)]


def compile_spec(path: str, host: Optional[dict] = None,
                 boot_dir: Optional[Callable[[str, str], str]] = None,
                 targets: Optional[Tuple[str, ...]] = None) -> Compiled:
    """Compile one spec file into a launch plan; raises SpecError with every diagnostic.
    With a host profile (cgsc.host.profile), the floating machine type is pinned to the one
    that host's QEMU resolves it to, and the plan is checked against the host.
    `boot_dir(directory, given)`: where a relative [measurement] path `given`, written in a
    spec file in `directory`, is read from, when not that directory (a spec materialized
    elsewhere: `cgsc diff --base`).
    `targets`: what the caller builds (-t), for the host checks that concern one target
    (the libvirt domain); None: the spec's [targets] build, else the default set.
    An abstract base is checked as a base and raises AbstractSpec: it is no guest."""
    source = load(path)
    if source.abstract:
        problems = base_problems(source)
        if problems:
            raise SpecError(problems)
        raise AbstractSpec(path)
    errors = schema_errors(source.data)
    if errors:
        errors += _rules_despite_schema_errors(source.data, errors)
        raise SpecError(source.locate(d) for d in errors)

    guest = normalize(source.data)
    qemu_version = None
    if host is not None:
        from ..host.profile import pinned_machine, qemu_for
        guest = guest._replace(machine=pinned_machine(host, guest.arch, guest.machine) or guest.machine)
        qemu_version = (qemu_for(host, guest.arch) or {}).get("version")
    found, waived = apply(source.data.get("waive", {}), check(guest) + _measure_rules(guest))
    found = [source.locate(d) for d in found]
    waived = tuple((source.locate(d), reason) for d, reason in waived)
    if any(d.severity == ERROR for d in found):
        raise SpecError(found)
    # recorded paths never depend on the spelling or the working directory
    spec_files = [(source.recorded(f.path), f.sha256) for f in source.files]
    unrecordable = [_not_utf8(f.path, recorded)
                    for f, (recorded, _h) in zip(source.files, spec_files) if _SURROGATE(recorded)]
    if unrecordable:
        raise SpecError(unrecordable)
    measured = _measure(guest, source, boot_dir, host)
    if measured is not None:   # an ID block signed by cgsc joins the mechanism's table
        guest = guest._replace(confidential={**guest.confidential, **measured.config})
    binding = measured.binding if measured is not None else None
    # QEMU reads the bound boot files from the copies the launch checked, by descriptor
    opened = {f.what: f.opened for f in binding.files} if binding else None
    plan = lower(guest, spec_files[0][0], spec_files, opened, qemu_version)
    if measured is not None:
        plan = plan._replace(attestation=measured.attestation, binding=binding,
                             references=measured.references)
    too_long = argv_problems(_launched_words(plan), source.data)
    if too_long:
        raise SpecError(source.locate(d) for d in too_long)
    if host is not None:  # reported, never written into the artifacts
        from ..host.compat import check_host
        libvirt = _builds_libvirt(plan, targets or guest.build_targets)
        on_host = [source.locate(d) for d in check_host(plan, host, libvirt)]
        if any(d.severity == ERROR for d in on_host):
            raise SpecError(on_host + found)
    warnings = tuple(found)
    plan = plan._replace(warnings=tuple(d.located(source.recorded(d.file), d.line, d.column).render()
                                        if d.file else d.render() for d in warnings),
                         waivers=tuple((d.rule, reason) for d, reason in waived))
    if host is not None:
        warnings += tuple(on_host)
    reads = Reads(tuple((f.path, f.sha256) for f in source.files)
                  + (measured.inputs if measured is not None else ()),
                  tuple((f.path, f.real) for f in source.files), source.root)
    return Compiled(plan, warnings, waived, guest.build_targets, source.locate, source.data,
                    source.data.get("strict") is True, reads)


_SURROGATE = re.compile("[\ud800-\udfff]").search   # a byte of a name that is not UTF-8


def _not_utf8(path: str, recorded: str) -> Diagnostic:
    return error("CGS-LOAD-001", (), f"cannot use the spec: its path {printable(recorded)} is "
                 "not UTF-8, and the artifacts record it as UTF-8 text",
                 "rename the file (or the directory) to a UTF-8 name").located(path, 0)


def _launched_words(plan) -> list:
    """The longest argv a launch artifact execs: with a launch binding, the systemd unit
    runs the binding program with QEMU's argv after it."""
    if plan.binding is None:
        return plan.argv()
    from ..targets import verify
    return verify.exec_words(plan)


def _builds_libvirt(plan, named) -> bool:
    """Whether the build writes a libvirt domain: named in the targets, or (none named)
    the default build, which leaves libvirt out when it refuses the plan."""
    if named:
        return "libvirt" in named
    from .. import targets
    return not targets.refusals(targets.get("libvirt"), plan)


def _measure_rules(guest) -> list:
    """[measurement] and [attestation] rules that need no file, reported with the other
    cross-field rules."""
    if guest.measurement is None and guest.attestation_formats is None:
        return []
    from ..measure import reference_values, stage
    found = reference_values.static_checks(guest)
    return found + (stage.static_checks(guest) if guest.measurement is not None else [])


def _measure(guest, source, boot_dir=None, host=None):
    """The measure stage (only for a spec with [measurement]); raises SpecError."""
    if guest.measurement is None:
        return None
    from ..measure import stage

    def base_dir(key) -> str:   # a relative path is relative to the file that says it
        owner = source.owner.get(tuple(key))
        directory = directory_of(owner.path if owner else source.path)
        return boot_dir(directory, guest.measurement[key[-1]]) if boot_dir else directory

    measured, errors = stage.measure(guest, base_dir, host)
    if errors:
        raise SpecError(source.locate(d) for d in errors)
    return measured

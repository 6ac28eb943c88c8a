"""The pipeline: load -> validate -> normalize -> check -> lower. Pure; writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from cgsc.diagnostics import ERROR, Diagnostic, SpecError
from cgsc.plan import LaunchPlan


@dataclass(frozen=True)
class Compiled:
    plan: LaunchPlan
    warnings: Tuple[Diagnostic, ...]
    build_targets: Optional[Tuple[str, ...]]   # [targets] build, when the spec says
    locate: Callable[[Diagnostic], Diagnostic]  # key path -> file:line in this spec


def compile_spec(path: str) -> Compiled:
    """Compile one spec file into a launch plan; raises SpecError with every diagnostic."""
    from cgsc.source import load
    from cgsc.validate import schema_errors

    source = load(path)
    errors = schema_errors(source.data)
    if errors:
        raise SpecError(source.locate(d) for d in errors)

    from cgsc.checks import check
    from cgsc.lower import lower
    from cgsc.model import normalize

    guest = normalize(source.data)
    found: List[Diagnostic] = [source.locate(d) for d in check(guest)]
    if any(d.severity == ERROR for d in found):
        raise SpecError(found)
    spec_files = [(f.path, f.sha256) for f in source.files]
    plan = lower(guest, path, spec_files)
    warnings = tuple(found)
    plan = plan._replace(warnings=tuple(d.render() for d in warnings))
    return Compiled(plan, warnings, guest.build_targets, source.locate)

"""Targets turn a LaunchPlan into artifacts. Found through the `cgsc.targets` entry-point
group; the built-ins are registered there too, and also known here by name so a
build never pays for scanning installed distributions unless it asks for another target.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Union

from ..core.diagnostics import Diagnostic
from ..lower.plan import LaunchPlan

GROUP = "cgsc.targets"
BUILTIN = {"shell": "cgsc.targets.shell", "systemd": "cgsc.targets.systemd",
           "libvirt": "cgsc.targets.libvirt"}
# Shipped with cgsc but built only when a spec or -t asks for them (not in default builds).
OPT_IN = {"kubevirt": "cgsc.targets.kubevirt"}


@dataclass(frozen=True)
class Artifact:
    filename: str
    content: str
    mode: int = 0o644


class Target(Protocol):
    name: str
    summary: str

    def unsupported(self, plan: LaunchPlan) -> Union[None, Diagnostic, List[Diagnostic]]:
        """Why this target cannot express the plan: a rule-ID'd diagnostic, or a list of
        them when several things are wrong; None (or an empty list) when it can."""

    def render(self, plan: LaunchPlan) -> List[Artifact]:
        """The artifacts, rendered in memory."""


_loaded: Dict[str, Target] = {}


def _entry_points():
    from importlib.metadata import entry_points
    try:
        return list(entry_points(group=GROUP))
    except TypeError:  # Python < 3.10
        return list(entry_points().get(GROUP, []))


def get(name: str) -> Optional[Target]:
    if name not in _loaded:
        module = BUILTIN.get(name) or OPT_IN.get(name)
        if module:
            _loaded[name] = importlib.import_module(module).TARGET
        else:
            for ep in _entry_points():
                if ep.name == name:
                    _loaded[name] = ep.load()
                    break
            else:
                return None
    return _loaded[name]


def available() -> Dict[str, str]:
    """name -> summary of every installed target (built-ins first)."""
    shipped = list(BUILTIN) + list(OPT_IN)
    names = shipped + sorted({ep.name for ep in _entry_points()} - set(shipped))
    return {name: get(name).summary for name in names if get(name) is not None}


def refusals(target: Target, plan: LaunchPlan) -> List[Diagnostic]:
    """unsupported() as a list, whichever form the target returns; a target that launches
    on a host (every one whose `on_host` is not False) also refuses plan.host_refusals."""
    why = target.unsupported(plan)
    found = [] if why is None else [why] if isinstance(why, Diagnostic) else list(why)
    if getattr(target, "on_host", True):
        found = list(plan.host_refusals) + found
    return found

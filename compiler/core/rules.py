"""The rule catalogue: every check has a stable ID, a summary, an explanation and a fix.

Rules are defined where they are checked (mechanism modules, checks, targets);
`load_all` imports every such module so the catalogue is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from .diagnostics import Diagnostic, KeyPath, error, warning

CATALOGUE: Dict[str, "Rule"] = {}


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str
    explanation: str = ""     # why the rule exists and what breaks without it
    reference: str = ""       # the upstream fact behind it
    fix: str = ""
    severity: str = "error"   # "warning": legal but risky, and can be waived with a reason

    def __post_init__(self) -> None:
        if CATALOGUE.setdefault(self.id, self) is not self:
            raise ValueError(f"duplicate rule ID {self.id}")

    def error(self, path: KeyPath, message: str, hint: str = "") -> Diagnostic:
        return error(self.id, path, message, hint)

    def warning(self, path: KeyPath, message: str, hint: str = "") -> Diagnostic:
        return warning(self.id, path, message, hint)


# Modules that define rules beyond the mechanisms and targets (which have registries of
# their own): named, not imported, so this bottom layer imports no stage; `load_all`
# imports them when the whole catalogue is asked for.
RULE_MODULES = (
    "cgsc.spec.source", "cgsc.spec.validate", "cgsc.spec.waivers",
    "cgsc.lower.guest_rules", "cgsc.lower.confine", "cgsc.lower.runtime_rules",
    "cgsc.lower.kubevirt_rules", "cgsc.lower.limits",
    "cgsc.measure.stage", "cgsc.measure.reference_values", "cgsc.host.compat",
    "cgsc.pipeline.build", "cgsc.pipeline.conflicts", "cgsc.output.drift", "cgsc.review.verify",
)


def load_all() -> Dict[str, Rule]:
    """Import every module that defines rules, so the catalogue is complete. By name, like
    the mechanism and target registries, so that this bottom layer imports no stage."""
    import importlib
    for module in RULE_MODULES:
        importlib.import_module(module)
    mechanisms = importlib.import_module("cgsc.mechanisms").MECHANISMS
    for name in mechanisms:  # mechanism modules load lazily
        mechanisms[name]
    targets = importlib.import_module("cgsc.targets")
    for name in list(targets.BUILTIN) + list(targets.OPT_IN):
        targets.get(name)
    return CATALOGUE

"""Waivers: `[waive] "RULE-ID" = "reason"` accepts a risky-but-legal warning on record.

Only warnings can be waived; a waived warning still appears, with its reason, in
`cgsc explain`, the manifest and the artifacts' header comments.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from ..core.diagnostics import ERROR, WARNING, Diagnostic
from ..core.rules import CATALOGUE, Rule, load_all

BAD_WAIVER = Rule(
    "CGS-WAIVE-001", "a waiver names an unknown rule or an error",
    "Errors describe specs that cannot launch or are unsafe; they are never waivable. A "
    "waiver for a rule that does not exist is a typo that would hide nothing and mislead "
    "the reviewer.", "cgsc rules",
    fix="Waive only warnings, by their exact ID (`cgsc rules` lists them).")
UNUSED = Rule(
    "CGS-WAIVE-002", "a waiver matches no warning",
    "A stale waiver stays on record after the risk it accepted is gone, and would silently "
    "accept the risk again if it came back.", "cgsc rules",
    fix="Remove the waiver.", severity="warning")

Waived = Tuple[Diagnostic, str]


def apply(waivers: Dict[str, str], found: List[Diagnostic]) -> Tuple[List[Diagnostic], List[Waived]]:
    """(diagnostics that remain, waived warnings with their reasons)."""
    if not waivers:
        return found, []
    catalogue = load_all()
    remaining: List[Diagnostic] = []
    waived: List[Waived] = []
    fired = {d.rule for d in found if d.severity == WARNING}
    for rule_id in sorted(waivers):
        rule = catalogue.get(rule_id)
        if rule is None:
            remaining.append(BAD_WAIVER.error(("waive", rule_id), f"no rule {rule_id} exists",
                                              "`cgsc rules` lists every rule ID"))
        elif rule.severity == ERROR:
            remaining.append(BAD_WAIVER.error(("waive", rule_id),
                                              f"{rule_id} is an error; errors cannot be waived",
                                              f"fix what {rule_id} reports instead"))
        elif rule_id not in fired:
            remaining.append(UNUSED.warning(("waive", rule_id),
                                            f"waives {rule_id}, which this spec does not trigger",
                                            "remove the stale waiver"))
    for d in found:
        if d.severity == WARNING and d.rule in waivers and d.rule in CATALOGUE:
            waived.append((d, waivers[d.rule]))
        else:
            remaining.append(d)
    return remaining, waived

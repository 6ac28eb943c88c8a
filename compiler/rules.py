"""The rule catalogue: every check has a stable ID, a summary and an explanation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from cgsc.diagnostics import Diagnostic, KeyPath, error, warning

CATALOGUE: Dict[str, "Rule"] = {}


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str
    explanation: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        if CATALOGUE.setdefault(self.id, self) is not self:
            raise ValueError(f"duplicate rule ID {self.id}")

    def error(self, path: KeyPath, message: str, hint: str = "") -> Diagnostic:
        return error(self.id, path, message, hint)

    def warning(self, path: KeyPath, message: str, hint: str = "") -> Diagnostic:
        return warning(self.id, path, message, hint)


# Rules raised before a spec is even a dict (load stage) or by the schema.
Rule("CGS-LOAD-001", "the spec file cannot be read")
Rule("CGS-LOAD-002", "the spec file is not UTF-8")
Rule("CGS-LOAD-003", "TOML syntax error")
Rule("CGS-LOAD-004", "`extends` chain has a cycle")
Rule("CGS-LOAD-005", "`extends` names a file that does not exist")
Rule("CGS-SCHEMA-001", "unknown key (a misspelled key is never ignored)")
Rule("CGS-SCHEMA-002", "a required key is missing")
Rule("CGS-SCHEMA-003", "a value has the wrong type")
Rule("CGS-SCHEMA-004", "a value is out of range or not one of the allowed values")
Rule("CGS-SCHEMA-005", "[confidential] must hold exactly one mechanism table")
Rule("CGS-SPEC-001", "unsupported spec-version")

"""The rule catalogue: every check has a stable ID, a summary, an explanation and a fix.

Rules are defined where they are checked (mechanism modules, checks, targets);
`load_all` imports every such module so the catalogue is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from cgsc.diagnostics import Diagnostic, KeyPath, error, warning

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


# Rules raised before a spec is even a dict (load stage) or by the schema.
Rule("CGS-LOAD-001", "the spec file cannot be read",
     "cgsc reads every spec and base spec itself; nothing is built from a file it cannot read, "
     "nor from one whose path (as the artifacts record it) is not UTF-8: manifest.json, the "
     "unit and the domain XML are UTF-8 text.",
     fix="Check the path and the file's permissions; rename a file whose name is not UTF-8.")
Rule("CGS-LOAD-002", "the spec file is not UTF-8",
     "TOML documents are UTF-8 by definition; guessing another encoding could change paths "
     "and command lines silently.", "TOML v1.0.0",
     fix="Re-encode the file as UTF-8 (TOML requires it), e.g. `iconv -f latin1 -t utf-8`.")
Rule("CGS-LOAD-003", "TOML syntax error",
     "The file is not valid TOML, so no key in it can be trusted.", "TOML v1.0.0",
     fix="Fix the TOML at the line and column given; see https://toml.io/en/v1.0.0.")
Rule("CGS-LOAD-004", "`extends` chain has a cycle",
     "Base specs are merged from the root of the chain outwards; a cycle has no root.",
     "SPEC.md, extends",
     fix="Remove one `extends` so that the chain ends in a base spec.")
Rule("CGS-LOAD-005", "`extends` names a file that does not exist",
     "A guest built without its base would silently lose the base's settings (firmware, "
     "mechanism, policy).", "SPEC.md, extends",
     fix="`extends` is relative to the file that says it; fix the path or add the base spec.")
Rule("CGS-LOAD-006", "tables or arrays nested too deeply",
     "The spec language nests at most four levels; a spec nested hundreds deep is an attack "
     "on the parser (recursion), not a guest. cgsc refuses more than 32 levels.",
     fix="Remove the extra nesting; `cgsc schema` shows the shape of every table.")
Rule("CGS-LOAD-007", "`extends` reaches outside the spec's repository",
     "A base spec decides firmware, mechanism and policy. A spec under review must not pull "
     "them from a file outside the repository (an absolute path, `..` or a symlink leading "
     "out), where the review cannot see or pin it.", "SPEC.md, extends; README, Loading specs",
     fix="Name the base relative to the spec, inside the same repository (the nearest "
         "directory with .git above the spec, or the spec's directory outside a repository).")
Rule("CGS-SCHEMA-001", "unknown key (a misspelled key is never ignored)",
     "A misspelled key that is ignored leaves the setting at its default: a `polcy` typo "
     "would launch with the default policy while the reviewer read another one.",
     "SPEC.md; kata-containers ignores unknown keys (peers.md pain point 13)",
     fix="Correct the spelling (the hint names the closest known key) or remove the key; `cgsc schema` lists every key.")
Rule("CGS-SCHEMA-002", "a required key is missing",
     "Some values cannot be defaulted safely: cbitpos and reduced-phys-bits must match the "
     "host, the guest needs a name and memory.", "SPEC.md",
     fix="Add the key; the hint says where to find its value.")
Rule("CGS-SCHEMA-003", "a value has the wrong type",
     "QEMU, systemd and libvirt each coerce values differently; cgsc takes only the type "
     "the spec language defines, so every target sees the same value.", "SPEC.md",
     fix="Write the value with the TOML type the key takes (the hint repeats the key's description).")
Rule("CGS-SCHEMA-004", "a value is out of range or not one of the allowed values",
     "Out-of-range values (cbitpos 99, a relative or `..` path, a name that is not a safe "
     "file name) fail late on the host or open injection paths; they are refused at review.",
     "SPEC.md; qemu.md section 3",
     fix="Use one of the allowed values, or a value in the range the message gives.")
Rule("CGS-SCHEMA-005", "[confidential] must hold exactly one mechanism table",
     "A guest runs under exactly one mechanism; two tables (often one from an `extends` "
     "base) would leave the choice to chance.", "SPEC.md",
     fix="Keep exactly one [confidential.<mechanism>] table (check `extends` bases too).")
Rule("CGS-SPEC-001", "unsupported spec-version",
     "A newer spec language may mean things this cgsc does not know; it refuses rather than "
     "guess.", "SPEC.md",
     fix="Set spec-version = 1, or upgrade cgsc to one that knows the version.")


def load_all() -> Dict[str, Rule]:
    """Import every module that defines rules, so the catalogue is complete."""
    import cgsc.build  # noqa: F401
    import cgsc.check  # noqa: F401
    import cgsc.checks  # noqa: F401  (imports cgsc.confine and cgsc.host_rules)
    import cgsc.measure  # noqa: F401  (the [measurement] rules)
    import cgsc.limits  # noqa: F401
    import cgsc.hostcheck  # noqa: F401
    import cgsc.waivers  # noqa: F401  (defines the waiver rules)
    from cgsc import targets
    from cgsc.mechanisms import MECHANISMS
    for name in MECHANISMS:  # mechanism modules load lazily
        MECHANISMS[name]
    for name in list(targets.BUILTIN) + list(targets.OPT_IN):
        targets.get(name)
    return CATALOGUE

"""Diagnostics: what is wrong with a spec, where, and which rule says so."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

KeyPath = Tuple[object, ...]  # ("confidential", "sev-snp", "policy") or ("disk", 0, "path")

ERROR = "error"
WARNING = "warning"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: KeyPath) -> str:
    """TOML-style key path: disk[0].path, confidential.sev-snp.policy. A key that is not
    a bare TOML key is shown quoted and escaped ("a\\nb"), as TOML would write it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = str(part)
            if not _BARE_KEY.fullmatch(key):
                key = json.dumps(key, ensure_ascii=False)
            out += ("." if out else "") + key
    return out or "(top level)"


def printable(text: str) -> str:
    """Untrusted text made safe for a terminal or a log: anything not printable (controls,
    ANSI escapes, line separators, bidi overrides) is shown as an escape."""
    from .escape import comment_line
    return comment_line(unicode_text(text)) if not text.isprintable() else text


_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_text(text: str) -> str:
    """Text without lone surrogates (a file name that is not UTF-8 reaches Python with its
    bytes as U+DC80..U+DCFF): each shown as an escape, so the text encodes as UTF-8."""
    return _SURROGATE.sub(lambda m: _surrogate_shown(m.group(0)), text)


def _surrogate_shown(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


@dataclass(frozen=True)
class Diagnostic:
    rule: str
    path: KeyPath
    message: str
    hint: str = ""
    severity: str = ERROR
    file: str = ""
    line: int = 0
    column: int = 0
    specs: Tuple[str, ...] = ()   # the guest specs it concerns, when found in a file they
    #                               share (a base): one finding for all of them (see once())

    def located(self, file: str, line: int, column: int = 0) -> "Diagnostic":
        return Diagnostic(self.rule, self.path, self.message, self.hint, self.severity,
                          file, line, column, self.specs)

    def hinted(self, hint: str) -> "Diagnostic":
        return Diagnostic(self.rule, self.path, self.message, hint, self.severity,
                          self.file, self.line, self.column, self.specs)

    def concerning(self, specs: Tuple[str, ...]) -> "Diagnostic":
        return Diagnostic(self.rule, self.path, self.message, self.hint, self.severity,
                          self.file, self.line, self.column, specs)

    @property
    def shared(self) -> bool:
        """Found in a file other than the one spec it concerns (a base), or for several."""
        return len(self.specs) > 1 or (len(self.specs) == 1 and self.specs[0] != self.file)

    def render(self) -> str:
        """The diagnostic as text: one line, and a second for the hint. File names, keys
        and values come from the user, so each part is made printable."""
        where = f"{self.file}:{self.line}" if self.line else (self.file or "<spec>")
        if self.column and not self.path:  # a syntax error; a key path says where on the line
            where += f":{self.column}"
        label = "" if self.severity == ERROR else "warning: "
        text = printable(f"{where}: {format_path(self.path)}: {label}{self.message} [{self.rule}]")
        if self.shared:
            text += "\n  " + printable(affected(self.specs))
        if self.hint:
            text += f"\n  hint: {printable(self.hint)}"
        return text


SHOWN_SPECS = 3   # the specs a shared finding names in text; the others are counted


def affected(specs: Tuple[str, ...]) -> str:
    """"in 500 guests: a.toml, b.toml, c.toml and 497 more"."""
    count = len(specs)
    named = ", ".join(specs[:SHOWN_SPECS])
    more = f" and {count - SHOWN_SPECS} more" if count > SHOWN_SPECS else ""
    return f"in {count} guest{'s' if count != 1 else ''}: {named}{more}"


def once(found: Iterable[Tuple[str, Diagnostic]]) -> List[Diagnostic]:
    """Each finding once. `found`: (spec, diagnostic) pairs, as each spec reported them; a
    diagnostic that several specs report at one place (a base they extend) becomes one
    that names them all, and so does one found in a file other than the spec itself. In
    the order first seen; a diagnostic grouped before keeps the specs it names."""
    groups: Dict[Diagnostic, List[str]] = {}
    for spec, d in found:
        named = d.specs or (spec,)
        if d.specs:
            d = d.concerning(())
        specs = groups.get(d)
        if specs is None:
            groups[d] = list(named)
        elif specs[-1] != named[-1] or len(named) > 1:
            specs.extend(named)
    out = []
    for d, specs in groups.items():
        if len(specs) > 1 or specs[0] != d.file:
            d = d.concerning(tuple(dict.fromkeys(specs)))
        out.append(d)
    return out


def sort_key(d: Diagnostic):
    return (d.file, d.line, format_path(d.path), d.rule, d.message)


class SpecError(Exception):
    """The spec is invalid: carries every diagnostic found (exit status 1)."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=sort_key)
        super().__init__("\n".join(d.render() for d in self.diagnostics))


def error(rule: str, path: KeyPath, message: str, hint: str = "") -> Diagnostic:
    return Diagnostic(rule, tuple(path), message, hint)


def warning(rule: str, path: KeyPath, message: str, hint: str = "") -> Diagnostic:
    return Diagnostic(rule, tuple(path), message, hint, WARNING)

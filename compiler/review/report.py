"""Diagnostics in the formats review tools read: text, JSON, SARIF 2.1.0, GitHub Actions."""

from __future__ import annotations

import json
import re
from typing import Iterable, List

from .. import __version__
from ..core.diagnostics import ERROR, Diagnostic, affected, format_path, printable, unicode_text

FORMATS = ("text", "json", "sarif", "github")
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
# GitHub code scanning keeps 100 locations of a result and refuses a file with more than
# 1,000: a finding shared by more guests names the first ones and counts the others.
SARIF_RELATED = 100


def as_dict(d: Diagnostic) -> dict:
    """`specs`: every guest spec a finding in a shared file (a base) concerns; empty for a
    finding in the spec itself."""
    return {"file": d.file, "line": d.line or None, "column": d.column or None,
            "key": format_path(d.path), "rule": d.rule, "severity": d.severity,
            "message": d.message, "hint": d.hint or None,
            "specs": list(d.specs) if d.shared else []}


def _message(d: Diagnostic) -> str:
    """The one-line message of the machine formats: key, message, the guests a shared
    finding concerns, hint."""
    return (f"{format_path(d.path)}: {d.message}" + (f" ({affected(d.specs)})" if d.shared else "")
            + (f" (hint: {d.hint})" if d.hint else ""))


def _dumps(value) -> str:
    """JSON that is valid UTF-8 whatever the input: a file name that is not UTF-8 reaches
    Python as lone surrogates, which are shown as escapes (\\xff) instead."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: json.dumps(unicode_text(m.group(0)))[1:-1], text) + "\n"


_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json(diagnostics: Iterable[Diagnostic]) -> str:
    return _dumps([as_dict(d) for d in diagnostics])


def to_sarif(diagnostics: Iterable[Diagnostic]) -> str:
    from ..core.rules import load_all
    diagnostics = list(diagnostics)
    catalogue = load_all()
    used = sorted({d.rule for d in diagnostics})
    rules = [_sarif_rule(catalogue[r]) for r in used if r in catalogue]
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for d in diagnostics:
        location = {"artifactLocation": {"uri": d.file}}
        if d.line:
            location["region"] = {"startLine": d.line, **({"startColumn": d.column} if d.column else {})}
        result = {"ruleId": d.rule, "level": "error" if d.severity == ERROR else "warning",
                  "message": {"text": _message(d)},
                  "locations": [{"physicalLocation": location}]}
        if d.shared:   # one result for every guest that shares the file
            result["relatedLocations"] = [
                {"id": i, "physicalLocation": {"artifactLocation": {"uri": spec}},
                 "message": {"text": "a guest spec this finding concerns"}}
                for i, spec in enumerate(d.specs[:SARIF_RELATED])]
            result["properties"] = {"guests": len(d.specs)}
        if d.rule in index:
            result["ruleIndex"] = index[d.rule]
        results.append(result)
    log = {"$schema": SARIF_SCHEMA, "version": "2.1.0",
           "runs": [{"tool": {"driver": {"name": "cgsc", "version": __version__,
                                         "informationUri": "https://cgsc.invalid/rules",
                                         "rules": rules}},
                     "results": results}]}
    return _dumps(log)


def _sarif_rule(rule) -> dict:
    help_text = rule_help(rule)
    return {"id": rule.id, "name": rule.id.replace("-", ""),
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.explanation or rule.summary},
            "help": {"text": help_text},
            "defaultConfiguration": {"level": "error" if rule.severity == ERROR else "warning"}}


def rule_help(rule) -> str:
    """The full explanation of a rule: what `cgsc rules ID` prints and SARIF's rule help."""
    parts = [f"{rule.id} ({rule.severity}): {rule.summary}"]
    if rule.explanation:
        parts.append(f"Why: {rule.explanation}")
    if rule.fix:
        parts.append(f"How to fix: {rule.fix}")
    if rule.severity != ERROR:
        parts.append(f'To accept the risk: [waive] "{rule.id}" = "<reason>"')
    if rule.reference:
        parts.append(f"Reference: {rule.reference}")
    return "\n".join(parts)


def rule_record(rule) -> dict:
    """A rule as data: `cgsc rules --format json` and the generated catalogue."""
    return {"id": rule.id, "severity": rule.severity, "summary": rule.summary,
            "explanation": rule.explanation, "fix": rule.fix, "reference": rule.reference,
            "waivable": rule.severity != ERROR}


_RULE_AT_END = re.compile(r"\[(CGS-[A-Z0-9]+-[0-9]{3})\]$")


def coloured(text: str) -> str:
    """Text diagnostics for a terminal: the location red (error) or yellow (warning), the
    rule ID bold, `hint:` cyan (SGR codes; the text is printable() already)."""
    out = []
    for line in text.splitlines():
        if line.startswith("  hint: "):
            out.append("  \x1b[36mhint:\x1b[0m " + line[len("  hint: "):])
            continue
        colour = "33" if ": warning: " in line else "31"
        where, sep, rest = line.partition(": ")
        line = f"\x1b[1;{colour}m{where}\x1b[0m{sep}{rest}" if sep else line
        out.append(_RULE_AT_END.sub(lambda m: f"[\x1b[1m{m.group(1)}\x1b[0m]", line))
    return "".join(line + "\n" for line in out)


def _gh_data(text: str) -> str:
    """Workflow-command data: GitHub's own escapes, then nothing unprintable (the log
    viewer renders ANSI escapes)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return printable(text)


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(diagnostics: Iterable[Diagnostic]) -> str:
    lines: List[str] = []
    for d in diagnostics:
        kind = "error" if d.severity == ERROR else "warning"
        props = [f"file={_gh_property(d.file)}"]
        if d.line:
            props.append(f"line={d.line}")
        if d.column:
            props.append(f"col={d.column}")
        props.append(f"title={_gh_property(d.rule)}")
        lines.append(f"::{kind} {','.join(props)}::{_gh_data(_message(d))}")
    return "".join(line + "\n" for line in lines)


def to_text(diagnostics: Iterable[Diagnostic]) -> str:
    return "".join(d.render() + "\n" for d in diagnostics)


# what can start emphasis, code, links, HTML, tables, strikethrough, math or a mention
# mid-line (each item starts with "- **severity** ", so block syntax never applies)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&!$@])")


def _md(text: str) -> str:
    """Untrusted text as literal Markdown: one line, every punctuation mark escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", printable(text.replace("\r", " ").replace("\n", " ")))


def to_markdown(diagnostics: Iterable[Diagnostic]) -> str:
    """A Markdown list (for a pull-request comment, as `cgsc diff --format markdown`)."""
    lines = []
    for d in diagnostics:
        where = d.file + (f":{d.line}" if d.line else "")
        lines.append(f"- **{d.severity}** {_md(where)}: {_md(format_path(d.path))}: "
                     f"{_md(d.message)} \\[{_md(d.rule)}\\]"
                     + (f"  \n  {_md(affected(d.specs))}" if d.shared else "")
                     + (f"  \n  hint: {_md(d.hint)}" if d.hint else ""))
    return "".join(line + "\n" for line in lines)


RENDER = {"text": to_text, "json": to_json, "sarif": to_sarif, "github": to_github,
          "markdown": to_markdown}

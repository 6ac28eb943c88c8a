"""`cgsc diff` reports: a fleet's change said once per place, for people and for CI.

The report starts with one summary line ("3 guests changed by guests/bases/web.toml:12;
1 removed; 1 added"). Removed guests come first: a guest that stops being deployed is a
finding a reviewer must see. An added guest shows what matters (cgsc.review.diff.essentials),
not every default. A change that comes from a file several guests share (a base) is shown
once, at that file's line, with the guests it reaches; what each guest's own spec changes
is shown under that guest; derived values (a launch digest) are grouped across guests.
JSON has everything; the Markdown comment is bounded by GitHub's 65,536 characters.
"""

from __future__ import annotations

import json
import re
from typing import Dict, List, Optional, Tuple

from .diff import CATEGORIES, Change, GuestDiff

COMMENT_LIMIT = 65536   # characters GitHub takes in a pull-request comment
NAMED = 10              # guests a place names in text and Markdown before it counts the rest


def report(diffs: List[GuestDiff], rev: Optional[str] = None) -> dict:
    """The whole report as data (what --format json prints)."""
    removed = [d for d in diffs if d.new is None]
    added = [d for d in diffs if d.old is None]
    changed = [d for d in diffs if d.old is not None and d.new is not None and d.changes]
    places: Dict[tuple, dict] = {}
    derived: Dict[tuple, dict] = {}
    own: Dict[str, List[Change]] = {}
    for d in changed:
        for c in d.changes:
            if not c.file:
                group = derived.setdefault((c.category, c.item), {"category": c.category,
                                                                  "item": c.item, "changes": []})
            elif c.file != d.new:
                group = places.setdefault((c.file, c.line, c.category, c.item), {
                    "file": c.file, "line": c.line or None, "category": c.category,
                    "item": c.item, "changes": []})
            else:
                own.setdefault(d.name, []).append(c)
                continue
            group["changes"].append({"guest": d.name, "old": c.old, "new": c.new, "message": c.message})
    for group in list(places.values()) + list(derived.values()):
        messages = [c["message"] for c in group["changes"]]
        group["guests"] = [c["guest"] for c in group["changes"]]
        group["message"] = messages[0]
        group["same"] = len(set(messages)) == 1   # else each guest has its own value
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return {
        "base": rev,
        "summary": _summary(removed, added, changed, list(places.values()), own,
                            len(diffs) - len(removed) - len(added) - len(changed)),
        "removed": [{"guest": d.name, "spec": d.old, "stopped": _shown(d.shown)} for d in removed],
        "added": [{"guest": d.name, "spec": d.new, "shown": _shown(d.shown)} for d in added],
        "places": sorted(places.values(), key=lambda p: (p["file"], p["line"] or 0,
                                                         order.get(p["category"], 99))),
        "derived": sorted(derived.values(), key=lambda p: order.get(p["category"], 99)),
        "guests": [{"guest": d.name, "old": d.old, "new": d.new, "new-spec": d.old is None,
                    "removed": d.new is None,
                    "changes": [_change(c) for c in d.changes]} for d in diffs],
        "own": {name: [_change(c) for c in cs] for name, cs in own.items()},
    }


def _change(c: Change) -> dict:
    return {"category": c.category, "item": c.item, "old": c.old, "new": c.new,
            "message": c.message, "file": c.file or None, "line": c.line or None}


def _shown(shown) -> List[dict]:
    return [{"category": c, "item": i, "value": v} for c, i, v in shown]


def _fact(s: dict) -> str:
    """"item: value", or the item alone when it says everything (a flag, the mechanism)."""
    if s["item"] == s["category"]:
        return s["value"]
    return f"{s['item']}: {s['value']}" if s["value"] not in ("", "on") else s["item"]


def _summary(removed, added, changed, places, own, unchanged: int) -> str:
    """"3 guests changed by guests/bases/web.toml:12; 1 removed; 1 added"."""
    by_file: Dict[str, Tuple[List[int], List[str]]] = {}
    for p in places:
        lines, guests = by_file.setdefault(p["file"], ([], []))
        if p["line"] and p["line"] not in lines:
            lines.append(p["line"])
        guests += [g for g in p["guests"] if g not in guests]
    parts = [f"{_guests(len(guests))} changed by {file}"
             + (":" + ",".join(map(str, sorted(lines))) if lines else "")
             for file, (lines, guests) in by_file.items()]
    if own:
        parts.append(f"{_guests(len(own))} changed by {'its' if len(own) == 1 else 'their'} own spec")
    reached = {g for _lines, guests in by_file.values() for g in guests} | set(own)
    only_derived = [d for d in changed if d.name not in reached]
    if only_derived:
        parts.append(f"{_guests(len(only_derived))} with only derived values changed (the "
                     "launch digest: measured boot files)")
    if removed:
        parts.append(f"{len(removed)} removed")
    if added:
        parts.append(f"{len(added)} added")
    if unchanged and parts:
        parts.append(f"{unchanged} unchanged")
    return "; ".join(parts) or "no security-relevant change"


def _guests(count: int) -> str:
    return f"{count} guest{'s' if count != 1 else ''}"


def _named(guests: List[str]) -> str:
    shown = ", ".join(guests[:NAMED])
    return _guests(len(guests)) + ": " + shown + (f" and {len(guests) - NAMED} more" if len(guests) > NAMED else "")


def _place_message(p: dict) -> str:
    if p["same"]:
        return p["message"]
    return f"{p['message']} (for {p['guests'][0]}; each guest its own value)"


def _where(p: dict) -> str:
    return p["file"] + (f":{p['line']}" if p["line"] else "")


# -- text -----------------------------------------------------------------------------------

def to_text(doc: dict) -> str:
    out = [f"cgsc diff{' against ' + doc['base'] if doc['base'] else ''}: {doc['summary']}"]
    for r in doc["removed"]:
        out.append(f"removed: {r['guest']} ({r['spec']})")
        out += [f"  {s['category']}: {_fact(s)}" for s in r["stopped"]]
    for a in doc["added"]:
        out.append(f"added: {a['guest']} ({a['spec']})")
        out += [f"  {s['category']}: {_fact(s)}" for s in a["shown"]]
    for where, group in _by_place(doc["places"]):
        out.append(f"{where} ({_named(group[0]['guests'])})")
        out += [f"  {p['category']}: {_place_message(p)}" for p in group]
    for g in doc["guests"]:
        changes = doc["own"].get(g["guest"], [])
        if changes or (doc["base"] is None and not g["changes"]):
            out.append(f"{g['guest']}: {g['old']} -> {g['new']}")
            out += [f"  {c['category']}: {c['message']}" for c in changes] or \
                ["  no security-relevant change"]
    for p in doc["derived"]:
        out.append(f"derived ({_named(p['guests'])})")
        out.append(f"  {p['category']}: {_place_message(p)}")
    return "\n".join(out) + "\n"


def _by_place(places: List[dict]) -> List[Tuple[str, List[dict]]]:
    """Places grouped by file:line and the guests they reach, in order."""
    groups: Dict[tuple, List[dict]] = {}
    for p in places:
        groups.setdefault((_where(p), tuple(p["guests"])), []).append(p)
    return [(where, group) for (where, _g), group in groups.items()]


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# -- Markdown, for a pull-request comment ----------------------------------------------------

def _cell(text) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _md(text) -> str:
    """Untrusted text as literal Markdown outside tables."""
    return re.sub(r"([\\`*_\[\]<>|~&!$@#])", r"\\\1", str(text).replace("\n", " "))


def to_markdown(doc: dict) -> str:
    head = [f"### cgsc diff{' against ' + _md(doc['base']) if doc['base'] else ''}", "",
            f"**{_md(doc['summary'])}**", ""]
    body: List[str] = []
    if doc["removed"]:
        body += ["#### Removed guests: no longer deployed", ""]
        for r in doc["removed"]:
            body.append(f"- **{_md(r['guest'])}** (was {_md(r['spec'])}): "
                        + "; ".join(_md(_fact(s)) for s in r["stopped"]))
        body.append("")
    if doc["added"]:
        body += ["#### Added guests", ""]
        for a in doc["added"]:
            body += [f"**{_md(a['guest'])}** ({_md(a['spec'])})", "", "| category | value |",
                     "|---|---|"]
            body += [f"| {_cell(s['category'])} | {_cell(_fact(s))} |" for s in a["shown"]]
            body.append("")
    if doc["places"]:
        body += ["#### Changes in files guests share", ""]
        for where, group in _by_place(doc["places"]):
            body += [f"**{_md(where)}**: {_md(_named(group[0]['guests']))}", "",
                     "| category | change |", "|---|---|"]
            body += [f"| {_cell(p['category'])} | {_cell(_place_message(p))} |" for p in group]
            body.append("")
    own = [g for g in doc["guests"] if doc["own"].get(g["guest"]) or (doc["base"] is None and not g["changes"])]
    if own:
        body += ["#### Changes per guest", ""]
        for g in own:
            changes = doc["own"].get(g["guest"], [])
            body += [f"**{_md(g['guest'])}**: {_md(g['old'])} → {_md(g['new'])}", ""]
            if not changes:
                body += ["No security-relevant change.", ""]
                continue
            body += ["| category | change |", "|---|---|"]
            body += [f"| {_cell(c['category'])} | {_cell(c['message'])} |" for c in changes]
            body.append("")
    if doc["derived"]:
        body += ["#### Derived values", "", "| category | change | guests |", "|---|---|---|"]
        body += [f"| {_cell(p['category'])} | {_cell(_place_message(p))} | {_cell(_named(p['guests']))} |"
                 for p in doc["derived"]]
        body.append("")
    return _bounded(head, body)


def _bounded(head: List[str], body: List[str], limit: int = COMMENT_LIMIT) -> str:
    """The comment, cut at a line so that it fits GitHub's limit with the note that says so."""
    text = "\n".join(head + body) + "\n"
    if len(text) <= limit:
        return text
    kept, size = list(head), sum(len(line) + 1 for line in head)
    note = ("\n_… truncated: {} more lines do not fit a GitHub comment; the whole report: "
            "`cgsc diff --format json` (or text) in the job's log._\n")
    room = limit - len(note.format(len(body))) - 1
    for line in body:
        if size + len(line) + 1 > room:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept) + "\n" + note.format(len(body) - (len(kept) - len(head)))


# -- GitHub Actions annotations ----------------------------------------------------------------

def to_github(doc: dict) -> str:
    from .report import _gh_data, _gh_property
    rev = (doc["base"] or "") + ":"

    def line(kind: str, file: str, at: Optional[int], title: str, message: str) -> str:
        props = f"file={_gh_property(file[len(rev):] if file.startswith(rev) else file)}"
        props += f",line={at}" if at else ""
        return f"::{kind} {props},title={_gh_property('cgsc diff: ' + title)}::{_gh_data(message)}"
    out = [line("warning", r["spec"], None, "guest removed", f"{r['guest']} removed: "
                + "; ".join(_fact(s) for s in r["stopped"])) for r in doc["removed"]]
    out += [line("notice", a["spec"], None, "guest added", f"{a['guest']} added: "
                 + "; ".join(_fact(s) for s in a["shown"])) for a in doc["added"]]
    out += [line("notice", p["file"], p["line"], p["category"],
                 f"{_place_message(p)} ({_named(p['guests'])})") for p in doc["places"]]
    specs = {g["guest"]: g["new"] for g in doc["guests"]}
    out += [line("notice", specs[name], c["line"], c["category"], f"{name}: {c['message']}")
            for name, changes in doc["own"].items() for c in changes]
    out += [line("notice", specs[p["guests"][0]], None, p["category"],
                 f"{_place_message(p)} ({_named(p['guests'])})") for p in doc["derived"]]
    return "".join(entry + "\n" for entry in out)


RENDER = {"text": to_text, "json": to_json, "markdown": to_markdown, "github": to_github}

"""Derive schema/qemu-since.json from QEMU's QAPI schema (qapi/qom.json): the first QEMU
version of every confidential-guest -object type and of each of its properties.

    python3 tests/derive_qemu_since.py tests/data/qemu-qapi > schema/qemu-since.json

(DIR holds qom.json, or qom.json.xz as tests/data/qemu-qapi does; a QEMU source tree's
qapi/ works too.) tests/host/test_hostprofile.py re-derives it from tests/data and
compares, so the committed table cannot drift from the QAPI schema, and checks it against
every installed QEMU release (QMP introspection). Rules (QAPI doc-comment conventions):
- an object type's version is the `Since:` of its properties struct in ObjectOptions;
  types without properties (pef-guest, s390-pv-guest) take the ObjectType enum's `Since:`,
  a lower bound (the enum itself dates from then);
- a property's version is its own `(since X.Y)` note, never earlier than its type's (a
  base struct's `Since:` dates the refactoring that created it, not its members).
"""

from __future__ import annotations

import json
import os
import re
import sys

CONFIDENTIAL_TYPES = ("sev-guest", "sev-snp-guest", "tdx-guest", "pef-guest", "s390-pv-guest")


def _version(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def _read(path: str) -> str:
    if not os.path.exists(path) and os.path.exists(path + ".xz"):
        import lzma
        with lzma.open(path + ".xz", "rt", encoding="utf-8") as fh:
            return fh.read()
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _blocks(path: str):
    """(doc comment, expression) pairs of a QAPI file: a `##` ... `##` comment, then the
    `{ ... }` expression up to the next blank line."""
    lines = _read(path).split("\n")
    i = 0
    while i < len(lines):
        if lines[i] != "##":
            i += 1
            continue
        j = lines.index("##", i + 1)
        doc = "\n".join(l[2:] if l.startswith("# ") else l[1:] for l in lines[i + 1:j])
        k = j + 1
        code = []
        while k < len(lines) and lines[k].strip():
            if not lines[k].lstrip().startswith("#"):
                code.append(lines[k])
            k += 1
        i = k
        if code and code[0].startswith("{"):
            yield doc, json.loads("\n".join(code).replace("'", '"'))


def _since(doc: str) -> str:
    return re.search(r"^Since: (\d+\.\d+)", doc, re.M).group(1)


def _member_notes(doc: str) -> dict:
    """@member -> its own '(since X.Y)' note."""
    notes, current = {}, None
    for line in doc.splitlines():
        m = re.match(r"@([\w-]+):", line)
        if m:
            current = m.group(1)
        elif not line.startswith(" "):
            current = None if line.strip() == "" or line.startswith("Since") else current
        if current:
            s = re.search(r"\(since:? (\d+\.\d+)\)", line)
            if s:
                notes[current] = s.group(1)
    return notes


def derive(qapi_dir: str) -> dict:
    structs, docs = {}, {}
    for doc, expr in _blocks(os.path.join(qapi_dir, "qom.json")):
        name = next((expr[k] for k in ("struct", "enum", "union") if k in expr), None)
        if name:
            structs[name], docs[name] = expr, doc
    options = structs["ObjectOptions"]["data"]

    def members(struct: str) -> dict:
        s = structs[struct]
        out = members(s["base"]) if "base" in s else {}
        notes = _member_notes(docs[struct])
        for key in s["data"]:
            out[key.lstrip("*")] = notes.get(key.lstrip("*"))
        return out

    table = {}
    for qom_type in CONFIDENTIAL_TYPES:
        struct = options.get(qom_type)
        struct = struct["type"] if isinstance(struct, dict) else struct
        since = _since(docs[struct] if struct else docs["ObjectType"])
        props = {}
        for prop, note in sorted((members(struct) if struct else {}).items()):
            props[prop] = max(since, note or since, key=_version)
        table[qom_type] = {"since": since, "properties": props}
    return {"source": "QEMU qapi/qom.json `Since:` notes (tests/derive_qemu_since.py)",
            "objects": table}


def dumps(table: dict) -> str:
    return json.dumps(table, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(derive(sys.argv[1])))

"""Derive schema/qemu-since.json from QEMU's QAPI schema: the first QEMU version of every
confidential-guest -object type (and of monitor-qmp, which replaces -mon) and of each of
their properties, and the release that deprecated each command-line form cgsc writes.

    D=$CGSC_TRIXIE_ROOT/usr/share/doc/qemu-system-common   # Debian's QEMU 11.1.3
    python3 tests/derive_qemu_since.py $D/interop/qemu-qmp-ref.html \
        $D/about/deprecated.html > schema/qemu-since.json

The committed table comes from QEMU 11.1.3's own rendered reference (qapi/*.json and
docs/about/deprecated.rst as its build renders them; tests/targets/test_qemu_11.py re-derives
and compares). tests/host/test_hostprofile.py also re-derives the confidential types from
qapi/qom.json of a development tree (`derive`, given tests/data/qemu-qapi, which holds
qom.json.xz) and finds the same, and checks the table against every installed QEMU release
(QMP introspection). Rules (QAPI doc-comment conventions):
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


# -- a release's rendered reference: what Debian's qemu-system-common ships --------------
# (/usr/share/doc/qemu-system-common/interop/qemu-qmp-ref.html, about/deprecated.html), the
# QAPI schema and docs/about/deprecated.rst of that release as QEMU's own build renders them.

OBJECT_TYPES = CONFIDENTIAL_TYPES + ("monitor-qmp",)   # monitor-qmp replaces -mon (11.1)
# the deprecated.rst sections about what cgsc writes (heading text without "(since X.Y)")
DEPRECATIONS = ("-mon option", "debug-threads option for -name")

_TAG = re.compile(r"<[^>]+>")


def _text(fragment: str) -> str:
    import html
    fragment = re.sub(r'<a class="headerlink".*?</a>', "", fragment)   # the link glyph
    return " ".join(html.unescape(_TAG.sub("", fragment)).split())


def _definitions(page: str) -> dict:
    """QAPI name -> (Since of the definition, its body's HTML) of a rendered reference."""
    out = {}
    for m in re.finditer(r'<dt class="sig sig-object qapi" id="(?:object|enum)-QMP-[\w-]+\.'
                         r'([\w-]+)">(.*?)</dt>(.*?)</dd></dl>', page, re.S):
        since = re.search(r"\(Since: ([0-9.]+)\)", _text(m.group(2)))
        out[m.group(1)] = (since.group(1) if since else None, m.group(3))
    return out


def _members(body: str):
    """(name or None, base or None, text) per item of the Members list (not Features)."""
    members = body.split('<dt class="field-odd">Members', 1)[-1].split("Features<", 1)[0]
    for item in re.findall(r"<li><p>(.*?)</p></li>", members, re.S):
        name = re.match(r"<strong>([\w-]+)</strong>", item)
        base = re.search(r'The members of <a [^>]*title="QMP:[\w-]+\.([\w-]+)"', item)
        yield (name.group(1) if name else None, base.group(1) if base else None, _text(item))


def derive_release(qmp_ref_html: str, deprecated_html: str) -> dict:
    """The table from one release's rendered reference, by derive()'s rules."""
    with open(qmp_ref_html, encoding="utf-8") as fh:
        defs = _definitions(fh.read())
    options = {}
    for _name, _base, text in _members(defs["ObjectOptions"][1]):
        m = re.match(r"When qom-type is ([\w-]+): The members of ([\w-]+)\.", text)
        if m:
            options[m.group(1)] = m.group(2)

    def members(struct: str) -> dict:
        out = {}
        for name, base, text in _members(defs[struct][1]):
            if base:
                out.update(members(base))
            elif name:
                note = re.search(r"\(since:? (\d+\.\d+)\)", text)
                out[name] = note.group(1) if note else None
        return out

    table = {}
    for qom_type in OBJECT_TYPES:
        struct = options.get(qom_type)
        since = defs[struct or "ObjectType"][0]
        props = {p: max(since, note or since, key=_version)
                 for p, note in sorted((members(struct) if struct else {}).items())}
        table[qom_type] = {"since": since, "properties": props}
    with open(deprecated_html, encoding="utf-8") as fh:
        headings = {}
        for h in re.findall(r"<h\d>(.*?)</h\d>", fh.read(), re.S):
            m = re.fullmatch(r"(.*) \(since (\d+\.\d+)\)", _text(h))
            if m:
                headings[m.group(1)] = m.group(2)
    return {"source": "QEMU 11.1.3's rendered QAPI reference and deprecated.rst "
                      "(tests/derive_qemu_since.py)",
            "objects": table,
            "deprecated": {what: headings[what] for what in DEPRECATIONS}}


def dumps(table: dict) -> str:
    return json.dumps(table, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3:   # QMP_REF_HTML DEPRECATED_HTML
        sys.stdout.write(dumps(derive_release(sys.argv[1], sys.argv[2])))
    else:
        sys.stdout.write(dumps(derive(sys.argv[1])))

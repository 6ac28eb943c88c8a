"""The bundled JSON Schema: guest.schema.json plus every mechanism's fragment.

The mechanism registry decides which [confidential.*] tables exist, so adding a
mechanism never touches guest.schema.json. Fragments keep their own $id and are
embedded under $defs, which makes the bundle one self-contained document that
editors and validators can use without fetching anything.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Dict


def schema_dir() -> str:
    from .. import (
        schema,  # the package that holds the .json files, wherever it is installed
    )
    return os.path.dirname(schema.__file__)


def read(name: str) -> dict:
    """A JSON file shipped in the schema package."""
    with open(os.path.join(schema_dir(), name), encoding="utf-8") as fh:
        return json.load(fh)


def source_files() -> list:
    """Every file the bundle is made from."""
    from ..mechanisms import MECHANISMS
    mechanisms = dict.fromkeys(MECHANISMS.schema_file(name) for name in MECHANISMS)
    return ["guest.schema.json", *mechanisms, "measurement.schema.json"]


@lru_cache(maxsize=None)
def bundled() -> dict:
    from ..mechanisms import MECHANISMS
    root = read("guest.schema.json")
    mechs = root["properties"]["confidential"]["properties"]
    for name in MECHANISMS:
        schema_file = MECHANISMS.schema_file(name)
        frag_key = "mechanism-" + schema_file.replace(".schema.json", "")
        if frag_key not in root["$defs"]:
            root["$defs"][frag_key] = read(schema_file)
            del root["$defs"][frag_key]["$schema"]
        mechs[name] = {"$ref": schema_file,
                       "description": root["$defs"][frag_key]["description"]}
    # [measurement] has its own fragment too, embedded the same way.
    root["$defs"]["measurement"] = read("measurement.schema.json")
    del root["$defs"]["measurement"]["$schema"]
    _required_unless_extends(root)
    _constrain_strings(root)
    root["$defs"]["scalar-text"] = dict(SCALAR_TEXT)
    return root


def _required_unless_extends(root: dict) -> None:
    """Move every `required` of a table (the spec, [guest], a mechanism table, ...) into
    one `if extends or abstract / else` at the top. An abstract base is no guest, and a
    spec with `extends` is completed by its base,
    whose tables merge key by key, so an editor must not ask it for keys the base gives;
    cgsc validates the merged spec (which has no `extends`) against the whole `else`.
    Array elements ([[disk]], [[net]]) replace, never merge: they keep their `required`."""
    fragments = {sub["$id"].rsplit("/", 1)[-1]: sub for sub in root["$defs"].values() if "$id" in sub}
    fragments[root["$id"].rsplit("/", 1)[-1]] = root
    seen: Dict[int, dict] = {}

    def lift(node: dict, doc: dict) -> dict:
        if "$ref" in node:
            target, _, pointer = node["$ref"].partition("#")
            doc = fragments[target] if target else doc
            node = doc
            for part in [p for p in pointer.split("/") if p]:
                node = node[part]
        if id(node) in seen:  # a fragment shared by two mechanisms (sev, sev-es)
            return seen[id(node)]
        need: dict = {}
        if "required" in node:
            need["required"] = node.pop("required")
        props = {key: lift(sub, doc) for key, sub in node.get("properties", {}).items()
                 if isinstance(sub, dict)}
        props = {key: dict(sub, description=f"The required keys of `{key}` in a spec "
                                                "without `extends`.")
                 for key, sub in props.items() if sub}
        if props:
            need["properties"] = props
        seen[id(node)] = need
        return need

    abstract = {"const": True, "description": "An abstract base: no guest, no required key."}
    root["if"] = {"anyOf": [{"required": ["extends"]},
                            {"required": ["abstract"], "properties": {"abstract": abstract}}]}
    root["else"] = dict(lift(root, root), description="A spec without `extends` that is not "
                        "`abstract` is a whole guest: it has every required key itself.")


def partial(schema: dict) -> dict:
    """The schema of a base spec checked on its own: every key, type and value rule, but
    no required keys (the specs that extend it must be complete once merged)."""
    return {k: v for k, v in schema.items() if k not in ("if", "else")}


# Unicode noncharacters: U+FDD0..U+FDEF and the last two code points of every plane.
# XML forbids U+FFFE/U+FFFF and systemd drops lines that carry them; none belongs in a spec.
NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
SCALAR_TEXT = {
    "description": "Text without Unicode noncharacters (U+FDD0..U+FDEF, U+nFFFE, U+nFFFF).",
    # Literal characters, not escapes: Python, ECMA-262 (u flag) and Rust regex all read them.
    "pattern": "^[^" + NONCHARACTERS + "]*$",
    "x-cgsc-message": "text without Unicode noncharacters (U+FDD0..U+FDEF, U+FFFE, U+FFFF "
                      "and their counterparts in every plane)",
}
DEFAULT_MAX_LENGTH = 4096  # any string without its own limit: PATH_MAX, and far below the
                           # 128 KiB a single exec argument may have
DEFAULT_MAX_ITEMS = 256    # any array without its own limit


def _constrain_strings(node) -> None:
    """Every node that admits a string (fragments and fields added later included) refuses
    noncharacters and gets a length limit, so no field can forget either; every array
    gets an item limit."""
    if isinstance(node, list):
        for item in node:
            _constrain_strings(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _constrain_strings(value)
    kind = node.get("type")
    if kind == "array" or (isinstance(kind, list) and "array" in kind):
        node.setdefault("maxItems", DEFAULT_MAX_ITEMS)
    if kind == "string" or (isinstance(kind, list) and "string" in kind):
        node.setdefault("maxLength", DEFAULT_MAX_LENGTH)
        if {"$ref": _SCALAR_REF} not in node.get("allOf", []):
            node["allOf"] = node.get("allOf", []) + [{"$ref": _SCALAR_REF}]


_SCALAR_REF = "https://cgsc.invalid/schema/v1/guest.schema.json#/$defs/scalar-text"


@lru_cache(maxsize=None)
def resources() -> Dict[str, dict]:
    """Every schema resource in the bundle, by $id (for inlining the $refs)."""
    root = bundled()
    out = {root["$id"]: root}
    for sub in root["$defs"].values():
        if "$id" in sub:
            out[sub["$id"]] = sub
    return out


@lru_cache(maxsize=None)
def inlined() -> dict:
    """The bundle with every $ref replaced by its target (the schema has no recursion).
    Same meaning, but validation no longer resolves references on every instance."""
    root = bundled()

    def expand(node, base):
        if isinstance(node, list):
            return [expand(x, base) for x in node]
        if not isinstance(node, dict):
            return node
        base = node.get("$id", base)
        if "$ref" in node:
            target, target_base = _lookup(node["$ref"], base)
            merged = dict(expand(target, target_base))
            merged.update({k: expand(v, base) for k, v in node.items() if k != "$ref"})
            merged.pop("$id", None)
            return merged
        return {k: expand(v, base) for k, v in node.items() if k != "$defs"}

    out = expand(root, root["$id"])
    out["$schema"] = root["$schema"]
    return out


def _lookup(ref: str, base: str):
    target, _, pointer = ref.partition("#")
    if "://" in target:
        base = target
    elif target:
        base = base.rsplit("/", 1)[0] + "/" + target
    node = resources()[base]
    for part in [p for p in pointer.split("/") if p]:
        node = node[part]
    return node, base


def dumps(base: bool = False) -> str:
    """The bundle as JSON (with --base, without required keys); noncharacters (in the
    scalar-text pattern) written as JSON escapes, so the text itself stays clean for
    editors and terminals."""
    schema = partial(bundled()) if base else bundled()
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return _NONCHARACTER.sub(lambda m: json.dumps(m.group(0))[1:-1], text)


_NONCHARACTER = re.compile("[" + NONCHARACTERS + "]")

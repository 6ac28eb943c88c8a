"""The guest schema compiled ahead of time into a plain-Python yes/no check.

A valid spec is the common case, above all in a fleet, and asking jsonschema about it
costs more than the rest of compiling it (and importing jsonschema costs more than a
whole one-spec build). So `python -m cgsc.regenerate` compiles the bundled schema into
`_generated/schema_check.py`, a module of this package whose `valid(data)` answers only "certainly
valid" or "not sure". It is strict wherever the schema's meaning is subtle (an enum value
must have the very type of the listed one, unique items must be strings): a "not sure"
costs only time, because then jsonschema, which stays the authority, validates the spec
and words every error. So a spec is accepted without jsonschema only when jsonschema would
accept it too, which a test checks over every spec and thousands of mutations of them.

Like the compiled templates, the module is package code, never a cache: it carries a key
over the schema files and the code (CODE) it was made from and is not used when they
differ; a test fails when it is not the compilation of the schema as bundled now.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List

from .compiled_check import GENERATED, key

# Keywords that say nothing about validity.
_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "default", "examples",
                "deprecated", "readOnly", "writeOnly"}
_TYPES = {  # the TOML-aware types of validate.validator(); stricter is allowed, never looser
    "string": "(isinstance(x, str) and not _SURROGATE(x))",
    "integer": "(isinstance(x, int) and not isinstance(x, bool))",
    "number": "(isinstance(x, (int, float)) and not isinstance(x, bool))",
    "boolean": "isinstance(x, bool)",
    "object": "isinstance(x, dict)",
    "array": "isinstance(x, list)",
    "null": "x is None",
}
_SCALARS = (str, int, float, bool)


def _not_finite(value: float) -> bool:
    return value != value or value in (float("inf"), float("-inf"))


class _Writer:
    """Emits one function per distinct schema node (the bundle repeats many)."""

    def __init__(self):
        self.functions: Dict[str, str] = {}   # canonical node -> function name
        self.code: List[str] = []
        self.constants: List[str] = []
        self.tables: List[str] = []           # refer to functions: written after them
        self.patterns: Dict[str, str] = {}    # Python regex -> constant name

    def pattern(self, regex: str) -> str:
        if regex not in self.patterns:
            self.patterns[regex] = f"_P{len(self.patterns)}"
            self.constants.append(f"{self.patterns[regex]} = _re({regex!r}).search")
        return self.patterns[regex]

    def constant(self, code: str) -> str:
        name = f"_C{len(self.constants)}"
        self.constants.append(f"{name} = {code}")
        return name

    def node(self, schema) -> str:
        """The name of a function `f(x) -> bool` for `schema`."""
        if schema is True or schema == {}:
            return "_yes"
        if schema is False:
            return "_no"
        canonical = json.dumps(_meaning(schema), sort_keys=True)
        if canonical not in self.functions:
            name = f"_n{len(self.functions)}"
            self.functions[canonical] = name
            self.code.append("\n".join([f"def {name}(x):"] + self.body(schema)
                                       + ["    return True", ""]))
        return self.functions[canonical]

    def body(self, s: dict) -> List[str]:
        unknown = set(s) - _ANNOTATIONS - _HANDLED
        unknown = {k for k in unknown if not k.startswith("x-")}
        if unknown:  # never compile a keyword we do not check: fail loudly instead
            raise ValueError(f"schema keyword(s) {sorted(unknown)} are not compiled")
        out: List[str] = []
        kinds = [s["type"]] if isinstance(s.get("type"), str) else s.get("type", [])
        if kinds:
            out.append(f"    if not ({' or '.join(_TYPES[k] for k in kinds)}): return False")
        for keyword in ("enum", "const"):
            if keyword in s:
                values = s["enum"] if keyword == "enum" else [s["const"]]
                if not all(type(v) in _SCALARS for v in values) or any(
                        isinstance(v, float) and _not_finite(v) for v in values):
                    raise ValueError(f"{keyword} of non-scalar or non-finite values is not compiled")
                # the value's very type: True is not 1 and 1.0 is not 1 here ("not sure")
                alternatives = []
                for kind in _SCALARS:
                    same = sorted({v for v in values if type(v) is kind})
                    if same:
                        allowed = self.constant(f"frozenset({tuple(same)!r})")
                        alternatives.append(f"(type(x) is {kind.__name__} and x in {allowed})")
                out.append(f"    if not ({' or '.join(alternatives)}): return False")
        string = _size_limits(s, "Length")
        if "pattern" in s:
            string.append(f"if not {self.pattern(s['pattern'])}(x): return False")
        out += self.guarded("isinstance(x, str)", string, kinds == ["string"])
        number = []
        for keyword, op in (("minimum", "<"), ("maximum", ">"),
                            ("exclusiveMinimum", "<="), ("exclusiveMaximum", ">=")):
            if keyword in s:
                number.append(f"if x {op} {_number(s[keyword])}: return False")
        out += self.guarded("isinstance(x, (int, float)) and not isinstance(x, bool)", number,
                            kinds in (["integer"], ["number"]))
        out += self.guarded("isinstance(x, dict)", self.object_body(s), kinds == ["object"])
        out += self.guarded("isinstance(x, list)", self.array_body(s), kinds == ["array"])
        for sub in s.get("allOf", []):
            out.append(f"    if not {self.node(sub)}(x): return False")
        if "anyOf" in s:
            either = " or ".join(f"{self.node(sub)}(x)" for sub in s["anyOf"])
            out.append(f"    if not ({either}): return False")
        if "if" in s:
            then, other = self.node(s.get("then", True)), self.node(s.get("else", True))
            out.append(f"    if not ({then} if {self.node(s['if'])}(x) else {other})(x): "
                       "return False")
        return out

    @staticmethod
    def guarded(condition: str, lines: List[str], known: bool) -> List[str]:
        """Lines for values of one type; unguarded when the type check above ensures it."""
        if known:
            return ["    " + line for line in lines]
        return [f"    if {condition}:"] + ["        " + line for line in lines] if lines else []

    def object_body(self, s: dict) -> List[str]:
        out = [f"if {key!r} not in x: return False" for key in s.get("required", [])]
        out += _size_limits(s, "Properties")
        props = s.get("properties", {})
        pats = s.get("patternProperties", {})
        extra = s.get("additionalProperties", True)
        if not props and not pats and extra is True:
            return out
        table = self.table("{" + ", ".join(
            f"{k!r}: {self.node(v)}" for k, v in props.items()) + "}")
        pairs = self.table("(" + "".join(
            f"({self.pattern(p)}, {self.node(v)}), " for p, v in pats.items()) + ")")
        other = "None" if extra is True else self.node(extra)
        return out + [f"if not _keys(x, {table}, {pairs}, {other}): return False"]

    def table(self, code: str) -> str:
        name = f"_T{len(self.tables)}"
        self.tables.append(f"{name} = {code}")
        return name

    def array_body(self, s: dict) -> List[str]:
        out = _size_limits(s, "Items")
        if "items" in s:
            out.append(f"if not all(map({self.node(s['items'])}, x)): return False")
        if s.get("uniqueItems"):
            # strings only: jsonschema's equality of other values has subtleties
            out.append("if not all(isinstance(i, str) for i in x) or len(set(x)) != len(x): "
                       "return False")
        return out


def _size_limits(s: dict, noun: str) -> List[str]:
    """maxLength/minLength, maxItems/minItems, maxProperties/minProperties."""
    return [f"if len(x) {op} {_number(s[word + noun], whole=True)}: return False"
            for word, op in (("max", ">"), ("min", "<")) if word + noun in s]


def _number(value, whole: bool = False) -> str:
    """A schema number as Python source; anything else stops the compiler (a value is
    never pasted into the generated code unchecked)."""
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (
            isinstance(value, float) and _not_finite(value)):
        raise ValueError(f"not a {'whole ' if whole else ''}number: {value!r}")
    return repr(value)


def _meaning(schema):
    """A schema node without its annotations: nodes that differ only in description share
    one function."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key in ("properties", "patternProperties"):
            value = {name: _meaning(sub) for name, sub in value.items()}
        elif key in ("allOf", "anyOf"):
            value = [_meaning(sub) for sub in value]
        elif key in ("items", "additionalProperties", "if", "then", "else"):
            value = _meaning(value)
        out[key] = value
    return out


_HANDLED = {"type", "enum", "const", "maxLength", "minLength", "pattern", "minimum",
            "maximum", "exclusiveMinimum", "exclusiveMaximum", "properties",
            "patternProperties", "additionalProperties", "required", "minProperties",
            "maxProperties", "items", "maxItems", "minItems", "uniqueItems", "allOf",
            "anyOf", "if", "then", "else"}

_PRELUDE = '''\
from re import compile as _re

_SURROGATE = _re("[\\ud800-\\udfff]").search


def _yes(x):
    return True


def _no(x):
    return False


def _keys(table, known, patterns, other):
    """Every key of a table: the schema of its name, those of the patterns it matches,
    else `other` (None: any value)."""
    for k, v in table.items():
        if not isinstance(k, str):
            return False
        f = known.get(k)
        if f is not None and not f(v):
            return False
        matched = f is not None
        for search, g in patterns:
            if search(k):
                matched = True
                if not g(v):
                    return False
        if not matched and other is not None and not other(v):
            return False
    return True
'''


def generate() -> str:
    from .validate import python_schema
    writer = _Writer()
    top = writer.node(python_schema())
    return ("# Generated by `python -m cgsc.regenerate` from the bundled guest schema; do not"
            " edit.\n# Used only while CGSC_SCHEMA_KEY matches the schema files (see "
            "compiled_check.py).\n" + _PRELUDE + "\n" + "\n".join(writer.constants) + "\n\n\n"
            + "\n\n".join(writer.code) + "\n\n" + "\n".join(writer.tables)
            + f"\n\nvalid = {top}\n"
            + f"CGSC_SCHEMA_KEY = {key()!r}\n")


def main() -> int:
    """Rewrite the compiled check from the schema (run after editing the schema)."""
    path = GENERATED
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(generate())
    print(f"wrote {path}", file=sys.stderr)
    return 0

"""Schema validation, with every error turned into a Diagnostic in TOML words."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator, List

from ..core.diagnostics import Diagnostic, error
from ..core.rules import Rule
from .schema import inlined

Rule("CGS-SCHEMA-001", "unknown key (a misspelled key is never ignored)",
     "A misspelled key that is ignored leaves the setting at its default: a `polcy` typo "
     "would launch with the default policy while the reviewer read another one.",
     "docs/reference/keys.md; kata-containers ignores unknown keys, the failure this prevents",
     fix="Correct the spelling (the hint names the closest known key) or remove the key; `cgsc schema` lists every key.")
Rule("CGS-SCHEMA-002", "a required key is missing",
     "Some values cannot be defaulted safely: cbitpos and reduced-phys-bits must match the "
     "host, the guest needs a name and memory.", "docs/reference/keys.md",
     fix="Add the key; the hint says where to find its value.")
Rule("CGS-SCHEMA-003", "a value has the wrong type",
     "QEMU, systemd and libvirt each coerce values differently; cgsc takes only the type "
     "the spec language defines, so every target sees the same value.", "docs/reference/keys.md",
     fix="Write the value with the TOML type the key takes (the hint repeats the key's description).")
Rule("CGS-SCHEMA-004", "a value is out of range or not one of the allowed values",
     "Out-of-range values (cbitpos 99, a relative or `..` path, a name that is not a safe "
     "file name) fail late on the host or open injection paths; they are refused at review.",
     "docs/reference/keys.md; QEMU -m size suffixes",
     fix="Use one of the allowed values, or a value in the range the message gives.")
Rule("CGS-SCHEMA-005", "[confidential] must hold exactly one mechanism table",
     "A guest runs under exactly one mechanism; two tables (often one from an `extends` "
     "base) would leave the choice to chance.", "docs/reference/keys.md",
     fix="Keep exactly one [confidential.<mechanism>] table (check `extends` bases too).")
Rule("CGS-SPEC-001", "unsupported spec-version",
     "A newer spec language may mean things this cgsc does not know; it refuses rather than "
     "guess.", "docs/reference/keys.md",
     fix="Set spec-version = 1, or upgrade cgsc to one that knows the version.")

_TOML_TYPES = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "a boolean (true or false)", "object": "a table", "array": "an array",
               "null": "nothing"}


@lru_cache(maxsize=None)
def validator():
    """One Draft 2020-12 validator per process, over the inlined bundle (no $ref left to
    resolve on every instance), with the schema's patterns in ECMA-262 meaning and TOML's
    types: a float is never an integer, a string is Unicode text."""
    from jsonschema import Draft202012Validator, validators
    checker = Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _c, x: isinstance(x, int) and not isinstance(x, bool),
        "string": lambda _c, x: isinstance(x, str) and not _SURROGATE.search(x)})
    cls = validators.extend(Draft202012Validator, type_checker=checker)
    return cls(python_schema())


def python_schema() -> dict:
    """The inlined bundle with its patterns in Python syntax (ECMA-262 meaning)."""
    return _python_patterns(inlined())


_SURROGATE = re.compile("[\ud800-\udfff]")


# ECMA-262's character class escapes, as code point ranges: \d and \w are ASCII (Python's
# are Unicode), \s is WhiteSpace and LineTerminator (Python's lacks U+FEFF and has
# U+001C-U+001F and U+0085).
_ECMA_CLASSES = {
    "d": ((0x30, 0x39),),
    "w": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    "s": ((0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
          (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
          (0xFEFF, 0xFEFF)),
}


def _ranges(ranges) -> str:
    """Code point ranges as the inside of a Python character class."""
    def one(c):
        return f"\\x{c:02x}" if c < 0x100 else (f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}")
    return "".join(one(lo) if lo == hi else f"{one(lo)}-{one(hi)}" for lo, hi in ranges)


def _complement(ranges):
    out, start = [], 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    return tuple(out + ([(start, 0x10FFFF)] if start <= 0x10FFFF else []))


# a class of a set and its complement: any character at all (as ECMA's idiom for "also
# newlines"); spelled out, its ranges make Python's re spend milliseconds compiling it
_EVERY_CHARACTER = {f"[\\{a}\\{b}]" for x in "dsw" for a, b in ((x, x.upper()), (x.upper(), x))}


def ecma_to_python(pattern: str) -> str:
    """A JSON Schema (ECMA-262) regex as a Python regex with the same meaning for our
    patterns: `$` is the end of input (Python's also matches before a final newline), `.`
    excludes every ECMA line terminator, `\\d`, `\\w`, `\\s` and their negations are
    ECMA's sets, inside a class too."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            ranges = _ECMA_CLASSES.get(nxt.lower())
            if ranges is not None:
                if nxt.isupper():
                    ranges = _complement(ranges)
                out.append(_ranges(ranges) if in_class else f"[{_ranges(ranges)}]")
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
        elif pattern[i:i + 6] in _EVERY_CHARACTER:
            out.append("(?s:.)")   # the same set, compiled in a fraction of the time
            i += 6
            continue
        elif ch == "[":
            in_class = True
            out.append(ch)
            if pattern[i + 1:i + 2] == "^":  # keep a leading ] or ^ inside the class
                out.append("^")
                i += 1
        elif ch == "$":
            out.append("\\Z")
        elif ch == ".":
            out.append("[^\\n\\r\\u2028\\u2029]")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _python_patterns(node):
    if isinstance(node, list):
        return [_python_patterns(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "pattern" and isinstance(value, str):
            out[key] = ecma_to_python(value)
        elif key == "patternProperties" and isinstance(value, dict):
            out[key] = {ecma_to_python(k): _python_patterns(v) for k, v in value.items()}
        else:
            out[key] = _python_patterns(value)
    return out


@lru_cache(maxsize=None)
def base_validator():
    """For a base spec validated on its own: no required keys (see schema.partial)."""
    from jsonschema import Draft202012Validator

    from .schema import partial
    return Draft202012Validator(partial(inlined()))


@lru_cache(maxsize=None)
def quick_check():
    """The schema compiled into plain Python (schema_compiler.py), or None when stale."""
    from .compiled_check import check
    return check()


def schema_errors(data: dict, base: bool = False) -> List[Diagnostic]:
    quick = None if base else quick_check()
    if quick is not None and quick(data):
        return []  # certainly valid: jsonschema (imported only now) would find nothing
    out: List[Diagnostic] = []
    required = set()
    for err in (base_validator() if base else validator()).iter_errors(data):
        if err.validator == "required":
            # one `required` keyword fails once per missing key, each error naming the whole
            # list: it is converted once, into one diagnostic per missing key
            where = (tuple(err.absolute_path), tuple(err.absolute_schema_path))
            if where in required:
                continue
            required.add(where)
        out.extend(_convert(err))
    return out


# bool before int: True is an int to Python, a boolean to TOML.
_TYPE_NAMES = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
               (dict, "a table"), (list, "an array"))


def _toml_type(value) -> str:
    return next((name for typ, name in _TYPE_NAMES if isinstance(value, typ)), "a date/time")


SHOW_MAX = 80  # characters of a value quoted in a message (a 100 KiB value is not shown whole)


def _show(value) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= SHOW_MAX else value[:SHOW_MAX]
        shown = shown.encode("unicode_escape", "backslashreplace").decode("ascii")
        more = f"... ({len(value)} characters)" if len(value) > SHOW_MAX else ""
        return '"' + shown.replace('"', '\\"') + '"' + more
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _toml_type(value)
    if isinstance(value, int) and abs(value) >= 10 ** SHOW_MAX:
        return f"an integer of {len(str(abs(value)))} digits"
    return str(value)


def _property(path) -> dict:
    """The schema of a key, found from the root (required keys are listed apart from
    their properties: see schema._required_unless_extends)."""
    node = inlined()
    for part in path:
        node = node.get("items", {}) if isinstance(part, int) else node.get("properties", {}).get(part, {})
    return node


def _convert(err) -> Iterator[Diagnostic]:
    path = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    kind = err.validator
    custom = schema.get("x-cgsc-message")
    instance = err.instance
    if kind == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        for key in sorted(k for k in instance if k not in schema.get("properties", {})):
            from difflib import get_close_matches  # only for a misspelt key
            close = get_close_matches(key, known, n=1)
            hint = f'did you mean "{close[0]}"? ' if close else ""
            hint += ("known keys: " + ", ".join(known)) if known else (
                f"keys are {custom}" if custom else "this table takes no keys")
            what = "unknown mechanism" if path == ("confidential",) else "unknown key"
            yield error("CGS-SCHEMA-001", path + (key,), what, hint)
    elif kind == "required":
        for key in err.validator_value:
            if key not in instance:
                prop = _property(path + (key,))
                hint = prop.get("x-cgsc-hint") or prop.get("description", "")
                where = "the spec" if not path else "this table"
                yield error("CGS-SCHEMA-002", path + (key,) if not path else path,
                            f"missing required key \"{key}\" in {where}", hint)
    elif kind == "type":
        expected = err.validator_value
        expected = [expected] if isinstance(expected, str) else expected
        names = " or ".join(_TOML_TYPES[t] for t in expected)
        got = _toml_type(instance)
        if isinstance(instance, str) and "string" in expected:
            got = "text with a lone surrogate (not Unicode text)"
        elif isinstance(instance, float) and "integer" in expected:
            got = f"the float {instance!r} (write whole numbers without a decimal point)"
        yield error("CGS-SCHEMA-003", path, f"expected {names}, got {got}",
                    schema.get("description", ""))
    elif kind in ("minProperties", "maxProperties") and path == ("confidential",):
        found = ", ".join(sorted(instance)) or "none"
        extra = list(instance)[1:2]  # point at the second table, not the first
        yield error("CGS-SCHEMA-005", path + tuple(extra),
                    f"needs exactly one mechanism table, found {len(instance)} ({found})",
                    "keep one of [confidential.sev], [confidential.sev-es], "
                    "[confidential.sev-snp], [confidential.tdx], [confidential.pef], "
                    "[confidential.s390-pv]")
    elif kind == "enum":
        rule = "CGS-SPEC-001" if path == ("spec-version",) else "CGS-SCHEMA-004"
        allowed = ", ".join(_show(v) for v in err.validator_value)
        noun = "versions this cgsc knows" if rule == "CGS-SPEC-001" else "expected one of"
        yield error(rule, path, f"{_show(instance)} is not allowed; {noun}: {allowed}",
                    schema.get("description", ""))
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        rng = f"{lo}..{hi}" if lo is not None and hi is not None else (
            f">= {lo}" if lo is not None else f"<= {hi}")
        yield error("CGS-SCHEMA-004", path, f"{_show(instance)} is out of range; expected {rng}",
                    schema.get("description", ""))
    else:  # pattern, minLength, and anything else: the schema says what it expects
        expected = custom or schema.get("description") or err.message
        yield error("CGS-SCHEMA-004", path, f"{_show(instance)} is not valid; expected {expected}")

"""The rules for the paths a spec names, in one place.

The schema's path patterns are made here (spec/schema.py puts them into the bundle, so
jsonschema and the compiled check use them), and code that must apply a rule before the
schema runs (the loader follows `extends` before validating) calls allowed() on the same
pattern: the two can never disagree.

Every pattern means the same in ECMA-262 (JSON Schema's dialect: editors and other
validators), in cgsc's validator (spec/validate.ecma_to_python) and in Python's `re`
(what a stock jsonschema uses). So none uses `.` (ECMA's excludes U+2028 and U+2029,
Python's only "\\n": `a\\u2028/../b` once passed the `..` check in one and not the other),
`\\s`, `\\d` or `\\w` (their sets differ), and no control character can reach a `$`
(Python's also matches before a final newline): controls are refused first, anywhere.
"""

from __future__ import annotations

import re
from functools import lru_cache

# C0 controls, DEL and C1 controls: never in a path (terminals, logs, unit files, XML).
CONTROLS = "\\x00-\\x1f\\x7f-\\x9f"
# ECMA-262's \s (WhiteSpace and LineTerminator), spelled out.
WHITESPACE = "\\t-\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"

_NO_CONTROL = f"(?![\\s\\S]*[{CONTROLS}])"
_NO_TRAILING = f"(?![\\s\\S]*[\\\\{WHITESPACE}]$)"    # a backslash or whitespace at the end
_COMPONENTS = "(/(?!\\.\\.?(/|$))[^/]+)+$"              # no empty, `.` or `..` component

# kind -> (pattern, maximum length in characters)
RULES = {
    # an absolute host path of a file or device
    "path": (f"^{_NO_CONTROL}{_NO_TRAILING}{_COMPONENTS}", 4095),
    # a device node under /dev (systemd's DeviceAllow= takes nothing else)
    "device-path": (f"^{_NO_CONTROL}/dev{_NO_TRAILING}{_COMPONENTS}", 4095),
    # a [measurement] file: absolute or relative to the spec, no `..` component
    "file": (f"^{_NO_CONTROL}(?![\\s\\S]*(^|/)\\.\\.(/|$))[\\s\\S]+$", 4096),
    # `extends`: relative to the file that says it (CGS-LOAD-007 keeps it in the repository)
    "extends": (f"^{_NO_CONTROL}(?!/)[\\s\\S]+$", 4095),
}


def pattern(kind: str) -> str:
    return RULES[kind][0]


def max_length(kind: str) -> int:
    return RULES[kind][1]


@lru_cache(maxsize=None)
def _compiled(kind: str):
    return re.compile(pattern(kind)).search


def allowed(kind: str, value: str) -> bool:
    """Whether `value` is a `kind` path by the schema's own pattern and length."""
    return 0 < len(value) <= max_length(kind) and _compiled(kind)(value) is not None


def has_control(value: str) -> bool:
    """A control character anywhere (what every path rule refuses first)."""
    return _CONTROL.search(value) is not None


_CONTROL = re.compile(f"[{CONTROLS}]")

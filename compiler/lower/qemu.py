"""QEMU command-line pieces: typed until the last moment, rendered by one escaper.

QEMU's key=value option syntax (QemuOpts) ends a value at the next `,`; a literal
comma is written `,,`. That is the only escaping the syntax has, so every value goes
through `keyval_escape` and nothing else builds these strings.
"""

from __future__ import annotations

import json
from typing import List, NamedTuple, Optional, Tuple, Union


class Hex(int):
    """An integer that reads best in hex (policies, attributes)."""

    def __repr__(self) -> str:
        return hex(self)


def keyval_escape(value: str) -> str:
    return value.replace(",", ",,")


def keyval_split(text: str) -> List[str]:
    """Inverse of the escaper: split an option string on single commas (for tests/readers)."""
    parts, cur, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                cur += ","
                i += 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    parts.append(cur)
    return parts


def opts_parse(text: str, implied: Optional[str] = None) -> List[Tuple[str, str]]:
    """(name, value) pairs as QEMU's QemuOpts parser reads an option string
    (util/qemu-option.c opts_do_parse, get_opt_name_value): a name ends at `=` or `,`
    and has no escape; a value ends at a single `,` (`,,` is a comma); a word without `=`
    is the `implied` option's value when it comes first (-device's driver), else a flag,
    `name=on` (`noname`: `name=off`). QEMU's qemu_opt_get takes the last of a repeated name."""
    out: List[Tuple[str, str]] = []
    i = 0
    while i < len(text):
        end = i
        while end < len(text) and text[end] not in "=,":
            end += 1
        if end < len(text) and text[end] == "=":
            name, (value, i) = text[i:end], _opt_value(text, end + 1)
        elif implied is not None and not out:
            name, (value, i) = implied, _opt_value(text, i)
        else:
            name, i = text[i:end], end
            name, value = (name[2:], "off") if name.startswith("no") else (name, "on")
        out.append((name, value))
        if i < len(text):   # at a single comma
            i += 1
        implied = None
    return out


# Python's parser recurses once per level and stops near 1000 (QEMU's reads up to 1024
# levels, qobject/json-streamer.c); no device property nests more than a few.
JSON_DEPTH = 512


def json_object(text: str) -> Optional[dict]:
    """An option in QEMU's JSON form (-device '{"driver": ...}') as a dict; None for
    anything else: not JSON, not an object, or nested deeper than JSON_DEPTH (counted
    before the parser recurses)."""
    from ..core.inputs import json_depth
    if json_depth(text, JSON_DEPTH)[0] > JSON_DEPTH:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):   # (a deep stack of the caller's own)
        return None
    return value if isinstance(value, dict) else None


def _opt_value(text: str, i: int) -> Tuple[str, int]:
    """QEMU's get_opt_value: the value from `i` to the next single comma, `,,` unescaped."""
    value = []
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] != ",":
                break
            i += 1
        value.append(text[i])
        i += 1
    return "".join(value), i


def global_option(text: str) -> Optional[Tuple[str, str, str]]:
    """(driver, property, value) of a `-global` argument as QEMU's qemu_global_option
    (system/qdev-monitor.c) reads it: `DRIVER.PROPERTY=VALUE` first (sscanf
    "%63[^.=].%63[^=]", the value is the rest, as is), else the QemuOpts form
    `driver=...,property=...,value=...`; None when QEMU refuses it."""
    dot = 0
    while dot < len(text) and text[dot] not in ".=":
        dot += 1
    if 0 < dot <= 63 and text[dot:dot + 1] == ".":
        eq = text.find("=", dot + 1)
        if dot + 1 < eq <= dot + 64:
            return text[:dot], text[dot + 1:eq], text[eq + 1:]
    opts = dict(opts_parse(text))
    opts.pop("id", None)   # QemuOpts takes `id` apart from the options
    if set(opts) != {"driver", "property", "value"}:
        return None
    return opts["driver"], opts["property"], opts["value"]


def _keyval_value(value: object) -> str:
    if isinstance(value, str):   # most values: tested first
        return keyval_escape(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Hex):
        return hex(value)
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"no key=value form for {value!r}")


Prop = Tuple[str, object]


class Opts(NamedTuple):
    """`head,key=value,...`: the key=value form (-machine, -device, -object, ...)."""
    head: Optional[str]
    props: Tuple[Prop, ...] = ()

    def render(self) -> str:
        parts = [keyval_escape(self.head)] if self.head is not None else []
        parts += [f"{k}={_keyval_value(v)}" for k, v in self.props]
        return ",".join(parts)

    def get(self, key: str, default: object = None) -> object:
        return dict(self.props).get(key, default)


class JsonOpts(NamedTuple):
    """The JSON form of an option (needed when a property nests, e.g. TDX's QGS address)."""
    props: Tuple[Prop, ...]

    def render(self) -> str:
        return json.dumps(dict(self.props), separators=(",", ":"), ensure_ascii=False)

    def get(self, key: str, default: object = None) -> object:
        return dict(self.props).get(key, default)


class QemuObject(NamedTuple):
    """A QOM object (-object): its type, id and properties in emission order."""
    qom_type: str
    id: str
    props: Tuple[Prop, ...] = ()
    json_form: bool = False

    def get(self, key: str, default: object = None) -> object:
        return dict(self.props).get(key, default)

    def option(self) -> "Option":
        head = (("qom-type", self.qom_type), ("id", self.id))
        if self.json_form:
            return Option("-object", JsonOpts(head + self.props))
        return Option("-object", Opts(self.qom_type, (("id", self.id),) + self.props))


class Option(NamedTuple):
    """One command-line option and its (optional) argument."""
    flag: str
    value: Union[Opts, JsonOpts, str, None] = None

    def words(self) -> Tuple[str, ...]:
        value = self.value
        if value is None:
            return (self.flag,)
        return (self.flag, value if isinstance(value, str) else value.render())

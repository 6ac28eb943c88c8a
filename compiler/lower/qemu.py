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

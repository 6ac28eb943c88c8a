"""A protobuf message as the two text forms the Go verifiers read: textproto (what their
`check` CLIs load, from a path ending in .textproto) and protojson (protobuf's canonical
JSON mapping). Only the kinds the verifier configs use; no dependency on protobuf.

A message is a tuple of Fields in field-number order. The encodings follow
protobuf's text format (bytes as C-escaped strings, here every byte as \\xNN, so the text
is ASCII whatever the bytes) and its JSON mapping (bytes as standard base64 with padding,
64-bit integers as decimal strings, wrappers as bare values); both are exactly what Go's
prototext and protojson parse (tests/go/verifiers).
"""

from __future__ import annotations

import base64
import json
from typing import List, NamedTuple, Tuple

BYTES, UINT32, UINT64, BOOL, MESSAGE, UINT32_VALUE = (
    "bytes", "uint32", "uint64", "bool", "message", "google.protobuf.UInt32Value")


class Field(NamedTuple):
    name: str          # the .proto field name (protojson accepts it as well as lowerCamelCase)
    kind: str
    value: object      # bytes / int / bool / Message; a list for a repeated field
    comment: str = ""  # textproto only: a `#` comment line above the field


Message = Tuple[Field, ...]


def _scalar_text(kind: str, value) -> str:
    if kind == BYTES:   # every byte as \xNN, formatted at once
        return '"' + ("\\x%02x" * len(value)) % tuple(value) + '"'
    if kind == BOOL:
        return "true" if value else "false"
    if kind == UINT64:
        return hex(int(value))   # text format integers may be hex; policy words read better
    return str(int(value))


def textproto(message: Message, header: Tuple[str, ...] = ()) -> str:
    """The message in protobuf text format, after `header` as `#` comment lines."""
    lines = [f"# {h}" if h else "#" for h in header]
    _text_lines(message, "", lines)
    return "\n".join(lines) + "\n"


def _text_lines(message: Message, indent: str, out: List[str]) -> None:
    for f in message:
        if f.comment:
            out.append(f"{indent}# {f.comment}")
        for value in (f.value if isinstance(f.value, list) else [f.value]):
            if f.kind == MESSAGE:
                if not value:
                    out.append(f"{indent}{f.name} {{}}")
                    continue
                out.append(f"{indent}{f.name} {{")
                _text_lines(value, indent + "  ", out)
                out.append(f"{indent}}}")
            elif f.kind == UINT32_VALUE:
                out.append(f"{indent}{f.name} {{ value: {int(value)} }}")
            else:
                out.append(f"{indent}{f.name}: {_scalar_text(f.kind, value)}")


def _json_value(kind: str, value):
    if kind == MESSAGE:
        return {f.name: _json_field(f) for f in value}
    if kind == BYTES:
        return base64.b64encode(value).decode("ascii")
    if kind == UINT64:
        return str(int(value))   # a JSON number loses precision above 2**53
    if kind == BOOL:
        return bool(value)
    return int(value)           # uint32, UInt32Value (a wrapper is its bare value)


def _json_field(f: Field):
    if isinstance(f.value, list):
        return [_json_value(f.kind, v) for v in f.value]
    return _json_value(f.kind, f.value)


def protojson(message: Message) -> str:
    return json.dumps(_json_value(MESSAGE, message), indent=2) + "\n"

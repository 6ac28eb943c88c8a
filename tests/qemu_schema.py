"""QEMU's own word on its -object types: the installed binary asked over QMP.

`query-qmp-schema` gives the structure of every `object-add` branch (members, enums,
unions such as SocketAddress); `qom-list-properties` gives each property's QOM type, which
keeps the integer widths the introspection folds into `int` (uint32 cbitpos, uint64
policy). Nothing is copied from QEMU's source: what a test checks against is what the
QEMU on this machine accepts.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Dict, Optional

from qmp import ask

_WIDTH = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64, "size": 64,
          "int8": 7, "int16": 15, "int32": 31, "int64": 63, "int": 63}


class QemuSchema:
    """One QEMU binary's -object types, from its QMP introspection."""

    def __init__(self, binary: str, qom_types=()):
        commands = [{"execute": "query-version"}, {"execute": "query-qmp-schema"}]
        commands += [{"execute": "qom-list-properties", "arguments": {"typename": t}}
                     for t in qom_types]
        answer = ask([binary, "-machine", "none", "-nodefaults", "-display", "none",
                      "-qmp", "stdio"], commands)
        replies = answer.replies
        assert len(replies) == len(commands), answer.said[-2000:] + answer.stderr
        version = replies[0]["return"]["qemu"]
        self.binary = binary
        self.version = (version["major"], version["minor"], version["micro"])
        self.entities = {e["name"]: e for e in replies[1]["return"]}
        self.qom: Dict[str, Optional[Dict[str, str]]] = {}
        for qom_type, reply in zip(qom_types, replies[2:]):
            self.qom[qom_type] = ({p["name"]: p["type"] for p in reply["return"]}
                                  if "return" in reply else None)
        options = self.entities[self.entities["object-add"]["arg-type"]]
        self.branches = {v["case"]: v["type"] for v in options.get("variants", ())}
        self.object_types = set(self.entities[_member(options, "qom-type")["type"]]["values"])

    @property
    def version_text(self) -> str:
        return ".".join(str(x) for x in self.version)

    def has(self, qom_type: str) -> bool:
        return qom_type in self.object_types

    def object_members(self, qom_type: str) -> Optional[Dict[str, str]]:
        """property -> type reference (a QOM integer type such as 'uint32', or an
        introspection entity); None when the type takes no properties. KeyError when this
        QEMU has no such type."""
        if qom_type not in self.object_types:
            raise KeyError(f"QEMU {self.version_text} ({self.binary}) has no -object {qom_type}")
        branch = self.branches.get(qom_type)
        if branch is None:
            return None
        widths = self.qom.get(qom_type) or {}
        members = {}
        for m in self.entities[branch]["members"]:
            typ = m["type"]
            if typ == "int" and widths.get(m["name"]) in _WIDTH:
                typ = widths[m["name"]]
            members[m["name"]] = typ
        return members

    def accepts(self, typ: str, value) -> bool:
        """Does a value as cgsc emits it (key=value text, or JSON for -object JSON) fit?"""
        if typ in _WIDTH:
            if isinstance(value, str):
                if not re.fullmatch(r"(0x[0-9a-fA-F]+|[0-9]+)", value):
                    return False
                value = int(value, 0)
            if not isinstance(value, int) or isinstance(value, bool):
                return False
            bits = _WIDTH[typ]
            low = 0 if typ.startswith("u") or typ == "size" else -(2 ** bits)
            return low <= value < 2 ** bits
        if typ == "bool":
            return value in (True, False, "on", "off")
        if typ == "str":
            return isinstance(value, str)
        entity = self.entities.get(typ, {})
        meta = entity.get("meta-type")
        if meta == "builtin":
            return self.accepts(entity["json-type"] if entity["json-type"] != "string" else "str", value)
        if meta == "enum":
            return value in entity["values"]
        if meta == "alternate":
            return any(self.accepts(m["type"], value) for m in entity["members"])
        if meta == "object":
            if not isinstance(value, dict):
                return False
            members = {m["name"]: m for m in entity["members"]}
            tag = entity.get("tag")
            if tag is not None:
                branch = next((v["type"] for v in entity.get("variants", ())
                               if v["case"] == value.get(tag)), None)
                if branch is None:
                    return False
                members.update({m["name"]: m for m in self.entities[branch]["members"]})
            required = {n for n, m in members.items() if "default" not in m}
            return required <= set(value) and all(
                k in members and (k == tag or self.accepts(members[k]["type"], v))
                for k, v in value.items())
        return False


def _member(entity: dict, name: str) -> dict:
    return next(m for m in entity["members"] if m["name"] == name)


@lru_cache(maxsize=None)
def introspect(binary: str) -> QemuSchema:
    return QemuSchema(binary, CONFIDENTIAL_TYPES)


CONFIDENTIAL_TYPES = ("sev-guest", "sev-snp-guest", "tdx-guest", "pef-guest", "s390-pv-guest")

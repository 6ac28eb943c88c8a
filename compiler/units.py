"""Derived values: memory sizes, deterministic UUIDs and MAC addresses."""

from __future__ import annotations

import hashlib
import re
import uuid

_UNITS = {"M": 1, "MiB": 1, "G": 1024, "GiB": 1024, "T": 1024 * 1024, "TiB": 1024 * 1024}
_SIZE = re.compile(r"^([1-9][0-9]*)\s*(MiB|GiB|TiB|M|G|T)$")
# A fixed namespace, so the same guest name gives the same UUID on every machine.
_NAMESPACE = uuid.UUID("6c1f0d0e-7a7b-5d55-9c1e-63677363c001")


def memory_mib(value) -> int:
    """4096 -> 4096; "8GiB" -> 8192 (the schema has already checked the form)."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    return int(m.group(1)) * _UNITS[m.group(2)]


def derived_uuid(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"cgsc/guest/{name}"))


def derived_mac(name: str, index: int) -> str:
    digest = hashlib.sha256(f"cgsc/mac/{name}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])

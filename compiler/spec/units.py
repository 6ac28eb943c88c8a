"""Derived values: memory sizes, deterministic UUIDs and MAC addresses."""

from __future__ import annotations

import hashlib
import re

_UNITS = {"M": 1, "MiB": 1, "G": 1024, "GiB": 1024, "T": 1024 * 1024, "TiB": 1024 * 1024}
_SIZE = re.compile(r"^([1-9][0-9]*)\s*(MiB|GiB|TiB|M|G|T)$")
# A fixed namespace, so the same guest name gives the same UUID on every machine.
_NAMESPACE = bytes.fromhex("6c1f0d0e7a7b5d559c1e63677363c001")


def memory_mib(value) -> int:
    """4096 -> 4096; "8GiB" -> 8192 (the schema has already checked the form)."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    return int(m.group(1)) * _UNITS[m.group(2)]


def derived_uuid(name: str) -> str:
    """uuid.uuid5(_NAMESPACE, "cgsc/guest/" + name) as text (RFC 9562: SHA-1 of namespace
    and name, version 5, the RFC variant), without importing uuid: it loads `platform` and
    more, a few milliseconds of every run (tests/test_units.py compares the two)."""
    name_bytes = f"cgsc/guest/{name}".encode("utf-8")
    digest = bytearray(hashlib.sha1(_NAMESPACE + name_bytes, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50   # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80   # variant 10
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def derived_mac(name: str, index: int) -> str:
    digest = hashlib.sha256(f"cgsc/mac/{name}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])

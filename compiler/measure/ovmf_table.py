"""The GUIDed table at the end of an OVMF/TDVF image (edk2 OvmfPkg/ResetVector).

A format check only, never a measurement: the last 32 bytes of the image hold the reset
vector; the 18 bytes before them are the footer entry (u16 size, GUID 96b582de-...), and
the table's entries ({data, u16 size, GUID}) are stacked backwards in front of it.
"""

from __future__ import annotations

import struct
import uuid
from typing import Dict, List, Optional, Tuple

FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
_ENTRY = 18          # u16 size + 16-byte GUID
_TAIL = 32           # the reset vector area after the table


def table_entries(image: bytes) -> Optional[List[Tuple[str, bytes]]]:
    """(GUID as a lowercase string, entry data) from the footer backwards, the order in
    which QEMU searches them (hw/i386/pc_sysfw_ovmf.c); None when the image has no table
    or any entry's size runs outside it."""
    end = len(image) - _TAIL
    start = end - _ENTRY
    if start < 0:
        return None
    size, guid = struct.unpack_from("<H16s", image, start)
    if uuid.UUID(bytes_le=guid) != FOOTER_GUID or size < _ENTRY or size > start + _ENTRY:
        return None
    table = image[start - (size - _ENTRY):start]
    out: List[Tuple[str, bytes]] = []
    while len(table) >= _ENTRY:
        size, guid = struct.unpack_from("<H16s", table, len(table) - _ENTRY)
        if size < _ENTRY or size > len(table):
            return None   # a broken table is no table
        out.append((str(uuid.UUID(bytes_le=guid)), table[len(table) - size:len(table) - _ENTRY]))
        table = table[:len(table) - size]
    return out


def guided_table(image: bytes) -> Optional[Dict[str, bytes]]:
    """GUID (lowercase string) -> entry data; None when the image has no table."""
    entries = table_entries(image)
    return None if entries is None else dict(entries)

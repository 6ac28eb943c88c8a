"""TDVF metadata (Intel TDX Virtual Firmware Design Guide, section 11; edk2
OvmfPkg/ResetVector/X64/IntelTdxMetadata.asm): the sections QEMU adds to a TD.

cgsc parses it only to refuse a firmware that QEMU would refuse (the same rules as
QEMU's hw/i386/tdvf.c); MRTD is not computed here.
"""

from __future__ import annotations

import struct
from typing import List, NamedTuple, Optional, Tuple

from .ovmf_table import guided_table

METADATA_OFFSET_GUID = "e47a6535-984a-4798-865e-4685a7bf8ec2"
SIGNATURE = b"TDVF"
VERSION = 1
PAGE = 4096
# Section types QEMU accepts, and whether each carries bytes from the image.
TYPES = {0: ("BFV", True), 1: ("CFV", True), 2: ("TD_HOB", False), 3: ("TempMem", False)}
MR_EXTEND = 1 << 0
_HEADER = struct.Struct("<4sIII")          # Signature, Length, Version, NumberOfSectionEntries
_SECTION = struct.Struct("<IIQQII")        # DataOffset, RawDataSize, MemoryAddress,
                                           # MemoryDataSize, Type, Attributes


class Section(NamedTuple):
    type: str
    data_offset: int
    raw_size: int
    address: int
    size: int
    attributes: int


def parse(image: bytes) -> Tuple[Optional[List[Section]], str]:
    """(sections, "") for a TDVF image QEMU accepts, else (None, why not)."""
    table = guided_table(image)
    if table is None:
        return None, "it has no OVMF GUIDed footer table (not an OVMF/TDVF image)"
    entry = table.get(METADATA_OFFSET_GUID)
    if entry is None or len(entry) < 4:
        return None, "its footer table has no TDX metadata offset (GUID e47a6535-...)"
    offset = len(image) - struct.unpack_from("<I", entry)[0]
    if offset < 0 or offset + _HEADER.size > len(image):
        return None, "its TDX metadata offset points outside the image"
    sig, length, version, count = _HEADER.unpack_from(image, offset)
    if sig != SIGNATURE:
        return None, "the TDX metadata has no TDVF signature"
    if version != VERSION:
        return None, f"the TDX metadata is version {version}; QEMU knows version {VERSION}"
    if count < 2 or length != _HEADER.size + count * _SECTION.size \
            or offset + length > len(image):
        return None, f"the TDX metadata is malformed ({count} sections in {length} bytes)"
    sections = []
    for i in range(count):
        data_offset, raw, addr, size, kind, attrs = _SECTION.unpack_from(
            image, offset + _HEADER.size + i * _SECTION.size)
        if kind not in TYPES:
            return None, f"TDX metadata section {i} has type {kind}, which QEMU does not load"
        name, has_data = TYPES[kind]
        if size < raw or addr % PAGE or size % PAGE:
            return None, f"TDX metadata section {i} ({name}) is not page-aligned or too small"
        if has_data != (raw != 0) or data_offset + raw > len(image):
            return None, f"TDX metadata section {i} ({name}) has a bad data range"
        sections.append(Section(name, data_offset, raw, addr, size, attrs))
    if not any(s.type == "BFV" for s in sections):
        return None, "the TDX metadata has no BFV (firmware code) section"
    return sections, ""

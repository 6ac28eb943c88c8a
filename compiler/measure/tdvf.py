"""TDVF metadata (Intel TDX Virtual Firmware Design Guide, section 11; edk2
OvmfPkg/ResetVector/X64/IntelTdxMetadata.asm): the sections QEMU adds to a TD, which
MRTD is measured over (measure/mrtd.py).

Parsed defensively, because the image is input: every offset, length, count and section
bound is checked against the file and against the other sections before anything is
read through it. An image is refused (TdvfError, naming the field) when QEMU or KVM
would refuse it (QEMU hw/i386/tdvf.c, hw/i386/pc_sysfw_ovmf.c, x86_bios_rom_init; Linux
tdx_vcpu_init_mem_region) and when it is outside what cgsc can measure exactly (a section
whose launched bytes are not all in the file, PAGE.AUG, measured HOB or temporary memory).
"""

from __future__ import annotations

import struct
from typing import List, NamedTuple, Tuple

from .ovmf_table import table_entries

METADATA_OFFSET_GUID = "e47a6535-984a-4798-865e-4685a7bf8ec2"
SIGNATURE = b"TDVF"
VERSION = 1
PAGE = 4096
BIOS_ALIGN = 64 << 10          # QEMU loads a -bios image only in whole 64 KiB blocks
MAX_GPA = 1 << 52              # the widest TD guest physical address (GPAW 52)
MAX_SECTION_BYTES = 1 << 30    # all sections together; real TDVF images add ~5 MiB
MAX_SECTIONS = 1024            # real TDVF images have 6 or 7
# Section type -> (name, carries bytes from the image)
TYPES = {0: ("BFV", True), 1: ("CFV", True), 2: ("TD_HOB", False), 3: ("TempMem", False)}
MR_EXTEND = 1 << 0             # the section's bytes are extended into MRTD (TDH.MR.EXTEND)
PAGE_AUG = 1 << 1              # the guest accepts the pages later (TDH.MEM.PAGE.AUG)
_HEADER = struct.Struct("<4sIII")          # Signature, Length, Version, NumberOfSectionEntries
_SECTION = struct.Struct("<IIQQII")        # DataOffset, RawDataSize, MemoryAddress,
                                           # MemoryDataSize, Type, Attributes


class TdvfError(ValueError):
    """The image cannot be launched as a TD, or cannot be measured exactly."""

    def __init__(self, field: str, message: str, not_tdvf: bool = False):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.not_tdvf = not_tdvf   # no TDX metadata at all (an OVMF without TDX support)


class Section(NamedTuple):
    index: int
    type: str
    data_offset: int
    raw_size: int
    address: int
    size: int
    attributes: int

    @property
    def extend(self) -> bool:
        return bool(self.attributes & MR_EXTEND)

    @property
    def name(self) -> str:
        return f"section {self.index} ({self.type})"


class Metadata(NamedTuple):
    offset: int                  # of the TDVF descriptor in the image
    length: int
    sections: Tuple[Section, ...]


def parse(image: bytes) -> Metadata:
    """The TDVF metadata of a firmware image; raises TdvfError."""
    entries = table_entries(image)
    if entries is None:
        raise TdvfError("OVMF GUIDed table", "missing or broken (the image is not an "
                        "OVMF/TDVF build)", not_tdvf=True)
    found = [data for guid, data in entries if guid == METADATA_OFFSET_GUID]
    if not found:
        raise TdvfError("OVMF GUIDed table", f"has no TDX metadata offset entry (GUID "
                        f"{METADATA_OFFSET_GUID})", not_tdvf=True)
    if len(found) > 1:
        raise TdvfError("TDX metadata offset entry", f"appears {len(found)} times")
    if len(image) % BIOS_ALIGN:
        raise TdvfError("image size", f"{len(image)} bytes is not a whole number of 64 KiB "
                        "blocks, so QEMU does not load it as -bios")
    if len(found[0]) != 4:
        raise TdvfError("TDX metadata offset entry", f"holds {len(found[0])} bytes, not a "
                        "4-byte offset")
    distance = struct.unpack("<I", found[0])[0]
    offset = len(image) - distance
    if offset < 0 or offset + _HEADER.size > len(image):
        raise TdvfError("TDX metadata offset", f"{distance:#x} from the end of the image puts "
                        "the TDVF descriptor outside the image")
    signature, length, version, count = _HEADER.unpack_from(image, offset)
    if signature != SIGNATURE:
        raise TdvfError("TDVF descriptor Signature", f"is {signature!r}, not b'TDVF'")
    if version != VERSION:
        raise TdvfError("TDVF descriptor Version", f"is {version}; QEMU knows version {VERSION}")
    if count < 2 or count > MAX_SECTIONS:
        raise TdvfError("TDVF descriptor NumberOfSectionEntries",
                        f"is {count}; QEMU needs at least 2, and cgsc measures at most "
                        f"{MAX_SECTIONS}")
    if length != _HEADER.size + count * _SECTION.size:
        raise TdvfError("TDVF descriptor Length", f"is {length}, but {count} sections take "
                        f"{_HEADER.size + count * _SECTION.size} bytes")
    if offset + length > len(image):
        raise TdvfError("TDVF descriptor Length", f"{count} sections from offset {offset:#x} "
                        "run past the end of the image")
    sections = tuple(_section(image, offset, i) for i in range(count))
    _check_together(sections)
    return Metadata(offset, length, sections)


def _section(image: bytes, offset: int, i: int) -> Section:
    data_offset, raw, address, size, kind, attributes = _SECTION.unpack_from(
        image, offset + _HEADER.size + i * _SECTION.size)
    if kind not in TYPES:
        raise TdvfError(f"section {i} Type", f"is {kind}, which QEMU does not load "
                        "(0 BFV, 1 CFV, 2 TD_HOB, 3 TempMem)")
    name, has_data = TYPES[kind]
    s = Section(i, name, data_offset, raw, address, size, attributes)
    if attributes & ~(MR_EXTEND | PAGE_AUG):
        raise TdvfError(f"{s.name} Attributes", f"{attributes:#x} sets reserved bits")
    if attributes & PAGE_AUG:
        raise TdvfError(f"{s.name} Attributes", "PAGE.AUG is set: QEMU adds such pages "
                        "like any other while the TDVF design and the independent MRTD "
                        "calculators leave them out, so MRTD cannot be predicted")
    if size == 0:
        raise TdvfError(f"{s.name} MemoryDataSize", "is 0 (KVM refuses an empty region)")
    for field, value in (("MemoryAddress", address), ("MemoryDataSize", size)):
        if value % PAGE:
            raise TdvfError(f"{s.name} {field}", f"{value:#x} is not a multiple of 4 KiB")
    if address + size > MAX_GPA:
        raise TdvfError(f"{s.name} MemoryAddress", f"{address:#x} + {size:#x} ends beyond "
                        "the 52-bit guest physical address space")
    if size < raw:
        raise TdvfError(f"{s.name} MemoryDataSize", f"{size:#x} is smaller than RawDataSize "
                        f"{raw:#x}")
    if not has_data:
        if raw:
            raise TdvfError(f"{s.name} RawDataSize", f"is {raw:#x}, but QEMU takes no bytes "
                            f"of {name} from the image")
        if s.extend:
            raise TdvfError(f"{s.name} Attributes", f"MR.EXTEND on {name}, whose content QEMU "
                            "makes at launch: MRTD cannot be predicted")
        return s
    if raw == 0:
        raise TdvfError(f"{s.name} RawDataSize", f"is 0, but QEMU copies {name} from the image")
    if data_offset % PAGE:
        raise TdvfError(f"{s.name} DataOffset", f"{data_offset:#x} is not a multiple of 4 KiB "
                        "(KVM copies whole pages from a page-aligned source)")
    # QEMU hands KVM MemoryDataSize bytes from DataOffset: all of them must be in the file.
    if data_offset + size > len(image):
        raise TdvfError(f"{s.name} DataOffset", f"{data_offset:#x} + MemoryDataSize {size:#x} "
                        f"runs past the end of the {len(image)}-byte image")
    if s.extend and raw != size:
        raise TdvfError(f"{s.name} RawDataSize", f"{raw:#x} differs from MemoryDataSize "
                        f"{size:#x}: QEMU would measure image bytes past the section")
    return s


def _check_together(sections: Tuple[Section, ...]) -> None:
    total = sum(s.size for s in sections)
    if total > MAX_SECTION_BYTES:
        raise TdvfError("sections", f"add {total:#x} bytes to the TD, more than the "
                        f"{MAX_SECTION_BYTES >> 20} MiB cgsc measures")
    if not any(s.type == "BFV" for s in sections):
        raise TdvfError("sections", "have no BFV (the firmware code)")
    hobs = sum(s.type == "TD_HOB" for s in sections)
    if hobs != 1:   # QEMU exits without one, and writes the HOB list into the first only
        raise TdvfError("sections", f"have {hobs} TD_HOB sections; QEMU needs exactly one")
    _no_overlap(sorted(sections, key=lambda s: s.address), "MemoryAddress",
                lambda s: (s.address, s.size))
    _no_overlap(sorted((s for s in sections if s.raw_size), key=lambda s: s.data_offset),
                "DataOffset", lambda s: (s.data_offset, s.size))


def _no_overlap(ordered: List[Section], field: str, span) -> None:
    for a, b in zip(ordered, ordered[1:]):
        start_a, size_a = span(a)
        start_b, _size_b = span(b)
        if start_b < start_a + size_a:
            raise TdvfError(f"{b.name} {field}", f"{start_b:#x} overlaps {a.name} "
                            f"({start_a:#x} + {size_a:#x})")

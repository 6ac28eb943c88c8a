"""What an AMD SEV launch takes from an OVMF image, read defensively before any digest.

The GUIDed table entries QEMU uses (target/i386/sev.c, hw/i386/pc_sysfw_ovmf.c): the SEV-ES
reset block (the APs' reset address), the SEV hashes table area (kernel-hashes) and the
SEV metadata (edk2 OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm: "ASEV", u32 length,
u32 version, u32 count, then per section u32 gpa, u32 size, u32 type), whose sections an
SEV-SNP launch adds as zero, secrets, CPUID or kernel-hashes pages.

sev-snp-measure reads the same entries without checking them: a crafted image makes it
raise (AssertionError, ValueError, AttributeError...), loop over 4 GiB of pages, or
print a digest for an image QEMU reads otherwise. `problems` names, field by field, what
no launch can use as sev-snp-measure measures it; only an image without problems is
handed to the library.
"""

from __future__ import annotations

import struct
from typing import List, NamedTuple, Optional

from .ovmf_table import table_entries

RESET_BLOCK = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
HASHES_TABLE = "7255371f-3a3b-4b04-927b-1da6efa8d454"
METADATA = "dc886566-984a-4798-a75e-5585a7bf67cc"
PAGE = 4096
FOUR_GIB = 1 << 32
HASHES_TABLE_SIZE = 176   # QEMU's PaddedSevHashTable (and sev-snp-measure's)
# Section types sev-snp-measure measures (QEMU launches any other type as zero pages).
SECTION_TYPES = {1: "SNP_SEC_MEM", 2: "SNP_SECRETS", 3: "CPUID", 4: "SVSM_CAA",
                 0x10: "SNP_KERNEL_HASHES"}
ONE_PAGE = (2, 3)         # sev-snp-measure measures one secrets/CPUID page, whatever the size
_HEADER = struct.Struct("<4sIII")
_SECTION = struct.Struct("<III")


class Section(NamedTuple):
    gpa: int
    size: int
    type: int


MAX_SECTIONS = 1024       # real AmdSevX64 builds have 5 or 6; the bound keeps a crafted
#                           count from costing gigabytes (here, and in the library's parse)


class Facts(NamedTuple):
    """What an image's SEV entries say, read once per image; `problems` judges them for
    one guest."""
    size: int                          # of the image
    table: Optional[dict]              # GUID -> entry data; None: no GUIDed table
    duplicates: List[str]              # problems of the table itself
    sections: List[Section]            # the SEV metadata sections
    broken: List[str]                  # problems of the SEV metadata

    @property
    def sound(self) -> bool:
        """No problem whatever the guest: the library may parse the image."""
        return self.table is not None and not self.duplicates and not self.broken


def facts(image) -> Facts:
    entries = table_entries(image)
    if entries is None:
        return Facts(len(image), None, [], [], [])
    seen, duplicates = set(), []
    for guid, _data in entries:
        if guid in seen:
            duplicates.append(f"its GUIDed table lists {guid} twice (QEMU uses the entry "
                              "nearest the footer, sev-snp-measure the farthest)")
        seen.add(guid)
    table = dict(entries)
    sections, broken = _metadata(image, table.get(METADATA))
    return Facts(len(image), table, duplicates, sections, broken)


def problems(image, mechanism: str, kernel_hashes: bool, memory: int,
             found: Optional[Facts] = None) -> List[str]:
    """What keeps the image from being measured for `mechanism` ("sev", "sev-es",
    "sev-snp") with a guest of `memory` bytes; [] for a sound image. An image without a
    GUIDed table is the caller's to refuse (no problem is reported for it). `found`: the
    image's facts(), when known (then `image` is not read)."""
    found = facts(image) if found is None else found
    if found.table is None:
        return []
    out = list(found.duplicates)
    if mechanism != "sev":
        out += _reset_block(found.table.get(RESET_BLOCK))
    if kernel_hashes:
        out += _hashes_table(found.table.get(HASHES_TABLE), mechanism)
    out += found.broken
    if mechanism == "sev-snp":
        if found.size % PAGE:
            out.append(f"it is {found.size} bytes, not a multiple of 4 KiB (SEV-SNP adds the "
                       "firmware in 4 KiB pages)")
        out += _sections(found.sections, found.size, kernel_hashes, memory)
    return out


def _reset_block(data: Optional[bytes]) -> List[str]:
    if data is None:
        return [f"its GUIDed table has no SEV-ES reset block ({RESET_BLOCK}), where the "
                "application processors start"]
    if len(data) < 4:
        return [f"its SEV-ES reset block entry holds {len(data)} bytes, 4 are needed"]
    if not struct.unpack_from("<I", data)[0]:
        return ["its SEV-ES reset block address is 0 (QEMU: \"SEV-ES reset address is zero\")"]
    return []


def _hashes_table(data: Optional[bytes], mechanism: str) -> List[str]:
    if data is None or len(data) < 4 or not struct.unpack_from("<I", data)[0]:
        return []   # no table: the firmware has no kernel-hashes support (CGS-MEASURE-012)
    if len(data) < 8:
        return [f"its SEV hashes table entry holds {len(data)} bytes, 8 are needed"]
    base, size = struct.unpack_from("<II", data)
    if size < HASHES_TABLE_SIZE:
        return [f"its SEV hashes table area is {size} bytes at {base:#x}; QEMU needs "
                f"{HASHES_TABLE_SIZE} (\"guest firmware hashes table area is invalid\")"]
    if mechanism == "sev-snp" and base % PAGE + HASHES_TABLE_SIZE > PAGE:
        return [f"its SEV hashes table at {base:#x} crosses a 4 KiB page"]
    return []


def _metadata(image: bytes, data: Optional[bytes]):
    """(sections, problems) of the SEV metadata; no entry: no sections."""
    if data is None:
        return [], []
    if len(data) < 4:
        return [], [f"its SEV metadata entry holds {len(data)} bytes, 4 are needed"]
    offset = struct.unpack_from("<I", data)[0]
    if not _HEADER.size <= offset <= len(image):
        return [], [f"its SEV metadata offset {offset:#x} is outside the image "
                    f"({_HEADER.size:#x}..{len(image):#x} bytes from the end)"]
    start = len(image) - offset
    signature, length, version, count = _HEADER.unpack_from(image, start)
    if signature != b"ASEV" or version != 1:
        return [], [f"its SEV metadata at {start:#x} has signature {signature!r} version "
                    f"{version}, not b'ASEV' version 1"]
    if count > MAX_SECTIONS:
        return [], [f"its SEV metadata at {start:#x} says it has {count} sections; OVMF "
                    f"builds have a handful, cgsc measures at most {MAX_SECTIONS}"]
    need = _HEADER.size + _SECTION.size * count
    if length < need or start + length > len(image):
        return [], [f"its SEV metadata length {length:#x} does not hold its {count} sections "
                    f"({need:#x} bytes) inside the image"]
    return [Section(*_SECTION.unpack_from(image, start + _HEADER.size + _SECTION.size * i))
            for i in range(count)], []


def _sections(sections: List[Section], image_size: int, kernel_hashes: bool,
              memory: int) -> List[str]:
    out: List[str] = []
    below = min(memory, FOUR_GIB - image_size)   # guest RAM, below the firmware
    for i, s in enumerate(sections):
        what = f"its SEV metadata section {i} ({s.gpa:#x}, {s.size:#x} bytes, type {s.type:#x})"
        if s.type not in SECTION_TYPES:
            out.append(f"{what} has a type sev-snp-measure cannot measure (known: "
                       + ", ".join(f"{t:#x} {n}" for t, n in SECTION_TYPES.items()) + ")")
        elif s.gpa % PAGE or s.size % PAGE or not s.size:
            out.append(f"{what} is not a whole number of 4 KiB pages")
        elif s.gpa + s.size > below:
            out.append(f"{what} ends beyond the guest's {below:#x} bytes of RAM below the "
                       "firmware (QEMU: \"Failed to get HVA\")")
        elif s.size != PAGE and (s.type in ONE_PAGE or (s.type == 0x10 and kernel_hashes)):
            out.append(f"{what} is not one page: QEMU adds every page of it, sev-snp-measure "
                       "one")
    ordered = sorted((s.gpa, s.gpa + s.size, i) for i, s in enumerate(sections))
    for (_a, end, i), (start, _b, j) in zip(ordered, ordered[1:]):
        if start < end:
            out.append(f"its SEV metadata sections {i} and {j} overlap")
    return out

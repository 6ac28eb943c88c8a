"""Synthetic firmware images built from the published layouts, for the firmware checks.

The OVMF GUIDed footer table and the SEV metadata follow edk2 OvmfPkg/ResetVector
(ResetVectorVtf0.asm, X64/OvmfSevMetadata.asm); the TDVF metadata follows the TDVF Design
Guide (section 11) as QEMU's hw/i386/tdvf.c reads it. They are independent of cgsc's own
parser, so a test built on them checks the parser against the layout, not against itself.
"""

from __future__ import annotations

import struct
import uuid

FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
SEV_ES_RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
SEV_METADATA_GUID = "dc886566-984a-4798-a75e-5585a7bf67cc"
SEV_HASH_TABLE_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"
TDX_METADATA_OFFSET_GUID = "e47a6535-984a-4798-865e-4685a7bf8ec2"
SNP_SEC_MEM, SNP_SECRETS, CPUID, SNP_KERNEL_HASHES = 1, 2, 3, 0x10
BFV, CFV, TD_HOB, TEMP_MEM = 0, 1, 2, 3
MR_EXTEND, PAGE_AUG = 1, 2   # TDVF section attributes
METADATA_AT = 0x100   # where the metadata blobs sit in the image


def _entry(guid: str, data: bytes) -> bytes:
    return data + struct.pack("<H", len(data) + 18) + uuid.UUID(guid).bytes_le


def guided_image(entries, blob: bytes = b"", size: int = 4096) -> bytes:
    """An image of `size` bytes: `blob` at METADATA_AT, the GUIDed table before the last
    32 bytes (the reset vector), entries stacked in front of the footer entry."""
    table = b"".join(_entry(g, d) for g, d in entries)
    footer = struct.pack("<H", len(table) + 18) + uuid.UUID(FOOTER_GUID).bytes_le
    tail = table + footer + b"\xf4" * 32     # hlt instructions stand in for the reset vector
    body = bytearray(size - len(tail))
    body[METADATA_AT:METADATA_AT + len(blob)] = blob
    return bytes(body) + tail


def amd_image(sections=((0x800000, 0x1000, SNP_SEC_MEM), (0x801000, 0x1000, SNP_SECRETS),
                        (0x802000, 0x1000, CPUID)),
              hashes_table: bool = False, size: int = 4096) -> bytes:
    """An OVMF-like image with SEV metadata (`sections`: (gpa, size, type)); with
    `hashes_table`, the SEV hashes table entry and an SNP_KERNEL_HASHES section too."""
    sections = list(sections)
    entries = [(SEV_ES_RESET_BLOCK_GUID, struct.pack("<I", 0xfffff000))]
    if hashes_table:
        sections.append((0x803000, 0x1000, SNP_KERNEL_HASHES))
        entries.append((SEV_HASH_TABLE_GUID, struct.pack("<II", 0x803c00, 0x400)))
    blob = b""
    if sections:
        blob = struct.pack("<4sIII", b"ASEV", 16 + 12 * len(sections), 1, len(sections))
        blob += b"".join(struct.pack("<III", *s) for s in sections)
        entries.append((SEV_METADATA_GUID, struct.pack("<I", size - METADATA_AT)))
    return guided_image(entries, blob, size)


def tdvf_image(size: int = 65536, sections=None, signature: bytes = b"TDVF") -> bytes:
    """A TDVF-like image (QEMU loads -bios images in 64 KiB blocks): BFV (the whole image,
    measured), TD_HOB and TempMem sections."""
    if sections is None:
        sections = [(0, size, (1 << 32) - size, size, BFV, 1),
                    (0, 0, 0x809000, 0x2000, TD_HOB, 0),
                    (0, 0, 0x80b000, 0x1000, TEMP_MEM, 0)]
    blob = struct.pack("<4sIII", signature, 16 + 32 * len(sections), 1, len(sections))
    blob += b"".join(struct.pack("<IIQQII", *s) for s in sections)
    return guided_image([(TDX_METADATA_OFFSET_GUID, struct.pack("<I", size - METADATA_AT))],
                        blob, size)


# The committed images of tests/invalid/support, and how each is made.
SUPPORT = {
    "amd-sev-no-hashes.fd": lambda: amd_image(),
    "ovmf-no-sev-metadata.fd": lambda: amd_image(sections=()),
    "amd-sev-overlapping-sections.fd": lambda: amd_image(
        sections=((0x800000, 0x2000, SNP_SEC_MEM), (0x801000, 0x1000, SNP_SECRETS))),
    "tdvf.fd": lambda: tdvf_image(),
    "tdvf-page-aug.fd": lambda: tdvf_image(sections=[
        (0, 65536, (1 << 32) - 65536, 65536, BFV, MR_EXTEND),
        (0, 0, 0x809000, 0x2000, TD_HOB, 0), (0, 0, 0x80b000, 0x1000, TEMP_MEM, PAGE_AUG)]),
}

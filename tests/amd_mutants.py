"""Crafted AMD firmware: mutants of a real OVMF image's GUIDed table and SEV metadata.

The layout comes from edk2 OvmfPkg/ResetVector (ResetVectorVtf0.asm, X64/OvmfSevMetadata.asm),
located in the image by walking its footer table, independently of cgsc's parsers: the
footer entry (u16 size, GUID 96b582de-...) ends 32 bytes before the end of the image, the
entries ({data, u16 size, GUID}) are stacked backwards in front of it, and the SEV metadata
entry (GUID dc886566-...) holds the metadata's distance from the end of the image. The
metadata is "ASEV", u32 size, u32 version, u32 count, then (u32 gpa, u32 size, u32 type)
per section.

`mutants(image, count, seed)` yields (what, bytes): each mutant changes one field to a
boundary or random value, flips bytes inside the table or the metadata, or truncates the
image, so that every parser path (footer, entry sizes, metadata offset, header, sections,
the reset block and the hashes table entry) meets bad data.
"""

from __future__ import annotations

import random
import struct
import uuid
from typing import Dict, Iterator, List, Tuple

FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
SEV_METADATA_GUID = "dc886566-984a-4798-a75e-5585a7bf67cc"
RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
HASH_TABLE_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"

U16 = (0, 1, 2, 17, 18, 19, 20, 22, 0x7fff, 0x8000, 0xfffe, 0xffff)
U32 = (0, 1, 0xf, 0x10, 0x11, 0xfff, 0x1000, 0x1001, 0x7fffffff, 0x80000000, 0xfffff000,
       0xffffffff)


class Layout:
    """Where the fields are, as offsets into the image."""

    def __init__(self, image: bytes):
        end = len(image) - 32
        size, guid = struct.unpack_from("<H16s", image, end - 18)
        assert guid == FOOTER_GUID, "not an OVMF image with a GUIDed table"
        self.footer_size_at = end - 18
        self.table_start = end - size
        self.entries: Dict[str, Tuple[int, int]] = {}   # guid -> (size field at, data at)
        pos = end - 18
        while pos > self.table_start:
            esize, eguid = struct.unpack_from("<H16s", image, pos - 18)
            self.entries[str(uuid.UUID(bytes_le=eguid))] = (pos - 18, pos - esize)
            pos -= esize
        _size_at, data_at = self.entries[SEV_METADATA_GUID]
        self.metadata_offset_at = data_at
        self.metadata_at = len(image) - struct.unpack_from("<I", image, data_at)[0]
        signature, msize, _version, count = struct.unpack_from("<4sIII", image, self.metadata_at)
        assert signature == b"ASEV"
        self.metadata_size = msize
        self.sections: List[int] = [self.metadata_at + 16 + 12 * i for i in range(count)]


def _put(image: bytearray, fmt: str, at: int, value: int) -> None:
    struct.pack_into(fmt, image, at, value)


def mutants(image: bytes, count: int, seed: int = 20) -> Iterator[Tuple[str, bytes]]:
    """`count` mutants of `image`, deterministically from `seed`."""
    rng = random.Random(seed)
    lay = Layout(image)
    meta = lay.metadata_at
    fields = ([("footer size", "<H", lay.footer_size_at, U16)]
              + [(f"entry {g[:8]} size", "<H", at, U16) for g, (at, _d) in lay.entries.items()]
              + [("metadata offset", "<I", lay.metadata_offset_at,
                  U32 + (len(image), len(image) - 1, len(image) + 1, 15, 16, 17))]
              + [("metadata signature", "<I", meta, (0, 0x56455341, 0x56455340)),
                 ("metadata size", "<I", meta + 4, U32 + (16 + 12 * len(lay.sections) - 1,)),
                 ("metadata version", "<I", meta + 8, (0, 2, 0xffffffff)),
                 ("metadata count", "<I", meta + 12, U32 + (len(lay.sections) + 1, 1000))])
    for i, at in enumerate(lay.sections):
        fields += [(f"section {i} gpa", "<I", at, U32 + (0x800800, 0xffffe000)),
                   (f"section {i} size", "<I", at + 4, U32 + (0x2000, 0x100000, 0x10000000)),
                   (f"section {i} type", "<I", at + 8, (0, 1, 2, 3, 4, 5, 0xf, 0x10, 0x11, 0xffffffff))]
    for guid, name in ((RESET_BLOCK_GUID, "reset block"), (HASH_TABLE_GUID, "hashes table")):
        if guid in lay.entries:
            at = lay.entries[guid][1]
            fields.append((f"{name} address", "<I", at, U32 + (0x810f80, 0x810ff0, 0x810fff)))
    flip_from, flip_to = min(lay.table_start, meta), len(image) - 32
    for n in range(count):
        out = bytearray(image)
        kind = n % 10
        if kind < 6:   # one field, a boundary value or a random one
            name, fmt, at, values = rng.choice(fields)
            limit = 0xffff if fmt == "<H" else 0xffffffff
            value = rng.choice(values) if rng.random() < 0.7 else rng.randint(0, limit)
            _put(out, fmt, at, value)
            what = f"{name} = {value:#x}"
        elif kind < 9:   # bytes flipped in the table or the metadata
            spots = sorted(rng.sample(range(flip_from, flip_to), rng.randint(1, 4)))
            for at in spots:
                out[at] ^= rng.randint(1, 255)
            what = "flipped bytes at " + ", ".join(f"-{len(image) - at}" for at in spots)
        else:   # truncated: the end moves, so the footer and every offset move with it
            cut = rng.choice((rng.randint(1, 64), rng.randint(1, len(image) - 1)))
            out = out[:len(image) - cut] if rng.random() < 0.5 else out[cut:]
            what = f"{cut} bytes cut from the {'end' if len(out) and out[-32:] != image[-32:] else 'start'}"
        yield what, bytes(out)

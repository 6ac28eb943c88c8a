"""MRTD, the TD's build-time measurement, from a TDVF image's metadata.

The TDX module starts MRTD as an empty SHA-384 stream and feeds it, as QEMU hands it the
TDVF sections in metadata order (KVM_TDX_INIT_MEM_REGION):
- TDH.MEM.PAGE.ADD, per 4 KiB page: a 128-byte record, "MEM.PAGE.ADD" at byte 0 and the
  page's guest physical address (u64 little-endian) at byte 16, zeros elsewhere;
- TDH.MR.EXTEND, for a section with the MR.EXTEND attribute, per 256-byte chunk: a
  128-byte record, "MR.EXTEND" and the chunk's address, followed by the chunk's 256 bytes.
The result is the digest (Intel TDX Module Base ABI: TDH.MEM.PAGE.ADD, TDH.MR.EXTEND).

Two orderings exist, and they give different digests:
- single pass: each page is added, then extended, before the next page (upstream Linux
  KVM, tdx_gmem_post_populate, with QEMU >= 10.1);
- two pass: a section's pages are all added, then all extended (the QEMU 8.2 TDX stack of
  Ubuntu 24.04).
The sections come from measure/tdvf.py, which has checked every bound used here.
"""

from __future__ import annotations

import hashlib

from .tdvf import PAGE, Metadata

SINGLE_PASS = "single-pass"
TWO_PASS = "two-pass"
ORDERS = (SINGLE_PASS, TWO_PASS)
CHUNK = 256
_PAGE_ADD = b"MEM.PAGE.ADD".ljust(16, b"\0")
_MR_EXTEND = b"MR.EXTEND".ljust(16, b"\0")
_TAIL = bytes(128 - 16 - 8)


def _record(tag: bytes, gpa: int) -> bytes:
    return tag + gpa.to_bytes(8, "little") + _TAIL


def _extend(h, image: memoryview, offset: int, gpa: int) -> None:
    """The 16 TDH.MR.EXTEND calls of one page: its bytes at `offset` in the image."""
    for i in range(0, PAGE, CHUNK):
        h.update(_record(_MR_EXTEND, gpa + i))
        h.update(image[offset + i:offset + i + CHUNK])


def mrtd(image: bytes, metadata: Metadata, order: str = SINGLE_PASS) -> bytes:
    """The 48-byte MRTD of a TD launched from `image` with this page ordering."""
    if order not in ORDERS:
        raise ValueError(f"unknown page order {order!r}")
    h = hashlib.sha384()
    view = memoryview(image)
    for s in metadata.sections:
        pages = range(0, s.size, PAGE)
        if order == SINGLE_PASS:
            for page in pages:
                h.update(_record(_PAGE_ADD, s.address + page))
                if s.extend:
                    _extend(h, view, s.data_offset + page, s.address + page)
        else:
            for page in pages:
                h.update(_record(_PAGE_ADD, s.address + page))
            if s.extend:
                for page in pages:
                    _extend(h, view, s.data_offset + page, s.address + page)
    return h.digest()

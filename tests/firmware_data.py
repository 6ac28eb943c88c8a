"""The firmware images in tests/data/firmware (see its README.md), unpacked and checked.

They are stored xz-compressed; `unpack` writes them into a directory, checks each against
its sha256 and returns name -> path. Tests take them from the session fixture `firmware`
(tests/conftest.py), so each session unpacks them once; bench/ calls `unpack` itself.
"""

from __future__ import annotations

import hashlib
import lzma
import os
from typing import Dict

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "firmware")

TDX = "OVMF.inteltdx.ms.fd"            # Debian ovmf-inteltdx: TDVF
AMDSEV = "OVMF.amdsev.fd"              # Debian ovmf-amdsev: AmdSevX64 (also has TDVF metadata)
TRIXIE = "OVMF.trixie-2025.02.fd"      # Debian 13 ovmf OVMF.fd: OvmfPkgX64, variables + code
AMD_SUFFIX = "ovmf_AmdSev_suffix.bin"  # sev-snp-measure's fixtures: last 4 KiB of AmdSevX64
OVMFX64_SUFFIX = "ovmf_OvmfX64_suffix.bin"  # ... and of OvmfPkgX64 (no kernel hashes)

# stored path (under DATA, without .xz) -> sha256 of the uncompressed bytes
SHA256 = {
    TDX: "a265075b4147a096109e501e76196df1ec8a18659c26f7401492c597ec88f312",
    AMDSEV: "3e4fd0b3fe3b2dbe481c3d9e99418a034174f26cbe1f55aa212b0f18c12d2d6f",
    TRIXIE: "14954040cc754ade0c625ac3470ea46d4c14318b5b1396de4ef77090203d76db",
    "sev-snp-measure/" + AMD_SUFFIX:
        "8f765dfabc127fc0a938a0744a3103ec15864d7d794eb4c398aa976b6d6ab16c",
    "sev-snp-measure/" + OVMFX64_SUFFIX:
        "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da",
}


def unpack(directory: str) -> Dict[str, str]:
    """Decompress every image into `directory`: file name -> path."""
    out = {}
    for stored, sha256 in SHA256.items():
        with lzma.open(os.path.join(DATA, stored + ".xz")) as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"{DATA}/{stored}.xz does not unpack to sha256 {sha256}")
        path = os.path.join(directory, os.path.basename(stored))
        with open(path, "wb") as fh:
            fh.write(data)
        out[os.path.basename(stored)] = path
    return out

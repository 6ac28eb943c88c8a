"""AMD SEV, SEV-ES, SEV-SNP: firmware checks and launch digests with sev-snp-measure.

Imported only when a spec has [measurement], so a plain build never loads the library.
The measurement itself is the library's; the AMD mechanism module checks the firmware
with these helpers first (its rules say what is wrong), because the library prints a
digest even for a firmware with no SEV metadata.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import struct
from importlib import metadata
from typing import List, Optional, Tuple

from cryptography.exceptions import UnsupportedAlgorithm
from sevsnpmeasure import guest as sev_guest
from sevsnpmeasure import vcpu_types
from sevsnpmeasure.ovmf import OVMF, SectionType
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vmm_types import VMMType

LIBRARY = "sev-snp-measure"
MODES = {"sev": SevMode.SEV, "sev-es": SevMode.SEV_ES, "sev-snp": SevMode.SEV_SNP}
VMM = VMMType.QEMU
KEY_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)   # a PEM that is no P-384 key
# What the library raises on a firmware it cannot read (it checks little itself; cgsc's
# firmware checks come first, these are the net under them).
LIBRARY_ERRORS = (AssertionError, AttributeError, IndexError, KeyError, OverflowError,
                  RuntimeError, TypeError, ValueError, struct.error, OSError)


def library() -> dict:
    return {"library": LIBRARY, "version": metadata.version(LIBRARY)}


def known_vcpu_types() -> List[str]:
    return sorted(vcpu_types.CPU_SIGS)


def read_image(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def read_ovmf(path: str) -> Tuple[Optional[OVMF], Optional[str]]:
    """The library's view of an OVMF image (one that has a GUIDed table): (OVMF, None),
    or (None, why) for a table the library cannot read."""
    try:
        return OVMF(path), None
    except LIBRARY_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}"


def has_sev_metadata(ovmf: OVMF) -> bool:
    return bool(ovmf.metadata_items())


def has_snp_kernel_hashes(ovmf: OVMF) -> bool:
    return ovmf.has_metadata_section(SectionType.SNP_KERNEL_HASHES)


def has_sev_hashes_table(ovmf: OVMF) -> bool:
    return ovmf.is_sev_hashes_table_supported()


def cpu_signature(name: str) -> Optional[int]:
    """The CPUID signature the library knows for a QEMU CPU model, or None."""
    return vcpu_types.CPU_SIGS.get(name)


def launch_digest(mechanism: str, vcpus: int, signature: int, firmware: str,
                  kernel: Optional[str], initrd: Optional[str], cmdline: Optional[str],
                  features: int) -> bytes:
    return sev_guest.calc_launch_digest(MODES[mechanism], vcpus, signature, firmware,
                                        kernel, initrd, cmdline, features, vmm_type=VMM)


def key_digest(pem_path: str) -> bytes:
    """SHA-384 of the public key as the SNP report's ID_KEY_DIGEST/AUTHOR_KEY_DIGEST has it."""
    from sevsnpmeasure import id_block
    return id_block.pub_to_digest(id_block.load_private_key_from_pem_file(pem_path))


def sign_id_block(digest: bytes, policy: int, id_key: str, author_key: Optional[str],
                  family_id: bytes = bytes(16), image_id: bytes = bytes(16), guest_svn: int = 0):
    """(id-block, id-auth) as base64, for this digest, policy and ID fields.

    The library's structures and key encoding, with two departures from its
    snp_calc_id_block: the ID block carries the guest's own policy (the firmware refuses
    a launch whose policy differs from the ID block's) and ID fields, and signatures are
    RFC 6979 deterministic, so the same spec and keys give byte-identical artifacts."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from sevsnpmeasure import id_block as ib

    def sign(key, data: bytes) -> bytes:
        der = key.sign(data, ec.ECDSA(hashes.SHA384(), deterministic_signing=True))
        r, s = utils.decode_dss_signature(der)
        return bytes(ib.SnpSignature(sig_r=ib.SigR.from_buffer_copy(r.to_bytes(0x48, "little")),
                                     sig_s=ib.SigS.from_buffer_copy(s.to_bytes(0x48, "little"))))

    idk = ib.load_private_key_from_pem_file(id_key)
    block = ib.IdBlock(launch_digest=ib.LaunchDigest.from_buffer_copy(digest),
                       version=ib.DefaultVersion, policy=policy)
    # The library's `ids` (FAMILY_ID, IMAGE_ID) and `guest_svn` are c_char arrays, which
    # ctypes fills as C strings (nothing after a NUL): the bytes are copied in instead.
    for field, data in (("ids", family_id + image_id),
                        ("guest_svn", guest_svn.to_bytes(4, "little"))):
        at = ctypes.addressof(block) + getattr(ib.IdBlock, field).offset
        ctypes.memmove(at, data, len(data))
    auth = ib.IdAuth(id_key_algo=ib.DefaultKeyAlgo, auth_key_algo=ib.DefaultKeyAlgo,
                     block_sig=ib.ECSignature.from_buffer_copy(sign(idk, bytes(block))),
                     id_key=ib.ECPubKey.from_buffer_copy(ib.marshal_ec_public_key(idk)))
    if author_key:
        ak = ib.load_private_key_from_pem_file(author_key)
        auth.id_key_sig = ib.ECSignature.from_buffer_copy(sign(ak, ib.marshal_ec_public_key(idk)))
        auth.author_key = ib.ECPubKey.from_buffer_copy(ib.marshal_ec_public_key(ak))
    return (base64.b64encode(bytes(block)).decode(), base64.b64encode(bytes(auth)).decode())


def sha384_hex(data: bytes) -> str:
    return hashlib.sha384(data).hexdigest()

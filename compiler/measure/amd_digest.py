"""AMD SEV, SEV-ES, SEV-SNP: firmware checks and launch digests with sev-snp-measure.

Imported only when a spec has [measurement], so a plain build never loads the library.
The measurement itself is the library's; the AMD mechanism module checks the firmware
with these helpers first (its rules say what is wrong), because the library prints a
digest even for a firmware with no SEV metadata.

A fleet measures the same firmware for many guests, so the library's steps are taken
apart where its own functions allow it, and byte-identical results are tested against
its calc_launch_digest and its command line (tests/measure/test_fleet_digests.py):
- once per firmware image: its OVMF object (the GUIDed table and SEV metadata, parsed
  from the bytes cgsc read: its constructor would read the file again) and, for SEV-SNP,
  the guest context after the firmware pages (the seed calc_snp_ovmf_hash gives and
  calc_launch_digest takes as snp_ovmf_hash_str) and after the metadata sections that
  precede the kernel hashes; for SEV and SEV-ES the sha256 of the image is the hash cgsc
  computed as it read it;
- per guest: the library's SevHashes (with the kernel and initrd digests of the one read
  of each file), its remaining metadata sections (snp_update_section, in
  snp_update_metadata_pages's order) and its VMSA pages.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import os
import struct
from functools import lru_cache
from typing import List, NamedTuple, Optional

from sevsnpmeasure import guest as sev_guest
from sevsnpmeasure import vcpu_types
from sevsnpmeasure.gctx import GCTX
from sevsnpmeasure.ovmf import FOUR_GB, OVMF, SectionType
from sevsnpmeasure.sev_hashes import SevHashes
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vmm_types import VMMType
from sevsnpmeasure.vmsa import VMSA

from . import sev_metadata

LIBRARY = "sev-snp-measure"
VMM = VMMType.QEMU
# What the library raises on a firmware it cannot read (it checks little itself; cgsc's
# firmware checks come first, these are the net under them).
LIBRARY_ERRORS = (AssertionError, AttributeError, IndexError, KeyError, OverflowError,
                  RuntimeError, TypeError, ValueError, struct.error, OSError)


def library() -> dict:
    import sevsnpmeasure

    from ..core.installed import version
    return {"library": LIBRARY, "version": version(LIBRARY, sevsnpmeasure.__file__)}


def known_vcpu_types() -> List[str]:
    return sorted(vcpu_types.CPU_SIGS)


class _Image(OVMF):
    """The library's OVMF over bytes cgsc has read and checked (its constructor opens a
    path and reads the file: a second copy of it). It keeps what the per-guest steps use
    (the GUIDed table, the SEV metadata, the firmware's address), not the bytes."""

    def __init__(self, data) -> None:   # as OVMF.__init__(path, end_at=FOUR_GB), from bytes
        self._data = data
        try:
            self._parse_footer_table()
            self._parse_sev_metadata()
            self._gpa = FOUR_GB - len(data)
        finally:
            self._data = None


class Firmware(NamedTuple):
    """What an AMD launch digest takes from one firmware image, found once per image."""
    facts: sev_metadata.Facts     # cgsc's reading of its SEV entries (checked per guest)
    ovmf: Optional[OVMF]          # the library's, when the facts let it parse the image
    broken: Optional[str]         # why the library could not parse it


def firmware(data) -> Firmware:
    """The firmware's facts and, only for an image whose SEV entries are sound (a crafted
    count or offset never reaches the library), the library's parse of it."""
    found = sev_metadata.facts(data)
    if not found.sound:
        return Firmware(found, None, None)
    try:
        return Firmware(found, _Image(data), None)
    except LIBRARY_ERRORS as exc:
        return Firmware(found, None, f"{type(exc).__name__}: {exc}")


class SnpStart(NamedTuple):
    """Where every SEV-SNP guest of one firmware image starts: the launch digest after the
    firmware's pages and after the metadata sections before the first one that depends on
    the guest (the kernel hashes), and those remaining sections."""
    pages: bytes                 # what calc_snp_ovmf_hash computes (snp_ovmf_hash_str)
    seed: bytes                  # ... and after the guest-independent metadata sections
    rest: tuple                  # the metadata sections still to measure, per guest


def snp_start(ovmf: OVMF, data) -> SnpStart:
    """The SEV-SNP steps that depend only on the firmware: its pages
    (GCTX.update_normal_pages, as calc_snp_ovmf_hash) and, in the library's order
    (snp_update_metadata_pages), its metadata sections up to the first SNP_KERNEL_HASHES
    one (with VMMType.QEMU no other section depends on the guest)."""
    gctx = GCTX()
    gctx.update_normal_pages(ovmf.gpa(), data)
    pages = gctx.ld()
    items = list(ovmf.metadata_items())
    first = next((i for i, d in enumerate(items)
                  if d.section_type() == SectionType.SNP_KERNEL_HASHES), len(items))
    for desc in items[:first]:
        sev_guest.snp_update_section(desc, gctx, ovmf, None, VMM)
    return SnpStart(pages, gctx.ld(), tuple(items[first:]))


def has_sev_metadata(ovmf: OVMF) -> bool:
    return bool(ovmf.metadata_items())


def has_snp_kernel_hashes(ovmf: OVMF) -> bool:
    return ovmf.has_metadata_section(SectionType.SNP_KERNEL_HASHES)


def has_sev_hashes_table(ovmf: OVMF) -> bool:
    return ovmf.is_sev_hashes_table_supported()


def cpu_signature(name: str) -> Optional[int]:
    """The CPUID signature the library knows for a QEMU CPU model, or None."""
    return vcpu_types.CPU_SIGS.get(name)


def before_vmsas(mechanism: str, image: Firmware, image_sha256, snp: Optional[SnpStart],
                 kernel: Optional[bytes], initrd: Optional[bytes], cmdline: Optional[str]):
    """The launch digest of calc_launch_digest(<the mechanism's mode>, ..., <firmware>,
    <kernel>, <initrd>, cmdline, ..., vmm_type=QEMU) as it stands before the VMSA pages,
    from the firmware's parts found once: `image_sha256`, the sha256 object after the
    image's last byte (SEV, SEV-ES); `snp`, snp_start() (SEV-SNP). `kernel`, `initrd`: the
    sha256 digests of those files (None: not measured; kernel None means no
    kernel-hashes), which the library's SevHashes takes by reading each file whole.
    Returns the SEV-SNP guest context's digest, or (SEV, SEV-ES) the sha256 object, which
    launch_digest copies."""
    ovmf = image.ovmf
    hashes = _hashes(kernel, initrd, cmdline) if kernel is not None else None
    if mechanism == "sev-snp":   # guest.snp_calc_launch_digest, from snp_start()
        gctx = GCTX(seed=snp.seed)
        for desc in snp.rest:    # the rest of snp_update_metadata_pages
            sev_guest.snp_update_section(desc, gctx, ovmf, hashes, VMM)
        if hashes is not None and not ovmf.has_metadata_section(SectionType.SNP_KERNEL_HASHES):
            raise RuntimeError("Kernel specified but OVMF metadata doesn't include "
                               "SNP_KERNEL_HASHES section")
        return gctx.ld()
    launch = image_sha256.copy()   # hashlib.sha256(ovmf.data()), where the library starts
    if hashes is not None:   # guest.seves_calc_launch_digest, sev_calc_launch_digest
        if not ovmf.is_sev_hashes_table_supported():
            raise RuntimeError("Kernel specified but OVMF doesn't support kernel/initrd/"
                               "cmdline measurement")
        launch.update(hashes.construct_table())
    return launch


def launch_digest(mechanism: str, vcpus: int, signature: int, features: int, image: Firmware,
                  before) -> bytes:
    """The launch digest: before_vmsas() and then, for SEV-ES and SEV-SNP, the VMSA pages
    of this guest's vCPUs, as calc_launch_digest adds them."""
    if mechanism == "sev-snp":
        gctx = GCTX(seed=before)
        eip = image.ovmf.sev_es_reset_eip()
        for page in _vmsa(SevMode.SEV_SNP, eip, signature, features).pages(vcpus):
            gctx.update_vmsa_page(page)
        return gctx.ld()
    launch = before.copy()
    if mechanism == "sev-es":
        eip = image.ovmf.sev_es_reset_eip()
        for page in _vmsa(SevMode.SEV_ES, eip, signature, 0x0).pages(vcpus):
            launch.update(page)
    return launch.digest()


@lru_cache(maxsize=64)
def _vmsa(mode: SevMode, eip: int, signature: int, features: int) -> VMSA:
    """The library's VMSA (its two save areas), made once per set of inputs: a fleet's
    guests share a few."""
    return VMSA(mode, eip, signature, features, VMM)


@lru_cache(maxsize=64)
def _hashes(kernel: bytes, initrd: Optional[bytes], cmdline: Optional[str]) -> SevHashes:
    """The library's SevHashes for these file digests: it hashes the command line itself
    (and, with no initrd, the empty one); the files are not read again (os.devnull stands
    for each while it is made)."""
    hashes = SevHashes(os.devnull, None, cmdline)
    hashes.kernel_hash = kernel
    if initrd is not None:
        hashes.initrd_hash = initrd
    return hashes


def key_errors() -> tuple:
    """What loading a PEM that is no P-384 key raises (cryptography is imported only for
    an ID block: a fleet without one never loads it)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    return (ValueError, TypeError, UnsupportedAlgorithm)


def private_key(pem: bytes):
    """A P-384 private key from PEM bytes, as the library's load_private_key_from_pem_file
    loads one from a file (the same checks and message)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = serialization.load_pem_private_key(bytes(pem), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    raise ValueError("The provided PEM file does not contain an EC private key.")


def key_digest(key) -> bytes:
    """SHA-384 of the public key as the SNP report's ID_KEY_DIGEST/AUTHOR_KEY_DIGEST has it."""
    from sevsnpmeasure import id_block
    return id_block.pub_to_digest(key)


def sign_id_block(digest: bytes, policy: int, id_key, author_key,
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

    idk = id_key
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
        ak = author_key
        auth.id_key_sig = ib.ECSignature.from_buffer_copy(sign(ak, ib.marshal_ec_public_key(idk)))
        auth.author_key = ib.ECPubKey.from_buffer_copy(ib.marshal_ec_public_key(ak))
    return (base64.b64encode(bytes(block)).decode(), base64.b64encode(bytes(auth)).decode())


def sha384_hex(data: bytes) -> str:
    return hashlib.sha384(data).hexdigest()

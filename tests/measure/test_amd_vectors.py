"""SEV, SEV-ES and SEV-SNP launch digests of Debian's real OVMF.amdsev.fd through `cgsc build`.

The vectors S1-S10 were computed with the sev-snp-measure 0.0.13 command-line tool (defaults
--vmm-type QEMU, --guest-features 0x1) on Debian's ovmf-amdsev 2026.08+ds-2 image
(tests/data/firmware): K is 1,048,576 bytes of 0x4B, I 262,144 bytes of 0x49, the command
line `console=ttyS0 root=/dev/vda`, the vCPUs EPYC-v4. SEV-ES is measured on the
KVM_SEV_INIT2 path (legacy-vm-type = "off"), the one sev-snp-measure reproduces; S6 is the
SNP digest of the firmware pages alone (sev-snp-measure --snp-ovmf-hash), the state the
full SNP digest continues from.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import compile_plan, run_cli
from measure_helpers import spec_text, write

AMDSEV = "OVMF.amdsev.fd"
AMDSEV_SHA256 = "3e4fd0b3fe3b2dbe481c3d9e99418a034174f26cbe1f55aa212b0f18c12d2d6f"
K = b"\x4b" * 1048576
I = b"\x49" * 262144
APPEND = "console=ttyS0 root=/dev/vda"
S6 = ("9d0dd8be18c86e3fe3bf0038ed75ebf5340bee69fd2632c8ff9409964575960a"
      "e1f7e84be387d2e3467bc3508d1e4806")

VECTORS = {   # name: (mechanism, vCPUs, inputs, digest)
    "S1": ("sev-snp", 1, "firmware", "d74bd3ea40b240c3228edc5177ce6193561ebff633dbd0be76d6c143b876d651"
                                     "02425c0e2e8a930857c48daa5eacda58"),
    "S2": ("sev-snp", 4, "firmware", "13a6ae9fbaa31c91ade309c36bd5214729438abac318e01176e02a97b8bec11a"
                                     "4bce86b4d2b1fba2ec0481dd24ff525f"),
    "S3": ("sev-snp", 1, "K I append", "3f38c865390434c9282038b57f19910bff1492b5740066b7b9cf8a1b5b75ca02"
                                       "81246be282e7ceb6767b4948f7cb4451"),
    "S4": ("sev-snp", 4, "K I append", "489583523d00c0ce483aa267bfc0d3a918b207dee1437bfafbc0b394d8ceb37b"
                                       "217f29bf33555498806336a1c7187471"),
    "S5": ("sev-snp", 1, "K", "c0e89d8ae38aee63e6668e1cbe57435e9c1efb641dd9dca7288abbbe2ddadc3f"
                              "8e8f08b03918f029e7385f9db6875862"),
    "S7": ("sev-es", 2, "firmware", "9851d5fecb322196a2fea09a2a3667bab221add8e8b69ab3d2637e813fa2e1b7"),
    "S8": ("sev-es", 2, "K I append", "18b3c17ee4b5bcbfafacb5520cbba66dfbb01fb13ee766b7c3b86250cc91ddaa"),
    "S9": ("sev", 1, "firmware", AMDSEV_SHA256),
    "S10": ("sev", 1, "K I append", "98379596e3f9fa25f2c4f200e6986053389ae8dd94729a0485aae13ddc66dd34"),
}


def _build(name, firmware, tmp_path):
    mechanism, vcpus, inputs, _digest = VECTORS[name]
    (tmp_path / "K").write_bytes(K)
    (tmp_path / "I").write_bytes(I)
    spec = write(tmp_path / "g.toml", spec_text(
        name.lower(), mechanism, firmware[AMDSEV], vcpus=vcpus,
        cpu="EPYC-v4" if mechanism != "sev" else None,
        kernel="K" if "K" in inputs else None, initrd="I" if "I" in inputs else None,
        cmdline=APPEND if "append" in inputs else None))
    out = tmp_path / "out"
    code, _o, err = run_cli("build", spec, "-o", str(out))
    assert code == 0, err
    return spec, json.loads((out / name.lower() / "manifest.json").read_text())["attestation"]


@pytest.mark.parametrize("name", sorted(VECTORS, key=lambda n: int(n[1:])))
def test_vector_through_cgsc_build(name, firmware, tmp_path):
    _spec, att = _build(name, firmware, tmp_path)
    assert att["launch-digest"] == VECTORS[name][3]
    assert att["files"][0]["sha256"] == AMDSEV_SHA256
    if "K" in VECTORS[name][2]:
        kernel = next(f for f in att["files"] if f["role"] == "kernel")
        assert kernel["sha256"] == "5c946b385a61fab9eecc3ce616161b70f98e7023fd99904195af496cfa5d9d40"
        assert att["inputs"]["cmdline"] == (APPEND if "append" in VECTORS[name][2] else None)


def test_s6_is_where_the_snp_digest_of_s1_starts(firmware, tmp_path):
    """S6 covers the firmware pages only; seeded with it, the library reaches cgsc's S1."""
    from sevsnpmeasure import guest, vcpu_types
    from sevsnpmeasure.sev_mode import SevMode
    from sevsnpmeasure.vmm_types import VMMType
    assert guest.calc_snp_ovmf_hash(firmware[AMDSEV]).hex() == S6
    _spec, att = _build("S1", firmware, tmp_path)
    seeded = guest.calc_launch_digest(SevMode.SEV_SNP, 1, vcpu_types.CPU_SIGS["EPYC-v4"],
                                      firmware[AMDSEV], None, None, None, 0x1,
                                      snp_ovmf_hash_str=S6, vmm_type=VMMType.QEMU)
    assert att["launch-digest"] == seeded.hex() == VECTORS["S1"][3]


def test_s9_is_the_firmware_sha256(firmware):
    with open(firmware[AMDSEV], "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == VECTORS["S9"][3]


def test_snp_vectors_are_the_report_measurement(firmware, tmp_path):
    _spec, att = _build("S4", firmware, tmp_path)
    assert att["report"]["measurement"] == att["launch-digest"] == VECTORS["S4"][3]
    assert att["inputs"]["guest-features"] == "0x1" and att["inputs"]["vcpu-signature"] == "0x800f12"
    assert compile_plan(_spec).attestation == att

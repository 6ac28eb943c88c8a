"""Real QEMU 10.0 (Debian bookworm-backports) runs every command line cgsc emits, exactly
as emitted (`-accel kvm` kept), and stops only where the host refuses at run time: no SEV
hardware, no SEV-SNP in KVM, no KVM for the guest's architecture. A parse or property error
never appears; a wrong property in the same harness is rejected, so the check can fail."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest
from conftest import missing
from helpers import VALID_SPECS, compile_plan, rel
from test_qemu import materialize, relocated, run_qemu

# What QEMU 10.0 says when the host, not the command line, is the problem (QEMU sources:
# target/i386/sev.c, accel/kvm/kvm-all.c, hw/ppc/pef.c; qemu.md §10-11).
NO_KVM = "Could not access KVM kernel module"
RUNTIME_REFUSALS = {
    "sev": ("sev_common_kvm_init: cbitpos check failed", "sev_common_kvm_init: Failed to open",
            NO_KVM),
    "sev-es": ("sev_common_kvm_init: cbitpos check failed", "sev_common_kvm_init: Failed to open",
               NO_KVM),
    "sev-snp": ("vm-type SEV-SNP not supported by KVM", NO_KVM),
    # x86 host: the ppc64 binary has no KVM at all; -accel kvm is refused after the
    # -object (pef-guest) was created and the machine options applied.
    "pef": ("-accel kvm: invalid accelerator kvm", "PEF requires KVM"),
    # s390-pv-guest is only built into an s390x host's QEMU (KVM-only object)
    "s390-pv": ("invalid object type: s390-pv-guest",),
    # tdx-guest arrived in QEMU 10.1
    "tdx": ("Parameter 'qom-type' does not accept value 'tdx-guest'",),  # JSON -object form
}
PARSE_ERRORS = ("Invalid parameter", "Property '", "Parameter '", "is not a valid",
                "parameter length", "Could not open", "unsupported machine type")


@pytest.fixture(scope="session")
def qemu10():
    """name -> path of a QEMU 10.0 binary on PATH (Debian 12 + backports; .ci/run installs it)."""
    def find(name: str) -> str:
        path = shutil.which(name)
        if path:
            out = subprocess.run([path, "-version"], capture_output=True, text=True).stdout
            if out.startswith("QEMU emulator version 10.0."):
                return path
        missing(f"QEMU 10.0 {name} is not on PATH (.ci/run installs it from backports)")
    return find


def argv10(plan, qemu10):
    """The emitted argv, byte for byte, but for the binary's path."""
    return [qemu10(os.path.basename(plan.emulator))] + plan.argv()[1:]


SPECS = [s for s in VALID_SPECS if compile_plan(s).confidential.mechanism in RUNTIME_REFUSALS]


@pytest.mark.parametrize("spec", SPECS, ids=rel)
def test_real_qemu_10_parses_the_command_line_and_stops_only_at_the_host(spec, qemu10, tmp_path):
    plan = relocated(spec, str(tmp_path / "r"))
    materialize(plan)
    result = run_qemu(argv10(plan, qemu10), preconfig=False)
    assert result.returncode == 1, result.stderr
    refusals = RUNTIME_REFUSALS[plan.confidential.mechanism]
    assert any(r in result.stderr for r in refusals), result.stderr
    if plan.confidential.mechanism not in ("s390-pv", "tdx"):
        assert not any(e in result.stderr for e in PARSE_ERRORS), result.stderr


def test_every_x86_mechanism_and_both_other_architectures_are_covered():
    mechanisms = {compile_plan(s).confidential.mechanism for s in SPECS}
    assert {"sev", "sev-es", "sev-snp", "pef", "s390-pv"} <= mechanisms


def _spec(name):
    return [s for s in VALID_SPECS if s.endswith(name)][0]


@pytest.mark.parametrize("name,edit,error", [
    ("examples/sev-snp.toml", ",bogus=1", "Invalid parameter 'bogus'"),
    ("examples/sev.toml", ",bogus=1", "Invalid parameter 'bogus'"),
    ("examples/pef.toml", ",bogus=1", "Invalid parameter 'bogus'"),
    # a host-data of 3 bytes, not 32: QEMU 10.0 checks the length while parsing
    ("examples/sev-snp.toml", ",host-data=" + base64.b64encode(b"abc").decode(),
     "parameter length of 3 not equal to 32"),
], ids=["snp-bogus", "sev-bogus", "pef-bogus", "snp-short-host-data"])
def test_a_wrong_object_property_is_rejected_by_qemu_10(name, edit, error, qemu10, tmp_path):
    plan = relocated(_spec(name), str(tmp_path / "r"))
    materialize(plan)
    argv = argv10(plan, qemu10)
    i = argv.index("-object") + 1
    if "host-data=" in edit:  # replace the spec's value rather than repeat the key
        argv[i] = ",".join(p for p in argv[i].split(",") if not p.startswith("host-data="))
    argv[i] += edit
    result = run_qemu(argv, preconfig=False)
    assert result.returncode == 1
    assert error in result.stderr, result.stderr
    assert not any(r in result.stderr for r in RUNTIME_REFUSALS[plan.confidential.mechanism])

"""Shared pieces of the [measurement] tests: spec text, sev-snp-measure's test vectors."""

from __future__ import annotations

import json

from firmware_data import AMD_SUFFIX, OVMFX64_SUFFIX
from helpers import run_cli

MECH = {"snp": "sev-snp", "seves": "sev-es", "sev": "sev"}
# short name -> file name in the `firmware` fixture (tests/data/firmware/sev-snp-measure)
FIRMWARE = {"AmdSev": AMD_SUFFIX, "OvmfX64": OVMFX64_SUFFIX}


def toml_str(value) -> str:
    return json.dumps(value)   # a JSON string is a valid TOML basic string


def spec_text(name, mechanism, firmware, vcpus=1, cpu=None, kernel=None, initrd=None,
              cmdline=None, features=None, launch_dir="/var/lib/guests", extra="",
              measurement=None, legacy_vm_type="off"):
    """A spec whose [measurement] names build-time copies; QEMU launches from launch_dir.
    SEV-ES guests get `legacy-vm-type` (KVM_SEV_INIT2 by default: the one SEV-ES launch
    sev-snp-measure reproduces); None leaves it out."""
    lines = ["[guest]", f"name = {toml_str(name)}", "memory = 1024", f"vcpus = {vcpus}"]
    if cpu:
        lines.append(f"cpu = {toml_str(cpu)}")
    lines += ["[firmware]", f"code = {toml_str(launch_dir + '/OVMF.fd')}"]
    if kernel:
        lines += ["[kernel]", f"image = {toml_str(launch_dir + '/vmlinuz')}"]
        if initrd:
            lines.append(f"initrd = {toml_str(launch_dir + '/initrd')}")
        if cmdline is not None:
            lines.append(f"cmdline = {toml_str(cmdline)}")
    lines += [f"[confidential.{mechanism}]", "cbitpos = 51", "reduced-phys-bits = 1"]
    if kernel:
        lines.append("kernel-hashes = true")
    if mechanism == "sev-es" and legacy_vm_type:
        lines.append(f"legacy-vm-type = {toml_str(legacy_vm_type)}")
    lines.append(extra)
    lines += ["[measurement]", f"firmware = {toml_str(firmware)}"]
    if kernel:
        lines.append(f"kernel = {toml_str(kernel)}")
        if initrd:
            lines.append(f"initrd = {toml_str(initrd)}")
    if features is not None:
        lines.append(f"guest-features = {features:#x}")
    lines.append(measurement or "")
    return "\n".join(lines) + "\n"


def tdx_spec_text(name, firmware, measurement="", extra="", launch="/usr/share/ovmf/OVMF.fd"):
    """A TDX spec whose [measurement] firmware is `firmware` (a build-time copy)."""
    return "\n".join(["[guest]", f"name = {toml_str(name)}", "memory = 2048", "[firmware]",
                      f"code = {toml_str(launch)}", "[confidential.tdx]", extra,
                      "[measurement]", f"firmware = {toml_str(firmware)}", measurement, ""])


def write(path, text):
    path.write_text(text)
    return str(path)


# sev-snp-measure 0.0.13's own test vectors on its two fixtures (its tests/test_guest.py
# asserts each digest): "/dev/null" stands for an empty kernel and initrd.
SUFFIX_VECTORS = [dict(zip(("mode", "vcpus", "type", "fw", "files", "append", "features",
                            "digest"), row)) for row in (
    ("snp", "1", "EPYC-v4", "AmdSev", "/dev/null, /dev/null", "console=ttyS0 loglevel=7", "0x1",
     "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362"
     "f390ef83a92046c042e706363b4b08fa"),
    ("snp", "1", "EPYC-v4", "AmdSev", "none", "none", "0x1",
     "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ec"
     "abe033c48dd6f6db5d6d76e7c5df632d"),
    ("snp", "4", "EPYC-v4", "AmdSev", "/dev/null, /dev/null", "empty", "0x21",
     "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78"
     "eafe7b422907be0b4698e2414a631942"),
    ("seves", "1", "EPYC-v4", "AmdSev", "/dev/null, /dev/null", "empty", "0x1",
     "13810ae661ea11e2bb205621f582fee268f0367c8f97bc297b7fadef3e12002c"),
    ("sev", "1", "–", "AmdSev", "/dev/null, /dev/null", "console=ttyS0 loglevel=7", "–",
     "82a3ee5d537c3620628270c292ae30cb40c3c878666a7890ee7ef2a08fb535ff"),
    ("snp", "1", "EPYC-v4", "OvmfX64", "none", "none", "0x1",
     "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df2"
     "1e5b49e21523a9ad993afdb6a30b4005"),
)]


def errors(spec):
    code, _out, err = run_cli("validate", spec)
    assert code == 1 and "Traceback" not in err
    return err


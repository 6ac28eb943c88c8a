"""Shared pieces of the [measurement] tests: spec text, the README's test vectors."""

from __future__ import annotations

import json
import os
import re

from helpers import run_cli

MEASUREMENT = ("reference", "measurement")
MECH = {"snp": "sev-snp", "seves": "sev-es", "sev": "sev"}
FIRMWARE = {"AmdSev": "ovmf_AmdSev_suffix.bin", "OvmfX64": "ovmf_OvmfX64_suffix.bin"}
DEBUG_SWAP = "/sys/module/kvm_amd/parameters/debug_swap"


def toml_str(value) -> str:
    return json.dumps(value)   # a JSON string is a valid TOML basic string


def spec_text(name, mechanism, firmware, vcpus=1, cpu=None, kernel=None, initrd=None,
              cmdline=None, features=None, launch_dir="/var/lib/guests", extra="",
              measurement=None):
    """A spec whose [measurement] names build-time copies; QEMU launches from launch_dir."""
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


def write(path, text):
    path.write_text(text)
    return str(path)


def readme_rows(shared_dir):
    with open(os.path.join(shared_dir, *MEASUREMENT, "README.md"), encoding="utf-8") as fh:
        rows = [line for line in fh if re.match(r"\| (snp|seves|sev) \|", line)]
    out = []
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        out.append(dict(zip(("mode", "vcpus", "type", "fw", "files", "append", "features",
                             "digest"), cells)))
    return out


def errors(spec):
    code, _out, err = run_cli("validate", spec)
    assert code == 1 and "Traceback" not in err
    return err


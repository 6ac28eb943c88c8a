"""`cgsc init --mechanism M NAME`: a valid, commented spec to start from.

Every value is a real default or a placeholder path a user must replace; the comments say
which, and where to read the host's values. tests/cli/test_init.py builds each one.
"""

from __future__ import annotations

from typing import Dict

MECHANISM_TITLES = {
    "sev": "AMD SEV", "sev-es": "AMD SEV-ES", "sev-snp": "AMD SEV-SNP",
    "tdx": "Intel TDX", "pef": "IBM POWER PEF", "s390-pv": "IBM Z Protected Virtualization",
}

_GEOMETRY = """\
# The host CPU's C-bit position and the physical address bits it loses: copy them from
# `virsh domcapabilities` (<sev><cbitpos>, <reducedPhysBits>), `cgsc probe`, or CPUID
# 0x8000001F EBX. 51 and 1 are an AMD EPYC Milan/Genoa host's values.
cbitpos = 51
reduced-phys-bits = 1
"""

_BODY: Dict[str, str] = {
    "sev": """\
[guest]
name = "{name}"
cpu = "EPYC"                # a model name, not "host": the vCPU is part of what is measured
vcpus = 2
memory = "4GiB"

[firmware]
# An OVMF built for SEV. Debian: ovmf (OVMF_CODE_4M.fd, with vars) or OVMF.amdsev.fd alone.
code = "/usr/share/ovmf/OVMF.amdsev.fd"

[confidential.sev]
{geometry}# Named policy flags (NODBG, NOKS, NOSEND are set by default); cgsc computes the word.
policy = {{ debug = false, key-sharing = false }}
""",
    "sev-es": """\
[guest]
name = "{name}"
cpu = "EPYC-Milan"
vcpus = 2
memory = "4GiB"

[firmware]
code = "/usr/share/ovmf/OVMF.amdsev.fd"   # SEV-ES needs an OVMF with SEV metadata

[confidential.sev-es]
{geometry}policy = {{ debug = false }}
""",
    "sev-snp": """\
[guest]
name = "{name}"
cpu = "EPYC-v4"             # pin a model: the vCPU signature is part of the measurement
vcpus = 2
memory = "4GiB"

[firmware]
# One stateless image loaded with -bios (no vars): edk2's AmdSev build. Debian: ovmf-amdsev.
code = "/usr/share/ovmf/OVMF.amdsev.fd"

[confidential.sev-snp]
{geometry}# smt on, debug off: cgsc computes 0x30000 (bit 17, reserved-must-be-one, included).
policy = {{ smt = true, debug = false }}
""",
    "tdx": """\
[guest]
name = "{name}"
vcpus = 2                   # TDX takes no named CPU model: cpu stays "host"
memory = "4GiB"

[firmware]
# One stateless image loaded with -bios: edk2's IntelTdx build. Debian: ovmf-inteltdx.
code = "/usr/share/ovmf/OVMF.inteltdx.ms.fd"

[confidential.tdx]
attributes = {{ sept-ve-disable = true }}   # Linux TD guests need it; debug is refused
""",
    "pef": """\
[guest]
name = "{name}"
arch = "ppc64"              # PEF guests are pseries machines; no firmware table
vcpus = 2
memory = "4GiB"

[confidential.pef]
""",
    "s390-pv": """\
[guest]
name = "{name}"
arch = "s390x"
vcpus = 2
memory = "4GiB"

[kernel]
# The Secure Execution image made with genprotimg: kernel, initrd and cmdline are sealed in it.
image = "/var/lib/guests/{name}/se.img"

[confidential.s390-pv]
""",
}

_DEVICES = """
[[disk]]
path = "/var/lib/guests/{name}/root.qcow2"    # replace with the guest's disk image
format = "qcow2"

[[net]]
mode = "user"               # or "bridge" with bridge = "br0", or "tap" with tap = "tap0"

# Which artifacts `cgsc build` writes (default: every built-in target that can express the
# spec; kubevirt only when listed):
# [targets]
# build = ["shell", "systemd", "libvirt"]
"""


def spec_text(mechanism: str, name: str) -> str:
    """A valid spec for `mechanism` naming the guest `name` (already checked)."""
    title = MECHANISM_TITLES[mechanism]
    head = (f"# {name}: an {title} guest, from `cgsc init --mechanism {mechanism}`.\n"
            "# Replace the paths, then: cgsc validate FILE && cgsc build FILE\n"
            "# Every key: docs/reference/keys.md; every rule: cgsc explain RULE-ID.\n"
            "spec-version = 1\n\n")
    body = _BODY[mechanism].format(name=name, geometry=_GEOMETRY)
    return head + body + _DEVICES.format(name=name)

"""Guests whose attestation cgsc predicts, built with `cgsc build` for the tests of the
reference values and `cgsc verify`: synthetic firmware (firmware_images.py), fresh keys.

`build(kind, directory)` returns the guest's output directory (OUT/<name>) and its
manifest. Kinds: snp (host data, SMT allowed), snp-id-block (ID and author key, SMT off,
no host data), snp-newer-bits (policy bit 24, CIPHERTEXT_HIDING: beyond go-sev-guest
0.13), tdx (MRCONFIGID set; `tdx()` makes XFAM exact with a host profile), sev, sev-es.
"""

from __future__ import annotations

import json
import os
from typing import Tuple

import firmware_images as fw
from helpers import run_cli

HOST_DATA = "Y1pDxcvTXcsAz5X/InX/u07jLnWpgMP6b6m+IC6cjx4="   # 32 bytes, base64
MRCONFIGID = "YFUuWP13eLxTAg7URRPNVqeciLNtOWtUeW/GqJpBXgjSir0cYrS0+5qdfjZcns8m"   # 48 bytes

_AMD = """[guest]
name = "{name}"
memory = 1024
vcpus = 2
cpu = "EPYC-v4"
[firmware]
code = "/var/lib/guests/{name}/OVMF.fd"
[kernel]
image = "/var/lib/guests/{name}/vmlinuz"
cmdline = "console=ttyS0"
[confidential.{mechanism}]
cbitpos = 51
reduced-phys-bits = 1
kernel-hashes = true
{extra}
[measurement]
firmware = "fw.fd"
kernel = "vmlinuz"
{measurement}
"""
_TDX = """[guest]
name = "{name}"
memory = 1024
[firmware]
code = "/var/lib/guests/{name}/OVMF.inteltdx.fd"
[confidential.tdx]
mrconfigid = "{mrconfigid}"
[measurement]
firmware = "tdvf.fd"
"""

KINDS = {
    "snp": ("sev-snp", f'policy = {{ smt = true }}\nhost-data = "{HOST_DATA}"', ""),
    "snp-id-block": ("sev-snp", "policy = { smt = false }",
                     'id-key = "id.pem"\nauthor-key = "author.pem"\n'
                     'family-id = "0123456789abcdef0123456789abcdef"\n'
                     'image-id = "fedcba9876543210fedcba9876543210"\nguest-svn = 258'),
    "snp-newer-bits": ("sev-snp", "policy = { smt = false, ciphertext-hiding = true }", ""),
    "sev": ("sev", "policy = { debug = false }", ""),
    "sev-es": ("sev-es", "policy = { debug = false }\nlegacy-vm-type = \"off\"", ""),
}


def _p384_key(path: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP384R1())
    with open(path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def spec(kind: str, directory: str, extra: str = "") -> str:
    """Write the spec of `kind` (and the files it measures) into `directory`; its path."""
    name = f"att-{kind}"
    if kind == "tdx":
        with open(os.path.join(directory, "tdvf.fd"), "wb") as fh:
            fh.write(fw.tdvf_image())
        text = _TDX.format(name=name, mrconfigid=MRCONFIGID)
    else:
        mechanism, table, measurement = KINDS[kind]
        with open(os.path.join(directory, "fw.fd"), "wb") as fh:
            fh.write(fw.amd_image(hashes_table=True))
        with open(os.path.join(directory, "vmlinuz"), "wb") as fh:
            fh.write(b"a kernel image")
        for key in ("id.pem", "author.pem"):
            if key in measurement:
                _p384_key(os.path.join(directory, key))
        text = _AMD.format(name=name, mechanism=mechanism, extra=table,
                           measurement=measurement)
    path = os.path.join(directory, f"{name}.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + extra)
    return path


def build(kind: str, directory: str, extra: str = "", args=()) -> Tuple[str, dict]:
    """(OUT/<name>, manifest) of a guest of `kind` built by cgsc under `directory`
    (`extra`: more spec text; `args`: more arguments of cgsc build)."""
    path = spec(kind, directory, extra)
    out = os.path.join(directory, "out")
    code, _stdout, err = run_cli("build", path, "-o", out, *args)
    assert code == 0, err
    guest = os.path.join(out, f"att-{kind}")
    with open(os.path.join(guest, "manifest.json"), encoding="utf-8") as fh:
        return guest, json.load(fh)


def tdx(directory: str, xfam: str = "") -> Tuple[str, dict]:
    """(OUT/<name>, manifest) of a TDX guest; with `xfam`, built with a host profile whose
    tdx.xfam makes the prediction exact, else the manifest lists the XFAM candidates (and
    the spec asks for go-tdx-guest by name: one config per candidate)."""
    if not xfam:
        return build("tdx", directory, ASK_EVERY_TDX_CONFIG)
    profile = os.path.join(directory, "host.json")
    with open(profile, "w", encoding="utf-8") as fh:
        json.dump({"profile-version": 1, "name": "lab-tdx", "origin": "hand-written",
                   "tdx": {"xfam": xfam}}, fh)
    return build("tdx", directory, args=("--host", profile))


# Without a host profile's tdx.xfam, go-tdx-guest configs (one per XFAM the guest can
# report) are written only when the spec names the format.
ASK_EVERY_TDX_CONFIG = '\n[attestation]\nformats = ["go-tdx-guest", "trustee"]\n'


def xfams(report: dict) -> list:
    """The XFAM values the prediction allows, as integers."""
    return [int(x, 16) for x in ([report["xfam"]] if "xfam" in report else report["xfam-candidates"])]


# XFAM of a Sapphire Rapids TD (x87, SSE, AVX, AVX-512, PKRU, AMX): one of the candidates
SPR_XFAM = "0x00000000000602e7"


def examples(directory: str, firmware: dict) -> list:
    """(example, OUT/<name>) of every example of the project that is an SEV-SNP or TDX guest,
    built as it is when it has [measurement], else measured with Debian's firmware from
    tests/data/firmware (and stand-in kernel and initrd copies for kernel-hashes), from a
    copy of its folder (so `extends` still resolves)."""
    import shutil

    from cgsc.spec.source import load
    from helpers import EXAMPLES
    out = []
    for example in EXAMPLES:
        data = load(example).data
        (mechanism,) = data["confidential"]
        if mechanism not in ("sev-snp", "tdx"):
            continue
        here = os.path.join(directory, os.path.basename(os.path.dirname(example)))
        if not os.path.isdir(here):
            shutil.copytree(os.path.dirname(example), here)
        path = os.path.join(here, os.path.basename(example))
        if "measurement" not in data:
            image = firmware["OVMF.amdsev.fd" if mechanism == "sev-snp" else "OVMF.inteltdx.ms.fd"]
            lines = ["", "[measurement]", f"firmware = {json.dumps(image)}"]
            table = data["confidential"][mechanism]
            for key in ("image", "initrd") if table.get("kernel-hashes") else ():
                if key in data.get("kernel", {}):
                    copy = os.path.join(here, f"measured-{key}")
                    with open(copy, "wb") as fh:
                        fh.write(f"a stand-in {key} for {example}".encode())
                    lines.append(f"{'kernel' if key == 'image' else key} = {json.dumps(copy)}")
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n" + (ASK_EVERY_TDX_CONFIG if mechanism == "tdx" else ""))
        code, _stdout, err = run_cli("build", path, "-o", os.path.join(directory, "out"))
        assert code == 0, err
        out.append((example, os.path.join(directory, "out", data["guest"]["name"])))
    return out

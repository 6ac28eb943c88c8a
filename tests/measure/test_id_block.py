"""SEV-SNP ID blocks signed by cgsc, checked with an independent ECDSA verification and the
SEV-SNP ABI layouts."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import pytest
from helpers import compile_plan, run_cli
from measure_helpers import (FIRMWARE, errors as _errors,
                             spec_text, toml_str as _toml, write as _write)


def _p384_key(path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


def _marshal(pub) -> bytes:
    """SEV-SNP ABI ECDSA public key: curve 2 (P-384), Qx and Qy little-endian, 72 bytes each."""
    n = pub.public_numbers()
    return (struct.pack("<I", 2) + n.x.to_bytes(72, "little") + n.y.to_bytes(72, "little")
            + bytes(0x404 - 4 - 144))


def _verify_sig(pub, sig: bytes, data: bytes):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    r = int.from_bytes(sig[:72], "little")
    s = int.from_bytes(sig[72:144], "little")
    pub.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA384()))


def _object_props(plan) -> dict:
    argv = plan.argv()
    obj = next(argv[i + 1] for i, w in enumerate(argv) if w == "-object"
               and argv[i + 1].startswith("sev-snp-guest,"))
    return dict(p.split("=", 1) for p in obj.split(",")[1:])


@pytest.mark.parametrize("with_author", [False, True])
def test_id_block_is_signed_for_the_digest_and_policy(with_author, firmware, tmp_path):
    idk = _p384_key(tmp_path / "id.pem")
    authk = _p384_key(tmp_path / "author.pem") if with_author else None
    extra = 'author-key = "author.pem"' if with_author else ""
    spec = _write(tmp_path / "g.toml", spec_text(
        "idb", "sev-snp", firmware[FIRMWARE["AmdSev"]],
        cpu="EPYC-v4", extra="policy = { smt = false }",
        measurement='id-key = "id.pem"\n' + extra))
    plan = compile_plan(spec)
    props = _object_props(plan)
    block, auth = base64.b64decode(props["id-block"]), base64.b64decode(props["id-auth"])
    assert len(block) == 96 and len(auth) == 4096
    digest = bytes.fromhex(plan.attestation["launch-digest"])
    assert block[:48] == digest
    assert struct.unpack_from("<Q", block, 88)[0] == 0x20000   # the guest's own policy
    _verify_sig(idk.public_key(), auth[0x40:0x40 + 512], block)
    assert auth[0x240:0x240 + 0x404] == _marshal(idk.public_key())
    report = plan.attestation["report"]
    assert report["id_key_digest"] == hashlib.sha384(_marshal(idk.public_key())).hexdigest()
    if with_author:
        assert props["author-key-enabled"] == "on"
        _verify_sig(authk.public_key(), auth[0x680:0x680 + 512], _marshal(idk.public_key()))
        assert report["author_key_digest"] == hashlib.sha384(_marshal(authk.public_key())).hexdigest()
    else:
        assert "author-key-enabled" not in props and "author_key_digest" not in report
    import json

    import jsonschema
    jsonschema.validate(plan.attestation, json.loads(run_cli("schema", "--attestation")[1]))
    # deterministic signatures: the same spec and keys give the same bytes
    assert _object_props(compile_plan(spec)) == props
    from cgsc import targets
    (xml,) = targets.get("libvirt").render(plan)
    assert f"<idBlock>{props['id-block']}</idBlock>" in xml.content


def test_an_id_block_without_measurement_is_warned(tmp_path):
    spec = _write(tmp_path / "g.toml", "\n".join([
        "[guest]", 'name = "w"', 'cpu = "EPYC-v4"', "memory = 1024", "[firmware]",
        'code = "/usr/share/ovmf/OVMF.amdsev.fd"', "[confidential.sev-snp]", "cbitpos = 51",
        "reduced-phys-bits = 1", f"id-block = {_toml(base64.b64encode(bytes(96)).decode())}", ""]))
    code, _o, err = run_cli("validate", spec)
    assert code == 0 and "[CGS-MEASURE-032]" in err


def test_an_id_key_on_another_curve_is_refused(firmware, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "p256.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    spec = _write(tmp_path / "g.toml", spec_text(
        "p256", "sev-snp", firmware[FIRMWARE["AmdSev"]],
        cpu="EPYC-v4", measurement='id-key = "p256.pem"'))
    err = _errors(spec)
    assert "measurement.id-key: p256.pem: SNP only supports the EC curve P-384 [CGS-MEASURE-031]" in err


def test_real_qemu_accepts_the_signed_id_block_and_auth(firmware, tmp_path, tool):
    """QEMU (>= 9.1) decodes id-block and id-auth when it creates sev-snp-guest and checks
    their sizes; a parse-only run (-preconfig, TCG) proves the argv is what it accepts."""
    import subprocess
    qemu = tool("qemu-system-x86_64")
    objects = subprocess.run([qemu, "-object", "help"], capture_output=True, text=True).stdout
    if "sev-snp-guest" not in objects:
        pytest.skip("this QEMU has no sev-snp-guest (QEMU >= 9.1 needed)")
    _p384_key(tmp_path / "id.pem")
    _p384_key(tmp_path / "author.pem")
    spec = _write(tmp_path / "g.toml", spec_text(
        "idq", "sev-snp", firmware[FIRMWARE["AmdSev"]],
        cpu="EPYC-v4", measurement='id-key = "id.pem"\nauthor-key = "author.pem"'))
    argv = compile_plan(spec).argv()
    argv[argv.index("-accel") + 1] = "tcg"
    serial = argv.index("-serial")           # stdio belongs to QMP in this run
    del argv[serial:serial + 2]
    chardev = argv.index("-chardev")
    del argv[chardev:chardev + 2]
    # the stop channel's FIFOs are made by the script/unit before launch: not part of this check
    stop = argv.index(next(w for w in argv if w.startswith("pipe,id=stop0,"))) - 1
    del argv[stop:stop + 4]                   # its -chardev and its -mon
    quit_ = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'

    def run(words):
        return subprocess.run(words + ["-preconfig", "-qmp", "stdio"], input=quit_,
                              capture_output=True, text=True, timeout=120)

    result = run(argv)
    assert result.returncode == 0, result.stderr
    # the same run with one byte too many in id-block is refused: the check is real
    bad = [w.replace("id-block=", "id-block=AAAA") if w.startswith("sev-snp-guest,") else w
           for w in argv]
    result = run(bad)
    assert result.returncode == 1 and "not equal to 96" in result.stderr

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
    # no ID fields given: zeros, as the report will show them
    assert block[0x30:0x58] == bytes(16) + bytes(16) + struct.pack("<II", 1, 0)
    assert (report["family_id"], report["image_id"], report["guest_svn"]) == ("00" * 16, "00" * 16, 0)
    import json

    import jsonschema
    jsonschema.validate(plan.attestation, json.loads(run_cli("schema", "--attestation")[1]))
    # deterministic signatures: the same spec and keys give the same bytes
    assert _object_props(compile_plan(spec)) == props
    from cgsc import targets
    (xml,) = targets.get("libvirt").render(plan)
    assert f"<idBlock>{props['id-block']}</idBlock>" in xml.content


# SEV-SNP ABI 56860, ID_BLOCK: LD 0x00 (48 bytes), FAMILY_ID 0x30 (16), IMAGE_ID 0x40 (16),
# VERSION 0x50 (u32, 1), GUEST_SVN 0x54 (u32), POLICY 0x58 (u64); 96 bytes in all.
ID_BLOCK = struct.Struct("<48s16s16sIIQ")


@pytest.mark.parametrize("family, image, svn", [
    ("00112233445566778899aabbccddeeff", "FFEEDDCCBBAA99887766554433221100", 7),
    ("0" * 31 + "1", "8" + "0" * 31, 4294967295),
    ("00" * 15 + "01", "00" * 16, 256),
    ("00" * 16, "00" * 16, 0)])
def test_id_fields_are_in_the_signed_id_block_at_their_abi_offsets(family, image, svn, firmware,
                                                                    tmp_path):
    """Before: FAMILY_ID, IMAGE_ID and GUEST_SVN were always zero (DefaultIDs)."""
    idk = _p384_key(tmp_path / "id.pem")
    spec = _write(tmp_path / "g.toml", spec_text(
        "ids", "sev-snp", firmware[FIRMWARE["AmdSev"]], cpu="EPYC-v4",
        measurement=f'id-key = "id.pem"\nfamily-id = "{family}"\nimage-id = "{image}"\n'
                    f"guest-svn = {svn}"))
    plan = compile_plan(spec)
    props = _object_props(plan)
    block = base64.b64decode(props["id-block"])
    ld, fam, img, version, guest_svn, policy = ID_BLOCK.unpack(block)
    assert ID_BLOCK.size == len(block) == 96
    assert ld == bytes.fromhex(plan.attestation["launch-digest"])
    assert (fam, img, version, guest_svn, policy) == (
        bytes.fromhex(family), bytes.fromhex(image), 1, svn, 0x30000)
    _verify_sig(idk.public_key(), base64.b64decode(props["id-auth"])[0x40:0x40 + 512], block)
    report = plan.attestation["report"]
    assert report["family_id"] == family.lower() and report["image_id"] == image.lower()
    assert report["guest_svn"] == svn and isinstance(report["guest_svn"], int)
    import json

    import jsonschema
    jsonschema.validate(plan.attestation, json.loads(run_cli("schema", "--attestation")[1]))


@pytest.mark.parametrize("line, message", [
    ('family-id = "0011"', 'measurement.family-id: "0011" is not valid; expected 16 bytes as 32 hex digits'),
    ('image-id = "0x00112233445566778899aabbccddeeff"', 'measurement.image-id: "0x00112233445566778899aabbccddeeff" is not valid; expected 16 bytes as 32 hex digits'),
    ('family-id = "00112233445566778899aabbccddeefg"', 'measurement.family-id: "00112233445566778899aabbccddeefg" is not valid; expected 16 bytes as 32 hex digits'),
    ("guest-svn = 4294967296", "measurement.guest-svn:"),
    ("guest-svn = -1", "measurement.guest-svn:"),
])
def test_bad_id_fields_are_refused(line, message, firmware, tmp_path):
    _p384_key(tmp_path / "id.pem")
    spec = _write(tmp_path / "g.toml", spec_text(
        "ids", "sev-snp", firmware[FIRMWARE["AmdSev"]], cpu="EPYC-v4",
        measurement=f'id-key = "id.pem"\n{line}'))
    err = _errors(spec)
    assert message in err and "[CGS-SCHEMA-" in err, err


@pytest.mark.parametrize("key, value", [("family-id", '"' + "ab" * 16 + '"'), ("guest-svn", "3")])
def test_id_fields_need_an_id_key(key, value, firmware, tmp_path):
    spec = _write(tmp_path / "g.toml", spec_text(
        "ids", "sev-snp", firmware[FIRMWARE["AmdSev"]], cpu="EPYC-v4",
        measurement=f"{key} = {value}"))
    line = open(spec).read().splitlines().index(f"{key} = {value}") + 1
    assert (f"{spec}:{line}: measurement.{key}: is given without id-key [CGS-MEASURE-030]"
            in _errors(spec))


def test_id_fields_do_not_apply_to_sev_es(firmware, tmp_path):
    spec = _write(tmp_path / "g.toml", spec_text(
        "ids", "sev-es", firmware[FIRMWARE["AmdSev"]], cpu="EPYC-v4",
        measurement="guest-svn = 3"))
    assert "measurement.guest-svn: does not apply to AMD SEV-ES [CGS-MEASURE-002]" in _errors(spec)


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

"""Reference values in the verifiers' formats, written by `cgsc build` beside the manifest.

The Go libraries themselves load and apply the go-sev-guest and go-tdx-guest configs in
tests/measure/test_go_verifiers.py; here: which files a build writes, that they are listed,
deterministic and hold the manifest's values (decoded independently of cgsc's encoders),
and the Trustee sample, which cannot run here (Trustee has no package), decoded the way its
RVPS decodes it and checked against the names its policy reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re

import attestation_guests as guests
import jsonschema
import pytest
from helpers import run_cli


def _files(guest: str, manifest: dict) -> dict:
    """format -> the files the manifest records for it."""
    return {e["format"]: e["files"] for e in manifest["attestation"]["reference-values"]}


def _read(guest: str, name: str) -> str:
    with open(os.path.join(guest, name), encoding="utf-8") as fh:
        return fh.read()


@pytest.mark.parametrize("kind,formats", [
    ("snp", {"go-sev-guest": ["go-sev-guest.textproto", "go-sev-guest.json"],
             "trustee": ["trustee-rvps.json"]}),
    ("sev", {"sev-launch-measure": ["sev-launch-measure.json"]}),
    ("sev-es", {"sev-launch-measure": ["sev-launch-measure.json"]}),
])
def test_a_build_writes_every_format_that_applies_and_lists_it(kind, formats, tmp_path):
    guest, manifest = guests.build(kind, str(tmp_path))
    name = manifest["guest"]
    assert _files(guest, manifest) == {f: [f"{name}.{s}" for s in sfx] for f, sfx in formats.items()}
    listed = {a["file"]: a for a in manifest["artifacts"] if a["target"] == "reference-values"}
    assert sorted(listed) == sorted(f for files in _files(guest, manifest).values() for f in files)
    for file, entry in listed.items():
        with open(os.path.join(guest, file), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == entry["sha256"]
    jsonschema.validate(manifest["attestation"], json.loads(run_cli("schema", "--attestation")[1]))


def test_the_files_are_deterministic_and_checked_for_drift(tmp_path):
    first, _ = guests.build("snp-id-block", str(tmp_path))
    spec = os.path.join(str(tmp_path), "att-snp-id-block.toml")
    copies = {f: _read(first, f) for f in os.listdir(first)}
    code, _out, err = run_cli("build", spec, "-o", str(tmp_path / "again"))
    assert code == 0, err
    again = tmp_path / "again" / "att-snp-id-block"
    assert {f: (again / f).read_text() for f in os.listdir(again)} == copies
    with open(os.path.join(first, "att-snp-id-block.go-sev-guest.json"), "a") as fh:
        fh.write(" ")
    code, _out, err = run_cli("check", spec, "-o", str(tmp_path / "out"))
    assert code == 1 and "att-snp-id-block.go-sev-guest.json changed" in err


def test_formats_select_what_is_written(tmp_path):
    guest, manifest = guests.build("snp", str(tmp_path), '[attestation]\nformats = ["trustee"]\n')
    assert list(_files(guest, manifest)) == ["trustee"]
    assert not [f for f in os.listdir(guest) if "go-sev-guest" in f]
    other = tmp_path / "none"
    other.mkdir()
    guest, manifest = guests.build("snp", str(other), "[attestation]\nformats = []\n")
    assert manifest["attestation"]["reference-values"] == []
    assert not [a for a in manifest["artifacts"] if a["target"] == "reference-values"]


def test_a_format_that_cannot_be_written_is_an_error_only_when_asked_for(tmp_path):
    """CGS-ATTEST-003: a go-tdx-guest config needs MRTD, TD attributes and XFAM; without
    them it would accept a DEBUG TD, so none is written: recorded with the reason by
    default, an error when [attestation] formats names it."""
    from cgsc.measure import reference_values
    from cgsc.spec.model import normalize
    from cgsc.spec.source import load
    path = guests.spec("tdx", str(tmp_path))
    attestation = {"mechanism": "tdx", "launch-digest": None,
                   "report": {"attributes": "0x0000000010000000", "mrconfigid": "00" * 48,
                              "mrowner": "00" * 48, "mrownerconfig": "00" * 48}}
    guest = normalize(load(path).data)
    refs = reference_values.render(guest, attestation)
    assert refs.files == () and refs.errors == ()
    assert refs.record[0] == {"format": "go-tdx-guest", "files": [], "not-written":
                              "MRTD and XFAM not predicted: a go-tdx-guest config without "
                              "them would accept a TD it should refuse"}
    refs = reference_values.render(guest._replace(attestation_formats=("go-tdx-guest",)),
                                   attestation)
    (error,) = refs.errors
    assert error.rule == "CGS-ATTEST-003" and error.path == ("attestation", "formats", 0)
    assert error.message.startswith("go-tdx-guest: MRTD and XFAM not predicted")


# -- go-sev-guest: the config holds the manifest's values ----------------------------------

def _textproto_bytes(text: str, field: str) -> list:
    """Every value of a bytes field in the text format, unescaped (\\xNN only)."""
    return [bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", m))
            for m in re.findall(rf"^\s*{field}: \"((?:\\x[0-9a-f]{{2}})*)\"$", text, re.M)]


@pytest.mark.parametrize("kind", ["snp", "snp-id-block"])
def test_the_go_sev_guest_config_holds_the_prediction(kind, tmp_path):
    guest, manifest = guests.build(kind, str(tmp_path))
    report = manifest["attestation"]["report"]
    name = manifest["guest"]
    policy = json.loads(_read(guest, f"{name}.go-sev-guest.json"))["policy"]
    text = _read(guest, f"{name}.go-sev-guest.textproto")
    # protojson: bytes are standard base64, uint64 a decimal string, wrappers bare
    assert base64.b64decode(policy["measurement"]).hex() == report["measurement"]
    assert base64.b64decode(policy["host_data"]).hex() == report["host_data"]
    assert policy["policy"] == str(int(report["policy"], 16)) and policy["vmpl"] == 0
    assert _textproto_bytes(text, "measurement") == [bytes.fromhex(report["measurement"])]
    assert _textproto_bytes(text, "host_data") == [bytes.fromhex(report["host_data"])]
    assert re.search(rf"^  policy: {report['policy']}$", text, re.M)
    assert "vmpl { value: 0 }" in text
    if kind == "snp-id-block":   # no host-data: zeros, written, so that they are compared
        assert report["host_data"] == "00" * 32
        assert policy["require_id_block"] is True
        assert [base64.b64decode(h).hex() for h in policy["trusted_id_key_hashes"]] == \
            [report["id_key_digest"]]
        assert _textproto_bytes(text, "trusted_id_key_hashes") == [bytes.fromhex(report["id_key_digest"])]
    else:
        assert "require_id_block" not in policy and "trusted_id_key_hashes" not in policy
    # what only the platform owner knows is left out, and the text says so
    assert "root_of_trust" not in policy and "root_of_trust {" not in text
    assert "minimum_tcb" not in text.split("policy {")[1]
    assert "google/go-sev-guest#185" in text


def test_policy_bits_beyond_go_sev_guest_0_13_are_flagged(tmp_path):
    guest, manifest = guests.build("snp-newer-bits", str(tmp_path))
    text = _read(guest, f"{manifest['guest']}.go-sev-guest.textproto")
    assert "The policy sets bits 21 and above, which go-sev-guest 0.13 refuses" in text


# -- go-tdx-guest ----------------------------------------------------------------------------

def test_the_go_tdx_guest_config_holds_the_prediction(tmp_path):
    """TD attributes and XFAM as the quote's little-endian bytes (go-tdx-guest compares the
    raw bytes), the MR fields, and an empty header_policy, always."""
    guest, manifest = guests.tdx(str(tmp_path), guests.SPR_XFAM)
    report, name = manifest["attestation"]["report"], manifest["guest"]
    assert _files(guest, manifest)["go-tdx-guest"] == [f"{name}.go-tdx-guest.textproto",
                                                      f"{name}.go-tdx-guest.json"]
    policy = json.loads(_read(guest, f"{name}.go-tdx-guest.json"))["policy"]
    assert policy["header_policy"] == {}
    body = {k: base64.b64decode(v) for k, v in policy["td_quote_body_policy"].items()}
    assert body == {"td_attributes": bytes.fromhex("0000001000000000"),   # SEPT_VE_DISABLE
                    "xfam": bytes.fromhex("e702060000000000"),
                    "mr_td": bytes.fromhex(report["mrtd"]),
                    "mr_config_id": bytes.fromhex(report["mrconfigid"]),
                    "mr_owner": bytes(48), "mr_owner_config": bytes(48)}
    assert report["mrconfigid"] == base64.b64decode(guests.MRCONFIGID).hex()
    text = _read(guest, f"{name}.go-tdx-guest.textproto")
    assert "  header_policy {}\n" in text
    assert _textproto_bytes(text, "xfam") == [bytes.fromhex("e702060000000000")]


def test_without_an_exact_xfam_go_tdx_guest_is_written_only_when_asked(tmp_path):
    """48 configs per guest are not a default: without a host profile's tdx.xfam and
    without go-tdx-guest named in [attestation] formats, none is written, and the manifest
    says why and what gives one (Trustee's list takes every candidate)."""
    guest, manifest = guests.build("tdx", str(tmp_path))
    record = {r["format"]: r for r in manifest["attestation"]["reference-values"]}
    assert record["go-tdx-guest"]["files"] == [] and "tdx.xfam" in record["go-tdx-guest"]["not-written"]
    assert record["trustee"]["files"] and not any("go-tdx-guest" in f for f in os.listdir(guest))


def test_one_go_tdx_guest_config_per_possible_xfam(tmp_path):
    guest, manifest = guests.tdx(str(tmp_path))
    candidates = guests.xfams(manifest["attestation"]["report"])
    name = manifest["guest"]
    expected = [f"{name}.go-tdx-guest.xfam-{x:016x}.{ext}" for x in candidates
                for ext in ("textproto", "json")]
    assert _files(guest, manifest)["go-tdx-guest"] == expected
    for x in candidates:
        stem = f"{name}.go-tdx-guest.xfam-{x:016x}"
        xfam = json.loads(_read(guest, stem + ".json"))["policy"]["td_quote_body_policy"]["xfam"]
        assert base64.b64decode(xfam) == x.to_bytes(8, "little")
        assert f"this config is for XFAM {x:#018x}, one of\n# {len(candidates)} files" in \
            _read(guest, stem + ".textproto")


# -- Trustee: the RVPS sample message round-trips -------------------------------------------

# The reference-value names Trustee's default CPU policy queries, with the type each must
# have: confidential-containers/trustee 78962cd,
# attestation-service/src/ear_token/ear_default_policy_cpu.rego lines 106, 113-116, 128-133
# (SNP: `in` takes a list, `==` a scalar) and 155-158, 181, 220 (TDX).
TRUSTEE_POLICY_NAMES = {
    "snp_launch_measurement": list, "snp_bootloader": list, "snp_microcode": list,
    "snp_snp_svn": list, "snp_tee_svn": list, "snp_smt_enabled": bool, "snp_tsme_enabled": bool,
    "snp_guest_abi_major": int, "snp_guest_abi_minor": int, "snp_single_socket": bool,
    "snp_smt_allowed": bool, "rtmr_1": list, "rtmr_2": list, "tdvfkernel": str,
    "tdvfkernelparams": str, "mr_td": list, "xfam": list}


def _rvps_decode(text: str) -> dict:
    """What Trustee's RVPS does with the message: rvps/src/lib.rs verify_and_extract (the
    version must be "0.1.0"), then rvps/src/extractors/sample/mod.rs (payload: standard
    base64 of a JSON object name -> value)."""
    message = json.loads(text)
    assert set(message) == {"version", "type", "payload"}
    assert message["version"] == "0.1.0" and message["type"] == "sample"
    return json.loads(base64.b64decode(message["payload"], validate=True))


def test_trustee_snp_sample_round_trips(tmp_path):
    """Names and encodings as Trustee's SNP verifier makes its claims
    (deps/verifier/src/snp/mod.rs parse_tee_evidence at 78962cd): `measurement` lowercase
    hex (since d783129, v0.18.0), policy_abi_major/minor = POLICY bits 15:8 / 7:0,
    policy_smt_allowed bit 16, policy_single_socket bit 20 (AMD 56860 guest policy)."""
    for kind in ("snp", "snp-id-block"):
        directory = tmp_path / kind
        directory.mkdir()
        guest, manifest = guests.build(kind, str(directory))
        report = manifest["attestation"]["report"]
        values = _rvps_decode(_read(guest, f"{manifest['guest']}.trustee-rvps.json"))
        policy = int(report["policy"], 16)
        assert values == {"snp_launch_measurement": [report["measurement"]],
                          "snp_guest_abi_major": (policy >> 8) & 0xFF,
                          "snp_guest_abi_minor": policy & 0xFF,
                          "snp_single_socket": bool(policy & 1 << 20),
                          "snp_smt_allowed": bool(policy & 1 << 16)}
        for key, value in values.items():
            assert isinstance(value, TRUSTEE_POLICY_NAMES[key]), key
        assert re.fullmatch("[0-9a-f]{96}", values["snp_launch_measurement"][0])


def test_trustee_tdx_sample_round_trips(tmp_path):
    """Trustee's TDX claims are lowercase hex of the quote's bytes
    (deps/verifier/src/tdx/claims.rs parse_claim!), so XFAM is little-endian."""
    guest, manifest = guests.tdx(str(tmp_path))
    report = manifest["attestation"]["report"]
    (file,) = _files(guest, manifest)["trustee"]
    values = _rvps_decode(_read(guest, file))
    xfams = [report["xfam"]] if "xfam" in report else report["xfam-candidates"]
    assert values == {"mr_td": [report["mrtd"]],
                      "xfam": [int(x, 16).to_bytes(8, "little").hex() for x in xfams]}
    assert set(values) <= set(TRUSTEE_POLICY_NAMES)


# -- SEV, SEV-ES: what the guest owner needs to finish the LAUNCH_MEASURE check ---------------

@pytest.mark.parametrize("kind", ["sev", "sev-es"])
def test_the_launch_measure_inputs_finish_the_hmac(kind, tmp_path):
    """A MEASURE made as the PSP does (AMD SEV API 55766 section 6.5, as libvirt's
    tools/virt-qemu-sev-validate computes it) is recomputed from the file's recipe."""
    guest, manifest = guests.build(kind, str(tmp_path))
    ref = json.loads(_read(guest, f"{manifest['guest']}.sev-launch-measure.json"))
    att = manifest["attestation"]
    assert ref["launch-digest"] == att["launch-digest"] and ref["policy"] == att["report"]["policy"]
    tik, nonce, api_major, api_minor, build = os.urandom(16), os.urandom(16), 1, 55, 21
    policy = int(att["report"]["policy"], 16)
    psp = hmac.new(tik, bytes([0x04, api_major, api_minor, build]) + policy.to_bytes(4, "little")
                   + bytes.fromhex(att["launch-digest"]) + nonce, "sha256").digest()
    parts = {"04": b"\x04", "API_MAJOR (1 byte)": bytes([api_major]),
             "API_MINOR (1 byte)": bytes([api_minor]), "BUILD (1 byte)": bytes([build]),
             "policy-bytes": bytes.fromhex(ref["policy-bytes"]),
             "launch-digest": bytes.fromhex(ref["launch-digest"]), "MNONCE (16 bytes)": nonce}
    message = b"".join(parts[p] for p in ref["measure"]["message"])
    assert hmac.new(tik, message, ref["measure"]["algorithm"].split("-")[1].lower()).digest() == psp

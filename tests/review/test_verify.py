"""`cgsc verify`: synthetic reports and quotes laid out from the ABI (tests/evidence_layouts.py)
against manifests cgsc built. Every report version cgsc's hosts produce (SEV-SNP 2, 3, 5;
TDX quotes 4 and 5 with both TD report bodies), each predicted field changed alone and
named, bad evidence refused with a clear error, exit status 0 / 1 / 2 as documented."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import attestation_guests as guests
import pytest
from evidence_layouts import set_snp, set_tdx, snp_report, tdx_quote
from helpers import ROOT, run_cli


@pytest.fixture(scope="module")
def snp(tmp_path_factory):
    return guests.build("snp", str(tmp_path_factory.mktemp("snp")))


@pytest.fixture(scope="module")
def snp_id(tmp_path_factory):
    return guests.build("snp-id-block", str(tmp_path_factory.mktemp("snp-id")))


@pytest.fixture(scope="module")
def snp_newer(tmp_path_factory):
    return guests.build("snp-newer-bits", str(tmp_path_factory.mktemp("snp-newer")))


@pytest.fixture(scope="module")
def tdx(tmp_path_factory):
    """XFAM exact: the host profile says it."""
    return guests.tdx(str(tmp_path_factory.mktemp("tdx")), guests.SPR_XFAM)


@pytest.fixture(scope="module")
def tdx_candidates(tmp_path_factory):
    """XFAM one of the values the host CPU allows."""
    return guests.tdx(str(tmp_path_factory.mktemp("tdx-any")))


def _verify(tmp_path, data: bytes, guest: str, fmt: str = "json"):
    path = tmp_path / "evidence.bin"
    path.write_bytes(bytes(data))
    code, out, err = run_cli("verify", str(path), "--guest", guest, "--format", fmt)
    assert "Traceback" not in err + out
    return code, out, err


def _fields(out: str) -> dict:
    return {f["field"]: f for f in json.loads(out)["fields"]}


# -- SEV-SNP -------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 3, 5])
def test_a_report_with_the_predicted_fields_matches(version, snp, snp_id, tmp_path):
    for guest, manifest in (snp, snp_id):
        report = manifest["attestation"]["report"]
        code, out, err = _verify(tmp_path, snp_report(version, report), guest)
        doc = json.loads(out)
        assert code == 0, out
        assert doc["match"] and doc["evidence"] == f"SEV-SNP attestation report, version {version}"
        predicted = {k for k in report if k != "id_block"}
        assert predicted <= set(_fields(out)), "every predicted field is compared"
        assert all(f["ok"] for f in doc["fields"])


def _snp_changes(report: dict):
    """field -> a value of it other than the prediction."""
    changes = {"measurement": bytes(48), "policy": int(report["policy"], 16) | 1 << 19,
               "vmpl": 1}
    for name, size in (("host_data", 32), ("family_id", 16), ("image_id", 16),
                       ("id_key_digest", 48), ("author_key_digest", 48)):
        if name in report:
            changes[name] = bytes.fromhex(report[name])[:-1] + bytes([int(report[name][-2:], 16) ^ 1])
            assert len(changes[name]) == size
    if "guest_svn" in report:
        changes["guest_svn"] = report["guest_svn"] + 1
    return changes


@pytest.mark.parametrize("version", [2, 3, 5])
def test_each_changed_field_is_named(version, snp, snp_id, tmp_path):
    seen = set()
    for guest, manifest in (snp, snp_id):
        report = manifest["attestation"]["report"]
        for field, value in _snp_changes(report).items():
            evidence = snp_report(version, report)
            set_snp(evidence, field, value)
            code, out, _err = _verify(tmp_path, evidence, guest)
            assert code == 1, field
            assert [f for f, row in _fields(out).items() if not row["ok"]] == [field]
            code, out, err = _verify(tmp_path, evidence, guest, "text")
            assert code == 1
            assert any(line.startswith(field + " ") and "DIFFERS" in line
                       for line in out.splitlines()), out
            assert f"DIFFERENT: {field} [CGS-VERIFY-001]" in err
            seen.add(field)
    assert {"measurement", "policy", "vmpl", "host_data", "id_key_digest",
            "author_key_digest"} <= seen


def test_a_policy_difference_names_the_bits(snp, snp_newer, tmp_path):
    guest, manifest = snp
    report = manifest["attestation"]["report"]
    evidence = snp_report(3, report)
    policy = int(report["policy"], 16)
    set_snp(evidence, "policy", (policy | 1 << 19 | 1 << 18) & ~(1 << 16))
    _code, out, _err = _verify(tmp_path, evidence, guest)
    note = _fields(out)["policy"]["note"]
    assert note == "reported smt (bit 16) clear, migrate-ma (bit 18) set, debug (bit 19) set"
    # a stricter policy is a difference too: the guest did not launch as specified
    evidence = snp_report(3, report)
    set_snp(evidence, "policy", policy & ~(1 << 16))
    code, out, _err = _verify(tmp_path, evidence, guest)
    assert code == 1 and _fields(out)["policy"]["note"] == "reported smt (bit 16) clear"


def test_version_5_and_the_newer_policy_bits(snp_newer, tmp_path):
    """Policy bits 21 and above (CIPHERTEXT_HIDING 24, PAGE_SWAP_DISABLE 25) and report
    version 5, which Debian 13's go-sev-guest 0.13 cannot read: cgsc verify can."""
    guest, manifest = snp_newer
    report = manifest["attestation"]["report"]
    assert int(report["policy"], 16) >> 24 & 1
    assert _verify(tmp_path, snp_report(5, report), guest)[0] == 0
    evidence = snp_report(5, report)
    set_snp(evidence, "policy", int(report["policy"], 16) | 1 << 25)
    code, out, _err = _verify(tmp_path, evidence, guest)
    assert code == 1 and _fields(out)["policy"]["note"] == "reported bit 25 set"
    evidence = snp_report(5, report)
    set_snp(evidence, "policy", int(report["policy"], 16) & ~(1 << 24))
    code, out, _err = _verify(tmp_path, evidence, guest)
    assert code == 1
    assert _fields(out)["policy"]["note"] == "reported ciphertext-hiding (bit 24) clear"


# -- TDX -------------------------------------------------------------------------------------

TDX_FORMS = [(4, 2), (5, 2), (5, 3)]   # (quote version, body type): v4, v5 TDX 1.0, v5 TDX 1.5


@pytest.mark.parametrize("version,body", TDX_FORMS)
def test_a_quote_with_the_predicted_fields_matches(version, body, tdx, tmp_path):
    guest, manifest = tdx
    report = manifest["attestation"]["report"]
    code, out, _err = _verify(tmp_path, tdx_quote(version, report, body), guest)
    doc = json.loads(out)
    assert code == 0, out
    kind = {2: "TDX 1.0", 3: "TDX 1.5"}[body]
    assert doc["evidence"] == f"TDX quote, version {version} ({kind} TD report)"
    assert set(_fields(out)) == {"attributes", "xfam", "mrtd", "mrconfigid", "mrowner",
                                 "mrownerconfig"}


@pytest.mark.parametrize("version,body", TDX_FORMS)
def test_any_xfam_the_host_can_give_matches_and_no_other(version, body, tdx_candidates, tmp_path):
    guest, manifest = tdx_candidates
    report = manifest["attestation"]["report"]
    candidates = guests.xfams(report)
    assert "xfam" not in report and len(candidates) > 1 and int(guests.SPR_XFAM, 16) in candidates
    for xfam in candidates:
        code, out, _err = _verify(tmp_path, tdx_quote(version, report, body, xfam=hex(xfam)), guest)
        assert code == 0, (hex(xfam), out)
    row = _fields(out)["xfam"]
    assert row["expected"] == "one of " + ", ".join(f"{x:#018x}" for x in candidates)
    assert row["note"] == "depends on the host CPU"
    outside = next(c | 1 << b for c in candidates for b in range(64) if c | 1 << b not in candidates)
    code, out, _err = _verify(tmp_path, tdx_quote(version, report, body, xfam=hex(outside)), guest)
    assert code == 1 and [f for f, r in _fields(out).items() if not r["ok"]] == ["xfam"]


@pytest.mark.parametrize("version,body", TDX_FORMS)
def test_each_changed_quote_field_is_named(version, body, tdx, tmp_path):
    guest, manifest = tdx
    report = manifest["attestation"]["report"]
    changes = {"attributes": int(report["attributes"], 16) | 1, "xfam": int(report["xfam"], 16) ^ 1 << 9,
               "mrtd": b"\x01" * 48, "mrconfigid": b"\x02" * 48, "mrowner": b"\x03" * 48,
               "mrownerconfig": b"\x04" * 48}
    for field, value in changes.items():
        evidence = tdx_quote(version, report, body)
        set_tdx(evidence, version, field, value)
        code, out, err = _verify(tmp_path, evidence, guest)
        assert code == 1 and [f for f, r in _fields(out).items() if not r["ok"]] == [field]
    evidence = tdx_quote(version, report, body)
    set_tdx(evidence, version, "attributes", int(report["attributes"], 16) | 1)
    _code, out, _err = _verify(tmp_path, evidence, guest)
    assert _fields(out)["attributes"]["note"] == "reported debug (bit 0) set"


# -- bad evidence: exit 1 with a clear error -------------------------------------------------

def _snp_bad(report):
    good = snp_report(3, report)
    return {"short": good[:-1], "empty": b"", "trailing": good + b"\x00",
            "with its certificate table": good + b"\x01" * 2000,
            "version 1": struct.pack("<I", 1) + good[4:], "version 6": struct.pack("<I", 6) + good[4:],
            "a TDX quote": tdx_quote(4, {"attributes": "0x10000000", "xfam": "0x602e7",
                                         **{k: "00" * 48 for k in ("mrtd", "mrconfigid", "mrowner",
                                                                   "mrownerconfig")}}),
            "too large": b"\x02" + bytes((1 << 20) + 1)}


def _tdx_bad(report):
    v4, v5 = tdx_quote(4, report), tdx_quote(5, report)
    truncated = tdx_quote(4, report)[:-1]
    return {"short header": v4[:47], "version 3 (SGX)": struct.pack("<H", 3) + v4[2:],
            "SGX TEE type": tdx_quote(4, report, tee_type=0), "trailing": v4 + b"\x00",
            "cut in the signature": truncated, "cut in the body": v4[:600],
            "v5 SGX enclave body": tdx_quote(5, report, body_type=1),
            "v5 body size": v5[:50] + struct.pack("<I", 585) + v5[54:],
            "an SEV-SNP report": snp_report(3, {"policy": "0x30000", "measurement": "00" * 48})}


def test_bad_snp_evidence_is_a_clear_error(snp, tmp_path):
    guest, manifest = snp
    for what, data in _snp_bad(manifest["attestation"]["report"]).items():
        code, _out, err = _verify(tmp_path, data, guest, "text")
        assert code == 1, what
        assert "[CGS-VERIFY-002]" in err and "not an SEV-SNP attestation report" in err, (what, err)
        code, out, _err = _verify(tmp_path, data, guest, "json")
        assert code == 1 and json.loads(out)["error"] and not json.loads(out)["match"]


def test_bad_tdx_evidence_is_a_clear_error(tdx, tmp_path):
    guest, manifest = tdx
    messages = {}
    for what, data in _tdx_bad(manifest["attestation"]["report"]).items():
        code, _out, err = _verify(tmp_path, data, guest, "text")
        assert code == 1 and "[CGS-VERIFY-002]" in err and "not a TDX quote" in err, (what, err)
        messages[what] = err
    assert "an SGX quote" in messages["SGX TEE type"]
    assert "version 3 is an SGX quote" in messages["version 3 (SGX)"]
    assert "1 trailing bytes" in messages["trailing"]
    assert "an SGX enclave report" in messages["v5 SGX enclave body"]


# -- environment and usage problems: exit 2 --------------------------------------------------

def test_files_that_are_not_reports_never_hang(snp, tmp_path):
    """A FIFO (nobody writes it), /dev/zero, a directory, a missing file: exit 2 at once."""
    guest, _manifest = snp
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero", str(tmp_path), str(tmp_path / "missing")):
        result = subprocess.run([sys.executable, "-m", "cgsc", "verify", path, "--guest", guest],
                                capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert result.returncode == 2, (path, result.stderr)
        assert result.stderr.startswith("cgsc verify: report ") and "Traceback" not in result.stderr


def test_guests_without_a_report_to_verify(tmp_path):
    sev_guest, _ = guests.build("sev", str(tmp_path))
    code, _out, err = run_cli("verify", "/dev/null", "--guest", sev_guest)
    assert code == 2
    assert "AMD SEV, which has no attestation report cgsc reads" in err
    assert "att-sev.sev-launch-measure.json" in err
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "manifest.json").write_text(json.dumps({"guest": "plain"}))
    code, _out, err = run_cli("verify", "/dev/null", "--guest", str(plain))
    assert code == 2 and "no attestation record" in err
    (plain / "manifest.json").write_text("[1, 2")
    code, _out, err = run_cli("verify", "/dev/null", "--manifest", str(plain / "manifest.json"))
    assert code == 2 and "not a cgsc manifest.json" in err


def test_a_hand_edited_prediction_is_refused(snp, tmp_path):
    guest, manifest = snp
    edited = json.loads(json.dumps(manifest))
    edited["attestation"]["report"]["measurement"] = "not hex"
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(edited))
    evidence = tmp_path / "r.bin"
    evidence.write_bytes(bytes(snp_report(3, manifest["attestation"]["report"])))
    code, _out, err = run_cli("verify", str(evidence), "--manifest", str(path))
    assert code == 2 and "attestation.report.measurement is not 48 bytes of lowercase hex" in err


def test_usage(tmp_path):
    code, _out, err = run_cli("verify", "r.bin")
    assert code == 2 and "one of the arguments --guest --manifest is required" in err


# -- what it says about itself, and the machine formats --------------------------------------

def test_it_says_it_checks_values_not_signatures(snp, tmp_path):
    guest, manifest = snp
    code, out, err = _verify(tmp_path, snp_report(3, manifest["attestation"]["report"]), guest, "text")
    assert code == 0
    assert "values only: the evidence's signature and certificate chain were not checked" in err
    name = os.path.basename(guest)
    for file in (f"{name}.go-sev-guest.textproto", f"{name}.trustee-rvps.json"):
        assert os.path.join(guest, file) in err
    assert out.splitlines()[1].split() == ["field", "expected", "reported", "ok"]
    doc = json.loads(_verify(tmp_path, snp_report(3, manifest["attestation"]["report"]), guest)[1])
    assert doc["checked"].startswith("values only") and len(doc["reference-values"]) == 3


def test_sarif_has_a_result_per_mismatch(snp, tmp_path):
    guest, manifest = snp
    report = manifest["attestation"]["report"]
    evidence = snp_report(3, report)
    set_snp(evidence, "measurement", bytes(48))
    set_snp(evidence, "vmpl", 2)
    code, out, _err = _verify(tmp_path, evidence, guest, "sarif")
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0"
    run = log["runs"][0]
    results = [(r["ruleId"], r["message"]["text"].split(":")[0]) for r in run["results"]]
    assert results == [("CGS-VERIFY-001", "report.vmpl"), ("CGS-VERIFY-001", "report.measurement")]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["CGS-VERIFY-001"]
    assert run["properties"]["match"] is False and run["properties"]["checked"].startswith("values only")
    code, out, _err = _verify(tmp_path, b"short", guest, "sarif")
    assert code == 1 and json.loads(out)["runs"][0]["results"][0]["ruleId"] == "CGS-VERIFY-002"

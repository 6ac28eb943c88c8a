"""The reference values cgsc writes, consumed by the real verifiers: Google's go-sev-guest
0.13 and go-tdx-guest 0.3.1 as Debian 13 packages them, built offline (tests/go_toolchain.py).

tests/go/verifiers (see its README) loads each config with the libraries' own protobuf
types, makes evidence whose fields are the manifest's prediction, signs it with test-only
keys, and runs verify + validate on it and on copies with one predicted field changed.
The same files then go through each library's tools/check CLI and through `cgsc verify`.
The report that equals the prediction is accepted; each changed field is refused, and the
refusal names the field.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess

import attestation_guests as guests
import go_toolchain
import pytest
from conftest import missing
from helpers import EXAMPLES, run_cli

try:
    import tomllib
except ImportError:   # Python < 3.11
    import tomli as tomllib

# What go-sev-guest 0.13 says when it refuses each change (validate/validate.go), and the
# field `cgsc verify` names for it.
SNP_REFUSALS = {
    "measurement": ("report field MEASUREMENT is", "measurement"),
    "policy-debug": ("found unauthorized debug capability", "policy"),
    "policy-migrate-ma": ("found unauthorized migration agent capability", "policy"),
    "policy-smt": ("found unauthorized symmetric multithreading (SMT) capability", "policy"),
    "family-id": ("report field FAMILY_ID is", "family_id"),
    "image-id": ("report field IMAGE_ID is", "image_id"),
    "host-data": ("report field HOST_DATA is", "host_data"),
    "id-key-digest": ("report ID key not trusted", "id_key_digest"),
    "vmpl": ("report VMPL 1 is not 0", "vmpl"),
    "guest-svn": ("is less than the required minimum", "guest_svn"),
}
# go-tdx-guest 0.3.1 (validate/validate.go exactByteMatch): "quote field NAME is ...".
TDX_REFUSALS = {
    "mr-td": "quote field MR_TD is", "td-attributes-debug": "quote field TD_ATTRIBUTES is",
    "td-attributes-sept-ve-disable": "quote field TD_ATTRIBUTES is",
    "xfam": "quote field XFAM is", "mr-config-id": "quote field MR_CONFIG_ID is",
    "mr-owner": "quote field MR_OWNER is", "mr-owner-config": "quote field MR_OWNER_CONFIG is"}
SEV_CHECK_EXIT = {"accepted": 0, "verify": 2, "policy": 5}   # tools/check/check.go exit codes
TDX_CHECK_EXIT = {"accepted": 0, "verify": 2, "policy": 4}


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    tool, why = go_toolchain.find()
    if tool is None:
        missing(why)
    return go_toolchain.build(tool, str(tmp_path_factory.mktemp("go-verifiers")))


def _harness(tools, mode, guest, config, out, *extra):
    result = subprocess.run([tools.harness, mode, "-manifest", os.path.join(guest, "manifest.json"),
                             "-config", config, "-jsonconfig", config[:-len(".textproto")] + ".json",
                             "-out", out, *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _cli(argv):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stderr


def _snp_guests(tmp_path, firmware):
    """(name, OUT/<guest>) of the SEV-SNP examples of the project (measured with Debian's
    firmware where they have no [measurement]) and of the test guests."""
    out = [(e, g) for e, g in guests.examples(str(tmp_path / "examples"), firmware)
           if glob.glob(os.path.join(g, "*.go-sev-guest.textproto"))]
    assert out, "the project has SEV-SNP examples"
    for kind in ("snp", "snp-id-block"):
        (tmp_path / kind).mkdir()
        out.append((kind, guests.build(kind, str(tmp_path / kind))[0]))
    return out


def test_go_sev_guest_accepts_the_prediction_and_refuses_each_change(tools, firmware, tmp_path):
    refused = set()
    for name, guest in _snp_guests(tmp_path, firmware):
        (config,) = glob.glob(os.path.join(guest, "*.go-sev-guest.textproto"))
        evidence = tmp_path / "evidence" / os.path.basename(guest)
        evidence.mkdir(parents=True)
        result = _harness(tools, "snp", guest, config, str(evidence))
        assert result["configs_equal"], f"{name}: textproto and protojson differ"
        for case in result["cases"]:
            what = f"{name} v{case['version']} {case['name']}"
            if case["name"] in ("prediction", "policy-stricter"):
                # the library takes policy as a maximum: a stricter report passes it
                assert case["verified"] and case["accepted"], (what, case["error"])
                expected = "accepted"
            elif case["name"] == "tampered-after-signing":   # the signature is really checked
                assert not case["verified"] and "signature" in case["error"], what
                expected = "verify"
            else:
                message, _field = SNP_REFUSALS[case["name"]]
                assert case["verified"] and not case["accepted"], what
                assert message in case["error"], (what, case["error"])
                refused.add(case["name"])
                expected = "policy"
            code, err = _cli([tools.sev_check, "-config", config, "-in", case["evidence"],
                              "-inform", "bin", "-product_key_path", result["roots"],
                              "-network=false"])
            assert code == SEV_CHECK_EXIT[expected], (what, code, err)
            if expected == "policy":
                assert SNP_REFUSALS[case["name"]][0] in err, (what, err)
            # cgsc verify compares values exactly: every change differs, the field named
            code, out, _err = run_cli("verify", case["report"], "--guest", guest, "--format", "json")
            bad = [f["field"] for f in json.loads(out)["fields"] if not f["ok"]]
            if case["name"] == "prediction":
                assert code == 0 and bad == [], what
            else:
                assert code == 1 and bad == [case["field"]], (what, bad)
    assert set(SNP_REFUSALS) == refused   # every predicted field, ID block fields included


def test_without_pinned_roots_go_sev_guest_0_13_trusts_a_forged_chain(tools, tmp_path):
    """Why the config's header warns: with no root_of_trust and no -product_key_path,
    Debian 13's check accepts a report whose ARK and ASK came with it (test-only keys
    here; google/go-sev-guest#185). Pinning AMD's real Milan ASK/ARK (the library's own
    verify/trust/ask_ark_milan.pem) refuses it."""
    guest, _manifest = guests.build("snp", str(tmp_path))
    (config,) = glob.glob(os.path.join(guest, "*.go-sev-guest.textproto"))
    result = _harness(tools, "snp", guest, config, str(tmp_path))
    evidence = next(c["evidence"] for c in result["cases"]
                    if c["name"] == "prediction" and c["version"] == 3)
    code, err = _cli([tools.sev_check, "-config", config, "-in", evidence, "-inform", "bin",
                      "-network=false"])
    assert code == 0, err
    amd = os.path.join(tools.gopath, "src/github.com/google/go-sev-guest/verify/trust/ask_ark_milan.pem")
    pinned = tmp_path / "pinned.textproto"
    pinned.write_text(f'root_of_trust {{ cabundle_paths: "{amd}" }}\n' + open(config).read())
    code, err = _cli([tools.sev_check, "-config", str(pinned), "-in", evidence, "-inform", "bin",
                      "-network=false"])
    assert code == SEV_CHECK_EXIT["verify"], err


def _tdx_configs(guest):
    """(config, XFAM it is for) of every go-tdx-guest config of the guest."""
    out = []
    for config in sorted(glob.glob(os.path.join(guest, "*.go-tdx-guest*.textproto"))):
        m = re.search(r"\.xfam-([0-9a-f]{16})\.textproto$", config)
        out.append((config, f"0x{m.group(1)}" if m else ""))
    return out


XFAM_PKRU = 1 << 9             # the bit the harness's "xfam" change toggles
LIBRARY_XFAM_BITS = 0x6DBE7    # go-tdx-guest validate.go xfamFixed0: no other XFAM bit passes


def _tdx_matrix(tools, guest, manifest, tmp_path):
    """Every config of the guest through the library, its CLI and cgsc verify; the cases
    the library refused, by name."""
    candidates = guests.xfams(manifest["attestation"]["report"])
    refused = set()
    configs = _tdx_configs(guest)
    assert len(configs) == len(candidates)
    for config, xfam in configs:
        value = int(xfam, 16) if xfam else candidates[0]
        evidence = tmp_path / f"evidence-{value:016x}"
        evidence.mkdir()
        result = _harness(tools, "tdx", guest, config, str(evidence), *(("-xfam", xfam) if xfam else ()))
        assert result["configs_equal"]
        # an XFAM bit beyond the library's own bound (19, APX): every quote is refused
        beyond = value & ~LIBRARY_XFAM_BITS
        for case in result["cases"]:
            what = f"{os.path.basename(config)} {case['name']}"
            if case["name"] == "tampered-after-signing":
                assert not case["verified"], what
                expected = "verify"
            elif case["name"] == "prediction" and not beyond:
                assert case["verified"] and case["accepted"], (what, case["error"])
                expected = "accepted"
            else:
                assert case["verified"] and not case["accepted"], what
                message = "xfamFixed0" if beyond else TDX_REFUSALS[case["name"]]
                assert message in case["error"], (what, case["error"])
                refused.add(case["name"])
                expected = "policy"
            code, err = _cli([tools.tdx_check, "-config", config, "-in", case["evidence"],
                              "-trusted_roots", result["roots"], "-get_collateral=false"])
            assert code == TDX_CHECK_EXIT[expected], (what, code, err)
            if expected == "policy":
                assert (message if beyond else TDX_REFUSALS[case["name"]]) in err, (what, err)
            # cgsc verify: the field named, unless the change is another value it allows
            code, out, _err = run_cli("verify", case["report"], "--guest", guest, "--format", "json")
            bad = [f["field"] for f in json.loads(out)["fields"] if not f["ok"]]
            allowed = case["name"] == "prediction" or (
                case["name"] == "xfam" and value ^ XFAM_PKRU in candidates)
            assert (code, bad) == ((0, []) if allowed else (1, [case["field"]])), what
    return refused


def test_go_tdx_guest_accepts_the_prediction_and_refuses_each_change(tools, tmp_path):
    (tmp_path / "exact").mkdir()
    guest, manifest = guests.tdx(str(tmp_path / "exact"), guests.SPR_XFAM)
    assert _tdx_matrix(tools, guest, manifest, tmp_path / "exact") == set(TDX_REFUSALS)


def test_the_tdx_examples_through_go_tdx_guest(tools, firmware, tmp_path):
    """The project's TDX examples, measured with Debian's OVMF.inteltdx.ms.fd: every
    config of each (one per XFAM it can report)."""
    tds = [(e, g) for e, g in guests.examples(str(tmp_path / "examples"), firmware)
           if glob.glob(os.path.join(g, "*.go-tdx-guest*.textproto"))]
    assert tds, "the project has TDX examples"
    for _example, guest in tds:
        with open(os.path.join(guest, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
        evidence = tmp_path / os.path.basename(guest)
        evidence.mkdir()
        assert set(TDX_REFUSALS) <= _tdx_matrix(tools, guest, manifest, evidence)


def test_one_go_tdx_guest_config_per_xfam_the_host_can_give(tools, tmp_path):
    """Without a host profile XFAM is one of several values: a config per value, each
    accepting its own quote, except those go-tdx-guest itself cannot accept (XFAM bit 19,
    APX, outside its fixed bits: the config's header says so)."""
    guest, manifest = guests.tdx(str(tmp_path))
    assert len(guests.xfams(manifest["attestation"]["report"])) > 1
    refused = _tdx_matrix(tools, guest, manifest, tmp_path)
    assert set(TDX_REFUSALS) <= refused
    apx = [c for c, x in _tdx_configs(guest) if int(x, 16) & 1 << 19]
    assert apx and all("refuses every quote with XFAM bits 0x80000" in open(c).read() for c in apx)


def test_why_td_attributes_xfam_and_header_policy_are_always_written(tools, tmp_path):
    """Without td_attributes and xfam go-tdx-guest 0.3.1 checks only their fixed bits and
    accepts a DEBUG TD; without header_policy its tools/check crashes."""
    guest, _manifest = guests.tdx(str(tmp_path), guests.SPR_XFAM)
    config, xfam = _tdx_configs(guest)[0]
    result = _harness(tools, "tdx", guest, config, str(tmp_path), *(("-xfam", xfam) if xfam else ()))
    debug = next(c["evidence"] for c in result["cases"] if c["name"] == "td-attributes-debug")
    text = open(config).read()
    loose = tmp_path / "loose.textproto"
    loose.write_text(re.sub(r"^\s*(td_attributes|xfam): .*\n", "", text, flags=re.M))
    argv = ["-in", debug, "-trusted_roots", result["roots"], "-get_collateral=false"]
    assert _cli([tools.tdx_check, "-config", config, *argv])[0] == TDX_CHECK_EXIT["policy"]
    assert _cli([tools.tdx_check, "-config", str(loose), *argv])[0] == 0
    headless = tmp_path / "headless.textproto"
    headless.write_text(text.replace("  header_policy {}\n", ""))
    code, err = _cli([tools.tdx_check, "-config", str(headless), *argv])
    assert code != 0 and "nil pointer dereference" in err

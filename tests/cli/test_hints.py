"""Hints that said the wrong thing or too little (issue 24), each reproduced here first."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from helpers import ROOT, run_cli

TDX_NO_FIRMWARE = """spec-version = 1
[guest]
name = "td"
memory = 1024
[confidential.tdx]
"""


def test_tdx_without_firmware_suggests_a_tdx_firmware(tmp_path):
    spec = tmp_path / "td.toml"
    spec.write_text(TDX_NO_FIRMWARE)
    code, _out, err = run_cli("validate", str(spec))
    assert code == 1 and "CGS-FW-" in err, err
    assert "amdsev" not in err and "inteltdx" in err, err


def test_snp_without_firmware_suggests_an_amd_firmware(tmp_path):
    spec = tmp_path / "snp.toml"
    spec.write_text(TDX_NO_FIRMWARE.replace("[confidential.tdx]", "cpu = \"EPYC-v4\"\n"
                    "[confidential.sev-snp]\ncbitpos = 51\nreduced-phys-bits = 1"))
    code, _out, err = run_cli("validate", str(spec))
    assert code == 1 and "OVMF.amdsev.fd" in err and "inteltdx" not in err, err


KUBEVIRT_ONLY = """spec-version = 1
[guest]
name = "kv"
cpu = "EPYC-v4"
memory = 1024
[confidential.sev-snp]
cbitpos = 51
reduced-phys-bits = 1
[[disk]]
path = "/var/lib/guests/kv/root.raw"
format = "raw"
kubevirt = { pvc = "kv-root" }
[targets]
build = ["kubevirt"]
"""


def test_a_kubevirt_only_spec_needs_no_host_firmware_file(tmp_path):
    """KubeVirt's cluster picks the firmware (the manifest says EFI); a spec that builds only
    the VirtualMachine must not be made to name a host file nothing reads."""
    spec = tmp_path / "kv.toml"
    spec.write_text(KUBEVIRT_ONLY)
    code, _out, err = run_cli("build", str(spec), "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out" / "kv")) == ["kv.kubevirt.yaml", "manifest.json"]
    # a host target still needs it
    code, _out, err = run_cli("build", str(spec), "-t", "shell", "-o", str(tmp_path / "o2"))
    assert code == 1 and "needs [firmware] code" in err, err


def test_a_missing_relative_measurement_file_says_where_cgsc_looked(tmp_path):
    """In a fleet, [measurement] paths given by a base resolve from the base's directory
    (like extends: relative to the file that says it); the error names the path read."""
    (tmp_path / ".git").mkdir()
    bases = tmp_path / "guests" / "bases"
    bases.mkdir(parents=True)
    (bases / "base.toml").write_text('[measurement]\nfirmware = "build/OVMF.amdsev.fd"\n')
    child = tmp_path / "guests" / "web.toml"
    child.write_text('spec-version = 1\nextends = "bases/base.toml"\n' + KUBEVIRT_ONLY.split(
        "spec-version = 1\n")[1].replace("[targets]\nbuild = [\"kubevirt\"]\n", "")
        .replace("[confidential.sev-snp]", '[firmware]\ncode = "/usr/share/ovmf/OVMF.amdsev.fd"\n'
                 "[confidential.sev-snp]"))
    code, _out, err = run_cli("validate", str(child))
    assert code == 1, err
    looked = os.path.join(str(bases), "build", "OVMF.amdsev.fd")
    assert looked in err, err
    assert "base.toml" in err, err


TAPLO_EXAMPLE = os.path.join(ROOT, "examples", "editors", ".taplo.toml")


def _taplo():
    found = shutil.which("taplo")
    if found is None:
        from conftest import missing
        missing("taplo is not installed (pip install -e '.[test]' installs it)")
    return found


def test_the_shipped_taplo_config_checks_guests_and_bases(tmp_path):
    """`#:schema ./cgsc.schema.json` resolves beside the TOML file (guests/), so the README's
    old advice failed to load the schema; the shipped .taplo.toml works from the top."""
    taplo = _taplo()
    shutil.copy(TAPLO_EXAMPLE, tmp_path / ".taplo.toml")
    for args, name in ((["schema"], "cgsc.schema.json"), (["schema", "--base"], "cgsc.base.schema.json")):
        (tmp_path / name).write_text(run_cli(*args)[1])
    (tmp_path / "guests" / "bases").mkdir(parents=True)
    with open(os.path.join(ROOT, "examples", "sev.toml")) as fh:
        good = fh.read()
    (tmp_path / "guests" / "good.toml").write_text(good)
    (tmp_path / "guests" / "bad.toml").write_text(good + "bogus-key = 1\n")
    (tmp_path / "guests" / "bases" / "base.toml").write_text("[guest]\nvcpus = 2\n")
    (tmp_path / "guests" / "bases" / "badbase.toml").write_text("[guest]\nvcpu = 2\n")

    def check(path):
        return subprocess.run([taplo, "check", path], cwd=tmp_path, capture_output=True,
                              text=True).returncode
    assert check("guests/good.toml") == 0
    assert check("guests/bad.toml") != 0
    assert check("guests/bases/base.toml") == 0      # a base: no required keys
    assert check("guests/bases/badbase.toml") != 0


def test_the_old_schema_directive_fails_in_a_guests_directory(tmp_path):
    taplo = _taplo()
    (tmp_path / "cgsc.schema.json").write_text(run_cli("schema")[1])
    (tmp_path / "guests").mkdir()
    with open(os.path.join(ROOT, "examples", "sev.toml")) as fh:
        (tmp_path / "guests" / "a.toml").write_text("#:schema ./cgsc.schema.json\n" + fh.read())
    def check():
        return subprocess.run([taplo, "check", "guests/a.toml"], cwd=tmp_path,
                              capture_output=True, text=True).returncode
    assert check() != 0
    shutil.copy(tmp_path / "cgsc.schema.json", tmp_path / "guests")   # where Taplo looks
    assert check() == 0

"""--strict and `strict = true`: an unwaived warning fails build, validate and check
(nothing written); [waive] with a reason remains the way to accept one."""

from __future__ import annotations

import json

import pytest
from helpers import FLEET_BASE, MINIMAL_SNP, run_cli

DEBUG = "policy = { debug = true }\n"   # CGS-SNP-010, a warning


def _spec(tmp_path, name="g", extra=""):
    spec = tmp_path / f"{name}.toml"
    spec.write_text(MINIMAL_SNP.format(name=name) + DEBUG + extra)
    return str(spec)


@pytest.mark.parametrize("command", ["build", "validate", "check"])
def test_strict_fails_on_an_unwaived_warning(command, tmp_path):
    spec = _spec(tmp_path)
    out = ["-o", str(tmp_path / "out")] if command != "validate" else []
    if command == "check":
        assert run_cli("build", spec, *out)[0] == 0
    code, _o, err = run_cli(command, spec, *out)
    assert code == 0 and "warning: " in err and "[CGS-SNP-010]" in err, err
    code, _o, err = run_cli(command, "--strict", spec, *(["-o", str(tmp_path / "new")] if out else []))
    assert code == 1 and "[CGS-SNP-010]" in err, err
    assert "(a warning; fails under --strict)" in err
    assert 'or accept it on record: [waive] "CGS-SNP-010" = "<reason>"' in err
    assert not (tmp_path / "new").exists()


def test_a_waiver_with_a_reason_accepts_the_warning_under_strict(tmp_path):
    spec = _spec(tmp_path, extra='[waive]\n"CGS-SNP-010" = "lab guest, debugged on purpose"\n')
    code, _o, err = run_cli("build", "--strict", spec, "-o", str(tmp_path / "out"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "g" / "manifest.json").read_text())
    assert manifest["waivers"] == [{"rule": "CGS-SNP-010", "reason": "lab guest, debugged on purpose"}]
    # a stale waiver is a warning too: strict fails on it
    stale = _spec(tmp_path, "h", '[waive]\n"CGS-QEMU-003" = "no longer needed"\n')
    code, _o, err = run_cli("validate", "--strict", stale)
    assert code == 1 and "[CGS-WAIVE-002]" in err and "[CGS-SNP-010]" in err


def test_strict_in_a_base_is_the_default_of_every_guest_that_extends_it(tmp_path):
    (tmp_path / "base.toml").write_text("strict = true\n" + FLEET_BASE + DEBUG)
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text(f'extends = "base.toml"\n[guest]\nname = "{name}"\n')
    specs = [str(tmp_path / "a.toml"), str(tmp_path / "b.toml")]
    code, _o, err = run_cli("build", *specs, "-o", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out").exists()
    # one finding for both guests, saying where strict comes from
    assert err.count("[CGS-SNP-010]") == 1 and "in 2 guests: " in err
    assert f"(a warning; fails under strict = true, {tmp_path / 'base.toml'}:1)" in err
    # a guest may opt out, in review
    (tmp_path / "b.toml").write_text('extends = "base.toml"\nstrict = false\n[guest]\nname = "b"\n')
    code, _o, err = run_cli("validate", *specs)
    assert code == 1 and "in 1 guest: " + specs[0] in err
    code, _o, err = run_cli("validate", specs[1])
    assert code == 0 and "warning: " in err


def test_strict_is_a_gate_not_a_report(tmp_path):
    """diff and explain describe a strict spec's warnings; they never fail on them."""
    (tmp_path / "base.toml").write_text("strict = true\n" + MINIMAL_SNP.format(name="s") + DEBUG)
    code, out, err = run_cli("explain", str(tmp_path / "base.toml"))
    assert code == 0 and "CGS-SNP-010" in out, err
    code, out, err = run_cli("diff", str(tmp_path / "base.toml"), str(tmp_path / "base.toml"))
    assert code == 0, err

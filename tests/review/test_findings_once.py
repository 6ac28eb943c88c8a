"""Findings are facts about a place, reported once: a diagnostic in a base that 500 guests
extend is one diagnostic at the base's line, naming "500 guests", in every format; the
exit status is what it always was."""

from __future__ import annotations

import json
import re

import pytest
from helpers import FLEET_BASE, run_cli
from writes_helpers import cgsc

BASE = FLEET_BASE + """policy = { smt = true, debug = true }
[[disk]]
path = "/var/lib/guests/{name}/root.qcow2"
format = "qcow2"
"""
DEBUG_LINE = BASE.splitlines().index("policy = { smt = true, debug = true }") + 1


def _fleet(tmp_path, count=500, base=BASE):
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "web.toml").write_text(base)
    specs = []
    for i in range(count):
        spec = tmp_path / f"web-{i:03d}.toml"
        spec.write_text(f'extends = "bases/web.toml"\n[guest]\nname = "web-{i:03d}"\n')
        specs.append(str(spec))
    return specs, str(tmp_path / "bases" / "web.toml")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return _fleet(tmp_path_factory.mktemp("fleet"))


def test_one_base_warning_is_one_text_diagnostic_naming_the_line_and_500_guests(fleet, tmp_path):
    specs, base = fleet
    for jobs in ("1", "2"):
        r = cgsc("build", "-j", jobs, *specs, "-o", str(tmp_path / f"out{jobs}"))
        assert r.returncode == 0, r.stderr
        (located,) = [l for l in r.stderr.splitlines() if "[CGS-SNP-010]" in l]
        assert located.startswith(f"{base}:{DEBUG_LINE}: confidential.sev-snp.policy.debug: warning: ")
        shown = r.stderr.splitlines()[r.stderr.splitlines().index(located) + 1]
        assert shown == f"  in 500 guests: {specs[0]}, {specs[1]}, {specs[2]} and 497 more"
        assert r.stderr.count("\n  hint: ") == 2   # this one's, and the floating machine's
        assert "cgsc: 500 guests written" in r.stderr


def test_one_github_annotation_and_one_json_entry(fleet):
    specs, base = fleet
    code, out, _err = run_cli("validate", *specs, "--format", "github")
    assert code == 0
    (line,) = [l for l in out.splitlines() if "CGS-SNP-010" in l]
    assert line.startswith(f"::warning file={base},line={DEBUG_LINE},")
    assert "in 500 guests" in line
    code, out, _err = run_cli("validate", *specs, "--format", "json")
    (found,) = [d for d in json.loads(out) if d["rule"] == "CGS-SNP-010"]
    assert found["file"] == base and found["line"] == DEBUG_LINE and found["specs"] == specs


def test_one_sarif_result_with_related_locations_that_validates(fleet, sarif_validator):
    specs, base = fleet
    code, out, _err = run_cli("validate", *specs, "--format", "sarif")
    assert code == 0
    log = json.loads(out)
    assert sorted(sarif_validator.iter_errors(log), key=str) == []
    (result,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "CGS-SNP-010"]
    where = result["locations"][0]["physicalLocation"]
    assert where["artifactLocation"]["uri"] == base and where["region"]["startLine"] == DEBUG_LINE
    related = [r["physicalLocation"]["artifactLocation"]["uri"] for r in result["relatedLocations"]]
    assert related == specs[:100] and result["properties"]["guests"] == 500
    assert "in 500 guests" in result["message"]["text"]


def test_an_error_in_a_base_is_one_error_in_every_format_and_the_exit_status_holds(tmp_path):
    specs, base = _fleet(tmp_path, 3, BASE.replace("memory = 1024", "memory = \"lots\""))
    line = BASE.splitlines().index("memory = 1024") + 1
    for fmt in ("text", "json", "sarif", "github"):
        code, out, err = run_cli("build", *specs, "--format", fmt, "-o", str(tmp_path / "out"))
        assert code == 1 and not (tmp_path / "out").exists()
        if fmt == "text":
            assert len(re.findall(r"\[CGS-SCHEMA-\d+\]", err)) == 1
            assert f"{base}:{line}: guest.memory: " in err and "in 3 guests: " in err
            assert "cgsc: 1 error; nothing written" in err
        elif fmt == "json":
            (d,) = json.loads(out)
            assert (d["file"], d["line"], d["specs"]) == (base, line, specs)
        elif fmt == "sarif":
            (r,) = json.loads(out)["runs"][0]["results"]
            assert len(r["relatedLocations"]) == 3
        else:
            assert out.count("::error ") == 1


def test_a_finding_in_a_spec_itself_names_no_other_spec(tmp_path):
    specs, _base = _fleet(tmp_path, 2, BASE.replace("debug = true", "debug = false"))
    with open(specs[0], "a") as fh:
        fh.write("[qemu]\nsandbox = false\n")
    code, out, _err = run_cli("validate", *specs, "--format", "json")
    (d,) = json.loads(out)
    assert code == 0 and d["rule"] == "CGS-QEMU-003" and d["file"] == specs[0] and d["specs"] == []
    code, _out, err = run_cli("validate", *specs)
    assert " guests: " not in err and " guest: " not in err

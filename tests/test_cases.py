"""tests/cases/*.toml: valid specs whose `##` comment lines assert facts of the output."""

from __future__ import annotations

import json

import pytest
from helpers import CASES, assertions, compile_plan, rel, render, run_cli, unit_values

from cgsc.pipeline.compile import compile_spec


def _value(text: str) -> str:
    """A literal, or `json:"..."` for values with newlines or escapes."""
    return json.loads(text[5:]) if text.startswith("json:") else text


@pytest.mark.parametrize("spec", CASES, ids=rel)
def test_case_has_assertions(spec):
    keys = ("assert-qemu-arg", "assert-xpath", "assert-unit", "assert-warning", "assert-no-target",
            "assert-waived")
    assert any(assertions(spec, k) for k in keys), "a case must assert something"


@pytest.mark.parametrize("spec", CASES, ids=rel)
def test_qemu_args(spec):
    argv = compile_plan(spec).argv()
    pairs = list(zip(argv, argv[1:]))
    for line in assertions(spec, "assert-qemu-arg"):
        option, _, value = line.partition(" ")
        assert (option, _value(value)) in pairs, f"{option} {value!r} not in {argv}"


@pytest.mark.parametrize("spec", CASES, ids=rel)
def test_xpath(spec, relaxng):
    from lxml import etree
    lines = assertions(spec, "assert-xpath")
    if not lines:
        return
    doc = etree.fromstring(render(spec, "libvirt").encode())
    assert relaxng.validate(doc), relaxng.error_log
    for line in lines:
        path, _, expected = line.partition(" ")
        found = doc.xpath(path)
        got = [f if isinstance(f, str) else f.text for f in found]
        assert _value(expected) in got, f"{path}: {got!r}"


@pytest.mark.parametrize("spec", CASES, ids=rel)
def test_unit(spec):
    lines = assertions(spec, "assert-unit")
    if not lines:
        return
    unit = render(spec, "systemd")
    for line in lines:
        section, key, expected = line.split(" ", 2)
        assert _value(expected) in unit_values(unit, section, key), f"[{section}] {key}"


@pytest.mark.parametrize("spec", CASES, ids=rel)
def test_warnings(spec):
    expected = set(assertions(spec, "assert-warning"))
    assert {w.rule for w in compile_spec(spec).warnings} == expected


@pytest.mark.parametrize("spec", CASES, ids=rel)
def test_waivers(spec, tmp_path):
    expected = [tuple(line.split(" ", 1)) for line in assertions(spec, "assert-waived")]
    compiled = compile_spec(spec)
    assert [(d.rule, reason) for d, reason in compiled.waived] == expected
    if not expected:
        return
    code, _out, err = run_cli("build", spec, "-o", str(tmp_path))
    assert code == 0
    plan = compiled.plan
    manifest = json.loads((tmp_path / plan.name / "manifest.json").read_text())
    assert [(w["rule"], w["reason"]) for w in manifest["waivers"]] == expected
    for rule, reason in expected:
        assert rule not in err, "a waived warning is not printed as a warning"
        for artifact in manifest["artifacts"]:
            assert f"waived {rule}: {reason}" in (tmp_path / plan.name / artifact["file"]).read_text()


@pytest.mark.parametrize("spec", CASES, ids=rel)
def test_target_that_cannot_express_the_spec(spec, tmp_path):
    for line in assertions(spec, "assert-no-target"):
        target, rule = line.split()
        code, _out, err = run_cli("build", spec, "-o", str(tmp_path / "default"))
        assert code == 0, err
        plan = compile_plan(spec)
        names = {p.name for p in (tmp_path / "default" / plan.name).iterdir()}
        assert not any(n.endswith(".xml") for n in names) if target == "libvirt" else True
        code, _out, err = run_cli("build", spec, "-t", target, "-o", str(tmp_path / "explicit"))
        assert code == 1 and f"[{rule}]" in err
        assert not (tmp_path / "explicit").exists()

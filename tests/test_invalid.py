"""tests/invalid/<RULE>.toml: one spec per rule, each refused with the right file:line and key.

A file is named after the rule it is about (`CGS-SCHEMA-003-with-rules.toml` shows that
schema errors and cross-field errors of one spec come together).
`## expect: [FILE:]LINE KEY.PATH RULE "phrase"` lines say what the diagnostics must say
(FILE defaults to the spec itself; LINE 0: the file has no line); `## args:` replaces the
spec argument (multi-file cases).
"""

from __future__ import annotations

import os
import re
import shlex

import pytest
from helpers import CASES, INVALID, ROOT, assertions, run_cli

from cgsc.core.rules import load_all

INVALID_DIR = os.path.join(ROOT, "tests", "invalid")


def _expectations(spec):
    out = []
    for line in assertions(spec, "expect:"):
        m = re.fullmatch(r'(?:(\S+):)?(\d+) (\S+(?: level\))?) (CGS-[A-Z0-9]+-\d{3}) "(.*)"', line)
        assert m, f"malformed expect line: {line}"
        out.append((m.group(1), int(m.group(2)), m.group(3), m.group(4),
                    m.group(5).replace('\\"', '"')))
    return out


@pytest.mark.parametrize("spec", INVALID, ids=os.path.basename)
def test_invalid_spec_is_refused_with_located_messages(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(INVALID_DIR)
    name = os.path.basename(spec)
    args = (assertions(spec, "args:") or [name])[0]
    out_dir = tmp_path / "out"
    code, stdout, err = run_cli("build", *shlex.split(args), "-o", str(out_dir))
    assert code == 1, err
    assert "Traceback" not in err and stdout == ""
    assert not out_dir.exists(), "an invalid build must write nothing"
    expected = _expectations(spec)
    assert expected, "every invalid spec says what it expects"
    rule_of_file = re.match(r"CGS-[A-Z0-9]+-\d{3}", name).group(0)
    assert any(rule == rule_of_file for _f, _l, _p, rule, _m in expected)
    lines = err.splitlines()
    for file_name, line_no, path, rule, phrase in expected:
        file_name = file_name or shlex.split(args)[0]
        where = re.escape(file_name) + (f":{line_no}(:\\d+)?" if line_no else "")
        pattern = f"^{where}: {re.escape(path)}: .*{re.escape(phrase)}.* \\[{rule}\\]$"
        assert any(re.match(pattern, l) for l in lines), f"no line matches {pattern!r} in:\n{err}"
    # every diagnostic line has the shape file:line: key.path: message [RULE]
    for l in lines:
        if l.startswith(("  hint: ", "cgsc: ")) or re.match(r"  in \d+ guests?: ", l):
            continue
        assert re.match(r"^\S.*?(:\d+(:\d+)?)?: \S+.*: .+ \[CGS-[A-Z0-9]+-\d{3}\]$", l), l


# Rules reported by a command rather than by compiling one spec, and the test that shows each.
ELSEWHERE = {"CGS-CHECK-001": "tests/review/test_review.py::test_check_reports_every_kind_of_drift",
             "CGS-CHECK-002": "tests/review/test_review_gate.py::test_check_all_finds_every_guest_and_orphans",
             "CGS-FLEET-006": "tests/pipeline/test_conflicts.py::test_a_shared_directory_is_a_conflict",
             "CGS-PRUNE-001": "tests/output/test_prune.py::"
                              "test_prune_refuses_to_touch_a_directory_cgsc_did_not_make",
             "CGS-MEASURE-004": "tests/measure/test_measure.py::test_missing_library_is_a_located_error",
             "CGS-ATTEST-003": "tests/measure/test_reference_values.py::"
                               "test_a_format_that_cannot_be_written_is_an_error_only_when_asked_for",
             "CGS-VERIFY-001": "tests/review/test_verify.py::test_each_changed_field_is_named",
             "CGS-VERIFY-002": "tests/review/test_verify.py::test_bad_snp_evidence_is_a_clear_error",
             "CGS-MEASURE-017": "tests/measure/test_amd_audit.py::"
                                "test_a_kernel_without_kernel_hashes_is_listed_as_unmeasured_and_warned",
             "CGS-HOST-007": "tests/host/test_hostprofile.py::test_debug_swap_on_the_host_is_a_warning",
             "CGS-HOST-008": "tests/host/test_hostprofile.py::test_without_a_profile_the_floating_machine_is_said_once",
             "CGS-HOST-010": "tests/host/test_hostprofile.py::"
                             "test_a_libvirt_release_before_the_model_is_refused_and_after_it_accepted"}


def test_every_rule_has_a_test():
    covered = {re.match(r"CGS-[A-Z0-9]+-\d{3}", os.path.basename(s)).group(0) for s in INVALID}
    covered |= set(ELSEWHERE)
    for case in CASES:
        covered.update(assertions(case, "assert-warning"))
        covered.update(line.split()[0] for line in assertions(case, "assert-waived"))
    assert sorted(set(load_all()) - covered) == []


def test_errors_come_all_at_once_sorted_by_line(monkeypatch):
    monkeypatch.chdir(INVALID_DIR)
    code, _out, err = run_cli("validate", "CGS-SCHEMA-004.toml", "CGS-SNP-003.toml")
    assert code == 1
    located = [l for l in err.splitlines() if l.startswith("CGS-") and ": warning: " not in l]
    assert len(located) == 7
    assert err.rstrip().endswith("cgsc: 7 errors; nothing written")
    schema_lines = [int(l.split(":")[1]) for l in located if l.startswith("CGS-SCHEMA-004")]
    assert schema_lines == sorted(schema_lines)


def test_each_missing_top_level_table_is_reported_once_by_every_command(tmp_path, monkeypatch):
    """The schema's top-level if/else lists the required tables once, and jsonschema fails
    that `required` once per missing key, each error naming both: still one diagnostic
    per missing table, whichever command reports it."""
    import json
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bare.toml").write_text("spec-version = 1\n")
    (tmp_path / "other.toml").write_text("spec-version = 1\n")
    expected = {("guest", "CGS-SCHEMA-002"), ("confidential", "CGS-SCHEMA-002")}
    for command in (["validate"], ["build", "-o", "out"], ["check"], ["explain"],
                    ["diff", "other.toml"]):
        code, out, err = run_cli(*command[:1], "bare.toml", *command[1:])
        lines = [l for l in err.splitlines() if l.startswith("bare.toml:")]
        assert code == 1 and len(lines) == 2, (command, err)
        assert {(l.split(": ")[1], l.rsplit("[", 1)[1].rstrip("]")) for l in lines} == expected
    for command in (["validate"], ["build", "-o", "out"], ["check"]):
        code, out, _err = run_cli(*command, "bare.toml", "--format", "json")
        found = [(d["key"], d["rule"]) for d in json.loads(out) if d["file"] == "bare.toml"]
        assert code == 1 and sorted(found) == sorted(expected), (command, found)


@pytest.mark.parametrize("spec", INVALID, ids=os.path.basename)
def test_no_diagnostic_is_reported_twice(spec, monkeypatch):
    import json
    monkeypatch.chdir(INVALID_DIR)
    args = shlex.split((assertions(spec, "args:") or [os.path.basename(spec)])[0])
    _code, out, _err = run_cli("validate", *args, "--format", "json")
    found = [json.dumps(d, sort_keys=True) for d in json.loads(out)]
    assert len(found) == len(set(found)), out

"""A CLI that teaches: rule IDs wherever a user types one, machine-readable catalogues,
help with examples, a scaffold, colour where a terminal wants it, -q/-v."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT, run_cli

COMMANDS = ("build", "validate", "check", "explain", "diff", "rules", "schema", "targets",
            "probe", "completion", "init")


def test_explain_takes_a_rule_id():
    code, out, err = run_cli("explain", "CGS-SNP-010")
    assert code == 0, err
    assert out == run_cli("rules", "CGS-SNP-010")[1]
    assert "No such file" not in err


def test_explain_of_an_unknown_rule_id_says_so():
    code, _out, err = run_cli("explain", "CGS-NOPE-999")
    assert code == 2 and "no rule CGS-NOPE-999" in err and "cgsc rules" in err, err


def test_rules_as_json_lists_every_rule_with_its_fields():
    from cgsc.core.rules import load_all
    code, out, _err = run_cli("rules", "--format", "json")
    assert code == 0
    rules = json.loads(out)
    assert [r["id"] for r in rules] == sorted(load_all())
    assert set(rules[0]) == {"id", "severity", "summary", "explanation", "fix", "reference",
                             "waivable"}
    one = json.loads(run_cli("rules", "CGS-SNP-010", "--format", "json")[1])
    assert one["id"] == "CGS-SNP-010" and one["waivable"] == (one["severity"] == "warning")


def test_targets_as_json():
    code, out, _err = run_cli("targets", "--format", "json")
    assert code == 0
    targets = json.loads(out)
    names = [t["name"] for t in targets]
    assert names[:3] == ["shell", "systemd", "libvirt"] and "kubevirt" in names
    assert all(set(t) == {"name", "summary", "default"} for t in targets)
    assert {t["name"]: t["default"] for t in targets}["kubevirt"] is False


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_s_help_has_examples(command):
    code, out, _err = run_cli(command, "--help")
    assert code == 0
    assert "examples:" in out, out
    assert re.search(rf"^  cgsc {command}\b", out, re.M), out


def test_top_level_help_points_to_the_docs_and_lists_every_command():
    code, out, _err = run_cli("--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out
    assert "docs/" in out and "cgsc explain RULE-ID" in out

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
            "probe", "completion", "init", "verify")


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


MECHANISMS = ("sev", "sev-es", "sev-snp", "tdx", "pef", "s390-pv")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_init_writes_a_valid_commented_spec_for_every_mechanism(mechanism, tmp_path):
    path = tmp_path / f"g-{mechanism}.toml"
    code, _out, err = run_cli("init", "--mechanism", mechanism, f"g-{mechanism}", "-o", str(path))
    assert code == 0, err
    text = path.read_text()
    assert text.count("\n#") >= 3 and f"[confidential.{mechanism}]" in text
    code, _out, err = run_cli("validate", str(path))
    assert code == 0, err
    code, _out, err = run_cli("build", str(path), "-o", str(tmp_path / "out"))
    assert code == 0, err


def test_init_never_overwrites(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("# my own spec\n")
    code, _out, err = run_cli("init", "--mechanism", "sev-snp", "mine", "-o", str(path))
    assert code == 2 and "never overwrites" in err
    assert path.read_text() == "# my own spec\n"


def test_init_refuses_a_name_the_language_refuses(tmp_path):
    code, _out, err = run_cli("init", "-m", "tdx", "Bad Name", "-o", str(tmp_path / "x.toml"))
    assert code == 2 and "not a guest name" in err
    assert not (tmp_path / "x.toml").exists()


WARNS = os.path.join(ROOT, "examples", "fleet", "web-3.toml")   # warns CGS-SNP-011 on purpose


def test_colour_always_never_and_no_color(tmp_path):
    code, _out, err = run_cli("validate", "--color=always", WARNS)
    assert code == 0 and "\x1b[" in err and "[\x1b[1mCGS-" in err
    assert "\x1b[" not in run_cli("validate", "--color=never", WARNS)[2]
    assert "\x1b[" not in run_cli("validate", WARNS)[2]      # auto: not a terminal


def _on_a_terminal(argv, env):
    """Run cgsc with stderr on a pseudo-terminal; what it wrote there."""
    import pty
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "cgsc"] + argv, stderr=follower,
                          stdout=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.returncode, b"".join(chunks).decode()


def test_colour_auto_on_a_terminal_honours_no_color():
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    env["TERM"] = "xterm"
    code, err = _on_a_terminal(["validate", WARNS], env)
    assert code == 0 and "\x1b[" in err
    code, err = _on_a_terminal(["validate", WARNS], dict(env, NO_COLOR="1"))
    assert code == 0 and "\x1b[" not in err
    code, err = _on_a_terminal(["validate", "--color=always", WARNS], dict(env, NO_COLOR="1"))
    assert "\x1b[" in err                       # the option overrides the variable


def test_quiet_and_verbose(tmp_path):
    code, _out, err = run_cli("validate", WARNS)
    assert "spec valid" in err and "CGS-SNP-011" in err
    code, _out, quiet = run_cli("validate", "-q", WARNS)
    assert code == 0 and "spec valid" not in quiet and "CGS-SNP-011" in quiet
    code, _out, loud = run_cli("-v", "validate", WARNS)
    assert code == 0 and "web-3 valid" in loud and "spec valid" in loud


def test_verbose_check_names_every_guest(tmp_path):
    assert run_cli("build", WARNS, "-o", str(tmp_path))[0] == 0
    code, _out, err = run_cli("check", "-v", WARNS, "-o", str(tmp_path))
    assert code == 0 and "cgsc: web-3: up to date" in err
    code, _out, err = run_cli("check", "-q", WARNS, "-o", str(tmp_path))
    assert code == 0 and "up to date" not in err

"""The review workflow: explain, check, machine-readable diagnostics, the rule catalogue,
completion and the pre-commit hooks."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers import EXAMPLES, INVALID, ROOT, assertions, compile_plan, data_json, render, run_cli

from cgsc.mechanisms import MECHANISMS
from cgsc.lower.qemu import keyval_split
from cgsc.core.rules import load_all

BASES = {
    "sev": '[firmware]\ncode = "/fw.fd"\n[confidential.sev]\ncbitpos = 47\nreduced-phys-bits = 1\n',
    "sev-es": '[firmware]\ncode = "/fw.fd"\n[confidential.sev-es]\ncbitpos = 47\nreduced-phys-bits = 1\n',
    "sev-snp": '[firmware]\ncode = "/fw.fd"\n[confidential.sev-snp]\ncbitpos = 51\nreduced-phys-bits = 1\n',
    "tdx": '[firmware]\ncode = "/fw.fd"\n[confidential.tdx]\n',
}


def _emitted_word(spec, word):
    """The policy/attributes integer as the shell script hands it to QEMU."""
    script = render(spec, "shell")
    line = next(l for l in script.splitlines() if l.startswith("    printf '%s\\n' "))
    argv = shlex.split(shlex.split(line)[2])
    obj = argv[argv.index("-object") + 1]
    if obj.startswith("{"):
        return json.loads(obj)[word]
    props = dict(p.split("=", 1) for p in keyval_split(obj)[1:])
    value = props[word]
    return {"on": True, "off": False}[value] if value in ("on", "off") else int(value, 0)


def _cases():
    for mech, base in BASES.items():
        layout = MECHANISMS[mech].layout
        for flag in layout.flags:
            if mech == "tdx" and flag.name == "debug":
                continue  # an error (CGS-TDX-001), shown in the invalid corpus
            yield mech, base, layout, {flag.name: not flag.default}
        for name, _shift in layout.fields:
            yield mech, base, layout, {name: 7}


@pytest.mark.parametrize("mech, base, layout, flags", list(_cases()),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_explain_decodes_every_named_bit_of_what_the_shell_target_emits(mech, base, layout, flags, tmp_path):
    table = ", ".join(f"{k} = {str(v).lower()}" for k, v in flags.items())
    key = layout.word
    spec = tmp_path / "g.toml"
    spec.write_text(f'[guest]\nname = "g"\nmemory = 512\n{base}{key} = {{ {table} }}\n')
    code, out, err = run_cli("explain", str(spec), "--format", "json")
    assert code == 0, err
    setting = next(s for s in json.loads(out)["settings"] if s["key"] == key)
    emitted = _emitted_word(str(spec), "sept-ve-disable" if mech == "tdx" else key)
    if mech == "tdx":  # flags go to QEMU as sept-ve-disable; the word is derived from it
        emitted = (1 << 28) if emitted else 0
    assert setting["value"] == emitted and setting["hex"] == f"{emitted:#x}"   # typed JSON
    decoded = setting["decoded"]
    for name, value in flags.items():
        flag = next((f for f in layout.flags if f.name == name), None)
        if flag:
            assert bool(emitted >> flag.bit & 1) == (value == flag.sets)
            assert f"{name} {'on' if value else 'off'}" in decoded
        else:
            shift = dict(layout.fields)[name]
            assert emitted >> shift & 0xFF == value and f"{name} {value}" in decoded
    for bit, name in layout.bit_names.items():
        assert (f"{name} (bit {bit})" in decoded) == bool(emitted >> bit & 1)


def test_explain_names_sources_and_waivers():
    spec = os.path.join(ROOT, "tests", "cases", "risky-snp-waived.toml")
    code, out, _ = run_cli("explain", spec, "--format", "json")
    info = json.loads(out)
    by_key = {s["key"]: s for s in info["settings"]}
    assert by_key["cbitpos"]["source"] == "spec" and by_key["author-key"]["source"] == "default"
    assert by_key["policy"]["source"] == "derived"
    assert by_key["policy"]["decoded"].startswith("policy 0x1f0000 = smt (bit 16) + reserved-must-be-one (bit 17)")
    assert [w["rule"] for w in info["waivers"]] == ["CGS-SNP-010"]
    assert info["waivers"][0]["reason"] == "lab machine, debug needed"
    code, text, _ = run_cli("explain", spec)
    assert "CGS-SNP-010: lab machine, debug needed" in text and "[CGS-SNP-011]" in text


# -- check ---------------------------------------------------------------------------------

def _tree(root):
    return {str(p): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_check_passes_on_fresh_output(tmp_path):
    assert run_cli("build", *EXAMPLES, "-o", str(tmp_path))[0] == 0
    code, out, err = run_cli("check", *EXAMPLES, "-o", str(tmp_path))
    assert code == 0 and out == "" and "up to date" in err


def test_check_reports_every_kind_of_drift(tmp_path):
    spec = [s for s in EXAMPLES if s.endswith("tdx.toml")][0]
    name = compile_plan(spec).name
    assert run_cli("build", spec, "-o", str(tmp_path))[0] == 0
    guest = tmp_path / name
    (guest / f"{name}.sh").write_text((guest / f"{name}.sh").read_text().replace("-smp 8,", "-smp 9,"))
    (guest / f"{name}.xml").unlink()
    (guest / "notes.txt").write_text("hand-made\n")
    (guest / f"{name}.service").chmod(0o600)
    before = _tree(tmp_path)
    code, out, err = run_cli("check", spec, "-o", str(tmp_path))
    assert code == 1 and out == ""                       # the diffs only with --diff
    (line,) = [l for l in err.splitlines() if "[CGS-CHECK-001]" in l]
    assert line.endswith(f"guest.name: {guest}/ is out of date: {name}.service has mode 0600, "
                         f"expected 0644, {name}.sh changed, {name}.xml missing, notes.txt extra "
                         "[CGS-CHECK-001]")
    assert "cgsc: 1 guest out of date (4 artifacts)" in err
    assert f"cgsc: fix: cgsc build -o {tmp_path} {spec} && git add {tmp_path}" in err
    code, out, err2 = run_cli("check", "--diff", spec, "-o", str(tmp_path))
    assert code == 1 and err2 == err.replace("cgsc: the full diff of each changed artifact: the "
                                             "same command with --diff\n", "")
    assert f"--- {guest}/{name}.sh (on disk)" in out and "-    -smp 9,sockets=1,dies=1,cores=8,threads=1 \\" in out \
        and "+    -smp 8,sockets=1,dies=1,cores=8,threads=1 \\" in out
    assert _tree(tmp_path) == before, "check never writes"
    code, out, _ = run_cli("check", spec, "-o", str(tmp_path), "--format", "json")
    (found,) = json.loads(out)
    assert code == 1 and found["rule"] == "CGS-CHECK-001" and found["file"] == spec
    assert found["hint"] and "git add" in found["hint"]


def test_check_of_an_invalid_spec_is_a_spec_error(tmp_path):
    code, _out, err = run_cli("check", os.path.join(ROOT, "tests", "invalid", "CGS-SNP-001.toml"),
                              "-o", str(tmp_path))
    assert code == 1 and "[CGS-SNP-001]" in err


# -- machine-readable diagnostics ----------------------------------------------------------

def _corpus_output(fmt, monkeypatch):
    monkeypatch.chdir(os.path.join(ROOT, "tests", "invalid"))
    names = [os.path.basename(s) for s in INVALID if not assertions(s, "args:")]
    return names, run_cli("validate", *names, "--format", fmt)


def test_json_diagnostics_carry_every_field(monkeypatch):
    _names, (code, out, _err) = _corpus_output("json", monkeypatch)
    found = json.loads(out)
    assert code == 1 and found
    for d in found:
        assert set(d) == {"file", "line", "column", "key", "rule", "severity", "message", "hint",
                          "specs"}
        assert re.fullmatch(r"CGS-[A-Z0-9]+-\d{3}", d["rule"]) and d["severity"] in ("error", "warning")


def test_sarif_validates_and_its_lines_equal_the_text_output(monkeypatch, sarif_validator):
    _names, (code, out, _err) = _corpus_output("sarif", monkeypatch)
    log = json.loads(out)
    errors = sorted(sarif_validator.iter_errors(log), key=str)
    assert code == 1 and not errors, errors[:3]
    _names, (code, _out, text) = _corpus_output("text", monkeypatch)
    text_lines = []
    for line in text.splitlines():
        m = re.match(r"^(\S+?)(?::(\d+))?(?::\d+)?: .* \[(CGS-[A-Z0-9]+-\d{3})\]$", line)
        if m:
            text_lines.append((m.group(1), int(m.group(2) or 0), m.group(3)))
    sarif_lines = [(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
                    r["locations"][0]["physicalLocation"].get("region", {}).get("startLine", 0),
                    r["ruleId"]) for r in log["runs"][0]["results"]]
    assert sarif_lines == text_lines and len(sarif_lines) >= len(INVALID)
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {r for _f, _l, r in sarif_lines} <= set(rules)
    assert "How to fix:" in rules["CGS-SNP-001"]["help"]["text"]


def test_github_annotations(monkeypatch):
    _names, (code, out, _err) = _corpus_output("github", monkeypatch)
    lines = out.splitlines()
    assert code == 1 and lines
    for line in lines:
        assert re.match(r"^::(error|warning) file=[^,]+(,line=\d+)?(,col=\d+)?,title=CGS-[A-Z0-9]+-\d{3}::\S", line)
    assert "::error file=CGS-SNP-001.toml,line=6,col=1,title=CGS-SNP-001::" in out  # `policy` starts line 6


def test_build_reports_warnings_in_the_chosen_format(tmp_path):
    spec = os.path.join(ROOT, "tests", "cases", "risky-sev.toml")
    code, out, err = run_cli("build", spec, "-o", str(tmp_path), "--format", "json")
    assert code == 0 and "warning" not in err
    assert {d["rule"] for d in json.loads(out)} == {"CGS-SEV-010", "CGS-SEV-011", "CGS-SEV-012",
                                                    "CGS-SEV-013", "CGS-WAIVE-002"}


# -- the catalogue ---------------------------------------------------------------------------

def test_every_rule_is_explained_with_a_fix():
    for rule in load_all().values():
        assert rule.summary and rule.explanation and rule.fix, rule.id
        assert rule.severity in ("error", "warning")


def test_rules_command_lists_and_explains():
    code, out, _ = run_cli("rules")
    assert code == 0 and len(out.splitlines()) == len(load_all())
    code, out, _ = run_cli("rules", "CGS-SNP-010")
    assert code == 0 and out.startswith("CGS-SNP-010 (warning): ") and "How to fix:" in out
    assert '[waive] "CGS-SNP-010"' in out
    assert run_cli("rules", "CGS-NOPE-999")[0] == 2


# -- completion and pre-commit -------------------------------------------------------------

def test_bash_completion_is_valid_and_knows_the_commands(tmp_path):
    code, out, _ = run_cli("completion", "bash")
    assert code == 0
    path = tmp_path / "cgsc.bash"
    path.write_text(out)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    probe = (f"source {shlex.quote(str(path))}; COMP_WORDS=(cgsc ex); COMP_CWORD=1; _cgsc; "
             "printf '%s\\n' \"${COMPREPLY[@]}\"; COMP_WORDS=(cgsc validate --fo); COMP_CWORD=2; "
             "_cgsc; printf '%s\\n' \"${COMPREPLY[@]}\"")
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert result.stdout.split() == ["explain", "--format"]


def test_zsh_completion_is_valid(tmp_path, tool):
    code, out, _ = run_cli("completion", "zsh")
    path = tmp_path / "_cgsc"
    path.write_text(out)
    zsh = tool("zsh")
    assert code == 0 and subprocess.run([zsh, "-n", str(path)]).returncode == 0
    probe = f"autoload -U compinit; compinit -u; source {shlex.quote(str(path))}; print $_comps[cgsc]"
    result = subprocess.run([zsh, "-f", "-c", probe], capture_output=True, text=True,
                            env=dict(os.environ, HOME=str(tmp_path)))
    assert result.stdout.strip() == "_cgsc", result.stderr


def test_pre_commit_hooks_run_for_real(tmp_path, tool):
    pre_commit = tool("pre-commit")
    repo = tmp_path / "guests"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(git + ["init", "-q", str(repo)], check=True)
    good = repo / "good.toml"
    shutil.copy(os.path.join(ROOT, "examples", "sev-snp.toml"), good)
    bad = repo / "bad.toml"
    shutil.copy(os.path.join(ROOT, "tests", "invalid", "CGS-TDX-003.toml"), bad)
    (repo / "support").mkdir()
    shutil.copy(os.path.join(ROOT, "tests", "invalid", "support", "base-tdx.toml"), repo / "support")
    subprocess.run(git + ["-C", str(repo), "add", "."], check=True)
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "cache"))

    def hook(hook_id, *files):
        return subprocess.run([pre_commit, "try-repo", ROOT, hook_id, "--files", *files],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    result = hook("cgsc-validate", "bad.toml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad.toml:5: guest.cpu: is 'SapphireRapids'; TDX accepts only \"host\" [CGS-TDX-003]" in result.stdout
    result = hook("cgsc-validate", "good.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    # check: fails until the artifacts are built, passes after
    result = hook("cgsc-check", "good.toml")
    assert result.returncode == 1 and "out/payments-db/ is out of date: " in result.stdout
    assert "payments-db.sh missing" in result.stdout
    subprocess.run([sys.executable, "-m", "cgsc", "build", "good.toml"], cwd=repo, check=True,
                   capture_output=True)
    result = hook("cgsc-check", "good.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_fresh_process_lists_every_rule():
    """The catalogue must not depend on which modules happen to be imported already."""
    result = subprocess.run([sys.executable, "-m", "cgsc", "rules"], capture_output=True, text=True)
    listed = {line.split()[0] for line in result.stdout.splitlines()}
    assert result.returncode == 0 and listed == set(load_all())

"""Command-line correctness: stream contracts, JSON columns and types, explain's help and
arguments, skipped targets, and completion in bash, zsh and fish."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

from helpers import EXAMPLES, INVALID, ROOT, assertions, run_cli

from cgsc.core.rules import load_all

VSOCK_QGS = os.path.join(ROOT, "tests", "cases", "tdx-vsock-qgs.toml")
RISKY = os.path.join(ROOT, "tests", "cases", "risky-sev.toml")


def _cgsc(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "cgsc", *argv], capture_output=True, text=True, cwd=cwd)


def test_stdout_carries_the_artifacts_and_stderr_the_json_diagnostics(tmp_path):
    result = _cgsc("build", RISKY, "--stdout", "-t", "shell", "--format", "json")
    assert result.returncode == 0
    assert run_cli("build", RISKY, "-t", "shell", "-o", str(tmp_path))[0] == 0
    (written,) = [p for p in (tmp_path / "sev-open").iterdir() if p.suffix == ".sh"]
    assert result.stdout == written.read_text()              # the artifact, byte for byte
    rules = {d["rule"] for d in json.loads(result.stderr)}   # the diagnostics, whole
    assert "CGS-SEV-010" in rules
    failed = _cgsc("build", os.path.join(ROOT, "tests", "invalid", "CGS-SNP-001.toml"), "--stdout",
                   "--format", "json", cwd=os.path.join(ROOT, "tests", "invalid"))
    assert failed.returncode == 1 and failed.stdout == ""
    assert {d["rule"] for d in json.loads(failed.stderr)} == {"CGS-SNP-001"}


def test_json_diagnostics_give_the_column_of_the_key(monkeypatch):
    monkeypatch.chdir(os.path.join(ROOT, "tests", "invalid"))
    names = [os.path.basename(s) for s in INVALID if not assertions(s, "args:")]
    code, out, _ = run_cli("validate", *names, "--format", "json")
    found = json.loads(out)
    keyed = [d for d in found if d["line"] and d["key"] != "(top level)"]
    assert code == 1 and keyed
    with_column = 0
    for d in keyed:
        with open(d["file"], encoding="utf-8", errors="replace") as fh:
            line = fh.read().splitlines()[d["line"] - 1]
        if d["column"] is None:
            continue
        with_column += 1
        at = line[d["column"] - 1:]
        last = [p for p in re.split(r"[.\[\]]", d["key"]) if p and not p.isdigit()][-1]
        # the column points at the key (bare or quoted), a table header, or an array element
        # (after `[`, `,` or `=`, or first on its line in a multi-line array)
        assert (at.startswith((last, f'"{last}"', "[")) or re.match(r"^[\"'0-9a-z{]", at)
                and (line[:d["column"] - 1].rstrip().endswith(("[", ",", "="))
                     or not line[:d["column"] - 1].strip())), (d, line)  # multi-line array
    assert with_column >= 0.9 * len(keyed), [d for d in keyed if d["column"] is None]


def test_explain_gives_json_types_and_takes_several_specs():
    sev = next(s for s in EXAMPLES if s.endswith("/sev.toml"))
    code, out, _ = run_cli("explain", sev, "--format", "json")
    settings = {s["key"]: s for s in json.loads(out)["settings"]}
    assert code == 0
    import tomllib
    with open(sev, "rb") as fh:
        table = tomllib.load(fh)["confidential"]["sev"]
    assert settings["cbitpos"]["value"] == table["cbitpos"] and type(settings["cbitpos"]["value"]) is int
    assert settings["kernel-hashes"]["value"] is False                  # the schema's default
    assert isinstance(settings["sev-device"]["value"], str)
    assert isinstance(settings["policy"]["value"], int)
    assert settings["policy"]["hex"] == f"{settings['policy']['value']:#x}"
    code, out, _ = run_cli("explain", sev, VSOCK_QGS, "--format", "json")
    assert code == 0 and [i["spec"] for i in json.loads(out)] == [sev, VSOCK_QGS]
    code, text, _ = run_cli("explain", sev, VSOCK_QGS)
    assert code == 0 and text.count("launch security\n") == 2
    code, _out, err = run_cli("explain", sev, os.path.join(ROOT, "tests", "invalid", "CGS-SNP-003.toml"))
    assert code == 1 and "[CGS-SNP-003]" in err


def test_explain_help_advertises_only_what_explain_accepts():
    result = _cgsc("explain", "--help")
    assert result.returncode == 0
    offered = re.search(r"--format \{([a-z,]+)\}", result.stdout).group(1).split(",")
    assert "SPEC|RULE-ID [SPEC|RULE-ID ...]" in result.stdout
    for fmt in offered:
        assert run_cli("explain", EXAMPLES[0], "--format", fmt)[0] == 0
    assert "sarif" not in result.stdout and "github" not in result.stdout


def test_a_skipped_target_is_named_with_its_rule_everywhere(tmp_path):
    refused = run_cli("build", VSOCK_QGS, "-t", "libvirt", "-o", str(tmp_path / "x"))
    rule = re.search(r"\[(CGS-[A-Z]+-\d{3})\]", refused[2]).group(1)   # why -t libvirt is refused
    assert refused[0] == 1
    code, _out, err = run_cli("build", VSOCK_QGS, "-o", str(tmp_path))
    assert code == 0 and f"target libvirt skipped: " in err and f"[{rule}]" in err
    (guest,) = tmp_path.iterdir()
    manifest = json.loads((guest / "manifest.json").read_text())
    assert [(s["target"], s["rule"]) for s in manifest["skipped"]] == [("libvirt", rule)]
    assert {a["target"] for a in manifest["artifacts"]} == {"shell", "systemd"}
    info = json.loads(run_cli("explain", VSOCK_QGS, "--format", "json")[1])
    assert info["targets"] == ["shell", "systemd"]
    assert [(s["target"], s["rule"]) for s in info["skipped-targets"]] == [("libvirt", rule)]
    assert f"libvirt skipped: " in run_cli("explain", VSOCK_QGS)[1]
    # nothing skipped: an empty list, said as such
    code, _out, err = run_cli("build", EXAMPLES[0], "-o", str(tmp_path / "all"))
    assert code == 0 and "cgsc: note:" not in err
    (guest,) = (tmp_path / "all").iterdir()
    assert json.loads((guest / "manifest.json").read_text())["skipped"] == []


# -- completion ----------------------------------------------------------------------------

def _script(shell, tmp_path):
    code, out, _ = run_cli("completion", shell)
    assert code == 0
    path = tmp_path / f"cgsc.{shell}"
    path.write_text(out)
    return path


def _bash_complete(path, words, cwd):
    cword = len(words) - 1
    probe = (f"source {shlex.quote(str(path))}; compopt() {{ :; }}; "
             f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={cword}; _cgsc; "
             "printf '%s\\n' \"${COMPREPLY[@]}\"")
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


def test_bash_completes_values_rule_ids_and_paths(tmp_path, tool):
    from cgsc import targets
    path = _script("bash", tmp_path)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    result = subprocess.run([tool("shellcheck"), "-s", "bash", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    (tmp_path / "guests").mkdir()
    (tmp_path / "guests.toml").write_text("")
    assert _bash_complete(path, ["cgsc", "build", "--format", ""], tmp_path) == sorted(
        ["text", "json", "sarif", "github"])
    assert _bash_complete(path, ["cgsc", "explain", "--format", ""], tmp_path) == ["json", "text"]
    assert _bash_complete(path, ["cgsc", "build", "-t", ""], tmp_path) == sorted(targets.available())
    assert _bash_complete(path, ["cgsc", "diff", "--format", "m"], tmp_path) == ["markdown"]
    assert _bash_complete(path, ["cgsc", "rules", "CGS-SNP-0"], tmp_path) == sorted(
        r for r in load_all() if r.startswith("CGS-SNP-0"))
    assert _bash_complete(path, ["cgsc", "build", "-o", "gu"], tmp_path) == ["guests"]   # directories
    assert _bash_complete(path, ["cgsc", "build", "gu"], tmp_path) == ["guests", "guests.toml"]
    # paths are completed as file names (quoting, a slash after directories)
    text = path.read_text()
    assert text.count("compgen -f") == text.count("compopt -o filenames; mapfile -t COMPREPLY < <(compgen -f")


def test_zsh_completion_knows_values(tmp_path, tool):
    zsh = tool("zsh")
    path = _script("zsh", tmp_path)
    assert subprocess.run([zsh, "-n", str(path)]).returncode == 0
    # zsh's completion functions stubbed to print what the script hands them
    stubs = ("compdef() { :; }; _describe() { print -rl -- \"${(@P)2}\"; }; "
             "compadd() { print -rl -- \"$@\"; }; _arguments() { print -rl -- \"$@\"; }; ")

    def called(*words):
        probe = (f"{stubs} source {shlex.quote(str(path))}; words=(cgsc {' '.join(words)}); "
                 f"CURRENT={len(words) + 1}; _cgsc")
        result = subprocess.run([zsh, "-f", "-c", probe], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()
    described = [l for l in called("''") if not l.startswith(("-", "--"))]
    names = [l.split(":", 1)[0] for l in described]
    assert {"build", "validate", "check", "explain", "diff", "rules", "completion"} <= set(names)
    assert all(":" in l and not l.split(":", 1)[0].endswith("\\") for l in described), described
    build = called("build", "''")
    assert "--format:value:(text json sarif github)" in build
    from cgsc import targets   # brace expansion gives one spec per option string
    assert "*(-t --target)-t:value:(" + " ".join(targets.available()) + ")" in build
    rules = called("rules", "''")
    assert rules[-1] == "*:value:(" + " ".join(sorted(load_all())) + ")"


def test_fish_completion_runs_in_fish(tmp_path, tool):
    from cgsc import targets
    fish = tool("fish")
    path = _script("fish", tmp_path)

    def complete(line):
        result = subprocess.run([fish, "--no-config", "-c", f"source {shlex.quote(str(path))}; complete -C {shlex.quote(line)}"],
                                capture_output=True, text=True, cwd=tmp_path,
                                env=dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path)))
        assert result.returncode == 0, result.stderr
        return sorted(l.split("\t")[0] for l in result.stdout.splitlines())
    commands = complete("cgsc ")
    assert {"build", "validate", "check", "explain", "diff", "rules", "completion"} <= set(commands)
    assert complete("cgsc build --format ") == sorted(["text", "json", "sarif", "github"])
    assert complete("cgsc check -t ") == sorted(targets.available())
    assert complete("cgsc rules CGS-TDX-") == sorted(r for r in load_all() if r.startswith("CGS-TDX-"))
    (tmp_path / "spec.toml").write_text("")
    assert "spec.toml" in complete("cgsc validate sp")

"""The command line: exit statuses, usage, schema, targets, internal errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import EXAMPLES, ROOT, run_cli

import cgsc


def test_version():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"cgsc {cgsc.__version__}"


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["build"], ["build", "--bogus", "x.toml"]])
def test_usage_errors_exit_2(argv):
    code, _out, err = run_cli(*argv)
    assert code == 2
    assert "usage" in err.lower()


def test_missing_spec_file_is_a_spec_error_not_a_crash(tmp_path):
    code, _out, err = run_cli("validate", str(tmp_path / "nope.toml"))
    assert code == 1 and "CGS-LOAD-001" in err and "Traceback" not in err


def test_internal_error_exits_3_with_a_bug_message(monkeypatch):
    import cgsc.pipeline.build
    import cgsc.pipeline.compile

    def boom(path, *_host, **_targets):
        raise RuntimeError("kaputt")
    monkeypatch.setattr(cgsc.pipeline.compile, "compile_spec", boom)
    monkeypatch.setattr(cgsc.pipeline.build, "compile_spec", boom)  # validate shares build's path
    code, _out, err = run_cli("validate", EXAMPLES[0])
    assert code == 3 and "This is a bug" in err and "Traceback" not in err
    code, _out, err = run_cli("--debug", "validate", EXAMPLES[0])
    assert code == 3 and "Traceback" in err and "kaputt" in err


def test_validate_writes_nothing_and_says_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli("validate", *EXAMPLES)
    assert code == 0 and f"{len(EXAMPLES)} specs valid" in err
    assert not list(tmp_path.iterdir())


def test_targets_lists_the_builtins_in_order():
    code, out, _ = run_cli("targets")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()][:3] == ["shell", "systemd", "libvirt"]


def test_unknown_target_on_the_command_line_is_a_usage_error(tmp_path):
    """A -t the user typed is a usage error (exit 2) naming the installed targets; the
    same name in a spec's [targets] build stays a spec error with a rule ID."""
    from cgsc import targets
    for command in ("build", "check", "validate"):
        where = [] if command == "validate" else ["-o", str(tmp_path)]
        code, out, err = run_cli(command, EXAMPLES[0], "-t", "nosuch", *where)
        assert code == 2 and "unknown target 'nosuch'" in err, (command, err)
        assert "installed targets: " + ", ".join(targets.available()) in err
        assert "CGS-TARGET-001" not in err and out == ""
    assert not list(tmp_path.iterdir())
    spec = tmp_path / "g.toml"
    with open(EXAMPLES[0]) as fh:
        spec.write_text(fh.read() + '\n[targets]\nbuild = ["nosuch"]\n')
    code, _out, err = run_cli("build", str(spec), "-o", str(tmp_path / "out"))
    assert code == 1 and "CGS-TARGET-001" in err and "no target named 'nosuch'" in err


def _nodes(node, where="#"):
    """Every subschema of a schema document, with a JSON-pointer-like location."""
    yield where, node
    if isinstance(node, dict):
        for key, sub in node.items():
            yield from _nodes(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _nodes(sub, f"{where}/{i}")


def test_schema_is_a_valid_draft_2020_12_schema_with_descriptions_everywhere():
    from jsonschema import Draft202012Validator
    code, out, _ = run_cli("schema")
    assert code == 0
    schema = json.loads(out)
    Draft202012Validator.check_schema(schema)
    by_file = {d["$id"].rsplit("/", 1)[1]: d for d in schema["$defs"].values() if "$id" in d}
    by_file["guest.schema.json"] = schema

    def described(node) -> bool:
        while "description" not in node and "$ref" in node:
            target, _, pointer = node["$ref"].partition("#")
            node = by_file[target] if target else schema
            for part in filter(None, pointer.split("/")):
                node = node[part]
        return "description" in node

    missing = [f"{where}/{key}" for where, node in _nodes(schema) if isinstance(node, dict)
               for key, sub in node.get("properties", {}).items() if not described(sub)]
    assert not missing
    assert set(schema["properties"]["confidential"]["properties"]) == {
        "sev", "sev-es", "sev-snp", "tdx", "pef", "s390-pv"}


def test_objects_reject_unknown_keys_everywhere():
    schema = json.loads(run_cli("schema")[1])
    open_objects = [where for where, node in _nodes(schema) if isinstance(node, dict)
                    and "object" in (node["type"] if isinstance(node.get("type"), list) else [node.get("type")])
                    and node.get("additionalProperties") is not False]
    assert not open_objects


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "cgsc", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"cgsc {cgsc.__version__}"


def test_mechanism_registry_agrees_with_the_modules():
    from cgsc.mechanisms import MECHANISMS
    for name in MECHANISMS:
        mech = MECHANISMS[name]
        assert mech.name == name
        assert os.path.isfile(os.path.join(ROOT, "schema", MECHANISMS.schema_file(name)))


@pytest.mark.parametrize("argv", [
    ["build", "a.toml", "-o", "x", "-j", "2", "-t", "shell", "--format", "json"],
    ["build", "--specs-from", "-", "--stdout", "--host", "debian-12"],
    ["validate", "--base", "a.toml"], ["check", "--all", "-o", "out"],
    ["explain", "a.toml", "--format", "json"], ["diff", "--base", "HEAD~1", "a.toml"],
    ["rules", "CGS-SEV-001"], ["schema", "--attestation"], ["targets"],
    ["probe", "--name", "h"], ["completion", "fish"]])
def test_a_command_parses_alike_with_only_its_own_parser(argv, capsys):
    """main() builds only the parser of the command it runs: the same arguments, the same
    help and the same usage errors as the whole parser gives."""
    from cgsc.cli import _COMMANDS, _Usage, parser
    command = argv[0]
    assert command in _COMMANDS
    assert vars(parser(command).parse_args(argv)) == vars(parser().parse_args(argv))
    shown = []
    for p in (parser(command), parser()):
        with pytest.raises(SystemExit) as exc:
            p.parse_args([command, "--help"])
        shown.append((exc.value.code,) + capsys.readouterr())
        with pytest.raises(_Usage) as usage:
            p.parse_args([command, "--no-such-option"])
        shown.append((str(usage.value),) + capsys.readouterr())
    assert shown[:2] == shown[2:]
    assert shown[0][1].startswith("usage: cgsc " + command) and shown[1][0]


def _console(redirect: str, *argv: str) -> subprocess.CompletedProcess:
    """The installed console script run by sh with a redirection of its standard streams."""
    import shutil
    script = shutil.which("cgsc", path=os.path.dirname(sys.executable))
    assert script, "the console script is installed beside this Python"
    return subprocess.run(["sh", "-c", f'exec "$0" "$@" {redirect}', script, *argv],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("redirect", ["<&-", ">&-", "2>&-", "2>/dev/full", ">/dev/full"])
def test_standard_streams_closed_or_full_do_not_turn_a_build_into_a_failure(tmp_path, redirect):
    """Python starts with sys.stdout (stderr, stdin) None when the descriptor is closed, and
    writing to /dev/full fails: the build still writes its guest and exits 0 (diagnostics
    with nowhere to go are dropped)."""
    out = tmp_path / "out"
    result = _console(redirect, "build", EXAMPLES[0], "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert len(list(out.iterdir())) == 1


@pytest.mark.parametrize("argv", [["build", "--stdout", EXAMPLES[0]],
                                  ["check", "--format", "json", EXAMPLES[0]]])
def test_standard_output_that_cannot_be_written_fails_the_command(tmp_path, argv):
    """What goes to stdout (artifacts, a JSON report) is the command's result: when it
    cannot be written the command fails with exit 2 and says why, never an internal error."""
    result = _console(">/dev/full", *argv, *(["-o", str(tmp_path)] if argv[0] == "check" else []))
    assert result.returncode == 2, result.stderr
    assert "cannot write the standard output: No space left on device" in result.stderr


def test_a_list_on_a_closed_stdin_is_a_usage_error(tmp_path):
    result = _console("<&-", "build", "--specs-from", "-", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "name SPEC files" in result.stderr, result.stderr

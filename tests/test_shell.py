"""Shell target: shellcheck/sh -n clean, and run for real with a stand-in emulator
that records its argv, which must equal the plan's."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess

import pytest
from helpers import VALID_SPECS, compile_plan, rel, render

STAND_IN = """#!/bin/sh
# Stand-in emulator: record argv (NUL-separated) and exit.
printf '%s\\0' "$@" > "$CGSC_ARGV_LOG"
"""


def _script(spec, tmp_path):
    path = tmp_path / "launch.sh"
    path.write_text(render(spec, "shell"))
    path.chmod(0o755)
    return path


def _stand_in_dir(tmp_path, names):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        exe = bin_dir / name
        exe.write_text(STAND_IN)
        exe.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("spec", VALID_SPECS, ids=rel)
def test_script_passes_sh_n_bash_n_and_shellcheck(spec, tmp_path, tool):
    script = _script(spec, tmp_path)
    for checker in (["sh", "-n"], ["bash", "-n"], [tool("shellcheck"), "--shell=sh", "--severity=style"]):
        result = subprocess.run(checker + [str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{checker[0]}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("spec", VALID_SPECS, ids=rel)
def test_script_execs_exactly_the_planned_argv(spec, tmp_path):
    plan = compile_plan(spec)
    script = _script(spec, tmp_path)
    log = tmp_path / "argv"
    if plan.emulator_default:
        bin_dir = _stand_in_dir(tmp_path, [plan.emulator])
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_SKIP_CHECKS": "1", "CGSC_ARGV_LOG": str(log)}
        result = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        recorded = log.read_bytes().split(b"\0")[:-1]
        assert [w.decode() for w in recorded] == plan.argv()[1:]
    # --dry-run prints the same command, shell-quoted, on one line
    result = subprocess.run([str(script), "--dry-run"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == plan.argv()
    assert not log.exists() or plan.emulator_default


def test_host_checks_run_before_exec_and_name_what_is_missing(tmp_path):
    spec = [s for s in VALID_SPECS if s.endswith("examples/sev-snp.toml")][0]
    plan = compile_plan(spec)
    script = _script(spec, tmp_path)
    bin_dir = _stand_in_dir(tmp_path, [plan.emulator])
    log = tmp_path / "argv"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_ARGV_LOG": str(log)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    # This host has no SEV-SNP (no /dev/sev) and none of the example's files exist.
    assert result.returncode == 1
    assert result.stderr.startswith(f"cgsc launch {plan.name}: ")
    assert not log.exists(), "QEMU must not start when a check fails"


def test_host_checks_pass_on_a_host_that_has_everything(tmp_path):
    """A PEF guest needs only /dev/kvm and its files; with both present the script execs."""
    disk = tmp_path / "disk image, with $pecial chars.qcow2"
    disk.write_bytes(b"")
    spec = tmp_path / "pef.toml"
    spec.write_text(f'[guest]\nname = "pef-here"\narch = "ppc64"\nmemory = 512\n'
                    f'[confidential.pef]\n[[disk]]\npath = "{disk}"\nformat = "qcow2"\n')
    plan = compile_plan(str(spec))
    script = _script(str(spec), tmp_path)
    bin_dir = _stand_in_dir(tmp_path, [plan.emulator])
    log = tmp_path / "argv"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_ARGV_LOG": str(log)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    kvm_usable = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK) \
        and stat.S_ISCHR(os.stat("/dev/kvm").st_mode)
    if kvm_usable:
        assert result.returncode == 0, result.stderr
        assert [w.decode() for w in log.read_bytes().split(b"\0")[:-1]] == plan.argv()[1:]
    else:
        assert result.returncode == 1 and "/dev/kvm is missing" in result.stderr
    disk.unlink()
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert ("is missing or not readable" in result.stderr) or not kvm_usable


def test_unknown_script_argument_is_refused(tmp_path):
    script = _script(VALID_SPECS[0], tmp_path)
    result = subprocess.run([str(script), "--frob"], capture_output=True, text=True)
    assert result.returncode == 1 and "unknown argument: --frob" in result.stderr

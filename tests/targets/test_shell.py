"""Shell target: shellcheck/sh -n clean, and run for real with a stand-in emulator
that records its argv, which must equal the plan's."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess

import pytest
from helpers import VALID_SPECS, compile_plan, rel, render, run_cli

STAND_IN = """#!/bin/sh
# Stand-in emulator: answer -version as today's QEMU does, else record argv (NUL-separated)
# and exit.
[ "$1" = -version ] && { echo 'QEMU emulator version 11.1.3'; exit 0; }
printf '%s\\0' "$@" > "$CGSC_ARGV_LOG"
"""


def _script(spec, tmp_path):
    path = tmp_path / "launch.sh"
    path.write_text(render(spec, "shell"))
    path.chmod(0o755)
    return path


def relocated_plan(spec: str, root: str):
    """The spec's plan with the guest's runtime directory, QMP socket and console moved
    under `root`, so that a script that prepares the host creates nothing outside it."""
    from cgsc.lower.lowering import lower
    from cgsc.spec.model import normalize
    from cgsc.spec.source import load
    g = normalize(load(spec).data)
    move = (lambda p: root + p if p else p)
    g = g._replace(runtime_dir=move(g.runtime_dir), qmp_socket=move(g.qmp_socket),
                   console_path=move(g.console_path))
    return lower(g, spec, [])


def _relocated_script(spec, tmp_path):
    from cgsc import targets
    plan = relocated_plan(spec, str(tmp_path / "root"))
    (artifact,) = targets.get("shell").render(plan)
    path = tmp_path / "launch.sh"
    path.write_text(artifact.content)
    path.chmod(0o755)
    return plan, path


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
    plan, script = _relocated_script(spec, tmp_path)
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
    plan, script = _relocated_script(str(spec), tmp_path)
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


# -- ops: the script prepares the host and reports every failed check -------------------

def _plan_in(spec_text: str, tmp_path, name: str):
    """A valid spec's plan with the guest's runtime directory moved under tmp_path, so that
    running the script creates nothing outside the test's directory."""
    from cgsc.pipeline.compile import compile_spec
    from cgsc.lower.lowering import lower
    from cgsc.spec.model import normalize
    from cgsc.spec.source import load
    spec = tmp_path / f"{name}.toml"
    # valid once tmp_path stands for /srv (sockets in /srv/<dir>/<name>): no CGS-PATH-002
    spec.write_text(spec_text.replace(str(tmp_path), "/srv"))
    compile_spec(str(spec))
    spec.write_text(spec_text)
    guest = normalize(load(str(spec)).data)
    return lower(guest._replace(runtime_dir=str(tmp_path / "run" / name)), str(spec), [])


def _write_script(plan, directory):
    from cgsc import targets
    (artifact,) = targets.get("shell").render(plan)
    path = directory / "launch.sh"
    path.write_text(artifact.content)
    path.chmod(0o755)
    return path


def _snp_spec(tmp_path, name, extra=""):
    return (f'[guest]\nname = "{name}"\ncpu = "EPYC-v4"\nmemory = 1024\n'
            f'[firmware]\ncode = "{tmp_path}/missing/OVMF.amdsev.fd"\n'
            f'[kernel]\nimage = "{tmp_path}/missing/vmlinuz"\n'
            f'[confidential.sev-snp]\ncbitpos = 51\nreduced-phys-bits = 1\n' + extra)


def test_script_creates_the_socket_and_console_directories_and_reports_every_failure(tmp_path, tool):
    name = "prep-1"
    plan = _plan_in(_snp_spec(tmp_path, name,
                              f'[qmp]\nsocket = "{tmp_path}/guests/{name}/qmp.sock"\n'
                              f'[console]\nserial = "file"\npath = "{tmp_path}/logs/{name}/console.log"\n'),
                    tmp_path, name)
    script = _write_script(plan, tmp_path)
    for checker in (["sh", "-n"], ["bash", "-n"], [tool("shellcheck"), "--shell=sh", "--severity=style"]):
        assert subprocess.run(checker + [str(script)], capture_output=True).returncode == 0, checker
    bin_dir = _stand_in_dir(tmp_path, [plan.emulator])
    log = tmp_path / "argv"
    result = subprocess.run([str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_ARGV_LOG": str(log)},
                            capture_output=True, text=True)
    assert result.returncode == 1 and not log.exists()
    for directory in (tmp_path / "run" / name, tmp_path / "guests" / name, tmp_path / "logs" / name):
        assert directory.is_dir() and stat.S_IMODE(directory.stat().st_mode) == 0o750, directory
    for fifo in plan.stop_fifos():
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_IMODE(os.stat(fifo).st_mode) == 0o600
    # both missing files and the missing SEV device are named, not only the first
    lines = result.stderr.splitlines()
    prefix = f"cgsc launch {name}: "
    assert all(line.startswith(prefix) for line in lines)
    assert any(f"{tmp_path}/missing/OVMF.amdsev.fd is missing" in line for line in lines)
    assert any(f"{tmp_path}/missing/vmlinuz is missing" in line for line in lines)
    if not os.path.exists("/dev/sev"):
        assert any(line.startswith(prefix + "/dev/sev is missing") for line in lines)
    failures = len(lines) - 1
    assert failures >= 3 and lines[-1] == f"{prefix}{failures} host check(s) failed; QEMU was not started"


def test_script_refuses_a_world_writable_or_symlinked_directory(tmp_path):
    name = "prep-2"
    plan = _plan_in(_snp_spec(tmp_path, name, f'[qmp]\nsocket = "{tmp_path}/guests/{name}/qmp.sock"\n'),
                    tmp_path, name)
    script = _write_script(plan, tmp_path)
    (tmp_path / "guests").mkdir()
    (tmp_path / "guests" / name).mkdir(mode=0o777)
    os.chmod(tmp_path / "guests" / name, 0o777)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "run" / name)
    result = subprocess.run([str(script)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"the QMP socket directory {tmp_path}/guests/{name} is writable by every user" in result.stderr
    assert f"the stop channel directory {tmp_path}/run/{name} is a symlink" in result.stderr
    assert os.listdir(tmp_path / "elsewhere") == []   # nothing created through the symlink


@pytest.mark.parametrize("owner, mode, problem", [
    (65534, 0o750, "is not owned by this user"),
    (None, 0o770, "is writable by its group"),
    (None, 0o777, "is writable by every user"),
])
def test_script_refuses_a_directory_another_user_may_write(owner, mode, problem, tmp_path):
    """User nobody pre-creates the console directory with console.log a symlink to a file
    of root's: the script (run as root) must not start QEMU, so nothing truncates it."""
    name = "prep-3"
    plan = _plan_in(_snp_spec(tmp_path, name, f'[console]\nserial = "file"\n'
                                               f'path = "{tmp_path}/logs/{name}/console.log"\n'),
                    tmp_path, name)
    script = _write_script(plan, tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    planted = tmp_path / "logs" / name
    planted.mkdir(parents=True)
    os.chmod(planted, mode)
    os.symlink(victim, planted / "console.log")
    if owner is not None:
        os.lchown(planted / "console.log", owner, owner)
        os.chown(planted, owner, owner)
    # an emulator that does what QEMU does with the console file: open it for writing
    # (and, asked for its -version, only answers)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / plan.emulator
    exe.write_text("#!/bin/sh\n[ \"$1\" = -version ] && { echo 'QEMU emulator version 11.1.3'; exit 0; }\n"
                   f": > {shlex.quote(str(planted / 'console.log'))}\n")
    exe.chmod(0o755)
    result = subprocess.run([str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"the console file directory {planted} {problem}" in result.stderr
    assert victim.read_text() == "root's file\n"


def test_script_accepts_its_own_directory(tmp_path):
    name = "prep-4"
    plan = _plan_in(_snp_spec(tmp_path, name, f'[qmp]\nsocket = "{tmp_path}/guests/{name}/qmp.sock"\n'),
                    tmp_path, name)
    script = _write_script(plan, tmp_path)
    (tmp_path / "guests" / name).mkdir(parents=True, mode=0o750)
    result = subprocess.run([str(script)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert result.returncode == 1   # the firmware is missing, but both directories are fine
    assert f"directory {tmp_path}/guests/{name} " not in result.stderr, result.stderr
    assert "stop channel directory" not in result.stderr, result.stderr


SEV_SPEC = [s for s in VALID_SPECS if s.endswith("examples/sev.toml")][0]


def _memlock_run(tmp_path, hard: str):
    """Run the SEV example's script as nobody with a 64 KiB memlock limit, under a hard
    limit that lets it raise the limit ("unlimited") or not ("65536")."""
    import tempfile
    plan_dir = tempfile.mkdtemp(dir="/tmp")
    os.chmod(plan_dir, 0o755)
    plan = relocated_plan(SEV_SPEC, plan_dir)
    script = _write_script(plan, type(tmp_path)(plan_dir))
    os.chmod(script, 0o755)
    prefix = [shutil.which("prlimit"), f"--memlock=65536:{hard}",
              shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        return plan, subprocess.run(prefix + [str(script)], env={"PATH": "/usr/bin:/bin"},
                                    capture_output=True, text=True, cwd="/")
    finally:
        shutil.rmtree(plan_dir)


def test_sev_script_raises_the_memlock_limit_or_says_why_it_cannot(tmp_path):
    if os.geteuid() != 0 or not shutil.which("prlimit") or not shutil.which("setpriv"):
        pytest.skip("needs root, prlimit and setpriv to run the script under a low limit")
    plan, capped = _memlock_run(tmp_path, hard="65536")
    need = (plan.memory_mib + 256) * 1024
    assert capped.returncode == 1
    assert (f"the memlock limit (ulimit -l) is 64 KiB, but AMD SEV guest memory of {plan.memory_mib} MiB "
            f"plus 256 MiB for QEMU needs {need} KiB locked") in capped.stderr


def test_sev_script_raises_its_soft_memlock_limit_up_to_the_hard_one(tmp_path):
    import resource
    if os.geteuid() != 0 or not shutil.which("prlimit") or not shutil.which("setpriv"):
        pytest.skip("needs root, prlimit and setpriv to run the script under a low limit")
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    need = (compile_plan(SEV_SPEC).memory_mib + 256) * 1024 * 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"this host's hard memlock limit ({hard} bytes) is below what the guest needs")
    _plan, raisable = _memlock_run(tmp_path, hard="unlimited" if hard == resource.RLIM_INFINITY else str(hard))
    assert raisable.returncode == 1 and "/dev/sev" in raisable.stderr   # other checks still fail
    assert "memlock" not in raisable.stderr   # the script raised its own soft limit


def test_memory_locking_agrees_across_the_three_targets():
    """SEV and SEV-ES pin guest memory (KVM_MEMORY_ENCRYPT_REG_REGION); SEV-SNP and TDX
    private memory is guest_memfd (qemu.md, libvirt.md section 4); PEF and PV pin nothing."""
    pins = {"sev": True, "sev-es": True, "sev-snp": False, "tdx": False, "pef": False, "s390-pv": False}
    for spec in VALID_SPECS:
        plan = compile_plan(spec)
        expected = pins[plan.confidential.mechanism]
        texts = [render(spec, "shell"), render(spec, "systemd")]
        assert ("need_memlock " in texts[0]) == expected, spec
        assert ("LimitMEMLOCK=infinity" in texts[1]) == expected, spec
        if not plan.confidential.libvirt_unsupported:
            texts.append(render(spec, "libvirt"))
            assert ("<locked/>" in texts[2]) == expected, spec
        if plan.confidential.mechanism in ("sev", "sev-es", "sev-snp", "tdx"):
            # each artifact says why, in the mechanism's words
            why = "pins all guest memory" if expected else "guest_memfd"
            assert all(why in text for text in texts), spec


# -- the QEMU version the guest needs (manifest.json "requires") ---------------------------

def _old_qemu_dir(tmp_path, name, version):
    """A stand-in emulator that answers -version as QEMU `version` does, and records any
    other start."""
    bin_dir = tmp_path / "oldbin"
    bin_dir.mkdir()
    exe = bin_dir / name
    exe.write_text("#!/bin/sh\n"
                   f"[ \"$1\" = -version ] && {{ echo 'QEMU emulator version {version} (Debian)'; "
                   "echo 'Copyright (c) 2003-2024 Fabrice Bellard'; exit 0; }\n"
                   "printf '%s\\0' \"$@\" > \"$CGSC_ARGV_LOG\"\n")
    exe.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("version, ok", [("8.2.2", False), ("9.0.0", False), ("9.1.0", True),
                                         ("10.0.2", True), ("11.1.3", True)])
def test_script_checks_the_qemu_version_before_starting_it(version, ok, tmp_path):
    """An SNP guest needs QEMU 9.1 (sev-snp-guest; QEMU's qapi/qom.json "Since: 9.1"). On an
    older QEMU the script says which version it needs and which it found, instead of QEMU's
    "Parameter 'qom-type' does not accept value 'sev-snp-guest'"."""
    spec = [s for s in VALID_SPECS if s.endswith("examples/sev-snp.toml")][0]
    plan, script = _relocated_script(spec, tmp_path)
    code, _out, err = run_cli("build", spec, "-o", str(tmp_path / "out"), "-t", "shell")
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / plan.name / "manifest.json").read_text())
    need = next(a["requires"]["qemu"] for a in manifest["artifacts"] if a["target"] == "shell")
    assert need == "9.1"
    bin_dir = _old_qemu_dir(tmp_path, plan.emulator, version)
    log = tmp_path / "argv"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_ARGV_LOG": str(log)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 1     # this host has no SNP either: some check fails
    said = f"needs QEMU {need} or later (sev-snp-guest); {plan.emulator} is QEMU {version}"
    assert (said in result.stderr) == (not ok), result.stderr
    assert not log.exists()

"""[measurement] launch binding: the generated script and the unit's ExecStartPre= run for
real against a stand-in emulator; one changed byte stops the launch before QEMU starts."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
from helpers import compile_plan, run_cli, systemd_split, unit_values
from measure_helpers import DEBUG_SWAP, FIRMWARE, MEASUREMENT, spec_text
from measure_helpers import write as _write

# a stand-in QEMU: answers -version as QEMU does (the script checks it), records a start
STAND_IN = ("#!/bin/sh\n[ \"$1\" = -version ] && { echo 'QEMU emulator version 11.1.3'; exit 0; }\n"
            "printf '%s\\0' \"$@\" > \"$CGSC_ARGV_LOG\"\n")


def _host_features() -> int:
    try:
        with open(DEBUG_SWAP, encoding="ascii") as fh:
            return 0x21 if fh.read().strip() in ("Y", "1") else 0x1
    except OSError:
        return 0x1


@pytest.fixture
def bound(shared_dir, tmp_path):
    """A built SNP guest whose launch paths hold the measured files' bytes."""
    launch = tmp_path / "launch dir $x 'q' \"d\" %n \\b `c` ;&"
    launch.mkdir()
    firmware = os.path.join(shared_dir, *MEASUREMENT, FIRMWARE["AmdSev"])
    with open(firmware, "rb") as fh:
        (launch / "OVMF.fd").write_bytes(fh.read())
    (launch / "vmlinuz").write_bytes(b"kernel bytes")
    (launch / "initrd").write_bytes(b"initrd bytes")
    spec = _write(tmp_path / "g.toml", spec_text(
        "bound", "sev-snp", str(launch / "OVMF.fd"), cpu="EPYC-v4", kernel=str(launch / "vmlinuz"),
        initrd=str(launch / "initrd"), cmdline="console=ttyS0", launch_dir=str(launch),
        features=_host_features()))
    out = tmp_path / "out"
    code, _o, err = run_cli("build", spec, "-o", str(out))
    assert code == 0, err
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-system-x86_64").write_text(STAND_IN)
    (bin_dir / "qemu-system-x86_64").chmod(0o755)
    return launch, out / "bound", bin_dir, tmp_path / "argv"


def _run_script(bound, skip_checks="1"):
    _launch, out, bin_dir, log = bound
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_SKIP_CHECKS": skip_checks,
           "CGSC_ARGV_LOG": str(log)}
    return subprocess.run([str(out / "bound.sh")], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def _exec_start_pre(bound):
    _launch, out, _bin, _log = bound
    (line,) = [v for v in unit_values((out / "bound.service").read_text(), "Service", "ExecStartPre")
               if "sha256sum" in v]   # the digest check (others check host parameters, make FIFOs)
    return subprocess.run(systemd_split(line), capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})


def _flip_one_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return hashlib.sha256(bytes(data)).hexdigest()


def test_the_script_launches_when_the_files_match(bound):
    result = _run_script(bound)
    assert result.returncode == 0, result.stderr
    assert bound[3].exists()


@pytest.mark.parametrize("victim", ["OVMF.fd", "vmlinuz", "initrd"])
def test_one_changed_byte_stops_the_script_before_qemu(bound, victim):
    launch, out, _bin, log = bound
    expected = hashlib.sha256((launch / victim).read_bytes()).hexdigest()
    actual = _flip_one_byte(launch / victim)
    for skip in ("1", "0"):   # CGSC_SKIP_CHECKS=1 never skips the binding
        result = _run_script(bound, skip)
        assert result.returncode == 1
        assert not log.exists(), "QEMU must not start"
    result = _run_script(bound)
    assert f"{launch / victim} has sha256 {actual}" in result.stderr
    assert f"computed for sha256 {expected}" in result.stderr


def test_the_unit_exec_start_pre_checks_the_same(bound):
    launch, _out, _bin, _log = bound
    ok = _exec_start_pre(bound)
    assert ok.returncode == 0, ok.stderr
    expected = hashlib.sha256((launch / "vmlinuz").read_bytes()).hexdigest()
    actual = _flip_one_byte(launch / "vmlinuz")
    bad = _exec_start_pre(bound)
    assert bad.returncode == 1
    assert bad.stderr == (f"cgsc launch bound: kernel {launch / 'vmlinuz'} has sha256 {actual}, "
                          f"but the launch measurement was computed for sha256 {expected}: "
                          "refusing to start a guest that would not attest "
                          "(rebuild with cgsc if the change is intended)\n")


def test_a_missing_file_stops_the_launch(bound):
    launch = bound[0]
    (launch / "initrd").unlink()
    result = _run_script(bound)
    assert result.returncode == 1 and "cannot be read to check its sha256" in result.stderr


def test_the_debug_swap_parameter_is_checked(bound):
    _launch, out, _bin, _log = bound
    script = (out / "bound.sh").read_text()
    assert "param /sys/module/kvm_amd/parameters/debug_swap" in script


def test_verify_at_launch_false_leaves_the_checks_out(shared_dir, tmp_path):
    spec = _write(tmp_path / "g.toml", spec_text(
        "nobind", "sev-snp", os.path.join(shared_dir, *MEASUREMENT, FIRMWARE["AmdSev"]),
        cpu="EPYC-v4", measurement="verify-at-launch = false"))
    plan = compile_plan(spec)
    assert plan.binding is None and plan.attestation["verify-at-launch"] is False
    from cgsc import targets
    (script,) = targets.get("shell").render(plan)
    (unit,) = targets.get("systemd").render(plan)
    assert "check_measured" not in script.content and "sha256sum" not in unit.content


def test_libvirt_says_it_cannot_check_files(bound, relaxng):
    from lxml import etree
    _launch, out, _bin, _log = bound
    doc = etree.parse(str(out / "bound.xml"))
    assert relaxng.validate(doc), relaxng.error_log
    comments = [c.text for c in doc.iter(etree.Comment)]
    assert any("libvirt cannot check that the boot files are the measured ones" in c for c in comments)


def test_bound_artifacts_pass_shellcheck_and_systemd_analyze(bound, tool, tmp_path):
    _launch, out, _bin, _log = bound
    result = subprocess.run([tool("shellcheck"), "--shell=sh", "--severity=style",
                             str(out / "bound.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    analyze = tool("systemd-analyze")
    root = tmp_path / "root"   # the distribution's units, and stand-ins for what the unit runs
    for units in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isdir(units):
            shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
            break
    for exe in ("bin/sh", "usr/bin/qemu-system-x86_64"):
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        (root / exe).write_text("#!/bin/sh\n")
        (root / exe).chmod(0o755)
    unit = root / "etc/systemd/system/bound.service"
    unit.parent.mkdir(parents=True)
    unit.write_text((out / "bound.service").read_text())
    result = subprocess.run([analyze, "verify", f"--root={root}", str(unit)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_script_and_unit_name_the_expected_digest(bound):
    _launch, out, _bin, _log = bound
    import json
    att = json.loads((out / "manifest.json").read_text())["attestation"]
    line = f"expected launch digest (sha384): {att['launch-digest']} (manifest.json: attestation)"
    assert f"# {line}\n" in (out / "bound.sh").read_text()
    assert line in (out / "bound.service").read_text()


@pytest.mark.parametrize("legacy, checked", [(None, True), ("on", True), ("auto", True),
                                             ("off", False)])
def test_sev_es_checks_debug_swap_only_on_the_legacy_launch_path(legacy, checked, shared_dir,
                                                                  tmp_path):
    """qemu.md: sev-guest launches through KVM_SEV_ES_INIT unless legacy-vm-type = off;
    only there does KVM add DebugSwap to the VMSA by itself."""
    extra = f'legacy-vm-type = "{legacy}"' if legacy else ""
    plan = compile_plan(_write(tmp_path / "g.toml", spec_text(
        "es", "sev-es", os.path.join(shared_dir, *MEASUREMENT, FIRMWARE["AmdSev"]),
        cpu="EPYC-v4", extra=extra)))
    assert any(p.path == DEBUG_SWAP for p in plan.binding.params) == checked

"""[measurement] launch binding: the generated script and the unit's command lines run for
real (dash and bash; ExecStartPre= then ExecStart= as systemd runs them) in a private /run
against a stand-in emulator that hashes what it is handed. QEMU gets the checked copies by
descriptor; one changed byte, an odd file at a launched path or a signal stops the launch
before QEMU starts and leaves nothing behind. The races are in test_launch_race.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import firmware_images as fw
import pytest
from helpers import compile_plan, exec_start, run_cli, systemd_split, unit_values
from launch_helpers import SYSTEMD_PATH, launched, run_batch, stand_in, unit_commands
from measure_helpers import spec_text
from measure_helpers import write as _write

HOSTILE_DIR = "launch dir $x 'q' \"d\" %n \\b `c` ;&"
# The host settings the unit's ExecStartPre= checks, as an SEV-SNP host shows them.
AMD_HOST = {"kvm_amd": {"sev": "Y", "sev_es": "Y", "sev_snp": "Y", "debug_swap": "N"}}
FILES = {"firmware": "OVMF.fd", "kernel": "vmlinuz", "initrd": "initrd"}
REFUSED = "refusing to start a guest that would not attest"


class Bound:
    """A built SEV-SNP guest (synthetic OVMF with the kernel-hashes table), its launch
    directory and output, and how to start it."""

    def __init__(self, tmp_path, name="bound", launch=None):
        self.tmp = tmp_path
        self.name = name
        self.launch = launch or tmp_path / HOSTILE_DIR
        self.launch.mkdir(exist_ok=True)
        self.measured = {"firmware": fw.amd_image(hashes_table=True),
                         "kernel": bytes(range(256)) * 40, "initrd": b"initrd bytes\n" * 700}
        for role, data in self.measured.items():
            (self.launch / FILES[role]).write_bytes(data)
        spec = _write(tmp_path / f"{name}.toml", spec_text(
            name, "sev-snp", str(self.launch / "OVMF.fd"), cpu="EPYC-v4",
            kernel=str(self.launch / "vmlinuz"), initrd=str(self.launch / "initrd"),
            cmdline="console=ttyS0", launch_dir=str(self.launch), features=0x1))
        self.spec = spec
        code, _o, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
        assert code == 0, err
        self.out = tmp_path / "out" / name
        self.bin = stand_in(tmp_path / "bin")
        self.log = tmp_path / "log" / "launched.log"   # the one place the unit may write
        self.log.parent.mkdir()

    def path(self, role):
        return self.launch / FILES[role]

    def sha(self, role):
        return hashlib.sha256(self.measured[role]).hexdigest()

    def env(self, **extra):
        return {"PATH": f"{self.bin}:{SYSTEMD_PATH}:/bin", "CGSC_LOG": str(self.log), **extra}

    def script(self, shell="/bin/sh", runs=1, **kw):
        return run_batch(self.name, [[shell, str(self.out / f"{self.name}.sh")]],
                         self.env(CGSC_SKIP_CHECKS="1"), runs, self.tmp,
                         module_params=AMD_HOST, **kw)

    def unit(self, runs=1, **kw):
        """As systemd starts the unit: ExecStartPre= lines, then ExecStart=, UMask=0077,
        ProtectSystem=strict with RuntimeDirectory= (and the stand-in's log) writable."""
        commands = unit_commands((self.out / f"{self.name}.service").read_text())
        return run_batch(self.name, commands, self.env(), runs, self.tmp, module_params=AMD_HOST,
                         umask=0o077, strict=self.log.parent, **kw)

    def start(self, how, **kw):
        return self.script(**kw) if how == "script" else self.unit(**kw)


@pytest.fixture
def bound(tmp_path):
    return Bound(tmp_path)


def _assert_measured_launch(bound, results):
    assert [r["rc"] for r in results] == [0] * len(results), results
    records = launched(bound.log)
    assert len(records) == len(results)
    for record in records:
        assert record == {"bios": ("/proc/self/fd/3", bound.sha("firmware")),
                          "kernel": ("/proc/self/fd/4", bound.sha("kernel")),
                          "initrd": ("/proc/self/fd/5", bound.sha("initrd"))}
    assert all(r["left"] == ["qmp-stop.in", "qmp-stop.out"] or r["left"] == []
               for r in results), "the copies must not outlive the launch"


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_script_launches_the_measured_bytes_by_descriptor(bound, shell, tool):
    _assert_measured_launch(bound, bound.script(tool(shell), runs=2))


def test_the_unit_launches_the_measured_bytes_by_descriptor(bound):
    results = bound.unit(runs=2)
    _assert_measured_launch(bound, results)
    assert all(r["left"] == ["qmp-stop.in", "qmp-stop.out"] for r in results)


def test_the_unit_runs_the_binding_and_qemu_in_one_process(bound):
    """ExecStart= is the binding program with QEMU's argv after `--`, split by systemd's
    rules: no ExecStartPre= gap between the check and QEMU."""
    unit = (bound.out / "bound.service").read_text()
    words = exec_start(unit)
    plan = compile_plan(bound.spec)
    assert words[:2] == ["/bin/sh", "-c"] and words[3] == "cgsc launch bound"
    assert words[words.index("--") + 1:] == plan.argv()
    assert "-kernel" in plan.argv() and plan.argv()[plan.argv().index("-kernel") + 1] == "/proc/self/fd/4"
    assert not any("sha256sum" in line for line in unit_values(unit, "Service", "ExecStartPre"))


@pytest.mark.parametrize("how", ["script", "unit"])
@pytest.mark.parametrize("victim", list(FILES))
def test_one_changed_byte_stops_the_launch_before_qemu(bound, how, victim):
    data = bytearray(bound.measured[victim])
    data[len(data) // 2] ^= 0x01
    bound.path(victim).write_bytes(bytes(data))
    (result,) = bound.start(how)
    assert result["rc"] == 1 and not launched(bound.log), "QEMU must not start"
    assert result["stderr"] == (
        f"cgsc launch bound: {victim} {bound.path(victim)} has sha256 "
        f"{hashlib.sha256(bytes(data)).hexdigest()}, but the launch measurement was computed "
        f"for sha256 {bound.sha(victim)}: {REFUSED} (rebuild with cgsc if the change is "
        "intended)\n")
    assert not [f for f in result["left"] if f.startswith(".measured")]


def test_skip_checks_never_skips_the_binding(bound):
    bound.path("kernel").write_bytes(b"another kernel")
    for skip in ("1", "0"):
        (result,) = run_batch("bound", [["/bin/sh", str(bound.out / "bound.sh")]],
                              bound.env(CGSC_SKIP_CHECKS=skip), 1, bound.tmp,
                              module_params=AMD_HOST)
        assert result["rc"] == 1 and not launched(bound.log)


def test_a_missing_file_stops_the_launch(bound):
    bound.path("initrd").unlink()
    for how in ("script", "unit"):
        (result,) = bound.start(how)
        assert result["rc"] == 1 and not launched(bound.log)
        assert f"initrd {bound.path('initrd')} cannot be read to check its sha256 " in result["stderr"]
        assert "No such file or directory" in result["stderr"]


ODD = {
    # what is put at the kernel's launch path -> what the refusal says
    "fifo": "is not a regular file (a FIFO, device or socket)",
    "dev-zero": "is not a regular file (a FIFO, device or socket)",
    "directory": "is a directory, not the file that was measured",
    "sparse-2GiB": "is longer than the 10240 bytes that were measured",
}


def _plant(path, what):
    path.unlink()
    if what == "fifo":
        os.mkfifo(path)
    elif what == "dev-zero":
        path.symlink_to("/dev/zero")
    elif what == "directory":
        path.mkdir()
    else:
        with open(path, "wb") as fh:
            fh.truncate(2 << 30)


@pytest.mark.parametrize("how", ["script", "unit"])
@pytest.mark.parametrize("what", list(ODD))
def test_an_odd_file_at_a_launched_path_is_refused_at_once(bound, how, what):
    """Never a hang (a FIFO), never an unbounded read (/dev/zero, a 2 GiB file): at most
    one byte more than was measured is read. The driver gives each start 60 s; a hang
    shows as rc -999."""
    _plant(bound.path("kernel"), what)
    (result,) = bound.start(how)
    assert result["rc"] == 1, result
    assert result["stderr"].startswith(f"cgsc launch bound: kernel {bound.path('kernel')} {ODD[what]}")
    assert REFUSED in result["stderr"] and not launched(bound.log)
    assert not [f for f in result["left"] if f.startswith(".measured")]


@pytest.mark.parametrize("how", ["script", "unit"])
@pytest.mark.parametrize("sig, status", [(1, 129), (2, 130), (15, 143)])
def test_a_signal_during_the_copies_leaves_none_behind(bound, how, sig, status):
    """dd is wrapped so that the signal arrives while a copy exists (after the kernel's
    copy is written); the process group gets it, as from a terminal or systemd's stop."""
    marker = bound.log.parent / "copied"   # writable under the unit's ProtectSystem=strict
    wrapper = bound.tmp / "slow-bin" / "dd"
    wrapper.parent.mkdir()
    # (exec: a sleep that dash forks as the signal comes can start with it blocked, and
    # outlive the launch by a minute)
    wrapper.write_text("#!/bin/sh\n/bin/dd \"$@\" || exit\n"
                       f"case $* in *vmlinuz*) : > '{marker}'; exec sleep 60 ;; esac\n")
    wrapper.chmod(0o755)
    bound.bin = f"{wrapper.parent}:{bound.bin}"
    (result,) = bound.start(how, signal={"marker": str(marker), "signal": sig})
    assert marker.exists()
    assert result["rc"] == status, result
    assert not launched(bound.log)
    assert not [f for f in result["left"] if f.startswith(".measured")], result["left"]


@pytest.mark.parametrize("how", ["script", "unit"])
def test_copies_a_killed_launch_left_are_removed_at_the_next_start(bound, how):
    results = bound.start(how, plant=[".measured.AbC123/4", ".measured.XyZ789/3"])
    _assert_measured_launch(bound, results)


@pytest.mark.parametrize("mode", [0o770, 0o757])
def test_a_runtime_directory_others_can_write_is_refused(bound, mode):
    (result,) = bound.script(dir_mode=mode)
    assert result["rc"] == 1 and not launched(bound.log)
    assert result["stderr"] == ("cgsc launch bound: /run/cgsc/bound must be a directory of "
                                "this user that no other user can write: the measured boot "
                                "files are copied there for QEMU\n")


def test_no_kvm_amd_parameter_is_checked_for_the_digest(bound):
    """kvm_amd debug_swap does not change an SNP guest's VMSA (KVM_SEV_INIT2 takes the
    features from QEMU, which requests none: docs/attestation.md). Before, the launch
    refused this guest on a host with debug_swap=Y, Linux 6.10+'s default."""
    for artifact in (f"{bound.name}.sh", f"{bound.name}.service"):
        assert "debug_swap" not in (bound.out / artifact).read_text(), artifact
    on = {"kvm_amd": {**AMD_HOST["kvm_amd"], "debug_swap": "Y"}}
    results = run_batch("bound", [["/bin/sh", str(bound.out / "bound.sh")]],
                        bound.env(CGSC_SKIP_CHECKS="1"), 1, bound.tmp, module_params=on)
    _assert_measured_launch(bound, results)


def test_a_pflash_firmware_is_launched_from_its_checked_copy(tmp_path):
    """SEV-ES with a variable store: the code is a read-only pflash drive whose file= is
    the descriptor; the variable store (not measured) stays a path."""
    launch = tmp_path / "launch"
    launch.mkdir()
    code = fw.amd_image()
    (launch / "OVMF_CODE.fd").write_bytes(code)
    (launch / "OVMF_VARS.fd").write_bytes(bytes(4096))
    spec = _write(tmp_path / "es.toml", f"""[guest]
name = "es"
memory = 1024
cpu = "EPYC-v4"
[firmware]
code = "{launch}/OVMF_CODE.fd"
vars = "{launch}/OVMF_VARS.fd"
[confidential.sev-es]
cbitpos = 51
reduced-phys-bits = 1
legacy-vm-type = "off"
[measurement]
""")
    plan = compile_plan(spec)
    drives = [plan.argv()[i + 1] for i, w in enumerate(plan.argv()) if w == "-drive"]
    assert drives == ["if=pflash,format=raw,unit=0,file=/proc/self/fd/3,readonly=on",
                      f"if=pflash,format=raw,unit=1,file={launch}/OVMF_VARS.fd"]
    assert _build_and_launch(tmp_path, spec, "es", AMD_HOST) == [
        {"pflash": ("/proc/self/fd/3", hashlib.sha256(code).hexdigest())}]


def _build_and_launch(tmp_path, spec, name, module_params=None):
    """Build the spec, run its script once against the stand-in, return what it launched."""
    code, _o, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
    assert code == 0, err
    log = tmp_path / "launched.log"
    env = {"PATH": f"{stand_in(tmp_path / 'bin')}:{SYSTEMD_PATH}:/bin", "CGSC_LOG": str(log),
           "CGSC_SKIP_CHECKS": "1"}
    (result,) = run_batch(name, [["/bin/sh", str(tmp_path / "out" / name / f"{name}.sh")]],
                          env, 1, tmp_path, module_params=module_params)
    assert result["rc"] == 0, result
    return launched(log)


def test_an_s390_secure_execution_image_is_launched_from_its_checked_copy(tmp_path):
    image = os.urandom(8192)
    (tmp_path / "se.img").write_bytes(image)
    spec = _write(tmp_path / "pv.toml", f"""[guest]
name = "pv"
memory = 1024
arch = "s390x"
[kernel]
image = "{tmp_path}/se.img"
[confidential.s390-pv]
[measurement]
""")
    assert _build_and_launch(tmp_path, spec, "pv") == [
        {"kernel": ("/proc/self/fd/3", hashlib.sha256(image).hexdigest())}]


def test_verify_at_launch_false_leaves_the_copies_and_checks_out(tmp_path):
    image = tmp_path / "OVMF.fd"
    image.write_bytes(fw.amd_image())
    spec = _write(tmp_path / "g.toml", spec_text(
        "nobind", "sev-snp", str(image), cpu="EPYC-v4", launch_dir=str(tmp_path),
        measurement="verify-at-launch = false"))
    plan = compile_plan(spec)
    assert plan.binding is None and plan.attestation["verify-at-launch"] is False
    assert plan.argv()[plan.argv().index("-bios") + 1] == str(image)   # QEMU opens the path
    from cgsc import targets
    (script,) = targets.get("shell").render(plan)
    (unit,) = targets.get("systemd").render(plan)
    assert "launch_measured" not in script.content and "/proc/self/fd" not in script.content
    assert exec_start(unit.content) == plan.argv()
    assert "sha256" not in unit.content


def test_libvirt_says_it_cannot_check_files(bound, relaxng):
    from lxml import etree
    doc = etree.parse(str(bound.out / "bound.xml"))
    assert relaxng.validate(doc), relaxng.error_log
    comments = [c.text for c in doc.iter(etree.Comment)]
    assert any("libvirt cannot check that the boot files are the measured ones" in c for c in comments)
    # libvirt opens the paths themselves: it has no checked copy to hand QEMU
    assert doc.find("os/kernel").text == str(bound.path("kernel"))


def test_bound_artifacts_pass_shellcheck_and_systemd_analyze(bound, tool, tmp_path):
    result = subprocess.run([tool("shellcheck"), "--shell=sh", "--severity=style",
                             str(bound.out / "bound.sh")], capture_output=True, text=True)
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
    unit.write_text((bound.out / "bound.service").read_text())
    result = subprocess.run([analyze, "verify", f"--root={root}", str(unit)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_script_and_unit_name_the_expected_digest(bound):
    att = json.loads((bound.out / "manifest.json").read_text())["attestation"]
    line = f"expected launch digest (sha384): {att['launch-digest']} (manifest.json: attestation)"
    assert f"# {line}\n" in (bound.out / "bound.sh").read_text()
    assert line in (bound.out / "bound.service").read_text()
    assert [(f["path"], f["sha256"], f["size"]) for f in att["files"]] == [
        (str(bound.path(r)), bound.sha(r), len(bound.measured[r])) for r in FILES]


def test_the_unit_command_line_round_trips_hostile_paths(bound):
    """Every data word reaches the program intact through systemd's quoting."""
    words = exec_start((bound.out / "bound.service").read_text())
    args = words[4:words.index("--")]
    assert args[0] == "/run/cgsc/bound"
    files = [args[i:i + 6] for i, w in enumerate(args) if w == "file"]
    assert files == [["file", r, str(bound.path(r)), bound.sha(r), str(len(bound.measured[r])),
                      str(3 + i)] for i, r in enumerate(FILES)]


def test_a_stop_while_the_binding_checks_does_not_wait_for_a_qemu_that_never_starts(bound):
    """systemctl stop during the checks (or after they refused the launch): ExecStop=
    must not block on the stop FIFO that only QEMU would open; it returns once the main
    process is gone."""
    unit = (bound.out / "bound.service").read_text()
    (make_fifos,) = [c for c in unit_commands(unit) if "mkfifo" in " ".join(c)]
    stop = systemd_split(unit_values(unit, "Service", "ExecStop")[0])
    main = ["/bin/sh", "-c", 'sleep 1 & MAINPID=$!; export MAINPID; exec "$@"', "sh"] + stop
    (result,) = run_batch("bound", [make_fifos, main], bound.env(), 1, bound.tmp)
    assert result["rc"] == 0, result
    # and once QEMU (a stand-in reading the stop channel) runs, the request reaches it
    said = bound.tmp / "said"
    qemu = f"cat /run/cgsc/bound/qmp-stop.in > '{said}'"
    main = ["/bin/sh", "-c", f'{{ {qemu}; }} & MAINPID=$!; export MAINPID; exec "$@"', "sh"] + stop
    (result,) = run_batch("bound", [make_fifos, main], bound.env(), 1, bound.tmp)
    assert result["rc"] == 0, result
    assert said.read_text() == '{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n'


def test_the_harness_runs_the_unit_read_only_but_for_its_runtime_directory(bound):
    """The unit's commands above run under ProtectSystem=strict as emulated here: a write
    anywhere else fails, so a pass shows the binding writes only where the unit may."""
    probe = ["/bin/sh", "-c", 'touch /run/cgsc/bound/ok "$0/ok" && ! touch /var/tmp/cgsc-probe '
             '2>/dev/null && ! touch /run/cgsc-probe 2>/dev/null', str(bound.log.parent)]
    (result,) = run_batch("bound", [probe], bound.env(), 1, bound.tmp, strict=bound.log.parent)
    assert result["rc"] == 0, result
    assert result["left"] == ["ok"]

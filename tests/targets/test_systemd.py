"""systemd target: verified by systemd-analyze, scored by its security analysis, and an
ExecStart= that systemd splits back into exactly the plan's argv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from helpers import (EXAMPLES, MINIMAL_SNP, VALID_SPECS, compile_plan, exec_start, rel, render, run_cli,
                     systemd_split, unit_values)

from cgsc.core.escape import systemd_exec_word

HOSTILE = ["plain", "with space", 'double"quote', "single'quote", "dollar $HOME ${X} $$",
           "percent %n %% %", "back\\slash \\n", "semi;colon", ";", "comma,,comma",
           "new\nline", "tab\tchar", "ünïcödé ✓", "", "-leading-dash", "@at", "ctrl\x01\x7f",
           "..", "../../etc/passwd", "trailing\\"]


@pytest.mark.parametrize("words, expected", [
    # from systemd.service(5), "COMMAND LINES"
    ("sh -c 'dmesg | tac'", ["sh", "-c", "dmesg | tac"]),
    ("echo / >/dev/null & \\; ls", ["echo", "/", ">/dev/null", "&", ";", "ls"]),
    ("echo $$HOME", ["echo", "$HOME"]),
    # from systemd.syntax(7), "QUOTING", and systemd.unit(5) specifiers
    ('"a b" \'c d\' e', ["a b", "c d", "e"]),
    ('"\\x41\\101\\u00e9\\s\\t"', ["AAé \t"]),
    ("echo %%i", ["echo", "%i"]),
])
def test_splitter_agrees_with_the_manual(words, expected):
    assert systemd_split(words) == expected


@pytest.mark.parametrize("words", ["echo one ; echo two", '"closed"early', "echo $HOME", "%n",
                                   '"unterminated'])
def test_splitter_refuses_what_cgsc_must_never_write(words):
    with pytest.raises(ValueError):
        systemd_split(words)


def test_exec_word_escaper_round_trips_hostile_words():
    line = " ".join(systemd_exec_word(w) for w in HOSTILE)
    assert systemd_split(line) == HOSTILE


@pytest.mark.parametrize("spec", VALID_SPECS, ids=rel)
def test_exec_start_splits_into_the_plan_argv(spec):
    assert exec_start(render(spec, "systemd")) == compile_plan(spec).argv()


@pytest.fixture(scope="session")
def systemd_root(tmp_path_factory, tool):
    """A throwaway root with the distribution's units and stand-in emulators wherever
    the units expect them."""
    tool("systemd-analyze")
    root = tmp_path_factory.mktemp("root")
    for units in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isdir(units):
            shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
            break
    (root / "etc/systemd/system").mkdir(parents=True)
    emulators = {compile_plan(s).emulator for s in VALID_SPECS}
    for emulator in emulators | {"/bin/sh"}:   # ExecStartPre=/ExecStop= run /bin/sh
        path = root / (emulator.lstrip("/") if emulator.startswith("/") else f"usr/bin/{emulator}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return root


def _verify(root, unit_name, text):
    unit = root / "etc/systemd/system" / unit_name
    unit.write_text(text)
    try:
        return subprocess.run(["systemd-analyze", "verify", f"--root={root}", str(unit)],
                              capture_output=True, text=True, timeout=120)
    finally:
        unit.unlink()


@pytest.mark.parametrize("spec", VALID_SPECS, ids=rel)
def test_systemd_analyze_verify_passes_without_warnings(spec, systemd_root):
    plan = compile_plan(spec)
    unit_name = plan.settings["systemd"].unit_name or f"{plan.name}.service"
    result = _verify(systemd_root, unit_name, render(spec, "systemd"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_the_verify_check_can_fail(systemd_root):
    spec = EXAMPLES[0]
    plan = compile_plan(spec)
    text = render(spec, "systemd").replace("[Service]\n", "[Service]\nBogusSetting=1\n")
    result = _verify(systemd_root, f"{plan.name}.service", text)
    assert "Unknown key 'BogusSetting' in section [Service]" in result.stderr


def _exposure(path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)],
                            capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert m, result.stdout + result.stderr
    return float(m.group(1))


@pytest.mark.parametrize("spec", EXAMPLES, ids=rel)
def test_security_exposure_is_at_most_3(spec, tmp_path, tool):
    tool("systemd-analyze")
    plan = compile_plan(spec)
    path = tmp_path / f"{plan.name}.service"
    path.write_text(render(spec, "systemd"))
    score = _exposure(path)
    print(f"{plan.confidential.mechanism}: {rel(spec)} exposure {score}")
    assert score <= 2.2   # the worst example of cgsc 1.0: a fix must never widen the sandbox


def test_a_plain_qemu_unit_scores_far_worse(tmp_path, tool):
    tool("systemd-analyze")
    path = tmp_path / "plain.service"
    path.write_text("[Service]\nExecStart=/usr/bin/qemu-system-x86_64 -m 1G\n")
    assert _exposure(path) > 8.0


def test_devices_and_paths_follow_the_plan():
    spec = [s for s in EXAMPLES if s.endswith("sev-es.toml")][0]
    unit = render(spec, "systemd")
    assert 'DeviceAllow="/dev/kvm" rw' in unit and 'DeviceAllow="/dev/sev" rw' in unit
    assert 'DeviceAllow="/dev/net/tun" rw' in unit and 'DeviceAllow="/dev/vhost-vsock" rw' in unit
    assert "DevicePolicy=closed" in unit and "LimitMEMLOCK=infinity" in unit
    assert 'ReadWritePaths="/var/lib/guests/kms-edge/root.raw"' in unit
    assert "User=cgsc-kms" in unit and "Group=kvm" in unit


def test_bridge_relaxations_are_only_where_a_bridge_is():
    bridged = render([s for s in EXAMPLES if s.endswith("sev-snp.toml")][0], "systemd")
    plain = render([s for s in EXAMPLES if s.endswith("tdx.toml")][0], "systemd")
    assert "CapabilityBoundingSet=CAP_NET_ADMIN" in bridged and "NoNewPrivileges=no" in bridged
    assert "CapabilityBoundingSet=\n" in plain and "NoNewPrivileges=yes" in plain
    assert "SystemCallFilter=~@privileged" in plain and "SystemCallFilter=~@privileged" not in bridged


# -- ops: confinement, block devices, stop, ordering, host parameters ------------------

# Directories whose opening would widen the sandbox to the system or to other guests.
SYSTEM_DIRS = ["/", "/run", "/var", "/etc", "/usr", "/run/systemd", "/var/lib", "/var/log",
               "/tmp", "/run/cgsc", "/var/log/cgsc", "/run/user/0", "/srv", "/home"]


def _spec(tmp_path, text, name="guest-a"):
    path = tmp_path / f"{name}.toml"
    path.write_text(MINIMAL_SNP.format(name=name) + text)
    return str(path)


def _placed(key: str, path: str) -> str:
    """The TOML that puts the QMP socket (key "qmp") or a console of kind `key` at `path`."""
    return f'[qmp]\nsocket = "{path}"\n' if key == "qmp" else \
        f'[console]\nserial = "{key}"\npath = "{path}"\n'


@pytest.mark.parametrize("key, path, fix", [
    ("qmp", "/qmp.sock", "/run/cgsc/guest-a/qmp.sock"),
    ("qmp", "/run/qmp.sock", "/run/cgsc/guest-a/qmp.sock"),
    ("qmp", "/run/systemd/x.sock", "/run/cgsc/guest-a/x.sock"),
    ("qmp", "/run/cgsc/x.sock", "/run/cgsc/guest-a/x.sock"),
    ("qmp", "/run/cgsc/guest-b/qmp.sock", "/run/cgsc/guest-a/qmp.sock"),
    ("qmp", "/run/guest-a/qmp.sock", "/run/cgsc/guest-a/qmp.sock"),
    ("qmp", "/var/qmp.sock", "/run/cgsc/guest-a/qmp.sock"),
    ("qmp", "/etc/guest-a/qmp.sock", "/run/cgsc/guest-a/qmp.sock"),
    ("qmp", "/srv/shared/qmp.sock", "/run/cgsc/guest-a/qmp.sock"),
    ("socket", "/run/user/0/console.sock", "/run/cgsc/guest-a/console.sock"),
    ("file", "/var/log/console.log", "/var/log/cgsc/guest-a/console.log"),
    ("file", "/var/log/cgsc/console.log", "/var/log/cgsc/guest-a/console.log"),
])
def test_a_socket_or_console_outside_the_guests_own_directory_is_refused(key, path, fix, tmp_path):
    table = _placed(key, path)
    code, _out, err = run_cli("validate", _spec(tmp_path, table))
    assert code == 1, err
    assert "[CGS-PATH-002]" in err and f"hint: use {fix} " in err


# A directory named after the guest is not confined to it when the name is a system
# directory's, or when the directory sits where any user can create it first.
@pytest.mark.parametrize("name, key, path", [
    ("systemd", "qmp", "/var/lib/systemd/qmp.sock"),
    ("cron", "qmp", "/var/spool/cron/qmp.sock"),
    ("journal", "file", "/var/log/journal/console.log"),
    ("libvirt", "socket", "/var/lib/libvirt/console.sock"),
    ("private", "qmp", "/var/lib/private/qmp.sock"),
    ("alice", "qmp", "/home/alice/qmp.sock"),
    ("root", "file", "/root/console.log"),
    ("webx", "file", "/tmp/webx/console.log"),
    ("webx", "qmp", "/var/tmp/webx/qmp.sock"),
    ("webx", "socket", "/dev/shm/webx/console.sock"),
    ("webx", "qmp", "/srv/webx/qmp.sock"),
    ("webx", "qmp", "/opt/webx/qmp.sock"),
])
def test_a_directory_named_after_the_guest_outside_the_allowed_roots_is_refused(name, key, path, tmp_path):
    table = _placed(key, path)
    code, _out, err = run_cli("validate", _spec(tmp_path, table, name))
    assert code == 1, err
    root = "/var/log/cgsc" if key == "file" else "/run/cgsc"
    assert "[CGS-PATH-002]" in err and f"hint: use {root}/{name}/{os.path.basename(path)} " in err


@pytest.mark.parametrize("directory", ["/run/cgsc/{n}", "/var/lib/cgsc/{n}", "/var/log/cgsc/{n}",
                                       "/srv/guests/{n}", "/srv/site/vms/{n}"])
def test_the_documented_directories_are_accepted(directory, tmp_path):
    d = directory.format(n="guest-a")
    code, _out, err = run_cli("validate", _spec(tmp_path, f'[qmp]\nsocket = "{d}/qmp.sock"\n'
                                                          f'[console]\nserial = "file"\npath = "{d}/console.log"\n'))
    assert code == 0, err


def _stop_fifos(tmp_path, name):
    """The FIFOs the launch script of a valid guest makes for its stop channel, read from
    the script (its need_fifo calls), not from the plan."""
    import shlex
    script = render(_spec(tmp_path, "", name), "shell")
    return [shlex.split(line)[1] for line in script.splitlines() if line.strip().startswith("need_fifo ")]


@pytest.mark.parametrize("key", ["qmp", "file", "socket"])
def test_a_socket_or_console_on_the_stop_channel_is_refused(key, tmp_path):
    fifos = _stop_fifos(tmp_path, "col")
    assert len(fifos) == 2
    for fifo in fifos:
        table = f'[qmp]\nsocket = "{fifo}"\n' if key == "qmp" else \
            f'[console]\nserial = "{key}"\npath = "{fifo}"\n'
        code, _out, err = run_cli("validate", _spec(tmp_path, table, "col"))
        assert code == 1 and "[CGS-PATH-002]" in err and "stop channel" in err, err


@pytest.mark.parametrize("table", [
    '[qmp]\nsocket = "/run/cgsc/guest-a/x.sock"\n[console]\nserial = "socket"\npath = "/run/cgsc/guest-a/x.sock"\n',
    '[qmp]\nsocket = "/var/lib/cgsc/guest-a/root.img"\n[[disk]]\npath = "/var/lib/cgsc/guest-a/root.img"\nformat = "raw"\n',
])
def test_two_host_files_on_one_path_are_refused(table, tmp_path):
    code, _out, err = run_cli("validate", _spec(tmp_path, table))
    assert code == 1 and "[CGS-PATH-002]" in err and " is also " in err, err


def test_the_hint_names_a_file_for_the_kind_of_file(tmp_path):
    """A path without a file name (a trailing slash, from a caller that skips the schema)
    gets a hint with the usual file name of what it is, never "console" for a socket."""
    from cgsc.lower import confine
    from cgsc.spec.model import normalize
    from cgsc.spec.source import load
    guest = normalize(load(_spec(tmp_path, "")).data)._replace(qmp_socket="/run/other/")
    (diag,) = list(confine.check(guest))
    assert "use /run/cgsc/guest-a/qmp.sock " in diag.hint


def _rw_entries(unit: str) -> list:
    return [p for line in unit_values(unit, "Service", "ReadWritePaths")
            for p in systemd_split(line, exec_line=False)]


@pytest.mark.parametrize("spec", VALID_SPECS, ids=rel)
def test_writable_paths_are_exactly_the_guests_own(spec):
    """Every writable path is a disk image, the variable store, or a directory named after
    the guest; never a system directory or one above it; systemd-managed directories are
    cgsc/<name> and nothing else."""
    plan = compile_plan(spec)
    unit = render(spec, "systemd")
    files = {d.path for d in plan.disks} | {plan.firmware.vars}
    for path in _rw_entries(unit):
        assert path in files or os.path.basename(path) == plan.name, path
        assert not any(path == s or s.startswith(path.rstrip("/") + "/") for s in SYSTEM_DIRS), path
    for key in ("RuntimeDirectory", "StateDirectory", "LogsDirectory"):
        for line in unit_values(unit, "Service", key):
            assert systemd_split(line, exec_line=False) == [f"cgsc/{plan.name}"]
    assert unit_values(unit, "Service", "RuntimeDirectory") == [f'"cgsc/{plan.name}"']


def test_two_guests_never_share_a_runtime_directory(tmp_path):
    units = [render(_spec(tmp_path, f'[qmp]\nsocket = "/run/cgsc/{n}/qmp.sock"\n'
                                     f'[console]\nserial = "socket"\npath = "/run/cgsc/{n}/console.sock"\n', n),
                    "systemd") for n in ("guest-a", "guest-b")]
    dirs = [systemd_split(unit_values(u, "Service", "RuntimeDirectory")[0], exec_line=False) for u in units]
    assert dirs == [["cgsc/guest-a"], ["cgsc/guest-b"]]
    # the directory systemd removes at stop is exactly the one holding this guest's sockets
    for unit, name in zip(units, ("guest-a", "guest-b")):
        words = exec_start(unit)
        sockets = [w for w in words if "path=" in w]
        assert sockets and all(f"path=/run/cgsc/{name}/" in w for w in sockets)


def test_a_named_directory_and_a_log_directory_are_confined_and_verified(tmp_path, systemd_root):
    spec = _spec(tmp_path, '[qmp]\nsocket = "/srv/guests/guest-a/qmp.sock"\n'
                           '[console]\nserial = "file"\npath = "/var/log/cgsc/guest-a/console.log"\n')
    unit = render(spec, "systemd")
    assert "/srv/guests/guest-a" in _rw_entries(unit)
    assert unit_values(unit, "Unit", "AssertPathIsDirectory") == ["/srv/guests/guest-a"]
    assert systemd_split(unit_values(unit, "Service", "LogsDirectory")[0], exec_line=False) == ["cgsc/guest-a"]
    result = _verify(systemd_root, "guest-a.service", unit)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_block_device_disks_are_allowed_by_path(tmp_path, systemd_root, relaxng, tool):
    from lxml import etree
    spec = _spec(tmp_path, '[[disk]]\npath = "/dev/vg0/root"\nformat = "raw"\n'
                           '[[disk]]\npath = "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"\nformat = "raw"\nreadonly = true\n'
                           '[[disk]]\npath = "/var/lib/guests/guest-a/data.qcow2"\nformat = "qcow2"\n')
    unit = render(spec, "systemd")
    allowed = unit_values(unit, "Service", "DeviceAllow")
    assert '"/dev/vg0/root" rw' in allowed
    assert '"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4" r' in allowed
    assert "DevicePolicy=closed" in unit
    assert _rw_entries(unit) == ["/var/lib/guests/guest-a/data.qcow2"]
    asserted = unit_values(unit, "Unit", "AssertPathExists")
    assert "/dev/vg0/root" in asserted and "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4" in asserted
    result = _verify(systemd_root, "guest-a.service", unit)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    xml = render(spec, "libvirt")
    doc = etree.fromstring(xml.encode())
    assert relaxng.validate(doc), relaxng.error_log
    assert [d.get("type") for d in doc.findall("devices/disk")] == ["block", "block", "file"]
    assert doc.find("devices/disk/source").get("dev") == "/dev/vg0/root"
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    defined = subprocess.run([tool("virsh"), "-c", "test:///default", "define", "--validate", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert defined.returncode == 0, defined.stderr


def test_bridge_and_tap_guests_start_after_the_network_and_the_header_says_how_to_enable():
    for spec in VALID_SPECS:
        plan = compile_plan(spec)
        unit = render(spec, "systemd")
        wired = any(n.mode in ("tap", "bridge") for n in plan.nics)
        assert ("network-online.target" in unit_values(unit, "Unit", "Wants")) == wired, spec
        asked = "network-online.target" in plan.settings["systemd"].after
        assert ("network-online.target" in " ".join(unit_values(unit, "Unit", "After"))) == (wired or asked)
        unit_name = plan.settings["systemd"].unit_name or f"{plan.name}.service"
        if plan.settings["systemd"].wanted_by:
            assert f"# Install it as /etc/systemd/system/{unit_name}, then: systemctl daemon-reload && " \
                   f"systemctl enable --now {unit_name}\n" in unit


@pytest.mark.parametrize("content, ok", [("Y\n", True), ("1\n", True), ("N\n", False), (None, False)])
def test_host_parameter_check_reads_the_value(content, ok, tmp_path):
    """The unit's ExecStartPre=, split as systemd splits it and run by a real sh."""
    from cgsc.lower.plan import HostParam
    from cgsc.targets.systemd import host_param_check, sh_command
    param_file = tmp_path / "sev_snp"
    if content is not None:
        param_file.write_text(content)
    param = HostParam(str(param_file), ("Y", "1"), "this host's KVM has no SEV-SNP support")
    argv = systemd_split(sh_command(host_param_check(param)))
    result = subprocess.run(argv, capture_output=True, text=True)
    assert (result.returncode == 0) == ok
    if not ok:
        shown = "missing" if content is None else content.strip()
        assert result.stderr == f"this host's KVM has no SEV-SNP support ({param_file}: {shown})\n"


def test_host_parameters_are_checked_by_value_not_existence():
    for spec in VALID_SPECS:
        plan = compile_plan(spec)
        unit = render(spec, "systemd")
        for param in plan.confidential.host_params:
            assert param.path not in " ".join(unit_values(unit, "Unit", "AssertPathExists"))
            assert any(param.path in line for line in unit_values(unit, "Service", "ExecStartPre"))


def test_stop_timeout_is_the_specs_or_120s(tmp_path, systemd_root):
    default = render(_spec(tmp_path, ""), "systemd")
    assert unit_values(default, "Service", "TimeoutStopSec") == ["120s"]
    text = render(_spec(tmp_path, "[targets.systemd]\nstop-timeout = 600\n"), "systemd")
    assert unit_values(text, "Service", "TimeoutStopSec") == ["600s"]
    assert len(unit_values(text, "Service", "ExecStop")) == 1
    result = _verify(systemd_root, "guest-a.service", text)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    code, _out, err = run_cli("validate", _spec(tmp_path, "[targets.systemd]\nstop-timeout = 0\n"))
    assert code == 1 and "targets.systemd.stop-timeout" in err


@pytest.mark.parametrize("restart, warned", [("on-failure", True), ("no", True), ("on-abort", True),
                                             ("always", False), ("on-success", False), (None, False)])
def test_a_restart_policy_that_leaves_a_rebooted_snp_guest_off_is_warned(restart, warned, tmp_path):
    text = f'[targets.systemd]\nrestart = "{restart}"\n' if restart else ""
    code, _out, err = run_cli("validate", _spec(tmp_path, text))
    assert code == 0, err
    assert ("[CGS-SYSTEMD-001]" in err) == warned

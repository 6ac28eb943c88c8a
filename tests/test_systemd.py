"""systemd target: verified by systemd-analyze, scored by its security analysis, and an
ExecStart= that systemd splits back into exactly the plan's argv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from helpers import EXAMPLES, VALID_SPECS, compile_plan, exec_start, rel, render, systemd_split

from cgsc.escape import systemd_exec_word

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
    assert score <= 3.0


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

"""Shipped host profiles: named by --host, listed where a user looks, and every one either
pins the floating machine type or says that it floats (CGS-HOST-008)."""

from __future__ import annotations

import json
import os

import pytest
from helpers import EXAMPLES, ROOT, run_cli

SHIPPED = sorted(f[len("host-"):-len(".json")] for f in os.listdir(os.path.join(ROOT, "schema"))
                 if f.startswith("host-") and f.endswith(".json") and f != "host-profile.schema.json")
SEV = [s for s in EXAMPLES if s.endswith("examples/sev.toml")][0]


def test_an_unknown_profile_name_lists_the_shipped_ones():
    code, _out, err = run_cli("validate", "--host", "debian-99", SEV)
    assert code == 2, err
    assert "Errno" not in err and "No such file" not in err, err
    assert "debian-99" in err
    for name in SHIPPED:
        assert name in err, (name, err)


@pytest.mark.parametrize("command", ["build", "validate", "check"])
def test_help_lists_the_shipped_profiles(command):
    code, out, err = run_cli(command, "--help")
    assert code == 0
    flat = " ".join(out.split())
    for name in SHIPPED:
        assert name in flat, (command, name)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_pins_the_machine_or_warns(name, tmp_path):
    with open(os.path.join(ROOT, "schema", f"host-{name}.json"), encoding="utf-8") as fh:
        profile = json.load(fh)
    machines = (profile.get("qemu") or {}).get("x86_64", {}).get("machines") or {}
    code, _out, err = run_cli("build", "--host", name, SEV, "-o", str(tmp_path), "-t", "shell")
    assert code == 0, err
    script = next((tmp_path).rglob("*.sh")).read_text()
    if "q35" in machines:
        assert f"pc-q35" in script and "CGS-HOST-008" not in err, err
        assert machines["q35"] in script
    else:
        assert "CGS-HOST-008" in err and name in err, err

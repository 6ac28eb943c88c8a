"""Abstract bases (`abstract = true`: never a guest) and `{name}`, a base's per-guest
values: expanded per guest, validated after expansion, placed at the base's line."""

from __future__ import annotations

import json
import os

from helpers import FLEET_BASE, ROOT, run_cli
from writes_helpers import tree

FLEET = os.path.join(ROOT, "examples", "fleet")
BASE = FLEET_BASE + """[[disk]]
path = "/var/lib/guests/{name}/root.qcow2"
format = "qcow2"
[[net]]
mode = "tap"
tap = "tap-{name}"
[console]
serial = "file"
path = "/var/log/cgsc/{name}/console.log"
"""


def _fleet(tmp_path, names, base=BASE):
    (tmp_path / "base.toml").write_text(base)
    specs = []
    for name in names:
        (tmp_path / f"{name}.toml").write_text(f'extends = "base.toml"\n[guest]\nname = "{name}"\n')
        specs.append(str(tmp_path / f"{name}.toml"))
    return specs


def test_the_example_fleet_base_is_abstract_and_never_built(tmp_path, monkeypatch):
    monkeypatch.chdir(FLEET)
    code, _out, err = run_cli("build", *sorted(os.listdir(".")), "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["web-1", "web-2", "web-3"]
    assert "3 guests written" in err and "(1 abstract base checked, not built)" in err
    code, _out, err = run_cli("validate", *sorted(os.listdir(".")))
    assert code == 0 and "4 specs valid (1 abstract base)" in err
    code, _out, err = run_cli("explain", "base.toml")
    assert code == 2 and "abstract base" in err
    # check skips it too, and finds every guest up to date
    code, _out, err = run_cli("check", "base.toml", "web-1.toml", "-o", str(tmp_path / "out"))
    assert code == 0 and "1 guest(s) up to date" in err, err


def test_an_abstract_base_is_checked_as_a_base_whatever_the_command(tmp_path):
    specs = _fleet(tmp_path, ["web-1"], BASE + "[qemu]\nsandboxx = true\n")
    base = str(tmp_path / "base.toml")
    for command in (["build", "-o", str(tmp_path / "out")], ["validate"]):
        code, _out, err = run_cli(*command, base)
        assert code == 1 and "qemu.sandboxx: unknown key" in err and "[CGS-SCHEMA-001]" in err
    code, _out, err = run_cli("validate", specs[0])
    line = BASE.count("\n") + 2
    assert code == 1 and f"{base}:{line}: qemu.sandboxx" in err   # the child: the base's line


def test_name_is_each_guests_own_in_every_string_value(tmp_path):
    specs = _fleet(tmp_path, ["web-1", "web-2"])
    code, out, err = run_cli("build", "--stdout", "-t", "shell", *specs)
    assert code == 0, err
    one, two = out.split("==> web-2/")
    for name, text in (("web-1", one), ("web-2", two)):
        assert f"file=/var/lib/guests/{name}/root.qcow2," in text
        assert f"ifname=tap-{name}," in text and f"path=/var/log/cgsc/{name}/console.log" in text


def test_name_in_table_values_but_not_in_keys_nor_other_placeholders(tmp_path):
    base = (FLEET_BASE.replace("[guest]\n", '[guest]\ndescription = "{name} of {other}"\n')
            + '[[disk]]\npath = "/var/lib/guests/{name}/root.qcow2"\nformat = "qcow2"\n'
            'kubevirt = { pvc = "{name}-root" }\n[targets.kubevirt]\nlabels = { guest = "{name}" }\n')
    specs = _fleet(tmp_path, ["web-1"], base)
    code, out, err = run_cli("build", "--stdout", "-t", "kubevirt", *specs)
    assert code == 0, err
    assert "claimName: web-1-root" in out and "guest: web-1" in out
    code, out, err = run_cli("build", "--stdout", "-t", "libvirt", *specs)
    assert code == 0 and "<description>web-1 of {other}</description>" in out, err
    _fleet(tmp_path, ["web-1"], base.replace('{ guest = "{name}" }', '{ "{name}" = "x" }'))
    code, out, err = run_cli("build", "--stdout", "-t", "kubevirt", *specs)
    assert code == 1 and 'labels."{name}": unknown key' in err    # a key stays as written


def test_no_other_placeholder_and_no_placeholder_in_the_name(tmp_path):
    base = BASE.replace('tap = "tap-{name}"', 'tap = "t{other}"')
    specs = _fleet(tmp_path, ["web-1"], base)
    code, _out, err = run_cli("validate", *specs)
    assert code == 1 and "net[0].tap" in err and "[CGS-SCHEMA-" in err   # "{other}" is literal
    (tmp_path / "x.toml").write_text('extends = "base.toml"\n[guest]\nname = "{name}"\n')
    code, _out, err = run_cli("validate", str(tmp_path / "x.toml"))
    assert code == 1 and "guest.name" in err


def test_expanded_values_are_validated_and_shown_expanded_at_the_base_line(tmp_path):
    long_name = "web-with-a-long-name"
    specs = _fleet(tmp_path, ["web-1", long_name])
    code, _out, err = run_cli("validate", *specs)
    base = str(tmp_path / "base.toml")
    tap_line = BASE.splitlines().index('tap = "tap-{name}"') + 1
    assert code == 1 and f"{base}:{tap_line}: net[0].tap: " in err, err
    assert f"in 1 guest: {specs[1]}" in err          # web-1's tap (9 characters) is fine
    code, out, _err = run_cli("validate", *specs, "--format", "json")
    (d,) = json.loads(out)
    assert d["line"] == tap_line and d["file"] == base and d["specs"] == [specs[1]]
    # a base checked on its own: `{name}` as a sample guest name fills it
    code, _out, err = run_cli("validate", "--base", base)
    assert code == 0, err


def test_adding_a_guest_never_changes_another_guests_output(tmp_path):
    specs = _fleet(tmp_path, ["web-1", "web-2"])
    assert run_cli("build", *specs, "-o", str(tmp_path / "two"))[0] == 0
    more = _fleet(tmp_path, ["web-1", "web-2", "web-3"])
    assert run_cli("build", *more, "-o", str(tmp_path / "three"))[0] == 0
    three = tree(tmp_path / "three")
    assert tree(tmp_path / "two") == {k: v for k, v in three.items() if not k.startswith("web-3")}


def test_abstract_is_not_inherited(tmp_path):
    specs = _fleet(tmp_path, ["web-1"])
    code, out, err = run_cli("build", "--stdout", "-t", "shell", *specs)
    assert code == 0 and "guest=web-1" in out, err


def test_the_example_children_get_the_disk_their_specs_named_before(tmp_path):
    """The fleet example moved each child's disk into the base as `{name}`: the disk each
    guest gets is the one its own spec named before."""
    for name in ("web-1", "web-2", "web-3"):
        code, out, _err = run_cli("build", "--stdout", "-t", "shell", os.path.join(FLEET, f"{name}.toml"))
        assert code == 0 and f"file=/var/lib/guests/{name}/root.qcow2," in out

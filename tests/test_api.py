"""The public Python API (docs/api.md) and the target plugin entry point, with a worked
third-party target installed the way pip installs one (a distribution on sys.path whose
entry_points.txt registers it in the cgsc.targets group)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cgsc
from helpers import EXAMPLES, INVALID, ROOT, run_cli

SNP = os.path.join(ROOT, "examples", "sev-snp.toml")


def test_import_cgsc_loads_nothing_else():
    out = subprocess.run([sys.executable, "-c", "import sys, cgsc; print(sorted(m for m in "
                          "sys.modules if m.startswith('cgsc')))"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "['cgsc']"


def test_validate_returns_typed_diagnostics():
    ok = cgsc.validate(SNP)
    assert ok.ok and ok.name == "payments-db" and ok.mechanism == "sev-snp"
    assert ok.targets == ("shell", "systemd", "libvirt")
    bad = cgsc.validate(os.path.join(ROOT, "tests", "invalid", "CGS-SNP-001.toml"))
    assert not bad.ok
    (d,) = bad.errors
    assert isinstance(d, cgsc.Diagnostic)
    assert (d.rule, d.severity, d.path) == ("CGS-SNP-001", "error", ("confidential", "sev-snp", "policy"))
    assert d.file.endswith("CGS-SNP-001.toml") and d.line > 0
    # the same diagnostics the command line prints
    code, _out, err = run_cli("validate", bad.path)
    assert d.render() in err


def test_every_invalid_spec_is_refused_through_the_api_as_on_the_command_line():
    for spec in INVALID[:20]:
        result = cgsc.validate(spec)
        code = run_cli("validate", spec)[0]
        assert result.ok == (code == 0), spec


def test_build_in_memory_equals_the_command_line(tmp_path):
    built = cgsc.build(SNP)
    assert built.ok and set(built.files) == {"payments-db.sh", "payments-db.service",
                                             "payments-db.xml", "manifest.json"}
    code, _out, err = run_cli("build", SNP, "-o", str(tmp_path))
    assert code == 0, err
    for name, text in built.files.items():
        assert (tmp_path / "payments-db" / name).read_text() == text
    assert built.manifest == json.loads(built.files["manifest.json"])
    assert built.written is None


def test_build_writes_when_asked(tmp_path):
    built = cgsc.build(SNP, targets=["shell"], output=str(tmp_path / "out"))
    assert built.ok and built.written == str(tmp_path / "out" / "payments-db")
    assert sorted(os.listdir(built.written)) == ["manifest.json", "payments-db.sh"]
    bad = cgsc.build(os.path.join(ROOT, "tests", "invalid", "CGS-SNP-001.toml"),
                     output=str(tmp_path / "bad"))
    assert not bad.ok and not (tmp_path / "bad").exists()


def test_a_host_profile_by_name_and_an_unusable_one():
    result = cgsc.validate(SNP, host="debian-12")
    assert not result.ok and any(d.rule == "CGS-HOST-002" for d in result.errors)
    try:
        cgsc.validate(SNP, host="no-such-profile")
    except cgsc.EnvironmentProblem as exc:
        assert "debian-12" in str(exc)
    else:
        raise AssertionError("an unknown profile is an environment problem")


def test_load_merges_the_extends_chain():
    web = [s for s in EXAMPLES if s.endswith("web-1.toml")][0]
    loaded = cgsc.load(web)
    assert loaded.ok and len(loaded.files) == 2 and loaded.files[1].endswith("base.toml")
    assert "confidential" in loaded.data


PLUGIN = '''
"""A third-party cgsc target: an inventory line per guest (docs/api.md, worked example)."""
from cgsc.targets import Artifact


class InventoryTarget:
    name = "inventory"
    summary = "one line per guest for an asset inventory (<name>.inventory)"

    def unsupported(self, plan):
        return None

    def render(self, plan):
        line = (f"{plan.name} {plan.confidential.mechanism} vcpus={plan.vcpus} "
                f"memory={plan.memory_mib}MiB uuid={plan.uuid}\\n")
        return [Artifact(f"{plan.name}.inventory", line)]


TARGET = InventoryTarget()
'''


def _plugin_site(tmp_path):
    """What `pip install cgsc-inventory` leaves in site-packages: the module and a
    dist-info whose entry_points.txt registers it."""
    site = tmp_path / "site"
    (site / "cgsc_inventory").mkdir(parents=True)
    (site / "cgsc_inventory" / "__init__.py").write_text(PLUGIN)
    info = site / "cgsc_inventory-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cgsc-inventory\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cgsc.targets]\ninventory = cgsc_inventory:TARGET\n")
    return site


def test_a_third_party_target_is_found_through_the_entry_point(tmp_path):
    site = _plugin_site(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(site))

    def cgsc_cli(*argv):
        return subprocess.run([sys.executable, "-m", "cgsc", *argv], capture_output=True,
                              text=True, env=env, cwd=tmp_path)
    listed = json.loads(cgsc_cli("targets", "--format", "json").stdout)
    assert {"name": "inventory", "default": False,
            "summary": "one line per guest for an asset inventory (<name>.inventory)"} in listed
    result = cgsc_cli("build", SNP, "-t", "inventory", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out" / "payments-db" / "payments-db.inventory").read_text()
    assert text.startswith("payments-db sev-snp vcpus=4 memory=8192MiB uuid=")
    manifest = json.loads((tmp_path / "out" / "payments-db" / "manifest.json").read_text())
    assert [a["target"] for a in manifest["artifacts"]] == ["inventory"]
    # and through the Python API, in a process that has the plugin
    code = textwrap.dedent(f"""
        import cgsc
        built = cgsc.build({SNP!r}, targets=["inventory"])
        print(built.files["payments-db.inventory"], end="")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout == text, out.stderr

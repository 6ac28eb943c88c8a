"""`cgsc diff`: the security-relevant differences between two versions of a spec, in words."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from helpers import ROOT, run_cli

from cgsc.mechanisms import MECHANISMS

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
BASES = {
    "sev": '[firmware]\ncode = "/fw.fd"\n[confidential.sev]\ncbitpos = 47\nreduced-phys-bits = 1\n',
    "sev-snp": '[firmware]\ncode = "/fw.fd"\n[confidential.sev-snp]\ncbitpos = 51\nreduced-phys-bits = 1\n',
    "tdx": '[firmware]\ncode = "/fw.fd"\n[confidential.tdx]\n',
}
HEAD = '[guest]\nname = "g"\nmemory = 512\n'


def _flag_cases():
    for mech, base in BASES.items():
        for flag in MECHANISMS[mech].layout.flags:
            if mech == "tdx" and flag.name == "debug":
                continue  # refused (CGS-TDX-001): no diff of an invalid spec
            yield mech, base, flag


@pytest.mark.parametrize("mech, base, flag", list(_flag_cases()),
                         ids=lambda v: v if isinstance(v, str) and "\n" not in v else getattr(v, "name", None))
def test_every_flag_turned_on_or_off_is_said_in_words(mech, base, flag, tmp_path):
    word = MECHANISMS[mech].layout.word
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(HEAD + base)   # the flag keeps its default
    new.write_text(HEAD + base + f"{word} = {{ {flag.name} = {str(not flag.default).lower()} }}\n")
    code, out, err = run_cli("diff", str(old), str(new), "--format", "json")
    assert code == 0, err
    (report,) = json.loads(out)["guests"]
    changes = {(c["category"], c["item"]): c for c in report["changes"]}
    change = changes[("policy", flag.name)]
    turned = "on" if not flag.default else "off"
    assert change["old"] is flag.default and change["new"] is (not flag.default)
    assert change["message"] == f"{flag.name} turned {turned} (was {'on' if flag.default else 'off'})"
    # the word itself changed by exactly that bit
    word_change = changes[("policy", f"{word} word")]
    assert int(word_change["old"], 16) ^ int(word_change["new"], 16) == 1 << flag.bit


def test_diff_of_identical_specs_says_nothing_changed():
    spec = os.path.join(ROOT, "examples", "sev-snp.toml")
    code, out, _ = run_cli("diff", spec, spec)
    assert code == 0 and out.endswith("  no security-relevant change\n")


def test_host_interfaces_devices_waivers_sandbox_and_extra_args(tmp_path):
    base = HEAD + BASES["sev-snp"]
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(base + '[[disk]]\npath = "/var/lib/g/root.qcow2"\nformat = "qcow2"\n')
    new.write_text(base + '[[disk]]\npath = "/var/lib/g/root.qcow2"\nformat = "qcow2"\n'
                   '[[disk]]\npath = "/var/lib/g/data.raw"\nformat = "raw"\n'
                   '[qmp]\nsocket = "/run/cgsc/g/qmp.sock"\n[vsock]\ncid = 7\n'
                   '[qemu]\nsandbox = false\nextra-args = ["-device", "virtio-rng-pci"]\n'
                   '[waive]\n"CGS-QEMU-001" = "entropy device, reviewed"\n')
    code, out, err = run_cli("diff", str(old), str(new))
    assert code == 0, err
    for phrase in ("host: QMP socket added: /run/cgsc/g/qmp.sock", "host: vsock CID added: 7",
                   "host: device node /dev/vhost-vsock added", "devices: disk disk1 added: /var/lib/g/data.raw",
                   "sandbox: -sandbox changed: on", "extra-args: [0] added: -device",
                   "waivers: waiver CGS-QEMU-001 added: 'entropy device, reviewed'"):
        assert phrase in out, (phrase, out)
    # categories come most security-relevant first
    assert out.startswith("cgsc diff: 1 guest changed by its own spec\n")
    own = out.split("\nderived (")[0].splitlines()[2:]     # derived values come after
    categories = [line.split(":")[0].strip() for line in own]
    from cgsc.review.diff import CATEGORIES
    assert categories == sorted(categories, key=CATEGORIES.index)


def test_launch_measurement_is_reported_when_the_plan_has_one():
    """The measurement stage adds LaunchPlan.attestation; diff reads it when it is there
    and works when it is not."""
    from cgsc.pipeline.compile import compile_spec
    from cgsc.review.diff import compare, facts
    compiled = compile_spec(os.path.join(ROOT, "examples", "sev-snp.toml"))
    assert ("measurement", "launch digest") not in facts(compiled)

    def with_digest(digest):
        plan_type = type(compiled.plan)
        measured = type("Measured", (plan_type,), {"attestation": property(lambda self: {"launch-digest": digest})})
        return compiled.__class__(**{**compiled.__dict__, "plan": measured(*compiled.plan)})
    a, b = "ab" * 48, "cd" * 48
    (change,) = compare(facts(with_digest(a)), facts(with_digest(b)))
    assert change.category == "measurement" and change.message == f"launch digest changed: {a} -> {b}"


def test_formats_parse_and_exit_codes(tmp_path):
    base = HEAD + BASES["sev"]
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(base)
    new.write_text(base + 'policy = { debug = true }\n')
    code, out, _ = run_cli("diff", str(old), str(new), "--format", "markdown")
    assert code == 0 and "| policy | debug turned on (was off) |" in out
    code, out, _ = run_cli("diff", str(old), str(new), "--format", "github")
    lines = out.splitlines()
    assert code == 0 and lines and all(re.match(f"::notice file={re.escape(str(new))},line=\\d+,title=cgsc diff%3A ", l)
                                       for l in lines)
    assert any(l.endswith("::g: debug turned on (was off)") for l in lines)
    assert run_cli("diff", str(old))[0] == 2                       # one spec, no --base
    bad = tmp_path / "bad.toml"
    bad.write_text(HEAD)
    code, _out, err = run_cli("diff", str(old), str(bad))
    assert code == 1 and "CGS-SCHEMA-002" in err


def test_an_invalid_spec_is_reported_in_every_diff_format(tmp_path):
    """`--format markdown` used to crash (no Markdown renderer for diagnostics)."""
    import re
    good = tmp_path / "old.toml"
    good.write_text(HEAD + BASES["sev"])
    bad = tmp_path / "b*d|[x]_`y`.toml"   # Markdown syntax in an untrusted file name
    bad.write_text(HEAD)
    _code, _out, text = run_cli("diff", str(good), str(bad))
    expected = [l for l in text.splitlines() if "[CGS-" in l]
    assert expected
    for fmt in ("text", "json", "github", "markdown"):
        for args in ([str(tmp_path / "nonexistent.toml"), str(good)], [str(good), str(bad)]):
            code, out, err = run_cli("diff", *args, "--format", fmt)
            assert code == 1 and "Traceback" not in err and "internal error" not in err, err
            assert "CGS-" in out + err
    code, out, _err = run_cli("diff", str(good), str(bad), "--format", "markdown")
    items = out.splitlines()
    # CommonMark: a backslash before ASCII punctuation is that character, literally; nothing
    # else (no emphasis, code span, link or table cell) may come from the file name
    unescaped = [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", l).rstrip() for l in items if l.startswith("- ")]
    assert re.sub(r"\\([!-/:-@\[-`{-~])", "", out).count("`") == 0
    assert [u.replace("- **error** ", "", 1) for u in unescaped] == expected


def test_diff_against_a_git_revision_follows_extends(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(os.path.join(ROOT, "examples", "fleet"), repo / "fleet")
    subprocess.run(GIT + ["init", "-q", str(repo)], check=True)
    subprocess.run(GIT + ["-C", str(repo), "add", "-A"], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-q", "-m", "fleet"], check=True)
    base = repo / "fleet" / "base.toml"
    base.write_text(base.read_text().replace("smt = true", "smt = false"))
    (repo / "fleet" / "web-4.toml").write_text((repo / "fleet" / "web-1.toml").read_text()
                                              .replace("web-1", "web-4"))
    monkeypatch.chdir(repo)
    code, out, err = run_cli("diff", "--base", "HEAD", "fleet/web-1.toml", "fleet/web-4.toml",
                             "--format", "json")
    assert code == 0, err
    web1, web4 = json.loads(out)["guests"]
    assert web1["old"] == "HEAD:fleet/web-1.toml" and not web1["new-spec"]
    assert [c["message"] for c in web1["changes"] if c["item"] == "smt"] == ["smt turned off (was on)"]
    assert web4["new-spec"] and any(c["item"] == "mechanism" and c["old"] is None for c in web4["changes"])
    assert run_cli("diff", "--base", "no-such-rev", "fleet/web-1.toml")[0] == 2
    outside = tmp_path / "lone.toml"
    shutil.copy(os.path.join(ROOT, "examples", "sev.toml"), outside)
    code, _out, err = run_cli("diff", "--base", "HEAD", str(outside))
    assert code == 2 and "not in a git repository" in err


def test_diff_against_a_revision_reads_relative_measurement_files(firmware, tmp_path, monkeypatch):
    """The old spec is compiled from a temporary copy; its relative [measurement] paths are
    still relative to the spec's own directory: a file the revision tracks is read as of
    the revision, an untracked one (a build input) from the working tree."""
    from helpers import compile_plan
    from measure_helpers import FIRMWARE, spec_text
    repo = tmp_path / "repo"
    (repo / "guests" / "build").mkdir(parents=True)
    subprocess.run(GIT + ["init", "-q", str(repo)], check=True)
    fw = repo / "guests" / "build" / "fw.bin"
    shutil.copy(firmware[FIRMWARE["OvmfX64"]], fw)
    spec = repo / "guests" / "h1.toml"
    spec.write_text(spec_text("h1", "sev-snp", "build/fw.bin", cpu="EPYC-v4"))
    subprocess.run(GIT + ["-C", str(repo), "add", "guests/h1.toml"], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-qm", "spec only"], check=True)

    def digest(text, image):   # the oracle: the spec compiled beside a copy of its file
        where = tmp_path / f"oracle-{len(os.listdir(tmp_path))}"
        (where / "build").mkdir(parents=True)
        shutil.copy(image, where / "build" / "fw.bin")
        (where / "g.toml").write_text(text)
        return compile_plan(str(where / "g.toml")).attestation["launch-digest"]

    def measurement_change():
        code, out, err = run_cli("diff", "--base", "HEAD", "guests/h1.toml", "--format", "json")
        assert code == 0, err
        found = [c for c in json.loads(out)["guests"][0]["changes"] if c["category"] == "measurement"]
        return (found[0]["old"], found[0]["new"]) if found else None

    monkeypatch.chdir(repo)   # not the spec's directory
    old_text = spec.read_text()
    assert measurement_change() is None           # untracked file, unchanged spec
    spec.write_text(old_text.replace("vcpus = 1", "vcpus = 2"))
    assert measurement_change() == (digest(old_text, fw), digest(spec.read_text(), fw))
    # the firmware committed, then replaced in the working tree: the old side is the committed one
    spec.write_text(old_text)
    subprocess.run(GIT + ["-C", str(repo), "add", "-f", "guests/build/fw.bin"], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-qm", "firmware"], check=True)
    committed = tmp_path / "committed.bin"
    shutil.copy(fw, committed)
    shutil.copy(firmware[FIRMWARE["AmdSev"]], fw)
    assert measurement_change() == (digest(old_text, committed), digest(old_text, fw))
    assert digest(old_text, committed) != digest(old_text, fw)

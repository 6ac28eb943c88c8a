"""`cgsc diff --base REV` over a fleet: deleted guests are findings, a base change is said
once at the base's line with the guests it reaches, new guests show what matters, and
the pull-request comment fits GitHub's 65,536 characters."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers import FLEET_BASE, run_cli

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
BASE = FLEET_BASE + """policy = { smt = true, debug = false }
[[disk]]
path = "/var/lib/guests/{name}/root.qcow2"
format = "qcow2"
[[net]]
mode = "bridge"
bridge = "br-web"
"""
DEBUG_LINE = BASE.splitlines().index("policy = { smt = true, debug = false }") + 1


def _git(repo, *args):
    subprocess.run(GIT + ["-C", str(repo), *args], check=True, capture_output=True)


def _fleet(tmp_path, count):
    repo = tmp_path / "repo"
    (repo / "guests" / "bases").mkdir(parents=True)
    (repo / "guests" / "bases" / "web.toml").write_text(BASE)
    for i in range(1, count + 1):
        (repo / "guests" / f"web-{i}.toml").write_text(
            f'extends = "bases/web.toml"\n[guest]\nname = "web-{i}"\n')
    subprocess.run(GIT + ["init", "-q", str(repo)], check=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "fleet")
    return repo


def _specs(repo):
    return sorted(f"guests/{n}" for n in os.listdir(repo / "guests") if n.endswith(".toml"))


def _diff(repo, monkeypatch, fmt="text", *specs):
    monkeypatch.chdir(repo)
    code, out, err = run_cli("diff", "--base", "HEAD", *(specs or _specs(repo)), "--format", fmt)
    assert code == 0, err
    return out


def test_a_base_change_a_deletion_and_an_addition_in_one_summary(tmp_path, monkeypatch):
    repo = _fleet(tmp_path, 4)
    base = repo / "guests" / "bases" / "web.toml"
    base.write_text(base.read_text().replace("debug = false", "debug = true"))
    _git(repo, "rm", "-q", "guests/web-4.toml")
    (repo / "guests" / "web-5.toml").write_text('extends = "bases/web.toml"\n[guest]\nname = "web-5"\n')
    out = _diff(repo, monkeypatch)
    lines = out.splitlines()
    assert lines[0] == ("cgsc diff against HEAD: 3 guests changed by "
                        f"guests/bases/web.toml:{DEBUG_LINE}; 1 removed; 1 added")
    # the deleted guest: its name and what stopped being deployed
    assert lines[1] == "removed: web-4 (HEAD:guests/web-4.toml)"
    assert "  artifacts: no longer built: web-4.sh, web-4.service, web-4.xml and manifest.json" in lines
    assert "  devices: disk disk0: /var/lib/guests/web-4/root.qcow2 (qcow2, virtio, read-write)" in lines
    # the base change once, at its line, with the guests it reaches
    assert out.count("debug turned on (was off)") == 1
    assert f"guests/bases/web.toml:{DEBUG_LINE} (3 guests: web-1, web-2, web-3)" in lines
    assert "web-1: " not in out                # no table of its own per child
    doc = json.loads(_diff(repo, monkeypatch, "json"))
    assert [(r["guest"], r["spec"]) for r in doc["removed"]] == [("web-4", "HEAD:guests/web-4.toml")]
    (debug,) = [p for p in doc["places"] if p["item"] == "debug"]
    assert (debug["file"], debug["line"], debug["guests"], debug["same"]) == \
        ("guests/bases/web.toml", DEBUG_LINE, ["web-1", "web-2", "web-3"], True)
    github = _diff(repo, monkeypatch, "github").splitlines()
    assert [l for l in github if l.startswith("::warning ")] == [
        "::warning file=guests/web-4.toml,title=cgsc diff%3A guest removed::web-4 removed: "
        "AMD SEV-SNP (sev-snp); no longer built: web-4.sh, web-4.service, web-4.xml and "
        "manifest.json; network net0: bridge br-web; disk disk0: /var/lib/guests/web-4/root.qcow2 "
        "(qcow2, virtio, read-write)"]
    assert sum(1 for l in github if "debug turned on" in l) == 1
    assert any(l.startswith(f"::notice file=guests/bases/web.toml,line={DEBUG_LINE},") and
               "debug turned on" in l for l in github)
    markdown = _diff(repo, monkeypatch, "markdown")
    assert "#### Removed guests: no longer deployed" in markdown and "**web-4**" in markdown


def test_a_new_guest_shows_what_matters_not_every_default(tmp_path, monkeypatch):
    repo = _fleet(tmp_path, 1)
    (repo / "guests" / "db.toml").write_text(
        'extends = "bases/web.toml"\n[guest]\nname = "db"\n'
        '[[net]]\nmode = "user"\nforward = [{ host-port = 5432, guest-port = 5432, host-address = "0.0.0.0" }]\n'
        '[vsock]\ncid = 9\n')
    doc = json.loads(_diff(repo, monkeypatch, "json"))
    (added,) = doc["added"]
    shown = {(s["category"], s["item"]): s["value"] for s in added["shown"]}
    assert shown[("mechanism", "mechanism")] == "AMD SEV-SNP (sev-snp)"
    assert shown[("policy", "policy word")] == "0x30000; on: smt"
    assert shown[("firmware", "code")] == "/usr/share/ovmf/OVMF.amdsev.fd"
    assert shown[("network", "forward tcp 0.0.0.0:5432")] == "to guest port 5432 (every host address)"
    assert shown[("network", "vsock CID")] == "9"
    # every flag that is off, the machine, the QMP socket and the like are not listed
    assert not [k for k in shown if k[0] in ("machine",) or k[1] in ("debug", "migrate-ma")]
    assert len(shown) < 12
    full = [c for g in doc["guests"] if g["guest"] == "db" for c in g["changes"]]
    assert len(full) > 2 * len(shown)        # JSON keeps every fact of the new guest


def test_a_renamed_guest_is_one_removed_and_one_added(tmp_path, monkeypatch):
    repo = _fleet(tmp_path, 2)
    spec = repo / "guests" / "web-2.toml"
    spec.write_text(spec.read_text().replace('"web-2"', '"web-two"'))
    doc = json.loads(_diff(repo, monkeypatch, "json"))
    assert [r["guest"] for r in doc["removed"]] == ["web-2"]
    assert [a["guest"] for a in doc["added"]] == ["web-two"]
    # a spec moved to another file keeps its guest: no removal, no addition
    _git(repo, "checkout", "-q", "--", "guests/web-2.toml")
    _git(repo, "mv", "guests/web-2.toml", "guests/web-2-moved.toml")
    doc = json.loads(_diff(repo, monkeypatch, "json"))
    assert doc["removed"] == [] and doc["added"] == [] and doc["summary"] == "no security-relevant change"


def test_name_values_are_shown_expanded_once_at_the_base_line(tmp_path, monkeypatch):
    repo = _fleet(tmp_path, 3)
    base = repo / "guests" / "bases" / "web.toml"
    base.write_text(base.read_text().replace("/var/lib/guests/{name}/", "/srv/guests/{name}/"))
    doc = json.loads(_diff(repo, monkeypatch, "json"))
    (disk,) = [p for p in doc["places"] if p["item"] == "disk disk0"]
    assert disk["file"] == "guests/bases/web.toml" and not disk["same"]
    assert [c["new"].split(" ")[0] for c in disk["changes"]] == [
        f"/srv/guests/web-{i}/root.qcow2" for i in (1, 2, 3)]
    text = _diff(repo, monkeypatch)
    assert text.count("disk disk0 changed") == 1 and "(for web-1; each guest its own value)" in text


def test_500_guests_changed_by_a_base_fit_a_github_comment(tmp_path, monkeypatch):
    repo = _fleet(tmp_path, 500)
    base = repo / "guests" / "bases" / "web.toml"
    base.write_text(base.read_text().replace("debug = false", "debug = true")
                    + '[vsock]\ncid = 3\n')   # and one value every guest derives a device from
    markdown = _diff(repo, monkeypatch, "markdown")
    assert len(markdown) < 65536 and "truncated" not in markdown
    assert f"**500 guests changed by guests/bases/web.toml:{DEBUG_LINE},{BASE.count(chr(10)) + 2}**" in markdown
    assert markdown.count("debug turned on (was off)") == 1
    assert "500 guests: web-1, web-10, web-100," in markdown and "and 490 more" in markdown
    # every child with a change of its own as well: the comment is cut, and says so
    for i in range(1, 501):
        with open(repo / "guests" / f"web-{i}.toml", "a") as fh:
            fh.write(f'description = "web node {i} of the fleet, with its own long description"\n'
                     '[qemu]\nextra-args = ["-device", "virtio-rng-pci,iommu_platform=on"]\n'
                     '[waive]\n"CGS-QEMU-001" = "the entropy device, reviewed by the platform team"\n')
    markdown = _diff(repo, monkeypatch, "markdown")
    assert len(markdown) <= 65536
    assert markdown.rstrip().endswith("in the job's log._") and "_… truncated: " in markdown
    assert markdown.startswith("### cgsc diff against HEAD\n\n**500 guests changed by ")
    text = _diff(repo, monkeypatch)            # text and JSON are never cut
    assert text.count("extra-args: [0] added: -device") == 500


@pytest.mark.parametrize("then, first_line", [
    # examples/fleet/base.toml used to build a `web-base` guest: made abstract, that
    # guest stops being deployed, and the diff says so
    (BASE.replace("abstract = true\n[guest]\n", '[guest]\nname = "web-base"\n'),
     "cgsc diff against HEAD: 1 removed; 1 unchanged"),
    # a partial base (no name: never a whole guest) made abstract, named with the guests
    # (a glob over guests/**): no error for what it was, no removal
    (BASE.replace("abstract = true\n", ""), "cgsc diff against HEAD: no security-relevant change"),
])
def test_a_base_made_abstract(then, first_line, tmp_path, monkeypatch):
    repo = _fleet(tmp_path, 1)
    base = repo / "guests" / "bases" / "web.toml"
    base.write_text(then)
    _git(repo, "commit", "-qam", "the base as it was")
    base.write_text(BASE)
    out = _diff(repo, monkeypatch, "text", "guests/web-1.toml", "guests/bases/web.toml")
    assert out.splitlines()[0] == first_line
    assert ("removed: web-base (HEAD:guests/bases/web.toml)" in out) is ("web-base" in then)


def test_an_invalid_base_is_one_finding_for_all_its_guests(tmp_path, monkeypatch):
    """The diff of a fleet whose base is now wrong says the base's error once, at its line,
    naming the guests (as validate does), not once per guest; in every format."""
    repo = _fleet(tmp_path, 3)
    base = repo / "guests" / "bases" / "web.toml"
    base.write_text(base.read_text().replace('bridge = "br-web"', 'bridge = "br web"'))
    monkeypatch.chdir(repo)
    code, out, err = run_cli("diff", "--base", "HEAD", *_specs(repo))
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if "[CGS-SCHEMA-004]" in line]
    assert len(lines) == 1 and lines[0].startswith("guests/bases/web.toml:"), err
    assert "  in 3 guests: guests/web-1.toml, guests/web-2.toml, guests/web-3.toml" in err
    code, out, _err = run_cli("diff", "--base", "HEAD", *_specs(repo), "--format", "github")
    assert code == 1 and out.count("::error ") == 1 and "(in 3 guests: " in out, out


def test_a_spec_spelled_through_a_symlink_and_dotdot_is_diffed_in_its_own_repository(
        tmp_path, monkeypatch):
    """`outside/link/../guests/web-1.toml` names the spec where `link` leads, inside the
    repository; the path's lexical directory (`outside/`) is in none, and the revision
    is looked up in the repository that holds the spec, as the kernel resolves it."""
    repo = _fleet(tmp_path, 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "link").symlink_to(repo / "guests" / "bases")
    spec = repo / "guests" / "web-1.toml"
    spec.write_text(spec.read_text().replace('name = "web-1"', 'name = "web-1"\nvcpus = 4'))
    monkeypatch.chdir(tmp_path)
    spelled = os.path.join("outside", "link", "..", "..", "guests", "web-1.toml")
    assert os.path.samefile(spelled, spec)
    code, out, err = run_cli("diff", "--base", "HEAD", spelled)
    assert code == 0 and "web-1" in out, err

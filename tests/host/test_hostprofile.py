"""Host profiles: `cgsc probe`, `--host`, machine pinning, minimum versions in the manifest.

Expected versions are derived here from QEMU's QAPI schema (tests/data/qemu-qapi), the
installed QEMU and libvirt, and libvirt's documentation, never copied from what cgsc printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import IN_CI, QEMU_ARCH, missing, qemu72_binary
from derive_qemu_since import derive
from helpers import EXAMPLES, ROOT, compile_plan, rel, run_cli
from qemu_schema import CONFIDENTIAL_TYPES, introspect

from cgsc.host import profile as hostprofile

HOSTS = os.path.join(ROOT, "tests", "data", "hosts")
CAPS = os.path.join(HOSTS, "snp-host.domcapabilities.xml")
CONFIDENTIAL = ("sev", "sev-es", "sev-snp", "tdx", "pef", "s390-pv")


def vt(text):
    return tuple(int(x) for x in text.split("."))


QAPI = os.path.join(ROOT, "tests", "data", "qemu-qapi")
# libvirt's docs/formatdomain.rst, "Launch Security": the release that added each type
LIBVIRT_SINCE = {"sev": "4.4.0", "sev-snp": "10.5.0", "tdx": "11.6.0", "s390-pv": "7.6.0"}


@pytest.fixture(scope="session")
def since():
    return derive(QAPI)["objects"]


@pytest.fixture(scope="session")
def libvirt_since():
    return LIBVIRT_SINCE


# -- the QEMU version table: derived from QAPI, cannot drift --------------------------------

def test_the_committed_qemu_since_table_is_what_the_qapi_schema_says():
    """The confidential types as qapi/qom.json of a development tree dates them (the whole
    table, monitor-qmp and the deprecations too, is re-derived from QEMU 11.1.3 itself by
    tests/targets/test_qemu_11.py)."""
    derived = derive(QAPI)["objects"]
    with open(os.path.join(ROOT, "schema", "qemu-since.json"), encoding="utf-8") as fh:
        committed = json.load(fh)["objects"]
    assert {t: committed[t] for t in derived} == derived, "see tests/derive_qemu_since.py"


def _installed_qemus():
    """(arch, QMP introspection) of every QEMU release on this machine: QEMU 7.2 (the
    oldest supported) and the system's own."""
    found = {}
    for arch in ("x86_64", "ppc64", "s390x"):
        for binary in (shutil.which(f"qemu-system-{arch}"), qemu72_binary(f"qemu-system-{arch}")):
            if binary:
                schema = introspect(binary)
                found[(arch, schema.version)] = schema
    if not found:
        missing("no qemu-system-* is installed (Debian: apt-get install qemu-system-x86)")
    return found.items()


def test_the_since_table_agrees_with_every_installed_qemu(since):
    """What the table dates at or before a QEMU release is in that release (its own QMP
    introspection says so), and nothing later: QEMU 7.2 and the system's QEMU (10.0 on
    Debian 12 with backports, 11.1 on Debian 13 with backports)."""
    checked = set()
    for (arch, version), schema in _installed_qemus():
        for qom in (t for t in CONFIDENTIAL_TYPES if QEMU_ARCH[t] == arch):
            entry = since[qom]
            assert schema.has(qom) == (vt(entry["since"]) <= version), (qom, schema.binary)
            members = (schema.object_members(qom) or {}) if schema.has(qom) else {}
            for prop, v in entry["properties"].items():
                assert (prop in members) == (vt(v) <= version), (qom, prop, schema.binary)
            checked.add(version)
    assert checked


def test_libvirt_since_agrees_with_the_installed_libvirt_schema(relaxng):
    """The installed libvirt's schema knows a launch-security type iff that libvirt is at
    least the release formatdomain.rst names."""
    virsh = shutil.which("virsh")
    if virsh is None:
        missing("virsh is not installed (Debian: apt-get install libvirt-clients)")
    have = subprocess.run([virsh, "--version"], capture_output=True, text=True).stdout.strip()
    for sectype, first in LIBVIRT_SINCE.items():
        assert (sectype not in relaxng.unknown) == (vt(have) >= vt(first)), (sectype, have)


# -- cgsc probe on this machine -------------------------------------------------------------

def _probe_as_nobody() -> dict:
    import tempfile
    directory = tempfile.mkdtemp(prefix="cgsc-probe-")  # pytest's tmp is private to root
    out = os.path.join(directory, "host.json")
    argv = [sys.executable, "-m", "cgsc", "probe", "-o", out]
    if os.geteuid() == 0:  # prove it works unprivileged
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] + argv
    env = dict(os.environ)
    if os.geteuid() == 0:
        # nobody may not read root's site-packages (pyenv under /root): give it a copy of
        # the package in its installed layout, readable, writable by root only
        lib = os.path.join(directory, "lib")
        for pkg, src in (("cgsc", "compiler"), ("cgsc/schema", "schema"),
                         ("cgsc/targets", "targets")):
            shutil.copytree(os.path.join(ROOT, src), os.path.join(lib, pkg),
                            ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        for d, _dirs, files in os.walk(directory):
            os.chmod(d, 0o755)
            for name in files:
                os.chmod(os.path.join(d, name), 0o644)
        os.chmod(directory, 0o777)  # for the profile it writes
        env["PYTHONPATH"] = lib
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env,
                            cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    with open(out, encoding="utf-8") as fh:
        profile = json.load(fh)
    shutil.rmtree(directory)
    return profile


@pytest.fixture(scope="module")
def here():
    return _probe_as_nobody()


def test_probe_here_gives_a_valid_profile_with_no_confidential_mechanism(here):
    assert hostprofile.problems(here) == []
    assert here["origin"] == "probe"
    assert not any(here["kvm"][m] for m in CONFIDENTIAL), here["kvm"]
    if os.geteuid() == 0:  # as nobody, the CPUID device cannot be read: said, not guessed
        assert here["sev"] is None
        assert any("/dev/cpu/0/cpuid" in n for n in here["unreadable"]), here["unreadable"]


def _qmp_cpu_models(qemu: str) -> set:
    """The CPU models QEMU itself lists over QMP (query-cpu-definitions)."""
    out = subprocess.run([qemu, "-machine", "none", "-nodefaults", "-display", "none",
                          "-qmp", "stdio"], capture_output=True, text=True, timeout=60,
                         input='{"execute":"qmp_capabilities"}\n'
                               '{"execute":"query-cpu-definitions"}\n{"execute":"quit"}\n').stdout
    replies = [json.loads(l) for l in out.splitlines() if l.startswith('{"return"')]
    return {c["name"] for c in replies[1]["return"]}


def test_probe_records_the_installed_qemu(here, tool):
    """Whatever QEMU the machine has (Debian 12's own 7.2 has no EPYC-v4; backports' 10.0
    and Debian 13's do): the profile says what that QEMU says of itself."""
    qemu = tool("qemu-system-x86_64")
    version = subprocess.run([qemu, "-version"], capture_output=True, text=True).stdout
    entry = here["qemu"]["x86_64"]
    assert version.startswith(f"QEMU emulator version {entry['version']} ")
    assert "sev-guest" in entry["objects"]
    assert set(entry["cpu-models"]) == _qmp_cpu_models(qemu)
    alias = re.search(r"^q35 .*\(alias of (\S+)\)", subprocess.run(
        [qemu, "-machine", "help"], capture_output=True, text=True).stdout, re.M).group(1)
    assert entry["machines"]["q35"] == alias


CONFIDENTIAL_EXAMPLES = [s for s in EXAMPLES]


@pytest.mark.parametrize("spec", CONFIDENTIAL_EXAMPLES, ids=rel)
def test_host_here_refuses_every_confidential_example_with_the_mechanism_rule(spec, here, tmp_path):
    path = tmp_path / "host.json"
    path.write_text(json.dumps(here))
    mech = compile_plan(spec).confidential.mechanism
    code, _out, err = run_cli("validate", "--host", str(path), spec)
    assert code == 1
    assert re.search(rf": confidential\.{re.escape(mech)}: host .* does not offer .* \[CGS-HOST-001\]$",
                     err, re.M), err
    # the hint says what to do (it once read "profiles that offer it: see `cgsc probe`")
    assert re.search(rf"^  hint: build against a host whose KVM and firmware offer {re.escape(mech)} "
                     r".*`cgsc probe -o host\.json` there", err, re.M), err


# -- a SEV-SNP host from its recorded domcapabilities ----------------------------------------

def test_the_recorded_domcapabilities_is_valid_for_libvirt(tool):
    result = subprocess.run([tool("virt-xml-validate"), CAPS, "domaincaps"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def snp_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("snp") / "snp.json"
    code, _o, err = run_cli("probe", "--from-domcapabilities", CAPS,
                            "--qemu-version", os.path.join(HOSTS, "qemu-10.0.version.txt"),
                            "--qemu-objects", os.path.join(HOSTS, "qemu-10.0.object-help.txt"),
                            "--libvirt-version", "11.3.0", "--name", "snp-host", "-o", str(out))
    assert code == 0, err
    return str(out)


def test_the_domcapabilities_profile_reads_what_the_xml_says(snp_profile):
    from lxml import etree
    caps = etree.parse(CAPS)
    p = json.loads(open(snp_profile).read())
    assert hostprofile.problems(p) == []
    assert p["sev"] == {"cbitpos": int(caps.findtext("features/sev/cbitpos")),
                        "reduced-phys-bits": int(caps.findtext("features/sev/reducedPhysBits"))}
    assert p["kvm"]["sev-snp"] is True and p["kvm"]["tdx"] is False
    assert p["qemu"]["x86_64"]["machines"] == {"q35": caps.findtext("machine")}
    assert [f["path"] for f in p["firmware"]] == caps.xpath("os/loader/value/text()")
    assert p["libvirt"]["cpu-models"] == sorted(set(caps.xpath("cpu/mode[@name='custom']/model/text()")))


SNP_EXAMPLES = [s for s in EXAMPLES if compile_plan(s).confidential.mechanism == "sev-snp"]


def test_the_snp_host_accepts_every_snp_example(snp_profile):
    assert len(SNP_EXAMPLES) >= 2
    code, _out, err = run_cli("validate", "--host", snp_profile, *SNP_EXAMPLES)
    assert code == 0, err
    assert "CGS-HOST" not in err


def _variant(example: str, line_text: str, new: str, where) -> tuple:
    """A copy of examples/<example> at `where` with its line `line_text` replaced by `new`;
    (the copy, that line's number)."""
    with open(os.path.join(ROOT, "examples", example), encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    line = lines.index(line_text) + 1
    lines[line - 1] = new
    where.write_text("\n".join(lines))
    return where, line


def test_the_snp_host_refuses_a_different_cbitpos(snp_profile, tmp_path):
    changed, line = _variant("sev-snp.toml", "cbitpos = 51", "cbitpos = 47",
                             tmp_path / "snp-47.toml")
    code, _out, err = run_cli("validate", "--host", snp_profile, str(changed))
    assert code == 1
    assert f"{changed}:{line}: confidential.sev-snp.cbitpos: cbitpos is 47, host snp-host has 51 " \
           "[CGS-HOST-004]" in err


def test_the_snp_host_refuses_a_cpu_model_its_libvirt_does_not_list(snp_profile, tmp_path):
    """domcapabilities lists the models that libvirt offers with that QEMU: another model is
    refused for the domain (CGS-HOST-009), not for a build without the libvirt target."""
    from lxml import etree
    listed = etree.parse(CAPS).xpath("cpu/mode[@name='custom']/model/text()")
    assert "EPYC-v4" in listed and "EPYC-Turin" not in listed
    changed, line = _variant("sev-snp.toml", 'cpu = "EPYC-v4"', 'cpu = "EPYC-Turin"',
                             tmp_path / "turin.toml")
    code, _out, err = run_cli("validate", "--host", snp_profile, str(changed))
    assert code == 1
    assert f"{changed}:{line}: guest.cpu: host snp-host's libvirt does not offer CPU model " \
           "'EPYC-Turin' (its domcapabilities do not list it) [CGS-HOST-009]" in err, err
    shell_only = tmp_path / "turin-shell.toml"
    shell_only.write_text(changed.read_text() + '\n[targets]\nbuild = ["shell", "systemd"]\n')
    code, _out, err = run_cli("validate", "--host", snp_profile, str(shell_only))
    assert code == 0 and "CGS-HOST-009" not in err, err
    # the same with the targets named on the command line (-t), and its negative control
    for chosen, refused in ((["shell", "systemd"], False), (["shell", "libvirt"], True)):
        flags = [w for t in chosen for w in ("-t", t)]
        code, _out, err = run_cli("build", *flags, "--host", snp_profile, str(changed),
                                  "-o", str(tmp_path / "out"))
        assert (code == 1 and "[CGS-HOST-009]" in err) == refused, (chosen, err)


def test_a_libvirt_release_before_the_model_is_refused_and_after_it_accepted(tmp_path):
    """The CPU-map table: Debian 12's libvirt 9.0 lacks EPYC-Genoa (CGS-HOST-009); the same
    spec on a profile with libvirt 11.3 (which has it) passes; a profile whose libvirt lies
    between the table's two releases passes with a warning that cgsc cannot tell
    (CGS-HOST-010)."""
    spec = os.path.join(ROOT, "tests", "invalid", "CGS-HOST-009.toml")
    profile = hostprofile.load("debian-12")
    for lv, ok, warned in (("9.0.0", False, False), ("11.3.0", True, False),
                           ("10.0.0", True, True)):
        profile["libvirt"]["version"] = lv
        path = tmp_path / f"host-{lv}.json"
        path.write_text(json.dumps(profile))
        code, _out, err = run_cli("validate", "--host", str(path), spec)
        assert (code == 0) == ok, (lv, err)
        assert ("[CGS-HOST-009]" in err) != ok, (lv, err)
        assert ("cannot tell whether libvirt 10.0.0 (host Debian 12 (bookworm)) has CPU model "
                "'EPYC-Genoa': libvirt 9.0.0 lacks it, 11.3.0 has it [CGS-HOST-010]" in err) \
            == warned, (lv, err)


def test_cpu_max_is_libvirt_s_maximum_mode_which_needs_libvirt_7_1(tmp_path):
    """cpu = "max" is no model of libvirt's CPU map: the domain says <cpu mode='maximum'>
    (QEMU's -cpu max), which libvirt has since 7.1.0 (CGS-HOST-003 before)."""
    changed, line = _variant("sev.toml", 'cpu = "EPYC"', 'cpu = "max"', tmp_path / "max.toml")
    profile = hostprofile.load("debian-12")
    for lv, ok in (("7.0.0", False), ("7.1.0", True)):
        profile["libvirt"]["version"] = lv
        path = tmp_path / f"host-{lv}.json"
        path.write_text(json.dumps(profile))
        code, _out, err = run_cli("build", "-t", "libvirt", "--host", str(path), str(changed),
                                  "-o", str(tmp_path / lv))
        assert (code == 0) == ok, (lv, err)
        assert (f"{changed}:{line}: guest.cpu: <cpu mode='maximum'> (cpu = \"max\") needs "
                f"libvirt 7.1.0, host Debian 12 (bookworm) has 7.0.0 [CGS-HOST-003]" in err) != ok, err
    from lxml import etree
    name = compile_plan(str(changed)).name
    cpu = etree.parse(str(tmp_path / "7.1.0" / name / f"{name}.xml")).find("cpu")
    assert dict(cpu.attrib) == {"mode": "maximum"} and [c.tag for c in cpu] == ["topology"]


def test_the_snp_host_refuses_firmware_of_the_wrong_kind(tmp_path):
    profile = json.loads(open(os.path.join(HOSTS, "amd-lab.json")).read())
    spec = [s for s in SNP_EXAMPLES if s.endswith("examples/sev-snp.toml")][0]
    text = open(spec).read()
    changed = tmp_path / "generic-ovmf.toml"
    changed.write_text(text.replace("/usr/share/ovmf/OVMF.amdsev.fd", "/usr/share/OVMF/OVMF_CODE_4M.fd"))
    path = tmp_path / "host.json"
    path.write_text(json.dumps(profile))
    code, _out, err = run_cli("validate", "--host", str(path), str(changed))
    assert code == 1
    assert "OVMF_CODE_4M.fd on host amd-lab does not support sev-snp, kernel-hashes [CGS-HOST-006]" in err


def test_a_host_without_firmware_is_told_so(tmp_path):
    """A profile that lists no firmware image says so (the hint once read "it has: none")."""
    profile = json.loads(open(os.path.join(HOSTS, "amd-lab.json")).read())
    profile["firmware"] = []
    path = tmp_path / "host.json"
    path.write_text(json.dumps(profile))
    spec = [s for s in SNP_EXAMPLES if s.endswith("examples/sev-snp.toml")][0]
    code, _out, err = run_cli("validate", "--host", str(path), spec)
    assert code == 1 and "has no /usr/share/ovmf/OVMF.amdsev.fd [CGS-HOST-006]" in err
    assert "  hint: its profile lists no firmware image: install one" in err, err


@pytest.mark.parametrize("example, legacy, warned", [
    ("sev-es.toml", None, True), ("sev-es.toml", "on", True), ("sev-es.toml", "auto", True),
    ("sev-es.toml", "off", False), ("sev-snp.toml", None, False)])
def test_debug_swap_on_the_host_is_a_warning(example, legacy, warned, snp_profile, tmp_path):
    """Only KVM's legacy SEV-ES launch (KVM_SEV_ES_INIT) lets debug_swap add DebugSwap to
    the VMSA (Linux 6.6-6.9); KVM_SEV_INIT2 (legacy-vm-type = off, every SNP guest) takes
    the features from QEMU, which requests none (docs/attestation.md)."""
    profile = json.loads(open(snp_profile).read())
    profile["kvm"]["debug-swap"] = True
    path = tmp_path / "host.json"
    path.write_text(json.dumps(profile))
    spec = tmp_path / example
    text = open(os.path.join(ROOT, "examples", example)).read()
    if legacy:
        text = text.replace("kernel-hashes = true\n", f'kernel-hashes = true\nlegacy-vm-type = "{legacy}"\n')
    spec.write_text(text)
    code, _out, err = run_cli("validate", "--host", str(path), str(spec))
    assert code == 0, err
    warning = ("confidential.sev-es: warning: host snp-host enables kvm_amd debug_swap: on Linux "
               "6.6-6.9, KVM's legacy SEV-ES launch gives the guest's VMSA DebugSwap, and its "
               "launch measurement includes it [CGS-HOST-007]")
    assert (warning in err) == warned, err
    assert ("CGS-HOST-007" in err) == warned


# -- machine pinning ------------------------------------------------------------------------

def test_a_profile_pins_the_floating_machine_in_every_artifact(snp_profile, tmp_path):
    from lxml import etree
    spec = [s for s in SNP_EXAMPLES if s.endswith("examples/sev-snp.toml")][0]
    pinned = etree.parse(CAPS).findtext("machine")
    assert compile_plan(spec).machine == "q35"
    code, _out, err = run_cli("build", "--host", snp_profile, spec, "-o", str(tmp_path))
    assert code == 0, err
    name = compile_plan(spec).name
    script = (tmp_path / name / f"{name}.sh").read_text()
    assert f"-machine {pinned},confidential-guest-support=cgs0" in script
    xml = etree.parse(str(tmp_path / name / f"{name}.xml"))
    assert xml.find("os/type").get("machine") == pinned
    assert "CGS-HOST-008" not in err


def test_the_pinned_machine_is_one_real_qemu_10_knows(tool):
    qemu = tool("qemu-system-x86_64")
    from lxml import etree
    pinned = etree.parse(CAPS).findtext("machine")
    out = subprocess.run([qemu, "-machine", "help"], capture_output=True, text=True).stdout
    if not out.count("pc-q35-10.0"):
        missing("qemu-system-x86_64 is not QEMU 10.0")
    assert re.search(rf"^{re.escape(pinned)}\s", out, re.M)


def test_without_a_profile_the_floating_machine_is_said_once(tmp_path):
    code, _out, err = run_cli("validate", *EXAMPLES)
    assert code == 0
    assert err.count("[CGS-HOST-008]") == 1
    code, _out, err = run_cli("validate", "--host", "debian-12-backports",
                              *[s for s in EXAMPLES if compile_plan(s).arch == "ppc64"])
    assert "[CGS-HOST-008]" not in err


# -- minimum versions in the manifest -------------------------------------------------------

def test_the_manifest_records_minimum_versions_per_artifact(tmp_path, since, libvirt_since):
    spec = [s for s in SNP_EXAMPLES if s.endswith("examples/sev-snp.toml")][0]
    code, _out, err = run_cli("build", spec, "-o", str(tmp_path))
    assert code == 0, err
    plan = compile_plan(spec)
    manifest = json.loads((tmp_path / plan.name / "manifest.json").read_text())
    obj = plan.confidential.object
    qemu = max([vt(since[obj.qom_type]["since"])] +
               [vt(since[obj.qom_type]["properties"][k]) for k, _v in obj.props])
    for a in manifest["artifacts"]:
        assert vt(a["requires"]["qemu"]) == qemu
        if a["file"].endswith(".xml"):
            assert a["requires"]["libvirt"] == libvirt_since["sev-snp"]
        else:
            assert "libvirt" not in a["requires"]


# -- shipped profiles: which examples each distribution can run ----------------------------

def _cpu_known_to_libvirt(model, arch, have) -> bool:
    """False only when the CPU-map table (tests/targets/test_libvirt_cpu_since.py proves it against
    libvirt's files) puts the model after libvirt `have`; unknown counts as known."""
    with open(os.path.join(ROOT, "schema", "libvirt-cpu-since.json"), encoding="utf-8") as fh:
        table = json.load(fh)
    lv_arch = {"x86_64": "x86", "ppc64": "ppc64"}.get(arch)
    if lv_arch is None or model in ("host", "max"):
        return True
    entry = table["arches"][lv_arch].get(model)
    if entry is None:
        return vt(have) > vt(table["releases"][-1])
    return not (vt(have) < vt(entry["since"]) and entry["absent-in"]
                and vt(have) <= vt(entry["absent-in"]))


def _expected_ok(spec, profile, since, libvirt_since) -> bool:
    """Computed here from the profile's versions and the reference material."""
    from cgsc import targets
    from cgsc.pipeline.compile import compile_spec
    compiled = compile_spec(spec)
    plan = compiled.plan
    q = (profile.get("qemu") or {}).get(plan.arch)
    if q is None:
        return False
    obj = plan.confidential.object
    need = max([vt(since[obj.qom_type]["since"])] +
               [vt(since[obj.qom_type]["properties"][k]) for k, _v in obj.props])
    if vt(q["version"]) < need:
        return False
    named = compiled.build_targets
    libvirt_built = ("libvirt" in named) if named else \
        targets.get("libvirt").unsupported(plan) is None
    if not libvirt_built:
        return True
    have = profile["libvirt"]["version"]
    sectype = {"sev": "sev", "sev-es": "sev", "sev-snp": "sev-snp", "tdx": "tdx",
               "s390-pv": "s390-pv"}.get(plan.confidential.mechanism)
    lv = libvirt_since.get(sectype) or {"sev": "4.4.0", "s390-pv": "7.6.0"}.get(sectype)
    if lv and vt(have) < vt(lv):
        return False
    return _cpu_known_to_libvirt(plan.cpu, plan.arch, have)


SHIPPED = sorted(hostprofile.shipped())


def test_the_shipped_profiles_are_the_documented_hosts():
    assert SHIPPED == ["debian-12", "debian-12-backports", "debian-13", "debian-13-backports",
                       "fedora-42", "rhel-10", "ubuntu-24.04", "ubuntu-25.04"]
    for name in SHIPPED:
        p = hostprofile.load(name)
        assert p["origin"] == "shipped" and p["sources"]["qemu"] and p["sources"]["libvirt"]
        assert set(p) <= {"profile-version", "name", "origin", "sources", "qemu", "libvirt"}, \
            "versions only: no hardware facts"


@pytest.mark.parametrize("name", SHIPPED)
def test_which_examples_each_shipped_profile_can_run(name, since, libvirt_since):
    profile = hostprofile.load(name)
    table = {}
    for spec in EXAMPLES:
        code, _out, err = run_cli("validate", "--host", name, spec)
        assert code in (0, 1) and "Traceback" not in err
        if code == 1:
            assert re.search(r"\[CGS-HOST-00[239]\]", err), err
        table[rel(spec)] = code == 0
        assert table[rel(spec)] == _expected_ok(spec, profile, since, libvirt_since), (name, spec, err)
    print(name, table)


def test_the_matrix_separates_the_profiles():
    ok = {n: {rel(s) for s in EXAMPLES if run_cli("validate", "--host", n, s)[0] == 0}
          for n in SHIPPED}
    assert "examples/sev-snp.toml" not in ok["debian-12"]
    assert "examples/sev-snp.toml" in ok["debian-12-backports"]
    assert "examples/tdx.toml" not in ok["debian-12-backports"]   # QEMU 10.1, libvirt 11.6
    assert "examples/tdx.toml" not in ok["debian-13"]             # QEMU 10.0, libvirt 11.3
    assert "examples/tdx.toml" in ok["debian-13-backports"]       # QEMU 11.1, libvirt 12.9
    assert "examples/pef.toml" not in ok["rhel-10"]


def test_a_broken_profile_is_a_usage_error(tmp_path):
    path = tmp_path / "host.json"
    path.write_text('{"profile-version": 1, "name": "x", "kvm": {"sev": "yes"}}')
    code, _out, err = run_cli("validate", "--host", str(path), EXAMPLES[0])
    assert code == 2 and "kvm/sev" in err and "Traceback" not in err
    code, _out, err = run_cli("validate", "--host", str(tmp_path / "absent.json"), EXAMPLES[0])
    assert code == 2


def test_probe_writes_its_profile_where_a_symlink_and_dotdot_lead(tmp_path, monkeypatch):
    """`-o outside/link/../inner/h.json` is written where the kernel resolves it (beside
    where `link` leads); its temporary file is made there too, not in the path's lexical
    directory (`outside/inner`, which does not exist)."""
    (tmp_path / "profiles" / "deep").mkdir(parents=True)
    (tmp_path / "profiles" / "inner").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "link").symlink_to(tmp_path / "profiles" / "deep")
    monkeypatch.chdir(tmp_path)
    code, _o, err = run_cli("probe", "--from-domcapabilities", CAPS,
                            "--qemu-version", os.path.join(HOSTS, "qemu-10.0.version.txt"),
                            "--qemu-objects", os.path.join(HOSTS, "qemu-10.0.object-help.txt"),
                            "--libvirt-version", "11.3.0", "--name", "h",
                            "-o", os.path.join("outside", "link", "..", "inner", "h.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "profiles" / "inner" / "h.json").read_text())["name"] == "h"
    assert os.listdir(tmp_path / "profiles" / "inner") == ["h.json"]

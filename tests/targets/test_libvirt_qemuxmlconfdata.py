"""libvirt's own expected QEMU command lines for SEV, SEV-SNP and TDX (issue 22): the
`.xml` / `.x86_64-latest+VARIANT.args` pairs of libvirt's tests/qemuxmlconfdata, copied into
tests/data/libvirt-qemuxmlconfdata (its README: the commits, why these pairs, the licence).
libvirt's QEMU driver here refuses every <launchSecurity> this host cannot run, so this is
the independent word on what libvirt gives QEMU for one.

For each pair the test writes the cgsc spec that says what the XML's <launchSecurity> says
(NUMBERS, BLOBS, POLICY, FLAGS and SESSION map every child and attribute; one cgsc
cannot say would be in UNSAID, with why),
builds it for --host debian-13-backports, and checks:
- the confidential object: the launch script's -object has libvirt's qom-type and every
  property libvirt writes, with the same value, and no other (but KNOWN_DIFFERENCES);
- the wiring: in both, -machine confidential-guest-support names that object; libvirt's
  memory-backend is QEMU's default backend (KNOWN_DIFFERENCES);
- cgsc's libvirt domain: its <launchSecurity> is the XML's (but KNOWN_DIFFERENCES).
Values are compared as QEMU reads them: libvirt writes -object as JSON, cgsc mostly as
key=value, where QEMU takes on/off for a bool and 0x for a hexadecimal integer
(QEMU's keyval parser, qobject-input-visitor.c with qemu_strtou64 base 0). The stack tests
(trixie root) let the real programs normalise instead: QEMU 11.1 creates libvirt's SEV and
SEV-SNP objects and cgsc's and reads every property of both back (its tdx-guest cannot be
created without KVM TDX: AMD_FORMS says why and what stands in), and libvirt 12.9 parses both
domain XMLs with validation and formats their <launchSecurity>.
"""

from __future__ import annotations

import lzma
import os
import re
import shlex
import xml.etree.ElementTree as ET

import pytest
from helpers import DATA
from qmp import ask
from test_libvirt_qemu_driver import _kv

from cgsc import targets
from cgsc.host.profile import load as load_profile
from cgsc.pipeline.compile import compile_spec

PAIRS = os.path.join(DATA, "libvirt-qemuxmlconfdata")
HOST = "debian-13-backports"   # QEMU 11.1, libvirt 12.9: the stack the pairs stand in for

# pair -> (the .args variant, the cgsc spec's [guest]/[firmware]/[kernel] around the
# [confidential.X] table the test writes from the XML)
SEV_GUEST = """
[guest]
name = "libvirt-sev"
cpu = "EPYC"
memory = 256
[firmware]
code = "/usr/share/OVMF/OVMF_CODE.fd"
"""
CASES = {
    "launch-security-sev-snp": ("+amdsev", "sev-snp", """
[guest]
name = "libvirt-snp"
cpu = "EPYC-v4"
memory = 256
[firmware]
code = "/usr/share/ovmf/OVMF.amdsev.fd"
"""),
    "launch-security-tdx": ("+inteltdx", "tdx", """
[guest]
name = "libvirt-tdx"
memory = 4096
vcpus = 4
[firmware]
code = "/usr/share/ovmf/OVMF.inteltdx.fd"
"""),
    "launch-security-sev": ("+amdsev", "sev", SEV_GUEST),
    # the XML's <kernel>, <initrd>, <cmdline> (its <shim> is no <launchSecurity> matter)
    "launch-security-sev-direct": ("+amdsev", "sev", SEV_GUEST + """[kernel]
image = "/vmlinuz"
initrd = "/initrd"
cmdline = "runme"
"""),
}

# <launchSecurity> child -> the cgsc key that says the same (text as the value: an integer
# for the numbers, a string for the base64 blobs)
NUMBERS = {"cbitpos": "cbitpos", "reducedPhysBits": "reduced-phys-bits"}
BLOBS = {"guestVisibleWorkarounds": "guest-visible-workarounds", "idBlock": "id-block",
         "idAuth": "id-auth", "hostData": "host-data", "mrConfigId": "mrconfigid",
         "mrOwner": "mrowner", "mrOwnerConfig": "mrownerconfig"}
# the policy word: SEV and SNP call it policy, TDX (libvirt's <policy>) attributes
POLICY = {"sev": "policy", "sev-snp": "policy", "tdx": "attributes"}
# attribute -> (cgsc key, the attribute value that means true)
FLAGS = {"kernelHashes": ("kernel-hashes", "yes"), "authorKey": ("author-key", "yes"),
         "vcek": ("vcek-disabled", "no")}
# inline launch-session blobs: cgsc takes files (see KNOWN_DIFFERENCES "dh-cert-file")
SESSION = {"dhCert": "dh-cert-file", "session": "session-file"}
UNSAID: dict = {}   # child or attribute -> why cgsc cannot say it (none today)

# What differs on purpose: (where, what) -> (cgsc's value, libvirt's value, why).
KNOWN_DIFFERENCES = {
    ("object", "dh-cert-file"): (
        "<spec dir>/dh-cert.b64", "/var/lib/libvirt/qemu/domain--1-QEMUGuest1/dh_cert.base64",
        "the file QEMU reads the guest owner's DH certificate from: libvirt writes the XML's "
        "inline <dhCert> into its domain directory, a cgsc spec names the owner's file "
        "(the test writes the XML's text into it: the bytes QEMU reads are the same)"),
    ("object", "session-file"): (
        "<spec dir>/session.b64", "/var/lib/libvirt/qemu/domain--1-QEMUGuest1/session.base64",
        "as dh-cert-file, for <session>"),
    ("machine", "memory-backend"): (
        None, "pc.ram",
        "libvirt always names the RAM backend it creates (memory-backend-ram id=pc.ram, "
        "the size of -m); without memory-backend= QEMU creates that same backend itself "
        "(hw/core/machine.c create_default_memdev: type memory-backend-ram, id the machine's "
        "default_ram_id, pc.ram on x86; shown on QEMU 11.1 by "
        "test_qemu_11_1_creates_libvirts_backend_by_default)"),
    ("domain", "dhCert"): (
        None, "(the XML's text)",
        "cgsc refuses the libvirt target for a spec whose launch session is files "
        "(CGS-LIBVIRT-001: libvirt wants the blobs inline); the rest of <launchSecurity> is "
        "compared on the domain of the same spec without dh-cert-file/session-file"),
    ("domain", "session"): (None, "(the XML's text)", "as dhCert"),
}
# A flag attribute libvirt leaves out is QEMU's default: libvirt then writes no property
# (qemu_command.c qemuBuildSEV*CommandLine: "T:" tristate members), and QEMU's defaults are
# author-key-enabled, vcek-disabled and kernel-hashes false (qom.json; read back from QEMU
# 11.1 by test_qemu_11_1_reads_the_defaults_libvirt_leaves_out). cgsc's SNP domain always
# writes authorKey and vcek.
FLAG_DEFAULTS = {"authorKey": "no", "vcek": "yes", "kernelHashes": "no"}


def read(name: str) -> str:
    with lzma.open(os.path.join(PAIRS, name + ".xz"), "rt", encoding="utf-8") as fh:
        return fh.read()


def libvirt_xml(pair: str) -> str:
    return read(pair + ".xml")


def libvirt_argv(pair: str) -> list:
    """The .args file as the shell reads it: a backslash-newline is a line continuation
    (POSIX XCU 2.2.1), then shell words; the environment assignments before the binary go."""
    words = shlex.split(read(f"{pair}.x86_64-latest{CASES[pair][0]}.args").replace("\\\n", ""))
    start = next(i for i, w in enumerate(words) if "qemu-system-" in w)
    return words[start:]


# -- the spec the XML's <launchSecurity> says ---------------------------------------------

def spec_table(security: ET.Element, session_dir: str) -> tuple:
    """(mechanism, [confidential.X] key = value lines, files to write) from <launchSecurity>;
    fails on any child or attribute the maps above do not know."""
    mech = security.get("type")
    lines, files = [], {}
    for attr, value in security.attrib.items():
        if attr == "type":
            continue
        assert attr in FLAGS or attr in UNSAID, f"<launchSecurity {attr}=...> is not mapped"
        if attr in FLAGS:
            key, true = FLAGS[attr]
            lines.append(f"{key} = {'true' if value == true else 'false'}")
    for child in security:
        tag, text = child.tag, (child.text or "").strip()
        if tag in NUMBERS:
            lines.append(f"{NUMBERS[tag]} = {int(text)}")
        elif tag == "policy":
            lines.append(f"{POLICY[mech]} = {int(text, 16):#x}")
        elif tag in BLOBS:
            lines.append(f'{BLOBS[tag]} = "{text}"')
        elif tag in SESSION:
            path = os.path.join(session_dir, SESSION[tag].replace("-file", ".b64"))
            files[path] = text
            lines.append(f'{SESSION[tag]} = "{path}"')
        elif tag == "quoteGenerationService":
            lines.append('quote-generation-socket = { type = "unix", path = "%s" }'
                         % child.get("path"))
        else:
            assert tag in UNSAID, f"<launchSecurity><{tag}> is not mapped"
    return mech, lines, files


def write_spec(pair: str, tmp_path, without=(), form="word") -> str:
    """The spec file; form "flags": TDX's attributes word as its named flags."""
    security = ET.fromstring(libvirt_xml(pair)).find("launchSecurity")
    mech, lines, files = spec_table(security, str(tmp_path))
    if form == "flags":
        assert "attributes = 0x10000000" in lines
        lines[lines.index("attributes = 0x10000000")] = "attributes = { sept-ve-disable = true }"
    for path, text in files.items():
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    lines = [line for line in lines if line.split(" = ")[0] not in without]
    assert mech == CASES[pair][1]
    path = tmp_path / f"{pair}.toml"
    path.write_text("spec-version = 1\n" + CASES[pair][2]
                    + f"[confidential.{mech}]\n" + "\n".join(lines) + "\n")
    return str(path)


def build(spec: str):
    return compile_spec(spec, host=load_profile(HOST)).plan


# -- the confidential object and its wiring, from an argv -----------------------------------

def wiring(argv) -> tuple:
    """(-machine properties, -object id -> properties) of an argv."""
    machine, objects = {}, {}
    for flag, value in zip(argv, argv[1:]):
        if flag == "-machine":
            machine.update(_kv(value))
        elif flag == "-object":
            props = _kv(value)
            props.setdefault("qom-type", props.pop("_head", None))
            objects[props["id"]] = props
    return machine, objects


def confidential(argv) -> tuple:
    machine, objects = wiring(argv)
    obj = dict(objects[machine["confidential-guest-support"]])
    obj.pop("id")
    return machine, obj, objects


def qemu_value(value):
    """A property value as QEMU's keyval parser reads a key=value string: on/off (and
    yes/no, true/false) for a bool, a base-0 integer (0x hexadecimal); JSON values as is."""
    if not isinstance(value, str):
        return value
    if value in ("on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    if re.fullmatch(r"0x[0-9a-fA-F]+|[0-9]+", value):
        return int(value, 0)
    return value


# the spellings of one TD attributes word: a spec's attributes = { sept-ve-disable = true }
# (the README's form) is QEMU's sept-ve-disable=true, which sets bit 28 of the attributes
# QEMU starts from (tdx_guest_init: SEPT_VE_DISABLE); libvirt's <policy> is attributes=.
FORMS = [(pair, "word") for pair in sorted(CASES)] + [("launch-security-tdx", "flags")]


def same_attributes(props: dict) -> dict:
    """tdx-guest's sept-ve-disable=B as the attributes word it leaves (QEMU's tdx.c, see
    AMD_FORMS: QEMU 11.1 cannot create a tdx-guest here to read it back)."""
    props = dict(props)
    if "sept-ve-disable" in props and "attributes" not in props:
        props["attributes"] = 0x10000000 if qemu_value(props.pop("sept-ve-disable")) else 0
    return props


def object_differences(ours: dict, theirs: dict) -> dict:
    ours, theirs = same_attributes(ours), same_attributes(theirs)
    return {key: (qemu_value(ours.get(key)), qemu_value(theirs.get(key)))
            for key in sorted(set(ours) | set(theirs))
            if qemu_value(ours.get(key)) != qemu_value(theirs.get(key))}


@pytest.mark.parametrize("pair,form", FORMS, ids=[f"{p}:{f}" for p, f in FORMS])
def test_the_script_gives_qemu_libvirts_confidential_object(pair, form, tmp_path):
    plan = build(write_spec(pair, tmp_path, form=form))
    ours_machine, ours, _ = confidential(plan.argv())
    theirs_machine, theirs, objects = confidential(libvirt_argv(pair))
    if form == "flags":
        assert "sept-ve-disable" in ours and "attributes" not in ours
    assert ours["qom-type"] == theirs["qom-type"]
    diffs = object_differences(ours, theirs)
    for key, (a, b) in diffs.items():
        assert ("object", key) in KNOWN_DIFFERENCES, (pair, key, a, b)
    if diffs:   # the session files: another path, the same bytes
        assert set(diffs) == {"dh-cert-file", "session-file"}, diffs
        security = ET.fromstring(libvirt_xml(pair)).find("launchSecurity")
        for key, tag in (("dh-cert-file", "dhCert"), ("session-file", "session")):
            with open(ours[key], encoding="utf-8") as fh:
                assert fh.read() == security.find(tag).text.strip()
            assert theirs[key] == KNOWN_DIFFERENCES[("object", key)][1]
    # the wiring: each -machine names its object (confidential() follows it); libvirt's RAM
    # backend is the one QEMU creates without memory-backend=
    assert (ours_machine.get("memory-backend"), theirs_machine.get("memory-backend")) == \
        KNOWN_DIFFERENCES[("machine", "memory-backend")][:2]
    backend = objects[theirs_machine["memory-backend"]]
    assert backend["qom-type"] == "memory-backend-ram"


def test_the_object_comparison_can_fail(tmp_path):
    """Negative control: a property the script left out, or wrote with another value, is a
    difference that KNOWN_DIFFERENCES does not excuse."""
    plan = build(write_spec("launch-security-sev-snp", tmp_path))
    ours = confidential(plan.argv())[1]
    theirs = confidential(libvirt_argv("launch-security-sev-snp"))[1]
    assert object_differences(ours, theirs) == {}
    assert set(object_differences({k: v for k, v in ours.items() if k != "id-block"}, theirs)) \
        == {"id-block"}
    assert object_differences(dict(ours, policy="0x30001"), theirs) == \
        {"policy": (0x30001, 0x30000)}
    assert object_differences(dict(ours, **{"author-key-enabled": "off"}), theirs) == \
        {"author-key-enabled": (False, True)}
    assert not {("object", k) for k in ("id-block", "policy", "author-key-enabled")} \
        & set(KNOWN_DIFFERENCES)


# -- cgsc's domain XML -------------------------------------------------------------------------

def security_facts(element: ET.Element) -> dict:
    """<launchSecurity> as libvirt reads it: flags with their defaults filled in, numbers as
    numbers (libvirt reads <policy> as hexadecimal, virDomainSEVDefParseXML / virStrToLong_ui
    base 16), the rest as text."""
    facts = {("@" + k): v for k, v in element.attrib.items()}
    for attr, default in FLAG_DEFAULTS.items():
        if element.get("type") in ("sev", "sev-snp"):
            facts.setdefault("@" + attr, default)
    for child in element:
        text = (child.text or "").strip()
        if child.tag == "policy":
            facts[child.tag] = int(text, 16)
        elif child.tag in NUMBERS:
            facts[child.tag] = int(text)
        elif child.tag == "quoteGenerationService":
            facts[child.tag] = dict(child.attrib)
        else:
            facts[child.tag] = text
    if element.get("type") == "sev":   # SEV has no vcek/authorKey (libvirt's schema)
        facts.pop("@vcek", None)
        facts.pop("@authorKey", None)
    return facts


def cgsc_domain(pair: str, tmp_path) -> str:
    """cgsc's domain XML for the pair's spec; for a launch session (which the libvirt target
    refuses), for the same spec without it."""
    spec = write_spec(pair, tmp_path)
    plan = build(spec)
    refusal = targets.get("libvirt").unsupported(plan)
    if refusal is not None:
        assert refusal.rule == "CGS-LIBVIRT-001", refusal
        plan = build(write_spec(pair, tmp_path, without=("dh-cert-file", "session-file")))
    (artifact,) = targets.get("libvirt").render(plan)
    return artifact.content


@pytest.mark.parametrize("pair", sorted(CASES))
def test_cgscs_domain_has_libvirts_launch_security(pair, tmp_path):
    ours = security_facts(ET.fromstring(cgsc_domain(pair, tmp_path)).find("launchSecurity"))
    theirs = security_facts(ET.fromstring(libvirt_xml(pair)).find("launchSecurity"))
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            assert ("domain", key) in KNOWN_DIFFERENCES, (pair, key, ours.get(key),
                                                          theirs.get(key))
            assert ours.get(key) is None and key in SESSION


def test_every_known_difference_is_met(tmp_path):
    """An entry no pair needs any more fails here."""
    met = set()
    for pair in CASES:
        (tmp_path / pair).mkdir()
        plan = build(write_spec(pair, tmp_path / pair))
        _m, ours, _ = confidential(plan.argv())
        machine, theirs, _ = confidential(libvirt_argv(pair))
        met |= {("object", k) for k in object_differences(ours, theirs)}
        if "memory-backend" in machine:
            met.add(("machine", "memory-backend"))
        if targets.get("libvirt").unsupported(plan) is not None:
            met |= {("domain", "dhCert"), ("domain", "session")}
    assert met == set(KNOWN_DIFFERENCES)


# -- the real programs normalise (trixie root: QEMU 11.1, libvirt 12.9) ------------------------

def _qmp(trixie, argv, commands) -> list:
    """QEMU 11.1 of the root, stopped before any guest runs, answering QMP commands."""
    answer = ask(trixie.argv(["qemu-system-x86_64", "-S", "-display", "none", "-nodefaults",
                              "-accel", "tcg", "-qmp", "stdio"] + argv), commands)
    assert answer.stderr == "", answer.stderr
    assert len(answer.replies) == len(commands), answer.said
    return answer.replies


def _object_arg(argv, object_id: str) -> str:
    return next(v for f, v in zip(argv, argv[1:]) if f == "-object" and _kv(v)["id"] == object_id)


# QEMU 11.1.3 cannot create a tdx-guest here: without KVM TDX it aborts under TCG
# (include/system/kvm.h KVM_STATE assertion) and crashes (SIGSEGV) under KVM at startup, so
# TDX's spellings rest on QEMU's source (target/i386/kvm/tdx.c tdx_guest_init: attributes
# starts as SEPT_VE_DISABLE and is a uint64 property; sept-ve-disable sets or clears bit 28).
AMD_FORMS = [(p, f) for p, f in FORMS if CASES[p][1] != "tdx"]


@pytest.mark.stack
@pytest.mark.parametrize("pair,form", AMD_FORMS, ids=[f"{p}:{f}" for p, f in AMD_FORMS])
def test_qemu_11_1_reads_the_same_object_from_both(pair, form, trixie, tmp_path):
    """QEMU 11.1 creates libvirt's object and the script's and reads every property of both
    back: values (bool and number spellings) and the defaults of what one of them leaves out
    are QEMU's. A property QEMU cannot read back is compared as written (above)."""
    ours_argv = build(write_spec(pair, tmp_path, form=form)).argv()
    theirs_argv = libvirt_argv(pair)
    ours_id = wiring(ours_argv)[0]["confidential-guest-support"]
    theirs_id = wiring(theirs_argv)[0]["confidential-guest-support"]
    objects = ["-machine", "none", "-object", _object_arg(theirs_argv, theirs_id),
               "-object", _object_arg(ours_argv, ours_id)]
    listed = _qmp(trixie, objects, [
        {"execute": "qom-list", "arguments": {"path": f"/objects/{i}"}}
        for i in (theirs_id, ours_id)])
    names = [{p["name"]: p["type"] for p in a["return"]} for a in listed]
    assert names[0] == names[1]
    props = sorted(n for n, t in names[0].items()
                   if n != "type" and not t.startswith(("child<", "link<")))
    got = _qmp(trixie, objects, [{"execute": "qom-get", "arguments": {"path": f"/objects/{i}",
                                                                       "property": p}}
                                 for i in (theirs_id, ours_id) for p in props])
    read = [a.get("return", ("unreadable", a.get("error", {}).get("desc"))) for a in got]
    theirs, ours = dict(zip(props, read)), dict(zip(props, read[len(props):]))
    differ = {p for p in props if ours[p] != theirs[p]}
    assert differ <= {k for w, k in KNOWN_DIFFERENCES if w == "object"}, \
        {p: (ours[p], theirs[p]) for p in differ}
    assert ours["policy"] == theirs["policy"] and ours["cbitpos"] == 47
    if CASES[pair][1] == "sev-snp":
        assert ours["author-key-enabled"] is theirs["author-key-enabled"] is True


@pytest.mark.stack
def test_qemu_11_1_reads_the_defaults_libvirt_leaves_out(trixie):
    """FLAG_DEFAULTS: a <launchSecurity> without authorKey/vcek/kernelHashes makes libvirt
    write no property, and QEMU 11.1's own defaults are false."""
    objects = ["-machine", "none",
               "-object", "sev-snp-guest,id=s,cbitpos=51,reduced-phys-bits=1",
               "-object", "sev-guest,id=e,cbitpos=51,reduced-phys-bits=1"]
    got = _qmp(trixie, objects, [
        {"execute": "qom-get", "arguments": {"path": f"/objects/{i}", "property": p}}
        for i, p in (("s", "author-key-enabled"), ("s", "vcek-disabled"), ("s", "kernel-hashes"),
                     ("e", "kernel-hashes"))])
    assert [a["return"] for a in got] == [False, False, False, False]


@pytest.mark.stack
def test_qemu_11_1_creates_libvirts_backend_by_default(trixie, tmp_path):
    """KNOWN_DIFFERENCES memory-backend: the script's -machine without memory-backend= gets
    the backend libvirt names: memory-backend-ram pc.ram of the guest's memory size."""
    plan = build(write_spec("launch-security-sev-snp", tmp_path))
    machine = _kv(dict(zip(plan.argv(), plan.argv()[1:]))["-machine"])["_head"]
    listed, size = _qmp(trixie, ["-machine", machine, "-m", f"{plan.memory_mib}M"], [
        {"execute": "qom-list", "arguments": {"path": "/objects"}},
        {"execute": "qom-get", "arguments": {"path": "/objects/pc.ram", "property": "size"}}])
    assert {"name": "pc.ram", "type": "child<memory-backend-ram>"} in listed["return"]
    assert size["return"] == plan.memory_mib << 20


def _libvirt_12_9_launch_security(trixie, xml: str, tmp_path) -> ET.Element:
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    name = ET.fromstring(xml).findtext("name")
    result = trixie.run(["virsh", "-c", "test:///default",
                         f"define --validate {path}; dumpxml {name}"])
    assert result.returncode == 0, result.stderr
    return ET.fromstring(result.stdout[result.stdout.index("<domain"):]).find("launchSecurity")


@pytest.mark.stack
@pytest.mark.parametrize("pair", sorted(CASES))
def test_libvirt_12_9_reads_libvirts_own_xml(pair, trixie, tmp_path):
    """libvirt 12.9 defines the pair's XML and cgsc's with validation and formats the same
    <launchSecurity> for both (but the launch session cgsc's domain cannot carry)."""
    theirs = _libvirt_12_9_launch_security(trixie, libvirt_xml(pair), tmp_path)
    ours = _libvirt_12_9_launch_security(trixie, cgsc_domain(pair, tmp_path), tmp_path)
    assert security_facts(theirs) == security_facts(
        ET.fromstring(libvirt_xml(pair)).find("launchSecurity"))
    ours_facts, theirs_facts = security_facts(ours), security_facts(theirs)
    for tag in SESSION:
        if tag not in ours_facts:
            theirs_facts.pop(tag, None)
    assert ours_facts == theirs_facts

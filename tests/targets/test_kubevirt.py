"""kubevirt target: every manifest is valid against KubeVirt's own CRD schema (made strict),
passes each admission rule of the reference README, reads back through a YAML parser to
the same data, and says the same as the shell target's real argv."""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import subprocess

import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
from helpers import EXAMPLES, ROOT, compile_plan, data_json, rel, render, run_cli

from cgsc.pipeline.compile import compile_spec

KUBEVIRT_EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "kubevirt", "*.toml")))
# YAML 1.1 (PyYAML, go-yaml in kubectl) line breaks: a comment ends at any of them.
YAML_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
# Kubernetes name rules (k8s.io/apimachinery validation), written out independently.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def _manifest(spec):
    return render(spec, "kubevirt")


def _vm(spec):
    return yaml.safe_load(_manifest(spec))


# -- the CRD schema, strict --------------------------------------------------------------

def strict(node):
    """The CRD's structural schema as a JSON Schema that rejects unknown keys: objects that
    list properties get additionalProperties false unless x-kubernetes-preserve-unknown-fields
    says the API server keeps anything; int-or-string becomes anyOf; embedded resources
    accept apiVersion/kind/metadata."""
    if isinstance(node, list):
        return [strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "type" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


@pytest.fixture(scope="session")
def crd():
    return data_json("kubevirt/virtualmachine.openapi.json")


@pytest.fixture(scope="session")
def crd_validator(crd):
    from jsonschema import Draft7Validator
    schema = strict(crd)
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _cel_paths(node, path=()):
    """Schema paths that carry CEL rules (x-kubernetes-validations), which jsonschema cannot
    evaluate: the manifests must not use them, or the schema check would be incomplete."""
    if isinstance(node, dict):
        if "x-kubernetes-validations" in node:
            yield path
        for key, sub in node.get("properties", {}).items():
            yield from _cel_paths(sub, path + (key,))
        if "items" in node:
            yield from _cel_paths(node["items"], path + ("[]",))


def _instance_paths(data, path=()):
    yield path
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _instance_paths(v, path + (k,))
    elif isinstance(data, list):
        for v in data:
            yield from _instance_paths(v, path + ("[]",))


def _metadata_problems(meta):
    """metadata is `type: object` in the CRD (the API server checks it): check it here."""
    out = []
    if not (DNS_LABEL.fullmatch(meta["name"]) and len(meta["name"]) <= 63):
        out.append("name")
    if "namespace" in meta and not (DNS_LABEL.fullmatch(meta["namespace"])
                                    and len(meta["namespace"]) <= 63):
        out.append("namespace")
    for key, value in meta.get("labels", {}).items():
        prefix, _, name = key.rpartition("/")
        if prefix and not (len(prefix) <= 253 and all(DNS_LABEL.fullmatch(p) for p in prefix.split("."))):
            out.append(f"label prefix {key}")
        if not (LABEL_NAME.fullmatch(name) and len(name) <= 63):
            out.append(f"label name {key}")
        if not isinstance(value, str) or (value and not (LABEL_NAME.fullmatch(value) and len(value) <= 63)):
            out.append(f"label value {key}")
    return out


@pytest.mark.parametrize("spec", KUBEVIRT_EXAMPLES, ids=rel)
def test_manifest_is_valid_against_the_strict_crd_schema(spec, crd, crd_validator):
    vm = _vm(spec)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator.iter_errors(vm)]
    assert errors == []
    assert _metadata_problems(vm["metadata"]) == []
    template_meta = vm["spec"]["template"].get("metadata", {"name": "x"})
    assert _metadata_problems({"name": "x", **template_meta}) == []
    cel = set(_cel_paths(crd))
    assert cel, "the reference schema has CEL rules; this test must see them"
    assert not cel & set(_instance_paths(vm))
    assert None not in list(_values(vm))  # the CRD's nullable never comes into play


def _values(data):
    if isinstance(data, dict):
        for v in data.values():
            yield from _values(v)
    elif isinstance(data, list):
        for v in data:
            yield from _values(v)
    else:
        yield data


def test_the_strict_schema_rejects_a_misspelt_key(crd_validator):
    vm = _vm(KUBEVIRT_EXAMPLES[0])
    assert not list(crd_validator.iter_errors(vm))
    bad = copy.deepcopy(vm)
    bad["spec"]["template"]["spec"]["domain"]["launchSecuirty"] = {}
    assert any("launchSecuirty" in e.message for e in crd_validator.iter_errors(bad))
    bad = copy.deepcopy(vm)
    bad["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = "8 GiB"
    assert list(crd_validator.iter_errors(bad))
    bad = copy.deepcopy(vm)
    bad["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["disk"]["bsu"] = "virtio"
    assert list(crd_validator.iter_errors(bad))


def test_metadata_checks_can_fail():
    assert _metadata_problems({"name": "db_1"}) == ["name"]
    assert _metadata_problems({"name": "ok", "namespace": "A"}) == ["namespace"]
    assert _metadata_problems({"name": "ok", "labels": {"-x": "y", "a/b": "-"}}) == [
        "label name -x", "label value a/b"]


# -- admission rules (reference README, pkg/virt-api/webhooks/amd64.go) ------------------

def _domain(vm):
    return vm["spec"]["template"]["spec"]["domain"]


def _efi(vm):
    return _domain(vm).get("firmware", {}).get("bootloader", {}).get("efi")


def rule_efi(vm):
    ls = _domain(vm).get("launchSecurity", {})
    return not ({"sev", "snp", "tdx"} & set(ls)) or _efi(vm) is not None


def rule_secure_boot_written_false(vm):
    ls = _domain(vm).get("launchSecurity", {})
    return not ({"sev", "snp"} & set(ls)) or (_efi(vm) or {}).get("secureBoot", None) is False


def rule_not_persistent(vm):
    ls = _domain(vm).get("launchSecurity", {})
    return not ({"snp", "tdx"} & set(ls)) or (_efi(vm) or {}).get("persistent") is not True


def rule_tdx_no_smm(vm):
    d = _domain(vm)
    return "tdx" not in d.get("launchSecurity", {}) or \
        d.get("features", {}).get("smm", {}).get("enabled") is not True


def rule_sev_attestation_paused(vm):
    sev = _domain(vm).get("launchSecurity", {}).get("sev", {})
    spec = vm["spec"]
    return "attestation" not in sev or "Paused" in (
        spec.get("runStrategy"), spec["template"]["spec"].get("startStrategy"))


def rule_sev_no_nic_boot_order(vm):
    d = _domain(vm)
    return "sev" not in d.get("launchSecurity", {}) or not any(
        "bootOrder" in i for i in d["devices"].get("interfaces", []))


def rule_disk_serial_characters(vm):
    # pkg/virt-api/webhooks/validating-webhook/admitters: validateSerialNumValue
    return all(re.fullmatch(r"[A-Za-z0-9_.+-]+", d["serial"])
               for d in _domain(vm)["devices"].get("disks", []) if d.get("serial"))


def _set(path):
    def apply(vm):
        node = vm
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
        node[path[-1][0]] = path[-1][1]
    return apply


D = ("spec", "template", "spec", "domain")
# rule, a manifest of the examples it applies to, and a change that violates it
ADMISSION = [
    (rule_efi, "sev-snp", lambda vm: _domain(vm)["firmware"].pop("bootloader")),
    (rule_secure_boot_written_false, "sev", lambda vm: _efi(vm).pop("secureBoot")),
    (rule_secure_boot_written_false, "sev-snp", lambda vm: _efi(vm).update(secureBoot=True)),
    (rule_not_persistent, "sev-snp", lambda vm: _efi(vm).update(persistent=True)),
    (rule_not_persistent, "tdx", lambda vm: _efi(vm).update(persistent=True)),
    (rule_tdx_no_smm, "tdx", lambda vm: _domain(vm)["features"]["smm"].update(enabled=True)),
    (rule_sev_attestation_paused, "sev", lambda vm: _domain(vm)["launchSecurity"]["sev"]
     .update(attestation={})),
    (rule_sev_no_nic_boot_order, "sev-es", lambda vm: _domain(vm)["devices"]["interfaces"][0]
     .update(bootOrder=9)),
    (rule_disk_serial_characters, "sev", lambda vm: _domain(vm)["devices"]["disks"][0]
     .update(serial="disk one")),
]
RULES = sorted({r for r, _s, _b in ADMISSION}, key=lambda r: r.__name__)


@pytest.mark.parametrize("spec", KUBEVIRT_EXAMPLES, ids=rel)
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_manifest_satisfies_every_admission_rule(spec, rule):
    assert rule(_vm(spec))


@pytest.mark.parametrize("rule,example,breaks", ADMISSION,
                         ids=[f"{r.__name__}-{e}" for r, e, _b in ADMISSION])
def test_each_admission_check_catches_its_violation(rule, example, breaks):
    vm = _vm(os.path.join(ROOT, "examples", "kubevirt", f"{example}.toml"))
    assert rule(vm)
    breaks(vm)
    assert not rule(vm)


# -- mapping, round trip, determinism ----------------------------------------------------

# Reference README: the launchSecurity form and feature gate of each mechanism.
EXPECTED_FORM = {"sev": ({"sev": {"policy": {"encryptedState": False}}}, "WorkloadEncryptionSEV"),
                 "sev-es": ({"sev": {"policy": {"encryptedState": True}}}, "WorkloadEncryptionSEV"),
                 "sev-snp": ({"snp": {}}, "WorkloadEncryptionSEV"),
                 "tdx": ({"tdx": {}}, "WorkloadEncryptionTDX"),
                 "s390-pv": ({}, "SecureExecution")}


def test_one_example_per_supported_mechanism():
    mechanisms = sorted(compile_plan(s).confidential.mechanism for s in KUBEVIRT_EXAMPLES)
    assert mechanisms == sorted(EXPECTED_FORM)


@pytest.mark.parametrize("spec", KUBEVIRT_EXAMPLES, ids=rel)
def test_manifest_round_trips_and_maps_the_spec(spec):
    text = _manifest(spec)
    data = yaml.safe_load(text)
    from cgsc.targets.kubevirt import virtual_machine
    plan = compile_plan(spec)
    assert data == virtual_machine(plan)
    assert not re.search(r"[&*]id\d", text)  # no anchors or aliases: every value written out
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    with open(spec, "rb") as fh:
        toml = tomllib.load(fh)
    (mech, _table), = toml["confidential"].items()
    form, gate = EXPECTED_FORM[mech]
    domain = data["spec"]["template"]["spec"]["domain"]
    assert data["apiVersion"] == "kubevirt.io/v1" and data["kind"] == "VirtualMachine"
    assert data["metadata"]["name"] == toml["guest"]["name"]
    assert domain["launchSecurity"] == form
    assert f"feature gate the cluster needs: {gate}" in text
    kv = toml.get("targets", {}).get("kubevirt", {})
    assert data["spec"]["runStrategy"] == kv.get("run-strategy", "Always")
    assert data["metadata"].get("namespace") == kv.get("namespace")
    assert data["metadata"].get("labels", {}) == kv.get("labels", {})
    assert data["spec"]["template"].get("metadata", {}).get("labels", {}) == kv.get("labels", {})
    if mech == "s390-pv":
        assert data["spec"]["template"]["spec"]["architecture"] == "s390x"
        assert "bootloader" not in domain["firmware"]
    else:
        assert data["spec"]["template"]["spec"]["architecture"] == "amd64"
        assert domain["firmware"]["bootloader"]["efi"]["secureBoot"] is False
    if mech in ("sev-snp", "tdx"):
        assert domain["firmware"]["bootloader"]["efi"]["persistent"] is False
    if mech in ("sev-es", "sev-snp", "tdx"):  # the shell's -machine smm=off, said the KubeVirt way
        assert domain["features"]["smm"]["enabled"] is False
    volumes = {v["name"]: v for v in data["spec"]["template"]["spec"]["volumes"]}
    keys = {"pvc": ("persistentVolumeClaim", "claimName"), "data-volume": ("dataVolume", "name"),
            "container-disk": ("containerDisk", "image")}
    for disk, vol in zip(toml["disk"], domain["devices"]["disks"]):
        (kind, value), = disk["kubevirt"].items()
        source, field = keys[kind]
        assert volumes[vol["name"]][source][field] == value
        assert vol["disk"]["bus"] == disk.get("bus", "virtio")
    for net, iface in zip(toml.get("net", []), domain["devices"]["interfaces"]):
        assert ("bridge" if "kubevirt" in net else "masquerade") in iface


@pytest.mark.parametrize("spec", KUBEVIRT_EXAMPLES, ids=rel)
def test_build_is_byte_identical_and_listed_in_the_manifest(spec, tmp_path):
    for out in ("a", "b"):
        code, _o, err = run_cli("build", spec, "-o", str(tmp_path / out))
        assert code == 0, err
    name = compile_plan(spec).name
    a, b = tmp_path / "a" / name, tmp_path / "b" / name
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    for f in os.listdir(a):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    manifest = json.loads((a / "manifest.json").read_text())
    entry = [x for x in manifest["artifacts"] if x["target"] == "kubevirt"]
    assert [x["file"] for x in entry] == [f"{name}.kubevirt.yaml"]
    assert entry[0]["mode"] == "0644"


# -- cross-target: the manifest says what the launch script execs ------------------------

STAND_IN = "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$CGSC_ARGV_LOG\"\n"


def _shell_argv(spec, tmp_path):
    plan = compile_plan(spec)
    script = tmp_path / "launch.sh"
    script.write_text(render(spec, "shell"))
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / plan.emulator).write_text(STAND_IN)
    (bin_dir / plan.emulator).chmod(0o755)
    log = tmp_path / "argv"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_SKIP_CHECKS": "1", "CGSC_ARGV_LOG": str(log)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return [w.decode() for w in log.read_bytes().split(b"\0")[:-1]]


def _option(argv, flag):
    return [v for o, v in zip(argv, argv[1:]) if o == flag]


def _keyval(text):
    head, *rest = text.split(",")  # the examples carry no commas in these values
    return head, dict(p.split("=", 1) for p in rest if "=" in p)


# KubeVirt's fixed policies (reference README, launch_security.go): SEV 0x1 (+0x4 for ES).
QOM_TO_KUBEVIRT = {"sev-guest": "sev", "sev-snp-guest": "snp", "tdx-guest": "tdx"}


@pytest.mark.parametrize("spec", KUBEVIRT_EXAMPLES, ids=rel)
def test_manifest_and_launch_script_agree(spec, tmp_path):
    argv = _shell_argv(spec, tmp_path)
    vm = _vm(spec)
    domain = _domain(vm)
    qom, props = _keyval(_option(argv, "-object")[0])
    if qom == "s390-pv-guest":
        assert domain["launchSecurity"] == {}
    else:
        assert list(domain["launchSecurity"]) == [QOM_TO_KUBEVIRT[qom]]
    if qom == "sev-guest":
        policy = int(props["policy"], 0)
        es = domain["launchSecurity"]["sev"]["policy"]["encryptedState"]
        assert policy == 0x1 | (0x4 if es else 0)
    if qom == "sev-snp-guest":
        assert int(props["policy"], 0) == 0x30000
    cpu = domain["cpu"]
    # KubeVirt's converter: <vcpu> = sockets * cores * threads, <topology> with one die each
    vcpus, smp = _keyval(_option(argv, "-smp")[0])
    assert int(vcpus) == cpu["sockets"] * cpu["cores"] * cpu["threads"]
    assert (int(smp["sockets"]), int(smp["dies"]), int(smp["cores"]), int(smp["threads"])) == \
        (cpu["sockets"], 1, cpu["cores"], cpu["threads"])
    mib = int(_option(argv, "-m")[0].rstrip("M"))
    assert domain["resources"]["requests"]["memory"] == f"{mib}Mi"
    drives = [d for d in _option(argv, "-device") if "drive=" in d]
    assert len(drives) == len(domain["devices"]["disks"]) == len(vm["spec"]["template"]["spec"]["volumes"])
    macs = [_keyval(d)[1]["mac"] for d in _option(argv, "-device") if "netdev=" in d]
    assert macs == [i["macAddress"] for i in domain["devices"].get("interfaces", [])]
    kernel = domain["firmware"].get("kernelBoot", {})
    assert _option(argv, "-kernel") == ([kernel["container"]["kernelPath"]] if kernel else [])
    assert _option(argv, "-append") == ([kernel["kernelArgs"]] if "kernelArgs" in kernel else [])
    assert domain["firmware"]["uuid"] == _option(argv, "-uuid")[0]


@pytest.mark.parametrize("spec", KUBEVIRT_EXAMPLES, ids=rel)
def test_the_examples_other_artifacts_pass_their_consumers(spec, tmp_path, tool, relaxng):
    """The kubevirt examples also build for hosts: their script and domain are proven too."""
    from lxml import etree
    script = tmp_path / "launch.sh"
    script.write_text(render(spec, "shell"))
    result = subprocess.run([tool("shellcheck"), "--shell=sh", "--severity=style", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    doc = etree.fromstring(render(spec, "libvirt").encode())
    assert relaxng.validate(doc), relaxng.error_log


# -- comments and hostile values ---------------------------------------------------------

HOSTILE = "x\n# y: z\u2028- evil: 1--- \u2029'\"&*!|>%@`{}[]: #"


def _hostile_spec(tmp_path):
    spec = tmp_path / "hostile.toml"
    path = "/boot/" + HOSTILE.replace("\n", " ").replace("\r", " ")
    waiver = json.dumps("because\u2028- evil: 1")
    spec.write_text(f'''spec-version = 1
[guest]
name = "kv-hostile"
description = {json.dumps(HOSTILE.replace(chr(10), " "))}
cpu = "EPYC-v4"
memory = "2GiB"
[firmware]
code = "/usr/share/ovmf/OVMF.amdsev.fd"
[kernel]
image = {json.dumps(path)}
cmdline = {json.dumps(HOSTILE)}
[confidential.sev]
cbitpos = 51
reduced-phys-bits = 1
policy = {{ key-sharing = true, send = true }}
[targets.kubevirt]
kernel-container = "registry.example.com/k:1"
[waive]
"CGS-SEV-013" = {waiver}
''', encoding="utf-8")
    return str(spec), path


def test_hostile_values_round_trip_and_never_leave_the_comment(tmp_path, crd_validator):
    spec, path = _hostile_spec(tmp_path)
    text = _manifest(spec)
    header, _, body = text.partition("\n---\n")
    for line in YAML_BREAKS.split(header):
        assert line.startswith("#"), repr(line)
    assert yaml.safe_load(header) is None
    assert "\n# waived CGS-SEV-013: because" in header and "\n# Guest kv-hostile: " in header
    data = yaml.safe_load(text)
    boot = data["spec"]["template"]["spec"]["domain"]["firmware"]["kernelBoot"]
    assert boot["container"]["kernelPath"] == path
    assert boot["kernelArgs"] == HOSTILE
    assert not list(crd_validator.iter_errors(data))
    assert text.isascii()  # non-ASCII is escaped inside double-quoted scalars
    assert "&id" not in body and "*id" not in body  # no anchors or aliases


# What a YAML 1.2 core-schema resolver (go-yaml v3) and a YAML 1.1 one (go-yaml v2, which
# kubectl uses; it has y/n booleans that PyYAML leaves out) read as something else than a
# string, from the two specs' type tables.
NOT_A_STRING = re.compile("|".join([
    r"null|Null|NULL|~|", r"true|True|TRUE|false|False|FALSE",                     # 1.2 core
    r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+",
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
    r"y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF",                            # 1.1
    r"[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+",
    r"[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?",
    r"[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?",
    r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?", r"<<|="]))
LOOKS_LIKE_NUMBERS = {"on": "N", "y": "0o17", "NO": "null", "1e3": "1_000", "x": "0x1F",
                      "z": "0b101", "t": "2026-11-27", "TRUE": "Off", "f": "1.5", "e": "1e-3"}


def _number_like_spec(tmp_path):
    labels = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in LOOKS_LIKE_NUMBERS.items())
    spec = tmp_path / "1e3.toml"
    spec.write_text(f"""spec-version = 1
[guest]
name = "1e3"
cpu = "EPYC-v4"
memory = "2GiB"
[firmware]
code = "/usr/share/ovmf/OVMF.amdsev.fd"
[confidential.sev-snp]
cbitpos = 51
reduced-phys-bits = 1
[[disk]]
path = "/var/lib/guests/x/root.raw"
format = "raw"
serial = "0x1F"
kubevirt = {{ pvc = "2026-11-27" }}
[[disk]]
path = "/var/lib/guests/x/data.raw"
format = "raw"
kubevirt = {{ data-volume = "1.5" }}
[[net]]
mode = "user"
kubevirt = {{ multus = "1e3/0o17" }}
[console]
serial = "none"
[targets.kubevirt]
namespace = "y"
labels = {{ {labels} }}
""")
    return str(spec)


def test_strings_that_look_like_numbers_or_booleans_read_back_as_strings(tmp_path, tool):
    spec = _number_like_spec(tmp_path)
    text = _manifest(spec)
    # a plain (unquoted) scalar that PyYAML reads as a string must read as one in YAML 1.2
    # and in go-yaml too; the ones PyYAML reads otherwise are compared as values below
    def plain_strings(node):
        if isinstance(node, yaml.ScalarNode):
            return [node.value] if node.style is None and node.tag.endswith(":str") else []
        items = node.value if isinstance(node, yaml.SequenceNode) else \
            [x for pair in node.value for x in pair]
        return [v for item in items for v in plain_strings(item)]
    plain = plain_strings(yaml.compose(text))
    assert "VirtualMachine" in plain   # the check sees the plain scalars
    assert not [v for v in plain if NOT_A_STRING.fullmatch(v)], plain
    vm = yaml.safe_load(text)   # YAML 1.1, as PyYAML resolves it
    assert vm["metadata"] == {"name": "1e3", "namespace": "y", "labels": LOOKS_LIKE_NUMBERS}
    assert vm["spec"]["template"]["metadata"]["labels"] == LOOKS_LIKE_NUMBERS
    vmi = vm["spec"]["template"]["spec"]
    assert vmi["domain"]["devices"]["disks"][0]["serial"] == "0x1F"
    assert [v.get("persistentVolumeClaim", v.get("dataVolume")) for v in vmi["volumes"]] == [
        {"claimName": "2026-11-27"}, {"name": "1.5"}]
    assert vmi["networks"][0]["multus"] == {"networkName": "1e3/0o17"}
    # kubectl decodes the file into its Go types before it asks any server
    manifest = tmp_path / "vm.yaml"
    manifest.write_text(text)
    (tmp_path / "kubeconfig").write_text("")
    proc = subprocess.run([tool("kubectl"), "create", "--dry-run=client", "--validate=false",
                           "-o", "json", "-f", str(manifest)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig")})
    assert "unable to decode" not in proc.stderr and "unmarshal" not in proc.stderr, proc.stderr


def test_the_comment_check_can_fail():
    assert not all(line.startswith("#") for line in YAML_BREAKS.split("# a\u2028b: 1"))


# -- built only when asked; refusals; explain; check --------------------------------------

def test_default_builds_do_not_change(tmp_path):
    for spec in EXAMPLES:
        code, _o, err = run_cli("build", spec, "-o", str(tmp_path))
        assert code == 0, err
    assert not glob.glob(str(tmp_path / "*" / "*.kubevirt.yaml"))
    spec = tmp_path / "no-build-list.toml"
    with open(KUBEVIRT_EXAMPLES[-1], encoding="utf-8") as fh:
        spec.write_text(fh.read().replace('build = ["shell", "systemd", "libvirt", "kubevirt"]', ""))
    code, _o, err = run_cli("build", str(spec), "-o", str(tmp_path / "x"))
    assert code == 0, err
    name = compile_plan(str(spec)).name
    assert sorted(os.listdir(tmp_path / "x" / name)) == sorted(
        [f"{name}.sh", f"{name}.service", f"{name}.xml", "manifest.json"])
    code, _o, err = run_cli("build", str(spec), "-t", "kubevirt", "-o", str(tmp_path / "y"))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "y" / name)) == [f"{name}.kubevirt.yaml", "manifest.json"]


def test_target_and_rules_are_listed():
    code, out, _e = run_cli("targets")
    assert code == 0 and re.search(r"^kubevirt +KubeVirt VirtualMachine", out, re.M)
    code, out, _e = run_cli("rules")
    listed = set(re.findall(r"^(CGS-KUBEVIRT-\d{3}) ", out, re.M))
    assert listed == {f"CGS-KUBEVIRT-{i:03d}" for i in range(1, 15)}


def test_refusals_come_all_at_once_with_hints(tmp_path):
    spec = tmp_path / "many.toml"
    spec.write_text('''spec-version = 1
[guest]
name = "many"
memory = 2048
[firmware]
code = "/usr/share/ovmf/OVMF.inteltdx.fd"
[kernel]
image = "/boot/vmlinuz"
[confidential.tdx]
mrowner = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
[[disk]]
path = "/var/lib/guests/many/root.raw"
format = "raw"
[[net]]
mode = "tap"
tap = "tap0"
[vsock]
cid = 7
[qemu]
extra-args = ["-no-reboot"]
''')
    code, out, err = run_cli("build", str(spec), "-t", "kubevirt", "--stdout")
    assert code == 1 and out == ""
    found = re.findall(r"^\S+:(\d+): (\S+): .* \[(CGS-KUBEVIRT-\d{3})\]$", err, re.M)
    assert sorted((key, rule) for _line, key, rule in found) == [
        ("confidential.tdx.mrowner", "CGS-KUBEVIRT-002"), ("disk[0]", "CGS-KUBEVIRT-005"),
        ("kernel.image", "CGS-KUBEVIRT-008"), ("net[0].mode", "CGS-KUBEVIRT-007"),
        ("qemu.extra-args[0]", "CGS-KUBEVIRT-004"), ("vsock.cid", "CGS-KUBEVIRT-009")]
    assert all(int(line) > 0 for line, _k, _r in found)
    assert err.count("\n  hint: ") == len(found)


def test_explain_lists_what_kubevirt_emits_and_refuses():
    info = json.loads(run_cli("explain", "--format", "json", KUBEVIRT_EXAMPLES[0])[1])
    assert info["kubevirt"]["built"] == "by [targets] build"
    assert any(line.startswith("launchSecurity ") for line in info["kubevirt"]["emits"])
    code, text, _e = run_cli("explain", os.path.join(ROOT, "examples", "pef.toml"))
    assert code == 0
    assert "kubevirt target (built only with -t kubevirt or [targets] build)" in text
    assert re.search(r"refuses .*pef\.toml:\d+: confidential\.pef: .*\[CGS-KUBEVIRT-001\]", text)


def test_check_covers_the_manifest(tmp_path):
    spec = KUBEVIRT_EXAMPLES[0]
    assert run_cli("build", spec, "-o", str(tmp_path))[0] == 0
    assert run_cli("check", spec, "-o", str(tmp_path))[0] == 0
    name = compile_plan(spec).name
    manifest = tmp_path / name / f"{name}.kubevirt.yaml"
    manifest.write_text(manifest.read_text().replace("runStrategy: Always", "runStrategy: Halted"))
    code, out, err = run_cli("check", spec, "-o", str(tmp_path))
    assert code == 1 and "kubevirt.yaml" in out + err


def test_attestation_note_when_the_plan_has_reference_values():
    from cgsc.targets.kubevirt import header_lines
    plan = compile_spec(KUBEVIRT_EXAMPLES[0]).plan

    class Attested:  # a plan with the attest branch's field, whatever its form
        attestation = {"launch-digest": "00" * 48}

        def __getattr__(self, name):
            return getattr(plan, name)

    assert not any("Attestation" in line for line in header_lines(plan))
    assert any("firmware and vCPU model must match" in line for line in header_lines(Attested()))


def test_readme_section_shows_what_its_spec_builds(tmp_path, crd_validator):
    with open(os.path.join(ROOT, "docs", "targets.md"), encoding="utf-8") as fh:
        section = fh.read().split("\n## KubeVirt\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    spec_text = next(text for lang, text in blocks if lang == "toml")
    shown = [yaml.safe_load(text) for lang, text in blocks if lang == "yaml"]
    spec = tmp_path / "ledger.toml"
    spec.write_text(spec_text, encoding="utf-8")
    code, out, err = run_cli("build", str(spec), "-t", "kubevirt", "--stdout")
    assert code == 0, err
    built = yaml.safe_load(out)
    assert shown[0] == built
    assert not list(crd_validator.iter_errors(built))
    assert any(isinstance(doc, dict) and doc.get("kind") == "Application" for doc in shown)


def test_every_volume_kind_and_binding_is_valid_for_the_crd(tmp_path, crd_validator):
    """The branches the examples do not take: host-disk with its gate, scsi, a read-only
    PVC, a Multus-only VM, kernel boot without initrd, no console."""
    spec = tmp_path / "kinds.toml"
    spec.write_text('''spec-version = 1
[guest]
name = "kinds"
memory = 2048
[firmware]
code = "/usr/share/ovmf/OVMF.inteltdx.fd"
[kernel]
image = "/boot/vmlinuz"
cmdline = "console=hvc0"
[confidential.tdx]
[[disk]]
path = "/var/lib/guests/kinds/root.raw"
format = "raw"
kubevirt = { host-disk = true }
[[disk]]
path = "/var/lib/guests/kinds/data.raw"
format = "raw"
bus = "scsi"
readonly = true
cache = "writethrough"
kubevirt = { pvc = "kinds-data" }
[[net]]
mode = "tap"
tap = "tap0"
kubevirt = { multus = "kinds-net" }
[console]
serial = "none"
[targets.kubevirt]
kernel-container = "registry.example.com/k@sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
feature-gates = ["HostDisk"]
''')
    code, out, err = run_cli("build", str(spec), "-t", "kubevirt", "--stdout")
    assert code == 0, err
    vm = yaml.safe_load(out)
    assert not list(crd_validator.iter_errors(vm))
    assert all(rule(vm) for rule in RULES)
    assert "feature gate the cluster needs: HostDisk" in out
    devices = _domain(vm)["devices"]
    assert devices["autoattachSerialConsole"] is False
    assert devices["disks"][1] == {"name": "disk1", "disk": {"bus": "scsi", "readonly": True},
                                   "cache": "writethrough"}
    assert vm["spec"]["template"]["spec"]["volumes"] == [
        {"name": "disk0", "hostDisk": {"path": "/var/lib/guests/kinds/root.raw", "type": "Disk"}},
        {"name": "disk1", "persistentVolumeClaim": {"claimName": "kinds-data", "readOnly": True}}]
    assert vm["spec"]["template"]["spec"]["networks"] == [
        {"name": "net0", "multus": {"networkName": "kinds-net"}}]
    assert "initrdPath" not in _domain(vm)["firmware"]["kernelBoot"]["container"]

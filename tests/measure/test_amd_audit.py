"""The AMD cases of the attestation audit (issue 20): each accepted spec that predicted a value
the guest would not report, with the exact diagnostic or digest now.

Digests come from the sev-snp-measure command-line tool run as a separate process, or from
the vectors of docs/attestation.md (tests/measure/test_amd_vectors.py); the SEV_FEATURES
facts (QEMU requests none, KVM adds SNPActive for SEV-SNP only, the legacy SEV-ES launch
is not what sev-snp-measure models) are cited there and checked here against what QEMU
itself offers.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import missing
from helpers import compile_plan, run_cli
from measure_helpers import errors, spec_text, write

AMDSEV = "OVMF.amdsev.fd"


def _line(spec: str, text: str) -> int:
    return open(spec).read().splitlines().index(text) + 1


def _ssm(tool, *args) -> str:
    result = subprocess.run([tool("sev-snp-measure"), "--vmm-type", "QEMU", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _diagnostic(spec: str, line: int, key: str, message: str, rule: str) -> str:
    return f"{spec}:{line}: {key}: {message} [{rule}]"


# -- 1. the vCPU type that measures is the one QEMU runs -----------------------------------

def test_a_vcpu_type_that_disagrees_with_the_cpu_is_refused(firmware, tmp_path):
    """Before: accepted, the digest computed for EPYC-v4 while QEMU ran EPYC-Milan."""
    spec = write(tmp_path / "g.toml", spec_text(
        "milan", "sev-snp", firmware[AMDSEV], cpu="EPYC-Milan",
        measurement='vcpu-type = "EPYC-v4"'))
    err = errors(spec)
    assert _diagnostic(spec, _line(spec, 'vcpu-type = "EPYC-v4"'), "measurement.vcpu-type",
                       'is "EPYC-v4" but QEMU runs [guest] cpu = "EPYC-Milan", whose signature '
                       "the launch measurement carries", "CGS-MEASURE-015") in err
    assert ('hint: remove vcpu-type (only cpu = "host" or "max" needs it), or set [guest] '
            'cpu = "EPYC-v4"') in err


def test_an_agreeing_pair_keeps_working_and_measures_the_cpu(firmware, tmp_path, tool):
    spec = write(tmp_path / "g.toml", spec_text(
        "milan", "sev-snp", firmware[AMDSEV], vcpus=2, cpu="EPYC-Milan",
        measurement='vcpu-type = "EPYC-Milan"'))
    att = compile_plan(spec).attestation
    assert att["inputs"]["vcpu-type"] == "EPYC-Milan"
    assert att["launch-digest"] == _ssm(tool, "--mode", "snp", "--vcpus", "2", "--vcpu-type",
                                        "EPYC-Milan", "--ovmf", firmware[AMDSEV])


@pytest.mark.parametrize("cpu", ["host", "max"])
def test_a_host_dependent_cpu_needs_vcpu_type_and_measures_it(cpu, firmware, tmp_path, tool):
    """KVM gives host and max the host CPU's family/model/stepping (QEMU host-cpu.c)."""
    text = spec_text("h", "sev-snp", firmware[AMDSEV], cpu=cpu)
    spec = write(tmp_path / "g.toml", text)
    assert _diagnostic(spec, _line(spec, f'cpu = "{cpu}"'), "guest.cpu",
                       f"\"{cpu}\" has no fixed vCPU signature (KVM gives it the host CPU's), "
                       "so the launch measurement cannot be computed", "CGS-MEASURE-013") in errors(spec)
    spec = write(tmp_path / "g2.toml", spec_text("h", "sev-snp", firmware[AMDSEV], cpu=cpu,
                                                 measurement='vcpu-type = "EPYC-Genoa"'))
    assert compile_plan(spec).attestation["launch-digest"] == _ssm(
        tool, "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-Genoa",
        "--ovmf", firmware[AMDSEV])


def test_a_cpu_the_measurement_cannot_model_is_refused_with_the_models_it_can(firmware, tmp_path):
    from sevsnpmeasure import vcpu_types
    spec = write(tmp_path / "g.toml", spec_text("g2", "sev-snp", firmware[AMDSEV],
                                                cpu="EPYC-Genoa-v2"))
    err = errors(spec)
    assert _diagnostic(spec, _line(spec, 'cpu = "EPYC-Genoa-v2"'), "guest.cpu",
                       "'EPYC-Genoa-v2' is not a vCPU type sev-snp-measure knows",
                       "CGS-MEASURE-013") in err
    assert "hint: known types: " + ", ".join(sorted(vcpu_types.CPU_SIGS)) + "\n" in err


# -- 2. -global spellings that reach the CPU, the firmware or the confidential object --------

REACHES = [   # (-global argument, the driver QEMU reads from it)
    ("cpu.stepping=2", "cpu"),
    ("x86_64-cpu.stepping=2", "x86_64-cpu"),
    ("EPYC-v4-x86_64-cpu.stepping=2", "EPYC-v4-x86_64-cpu"),
    ("host-x86_64-cpu.family=25", "host-x86_64-cpu"),
    ("max-x86_64-cpu.model=1", "max-x86_64-cpu"),
    ("base-x86_64-cpu.stepping=2", "base-x86_64-cpu"),
    ("driver=cpu,property=stepping,value=2", "cpu"),
    ("driver=EPYC-Milan-x86_64-cpu,property=stepping,value=2", "EPYC-Milan-x86_64-cpu"),
    ("property=stepping,value=2,driver=x86_64-cpu", "x86_64-cpu"),
    # QemuOpts: the last driver= counts, and `,,` escapes a comma inside a value
    ("driver=kvm-pit,property=stepping,value=2,driver=cpu", "cpu"),
    ("driver=cpu,value=2,property=stepping,,driver=kvm-pit", "cpu"),
    # DRIVER.PROPERTY=VALUE wins, and its value is taken as is
    ("cpu.stepping=2,driver=kvm-pit", "cpu"),
    ("device.stepping=2", "device"),
    ("driver=object,property=stepping,value=2", "object"),
    ("sys-bus-device.secure=on", "sys-bus-device"),
    ("driver=cfi.pflash01,property=secure,value=on", "cfi.pflash01"),
    ("driver=cfi.pflash02,property=width,value=4", "cfi.pflash02"),
    ("loader.force-raw=on", "loader"),
    ("sev-guest.legacy-vm-type=on", "sev-guest"),
    ("driver=sev-snp-guest,property=policy,value=0x30000", "sev-snp-guest"),
    ("sev-common.kernel-hashes=on", "sev-common"),
    ("tdx-guest.attributes=0", "tdx-guest"),
    ("igvm-cfg.file=/tmp/evil.igvm", "igvm-cfg"),
]


@pytest.mark.parametrize("arg, driver", REACHES, ids=[a for a, _d in REACHES])
def test_a_global_that_reaches_a_measured_input_is_refused(arg, driver, firmware, tmp_path):
    """Before: `-global cpu.stepping=2` and `driver=cpu,...` passed the filter."""
    spec = write(tmp_path / "g.toml", spec_text(
        "glob", "sev-snp", firmware[AMDSEV], cpu="EPYC-v4",
        extra="[qemu]\nextra-args = " + json.dumps(["-global", arg])))
    err = errors(spec)
    line = _line(spec, "extra-args = " + json.dumps(["-global", arg]))
    assert f"{spec}:{line}: qemu.extra-args[0]: '-global' {arg!r} sets " in err, err
    assert f" on {driver} (" in err and "overrides what [measurement] measured [CGS-MEASURE-005]" in err


PASSES = ["kvm-pit.lost_tick_policy=discard", "driver=kvm-pit,property=lost_tick_policy,value=discard",
          "virtio-blk-pci.iommu_platform=on", "ICH9-LPC.disable_s3=1", "isa-debugcon.iobase=0x402",
          # QEMU's DRIVER.PROPERTY form ends the driver at the first dot: driver "cfi",
          # which no device is (QEMU warns "invalid class name" and applies nothing)
          "cfi.pflash01.secure=on"]


@pytest.mark.parametrize("arg", PASSES)
def test_a_global_for_an_unrelated_device_passes(arg, tmp_path):
    spec = write(tmp_path / "g.toml", spec_text(
        "glob", "sev-snp", "fw.fd", cpu="EPYC-v4",
        extra="[qemu]\nextra-args = " + json.dumps(["-global", arg])))
    err = errors(spec)   # the file-free checks passed: the missing firmware is read
    assert "CGS-MEASURE-005" not in err and "fw.fd: No such file" in err, err


def test_a_global_qemu_cannot_read_is_refused(tmp_path):
    spec = write(tmp_path / "g.toml", spec_text(
        "glob", "sev-snp", "fw.fd", cpu="EPYC-v4",
        extra="[qemu]\nextra-args = " + json.dumps(["-global", "driver=cpu,property=stepping"])))
    assert ("qemu.extra-args[0]: '-global' 'driver=cpu,property=stepping' is no -global QEMU "
            "reads") in errors(spec)


def test_a_device_in_json_nested_past_what_qemu_reads_is_refused(tmp_path):
    """Before: a RecursionError (exit 3). QEMU reads JSON nested at most 1024 deep."""
    value = '{"driver":"x","a":' + "[" * 1500 + "]" * 1500 + "}"
    spec = write(tmp_path / "g.toml", spec_text(
        "dev", "sev-snp", "fw.fd", cpu="EPYC-v4",
        extra="[qemu]\nextra-args = " + json.dumps(["-device", value])))
    err = errors(spec)
    assert "qemu.extra-args[0]: '-device' '{\"driver\":\"x\"" in err, err
    assert "is no -device QEMU reads" in err and "[CGS-MEASURE-005]" in err, err


def _qmp(qemu, argv, commands):
    script = "\n".join(json.dumps(c) for c in [{"execute": "qmp_capabilities"}] + commands
                       + [{"execute": "quit"}]) + "\n"
    result = subprocess.run([qemu, "-machine", "q35", "-accel", "tcg", "-nodefaults",
                             "-display", "none", "-S", "-qmp", "stdio", *argv], input=script,
                            capture_output=True, text=True, timeout=120)
    replies = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, [r for r in replies if "return" in r or "error" in r]


CPU_SPELLINGS = ["cpu.stepping=2", "x86_64-cpu.stepping=2", "EPYC-v4-x86_64-cpu.stepping=2",
                 "driver=cpu,property=stepping,value=2",
                 "property=stepping,value=2,driver=x86_64-cpu",
                 "driver=kvm-pit,property=stepping,value=2,driver=cpu"]


@pytest.mark.parametrize("arg", CPU_SPELLINGS)
def test_qemu_applies_each_refused_cpu_spelling_to_the_vcpu(arg, tool):
    """The real consumer: QEMU runs EPYC-v4 (stepping 2 by its model) with the -global set
    to 5 instead, and reports stepping 5 for the vCPU: the spelling reaches the CPU."""
    assert arg in dict(REACHES)   # each is refused above
    qemu = tool("qemu-system-x86_64")
    arg = arg.replace("value=2", "value=5").replace("stepping=2", "stepping=5")
    result, replies = _qmp(qemu, ["-cpu", "EPYC-v4", "-global", arg], [
        {"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]",
                                             "property": "stepping"}}])
    assert result.returncode == 0, result.stderr
    assert replies[-2] == {"return": 5}, (replies, result.stderr)


def test_qemu_reads_the_escaped_spelling_as_a_cpu_global(tool):
    """`driver=cpu,value=2,property=stepping,,driver=kvm-pit`: QEMU's property is
    "stepping,driver=kvm-pit" on driver cpu (a naive split on commas saw driver kvm-pit)."""
    result, _r = _qmp(tool("qemu-system-x86_64"), [
        "-cpu", "EPYC-v4", "-global", "driver=cpu,value=2,property=stepping,,driver=kvm-pit"], [])
    assert result.returncode == 1 and "global cpu.stepping,driver=kvm-pit=2" in result.stderr


def test_qemu_leaves_the_vcpu_alone_for_an_unrelated_global(tool):
    result, replies = _qmp(tool("qemu-system-x86_64"), [
        "-cpu", "EPYC-v4", "-global", "kvm-pit.lost_tick_policy=discard"], [
        {"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]",
                                             "property": "stepping"}}])
    assert result.returncode == 0 and replies[-2] == {"return": 2}, result.stderr


# -- 3. SEV_FEATURES: the one value QEMU launches ---------------------------------------------

SNP_REFUSED = {
    0x0: "it lacks bit 0 (SNPActive), which every SEV-SNP guest's VMSA has",
    0x20: "it lacks bit 0 (SNPActive), which every SEV-SNP guest's VMSA has; it sets bit 5 "
          "(DebugSwap), which QEMU never requests without IGVM",
    0x3: "it sets bit 1 (VirtualTOM), which QEMU never requests without IGVM",
    0x21: "it sets bit 5 (DebugSwap), which QEMU never requests without IGVM",
    0x201: "it sets bit 9 (SecureTSC), which QEMU never requests without IGVM",
    (1 << 40) | 1: "it sets bits 0x10000000000, which QEMU never requests without IGVM",
}
ES_REFUSED = {
    0x1: "it sets bit 0 (SNPActive, SEV-SNP only), which QEMU never requests without IGVM",
    0x20: "it sets bit 5 (DebugSwap), which QEMU never requests without IGVM",
}


@pytest.mark.parametrize("mechanism, value, why",
                         [("sev-snp", v, w) for v, w in SNP_REFUSED.items()]
                         + [("sev-es", v, w) for v, w in ES_REFUSED.items()])
def test_guest_features_qemu_cannot_launch_are_refused_with_the_value_it_can(
        mechanism, value, why, firmware, tmp_path):
    """Before: 0x0, 0x20, 0x3 and reserved bits were accepted and measured as given."""
    spec = write(tmp_path / "g.toml", spec_text("gf", mechanism, firmware[AMDSEV],
                                                cpu="EPYC-v4", features=value))
    err = errors(spec)
    title = {"sev-snp": "AMD SEV-SNP", "sev-es": "AMD SEV-ES"}[mechanism]
    launched = {"sev-snp": "0x1", "sev-es": "0x0"}[mechanism]
    assert _diagnostic(spec, _line(spec, f"guest-features = {value:#x}"),
                       "measurement.guest-features", f"{value:#x} is not a value QEMU launches "
                       f"an {title} guest with: {why}", "CGS-MEASURE-014") in err, err
    assert (f"hint: values QEMU 9.1-11.1 launches it with: {launched} (KVM_SEV_INIT2 with no "
            "VMSA features requested, whatever kvm_amd debug_swap says)") in err


@pytest.mark.parametrize("mechanism, value, mode", [("sev-snp", 0x1, "snp"), ("sev-es", 0x0, "seves")])
def test_the_launched_value_is_accepted_and_measured(mechanism, value, mode, firmware, tmp_path,
                                                     tool):
    spec = write(tmp_path / "g.toml", spec_text("gf", mechanism, firmware[AMDSEV], vcpus=3,
                                                cpu="EPYC-v4", features=value))
    att = compile_plan(spec).attestation
    assert att["inputs"]["guest-features"] == f"{value:#x}"
    assert att["launch-digest"] == _ssm(tool, "--mode", mode, "--vcpus", "3", "--vcpu-type",
                                        "EPYC-v4", "--ovmf", firmware[AMDSEV])


# -- 4. SEV-ES: the launch path sev-snp-measure reproduces, and no debug_swap launch check ----

@pytest.mark.parametrize("legacy", [None, "on", "auto"])
def test_sev_es_on_the_legacy_launch_path_is_refused(legacy, firmware, tmp_path):
    """Before: "on" and "off" gave the same digest, the INIT2 one, which a legacy launch
    (FPU state zero in the VMSA) never reports."""
    spec = write(tmp_path / "g.toml", spec_text("es", "sev-es", firmware[AMDSEV], cpu="EPYC-v4",
                                                legacy_vm_type=legacy))
    err = errors(spec)
    if legacy:
        where = (_line(spec, f'legacy-vm-type = "{legacy}"'), "confidential.sev-es.legacy-vm-type")
        said = f'is "{legacy}"'
    else:
        where = (_line(spec, "[confidential.sev-es]"), "confidential.sev-es")
        said = "legacy-vm-type is not set (QEMU's default, auto, is the legacy path)"
    assert _diagnostic(spec, *where, said + ": QEMU launches SEV-ES with KVM's legacy "
                       "KVM_SEV_ES_INIT, whose VMSA (x87/SSE state zero; DebugSwap on Linux "
                       "6.6-6.9 with debug_swap=Y) sev-snp-measure cannot reproduce",
                       "CGS-MEASURE-016") in err, err
    assert ('hint: set legacy-vm-type = "off" (QEMU >= 9.1, Linux >= 6.10) to get a '
            "predictable digest, or remove [measurement]") in err


@pytest.mark.parametrize("mechanism", ["sev-snp", "sev-es", "sev"])
def test_no_amd_launch_checks_kvm_amd_debug_swap(mechanism, firmware, tmp_path):
    """Before: the launch refused an SNP guest with guest-features 0x1 on a host with
    debug_swap=Y (Linux 6.10+'s default) and hinted 0x21, a digest no launch gives."""
    spec = write(tmp_path / "g.toml", spec_text("nd", mechanism, firmware[AMDSEV], cpu="EPYC-v4"))
    plan = compile_plan(spec)
    assert plan.binding.params == ()
    from cgsc import targets
    for target in ("shell", "systemd"):
        (artifact,) = targets.get(target).render(plan)
        assert "debug_swap" not in artifact.content


def test_libvirt_is_not_built_for_the_init2_launch_it_cannot_express(firmware, tmp_path):
    """libvirt (11.3, 12.9) never sets legacy-vm-type, so its QEMU would take the legacy
    launch the manifest's SEV-ES digest is not for: the domain is left out, or refused."""
    spec = write(tmp_path / "g.toml", spec_text("es", "sev-es", firmware[AMDSEV], cpu="EPYC-v4"))
    out = tmp_path / "out"
    code, _o, err = run_cli("build", spec, "-o", str(out))
    assert code == 0 and sorted(os.listdir(out / "es")) == ["es.service", "es.sev-launch-measure.json", "es.sh", "manifest.json"]
    assert "target libvirt skipped: legacy-vm-type = \"off\" has no libvirt setting" in err
    code, _o, err = run_cli("build", "-t", "libvirt", spec, "-o", str(tmp_path / "out2"))
    assert code == 1 and _diagnostic(
        spec, _line(spec, 'legacy-vm-type = "off"'), "confidential.sev-es.legacy-vm-type",
        "legacy-vm-type = \"off\" has no libvirt setting: libvirt's QEMU would launch with its "
        "default, KVM's legacy KVM_SEV_INIT/KVM_SEV_ES_INIT, not KVM_SEV_INIT2 (and an SEV-ES "
        "guest measures differently there)", "CGS-LIBVIRT-001") in err, err


def test_sev_es_off_needs_qemu_9_1_on_the_host(tmp_path):
    """Row E7's QEMU half: legacy-vm-type exists from QEMU 9.1 (a host profile says so)."""
    from helpers import ROOT
    profile = json.load(open(os.path.join(ROOT, "tests", "data", "hosts", "amd-lab.json")))
    profile["qemu"]["x86_64"]["version"] = "9.0.2"
    host = tmp_path / "host.json"
    host.write_text(json.dumps(profile))
    spec = write(tmp_path / "g.toml", spec_text("e7", "sev-es", "/nonexistent/fw.fd",
                                                cpu="EPYC-v4")
                 .replace("[measurement]\nfirmware = \"/nonexistent/fw.fd\"\n", ""))
    code, _o, err = run_cli("validate", "--host", str(host), spec)
    assert code == 1 and "legacy-vm-type" in err and "9.1" in err and "[CGS-HOST-002]" in err, err


def _object_help(run) -> dict:
    """QOM type -> its properties, from `-object TYPE,help` of a QEMU."""
    out = {}
    for qom in ("sev-guest", "sev-snp-guest"):
        result = run(["-object", f"{qom},help"])
        out[qom] = {line.split("=")[0].strip() for line in result.stdout.splitlines()[1:]
                    if "=" in line} if result.returncode == 0 else None
    return out


def _no_feature_property(props: dict, legacy_vm_type: bool):
    for qom, names in props.items():
        if names is None:
            continue
        assert not {n for n in names if "feature" in n or "swap" in n or "tsc" in n}, (qom, names)
        assert ("legacy-vm-type" in names) == (legacy_vm_type and qom == "sev-guest"), (qom, names)


def test_qemu_offers_no_way_to_request_vmsa_features(tool, qemu72):
    """QEMU (no IGVM) requests no VMSA features: neither sev-guest nor sev-snp-guest has a
    property for them (the debug-swap series of 2025 was not merged); legacy-vm-type is in
    9.1 and later only."""
    def runner(qemu):
        return lambda args: subprocess.run([qemu, *args], capture_output=True, text=True,
                                           timeout=60)
    _no_feature_property(_object_help(runner(tool("qemu-system-x86_64"))), True)
    old = _object_help(runner(qemu72("qemu-system-x86_64")))
    assert old["sev-snp-guest"] is None   # QEMU 7.2 has no SEV-SNP
    _no_feature_property(old, False)


@pytest.mark.stack
def test_qemu_11_1_offers_no_way_to_request_vmsa_features():
    """The same for Debian's QEMU 11.1 (the newest the table covers), in the trixie root
    that .ci/trixie-root builds (CGSC_TRIXIE_ROOT)."""
    root = os.environ.get("CGSC_TRIXIE_ROOT", "/var/cache/cgsc/trixie-root")
    if not os.path.exists(os.path.join(root, ".cgsc-stamp")):
        missing(f"the trixie root with QEMU 11.1 is not built at {root} (run .ci/trixie-root)")
    version = subprocess.run(["chroot", root, "qemu-system-x86_64", "-version"],
                             capture_output=True, text=True, timeout=60).stdout
    assert version.startswith("QEMU emulator version 11.1."), version
    props = _object_help(lambda args: subprocess.run(
        ["chroot", root, "qemu-system-x86_64", *args], capture_output=True, text=True, timeout=60))
    assert props["sev-snp-guest"] is not None
    _no_feature_property(props, True)


# -- 5. inputs the launch measurement does not cover ------------------------------------------

@pytest.mark.parametrize("mechanism, mode", [("sev-snp", "snp"), ("sev-es", "seves"), ("sev", "sev")])
def test_a_kernel_without_kernel_hashes_is_listed_as_unmeasured_and_warned(
        mechanism, mode, firmware, tmp_path, tool):
    """Before: the digest was right, and the manifest listed the kernel's sha256 without
    saying that the measurement does not cover it."""
    (tmp_path / "k").write_bytes(b"kernel")
    text = spec_text("um", mechanism, firmware[AMDSEV], vcpus=2, cpu="EPYC-v4", kernel="k",
                     initrd="k", cmdline="console=ttyS0")
    text = text.replace("kernel-hashes = true", "kernel-hashes = false")
    spec = write(tmp_path / "g.toml", text)
    out = tmp_path / "out"
    code, _o, err = run_cli("build", spec, "-o", str(out))
    assert code == 0, err
    assert _diagnostic(spec, _line(spec, "kernel-hashes = false"),
                       f"confidential.{mechanism}.kernel-hashes",
                       "warning: kernel-hashes is off, so the launch measurement does not cover "
                       "the kernel, the initrd or the command line: attestation.unmeasured lists "
                       "them", "CGS-MEASURE-017") in err
    att = json.loads((out / "um" / "manifest.json").read_text())["attestation"]
    assert att["unmeasured"] == ["kernel", "initrd", "cmdline"]
    assert {f["role"] for f in att["files"]} == {"firmware", "kernel", "initrd"}
    args = ["--mode", mode, "--ovmf", firmware[AMDSEV]]
    if mode != "sev":
        args += ["--vcpus", "2", "--vcpu-type", "EPYC-v4"]
    assert att["launch-digest"] == _ssm(tool, *args)   # the firmware (and VMSAs) only
    import jsonschema
    jsonschema.validate(att, json.loads(run_cli("schema", "--attestation")[1]))
    code, explained, _e = run_cli("explain", spec)
    assert code == 0 and ("not in the launch measurement (kernel-hashes is off): kernel, "
                          "initrd, cmdline") in explained


def test_the_unmeasured_warning_can_be_waived(firmware, tmp_path):
    (tmp_path / "k").write_bytes(b"kernel")
    text = spec_text("um", "sev-snp", firmware[AMDSEV], cpu="EPYC-v4", kernel="k")
    text = text.replace("kernel-hashes = true", "kernel-hashes = false")
    text += '[waive]\n"CGS-MEASURE-017" = "the kernel is measured into the vTPM"\n'
    spec = write(tmp_path / "g.toml", text)
    code, _o, err = run_cli("validate", spec)
    assert code == 0 and "CGS-MEASURE-017" not in err, err
    assert compile_plan(spec).waivers == (("CGS-MEASURE-017", "the kernel is measured into the vTPM"),)


def test_measured_kernel_hashes_leave_nothing_unmeasured(firmware, tmp_path):
    (tmp_path / "k").write_bytes(b"kernel")
    spec = write(tmp_path / "g.toml", spec_text("hm", "sev-snp", firmware[AMDSEV],
                                                cpu="EPYC-v4", kernel="k"))
    code, _o, err = run_cli("validate", spec)
    assert code == 0 and "CGS-MEASURE-017" not in err
    assert "unmeasured" not in compile_plan(spec).attestation

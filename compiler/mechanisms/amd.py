"""What AMD SEV, SEV-ES and SEV-SNP have in common."""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from ..lower.guest_rules import scan_extra_args
from ..lower.plan import Element, HostParam
from ..lower.qemu import Prop

KERNEL_HASHES = Rule(
    "CGS-AMD-001", "kernel-hashes needs direct kernel boot ([kernel] image)",
    "kernel-hashes puts SHA-256 hashes of -kernel, -initrd and -append into the OVMF "
    "hash table so they become part of the launch measurement. Without a kernel there is "
    "nothing to hash and QEMU fails or the measurement silently covers nothing.",
    "QEMU qapi/qom.json SevCommonProperties (kernel-hashes); AMDESE/AMDSEV#93, #262",
    fix="Add [kernel] image (with an AmdSev OVMF build that has the hashes table), or set kernel-hashes = false.")
IRQCHIP = Rule(
    "CGS-AMD-002", "SEV-ES and SEV-SNP need an in-kernel irqchip",
    "KVM cannot emulate the local APIC of an encrypted-state guest in user space; QEMU "
    "refuses kernel-irqchip=off ('SEV-ES guests require in-kernel irqchip support').",
    "QEMU target/i386/sev.c sev_common_kvm_init",
    fix="Remove kernel-irqchip=off from extra-args.")

SEV_DEVICE = "/dev/sev"


def common_props(cfg: dict) -> Tuple[Prop, ...]:
    """sev-common properties in the order QEMU documents them."""
    props: list = []
    if cfg.get("sev-device", SEV_DEVICE) != SEV_DEVICE:
        props.append(("sev-device", cfg["sev-device"]))
    props += [("cbitpos", cfg["cbitpos"]), ("reduced-phys-bits", cfg["reduced-phys-bits"])]
    if cfg.get("kernel-hashes"):
        props.append(("kernel-hashes", True))
    return tuple(props)


def check_kernel_hashes(guest, path) -> Iterable[Diagnostic]:
    if guest.confidential.get("kernel-hashes") and not guest.kernel_image:
        yield KERNEL_HASHES.error(
            path + ("kernel-hashes",), "is true but there is no [kernel] image to hash",
            "add [kernel] image = \"/path/vmlinuz\" (and an AmdSev OVMF build), "
            "or set kernel-hashes = false")


def check_irqchip(guest) -> Iterable[Diagnostic]:
    for i, needle in scan_extra_args(guest.extra_args,
                                     ("kernel-irqchip=off", "kernel_irqchip=off")):
        yield IRQCHIP.error(("qemu", "extra-args", i), f"contains {needle}",
                            "remove it: SEV-ES and SEV-SNP guests need an in-kernel irqchip")


def host_param(name: str, title: str) -> HostParam:
    return HostParam(f"/sys/module/kvm_amd/parameters/{name}", ("Y", "1"),
                     f"this host's KVM has no {title} support (kvm_amd parameter {name} is not Y)")


def sev_device(cfg: dict) -> str:
    return cfg.get("sev-device", SEV_DEVICE)


def launch_security(sec_type: str, cfg: dict, policy: int, attrs=(), blobs=()) -> Element:
    """libvirt <launchSecurity> for sev / sev-snp; policy in lowercase 0x hex."""
    children = [Element("cbitpos", text=str(cfg["cbitpos"])),
                Element("reducedPhysBits", text=str(cfg["reduced-phys-bits"])),
                Element("policy", text=hex(policy))]
    children += [Element(tag, text=value) for tag, value in blobs if value is not None]
    all_attrs = (("type", sec_type),)
    if cfg.get("kernel-hashes"):
        all_attrs += (("kernelHashes", "yes"),)
    return Element("launchSecurity", all_attrs + tuple(attrs), children=tuple(children))


# -- [measurement]: rules and facts; the computation is in cgsc.measure.amd_digest --

AMD_SEV_BUILD = ("build edk2 OvmfPkg/AmdSev/AmdSevX64.dsc (OVMF.amdsev.fd), the firmware "
                 "that has SEV metadata and the kernel-hashes table")
NOT_OVMF = Rule(
    "CGS-MEASURE-010", "the firmware to measure is not an OVMF image",
    "AMD launch digests are computed over an OVMF firmware whose GUIDed footer table says "
    "where its reset vector and SEV sections are; any other file would give a digest that "
    "no launch ever produces.", "docs/attestation.md (AMD: crafted or damaged firmware); edk2 OvmfPkg/ResetVector",
    fix="Point [firmware] code (or measurement.firmware) at an OVMF build for AMD SEV "
        "(edk2 AmdSevX64).")
NO_SEV_METADATA = Rule(
    "CGS-MEASURE-011", "the firmware has no SEV metadata (SEV-ES and SEV-SNP need it)",
    "Without the SEV metadata section the firmware cannot start an SEV-ES or SEV-SNP "
    "guest, yet sev-snp-measure still prints a digest for it. Debian 12's OVMF_CODE_4M.fd "
    "is such a file.", "docs/attestation.md (AMD); edk2 OvmfPkg/AmdSev",
    fix="Use an AmdSevX64 build of edk2 (OVMF.amdsev.fd).")
NO_KERNEL_HASHES = Rule(
    "CGS-MEASURE-012", "kernel-hashes is on but the firmware has no kernel-hashes section",
    "The kernel, initrd and command line enter the measurement only through the firmware's "
    "hashes table (SNP: the SNP_KERNEL_HASHES metadata section); generic OVMF builds "
    "(OvmfPkgX64, Debian's OVMF_CODE.fd) lack it, so QEMU's hashes would never be checked.",
    "docs/attestation.md (AMD: from which inputs); AMDESE/AMDSEV#93",
    fix="Use an AmdSevX64 build of edk2, or set kernel-hashes = false.")
VCPU_TYPE = Rule(
    "CGS-MEASURE-013", "the vCPU type of the measurement is unknown",
    "SEV-ES and SEV-SNP measure every vCPU's initial state, which holds the CPUID "
    "signature (family, model, stepping) of the QEMU CPU model. With KVM, `host` and `max` "
    "take the host CPU's signature (QEMU target/i386/host-cpu.c host_cpu_instance_init), so "
    "they cannot be measured offline without measurement.vcpu-type; a named model must be "
    "one whose signature sev-snp-measure knows (vcpu_types.CPU_SIGS).",
    "docs/attestation.md (AMD: the vCPU model); virtee/sev-snp-measure vcpu_types.py",
    fix="Pin [guest] cpu to a model the message lists (EPYC-v4, EPYC-Milan, EPYC-Genoa...), "
        "or, for cpu = \"host\"/\"max\", set measurement.vcpu-type to the host's model.")
GUEST_FEATURES = Rule(
    "CGS-MEASURE-014", "guest-features is not a value QEMU launches this guest with",
    "The VMSA's SEV_FEATURES is part of the launch measurement. QEMU 9.1-11.1 (without "
    "IGVM) calls KVM_SEV_INIT2 with vmsa_features = 0; KVM adds SNPActive (bit 0) for an "
    "SEV-SNP guest and nothing for SEV-ES, whatever kvm_amd debug_swap says (it only sets "
    "the supported mask). So an SEV-SNP guest has 0x1 and an SEV-ES guest 0x0: a value "
    "without SNPActive, with vTOM (bit 1, never requested by QEMU), DebugSwap (bit 5) or "
    "reserved bits predicts a digest no launch gives.",
    "QEMU target/i386/sev.c (9.1.0 L1517-1529, 10.2.0 L1863-1908); Linux "
    "arch/x86/kvm/svm/sev.c (6.12 L431-443); docs/attestation.md",
    fix="Leave guest-features out (the only value QEMU launches is the default).")
VCPU_MISMATCH = Rule(
    "CGS-MEASURE-015", "measurement.vcpu-type differs from the CPU model QEMU runs",
    "The VMSAs carry the signature of the CPU model QEMU runs ([guest] cpu); a digest "
    "computed for another model is one no launch gives. vcpu-type is only needed when "
    "cpu = \"host\" or \"max\" (whose signature is the host's); with a named model it may "
    "only repeat it.", "docs/attestation.md (AMD: the vCPU model)",
    fix="Remove measurement.vcpu-type, or make [guest] cpu the model you meant.")
LEGACY_ES = Rule(
    "CGS-MEASURE-016", "an SEV-ES guest on KVM's legacy launch path cannot be measured",
    "Unless legacy-vm-type = \"off\", QEMU launches SEV-ES with KVM's legacy KVM_SEV_ES_INIT "
    "(QEMU <= 9.0 always; 9.1-11.1 for \"on\" and for \"auto\", the default). That path leaves "
    "the VMSA's x87/SSE state zero (and Linux 6.6-6.9 add DebugSwap when kvm_amd "
    "debug_swap=Y), while sev-snp-measure 0.0.10+ reproduces only the KVM_SEV_INIT2 VMSA "
    "(MXCSR 0x1f80, FCW 0x37f, SEV_FEATURES 0): the digest would be wrong.",
    "Linux arch/x86/kvm/svm/sev.c (6.12 L480-500, L862-865); QEMU target/i386/sev.c "
    "(9.1.0 L1394-1399); sev-snp-measure vmsa.py L149-155; docs/attestation.md",
    fix="Set legacy-vm-type = \"off\" in [confidential.sev-es] (QEMU >= 9.1, Linux >= 6.10), "
        "or remove [measurement].")
UNMEASURED = Rule(
    "CGS-MEASURE-017", "the kernel, initrd or command line is not in the launch measurement",
    "Without kernel-hashes, QEMU loads the kernel, initrd and command line through fw_cfg "
    "after the launch is measured: the attestation report says nothing about them, and "
    "anyone who can change them on the host changes the guest unnoticed. The manifest "
    "lists them under attestation.unmeasured.",
    "QEMU docs/system/i386/amd-memory-encryption.rst (kernel-hashes); AMDESE/AMDSEV#93",
    fix="Set kernel-hashes = true (with an AmdSevX64 firmware), or waive with a reason "
        "(for example when the firmware measures the kernel into a vTPM).",
    severity="warning")
MALFORMED = Rule(
    "CGS-MEASURE-018", "the firmware's SEV entries are malformed",
    "QEMU takes the SEV-ES reset address, the kernel-hashes table area and the SEV-SNP "
    "metadata sections from the firmware's GUIDed table; sev-snp-measure reads them without "
    "checking. A crafted or damaged table (offsets outside the image, sections that overlap, "
    "are not whole pages, lie outside guest RAM or have unknown types) launches differently "
    "or not at all, and the library would crash or print a digest no launch gives.",
    "QEMU target/i386/sev.c (snp_populate_metadata_pages, sev_es_parse_reset_block, "
    "sev_add_kernel_loader_hashes), hw/i386/pc_sysfw_ovmf.c; edk2 OvmfSevMetadata.asm",
    fix="Use an unmodified edk2 AmdSevX64 build (OVMF.amdsev.fd), or give the guest the RAM "
        "its metadata sections need.")

# SEV_FEATURES bits (AMD64 APM vol. 2, "SEV_FEATURES" in the VMSA) a message names.
FEATURE_BITS = {0: "SNPActive", 1: "VirtualTOM", 5: "DebugSwap", 9: "SecureTSC"}
# The one SEV_FEATURES value QEMU 9.1-11.1 (without IGVM) launches each guest with.
LAUNCHED_FEATURES = {"sev-es": 0x0, "sev-snp": 0x1}
HOST_DEPENDENT_CPUS = ("host", "max")   # KVM gives them the host CPU's family/model/stepping
UNMEASURED_INPUTS = ("kernel", "initrd", "cmdline")


def check_firmware(d, guest, fw, kernel_hashes: bool):
    """(the image's amd_digest.Firmware, diagnostics): the firmware fits the mechanism
    before any digest is computed (`d`: amd_digest). The image is read and parsed once
    per invocation, whichever guests use it; the checks are this guest's."""
    from ..measure import sev_metadata
    mechanism = guest.mechanism.name
    image = fw.derived("amd-firmware", d.firmware)
    if image.facts.table is None:
        return image, [NOT_OVMF.error(fw.key, f"{fw.given} is not an OVMF firmware image "
                                      "(no GUIDed footer table, or a broken one)", AMD_SEV_BUILD)]
    memory = guest.memory_mib << 20
    found = fw.memo(("amd-problems", mechanism, kernel_hashes, memory),   # a fleet has a few
                    lambda: sev_metadata.problems(None, mechanism, kernel_hashes, memory,
                                                  image.facts))
    if found:
        return image, [MALFORMED.error(fw.key, f"{fw.given}: {problem}", AMD_SEV_BUILD +
                                       " (an unmodified one)") for problem in found]
    ovmf = image.ovmf
    if ovmf is None:
        return image, [NOT_OVMF.error(fw.key, f"{fw.given} has a broken OVMF table "
                                      f"({image.broken})", AMD_SEV_BUILD)]
    errors = []
    if mechanism != "sev" and not d.has_sev_metadata(ovmf):
        errors.append(NO_SEV_METADATA.error(
            fw.key, f"{fw.given} has no SEV metadata, so it cannot start an "
            f"{'SEV-SNP' if mechanism == 'sev-snp' else 'SEV-ES'} guest", AMD_SEV_BUILD))
    elif kernel_hashes:
        if mechanism == "sev-snp":
            ok = d.has_snp_kernel_hashes(ovmf) and d.has_sev_hashes_table(ovmf)
            what = ("no SNP_KERNEL_HASHES metadata section" if not d.has_snp_kernel_hashes(ovmf)
                    else "no SEV hashes table")
        else:
            ok = d.has_sev_hashes_table(ovmf)
            what = "no SEV hashes table"
        if not ok:
            errors.append(NO_KERNEL_HASHES.error(
                fw.key, f"{fw.given} has {what}: kernel-hashes = true cannot be measured "
                "(it is not an AmdSevX64 build)", AMD_SEV_BUILD + ", or set kernel-hashes = false"))
    return image, errors


def vcpu_type(guest) -> str:
    """The CPU model whose signature the VMSAs carry: the one QEMU runs, or for a model
    whose signature is the host's, the one measurement.vcpu-type names."""
    if guest.cpu in HOST_DEPENDENT_CPUS:
        return (guest.measurement or {}).get("vcpu-type") or guest.cpu
    return guest.cpu


def vcpu_signature(d, guest, key) -> Tuple[Optional[int], List[Diagnostic]]:
    name = vcpu_type(guest)
    signature = d.cpu_signature(name)
    if signature is not None:
        return signature, []
    return None, [VCPU_TYPE.error(key, f"{name!r} is not a vCPU type {d.LIBRARY} knows",
                                  "known types: " + ", ".join(d.known_vcpu_types()))]


def measurement_checks(guest, with_vcpus: bool) -> Iterable[Diagnostic]:
    """[measurement] rules that need no file."""
    table, cfg, name = guest.measurement, guest.confidential, guest.mechanism.name
    if guest.kernel_image and not cfg.get("kernel-hashes"):
        where = guest.mech_path + (("kernel-hashes",) if "kernel-hashes" in cfg else ())
        yield UNMEASURED.warning(where, "kernel-hashes is off, so the launch "
                                 "measurement does not cover the kernel, the initrd or the "
                                 "command line: attestation.unmeasured lists them",
                                 "set kernel-hashes = true (with an AmdSevX64 firmware), "
                                 "or waive CGS-MEASURE-017 with the reason")
    if not with_vcpus:
        return
    given = table.get("vcpu-type")
    if guest.cpu in HOST_DEPENDENT_CPUS and given is None:
        yield VCPU_TYPE.error(("guest", "cpu"), f'"{guest.cpu}" has no fixed vCPU signature '
                              "(KVM gives it the host CPU's), so the launch measurement "
                              "cannot be computed",
                              'pin cpu = "EPYC-v4" (or EPYC-Milan, EPYC-Genoa...), or set '
                              "[measurement] vcpu-type to the host's CPU model")
    elif guest.cpu not in HOST_DEPENDENT_CPUS and given not in (None, guest.cpu):
        yield VCPU_MISMATCH.error(("measurement", "vcpu-type"),
                                  f'is "{given}" but QEMU runs [guest] cpu = "{guest.cpu}", '
                                  f"whose signature the launch measurement carries",
                                  f'remove vcpu-type (only cpu = "host" or "max" needs it), '
                                  f'or set [guest] cpu = "{given}"')
    if name == "sev-es" and cfg.get("legacy-vm-type") != "off":
        given_type = cfg.get("legacy-vm-type")
        yield LEGACY_ES.error(
            guest.mech_path + (("legacy-vm-type",) if given_type else ()),
            (f'is "{given_type}"' if given_type else "legacy-vm-type is not set (QEMU's "
             "default, auto, is the legacy path)")
            + ": QEMU launches SEV-ES with KVM's legacy KVM_SEV_ES_INIT, whose VMSA (x87/SSE "
            "state zero; DebugSwap on Linux 6.6-6.9 with debug_swap=Y) sev-snp-measure "
            "cannot reproduce",
            'set legacy-vm-type = "off" (QEMU >= 9.1, Linux >= 6.10) to get a predictable '
            "digest, or remove [measurement]")
    if "guest-features" in table:
        problem = features_problem(name, table["guest-features"])
        if problem:
            launched = LAUNCHED_FEATURES[name]
            yield GUEST_FEATURES.error(
                ("measurement", "guest-features"),
                f"{table['guest-features']:#x} is not a value QEMU launches an "
                f"{guest.mechanism.title} guest with: {problem}",
                f"values QEMU 9.1-11.1 launches it with: {launched:#x} (KVM_SEV_INIT2 with no "
                "VMSA features requested, whatever kvm_amd debug_swap says); leave "
                "guest-features out")


def features_problem(mechanism: str, value: int) -> str:
    """Why `value` is not the SEV_FEATURES QEMU launches `mechanism` with; "" when it is."""
    launched = LAUNCHED_FEATURES[mechanism]
    why = []
    if launched & 1 and not value & 1:
        why.append("it lacks bit 0 (SNPActive), which every SEV-SNP guest's VMSA has")
    extra = value & ~launched
    if extra:
        names = {**FEATURE_BITS, **({0: "SNPActive, SEV-SNP only"} if not launched & 1 else {})}
        named = [f"bit {b} ({names[b]})" for b in sorted(names) if extra >> b & 1]
        rest = extra & ~sum(1 << b for b in names)
        if rest:
            named.append(f"bits {rest:#x}")
        why.append(f"it sets {', '.join(named)}, which QEMU never requests without IGVM")
    return "; ".join(why)


def unmeasured(guest) -> Tuple[str, ...]:
    """The boot inputs a direct kernel boot without kernel-hashes takes unmeasured: QEMU
    hands the kernel, the initrd (or none) and the command line (even an empty one) to the
    firmware through fw_cfg, after the launch measurement."""
    if not guest.kernel_image or guest.confidential.get("kernel-hashes"):
        return ()
    return UNMEASURED_INPUTS


def prepare(guest, files) -> None:
    """attest()'s work on the firmware alone, done ahead (Mechanism.prepare): the measuring
    library loaded, the image parsed and checked, and for SEV-SNP the digest of its pages."""
    firmware = files.get("firmware")
    if firmware is None:
        return
    try:
        from ..measure import amd_digest as m
    except ImportError:
        return
    image, errors = check_firmware(m, guest, firmware,
                                   bool(guest.confidential.get("kernel-hashes")))
    if errors or guest.mechanism.name != "sev-snp":
        return
    try:
        _snp_start(m, firmware, image)
    except m.LIBRARY_ERRORS:
        pass   # attest() meets it again and reports it


def _snp_start(m, firmware, image):
    """The firmware's pages and fixed sections (amd_digest.snp_start), once per image."""
    return firmware.derived("amd-snp-start", lambda data: m.snp_start(image.ovmf, data))


def attest(guest, files, policy: int):
    """(Attested, diagnostics) for SEV, SEV-ES and SEV-SNP: firmware checks, then the
    launch digest from sev-snp-measure. The file-free rules (measurement_checks) passed."""
    from ..measure.stage import LIBRARY, Attested
    try:
        from ..measure import amd_digest as m
    except ImportError:
        return None, [LIBRARY.error(("measurement",), "sev-snp-measure is not installed "
                                    "(it needs Python >= 3.10)",
                                    "install cgsc with its dependencies on Python >= 3.10")]
    name = guest.mechanism.name
    kernel_hashes = bool(guest.confidential.get("kernel-hashes"))
    firmware = files["firmware"]
    image, errors = check_firmware(m, guest, firmware, kernel_hashes)
    with_vcpus = name != "sev"
    features = LAUNCHED_FEATURES.get(name, 0)
    signature = 0
    if with_vcpus:
        key = ("measurement", "vcpu-type") if guest.cpu in HOST_DEPENDENT_CPUS else ("guest", "cpu")
        signature, more = vcpu_signature(m, guest, key)
        errors += more
    if errors:
        return None, errors
    kernel = files.get("kernel") if kernel_hashes else None
    initrd = files.get("initrd") if kernel_hashes else None
    cmdline = guest.kernel_cmdline if kernel_hashes else None
    kernel_sha = bytes.fromhex(kernel.sha256) if kernel else None
    initrd_sha = bytes.fromhex(initrd.sha256) if initrd else None
    snp = name == "sev-snp"
    try:
        start = None
        if snp:   # the firmware's pages and fixed sections, once per image
            start = _snp_start(m, firmware, image)
        # ... and what the kernel, initrd and command line add, once per image and set of them
        before = firmware.memo(("amd-before-vmsas", snp, kernel_sha, initrd_sha, cmdline),
                               lambda: m.before_vmsas(name, image, firmware.state, start,
                                                      kernel_sha, initrd_sha, cmdline))
        # ... and this guest's vCPUs: a fleet's guests that share all of it share the digest
        raw = firmware.memo(("amd-launch", name, snp, kernel_sha, initrd_sha, cmdline,
                             guest.vcpus, signature, features),
                            lambda: m.launch_digest(name, guest.vcpus, signature, features,
                                                    image, before))
    except m.LIBRARY_ERRORS as exc:   # a crafted image the checks above let through
        return None, [MALFORMED.error(firmware.key, f"{firmware.given} cannot be measured: "
                                      f"{m.LIBRARY} raised {type(exc).__name__}: {exc}",
                                      AMD_SEV_BUILD + " (an unmodified one)")]
    inputs = {}
    if with_vcpus:
        inputs.update({"vcpus": guest.vcpus, "vcpu-type": vcpu_type(guest),
                       "vcpu-signature": f"{signature:#x}", "guest-features": f"{features:#x}"})
    inputs.update({"kernel-hashes": kernel_hashes, "cmdline": cmdline, "vmm-type": "QEMU",
                   "measured-by": m.library()})
    return Attested(digest=raw.hex(), algorithm="sha384" if name == "sev-snp" else "sha256",
                    inputs=inputs, report={"policy": f"{policy:#x}"},
                    unmeasured=unmeasured(guest)), []

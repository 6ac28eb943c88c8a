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
    "qemu.md section 3 (kernel-hashes); AMDESE/AMDSEV#93, #262",
    fix="Add [kernel] image (with an AmdSev OVMF build that has the hashes table), or set kernel-hashes = false.")
IRQCHIP = Rule(
    "CGS-AMD-002", "SEV-ES and SEV-SNP need an in-kernel irqchip",
    "KVM cannot emulate the local APIC of an encrypted-state guest in user space; QEMU "
    "refuses kernel-irqchip=off ('SEV-ES guests require in-kernel irqchip support').",
    "qemu.md section 3, machine-level requirements",
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
    "no launch ever produces.", "reference/measurement/README.md; edk2 OvmfPkg/ResetVector",
    fix="Point [firmware] code (or measurement.firmware) at an OVMF build for AMD SEV "
        "(edk2 AmdSevX64).")
NO_SEV_METADATA = Rule(
    "CGS-MEASURE-011", "the firmware has no SEV metadata (SEV-ES and SEV-SNP need it)",
    "Without the SEV metadata section the firmware cannot start an SEV-ES or SEV-SNP "
    "guest, yet sev-snp-measure still prints a digest for it. Debian 12's OVMF_CODE_4M.fd "
    "is such a file.", "reference/measurement/README.md (pitfall)",
    fix="Use an AmdSevX64 build of edk2 (OVMF.amdsev.fd).")
NO_KERNEL_HASHES = Rule(
    "CGS-MEASURE-012", "kernel-hashes is on but the firmware has no kernel-hashes section",
    "The kernel, initrd and command line enter the measurement only through the firmware's "
    "hashes table (SNP: the SNP_KERNEL_HASHES metadata section); generic OVMF builds "
    "(OvmfPkgX64, Debian's OVMF_CODE.fd) lack it, so QEMU's hashes would never be checked.",
    "reference/measurement/README.md; AMDESE/AMDSEV#93",
    fix="Use an AmdSevX64 build of edk2, or set kernel-hashes = false.")
VCPU_TYPE = Rule(
    "CGS-MEASURE-013", "the vCPU type of the measurement is unknown",
    "SEV-ES and SEV-SNP measure every vCPU's initial state, which holds the CPUID "
    "signature (family, model, stepping) of the QEMU CPU model. `host` has no fixed "
    "signature, so it cannot be measured offline.", "reference/measurement/README.md",
    fix="Pin [guest] cpu to a named model (EPYC-v4, EPYC-Milan, EPYC-Genoa), or set "
        "measurement.vcpu-type to the host's model.")
GUEST_FEATURES = Rule(
    "CGS-MEASURE-014", "guest-features cannot be measured for this mechanism",
    "sev-snp-measure measures SEV-ES vCPUs without SEV_FEATURES (as KVM's legacy SEV-ES "
    "launch does), so an SEV-ES guest launched with debug_swap (0x20) cannot be predicted. "
    "Bit 0 (SNPActive) is meaningful only for SEV-SNP.", "reference/measurement/README.md",
    fix="Leave guest-features out for SEV-ES (and turn kvm_amd debug_swap off), or use SEV-SNP.")
DEBUG_SWAP = 0x20
DEBUG_SWAP_PARAM = "/sys/module/kvm_amd/parameters/debug_swap"


def check_firmware(d, mechanism: str, fw, kernel_hashes: bool) -> List[Diagnostic]:
    """The firmware fits the mechanism before any digest is computed (`d`: amd_digest)."""
    ovmf, broken = d.read_ovmf(fw.read_from)
    if ovmf is None and broken is None:
        return [NOT_OVMF.error(fw.key, f"{fw.given} is not an OVMF firmware image "
                               "(no GUIDed footer table)", AMD_SEV_BUILD)]
    if ovmf is None:
        return [NOT_OVMF.error(fw.key, f"{fw.given} has a broken OVMF table ({broken})",
                               AMD_SEV_BUILD)]
    errors = []
    if mechanism != "sev" and not d.has_sev_metadata(ovmf):
        errors.append(NO_SEV_METADATA.error(
            fw.key, f"{fw.given} has no SEV metadata, so it cannot start an "
            f"{'SEV-SNP' if mechanism == 'sev-snp' else 'SEV-ES'} guest", AMD_SEV_BUILD))
    elif kernel_hashes:
        if mechanism == "sev-snp":
            ok = d.has_snp_kernel_hashes(ovmf)
            what = "no SNP_KERNEL_HASHES metadata section"
        else:
            ok = d.has_sev_hashes_table(ovmf)
            what = "no SEV hashes table"
        if not ok:
            errors.append(NO_KERNEL_HASHES.error(
                fw.key, f"{fw.given} has {what}: kernel-hashes = true cannot be measured "
                "(it is not an AmdSevX64 build)", AMD_SEV_BUILD + ", or set kernel-hashes = false"))
    return errors


def vcpu_signature(d, guest, key) -> Tuple[Optional[int], List[Diagnostic]]:
    name = vcpu_type(guest)
    signature = d.cpu_signature(name)
    if signature is not None:
        return signature, []
    return None, [VCPU_TYPE.error(key, f"{name!r} is not a vCPU type {d.LIBRARY} knows",
                                  "known types: " + ", ".join(d.known_vcpu_types()))]


def vcpu_type(guest) -> str:
    return (guest.measurement or {}).get("vcpu-type") or guest.cpu


def measurement_checks(guest, with_vcpus: bool) -> Iterable[Diagnostic]:
    if not with_vcpus:
        return
    table = guest.measurement
    if "vcpu-type" not in table and guest.cpu == "host":
        yield VCPU_TYPE.error(("guest", "cpu"), '"host" has no fixed vCPU signature, so the '
                              "launch measurement cannot be computed",
                              'pin cpu = "EPYC-v4" (or EPYC-Milan, EPYC-Genoa...), or set '
                              "[measurement] vcpu-type to the host's CPU model")


def debug_swap_param(features: int):
    """The kvm_amd setting that decides whether the host adds DebugSwap to SEV_FEATURES."""
    if features & DEBUG_SWAP:
        return HostParam(DEBUG_SWAP_PARAM, ("Y", "1"),
                         f"the measurement assumes guest-features {features:#x} (debug_swap on), "
                         "but kvm_amd debug_swap is off: the launch digest would differ")
    return HostParam(DEBUG_SWAP_PARAM, ("N", "0", "absent"),
                     f"the measurement assumes guest-features {features:#x} (debug_swap off), "
                     "but kvm_amd debug_swap is on: the launch digest would differ "
                     "(set guest-features = 0x21, or load kvm_amd with debug_swap=0)")


def attest(guest, files, policy: int):
    """(Attested, diagnostics) for SEV, SEV-ES and SEV-SNP: firmware checks, then the
    launch digest from sev-snp-measure."""
    from ..measure.stage import LIBRARY, Attested
    try:
        from ..measure import amd_digest as m
    except ImportError:
        return None, [LIBRARY.error(("measurement",), "sev-snp-measure is not installed "
                                    "(it needs Python >= 3.10)",
                                    "install cgsc with its dependencies on Python >= 3.10")]
    name, cfg, table = guest.mechanism.name, guest.confidential, guest.measurement
    kernel_hashes = bool(cfg.get("kernel-hashes"))
    errors = check_firmware(m, name, files["firmware"], kernel_hashes)
    with_vcpus = name != "sev"
    features = table.get("guest-features", 1)
    signature = 0
    if with_vcpus:
        key = ("measurement", "vcpu-type") if "vcpu-type" in table else ("guest", "cpu")
        signature, more = vcpu_signature(m, guest, key)
        errors += more
    if name == "sev-es":
        if features & ~1:
            errors.append(GUEST_FEATURES.error(
                ("measurement", "guest-features"), f"{features:#x} cannot be measured for SEV-ES "
                "(sev-snp-measure measures SEV-ES vCPUs without SEV_FEATURES)",
                "leave guest-features out and load kvm_amd with debug_swap=0, or use SEV-SNP"))
        features = 0
    if errors:
        return None, errors
    kernel = files.get("kernel") if kernel_hashes else None
    initrd = files.get("initrd") if kernel_hashes else None
    cmdline = guest.kernel_cmdline if kernel_hashes else None
    try:
        raw = m.launch_digest(name, guest.vcpus, signature, files["firmware"].read_from,
                              kernel.read_from if kernel else None,
                              initrd.read_from if initrd else None, cmdline, features)
    except (RuntimeError, ValueError, OSError) as exc:
        return None, [NOT_OVMF.error(files["firmware"].key, f"{files['firmware'].given} cannot "
                                     f"be measured: {exc}", AMD_SEV_BUILD)]
    inputs = {}
    if with_vcpus:
        inputs.update({"vcpus": guest.vcpus, "vcpu-type": vcpu_type(guest),
                       "vcpu-signature": f"{signature:#x}", "guest-features": f"{features:#x}"})
    inputs.update({"kernel-hashes": kernel_hashes, "cmdline": cmdline, "vmm-type": "QEMU",
                   "measured-by": m.library()})
    # KVM adds DebugSwap itself only on the legacy launch path (KVM_SEV_ES_INIT, QEMU's
    # default for sev-guest); legacy-vm-type = off gives KVM_SEV_INIT2, where it cannot.
    legacy = name != "sev-es" or cfg.get("legacy-vm-type") != "off"
    params = (debug_swap_param(features),) if with_vcpus and legacy else ()
    return Attested(digest=raw.hex(), algorithm="sha384" if name == "sev-snp" else "sha256",
                    inputs=inputs, report={"policy": f"{policy:#x}"}, params=params), []

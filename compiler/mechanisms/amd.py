"""What AMD SEV, SEV-ES and SEV-SNP have in common."""

from __future__ import annotations

from typing import Iterable, Tuple

from cgsc.diagnostics import Diagnostic
from cgsc.mechanisms.common import scan_extra_args
from cgsc.plan import Element, HostParam
from cgsc.qemu import Prop
from cgsc.rules import Rule

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

"""Cross-field rules every mechanism shares; the mechanism's own rules run after these.

The facts (which arch, which machine, which firmware mode) come from the mechanism
module; this module only knows how to compare them with the spec.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from ..core.diagnostics import Diagnostic, KeyPath
from ..core.rules import Rule
from ..spec.model import Guest
from . import confine, kubevirt_rules, runtime_rules

ARCH = Rule("CGS-GUEST-001", "the guest arch does not fit the mechanism",
            "Each mechanism exists on one architecture only: SEV, SEV-ES, SEV-SNP and TDX on "
            "x86_64, PEF on ppc64, PV on s390x.", "qemu.md section 1",
            fix="Set [guest] arch to the mechanism's architecture.")
MACHINE = Rule("CGS-GUEST-002", "the machine type does not fit the mechanism",
               "SEV-SNP and TDX need q35; PEF needs pseries; PV needs s390-ccw-virtio. cgsc "
               "accepts only the machine family each mechanism is tested and documented with.",
               "qemu.md section 1; libvirt.md section 8",
               fix="Leave machine out (cgsc picks the right one) or use the family the message names.")
TOPOLOGY = Rule("CGS-GUEST-003", "the vCPU topology does not multiply to vcpus",
                "QEMU refuses an -smp whose sockets × dies × cores × threads is not the vCPU "
                "count ('Invalid CPU topology'), libvirt a <topology> that does not match <vcpu>, "
                "KubeVirt derives the vCPU count from the product: each target would otherwise "
                "start a different guest, or none.", "QEMU hw/core/machine-smp.c; libvirt "
                "formatdomain \"CPU model and topology\"",
                fix="Make sockets × dies × cores × threads equal [guest] vcpus (or leave cores "
                    "out: cgsc takes what is left).")
FW_MISSING = Rule("CGS-FW-001", "x86_64 confidential guests need [firmware] code",
                  "An encrypted x86 guest boots through OVMF/TDVF built for the mechanism; "
                  "QEMU's default SeaBIOS cannot start it.", "qemu.md sections 3-5",
                  fix="Add [firmware] code with an OVMF/TDVF image built for the mechanism.")
FW_VARS = Rule("CGS-FW-002", "SEV-SNP and TDX take one stateless firmware image (no vars)",
               "SNP and TDX guests have no read-only memory slots, so pflash fails "
               "('pflash with kvm requires KVM readonly memory support'); they boot with -bios.",
               "qemu.md section 12 item 4; AMDESE/AMDSEV#223",
               fix="Remove vars and use a stateless image (OVMF.amdsev.fd, OVMF.inteltdx.fd).")
FW_NONE = Rule("CGS-FW-003", "PEF and s390x PV take no [firmware] table",
               "pseries boots SLOF and s390x boots its own loader; a firmware image would be "
               "ignored or break the boot.", "docs/reference/keys.md [firmware]",
               fix="Remove the [firmware] table.")
KERNEL = Rule("CGS-KERNEL-001", "initrd and cmdline need a kernel image",
              "QEMU refuses -initrd and -append without -kernel.", "qemu-options",
              fix="Add [kernel] image, or remove initrd/cmdline.")
NET_MODE = Rule("CGS-NET-001", "a [[net]] key does not fit its mode",
                "mode = \"tap\" needs `tap`, mode = \"bridge\" needs `bridge`, and neither "
                "key means anything in another mode.", "docs/reference/keys.md [[disk]], [[net]], [console]",
                fix="Give the key the mode needs and remove the others.")
NET_MAC = Rule("CGS-NET-002", "two interfaces share a MAC address",
               "Duplicate MACs on one guest break ARP and DHCP in ways that are hard to trace.",
               "IEEE 802: a MAC address names one interface on a link (ARP, RFC 826)",
               fix="Give each interface its own mac (or leave mac out: cgsc derives distinct ones).")
DISK_DUP = Rule("CGS-DISK-001", "the same disk image is attached twice",
                "Two writers on one image corrupt it.",
                "QEMU image locking: the second open fails with 'Failed to get \"write\" lock'",
                fix="Attach each image once.")
CONSOLE = Rule("CGS-CONSOLE-001", "[console] path does not fit serial",
               "serial = \"socket\" and \"file\" need a path; the other kinds take none.",
               "QEMU -chardev socket,path= and -chardev file,path=",
               fix="Give path for socket/file consoles; remove it otherwise.")
EXTRA_ARGS = Rule("CGS-QEMU-001", "extra-args bypass cgsc's checks",
                  "extra-args go to QEMU verbatim; cgsc cannot check what they do to the "
                  "guest's confidentiality.",
                  "docs/architecture.md (the plan is the contract); QEMU takes later options "
                  "over earlier ones",
                  fix="Prefer a spec key; if the arguments are needed, review them and waive the warning with a reason.",
                  severity="warning")
NO_SANDBOX = Rule(
    "CGS-QEMU-003", "QEMU's seccomp sandbox is off",
    "Without -sandbox a compromised QEMU may spawn processes, raise privileges and use "
    "obsolete system calls; the guest's confidentiality then rests on the host kernel alone.",
    "qemu-options -sandbox",
    fix="Set [qemu] sandbox = true (the default).", severity="warning")
EXTRA_BREAKS = Rule("CGS-QEMU-002", "extra-args override what confidentiality depends on",
                    "Turning the IOMMU platform off or relinking confidential-guest-support "
                    "leaves a guest that starts but is not protected as reviewed.",
                    "QEMU virtio iommu_platform; -machine confidential-guest-support",
                    fix="Remove the argument; cgsc sets these from the mechanism.")

def check(guest: Guest) -> List[Diagnostic]:
    out: List[Diagnostic] = []
    for rule_set in (_arch_machine, _topology, _firmware, _kernel, _devices, _sockets, confine.check,
                     _extra_args, runtime_rules.check, kubevirt_rules.check):
        out.extend(rule_set(guest))
    out.extend(guest.mechanism.check(guest))
    return out


def _arch_machine(g: Guest) -> Iterable[Diagnostic]:
    mech = g.mechanism
    if g.arch != mech.arch:
        said = "" if g.arch_given else " (the default)"
        yield ARCH.error(("guest", "arch"), f"is {g.arch}{said}, but {mech.title} needs {mech.arch}",
                         f'set arch = "{mech.arch}" in [guest]')
    elif not mech.fits_machine(g.machine):
        yield MACHINE.error(("guest", "machine"), f"{g.machine!r} does not fit {mech.title}",
                            f"use {mech.machine_hint}, or leave machine out")


def _topology(g: Guest) -> Iterable[Diagnostic]:
    t = g.topology
    if t == ():
        return   # a schema error says what is wrong
    if t is None or t[0] * t[1] * t[2] * t[3] != g.vcpus:
        shown = "" if t is None else f" = {t[0] * t[1] * t[2] * t[3]}"
        laid = " × ".join(f"{n} {k}" for n, k in zip(t or (), ("sockets", "dies", "cores",
                                                                 "threads")))
        yield TOPOLOGY.error(("guest", "topology"),
                             (f"{laid}{shown}" if t else "sockets × dies × threads does not "
                              "divide vcpus") + f", but vcpus is {g.vcpus}",
                             "make the product equal vcpus, or leave cores out")


def _firmware(g: Guest) -> Iterable[Diagnostic]:
    mode = g.mechanism.firmware
    if mode == "none":
        if g.has_firmware_table:
            yield FW_NONE.error(("firmware",), f"{g.mechanism.title} takes no firmware table",
                                "remove [firmware]")
        return
    if not g.firmware_code and not _cluster_only(g):
        yield FW_MISSING.error(("firmware",) if g.has_firmware_table else (),
                               f"{g.mechanism.title} needs [firmware] code",
                               f'add [firmware] code = "{g.mechanism.firmware_example}" '
                               f"(or another image built for {g.mechanism.title})")
    if mode == "bios" and g.firmware_vars:
        yield FW_VARS.error(("firmware", "vars"),
                            f"{g.mechanism.title} boots one stateless image with -bios; "
                            "a variable store cannot be used",
                            "remove vars and use a stateless build (OVMF.amdsev.fd / OVMF.inteltdx.fd)")


CLUSTER_TARGETS = ("kubevirt",)   # targets whose manifests the cluster, not a host, launches


def _cluster_only(g: Guest) -> bool:
    """A spec that builds only cluster manifests ([targets] build = ["kubevirt"]): the
    cluster chooses the firmware build, so no host file need be named. A host target
    asked for with -t still refuses the plan (missing_firmware)."""
    return g.build_targets is not None and bool(g.build_targets) and \
        set(g.build_targets) <= set(CLUSTER_TARGETS)


def missing_firmware(g: Guest) -> Tuple[Diagnostic, ...]:
    """What a host target refuses when a cluster-only spec names no firmware."""
    if g.mechanism.firmware == "none" or g.firmware_code:
        return ()
    return (FW_MISSING.error((), f"{g.mechanism.title} needs [firmware] code for a host target",
                             f'add [firmware] code = "{g.mechanism.firmware_example}" (or '
                             f"another image built for {g.mechanism.title})"),)


def _kernel(g: Guest) -> Iterable[Diagnostic]:
    if g.kernel_image or g.mechanism.sealed_kernel_args:
        return  # such a mechanism says more precisely what is wrong
    for key, value in (("initrd", g.kernel_initrd), ("cmdline", g.kernel_cmdline)):
        if value is not None:
            yield KERNEL.error(("kernel", key), "is given without [kernel] image",
                               "add image, or remove this key")


def _devices(g: Guest) -> Iterable[Diagnostic]:
    seen_macs = {}
    for i, n in enumerate(g.nets):
        needs = {"tap": "tap", "bridge": "bridge"}.get(n.mode)
        for key in ("tap", "bridge"):
            value = getattr(n, key)
            if key == needs and value is None:
                yield NET_MODE.error(("net", i), f'mode = "{n.mode}" needs `{key}`',
                                     f'add {key} = "..." with the host interface name')
            elif key != needs and value is not None:
                yield NET_MODE.error(("net", i, key), f'does not apply to mode = "{n.mode}"',
                                     f"remove {key}")
        if n.mac in seen_macs:
            yield NET_MAC.error(("net", i, "mac") if n.mac_given else ("net", i),
                                f"MAC {n.mac} is also used by net[{seen_macs[n.mac]}]",
                                "give each interface its own mac")
        seen_macs.setdefault(n.mac, i)
    seen_paths = {}
    for i, d in enumerate(g.disks):
        if d.path in seen_paths:
            yield DISK_DUP.error(("disk", i, "path"), f"is also disk[{seen_paths[d.path]}]",
                                 "attach each image once")
        seen_paths.setdefault(d.path, i)
    wants_path = g.console in ("socket", "file")
    if wants_path and not g.console_path:
        yield CONSOLE.error(("console",), f'serial = "{g.console}" needs `path`',
                            "add path = \"/run/...\"")
    elif not wants_path and g.console_path:
        yield CONSOLE.error(("console", "path"), f'does not apply to serial = "{g.console}"',
                            "remove path")


def _sockets(g: Guest) -> Iterable[Diagnostic]:
    yield from check_socket_path(("qmp", "socket"), g.qmp_socket)
    if g.console == "socket":
        yield from check_socket_path(("console", "path"), g.console_path)


def _extra_args(g: Guest) -> Iterable[Diagnostic]:
    if not g.sandbox:
        yield NO_SANDBOX.warning(("qemu", "sandbox"), "is false", "set sandbox = true")
    if g.extra_args:
        yield EXTRA_ARGS.warning(("qemu", "extra-args"),
                                 f"{len(g.extra_args)} argument(s) passed to QEMU unchecked",
                                 "prefer a spec key; review these arguments by hand")
    for i, needle in scan_extra_args(g.extra_args, ("iommu_platform=off",
                                                    "confidential-guest-support",
                                                    "memory-encryption=")):
        yield EXTRA_BREAKS.error(("qemu", "extra-args", i), f"contains {needle}",
                                 "remove it; cgsc sets these from the mechanism")


# -- helpers the mechanisms' own rules use too --

def scan_extra_args(extra_args: Iterable[str], needles: Iterable[str]):
    """(index, needle) for every extra argument that contains a forbidden needle."""
    for i, arg in enumerate(extra_args):
        for needle in needles:
            if needle in arg:
                yield i, needle


SOCKET_LEN = Rule("CGS-PATH-001", "a unix socket path is longer than 107 bytes",
                  "sun_path holds 108 bytes including the NUL; QEMU cannot bind or connect to "
                  "a longer path.", "unix(7)",
                  fix="Use a shorter socket path, e.g. under /run.")
SUN_PATH_MAX = 107


def check_socket_path(path: KeyPath, value: Optional[str]) -> Iterable[Diagnostic]:
    if value and len(value.encode()) > SUN_PATH_MAX:
        yield SOCKET_LEN.error(path, f"is {len(value.encode())} bytes long; a unix socket "
                               f"path holds at most {SUN_PATH_MAX}",
                               "use a shorter path, e.g. under /run")

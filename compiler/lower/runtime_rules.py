"""Rules about how the artifacts behave on a host: restart after a guest reboot, port
forwards, and virtio devices that extra-args add behind cgsc's back."""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from .qemu import json_object, keyval_split

RESTART = Rule(
    "CGS-SYSTEMD-001", "the unit does not restart a guest that reboots",
    "SEV-ES, SEV-SNP and TDX guests cannot be reset in place: a reboot inside the guest ends "
    "QEMU with exit status 0. With Restart=no, on-failure, on-abnormal, on-abort or on-watchdog "
    "systemd sees a clean exit and leaves the guest powered off.",
    "QEMU system/runstate.c qemu_system_reset_request ('cpus are not resettable, terminating'); "
    "systemd.service(5) Restart=",
    fix="Leave restart out (cgsc then writes Restart=always), or set it to always or on-success.",
    severity="warning")
FORWARD = Rule(
    "CGS-NET-003", "a port forward does not fit",
    "forward is QEMU user networking's hostfwd: it exists only for mode = \"user\", and two "
    "forwards of one host port (0.0.0.0 overlaps every address) make QEMU fail to start.",
    "qemu-options -netdev user,hostfwd", fix="Forward each host port once, on a user-mode [[net]].")
VIRTIO_IOMMU = Rule(
    "CGS-QEMU-004", "extra-args add a virtio device without iommu_platform=on",
    "A confidential guest's memory is encrypted: a virtio device must use the guest's DMA API "
    "(bounce buffers in shared memory), which iommu_platform=on turns on. cgsc sets it on every "
    "device it writes; a device from extra-args without it cannot do I/O, or makes the guest "
    "share memory it did not mean to.", "virtio 1.1 VIRTIO_F_ACCESS_PLATFORM; libvirt docs/kbase/launch_security_sev.rst "
    "(<driver iommu='on'/>)",
    fix="Describe the device with a spec key, or add iommu_platform=on to it.", severity="warning")

NO_RESTART_ON_CLEAN_EXIT = ("no", "on-failure", "on-abnormal", "on-abort", "on-watchdog")


def check(guest) -> Iterable[Diagnostic]:
    yield from _restart(guest)
    yield from _forwards(guest)
    yield from _extra_virtio(guest)


def _restart(guest) -> Iterable[Diagnostic]:
    restart = guest.systemd.restart
    if guest.mechanism.reboot_ends_process and restart in NO_RESTART_ON_CLEAN_EXIT:
        yield RESTART.warning(("targets", "systemd", "restart"),
                              f"is {restart!r}: a reboot inside this {guest.mechanism.title} guest "
                              "ends QEMU with status 0, which leaves the guest powered off",
                              'remove restart (cgsc writes Restart=always) or set restart = "always"')


def _forwards(guest) -> Iterable[Diagnostic]:
    seen: List[Tuple[str, str, int, int]] = []   # (protocol, address, port, net index)
    for i, net in enumerate(guest.nets):
        if net.forwards and net.mode != "user":
            yield FORWARD.error(("net", i, "forward"), f'does not apply to mode = "{net.mode}"',
                                'forward ports on a mode = "user" interface, or remove forward')
            continue
        for j, f in enumerate(net.forwards):
            for proto, addr, port, other in seen:
                if proto == f.protocol and port == f.host_port and "0.0.0.0" in (addr, f.host_address) \
                        or (proto, addr, port) == (f.protocol, f.host_address, f.host_port):
                    yield FORWARD.error(("net", i, "forward", j),
                                        f"{f.protocol} host port {f.host_port} on {f.host_address} "
                                        f"is already forwarded by net[{other}]",
                                        "forward each host port once")
                    break
            seen.append((f.protocol, f.host_address, f.host_port, i))


def _device_driver(value: str) -> Tuple[Optional[str], bool]:
    """(driver, iommu_platform on?) of a -device argument in key=value or JSON form."""
    if value.startswith("{"):
        obj = json_object(value)
        if obj is None:
            return None, False
        return str(obj.get("driver", "")), obj.get("iommu_platform") in (True, "on", "true", "yes")
    parts = keyval_split(value)
    props = dict(p.split("=", 1) for p in parts if "=" in p)
    driver = parts[0] if parts and "=" not in parts[0] else props.get("driver", "")
    return driver, props.get("iommu_platform") in ("on", "true", "yes")


def _extra_virtio(guest) -> Iterable[Diagnostic]:
    if not guest.mechanism.virtio_iommu:
        return
    args = guest.extra_args
    for i, arg in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("-device", "--device"):
            driver, iommu = _device_driver(value)
            where = i + 1
        elif arg in ("-nic", "--nic"):
            # -nic creates its NIC from model=; it has no way to set iommu_platform
            driver, iommu, where = dict(p.split("=", 1) for p in keyval_split(value)
                                        if "=" in p).get("model", ""), False, i + 1
        else:
            continue
        if driver and driver.startswith(("virtio-", "vhost-")) and not iommu:
            yield VIRTIO_IOMMU.warning(("qemu", "extra-args", where),
                                       f"adds {driver} without iommu_platform=on",
                                       f"add iommu_platform=on to the device (a {guest.mechanism.title} "
                                       "guest cannot do I/O with a virtio device that bypasses its DMA API)")

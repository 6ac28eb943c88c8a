"""Lowering: Guest -> LaunchPlan. The QEMU argv is built here, from typed pieces."""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from ..spec.model import Guest
from ..spec.schema import read
from .confine import guest_dirs, stop_channel
from .guest_rules import missing_firmware
from .plan import Confidential, Console, Disk, Firmware, Kernel, LaunchPlan, Nic
from .qemu import Option, Opts

SANDBOX = (("obsolete", "deny"), ("elevateprivileges", "deny"), ("spawn", "deny"),
           ("resourcecontrol", "deny"))
TOPOLOGY_KEYS = ("sockets", "dies", "cores", "threads")   # the order of LaunchPlan.topology
# virtio device names per arch: PCI everywhere but s390x, which has channel I/O.
_TRANSPORT = {"x86_64": "pci", "ppc64": "pci", "s390x": "ccw"}


def lower(guest: Guest, spec_path: str, spec_files,
          opened: Optional[Dict[str, str]] = None, qemu_version: Optional[str] = None) -> LaunchPlan:
    """`opened`: role ("firmware", "kernel", "initrd") -> what QEMU is given instead of
    the host path, for the boot files the launch binding copies and checks first.
    qemu_version: the host's QEMU (from --host) the argv is written for; None: any QEMU
    cgsc supports (the forms every release takes, deprecated in newer ones or not)."""
    cgs = guest.mechanism.lower(guest)
    firmware = _firmware(guest)
    kernel = Kernel(guest.kernel_image, guest.kernel_initrd, guest.kernel_cmdline)
    boot_from_disk = guest.kernel_image is None
    disks = tuple(Disk(f"disk{i}", d.path, d.format, d.bus, d.readonly, d.cache, d.serial,
                       i + 1 if boot_from_disk else None,
                       next(iter(d.kubevirt.items())) if d.kubevirt else None)
                  for i, d in enumerate(guest.disks))
    nics = tuple(Nic(f"net{i}", n.mode, n.tap or n.bridge, n.mac, n.model, tuple(n.forwards),
                     (n.kubevirt or {}).get("multus"))
                 for i, n in enumerate(guest.nets))
    console = Console(guest.console, guest.console_path)
    sandbox, relaxed = _sandbox(guest, nics)
    emulator = guest.emulator or f"qemu-system-{guest.arch}"
    plan = LaunchPlan(
        name=guest.name, description=guest.description, uuid=guest.uuid, arch=guest.arch,
        machine=guest.machine, cpu=guest.cpu, vcpus=guest.vcpus,
        topology=guest.topology,
        memory_mib=guest.memory_mib, emulator=emulator,
        emulator_default=guest.emulator is None, confidential=cgs, firmware=firmware,
        kernel=kernel, disks=disks, nics=nics, console=console, vsock_cid=guest.vsock_cid,
        qmp_socket=guest.qmp_socket, sandbox=sandbox, sandbox_relaxed=relaxed,
        extra_args=guest.extra_args,
        options=(), words=(), spec_path=spec_path, spec_files=tuple(spec_files),
        settings={"systemd": guest.systemd, "libvirt": guest.libvirt,
                  "kubevirt": guest.kubevirt},
        runtime_dir=guest.runtime_dir, dirs=guest_dirs(guest),
        host_refusals=missing_firmware(guest),
        stop_channel=stop_channel(guest), qemu_version=qemu_version,
    )
    options = tuple(_options(plan, opened or {}))
    words = [plan.emulator]
    for opt in options:
        words.extend(opt.words())
    return plan._replace(options=options, words=tuple(words))


def _firmware(g: Guest) -> Firmware:
    if not g.firmware_code:
        return Firmware("none")
    if g.firmware_vars:
        return Firmware("pflash", g.firmware_code, g.firmware_vars)
    return Firmware("bios", g.firmware_code)


def _sandbox(g: Guest, nics) -> Tuple[Optional[str], Tuple[str, ...]]:
    """The -sandbox argument and why any part of it is relaxed."""
    if not g.sandbox:
        return None, ()
    props = dict(SANDBOX)
    why: Tuple[str, ...] = ()
    if any(n.mode == "bridge" for n in nics):
        # QEMU's filter is inherited across exec: the setuid helper must be able to
        # start (spawn) and to drop from root to the caller's uid (set*uid).
        props["spawn"] = props["elevateprivileges"] = "allow"
        why = ("-netdev bridge execs the setuid qemu-bridge-helper, so the sandbox allows "
               "spawn and elevateprivileges",)
    return Opts("on", tuple(props.items())).render(), why


@lru_cache(maxsize=1)
def _releases() -> dict:
    return read("qemu-since.json")


def _has(p: LaunchPlan, table: str, key: str) -> bool:
    """Whether the host's QEMU is at least the release that added (objects) or deprecated
    (deprecated) `key` (schema/qemu-since.json, derived from the releases)."""
    if p.qemu_version is None:
        return False
    entry = _releases()[table][key]
    since = entry["since"] if isinstance(entry, dict) else entry
    return _vt(p.qemu_version) >= _vt(since)


def _vt(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def _qmp_monitor(p: LaunchPlan, chardev: str) -> Option:
    """A QMP monitor on a chardev: `-mon mode=control` (deprecated since QEMU 11.1), or on a
    host whose QEMU has it, its replacement `-object monitor-qmp` (QEMU 11.1)."""
    if _has(p, "objects", "monitor-qmp"):
        return Option("-object", Opts("monitor-qmp", (("id", f"mon-{chardev}"),
                                                       ("chardev", chardev))))
    return Option("-mon", Opts(None, (("chardev", chardev), ("mode", "control"))))


def _options(p: LaunchPlan, opened: Dict[str, str]) -> List[Option]:
    cgs: Confidential = p.confidential
    bus = _TRANSPORT[p.arch]
    virtio = (("iommu_platform", True),) if cgs.virtio_iommu else ()
    opts = [
        # debug-threads names QEMU's threads (top, gdb); QEMU 11.0 does so always and
        # deprecates the option
        Option("-name", Opts(None, (("guest", p.name),) + (
            () if _has(p, "deprecated", "debug-threads option for -name")
            else (("debug-threads", True),)))),
        Option("-uuid", p.uuid),
        Option("-nodefaults"),
        Option("-no-user-config"),
        Option("-accel", "kvm"),
        Option("-machine", Opts(p.machine, (("confidential-guest-support", cgs.object.id),)
                                + cgs.machine_props)),
        Option("-cpu", Opts(p.cpu, cgs.cpu_props) if cgs.cpu_props else p.cpu),
        # explicit: a bare -smp N is N sockets before machine types 6.2 and one socket of N
        # cores after, and libvirt's bare <vcpu> is N sockets; every target writes the same
        Option("-smp", Opts(str(p.vcpus), tuple(zip(TOPOLOGY_KEYS, p.topology)))),
        Option("-m", f"{p.memory_mib}M"),
        cgs.object.option(),
    ]
    fw = p.firmware
    code = opened.get("firmware", fw.code)
    if fw.mode == "bios":
        opts.append(Option("-bios", code))
    elif fw.mode == "pflash":
        for unit, path, ro in ((0, code, True), (1, fw.vars, False)):
            props = (("if", "pflash"), ("format", "raw"), ("unit", unit), ("file", path))
            opts.append(Option("-drive", Opts(None, props + ((("readonly", True),) if ro else ()))))
    k = p.kernel
    for flag, value in (("-kernel", k.image and opened.get("kernel", k.image)),
                        ("-initrd", k.initrd and opened.get("initrd", k.initrd)),
                        ("-append", k.cmdline)):
        if value is not None:
            opts.append(Option(flag, value))
    if any(d.bus == "scsi" for d in p.disks):
        opts.append(Option("-device", Opts(f"virtio-scsi-{bus}", (("id", "scsi0"),) + virtio)))
    for d in p.disks:
        drive = (("if", "none"), ("id", d.id), ("file", d.path), ("format", d.format),
                 ("cache", d.cache)) + ((("readonly", True),) if d.readonly else ())
        opts.append(Option("-drive", Opts(None, drive)))
        if d.bus == "scsi":
            dev = Opts("scsi-hd", (("bus", "scsi0.0"), ("drive", d.id)))
        else:
            dev = Opts(f"virtio-blk-{bus}", (("drive", d.id),) + virtio)
        extra = ((("serial", d.serial),) if d.serial else ()) + (
            (("bootindex", d.boot_index),) if d.boot_index else ())
        opts.append(Option("-device", Opts(dev.head, dev.props + extra)))
    for n in p.nics:
        netdev = {"user": (), "tap": (("ifname", n.ifname), ("script", "no"), ("downscript", "no")),
                  "bridge": (("br", n.ifname),)}[n.mode]
        netdev += tuple(("hostfwd", f"{proto}:{addr}:{host}-:{guest}")
                        for proto, addr, host, guest in n.forwards)
        opts.append(Option("-netdev", Opts(n.mode, (("id", n.id),) + netdev)))
        rom = (("romfile", ""),) if cgs.nic_rom_off and bus == "pci" else ()
        opts.append(Option("-device", Opts(f"virtio-net-{bus}",
                                           (("netdev", n.id), ("mac", n.mac)) + virtio + rom)))
    if p.vsock_cid is not None:
        opts.append(Option("-device", Opts(f"vhost-vsock-{bus}",
                                           (("guest-cid", p.vsock_cid),) + virtio)))
    c = p.console
    if c.kind != "none":
        chardev = {"stdio": (), "pty": (), "file": (("path", c.path),),
                   "socket": (("path", c.path), ("server", True), ("wait", False))}[c.kind]
        opts.append(Option("-chardev", Opts(c.kind, (("id", "console0"),) + chardev)))
        opts.append(Option("-serial", "chardev:console0"))
    if p.qmp_socket:
        opts.append(Option("-chardev", Opts("socket", (("id", "qmp0"), ("path", p.qmp_socket),
                                                        ("server", True), ("wait", False)))))
        opts.append(_qmp_monitor(p, "qmp0"))
    if p.stop_channel:
        # A second QMP monitor on two FIFOs: a plain `sh` can write to it (a unix socket needs
        # a client program), so `systemctl stop` can ask the guest to power down.
        opts.append(Option("-chardev", Opts("pipe", (("id", "stop0"), ("path", p.stop_channel)))))
        opts.append(_qmp_monitor(p, "stop0"))
    opts.append(Option("-display", "none"))
    if p.sandbox:
        opts.append(Option("-sandbox", p.sandbox))
    opts.extend(Option(arg) for arg in p.extra_args)
    return opts

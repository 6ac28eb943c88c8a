"""libvirt target: out/<name>/<name>.xml, a domain definition for `virsh define`.

It reads only the launch plan. Mechanism specifics arrive as ready-made elements
(<launchSecurity>, <features> children) or as QEMU passthrough arguments.
"""

from __future__ import annotations

import os
from typing import List, Optional

from ..core.rules import Rule
from ..lower.plan import Element as E
from ..lower.plan import LaunchPlan, is_block_device
from . import Artifact
from .render import generated_by
from .xmlwriter import comment, serialize

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

NOT_EXPRESSIBLE = Rule(
    "CGS-LIBVIRT-001", "libvirt cannot express this guest",
    "Some spec values have no libvirt domain XML form (for example launch-session files, "
    "which libvirt wants inline, or a vsock QGS address). cgsc refuses rather than write a "
    "domain that silently differs from the launch script.", "libvirt.md",
    fix="Build only the targets that can express the spec: [targets] build = [\"shell\", \"systemd\"].")
PASSTHROUGH_OFF = Rule(
    "CGS-LIBVIRT-002", "the guest needs <qemu:commandline> but allow-passthrough = false",
    "libvirt has no native form for POWER PEF or for extra-args; they can only be passed to "
    "QEMU through the qemu namespace, which taints the domain.", "libvirt.md section 7",
    fix="Set allow-passthrough = true, or leave libvirt out of [targets] build.")
EMULATOR = Rule(
    "CGS-LIBVIRT-003", "libvirt needs an absolute emulator path",
    "<emulator> takes an absolute path; a command name looked up on PATH has no libvirt form.",
    "libvirt domaincommon.rng (absFilePath)",
    fix="Give [qemu] emulator as an absolute path.")
PORT_FORWARD = Rule(
    "CGS-LIBVIRT-004", "libvirt cannot express [[net]] forward on user networking",
    "QEMU's user networking (slirp) forwards ports with hostfwd; libvirt's <interface "
    "type='user'> has no such setting. Its <portForward> exists only for the passt backend, "
    "a different network stack from the launch script's -netdev user, so the domain would "
    "describe another machine.", "libvirt formatdomain: Userspace connection, portForward",
    fix="Build only the shell and systemd targets for this guest, or drop forward.")
SERIAL_SPACE = Rule(
    "CGS-LIBVIRT-005", "libvirt gives QEMU a disk serial with a space as another serial",
    "libvirt's QEMU driver escapes a space in <serial> with a backslash when it builds the "
    "disk device (qemuBuildDiskDeviceProps: virBufferEscape(..., '\\\\', \" \", ...)), and "
    "QEMU takes the value as it is: under libvirt the guest reads 'a\\ b' where the launch "
    "script gives it 'a b'. A disk found by its serial (/dev/disk/by-id) is then another "
    "name on each target.",
    "libvirt 11.3 src/qemu/qemu_command.c qemuBuildDiskDeviceProps; QEMU 10.0 qom-get "
    "of the device's serial (tests/test_libvirt_qemu_driver.py)",
    fix="Replace the spaces in [[disk]] serial (e.g. with _ or -), or build only the shell "
        "and systemd targets for this guest.")


class LibvirtTarget:
    name = "libvirt"
    summary = "libvirt domain XML (<name>.xml) for `virsh define`"

    def unsupported(self, plan: LaunchPlan) -> Optional[object]:
        cgs = plan.confidential
        mech = ("confidential", cgs.mechanism)
        if cgs.libvirt_unsupported:
            key = (cgs.libvirt_unsupported_key,) if cgs.libvirt_unsupported_key else ()
            return NOT_EXPRESSIBLE.error(mech + key, cgs.libvirt_unsupported,
                                         "build the shell and systemd targets only "
                                         "([targets] build = [\"shell\", \"systemd\"])")
        if not plan.settings["libvirt"].allow_passthrough and _passthrough(plan):
            what = "extra-args" if plan.extra_args else f"{cgs.title} (no native libvirt form)"
            return PASSTHROUGH_OFF.error(("targets", "libvirt", "allow-passthrough"),
                                         f"is false, but {what} needs <qemu:commandline>",
                                         "allow passthrough, or leave libvirt out of [targets] build")
        for i, nic in enumerate(plan.nics):
            if nic.forwards:
                return PORT_FORWARD.error(("net", i, "forward"),
                                          "has no libvirt form: <portForward> needs the passt "
                                          "backend, not QEMU's user networking",
                                          "build the shell and systemd targets only "
                                          "([targets] build = [\"shell\", \"systemd\"])")
        for i, d in enumerate(plan.disks):
            if d.serial and " " in d.serial:
                return SERIAL_SPACE.error(("disk", i, "serial"),
                                          f"{d.serial!r} has a space, which libvirt hands QEMU "
                                          "as '\\ ': the guest would see another serial",
                                          "replace the spaces, e.g. with _, or build the shell "
                                          "and systemd targets only")
        if not plan.emulator_default and not os.path.isabs(plan.emulator):
            return EMULATOR.error(("qemu", "emulator"), f"{plan.emulator!r} is not an absolute path",
                                  "give the full path, e.g. /usr/bin/qemu-system-x86_64")
        return None

    def render(self, plan: LaunchPlan) -> List[Artifact]:
        return [Artifact(f"{plan.name}.xml", serialize(domain(plan), generated_by(plan)))]


def _passthrough(plan: LaunchPlan) -> List[str]:
    return list(plan.confidential.libvirt_passthrough) + list(plan.extra_args)


def domain(plan: LaunchPlan) -> E:
    cgs = plan.confidential
    settings = plan.settings["libvirt"]
    passthrough = _passthrough(plan)
    attrs = (("type", settings.domain_type),)
    if passthrough:
        attrs += (("xmlns:qemu", QEMU_NS),)
    kids: List[E] = [E("name", text=plan.name), E("uuid", text=plan.uuid)]
    if plan.description:
        kids.append(E("description", text=plan.description))
    kids.append(E("memory", (("unit", "MiB"),), text=str(plan.memory_mib)))
    if cgs.lock_memory:
        kids.append(comment(f"{cgs.memory_note} (<locked/>: libvirt lifts the limit and "
                            "adds -overcommit mem-lock=on)"))
        kids.append(E("memoryBacking", children=(E("locked"),)))
    elif cgs.memory_note:
        kids.append(comment(cgs.memory_note))
    kids.append(E("vcpu", (("placement", "static"),), text=str(plan.vcpus)))
    kids.append(_os(plan))
    features = ((E("acpi"),) if plan.arch == "x86_64" else ()) + cgs.libvirt_features
    if features:
        kids.append(E("features", children=features))
    kids.append(_cpu(plan))
    kids.append(E("clock", (("offset", "utc"),)))
    kids += [E("on_poweroff", text="destroy"), E("on_reboot", text="restart"),
             E("on_crash", text="destroy")]
    kids.append(_devices(plan))
    if cgs.libvirt_security is not None:
        kids.append(cgs.libvirt_security)
    for rule, reason in plan.waivers:
        kids.append(comment(f"waived {rule}: {reason}"))
    if plan.binding is not None:
        kids.append(comment("libvirt cannot check that the boot files are the measured ones: "
                            + "; ".join(f"{f.what} {f.path} sha256 {f.sha256}"
                                        for f in plan.binding.files)
                            + ". Check them before `virsh start` (the shell script and the "
                            "systemd unit do)"))
    if plan.qmp_socket:
        kids.append(comment(f"[qmp] socket {plan.qmp_socket} has no libvirt form: libvirt owns "
                            "the QMP monitor (use `virsh qemu-monitor-command`)"))
    if plan.stop_channel:
        kids.append(comment("the stop channel of the launch script is libvirt's own monitor here: "
                            "`virsh shutdown` powers the guest down (system_powerdown)"))
    if plan.sandbox:
        kids.append(comment("QEMU's -sandbox is set by libvirt (qemu.conf seccomp_sandbox), "
                            "not per domain"))
    if passthrough:
        if cgs.libvirt_note:
            kids.append(comment(cgs.libvirt_note))
        if plan.extra_args:
            kids.append(comment("[qemu] extra-args, passed through unchecked"))
        kids.append(E("qemu:commandline",
                      children=tuple(E("qemu:arg", (("value", a),)) for a in passthrough)))
    return E("domain", attrs, children=tuple(kids))


def _os(plan: LaunchPlan) -> E:
    kids = [E("type", (("arch", plan.arch), ("machine", plan.machine)), text="hvm")]
    fw = plan.firmware
    if fw.mode == "bios":
        kids.append(E("loader", (("readonly", "yes"), ("type", "rom")), text=fw.code))
    elif fw.mode == "pflash":
        kids.append(E("loader", (("readonly", "yes"), ("type", "pflash")), text=fw.code))
        kids.append(E("nvram", text=fw.vars))
    k = plan.kernel
    for tag, value in (("kernel", k.image), ("initrd", k.initrd), ("cmdline", k.cmdline)):
        if value is not None:
            kids.append(E(tag, text=value))
    return E("os", children=tuple(kids))


def _cpu(plan: LaunchPlan) -> E:
    # the script's -smp layout: without <topology> libvirt makes every vCPU a socket
    sockets, dies, cores, threads = plan.topology
    topology = E("topology", (("sockets", str(sockets)), ("dies", str(dies)),
                              ("cores", str(cores)), ("threads", str(threads))))
    if plan.cpu == "host":
        return E("cpu", (("mode", "host-passthrough"),), children=(topology,))
    if plan.cpu == "max":   # QEMU's -cpu max is no model of libvirt's CPU map but a mode
        return E("cpu", (("mode", "maximum"),), children=(topology,))
    return E("cpu", (("mode", "custom"), ("match", "exact")),
             children=(E("model", (("fallback", "forbid"),), text=plan.cpu), topology))


def _driver_iommu(plan: LaunchPlan) -> tuple:
    return (("iommu", "on"),) if plan.confidential.virtio_iommu else ()


def _devices(plan: LaunchPlan) -> E:
    kids: List[E] = []
    if not plan.emulator_default:
        kids.append(E("emulator", text=plan.emulator))
    iommu = _driver_iommu(plan)
    counters = {"virtio": 0, "scsi": 0}
    for d in plan.disks:
        block = is_block_device(d.path)
        letter = chr(ord("a") + counters[d.bus])
        counters[d.bus] += 1
        dev = ("vd" if d.bus == "virtio" else "sd") + letter
        driver = (("name", "qemu"), ("type", d.format), ("cache", d.cache))
        disk = [E("driver", driver + (iommu if d.bus == "virtio" else ())),
                E("source", (("dev" if block else "file", d.path),)),
                E("target", (("dev", dev), ("bus", d.bus)))]
        if d.readonly:
            disk.append(E("readonly"))
        if d.serial:
            disk.append(E("serial", text=d.serial))
        if d.boot_index:
            disk.append(E("boot", (("order", str(d.boot_index)),)))
        kids.append(E("disk", (("type", "block" if block else "file"), ("device", "disk")),
                      children=tuple(disk)))
    if counters["scsi"]:
        kids.append(E("controller", (("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")),
                      children=(E("driver", iommu),) if iommu else ()))
    for n in plan.nics:
        kind = {"user": "user", "tap": "ethernet", "bridge": "bridge"}[n.mode]
        nic = [E("mac", (("address", n.mac),))]
        if n.mode == "bridge":
            nic.append(E("source", (("bridge", n.ifname),)))
        elif n.mode == "tap":
            nic.append(E("target", (("dev", n.ifname), ("managed", "no"))))
        nic.append(E("model", (("type", n.model),)))
        if iommu:
            nic.append(E("driver", iommu))
        if plan.confidential.nic_rom_off:
            nic.append(E("rom", (("enabled", "no"),)))
        kids.append(E("interface", (("type", kind),), children=tuple(nic)))
    kids += _console(plan)
    if plan.vsock_cid is not None:
        vsock = [E("cid", (("auto", "no"), ("address", str(plan.vsock_cid))))]
        if iommu:
            vsock.append(E("driver", iommu))
        kids.append(E("vsock", (("model", "virtio"),), children=tuple(vsock)))
    kids.append(comment("libvirt adds a USB controller (qemu-xhci) unless told model='none'; "
                        "the launch script has none"))
    kids.append(E("controller", (("type", "usb"), ("model", "none"))))
    why = ("ballooning is forbidden for this mechanism" if plan.confidential.no_balloon
           else "the launch script has no balloon either")
    kids.append(comment(why))
    kids.append(E("memballoon", (("model", "none"),)))
    return E("devices", children=tuple(kids))


def _console(plan: LaunchPlan) -> List[E]:
    c = plan.console
    if c.kind == "none":
        return []
    out: List[E] = []
    if c.kind == "stdio":
        out.append(comment("serial = \"stdio\" has no libvirt form: the console is a pty "
                           "(virsh console)"))
    kind = {"stdio": "pty", "pty": "pty", "file": "file", "socket": "unix"}[c.kind]
    source = ()
    if c.kind == "file":
        source = (E("source", (("path", c.path),)),)
    elif c.kind == "socket":
        source = (E("source", (("mode", "bind"), ("path", c.path))),)
    out.append(E("serial", (("type", kind),), children=source))
    out.append(E("console", (("type", kind),), children=source))
    return out


TARGET = LibvirtTarget()

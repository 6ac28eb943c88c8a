"""The launch plan: everything a target needs, nothing a target must work out.

Records are NamedTuples: as immutable as frozen dataclasses, and an order of magnitude
cheaper to define, which matters for a compiler that starts once per spec.

Targets read only this. It holds the QEMU argv as typed options plus the facts
(devices, firmware, confidential settings, host requirements) that targets other
than the shell need in their own vocabulary.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

from .qemu import Option, Prop, QemuObject


class Element(NamedTuple):
    """A target-neutral XML element (for libvirt's <launchSecurity>, <features>)."""
    tag: str
    attrs: Tuple[Tuple[str, str], ...] = ()
    text: Optional[str] = None
    children: Tuple["Element", ...] = ()


class HostParam(NamedTuple):
    """A host setting the mechanism needs, read from a file at launch time."""
    path: str
    accepted: Tuple[str, ...]
    message: str


class KubevirtForm(NamedTuple):
    """How a KubeVirt VirtualMachine says this mechanism (spec.template.spec.domain)."""
    launch_security: dict                # domain.launchSecurity, exactly as written
    efi: Optional[dict] = None           # firmware.bootloader.efi; None: no EFI (s390x)
    smm: Optional[bool] = None           # features.smm.enabled, written when not None
    feature_gate: str = ""               # the KubeVirt feature gate, and what enabling it takes
    cluster_decides: Tuple[str, ...] = ()   # what the cluster, not the manifest, decides


class Confidential(NamedTuple):
    mechanism: str                       # the spec's table name: for reports, never for branching
    title: str                           # "AMD SEV-SNP"
    object: QemuObject
    machine_props: Tuple[Prop, ...] = ()
    cpu_props: Tuple[Prop, ...] = ()     # -cpu properties the mechanism needs (TDX: pmu=off)
    virtio_iommu: bool = True            # iommu_platform=on / <driver iommu='on'/>
    nic_rom_off: bool = False            # no option ROM on virtio-net
    lock_memory: bool = False            # guest RAM is pinned (memlock)
    memory_note: str = ""                # why guest RAM is (or need not be) locked
    no_balloon: bool = False             # ballooning is forbidden
    reboot_ends_process: bool = False    # guest reboot ends QEMU (exit 0)
    host_devices: Tuple[str, ...] = ()   # device nodes QEMU opens besides /dev/kvm
    host_params: Tuple[HostParam, ...] = ()
    debug_swap_measured: bool = False    # kvm_amd debug_swap can change the VMSA it measures
    libvirt_security: Optional[Element] = None
    libvirt_features: Tuple[Element, ...] = ()
    libvirt_passthrough: Tuple[str, ...] = ()   # QEMU args for what libvirt cannot say
    libvirt_note: str = ""               # why passthrough is used, said in the XML
    libvirt_unsupported: str = ""        # why libvirt cannot express this guest at all
    libvirt_unsupported_key: str = ""    # the key (in the mechanism's table) that causes it
    kubevirt: Optional[KubevirtForm] = None   # None: KubeVirt has no form (see refusals)
    kubevirt_refusals: Tuple[object, ...] = ()  # Diagnostics: what KubeVirt cannot express
    systemd_after: Tuple[str, ...] = ()  # host services the guest needs up first
    address_families: Tuple[str, ...] = ()  # socket families QEMU needs (AF_VSOCK for a QGS)
    summary: Tuple[Tuple[str, str], ...] = ()   # effective values, for comments and reports


class Firmware(NamedTuple):
    mode: str                 # "bios" (one read-only image), "pflash" (code + vars), "none"
    code: Optional[str] = None
    vars: Optional[str] = None


class Kernel(NamedTuple):
    image: Optional[str] = None
    initrd: Optional[str] = None
    cmdline: Optional[str] = None


def is_block_device(path: str) -> bool:
    """cgsc never looks at the host while building: a disk path under /dev/ is a block
    device (LVM, /dev/disk/by-id, /dev/mapper...), any other path an image file."""
    return path.startswith("/dev/")


class Disk(NamedTuple):
    id: str
    path: str
    format: str
    bus: str
    readonly: bool
    cache: str
    serial: Optional[str]
    boot_index: Optional[int]
    kubevirt: Optional[Tuple[str, object]] = None   # (volume kind, value) backing it on KubeVirt


class Nic(NamedTuple):
    id: str
    mode: str                 # user | tap | bridge
    ifname: Optional[str]     # tap device or bridge name
    mac: str
    model: str
    forwards: Tuple[Tuple[str, str, int, int], ...] = ()   # (protocol, host address, host port, guest port)
    multus: Optional[str] = None   # KubeVirt Multus network; None: the pod network


class GuestDir(NamedTuple):
    """A directory QEMU writes in (sockets, the console file, the stop channel). It belongs
    to this guest alone (see cgsc.lower.confine)."""
    path: str
    what: str                 # "QMP socket, console socket", for messages and comments
    managed: str = ""         # "runtime" | "state" | "logs": systemd creates it; "" : must exist
    relative: str = ""        # the managed directory's name under its root (cgsc/<name>)


class Console(NamedTuple):
    kind: str                 # stdio | pty | socket | file | none
    path: Optional[str] = None


class MeasuredFile(NamedTuple):
    """A boot file whose sha256 was measured at build time and is checked at launch.

    At launch the file is read once into a private copy, the copy is checked, and QEMU
    reads the copy through an inherited descriptor (`opened`), never `path` again."""
    what: str                 # "firmware", "kernel", "initrd"
    path: str                 # the host path the launch copies the file from
    sha256: str               # lowercase hex of the measured copy
    size: int                 # its length in bytes: the launch reads at most one byte more
    fd: int                   # the descriptor QEMU inherits the checked copy on (3, 4, 5)

    @property
    def opened(self) -> str:
        """What QEMU is given instead of the path: the checked copy, by descriptor."""
        return f"/proc/self/fd/{self.fd}"


class LaunchBinding(NamedTuple):
    """What the launch script and unit check so that the launched guest is the measured one."""
    files: Tuple[MeasuredFile, ...]
    params: Tuple[HostParam, ...] = ()   # host settings the measurement assumed


class LaunchPlan(NamedTuple):
    name: str
    description: str
    uuid: str
    arch: str
    machine: str
    cpu: str
    vcpus: int
    topology: Tuple[int, int, int, int]   # (sockets, dies, cores, threads), on every target
    memory_mib: int
    emulator: str
    emulator_default: bool    # found on PATH at launch time
    confidential: Confidential
    firmware: Firmware
    kernel: Kernel
    disks: Tuple[Disk, ...]
    nics: Tuple[Nic, ...]
    console: Console
    vsock_cid: Optional[int]
    qmp_socket: Optional[str]
    sandbox: Optional[str]    # the -sandbox argument, or None
    sandbox_relaxed: Tuple[str, ...]   # why parts of the sandbox are allowed
    extra_args: Tuple[str, ...]
    options: Tuple[Option, ...]
    words: Tuple[str, ...]    # the options rendered once: emulator first (see argv())
    spec_path: str
    spec_files: Tuple[Tuple[str, str], ...]   # (path, sha256), the spec first
    settings: dict            # typed [targets.*] settings by target name
    warnings: Tuple[str, ...] = ()
    waivers: Tuple[Tuple[str, str], ...] = ()   # (rule, reason) accepted in [waive]
    runtime_dir: str = ""     # /run/cgsc/<name>: this guest's own runtime directory
    dirs: Tuple[GuestDir, ...] = ()      # every directory QEMU writes in, runtime_dir first
    stop_channel: str = ""    # QMP over two FIFOs (<path>.in, <path>.out) for a graceful stop
    attestation: Optional[dict] = None   # manifest.json's `attestation` object ([measurement])
    binding: Optional[LaunchBinding] = None   # launch-time digest checks (verify-at-launch)
    references: Tuple[Tuple[str, str], ...] = ()   # (file name, text): reference values in
    #                                                the verifiers' formats ([attestation])
    host_refusals: Tuple = ()   # Diagnostics every target that launches on a host refuses with
    qemu_version: Optional[str] = None   # the host's QEMU the argv is for (--host); None: any

    def argv(self) -> List[str]:
        """The exact emulator argv, emulator first."""
        return list(self.words)

    def device_nodes(self) -> List[Tuple[str, str]]:
        """(path, what for) of every device node QEMU (or its helpers) opens."""
        nodes = [("/dev/kvm", "KVM")]
        nodes += [(dev, f"the {self.confidential.title} firmware interface")
                  for dev in self.confidential.host_devices]
        if any(n.mode in ("tap", "bridge") for n in self.nics):
            nodes.append(("/dev/net/tun", "tap networking"))
        if self.vsock_cid is not None:
            nodes.append(("/dev/vhost-vsock", "the vsock device"))
        if self.console.kind == "pty":
            nodes.append(("/dev/ptmx", "the pty console"))
        return nodes

    def host_files(self) -> List[Tuple[str, str]]:
        """(path, what) of every file that must exist on the host before launch."""
        out = []
        if self.firmware.code:
            out.append((self.firmware.code, "firmware image"))
        if self.firmware.vars:
            out.append((self.firmware.vars, "firmware variable store"))
        if self.kernel.image:
            out.append((self.kernel.image, "kernel image"))
        if self.kernel.initrd:
            out.append((self.kernel.initrd, "initrd"))
        out += [(d.path, f"disk {d.id}") for d in self.disks]
        return out

    def block_disks(self) -> List[Disk]:
        return [d for d in self.disks if is_block_device(d.path)]

    def stop_fifos(self) -> List[str]:
        return [self.stop_channel + ".in", self.stop_channel + ".out"] if self.stop_channel else []

"""The typed guest model: schema-valid data with units, defaults and derived values resolved.
Immutable records (NamedTuples, see cgsc.lower.plan).

After `normalize` nothing looks at raw dicts. Mechanism tables are normalized by
their own mechanism module.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from ..mechanisms import MECHANISMS, Mechanism
from .units import derived_mac, derived_uuid, memory_mib

DEFAULT_MACHINE = {"x86_64": "q35", "ppc64": "pseries", "s390x": "s390-ccw-virtio"}
RUNTIME_ROOT = "/run/cgsc"   # each guest's runtime directory is RUNTIME_ROOT/<name>
DEFAULT_STOP_TIMEOUT = 120   # seconds for a graceful power-down before QEMU is killed


class DiskSpec(NamedTuple):
    path: str
    format: str
    bus: str = "virtio"
    readonly: bool = False
    cache: str = "none"
    serial: Optional[str] = None
    kubevirt: Optional[dict] = None       # { pvc | data-volume | container-disk | host-disk }


class Forward(NamedTuple):
    """A user-networking port forward (QEMU hostfwd)."""
    protocol: str
    host_address: str
    host_port: int
    guest_port: int


class NetSpec(NamedTuple):
    mode: str
    tap: Optional[str]
    bridge: Optional[str]
    mac: str
    mac_given: bool
    model: str = "virtio"
    forwards: Tuple[Forward, ...] = ()
    kubevirt: Optional[dict] = None       # { multus = "namespace/name" }


class SystemdSettings(NamedTuple):
    unit_name: Optional[str] = None
    user: Optional[str] = None
    group: Optional[str] = None
    restart: Optional[str] = None          # None: the default (on-failure, see the target)
    wanted_by: Tuple[str, ...] = ("multi-user.target",)
    after: Tuple[str, ...] = ()
    requires: Tuple[str, ...] = ()
    environment_file: Optional[str] = None
    stop_timeout: int = DEFAULT_STOP_TIMEOUT


class LibvirtSettings(NamedTuple):
    domain_type: str = "kvm"
    allow_passthrough: bool = True


class KubevirtSettings(NamedTuple):
    namespace: Optional[str] = None
    run_strategy: str = "Always"
    labels: Tuple[Tuple[str, str], ...] = ()
    kernel_container: Optional[str] = None
    feature_gates: Tuple[str, ...] = ()   # gates the cluster has on beyond its defaults


class Guest(NamedTuple):
    name: str
    description: str
    arch: str
    arch_given: bool
    machine: str
    cpu: str
    vcpus: int
    topology: Optional[Tuple[int, ...]]   # (sockets, dies, cores, threads); None: cores does
    #                                       not divide (CGS-GUEST-003); (): a schema error
    memory_mib: int
    uuid: str
    mechanism: Mechanism
    confidential: object                  # the mechanism's own normalized config
    firmware_code: Optional[str]
    firmware_vars: Optional[str]
    has_firmware_table: bool
    kernel_image: Optional[str]
    kernel_initrd: Optional[str]
    kernel_cmdline: Optional[str]
    disks: Tuple[DiskSpec, ...]
    nets: Tuple[NetSpec, ...]
    console: str
    console_path: Optional[str]
    vsock_cid: Optional[int]
    qmp_socket: Optional[str]
    runtime_dir: str                      # RUNTIME_ROOT/<name>: sockets and the stop channel
    emulator: Optional[str]
    sandbox: bool
    extra_args: Tuple[str, ...]
    build_targets: Optional[Tuple[str, ...]]
    systemd: SystemdSettings
    libvirt: LibvirtSettings
    kubevirt: KubevirtSettings = KubevirtSettings()
    measurement: Optional[dict] = None    # the raw [measurement] table; read by cgsc.measure.stage
    attestation_formats: Optional[Tuple[str, ...]] = None   # [attestation] formats, when given

    @property
    def mech_path(self) -> tuple:
        return ("confidential", self.mechanism.name)


def normalize(data: dict) -> Guest:
    """Schema-valid spec data -> Guest."""
    g = data["guest"]
    (mech_name, mech_table), = data["confidential"].items()
    mechanism = MECHANISMS[mech_name]
    arch = g.get("arch", "x86_64")
    fw = data.get("firmware", {})
    kernel = data.get("kernel", {})
    console = data.get("console", {})
    qemu = data.get("qemu", {})
    targets = data.get("targets", {})
    sd = targets.get("systemd", {})
    lv = targets.get("libvirt", {})
    name = g["name"]
    return Guest(
        name=name,
        description=g.get("description", ""),
        arch=arch,
        arch_given="arch" in g,
        machine=g.get("machine", DEFAULT_MACHINE[arch]),
        cpu=g.get("cpu", "host"),
        vcpus=g.get("vcpus", 1),
        topology=topology(g.get("vcpus", 1), g.get("topology", {})),
        memory_mib=memory_mib(g["memory"]),
        uuid=(g.get("uuid") or derived_uuid(name)).lower(),
        mechanism=mechanism,
        confidential=mechanism.normalize(mech_table),
        firmware_code=fw.get("code"),
        firmware_vars=fw.get("vars"),
        has_firmware_table="firmware" in data,
        kernel_image=kernel.get("image"),
        kernel_initrd=kernel.get("initrd"),
        kernel_cmdline=kernel.get("cmdline"),
        disks=tuple(DiskSpec(**{k.replace("-", "_"): v for k, v in d.items()})
                    for d in data.get("disk", [])),
        nets=tuple(NetSpec(mode=n["mode"], tap=n.get("tap"), bridge=n.get("bridge"),
                           mac=(n.get("mac") or derived_mac(name, i)).lower(),
                           mac_given="mac" in n, model=n.get("model", "virtio"),
                           forwards=tuple(Forward(f.get("protocol", "tcp"),
                                                  f.get("host-address", "127.0.0.1"),
                                                  f["host-port"], f["guest-port"])
                                          for f in n.get("forward", ())),
                           kubevirt=n.get("kubevirt"))
                   for i, n in enumerate(data.get("net", []))),
        console=console.get("serial", "stdio"),
        console_path=console.get("path"),
        vsock_cid=data.get("vsock", {}).get("cid"),
        qmp_socket=data.get("qmp", {}).get("socket"),
        runtime_dir=f"{RUNTIME_ROOT}/{name}",
        emulator=qemu.get("emulator"),
        sandbox=qemu.get("sandbox", True),
        extra_args=tuple(qemu.get("extra-args", ())),
        build_targets=tuple(targets["build"]) if "build" in targets else None,
        systemd=SystemdSettings(
            unit_name=sd.get("unit-name"), user=sd.get("user"), group=sd.get("group"),
            restart=sd.get("restart"),
            wanted_by=tuple(sd.get("wanted-by", ("multi-user.target",))),
            after=tuple(sd.get("after", ())), requires=tuple(sd.get("requires", ())),
            environment_file=sd.get("environment-file"),
            stop_timeout=sd.get("stop-timeout", DEFAULT_STOP_TIMEOUT)),
        libvirt=LibvirtSettings(domain_type=lv.get("domain-type", "kvm"),
                                allow_passthrough=lv.get("allow-passthrough", True)),
        kubevirt=_kubevirt(targets.get("kubevirt", {})),
        measurement=data.get("measurement"),
        attestation_formats=(tuple(data["attestation"]["formats"])
                             if "formats" in data.get("attestation", {}) else None),
    )


def topology(vcpus: int, given: dict) -> Optional[Tuple[int, ...]]:
    """(sockets, dies, cores, threads): the keys given, 1 for the others but cores, which is
    what is left of vcpus; None when that does not divide (CGS-GUEST-003 says so)."""
    sockets, dies, threads = (given.get(k, 1) for k in ("sockets", "dies", "threads"))
    cores = given.get("cores")
    if not all(isinstance(v, int) for v in (vcpus, sockets, dies, threads, cores or 1)):
        return ()     # a schema error says what is wrong (rules still run: pipeline/compile.py)
    if cores is None:
        cores, left = divmod(vcpus, sockets * dies * threads)
        if left or not cores:
            return None
    return sockets, dies, cores, threads


def _kubevirt(kv: dict) -> KubevirtSettings:
    return KubevirtSettings(namespace=kv.get("namespace"),
                            run_strategy=kv.get("run-strategy", "Always"),
                            labels=tuple(sorted(kv.get("labels", {}).items())),
                            kernel_container=kv.get("kernel-container"),
                            feature_gates=tuple(kv.get("feature-gates", ())))

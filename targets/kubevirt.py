"""kubevirt target: out/<name>/<name>.kubevirt.yaml, one kubevirt.io/v1 VirtualMachine for
`kubectl apply` or a GitOps tool. Built only when asked for ([targets] build, -t kubevirt).

It reads only the launch plan: the mechanism's KubeVirt form and what KubeVirt cannot
express arrive as plan facts (Confidential.kubevirt, Confidential.kubevirt_refusals).
The YAML is written by PyYAML's safe dumper from plain data, never from a template.
"""

from __future__ import annotations

import json
import re
from typing import Dict, List, Optional

from ..core.diagnostics import Diagnostic, format_path
from ..core.escape import comment_line
from ..core.rules import Rule
from ..lower.plan import LaunchPlan
from . import Artifact
from .render import generated_by

# Kubernetes node architecture names (kubernetes.io/arch).
ARCH = {"x86_64": "amd64", "s390x": "s390x"}
VOLUME_SOURCES = {"pvc": "persistentVolumeClaim", "data-volume": "dataVolume",
                  "container-disk": "containerDisk", "host-disk": "hostDisk"}

EXTRA_ARGS = Rule(
    "CGS-KUBEVIRT-004", "KubeVirt cannot pass extra QEMU arguments",
    "virt-launcher builds the QEMU command line from the VirtualMachine; there is no field "
    "for raw arguments, so the guest would silently launch without them.",
    "reference/kubevirt/README.md",
    fix="Remove [qemu] extra-args, or leave kubevirt out of [targets] build.")
NO_VOLUME = Rule(
    "CGS-KUBEVIRT-005", "a disk has no KubeVirt volume",
    "A host path means nothing on a cluster: the disk must come from a PersistentVolumeClaim, "
    "a CDI DataVolume or a container image.", "docs/reference/keys.md [[disk]] kubevirt, [[net]] kubevirt",
    fix='Add kubevirt = { pvc = "name" }, { data-volume = "name" } or '
        '{ container-disk = "image" } to the [[disk]].')
HOST_DISK_GATE = Rule(
    "CGS-KUBEVIRT-006", "a host-disk volume needs the HostDisk feature gate acknowledged",
    "hostDisk volumes put a node's file into the VM; KubeVirt rejects them unless the "
    "cluster has the HostDisk feature gate on, which is a deliberate cluster-wide choice.",
    "reference/kubevirt/README.md (volumes)",
    fix='List the gate in [targets.kubevirt] feature-gates = ["HostDisk"] once the cluster has '
        "it on, or use a pvc / data-volume / container-disk volume.")
NETWORK = Rule(
    "CGS-KUBEVIRT-007", "an interface has no KubeVirt network",
    "On KubeVirt a `user` interface is the pod network (masquerade), and a VM has at most "
    "one; a host tap or bridge has no meaning on a cluster and needs a Multus network.",
    "docs/reference/keys.md [[disk]] kubevirt, [[net]] kubevirt",
    fix='Add kubevirt = { multus = "namespace/name" } to the [[net]].')
KERNEL_BOOT = Rule(
    "CGS-KUBEVIRT-008", "KubeVirt kernel boot needs both [kernel] image and kernel-container",
    "KubeVirt's kernelBoot takes the kernel and initrd from a container image; a host path "
    "alone means nothing on a cluster, and a kernel-container without [kernel] image says "
    "nothing about which file to boot.", "reference/kubevirt/virtualmachine.openapi.json "
    "(firmware.kernelBoot)",
    fix="Give [targets.kubevirt] kernel-container (an image holding the [kernel] files at the "
        "same paths) together with [kernel] image.")
VSOCK_CID = Rule(
    "CGS-KUBEVIRT-009", "KubeVirt assigns vsock CIDs itself",
    "A VirtualMachine can only ask for a vsock device (autoattachVSOCK); virt-controller "
    "picks the CID, so a fixed [vsock] cid would silently differ.",
    "KubeVirt API (autoattachVSOCK, VSOCK feature gate)",
    fix="Remove [vsock] for the KubeVirt guest, or leave kubevirt out of [targets] build.")
NAME = Rule(
    "CGS-KUBEVIRT-010", "the guest name is not a Kubernetes name",
    "A VirtualMachine's name becomes its pod and host name: a DNS-1123 label (a-z, 0-9 and "
    "`-`, starting and ending with a letter or digit).", "Kubernetes object names",
    fix="Rename the guest: lower-case letters, digits and `-` only, not ending in `-`.")
HOST_DISK_FORMAT = Rule(
    "CGS-KUBEVIRT-011", "a host-disk volume must be a raw image file",
    "KubeVirt's hostDisk (type Disk) opens an existing raw image file on the node; it does "
    "not read qcow2 or attach block devices.", "KubeVirt API (hostDisk)",
    fix='Use format = "raw" and an image file, or a pvc / data-volume volume.')

SERIAL = Rule(
    "CGS-KUBEVIRT-013", "a disk serial has a character KubeVirt refuses",
    "KubeVirt's admission webhook accepts a disk serial only of A-Z a-z 0-9 _ . + - "
    "(regexp ^[A-Za-z0-9_.+-]+$); libvirt and QEMU also take spaces, so a spec valid for "
    "the other targets would be rejected by the cluster.",
    "KubeVirt pkg/virt-api/webhooks/validating-webhook/admitters (validateSerialNumValue)",
    fix="Replace the spaces in [[disk]] serial, e.g. with _ or -.")
DIES = Rule(
    "CGS-KUBEVIRT-014", "KubeVirt has no CPU dies",
    "spec.domain.cpu has sockets, cores and threads only; KubeVirt's converter writes them "
    "as the domain's <topology> with one die per socket, so the guest would see another "
    "layout than on the other targets.",
    "KubeVirt pkg/virt-launcher/virtwrap/converter (GetCPUTopology); kubevirt.io/v1 CPU",
    fix="Leave dies out of [guest.topology] (fold them into cores), or leave kubevirt out "
        "of [targets] build.")
KUBEVIRT_SERIAL = re.compile(r"[A-Za-z0-9_.+-]+")


class KubevirtTarget:
    name = "kubevirt"
    summary = "KubeVirt VirtualMachine (<name>.kubevirt.yaml) for kubectl / GitOps"

    on_host = False   # the cluster launches it: no host file of the plan is read

    def unsupported(self, plan: LaunchPlan) -> Optional[List[Diagnostic]]:
        refusals = list(plan.confidential.kubevirt_refusals) + list(_refusals(plan))
        return refusals or None

    def render(self, plan: LaunchPlan) -> List[Artifact]:
        import yaml  # only this target needs it

        class Dumper(yaml.SafeDumper):
            def ignore_aliases(self, data):  # write repeated values out, never &id001 / *id001
                return True

        Dumper.add_representer(str, _represent_str)
        body = yaml.dump(virtual_machine(plan), Dumper=Dumper, sort_keys=False,
                         default_flow_style=False, allow_unicode=False, width=2 ** 16,
                         explicit_start=True)
        header = "".join(f"# {line}\n" for line in header_lines(plan))
        return [Artifact(f"{plan.name}.kubevirt.yaml", header + body)]


# A string is written plain only when no YAML 1.1 or 1.2 resolver could read it as anything
# but a string: it starts with a letter, holds only letters, digits and _ . / -, and is no
# boolean or null word (YAML 1.1 has y/n/yes/no/on/off; kubectl's go-yaml reads them so).
# Everything else (1e3, 0o17, 2Gi, "on", "~", ...) is double-quoted.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*")
_WORDS = frozenset("y n yes no on off true false null".split())


def _represent_str(dumper, data: str):
    plain = _PLAIN.fullmatch(data) and data.lower() not in _WORDS
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=None if plain else '"')


def _refusals(plan: LaunchPlan):
    settings = plan.settings["kubevirt"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", plan.name):
        yield NAME.error(("guest", "name"), f"{plan.name!r} is not a DNS-1123 label",
                         "use lower-case letters, digits and -, starting and ending with a "
                         "letter or digit")
    if plan.topology[1] != 1:
        yield DIES.error(("guest", "topology", "dies"), f"is {plan.topology[1]}; KubeVirt "
                         "gives every socket one die", "fold the dies into cores")
    for i, _arg in enumerate(plan.extra_args):
        yield EXTRA_ARGS.error(("qemu", "extra-args", i), "has no KubeVirt form",
                               "remove it, or leave kubevirt out of [targets] build")
    for i, d in enumerate(plan.disks):
        if d.kubevirt is None:
            yield NO_VOLUME.error(("disk", i), "has no kubevirt volume",
                                  'add kubevirt = { pvc = "name" } (or data-volume, '
                                  "container-disk)")
        elif d.kubevirt[0] == "host-disk":
            if "HostDisk" not in settings.feature_gates:
                yield HOST_DISK_GATE.error(("disk", i, "kubevirt", "host-disk"),
                                           "needs the HostDisk feature gate",
                                           'add feature-gates = ["HostDisk"] to '
                                           "[targets.kubevirt] once the cluster has it on")
            if d.format != "raw" or d.path.startswith("/dev/"):
                yield HOST_DISK_FORMAT.error(("disk", i, "kubevirt", "host-disk"),
                                             f"{d.path} ({d.format}) is not a raw image file",
                                             'use format = "raw" and an image file, or a pvc')
        if d.serial and not KUBEVIRT_SERIAL.fullmatch(d.serial):
            yield SERIAL.error(("disk", i, "serial"), f"{d.serial!r} has a character other "
                               "than A-Z a-z 0-9 _ . + -", "replace the spaces, e.g. with _")
    pod = [i for i, n in enumerate(plan.nics) if n.multus is None]
    for i in pod:
        if plan.nics[i].mode != "user":
            yield NETWORK.error(("net", i, "mode"),
                                f"{plan.nics[i].mode!r} has no KubeVirt form without Multus",
                                'add kubevirt = { multus = "namespace/name" }')
    for i in [i for i in pod if plan.nics[i].mode == "user"][1:]:
        yield NETWORK.error(("net", i), "is a second pod network; a VM has at most one",
                            'attach it to a Multus network: kubevirt = { multus = "ns/name" }')
    if plan.kernel.image and not settings.kernel_container:
        yield KERNEL_BOOT.error(("kernel", "image"), "is a host path; KubeVirt boots a kernel "
                                "from a container image", "add [targets.kubevirt] "
                                'kernel-container = "registry/image@sha256:..." holding it')
    elif settings.kernel_container and not plan.kernel.image:
        yield KERNEL_BOOT.error(("targets", "kubevirt", "kernel-container"),
                                "is set but there is no [kernel] image to boot from it",
                                "add [kernel] image (its path inside the container), or "
                                "remove kernel-container")
    if plan.vsock_cid is not None:
        yield VSOCK_CID.error(("vsock", "cid"), "is fixed; KubeVirt assigns vsock CIDs itself",
                              "remove [vsock], or leave kubevirt out of [targets] build")


def virtual_machine(plan: LaunchPlan) -> dict:
    """The VirtualMachine as plain data, keys in the order kubectl users read them."""
    settings = plan.settings["kubevirt"]
    labels = dict(settings.labels)
    metadata: Dict[str, object] = {"name": plan.name}
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    if labels:
        metadata["labels"] = labels
    template: Dict[str, object] = {}
    if labels:
        template["metadata"] = {"labels": dict(labels)}
    template["spec"] = _vmi_spec(plan)
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": metadata,
            "spec": {"runStrategy": settings.run_strategy, "template": template}}


def _vmi_spec(plan: LaunchPlan) -> dict:
    spec: Dict[str, object] = {"architecture": ARCH.get(plan.arch, plan.arch),
                               "domain": _domain(plan)}
    networks = [{"name": n.id, **({"multus": {"networkName": n.multus}} if n.multus
                                  else {"pod": {}})} for n in plan.nics]
    if networks:
        spec["networks"] = networks
    volumes = [_volume(d) for d in plan.disks]
    if volumes:
        spec["volumes"] = volumes
    return spec


def _domain(plan: LaunchPlan) -> dict:
    form = plan.confidential.kubevirt
    domain: Dict[str, object] = {
        "cpu": {"model": "host-passthrough" if plan.cpu == "host" else plan.cpu,
                # KubeVirt's converter writes these as the domain's <topology> (dies 1)
                "sockets": plan.topology[0], "cores": plan.topology[2],
                "threads": plan.topology[3]},
        "machine": {"type": plan.machine},
        "resources": {"requests": {"memory": f"{plan.memory_mib}Mi"}},
    }
    firmware: Dict[str, object] = {"uuid": plan.uuid}
    if form.efi is not None:
        firmware["bootloader"] = {"efi": dict(form.efi)}
    if plan.kernel.image:
        container = {"image": plan.settings["kubevirt"].kernel_container,
                     "kernelPath": plan.kernel.image}
        if plan.kernel.initrd:
            container["initrdPath"] = plan.kernel.initrd
        boot: Dict[str, object] = {"container": container}
        if plan.kernel.cmdline is not None:
            boot["kernelArgs"] = plan.kernel.cmdline
        firmware["kernelBoot"] = boot
    domain["firmware"] = firmware
    if form.smm is not None:
        domain["features"] = {"smm": {"enabled": form.smm}}
    domain["launchSecurity"] = form.launch_security
    domain["devices"] = _devices(plan)
    return domain


def _devices(plan: LaunchPlan) -> dict:
    # Every autoattach default is written out, so the VM has exactly the spec's devices.
    devices: Dict[str, object] = {
        "autoattachGraphicsDevice": False,     # the launch script has -display none
        "autoattachMemBalloon": False,         # and no balloon
        "autoattachPodInterface": False,       # only the interfaces listed below
        "autoattachSerialConsole": plan.console.kind != "none",
    }
    disks = []
    for d in plan.disks:
        disk: Dict[str, object] = {"name": d.id, "disk": {"bus": d.bus}}
        if d.readonly:
            disk["disk"]["readonly"] = True
        if d.boot_index:
            disk["bootOrder"] = d.boot_index
        disk["cache"] = d.cache
        if d.serial:
            disk["serial"] = d.serial
        disks.append(disk)
    if disks:
        devices["disks"] = disks
    interfaces = [{"name": n.id, ("bridge" if n.multus else "masquerade"): {},
                   "macAddress": n.mac, "model": n.model} for n in plan.nics]
    if interfaces:
        devices["interfaces"] = interfaces
    return devices


def _volume(d) -> dict:
    kind, value = d.kubevirt
    if kind == "pvc":
        source = {"claimName": value, **({"readOnly": True} if d.readonly else {})}
    elif kind == "data-volume":
        source = {"name": value}
    elif kind == "container-disk":
        source = {"image": value}
    else:  # host-disk: the disk's own path, on the node
        source = {"path": d.path, "type": "Disk"}
    return {"name": d.id, VOLUME_SOURCES[kind]: source}


def header_lines(plan: LaunchPlan) -> List[str]:
    """The header comment, one line per entry. comment_line escapes every character that
    YAML would read as a line break (\\n, \\r, NEL, U+2028, U+2029), so no input ends a comment."""
    cgs = plan.confidential
    form = cgs.kubevirt
    title = cgs.title + (f" ({', '.join(f'{k} {v}' for k, v in cgs.summary)})"
                         if cgs.summary else "")
    lines = [generated_by(plan),
             comment_line(f"Guest {plan.name}: {title}"
                          + (f" - {plan.description}" if plan.description else "")),
             "Apply: kubectl apply -f " + comment_line(f"{plan.name}.kubevirt.yaml")
             + " (or commit it where Argo CD / Flux sync from)",
             "KubeVirt feature gate the cluster needs: " + form.feature_gate]
    if any(d.kubevirt and d.kubevirt[0] == "host-disk" for d in plan.disks):
        lines.append("KubeVirt feature gate the cluster needs: HostDisk "
                     "(spec.configuration.developerConfiguration.featureGates)")
    lines.append("The cluster decides, not this manifest:")
    decides = list(form.cluster_decides)
    if plan.disks:
        decides.append("disk contents: the volumes named below hold them; [[disk]] path and "
                       "format apply to the other targets")
    if plan.console.kind != "none":
        decides.append("the serial console: `virtctl console " + comment_line(plan.name)
                       + "` instead of [console]")
    if plan.qmp_socket:
        decides.append("QMP: virt-launcher owns the monitor; [qmp] socket has no KubeVirt form")
    decides.append("eviction: confidential guests cannot live-migrate; the VM's "
                   "evictionStrategy comes from the cluster default")
    lines += [f"  - {comment_line(d)}" for d in decides]
    if getattr(plan, "attestation", None):
        lines.append("Attestation: the reference values are in manifest.json; KubeVirt's "
                     "firmware and vCPU model must match them, or the measurement differs")
    for warning in plan.warnings:
        lines += [comment_line(part) for part in warning.splitlines()]
    lines += [f"waived {rule}: {comment_line(reason)}" for rule, reason in plan.waivers]
    return lines


TARGET = KubevirtTarget()



def explain(plan: LaunchPlan, locate, asked: bool) -> dict:
    """For `cgsc explain`: what this target would emit and what it refuses (located)."""
    out: Dict[str, object] = {"built": "by [targets] build" if asked
                              else "only with -t kubevirt or [targets] build"}
    refused = [locate(d) for d in (TARGET.unsupported(plan) or ())]
    if refused:
        out["refuses"] = [{"rule": d.rule, "file": d.file, "line": d.line,
                           "key": format_path(d.path), "message": d.message} for d in refused]
        return out
    domain = virtual_machine(plan)["spec"]["template"]["spec"]["domain"]
    firmware = {k: v for k, v in domain["firmware"].items() if k != "uuid"}
    out["emits"] = [f"{plan.name}.kubevirt.yaml: kubevirt.io/v1 VirtualMachine {plan.name}",
                    "launchSecurity " + json.dumps(domain["launchSecurity"])]
    if firmware:
        out["emits"].append("firmware " + json.dumps(firmware))
    out["emits"].append("feature gate " + plan.confidential.kubevirt.feature_gate)
    return out

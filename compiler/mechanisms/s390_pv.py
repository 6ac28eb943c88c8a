"""IBM Z Protected Virtualization (Secure Execution): QEMU's s390-pv-guest object."""

from __future__ import annotations

from typing import Iterable

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from ..lower.guest_rules import scan_extra_args
from ..lower.plan import Confidential, Element, HostParam, KubevirtForm
from ..lower.qemu import QemuObject
from . import CGS_ID, Mechanism
from . import kubevirt as kv

SEALED = Rule(
    "CGS-PV-001", "s390x PV boot images carry their own initrd and cmdline",
    "A Secure Execution image made by genprotimg seals the kernel, initrd and command "
    "line together; QEMU ignores -initrd and -append for it, so a spec that gives them "
    "says something that never happens.", "qemu.md section 7",
    fix="Remove initrd and cmdline; build them into the image with genprotimg.")
NO_BOOT = Rule(
    "CGS-PV-002", "s390x PV needs a boot source",
    "The guest boots a genprotimg image, either as [kernel] image or from a disk.",
    "qemu.md section 7",
    fix="Give [kernel] image (a genprotimg image) or a [[disk]] that holds one.")
UNSUPPORTED = Rule(
    "CGS-PV-003", "s390x PV cannot use huge pages, memory ballooning or device passthrough",
    "Protected VMs refuse huge-page backing at run time, cannot discard RAM (balloon) "
    "and cannot use vfio devices.", "qemu.md section 7",
    fix="Remove the extra argument.")
FORBIDDEN_ARGS = ("hugetlbfs", "-mem-path", "hugepages", "virtio-balloon", "vfio")


class S390Pv(Mechanism):
    name = "s390-pv"
    title = "IBM Z Protected Virtualization"
    qom_type = "s390-pv-guest"
    arch = "s390x"
    machine_pattern = r"s390-ccw-virtio|s390-ccw-virtio-[0-9][0-9.]*"
    machine_hint = 'machine = "s390-ccw-virtio"'
    firmware = "none"
    sealed_kernel_args = True

    def check(self, guest) -> Iterable[Diagnostic]:
        for key, value in (("initrd", guest.kernel_initrd), ("cmdline", guest.kernel_cmdline)):
            if value is not None:
                yield SEALED.error(("kernel", key), "cannot be given for an s390x PV guest",
                                   f"remove it: the {key} is sealed inside the genprotimg image")
        if not guest.kernel_image and not guest.disks:
            yield NO_BOOT.error(guest.mech_path, "there is no [kernel] image and no [[disk]]",
                                "boot a genprotimg image: [kernel] image = \"/path/se.img\" "
                                "or a [[disk]] holding it")
        for i, needle in scan_extra_args(guest.extra_args, FORBIDDEN_ARGS):
            yield UNSUPPORTED.error(("qemu", "extra-args", i), f"uses {needle}",
                                    "remove it: protected VMs cannot use it")

    measurement_keys = ("kernel", "verify-at-launch")

    def attest(self, guest, files, host=None):
        from ..measure.stage import Attested
        image = files["kernel"]
        notes = ("The Secure Execution image is sealed by `pvimg create` (genprotimg) for the "
                 "host-key documents of the target machines; its sha256 identifies it. "
                 "Attestation measurements come from `pvattest create/perform/verify --hdr` "
                 "with the image's SE header and are not predicted by cgsc.",)
        return Attested(report={"se-image-sha256": image.sha256},
                        not_predicted=("pvattest-measurement",), notes=notes), []

    def lower(self, guest) -> Confidential:
        return Confidential(
            mechanism=self.name, title=self.title,
            object=QemuObject(self.qom_type, CGS_ID),
            no_balloon=True,
            host_params=(HostParam("/sys/firmware/uv/prot_virt_host", ("1",),
                                   "this host does not run protected guests "
                                   "(boot it with prot_virt=1)"),),
            libvirt_security=Element("launchSecurity", (("type", "s390-pv"),)),
            # On s390x an empty launchSecurity asks for Secure Execution; no EFI there.
            kubevirt=KubevirtForm({}, feature_gate=kv.PV_GATE,
                                  cluster_decides=(kv.node_selection("Secure Execution"),)),
        )


S390_PV = S390Pv()

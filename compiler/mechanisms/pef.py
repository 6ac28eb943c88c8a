"""IBM POWER Protected Execution Facility: QEMU's pef-guest object (no properties)."""

from __future__ import annotations

from ..lower.plan import Confidential
from ..lower.qemu import Opts, QemuObject
from . import CGS_ID, Mechanism
from . import kubevirt as kv


class Pef(Mechanism):
    name = "pef"
    title = "IBM POWER PEF"
    qom_type = "pef-guest"
    arch = "ppc64"
    machine_pattern = r"pseries|pseries-[0-9][0-9.]*"
    machine_hint = 'machine = "pseries" (or a versioned pseries-X.Y)'
    firmware = "none"

    def lower(self, guest) -> Confidential:
        obj = QemuObject(self.qom_type, CGS_ID)
        machine = Opts(None, (("confidential-guest-support", CGS_ID),))
        return Confidential(
            mechanism=self.name, title=self.title, object=obj,
            libvirt_passthrough=("-object", obj.option().value.render(),
                                 "-machine", machine.render()),
            libvirt_note="libvirt has no native POWER PEF support (no <launchSecurity> type); "
                         "the pef-guest object is passed to QEMU through <qemu:commandline>, "
                         "which marks the domain tainted (custom-argv).",
            kubevirt_refusals=(kv.NO_FORM.error(
                guest.mech_path, "KubeVirt has no launchSecurity for POWER PEF (and no ppc64 "
                "confidential guests)", "leave kubevirt out of [targets] build for this guest"),),
        )


PEF = Pef()

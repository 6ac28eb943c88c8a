"""AMD SEV and SEV-ES: QEMU's sev-guest object; SEV-ES is policy bit 2."""

from __future__ import annotations

from typing import Iterable

from cgsc.diagnostics import Diagnostic
from cgsc.mechanisms import CGS_ID, Mechanism, amd
from cgsc.mechanisms.layout import Flag, Layout
from cgsc.plan import Confidential, Element
from cgsc.qemu import Hex, QemuObject
from cgsc.rules import Rule

ES_BIT = 1 << 2
RESERVED = 0xFFC0   # bits 6-15
POLICY = Layout(
    "policy", {0: "nodbg", 1: "noks", 2: "es", 3: "nosend", 4: "domain", 5: "sev"},
    flags=(Flag("debug", 0, False), Flag("key-sharing", 1, False), Flag("send", 3, False),
           Flag("domain", 4, True), Flag("sev-only", 5, True)),
    fields=(("api-major", 16), ("api-minor", 24)))
SESSION_FILES = ("dh-cert-file", "session-file")
ES_UNDER_SEV = Rule(
    "CGS-SEV-001", "policy bit 2 (SEV-ES) is set under [confidential.sev]",
    "QEMU turns a sev-guest into an SEV-ES guest when policy bit 2 is set. cgsc keeps "
    "the mechanism visible in the table name, so a reviewer never has to decode a hex "
    "digit to see that the guest runs with encrypted state.",
    "qemu.md section 3 (policy table)")
RESERVED_BITS = Rule(
    "CGS-SEV-002", "SEV policy sets reserved bits 6-15",
    "Bits 6-15 of the SEV guest policy are reserved and must be zero; firmware refuses "
    "LAUNCH_START otherwise.", "AMD SEV API, Guest Policy; qemu.md section 3")


class Sev(Mechanism):
    name = "sev"
    title = "AMD SEV"
    qom_type = "sev-guest"
    schema_file = "sev.schema.json"
    es = False

    def policy(self, cfg: dict) -> int:
        raw = cfg.get("policy", {})
        value = raw if isinstance(raw, int) else POLICY.encode(raw)
        return value | ES_BIT if self.es else value

    def check(self, guest) -> Iterable[Diagnostic]:
        cfg, path = guest.confidential, guest.mech_path
        raw = cfg.get("policy")
        if isinstance(raw, int):
            if raw & ES_BIT and not self.es:
                yield ES_UNDER_SEV.error(
                    path + ("policy",), f"policy {raw:#x} sets bit 2 (SEV-ES)",
                    "use [confidential.sev-es] for an SEV-ES guest, or clear bit 2")
            if raw & RESERVED:
                yield RESERVED_BITS.error(
                    path + ("policy",), f"policy {raw:#x} sets reserved bits {raw & RESERVED:#x}",
                    "bits 6-15 must be zero; prefer the named form, e.g. policy = { debug = false }")
        yield from amd.check_kernel_hashes(guest, path)
        if self.es:
            yield from amd.check_irqchip(guest)

    def lower(self, guest) -> Confidential:
        cfg = guest.confidential
        policy = self.policy(cfg)
        props = amd.common_props(cfg) + (("policy", Hex(policy)),)
        for key in ("dh-cert-file", "session-file", "legacy-vm-type"):
            if key in cfg:
                props += ((key, cfg[key]),)
        params = (amd.host_param("sev", "SEV"),)
        if self.es:
            params += (amd.host_param("sev_es", "SEV-ES"),)
        return Confidential(
            mechanism=self.name, title=self.title,
            object=QemuObject(self.qom_type, CGS_ID, props),
            machine_props=(("smm", False),) if self.es else (),
            nic_rom_off=True, lock_memory=True, reboot_ends_process=self.es,
            host_devices=(amd.sev_device(cfg),), host_params=params,
            libvirt_security=amd.launch_security("sev", cfg, policy),
            libvirt_features=(Element("smm", (("state", "off"),)),) if self.es else (),
            libvirt_unsupported=_libvirt_unsupported(cfg),
            libvirt_unsupported_key=next((k for k in SESSION_FILES if k in cfg), ""),
            summary=(("policy", f"{policy:#06x}"),),
        )


def _libvirt_unsupported(cfg: dict) -> str:
    # libvirt takes the base64 content inline, and cgsc never reads host files at build
    # time; dropping the launch session silently would break the owner's attestation.
    files = [k for k in SESSION_FILES if k in cfg]
    if not files:
        return ""
    return (f"{' and '.join(files)} name files, but libvirt wants their base64 content "
            "inline in <dhCert>/<session>")


class SevEs(Sev):
    name = "sev-es"
    title = "AMD SEV-ES"
    es = True


SEV = Sev()
SEV_ES = SevEs()

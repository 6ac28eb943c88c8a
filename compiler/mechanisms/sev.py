"""AMD SEV and SEV-ES: QEMU's sev-guest object; SEV-ES is policy bit 2."""

from __future__ import annotations

from typing import Iterable

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from ..lower.plan import Confidential, Element, KubevirtForm
from ..lower.qemu import Hex, QemuObject
from . import CGS_ID, Mechanism, amd
from . import kubevirt as kv
from .layout import Flag, Layout

ES_BIT = 1 << 2
RESERVED = 0xFFC0   # bits 6-15
POLICY = Layout(
    "policy", {0: "nodbg", 1: "noks", 2: "es", 3: "nosend", 4: "domain", 5: "sev"},
    flags=(Flag("debug", 0, False), Flag("key-sharing", 1, False), Flag("send", 3, False),
           Flag("domain", 4, True), Flag("sev-only", 5, True)),
    fields=(("api-major", 16), ("api-minor", 24)))
SESSION_FILES = ("dh-cert-file", "session-file")
# KVM pins every page it registers for encryption (KVM_MEMORY_ENCRYPT_REG_REGION,
# sev_pin_memory) against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
MEMLOCK_NOTE = ("AMD SEV pins all guest memory (KVM_MEMORY_ENCRYPT_REG_REGION), which counts "
                "against the memlock limit: the limit is lifted for QEMU")
ES_UNDER_SEV = Rule(
    "CGS-SEV-001", "policy bit 2 (SEV-ES) is set under [confidential.sev]",
    "QEMU turns a sev-guest into an SEV-ES guest when policy bit 2 is set. cgsc keeps "
    "the mechanism visible in the table name, so a reviewer never has to decode a hex "
    "digit to see that the guest runs with encrypted state.",
    "AMD SEV API, Guest Policy; QEMU docs/system/i386/amd-memory-encryption.rst",
    fix="Use [confidential.sev-es] (which sets bit 2), or clear bit 2.")
RESERVED_BITS = Rule(
    "CGS-SEV-002", "SEV policy sets reserved bits 6-15",
    "Bits 6-15 of the SEV guest policy are reserved and must be zero; firmware refuses "
    "LAUNCH_START otherwise.", "AMD SEV API, Guest Policy",
    fix="Clear bits 6-15; prefer the named form of policy.")


DEBUG_ALLOWED = Rule(
    "CGS-SEV-010", "the SEV policy allows debugging",
    "With NODBG (bit 0) clear, the host may use the firmware's DBG_DECRYPT/DBG_ENCRYPT "
    "commands to read and write the guest's memory in the clear.",
    "AMD SEV API, Guest Policy; QEMU docs/system/i386/amd-memory-encryption.rst",
    fix="Set debug = false (the default), or waive with a reason for a lab guest.",
    severity="warning")
KEY_SHARING = Rule(
    "CGS-SEV-011", "the SEV policy allows key sharing",
    "With NOKS (bit 1) clear, another guest may be launched with this guest's memory key.",
    "AMD SEV API, Guest Policy",
    fix="Set key-sharing = false (the default).", severity="warning")
SEND_ALLOWED = Rule(
    "CGS-SEV-012", "the SEV policy allows sending the guest to another platform",
    "With NOSEND (bit 3) clear, the guest's encrypted state may be exported to another "
    "machine; cgsc and QEMU treat confidential guests as non-migratable anyway.",
    "AMD SEV API, Guest Policy; QEMU target/i386/sev.c (a migration blocker for SEV guests)",
    fix="Set send = false (the default).", severity="warning")
PLAIN_SEV = Rule(
    "CGS-SEV-013", "plain SEV leaves the vCPU register state unencrypted",
    "SEV encrypts memory only; the host can read and change register state at every exit. "
    "SEV-ES (or SEV-SNP) protects it.",
    "QEMU docs/system/i386/amd-memory-encryption.rst; AMD SEV-ES (AMD64 APM vol. 2, 15.35)",
    fix="Use [confidential.sev-es] or [confidential.sev-snp] where the host supports it.",
    severity="warning")


class Sev(Mechanism):
    name = "sev"
    title = "AMD SEV"
    firmware_example = "/usr/share/ovmf/OVMF.amdsev.fd"   # Debian: ovmf (edk2 AmdSevX64)
    qom_type = "sev-guest"
    layout = POLICY
    es = False
    measurement_keys = ("firmware", "kernel", "initrd", "verify-at-launch")
    reference_formats = ("sev-launch-measure",)

    def measurement_checks(self, guest) -> Iterable[Diagnostic]:
        return amd.measurement_checks(guest, with_vcpus=self.es)

    def prepare(self, guest, files, host=None):
        amd.prepare(guest, files)

    def attest(self, guest, files, host=None):
        attested, errors = amd.attest(guest, files, self.policy(guest.confidential))
        if errors:
            return None, errors
        notes = ("SEV has no attestation report: LAUNCH_MEASURE returns an HMAC, keyed with "
                 "the guest owner's TIK, over this launch digest, the policy, the firmware API "
                 "version and a nonce; the guest owner recomputes it from these values",)
        return attested._replace(notes=notes,
                                 not_predicted=("api_major", "api_minor", "build", "mnonce")), []

    def reference_values(self, fmt, guest_name, attestation, asked=False):
        from ..measure import sev_launch
        return sev_launch.files(attestation)

    def word(self, cfg: dict) -> int:
        return self.policy(cfg)

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
        else:
            yield PLAIN_SEV.warning(path, "SEV without ES: the host can read vCPU registers",
                                    "use [confidential.sev-es] if the host supports it")
        policy = self.policy(cfg)
        for rule, bit, flag, what in ((DEBUG_ALLOWED, 0, "debug", "debugging"),
                                      (KEY_SHARING, 1, "key-sharing", "key sharing"),
                                      (SEND_ALLOWED, 3, "send", "sending the guest")):
            if not policy >> bit & 1:
                yield rule.warning(POLICY.flag_path(path, cfg, flag), f"the policy allows {what} "
                                   f"(bit {bit} clear in {policy:#x})", f"set {flag} = false")

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
            nic_rom_off=True, lock_memory=True, reboot_ends_process=self.reboot_ends_process,
            memory_note=MEMLOCK_NOTE,
            host_devices=(amd.sev_device(cfg),), host_params=params,
            # KVM's legacy KVM_SEV_ES_INIT adds DebugSwap on Linux 6.6-6.9 (debug_swap=Y)
            debug_swap_measured=self.es and cfg.get("legacy-vm-type") != "off",
            libvirt_security=amd.launch_security("sev", cfg, policy),
            libvirt_features=(Element("smm", (("state", "off"),)),) if self.es else (),
            libvirt_unsupported=_libvirt_unsupported(cfg),
            libvirt_unsupported_key=next((k for k in SESSION_FILES if k in cfg),
                                         "legacy-vm-type" if _init2(cfg) else ""),
            kubevirt=KubevirtForm(
                {"sev": {"policy": {"encryptedState": self.es}}}, efi={"secureBoot": False},
                smm=False if self.es else None, feature_gate=kv.SEV_GATE,
                cluster_decides=(kv.node_selection(self.title), kv.firmware("AmdSev"))
                + kv.AMD_CLUSTER),
            kubevirt_refusals=tuple(self._kubevirt_refusals(cfg, policy, guest.mech_path)),
            summary=(("policy", f"{policy:#06x}"),),
        )

    def _kubevirt_refusals(self, cfg: dict, policy: int, path):
        # KubeVirt's SEV policy is NODBG, plus ES when encryptedState is set.
        fixed = 0x1 | (ES_BIT if self.es else 0)
        if policy != fixed:
            yield kv.refuse_word(path + (("policy",) if "policy" in cfg else ()), "policy",
                                 policy, fixed, "NODBG" + (" and ES" if self.es else "")
                                 + "; it allows key sharing and sending, so waive "
                                   "CGS-SEV-011 and CGS-SEV-012 with a reason")
        if cfg.get("kernel-hashes"):
            yield from kv.refuse_keys(cfg, path, ("kernel-hashes",),
                                      "KubeVirt has no field for kernel-hashes")
        yield from kv.refuse_keys(cfg, path, SESSION_FILES,
                                  "KubeVirt wants the base64 content inline (sev.dhCert, "
                                  "sev.session, with sev.attestation and a Paused start), "
                                  "and cgsc does not read host files at build time")
        if amd.sev_device(cfg) != amd.SEV_DEVICE:
            yield from kv.refuse_keys(cfg, path, ("sev-device",), "KubeVirt always uses /dev/sev")
        yield from kv.refuse_keys(cfg, path, ("legacy-vm-type",),
                                  "KubeVirt (through libvirt) chooses the KVM VM type")


def _libvirt_unsupported(cfg: dict) -> str:
    # libvirt takes the base64 content inline, and cgsc never reads host files at build
    # time; dropping the launch session silently would break the owner's attestation.
    files = [k for k in SESSION_FILES if k in cfg]
    if files:
        return (f"{' and '.join(files)} name files, but libvirt wants their base64 content "
                "inline in <dhCert>/<session>")
    if _init2(cfg):
        # libvirt (through 12.9) never sets legacy-vm-type: its QEMU takes the default,
        # auto, which is KVM's legacy launch, and an SEV-ES guest then measures differently.
        return ('legacy-vm-type = "off" has no libvirt setting: libvirt\'s QEMU would launch '
                "with its default, KVM's legacy KVM_SEV_INIT/KVM_SEV_ES_INIT, not "
                "KVM_SEV_INIT2 (and an SEV-ES guest measures differently there)")
    return ""


def _init2(cfg: dict) -> bool:
    return cfg.get("legacy-vm-type") == "off"


class SevEs(Sev):
    name = "sev-es"
    title = "AMD SEV-ES"
    es = True
    reboot_ends_process = True
    measurement_keys = Sev.measurement_keys + ("vcpu-type", "guest-features")


SEV = Sev()
SEV_ES = SevEs()

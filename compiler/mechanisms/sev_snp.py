"""AMD SEV-SNP: QEMU's sev-snp-guest object (QEMU >= 9.1)."""

from __future__ import annotations

from typing import Iterable

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from ..lower.plan import Confidential, Element, KubevirtForm
from ..lower.qemu import Hex, QemuObject
from . import CGS_ID, Mechanism, amd
from . import kubevirt as kv
from .blobs import check_blob
from .layout import Flag, Layout

MBO_BIT = 1 << 17            # reserved, must be one
KNOWN = (1 << 25) - 1        # bits 0-24 are defined
KUBEVIRT_POLICY = 0x30000    # SMT allowed, bit 17; KubeVirt has no other
POLICY = Layout(
    "policy", {16: "smt", 17: "reserved-must-be-one", 18: "migrate-ma", 19: "debug",
               20: "single-socket", 21: "cxl", 22: "mem-aes-256-xts", 23: "rapl-disable",
               24: "ciphertext-hiding"},
    flags=(Flag("smt", 16, True, default=True), Flag("migrate-ma", 18, True),
           Flag("debug", 19, True), Flag("single-socket", 20, True), Flag("cxl", 21, True),
           Flag("mem-aes-256-xts", 22, True), Flag("rapl-disable", 23, True),
           Flag("ciphertext-hiding", 24, True)),
    fields=(("abi-major", 8), ("abi-minor", 0)), always=MBO_BIT)
# [measurement] keys cgsc puts into the ID block it signs (SEV-SNP ABI 56860, ID_BLOCK);
# the report shows them as family_id, image_id and guest_svn.
ID_FIELDS = ("family-id", "image-id", "guest-svn")
BLOBS = (("guest-visible-workarounds", "guestVisibleWorkarounds", 16),
         ("id-block", "idBlock", 96), ("id-auth", "idAuth", 4096),
         ("host-data", "hostData", 32))

MBO_CLEAR = Rule(
    "CGS-SNP-001", "SNP policy bit 17 (reserved, must be one) is clear",
    "The SEV-SNP firmware ABI requires bit 17 of the guest policy to be set; "
    "SNP_LAUNCH_START fails with EINVAL otherwise, long after the spec was merged. "
    "The named-flag form sets it automatically.",
    "SEV-SNP firmware ABI (AMD 56860), guest policy; AMDESE/AMDSEV#256",
    fix="Set bit 17 (0x20000), or use the named form, which always sets it.")
RESERVED_BITS = Rule(
    "CGS-SNP-002", "SNP policy sets reserved bits 25-63",
    "Bits above 24 are reserved; firmware rejects the launch. A common cause is a "
    "mistyped hex constant (0x300000 for 0x30000).", "AMDESE/sev-guest#33",
    fix="Clear bits 25-63; 0x30000 is the usual policy.")
BLOB = Rule(
    "CGS-SNP-003", "an SNP blob is not base64 of the exact size",
    "QEMU checks the decoded size of guest-visible-workarounds (16), id-block (96), "
    "id-auth (4096) and host-data (32) only when the guest starts.",
    "QEMU qapi/qom.json SevSnpGuestProperties; target/i386/sev.c",
    fix="Give the blob as standard base64 of exactly the size the message names.")
AUTHOR_KEY = Rule(
    "CGS-SNP-004", "author-key needs id-auth",
    "author-key-enabled says that id-auth carries an author key; without id-auth the "
    "flag has nothing to describe.",
    "QEMU qapi/qom.json SevSnpGuestProperties (author-key-enabled); SEV-SNP firmware ABI, "
    "SNP_LAUNCH_FINISH",
    fix="Add id-auth, or set author-key = false.")
ID_AUTH_ALONE = Rule(
    "CGS-SNP-005", "id-auth without id-block",
    "The ID authentication structure signs an ID block; SNP_LAUNCH_FINISH only uses it "
    "when an ID block is given, so id-auth alone is silently ignored.",
    "SEV-SNP firmware ABI, SNP_LAUNCH_FINISH",
    fix="Add the id-block that id-auth signs, or remove id-auth.")


DEBUG_ALLOWED = Rule(
    "CGS-SNP-010", "the SNP policy allows debugging",
    "With DEBUG (bit 19) set the host may decrypt guest memory with SNP_DBG_DECRYPT. The "
    "debug bit is not part of the launch measurement, so a verifier must check the policy "
    "in the attestation report.", "SEV-SNP firmware ABI; confidential-dot-ai/attestation-rs#67",
    fix="Set debug = false (the default), or waive with a reason for a lab guest.",
    severity="warning")
SMT_SINGLE_SOCKET = Rule(
    "CGS-SNP-011", "the SNP policy allows SMT together with single-socket",
    "single-socket asks for a host that shares less, yet SMT siblings still share core "
    "resources with other tenants; the two together usually mean a half-finished hardening.",
    "SEV-SNP firmware ABI, guest policy",
    fix="Set smt = false as well, or drop single-socket.", severity="warning")
MIGRATION_AGENT = Rule(
    "CGS-SNP-012", "the SNP policy allows a migration agent",
    "MIGRATE_MA (bit 18) lets a migration agent export the guest; KVM's original policy mask "
    "does not even accept it, and confidential guests are treated as non-migratable.",
    "SEV-SNP firmware ABI, guest policy; Linux arch/x86/kvm/svm/sev.c SNP_POLICY_MASK_VALID",
    fix="Set migrate-ma = false (the default).", severity="warning")
ID_KEYS = Rule(
    "CGS-MEASURE-030", "the ID block is both signed by cgsc and given in the spec",
    "With measurement.id-key cgsc signs the ID block for the computed launch digest; an "
    "id-block, id-auth or author-key in [confidential.sev-snp] would contradict it. "
    "author-key in [measurement] signs the ID key, and family-id, image-id and guest-svn "
    "go into the ID block cgsc signs, so they need id-key.",
    "docs/attestation.md (AMD: what is predicted); SEV-SNP firmware ABI, SNP_LAUNCH_FINISH",
    fix="Keep either measurement.id-key (and author-key) or the spec's id-block/id-auth, not both.")
BAD_KEY = Rule(
    "CGS-MEASURE-031", "an ID or author key is not a P-384 EC private key in PEM",
    "The SEV-SNP firmware accepts ECDSA P-384 signatures only; the key must be an "
    "unencrypted PEM private key on that curve.", "SEV-SNP firmware ABI, ID_AUTH structure",
    fix="Generate one with `openssl ecparam -name secp384r1 -genkey -noout -out id-key.pem`.")
UNPINNED_ID = Rule(
    "CGS-MEASURE-032", "an ID block is used without measured boot files",
    "The firmware refuses a launch whose digest differs from the ID block's, but nothing "
    "checks at build or launch time that the files on the host are the ones the ID block was "
    "signed for; the guest then fails at launch with no hint which file changed.",
    "docs/attestation.md ([measurement], step by step)", severity="warning",
    fix="Add [measurement] with id-key (cgsc signs the ID block) and keep verify-at-launch = true.")


class SevSnp(Mechanism):
    name = "sev-snp"
    title = "AMD SEV-SNP"
    firmware_example = "/usr/share/ovmf/OVMF.amdsev.fd"   # Debian: ovmf-amdsev (edk2 AmdSevX64)
    qom_type = "sev-snp-guest"
    firmware = "bios"
    layout = POLICY
    reboot_ends_process = True
    measurement_keys = ("firmware", "kernel", "initrd", "verify-at-launch", "vcpu-type",
                        "guest-features", "id-key", "author-key") + ID_FIELDS
    reference_formats = ("go-sev-guest", "trustee")
    evidence = "an SEV-SNP attestation report (snpguest report, or configfs-tsm's outblob)"

    def word(self, cfg: dict) -> int:
        return self.policy(cfg)

    @staticmethod
    def policy(cfg: dict) -> int:
        raw = cfg.get("policy", {})
        if isinstance(raw, int):
            return raw
        return POLICY.encode(raw)

    def check(self, guest) -> Iterable[Diagnostic]:
        cfg, path = guest.confidential, guest.mech_path
        raw = cfg.get("policy")
        if isinstance(raw, int):
            if not raw & MBO_BIT:
                yield MBO_CLEAR.error(
                    path + ("policy",), f"policy {raw:#x} has bit 17 clear; it must be set",
                    f"use {raw | MBO_BIT:#x}, or the named form (policy = {{ smt = true }}), "
                    "which sets bit 17 for you")
            if raw & ~KNOWN:
                yield RESERVED_BITS.error(
                    path + ("policy",), f"policy {raw:#x} sets reserved bits {raw & ~KNOWN:#x}",
                    "only bits 0-24 are defined; check for a mistyped constant (0x30000 is the default)")
        for key, _tag, size in BLOBS:
            yield from check_blob(BLOB, path + (key,), cfg.get(key), size, key)
        if cfg.get("author-key") and "id-auth" not in cfg:
            yield AUTHOR_KEY.error(path + ("author-key",), "is true but id-auth is not given",
                                   "add id-auth (4096 bytes, base64) or drop author-key")
        if "id-auth" in cfg and "id-block" not in cfg:
            yield ID_AUTH_ALONE.error(path + ("id-auth",), "is given without id-block",
                                      "add the id-block that id-auth signs, or drop id-auth")
        yield from amd.check_kernel_hashes(guest, path)
        yield from amd.check_irqchip(guest)
        yield from self._id_block_pinning(guest)
        policy = self.policy(cfg)
        if policy >> 19 & 1:
            yield DEBUG_ALLOWED.warning(POLICY.flag_path(path, cfg, "debug"),
                                        f"the policy allows debugging (bit 19 set in {policy:#x})",
                                        "set debug = false")
        if policy >> 16 & 1 and policy >> 20 & 1:
            yield SMT_SINGLE_SOCKET.warning(POLICY.flag_path(path, cfg, "single-socket"),
                                            "single-socket is set but SMT stays allowed",
                                            "set smt = false too")
        if policy >> 18 & 1:
            yield MIGRATION_AGENT.warning(POLICY.flag_path(path, cfg, "migrate-ma"),
                                          "the policy allows a migration agent (bit 18)",
                                          "set migrate-ma = false")

    @staticmethod
    def _id_block_pinning(guest) -> Iterable[Diagnostic]:
        table = guest.measurement
        if "id-block" in guest.confidential and table is None:
            yield UNPINNED_ID.warning(guest.mech_path + ("id-block",),
                                      "the ID block is given but no [measurement] pins the boot "
                                      "files it was signed for",
                                      "add [measurement] (with id-key, cgsc signs it for you)")
        elif table and "id-key" in table and table.get("verify-at-launch") is False:
            yield UNPINNED_ID.warning(("measurement", "verify-at-launch"),
                                      "is false, so the launch does not check the files the ID "
                                      "block was signed for", "keep verify-at-launch = true")

    def measurement_checks(self, guest) -> Iterable[Diagnostic]:
        yield from amd.measurement_checks(guest, with_vcpus=True)
        table, cfg = guest.measurement, guest.confidential
        if "id-key" in table:
            for key in ("id-block", "id-auth", "author-key"):
                if key in cfg:
                    yield ID_KEYS.error(guest.mech_path + (key,),
                                        "is given, but measurement.id-key makes cgsc sign the ID "
                                        "block", f"remove {key} (or measurement.id-key)")
        else:
            for key in ("author-key",) + ID_FIELDS:
                if key in table:
                    yield ID_KEYS.error(("measurement", key), "is given without id-key",
                                        "add measurement.id-key (cgsc then signs an ID block "
                                        f"with it), or remove {key}")

    def prepare(self, guest, files, host=None):
        amd.prepare(guest, files)

    def attest(self, guest, files, host=None):
        cfg = guest.confidential
        policy = self.policy(cfg)
        attested, errors = amd.attest(guest, files, policy)
        if errors:
            return None, errors
        report = {"measurement": attested.digest, "policy": f"{policy:#x}",
                  "host_data": _hex(cfg.get("host-data"), 32)}
        config = {}
        if "id-key" in files:
            signed, errors = _sign(bytes.fromhex(attested.digest), policy, files,
                                   guest.measurement)
            if errors:
                return None, errors
            config, digests = signed
            report.update(digests)
        elif "id-block" in cfg:
            report["id_block"] = "given in the spec: its key digests are not known to cgsc"
        return attested._replace(report=report, config=config, not_predicted=(
            "reported_tcb", "chip_id", "report_data", "vmpl")), []

    def compare_evidence(self, attestation, data):
        from ..measure import snp_report
        return snp_report.compare(attestation["report"], data, POLICY.bit_names)

    def reference_values(self, fmt, guest_name, attestation, asked=False):
        from ..measure import go_sev_guest, trustee
        if fmt == "go-sev-guest":
            return go_sev_guest.files(guest_name, attestation)
        return trustee.files(trustee.snp_values(attestation["report"]))

    def lower(self, guest) -> Confidential:
        cfg = guest.confidential
        policy = self.policy(cfg)
        props = amd.common_props(cfg) + (("policy", Hex(policy)),)
        props += tuple((key, cfg[key]) for key, _tag, _size in BLOBS if key in cfg)
        if cfg.get("author-key"):
            props += (("author-key-enabled", True),)
        if cfg.get("vcek-disabled"):
            props += (("vcek-disabled", True),)
        attrs = (("authorKey", "yes" if cfg.get("author-key") else "no"),
                 ("vcek", "no" if cfg.get("vcek-disabled") else "yes"))
        return Confidential(
            mechanism=self.name, title=self.title,
            object=QemuObject(self.qom_type, CGS_ID, props),
            machine_props=(("smm", False),),
            nic_rom_off=True, reboot_ends_process=self.reboot_ends_process,
            memory_note=("AMD SEV-SNP private memory is KVM guest_memfd, which is not pinned "
                         "against the memlock limit: no memory locking"),
            host_devices=(amd.sev_device(cfg),),
            host_params=(amd.host_param("sev_snp", "SEV-SNP"),),
            libvirt_security=amd.launch_security(
                "sev-snp", cfg, policy, attrs,
                [(tag, cfg.get(key)) for key, tag, _size in BLOBS]),
            libvirt_features=(Element("smm", (("state", "off"),)),),
            kubevirt=KubevirtForm(
                {"snp": {}}, efi={"secureBoot": False, "persistent": False}, smm=False,
                feature_gate=kv.SEV_GATE,
                cluster_decides=(kv.node_selection(self.title), kv.firmware("AmdSev"))
                + kv.AMD_CLUSTER),
            kubevirt_refusals=tuple(_kubevirt_refusals(cfg, policy, guest.mech_path)),
            summary=(("policy", f"{policy:#x}"),),
        )


def _kubevirt_refusals(cfg: dict, policy: int, path):
    if policy != KUBEVIRT_POLICY:
        yield kv.refuse_word(path + (("policy",) if "policy" in cfg else ()), "policy", policy,
                             KUBEVIRT_POLICY, "launchSecurity.snp is an empty struct")
    why = "KubeVirt's launchSecurity.snp has no fields"
    for key in ("kernel-hashes", "author-key", "vcek-disabled"):
        if cfg.get(key):
            yield from kv.refuse_keys(cfg, path, (key,), why)
    yield from kv.refuse_keys(cfg, path, [key for key, _tag, _size in BLOBS], why)
    if amd.sev_device(cfg) != amd.SEV_DEVICE:
        yield from kv.refuse_keys(cfg, path, ("sev-device",), "KubeVirt always uses /dev/sev")


SEV_SNP = SevSnp()


def _hex(b64, size: int) -> str:
    """A blob as the report shows it: lowercase hex, zeros when the spec leaves it out."""
    from .blobs import decode_blob
    return (decode_blob(b64) if b64 else bytes(size)).hex()


def _private_key(pem):
    """The key in a PEM file, or the exception that says why it is none (kept, like a key,
    once per invocation)."""
    from ..measure import amd_digest as m
    try:
        return m.private_key(pem)
    except m.key_errors() as exc:
        return exc


def _sign(digest: bytes, policy: int, files, table: dict):
    """((config additions, report fields), diagnostics): the ID block for this digest."""
    from ..measure import amd_digest as m
    keys, loaded = {}, {}
    for role in ("id-key", "author-key"):
        if role not in files:
            continue
        found = files[role].derived("p384-key", _private_key)   # parsed once per invocation
        if isinstance(found, Exception):
            return None, [BAD_KEY.error(files[role].key, f"{files[role].given}: {found}",
                                        "use an unencrypted P-384 EC private key in PEM")]
        try:
            keys[role] = m.key_digest(found).hex()
        except m.key_errors() as exc:
            return None, [BAD_KEY.error(files[role].key, f"{files[role].given}: {exc}",
                                        "use an unencrypted P-384 EC private key in PEM")]
        loaded[role] = found
    author = loaded.get("author-key")
    family = bytes.fromhex(table.get("family-id", "00" * 16))
    image = bytes.fromhex(table.get("image-id", "00" * 16))
    svn = table.get("guest-svn", 0)
    block, auth = m.sign_id_block(digest, policy, loaded["id-key"], author,
                                  family, image, svn)
    config = {"id-block": block, "id-auth": auth}
    report = {"id_key_digest": keys["id-key"], "family_id": family.hex(),
              "image_id": image.hex(), "guest_svn": svn}
    if author:
        config["author-key"] = True
        report["author_key_digest"] = keys["author-key"]
    return (config, report), []

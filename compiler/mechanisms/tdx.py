"""Intel TDX: QEMU's tdx-guest object (QEMU >= 10.1)."""

from __future__ import annotations

from typing import Iterable

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from ..lower.guest_rules import check_socket_path
from ..lower.plan import Confidential, Element, HostParam, KubevirtForm
from ..lower.qemu import Hex, QemuObject
from . import CGS_ID, Mechanism
from . import kubevirt as kv
from . import tdx_attest
from .blobs import check_blob, decode_blob
from .layout import Flag, Layout

DEBUG_BIT = 1 << 0
SEPT_VE_DISABLE = 1 << 28
MR_FIELDS = (("mrconfigid", "mrConfigId"), ("mrowner", "mrOwner"),
             ("mrownerconfig", "mrOwnerConfig"))
ATTRIBUTES = Layout(
    "attributes", {0: "debug", 28: "sept-ve-disable", 30: "pks", 63: "perfmon"},
    flags=(Flag("sept-ve-disable", 28, True, default=True), Flag("debug", 0, True)))
QGS_SERVICE = "qgsd.service"   # Intel's Quote Generation Service daemon

DEBUG = Rule(
    "CGS-TDX-001", "TD debug (attribute bit 0) is requested",
    "Off-TD debug lets the host read and write the TD's state. Upstream QEMU rejects the "
    "bit ('Some QEMU unsupported TD attribute bits being requested'), so such a spec "
    "can never launch.", "QEMU target/i386/kvm/tdx.c tdx_validate_attributes; docs/system/i386/tdx.rst",
    fix="Remove debug = true / clear bit 0.")
OTHER_BITS = Rule(
    "CGS-TDX-002", "TD attributes other than bit 28 (SEPT_VE_DISABLE)",
    "QEMU accepts only bit 28 from the user; bits 30 (PKS) and 63 (PERFMON) are derived "
    "from the CPU model by QEMU itself, and everything else is refused at vCPU creation.",
    "QEMU target/i386/kvm/tdx.c tdx_validate_attributes, setup_td_guest_attributes; "
    "docs/attestation.md (TD attributes)",
    fix="Use attributes = { sept-ve-disable = true } (bit 28 only).")
NAMED_CPU = Rule(
    "CGS-TDX-003", "TDX needs cpu = \"host\"",
    "QEMU refuses named CPU models for TDX ('Named cpu model is not supported for TDX yet!').",
    "QEMU target/i386/kvm/tdx.c tdx_cpu_instance_init",
    fix="Remove cpu or set cpu = \"host\".")
MR_BLOB = Rule(
    "CGS-TDX-004", "mrconfigid/mrowner/mrownerconfig must be base64 of 48 bytes",
    "They are SHA-384 digests; QEMU checks their size only when the first vCPU is created.",
    "QEMU qapi/qom.json TdxGuestProperties; target/i386/kvm/tdx.c tdx_pre_create_vcpu",
    fix="Give the SHA-384 digest (48 bytes) as base64, e.g. `sha384sum | xxd -r -p | base64`.")
QGS = Rule(
    "CGS-TDX-005", "quote-generation-socket keys do not fit its type",
    "A vsock QGS address needs cid and port; a unix one needs path. A wrong address leaves "
    "the TD without quotes, which only shows when attestation fails.",
    "QEMU qapi/qom.json TdxGuestProperties (quote-generation-socket); canonical/tdx#252",
    fix="Use { type = \"vsock\", cid = 2, port = 4050 } or { type = \"unix\", path = \"/var/run/tdx-qgs/qgs.socket\" }.")


NO_SEPT_VE_DISABLE = Rule(
    "CGS-TDX-010", "sept-ve-disable is off",
    "Linux TD guests refuse to boot unless SEPT_VE_DISABLE (bit 28) is set; other guest "
    "kernels must handle #VE on pending pages themselves.",
    "QEMU docs/system/i386/tdx.rst; cloud-hypervisor/cloud-hypervisor#5168",
    fix="Set sept-ve-disable = true (the default) unless the guest OS handles #VE.",
    severity="warning")


class Tdx(Mechanism):
    name = "tdx"
    title = "Intel TDX"
    firmware_example = "/usr/share/ovmf/OVMF.inteltdx.ms.fd"   # Debian: ovmf-inteltdx (edk2 IntelTdxX64)
    qom_type = "tdx-guest"
    firmware = "bios"
    layout = ATTRIBUTES
    reboot_ends_process = True

    def word(self, cfg: dict) -> int:
        return self.attributes(cfg)

    @staticmethod
    def attributes(cfg: dict) -> int:
        raw = cfg.get("attributes", {})
        return raw if isinstance(raw, int) else ATTRIBUTES.encode(raw)

    def check(self, guest) -> Iterable[Diagnostic]:
        cfg, path = guest.confidential, guest.mech_path
        raw = cfg.get("attributes")
        attributes = self.attributes(cfg)
        other = attributes & ~(DEBUG_BIT | SEPT_VE_DISABLE)
        if isinstance(raw, dict) and raw.get("debug"):
            yield DEBUG.error(path + ("attributes", "debug"),
                              "TD debug is rejected by QEMU (attribute bit 0)",
                              "remove debug = true; debug a TD through its guest OS instead")
        elif isinstance(raw, int):
            if raw & DEBUG_BIT:
                yield DEBUG.error(path + ("attributes",),
                                  f"attributes {raw:#x} set bit 0 (debug), which QEMU rejects",
                                  "clear bit 0")
            if other:
                yield OTHER_BITS.error(
                    path + ("attributes",),
                    f"attributes {raw:#x} set bits {other:#x}; "
                    "only bit 28 (0x10000000, SEPT_VE_DISABLE) may be set",
                    "use attributes = { sept-ve-disable = true } (the default)")
        if not attributes & SEPT_VE_DISABLE and not other:
            yield NO_SEPT_VE_DISABLE.warning(ATTRIBUTES.flag_path(path, cfg, "sept-ve-disable"),
                                             "SEPT_VE_DISABLE (bit 28) is off",
                                             "Linux guests need sept-ve-disable = true")
        if guest.cpu != "host":
            yield NAMED_CPU.error(("guest", "cpu"), f"is {guest.cpu!r}; TDX accepts only \"host\"",
                                  "remove cpu or set cpu = \"host\"")
        for key, _tag in MR_FIELDS:
            yield from check_blob(MR_BLOB, path + (key,), cfg.get(key), 48, f"{key} (SHA-384)")
        yield from _check_qgs(cfg.get("quote-generation-socket"),
                              path + ("quote-generation-socket",))

    measurement_keys = ("firmware", "kernel", "initrd", "verify-at-launch", "tdx-page-order")
    reference_formats = ("go-tdx-guest", "trustee")
    evidence = "a TDX quote (configfs-tsm's outblob, or the quote your attestation agent fetched)"

    def prepare(self, guest, files, host=None):
        tdx_attest.prepare(guest, files, host)

    def attest(self, guest, files, host=None):
        cfg = guest.confidential
        owner = {key: (decode_blob(cfg[key]) if key in cfg else bytes(48)).hex()
                 for key, _tag in MR_FIELDS}
        return tdx_attest.attest(guest, files, host, self.attributes(cfg), owner)

    def compare_evidence(self, attestation, data):
        from ..measure import tdx_quote
        return tdx_quote.compare(attestation["report"], data, ATTRIBUTES.bit_names)

    def reference_values(self, fmt, guest_name, attestation, asked=False):
        from ..measure import go_tdx_guest, trustee
        from ..measure.reference_values import NotWritten
        if fmt == "go-tdx-guest":
            return go_tdx_guest.files(guest_name, attestation, every_candidate=asked)
        report = attestation["report"]
        if "mrtd" not in report:
            raise NotWritten("MRTD is not predicted: Trustee's default policy has nothing "
                             "else of a TD's launch to compare")
        return trustee.files(trustee.tdx_values(report, go_tdx_guest.xfam_values(report)))

    def lower(self, guest) -> Confidential:
        cfg = guest.confidential
        attributes = self.attributes(cfg)
        if isinstance(cfg.get("attributes"), int):
            props = (("attributes", Hex(attributes)),)
        else:
            props = (("sept-ve-disable", bool(attributes & SEPT_VE_DISABLE)),)
        props += tuple((key, cfg[key]) for key, _tag in MR_FIELDS if key in cfg)
        qgs = cfg.get("quote-generation-socket")
        children = [Element("policy", text=hex(attributes))]
        children += [Element(tag, text=cfg[key]) for key, tag in MR_FIELDS if key in cfg]
        after: tuple = ()
        families: tuple = ()
        if qgs:
            props += (("quote-generation-socket", _socket_address(qgs)),)
            if qgs["type"] == "unix":
                after = (QGS_SERVICE,)
                children.append(Element("quoteGenerationService", (("path", qgs["path"]),)))
            else:
                families = ("AF_VSOCK",)
        # A vsock QGS has no libvirt form: libvirt's <quoteGenerationService> takes a path.
        unsupported = ("libvirt's <quoteGenerationService> takes only a unix socket path, "
                       "not a vsock address" if qgs and qgs["type"] == "vsock" else "")
        return Confidential(
            mechanism=self.name, title=self.title,
            object=QemuObject(self.qom_type, CGS_ID, props, json_form=bool(qgs)),
            machine_props=(("kernel-irqchip", "split"), ("smm", False), ("pic", False)),
            # With the vCPU PMU on, QEMU sets TD attribute PERFMON (bit 63): the TD would
            # attest attributes other than the ones cgsc records, and than the libvirt
            # domain's (<pmu state='off'/>) launch.
            cpu_props=(("pmu", False),),
            reboot_ends_process=self.reboot_ends_process,
            memory_note=("Intel TDX private memory is KVM guest_memfd, which is not pinned "
                         "against the memlock limit: no memory locking"),
            host_params=(HostParam("/sys/module/kvm_intel/parameters/tdx", ("Y", "1"),
                                   "this host's KVM has no TDX support "
                                   "(kvm_intel parameter tdx is not Y)"),),
            libvirt_security=Element("launchSecurity", (("type", "tdx"),),
                                     children=tuple(children)),
            libvirt_features=(Element("smm", (("state", "off"),)),
                              Element("pmu", (("state", "off"),)),
                              Element("ioapic", (("driver", "qemu"),))),
            libvirt_unsupported=unsupported,
            libvirt_unsupported_key="quote-generation-socket" if unsupported else "",
            systemd_after=after, address_families=families,
            kubevirt=KubevirtForm(
                {"tdx": {}}, efi={"secureBoot": False, "persistent": False}, smm=False,
                feature_gate=kv.TDX_GATE,
                cluster_decides=(kv.node_selection(self.title), kv.firmware("TDVF"),
                                 kv.TDX_QGS)),
            kubevirt_refusals=tuple(_kubevirt_refusals(cfg, attributes, guest.mech_path)),
            summary=(("attributes", f"{attributes:#x}"),),
        )


def _kubevirt_refusals(cfg: dict, attributes: int, path):
    if attributes != SEPT_VE_DISABLE:
        yield kv.refuse_word(path + (("attributes",) if "attributes" in cfg else ()),
                             "attributes", attributes, SEPT_VE_DISABLE,
                             "launchSecurity.tdx is an empty struct")
    yield from kv.refuse_keys(cfg, path, [key for key, _tag in MR_FIELDS],
                              "KubeVirt's launchSecurity.tdx has no MR fields")
    if "quote-generation-socket" in cfg:
        yield kv.CLUSTER_QGS.error(
            path + ("quote-generation-socket",),
            "is set, but KubeVirt takes the QGS socket from the KubeVirt CR, not the VM",
            "remove it and set spec.configuration.confidentialCompute.tdx.attestation."
            "qgsSocketPath in the KubeVirt CR, or leave kubevirt out of [targets] build")


def _socket_address(qgs: dict) -> dict:
    # QAPI SocketAddress: vsock cid and port are strings.
    if qgs["type"] == "vsock":
        return {"type": "vsock", "cid": str(qgs["cid"]), "port": str(qgs["port"])}
    return {"type": "unix", "path": qgs["path"]}


def _check_qgs(qgs, path) -> Iterable[Diagnostic]:
    if not qgs:
        return
    yield from check_socket_path(path + ("path",), qgs.get("path"))
    needs = {"vsock": ("cid", "port"), "unix": ("path",)}[qgs["type"]]
    for key in ("cid", "port", "path"):
        if key in needs and key not in qgs:
            yield QGS.error(path, f"type = \"{qgs['type']}\" needs `{key}`",
                            'e.g. { type = "vsock", cid = 2, port = 4050 } or '
                            '{ type = "unix", path = "/var/run/tdx-qgs/qgs.socket" }')
        elif key not in needs and key in qgs:
            yield QGS.error(path + (key,), f"does not apply to type = \"{qgs['type']}\"",
                            f"remove `{key}`")
TDX = Tdx()

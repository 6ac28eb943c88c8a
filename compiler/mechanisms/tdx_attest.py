"""Intel TDX: what a TD's report will say, for [measurement].

MRTD from the TDVF firmware (measure/tdvf.py parses it, measure/mrtd.py measures it); TD
attributes and XFAM as QEMU >= 10.1 sets them for the -cpu host,pmu=off vCPU cgsc
launches (target/i386/kvm/tdx.c setup_td_guest_attributes and setup_td_xfam, read at
QEMU 10.2.2; docs/attestation.md cites the lines). Where a value depends on the host,
the report holds the candidates and the inputs the rule, unless a host profile says.
"""

from __future__ import annotations

from itertools import product
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..core.rules import Rule

NOT_TDVF = Rule(
    "CGS-MEASURE-020", "the firmware is not a TDVF image with TDX metadata",
    "QEMU loads a TD's firmware by its TDVF metadata (the sections added with "
    "TDH.MEM.PAGE.ADD and measured into MRTD); an OVMF build without it cannot start a TD, "
    "and its sha256 would be a reference value for a guest that never runs.",
    "TDVF Design Guide, TDVF metadata; QEMU hw/i386/tdvf.c",
    fix="Use an edk2 IntelTdx build (OvmfPkg/IntelTdx/IntelTdxX64.dsc, OVMF.inteltdx.fd) "
        "or OvmfPkgX64 built with TDX support.")
BAD_TDVF = Rule(
    "CGS-MEASURE-021", "the TDVF metadata cannot be launched or measured exactly",
    "MRTD is computed from the firmware's TDVF metadata: which pages QEMU adds to the TD and "
    "which bytes it extends into MRTD. Metadata whose offsets, sizes or counts run outside "
    "the file or overlap, that QEMU or KVM would refuse (unaligned, empty or missing "
    "sections), or whose measurement cgsc cannot know (PAGE.AUG sections, measured TD HOB "
    "or temporary memory, measured bytes past a section) is refused rather than turned "
    "into a reference value the TD would not report.",
    "TDVF Design Guide section 11; QEMU hw/i386/tdvf.c, target/i386/kvm/tdx.c "
    "tdx_init_fw_mem_region; Linux tdx_vcpu_init_mem_region",
    fix="Use the firmware as the edk2 build produced it (OvmfPkg/IntelTdx), not a modified "
        "or truncated copy.")
PAGE_ORDER = Rule(
    "CGS-TDX-011", "tdx-page-order disagrees with the host profile",
    "MRTD depends on the order in which the host adds and measures the firmware pages: "
    "single pass on upstream KVM, two pass on the QEMU 8.2 TDX stack of Ubuntu 24.04. A "
    "spec that measures for one order while the host profile says the host uses the other "
    "predicts an MRTD the TD will not report.",
    "docs/attestation.md, Intel TDX",
    fix="Remove [measurement] tdx-page-order (the host profile decides) or correct the "
        "profile's tdx.page-order.")
TDVF_BUILD = ("build edk2 OvmfPkg/IntelTdx/IntelTdxX64.dsc (OVMF.inteltdx.fd), "
              "the firmware that carries TDX metadata")

# Quote fields nobody can predict from a spec: RTMRs measure the boot chain and QEMU's
# ACPI tables; the SEAM fields and TCB describe the host's TDX module; REPORTDATA is the
# guest's.
NOT_PREDICTED = ("rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam", "mrsignerseam",
                 "seamattributes", "teetcbsvn", "mrservicetd", "reportdata")


class XfamGroup(NamedTuple):
    bits: int
    when: str
    needs: int = 0               # bits that are set whenever these are
    qemu_since: tuple = ()       # the first QEMU release that sets them


# XFAM = the XSAVE components of the -cpu host vCPU (QEMU target/i386/cpu.c
# x86_cpu_enable_xsave_components over x86_ext_save_areas), limited to what the host's
# CPU, TDX module and KVM support (QEMU refuses any other bit: setup_td_xfam). x87 and SSE
# are always there: XSAVE is a fixed-1 CPUID bit of every TD (tdx_fixed1_bits).
XFAM_ALWAYS = 0x3
XFAM_GROUPS = (
    XfamGroup(0x4, "the host has AVX (bit 2, YMM)"),
    XfamGroup(0xE0, "the host has AVX-512F or AVX10 (bits 5-7, opmask and ZMM)", needs=0x4),
    XfamGroup(0x200, "the host has PKU (bit 9, PKRU)"),
    XfamGroup(0x60000, "the host has AMX-TILE (bits 17-18, XTILECFG and XTILEDATA)"),
    XfamGroup(0x1800, "QEMU >= 11.0, and the host and its KVM have CET shadow stacks or IBT "
              "(bits 11-12, CET_U and CET_S)", qemu_since=(11, 0)),
    XfamGroup(0x80000, "QEMU >= 11.0, and the host and its KVM have APX (bit 19)",
              qemu_since=(11, 0)),
)


def xfam_groups(qemu: Optional[tuple]) -> Tuple[XfamGroup, ...]:
    """The groups a QEMU release can set (unknown release: all of them)."""
    return tuple(g for g in XFAM_GROUPS if qemu is None or _at_least(qemu, g.qemu_since))


def _at_least(qemu: tuple, since: tuple) -> bool:
    """Whether QEMU `qemu` may have what release `since` brought. A micro version of 50 or
    more is QEMU's development tree (x.y.50) or a release candidate of the next release
    (x.y.90, ...: 11.0.0-rc0 is 10.2.90), which may have anything up to that release,
    x.(y+1) or (x+1).0."""
    if qemu >= since:
        return True
    return len(qemu) > 2 and qemu[2] >= 50 and since <= (qemu[0] + 1, 0)


def xfam_candidates(groups) -> List[int]:
    """Every XFAM the rule allows: each group present or not, never without what it needs."""
    out = set()
    for chosen in product((False, True), repeat=len(groups)):
        value = XFAM_ALWAYS
        for group, on in zip(groups, chosen):
            value |= group.bits if on else 0
        if all(not on or value & g.needs == g.needs for g, on in zip(groups, chosen)):
            out.add(value)
    return sorted(out)


def _hex(value: int) -> str:
    return f"{value:#018x}"


def page_order(guest, host: Optional[dict]):
    """(order, where it came from, diagnostics): the spec's key, else the host profile's
    tdx.page-order, else single pass (upstream KVM)."""
    from ..host.profile import tdx_fact
    from ..measure.mrtd import SINGLE_PASS
    said = guest.measurement.get("tdx-page-order")
    profiled = tdx_fact(host, "page-order")
    if said and profiled and said != profiled:
        return None, "", [PAGE_ORDER.error(
            ("measurement", "tdx-page-order"), f"is {said!r}, but the host profile "
            f"{host.get('name')!r} has tdx.page-order = {profiled!r}",
            f"remove tdx-page-order, or set it to {profiled!r}")]
    if said:
        return said, "[measurement] tdx-page-order", []
    if profiled:
        return profiled, f"host profile {host.get('name')!r} (tdx.page-order)", []
    return SINGLE_PASS, "default (upstream KVM)", []


def xfam(host: Optional[dict]) -> Tuple[Dict[str, object], Dict[str, object], bool]:
    """(report entries, input entries, exact) for XFAM."""
    from ..host.profile import qemu_for, tdx_fact, version
    exact = tdx_fact(host, "xfam")
    if exact:
        return ({"xfam": exact}, {"xfam-from": f"host profile {host.get('name')!r} (tdx.xfam)"},
                True)
    qemu = version((qemu_for(host, "x86_64") or {}).get("version")) if host else None
    groups = xfam_groups(qemu)
    rule = [{"bits": _hex(XFAM_ALWAYS), "set-when": "always (bits 0-1, x87 and SSE)"}]
    rule += [{"bits": _hex(g.bits), "set-when": g.when} for g in groups]
    return ({"xfam-candidates": [_hex(v) for v in xfam_candidates(groups)]},
            {"xfam-depends-on": rule}, False)


def _tdvf(image):
    """The image's TDVF metadata, or the TdvfError that says why it has none we can use."""
    from ..measure import tdvf
    try:
        return tdvf.parse(image)
    except tdvf.TdvfError as exc:
        return exc


def prepare(guest, files, host: Optional[dict]) -> None:
    """attest()'s work on the firmware alone, done ahead (Mechanism.prepare): its TDVF
    metadata and MRTD."""
    from ..measure import tdvf
    fw = files.get("firmware")
    if fw is None:
        return
    metadata = fw.derived("tdvf", _tdvf)
    order, _order_from, errors = page_order(guest, host)
    if not errors and not isinstance(metadata, tdvf.TdvfError):
        _mrtd(fw, metadata, order)


def _mrtd(fw, metadata, order: str) -> bytes:
    """MRTD: it depends on nothing but the image and the page order (once per both)."""
    from ..measure import mrtd
    return fw.derived(("mrtd", order), lambda image: mrtd.mrtd(image, metadata, order))


def attest(guest, files, host: Optional[dict], attributes: int, owner_fields: dict):
    """(Attested, diagnostics) for a TD: MRTD, attributes, XFAM, the MR fields."""
    from ..measure import tdvf
    from ..measure.stage import Attested
    fw = files["firmware"]
    metadata = fw.derived("tdvf", _tdvf)   # parsed once per image, whichever guests use it
    if isinstance(metadata, tdvf.TdvfError):
        exc = metadata
        if exc.not_tdvf:
            return None, [NOT_TDVF.error(fw.key, f"{fw.given} is not a TDVF image: {exc}",
                                         TDVF_BUILD)]
        return None, [BAD_TDVF.error(fw.key, f"{fw.given}: TDVF metadata {exc}",
                                     "use the firmware as its edk2 build made it")]
    order, order_from, errors = page_order(guest, host)
    if errors:
        return None, errors
    digest = _mrtd(fw, metadata, order).hex()
    xfam_report, xfam_inputs, exact = xfam(host)
    report = {"mrtd": digest, "attributes": _hex(attributes), **xfam_report, **owner_fields}
    inputs = {"tdx-page-order": order, **xfam_inputs,
              "vcpus": guest.vcpus, "memory-mib": guest.memory_mib,
              "cmdline": guest.kernel_cmdline,
              "tdvf-sections": [{"type": s.type, "address": f"{s.address:#x}", "size": s.size,
                                 "extend-mr": s.extend} for s in metadata.sections]}
    notes = [
        f"MRTD is measured from the TDVF sections of the firmware with the {order} page "
        f"order ({order_from}): single pass is upstream KVM (Linux >= 6.16) with QEMU >= "
        "10.1; the QEMU 8.2 TDX stack of Ubuntu 24.04 is two pass "
        "([measurement] tdx-page-order = \"two-pass\", or tdx.page-order in the host profile).",
        "MRTD covers the firmware code (BFV) bytes and every section's page addresses; the "
        "variable store (CFV), the TD HOB (memory size), QEMU's ACPI tables, the kernel, "
        "initrd and command line are measured into RTMR0-2, which cgsc does not predict.",
        "attributes are the spec's: QEMU >= 10.1 adds PERFMON only with the vCPU PMU on "
        "(cgsc turns it off) and PKS only when KVM supports that attribute (Linux supports "
        "SEPT_VE_DISABLE alone, 6.16 to 7.1).",
    ]
    if not exact:
        notes.append("XFAM depends on the host CPU, its TDX module and KVM: the TD reports "
                     "one of report.xfam-candidates (inputs.xfam-depends-on gives the rule); "
                     "record the host's value as tdx.xfam in a host profile (--host) for an "
                     "exact one.")
    return Attested(digest=digest, algorithm="sha384", inputs=inputs, report=report,
                    not_predicted=NOT_PREDICTED + (() if exact else ("xfam",)),
                    notes=tuple(notes)), []

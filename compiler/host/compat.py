"""Will this spec launch on that host? Checks of a launch plan against a host profile,
and the minimum QEMU and libvirt versions each artifact needs.

QEMU versions come from schema/qemu-since.json, derived from QEMU's QAPI `Since:` notes
(tests/derive_qemu_since.py; a test re-derives it). The libvirt release whose CPU map
first has each CPU model comes from schema/libvirt-cpu-since.json, derived from libvirt's
own CPU map files (tests/derive_libvirt_cpu_since.py). libvirt's launch-security
versions are below, each with its source.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Optional

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from ..lower.plan import LaunchPlan
from .profile import qemu_for, version

# <launchSecurity type=...> and its attributes: the first libvirt that parses them.
LIBVIRT_SINCE = {
    "sev": "4.4.0",       # formatdomain.html "Launch Security": "Since 4.4.0"
    "s390-pv": "7.6.0",   # formatdomain.html: s390-pv "Since 7.6.0"
    "sev-snp": "10.5.0",  # formatdomain.html: sev-snp "Since 10.5.0"; NEWS.rst v10.5.0
    "tdx": "11.6.0",      # libvirt commit series merged for v11.6.0 (libvirt.md §5); absent from 11.3's RNG
    "kernelHashes": "8.0.0",  # formatdomain.html: kernelHashes "Since 8.0.0"
    "cpu-maximum": "7.1.0",   # formatdomain.html: CPU mode "maximum" "Since 7.1.0"; NEWS v7.1.0
}
# The values a spec may give (schema/sev.schema.json): a profile outside them is no SEV host's
SEV_GEOMETRY = {"cbitpos": (32, 63), "reduced-phys-bits": (1, 63)}

MECHANISM_UNAVAILABLE = Rule(
    "CGS-HOST-001", "the host cannot run this confidential mechanism",
    "The host profile says KVM (or the firmware interface it needs: /dev/sev, the TDX module, "
    "the s390 ultravisor, the POWER ultravisor) does not offer the mechanism, so QEMU would "
    "stop at launch (`vm-type SEV-SNP not supported by KVM`, `sev_common_kvm_init: ...`).",
    "kvm_amd parameters sev/sev_es/sev_snp, kvm_intel tdx, /sys/firmware/uv",
    fix="Launch on a host whose profile offers the mechanism, or enable it there (BIOS/UEFI "
        "settings, kvm_amd/kvm_intel module parameters), then probe again.")
QEMU_TOO_OLD = Rule(
    "CGS-HOST-002", "the host's QEMU is too old for (or lacks) an object or property",
    "QEMU refuses an -object type or property it does not know (`Invalid parameter`, "
    "`invalid object type`); the first version of each is taken from QEMU's QAPI schema.",
    "QEMU qapi/qom.json `Since:` notes (schema/qemu-since.json)",
    fix="Upgrade QEMU on the host (the message names the version needed), or drop the setting.")
LIBVIRT_TOO_OLD = Rule(
    "CGS-HOST-003", "the host's libvirt is too old for the domain's launch security",
    "libvirt validates domain XML against its own schema: an older libvirt refuses the "
    "<launchSecurity> type or attribute outright.",
    "libvirt formatdomain.html \"Launch Security\" (sev-snp since 10.5.0, tdx since 11.6.0)",
    fix="Upgrade libvirt on the host, or build only the launch script and systemd unit "
        "([targets] build = [\"shell\", \"systemd\"], or -t shell -t systemd).")
CBITPOS_MISMATCH = Rule(
    "CGS-HOST-004", "cbitpos or reduced-phys-bits differ from the host's",
    "QEMU compares them with the host CPU (CPUID 0x8000001F) and refuses to start "
    "(`cbitpos check failed`); a guest built for another CPU generation does not launch.",
    "QEMU target/i386/sev.c sev_common_kvm_init; virsh domcapabilities <sev>",
    fix="Copy the host's values (`virsh domcapabilities` <sev>, or `cgsc probe`) into the spec.")
UNKNOWN_CPU = Rule(
    "CGS-HOST-005", "the host's QEMU does not know the CPU model",
    "QEMU stops with `unable to find CPU model` when -cpu names a model its version lacks.",
    "`qemu-system-* -cpu help`; virsh domcapabilities <cpu><mode name='custom'>",
    fix="Use a CPU model the host's QEMU lists (the hint names some), or upgrade QEMU.")
FIRMWARE_UNFIT = Rule(
    "CGS-HOST-006", "the firmware file is absent from the host or of the wrong kind",
    "The mechanism needs firmware built for it (SEV metadata, SNP, TDX metadata, kernel "
    "hashes); a generic OVMF boots nothing confidential, a missing file fails at launch.",
    "QEMU docs/interop/firmware.json features; OVMF AmdSev/IntelTdx builds",
    fix="Point [firmware] code at an image the host has that supports the mechanism "
        "(`cgsc probe` lists them with what they support).")
DEBUG_SWAP = Rule(
    "CGS-HOST-007", "the host's KVM may add DebugSwap to an SEV-ES guest's VMSA",
    "On KVM's legacy SEV-ES launch (KVM_SEV_ES_INIT: QEMU <= 9.0, or legacy-vm-type "
    "on/auto), Linux 6.6 to 6.9 with kvm_amd debug_swap=Y put DebugSwap (0x20) into the "
    "VMSA's SEV_FEATURES, which is part of the launch measurement; Linux 6.1-6.5 and 6.10+ "
    "do not. KVM_SEV_INIT2 (legacy-vm-type = off, and every SEV-SNP guest) takes the "
    "features from QEMU, which requests none: debug_swap does not change them.",
    "Linux arch/x86/kvm/svm/sev.c (d1f85fbe836e, 6.6; 5abf6dceb066, 6.8; 6.12 L480-500); "
    "docs/attestation.md",
    fix="Set legacy-vm-type = \"off\" (QEMU >= 9.1, Linux >= 6.10), or load kvm_amd with "
        "debug_swap=0 on a 6.6-6.9 kernel.",
    severity="warning")
LIBVIRT_CPU = Rule(
    "CGS-HOST-009", "the host's libvirt does not know the CPU model",
    "libvirt's QEMU driver accepts a <cpu><model> only from its own CPU map, which gained "
    "models over releases (EPYC-Genoa, the versioned EPYC-v4, SapphireRapids, ...). An "
    "older libvirt refuses the domain (`unknown CPU model EPYC-v4`) even when its QEMU knows "
    "the model and the launch script would run.",
    "libvirt src/cpu_map/ per release (schema/libvirt-cpu-since.json); virsh "
    "domcapabilities <cpu><mode name='custom'>",
    fix="Use a CPU model the host's libvirt lists (the hint says which release has this one), "
        "upgrade libvirt, or build only the launch script and unit ([targets] build = "
        "[\"shell\", \"systemd\"]).")
LIBVIRT_CPU_UNKNOWN = Rule(
    "CGS-HOST-010", "cgsc cannot tell whether the host's libvirt knows the CPU model",
    "cgsc dates CPU models by the libvirt releases whose CPU maps it examined "
    "(schema/libvirt-cpu-since.json lists them). The host's libvirt lies between one that "
    "lacks the model and one that has it, so it may refuse the domain (`unknown CPU model`).",
    "libvirt src/cpu_map/ per release (schema/libvirt-cpu-since.json)",
    fix="Make the profile from the host's `virsh domcapabilities` (cgsc probe "
        "--from-domcapabilities): it lists the models that libvirt offers, and cgsc then knows.",
    severity="warning")
FLOATING_MACHINE = Rule(
    "CGS-HOST-008", "the machine type floats: QEMU upgrades change the guest ABI",
    "`q35` / `pseries` / `s390-ccw-virtio` are aliases of the newest versioned machine of "
    "the QEMU that runs the guest; after an upgrade the guest's devices, ACPI tables and "
    "(TDX, SEV-SNP) its measurement change. With --host, cgsc pins the alias to the "
    "versioned machine that host's QEMU resolves it to.",
    "QEMU docs: machine type versioning",
    fix="Build with `--host host.json` (from `cgsc probe`), or write a versioned machine "
        "(pc-q35-10.0) in [guest] machine.",
    severity="warning")

LIBVIRT_CPU_ARCH = {"x86_64": "x86", "ppc64": "ppc64"}   # s390x: libvirt has no CPU map


@lru_cache(maxsize=None)
def _shipped(name: str) -> dict:
    from ..spec.schema import read
    return read(name)


def libvirt_cpu_since() -> dict:
    return _shipped("libvirt-cpu-since.json")


def qemu_since() -> dict:
    return _shipped("qemu-since.json")["objects"]


def _vtext(v: tuple) -> str:
    return ".".join(str(x) for x in v)


def qemu_needs(plan: LaunchPlan) -> Dict[str, tuple]:
    """What the plan's -object options need: {"<qom-type>" or "<qom-type>.<prop>": version}
    (the confidential object first; monitor-qmp where a --host QEMU 11.1 replaced -mon)."""
    obj = plan.confidential.object
    objects = [(obj.qom_type, [key for key, _value in obj.props])]
    objects += [(o.value.head, [key for key, _value in o.value.props]) for o in plan.options
                if o.flag == "-object" and getattr(o.value, "head", None) not in (None, obj.qom_type)]
    needs = {}
    for qom_type, keys in objects:
        entry = qemu_since().get(qom_type)
        if entry is None:
            continue
        needs[qom_type] = version(entry["since"])
        for key in keys:
            if key in entry["properties"]:
                needs[f"{qom_type}.{key}"] = version(entry["properties"][key])
    return needs


def _libvirt_type(plan: LaunchPlan) -> Optional[str]:
    el = plan.confidential.libvirt_security
    return dict(el.attrs).get("type") if el is not None else None


def libvirt_needs(plan: LaunchPlan) -> Dict[str, tuple]:
    needs = {}
    if plan.cpu == "max":   # written as <cpu mode='maximum'> (targets/libvirt.py)
        needs["<cpu mode='maximum'> (cpu = \"max\")"] = version(LIBVIRT_SINCE["cpu-maximum"])
    el = plan.confidential.libvirt_security
    if el is None or plan.confidential.libvirt_unsupported:
        return needs
    attrs = dict(el.attrs)
    needs[f"<launchSecurity type='{attrs['type']}'>"] = version(LIBVIRT_SINCE[attrs["type"]])
    if attrs.get("kernelHashes") == "yes":
        needs["kernelHashes"] = version(LIBVIRT_SINCE["kernelHashes"])
    return needs


def requirements(plan: LaunchPlan, target_names) -> Dict[str, dict]:
    """target -> {"qemu": min, "libvirt": min}: every artifact runs QEMU; the domain XML
    also needs a libvirt that parses it."""
    qemu = max(qemu_needs(plan).values(), default=None)
    libvirt = max(libvirt_needs(plan).values(), default=None)
    out = {}
    for name in target_names:
        req = {"qemu": _vtext(qemu)} if qemu else {}
        if name == "libvirt" and libvirt:
            req["libvirt"] = _vtext(libvirt)
        out[name] = req
    return out


def check_host(plan: LaunchPlan, profile: dict, libvirt: bool = True) -> List[Diagnostic]:
    """Every reason the profile's host cannot launch the plan (errors) or launches it
    differently than the spec implies (warnings). libvirt: the build writes the domain
    XML, so the host's libvirt must take it too."""
    mech = plan.confidential.mechanism
    table = ("confidential", mech)
    host = profile["name"]
    found: List[Diagnostic] = []
    kvm = profile.get("kvm") or {}
    if kvm.get("present") is False:
        found.append(MECHANISM_UNAVAILABLE.error(table, f"host {host} has no KVM (/dev/kvm)",
                                                 "confidential guests need KVM"))
    elif kvm.get(mech) is False:
        found.append(MECHANISM_UNAVAILABLE.error(
            table, f"host {host} does not offer {plan.confidential.title} (KVM/firmware say no)",
            "profiles that offer it: see `cgsc probe` on the host"))
    found += _qemu(plan, profile, table)
    if libvirt:
        found += _libvirt(plan, profile, table)
        found += _libvirt_cpu(plan, profile)
    sev = profile.get("sev") or {}
    props = dict(plan.confidential.object.props)
    for key in ("cbitpos", "reduced-phys-bits"):
        want = sev.get(key)
        if key in props and want is not None and int(props[key]) != want:
            low, high = SEV_GEOMETRY[key]
            hint = (f"set {key} = {want}" if low <= want <= high else
                    f"no SEV host has {key} {want} ({low}..{high}): the profile is wrong; "
                    "make it again with `cgsc probe` on the host, or from its `virsh domcapabilities`")
            found.append(CBITPOS_MISMATCH.error(
                table + (key,), f"{key} is {props[key]}, host {host} has {want}", hint))
    found += _firmware(plan, profile)
    if plan.confidential.debug_swap_measured and kvm.get("debug-swap") is True:
        found.append(DEBUG_SWAP.warning(
            table, f"host {host} enables kvm_amd debug_swap: on Linux 6.6-6.9, KVM's legacy "
                   "SEV-ES launch gives the guest's VMSA DebugSwap, and its launch measurement "
                   "includes it", 'set legacy-vm-type = "off" (QEMU >= 9.1, Linux >= 6.10)'))
    return found


def _qemu(plan, profile, table) -> List[Diagnostic]:
    if "qemu" not in profile:
        return []
    host = profile["name"]
    qemu = qemu_for(profile, plan.arch)
    if qemu is None:
        return [QEMU_TOO_OLD.error(table, f"host {host} has no QEMU for {plan.arch}",
                                   f"install qemu-system-{plan.arch}")]
    found = []
    have = version(qemu.get("version"))
    objects = qemu.get("objects")
    qom = plan.confidential.object.qom_type
    if objects is not None and qom not in objects:
        found.append(QEMU_TOO_OLD.error(table, f"host {host}'s QEMU has no {qom} object",
                                        "its `-object help` does not list it"))
    elif have is not None:
        for what, need in sorted(qemu_needs(plan).items()):
            if have < need:
                found.append(QEMU_TOO_OLD.error(
                    table, f"{what} needs QEMU {_vtext(need)}, host {host} has {qemu['version']}",
                    f"upgrade QEMU to {_vtext(need)} or later"))
                break  # the object's own version says it all; one message per spec
    models = qemu.get("cpu-models")
    if models is not None and plan.cpu not in ("host", "max") and plan.cpu not in models:
        near = sorted(m for m in models if m.split("-")[0] == plan.cpu.split("-")[0])[:6]
        found.append(UNKNOWN_CPU.error(("guest", "cpu"),
                                       f"host {host}'s QEMU has no CPU model {plan.cpu!r}",
                                       "it has " + (", ".join(near) if near else
                                                    f"{len(models)} others (see `-cpu help`)")))
    return found


def _libvirt(plan, profile, table) -> List[Diagnostic]:
    have = version((profile.get("libvirt") or {}).get("version"))
    if have is None:
        return []
    for what, need in sorted(libvirt_needs(plan).items(), key=lambda kv: kv[1], reverse=True):
        if have < need:
            return [LIBVIRT_TOO_OLD.error(
                ("guest", "cpu") if what.startswith("<cpu") else table,
                f"{what} needs libvirt {_vtext(need)}, host {profile['name']} has "
                       f"{profile['libvirt']['version']}",
                "upgrade libvirt, or build only the launch script and unit "
                "([targets] build = [\"shell\", \"systemd\"], or -t shell -t systemd)")]
    return []


def _libvirt_cpu(plan, profile) -> List[Diagnostic]:
    """The domain's <cpu><model> against the host's libvirt: its domcapabilities list when
    the profile has one, else the release that first has the model in its CPU map."""
    model, host = plan.cpu, profile["name"]
    arch = LIBVIRT_CPU_ARCH.get(plan.arch)
    lv = profile.get("libvirt") or {}
    if arch is None or model in ("host", "max"):   # CPU modes, not models: see libvirt_needs
        return []
    where = ("guest", "cpu")
    listed = lv.get("cpu-models")
    if listed is not None:
        if model in listed:
            return []
        return [LIBVIRT_CPU.error(where, f"host {host}'s libvirt does not offer CPU model "
                                         f"{model!r} (its domcapabilities do not list it)",
                                  "it lists " + (", ".join(sorted(listed)[:8]) or "none"))]
    have = version(lv.get("version"))
    if have is None:
        return []
    table = libvirt_cpu_since()
    entry = table["arches"].get(arch, {}).get(model)
    newest = table["releases"][-1]
    if entry is None:
        if have <= version(newest):   # no examined release up to the newest has it
            return [LIBVIRT_CPU.error(where, f"CPU model {model!r} is in no libvirt CPU map up "
                                             f"to {newest}; host {host} has libvirt {lv['version']}",
                                      "use a model libvirt knows (`virsh domcapabilities`)")]
        return []
    if have >= version(entry["since"]):
        return []
    absent = entry["absent-in"]
    if absent is not None and have <= version(absent):
        return [LIBVIRT_CPU.error(where, f"CPU model {model!r} is not in libvirt {lv['version']}'s "
                                         f"CPU map (host {host}); libvirt {entry['since']} has it",
                                  f"upgrade libvirt to {entry['since']}, choose another model, or "
                                  "leave libvirt out ([targets] build = [\"shell\", \"systemd\"], "
                                  "or -t shell -t systemd)")]
    # between two examined releases: cgsc cannot tell, and says so
    return [LIBVIRT_CPU_UNKNOWN.warning(
        where, f"cannot tell whether libvirt {lv['version']} (host {host}) has CPU model "
               f"{model!r}: " + (f"libvirt {absent} lacks it, {entry['since']} has it" if absent
                                 else f"{entry['since']}, the oldest libvirt examined, has it"),
        "check `virsh domcapabilities` on the host, or use a profile made from it "
        "(cgsc probe --from-domcapabilities), which lists its models")]


# what the firmware must support, by mechanism (firmware.json feature names, simplified)
_FIRMWARE_FEATURE = {"sev": "sev", "sev-es": "sev-es", "sev-snp": "sev-snp", "tdx": "tdx"}


def _firmware(plan, profile) -> List[Diagnostic]:
    images = profile.get("firmware")
    code = plan.firmware.code
    if images is None or not code:
        return []
    host = profile["name"]
    entry = next((f for f in images if f["path"] == code), None)
    if entry is None:
        return [FIRMWARE_UNFIT.error(("firmware", "code"), f"host {host} has no {code}",
                                     "it has: " + (", ".join(f["path"] for f in images) or "none"))]
    features = entry.get("features")
    if features is None:
        return []
    needed = [_FIRMWARE_FEATURE.get(plan.confidential.mechanism)]
    if dict(plan.confidential.object.props).get("kernel-hashes") in (True, "on"):
        needed.append("kernel-hashes")
    missing = [n for n in needed if n and n not in features]
    if missing:
        return [FIRMWARE_UNFIT.error(("firmware", "code"),
                                     f"{code} on host {host} does not support {', '.join(missing)}",
                                     "it supports: " + (", ".join(features) or "nothing confidential"))]
    return []

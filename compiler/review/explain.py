"""`cgsc explain`: what a reviewer needs to know about a guest, value by value.

Every launch-security key with its effective value and where it came from (spec,
default, derived), every policy/attribute integer decoded bit by bit, what cgsc adds on
its own, and the risks: warnings, and waivers with their reasons.
"""

from __future__ import annotations

import json
from typing import List

from ..core.diagnostics import format_path
from ..lower.qemu import Opts
from ..measure.record import explain_lines
from ..mechanisms import MECHANISMS
from ..pipeline.compile import compile_spec
from ..spec.schema import inlined


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str) and len(value) > 64:
        return f"{value[:16]}… ({len(value)} characters)"
    return str(value)


def explain(path: str) -> dict:
    compiled = compile_spec(path)
    plan = compiled.plan
    cgs = plan.confidential
    mech = MECHANISMS[cgs.mechanism]
    cfg = compiled.data["confidential"][mech.name]
    props = inlined()["properties"]["confidential"]["properties"][mech.name].get("properties", {})
    settings = []
    for key, prop in props.items():
        entry = {"key": key}
        if mech.layout is not None and key == mech.layout.word:
            value = mech.word(cfg)
            raw = cfg.get(key)
            entry.update(value=value, hex=f"{value:#x}", decoded=mech.layout.decode(value),
                         source="spec" if isinstance(raw, int) and raw == value
                         else "derived" if raw is not None else "default")
            if isinstance(raw, int) and raw != value:
                entry["note"] = f"the spec says {raw:#x}; cgsc sets the bits the mechanism requires"
            elif isinstance(raw, dict):
                entry["note"] = "computed from the named flags; unnamed flags keep their defaults"
        elif key in cfg:
            entry.update(value=cfg[key], source="spec")
        elif "default" in prop:
            entry.update(value=prop["default"], source="default")
        else:
            entry.update(value=None, source="unset")
        settings.append(entry)
    machine = Opts(None, cgs.machine_props).render()
    adds = [f"-object {cgs.object.qom_type},id={cgs.object.id} linked by "
            f"-machine confidential-guest-support={cgs.object.id}"]
    if machine:
        adds.append(f"-machine {machine}")
    fw = plan.firmware
    adds.append({"bios": f"firmware as one read-only image: -bios {fw.code}",
                 "pflash": f"firmware on pflash: code {fw.code} (read-only), vars {fw.vars}",
                 "none": "no firmware image (the machine's own loader)"}[fw.mode])
    if cgs.virtio_iommu:
        adds.append("iommu_platform=on on every virtio device")
    if cgs.nic_rom_off:
        adds.append("no option ROM on virtio-net")
    if cgs.lock_memory:
        adds.append("memlock limit lifted (script: ulimit -l, unit: LimitMEMLOCK=infinity, "
                    "libvirt: <memoryBacking><locked/>)")
    if cgs.no_balloon:
        adds.append("no memory balloon")
    if cgs.reboot_ends_process:
        adds.append("a guest reboot ends QEMU; the systemd unit restarts it")
    if plan.stop_channel:
        adds.append(f"a QMP monitor on the FIFOs {plan.stop_channel}.in/.out: `systemctl stop` "
                    "powers the guest down through it")
    from ..pipeline.build import choose_targets, skipped_targets
    chosen, _errors = choose_targets(compiled, ())
    return {
        "guest": plan.name, "spec": path,
        "targets": [name for name, _target in chosen],
        "skipped-targets": [{"target": t, "rule": r, "reason": why}
                            for t, r, why in skipped_targets(compiled, ())],
        "mechanism": cgs.mechanism, "title": cgs.title,
        "qom-type": cgs.object.qom_type, "settings": settings, "cgsc-adds": adds,
        "warnings": [{"rule": d.rule, "file": d.file, "line": d.line, "key": format_path(d.path),
                      "message": d.message} for d in compiled.warnings],
        "waivers": [{"rule": d.rule, "reason": reason, "file": d.file, "line": d.line,
                     "key": format_path(d.path), "message": d.message}
                    for d, reason in compiled.waived],
        "kubevirt": _kubevirt(compiled),
        "attestation": plan.attestation,
    }


def _kubevirt(compiled) -> dict:
    from ..targets.kubevirt import explain as kubevirt_explain
    return kubevirt_explain(compiled.plan, compiled.locate,
                            "kubevirt" in (compiled.build_targets or ()))


def to_text(info: dict) -> str:
    out: List[str] = [f"{info['guest']}: {info['title']} (QEMU {info['qom-type']}), "
                      f"from {info['spec']}", "", "launch security"]
    width = max([len(s["key"]) for s in info["settings"]] + [8])
    for s in info["settings"]:
        value = "-" if s["value"] is None else s.get("hex") or _show(s["value"])
        out.append(f"  {s['key']:<{width}}  {value:<20}  {s['source']}")
        if "decoded" in s:
            out.append(f"  {'':<{width}}  {s['decoded']}")
        if "note" in s:
            out.append(f"  {'':<{width}}  ({s['note']})")
    if not info["settings"]:
        out.append(f"  (no keys: {info['qom-type']} has no properties)")
    out += ["", "targets", "  " + (", ".join(info["targets"]) or "none")]
    out += [f"  {t['target']} skipped: {t['reason']} [{t['rule']}]" for t in info["skipped-targets"]]
    out += ["", "cgsc adds"] + [f"  {a}" for a in info["cgsc-adds"]]
    out += ["", "attestation"] + explain_lines(info.get("attestation"))
    out += ["", "warnings"] + ([f"  {w['file']}:{w['line']}: {w['key']}: {w['message']} [{w['rule']}]"
                                for w in info["warnings"]] or ["  none"])
    out += ["", "waived"] + ([f"  {w['rule']}: {w['reason']} ({w['file']}:{w['line']}: {w['key']}: "
                              f"{w['message']})" for w in info["waivers"]] or ["  none"])
    kv = info["kubevirt"]
    out += ["", f"kubevirt target (built {kv['built']})"]
    out += [f"  emits {line}" for line in kv.get("emits", ())]
    out += [f"  refuses {r['file']}:{r['line']}: {r['key']}: {r['message']} [{r['rule']}]"
            for r in kv.get("refuses", ())]
    return "\n".join(out) + "\n"


def to_json(info) -> str:
    """One object for one spec; a list of them for several."""
    return json.dumps(info, indent=2, ensure_ascii=False) + "\n"

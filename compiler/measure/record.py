"""The attestation reference values for readers: the published schema, and the summary
`explain` and `check` show. The values themselves are made by the measure stage."""

from __future__ import annotations

import json
from typing import List, Optional


def schema_text() -> str:
    from ..spec.schema import read
    return json.dumps(read("attestation.schema.json"), indent=2, ensure_ascii=False) + "\n"


def digest_change(old: Optional[dict], new: Optional[dict]) -> List[str]:
    """Readable lines for `cgsc check`: the launch measurement and the files that moved it."""
    old, new = old or {}, new or {}
    lines = []
    before, after = old.get("launch-digest"), new.get("launch-digest")
    old_files = {f["role"]: f for f in old.get("files", [])}
    for f in new.get("files", []):
        was = old_files.get(f["role"])
        if was is None or was["sha256"] != f["sha256"]:
            lines.append(f"  {f['role']} {f['path']}: sha256 "
                         f"{was['sha256'] if was else 'none'} → {f['sha256']}")
    for key in sorted(set(old.get("report", {})) | set(new.get("report", {}))):
        a, b = old.get("report", {}).get(key), new.get("report", {}).get(key)
        if a != b and key not in ("measurement", "mrtd"):   # both are the launch digest
            lines.append(f"  report {key}: {_listed(key, a) if a else 'none'} → "
                         f"{_listed(key, b) if b else 'none'}")
    if before != after:
        lines.insert(0, f"launch measurement changed: {before or 'none'} → {after or 'none'}")
    elif lines:
        lines.insert(0, "attestation reference values changed (the launch digest did not):")
    return lines


def explain_lines(att: Optional[dict]) -> List[str]:
    """The attestation section of `cgsc explain`."""
    if att is None:
        return ["  no [measurement]: cgsc predicts nothing and checks no boot file at launch"]
    out = []
    digest = att["launch-digest"]
    out.append(f"  launch digest ({att['digest-algorithm']}): {digest}" if digest
               else "  launch digest: not computed for this mechanism")
    for f in att["files"]:
        copy = "" if f["measured-copy"] == f["path"] else f" (measured copy {f['measured-copy']})"
        out.append(f"  {f['role']:<9} {f['path']}{copy}  sha256 {f['sha256']}")
    for key, value in att["inputs"].items():
        if key == "measured-by":
            value = f"{value['library']} {value['version']}"
        elif key == "tdvf-sections":
            value = ", ".join(f"{s['type']}@{s['address']}" for s in value)
        elif key == "xfam-depends-on":
            value = "; ".join(f"{r['bits']} if {r['set-when']}" for r in value)
        elif isinstance(value, bool) or value is None:
            value = {True: "true", False: "false", None: "-"}[value]
        out.append(f"  {key:<15} {value}")
    out.append("  a verifier compares:")
    out += [f"    {key} = {_listed(key, value)}" for key, value in att["report"].items()]
    if att.get("unmeasured"):
        out.append("  not in the launch measurement (kernel-hashes is off): "
                   + ", ".join(att["unmeasured"]))
    if att["not-predicted"]:
        out.append("  not predicted: " + ", ".join(att["not-predicted"]))
    out += [f"  note: {n}" for n in att["notes"]]
    for entry in att.get("reference-values", ()):
        what = ", ".join(entry["files"]) or f"not written: {entry.get('not-written', '')}"
        out.append(f"  reference values for {entry['format']}: {what}")
    if att["verify-at-launch"]:
        out.append("  launch binding: the shell script and the systemd unit read each boot "
                   "file once into a private copy, check its sha256 and start QEMU on that "
                   "copy (/proc/self/fd/N), refusing any other bytes; libvirt cannot check "
                   "files, so check them before `virsh start`")
    else:
        out.append("  launch binding: off (verify-at-launch = false): nothing checks the files "
                   "at launch")
    return out


def _listed(key: str, value) -> str:
    """A report value; a list of candidates in full when short, else counted."""
    if not isinstance(value, list):
        return value
    if len(value) <= 4:
        return " | ".join(value)
    return f"one of {len(value)} values (manifest.json attestation.report.{key})"

"""`cgsc verify REPORT --guest OUT/NAME`: is this my guest? The fields of a guest's
attestation report (SEV-SNP) or quote (TDX) against the prediction in its manifest, as a
table, JSON or SARIF.

Values only: the signature and the certificate chain of the evidence are not checked here.
That is the verifier's job, and `cgsc build` wrote its reference values beside the
manifest (go-sev-guest, go-tdx-guest, Trustee); the output points to them.
"""

from __future__ import annotations

import json
import os
from typing import List, NamedTuple, Optional, Tuple

from ..core import inputs
from ..core.diagnostics import Diagnostic, printable
from ..core.rules import Rule

MANIFEST = "manifest.json"
MANIFEST_LIMIT = 4 << 20   # a manifest is a few KiB
REPORT_LIMIT = 1 << 20     # an SNP report is 1184 bytes, a TDX quote a few KiB
VALUES_ONLY = ("values only: the evidence's signature and certificate chain were not "
               "checked; a verifier must check them (docs/attestation.md)")

MISMATCH = Rule(
    "CGS-VERIFY-001", "an attestation report field differs from the prediction",
    "The report (or quote) says something else than what the guest's manifest predicts "
    "for a field fixed at launch: another firmware, kernel or command line, another policy "
    "or attributes, other host data or ID block, or the report of another guest. A "
    "stricter policy differs too: the guest was not launched as specified.",
    "docs/attestation.md (cgsc verify)",
    fix="Find out why the launch differs (the note names the bits of a word); if the "
        "change is intended, change the spec and rebuild. Never accept the guest as is.")
UNREADABLE = Rule(
    "CGS-VERIFY-002", "the evidence is not a report or quote of the guest's mechanism",
    "cgsc verify reads the raw SEV-SNP ATTESTATION_REPORT (1184 bytes, versions 2 to 5) "
    "and the raw TDX quote (versions 4 and 5, header and TD quote body); a file cut short, "
    "with trailing bytes, of an unknown version or of another TEE is refused.",
    "docs/attestation.md (fetching the report)",
    fix="Give the file exactly as the guest got it: snpguest report's output, or "
        "/sys/kernel/config/tsm/report/NAME/outblob.")


class UsageProblem(Exception):
    """Not a verdict on the evidence: the command cannot run (exit status 2)."""


class Verdict(NamedTuple):
    report: str
    manifest: str
    guest: str
    evidence: str              # what the evidence was read as
    rows: Tuple                # cgsc.measure.evidence.Row per predicted field
    error: str                 # why the evidence could not be read ("" when it was)
    configs: Tuple[str, ...]   # the reference-value files cgsc wrote for the guest

    @property
    def ok(self) -> bool:
        return not self.error and all(r.ok for r in self.rows)


REPORT = inputs.Kind("report", REPORT_LIMIT)
MANIFEST_FILE = inputs.Kind("manifest", MANIFEST_LIMIT, inputs.MANIFEST.depth)


def _read(path: str, kind: inputs.Kind) -> Optional[bytes]:
    """A regular file by the input boundary's rules (never blocks: a FIFO or a device is
    refused unopened, /dev/zero stopped at the bound); None when it is larger than the
    bound. UsageProblem when it cannot be read."""
    try:
        return inputs.read(path, kind)
    except inputs.InputError as exc:
        if exc.rule == "size":
            return None
        raise UsageProblem(f"{kind.name} {printable(path)}: {exc.detail}") from None


def _manifest(guest: str) -> Tuple[str, dict]:
    path = os.path.join(guest, MANIFEST) if os.path.isdir(guest) else guest
    data = _read(path, MANIFEST_FILE)
    try:
        doc = inputs.load_json(data, path, MANIFEST_FILE) if data is not None else None
    except inputs.InputError:
        doc = None
    if not isinstance(doc, dict):
        raise UsageProblem(f"{printable(path)}: not a cgsc manifest.json (JSON object, at "
                           "most 4 MiB)")
    return path, doc


def _configs(path: str, attestation: dict) -> Tuple[str, ...]:
    """The reference-value files the manifest at `path` lists."""
    out = []
    entries = attestation.get("reference-values") or []
    for entry in entries if isinstance(entries, list) else [None]:
        files = entry.get("files") or [] if isinstance(entry, dict) else None
        if not isinstance(files, list):
            raise UsageProblem(f"{printable(path)}: attestation.reference-values is not a "
                               "list of formats and their files: not what cgsc writes "
                               "(rebuild the guest with cgsc build)")
        out += [os.path.join(os.path.dirname(path), f) for f in files if isinstance(f, str)]
    return tuple(out)


def verify(report: str, guest: str) -> Verdict:
    """The verdict on `report` for the guest whose output directory (or manifest.json) is
    `guest`. Raises UsageProblem when the command cannot run."""
    from ..measure.evidence import EvidenceError, PredictionError
    from ..mechanisms import MECHANISMS
    path, doc = _manifest(guest)
    name = printable(str(doc.get("guest", "?")))
    attestation = doc.get("attestation")
    if not isinstance(attestation, dict) or not isinstance(attestation.get("report"), dict):
        raise UsageProblem(f"{printable(path)}: guest {name} has no attestation record: "
                           "its spec has no [measurement], so nothing is predicted")
    mechanism = MECHANISMS.get(attestation.get("mechanism")) if isinstance(
        attestation.get("mechanism"), str) else None
    if mechanism is None:
        raise UsageProblem(f"{printable(path)}: attestation.mechanism is not one cgsc knows")
    configs = _configs(path, attestation)
    if not mechanism.evidence:
        raise UsageProblem(f"guest {name} is {mechanism.title}, which has no attestation "
                           "report cgsc reads" + ("; check its launch measurement with "
                                                  + ", ".join(configs) if configs else ""))
    data = _read(report, REPORT)
    shown = printable(report)
    if data is None:
        return Verdict(shown, path, name, "", (), f"larger than {REPORT_LIMIT} bytes: "
                       f"not {mechanism.evidence}", configs)
    try:
        evidence, rows = mechanism.compare_evidence(attestation, data)
    except EvidenceError as exc:
        return Verdict(shown, path, name, "", (), f"not {mechanism.evidence}: {exc}", configs)
    except PredictionError as exc:
        raise UsageProblem(f"{printable(path)}: attestation.{exc}: not what cgsc writes "
                           "(rebuild the guest with cgsc build)") from None
    return Verdict(shown, path, name, evidence, tuple(rows), "", configs)


def diagnostics(v: Verdict) -> List[Diagnostic]:
    """A diagnostic per mismatch (or for unreadable evidence), located at the report file."""
    if v.error:
        return [UNREADABLE.error((), v.error, UNREADABLE.fix).located(v.report, 0)]
    return [MISMATCH.error(("report", r.field), f"expected {r.expected}, reported {r.reported}"
                           + (f" ({r.note})" if r.note else ""),
                           "the guest did not launch as its spec says").located(v.report, 0)
            for r in v.rows if not r.ok]


def to_text(v: Verdict) -> Tuple[str, str]:
    """(stdout: the table, stderr: the verdict, what was not checked, where the configs are)."""
    err = [f"cgsc verify: {v.report}: guest {v.guest} ({printable(v.manifest)})"]
    out = ""
    if v.error:
        err.append(f"cgsc verify: {v.report}: {v.error} [{UNREADABLE.id}]")
    else:
        header = ("field", "expected", "reported", "ok")
        lines = [header] + [(r.field, r.expected, r.reported, "ok" if r.ok else "DIFFERS")
                            for r in v.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(3)]
        body = []
        for line, row in zip(lines, (None,) + v.rows):
            text = "  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[3]
            if row is not None and row.note and not row.ok:
                text += f"  {row.note}"
            body.append(text.rstrip())
        out = f"{v.evidence}\n" + "\n".join(body) + "\n"
        bad = [r.field for r in v.rows if not r.ok]
        err.append(f"cgsc verify: {len(v.rows) - len(bad)} of {len(v.rows)} fields match"
                   + (f"; DIFFERENT: {', '.join(bad)} [{MISMATCH.id}]" if bad else ""))
    err.append(f"cgsc verify: {VALUES_ONLY}")
    if v.configs:
        err.append("cgsc verify: reference values for the verifiers: " + ", ".join(
            printable(c) for c in v.configs))
    return out, "".join(line + "\n" for line in err)


def as_dict(v: Verdict) -> dict:
    return {"report": v.report, "manifest": v.manifest, "guest": v.guest,
            "evidence": v.evidence or None, "match": v.ok, "error": v.error or None,
            "fields": [{"field": r.field, "expected": r.expected, "reported": r.reported,
                        "ok": r.ok, "note": r.note or None} for r in v.rows],
            "checked": VALUES_ONLY, "reference-values": list(v.configs)}


def to_json(v: Verdict) -> str:
    return json.dumps(as_dict(v), indent=2, ensure_ascii=False) + "\n"


def to_sarif(v: Verdict) -> str:
    """SARIF 2.1.0: a result per mismatch; what was checked and the verdict in the run's
    property bag."""
    from .report import to_sarif as sarif
    log = json.loads(sarif(diagnostics(v)))
    log["runs"][0]["properties"] = {"checked": VALUES_ONLY, "match": v.ok,
                                    "evidence": v.evidence or None,
                                    "referenceValues": list(v.configs)}
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"

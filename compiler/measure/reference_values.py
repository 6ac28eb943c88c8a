"""Reference values in the verifiers' own formats, written beside the manifest: which
formats a guest gets ([attestation] formats, by default every one its mechanism can be
written in), and the record of what was written. The mechanism says which formats apply
and hands its predicted values to the format's writer (go_sev_guest, go_tdx_guest,
trustee, sev_launch); each writer is a pure function of manifest.json's `attestation`.
"""

from __future__ import annotations

from typing import List, NamedTuple, Tuple

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule

FORMATS = ("go-sev-guest", "go-tdx-guest", "trustee", "sev-launch-measure")

NO_MEASUREMENT = Rule(
    "CGS-ATTEST-001", "[attestation] formats without [measurement]",
    "Reference values are the predicted measurement and report fields written for a "
    "verifier; without [measurement] nothing is predicted, so no verifier file can be written.",
    "docs/attestation.md (reference values for verifiers)",
    fix="Add [measurement] (the boot files to measure), or remove [attestation].")
NOT_APPLICABLE = Rule(
    "CGS-ATTEST-002", "a reference-value format does not apply to this mechanism",
    "Each verifier reads one kind of evidence: go-sev-guest SEV-SNP reports, go-tdx-guest TDX "
    "quotes, Trustee both, and SEV/SEV-ES have only a LAUNCH_MEASURE to check "
    "(sev-launch-measure). A format for another mechanism would check nothing.",
    "docs/attestation.md (reference values for verifiers)",
    fix="List only the formats the mechanism takes (the message names them), or leave "
        "formats out to get all of them.")
NOT_WRITTEN = Rule(
    "CGS-ATTEST-003", "a requested reference-value format cannot be written for this guest",
    "A verifier config is written only when every field it must pin is predicted: a "
    "go-tdx-guest config without MRTD, TD attributes and XFAM would accept a TD with DEBUG "
    "set. Asked for explicitly, a format that cannot be written is an error, not a file "
    "silently missing.",
    "docs/attestation.md (reference values for verifiers)",
    fix="Remove the format from [attestation] formats, or give what the prediction needs "
        "(the message says what is missing).")


class NotWritten(Exception):
    """Raised by a writer: why its format cannot be written for this guest."""


class References(NamedTuple):
    files: Tuple[Tuple[str, str], ...]   # (file name, text), beside the manifest
    record: Tuple[dict, ...]             # manifest.json attestation.reference-values
    errors: Tuple[Diagnostic, ...]


def static_checks(guest) -> List[Diagnostic]:
    """[attestation] rules that need no file."""
    formats = guest.attestation_formats
    if formats is None:
        return []
    if guest.measurement is None:
        return [NO_MEASUREMENT.error(("attestation", "formats"), "is given but the spec has no "
                                     "[measurement]: nothing is predicted to write",
                                     "add [measurement], or remove [attestation]")]
    mech = guest.mechanism
    takes = (f"{mech.title} takes " + ", ".join(mech.reference_formats)
             if mech.reference_formats else f"no verifier format applies to {mech.title}")
    return [NOT_APPLICABLE.error(("attestation", "formats", i), f"{fmt!r} does not apply to "
                                 f"{mech.title}", takes)
            for i, fmt in enumerate(formats) if fmt not in mech.reference_formats]


def render(guest, attestation: dict) -> References:
    """The reference-value files of every chosen format, and the record of each format."""
    explicit = guest.attestation_formats is not None
    chosen = guest.attestation_formats if explicit else guest.mechanism.reference_formats
    files, record, errors = [], [], []
    for i, fmt in enumerate(chosen):
        try:
            written = guest.mechanism.reference_values(fmt, guest.name, attestation, explicit)
        except NotWritten as why:
            record.append({"format": fmt, "files": [], "not-written": str(why)})
            if explicit:
                errors.append(NOT_WRITTEN.error(("attestation", "formats", i),
                                                f"{fmt}: {why}", "remove it from formats"))
            continue
        names = [f"{guest.name}.{suffix}" for suffix, _text in written]
        files += [(name, text) for name, (_suffix, text) in zip(names, written)]
        record.append({"format": fmt, "files": names})
    return References(tuple(files), tuple(record), tuple(errors))

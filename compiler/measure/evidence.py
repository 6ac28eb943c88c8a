"""A guest's attestation evidence against its prediction, field by field: what `cgsc verify`
shows. The report layouts are in snp_report and tdx_quote; the mechanism says which one
its guests produce. Values only: signatures and certificate chains are the verifiers' job.
"""

from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence


class EvidenceError(ValueError):
    """The bytes are not the evidence the guest's mechanism produces, or not a whole one."""


class PredictionError(ValueError):
    """The manifest's prediction is not what cgsc writes (edited by hand, or damaged)."""


_WORD = re.compile(r"0x[0-9a-f]{1,16}")


def predicted_hex(predicted: dict, name: str, size: int) -> Optional[str]:
    """A predicted byte field (lowercase hex of `size` bytes), None when not predicted."""
    value = predicted.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(f"[0-9a-f]{{{2 * size}}}", value):
        raise PredictionError(f"report.{name} is not {size} bytes of lowercase hex")
    return value


def predicted_word(predicted: dict, name: str) -> Optional[int]:
    """A predicted 64-bit word ("0x..."), None when not predicted."""
    value = predicted.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise PredictionError(f"report.{name} is not a 64-bit word in 0x hex")
    return int(value, 16)


class Row(NamedTuple):
    field: str       # the manifest's name of the field
    expected: str
    reported: str
    ok: bool
    note: str = ""   # which bits differ; why a requirement is there


def word_row(field: str, expected: int, reported: int, names: Dict[int, str],
             width: int = 0) -> Row:
    """A 64-bit word compared exactly; on a mismatch the note names the bits that differ."""
    fmt = f"#0{width + 2}x" if width else "#x"
    note = ""
    if expected != reported:
        changes = [(f"{names[b]} (bit {b})" if b in names else f"bit {b}")
                   + (" set" if reported >> b & 1 else " clear")
                   for b in range(64) if (expected ^ reported) >> b & 1]
        note = "reported " + ", ".join(changes)
    return Row(field, format(expected, fmt), format(reported, fmt), expected == reported, note)


def hex_row(field: str, expected: str, reported: str) -> Row:
    return Row(field, expected, reported, expected == reported)


def one_of_row(field: str, candidates: Sequence[int], reported: int, width: int) -> Row:
    """A word the prediction allows several values of (it depends on the host CPU)."""
    fmt = f"#0{width + 2}x"
    shown = [format(c, fmt) for c in candidates]
    expected = shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)
    return Row(field, expected, format(reported, fmt), reported in candidates,
               "" if len(shown) == 1 else "depends on the host CPU")


def mismatches(rows: List[Row]) -> List[Row]:
    return [r for r in rows if not r.ok]

"""go-tdx-guest's checkconfig.Config (github.com/google/go-tdx-guest, proto/checkconfig.proto)
for a TDX guest, from the manifest's predicted quote fields.

go-tdx-guest 0.3.1 (validate/validate.go) compares every TDQuoteBodyPolicy byte field
exactly against the raw bytes of the quote, and not at all when the field is empty.
Without td_attributes and xfam it checks only their fixed bits, and so accepts a TD with
DEBUG set: a config is written only when MRTD, the TD attributes and XFAM are all
predicted, never without them. `header_policy {}` is always written: 0.3.1's tools/check
dereferences it (check.go populateConfig) and crashes on a config without it.
"""

from __future__ import annotations

from typing import List, Tuple

from .proto_encoding import BYTES, MESSAGE, Field, protojson, textproto
from .reference_values import NotWritten

FORMAT = "go-tdx-guest"
MR_FIELDS = (("mr_config_id", "mrconfigid"), ("mr_owner", "mrowner"),
             ("mr_owner_config", "mrownerconfig"))
# go-tdx-guest's own bound on XFAM, applied whatever the config says (validate.go
# xfamFixed0, 0.3.1 and 91f9a52): a bit outside it (19, APX) fails every quote.
LIBRARY_XFAM_BITS = 0x0006DBE7


def le64(word: str) -> bytes:
    """A 64-bit word as the manifest writes it ("0x...") -> its 8 little-endian quote bytes."""
    return int(word, 16).to_bytes(8, "little")


def xfam_values(report: dict) -> List[str]:
    """The XFAM words the guest can report: the exact one, else every candidate."""
    if "xfam" in report:
        return [report["xfam"]]
    return list(report.get("xfam-candidates", ()))


def body_policy(report: dict, xfam: str) -> Tuple[Field, ...]:
    """TDQuoteBodyPolicy, fields in field-number order."""
    fields = [Field("td_attributes", BYTES, le64(report["attributes"]),
                    f"TDATTRIBUTES {report['attributes']} as the quote's little-endian bytes"),
              Field("xfam", BYTES, le64(xfam), f"XFAM {xfam} as the quote's little-endian bytes"),
              Field("mr_td", BYTES, bytes.fromhex(report["mrtd"]))]
    fields += [Field(name, BYTES, bytes.fromhex(report[key])) for name, key in MR_FIELDS]
    return tuple(fields)


def header(guest: str, xfam: str, count: int) -> Tuple[str, ...]:
    lines = [
        "proto-file: github.com/google/go-tdx-guest/proto/checkconfig.proto",
        "proto-message: checkconfig.Config",
        "",
        f"go-tdx-guest reference values for the TDX guest {guest}, written by cgsc from",
        "manifest.json's attestation section. Use: check -config THIS.textproto -in QUOTE.",
        "Left out, the platform owner's to add: root_of_trust, minimum_tee_tcb_svn, mr_seam,",
        "qe_vendor_id, minimum_qe_svn, minimum_pce_svn; rtmrs are not predicted.",
    ]
    if count > 1:
        lines += [f"XFAM depends on the host CPU: this config is for XFAM {xfam}, one of",
                  f"{count} files, one per value the guest can report (a host profile with",
                  "tdx.xfam makes it exact: cgsc build --host)."]
    extra = int(xfam, 16) & ~LIBRARY_XFAM_BITS
    if extra:
        lines += [f"go-tdx-guest (0.3.1 and later) refuses every quote with XFAM bits {extra:#x}",
                  "(its fixed bits, xfamFixed0 0x6dbe7), whatever this config says."]
    return tuple(lines)


def files(guest: str, attestation: dict, every_candidate: bool = False) -> List[Tuple[str, str]]:
    """(file name suffix, text) pairs; NotWritten when the quote is not predicted enough
    to refuse a DEBUG TD. With XFAM not exact (no host profile says it), one config per
    value the guest can report, only when `every_candidate` (the spec asked for this
    format by name): dozens of files per guest are not a default."""
    report = attestation["report"]
    missing = [what for what, ok in (("MRTD", "mrtd" in report),
                                     ("the TD attributes", "attributes" in report),
                                     ("XFAM", bool(xfam_values(report)))) if not ok]
    if missing:
        raise NotWritten(" and ".join(missing) + " not predicted: a go-tdx-guest config "
                         "without them would accept a TD it should refuse")
    values = xfam_values(report)
    if len(values) > 1 and not every_candidate:
        raise NotWritten(f"XFAM depends on the host CPU ({len(values)} possible values): give "
                         "a host profile with tdx.xfam (cgsc build --host) for one exact "
                         "config, or name go-tdx-guest in [attestation] formats for one "
                         "config per possible value")
    out = []
    for xfam in values:
        config = (Field("policy", MESSAGE, (Field("header_policy", MESSAGE, ()),
                                             Field("td_quote_body_policy", MESSAGE,
                                                   body_policy(report, xfam)))),)
        stem = FORMAT if len(values) == 1 else f"{FORMAT}.xfam-{int(xfam, 16):016x}"
        out += [(f"{stem}.textproto", textproto(config, header(guest, xfam, len(values)))),
                (f"{stem}.json", protojson(config))]
    return out

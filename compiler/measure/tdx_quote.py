"""The Intel TDX quote (versions 4 and 5), as `cgsc verify` reads it: the header and the
TD quote body, whose fields a launch predicts. The signature data is framed, not checked.

Layout: Intel SGX/TDX DCAP, QuoteGeneration/quote_wrapper/common/inc/sgx_quote_4.h
(sgx_quote4_header_t, sgx_report2_body_t, sgx_quote4_t) and sgx_quote_5.h
(sgx_report2_body_v1_5_t, sgx_quote5_t); the QVL (QuoteStructures.h, QuoteConstants.h:
TD_REPORT10_BYTE_LEN 584, TD_REPORT15_BYTE_LEN 648) and Trustee's
deps/verifier/src/intel_dcap/quote.rs read them the same way. Little-endian throughout.

  v4: header (48) | TD report body 1.0 (584) | u32 signature data length | signature data
  v5: header (48) | u16 body type (2: TDX 1.0, 3: TDX 1.5; 1 is an SGX enclave report)
      | u32 body size (584 / 648) | body | u32 signature data length | signature data
"""

from __future__ import annotations

import struct
from typing import Dict, List, Tuple

from .evidence import (EvidenceError, PredictionError, Row, hex_row, one_of_row,
                       predicted_hex, predicted_word, word_row)

HEADER = 48
TEE_TDX = 0x81
TEE_SGX = 0x00
BODY_TYPES = {2: ("TDX 1.0", 584), 3: ("TDX 1.5", 648)}
MAX_SIZE = 1 << 20   # quotes are a few KiB (the PCK certificate chain is the bulk)

# offset in the TD quote body -> size (sgx_report2_body_t)
BODY_FIELDS = {
    "tee_tcb_svn": (0, 16),
    "mrseam": (16, 48),
    "mrsignerseam": (64, 48),
    "seam_attributes": (112, 8),
    "attributes": (120, 8),     # TDATTRIBUTES, u64
    "xfam": (128, 8),           # u64
    "mrtd": (136, 48),
    "mrconfigid": (184, 48),
    "mrowner": (232, 48),
    "mrownerconfig": (280, 48),
    "rtmr0": (328, 48),
    "rtmr1": (376, 48),
    "rtmr2": (424, 48),
    "rtmr3": (472, 48),
    "report_data": (520, 64),
}
U64_FIELDS = ("attributes", "xfam", "seam_attributes")


class QuoteError(EvidenceError):
    """The bytes are not a TDX quote cgsc can read."""


def decode(data: bytes) -> Dict[str, object]:
    """field -> value (int for the 64-bit words, lowercase hex of the quote bytes for the
    rest), plus version and body type; QuoteError for anything else than a whole v4/v5 TDX
    quote."""
    if len(data) < HEADER:
        raise QuoteError(f"{len(data)} bytes: shorter than the {HEADER}-byte quote header")
    version, key_type, tee_type = struct.unpack_from("<HHI", data, 0)
    if version not in (4, 5):
        raise QuoteError(f"quote version {version}: cgsc reads TDX quotes of version 4 and 5"
                         + (" (version 3 is an SGX quote)" if version == 3 else ""))
    if tee_type != TEE_TDX:
        what = "an SGX quote" if tee_type == TEE_SGX else "a quote of another TEE"
        raise QuoteError(f"TEE type {tee_type:#010x}: {what}, not a TDX quote (0x00000081)")
    start, kind = HEADER, "TDX 1.0"
    size = BODY_TYPES[2][1]
    if version == 5:
        if len(data) < HEADER + 6:
            raise QuoteError(f"{len(data)} bytes: a version 5 quote is cut short in its body "
                             "type and size")
        body_type, body_size = struct.unpack_from("<HI", data, HEADER)
        if body_type not in BODY_TYPES:
            what = "an SGX enclave report" if body_type == 1 else "an unknown body type"
            raise QuoteError(f"quote body type {body_type}: {what}, not a TD report (2 or 3)")
        kind, size = BODY_TYPES[body_type]
        if body_size != size:
            raise QuoteError(f"quote body size {body_size}: a {kind} TD report is {size} bytes")
        start = HEADER + 6
    end = start + size
    if len(data) < end + 4:
        raise QuoteError(f"{len(data)} bytes: cut short in the {kind} TD quote body "
                         f"(it ends at byte {end}, followed by a 4-byte signature length)")
    signed = struct.unpack_from("<I", data, end)[0]
    total = end + 4 + signed
    if len(data) != total:
        more = (f"{len(data) - total} trailing bytes after it" if len(data) > total
                else f"it is cut short by {total - len(data)} bytes")
        raise QuoteError(f"{len(data)} bytes, but the quote's signature data length makes it "
                         f"{total} bytes: {more}")
    out: Dict[str, object] = {"version": version, "att_key_type": key_type, "body": kind}
    for name, (offset, width) in BODY_FIELDS.items():
        raw = data[start + offset:start + offset + width]
        out[name] = int.from_bytes(raw, "little") if name in U64_FIELDS else raw.hex()
    return out


MR_FIELDS = ("mrconfigid", "mrowner", "mrownerconfig")


def compare(predicted: dict, data: bytes, attribute_names: Dict[int, str]) -> Tuple[str, List[Row]]:
    """(what the evidence is, a row per predicted field in quote order)."""
    got = decode(data)
    rows: List[Row] = []
    attributes = predicted_word(predicted, "attributes")
    if attributes is not None:
        rows.append(word_row("attributes", attributes, got["attributes"], attribute_names, 16))
    xfams = ([predicted_word(predicted, "xfam")] if "xfam" in predicted else
             [predicted_word({"xfam": x}, "xfam") for x in _list(predicted, "xfam-candidates")])
    if xfams:
        rows.append(one_of_row("xfam", xfams, got["xfam"], 16))
    if predicted_hex(predicted, "mrtd", 48) is not None:
        rows.append(hex_row("mrtd", predicted["mrtd"], got["mrtd"]))
    for name in MR_FIELDS:
        if predicted_hex(predicted, name, 48) is not None:
            rows.append(hex_row(name, predicted[name], got[name]))
    if not rows:
        raise PredictionError("the report predicts no TD quote field")
    return f"TDX quote, version {got['version']} ({got['body']} TD report)", rows


def _list(predicted: dict, name: str) -> list:
    value = predicted.get(name, [])
    if not isinstance(value, list):
        raise PredictionError(f"report.{name} is not a list")
    return value

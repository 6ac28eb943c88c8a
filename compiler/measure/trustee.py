"""Reference values for Confidential Containers' Trustee: the RVPS `sample` message, with
the names and encodings its attestation service's default policy reads.

Sources (confidential-containers/trustee, commit 78962cd, after v0.21.0):
- rvps/src/lib.rs: the message is {"version", "type", "payload"}; a version other than
  "0.1.0" is refused ("Version unmatched!").
- rvps/src/extractors/sample/mod.rs: `payload` is standard base64 of a JSON object
  name -> value; each value is stored as given (a list, or a scalar).
- attestation-service/src/ear_token/ear_default_policy_cpu.rego: SNP compares
  `input.snp.measurement in query_reference_value("snp_launch_measurement")` (line 106),
  `policy_abi_major == ...("snp_guest_abi_major")`, `policy_abi_minor == ...("snp_guest_abi_minor")`,
  `policy_single_socket == ...("snp_single_socket")`, `policy_smt_allowed == ...("snp_smt_allowed")`
  (lines 130-133: scalars); TDX `input.tdx.quote.body.mr_td in ...("mr_td")` (line 181) and
  `input.tdx.quote.body.xfam in ...("xfam")` (line 220).
- deps/verifier/src/snp/mod.rs (parse_tee_evidence): the SNP measurement claim is lowercase
  hex since d783129 (v0.18.0; base64 before); deps/verifier/src/tdx/claims.rs: TDX claims
  are lowercase hex of the quote's bytes, so XFAM is little-endian.
RVPS keeps one value per name for all guests: a later sample replaces an earlier one.
"""

from __future__ import annotations

import base64
import json
from typing import List, Tuple

FORMAT = "trustee"
MESSAGE_VERSION = "0.1.0"


def snp_values(report: dict) -> dict:
    """Trustee reference values predicted for an SEV-SNP guest."""
    policy = int(report["policy"], 16)
    return {"snp_launch_measurement": [report["measurement"]],
            "snp_guest_abi_major": policy >> 8 & 0xFF,
            "snp_guest_abi_minor": policy & 0xFF,
            "snp_single_socket": bool(policy >> 20 & 1),
            "snp_smt_allowed": bool(policy >> 16 & 1)}


def tdx_values(report: dict, xfams: List[str]) -> dict:
    """Trustee reference values predicted for a TDX guest (XFAM: every value it can report)."""
    return {"mr_td": [report["mrtd"]],
            "xfam": [int(x, 16).to_bytes(8, "little").hex() for x in xfams]}


def message(values: dict) -> str:
    """The RVPS message registering `values` (what kbs-client set-sample-reference-value
    and POST /kbs/v0/reference-value send)."""
    payload = json.dumps(values, separators=(",", ":")).encode("utf-8")
    doc = {"version": MESSAGE_VERSION, "type": "sample",
           "payload": base64.b64encode(payload).decode("ascii")}
    return json.dumps(doc, indent=2) + "\n"


def files(values: dict) -> List[Tuple[str, str]]:
    return [(f"{FORMAT}-rvps.json", message(values))]

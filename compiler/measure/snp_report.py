"""The SEV-SNP ATTESTATION_REPORT, as `cgsc verify` reads it: the fields a launch predicts.

Layout: AMD SEV Secure Nested Paging Firmware ABI Specification (publication 56860),
section 7.3 Attestation, table "ATTESTATION_REPORT Structure" (Table 23 in the revisions
that describe report version 5; Table 21 in earlier ones). The same offsets are in
go-sev-guest abi/abi.go (ReportToProto) and virtee/sev src/firmware/guest/types/snp.rs.
All integers are little-endian; the report is 0x4A0 (1184) bytes whatever its version:
  version 2: 0x188-0x19F reserved;
  versions 3 and 4: CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP at 0x188-0x18A;
  version 5: also LAUNCH_MIT_VECTOR (0x1F8) and CURRENT_MIT_VECTOR (0x200).
The fields cgsc predicts sit at the same offsets in every version.
"""

from __future__ import annotations

import struct
from typing import Dict, List, NamedTuple, Tuple

from .evidence import (EvidenceError, PredictionError, Row, hex_row, predicted_hex,
                       predicted_word, word_row)

SIZE = 0x4A0
VERSIONS = (2, 3, 4, 5)
# The VMPL a report must be requested at: cgsc launches no SVSM, so the guest kernel runs
# at VMPL 0 and a report from it (configfs-tsm privlevel 0; `snpguest report --vmpl 0`,
# whose default is 1) says 0. Trustee's SNP verifier refuses any other VMPL as well.
REQUIRED_VMPL = 0


class Field(NamedTuple):
    offset: int
    size: int
    kind: str          # "u32", "u64", "hex"


FIELDS: Dict[str, Field] = {
    "version": Field(0x000, 4, "u32"),
    "guest_svn": Field(0x004, 4, "u32"),
    "policy": Field(0x008, 8, "u64"),
    "family_id": Field(0x010, 16, "hex"),
    "image_id": Field(0x020, 16, "hex"),
    "vmpl": Field(0x030, 4, "u32"),
    "signature_algo": Field(0x034, 4, "u32"),
    "platform_info": Field(0x040, 8, "u64"),
    "signer_info": Field(0x048, 4, "u32"),   # AUTHOR_KEY_EN bit 0, MASK_CHIP_KEY 1, SIGNING_KEY 4:2
    "report_data": Field(0x050, 64, "hex"),
    "measurement": Field(0x090, 48, "hex"),
    "host_data": Field(0x0C0, 32, "hex"),
    "id_key_digest": Field(0x0E0, 48, "hex"),
    "author_key_digest": Field(0x110, 48, "hex"),
    "report_id": Field(0x140, 32, "hex"),
    "reported_tcb": Field(0x180, 8, "u64"),
    "chip_id": Field(0x1A0, 64, "hex"),
}


class ReportError(EvidenceError):
    """The bytes are not an SEV-SNP attestation report cgsc can read."""


def decode(data: bytes) -> Dict[str, object]:
    """field -> value (int, or lowercase hex for byte fields); ReportError when the bytes
    are not a 1184-byte report of a known version."""
    if len(data) != SIZE:
        more = "trailing bytes after" if len(data) > SIZE else "it is shorter than"
        raise ReportError(f"{len(data)} bytes: an SEV-SNP attestation report is exactly {SIZE} "
                          f"bytes ({more} one; a report followed by a certificate table is "
                          f"not a bare report: give the first {SIZE} bytes)")
    version = struct.unpack_from("<I", data, 0)[0]
    if version not in VERSIONS:
        raise ReportError(f"report version {version} is not an SEV-SNP ATTESTATION_REPORT "
                          "version cgsc reads (2, 3, 4 or 5)")
    out: Dict[str, object] = {}
    for name, f in FIELDS.items():
        raw = data[f.offset:f.offset + f.size]
        out[name] = raw.hex() if f.kind == "hex" else int.from_bytes(raw, "little")
    if version >= 3:
        out["cpuid_fms"] = f"{data[0x188]:#04x}/{data[0x189]:#04x}/{data[0x18A]:#04x}"
    return out


# predicted byte fields, in report order
HEX_FIELDS = (("family_id", 16), ("image_id", 16), ("measurement", 48), ("host_data", 32),
              ("id_key_digest", 48), ("author_key_digest", 48))
VMPL_NOTE = ("required, not predicted: the VMPL the report was requested at (0: the guest "
             "kernel; snpguest report --vmpl 0, configfs-tsm privlevel 0)")


def compare(predicted: dict, data: bytes, policy_names: Dict[int, str]) -> Tuple[str, List[Row]]:
    """(what the evidence is, a row per predicted field in report order)."""
    got = decode(data)
    rows: List[Row] = []
    svn = predicted.get("guest_svn")
    if svn is not None:
        if not isinstance(svn, int) or isinstance(svn, bool) or not 0 <= svn < 1 << 32:
            raise PredictionError("report.guest_svn is not a 32-bit integer")
        rows.append(Row("guest_svn", str(svn), str(got["guest_svn"]), svn == got["guest_svn"]))
    policy = predicted_word(predicted, "policy")
    if policy is None or predicted_hex(predicted, "measurement", 48) is None:
        raise PredictionError("report.policy and report.measurement are not both predicted")
    rows.append(word_row("policy", policy, got["policy"], policy_names))
    for name, size in HEX_FIELDS[:2]:
        if predicted_hex(predicted, name, size) is not None:
            rows.append(hex_row(name, predicted[name], got[name]))
    rows.append(Row("vmpl", str(REQUIRED_VMPL), str(got["vmpl"]),
                    got["vmpl"] == REQUIRED_VMPL, VMPL_NOTE))
    for name, size in HEX_FIELDS[2:]:
        if predicted_hex(predicted, name, size) is not None:
            rows.append(hex_row(name, predicted[name], got[name]))
    return f"SEV-SNP attestation report, version {got['version']}", rows

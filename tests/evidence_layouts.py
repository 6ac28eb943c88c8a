"""Synthetic attestation evidence laid out from the published structures, independent of
cgsc's readers (compiler/measure/snp_report.py, tdx_quote.py), so the tests check those
readers against the layouts and not against themselves.

SEV-SNP: AMD SEV Secure Nested Paging Firmware ABI Specification (publication 56860),
section 7.3, table "ATTESTATION_REPORT Structure" (Table 23 in the revisions describing
version 5): 1184 bytes, little-endian. VERSION 0x000, GUEST_SVN 0x004, POLICY 0x008,
FAMILY_ID 0x010, IMAGE_ID 0x020, VMPL 0x030, SIGNATURE_ALGO 0x034, CURRENT_TCB 0x038,
PLATFORM_INFO 0x040, the signer word 0x048 (AUTHOR_KEY_EN bit 0), REPORT_DATA 0x050,
MEASUREMENT 0x090, HOST_DATA 0x0C0, ID_KEY_DIGEST 0x0E0, AUTHOR_KEY_DIGEST 0x110, REPORT_ID
0x140, REPORT_ID_MA 0x160, REPORTED_TCB 0x180, CPUID_FAM_ID/MOD_ID/STEP 0x188 (version 3+),
CHIP_ID 0x1A0, COMMITTED_TCB 0x1E0, CURRENT/COMMITTED build, minor, major 0x1E8-0x1EE,
LAUNCH_TCB 0x1F0, LAUNCH_MIT_VECTOR 0x1F8 and CURRENT_MIT_VECTOR 0x200 (version 5),
SIGNATURE 0x2A0 (R, S: 72 bytes each).

TDX: Intel DCAP QuoteGeneration/quote_wrapper/common/inc/sgx_quote_4.h (sgx_quote4_header_t:
version u16, att_key_type u16, tee_type u32, reserved u32, vendor_id[16], user_data[20];
sgx_report2_body_t, 584 bytes; sgx_quote4_t: header, body, u32 signature_data_len,
signature_data) and sgx_quote_5.h (sgx_quote5_t: header, u16 type, u32 size, body;
sgx_report2_body_v1_5_t, 648 bytes). Body offsets: TEE_TCB_SVN 0, MRSEAM 16,
MRSIGNERSEAM 64, SEAMATTRIBUTES 112, TDATTRIBUTES 120, XFAM 128, MRTD 136, MRCONFIGID 184,
MROWNER 232, MROWNERCONFIG 280, RTMR0-3 328, REPORTDATA 520, TEE_TCB_SVN2 584,
MRSERVICETD 600.
"""

from __future__ import annotations

import struct

INTEL_QE_VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

SNP_OFFSETS = {"guest_svn": 0x004, "policy": 0x008, "family_id": 0x010, "image_id": 0x020,
               "vmpl": 0x030, "measurement": 0x090, "host_data": 0x0C0,
               "id_key_digest": 0x0E0, "author_key_digest": 0x110}
TDX_BODY_OFFSETS = {"attributes": 120, "xfam": 128, "mrtd": 136, "mrconfigid": 184,
                    "mrowner": 232, "mrownerconfig": 280}


def snp_report(version: int, predicted: dict) -> bytearray:
    """A report of `version` whose fields are `predicted` (the manifest's report: hex
    strings, "0x" words, guest_svn an integer); everything else plausible and non-zero."""
    r = bytearray(1184)
    struct.pack_into("<I", r, 0x000, version)
    struct.pack_into("<I", r, 0x004, predicted.get("guest_svn", 0))
    struct.pack_into("<Q", r, 0x008, int(predicted["policy"], 16))
    struct.pack_into("<II", r, 0x030, 0, 1)                 # VMPL 0, ECDSA P-384 with SHA-384
    struct.pack_into("<Q", r, 0x038, 0x1700000000000003)    # CURRENT_TCB
    struct.pack_into("<Q", r, 0x040, 0x3)                   # PLATFORM_INFO: SMT, TSME
    struct.pack_into("<I", r, 0x048, 1 if "author_key_digest" in predicted else 0)
    r[0x050:0x090] = bytes(range(64))                       # REPORT_DATA
    for name in ("family_id", "image_id", "measurement", "host_data", "id_key_digest",
                 "author_key_digest"):
        if name in predicted:
            value = bytes.fromhex(predicted[name])
            r[SNP_OFFSETS[name]:SNP_OFFSETS[name] + len(value)] = value
    r[0x140:0x160] = b"\x5a" * 32                           # REPORT_ID
    struct.pack_into("<Q", r, 0x180, 0x1700000000000003)    # REPORTED_TCB
    if version >= 3:
        r[0x188:0x18B] = bytes([0x19, 0x01, 0x01])          # Milan: family 19h, model 1, stepping 1
    r[0x1A0:0x1E0] = b"\xc3" * 64                           # CHIP_ID
    r[0x1E8:0x1EB] = bytes([7, 55, 1])                      # CURRENT build 7, 1.55
    r[0x1EC:0x1EF] = bytes([7, 55, 1])
    if version >= 5:
        struct.pack_into("<QQ", r, 0x1F8, 0x3, 0x7)         # LAUNCH/CURRENT_MIT_VECTOR
    r[0x2A0:0x2A0 + 144] = b"\x11" * 144                    # SIGNATURE R, S (not checked)
    return r


def set_snp(report: bytearray, field: str, value) -> None:
    """Overwrite one field at its ABI offset (an int for the words, bytes otherwise)."""
    offset = SNP_OFFSETS[field]
    if field == "policy":
        struct.pack_into("<Q", report, offset, value)
    elif field in ("guest_svn", "vmpl"):
        struct.pack_into("<I", report, offset, value)
    else:
        report[offset:offset + len(value)] = value


def tdx_quote(version: int, predicted: dict, body_type: int = 2, tee_type: int = 0x81,
              xfam: str = "", signature: bytes = b"\xa5" * 700) -> bytearray:
    """A quote of `version` (5: `body_type` 2 TDX 1.0, 3 TDX 1.5) whose TD quote body holds
    the `predicted` fields (`xfam`: the one to use, default the exact one or the first
    candidate)."""
    header = struct.pack("<HHII", version, 2, tee_type, 0) + INTEL_QE_VENDOR + b"\x00" * 20
    body = bytearray(648 if version == 5 and body_type == 3 else 584)
    body[0:16] = bytes(range(1, 17))                        # TEE_TCB_SVN
    body[16:64] = b"\x4d" * 48                              # MRSEAM
    struct.pack_into("<Q", body, 120, int(predicted["attributes"], 16))
    xfam = xfam or predicted.get("xfam") or predicted["xfam-candidates"][0]
    struct.pack_into("<Q", body, 128, int(xfam, 16))
    for name in ("mrtd", "mrconfigid", "mrowner", "mrownerconfig"):
        body[TDX_BODY_OFFSETS[name]:TDX_BODY_OFFSETS[name] + 48] = bytes.fromhex(predicted[name])
    body[328:520] = b"\x52" * 192                           # RTMR0-3
    body[520:584] = bytes(range(64))                        # REPORTDATA
    middle = struct.pack("<HI", body_type, len(body)) if version == 5 else b""
    return bytearray(header + middle + body + struct.pack("<I", len(signature)) + signature)


def set_tdx(quote: bytearray, version: int, field: str, value) -> None:
    start = 48 + (6 if version == 5 else 0) + TDX_BODY_OFFSETS[field]
    if field in ("attributes", "xfam"):
        struct.pack_into("<Q", quote, start, value)
    else:
        quote[start:start + len(value)] = value

"""go-sev-guest's check.Config (github.com/google/go-sev-guest, proto/check.proto) for an
SEV-SNP guest, from the manifest's predicted report fields.

What the library does with each field (validate/validate.go, the same in 0.13 and 0.15):
measurement, host_data, family_id and image_id are compared exactly, and an empty field is
not compared at all, so a predicted zero is written as zeros; `policy` is a maximum for
SMT, MIGRATE_MA and DEBUG and a minimum for the ABI version and SINGLE_SOCKET (a stricter
report passes; `cgsc verify` compares it exactly); `vmpl` must equal; `minimum_guest_svn`
is a minimum; `trusted_id_key_hashes` with `require_id_block` pins the ID key. Left out,
as only the platform owner knows them: root_of_trust, product, minimum_tcb,
minimum_launch_tcb, minimum_build, minimum_version, platform_info.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

from .proto_encoding import (BOOL, BYTES, MESSAGE, UINT32, UINT32_VALUE, UINT64, Field,
                             protojson, textproto)
from .snp_report import REQUIRED_VMPL

FORMAT = "go-sev-guest"
LEGACY_POLICY_BITS = 21   # go-sev-guest 0.13 refuses policies with bits 21-63 set


def policy_message(report: dict) -> Tuple[Field, ...]:
    """check.Policy, fields in field-number order."""
    fields: List[Field] = []
    if "guest_svn" in report:
        fields.append(Field("minimum_guest_svn", UINT32, int(report["guest_svn"]),
                            "GUEST_SVN of the ID block; the library checks it as a minimum"))
    policy = int(report["policy"], 16)
    fields.append(Field("policy", UINT64, policy,
                        "the library takes it as a maximum (SMT, MIGRATE_MA, DEBUG) and a "
                        "minimum (ABI, SINGLE_SOCKET); cgsc verify compares it exactly"))
    for name in ("family_id", "image_id"):
        if name in report:
            fields.append(Field(name, BYTES, bytes.fromhex(report[name])))
    fields.append(Field("vmpl", UINT32_VALUE, REQUIRED_VMPL,
                        "a report the guest kernel requested (configfs-tsm privlevel 0, "
                        "snpguest report --vmpl 0)"))
    fields.append(Field("measurement", BYTES, bytes.fromhex(report["measurement"])))
    fields.append(Field("host_data", BYTES, bytes.fromhex(report["host_data"])))
    if "id_key_digest" in report:
        fields.append(Field("require_id_block", BOOL, True))
        fields.append(Field("trusted_id_key_hashes", BYTES,
                            [bytes.fromhex(report["id_key_digest"])],
                            "the ID key cgsc signed the ID block with (SHA-384 of its AMD "
                            "public key format)"))
    return tuple(fields)


def header(guest: str, report: dict) -> Tuple[str, ...]:
    lines = [
        "proto-file: github.com/google/go-sev-guest/proto/check.proto",
        "proto-message: check.Config",
        "",
        f"go-sev-guest reference values for the SEV-SNP guest {guest}, written by cgsc",
        "from manifest.json's attestation section. Use: check -config THIS.textproto -in",
        "REPORT -inform bin (the report followed by its certificate table).",
        "Left out, the platform owner's to add: root_of_trust, product, minimum_tcb,",
        "minimum_launch_tcb, minimum_build, minimum_version, platform_info.",
        "WARNING: go-sev-guest 0.13 (Debian 13) accepts a report signed by a forged AMD",
        "chain unless root_of_trust pins AMD's ASK and ARK (cabundle_paths or cabundles):",
        "google/go-sev-guest#185, fixed in 0.15.",
    ]
    if int(report["policy"], 16) >> LEGACY_POLICY_BITS:
        lines += ["The policy sets bits 21 and above, which go-sev-guest 0.13 refuses",
                  "(\"malformed guest policy\"); use 0.14 or later."]
    if "id_block" in report:
        lines += ["The spec gives its own ID block, whose key digests cgsc does not know:",
                  "add require_id_block and trusted_id_key_hashes (or author keys) yourself."]
    return tuple(lines)


def files(guest: str, attestation: dict) -> List[Tuple[str, str]]:
    """(file name suffix, text): the config as textproto (what the CLI reads) and protojson."""
    report = attestation["report"]
    text, json_text = _config(tuple(report.items()))
    return [(f"{FORMAT}.textproto", textproto((), header(guest, report)) + text),   # header, body
            (f"{FORMAT}.json", json_text)]


@lru_cache(maxsize=64)
def _config(report: tuple) -> Tuple[str, str]:
    """The config's textproto (without its header) and protojson, once per set of
    predicted fields (a fleet's guests share a few)."""
    # root_of_trust (field 1) left out
    config = (Field("policy", MESSAGE, policy_message(dict(report))),)
    return textproto(config), protojson(config)

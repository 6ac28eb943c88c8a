"""What the guest owner of an SEV or SEV-ES guest needs to check the PSP's LAUNCH_MEASURE.

SEV and SEV-ES have no attestation report. LAUNCH_MEASURE (AMD SEV API, publication 55766,
section 6.5) returns MEASURE || MNONCE, where
    MEASURE = HMAC-SHA256(key = TIK,
                          0x04 || API_MAJOR || API_MINOR || BUILD || POLICY (u32 LE)
                          || GCTX.LD || MNONCE)
GCTX.LD is the launch digest cgsc predicts; POLICY is the guest policy cgsc launches with.
TIK is the guest owner's transport integrity key (from the launch session, never on the
host) and MNONCE comes with the measurement; API_MAJOR, API_MINOR and BUILD are the
firmware's (`query-sev`, `virsh domlaunchsecinfo`). The same formula is in libvirt's
tools/virt-qemu-sev-validate and virtee/sev src/session/mod.rs; AMDESE/sev-tool hashes the
0x04 || API || BUILD prefix only for firmware API 0.17 and later (all current firmware).
"""

from __future__ import annotations

import json
from typing import List, Tuple

FORMAT = "sev-launch-measure"


def reference(attestation: dict) -> dict:
    policy = int(attestation["report"]["policy"], 16)
    return {
        "mechanism": attestation["mechanism"],
        "launch-digest": attestation["launch-digest"],
        "policy": f"{policy:#x}",
        "policy-bytes": policy.to_bytes(4, "little").hex(),
        "measure": {
            "algorithm": "HMAC-SHA256",
            "key": "TIK: the guest owner's 16-byte transport integrity key from the launch "
                   "session (virt-qemu-sev-validate --tik, or bytes 16-31 of --tk)",
            "message": ["04", "API_MAJOR (1 byte)", "API_MINOR (1 byte)", "BUILD (1 byte)",
                        "policy-bytes", "launch-digest", "MNONCE (16 bytes)"],
            "reported-as": "base64 of MEASURE (32 bytes) || MNONCE (16 bytes): QMP "
                           "query-sev-launch-measure, virsh domlaunchsecinfo sev-measurement",
            "firmware-version": "API_MAJOR, API_MINOR, BUILD: QMP query-sev, virsh "
                                "domlaunchsecinfo sev-api-major, sev-api-minor, sev-build-id",
        },
    }


def files(attestation: dict) -> List[Tuple[str, str]]:
    return [(f"{FORMAT}.json", json.dumps(reference(attestation), indent=2) + "\n")]

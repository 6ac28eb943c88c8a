"""What a KubeVirt VirtualMachine can say about confidential computing (KubeVirt v1.9.0).

Each mechanism module builds its own KubevirtForm and its refusals from the pieces
here; the kubevirt target only reads them from the LaunchPlan.
Facts: KubeVirt v1.9.0's API (staging/src/kubevirt.io/api/core/v1/schema.go),
launch_security.go, feature gates and admission webhooks.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..core.diagnostics import Diagnostic, KeyPath
from ..core.rules import Rule

NO_FORM = Rule(
    "CGS-KUBEVIRT-001", "KubeVirt cannot run this confidential mechanism",
    "A VirtualMachine's launchSecurity knows SEV, SEV-ES, SEV-SNP, TDX and (as an empty "
    "launchSecurity on s390x) IBM Secure Execution. Anything else would launch as an "
    "ordinary, unprotected VM.", "KubeVirt API: VirtualMachineInstance spec.domain.launchSecurity",
    fix="Leave kubevirt out of [targets] build for this guest.")
FIXED = Rule(
    "CGS-KUBEVIRT-002", "KubeVirt fixes or cannot express this launch-security setting",
    "KubeVirt writes the guest policy itself (SEV 0x1, plus 0x4 for SEV-ES; SEV-SNP 0x30000) "
    "and has no field for kernel-hashes, host-data, ID blocks, TD attributes or MR fields. "
    "A manifest without them would launch a guest whose policy and measurement differ from "
    "the reviewed spec.",
    "KubeVirt API: spec.domain.launchSecurity; pkg/virt-launcher/virtwrap/converter/compute/"
    "launch_security.go",
    fix="Use the value KubeVirt uses (the message says which), or leave kubevirt out of "
        "[targets] build for this guest.")
CLUSTER_QGS = Rule(
    "CGS-KUBEVIRT-003", "KubeVirt configures the TDX quote-generation socket cluster-wide",
    "A VirtualMachine cannot name a QGS: virt-launcher takes the socket from the KubeVirt "
    "CR (spec.configuration.confidentialCompute.tdx.attestation.qgsSocketPath), so a "
    "per-guest address would be silently ignored.",
    "KubeVirt CR spec.configuration.confidentialCompute.tdx; pkg/virt-launcher/virtwrap/"
    "converter/compute/launch_security.go",
    fix="Remove quote-generation-socket and set qgsSocketPath in the KubeVirt CR, or leave "
        "kubevirt out of [targets] build.")

SEV_GATE = "WorkloadEncryptionSEV (Beta at KubeVirt v1.9.0: on by default)"
TDX_GATE = ("WorkloadEncryptionTDX (Alpha at KubeVirt v1.9.0: add it to the KubeVirt CR's "
            "spec.configuration.developerConfiguration.featureGates)")
PV_GATE = "SecureExecution (GA at KubeVirt v1.9.0: always on)"
TDX_QGS = ("the TDX Quote Generation Service socket: KubeVirt CR "
           "spec.configuration.confidentialCompute.tdx.attestation.qgsSocketPath")
AMD_CLUSTER = ("cbitpos and reduced-phys-bits: read from the node by KubeVirt "
               "(the spec's values are for the other targets)",)


def node_selection(title: str) -> str:
    return f"node selection: KubeVirt schedules the VM only on nodes it has labelled {title}-capable"


def firmware(title: str) -> str:
    return (f"firmware: the {title} OVMF build shipped in KubeVirt's virt-launcher image, "
            "not [firmware] code; the NVRAM is not kept across restarts")


def refuse_keys(cfg: dict, path: KeyPath, keys: Iterable[str], why: str) -> Iterator[Diagnostic]:
    """One FIXED refusal per key the spec gives that KubeVirt has no field for."""
    for key in keys:
        if key in cfg:
            yield FIXED.error(path + (key,), f"is set, but {why}",
                              f"remove {key}, or leave kubevirt out of [targets] build")


def refuse_word(path: KeyPath, what: str, value: int, fixed: int, how: str) -> Diagnostic:
    return FIXED.error(path, f"{what} {value:#x} differs from {fixed:#x}, which KubeVirt "
                       f"always uses ({how})",
                       f"use {what} = {fixed:#x} for a KubeVirt guest, or leave kubevirt out of "
                       "[targets] build")

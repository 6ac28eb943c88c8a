"""Confidential-computing mechanisms: one module each, one registry line each.

A mechanism owns its knowledge: its schema fragment, its rules, its QEMU object and
machine properties, its host requirements, its libvirt form and its KubeVirt form
(with what KubeVirt cannot express; shared pieces in cgsc.mechanisms.kubevirt).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, Optional, Tuple

from ..core.diagnostics import Diagnostic

if TYPE_CHECKING:  # pragma: no cover
    from ..lower.plan import Confidential
    from ..spec.model import Guest

CGS_ID = "cgs0"  # the id of the confidential-guest-support object


class Mechanism:
    name = ""                 # the [confidential.<name>] table
    title = ""
    qom_type = ""
    arch = "x86_64"
    machine_pattern = r"q35|pc-q35-[0-9][0-9.]*"
    machine_hint = 'machine = "q35" (or a versioned pc-q35-X.Y)'
    firmware = "pflash-or-bios"   # or "bios" (one stateless image) or "none"
    # a firmware image built for the mechanism, as a distribution installs it (the hint of
    # a spec that names none)
    firmware_example = ""
    layout = None                 # the policy/attributes word's bit layout, if any
    sealed_kernel_args = False    # initrd/cmdline live inside the boot image
    reboot_ends_process = False   # a guest reboot ends QEMU with status 0 (no reset in place)
    virtio_iommu = True           # virtio devices need iommu_platform=on (the DMA API path)
    measurement_keys: Tuple[str, ...] = ()   # [measurement] keys that apply; () = no prediction
    reference_formats: Tuple[str, ...] = ()  # verifier formats its predictions are written in
    evidence = ""             # what `cgsc verify` reads for its guests; "" when nothing

    def fits_machine(self, machine: str) -> bool:
        return re.fullmatch(self.machine_pattern, machine) is not None

    def word(self, cfg: dict) -> int:
        """The effective policy/attributes integer (mechanisms with a layout)."""
        raise NotImplementedError

    def normalize(self, table: dict) -> object:
        return table

    def check(self, guest: "Guest") -> Iterable[Diagnostic]:
        return ()

    def lower(self, guest: "Guest") -> "Confidential":
        raise NotImplementedError

    def measurement_checks(self, guest: "Guest") -> Iterable[Diagnostic]:
        """[measurement] rules that need no file (run with the other cross-field rules)."""
        return ()

    def prepare(self, guest: "Guest", files: dict, host: Optional[dict] = None) -> None:
        """What attest() will need of the boot files read so far (`files`: role ->
        BootFile, the firmware when it could be read), computed while the kernel and initrd
        are still being hashed: it only fills what attest() then finds computed (a firmware's
        derived values) and reports nothing (attest() checks and reports)."""

    def attest(self, guest: "Guest", files: dict, host: Optional[dict] = None):
        """(cgsc.measure.stage.Attested, diagnostics): check the boot files, compute what the
        attestation report will say. `files` maps a role to a cgsc.measure.stage.BootFile;
        `host` is the --host profile, when the build has one (facts the spec cannot say)."""
        raise NotImplementedError

    def reference_values(self, fmt: str, guest_name: str, attestation: dict, asked: bool = False):
        """[(file name suffix, text)]: the predictions of manifest.json's `attestation` in
        `fmt`, one of reference_formats; raises cgsc.measure.reference_values.NotWritten
        when the prediction lacks a field the format must pin. `asked`: the spec named
        `fmt` in [attestation] formats (not only the default set)."""
        raise NotImplementedError

    def compare_evidence(self, attestation: dict, data: bytes):
        """(what the evidence is, [cgsc.measure.evidence.Row]): `data` (the guest's report or
        quote, as `evidence` says) against the prediction of manifest.json's `attestation`.
        Raises cgsc.measure.evidence.EvidenceError for bytes that are not such evidence,
        PredictionError for a prediction cgsc did not write."""
        raise NotImplementedError


class _Registry(Mapping):
    """name -> Mechanism, importing a mechanism's module only when it is first used: a
    build needs one mechanism, so the others cost nothing at start-up."""

    def __init__(self, entries: Dict[str, Tuple[str, str, str]]):
        self.entries = entries          # name -> (module, attribute, schema file)
        self._loaded: Dict[str, Mechanism] = {}

    def __getitem__(self, name: str) -> Mechanism:
        if name not in self._loaded:
            module, attr, _schema = self.entries[name]
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def schema_file(self, name: str) -> str:
        return self.entries[name][2]


# One line per mechanism: its spec table, where it lives, its schema fragment.
MECHANISMS = _Registry({
    "sev": ("cgsc.mechanisms.sev", "SEV", "sev.schema.json"),
    "sev-es": ("cgsc.mechanisms.sev", "SEV_ES", "sev.schema.json"),
    "sev-snp": ("cgsc.mechanisms.sev_snp", "SEV_SNP", "sev-snp.schema.json"),
    "tdx": ("cgsc.mechanisms.tdx", "TDX", "tdx.schema.json"),
    "pef": ("cgsc.mechanisms.pef", "PEF", "pef.schema.json"),
    "s390-pv": ("cgsc.mechanisms.s390_pv", "S390_PV", "s390-pv.schema.json"),
})

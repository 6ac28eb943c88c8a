"""Confidential-computing mechanisms: one module each, one registry line each.

A mechanism owns its knowledge: its schema fragment, its rules, its QEMU object and
machine properties, its host requirements and its libvirt form.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Dict, Iterable

from cgsc.diagnostics import Diagnostic

if TYPE_CHECKING:  # pragma: no cover
    from cgsc.model import Guest
    from cgsc.plan import Confidential

CGS_ID = "cgs0"  # the id of the confidential-guest-support object


class Mechanism:
    name = ""                 # the [confidential.<name>] table
    title = ""
    qom_type = ""
    schema_file = ""
    arch = "x86_64"
    machine_pattern = r"q35|pc-q35-[0-9][0-9.]*"
    machine_hint = 'machine = "q35" (or a versioned pc-q35-X.Y)'
    firmware = "pflash-or-bios"   # or "bios" (one stateless image) or "none"
    layout = None                 # the policy/attributes word's bit layout, if any
    sealed_kernel_args = False    # initrd/cmdline live inside the boot image

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


def _registry() -> Dict[str, Mechanism]:
    from cgsc.mechanisms import pef, s390_pv, sev, sev_snp, tdx
    mechanisms = (sev.SEV, sev.SEV_ES, sev_snp.SEV_SNP, tdx.TDX, pef.PEF, s390_pv.S390_PV)
    return {m.name: m for m in mechanisms}


MECHANISMS: Dict[str, Mechanism] = _registry()

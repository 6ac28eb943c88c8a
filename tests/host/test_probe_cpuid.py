"""`cgsc probe` reads SEV geometry only where the CPU has it: the vendor is AMD, the
extended leaf 0x8000001F exists and says SEV (AMD APM vol. 3, CPUID Fn8000_001F: EAX bit 1
SEV, EBX[5:0] C-bit position, EBX[11:6] physical address bits lost).

On an Intel CPU leaf 0x8000001F is past the highest extended leaf, and Intel returns the
highest *basic* leaf's data for it (Intel SDM vol. 2A, CPUID: "If a value entered for
CPUID.EAX is higher than the maximum input value ... the data for the highest basic
information leaf is returned"): reading EBX there gave cbitpos = 1."""

from __future__ import annotations

import json
import os
import struct

import pytest
from helpers import MINIMAL_SNP, run_cli

from cgsc.host import probe

CPUID = "/dev/cpu/0/cpuid"


def _regs(vendor: bytes, max_basic=0x20, leaves=None):
    """leaf -> (eax, ebx, ecx, edx) of a CPU: leaf 0 spells the vendor (EBX, EDX, ECX)."""
    b, d, c = struct.unpack("<3I", vendor[0:4] + vendor[4:8] + vendor[8:12])
    table = {0: (max_basic, b, c, d)}
    table.update(leaves or {})
    return table


INTEL = _regs(b"GenuineIntel", leaves={
    0x80000000: (0x80000008, 0, 0, 0),
    0x20: (0, 0x41, 0, 0)})          # the highest basic leaf: EBX 0x41 -> "cbitpos 1"
AMD_NO_SEV = _regs(b"AuthenticAMD", leaves={
    0x80000000: (0x80000021, 0, 0, 0), 0x8000001F: (0, 0, 0, 0)})
AMD_SEV = _regs(b"AuthenticAMD", leaves={
    0x80000000: (0x80000021, 0, 0, 0), 0x8000001F: (0x1b, (1 << 6) | 51, 509, 100)})


@pytest.fixture
def cpu(monkeypatch):
    """Stand in for the cpuid driver: /dev/cpu/0/cpuid read at offset LEAF gives that
    leaf's registers; an Intel CPU answers leaves past its maximum as Intel does."""
    real_open, real_pread = os.open, os.pread
    fake_fd = {}

    def use(table):
        def fake_open(path, flags, *args, **kwargs):
            if path == CPUID:
                fd = real_open(os.devnull, os.O_RDONLY)
                fake_fd[fd] = table
                return fd
            return real_open(path, flags, *args, **kwargs)

        def fake_pread(fd, n, offset):
            if fd not in fake_fd:
                return real_pread(fd, n, offset)
            leaf = offset & 0xFFFFFFFF
            t = fake_fd[fd]
            max_ext = t.get(0x80000000, (0,))[0]
            if leaf not in t or (leaf >= 0x80000000 and leaf > max_ext):
                leaf = t[0][0]      # Intel: the highest basic leaf's data
            return struct.pack("<4I", *t.get(leaf, (0, 0, 0, 0)))[:n]
        monkeypatch.setattr(probe.os, "open", fake_open)
        monkeypatch.setattr(probe.os, "pread", fake_pread)
    return use


def test_an_intel_cpu_has_no_sev_geometry(cpu):
    cpu(INTEL)
    notes = []
    geometry = probe._sev_geometry(notes)
    assert not geometry or geometry.get("cbitpos") is None, geometry
    assert geometry == {"present": False, "cbitpos": None, "reduced-phys-bits": None}
    assert any("not present" in n and "GenuineIntel" in n for n in notes), notes


def test_an_amd_cpu_without_sev_has_no_sev_geometry(cpu):
    cpu(AMD_NO_SEV)
    notes = []
    assert probe._sev_geometry(notes) == {"present": False, "cbitpos": None,
                                          "reduced-phys-bits": None}
    assert any("not present" in n and "0x8000001F" in n for n in notes), notes


def test_an_amd_cpu_with_sev_gives_its_geometry(cpu):
    cpu(AMD_SEV)
    assert probe._sev_geometry([]) == {"present": True, "cbitpos": 51, "reduced-phys-bits": 1}


def test_a_profile_with_an_impossible_cbitpos_never_hints_it(tmp_path):
    """A profile that says cbitpos 1 (as the old probe wrote on Intel hosts) is wrong: the
    hint must not tell the user to write a value the schema refuses."""
    spec = tmp_path / "g.toml"
    spec.write_text(MINIMAL_SNP.format(name="g"))
    profile = json.loads(run_cli("probe", "--from-domcapabilities", os.path.join(
        os.path.dirname(__file__), "..", "data", "hosts", "snp-host.domcapabilities.xml"))[1])
    profile["sev"] = {"cbitpos": 1, "reduced-phys-bits": 1}
    host = tmp_path / "host.json"
    host.write_text(json.dumps(profile))
    code, _out, err = run_cli("validate", "--host", str(host), str(spec))
    assert code == 1, err
    assert "set cbitpos = 1" not in err, err
    assert "CGS-HOST-004" in err and "cbitpos" in err and "32..63" in err, err

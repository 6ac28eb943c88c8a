"""Crafted AMD firmware through the measure stage: a located CGS error or a digest, never an
exception, and `cgsc build` exits 0 or 1 only.

6,000 mutants of Debian's real OVMF.amdsev.fd (tests/amd_mutants.py: the GUIDed table's
entry sizes, the SEV metadata offset, header and sections, the reset block and hashes
table entries, flipped bytes, truncations) from a fixed seed. Most are mutants of the
image's last 64 KiB, which holds the reset vector, the GUIDed table and the SEV metadata
(the metadata lies 1,476 bytes from the end), so they parse exactly as the full image
does at a sixty-fourth of the hashing; some are mutants of the full 4 MiB image. Each goes
through SEV-SNP with kernel-hashes, and by turns through SEV-SNP without, SEV-ES and SEV.
Before cgsc checked the SEV entries itself, sev-snp-measure raised AssertionError,
ValueError, AttributeError or RuntimeError on them, and some AssertionErrors and
AttributeErrors left cgsc as exit 3.
"""

from __future__ import annotations

import re
import subprocess
import sys

import amd_mutants
import pytest
from helpers import run_cli
from measure_helpers import spec_text, write

TAIL_MUTANTS = 5_960
FULL_MUTANTS = 40
TAIL = 64 * 1024
FIRMWARE_RULES = {"CGS-MEASURE-010", "CGS-MEASURE-011", "CGS-MEASURE-012", "CGS-MEASURE-018"}
MODES = (("sev-snp", True), ("sev-snp", False), ("sev-es", True), ("sev", True))


@pytest.fixture(scope="module")
def image(firmware) -> bytes:
    with open(firmware["OVMF.amdsev.fd"], "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def mutants(image):
    out = list(amd_mutants.mutants(image[-TAIL:], TAIL_MUTANTS, seed=2026))
    out += [(f"full image: {what}", data)
            for what, data in amd_mutants.mutants(image, FULL_MUTANTS, seed=4096)]
    return out


def _guests(tmp_path, path):
    """(mechanism, kernel-hashes) -> the Guest of a spec that measures `path`."""
    from cgsc.pipeline.compile import normalize
    from cgsc.spec.source import load
    from cgsc.measure import stage
    (tmp_path / "k").write_bytes(b"kernel")
    out = {}
    for mechanism, hashes in MODES:
        text = spec_text("fuzz", mechanism, path, vcpus=2, cpu="EPYC-v4", kernel="k",
                         cmdline="console=ttyS0")
        if not hashes:
            text = text.replace("kernel-hashes = true", "kernel-hashes = false")
        spec = write(tmp_path / f"{mechanism}-{hashes}.toml", text)
        guest = normalize(load(spec).data)
        assert [d for d in stage.static_checks(guest) if d.severity == "error"] == []
        out[mechanism, hashes] = guest
    return out


def test_the_mutants_cover_every_part_of_the_layout(image, mutants):
    assert len(mutants) >= 5_000
    lay = amd_mutants.Layout(image[-TAIL:])
    assert len(lay.sections) == 7 and len(lay.entries) >= 5
    kinds = {re.sub(r"[ =].*", "", what.replace("full image: ", "")) for what, _d in mutants}
    assert {"footer", "entry", "metadata", "section", "reset", "hashes", "flipped"} <= kinds
    assert any("cut from" in what for what, _d in mutants)


def test_every_mutant_is_measured_or_refused_with_a_located_error(mutants, tmp_path):
    from cgsc.measure import stage
    path = str(tmp_path / "mutant.fd")
    guests = _guests(tmp_path, path)
    outcomes = {"measured": 0, "refused": 0}
    for n, (what, data) in enumerate(mutants):
        with open(path, "wb") as fh:
            fh.write(data)
        for mode in (MODES[0], MODES[1 + n % 3]):
            try:
                measured, diagnostics = stage.measure(guests[mode], lambda key: str(tmp_path))
            except Exception as exc:   # noqa: BLE001 - the point of the test
                pytest.fail(f"mutant {n} ({what}), {mode}: {type(exc).__name__}: {exc}")
            if measured is not None:
                assert re.fullmatch(r"[0-9a-f]{64}|[0-9a-f]{96}",
                                    measured.attestation["launch-digest"]), (n, what)
                outcomes["measured"] += 1
                continue
            outcomes["refused"] += 1
            assert diagnostics, (n, what)
            for d in diagnostics:
                assert d.rule in FIRMWARE_RULES and d.path == ("measurement", "firmware"), \
                    (n, what, mode, d)
                assert d.message.startswith(path) and d.hint, (n, what, d)
    # both outcomes occur: the mutants are neither all fatal nor all harmless
    assert outcomes["measured"] > 500 and outcomes["refused"] > 2_000, outcomes


def test_a_sample_through_the_cli_exits_0_or_1(mutants, tmp_path):
    path = tmp_path / "mutant.fd"
    spec = write(tmp_path / "g.toml", spec_text("fuzz", "sev-snp", str(path), vcpus=2,
                                                cpu="EPYC-v4"))
    codes = set()
    for n in range(0, len(mutants), len(mutants) // 60):
        path.write_bytes(mutants[n][1])
        out = tmp_path / f"out{n}"
        code, stdout, err = run_cli("build", spec, "-o", str(out))
        assert code in (0, 1) and "Traceback" not in err and "internal error" not in err, \
            (n, mutants[n][0], err)
        assert (code == 0) == out.exists(), err
        if code == 1:
            assert stdout == "" and re.search(r"\[CGS-MEASURE-01[0128]\]$", err, re.M), err
        codes.add(code)
    assert codes == {0, 1}


def test_the_real_exit_status_of_separate_processes(mutants, tmp_path):
    """cgsc as a separate process, as a user runs it: the exit status itself."""
    path = tmp_path / "mutant.fd"
    spec = write(tmp_path / "g.toml", spec_text("fuzz", "sev-snp", str(path), cpu="EPYC-v4"))
    codes = []
    for n in range(3, len(mutants), len(mutants) // 6):
        path.write_bytes(mutants[n][1])
        result = subprocess.run([sys.executable, "-m", "cgsc", "validate", spec],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode in (0, 1), (mutants[n][0], result.stderr)
        assert "Traceback" not in result.stderr
        codes.append(result.returncode)
    assert len(codes) >= 6

"""Measuring under attack: while `cgsc build` runs over and over, another process swaps a
measured file (firmware, kernel, initrd) as fast as it can: renamed over, rewritten in
place, truncated and rewritten, replaced by a FIFO or by /dev/zero. Every build is either
refused with a located CGS-MEASURE error, or its manifest records the sha256 of exactly the
bytes the measuring library read (observed as the library is called, and again after), and
its launch digest is what the `sev-snp-measure` tool, run as its own process on those
bytes, computes. At least 1,000 swaps.

The same observation catches the design this replaced (hash the path, then let the library
open it three times), so a pass is not an artifact of the harness."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import firmware_images as fw
import pytest
from helpers import run_cli
from launch_helpers import Swapper
from measure_helpers import spec_text
from measure_helpers import write as _write

MIN_SWAPS = 1000
BUILDS = 4         # per configuration and round
ROUNDS = 4
ROLES = ("firmware", "kernel", "initrd")
CONFIGS = [(role, mode) for role in ROLES for mode in ("rename", "rewrite", "truncate")] + [
    ("kernel", "fifo"), ("firmware", "device"), ("initrd", "fifo")]
CMDLINE = "console=ttyS0"


def _sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


class _Spy:
    """Wraps the library's digest function: the bytes at the paths it is handed, read as
    it is called and again when it returns."""

    def __init__(self, monkeypatch):
        from sevsnpmeasure import guest
        self.real, self.calls = guest.calc_launch_digest, []
        monkeypatch.setattr(guest, "calc_launch_digest", self)

    def __call__(self, mode, vcpus, sig, ovmf, kernel, initrd, append, *args, **kwargs):
        before = [_read(p) for p in (ovmf, kernel, initrd)]
        digest = self.real(mode, vcpus, sig, ovmf, kernel, initrd, append, *args, **kwargs)
        self.calls.append((before, [_read(p) for p in (ovmf, kernel, initrd)], digest.hex()))
        return digest


def _read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


@pytest.fixture
def measured(tmp_path):
    """An SEV-SNP guest whose [measurement] files have a valid other version each."""
    versions = {
        "firmware": (fw.amd_image(hashes_table=True),
                     fw.amd_image(sections=((0x900000, 0x1000, fw.SNP_SEC_MEM),
                                            (0x901000, 0x1000, fw.SNP_SECRETS),
                                            (0x902000, 0x1000, fw.CPUID)), hashes_table=True)),
        "kernel": (b"kernel A" * 1024, b"kernel B" * 1024),
        "initrd": (b"initrd A" * 2048, b"initrd B" * 2048),
    }
    paths = {role: tmp_path / f"build-{role}" for role in ROLES}
    for role in ROLES:
        paths[role].write_bytes(versions[role][0])
    spec = _write(tmp_path / "race.toml", spec_text(
        "race", "sev-snp", str(paths["firmware"]), cpu="EPYC-v4", kernel=str(paths["kernel"]),
        initrd=str(paths["initrd"]), cmdline=CMDLINE, features=0x1))
    return spec, paths, versions


def test_swaps_during_builds_never_give_a_digest_of_other_bytes(measured, tmp_path, tool,
                                                                 monkeypatch):
    exe = tool("sev-snp-measure")
    spec, paths, versions = measured
    spy = _Spy(monkeypatch)
    out = tmp_path / "out"
    swaps = builds = refused = 0
    digests = {}   # the sha256s recorded -> (the bytes the library read, the digests given)
    for _round in range(ROUNDS):
        for role, mode in CONFIGS:
            with Swapper(paths[role], versions[role][0], versions[role][1], mode) as swapper:
                for _ in range(BUILDS):
                    spy.calls.clear()
                    code, _o, err = run_cli("build", spec, "-o", str(out))
                    builds += 1
                    if code:
                        assert code == 1 and "[CGS-MEASURE-0" in err and "Traceback" not in err, err
                        refused += 1
                        continue
                    (before, after, digest), = spy.calls
                    assert before == after, "the library saw the bytes change while it read"
                    att = json.loads((out / "race" / "manifest.json").read_text())["attestation"]
                    recorded = tuple(f["sha256"] for f in att["files"])
                    assert recorded == tuple(_sha(b) for b in before)
                    assert att["launch-digest"] == digest
                    digests.setdefault(recorded, (before, set()))[1].add(digest)
            swaps += swapper.swaps
        if swaps >= MIN_SWAPS:
            break
    print(f"\nbuild: {swaps} swaps during {builds} builds: {builds - refused} measured "
          f"{len(digests)} distinct sets of bytes, {refused} refused")
    assert swaps >= MIN_SWAPS and builds - refused > 0 and len(digests) > 1
    for i, (data, ours) in enumerate(digests.values()):
        files = []
        for role, content in zip(ROLES, data):
            files.append(tmp_path / f"recorded-{i}-{role}")
            files[-1].write_bytes(content)
        result = subprocess.run(
            [exe, "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", str(files[0]),
             "--kernel", str(files[1]), "--initrd", str(files[2]), "--append", CMDLINE,
             "--guest-features", "0x1", "--output-format", "hex"],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert ours == {result.stdout.strip()}


def test_the_check_catches_a_library_that_reads_the_path_again(measured, tmp_path, monkeypatch):
    """The old design (hash the path, then hand the library the same path) with a swap
    landing in between: the recorded sha256 is not that of the bytes measured, which is
    what the test above would report."""
    import cgsc.measure.stage as stage
    spec, paths, versions = measured
    spy = _Spy(monkeypatch)
    original = stage._read

    def old_read(role, key, given, path, launched):
        found, problem = original(role, key, given, path, launched)
        if found is not None and role == "kernel":
            paths["kernel"].write_bytes(versions["kernel"][1])   # the swap
            found = found._replace(read_from=path)
        return found, problem
    monkeypatch.setattr(stage, "_read", old_read)
    code, _o, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
    assert code == 0, err
    (before, _after, _digest), = spy.calls
    att = json.loads((tmp_path / "out/race/manifest.json").read_text())["attestation"]
    assert att["files"][1]["sha256"] == _sha(versions["kernel"][0]) != _sha(before[1])


def _boot_files(spec):
    from cgsc.measure import stage
    from cgsc.spec.model import normalize
    from cgsc.spec.source import load
    source = load(spec)
    guest = normalize(source.data)
    return stage.read_boot_files(guest, lambda key: os.path.dirname(spec))


def test_the_mechanism_gets_a_sealed_private_copy(measured):
    """read_from is a copy nobody can change (memfd seals), and data maps the same bytes."""
    spec, paths, versions = measured
    files, errors = _boot_files(spec)
    try:
        assert errors == []
        for role in ROLES:
            f = files[role]
            assert f.read_from != str(paths[role]) and f.read_from.startswith("/proc/self/fd/")
            assert _read(f.read_from) == bytes(f.data) == versions[role][0]
            assert f.sha256 == _sha(versions[role][0]) and f.size == len(versions[role][0])
            fd = os.open(f.read_from, os.O_WRONLY)
            try:
                with pytest.raises(PermissionError):
                    os.write(fd, b"x")
                with pytest.raises(PermissionError):
                    os.ftruncate(fd, 0)
            finally:
                os.close(fd)
    finally:
        for f in files.values():
            f.close()


def test_without_memfd_the_copy_is_a_private_file_removed_after(measured, tmp_path, monkeypatch):
    """Where memfd_create is missing (not Linux) or refused (a seccomp filter), the copy is
    a file in a new private directory, gone once the build has measured."""
    import tempfile

    def refused(*_a):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(os, "memfd_create", refused)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spec, _paths, versions = measured
    files, errors = _boot_files(spec)
    assert errors == []
    copy = files["kernel"].read_from
    assert copy.startswith(str(scratch)) and _read(copy) == versions["kernel"][0]
    assert os.stat(os.path.dirname(copy)).st_mode & 0o777 == 0o700
    for f in files.values():
        f.close()
    assert os.listdir(scratch) == []
    code, _o, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert os.listdir(scratch) == []

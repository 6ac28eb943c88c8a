"""Measuring under attack: while `cgsc build` runs over and over, another process swaps a
measured file (firmware, kernel, initrd) as fast as it can: renamed over, rewritten in
place, truncated and rewritten, replaced by a FIFO or by /dev/zero. Every build is either
refused with a located CGS-MEASURE error, or its manifest records the sha256 of exactly the
bytes measured (the firmware bytes the library parsed and measured page by page, the
kernel and initrd whose digests its SevHashes got: observed as they are read and as the
library is called), and its launch digest is what the `sev-snp-measure` tool, run as its
own process on those bytes, computes. At least 1,000 swaps.

The same observation catches a design that hands the library bytes other than those
hashed, so a pass is not an artifact of the harness."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import firmware_images as fw
import pytest
from helpers import run_cli
from launch_helpers import Swapper, _write_fresh
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
    """Every file's bytes as cgsc reads them (by the sha256 they hash to), and the bytes
    and digests the library is handed: the firmware image it parses and measures page by
    page, the kernel and initrd digests of its SevHashes."""

    def __init__(self, monkeypatch):
        from cgsc.core import filecache
        from cgsc.measure import amd_digest
        self.read, self.firmware, self.hashes = {}, [], []
        real_read, real_start, real_hashes = (filecache.read_into, amd_digest.snp_start,
                                              amd_digest._hashes)

        def read_into(fd, expected, keep, *stop):
            got = real_read(fd, expected, True, *stop)
            self.read[got.state.hexdigest()] = bytes(got.data)
            return got if keep else got._replace(data=None)

        def snp_start(ovmf, data):
            self.firmware.append(_sha(data))
            return real_start(ovmf, data)

        def hashes(kernel, initrd, cmdline):
            self.hashes.append((kernel.hex(), initrd.hex() if initrd else None))
            return real_hashes.__wrapped__(kernel, initrd, cmdline)
        monkeypatch.setattr(filecache, "read_into", read_into)
        monkeypatch.setattr(amd_digest, "snp_start", snp_start)
        monkeypatch.setattr(amd_digest, "_hashes", hashes)

    def clear(self):
        self.read.clear()
        self.firmware.clear()
        self.hashes.clear()


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
                    spy.clear()
                    code, _o, err = run_cli("build", spec, "-o", str(out))
                    builds += 1
                    if code:
                        assert code == 1 and "[CGS-MEASURE-0" in err and "Traceback" not in err, err
                        refused += 1
                        continue
                    att = json.loads((out / "race" / "manifest.json").read_text())["attestation"]
                    recorded = tuple(f["sha256"] for f in att["files"])
                    # what the library measured is what the manifest records
                    assert spy.firmware == [recorded[0]]
                    assert spy.hashes == [(recorded[1], recorded[2])]
                    data = tuple(spy.read[h] for h in recorded)   # the bytes read, hashed
                    digests.setdefault(recorded, (data, set()))[1].add(att["launch-digest"])
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


def test_the_check_catches_bytes_other_than_those_hashed(measured, tmp_path, monkeypatch):
    """A design that hashes a file, then hands the library another read of it (here: the
    firmware read again without checking, after a swap): the firmware the library
    measured is not the one recorded, which the test above would report."""
    from cgsc.core import filecache
    spec, paths, versions = measured
    spy = _Spy(monkeypatch)
    real_read = filecache.FileCache.read

    def read_unkept(self, path, limit, keep=False, stop=None):
        entry = real_read(self, path, limit, False, stop)
        if path == str(paths["firmware"]):
            _write_fresh(path, versions["firmware"][1])   # the swap

            def again(entry_, path_):   # read again, no check of what was read first
                return _read(path_)
            monkeypatch.setattr(self, "content", again)
        return entry
    monkeypatch.setattr(filecache.FileCache, "read", read_unkept)
    code, _o, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
    assert code == 0, err
    att = json.loads((tmp_path / "out/race/manifest.json").read_text())["attestation"]
    assert att["files"][0]["sha256"] == _sha(versions["firmware"][0])
    assert spy.firmware == [_sha(versions["firmware"][1])]


def test_bytes_read_again_must_be_the_ones_hashed(measured, tmp_path, monkeypatch):
    """cgsc holds a firmware's bytes from its one read; where they must be read again
    (asked for after another file's bytes took their place), a file that changed since
    is refused, never measured."""
    from cgsc.core import filecache
    spec, paths, versions = measured
    real_read = filecache.FileCache.read

    def read_unkept(self, path, limit, keep=False, stop=None):
        entry = real_read(self, path, limit, False, stop)
        if path == str(paths["firmware"]):
            with open(path, "r+b") as fh:   # in place: the same inode, size and, often, times
                fh.write(versions["firmware"][1])
        return entry
    monkeypatch.setattr(filecache.FileCache, "read", read_unkept)
    code, _o, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out" / "race").exists()
    assert "measurement.firmware: " in err and "changed while cgsc was measuring it " \
        "[CGS-MEASURE-001]" in err, err


def test_a_file_that_grew_before_it_was_read_again_is_said_to_have_changed(measured, tmp_path,
                                                                            monkeypatch):
    """Bytes read again (let go to make room) from a file that has grown since: refused as
    changed. It was refused as "N bytes; boot files are at most 1 GiB" (the first read's
    size was the limit of the second), for a file of a few KiB."""
    from cgsc.core import filecache
    spec, paths, _versions = measured
    real_read = filecache.FileCache.read

    def read_unkept(self, path, limit, keep=False, stop=None):
        entry = real_read(self, path, limit, False, stop)
        if path == str(paths["firmware"]):
            with open(path, "ab") as fh:
                fh.write(b"\0" * 4096)
        return entry
    monkeypatch.setattr(filecache.FileCache, "read", read_unkept)
    code, _o, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out" / "race").exists()
    assert "changed while cgsc was measuring it [CGS-MEASURE-001]" in err, err
    assert "1 GiB" not in err


def _boot_files(spec, cache):
    from cgsc.measure import stage
    from cgsc.spec.model import normalize
    from cgsc.spec.source import load
    guest = normalize(load(spec).data)
    return stage.read_boot_files(guest, lambda key: os.path.dirname(spec), cache)


def test_the_mechanism_gets_the_bytes_hashed_and_one_copy_of_them(measured):
    """The firmware's bytes are read once, into one buffer, and hashed as they arrive;
    the kernel and initrd are only hashed (their digests are what the measurement takes),
    and read again, checked, only if a mechanism asks for their bytes."""
    from cgsc.core.filecache import FileCache
    spec, paths, versions = measured
    cache = FileCache()
    files, errors = _boot_files(spec, cache)
    assert errors == []
    for role in ROLES:
        f = files[role]
        assert f.path == str(paths[role]) and f.sha256 == _sha(versions[role][0])
        assert f.size == len(versions[role][0])
    assert files["firmware"].entry.data is not None
    assert bytes(files["firmware"].content()) == versions["firmware"][0]
    assert files["kernel"].entry.data is None and files["initrd"].entry.data is None
    again, errors = _boot_files(spec, cache)   # the same invocation: nothing read again
    assert errors == [] and all(again[r].entry is files[r].entry for r in ROLES)
    assert bytes(files["kernel"].content()) == versions["kernel"][0]
    assert files["kernel"].entry.data is not None   # small: kept with its entry from now on

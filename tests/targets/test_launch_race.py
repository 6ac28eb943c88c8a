"""The launch binding under attack: while the generated script, or the unit's command lines
run as systemd runs them, start the guest over and over, another process swaps a boot file
as fast as it can (renamed over, rewritten in place, truncated and rewritten, replaced by a
FIFO or by /dev/zero). The stand-in emulator hashes what it is handed. Every start either
is refused or launches exactly the measured bytes of all three files: 0 launches of other
bytes, over at least 1,000 swaps for each artifact.

The same harness catches a launcher that checks the path and then lets QEMU open it, so a
pass is not an artifact of the harness."""

from __future__ import annotations

import hashlib

import pytest
from launch_helpers import Swapper, launched, run_batch
from test_launch_binding import AMD_HOST, FILES, Bound

MIN_SWAPS = 1000
RUNS = 3           # starts per configuration and round
ROUNDS = 4         # at most; more rounds only when the swapper was slow
CONFIGS = [(role, mode) for role in FILES for mode in ("rename", "rewrite", "truncate")] + [
    ("kernel", "fifo"), ("firmware", "device"), ("initrd", "fifo")]
# What a refusal may say (anything else is a failure of its own)
REFUSALS = ("refusing to start a guest that would not attest",
            "cannot be read to check its sha256")


def _other(data: bytes) -> bytes:
    """Different bytes of the same length (an in-place rewrite keeps the size)."""
    return bytes(b ^ 0x5a for b in data)


def _race(bound: Bound, how: str):
    swaps = starts = refused = 0
    for _round in range(ROUNDS):
        for role, mode in CONFIGS:
            with Swapper(bound.path(role), bound.measured[role], _other(bound.measured[role]),
                         mode) as swapper:
                results = bound.start(how, runs=RUNS)
            swaps += swapper.swaps
            starts += len(results)
            for r in results:
                assert r["rc"] in (0, 1), r
                if r["rc"]:
                    refused += 1
                    assert any(why in r["stderr"] for why in REFUSALS), r["stderr"]
                assert not [f for f in r["left"] if f.startswith(".measured")], r
        if swaps >= MIN_SWAPS:
            break
    return swaps, starts, refused


@pytest.mark.parametrize("how", ["script", "unit"])
def test_no_swapped_boot_file_is_ever_launched(how, tmp_path):
    bound = Bound(tmp_path)
    swaps, starts, refused = _race(bound, how)
    records = launched(bound.log)
    expected = {"bios": ("/proc/self/fd/3", bound.sha("firmware")),
                "kernel": ("/proc/self/fd/4", bound.sha("kernel")),
                "initrd": ("/proc/self/fd/5", bound.sha("initrd"))}
    wrong = [r for r in records if r != expected]
    print(f"\n{how}: {swaps} swaps during {starts} starts: {len(records)} launched the "
          f"measured bytes, {refused} refused, {len(wrong)} launched other bytes")
    assert swaps >= MIN_SWAPS
    assert wrong == []
    assert len(records) + refused == starts
    assert records and refused, "both outcomes must occur, or the race was not run"


NAIVE = """#!/bin/sh
# check the path, then let the emulator open it again: the design the binding replaced
sum=$(sha256sum < "$1")
[ "${sum%% *}" = "$2" ] || exit 1
exec qemu-system-x86_64 -kernel "$1"
"""


def test_the_harness_catches_a_launcher_that_checks_then_reopens(tmp_path):
    bound = Bound(tmp_path)
    naive = tmp_path / "naive.sh"
    naive.write_text(NAIVE)
    command = ["/bin/sh", str(naive), str(bound.path("kernel")), bound.sha("kernel")]
    other = _other(bound.measured["kernel"])
    wrong = []
    for _ in range(10):
        with Swapper(bound.path("kernel"), bound.measured["kernel"], other, "rename"):
            run_batch("naive", [command], bound.env(), 20, tmp_path)
        wrong = [r for r in launched(bound.log) if r["kernel"][1] != bound.sha("kernel")]
        if wrong:
            break
    assert wrong, "a check-then-reopen launcher must be caught launching other bytes"
    assert {r["kernel"][1] for r in wrong} == {hashlib.sha256(other).hexdigest()}

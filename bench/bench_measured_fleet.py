#!/usr/bin/env python3
"""Measured fleets (issue 26): every figure with its target; exits 1 when one is missed.

  - 200 SEV-SNP guests with [measurement] sharing one firmware (Debian's 4 MiB
    OVMF.amdsev.fd from tests/data/firmware), one 16 MiB kernel and one 8 MiB initrd,
    built and checked, against the same 200 specs without [measurement] (<= 1.5x);
    the same for 2,000 guests (printed);
  - 200 guests each with its own 16 MiB kernel, against the hash floor: sha256 of every
    distinct file once (the 200 kernels, the firmware and the initrd), in one process
    (<= 1.3x);
  - peak RSS of a build whose firmware is 1 GiB (sparse: Debian's image padded at the
    front), AMD SEV-SNP and Intel TDX: the largest process <= the file's size + 150 MiB;
    with -j 2, a fleet sharing it and one whose every guest has its own, the processes
    together <= twice that (sampled from /proc every few ms).

Every time is the median of interleaved runs (A B A B...: machine noise hits both sides
alike); quote medians. The work files are in /dev/shm (tmpfs: the hash floor and the
builds read the same page cache) or, without it, beside the checkout.

Usage: python3 bench/bench_measured_fleet.py [--runs N] [--skip-2000] [--skip-memory]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from bench import cgsc_command, fleet_spec, precompile, report, timed  # bench/ is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import firmware_data  # noqa: E402  (tests/: the unpacker of the committed firmware images)

MiB = 1 << 20
MEASUREMENT = """[measurement]
firmware = "{firmware}"
kernel = "{kernel}"
initrd = "{initrd}"
"""


def fleet(directory: str, count: int, firmware: str, kernels, initrd: str, measured: bool):
    """`count` specs in `directory`; `kernels(i)`: the kernel guest i measures."""
    os.makedirs(directory, exist_ok=True)
    specs = []
    for i in range(count):
        # bench.py's fleet spec (SEV-SNP, kernel-hashes), with an initrd
        text = fleet_spec(i).replace('cmdline = "', f'initrd = "/var/lib/guests/node-{i:05d}/'
                                     'initrd.img"\ncmdline = "', 1)
        if measured:
            text += MEASUREMENT.format(firmware=firmware, kernel=kernels(i), initrd=initrd)
        path = os.path.join(directory, f"node-{i:05d}.toml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        specs.append(path)
    listing = directory + ".list"
    with open(listing, "w", encoding="utf-8") as fh:
        fh.write("".join(s + "\n" for s in specs))
    return listing


def write_random(path: str, size: int, rng: random.Random) -> None:
    with open(path, "wb") as fh:
        fh.write(rng.randbytes(size))


def interleaved(runs: int, commands):
    """Median seconds of each (argv, before) in `commands`, run in turn `runs` times after
    a warm-up; `before()` runs untimed before each run (a fresh output directory)."""
    times = [[] for _ in commands]
    for r in range(runs + 1):
        for i, (argv, before) in enumerate(commands):
            before()
            took = timed_any(argv)
            if r:
                times[i].append(took)
    return [statistics.median(t) for t in times]


def timed_any(argv) -> float:
    """Seconds of a command whatever its exit status (`check` exits 1 on drift)."""
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def fresh(path: str):
    return lambda: shutil.rmtree(path, ignore_errors=True)


def compare_fleets(work: str, runs: int, plain: str, measured: str, label: str):
    """Build and check times of the measured fleet against the plain one."""
    outs = {k: os.path.join(work, f"out-{label}-{k}") for k in ("plain", "measured")}
    build = {k: cgsc_command() + ["build", "--specs-from", lst, "-o", outs[k]]
             for k, lst in (("plain", plain), ("measured", measured))}
    plain_t, measured_t = interleaved(runs, [(build["plain"], fresh(outs["plain"])),
                                             (build["measured"], fresh(outs["measured"]))])
    for k in outs:   # a complete output to check against
        fresh(outs[k])()
        subprocess.run(build[k], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    check = {k: cgsc_command() + ["check", "--specs-from", lst, "-o", outs[k], "--no-cache"]
             for k, lst in (("plain", plain), ("measured", measured))}
    plain_c, measured_c = interleaved(runs, [(check["plain"], lambda: None),
                                             (check["measured"], lambda: None)])
    for k in outs:
        fresh(outs[k])()
    return (plain_t, measured_t), (plain_c, measured_c)


def hash_floor(files, runs: int):
    """Median seconds of a process that reads and hashes each file once (sha256)."""
    code = ("import hashlib, sys\n"
            "for p in sys.argv[1:]:\n"
            "    h = hashlib.sha256()\n"
            "    with open(p, 'rb') as fh:\n"
            "        while True:\n"
            "            b = fh.read(1 << 20)\n"
            "            if not b: break\n"
            "            h.update(b)\n")
    argv = [sys.executable, "-c", code, *files]
    timed(argv)
    return statistics.median(timed(argv) for _ in range(runs))


# -- peak memory -------------------------------------------------------------------------

RSS_PROBE = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
             "stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _descendants(pid: int):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def _memory_kib(pid: int):
    """(RSS, PSS) of a process in KiB: PSS shares the pages a forked worker shares with
    its parent between them, RSS counts them in each."""
    found = [0, 0]
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                for i, field in enumerate(("Rss:", "Pss:")):
                    if line.startswith(field):
                        found[i] = int(line.split()[1])
    except OSError:
        pass
    return found


def peak_rss(argv):
    """(largest process's peak RSS by getrusage, the processes' summed RSS and summed PSS
    at their peaks as sampled), in KiB."""
    proc = subprocess.Popen([sys.executable, "-c", RSS_PROBE, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    summed = [0, 0]
    while proc.poll() is None:
        now = [_memory_kib(p) for p in _descendants(proc.pid)[1:]]
        summed = [max(summed[k], sum(m[k] for m in now)) for k in (0, 1)]
        time.sleep(0.003)
    out = proc.stdout.read().strip()
    if proc.returncode != 0 or not out:
        raise RuntimeError(f"{argv} failed")
    return int(out), summed[0], summed[1]


def padded_amd(source: str, path: str, size: int) -> None:
    """The image, padded with zeros at the front to `size` (sparse): its GUIDed table and
    SEV metadata are found from the end, so it stays a valid AmdSevX64 image."""
    with open(source, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.truncate(size - len(data))
        fh.seek(size - len(data))
        fh.write(data)


def padded_tdvf(source: str, path: str, size: int) -> None:
    """A TDVF image padded at the front, each section's DataOffset moved with its bytes."""
    from cgsc.measure import tdvf
    from cgsc.measure.ovmf_table import table_entries
    with open(source, "rb") as fh:
        data = bytearray(fh.read())
    pad = size - len(data)
    (entry,) = [d for g, d in table_entries(bytes(data)) if g == tdvf.METADATA_OFFSET_GUID]
    at = len(data) - struct.unpack("<I", entry)[0]
    _sig, _length, _version, count = struct.unpack_from("<4sIII", data, at)
    for i in range(count):
        where = at + 16 + 32 * i
        offset, raw = struct.unpack_from("<II", data, where)
        if raw:
            struct.pack_into("<I", data, where, offset + pad)
    with open(path, "wb") as fh:
        fh.truncate(pad)
        fh.seek(pad)
        fh.write(data)


BIG_SNP = """[guest]
name = "big-{i}"
cpu = "EPYC-Milan"
vcpus = 4
memory = "4GiB"
[firmware]
code = "/usr/share/ovmf/OVMF.amdsev.fd"
[confidential.sev-snp]
cbitpos = 51
reduced-phys-bits = 1
[measurement]
firmware = "{firmware}"
"""
BIG_TDX = """[guest]
name = "big-{i}"
memory = "4GiB"
[firmware]
code = "/usr/share/ovmf/OVMF.inteltdx.fd"
[confidential.tdx]
[measurement]
firmware = "{firmware}"
"""


def memory(work: str, images: dict, row) -> None:
    size = 1 << 30
    bound = size // 1024 + 150 * 1024   # KiB
    for kind, template, pad in (("AMD SEV-SNP", BIG_SNP, padded_amd),
                                ("Intel TDX", BIG_TDX, padded_tdvf)):
        source = images[firmware_data.AMDSEV if template is BIG_SNP else firmware_data.TDX]
        firmware = [os.path.join(work, f"big-{kind[:3]}-{n}.fd") for n in range(4)]
        for path in firmware:
            pad(source, path, size)
        specs = []
        for i in range(4):
            for shared in (True, False):
                path = os.path.join(work, f"big-{kind[:3]}-{'s' if shared else 'o'}{i}.toml")
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(template.format(i=i, firmware=firmware[0 if shared else i]))
                specs.append(path)
        out = os.path.join(work, "big-out")
        single, _rss, _pss = peak_rss(cgsc_command() + ["build", specs[0], "-o", out])
        shutil.rmtree(out, ignore_errors=True)
        row(f"peak RSS, one {kind} guest, 1 GiB firmware",
            f"{single / 1024:.0f} MiB = size + {(single - size // 1024) / 1024:.0f} MiB",
            "<= size + 150 MiB", single <= bound)
        for label, chosen in (("sharing it", specs[0::2]), ("each its own", specs[1::2])):
            largest, summed, shared = peak_rss(cgsc_command() + ["build", "-j", "2", *chosen,
                                                                 "-o", out])
            shutil.rmtree(out, ignore_errors=True)
            if summed < largest:   # the sampler missed the peak (a short run)
                # -j 2 is this process and one forked worker: the sum is at most twice
                # the largest, which getrusage measures exactly.
                row(f"peak RSS, -j 2, 4 {kind} guests {label}",
                    f"largest process {largest / 1024:.0f} MiB (sum not sampled; two "
                    "processes)", "<= 2 x (size + 150 MiB)", largest <= bound)
                continue
            row(f"peak RSS, -j 2, 4 {kind} guests {label}",
                f"{summed / 1024:.0f} MiB together (PSS {shared / 1024:.0f}), largest "
                f"{largest / 1024:.0f}", "<= 2 x (size + 150 MiB)",
                summed <= 2 * bound and largest <= bound)
        for path in firmware:
            os.unlink(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-2000", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    precompile()
    rows = []

    def row(label, figure, target, met):
        rows.append((label, figure, target, met))
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else os.path.join(ROOT, "bench")
    with tempfile.TemporaryDirectory(dir=base, prefix="cgsc-bench-fleet-") as work:
        images = firmware_data.unpack(work)
        firmware = images[firmware_data.AMDSEV]
        rng = random.Random(26)
        kernel, initrd = os.path.join(work, "vmlinuz"), os.path.join(work, "initrd.img")
        write_random(kernel, 16 * MiB, rng)
        write_random(initrd, 8 * MiB, rng)
        sizes = [200] + ([] if args.skip_2000 else [2000])
        for count in sizes:
            plain = fleet(os.path.join(work, f"plain-{count}"), count, firmware, None, initrd, False)
            shared = fleet(os.path.join(work, f"shared-{count}"), count, firmware,
                           lambda i: kernel, initrd, True)
            (pb, mb), (pc, mc) = compare_fleets(work, args.runs, plain, shared, str(count))
            target = count == 200
            row(f"build, {count} measured guests sharing firmware/kernel/initrd",
                f"{mb:.2f} s vs plain {pb:.2f} s = {mb / pb:.2f} x",
                "<= 1.50 x" if target else "(reference)", mb / pb <= 1.5 if target else None)
            row(f"check, {count} measured guests sharing firmware/kernel/initrd",
                f"{mc:.2f} s vs plain {pc:.2f} s = {mc / pc:.2f} x",
                "<= 1.50 x" if target else "(reference)", mc / pc <= 1.5 if target else None)
        kernels = [os.path.join(work, f"vmlinuz-{i:03d}") for i in range(200)]
        for path in kernels:
            write_random(path, 16 * MiB, rng)
        own = fleet(os.path.join(work, "own-200"), 200, firmware, lambda i: kernels[i], initrd, True)
        out = os.path.join(work, "out-own")
        floor_t = hash_floor(kernels + [firmware, initrd], args.runs)
        build = cgsc_command() + ["build", "--specs-from", own, "-o", out]
        (own_t,) = interleaved(args.runs, [(build, fresh(out))])
        total = (200 * 16 + 4 + 8)
        row(f"build, 200 guests each with its own 16 MiB kernel ({total} MiB to hash)",
            f"{own_t:.2f} s vs hash floor {floor_t:.2f} s = {own_t / floor_t:.2f} x",
            "<= 1.30 x", own_t / floor_t <= 1.3)
        for path in kernels:
            os.unlink(path)
        if not args.skip_memory:
            memory(work, images, row)
    return report(rows, 48, 26)


if __name__ == "__main__":
    sys.exit(main())

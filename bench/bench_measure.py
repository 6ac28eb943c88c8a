#!/usr/bin/env python3
"""cgsc [measurement] benchmark (separate from bench/bench.py):

1. a cold build with measurement of an SNP spec with a 4 MiB firmware and a 16 MiB kernel
   (kernel-hashes on, initrd, ID block signed);
2. the time the generated launch script spends checking the boot files' sha256 (the same
   script run with and without the launch binding, against a stand-in emulator); the
   launch copies the measured files into the guest's runtime directory /run/cgsc/<name>,
   so this step needs to be able to make one (root), else it is skipped and said;
3. a plain build (no [measurement]) against the dependency import floor, the ratio
   bench/bench.py holds to <= 1.3: the measuring library must not be imported there.

Usage: python3 bench/bench_measure.py [--runs N]   (the firmware is Debian's OVMF.amdsev.fd
from tests/data/firmware). Exit 1 when the plain build ratio exceeds 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

from bench import cgsc_command, timed  # bench/ is on sys.path: both run as scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import firmware_data  # noqa: E402  (tests/: the unpacker of the committed firmware images)

PLAIN = os.path.join(ROOT, "examples", "sev-snp.toml")
FLOOR = [sys.executable, "-c", "import tomllib, jsonschema, jinja2"]
STAND_IN = "#!/bin/sh\nexit 0\n"

NAME = f"cgsc-bench-{os.getpid()}"   # its own runtime directory, /run/cgsc/NAME
SPEC = """[guest]
name = "{name}"
cpu = "EPYC-Milan"
vcpus = 8
memory = "16GiB"
[firmware]
code = "{d}/OVMF.amdsev.fd"
[kernel]
image = "{d}/vmlinuz"
initrd = "{d}/initrd.img"
cmdline = "console=ttyS0 root=/dev/vda1"
[confidential.sev-snp]
cbitpos = 51
reduced-phys-bits = 1
kernel-hashes = true
[measurement]
id-key = "id-key.pem"
verify-at-launch = {verify}
"""




def median_of(runs: int, argv, **kw) -> float:
    timed(argv, **kw)   # warm the page cache
    return statistics.median(timed(argv, **kw) for _ in range(runs))


def setup(work: str) -> None:
    """4 MiB firmware (Debian's OVMF.amdsev.fd), 16 MiB kernel, 8 MiB initrd, a P-384 ID key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    firmware_data.unpack(work)   # writes OVMF.amdsev.fd (and the other images) into work
    rng = random.Random(0)
    files = {"vmlinuz": rng.randbytes(16 << 20), "initrd.img": rng.randbytes(8 << 20)}
    for name, data in files.items():
        with open(os.path.join(work, name), "wb") as fh:
            fh.write(data)
    key = ec.generate_private_key(ec.SECP384R1())
    with open(os.path.join(work, "id-key.pem"), "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    for verify in ("true", "false"):
        with open(os.path.join(work, f"snp-{verify}.toml"), "w") as fh:
            fh.write(SPEC.format(d=work, verify=verify, name=NAME))
    bin_dir = os.path.join(work, "bin")
    os.mkdir(bin_dir)
    with open(os.path.join(bin_dir, "qemu-system-x86_64"), "w") as fh:
        fh.write(STAND_IN)
    os.chmod(os.path.join(bin_dir, "qemu-system-x86_64"), 0o755)


def launch_check(runs: int, work: str):
    """(seconds of the launch script with the binding, without it), or why not measured:
    the launch needs the guest's runtime directory (what systemd's RuntimeDirectory=
    makes), created here for the run and removed after."""
    runtime = os.path.join("/run/cgsc", NAME)
    try:
        os.makedirs("/run/cgsc", exist_ok=True)
        os.mkdir(runtime, 0o700)
    except OSError as exc:
        return f"cannot make {runtime}: {exc.strerror} (run as root)"
    try:
        env = {"PATH": f"{work}/bin:/usr/bin:/bin", "CGSC_SKIP_CHECKS": "1"}
        scripts = {v: [os.path.join(work, f"out-{v}", NAME, f"{NAME}.sh")]
                   for v in ("true", "false")}
        return (median_of(runs, scripts["true"], env=env),
                median_of(runs, scripts["false"], env=env))
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def plain_ratio(runs: int, work: str):
    """Median cold times of the import floor and a plain build, interleaved so that machine
    noise hits both alike (as bench/bench.py measures them)."""
    for package in ("compiler", "schema", "targets"):   # the .pyc a regular install has
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, package)],
                       check=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""))
    build = cgsc_command() + ["build", PLAIN, "-o", os.path.join(work, "plain")]
    timed(build)
    timed(FLOOR)
    floor, plain = [], []
    for _ in range(runs):
        floor.append(timed(FLOOR))
        plain.append(timed(build))
    return statistics.median(floor), statistics.median(plain)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cgsc-bench-measure-")
    try:
        setup(work)
        build = {v: cgsc_command() + ["build", os.path.join(work, f"snp-{v}.toml"),
                                      "-o", os.path.join(work, f"out-{v}")]
                 for v in ("true", "false")}
        measured = median_of(args.runs, build["true"])
        with open(os.path.join(work, "out-true", NAME, "manifest.json")) as fh:
            digest = json.load(fh)["attestation"]["launch-digest"]
        timed(build["false"])
        launch = launch_check(args.runs, work)
        floor, plain = plain_ratio(args.runs * 3, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = plain / floor
    print(f"SNP build with measurement (4 MiB firmware, 16 MiB kernel, 8 MiB initrd, ID block): "
          f"{measured * 1000:.0f} ms  (digest {digest[:16]}...)")
    if isinstance(launch, str):
        print(f"launch script digest check: not measured ({launch})")
    else:
        with_check, without = launch
        print(f"launch script digest check (28 MiB): {(with_check - without) * 1000:.0f} ms "
              f"(script {with_check * 1000:.0f} ms with, {without * 1000:.0f} ms without)")
    print(f"plain build {plain * 1000:.0f} ms vs dependency floor {floor * 1000:.0f} ms: "
          f"ratio {ratio:.2f} (target <= 1.3)")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())

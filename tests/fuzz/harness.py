"""The input fuzz harness (issue 25): cgsc's command line on generated hostile inputs of
every kind it reads, each case in a forked child with a time limit, an address-space
limit and a watch on what it writes. The contract for every case:

  - exit status 0, 1 or 2 (never 3, an internal error, nor a signal);
  - no traceback and no "internal error" on stderr;
  - no hang: done within the per-case timeout;
  - bounded memory: the child's address space is limited; a MemoryError is a failure
    (cgsc reports it as "Cannot allocate memory", exit 2, which the harness refuses);
  - no file written outside the output directory: the case directory (cwd, inputs) and
    the temporary directory are compared before and after, and an audit hook records any
    write to an absolute path outside them.

Kinds: spec (TOML specs), list (--specs-from), host (--host profile JSON), caps (`probe
--from-domcapabilities` XML and recorded QEMU output), firmware ([measurement] firmware
images). Each case is generated from (seed, kind, index) alone, so any case can be run
again by itself.

    python tests/fuzz/harness.py --cases 20000            # per kind; all kinds
    python tests/fuzz/harness.py --kinds list --cases 500 --seed 7
    python tests/fuzz/harness.py --kinds caps --seed 1 --only 1234 --show   # one case

tests/fuzz/test_harness.py runs it bounded in the test suite (CGSC_FUZZ_CASES per kind
overrides its count). See tests/fuzz/README.md for the recorded counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
for path in (TESTS, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

KINDS = ("spec", "list", "host", "caps", "firmware")
TIMEOUT = 30.0          # seconds per case (a case takes tens of milliseconds)
MEMORY = 768 << 20      # address space a case may add to what the harness has mapped


class Case(NamedTuple):
    kind: str
    index: int
    argv: List[str]                 # cgsc's arguments
    files: Dict[str, bytes]         # name (in the case directory) -> content
    fifos: Tuple[str, ...] = ()     # names to create as FIFOs
    dirs: Tuple[str, ...] = ()      # names to create as directories


class Outcome(NamedTuple):
    case: Case
    status: Optional[int]           # exit status (-N: killed by signal N); None: timed out
    stderr: str
    failure: str                    # why the case breaks the contract, or ""


# -- seeds -------------------------------------------------------------------------------

def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _specs() -> List[Tuple[str, bytes, Dict[str, bytes]]]:
    """(name, text, other files it needs) of every example and test case."""
    from helpers import VALID_SPECS
    out = []
    for path in VALID_SPECS:
        text = _read(path)
        extra = {}
        base = re.search(rb'^extends = "([^"]+)"', text, re.M)
        if base:   # the fleet examples' base, beside it as in examples/fleet/
            extra[base.group(1).decode()] = _read(os.path.join(os.path.dirname(path),
                                                               base.group(1).decode()))
        out.append((os.path.basename(path), text, extra))
    return out


def _profiles() -> List[bytes]:
    from cgsc.host.profile import shipped
    return [_read(p) for p in shipped().values()] + [
        _read(os.path.join(TESTS, "data", "hosts", "amd-lab.json"))]


CAPS = os.path.join(TESTS, "data", "hosts", "snp-host.domcapabilities.xml")
QEMU_VERSION = os.path.join(TESTS, "data", "hosts", "qemu-10.0.version.txt")
QEMU_OBJECTS = os.path.join(TESTS, "data", "hosts", "qemu-10.0.object-help.txt")

HOSTILE_TEXT = ["", "\x00", "\u2028", "\u2029", "\x85", "\ufeff", "\ufffe", "\x1b[2J", "\r",
                "../" * 40, "a" * 5000, "\U0010ffff", "-1", "0", "4294967296",
                "99999999999999999999999", "1e999", "NaN", "٥١", "51.0", " 51 ", "0x33", "+5",
                "5_1", "true", "null", "{}", "[]", "<", "&amp;", "]]>", "%s%n", "$(reboot)"]


# -- generators: (rng, index) -> Case ------------------------------------------------------

def _bytes_mutation(rng: random.Random, data: bytes, rounds: int = 0) -> bytes:
    data = bytearray(data)
    for _ in range(rounds or rng.choice([1, 1, 2, 4, 8])):
        op, at = rng.randrange(6), rng.randrange(len(data) + 1)
        if op == 0 and data:                 # flip a byte
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:                        # random bytes in
            data[at:at] = os.urandom(rng.choice([1, 2, 7, 64]))
        elif op == 2:                        # a range out
            del data[at:at + rng.choice([1, 10, 100, 1000])]
        elif op == 3:                        # truncate
            del data[at:]
        elif op == 4:                        # a hostile text in
            data[at:at] = rng.choice(HOSTILE_TEXT).encode("utf-8", "surrogatepass")
        else:                                # a range repeated
            data[at:at] = data[at:at + rng.choice([1, 16, 256])] * rng.choice([2, 100])
    return bytes(data)


def _spec_case(rng: random.Random, index: int, seeds) -> Case:
    from spec_mutations import value_mutation
    from test_fuzz_malformed import _text_mutation
    name, text, extra = rng.choice(seeds)
    how = rng.random()
    if how < 0.45:
        mutated = text.decode("utf-8")
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutated = _text_mutation(rng, mutated) or "\n"
        data = mutated.encode("utf-8", "surrogateescape")
    elif how < 0.65:
        import tomli
        try:
            data = value_mutation(rng, tomli.loads(text.decode("utf-8"))).encode("utf-8", "surrogatepass")
        except ValueError:
            data = text
    else:
        data = _bytes_mutation(rng, text)
    files = dict(extra, **{"spec.toml": data})
    command = rng.choice([["validate", "spec.toml"], ["validate", "spec.toml"],
                          ["build", "spec.toml", "-o", "out"], ["check", "spec.toml", "-o", "out"],
                          ["explain", "spec.toml"], ["diff", "seed.toml", "spec.toml"],
                          ["validate", "--base", "spec.toml"],
                          ["build", "--stdout", "spec.toml", "--format", "json"]])
    if "seed.toml" in command:
        files["seed.toml"] = text
    return Case("spec", index, command, files)


def _list_case(rng: random.Random, index: int, seeds) -> Case:
    files: Dict[str, bytes] = {}
    names = []
    for i in range(rng.choice([1, 2, 3])):
        name, text, extra = rng.choice([s for s in seeds if not s[2]])
        files[f"s{i}.toml"] = text
        names.append(f"s{i}.toml")
    pool = names + ["missing.toml", "fifo", "/dev/zero", "/dev/urandom", "/dev/null", ".", "/",
                    "dir", "s0.toml\r", "s0.toml\0evil", "\0", "a" * 5000, "/proc/self/environ",
                    "../" * 30 + "etc/passwd", "\x1b]0;title\x07", "s0.toml\u2028", ""]
    lines = []
    for _ in range(rng.choice([0, 1, 2, 5, 20])):
        pick = rng.random()
        if pick < 0.6:
            line = rng.choice(pool).encode("utf-8", "surrogatepass")
        elif pick < 0.8:
            line = os.urandom(rng.choice([1, 8, 64]))
        else:
            line = _bytes_mutation(rng, rng.choice(names).encode(), 1)
        lines.append(line)
    listing = b"\n".join(lines) + rng.choice([b"\n", b"", b"\r\n", b"\0"])
    files["fleet.txt"] = listing
    where = rng.choice(["fleet.txt"] * 8 + ["fifo", "/dev/zero", "/dev/urandom", "dir",
                                            "/proc/self/environ", "missing.txt", "/dev/null"])
    command = rng.choice([["validate"], ["build", "-o", "out"], ["check", "-o", "out"],
                          ["build", "-o", "out", "-j", "2"]])
    return Case("list", index, command + ["--specs-from", where], files, ("fifo",), ("dir",))


def _json_mutation(rng: random.Random, doc) -> bytes:
    """A value of the document replaced, or nested deep, or the text cut."""
    nodes = [doc]
    stack = [doc]
    while stack:
        node = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        nodes += [c for c in children if isinstance(c, (dict, list))]
        stack += [c for c in children if isinstance(c, (dict, list))]
    node = rng.choice(nodes)
    value = rng.choice([None, True, -1, 0, 2 ** 64, 1.5, float("inf"), "x" * 10000, [], {},
                        {"a": [1, {"b": None}]}, rng.choice(HOSTILE_TEXT)])
    if isinstance(node, dict) and node:
        node[rng.choice(sorted(node))] = value
    elif isinstance(node, list) and node:
        node[rng.randrange(len(node))] = value
    text = json.dumps(doc, allow_nan=True)
    roll = rng.random()
    if roll < 0.1:
        depth = rng.choice([63, 64, 65, 1000, 100000])
        text = "[" * depth + text + "]" * depth
    elif roll < 0.2:
        text = text.replace("{", '{"name": "dup", ', 1)   # a duplicate key
    return text.encode("utf-8", "surrogatepass")


def _host_case(rng: random.Random, index: int, seeds, profiles) -> Case:
    raw = rng.choice(profiles)
    data = (_json_mutation(rng, json.loads(raw)) if rng.random() < 0.6
            else _bytes_mutation(rng, raw))
    name, text, extra = rng.choice([s for s in seeds if not s[2]])
    where = rng.choice(["host.json"] * 8 + ["fifo", "/dev/zero", "/dev/urandom", "dir",
                                            "debian-12", "missing.json"])
    command = rng.choice([["validate", "spec.toml"], ["build", "spec.toml", "-o", "out"],
                          ["check", "spec.toml", "-o", "out"]])
    return Case("host", index, command + ["--host", where],
                {"host.json": data, "spec.toml": text}, ("fifo",), ("dir",))


def _caps_case(rng: random.Random, index: int, caps: bytes, version: bytes, objects: bytes) -> Case:
    text = caps.decode("utf-8")
    roll = rng.random()
    if roll < 0.5:   # an element's text, an attribute, or an element itself changed
        elements = re.findall(r"<([A-Za-z][\w-]*)[^>]*>([^<]*)</\1>", text)
        tag, value = rng.choice(elements)
        new = rng.choice([rng.choice(HOSTILE_TEXT), "", value * 3])
        old = f">{value}</{tag}>"
        what = rng.random()
        if what < 0.5:
            text = text.replace(old, f">{_xml_text(new)}</{tag}>", 1)
        elif what < 0.7:
            text = re.sub(rf"<{tag}\b[^>]*>[^<]*</{tag}>", "", text, count=1)
        else:
            text = text.replace("supported='yes'", f"supported='{rng.choice(['no', 'maybe', ''])}'",
                                rng.choice([1, 5, 100]))
        data = text.encode("utf-8")
    elif roll < 0.6:
        depth = rng.choice([60, 65, 1000, 100000])
        data = text.replace("<arch>", "<arch>" + "<x>" * depth + "</x>" * depth, 1).encode()
    elif roll < 0.7:
        data = (rng.choice(["<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>",
                            "<!DOCTYPE d SYSTEM 'file:///etc/passwd'>",
                            "<?xml version='1.0' encoding='latin-1'?>"])
                + text.replace("<domain>", "<domain>&b;", 1)).encode("utf-8")
    else:
        data = _bytes_mutation(rng, caps)
    files = {"caps.xml": data}
    where = rng.choice(["caps.xml"] * 8 + ["fifo", "/dev/zero", "/dev/urandom", "dir"])
    argv = ["probe", "--from-domcapabilities", where]
    if rng.random() < 0.5:
        files["version.txt"] = _bytes_mutation(rng, version) if rng.random() < 0.5 else version
        argv += ["--qemu-version", rng.choice(["version.txt"] * 4 + ["fifo", "/dev/zero"])]
    if rng.random() < 0.5:
        files["objects.txt"] = _bytes_mutation(rng, objects) if rng.random() < 0.5 else objects
        argv += ["--qemu-objects", rng.choice(["objects.txt"] * 4 + ["fifo", "/dev/urandom"])]
    if rng.random() < 0.3:
        argv += ["--libvirt-version", rng.choice(["9.0.0", "x", "1" * 100, "\x1b"])]
    if rng.random() < 0.5:
        argv += ["-o", "out/profile.json"]
    return Case("caps", index, argv, files, ("fifo",), ("dir", "out"))


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;")


def _firmware_images() -> List[Tuple[str, bytes]]:
    """(mechanism, image): synthetic images from the published layouts, the corpus's, and
    Debian's real ones (tests/data/firmware; the two 4 MiB images drawn in 2 cases of 27)."""
    import firmware_data
    from firmware_images import amd_image, tdvf_image
    support = os.path.join(TESTS, "invalid", "support")
    synthetic = [("sev-snp", amd_image()), ("sev-snp", amd_image(hashes_table=True)),
                 ("sev-es", amd_image()), ("tdx", tdvf_image()),
                 ("sev-snp", _read(os.path.join(support, "amd-sev-no-hashes.fd"))),
                 ("sev-snp", _read(os.path.join(support, "ovmf-no-sev-metadata.fd"))),
                 ("tdx", _read(os.path.join(support, "tdvf.fd")))]
    with tempfile.TemporaryDirectory(prefix="cgsc-fuzz-firmware-") as tmp:
        real = firmware_data.unpack(tmp)
        debian = [("sev-snp", _read(real[firmware_data.AMDSEV])),
                  ("tdx", _read(real[firmware_data.TDX])),
                  ("sev-snp", _read(real[firmware_data.AMD_SUFFIX])),
                  ("sev-es", _read(real[firmware_data.OVMFX64_SUFFIX]))]
    return synthetic * 3 + debian[:2] + debian[2:] * 2


def _firmware_case(rng: random.Random, index: int, images) -> Case:
    from measure_helpers import spec_text
    mechanism, image = rng.choice(images)
    data = bytearray(image)
    for _ in range(rng.choice([1, 2, 4])):
        roll = rng.random()
        if roll < 0.5:   # a field of the GUIDed table, the metadata or the TDVF descriptor
            low, high = rng.choice([(len(data) - 256, len(data) - 32), (0x100, 0x200), (0, 0x100)])
            low, high = max(0, low), min(len(data) - 4, high)
            at = rng.randrange(low, high) if high > low else 0
            data[at:at + 4] = struct.pack("<I", rng.choice([0, 1, 0xFFFFFFFF, 0x80000000,
                                                            len(data), len(data) + 1,
                                                            rng.getrandbits(32)]))
        elif roll < 0.8:
            data = bytearray(_bytes_mutation(rng, bytes(data), 1))
        else:
            data = data[:rng.randrange(len(data) + 1)] if rng.random() < 0.5 else \
                data + bytes(rng.choice([1, 4096, 1 << 20]))
    if mechanism == "tdx":
        spec = ("[guest]\nname = \"fw\"\nmemory = 1024\n[firmware]\ncode = \"/var/lib/g/TDVF.fd\"\n"
                "[confidential.tdx]\n[measurement]\nfirmware = \"fw.bin\"\n")
    else:
        spec = spec_text("fw", mechanism, "fw.bin", cpu="EPYC-v4")
    command = rng.choice([["validate", "spec.toml"], ["build", "spec.toml", "-o", "out"]])
    return Case("firmware", index, command, {"spec.toml": spec.encode(), "fw.bin": bytes(data)})


class Generator:
    """Cases of every kind, each from (seed, kind, index) alone."""

    def __init__(self, seed: int):
        self.seed = seed
        self.specs = _specs()
        self.profiles = _profiles()
        self.caps = (_read(CAPS), _read(QEMU_VERSION), _read(QEMU_OBJECTS))
        self.images = _firmware_images()

    def case(self, kind: str, index: int) -> Case:
        rng = random.Random(f"{self.seed}:{kind}:{index}")
        if kind == "spec":
            return _spec_case(rng, index, self.specs)
        if kind == "list":
            return _list_case(rng, index, self.specs)
        if kind == "host":
            return _host_case(rng, index, self.specs, self.profiles)
        if kind == "caps":
            return _caps_case(rng, index, *self.caps)
        return _firmware_case(rng, index, self.images)


# -- running a case ----------------------------------------------------------------------

def _snapshot(top: str, skip: str) -> Dict[str, tuple]:
    """path -> (type, size, mtime) of everything under top except `skip` (the output)."""
    out = {}
    for base, dirs, files in os.walk(top):
        if os.path.abspath(base) == skip:
            dirs[:] = []
            continue
        for name in dirs + files:
            path = os.path.join(base, name)
            if os.path.abspath(path) == skip:
                continue
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _watch(allowed: Tuple[str, ...], report: int) -> None:
    """An audit hook in the child: a write to an absolute path outside `allowed` (the
    output directory, the case's temporary directory) is written to `report`."""
    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(flags, int) and flags & _WRITING) or \
                     (isinstance(mode, str) and any(c in mode for c in "wax+"))
            paths = [path] if writes else []
        elif event in ("os.rename", "os.symlink", "os.link"):
            paths = args[:2]
        elif event in ("os.remove", "os.mkdir", "os.rmdir", "os.chmod", "os.truncate",
                       "shutil.rmtree"):
            paths = args[:1]
        else:
            return
        for path in paths:
            if not isinstance(path, (str, bytes)):
                continue
            path = os.fsdecode(path)
            if os.path.isabs(path) and path != os.devnull and \
                    not any(path == a or path.startswith(a + os.sep) for a in allowed):
                os.write(report, f"{event} {path!r}\n".encode())
    sys.addaudithook(hook)


def _child(case: Case, work: str, memory: int, stdout: int, stderr: int, report: int) -> None:
    """In the forked child: limits, the watch, then cgsc's main(). Never returns."""
    code = 98
    try:
        os.chdir(work)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        tmp = os.path.join(os.path.dirname(work), "tmp")
        os.environ["TMPDIR"] = tmp
        tempfile.tempdir = tmp
        _watch((os.path.join(work, "out"), tmp), report)
        from cgsc.cli import main
        code = main(case.argv, restore=False)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as exc:   # the harness's own failure, not cgsc's: said apart
        os.write(2, f"harness: {type(exc).__name__}: {exc}\n".encode())
        code = 97
    finally:
        os._exit(code)


def _wait(pid: int, timeout: float) -> Optional[int]:
    deadline = time.monotonic() + timeout
    fd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            if fd >= 0:
                select.select([fd], [], [], left)
            else:
                time.sleep(min(left, 0.005))
    finally:
        if fd >= 0:
            os.close(fd)


def _mapped() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class Runner:
    """Runs cases in forked children of this process, in a scratch directory."""

    def __init__(self, timeout: float = TIMEOUT, memory: int = MEMORY):
        self.timeout = timeout
        self.scratch = tempfile.mkdtemp(prefix="cgsc-fuzz-")
        self._warm()
        self.memory = _mapped() + memory

    def _warm(self) -> None:
        """Load what the commands load, once, so the children are forked with it."""
        import cgsc.cli  # noqa: F401
        import cgsc.host.probe  # noqa: F401
        import cgsc.output.fleet  # noqa: F401
        import cgsc.review.diff  # noqa: F401
        import cgsc.review.explain  # noqa: F401
        from cgsc.spec.validate import base_validator, validator
        validator()
        base_validator()
        from cgsc.host.profile import schema
        schema()

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def run(self, case: Case) -> Outcome:
        case_dir = os.path.join(self.scratch, "case")
        tmp = os.path.join(self.scratch, "tmp")
        for path in (case_dir, tmp):
            shutil.rmtree(path, ignore_errors=True)
            os.mkdir(path)
        for name, data in case.files.items():
            with open(os.path.join(case_dir, name), "wb") as fh:
                fh.write(data)
        for name in case.fifos:
            os.mkfifo(os.path.join(case_dir, name))
        for name in case.dirs:
            os.makedirs(os.path.join(case_dir, name), exist_ok=True)
        out = os.path.abspath(os.path.join(case_dir, "out"))
        before = _snapshot(case_dir, out)
        streams = [tempfile.TemporaryFile(dir=self.scratch) for _ in range(3)]
        pid = os.fork()
        if pid == 0:
            _child(case, case_dir, self.memory, *(s.fileno() for s in streams))
        status = _wait(pid, self.timeout)
        texts = []
        for s in streams:
            s.seek(0)
            texts.append(s.read(1 << 20).decode("utf-8", "replace"))
            s.close()
        _stdout, stderr, writes = texts
        failure = self._judge(status, stderr, writes, before, _snapshot(case_dir, out),
                              os.listdir(tmp))
        return Outcome(case, status, stderr, failure)

    @staticmethod
    def _judge(status, stderr: str, writes: str, before, after, tmp_left) -> str:
        if status is None:
            return "hang (no answer within the timeout)"
        if status not in (0, 1, 2):
            return f"exit status {status}"
        if "Traceback" in stderr or "internal error" in stderr or "harness:" in stderr:
            return "traceback or internal error"
        if "Cannot allocate memory" in stderr:
            return "memory bound reached"
        if writes:
            return "wrote outside the output directory: " + writes.splitlines()[0]
        if before != after:
            changed = sorted(set(before.items()) ^ set(after.items()))
            return f"changed the case directory outside out/: {changed[:3]}"
        if tmp_left:
            return f"left files in the temporary directory: {tmp_left[:3]}"
        return ""


# -- a run ---------------------------------------------------------------------------------

def run(cases: int, kinds=KINDS, seed: int = 1, timeout: float = TIMEOUT,
        progress: Optional[Callable[[str], None]] = None, keep: Optional[str] = None):
    """`cases` cases of each kind. Returns ({kind: {"cases", "exit 0", "exit 1", "exit 2",
    "failed"}}, [failing Outcome])."""
    generator = Generator(seed)
    runner = Runner(timeout)
    counts = {k: {"cases": 0, "exit 0": 0, "exit 1": 0, "exit 2": 0, "failed": 0} for k in kinds}
    failures: List[Outcome] = []
    try:
        for index in range(cases):
            for kind in kinds:
                outcome = runner.run(generator.case(kind, index))
                row = counts[kind]
                row["cases"] += 1
                if outcome.failure:
                    row["failed"] += 1
                    failures.append(outcome)
                    if keep:
                        _keep(keep, seed, outcome)
                else:
                    row[f"exit {outcome.status}"] += 1
            if progress and (index + 1) % 100 == 0:
                progress(f"{index + 1}/{cases} per kind: "
                         + ", ".join(f"{k} {v['failed']} failed" for k, v in counts.items()))
    finally:
        runner.close()
    return counts, failures


def _keep(directory: str, seed: int, outcome: Outcome) -> None:
    case = outcome.case
    where = os.path.join(directory, f"{case.kind}-{seed}-{case.index}")
    os.makedirs(where, exist_ok=True)
    for name, data in case.files.items():
        with open(os.path.join(where, name), "wb") as fh:
            fh.write(data)
    with open(os.path.join(where, "case.json"), "w", encoding="utf-8") as fh:
        json.dump({"argv": case.argv, "fifos": case.fifos, "dirs": case.dirs,
                   "status": outcome.status, "failure": outcome.failure,
                   "stderr": outcome.stderr[-4000:]}, fh, indent=2)


def table(counts) -> str:
    lines = ["| input kind | cases | exit 0 | exit 1 | exit 2 | failed |",
             "|---|---:|---:|---:|---:|---:|"]
    total = {"cases": 0, "exit 0": 0, "exit 1": 0, "exit 2": 0, "failed": 0}
    for kind, row in counts.items():
        lines.append(f"| {kind} | " + " | ".join(f"{row[c]:,}" for c in total) + " |")
        for c in total:
            total[c] += row[c]
    lines.append("| all | " + " | ".join(f"{total[c]:,}" for c in total) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000, help="cases per kind (default 1000)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per case")
    p.add_argument("--only", type=int, help="run the case of this index only (per kind)")
    p.add_argument("--show", action="store_true", help="print each case's argv and stderr")
    p.add_argument("--keep", metavar="DIR", help="save failing cases here")
    args = p.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if args.only is not None:
        generator, runner = Generator(args.seed), Runner(args.timeout)
        try:
            for kind in kinds:
                outcome = runner.run(generator.case(kind, args.only))
                print(f"{kind} #{args.only}: cgsc {' '.join(outcome.case.argv)}\n"
                      f"status {outcome.status}; {outcome.failure or 'ok'}\n{outcome.stderr}")
        finally:
            runner.close()
        return 0
    start = time.monotonic()
    counts, failures = run(args.cases, kinds, args.seed, args.timeout,
                           lambda line: print(line, file=sys.stderr, flush=True), args.keep)
    print(table(counts))
    print(f"\nseed {args.seed}, {time.monotonic() - start:.0f} s")
    for outcome in failures[:20]:
        print(f"FAILED {outcome.case.kind} #{outcome.case.index}: {outcome.failure}: "
              f"cgsc {' '.join(outcome.case.argv)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

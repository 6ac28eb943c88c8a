"""Running the launch artifacts of a bound guest ([measurement]) for real: the script and
the unit's command lines, in a private mount namespace whose /run is a fresh tmpfs (the
guest's runtime directory /run/cgsc/<name> is made there, as systemd's RuntimeDirectory=
or a supervisor would), with a stand-in emulator that hashes the boot files it is handed.

The host's own /run is never touched; the namespace ends with the batch. A machine where
no mount namespace can be made (no root, no user namespaces) skips (fails in CI).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from conftest import missing
from helpers import systemd_split, unit_values

TESTS = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(TESTS, "launch_driver.py")   # runs inside the namespace

# Stands in for QEMU: opens each boot file path it is given, as QEMU does, and records the
# path and the sha256 of what it read, one line per launch.
STAND_IN = r"""#!/bin/sh
# asked for its version (the launch script checks it first), it answers as QEMU does
[ "$1" = -version ] && { echo 'QEMU emulator version 11.1.3'; exit 0; }
log=${CGSC_LOG:?}
while [ "$#" -gt 0 ]; do
    case $1 in
        -bios|-kernel|-initrd)
            sum=$(sha256sum < "$2") || sum=unreadable
            printf '%s %s %s\n' "${1#-}" "${sum%% *}" "$2" >> "$log"
            shift
            ;;
        -drive)
            case $2 in
                *if=pflash*readonly=on*)
                    path=${2#*file=}
                    path=${path%%,*}
                    sum=$(sha256sum < "$path") || sum=unreadable
                    printf 'pflash %s %s\n' "${sum%% *}" "$path" >> "$log"
                    ;;
            esac
            shift
            ;;
    esac
    shift
done
echo launched >> "$log"
"""
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"   # systemd's default PATH


def stand_in(directory) -> str:
    """A bin directory holding the stand-in under QEMU's x86 and s390x names."""
    os.makedirs(directory, exist_ok=True)
    for name in ("qemu-system-x86_64", "qemu-system-s390x"):
        path = os.path.join(directory, name)
        with open(path, "w", encoding="ascii") as fh:
            fh.write(STAND_IN)
        os.chmod(path, 0o755)
    return str(directory)


def unit_commands(unit_text: str) -> List[List[str]]:
    """ExecStartPre= lines, then ExecStart=, each split the way systemd splits it."""
    pre = unit_values(unit_text, "Service", "ExecStartPre")
    start = unit_values(unit_text, "Service", "ExecStart")
    assert len(start) == 1, start
    return [systemd_split(line) for line in pre + start]


def launched(log) -> List[Dict[str, tuple]]:
    """The stand-in's records, one per launch: role -> (path it was given, sha256 of what
    it read). Lines are `ROLE SHA256 PATH` (the path last: it may hold spaces)."""
    if not os.path.exists(log):
        return []
    out, current = [], {}
    with open(log, encoding="utf-8") as fh:
        for line in fh.read().split("\n")[:-1]:
            if line == "launched":
                out.append(current)
                current = {}
            else:
                role, sha, path = line.split(" ", 2)
                current[role] = (path, sha)
    assert not current, "a launch record without its end"
    return out


def run_batch(name: str, commands: Sequence[Sequence[str]], env: Dict[str, str], runs: int,
              tmp, module_params: Optional[Dict[str, Dict[str, str]]] = None,
              umask: int = 0o022, dir_mode: int = 0o750, plant: Sequence[str] = (),
              signal: Optional[Dict[str, object]] = None, strict: str = "") -> List[dict]:
    """Start the guest `runs` times, each start running `commands` in order (stopping at
    the first that fails), in one private mount namespace. Each start gets a new, empty
    runtime directory (`dir_mode`, owned by the caller) holding only the files `plant`
    names. `module_params`: files to show under /sys/module/<module>/parameters/ (the
    host's SEV or TDX settings), for the unit's host checks. `signal`: {"marker": path,
    "signal": number}: once the marker file exists, the last command's process group gets
    the signal (a terminal's ^C, systemd's stop). `strict`: a directory; each command
    runs with the whole tree read-only but /dev, /proc, /sys, the runtime directory and
    that directory (ProtectSystem=strict, RuntimeDirectory=, ReadWritePaths=). Returns,
    per start: rc, stderr and what the runtime directory held afterwards (recursively)."""
    job = {"name": name, "commands": [list(c) for c in commands], "env": env, "runs": runs,
           "module_params": module_params or {}, "umask": umask, "dir_mode": dir_mode,
           "plant": list(plant), "signal": signal, "strict": str(strict) if strict else "",
           "results": os.path.join(str(tmp), f"results-{os.getpid()}.json")}
    path = os.path.join(str(tmp), "job.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(job, fh)
    prefix = [shutil.which("unshare") or missing("unshare (util-linux) is not installed"),
              "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix.append("--map-root-user")
    proc = subprocess.run(prefix + ["--", sys.executable, DRIVER, path],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode == 97:
        missing(f"no private mount namespace for the launch tests: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    with open(job["results"], encoding="utf-8") as fh:
        return json.load(fh)


# -- the swapper: another process changes a boot file as fast as it can -----------------

PAUSE = 50e-6   # between swaps: thousands a second, and a core left for the launches
RENAMED = ("rename", "fifo", "device")   # modes that rename another file over the path


def _swap(path: str, measured: bytes, other: bytes, mode: str, stop, count) -> None:
    n = 0
    if mode in RENAMED:        # another file renamed over the path (apt, cp to temp + mv)
        masters = [f"{path}.other", f"{path}.measured"]
        if mode == "fifo":
            os.mkfifo(masters[0])
        elif mode == "device":
            os.symlink("/dev/zero", masters[0])
        else:
            with open(masters[0], "wb") as fh:
                fh.write(other)
        with open(masters[1], "wb") as fh:
            fh.write(measured)
        spare = path + ".swap"
        while not stop.is_set():
            for master in masters:
                os.link(master, spare, follow_symlinks=False)
                os.rename(spare, path)
                n += 1
                time.sleep(PAUSE)
        _write_fresh(path, measured)
        for master in masters:
            os.unlink(master)
    else:                      # the same inode rewritten in place
        fd = os.open(path, os.O_WRONLY)
        try:
            while not stop.is_set():
                for data in (other, measured):
                    if mode == "truncate":   # as `cp new path` or a shell redirection does
                        os.ftruncate(fd, 0)
                    os.pwrite(fd, data, 0)
                    n += 1
                    time.sleep(PAUSE)
        finally:
            os.close(fd)
    count.value = n


def _write_fresh(path: str, data: bytes) -> None:
    with open(path + ".fresh", "wb") as fh:
        fh.write(data)
    os.rename(path + ".fresh", path)


class Swapper:
    """`with Swapper(path, measured, other, mode) as s:` changes `path` between the measured
    bytes and something else until the block ends; `s.swaps` then counts the changes. The
    path holds the measured bytes, in a file of its own, before and after. Modes: "rename"
    (other bytes renamed over it), "rewrite" (same inode, same size, rewritten in place),
    "truncate" (same inode, truncated and written again), "fifo" and "device" (a FIFO, or
    a symlink to /dev/zero, renamed over it)."""

    MODES = ("rename", "rewrite", "truncate", "fifo", "device")

    def __init__(self, path, measured: bytes, other: bytes, mode: str):
        assert mode in self.MODES and len(other) == len(measured)
        self.args = (str(path), measured, other, mode)
        self.swaps = 0

    def __enter__(self):
        _write_fresh(self.args[0], self.args[1])
        ctx = multiprocessing.get_context("fork")
        self.stop, self.count = ctx.Event(), ctx.Value("q", 0)
        self.proc = ctx.Process(target=_swap, args=self.args + (self.stop, self.count))
        self.proc.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.proc.join(30)
        assert self.proc.exitcode == 0, "the swapper failed"
        self.swaps = self.count.value
        with open(self.args[0], "rb") as fh:
            assert fh.read() == self.args[1]
        return False

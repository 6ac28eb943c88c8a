"""The read-ahead of measure.stage.read_boot_files: a thread hashes the kernel and initrd
while this one reads the firmware and does its work (Mechanism.prepare). Whatever happens
on either side, the command ends as it does without the thread: the same output when no
thread can be started, and at once, with no thread left behind, on a signal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from conftest import missing
from helpers import run_cli
from measure_helpers import FIRMWARE, spec_text, write as _write


def _guest(tmp_path, firmware, kernel: str) -> str:
    return _write(tmp_path / "g.toml", spec_text("g", "sev-snp", firmware[FIRMWARE["AmdSev"]],
                                                 cpu="EPYC-v4", kernel=kernel, initrd="initrd",
                                                 cmdline="console=ttyS0"))


def _tree(root) -> dict:
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _dirs, files in os.walk(root) if ".cgsc" not in d for f in files}


def test_with_no_thread_to_be_had_the_build_is_the_same(tmp_path, firmware):
    """Under a process limit (ulimit -u, a cgroup's pids.max) no thread can be started: the
    kernel is hashed in this thread instead, and the build is what it is without the limit
    (was: exit 3, "RuntimeError: can't start new thread")."""
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    root = os.geteuid() == 0
    if not prlimit or (root and not setpriv):
        missing("prlimit and setpriv (util-linux) are not installed")
    (tmp_path / "vmlinuz").write_bytes(os.urandom(300_000))
    (tmp_path / "initrd").write_bytes(os.urandom(100_000))
    spec = _guest(tmp_path, firmware, "vmlinuz")
    cgsc = [sys.executable, "-m", "cgsc", "build", "--no-cache"]
    free = subprocess.run(cgsc + ["-o", str(tmp_path / "free"), spec], capture_output=True,
                          text=True, timeout=120)
    assert free.returncode == 0, free.stderr
    # RLIMIT_NPROC binds a user other than root, and only without CAP_SYS_RESOURCE/ADMIN:
    # as root, the real uid becomes nobody's (the effective one, and so file access, stays)
    limit = [prlimit, "--nproc=1:1"] + ([setpriv, "--ruid=65534", "--bounding-set=-all",
                                         "--inh-caps=-all"] if root else [])
    probe = subprocess.run(limit + [sys.executable, "-c", "import threading; "
                                    "threading.Thread(target=print).start()"],
                           capture_output=True, text=True, timeout=60)
    assert "can't start new thread" in probe.stderr, probe.stderr   # the limit holds
    capped = subprocess.run(limit + cgsc + ["-o", str(tmp_path / "capped"), spec],
                            capture_output=True, text=True, timeout=120)
    assert (capped.returncode, capped.stderr.replace("/capped/", "/free/")) == (0, free.stderr)
    assert _tree(tmp_path / "capped") == _tree(tmp_path / "free")


@pytest.mark.parametrize("when", ["the firmware is read", "the firmware is measured"])
def test_a_signal_during_the_read_ahead_ends_it_at_once(tmp_path, firmware, monkeypatch, when):
    """^C or SIGTERM while this thread reads the firmware or does its work: the command
    ends with 128 + the signal without waiting for the kernel's hash (up to 1 GiB: seconds),
    and no thread is left hashing it (was: the whole kernel was read before the command
    ended, or the thread went on after it)."""
    from cgsc.cli import Interrupted
    from cgsc.core import filecache
    from cgsc.mechanisms import amd
    size = 1 << 30   # the largest boot file, sparse: seconds to hash
    with open(tmp_path / "vmlinuz", "wb") as fh:
        fh.truncate(size)
    (tmp_path / "initrd").write_bytes(b"initrd")
    spec = _guest(tmp_path, firmware, "vmlinuz")
    hashed = []   # bytes read by the other thread
    real_readv, real_read_into = os.readv, filecache.read_into

    def readv(fd, buffers):
        n = real_readv(fd, buffers)
        if threading.current_thread() is not threading.main_thread():
            hashed.append(n)
        return n

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)
    monkeypatch.setattr(os, "readv", readv)
    if when == "the firmware is read":
        monkeypatch.setattr(filecache, "read_into", lambda fd, expected, keep, *more: (
            interrupted() if keep else real_read_into(fd, expected, keep, *more)))
    else:
        monkeypatch.setattr(amd, "prepare", interrupted)
    threads = threading.active_count()
    code, _out, err = run_cli("validate", spec)
    assert (code, threading.active_count()) == (128 + signal.SIGINT, threads), err
    assert "cgsc: interrupted (SIGINT); nothing written" in err
    assert sum(hashed) < size


def test_a_path_through_a_descriptor_is_opened_in_the_order_of_the_keys(tmp_path, firmware,
                                                                       monkeypatch):
    """/dev/fd/N (/proc/self/fd/N, /dev/stdin...) opens whatever this process has open as
    N at that moment. Read in the order of the keys, the firmware is closed before the
    kernel is opened, so a kernel /dev/fd/N that nothing was handed as N is no file; a
    thread that opened it while this one held the firmware open measured the firmware
    as the kernel (was: `validate` passed or failed from run to run; here the thread's
    open is made to come while the firmware is open)."""
    from cgsc.core import filecache
    free = os.dup(0)   # the lowest free descriptor: the one the firmware is opened on
    os.close(free)
    (tmp_path / "initrd").write_bytes(b"initrd")
    spec = _guest(tmp_path, firmware, f"/dev/fd/{free}")
    image, main, threads = firmware[FIRMWARE["AmdSev"]], threading.main_thread(), []
    firmware_open, kernel_opened = threading.Event(), threading.Event()
    real_open = filecache.open_regular

    def open_regular(path, limit):
        if threading.current_thread() is not main:   # the kernel, in the thread
            firmware_open.wait(10)
            try:
                return real_open(path, limit)
            finally:
                kernel_opened.set()
        fd, st = real_open(path, limit)
        if path == image:
            assert fd == free, "the firmware was opened on another descriptor"
            if threading.active_count() > threads[0]:   # held open until the thread opened
                firmware_open.set()
                kernel_opened.wait(10)
        return fd, st
    monkeypatch.setattr(filecache, "open_regular", open_regular)
    threads.append(threading.active_count())
    code, _out, err = run_cli("validate", spec)
    assert code == 1, err
    assert f"measurement.kernel: /dev/fd/{free}: No such file or directory" in err

"""Real QEMU reads every measured boot file from an inherited descriptor, the form the launch
binding hands it (/proc/self/fd/N of a checked, unlinked copy): -bios, read-only pflash
code, -kernel and -initrd on x86, -kernel (a Secure Execution image) on s390x, in QEMU 7.2
(the oldest cgsc supports), 10.0 and 11.1. The bytes QEMU loaded are read back from guest
memory (QMP pmemsave) or shown by QEMU's own size check. /dev/fdset (-add-fd), QEMU's
other descriptor form, is refused for -bios and -kernel, which is why cgsc does not use it.

QEMU 11.1 runs in the Debian trixie root that .ci/trixie-root builds (CGSC_TRIXIE_ROOT,
default /var/cache/cgsc/trixie-root), chrooted in a private mount namespace with its own
/proc; the root itself is never written (files reach it as descriptors)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest
from conftest import missing
from qmp import ask

pytestmark = pytest.mark.stack   # runs programs of the trixie root from outside it

TRIXIE_ROOT = os.environ.get("CGSC_TRIXIE_ROOT", "/var/cache/cgsc/trixie-root")
BIOS_AT = 0xFFFF0000          # a 64 KiB BIOS ends at 4 GiB
S390_LOWCORE = 0x200           # the s390x reset writes the CPU's lowcore below this


def _bzimage(initrd_max: int) -> bytes:
    """The smallest Linux boot-protocol 2.15 header QEMU's x86 loader accepts
    (Documentation/arch/x86/boot.rst): setup_sects, "HdrS", version, LOADED_HIGH,
    initrd_addr_max."""
    k = bytearray(8192)
    k[0x1F1] = 4
    k[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", k, 0x206, 0x020F)
    k[0x211] = 0x01
    struct.pack_into("<I", k, 0x22C, initrd_max)
    return bytes(k)


class Qemu:
    """One QEMU release: `command(arch)` is the argv that starts its qemu-system-<arch>."""

    def __init__(self, version, directory=None, wrapper=(), data_dir=None):
        self.version, self.directory, self.wrapper = version, directory, list(wrapper)
        self.data_dir = data_dir

    def command(self, arch):
        name = f"qemu-system-{arch}"
        if self.directory is None:
            return self.wrapper + [name]
        path = os.path.join(self.directory, name)
        if not os.access(path, os.X_OK):
            missing(f"QEMU {self.version} has no {name} in {self.directory}")
        return [path] + (["-L", self.data_dir] if self.data_dir else [])

    def run(self, arch, args, files, qmp=(), tmp=None):
        """QEMU (TCG, paused) with `files` ({fd: bytes}) as unlinked copies on those
        descriptors, the QMP commands `qmp`, then quit; a pmemsave's filename is given as
        {"fd": N} and its dump comes back as bytes. Returns (rc, replies, stderr, dumps)."""
        fds, dumps = [], {}
        for fd, data in files.items():
            path = os.path.join(tmp, f"copy-{fd}")
            with open(path, "wb") as fh:
                fh.write(data)
            fds.append((fd, os.open(path, os.O_RDONLY)))
            os.unlink(path)
        commands = []
        for c in qmp:
            if c["execute"] == "pmemsave":
                fd = c["arguments"]["filename"]["fd"]
                dumps[fd] = os.path.join(tmp, f"dump-{fd}")
                fds.append((fd, os.open(dumps[fd], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)))
                c = {"execute": "pmemsave",
                     "arguments": {**c["arguments"], "filename": f"/proc/self/fd/{fd}"}}
            commands.append(c)
        machine = "q35" if arch == "x86_64" else "s390-ccw-virtio"
        argv = self.command(arch) + ["-nodefaults", "-display", "none", "-accel", "tcg",
                                     "-machine", machine, "-S", "-qmp", "stdio"] + args
        try:
            answer = ask(argv, commands, timeout=60, pass_fds=[fd for fd, _real in fds],
                         preexec_fn=lambda: _place(fds))
        finally:
            for _fd, real in fds:
                os.close(real)
        out = {}
        for fd, path in dumps.items():
            with open(path, "rb") as fh:
                out[fd] = fh.read()
        return answer.returncode, answer.replies, answer.stderr, out


def _place(fds):
    """In the child: each file on the descriptor the launch binding would use."""
    import fcntl
    high = [(fd, fcntl.fcntl(real, fcntl.F_DUPFD, 100)) for fd, real in fds]   # no clash
    for fd, real in high:
        os.dup2(real, fd)   # dup2 leaves the new descriptor open across exec


@pytest.fixture(params=["7.2", "10.0", "11.1"])
def qemu(request, qemu72):
    if request.param == "7.2":
        path = qemu72("qemu-system-x86_64")
        data = os.path.join(os.path.dirname(os.path.dirname(path)), "share", "qemu")
        return Qemu("7.2", os.path.dirname(path),
                    data_dir=data if os.path.isdir(os.path.join(data, "keymaps")) else None)
    if request.param == "10.0":
        path = shutil.which("qemu-system-x86_64")
        out = subprocess.run([path, "-version"], capture_output=True, text=True).stdout if path else ""
        if not out.startswith("QEMU emulator version 10.0."):
            missing("QEMU 10.0 is not on PATH (.ci/run installs it from backports)")
        return Qemu("10.0", os.path.dirname(path))
    if not os.path.exists(os.path.join(TRIXIE_ROOT, ".cgsc-stamp")):
        missing(f"no Debian trixie root with QEMU 11.1 at {TRIXIE_ROOT} (.ci/trixie-root builds it)")
    unshare = shutil.which("unshare") or missing("unshare (util-linux) is not installed")
    wrapper = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        wrapper += ["--map-root-user", "--pid", "--fork"]
    wrapper += ["--", "sh", "-c", 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"',
                TRIXIE_ROOT]
    q = Qemu("11.1", wrapper=wrapper)
    probe = subprocess.run(q.command("x86_64") + ["-version"], capture_output=True, text=True)
    if not probe.stdout.startswith("QEMU emulator version 11.1."):
        missing(f"cannot run QEMU 11.1 in {TRIXIE_ROOT}: {probe.stderr.strip()}")
    return q


def test_bios_kernel_and_initrd_are_read_from_inherited_descriptors(qemu, tmp_path):
    bios = bytes((i * 7 + 3) & 0xFF for i in range(64 << 10))
    rc, replies, err, dumps = qemu.run(
        "x86_64", ["-bios", "/proc/self/fd/3", "-kernel", "/proc/self/fd/4",
                   "-initrd", "/proc/self/fd/5"],
        {3: bios, 4: _bzimage(0x37FFFFFF), 5: b"initrd" * 1000},
        [{"execute": "pmemsave", "arguments": {"val": BIOS_AT, "size": len(bios),
                                                "filename": {"fd": 9}}}], tmp=str(tmp_path))
    assert rc == 0, err
    assert not [r for r in replies if "error" in r], replies
    assert dumps[9] == bios


def test_the_kernel_and_initrd_bytes_are_the_descriptors(qemu, tmp_path):
    """QEMU's own check of the initrd against the kernel header's initrd_addr_max reads
    both: a header limit of 4095 and a 6000-byte initrd, as read through the descriptors."""
    rc, _replies, err, _d = qemu.run(
        "x86_64", ["-kernel", "/proc/self/fd/4", "-initrd", "/proc/self/fd/5"],
        {4: _bzimage(4095), 5: b"initrd" * 1000}, tmp=str(tmp_path))
    assert rc == 1 and "initrd is too large" in err and "(max: 4095, need 6000)" in err, err


def test_pflash_code_is_read_from_an_inherited_descriptor(qemu, tmp_path):
    code = bytes((i * 13 + 1) & 0xFF for i in range(128 << 10))
    rc, replies, err, dumps = qemu.run(
        "x86_64", ["-drive", "if=pflash,format=raw,unit=0,file=/proc/self/fd/3,readonly=on"],
        {3: code}, [{"execute": "pmemsave", "arguments": {"val": (1 << 32) - len(code),
                                                           "size": len(code),
                                                           "filename": {"fd": 9}}}],
        tmp=str(tmp_path))
    assert rc == 0, err
    assert not [r for r in replies if "error" in r], replies
    assert dumps[9] == code


def test_an_s390x_image_is_read_from_an_inherited_descriptor(qemu, tmp_path):
    image = os.urandom(64 << 10)
    rc, replies, err, dumps = qemu.run(
        "s390x", ["-kernel", "/proc/self/fd/3"], {3: image},
        [{"execute": "pmemsave", "arguments": {"val": 0, "size": len(image),
                                                "filename": {"fd": 9}}}], tmp=str(tmp_path))
    assert rc == 0, err
    assert not [r for r in replies if "error" in r], replies
    assert dumps[9][S390_LOWCORE:] == image[S390_LOWCORE:]


def test_dev_fdset_is_refused_for_bios_and_kernel(qemu, tmp_path):
    """-add-fd/ /dev/fdset/N works only where QEMU opens files with qemu_open (block
    devices): the BIOS and kernel loaders open paths themselves."""
    rc, _r, err, _d = qemu.run("x86_64", ["-add-fd", "fd=3,set=1", "-bios", "/dev/fdset/1"],
                               {3: bytes(64 << 10)}, tmp=str(tmp_path))
    assert rc == 1 and "could not load PC BIOS '/dev/fdset/1'" in err, err
    rc, _r, err, _d = qemu.run("x86_64", ["-add-fd", "fd=4,set=2", "-kernel", "/dev/fdset/2"],
                               {4: _bzimage(0x37FFFFFF)}, tmp=str(tmp_path))
    assert rc == 1 and "could not open kernel file '/dev/fdset/2'" in err, err

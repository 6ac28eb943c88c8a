"""Today's stack: the Debian 13 (trixie) root that .ci/trixie-root builds, with QEMU 11.1 and
libvirt 12.9 from trixie-backports and trixie's systemd 257.

How the tests run a program of the root: one private namespace per session. A holder
process (`unshare --mount --pid --fork --kill-child`) mounts, only in its own mount
namespace, a tmpfs holding an overlay of the root (the cached root is the read-only
lower layer: nothing a test or a daemon writes reaches it), a fresh /proc, a /dev
of its own (QEMU uses /dev/kvm), /sys read-only, empty /tmp and /run, and pytest's temporary
directory at its own path. Programs are then started in that namespace with
`nsenter -t HOLDER -m -p chroot MERGED ...`. The holder is PID 1 of its PID namespace (reaping
orphans, as an init must) and waits on a pipe from pytest: when the session ends (or pytest dies) it exits, and the
kernel kills whatever still runs in the namespace (libvirtd, a QEMU) and drops the
mounts with it. Nothing is left to clean up on the host.

CGSC_TRIXIE_ROOT names the root (default /var/cache/cgsc/trixie-root); without it the
tests skip with a one-line reason, and fail when CI is set (conftest.missing). The fixture
`trixie` (tests/conftest.py) is a RootNamespace for the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

from conftest import missing

DEFAULT_ROOT = "/var/cache/cgsc/trixie-root"
# what the tests use from the root (.ci/trixie-root installs them)
NEEDED = ("usr/bin/qemu-system-x86_64", "usr/bin/qemu-system-ppc64", "usr/bin/qemu-system-s390x",
          "usr/sbin/libvirtd", "usr/bin/virsh", "usr/lib/systemd/systemd",
          "usr/share/doc/qemu-system-common/interop/qemu-qmp-ref.html")
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

MOUNTS = textwrap.dedent(r"""
    set -e
    root=$1 mnt=$2 share=$3
    mount --make-rprivate /
    mount -t tmpfs -o mode=0755 cgsc-stack "$mnt"
    mkdir "$mnt/upper" "$mnt/work" "$mnt/root"
    mount -t overlay overlay -o "lowerdir=$root,upperdir=$mnt/upper,workdir=$mnt/work" "$mnt/root"
    r=$mnt/root
    mount -t proc proc "$r/proc"
    # a private /dev: the nodes QEMU and libvirt use, /dev/kvm owned by the root's kvm group
    # (libvirt's QEMU user must open it, or libvirtd re-probes QEMU at every call)
    mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
    mknod -m 666 "$r/dev/null" c 1 3; mknod -m 666 "$r/dev/zero" c 1 5
    mknod -m 666 "$r/dev/full" c 1 7; mknod -m 666 "$r/dev/random" c 1 8
    mknod -m 666 "$r/dev/urandom" c 1 9; mknod -m 666 "$r/dev/tty" c 5 0
    if [ -c /dev/kvm ]; then
        mknod -m 660 "$r/dev/kvm" c 10 232
        chgrp "$(awk -F: '$1 == "kvm" { print $3 }' "$root/etc/group")" "$r/dev/kvm"
    fi
    mkdir "$r/dev/net" "$r/dev/pts" "$r/dev/shm"
    mknod -m 666 "$r/dev/net/tun" c 10 200
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$r/dev/pts"
    ln -s pts/ptmx "$r/dev/ptmx"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
    ln -s /proc/self/fd "$r/dev/fd"
    mount --rbind -o ro /sys "$r/sys" 2>/dev/null || mount --rbind /sys "$r/sys"
    mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
    mount -t tmpfs -o mode=0755 tmpfs "$r/run"
    mkdir -p "$r$share" && mount --bind "$share" "$r$share"
""")
# PID 1 of the namespace: mounts, says ready, then reaps every orphan (QEMU daemonizes when
# libvirt probes it: an unreaped zombie would keep libvirt waiting) until stdin closes.
HOLDER = textwrap.dedent(r"""
    import os, select, subprocess, sys
    subprocess.run(["sh", "-c", sys.argv[1]] + sys.argv[2:], check=True)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0.5)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
""")



class RootNamespace:
    """The root, mounted privately, and a way to run its programs."""

    def __init__(self, root: str, share: str, workdir: str):
        self.root = root
        self.merged = os.path.join(workdir, "root")
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--",
             sys.executable, "-c", HOLDER, MOUNTS, "mounts", root, workdir, share],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.holder.kill()
            missing(f"cannot mount the trixie root in a private namespace here: "
                    f"{(self.holder.stderr.read() or line).strip()[:200]}")
        # the namespace's PID 1 (the reaper), whose namespaces nsenter joins
        out = subprocess.run(["pgrep", "-P", str(self.holder.pid)], capture_output=True, text=True)
        self.pid = int(out.stdout.split()[0])

    def argv(self, argv, env=()) -> list:
        return (["nsenter", "-t", str(self.pid), "-m", "-p", "--", "chroot", self.merged,
                 "/usr/bin/env", "-i", PATH, "LC_ALL=C.UTF-8", "HOME=/root"]
                + list(env) + list(argv))

    def run(self, argv, env=(), timeout=120, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv, env), capture_output=True, text=True,
                              timeout=timeout, **kw)

    def close(self):
        if self.holder.poll() is None:
            self.holder.stdin.close()
            try:
                self.holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()


def trixie_root_path() -> str:
    root = os.environ.get("CGSC_TRIXIE_ROOT") or DEFAULT_ROOT
    if not os.path.isfile(os.path.join(root, ".cgsc-stamp")):
        missing(f"no trixie root at {root} (build it with .ci/trixie-root; set CGSC_TRIXIE_ROOT)")
    absent = [f for f in NEEDED if not os.path.exists(os.path.join(root, f))]
    if absent:
        missing(f"the trixie root at {root} lacks {', '.join(absent)} (rebuild: .ci/trixie-root)")
    return root


def open_namespace(share: str, workdir: str) -> RootNamespace:
    root = trixie_root_path()
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        missing("the stack tests mount the trixie root in a private namespace: they need "
                "root, unshare and nsenter")
    return RootNamespace(root, share, workdir)


# -- cgsc's plans as the trixie-backports host gets them ------------------------------------

PROFILE = "debian-13-backports"   # the shipped profile of this root's QEMU and libvirt


def backports_plan(spec: str, move_under: str = ""):
    """The spec's plan built with --host debian-13-backports (machine pinned, argv in QEMU
    11.1's forms), every host path moved under `move_under` (characters kept)."""
    from cgsc.host.profile import load as load_profile
    from cgsc.host.profile import pinned_machine, qemu_for
    from cgsc.lower.lowering import lower
    from cgsc.spec.model import normalize
    from cgsc.spec.source import load
    host = load_profile(PROFILE)
    g = normalize(load(spec).data)
    move = (lambda p: move_under + p if p else p)
    g = g._replace(
        machine=pinned_machine(host, g.arch, g.machine) or g.machine,
        firmware_code=move(g.firmware_code), firmware_vars=move(g.firmware_vars),
        kernel_image=move(g.kernel_image), kernel_initrd=move(g.kernel_initrd),
        disks=tuple(d._replace(path=move(d.path)) for d in g.disks),
        console_path=move(g.console_path), qmp_socket=move(g.qmp_socket),
        runtime_dir=move(g.runtime_dir))
    return lower(g, spec, [], qemu_version=qemu_for(host, g.arch)["version"])


def run_qemu(ns: RootNamespace, argv, timeout=60) -> subprocess.CompletedProcess:
    """QEMU of the root, stopped before the guest runs (-S), told to quit over a QMP monitor
    written in QEMU 11.1's form (-object monitor-qmp, not the deprecated -mon)."""
    from helpers import run_qemu_quit
    return run_qemu_quit(argv, "-S", "-object", wrap=ns.argv, timeout=timeout)

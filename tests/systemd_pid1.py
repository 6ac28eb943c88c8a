"""systemd as PID 1 of private namespaces, for tests that run a generated unit under a real
service manager on a machine whose own PID 1 is not systemd (a CI container).

`Booted(root, share, workdir)` starts, from a new cgroup under the machine's cgroup2
hierarchy, `unshare --pid --mount --cgroup --fork --kill-child`, whose first process mounts
a private world and then becomes systemd:
- root "/" (the machine's own systemd): the machine's file system, with private /run,
  /tmp, /srv, /var/log, /var/lib/systemd, /usr/local/bin and /dev; units go to
  /run/systemd/system (runtime units), so nothing of the machine changes;
- any other root (the trixie root's systemd 257): an overlay of it with a tmpfs upper
  layer, so the cached root never changes, then chroot.
Both get a /dev of their own (/dev/kvm, /dev/net/tun, a stand-in /dev/sev node: there is no
SEV here), a read-only /sys and /proc/sys, a cgroup2 hierarchy rooted at the namespace's
cgroup, stand-in kvm_amd module parameters under /sys/module, pytest's temporary directory
at its own path, and masks for the units that would touch the machine. `systemctl` and
friends run through `nsenter` into its namespaces and root. `stop()` kills the namespace's
unshare: --kill-child takes systemd, and with it every process of the namespace; the
cgroup is removed once empty.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time

MASKED = """systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service
systemd-tmpfiles-setup-dev-early.service systemd-tmpfiles-clean.timer
systemd-tmpfiles-clean.service systemd-sysctl.service systemd-modules-load.service
systemd-binfmt.service systemd-udevd.service systemd-udev-trigger.service
systemd-udev-settle.service systemd-timesyncd.service systemd-pstore.service
systemd-random-seed.service systemd-remount-fs.service systemd-journal-flush.service
systemd-hwdb-update.service ldconfig.service systemd-firstboot.service
systemd-machine-id-commit.service getty@tty1.service console-getty.service
e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer
e2scrub_all.timer fstrim.timer man-db.timer networking.service systemd-networkd.service
systemd-resolved.service systemd-logind.service systemd-hostnamed.service
systemd-journald-audit.socket systemd-update-utmp.service""".split()

INNER = textwrap.dedent(r"""
    set -e
    root=$1 mnt=$2 share=$3 masked=$4
    mount --make-rprivate /
    if [ "$root" = / ]; then
        r=
        mount -t proc proc /proc
        # what the service manager and the unit write (LogsDirectory=, timers) stays here
        mount -t tmpfs -o mode=0755 tmpfs /var/log
        mount -t tmpfs -o mode=0755 tmpfs /var/lib/systemd
    else
        mount -t tmpfs -o mode=0755 cgsc-pid1 "$mnt"
        mkdir "$mnt/upper" "$mnt/work" "$mnt/root"
        mount -t overlay overlay -o "lowerdir=$root,upperdir=$mnt/upper,workdir=$mnt/work" "$mnt/root"
        r=$mnt/root
        mount -t proc proc "$r/proc"
        mount --rbind /sys "$r/sys"
    fi
    # pytest's directory is under /tmp: held under /srv while /tmp is covered, then put back
    mount -t tmpfs -o mode=0755 tmpfs "$r/srv"
    mkdir "$r/srv/.share" && mount --bind "$share" "$r/srv/.share"
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$r/run"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/tmp"
    mount -t tmpfs -o mode=0755 tmpfs "$r/usr/local/bin"   # where a test puts a stand-in
    mkdir -p "$r$share" && mount --bind "$r/srv/.share" "$r$share"
    # read-only /proc/sys and /sys, as in a container: systemd-sysctl, udev and binfmt skip
    mount --bind "$r/proc/sys" "$r/proc/sys" && mount -o remount,bind,ro "$r/proc/sys"
    mount -o remount,bind,ro "$r/sys"
    mount -t cgroup2 -o nsdelegate cgroup2 "$r/sys/fs/cgroup"
    mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
    d=$r/dev
    mknod -m 666 "$d/null" c 1 3; mknod -m 666 "$d/zero" c 1 5; mknod -m 666 "$d/full" c 1 7
    mknod -m 666 "$d/random" c 1 8; mknod -m 666 "$d/urandom" c 1 9; mknod -m 666 "$d/tty" c 5 0
    mknod -m 600 "$d/console" c 1 3
    mknod -m 660 "$d/kvm" c 10 232; mkdir "$d/net"; mknod -m 666 "$d/net/tun" c 10 200
    mknod -m 600 "$d/sev" c 10 124            # stand-in: no SEV here (opening it gives ENXIO)
    mknod -m 666 "$d/cgsc-denied" c 10 200    # a node no DeviceAllow= names (a tun, opens for anyone)
    mkdir "$d/pts" "$d/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$d/pts"; ln -s pts/ptmx "$d/ptmx"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d/shm"
    ln -s /proc/self/fd "$d/fd"; ln -s /proc/self/fd/0 "$d/stdin"
    ln -s /proc/self/fd/1 "$d/stdout"; ln -s /proc/self/fd/2 "$d/stderr"
    # stand-in kvm_amd parameters: SEV, SEV-ES and SEV-SNP on, debug_swap off
    mount -t tmpfs -o mode=0755 tmpfs "$r/sys/module"
    mkdir -p "$r/sys/module/kvm_amd/parameters"
    for p in sev sev_es sev_snp; do echo Y > "$r/sys/module/kvm_amd/parameters/$p"; done
    echo N > "$r/sys/module/kvm_amd/parameters/debug_swap"
    mkdir -p "$r/run/systemd/system"
    for u in $masked; do ln -sf /dev/null "$r/run/systemd/system/$u"; done
    printf '[Unit]\nDescription=cgsc test target\nRequires=basic.target\nAfter=basic.target\n' \
        > "$r/run/systemd/system/cgsc-test.target"
    [ "$root" = / ] || chroot "$r" useradd --system --no-create-home cgsc-guest
    exec env -i container=cgsc-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        chroot "${r:-/}" /lib/systemd/systemd --system --unit=cgsc-test.target \
        --log-target=journal --show-status=no
""")


def cgroup2_root() -> str:
    if open("/proc/self/mountinfo").read().find(" - cgroup2 ") < 0:
        raise OSError("no cgroup2 hierarchy on this machine")
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(path, "cgroup.procs")) and \
                subprocess.run(["stat", "-fc", "%T", path], capture_output=True,
                               text=True).stdout.strip() == "cgroup2fs":
            return path
    raise OSError("no cgroup2 hierarchy mounted at /sys/fs/cgroup(/unified)")


class Booted:
    def __init__(self, root: str, share: str, workdir: str, log: str):
        self.root = root
        self.cgroup = os.path.join(cgroup2_root(), f"cgsc-pid1-{os.getpid()}-{len(os.listdir(workdir))}")
        os.mkdir(self.cgroup)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec unshare --pid '
                 '--mount --cgroup --fork --kill-child --propagation private -- sh -c "$@"',
                 "boot", self.cgroup, INNER, "inner", root, workdir, share, " ".join(MASKED)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.log = log
        self.pid = None
        for _ in range(60):
            time.sleep(0.5)
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            if kids and os.readlink(f"/proc/{kids[0]}/exe").endswith("/systemd"):
                self.pid = int(kids[0])
                break
            if self.proc.poll() is not None:
                break
        if self.pid is None:
            self.stop()
            raise OSError("systemd did not start: " + open(log, errors="replace").read()[-800:])

    def argv(self, argv) -> list:
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "-r", "-w", "--",
                "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"] + list(argv)

    def run(self, *argv, timeout=120, check=False) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, (argv, result.stdout, result.stderr)
        return result

    def wait_running(self, timeout=120) -> str:
        state = ""
        for _ in range(timeout * 2):
            state = self.run("systemctl", "is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.5)
        return state

    def show(self, unit, *props) -> dict:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props), check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()   # unshare: --kill-child takes systemd and the whole namespace
            self.proc.wait()
        for _ in range(40):
            try:
                os.rmdir(self.cgroup)   # its child cgroups first, deepest first
                return
            except OSError:
                for top, dirs, _files in sorted(os.walk(self.cgroup), reverse=True):
                    for d in dirs:
                        try:
                            os.rmdir(os.path.join(top, d))
                        except OSError:
                            pass
                time.sleep(0.25)

"""The generated unit under a real service manager: systemd as PID 1 of private namespaces
(tests/systemd_pid1.py), trixie's systemd 257 (in the trixie root) and this machine's own
(Debian 12's 252). Each installs the unit, `systemctl enable --now`, checks the sandbox
facts, stops the guest through QMP, restarts it, and sees a refused launch (a tampered
kernel, refused by the launch binding in ExecStart=) end in `failed` after a bounded
number of tries.

Two emulators, both labelled stand-ins (no confidential guest boots without SEV hardware):
- a stand-in QEMU (a sh script first on systemd's PATH) that records what it was given and
  what its sandbox lets it do, and serves the stop channel as QEMU would (it leaves on
  system_powerdown); the unit itself is unchanged;
- real QEMU under TCG, through a drop-in that removes the confidential object (the
  machine's link to it, and its firmware: OVMF.amdsev boots -kernel only on the SEV
  measured-boot path, so SeaBIOS does) and runs `-accel tcg,split-wx=on`
  (MemoryDenyWriteExecute=yes forbids TCG's default JIT mapping): Debian's kernel with a
  tiny busybox initramfs, which powers off when the ACPI power button is pressed, i.e. on
  QMP system_powerdown.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import re
import shutil
import time

import pytest
from conftest import IN_CI, missing
from helpers import run_cli

from cgsc.core.escape import systemd_exec_line

pytestmark = pytest.mark.stack   # runs programs of the trixie root from outside it

NAME = "pid1-guest"
LAUNCH = f"/srv/cgsc/{NAME}"           # where the unit finds the boot files (private /srv)
UNIT = f"{NAME}.service"
STOP_TIMEOUT = 30

STAND_IN = r"""#!/bin/sh
# cgsc test stand-in for QEMU (no SEV here): records its argv and what its sandbox allows,
# then serves the stop channel as QEMU's pipe chardev would, leaving on system_powerdown.
facts=/var/log/cgsc/pid1-guest/stand-in.facts   # LogsDirectory=: kept after a stop
{
    printf 'uid=%s\n' "$(id -u)"
    printf 'argv=%s\n' "$*"
    touch /usr/cgsc-probe 2>/dev/null && echo 'usr=writable' || echo 'usr=read-only'
    printf 'tmp=%s\n' "$(ls -A /tmp | tr '\n' ' ')"
    (: < /dev/cgsc-denied) 2>/dev/null && echo 'denied-node=opened' || echo 'denied-node=refused'
    (: < /dev/null) 2>/dev/null && echo 'null=opened' || echo 'null=refused'
    (: < /dev/sev) 2>&1 | grep -q 'Operation not permitted' && echo 'sev=refused' || echo 'sev=allowed'
} > "$facts.tmp" && mv "$facts.tmp" "$facts"
for a in "$@"; do
    case $a in pipe,id=stop0,path=*) stop=${a#pipe,id=stop0,path=} ;; esac
done
while :; do
    while IFS= read -r line; do
        case $line in *system_powerdown*) echo powerdown >> "$facts"; exit 0 ;; esac
    done < "$stop.in"
done
"""

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox insmod /button.ko
/bin/busybox insmod /evdev.ko
echo cgsc-guest-up
for e in /sys/class/input/event*; do
    /bin/busybox grep -q 'Power Button' "$e/device/name" && dev=/dev/input/${e##*/}
done
[ -n "$dev" ] || { echo 'cgsc-guest: no power button'; /bin/busybox sleep 3600; }
/bin/busybox dd if="$dev" bs=24 count=1 of=/dev/null 2>/dev/null
echo cgsc-guest-powerdown
/bin/busybox poweroff -f
"""


def _cpio(files) -> bytes:
    """A newc cpio archive (what the kernel unpacks as an initramfs): (name, mode, data)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(files + [("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        head = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0))
        out.write(head.encode() + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))
    return gzip.compress(out.getvalue(), mtime=0)


def _module(root, name) -> bytes:
    d = os.path.join(root, "var/lib/cgsc/guest-modules")
    found = [f for f in os.listdir(d) if f.startswith(name + ".ko")]
    data = open(os.path.join(d, found[0]), "rb").read()
    return lzma.decompress(data) if found[0].endswith(".xz") else data


def _boot_files(trixie_root, dest):
    """Firmware (OVMF with SEV support), Debian's kernel, and an initramfs made here."""
    fw = os.path.join(trixie_root, "usr/share/ovmf/OVMF.amdsev.fd")
    kernel = os.path.join(trixie_root, "var/lib/cgsc/vmlinuz")
    needed = (fw, kernel, os.path.join(trixie_root, "usr/bin/busybox"),
              os.path.join(trixie_root, "var/lib/cgsc/guest-modules"))
    if not all(os.path.exists(p) for p in needed):
        missing(f"the trixie root at {trixie_root} lacks OVMF.amdsev.fd, busybox or the guest "
                "kernel (a root from before they were added: rerun .ci/trixie-root)")
    os.makedirs(dest)
    shutil.copy(fw, os.path.join(dest, "OVMF.fd"))
    shutil.copy(kernel, os.path.join(dest, "vmlinuz"))
    busybox = open(os.path.join(trixie_root, "usr/bin/busybox"), "rb").read()
    with open(os.path.join(dest, "initrd"), "wb") as fh:
        fh.write(_cpio([("bin", 0o40755, b""), ("bin/busybox", 0o100755, busybox),
                        ("init", 0o100755, INIT.encode()),
                        ("button.ko", 0o100644, _module(trixie_root, "button")),
                        ("evdev.ko", 0o100644, _module(trixie_root, "evdev"))]))


def _spec(measured, user) -> str:
    q = json.dumps
    return f"""spec-version = 1
[guest]
name = "{NAME}"
cpu = "EPYC-v4"
memory = 512
[firmware]
code = {q(LAUNCH + '/OVMF.fd')}
[kernel]
image = {q(LAUNCH + '/vmlinuz')}
initrd = {q(LAUNCH + '/initrd')}
cmdline = "console=ttyS0 panic=-1 quiet"
[confidential.sev-snp]
cbitpos = 51
reduced-phys-bits = 1
kernel-hashes = true
[console]
serial = "file"
path = "/var/log/cgsc/{NAME}/console.log"
[targets.systemd]
user = "{user}"
stop-timeout = {STOP_TIMEOUT}
[measurement]
firmware = {q(measured + '/OVMF.fd')}
kernel = {q(measured + '/vmlinuz')}
initrd = {q(measured + '/initrd')}
guest-features = 0x1
"""


STACKS = {
    # stack -> (spec user, --host profile whose QEMU the root has, where units go)
    "trixie-systemd-257": ("cgsc-guest", "debian-13-backports", "/etc/systemd/system"),
    "host-systemd": ("nobody", "debian-12-backports", "/run/systemd/system"),
}


class Guest:
    def __init__(self, stack, booted, out, measured):
        self.stack, self.sd, self.out, self.measured = stack, booted, out, measured
        self.user, self.profile, self.unit_dir = STACKS[stack]
        self.enable = ["enable", "--now"] + (["--runtime"] if self.unit_dir.startswith("/run")
                                             else [])

    def sh(self, script, check=True):
        return self.sd.run("sh", "-c", script, check=check)

    def state(self) -> dict:
        return self.sd.show(UNIT, "ActiveState", "SubState", "Result", "MainPID", "NRestarts",
                            "ExecMainStatus")

    def wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pred()
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"{self.stack}: timed out waiting for {what}: {self.state()}\n"
                             + self.sd.run("journalctl", "-u", UNIT, "-o", "cat",
                                           "--no-pager").stdout[-3000:])

    def read(self, path) -> str:
        return self.sd.run("cat", path).stdout


@pytest.fixture(scope="module", params=sorted(STACKS))
def guest(request, tmp_path_factory):
    from systemd_pid1 import Booted
    from trixie_root import trixie_root_path
    stack = request.param
    trixie = trixie_root_path()
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        missing("booting systemd in private namespaces needs root, unshare and nsenter")
    root = trixie if stack.startswith("trixie") else "/"
    if root == "/" and not os.path.exists("/lib/systemd/systemd"):
        missing("this machine has no systemd to boot (/lib/systemd/systemd)")
    base = tmp_path_factory.getbasetemp()
    work = tmp_path_factory.mktemp(stack)
    measured = str(work / "measured")
    _boot_files(trixie, measured)
    spec = work / "g.toml"
    spec.write_text(_spec(measured, STACKS[stack][0]))
    code, _out, err = run_cli("build", "--host", STACKS[stack][1], "-o", str(work / "out"),
                              str(spec))
    assert code == 0, err
    try:
        booted = Booted(root, str(base), str(tmp_path_factory.mktemp("pid1")),
                        str(work / "systemd.log"))
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"cannot boot systemd in private namespaces here: {exc}")
        pytest.skip(f"cannot boot systemd in private namespaces here: {str(exc)[:200]}")
    try:
        state = booted.wait_running()
        assert state in ("running", "degraded"), (state, booted.run(
            "systemctl", "--failed", "--no-legend").stdout)
        g = Guest(stack, booted, work / "out" / NAME, measured)
        g.sh(f"mkdir -p {LAUNCH} && cp {measured}/OVMF.fd {measured}/vmlinuz {measured}/initrd "
             f"{LAUNCH}/ && cp {g.out}/{UNIT} {g.unit_dir}/ && touch /tmp/cgsc-outside-marker")
        yield g
    finally:
        booted.stop()


def test_systemd_is_the_expected_one(guest):
    version = guest.sd.run("systemctl", "--version", check=True).stdout.split()[1]
    assert int(version) >= (257 if guest.stack.startswith("trixie") else 252), version


def test_enable_now_starts_the_guest_inside_its_sandbox(guest):
    """With the stand-in emulator (the unit unchanged): the sandbox facts hold."""
    guest.sh(f"printf '%s' {_sh_quote(STAND_IN)} > /usr/local/bin/qemu-system-x86_64 && "
             "chmod 0755 /usr/local/bin/qemu-system-x86_64")
    guest.sd.run("systemctl", "daemon-reload", check=True)
    guest.sd.run("systemctl", *guest.enable, UNIT, check=True)
    facts_path = f"/var/log/cgsc/{NAME}/stand-in.facts"
    facts = guest.wait_for(lambda: _facts(guest.read(facts_path)), 60, "the stand-in's facts")
    assert guest.state()["ActiveState"] == "active"
    assert guest.sd.run("systemctl", "is-enabled", UNIT).stdout.strip() in (
        "enabled", "enabled-runtime")
    uid = guest.sd.run("id", "-u", guest.user, check=True).stdout.strip()
    assert facts["uid"] == uid, "User="
    assert facts["usr"] == "read-only", "ProtectSystem=strict"
    assert facts["tmp"].strip() == "", "PrivateTmp=yes: the namespace's /tmp marker is not seen"
    assert facts["denied-node"] == "refused", "DevicePolicy=closed"
    assert facts["null"] == "opened" and facts["sev"] == "allowed", "DeviceAllow="
    assert facts["argv"] == " ".join(_qemu_words(guest)[1:]), "the unit's QEMU argv"


def test_stop_goes_through_qmp_within_the_timeout(guest):
    started = time.monotonic()
    guest.sd.run("systemctl", "stop", UNIT, check=True, timeout=STOP_TIMEOUT + 30)
    took = time.monotonic() - started
    assert "powerdown" in guest.read(f"/var/log/cgsc/{NAME}/stand-in.facts").split()
    state = guest.state()
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
    assert took < STOP_TIMEOUT, took


def test_restart_starts_a_new_emulator(guest):
    guest.sd.run("systemctl", "start", UNIT, check=True)
    first = guest.wait_for(lambda: guest.state()["MainPID"] != "0" and guest.state()["MainPID"],
                           30, "a main process")
    guest.sd.run("systemctl", "restart", UNIT, check=True, timeout=STOP_TIMEOUT + 30)
    second = guest.wait_for(lambda: guest.state()["MainPID"] != "0" and guest.state()["MainPID"],
                            30, "a main process")
    assert second != first and guest.state()["ActiveState"] == "active"


def test_a_refused_launch_ends_failed_after_a_bounded_number_of_tries(guest):
    """A tampered kernel: ExecStartPre= refuses it, Restart= tries again every RestartSec=,
    and StartLimitBurst= starts within StartLimitIntervalSec= leave the unit failed."""
    guest.sd.run("systemctl", "stop", UNIT, check=True, timeout=STOP_TIMEOUT + 30)
    guest.sh(f"printf X | dd of={LAUNCH}/vmlinuz bs=1 seek=4096 conv=notrunc 2>/dev/null")
    guest.sd.run("systemctl", "reset-failed", UNIT)
    guest.sd.run("systemctl", "start", "--no-block", UNIT, check=True)
    unit = open(os.path.join(guest.out, UNIT)).read()
    burst = int(re.search(r"^StartLimitBurst=(\d+)$", unit, re.M).group(1))
    pause = int(re.search(r"^RestartSec=(\d+)s$", unit, re.M).group(1))

    def journal():
        return guest.sd.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout

    started = time.monotonic()
    guest.wait_for(lambda: "Start request repeated too quickly." in journal(),
                   burst * pause + 60, "the start limit")
    took = time.monotonic() - started
    state = guest.state()
    assert state["ActiveState"] == "failed", state
    # the first start and burst-1 restarts ran ExecStartPre=; the next restart was refused
    assert journal().count("but the launch measurement was computed for sha256") == burst
    assert int(state["NRestarts"]) == burst, state
    time.sleep(2 * pause)
    assert guest.state()["ActiveState"] == "failed", "it stays failed"
    assert took < burst * pause + 30, took
    guest.sh(f"cp {guest.measured}/vmlinuz {LAUNCH}/vmlinuz")
    guest.sd.run("systemctl", "reset-failed", UNIT)


def test_real_qemu_under_tcg_boots_and_powers_down_through_qmp(guest):
    """Stand-in: the unit's own argv without the confidential object, under TCG."""
    guest.sh("rm -f /usr/local/bin/qemu-system-x86_64")
    unit = open(os.path.join(guest.out, UNIT)).read()
    from helpers import exec_start
    words = exec_start(unit)
    argv = _qemu_words(guest)
    binding = words[:len(words) - len(argv)]   # the launch binding stays: QEMU reads its copies
    argv[0] = "/usr/bin/qemu-system-x86_64"
    i = argv.index("-object")
    assert argv[i + 1].startswith("sev-snp-guest,")
    del argv[i:i + 2]
    argv[argv.index("-accel") + 1] = "tcg,split-wx=on"
    m = argv.index("-machine") + 1
    argv[m] = ",".join(p for p in argv[m].split(",") if not p.startswith("confidential-guest"))
    argv[argv.index("-cpu") + 1] = "qemu64"   # TCG has no EPYC-v4 features to offer
    b = argv.index("-bios")   # OVMF.amdsev runs -kernel only on its SEV measured-boot path
    del argv[b:b + 2]         # (without SEV it looks for GRUB): SeaBIOS boots the kernel
    dropin = ("# cgsc test stand-in: no SEV-SNP here, so no confidential object (nor its "
              "firmware), and TCG\n"
              "[Service]\nExecStart=\nExecStart=" + systemd_exec_line(binding + argv) + "\n")
    guest.sh(f"mkdir -p {guest.unit_dir}/{UNIT}.d && printf '%s' {_sh_quote(dropin)} > "
             f"{guest.unit_dir}/{UNIT}.d/tcg-stand-in.conf")
    guest.sd.run("systemctl", "daemon-reload", check=True)
    guest.sd.run("systemctl", "start", UNIT, check=True)
    console = f"/var/log/cgsc/{NAME}/console.log"
    guest.wait_for(lambda: "cgsc-guest-up" in guest.read(console), 240, "the guest's init")
    started = time.monotonic()
    guest.sd.run("systemctl", "stop", UNIT, check=True, timeout=STOP_TIMEOUT + 30)
    took = time.monotonic() - started
    assert "cgsc-guest-powerdown" in guest.read(console), guest.read(console)[-2000:]
    state = guest.state()
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
    assert took < STOP_TIMEOUT, took
    journal = guest.sd.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout
    assert "warning" not in journal.lower(), journal


def _qemu_words(guest) -> list:
    """QEMU's argv in the unit's ExecStart= (after the launch binding's program and its
    arguments, which hand QEMU the checked copies as /proc/self/fd/N)."""
    from helpers import exec_start
    words = exec_start(open(os.path.join(guest.out, UNIT)).read())
    return words[len(words) - 1 - words[::-1].index("qemu-system-x86_64"):]


def _facts(text: str):
    if "uid=" not in text:
        return None
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"

"""Real QEMU (TCG) for what an operator relies on at run time: `systemctl stop` powers the
guest down through the unit's stop channel, and [[net]] forward reaches QEMU's slirp."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from helpers import MINIMAL_SNP, systemd_split, unit_values

from cgsc import targets
from cgsc.pipeline.compile import compile_spec
from cgsc.lower.lowering import lower
from cgsc.spec.model import normalize
from cgsc.spec.source import load



def _plan(tmp_path, name, extra=""):
    spec = tmp_path / f"{name}.toml"
    spec.write_text(MINIMAL_SNP.format(name=name) + extra)
    compile_spec(str(spec))   # valid as written
    guest = normalize(load(str(spec)).data)
    # the runtime directory systemd would create, moved under the test's directory
    return lower(guest._replace(runtime_dir=str(tmp_path / "run" / name)), str(spec), [])


class Qmp:
    """A QMP client on a socketpair whose other end QEMU inherited."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""
        self.sock.settimeout(60)
        self.read()                                     # greeting
        self.command("qmp_capabilities")

    def read(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QEMU closed the monitor")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def command(self, name: str, **arguments) -> dict:
        self.sock.sendall(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        while True:
            msg = self.read()
            if "return" in msg or "error" in msg:
                return msg

    def wait_event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.read()
            if msg.get("event") == name:
                return msg
        raise TimeoutError(name)


def _start(qemu, args):
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([qemu] + args + ["-chardev", f"socket,id=observer,fd={theirs.fileno()}",
                                             "-mon", "chardev=observer,mode=control"],
                            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    theirs.close()
    return proc, Qmp(ours)


def test_systemctl_stop_powers_the_guest_down_then_the_kill_ends_it(tmp_path, tool):
    """A tiny TCG guest with exactly the unit's stop channel: the unit's ExecStartPre=
    makes the FIFOs, its ExecStop= (split as systemd splits it, run by a real sh) makes
    QEMU emit POWERDOWN on a second monitor, then keeps waiting while the guest runs
    (it has no OS to power off); the SIGTERM systemd sends at TimeoutStopSec= ends QEMU,
    and ExecStop= returns."""
    qemu = tool("qemu-system-x86_64")
    plan = _plan(tmp_path, "stopper", "[targets.systemd]\nstop-timeout = 30\n")
    (unit,) = targets.get("systemd").render(plan)
    os.makedirs(plan.runtime_dir)                      # RuntimeDirectory=
    (make_fifos,) = [systemd_split(v) for v in unit_values(unit.content, "Service", "ExecStartPre")
                     if "mkfifo" in v]
    subprocess.run(make_fifos, check=True, env={"PATH": "/usr/bin:/bin"})
    argv = plan.argv()
    at = next(i for i, w in enumerate(argv) if w == "-chardev" and argv[i + 1].startswith("pipe,"))
    channel = argv[at:at + 4]
    assert channel[2] == "-mon" and "mode=control" in channel[3]
    proc, observer = _start(qemu, ["-nodefaults", "-machine", "q35", "-accel", "tcg", "-m", "64",
                                   "-display", "none"] + channel)
    stop = systemd_split(unit_values(unit.content, "Service", "ExecStop")[0])
    stopper = subprocess.Popen(stop, env={"PATH": "/usr/bin:/bin", "MAINPID": str(proc.pid)})
    try:
        assert observer.wait_event("POWERDOWN", timeout=30)
        time.sleep(2)
        assert stopper.poll() is None, "ExecStop= must wait while QEMU runs"
        assert proc.poll() is None
        proc.terminate()                                # TimeoutStopSec= ran out: SIGTERM
        proc.wait(timeout=15)                           # reaped, as systemd reaps its main process
        assert stopper.wait(timeout=15) == 0
    finally:
        for p in (stopper, proc):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert unit_values(unit.content, "Service", "TimeoutStopSec") == ["30s"]


def test_exec_stop_returns_at_once_when_qemu_is_gone(tmp_path):
    plan = _plan(tmp_path, "gone")
    (unit,) = targets.get("systemd").render(plan)
    stop = systemd_split(unit_values(unit.content, "Service", "ExecStop")[0])
    dead = subprocess.Popen(["true"])
    dead.wait()
    # no FIFO exists: opening it would block or fail, so success proves it was not opened
    result = subprocess.run(stop, env={"PATH": "/usr/bin:/bin", "MAINPID": str(dead.pid)}, timeout=10)
    assert result.returncode == 0


def _free_port(kind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_qemu_listens_on_every_forwarded_port(tmp_path, tool):
    qemu = tool("qemu-system-x86_64")
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    plan = _plan(tmp_path, "forwarder", f"""[[net]]
mode = "user"
forward = [{{ host-port = {tcp}, guest-port = 22 }},
           {{ protocol = "udp", host-port = {udp}, guest-port = 53 }}]
""")
    argv = plan.argv()
    netdev = argv[argv.index("-netdev") + 1]
    proc, observer = _start(qemu, ["-nodefaults", "-machine", "none", "-accel", "tcg", "-display", "none",
                                   "-netdev", netdev, "-S"])
    try:
        said = observer.command("human-monitor-command", **{"command-line": "info usernet"})["return"]
        # Protocol[State] FD Source-Address Port Dest-Address Port ...
        rows = [[r[0]] + r[2:6] for r in (line.split() for line in said.splitlines()) if len(r) >= 6]
        assert ["TCP[HOST_FORWARD]", "127.0.0.1", str(tcp), "10.0.2.15", "22"] in rows, said
        assert ["UDP[HOST_FORWARD]", "127.0.0.1", str(udp), "10.0.2.15", "53"] in rows, said
        with socket.create_connection(("127.0.0.1", tcp), timeout=10):
            pass                                        # slirp accepts on the host port
        observer.command("quit")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

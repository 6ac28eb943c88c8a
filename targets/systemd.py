"""systemd target: out/<name>/<name>.service, a hardened unit that runs the guest.

It reads only the launch plan: the argv is the shell target's, quoted for Exec*=
by one escaper; every relaxation of the sandbox is tied to a device the plan holds
and says why in a comment.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from ..core.escape import (
    shell_word,
    systemd_exec_line,
    systemd_exec_word,
    systemd_path_word,
    systemd_value,
)
from ..lower.plan import LaunchPlan, is_block_device
from . import Artifact, verify
from .render import generated_by, template

Entry = Tuple[str, str, str]   # key, value (already escaped), comment
HOME_DIRS = ("/home/", "/root/", "/run/user/")
TMP_DIRS = ("/tmp/", "/var/tmp/")


def _paths(words) -> str:
    return " ".join(systemd_path_word(w) for w in words)


def _dedupe(items) -> list:
    return list(dict.fromkeys(items))


def _sockets(plan: LaunchPlan) -> List[str]:
    out = [plan.qmp_socket] if plan.qmp_socket else []
    if plan.console.kind in ("socket", "file"):
        out.append(plan.console.path)
    return out


# systemd's own directory settings, by cgsc.lower.confine's kind of managed directory
MANAGED_SETTING = {"runtime": "RuntimeDirectory", "state": "StateDirectory", "logs": "LogsDirectory"}


def _writable(plan: LaunchPlan) -> List[str]:
    """Exactly the files and directories QEMU writes: image files, the variable store, and
    the guest's own directories that systemd does not manage (cgsc.lower.confine decided them).
    Block devices are not here: /dev stays writable under ProtectSystem=, DeviceAllow= rules."""
    paths = [plan.firmware.vars] if plan.firmware.vars else []
    paths += [d.path for d in plan.disks if not d.readonly and not is_block_device(d.path)]
    paths += [d.path for d in plan.dirs if not d.managed]
    return _dedupe(paths)


def sh_command(script: str) -> str:
    """An Exec*= command that runs a POSIX sh script (sh is on every host; no cgsc at run time)."""
    return f"/bin/sh -c {systemd_exec_word(script)}"


def host_param_check(param) -> str:
    """sh that fails unless the parameter file holds an accepted value (read is a builtin)."""
    accepted = "|".join(shell_word(v) for v in param.accepted)
    message = shell_word(param.message + " (" + param.path + ": ")
    return (f"v=; {{ read -r v < {shell_word(param.path)}; }} 2>/dev/null; case $v in {accepted}) ;; "
            f"*) printf '%s\\n' {message}\"${{v:-missing}})\" >&2; exit 1 ;; esac")


def stop_fifos_script(plan: LaunchPlan) -> str:
    fifos = " ".join(shell_word(f) for f in plan.stop_fifos())
    return f"rm -f {fifos} && mkfifo -m 0600 {fifos}"


QMP_POWERDOWN = ('{"execute":"qmp_capabilities"}', '{"execute":"system_powerdown"}')


def stop_script(plan: LaunchPlan) -> str:
    """sh for ExecStop=: ask the guest to power down over the stop channel, then wait for
    QEMU to exit. systemd kills it (SIGTERM, then SIGKILL) when TimeoutStopSec= runs out.
    Opening the FIFO never blocks while QEMU holds it open; the kill -0 check keeps a
    QEMU that is already gone from blocking it. With a launch binding the main process
    checks the boot files before it becomes QEMU, and may fail without ever opening the
    FIFO: there the request is written in the background, and the wait ends with the
    main process."""
    fifo = shell_word(plan.stop_fifos()[0])
    commands = " ".join(shell_word(c) for c in QMP_POWERDOWN)
    write = f"printf '%s\\n' {commands} > {fifo}"
    wait = "while kill -0 \"$MAINPID\" 2>/dev/null; do sleep 1; done"
    if plan.binding is None:
        return f"kill -0 \"$MAINPID\" 2>/dev/null || exit 0; {write}; {wait}"
    return (f"kill -0 \"$MAINPID\" 2>/dev/null || exit 0; {write} & {wait}; "
            "kill \"$!\" 2>/dev/null; exit 0")


def install_hint(plan: LaunchPlan, settings, unit_name: str) -> str:
    where = f"Install it as /etc/systemd/system/{unit_name}, then: systemctl daemon-reload && "
    if settings.wanted_by:
        return where + f"systemctl enable --now {unit_name}"
    return where + f"systemctl start {unit_name} (no [Install] section: nothing starts it at boot)"


def unit_sections(plan: LaunchPlan, settings) -> List[Tuple[str, List[Entry]]]:
    cgs = plan.confidential
    unit: List[Entry] = []
    desc = f"cgsc confidential guest {plan.name} ({cgs.title})"
    if plan.description:
        desc += f": {plan.description}"
    unit.append(("Description", systemd_value(desc), ""))
    docs = [f"man:{os.path.basename(plan.emulator) if plan.emulator_default else 'qemu'}(1)"]
    # No file: URL for the spec: its recorded path is relative to the repository (the same
    # bytes on every machine), and a relative path means nothing to systemd.
    unit.append(("Documentation", systemd_value(" ".join(docs)), ""))  # %-encoding: %%
    # Unit names are schema-checked ([A-Za-z0-9:_.@\\-]), so they need no quoting.
    if cgs.systemd_after:
        unit.append(("After", " ".join(cgs.systemd_after),
                     f"{cgs.title} needs {', '.join(cgs.systemd_after)} up before the guest starts"))
    network = ("network-online.target",) if any(n.mode in ("tap", "bridge") for n in plan.nics) else ()
    if network:
        unit.append(("After", "network-online.target", "the guest's tap device or bridge must "
                     "be configured before QEMU attaches to it"))
        unit.append(("Wants", "network-online.target", ""))
    after = [a for a in _dedupe(settings.after + settings.requires)
             if a not in cgs.systemd_after + network]
    if after:
        unit.append(("After", " ".join(after), ""))
    if settings.requires:
        unit.append(("Requires", " ".join(settings.requires), ""))
    unit += start_limit()
    for path, why in plan.device_nodes():
        unit.append(("AssertPathExists", systemd_value(path), f"{why} must be on this host"))
    for d in plan.block_disks():
        unit.append(("AssertPathExists", systemd_value(d.path), f"disk {d.id}'s block device must be on this host"))
    for d in plan.dirs:
        if not d.managed:
            unit.append(("AssertPathIsDirectory", systemd_value(d.path),
                         f"the {d.what} lives here: create it before the first start "
                         "(owned by the guest's user, mode 0750)"))

    service: List[Entry] = [("Type", "exec", "")]
    if settings.user:
        service.append(("User", settings.user, ""))
    else:
        service.append(("", "", "no User= in the spec: QEMU runs as root; set [targets.systemd] user"))
    if settings.group:
        service.append(("Group", settings.group, ""))
    if settings.environment_file:
        service.append(("EnvironmentFile", systemd_value(settings.environment_file), ""))
    for param in cgs.host_params:
        service.append(("ExecStartPre", sh_command(host_param_check(param)),
                        f"checks the value of {param.path} (it must be "
                        f"{' or '.join(param.accepted)}), not only that it exists"))
    if plan.stop_channel:
        service.append(("ExecStartPre", sh_command(stop_fifos_script(plan)),
                        "the stop channel: two FIFOs QEMU reads and writes QMP on (see ExecStop=)"))
    service.append(exec_start(plan))
    if plan.stop_channel:
        service.append(("ExecStop", sh_command(stop_script(plan)),
                        "graceful stop: QMP system_powerdown through the stop channel, then wait for "
                        "the guest to power off; after TimeoutStopSec= systemd sends SIGTERM, then SIGKILL"))
    restart, why = settings.restart, ""
    if restart is None:
        restart = "always" if cgs.reboot_ends_process else "on-failure"
        if cgs.reboot_ends_process:
            why = (f"{cgs.title} guests cannot be reset in place: a guest reboot ends QEMU "
                   "with status 0, so the guest is restarted on any exit")
    elif restart in ("no", "on-failure", "on-abnormal", "on-abort") and cgs.reboot_ends_process:
        why = (f"{cgs.title} guests cannot be reset in place: with Restart={restart} "
               "a guest reboot powers the guest off")
    service += [("Restart", restart, why), ("RestartSec", f"{RESTART_SEC}s", ""),
                ("KillSignal", "SIGTERM", ""),
                ("TimeoutStopSec", f"{settings.stop_timeout}s",
                 "how long the guest has to power down ([targets.systemd] stop-timeout)")]
    if cgs.lock_memory:
        service.append(("LimitMEMLOCK", "infinity", cgs.memory_note))
    elif cgs.memory_note:
        service.append(("", "", cgs.memory_note))
    service += _sandbox(plan)

    install = [("WantedBy", " ".join(settings.wanted_by), "")] if settings.wanted_by else []
    sections = [("Unit", unit), ("Service", service)]
    if install:
        sections.append(("Install", install))
    return sections


RESTART_SEC = 5
START_LIMIT = (600, 5)   # StartLimitIntervalSec=, StartLimitBurst=


def start_limit() -> List[Entry]:
    """A launch the host refuses (a changed boot file, a host parameter ExecStartPre= checks,
    no SEV/TDX in KVM, a missing disk) fails the same way every RestartSec=: without a limit
    Restart= retries it forever (RestartPreventExitStatus= does not cover ExecStartPre=), and
    systemd's default limit (5 in 10 s) never trips at one start per 5 s."""
    interval, burst = START_LIMIT
    return [("StartLimitIntervalSec", f"{interval // 60}min",
             f"a launch the host refuses fails the same way every {RESTART_SEC} s: after "
             f"{burst} starts within {interval // 60} minutes the unit stays failed (systemctl "
             "reset-failed, then start, once the cause is fixed); a guest that crashes, or "
             f"ends at reboot, fewer than {burst} times in {interval // 60} minutes (once an "
             "hour, say) is restarted every time"),
            ("StartLimitBurst", str(burst), "")]


def exec_start(plan: LaunchPlan) -> Entry:
    """QEMU's argv; with [measurement], run by the launch binding program in the same
    process, so that QEMU reads the checked copies (no gap between check and launch, as
    an ExecStartPre= would leave)."""
    if plan.binding is None:
        return ("ExecStart", systemd_exec_line(plan.argv()), "")
    return ("ExecStart", systemd_exec_line(verify.exec_words(plan)),
            "launch binding: each boot file is read once into a private copy in the runtime "
            "directory, its sha256 checked, and QEMU reads that copy (/proc/self/fd/N); "
            "QEMU's argv follows `--`. " + verify.summary(plan))


def _sandbox(plan: LaunchPlan) -> List[Entry]:
    out: List[Entry] = [("DevicePolicy", "closed", "")]
    for path, why in plan.device_nodes():
        out.append(("DeviceAllow", f"{systemd_path_word(path)} rw", why))
        if path == "/dev/ptmx":  # openpty() opens the pty's other end too
            out.append(("DeviceAllow", "char-pts rw", "the pty console's terminal side"))
    for d in plan.block_disks():
        out.append(("DeviceAllow", f"{systemd_path_word(d.path)} {'r' if d.readonly else 'rw'}",
                    f"disk {d.id} is a block device (its path is under /dev/); systemd resolves the "
                    "path, symlinks such as /dev/disk/by-id or LVM names included, to the device "
                    "number when the unit starts"))
    bridge = any(n.mode == "bridge" for n in plan.nics)
    user_net = any(n.mode == "user" for n in plan.nics)
    writable = _writable(plan)
    host_paths = [p for p, _ in plan.host_files()] + writable + _sockets(plan)
    out.append(("ProtectSystem", "strict", ""))
    if writable:
        out.append(("ReadWritePaths", _paths(writable),
                    "exactly what QEMU writes: disk images, variable store, this guest's own directories"))
    for d in plan.dirs:
        if d.managed:
            setting = MANAGED_SETTING[d.managed]
            out.append((setting, _paths([d.relative]),
                        f"this guest's own directory {d.path} ({d.what}), created by systemd"
                        + (" and removed at stop" if d.managed == "runtime" else "")))
            out.append((setting + "Mode", "0750", ""))
    if any(p.startswith(HOME_DIRS) for p in host_paths):
        out.append(("ProtectHome", "read-only", "the spec keeps guest files under a home directory"))
    else:
        out.append(("ProtectHome", "yes", ""))
    if any(p.startswith(TMP_DIRS) for p in host_paths):
        out.append(("PrivateTmp", "no", "the spec keeps guest files under /tmp or /var/tmp"))
    else:
        out.append(("PrivateTmp", "yes", ""))
    out += [(key, "yes", "") for key in (
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
        "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "PrivateMounts", "RemoveIPC")]
    out.append(("MemoryDenyWriteExecute", "yes",
                "QEMU with KVM generates no host code (the TCG JIT is not used)"))
    out += [("ProtectProc", "invisible", ""), ("SystemCallArchitectures", "native", ""),
            ("KeyringMode", "private", ""), ("UMask", "0077", "")]
    if bridge:
        out += [("NoNewPrivileges", "no",
                 "-netdev bridge runs the setuid qemu-bridge-helper, which needs to gain privileges"),
                ("CapabilityBoundingSet", "CAP_NET_ADMIN",
                 "qemu-bridge-helper needs CAP_NET_ADMIN to create the tap and join the bridge")]
    else:
        out += [("NoNewPrivileges", "yes", ""), ("CapabilityBoundingSet", "", "")]
    out.append(("SystemCallFilter", "@system-service" + (" seccomp" if plan.sandbox else ""),
                "QEMU's own -sandbox installs a seccomp filter" if plan.sandbox else ""))
    if bridge:
        out.append(("", "", "@privileged stays allowed: qemu-bridge-helper drops from root with set*uid"))
    else:
        out.append(("SystemCallFilter", "~@privileged", ""))
    out.append(("SystemCallErrorNumber", "EPERM",
                "a refused system call fails with EPERM (QEMU reports it) instead of killing the guest"))
    families = ["AF_UNIX"]
    if user_net or bridge:
        families += ["AF_INET", "AF_INET6"] if user_net else ["AF_INET"]
    families += list(plan.confidential.address_families)
    why = []
    if user_net:
        why.append("user-mode networking opens host sockets")
    if bridge:
        why.append("qemu-bridge-helper configures the bridge through an AF_INET socket")
    out.append(("RestrictAddressFamilies", " ".join(_dedupe(families)), "; ".join(why)))
    if not user_net:
        out.append(("IPAddressDeny", "any", "no IP sockets are needed (tap traffic is not a socket)"))
    # vsock may be namespaced on newer kernels: keep the host's network namespace for it.
    if not plan.nics and plan.vsock_cid is None and "AF_VSOCK" not in families:
        out.append(("PrivateNetwork", "yes", ""))
    return out


class SystemdTarget:
    name = "systemd"
    summary = "hardened systemd service unit (<name>.service) that runs the guest"

    def unsupported(self, plan: LaunchPlan) -> Optional[object]:
        return None

    def render(self, plan: LaunchPlan) -> List[Artifact]:
        settings = plan.settings["systemd"]
        unit_name = settings.unit_name or f"{plan.name}.service"
        text = template("unit.service.j2").render(
            plan=plan, header=generated_by(plan), unit_name=unit_name,
            install=install_hint(plan, settings, unit_name),
            sections=unit_sections(plan, settings))
        return [Artifact(unit_name, text)]


TARGET = SystemdTarget()

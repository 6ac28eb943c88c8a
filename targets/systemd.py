"""systemd target: out/<name>/<name>.service, a hardened unit that runs the guest.

It reads only the launch plan: the argv is the shell target's, quoted for Exec*=
by one escaper; every relaxation of the sandbox is tied to a device the plan holds
and says why in a comment.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import List, Optional, Tuple

from cgsc.escape import systemd_exec_word, systemd_path_word, systemd_value
from cgsc.plan import LaunchPlan
from cgsc.targets import Artifact
from cgsc.targets.render import generated_by, template

Entry = Tuple[str, str, str]   # key, value (already escaped), comment
HOME_DIRS = ("/home/", "/root/", "/run/user/")
TMP_DIRS = ("/tmp/", "/var/tmp/")


def _paths(words) -> str:
    return " ".join(systemd_path_word(w) for w in words)


def _dedupe(items) -> list:
    return list(dict.fromkeys(items))


def _sockets(plan: LaunchPlan) -> List[str]:
    out = [plan.qmp_socket] if plan.qmp_socket else []
    if plan.console.kind == "socket":
        out.append(plan.console.path)
    return out


def _runtime_dirs(plan: LaunchPlan) -> Tuple[List[str], List[str]]:
    """(RuntimeDirectory= names, other socket directories that must be writable)."""
    runtime, other = [], []
    for sock in _sockets(plan):
        directory = os.path.dirname(sock)
        if directory.startswith("/run/") and not directory.startswith("/run/user/"):
            runtime.append(directory[len("/run/"):])
        else:
            other.append(directory)
    return _dedupe(runtime), _dedupe(other)


def _writable(plan: LaunchPlan, socket_dirs: List[str]) -> List[str]:
    paths = [plan.firmware.vars] if plan.firmware.vars else []
    paths += [d.path for d in plan.disks if not d.readonly]
    if plan.console.kind == "file":
        paths.append(os.path.dirname(plan.console.path))
    return _dedupe(paths + socket_dirs)


def unit_sections(plan: LaunchPlan, settings) -> List[Tuple[str, List[Entry]]]:
    cgs = plan.confidential
    unit: List[Entry] = []
    desc = f"cgsc confidential guest {plan.name} ({cgs.title})"
    if plan.description:
        desc += f": {plan.description}"
    unit.append(("Description", systemd_value(desc), ""))
    docs = [f"man:{os.path.basename(plan.emulator) if plan.emulator_default else 'qemu'}(1)"]
    if os.path.isabs(plan.spec_path):  # a relative path means nothing to systemd
        docs.insert(0, "file:" + urllib.parse.quote(plan.spec_path))
    unit.append(("Documentation", systemd_value(" ".join(docs)), ""))  # %-encoding: %%
    # Unit names are schema-checked ([A-Za-z0-9:_.@\\-]), so they need no quoting.
    if cgs.systemd_after:
        unit.append(("After", " ".join(cgs.systemd_after),
                     f"{cgs.title} needs {', '.join(cgs.systemd_after)} up before the guest starts"))
    after = [a for a in _dedupe(settings.after + settings.requires) if a not in cgs.systemd_after]
    if after:
        unit.append(("After", " ".join(after), ""))
    if settings.requires:
        unit.append(("Requires", " ".join(settings.requires), ""))
    for path, why in plan.device_nodes():
        unit.append(("AssertPathExists", systemd_value(path), f"{why} must be on this host"))
    for param in cgs.host_params:
        unit.append(("AssertPathExists", systemd_value(param.path), param.message))

    service: List[Entry] = [("Type", "exec", "")]
    if settings.user:
        service.append(("User", settings.user, ""))
    else:
        service.append(("", "", "no User= in the spec: QEMU runs as root; set [targets.systemd] user"))
    if settings.group:
        service.append(("Group", settings.group, ""))
    if settings.environment_file:
        service.append(("EnvironmentFile", systemd_value(settings.environment_file), ""))
    service.append(("ExecStart", " ".join(systemd_exec_word(w) for w in plan.argv()), ""))
    restart, why = settings.restart, ""
    if restart is None:
        restart = "always" if cgs.reboot_ends_process else "on-failure"
        if cgs.reboot_ends_process:
            why = (f"{cgs.title} guests cannot be reset in place: a guest reboot ends QEMU "
                   "with status 0, so the guest is restarted on any exit")
    elif restart in ("no", "on-failure", "on-abnormal", "on-abort") and cgs.reboot_ends_process:
        why = (f"{cgs.title} guests cannot be reset in place: with Restart={restart} "
               "a guest reboot powers the guest off")
    service += [("Restart", restart, why), ("RestartSec", "5s", ""),
                ("KillSignal", "SIGTERM", ""), ("TimeoutStopSec", "30s", "")]
    if cgs.lock_memory:
        service.append(("LimitMEMLOCK", "infinity",
                        f"{cgs.title} pins guest memory; the default memlock limit breaks it"))
    service += _sandbox(plan)

    install = [("WantedBy", " ".join(settings.wanted_by), "")] if settings.wanted_by else []
    sections = [("Unit", unit), ("Service", service)]
    if install:
        sections.append(("Install", install))
    return sections


def _sandbox(plan: LaunchPlan) -> List[Entry]:
    out: List[Entry] = [("DevicePolicy", "closed", "")]
    for path, why in plan.device_nodes():
        out.append(("DeviceAllow", f"{systemd_path_word(path)} rw", why))
        if path == "/dev/ptmx":  # openpty() opens the pty's other end too
            out.append(("DeviceAllow", "char-pts rw", "the pty console's terminal side"))
    bridge = any(n.mode == "bridge" for n in plan.nics)
    user_net = any(n.mode == "user" for n in plan.nics)
    runtime, socket_dirs = _runtime_dirs(plan)
    writable = _writable(plan, socket_dirs)
    host_paths = [p for p, _ in plan.host_files()] + writable + _sockets(plan)
    out.append(("ProtectSystem", "strict", ""))
    if writable:
        out.append(("ReadWritePaths", _paths(writable), "disk images, variable store, sockets"))
    if runtime:
        out.append(("RuntimeDirectory", _paths(runtime), "QMP and console sockets live here"))
        out.append(("RuntimeDirectoryMode", "0750", ""))
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
            sections=unit_sections(plan, settings))
        return [Artifact(unit_name, text)]


TARGET = SystemdTarget()

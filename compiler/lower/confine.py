"""Where QEMU may write: the directory of each socket and of the console file.

QEMU creates these files, so their directory must be writable. The systemd unit makes
exactly these directories writable (ProtectSystem=strict keeps everything else
read-only) and the launch script creates them, so each must belong to this guest alone
and never be a system directory. Accepted, by rule (cgsc never looks at the host):

* /run/cgsc/<name>      RuntimeDirectory=cgsc/<name>: created at start, removed at stop
* /var/lib/cgsc/<name>  StateDirectory=cgsc/<name>: kept across restarts
* /var/log/cgsc/<name>  LogsDirectory=cgsc/<name>: kept (for a console log)
* /srv/<dir>[/...]/<name> a directory named after the guest below a directory of /srv
  (FHS: site data, which no distribution package uses); it must exist (the unit asserts
  it, the script creates it).

This is an allow-list: a directory named after the guest anywhere else may be a system
directory (/var/lib/systemd, /var/spool/cron, /home/alice) or sit in a world-writable
tree (/tmp, /var/tmp, /dev/shm) where another user can create it, or a symlink in it,
first. The launch script also refuses a directory it does not own.

Each path QEMU opens must also differ from the stop channel's FIFOs and from every other
host path of the guest: QEMU would block opening a FIFO, or write over a disk.

Everything else is refused with CGS-PATH-002 and a path that works.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Tuple

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from .plan import GuestDir

STOP_CHANNEL = "qmp-stop"   # <runtime dir>/qmp-stop.in and .out: QMP over FIFOs for ExecStop
# root -> systemd's name for a directory it manages there (RuntimeDirectory=, ...)
MANAGED = (("/run", "runtime"), ("/var/lib", "state"), ("/var/log", "logs"))
SYSTEM_TREES = ("/run", "/var/run", "/dev", "/proc", "/sys", "/etc", "/usr", "/boot", "/efi",
                "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_DIRS = frozenset(("/var", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/tmp",
                         "/var/mail", "/var/opt", "/var/local", "/var/backups", "/var/crash",
                         "/home", "/srv", "/opt", "/mnt", "/media", "/tmp", "/root"))
SHARED_TREES = ("/tmp", "/var/tmp", "/dev/shm")   # world-writable (sticky): anyone creates in them
SITE_ROOT = "/srv"
ALLOWED = ("/run/cgsc/<name>, /var/lib/cgsc/<name>, /var/log/cgsc/<name> or "
           "/srv/<dir>/<name>")

CONFINE = Rule(
    "CGS-PATH-002", "a socket or console file lives in a directory that is not this guest's own",
    "QEMU creates its sockets and the console file, so the systemd unit must make their "
    "directory writable. A system directory (/, /run, /var, /etc, /run/systemd...) would "
    "cancel ProtectSystem=strict or hand systemd's own directory to the guest, and a "
    "directory shared with another guest lets stopping one remove the other's sockets. "
    "cgsc accepts /run/cgsc/<name> (RuntimeDirectory), /var/lib/cgsc/<name> (StateDirectory), "
    "/var/log/cgsc/<name> (LogsDirectory), or an existing directory named after the guest "
    "below a directory of /srv (/srv/guests/<name>), and nothing else: a directory named "
    "after the guest elsewhere may be a system one (/var/lib/systemd, /home/alice), and one "
    "in /tmp, /var/tmp or /dev/shm can be created first by any user. A socket or console "
    "file must also not be one of the stop channel's FIFOs (<runtime dir>/qmp-stop.in, "
    ".out), on which QEMU would block, nor another host path of the guest.",
    "systemd.exec(5) ProtectSystem=, RuntimeDirectory=",
    fix="Put the socket in /run/cgsc/<name>/ and a console log in /var/log/cgsc/<name>/.")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _managed(directory: str, name: str) -> Optional[Tuple[str, str]]:
    for root, kind in MANAGED:
        if directory == f"{root}/cgsc/{name}":
            return kind, f"cgsc/{name}"
    return None


def why_not(directory: str, name: str, runtime_dir: str) -> str:
    """Why the directory cannot be confined to this guest ("" when it can)."""
    if directory == runtime_dir or _managed(directory, name):
        return ""
    if _under(directory, SITE_ROOT) and directory.count("/") >= 3 \
            and os.path.basename(directory) == name:
        return ""   # /srv/<dir>[/...]/<name>
    for tree in SHARED_TREES:
        if _under(directory, tree):
            return (f"under {tree}, where every user may create files: another user can "
                    "create the directory, or a symlink in it, first")
    if directory.count("/") < 2 or directory in SYSTEM_DIRS:
        return "a system directory"
    for root, _kind in MANAGED:
        if _under(directory, f"{root}/cgsc"):
            return f"inside cgsc's tree {root}/cgsc but not this guest's {root}/cgsc/{name}"
    for tree in SYSTEM_TREES:
        if _under(directory, tree):
            return f"under {tree}, a system directory"
    if os.path.basename(directory) != name:
        return f"not named after the guest (its last component is not {name!r}), so other programs may share it"
    return (f"not one of the directories cgsc gives a guest ({ALLOWED}); a directory named "
            "after the guest elsewhere may belong to the system or to a user")


def stop_channel(guest) -> str:
    """The stop channel's base path; QEMU opens <base>.in and <base>.out (or <base>)."""
    return f"{guest.runtime_dir}/{STOP_CHANNEL}"


def _items(guest) -> List[Tuple[tuple, str, str, str]]:
    """(key path, file path, what, usual file name) of every file QEMU creates."""
    out = []
    if guest.qmp_socket:
        out.append((("qmp", "socket"), guest.qmp_socket, "QMP socket", "qmp.sock"))
    if guest.console in ("socket", "file") and guest.console_path:
        out.append((("console", "path"), guest.console_path, f"console {guest.console}",
                    "console.sock" if guest.console == "socket" else "console.log"))
    return out


def _host_paths(guest) -> List[Tuple[tuple, str]]:
    """(key path, path) of the other host files the guest names."""
    out = [(("firmware", key), path)
           for key, path in (("code", guest.firmware_code), ("vars", guest.firmware_vars)) if path]
    out += [(("kernel", key), path)
            for key, path in (("image", guest.kernel_image), ("initrd", guest.kernel_initrd)) if path]
    out += [(("disk", i, "path"), d.path) for i, d in enumerate(guest.disks)]
    return out


def check(guest) -> Iterable[Diagnostic]:
    base = stop_channel(guest)
    fifos = {path: f"the stop channel's FIFO {path}, on which QEMU would block"
             for path in (base, base + ".in", base + ".out")}
    taken = dict(fifos)
    for key, path in _host_paths(guest):
        if path in fifos:
            yield CONFINE.error(key, f"is {fifos[path]}", f"move the file; {base}.* is cgsc's")
        taken.setdefault(path, "the file " + ".".join(map(str, key)) + " names")
    for key, path, what, usual in _items(guest):
        directory = os.path.dirname(path)
        reason = why_not(directory, guest.name, guest.runtime_dir)
        root = f"{'/var/log/cgsc' if what == 'console file' else '/run/cgsc'}/{guest.name}"
        if reason:
            yield CONFINE.error(key, f"the {what}'s directory {directory} is {reason}; "
                                "the systemd unit would have to make it writable",
                                f"use {root}/{os.path.basename(path) or usual} "
                                "(a directory of this guest only)")
        elif path in taken:
            other = f"{root}/{usual}"
            yield CONFINE.error(key, f"the {what} {path} is also {taken[path]}",
                                f"give the {what} a path of its own"
                                + (f", e.g. {other}" if other != path else ""))
        taken.setdefault(path, f"the {what}")


def guest_dirs(guest) -> Tuple[GuestDir, ...]:
    """Every directory QEMU writes in: the runtime directory first (the stop channel)."""
    found = {guest.runtime_dir: ["stop channel"]}
    for _key, path, what, _usual in _items(guest):
        found.setdefault(os.path.dirname(path), []).append(what)
    out = []
    for directory, whats in found.items():
        kind, relative = ("runtime", f"cgsc/{guest.name}") if directory == guest.runtime_dir \
            else (_managed(directory, guest.name) or ("", ""))
        out.append(GuestDir(directory, ", ".join(whats), kind, relative))
    return tuple(out)

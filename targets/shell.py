"""Shell target: out/<name>/<name>.sh, a POSIX sh launch script that execs QEMU."""

from __future__ import annotations

from typing import List, Optional

from ..core.escape import shell_join, shell_word, shell_words
from ..lower.plan import LaunchPlan
from . import Artifact, verify
from .render import generated_by, template

# QEMU's own locked memory beyond the guest's RAM: libvirt's SEV guidance (RAM + 256 MiB).
MEMLOCK_SLACK_MIB = 256


def argv_lines(argv: List[str]) -> List[str]:
    """`set -- word ...` with one option (and its argument) per line."""
    quoted = shell_words(argv)
    lines, current = [], ["set --", quoted[0]]
    for word, shown in zip(argv[1:], quoted[1:]):
        if word.startswith("-") and len(current) > 1:
            lines.append(" ".join(current))
            current = ["   "]
        current.append(shown)
    lines.append(" ".join(current))
    return [line + " \\" for line in lines[:-1]] + lines[-1:]


def qemu_needed(plan: LaunchPlan) -> Optional[tuple]:
    """(minimum QEMU "X.Y", what needs it) for the script's version check: the same minimum
    manifest.json records (cgsc.host.compat), with the object or property that sets it."""
    from ..host.compat import qemu_needs
    needs = qemu_needs(plan)
    if not needs:
        return None
    what, need = max(needs.items(), key=lambda item: (item[1], -len(item[0])))
    return ".".join(str(x) for x in need[:2]), what


def _measured_call(plan: LaunchPlan) -> str:
    """launch_measured with the runtime directory, one parameter or file per line, then
    QEMU's argv ("$@")."""
    lines = [" ".join(shell_words(group)) for group in verify.groups(plan)]
    return " \\\n    ".join([verify.FUNCTION + " " + lines[0]] + lines[1:] + ['-- "$@"'])


class ShellTarget:
    name = "shell"
    summary = "POSIX sh launch script (<name>.sh) that checks the host and execs QEMU"

    def unsupported(self, plan: LaunchPlan) -> Optional[object]:
        return None

    def render(self, plan: LaunchPlan) -> List[Artifact]:
        argv = plan.argv()
        writable = [(d.path, f"disk {d.id}") for d in plan.disks if not d.readonly]
        if plan.firmware.vars:
            writable.insert(0, (plan.firmware.vars, "firmware variable store"))
        text = template("launch.sh.j2").render(
            plan=plan, header=generated_by(plan), command_line=shell_join(argv),
            argv_lines=argv_lines(argv), writable=writable,
            memlock_kib=(plan.memory_mib + MEMLOCK_SLACK_MIB) * 1024,
            measured=verify.function() if plan.binding else "",
            measured_call=_measured_call(plan) if plan.binding else "",
            measured_summary=verify.summary(plan), qemu_needed=qemu_needed(plan))
        return [Artifact(f"{plan.name}.sh", text, 0o755)]


TARGET = ShellTarget()

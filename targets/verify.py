"""Launch binding: the POSIX sh code that refuses to start QEMU on boot files other than
the measured ones, shared by the shell script and the systemd unit (ExecStartPre=).

Only data crosses into the code, as positional arguments (quoted by the one escaper of
each syntax); the code itself is constant. It needs only sh and coreutils' sha256sum.
Groups of four words: `file WHAT PATH SHA256` and `param PATH ACCEPTED MESSAGE`.
"""

from __future__ import annotations

from typing import List

from ..lower.plan import LaunchPlan

FUNCTION = "check_measured"
BODY = r"""    while [ "$#" -ge 4 ]; do
        case $1 in
            file)
                sum=$(sha256sum < "$3") || fail "$2 $3 cannot be read to check its sha256"
                sum=${sum%% *}
                [ "$sum" = "$4" ] || fail "$2 $3 has sha256 $sum, but the launch measurement was computed for sha256 $4: refusing to start a guest that would not attest (rebuild with cgsc if the change is intended)"
                ;;
            param)
                value=$(cat "$2" 2>/dev/null) || value=absent
                found=0
                for accepted in $3; do
                    [ "$value" = "$accepted" ] && found=1
                done
                [ "$found" = 1 ] || fail "$4 ($2: $value)"
                ;;
        esac
        shift 4
    done"""
FAIL = "fail() {\n    printf '%s: %s\\n' \"$0\" \"$1\" >&2\n    exit 1\n}"


def function() -> str:
    """The shell function, for a script that already defines fail()."""
    return f"{FUNCTION}() {{\n{BODY}\n}}"


def standalone() -> str:
    """The whole check as one `sh -c` program; $0 names the guest in messages."""
    return f"{FAIL}\n{function()}\n{FUNCTION} \"$@\""


def arguments(plan: LaunchPlan) -> List[str]:
    """The data words for the check, in launch order: files, then host parameters."""
    words: List[str] = []
    if plan.binding is None:
        return words
    for f in plan.binding.files:
        words += ["file", f.what, f.path, f.sha256]
    for p in plan.binding.params:
        words += ["param", p.path, " ".join(p.accepted), p.message]
    return words


def label(plan: LaunchPlan) -> str:
    return f"cgsc launch {plan.name}"


def summary(plan: LaunchPlan) -> str:
    """One comment line: what the attestation report must say, when cgsc computed it."""
    att = plan.attestation or {}
    if att.get("launch-digest"):
        return (f"expected launch digest ({att['digest-algorithm']}): {att['launch-digest']} "
                "(manifest.json: attestation)")
    return "reference values: manifest.json, attestation"

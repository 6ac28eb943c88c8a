"""Launch binding: the POSIX sh code that starts QEMU only on the bytes that were measured,
shared by the shell script and the systemd unit (its ExecStart= runs it, then QEMU).

Checking a path and then letting QEMU open the path again lets a file swapped in between
through, and an in-place rewrite of the same file races any scheme that re-opens it. So
each measured file is read exactly once, with a bound and without blocking, into a private
copy in the guest's own runtime directory; the copy is made read-only, opened on a fixed
descriptor and unlinked, and its size and sha256 are checked through that descriptor.
QEMU is exec'd with the descriptors inherited and reads `/proc/self/fd/N`: the bytes it
reads are the bytes that were checked, whatever happens to the original path. Nothing is
left on disk once QEMU runs; a failed check or a signal removes the copies.

Only data crosses into the code, as positional arguments (quoted by the one escaper of
each syntax); the code itself is constant. It needs sh, coreutils (dd, mktemp, chmod, wc,
sha256sum, rm, id) and find, which the launch script already uses. Arguments: the runtime
directory, then groups `param PATH ACCEPTED MESSAGE` and `file WHAT PATH SHA256 SIZE FD`,
then `--` and QEMU's argv.
"""

from __future__ import annotations

from typing import List

from ..lower.plan import LaunchPlan

FUNCTION = "launch_measured"
FDS = (3, 4, 5)        # the descriptors QEMU inherits the copies on (see MeasuredFile.fd)

COPY = r"""measured_copy() {
    what=$1 path=$2 sum=$3 size=$4 fd=$5
    case $size in
        '' | *[!0-9]*) fail "launch binding: $what has no size ($size)" ;;
    esac
    if [ -d "$path" ]; then
        fail "$what $path is a directory, not the file that was measured: refusing to start a guest that would not attest"
    elif [ -e "$path" ] && [ ! -f "$path" ]; then
        fail "$what $path is not a regular file (a FIFO, device or socket) and is not read: refusing to start a guest that would not attest"
    fi
    copy=$copies/$fd
    # The one read of the path: O_NONBLOCK (a FIFO put there after the test above opens
    # at once and reads as empty) and at most one byte more than was measured (/dev/zero).
    err=$(dd if="$path" of="$copy" bs=1M count=$((size + 1)) iflag=count_bytes,nonblock status=none 2>&1) ||
        fail "$what $path cannot be read to check its sha256 (${err#dd: })"
    chmod 0400 "$copy" || fail "cannot make the copy of $what $path read-only"
    case $fd in
        3) exec 3<"$copy" ;;
        4) exec 4<"$copy" ;;
        5) exec 5<"$copy" ;;
        *) fail "launch binding: $what has no descriptor ($fd)" ;;
    esac
    rm -f "$copy"
    # From here on the copy is only this descriptor: what is checked is what QEMU reads.
    copied=$(wc -c < "/proc/self/fd/$fd") || fail "cannot read back the copy of $what $path"
    if [ "$copied" -gt "$size" ]; then
        fail "$what $path is longer than the $size bytes that were measured (another file, a device or a file being written): refusing to start a guest that would not attest (rebuild with cgsc if the change is intended)"
    fi
    actual=$(sha256sum < "/proc/self/fd/$fd") || fail "cannot read back the copy of $what $path"
    actual=${actual%% *}
    [ "$actual" = "$sum" ] || fail "$what $path has sha256 $actual, but the launch measurement was computed for sha256 $sum: refusing to start a guest that would not attest (rebuild with cgsc if the change is intended)"
}"""

LAUNCH = r"""launch_measured() {
    dir=$1
    shift
    if [ -L "$dir" ] || [ ! -d "$dir" ] ||
        [ -z "$(find "$dir" -prune -user "$(id -u)" ! -perm -0020 ! -perm -0002)" ]; then
        fail "$dir must be a directory of this user that no other user can write: the measured boot files are copied there for QEMU"
    fi
    rm -rf "$dir"/.measured.*
    copies=$(mktemp -d "$dir/.measured.XXXXXX") ||
        fail "cannot create a directory in $dir for the copies of the measured boot files"
    trap 'rm -rf "$copies"' EXIT
    trap 'rm -rf "$copies"; exit 129' HUP
    trap 'rm -rf "$copies"; exit 130' INT
    trap 'rm -rf "$copies"; exit 143' TERM
    while [ "$#" -gt 0 ]; do
        case $1 in
            param)
                value=$(cat "$2" 2>/dev/null) || value=absent
                found=0
                for accepted in $3; do
                    [ "$value" = "$accepted" ] && found=1
                done
                [ "$found" = 1 ] || fail "$4 ($2: $value)"
                shift 4
                ;;
            file)
                measured_copy "$2" "$3" "$4" "$5" "$6"
                shift 6
                ;;
            --)
                shift
                break
                ;;
            *)
                fail "launch binding: unexpected argument $1"
                ;;
        esac
    done
    rm -rf "$copies"
    trap - EXIT HUP INT TERM
    exec "$@"
}"""
FAIL = "fail() {\n    printf '%s: %s\\n' \"$0\" \"$1\" >&2\n    exit 1\n}"


def function() -> str:
    """The shell functions, for a script that already defines fail()."""
    return f"{COPY}\n{LAUNCH}"


def standalone() -> str:
    """The whole program for `sh -c`; $0 names the guest in messages."""
    return f"{FAIL}\n{function()}\n{FUNCTION} \"$@\""


def groups(plan: LaunchPlan) -> List[List[str]]:
    """The data words, grouped: the runtime directory, the host parameters (cheap, checked
    first), then the files in launch order."""
    if plan.binding is None:
        return []
    out = [[plan.runtime_dir]]
    for p in plan.binding.params:
        out.append(["param", p.path, " ".join(p.accepted), p.message])
    for f in plan.binding.files:
        if f.fd not in FDS:
            raise ValueError(f"no descriptor {f.fd} in the launch binding program")
        out.append(["file", f.what, f.path, f.sha256, str(f.size), str(f.fd)])
    return out


def arguments(plan: LaunchPlan) -> List[str]:
    """Every data word, and `--` before QEMU's argv."""
    return [w for group in groups(plan) for w in group] + ["--"] if plan.binding else []


def exec_words(plan: LaunchPlan) -> List[str]:
    """The unit's ExecStart=: the program, then QEMU's argv, in one process."""
    return ["/bin/sh", "-c", standalone(), label(plan)] + arguments(plan) + plan.argv()


def label(plan: LaunchPlan) -> str:
    return f"cgsc launch {plan.name}"


def summary(plan: LaunchPlan) -> str:
    """One comment line: what the attestation report must say, when cgsc computed it."""
    att = plan.attestation or {}
    if att.get("launch-digest"):
        return (f"expected launch digest ({att['digest-algorithm']}): {att['launch-digest']} "
                "(manifest.json: attestation)")
    return "reference values: manifest.json, attestation"

"""The size limits of the consumers: what exec(2) and systemd accept, checked on the plan.

Per-field limits live in the schema (maxLength, maxItems); this checks the sum of them,
which no single field shows: the whole QEMU argv.
"""

from __future__ import annotations

from typing import List, Sequence

from ..core.diagnostics import Diagnostic, KeyPath
from ..core.rules import Rule
from ..spec.source import leaves

ARG_MAX_WORD = 128 * 1024 - 1   # Linux MAX_ARG_STRLEN (32 pages) includes the NUL
# Linux guarantees at least 32 pages (128 KiB) for argv and the environment together
# (ARG_MAX is a quarter of the stack limit, never less); 8 KiB are left to the environment.
ARGV_BUDGET = 128 * 1024 - 8 * 1024

ARGV_TOO_LONG = Rule(
    "CGS-LIMIT-001", "the QEMU command line is longer than exec(2) is sure to accept",
    "Linux guarantees 128 KiB for the arguments and environment of a new program, and "
    "128 KiB for any one argument. A longer command line makes the launch script fail at "
    "exec with E2BIG on some hosts (and its ExecStart= line approaches systemd's 1 MB "
    "line limit). cgsc keeps the whole argv within 120 KiB, leaving 8 KiB to the environment.",
    "execve(2), \"Limits on size of arguments and environment\"; systemd.syntax(7)",
    fix="Shorten the longest values (kernel command line, extra-args, paths) or use fewer "
        "disks; the message names the longest value.")


def argv_size(argv: Sequence[str]) -> int:
    """Bytes exec(2) counts: every word in UTF-8 with its terminating NUL."""
    return sum(len(word.encode("utf-8", "surrogatepass")) + 1 for word in argv)


def argv_problems(argv: Sequence[str], data: dict) -> List[Diagnostic]:
    # a character is at most 4 bytes of UTF-8: most command lines are clearly short
    longest = max(map(len, argv), default=0)
    if 4 * sum(map(len, argv)) + len(argv) <= ARGV_BUDGET and 4 * longest <= ARG_MAX_WORD:
        return []
    size = argv_size(argv)
    longest_word = max((len(w.encode("utf-8", "surrogatepass")) for w in argv), default=0)
    if size <= ARGV_BUDGET and longest_word <= ARG_MAX_WORD:
        return []
    path = _longest_value(data)
    return [ARGV_TOO_LONG.error(path, f"the QEMU command line would be {size} bytes in "
                                      f"{len(argv)} words (at most {ARGV_BUDGET} bytes, and "
                                      f"{ARG_MAX_WORD} per word); this is its longest value",
                                "shorten the longest values or use fewer devices")]


def _longest_value(data) -> KeyPath:
    strings = [(path, value) for path, value in leaves(data) if isinstance(value, str)]
    return max(strings, key=lambda item: len(item[1]), default=((), ""))[0]

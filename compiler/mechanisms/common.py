"""Helpers shared by several mechanisms: base64 blobs, socket paths, extra-args scans."""

from __future__ import annotations

import base64
import binascii
from typing import Iterable, Optional

from cgsc.diagnostics import Diagnostic, KeyPath
from cgsc.rules import Rule

def decode_blob(text: str) -> Optional[bytes]:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def check_blob(rule: Rule, path: KeyPath, text: Optional[str], size: int,
               what: str) -> Iterable[Diagnostic]:
    """A base64 blob whose decoded length must be exactly `size` bytes."""
    if text is None:
        return
    raw = decode_blob(text)
    if raw is None:
        yield rule.error(path, "is not valid base64",
                         f"give {what} as standard base64 ({size} bytes, {_b64len(size)} characters)")
    elif len(raw) != size:
        yield rule.error(path, f"decodes to {len(raw)} bytes; {what} is exactly {size} bytes",
                         f"{size} bytes are {_b64len(size)} base64 characters, e.g. "
                         f"`base64 -w0 < file` of a {size}-byte file")


def _b64len(size: int) -> int:
    return 4 * ((size + 2) // 3)


def scan_extra_args(extra_args: Iterable[str], needles: Iterable[str]):
    """(index, needle) for every extra argument that contains a forbidden needle."""
    for i, arg in enumerate(extra_args):
        for needle in needles:
            if needle in arg:
                yield i, needle


SOCKET_LEN = Rule("CGS-PATH-001", "a unix socket path is longer than 107 bytes",
                  "sun_path holds 108 bytes including the NUL; QEMU cannot bind or connect to "
                  "a longer path.", "unix(7)",
                  fix="Use a shorter socket path, e.g. under /run.")
SUN_PATH_MAX = 107


def check_socket_path(path: KeyPath, value: Optional[str]) -> Iterable[Diagnostic]:
    if value and len(value.encode()) > SUN_PATH_MAX:
        yield SOCKET_LEN.error(path, f"is {len(value.encode())} bytes long; a unix socket "
                               f"path holds at most {SUN_PATH_MAX}",
                               "use a shorter path, e.g. under /run")

"""Base64 blobs of mechanism tables (ID blocks, TDX measurement registers): decoded and
checked for their exact size."""

from __future__ import annotations

import base64
import binascii
from typing import Iterable, Optional

from ..core.diagnostics import Diagnostic, KeyPath
from ..core.rules import Rule


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

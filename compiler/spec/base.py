"""Base specs checked on their own terms (`cgsc validate --base`).

A base is a partial spec that other specs `extends`: every key it has must be a known
key with a valid value, but it need not be a whole guest. The specs that extend it are
checked completely, once merged, by `validate` and `build`.
"""

from __future__ import annotations

from typing import List

from ..core.diagnostics import Diagnostic, SpecError
from .source import load
from .validate import schema_errors


def check_base(path: str) -> List[Diagnostic]:
    """Every problem of the base at `path` (and of the bases it extends itself)."""
    try:
        source = load(path)
    except SpecError as exc:
        return list(exc.diagnostics)
    return [source.locate(d) for d in schema_errors(source.data, base=True)]

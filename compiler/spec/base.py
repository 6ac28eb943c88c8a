"""Base specs checked on their own terms (`cgsc validate --base`, and any abstract base).

A base is a partial spec that other specs `extends`: every key it has must be a known
key with a valid value, but it need not be a whole guest. The specs that extend it are
checked completely, once merged, by `validate` and `build`. A base that says
`abstract = true` is one whatever command names it: build, check and diff skip it, and
validate checks it as a base.
"""

from __future__ import annotations

from typing import List

from ..core.diagnostics import Diagnostic, SpecError
from .per_guest import SAMPLE, expand
from .source import Source, abstract_named, load
from .validate import schema_errors


class AbstractSpec(Exception):
    """The spec is an abstract base: valid as a base, and no guest to build."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


def check_base(path: str) -> List[Diagnostic]:
    """Every problem of the base at `path` (and of the bases it extends itself)."""
    try:
        source = load(path)
    except SpecError as exc:
        return list(exc.diagnostics)
    return base_problems(source)


def base_problems(source: Source) -> List[Diagnostic]:
    """A loaded base's problems. `{name}` is checked as a guest's name would fill it in
    (a sample name): its characters where they go, not a length only a guest's name fixes."""
    found = [source.locate(d) for d in schema_errors(expand(source.data, SAMPLE), base=True)]
    named = abstract_named(source.data.get("guest")) if source.abstract else None
    return found + ([source.locate(named)] if named else [])

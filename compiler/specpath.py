"""Spec paths as artifacts record them: independent of how the path was typed and of
the working directory, so `cgsc check ./x.toml` from anywhere agrees with `cgsc build x.toml`.

A path is recorded relative to the spec's *root*: the nearest directory above the spec
that holds `.git` (a repository or a worktree), else the directory of the spec itself.
Diagnostics keep the path as the user typed it; only artifacts and manifests use this.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional


def find_root(path: str) -> Optional[str]:
    """The repository root above `path` (a file or directory), or None."""
    here = os.path.realpath(path)
    return _root_above(here if os.path.isdir(here) else os.path.dirname(here))


@lru_cache(maxsize=256)
def _root_above(directory: str) -> Optional[str]:
    """The nearest directory at or above a resolved `directory` that holds .git. Cached:
    a fleet's specs share a few directories (forget() starts afresh)."""
    here = directory
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def forget() -> None:
    """Drop what was learnt about directories (a new command may see new repositories)."""
    _root_above.cache_clear()


def spec_root(spec: str, real: Optional[str] = None) -> str:
    """The directory every path of this spec's extends chain is recorded against
    (`real`: the spec's resolved path, when known)."""
    directory = os.path.dirname(real or os.path.realpath(spec))
    return _root_above(directory) or directory


def stable(path: str, root: str, real: Optional[str] = None) -> str:
    """`path` (resolved: `real`) relative to `root`, with `/` separators on every system."""
    return os.path.relpath(real or os.path.realpath(path), root).replace(os.sep, "/")

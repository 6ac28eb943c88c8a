"""Spec paths as artifacts record them: independent of how the path was typed and of
the working directory, so `cgsc check ./x.toml` from anywhere agrees with `cgsc build x.toml`.

A path is recorded relative to the spec's *root*: the nearest directory above the spec
that holds `.git` (a repository or a worktree), else the directory of the spec itself.
Diagnostics keep the path as the user typed it; only artifacts and manifests use this.
"""

from __future__ import annotations

import os
from typing import Optional


def find_root(path: str) -> Optional[str]:
    """The repository root above `path` (a file or directory), or None."""
    here = os.path.realpath(path)
    if not os.path.isdir(here):
        here = os.path.dirname(here)
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def spec_root(spec: str) -> str:
    """The directory every path of this spec's extends chain is recorded against."""
    return find_root(spec) or os.path.dirname(os.path.realpath(spec))


def stable(path: str, root: str) -> str:
    """`path` relative to `root`, with `/` separators on every system."""
    return os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/")

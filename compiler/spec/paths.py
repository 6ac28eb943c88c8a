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
    _real_directory.cache_clear()


@lru_cache(maxsize=256)
def _real_directory(directory: str) -> str:
    return os.path.realpath(directory or os.curdir)


def directory_of(path: str) -> str:
    """The directory of the file `path` names, as the kernel finds it: `link/../g.toml` is
    beside where `link` leads, not lexically beside `link` (where a boot file next to the
    spec is read from, or the repository that holds it, whatever the spelling). The
    lexical path when it names that directory (without `..`: always, and without a
    system call)."""
    lexical = os.path.dirname(os.path.abspath(path))
    if os.pardir not in path.split(os.sep):
        return lexical
    resolved = os.path.realpath(os.path.dirname(path) or os.curdir)
    return lexical if os.path.realpath(lexical) == resolved else resolved


def real_path(path: str) -> str:
    """os.path.realpath(path), resolving its directory once per directory (a fleet's specs
    share a few): what realpath gives, as long as the last component is no symlink."""
    import stat
    directory, name = os.path.split(path)
    if name in ("", os.curdir, os.pardir):
        return os.path.realpath(path)
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return os.path.realpath(path)
    except OSError:
        return os.path.realpath(path)
    return os.path.join(_real_directory(directory), name)


def real_path_stat(path: str):
    """(real_path(path), os.stat(path)) of an existing file, with a single lstat when its
    last component is no symlink (output/cache.py validates thousands). Raises OSError."""
    import stat
    info = os.lstat(path)
    directory, name = os.path.split(path)
    if stat.S_ISLNK(info.st_mode) or name in ("", os.curdir, os.pardir):
        return os.path.realpath(path), os.stat(path)
    return os.path.join(_real_directory(directory), name), info


def spec_root(spec: str, real: Optional[str] = None) -> str:
    """The directory every path of this spec's extends chain is recorded against
    (`real`: the spec's resolved path, when known)."""
    return directory_root(os.path.dirname(real or os.path.realpath(spec)))


def directory_root(directory: str) -> str:
    """spec_root() of every spec in `directory` (resolved)."""
    return _root_above(directory) or directory


def stable(path: str, root: str, real: Optional[str] = None) -> str:
    """`path` (resolved: `real`) relative to `root`, with `/` separators on every system."""
    real = real or os.path.realpath(path)
    if real.startswith(root) and real[len(root):len(root) + 1] == os.sep:
        real = real[len(root) + 1:]   # what relpath gives, both paths being resolved
    else:
        real = os.path.relpath(real, root)
    return real.replace(os.sep, "/")

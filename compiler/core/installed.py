"""Versions of installed distributions, read from the .dist-info directory beside the
package that was imported: what importlib.metadata reports (its METADATA's Version), for
the package this process runs, without importlib.metadata's import (~25 ms, more than a
whole build) and its search of every sys.path entry."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Optional


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@lru_cache(maxsize=None)
def version(distribution: str, package_file: str) -> str:
    """The version of `distribution`, whose top-level package's __init__ is
    `package_file`; importlib.metadata's answer where there is no single .dist-info
    beside it (another layout: an egg, a zip)."""
    found = _beside(distribution, os.path.dirname(os.path.dirname(package_file)))
    if found is not None:
        return found
    from importlib import metadata
    return metadata.version(distribution)


def _beside(distribution: str, directory: str) -> Optional[str]:
    wanted = _normalized(distribution)
    try:   # name-version.dist-info (the name normalized, or as the project spells it)
        names = [n for n in os.listdir(directory) if n.endswith(".dist-info")
                 and _normalized(n.partition("-")[0]) == wanted]
    except OSError:
        return None
    if len(names) != 1:
        return None
    try:
        with open(os.path.join(directory, names[0], "METADATA"), encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("Version:"):
                    return line[len("Version:"):].strip()
                if not line.strip():   # the end of the headers
                    break
    except (OSError, UnicodeDecodeError):
        pass
    return None

"""What every record of the incremental cache (cache.py) depends on besides its own files:
cgsc's version and the content of its modules, schema and template files, Python and the
dependencies' versions and the CGSC_* environment. A cache written in another
environment is not used. (The working directory, which relative spec paths depend on,
has a section of the cache of its own.)"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

# Dependencies whose version can change what cgsc writes: (distribution, module).
DEPENDENCIES = (("tomli", "tomli"), ("jsonschema", "jsonschema"), ("Jinja2", "jinja2"),
                ("PyYAML", "yaml"), ("sev-snp-measure", "sevsnpmeasure"),
                ("cryptography", "cryptography"))
CODE_SUFFIXES = (".py", ".json", ".j2", ".so")   # .so: the compiled stat loop (stats.py)



def fingerprint(code: str) -> str:
    """What every record depends on besides its own files (`code`: code_digest())."""
    from .. import __version__
    parts = {
        "cgsc": __version__, "code": code, "python": sys.version,
        "dependencies": _dependencies(),
        "environment": sorted((k, v) for k, v in os.environ.items() if k.startswith("CGSC_")),
        "encoding": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors(),
                     sys.flags.utf8_mode],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8", "surrogateescape")
                          ).hexdigest()


def cwd() -> Optional[str]:
    """The working directory (the spec paths of a section of the cache are relative to
    it); None when it was removed (no relative path opens there, so the records are of
    absolute paths, which hold from anywhere)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def _dependencies() -> List[Tuple[str, str]]:
    from importlib.util import find_spec

    from ..core.installed import version
    out = []
    for distribution, module in DEPENDENCIES:
        try:
            found = find_spec(module)
            out.append((distribution, version(distribution, found.origin) if found and
                        found.origin else "absent"))
        except Exception:   # not installed, or no metadata: a value of its own
            out.append((distribution, "unknown"))
    return out


def code_files() -> Dict[str, str]:
    """relative name -> path of every module, schema and template file of the installed
    cgsc (the cgsc, cgsc.schema and cgsc.targets packages, wherever each lives; found
    without importing them, and walked with scandir: this runs for every cached run)."""
    from importlib.util import find_spec
    tops = {}
    for package in ("cgsc", "cgsc.schema", "cgsc.targets"):
        found = find_spec(package)
        for location in (found.submodule_search_locations or []) if found else []:
            tops[os.path.realpath(location)] = package
    out: Dict[str, str] = {}
    for top, package in sorted(tops.items()):
        _walk(top, package, out)
    return out


def _walk(directory: str, name: str, out: Dict[str, str]) -> None:
    """Every code file under `directory` into `out` (name/relative path -> path), sorted
    (the order of the digest), __pycache__ left out."""
    with os.scandir(directory) as entries:
        found = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries)
    for entry, is_dir in found:
        if is_dir:
            if entry != "__pycache__":
                _walk(f"{directory}{os.sep}{entry}", f"{name}{os.sep}{entry}", out)
        elif entry.endswith(CODE_SUFFIXES):
            out[f"{name}{os.sep}{entry}"] = f"{directory}{os.sep}{entry}"


def code_digest(hint: Optional[dict], margin_ns: int) -> Tuple[str, dict]:
    """(sha256 of cgsc's code files, a hint for next time: their stat and that sha256).
    The files are hashed unless each has the stat of `hint` (a previous cache's, whose MAC
    was checked), with times older than `margin_ns` before the hint was made."""
    files = code_files()
    now = time.time_ns()
    stats = {}
    for name, path in files.items():
        try:
            st = os.stat(path)
            stats[name] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        except OSError:
            stats[name] = None
    try:
        if (isinstance(hint, dict) and hint.get("files") == stats
                and hint.get("names") == list(files)
                and all(max(s[3], s[4]) < hint["made"] - margin_ns for s in stats.values())
                and isinstance(hint.get("sha256"), str)):
            return hint["sha256"], hint
    except (TypeError, KeyError, IndexError):
        pass
    digest = hashlib.sha256()
    for name, path in files.items():
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            data = b"\0unreadable"
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    sha = digest.hexdigest()
    return sha, {"names": list(files), "files": stats, "made": now, "sha256": sha}

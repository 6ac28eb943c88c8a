"""The shipped compiled schema check (schema_compiler.py writes it), used only while it
is the compilation of the schema files and code as they are now."""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED = os.path.join(HERE, "_generated", "schema_check.py")

# The code that turns the schema files into the bundle and the bundle into this check:
# an edit to any of them (a patched installation, too) makes the shipped check stale.
CODE = ("schema.py", "path_rules.py", "validate.py", "schema_compiler.py", "compiled_check.py",
        os.path.join(os.pardir, "mechanisms", "__init__.py"))


def key() -> str:
    """What the compiled check depends on: the schema files and the code in CODE."""
    from .schema import schema_dir, source_files
    digest = hashlib.sha256()
    inputs = [os.path.join(schema_dir(), name) for name in source_files()]
    for path in inputs + [os.path.join(HERE, name) for name in CODE]:
        with open(path, "rb") as fh:
            digest.update(os.path.basename(path).encode() + b"\0" + fh.read() + b"\0")
    return digest.hexdigest()


def check() -> Optional[Callable[[dict], bool]]:
    """The shipped check when it was compiled from these schema files and this code (the
    key), else None: then jsonschema validates every spec."""
    try:
        from ._generated import schema_check as _schema_check
    except Exception:   # absent, or not importable: jsonschema validates everything
        return None
    try:
        current = key()
    except OSError:   # an installation without the sources to compare: never trusted
        return None
    if getattr(_schema_check, "CGSC_SCHEMA_KEY", None) != current:
        return None
    return _schema_check.valid

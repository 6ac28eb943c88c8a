"""Host profiles: what a host (or a distribution) offers a confidential guest.

A profile is JSON (schema/host-profile.schema.json), written by `cgsc probe` or shipped
with cgsc (schema/host-*.json, versions only). A fact that is null or absent is unknown
and never checked, so a versions-only profile checks versions only.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Dict, List, Optional

from ..spec.schema import read, schema_dir

SCHEMA_FILE = "host-profile.schema.json"
SHIPPED_PREFIX = "host-"          # schema/host-<name>.json (the profile schema excluded)
VERSIONED = re.compile(r".*[0-9]+\.[0-9]+(\.[0-9]+)*")  # pc-q35-10.0, pc-q35-rhel10.0.0; q35 floats


class ProfileError(Exception):
    """The --host file cannot be used (exit status 2, like an unreadable output directory)."""


def schema() -> dict:
    return read(SCHEMA_FILE)


def problems(profile) -> List[str]:
    """Why a profile does not fit the schema (empty: it does)."""
    from jsonschema import Draft202012Validator
    validator = Draft202012Validator(schema())
    return sorted(f"{'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
                  for e in validator.iter_errors(profile))


def shipped() -> Dict[str, str]:
    """Shipped profile name -> path."""
    d = schema_dir()
    return {f[len(SHIPPED_PREFIX):-len(".json")]: os.path.join(d, f) for f in sorted(os.listdir(d))
            if f.startswith(SHIPPED_PREFIX) and f.endswith(".json") and f != SCHEMA_FILE}


def load(path: str) -> dict:
    """A profile file, or a shipped profile's name (`debian-12`); raises ProfileError."""
    if not os.path.exists(path):
        names = shipped()
        if path not in names:
            raise ProfileError(f"host profile {path}: no such file, and no shipped profile of "
                               f"that name (shipped: {', '.join(names)}; or make one on the "
                               "host with `cgsc probe -o host.json`)")
        path = names[path]
    try:
        with open(path, encoding="utf-8") as fh:
            profile = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProfileError(f"host profile {path}: {exc}") from None
    found = problems(profile)
    if found:
        raise ProfileError(f"host profile {path} does not fit schema/{SCHEMA_FILE}: "
                           + "; ".join(found[:5]))
    return profile


@lru_cache(maxsize=1024)   # the same few version texts, for every spec of a fleet
def version(text: Optional[str]) -> Optional[tuple]:
    return tuple(int(x) for x in text.split(".")) if text else None


def qemu_for(profile: dict, arch: str) -> Optional[dict]:
    return (profile.get("qemu") or {}).get(arch)


def tdx_fact(profile: Optional[dict], key: str):
    """A fact of the host's TDX stack (`tdx.xfam`, `tdx.page-order`), or None if unknown."""
    return ((profile or {}).get("tdx") or {}).get(key)


def pinned_machine(profile: Optional[dict], arch: str, machine: str) -> Optional[str]:
    """The versioned machine the host's QEMU resolves a floating alias to, if known."""
    if profile is None or not is_floating(machine):
        return None
    qemu = qemu_for(profile, arch) or {}
    return (qemu.get("machines") or {}).get(machine)


def is_floating(machine: str) -> bool:
    return VERSIONED.fullmatch(machine) is None

"""Emit: what a guest's output directory holds, its manifest included.

How it gets onto disk (locked, staged, journalled, durable) is outdir.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Dict

from .. import __version__

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline.build import GuestOutput

MANIFEST = "manifest.json"


def manifest(out: GuestOutput, digests: Dict[str, str]) -> str:
    """`digests`: file name -> sha256 of each artifact's bytes (files_for hashes them)."""
    doc = {
        "cgsc": __version__,
        "guest": out.name,
        "mechanism": out.mechanism,
        "spec": [{"path": p, "sha256": h} for p, h in out.spec_files],
        "artifacts": [{"file": a.filename, "target": t, "mode": f"{a.mode:04o}",
                       "sha256": digests[a.filename], "requires": (out.requires or {}).get(t, {})}
                      for t, a in out.artifacts],
        "warnings": list(out.warnings),
        "waivers": [{"rule": r, "reason": why} for r, why in out.waivers],
        "skipped": [{"target": t, "rule": r, "reason": why} for t, r, why in out.skipped],
    }
    if out.attestation is not None:
        doc["attestation"] = out.attestation
    return pretty_json(doc) + "\n"


_STRING = json.encoder.encode_basestring  # json's own (C) string encoder, non-ASCII kept


def pretty_json(value, indent: str = "") -> str:
    """The text of json.dumps(value, indent=2, ensure_ascii=False), byte for byte, but
    without the generic encoder's cost (it runs in Python whenever indent is set)."""
    kind = type(value)   # exact types first: a manifest holds nothing else
    if kind is str:
        return _STRING(value)
    if kind is dict:
        return _object(value, indent)
    if kind is list or kind is tuple:
        return _array(value, indent)
    if kind is int:   # what json.dumps writes for these, without its encoder's set-up
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return _STRING(value)
    if isinstance(value, dict):
        return _object(value, indent)
    if isinstance(value, (list, tuple)):
        return _array(value, indent)
    return json.dumps(value)  # numbers, true/false/null


def _object(value: dict, indent: str) -> str:
    if not value:
        return "{}"
    inner = indent + "  "
    items = []
    for k, v in value.items():
        if not isinstance(k, str):
            raise TypeError("manifest keys are strings")
        items.append(f"{inner}{_STRING(k)}: {pretty_json(v, inner)}")
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"


def _array(value, indent: str) -> str:
    if not value:
        return "[]"
    inner = indent + "  "
    return "[\n" + ",\n".join([inner + pretty_json(v, inner) for v in value]) + "\n" + indent + "]"


def files_for(out: GuestOutput) -> Dict[str, tuple]:
    """filename -> (bytes, mode, sha256), manifest included: the bytes written (or
    compared), hashed once."""
    files = {}
    for _t, a in out.artifacts:
        data = a.content.encode("utf-8")
        files[a.filename] = (data, a.mode, hashlib.sha256(data).hexdigest())
    text = manifest(out, {name: digest for name, (_d, _m, digest) in files.items()})
    data = text.encode("utf-8")
    files[MANIFEST] = (data, 0o644, hashlib.sha256(data).hexdigest())
    return files


class WriteError(Exception):
    """The output directory cannot take the artifacts (permissions, a file in the way...)."""

"""Load a guest spec: parse TOML, follow `extends`, remember where every key came from."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from cgsc.diagnostics import Diagnostic, KeyPath, SpecError, error
from cgsc.tomlpos import key_lines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SourceFile:
    """One parsed file. Its key -> line index is built only when a diagnostic needs it."""

    def __init__(self, path: str, sha256: str, text: str):
        self.path = path          # as the user (or the extends chain) named it
        self.sha256 = sha256
        self._text = text
        self._lines = None
        self._columns = None

    @property
    def columns(self) -> Dict[KeyPath, int]:
        if self._columns is None:
            from cgsc.tomlpos import key_columns
            self._columns = key_columns(self._text)
        return self._columns

    @property
    def lines(self) -> Dict[KeyPath, int]:
        if self._lines is None:
            self._lines = key_lines(self._text)
        return self._lines


@dataclass
class Source:
    """The merged spec data plus, for every key path, the file that set it."""
    path: str
    data: dict
    files: List[SourceFile]
    owner: Dict[KeyPath, SourceFile] = field(default_factory=dict)

    def locate(self, d: Diagnostic) -> Diagnostic:
        """Attach file and line: the longest prefix of the key path that we know."""
        path = tuple(d.path)
        while True:
            src = self.owner.get(path)
            if src is not None:
                line = src.lines.get(path) or _nearest_line(src.lines, path)
                column = src.columns.get(path, 0) if path in src.lines else 0
                return d.located(src.path, line, column)
            if not path:  # a file-level problem (missing top-level key): the first line
                return d.located(self.path, 1)
            path = path[:-1]


def _nearest_line(lines: Dict[KeyPath, int], path: KeyPath) -> int:
    while path:
        path = path[:-1]
        if path in lines:
            return lines[path]
    return 0


def _parse(path: str) -> Tuple[dict, SourceFile]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise SpecError([error("CGS-LOAD-001", (), f"cannot read the spec: {exc.strerror}",
                               "check the path").located(path, 0)])
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError([error("CGS-LOAD-002", (), f"not UTF-8 text (byte {raw[exc.start]:#04x})",
                               "TOML files are UTF-8; re-encode the file").located(path, line)])
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([_syntax_error(path, exc)])
    src = SourceFile(path, hashlib.sha256(raw).hexdigest(), text)
    return data, src


def _syntax_error(path: str, exc: Exception) -> Diagnostic:
    msg = str(exc)
    line = col = 0
    lineno = getattr(exc, "lineno", None)
    if lineno:  # Python 3.14+ carries positions as attributes
        line, col = lineno, getattr(exc, "colno", 0)
        msg = getattr(exc, "msg", msg)
    else:
        import re
        m = re.search(r"\(at line (\d+), column (\d+)\)$", msg)
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            msg = msg[:m.start()].rstrip()
        elif msg.endswith("(at end of document)"):
            msg = msg[:-len("(at end of document)")].rstrip()
    return Diagnostic("CGS-LOAD-003", (), f"TOML syntax error: {msg}",
                      "fix the TOML syntax; see https://toml.io/en/v1.0.0",
                      file=path, line=line, column=col)


def _merge(base: dict, top: dict, owner: Dict[KeyPath, SourceFile], src: SourceFile,
           prefix: KeyPath = ()) -> dict:
    """Tables merge key by key; arrays and scalars replace."""
    out = dict(base)
    for key, value in top.items():
        path = prefix + (key,)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            owner[path] = owner.get(path, src)
            out[key] = _merge(out[key], value, owner, src, path)
        else:
            if key in out:  # drop what the base said below this key
                for p in [p for p in owner if p[:len(path)] == path]:
                    del owner[p]
            out[key] = value
            _own(value, path, owner, src)
    return out


def _own(value, path: KeyPath, owner: Dict[KeyPath, SourceFile], src: SourceFile) -> None:
    owner[path] = src
    if isinstance(value, dict):
        for k, v in value.items():
            _own(v, path + (k,), owner, src)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _own(v, path + (i,), owner, src)


def load(path: str) -> Source:
    """Parse `path` and its `extends` chain into one Source (raises SpecError)."""
    chain: List[Tuple[dict, SourceFile]] = []
    seen: List[str] = []
    current = path
    while True:
        real = os.path.realpath(current)
        if real in seen:
            names = " -> ".join(s.path for _, s in chain) + f" -> {current}"
            last = chain[-1][1]
            raise SpecError([error("CGS-LOAD-004", ("extends",), f"extends cycle: {names}",
                                   "remove one `extends` so the chain ends in a base spec")
                             .located(last.path, last.lines.get(("extends",), 0))])
        seen.append(real)
        data, src = _parse(current)
        chain.append((data, src))
        base = data.get("extends")
        if base is None:
            break
        if not isinstance(base, str) or not base:
            raise SpecError([error("CGS-SCHEMA-003", ("extends",),
                                   "expected a string (path of the base spec)")
                             .located(src.path, src.lines.get(("extends",), 0))])
        nxt = os.path.normpath(os.path.join(os.path.dirname(current), base))
        if not os.path.isfile(nxt):
            raise SpecError([error("CGS-LOAD-005", ("extends",),
                                   f"base spec {base!r} not found (looked for {nxt})",
                                   "`extends` is relative to the file that says it")
                             .located(src.path, src.lines.get(("extends",), 0))])
        current = nxt
    merged: dict = {}
    owner: Dict[KeyPath, SourceFile] = {}
    for data, src in reversed(chain):
        data = {k: v for k, v in data.items() if k != "extends"}
        merged = _merge(merged, data, owner, src)
    return Source(path, merged, [s for _, s in chain], owner)

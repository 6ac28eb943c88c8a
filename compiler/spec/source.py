"""Load a guest spec: parse TOML, follow `extends`, remember where every key came from."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..core import inputs
from ..core.diagnostics import Diagnostic, KeyPath, SpecError, error
from ..core.rules import Rule
from .path_rules import allowed
from .paths import real_path, spec_root, stable
from .per_guest import PLACEHOLDER, expand
from .positions import key_lines

MAX_SPEC_BYTES = inputs.SPEC.limit  # 1 MiB: a spec is a few KiB; the bound keeps /dev/zero out
MAX_DEPTH = inputs.SPEC.depth       # the language nests 4 deep; the bound keeps recursion safe

# One TOML 1.0.0 parser on every Python: tomli before 2.4, the project the standard
# library's tomllib was taken from, shipped compiled (mypyc; about twice tomllib's speed).
# Python 3.15's tomllib (and tomli 2.4 on) reads TOML 1.1.0, which would let one spec build
# on one machine and fail on another.
import tomli as toml

Rule("CGS-LOAD-001", "the spec file cannot be read",
     "cgsc reads every spec and base spec itself; nothing is built from a file it cannot read, "
     "nor from one whose path (as the artifacts record it) is not UTF-8: manifest.json, the "
     "unit and the domain XML are UTF-8 text.",
     "docs/language.md (limits: a regular file of at most 1 MiB); open(2), read(2)",
     fix="Check the path and the file's permissions; rename a file whose name is not UTF-8.")
Rule("CGS-LOAD-002", "the spec file is not UTF-8",
     "TOML documents are UTF-8 by definition; guessing another encoding could change paths "
     "and command lines silently.", "TOML v1.0.0",
     fix="Re-encode the file as UTF-8 (TOML requires it), e.g. `iconv -f latin1 -t utf-8`.")
Rule("CGS-LOAD-003", "TOML syntax error",
     "The file is not valid TOML, so no key in it can be trusted.", "TOML v1.0.0",
     fix="Fix the TOML at the line and column given; see https://toml.io/en/v1.0.0.")
Rule("CGS-LOAD-004", "`extends` chain has a cycle",
     "Base specs are merged from the root of the chain outwards; a cycle has no root.",
     "docs/language.md, extends",
     fix="Remove one `extends` so that the chain ends in a base spec.")
Rule("CGS-LOAD-005", "`extends` names a file that does not exist",
     "A guest built without its base would silently lose the base's settings (firmware, "
     "mechanism, policy).", "docs/language.md, extends",
     fix="`extends` is relative to the file that says it; fix the path or add the base spec.")
Rule("CGS-LOAD-006", "tables or arrays nested too deeply",
     "The spec language nests at most four levels; a spec nested hundreds deep is an attack "
     "on the parser (recursion), not a guest. cgsc refuses more than 32 levels.",
     "docs/language.md (limits); Python's recursion limit, which a deep document reaches in a "
     "recursive parser",
     fix="Remove the extra nesting; `cgsc schema` shows the shape of every table.")
ABSTRACT_NAME = Rule(
    "CGS-BASE-001", "an abstract base spec names a guest",
    "An abstract base (`abstract = true`) is never built; every spec that extends it is a "
    "guest of its own and must name itself. A [guest] name in the base is inherited by every "
    "child that forgets its own, and two such children collide (CGS-TARGET-002).",
    "docs/fleets.md, abstract bases",
    fix="Remove [guest] name from the base; name each guest in its own spec. A value that "
        "must differ per guest can say `{name}`.")
Rule("CGS-LOAD-007", "`extends` reaches outside the spec's repository",
     "A base spec decides firmware, mechanism and policy. A spec under review must not pull "
     "them from a file outside the repository (an absolute path, `..` or a symlink leading "
     "out), where the review cannot see or pin it.", "docs/language.md, extends",
     fix="Name the base relative to the spec, inside the same repository (the nearest "
         "directory with .git above the spec, or the spec's directory outside a repository).")


LIST_ENTRY = Rule(
    "CGS-LOAD-008", "an entry of a --specs-from list is not a file name",
    "A list names one spec per line. A line with a NUL byte (a file name cannot hold one), "
    "or longer than PATH_MAX (4096 bytes), is no file name: the list is not what it seems "
    "(a binary file, /proc/self/environ, a list joined with `find -print0`), so nothing "
    "of it is built, and the line is shown only as a short, escaped prefix.",
    "README, Fleets (--specs-from)",
    fix="Write one path per line (`find specs -name '*.toml' > fleet.txt`, not -print0).")
MAX_LIST_ENTRY = 4096   # PATH_MAX: longer is no path a system call accepts
SHOWN_PREFIX = 16       # bytes of a bad entry a diagnostic shows


def listed(where: str) -> List[str]:
    """The spec paths of a --specs-from list (`-`: standard input): one per line, any
    bytes a file name may have, blank lines ignored. Raises inputs.InputError when the
    list cannot be read, SpecError (every bad entry, nothing else of the list) when a line
    is no file name."""
    label = "standard input" if where == "-" else where
    data = (inputs.read_fd(0, label, inputs.SPEC_LIST) if where == "-"
            else inputs.read(where, inputs.SPEC_LIST))
    lines = data.split(b"\n")
    if b"\0" not in data and max(map(len, lines)) <= MAX_LIST_ENTRY:   # at C speed: as below
        return [path for path in os.fsdecode(data).split("\n") if path]
    paths, bad = [], []
    for number, line in enumerate(lines, 1):
        if b"\0" in line or len(line) > MAX_LIST_ENTRY:
            bad.append(_bad_entry(label, number, line))
        elif line:
            paths.append(os.fsdecode(line))
    if bad:
        raise SpecError(bad)
    return paths


def _bad_entry(label: str, number: int, line: bytes) -> Diagnostic:
    nul = line.find(b"\0")
    head = line[:min(SHOWN_PREFIX, nul if nul >= 0 else len(line))]
    shown = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}"
                    for b in head)   # printable ASCII as itself, any other byte escaped
    what = (f"a NUL byte at byte {nul + 1} of the line, which starts" if nul >= 0 else
            f"the line is {len(line)} bytes (a path is at most {MAX_LIST_ENTRY}); it starts")
    return LIST_ENTRY.error((), f"not a file name: {what} \"{shown}\"",
                            "one spec path per line; nothing of this list was built"
                            ).located(label, number)

class SourceFile:
    """One parsed file. Its key -> line index is built only when a diagnostic needs it."""

    def __init__(self, path: str, sha256: str, text: str, real: str):
        self.path = path          # as the user (or the extends chain) named it
        self.real = real          # symlinks resolved
        self.sha256 = sha256
        self._text = text
        self._lines = None
        self._columns = None

    @property
    def columns(self) -> Dict[KeyPath, int]:
        if self._columns is None:
            from .positions import key_columns
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
    known_owner: Optional[Dict[KeyPath, SourceFile]] = None   # None: one file set every key
    root: str = ""   # what its paths are recorded against (paths.spec_root)
    abstract: bool = False   # `abstract = true`: a base only, never built as a guest

    @property
    def owner(self) -> Dict[KeyPath, SourceFile]:
        """Key path -> the file that set it. For a spec without `extends`, built only when
        asked (a diagnostic, a [measurement] path): a fleet's valid specs never need it."""
        if self.known_owner is None:
            owner: Dict[KeyPath, SourceFile] = {}
            for key, value in self.data.items():
                _own(value, (key,), owner, self.files[0])
            self.known_owner = owner
        return self.known_owner

    def recorded(self, path: str) -> str:
        """A file of the chain as artifacts record it (paths.stable)."""
        real = next((f.real for f in self.files if f.path == path), None)
        return stable(path, self.root or spec_root(self.path), real)

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


def _read(path: str) -> bytes:
    """The file's bytes, by the input boundary's rules for a spec (core.inputs); an
    environment problem (too many open files) is raised as such, never blamed on the spec."""
    try:
        return inputs.read(path, inputs.SPEC)
    except inputs.InputError as exc:
        if exc.rule == "size":
            why, hint = (f"larger than {MAX_SPEC_BYTES} bytes",
                         "a guest spec is a few kilobytes; check that this is the right file")
        elif exc.rule == "type":
            why, hint = exc.detail, "name a spec file (a regular file)"
        else:
            why, hint = exc.detail, "check the path"
        raise SpecError([error("CGS-LOAD-001", (), f"cannot read the spec: {why}", hint)
                         .located(path, 0)]) from None


def _parse(path: str, real: str) -> Tuple[dict, SourceFile]:
    raw = _read(path)
    try:
        text = raw.decode("utf-8")
        data = toml.loads(text)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError([error("CGS-LOAD-002", (), f"not UTF-8 text (byte {raw[exc.start]:#04x})",
                               "TOML files are UTF-8; re-encode the file").located(path, line)])
    except toml.TOMLDecodeError as exc:
        raise SpecError([_syntax_error(path, exc, text)])
    except RecursionError:  # the parser recurses once per nested array or inline table
        raise SpecError([_too_deep(path, text)])
    except ValueError as exc:  # an integer beyond Python's int/str conversion limit
        why = "an integer with more than 4300 digits" if "digits" in str(exc) else str(exc)
        raise SpecError([Diagnostic("CGS-LOAD-003", (), f"TOML value cannot be read: {why}",
                                    "no spec value needs more than a few digits",
                                    file=path, line=_long_number_line(text))])
    too_deep, wide = _shape(data)
    if too_deep:
        raise SpecError([_too_deep(path, text)])
    src = SourceFile(path, hashlib.sha256(raw).hexdigest(), text, real)
    if wide:
        key, value = _wide_integer(data)
        digits = len(f"{abs(value):x}")
        raise SpecError([Diagnostic("CGS-LOAD-003", key, f"integer of {digits} hex digits does "
                                    "not fit in 64 bits (TOML integers are 64-bit)",
                                    "no spec value is wider than 64 bits",
                                    file=path, line=src.lines.get(key) or _nearest_line(src.lines, key))])
    return data, src


def parsed(path: str) -> dict:
    """One file's TOML data by the loader's rules (size, UTF-8, syntax, nesting), its
    `extends` not followed; raises SpecError."""
    return _parse(path, real_path(path))[0]


INT_RANGE = (-(1 << 63), (1 << 64) - 1)  # int64, and the uint64 of policy and attribute words


def leaves(value):
    """(key path, value) of every scalar in a parsed spec, without recursion (a hostile
    file may nest deeper than Python's recursion limit)."""
    stack = [((), value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in enumerate(node))
        else:
            yield path, node


def _wide_integer(value):
    """The first (key path, integer) outside INT_RANGE; else None. The parser reads any hex
    integer, and decimal ones up to 4300 digits."""
    return next(((path, node) for path, node in leaves(value)
                 if isinstance(node, int) and not INT_RANGE[0] <= node <= INT_RANGE[1]), None)


def _shape(value) -> Tuple[bool, bool]:
    """(nested more than MAX_DEPTH deep, holds an integer outside INT_RANGE): one walk,
    without recursion and without building key paths (found again only for an error)."""
    low, high = INT_RANGE
    wide, stack = False, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True, wide
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, int) and not low <= node <= high:
            wide = True
    return False, wide


def _too_deep(path: str, text: str) -> Diagnostic:
    return Diagnostic("CGS-LOAD-006", (), f"tables and arrays nested more than {MAX_DEPTH} deep",
                      "the spec language nests at most four levels; remove the extra brackets",
                      file=path, line=_deep_line(text))


def _deep_line(text: str) -> int:
    """Best effort: the line where bracket nesting first passes the limit (strings are not
    skipped, so this can point a little early)."""
    level, line = 0, 1
    for ch in text:
        if ch == "\n":
            line += 1
        elif ch in "[{":
            level += 1
            if level > MAX_DEPTH:
                return line
        elif ch in "]}":
            level = max(0, level - 1)
    # nested by dotted keys (a.b.c...) instead: the line with the most separators
    counts = [sum(line.count(c) for c in ".[{") for line in text.split("\n")]
    return counts.index(max(counts)) + 1 if counts else 1


def _long_number_line(text: str) -> int:
    import re
    m = re.search(r"[0-9_]{4000,}", text)
    return text.count("\n", 0, m.start()) + 1 if m else 1


def _syntax_error(path: str, exc: Exception, text: str) -> Diagnostic:
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
            lines = text.split("\n")  # the last line: where the document ended
            line, col = len(lines), len(lines[-1]) + 1
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


def extends_root(path: str, real: str = "") -> str:
    """Where a spec's `extends` chain may reach: the repository that holds the spec (the
    nearest ancestor directory with a .git entry, after resolving symlinks), else the
    spec's own directory: the root its recorded paths are relative to, too."""
    return spec_root(path, real)


def _base_path(current: str, real: str, base: str) -> Tuple[str, str]:
    """`extends = base` of the file `current` (resolved: `real`), and that path resolved:
    relative to the directory the file really is in, so a spec reached through a symlink
    (to it, or to a directory above it, then `..`) extends the same base as the file
    itself. Spelled as the user would (relative to the path given) when that names the
    same file."""
    spelled = os.path.normpath(os.path.join(os.path.dirname(current), base))
    actual = os.path.normpath(os.path.join(os.path.dirname(real), base))
    resolved = os.path.realpath(actual)
    if spelled == actual or os.path.realpath(spelled) == resolved:
        return spelled, resolved
    return actual, resolved


def _escapes(base: str, real: str, root: str) -> str:
    """Why `extends = base` (resolved: `real`) is refused, or "" when it stays under root."""
    if os.path.isabs(base):
        return f"{base!r} is an absolute path; `extends` must be relative to the file"
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return f"{base!r} resolves to {real}, outside {root}"
    return ""




def _shown_path(value: str) -> str:
    shown = value[:80].encode("unicode_escape", "backslashreplace").decode("ascii")
    return '"' + shown.replace('"', '\\"') + '"' + ("..." if len(value) > 80 else "")


def _unusable_base(base: str, path: str) -> Optional[Diagnostic]:
    """Why the base spec at `path` (`extends = base`) cannot be read, said at the `extends`
    line: not there (CGS-LOAD-005), or there but no regular file or unreadable
    (CGS-LOAD-001); None when it is a regular file (read by the input boundary's rules)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return error("CGS-LOAD-005", ("extends",), f"base spec {base!r} not found (looked for "
                     f"{path})", "`extends` is relative to the file that says it")
    except OSError as exc:
        if inputs.resource_error(exc) is not None:
            raise inputs.resource_error(exc) from None
        return error("CGS-LOAD-001", ("extends",), f"base spec {base!r} cannot be read "
                     f"({path}): {exc.strerror or exc}", "check the file's permissions")
    if not stat.S_ISREG(mode):
        return error("CGS-LOAD-001", ("extends",), f"base spec {base!r} is "
                     f"{inputs.file_type(mode)}, not a regular file ({path})",
                     "`extends` names a spec file")
    return None


def load(path: str) -> Source:
    """Parse `path` and its `extends` chain into one Source (raises SpecError)."""
    chain: List[Tuple[dict, SourceFile]] = []
    seen: List[str] = []
    real = real_path(path)
    root = extends_root(path, real)
    current = path
    while True:
        if real in seen:
            names = " -> ".join(s.path for _, s in chain) + f" -> {current}"
            last = chain[-1][1]
            raise SpecError([error("CGS-LOAD-004", ("extends",), f"extends cycle: {names}",
                                   "remove one `extends` so the chain ends in a base spec")
                             .located(last.path, last.lines.get(("extends",), 0))])
        seen.append(real)
        data, src = _parse(current, real)
        chain.append((data, src))
        base = data.get("extends")
        if base is None:
            break
        if not isinstance(base, str) or not base:
            raise SpecError([error("CGS-SCHEMA-003", ("extends",),
                                   "expected a string (path of the base spec)")
                             .located(src.path, src.lines.get(("extends",), 0))])
        # the schema's rule, applied here: the loader uses the path before the schema
        # runs (an absolute path is left to CGS-LOAD-007, which says why)
        if not allowed("extends", base) and not os.path.isabs(base):
            raise SpecError([error("CGS-SCHEMA-004", ("extends",),
                                   f"{_shown_path(base)} is not valid; expected a relative "
                                   "path without control characters, at most 4095 characters")
                             .located(src.path, src.lines.get(("extends",), 0))])
        nxt, nxt_real = _base_path(current, real, base)
        outside = _escapes(base, nxt_real, root)
        if outside:
            raise SpecError([error("CGS-LOAD-007", ("extends",), outside,
                                   f"keep base specs under {root} and name them relative to "
                                   "the file that extends them")
                             .located(src.path, src.lines.get(("extends",), 0))])
        unusable = _unusable_base(base, nxt)
        if unusable is not None:
            raise SpecError([unusable.located(src.path, src.lines.get(("extends",), 0))])
        current, real = nxt, nxt_real
    abstract = chain[0][0].get("abstract") is True
    named = [(abstract_named(data.get("guest")), src) for data, src in chain[1:]
             if data.get("abstract") is True]
    if any(d for d, _src in named):
        raise SpecError([d.located(src.path, src.lines.get(("guest", "name"), 0))
                         for d, src in named if d])
    if len(chain) == 1:
        merged = chain[0][0]
        merged.pop("extends", None)
        owner: Optional[Dict[KeyPath, SourceFile]] = None
    else:
        merged, owner = {}, {}
        for i, (data, src) in enumerate(reversed(chain)):
            top = i == len(chain) - 1   # `abstract` is the file's own, never inherited
            data = {k: v for k, v in data.items() if k != "extends" and (top or k != "abstract")}
            merged = _merge(merged, data, owner, src)
    guest = merged.get("guest")
    name = guest.get("name") if isinstance(guest, dict) else None
    if not abstract and isinstance(name, str) and any(PLACEHOLDER in s._text for _d, s in chain):
        merged = expand(merged, name)
    return Source(path, merged, [s for _, s in chain], owner, root, abstract)


def abstract_named(guest) -> Optional[Diagnostic]:
    """CGS-BASE-001 (not yet located) when an abstract base's [guest] table has a name."""
    if not isinstance(guest, dict) or "name" not in guest:
        return None
    return ABSTRACT_NAME.error(("guest", "name"), "is set in an abstract base, so every guest "
                               "that does not name itself gets this name",
                               "remove it; each guest names itself")

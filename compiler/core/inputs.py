"""The input boundary: every file cgsc reads is opened and read here, by the same rules.

- A regular file, checked before it is opened (stat: a device is never opened, so opening
  it has no side effect) and again on the opened descriptor (fstat: a file swapped in
  between is caught). The open never blocks (O_NONBLOCK: a FIFO put there in between
  opens at once, and fstat refuses it).
- A bound per kind of input, and the read stops one byte past it: /dev/zero, a /proc file
  or a file that grows cannot make cgsc read on.
- UTF-8 where the input is text, with the line and column of the first bad byte.
- A nesting bound where the content nests (JSON, XML), checked before a parser recurses.
- Errors name the file and the rule broken (InputError). A problem of the machine rather
  than of the file (too many open files, no memory) is ResourceError: the command stops
  once, with exit status 2, instead of blaming every file it could not open.

Callers turn an InputError into their own words (a located CGS-LOAD diagnostic for a
spec, a usage error for --host); the rules themselves live only here.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterator, NamedTuple, Optional, Tuple

MiB = 1 << 20


class Kind(NamedTuple):
    """A kind of input and its bounds."""
    name: str              # "spec", "host profile": how messages name it
    limit: int             # bytes; one more is never read
    depth: int = 0         # nesting bound of its content (0: does not nest)


SPEC = Kind("spec", MiB, 32)                  # a spec is a few KiB (spec.source's bound)
SPEC_LIST = Kind("spec list", MiB)            # --specs-from: 1 MiB is >10,000 paths
HOST_PROFILE = Kind("host profile", 4 * MiB, 64)   # `cgsc probe` writes a few KiB
CAPABILITIES = Kind("domain capabilities XML", 4 * MiB, 64)   # virsh: ~10 KiB, 6 deep
TOOL_OUTPUT = Kind("recorded QEMU output", 4 * MiB)  # `qemu-system-* -version`, -object help
BOOT_FILE = Kind("boot file", 1 << 30)        # firmware, kernel, initrd: 1 GiB at most
MANIFEST = Kind("manifest", 4 * MiB, 64)      # cgsc's own manifest.json, as found on disk
ARTIFACT = Kind("artifact", 16 * MiB)         # an artifact on disk that `check` compares

# errno values that say the machine, not the file, is the problem
_RESOURCE = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class InputError(Exception):
    """A file that cannot be used as this kind of input. `rule`: which rule it breaks
    ("open", "type", "size", "read", "utf-8", "depth", "syntax"); `line`, `column`: where
    in the file, when known."""

    def __init__(self, path: str, kind: Kind, rule: str, detail: str, line: int = 0,
                 column: int = 0):
        super().__init__(f"{kind.name} {shown(path)}: {detail}")
        self.path, self.kind, self.rule, self.detail = path, kind, rule, detail
        self.line, self.column = line, column
        self.size = 0   # the file's size, for a "size" error that knows it


class ResourceError(OSError):
    """The machine ran out of something (descriptors, memory) while reading an input:
    an environment problem, reported once (exit status 2), never blamed on the file.
    Built as OSError(errno, strerror, filename), so it crosses a worker's pipe intact."""

    def __str__(self) -> str:
        hint = " (raise `ulimit -n`)" if self.errno in (errno.EMFILE, errno.ENFILE) else ""
        return f"{self.strerror}{hint}"


def resource_error(exc: BaseException) -> Optional[ResourceError]:
    """`exc` as a ResourceError when it is one (an OSError with EMFILE...), else None."""
    if isinstance(exc, ResourceError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _RESOURCE:
        return ResourceError(exc.errno, exc.strerror or os.strerror(exc.errno), exc.filename)
    if isinstance(exc, MemoryError):
        return ResourceError(errno.ENOMEM, os.strerror(errno.ENOMEM))
    if isinstance(exc, ImportError):   # a module's shared library could not be opened:
        for code in (errno.EMFILE, errno.ENFILE):   # dlopen says why only in words
            if os.strerror(code) in str(exc):
                return ResourceError(code, os.strerror(code))
    return None


def shown(path: str) -> str:
    """A path as messages show it: controls and non-UTF-8 bytes escaped, at most 200
    characters (a 4 KiB path of garbage is not worth echoing whole)."""
    from .diagnostics import printable
    text = printable(path[:200])
    return text + ("..." if len(path) > 200 else "")


_FILE_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def file_type(mode: int) -> str:
    return next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")


def _failed(path: str, kind: Kind, exc: OSError, rule: str = "open") -> Exception:
    found = resource_error(exc)
    if found is not None:
        return ResourceError(found.errno, found.strerror, path)
    return InputError(path, kind, rule, exc.strerror or str(exc))


def open_regular(path: str, kind: Kind) -> Tuple[int, os.stat_result]:
    """A read descriptor of `path` and its fstat, if it is a regular file (symlinks are
    followed, as for any file a user names). Raises InputError or ResourceError."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:   # ValueError: a NUL byte in the path
        if isinstance(exc, ValueError):
            raise InputError(path, kind, "open", "the path holds a NUL byte") from None
        raise _failed(path, kind, exc) from None
    if not stat.S_ISREG(st.st_mode):       # refused unopened: opening a device can act
        raise InputError(path, kind, "type", f"{file_type(st.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _failed(path, kind, exc) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise _failed(path, kind, exc) from None
    if not stat.S_ISREG(st.st_mode):       # replaced since the stat above
        os.close(fd)
        raise InputError(path, kind, "type", f"{file_type(st.st_mode)}, not a regular file")
    if st.st_size > kind.limit:
        os.close(fd)
        raise too_large(path, kind, st.st_size)
    return fd, st


def too_large(path: str, kind: Kind, size: int = 0) -> InputError:
    error = InputError(path, kind, "size", (f"{size} bytes, " if size else "")
                       + f"larger than {_bytes(kind.limit)} (the bound for a {kind.name})")
    error.size = size   # (boot files' messages state it their own way)
    return error


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def read(path: str, kind: Kind) -> bytes:
    """The bytes of a regular file of at most kind.limit bytes."""
    fd, st = open_regular(path, kind)
    try:
        return read_fd(fd, path, kind, st.st_size)
    finally:
        os.close(fd)


def read_fd(fd: int, path: str, kind: Kind, size: int = 0) -> bytes:
    """At most kind.limit bytes of an open descriptor (a regular file, or a pipe such as
    standard input), in reads sized by the file (a read of the limit would allocate it
    whole for a file of a few KiB), on to an empty read: a file of /proc, FUSE or the
    like may read short before its end. One byte past the limit is an error."""
    chunks, total, want = [], 0, min(size + 1, kind.limit + 1) if size else 1 << 16
    try:
        while total <= kind.limit:
            chunk = os.read(fd, min(want, kind.limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            want = 1 << 16
    except BlockingIOError:   # a non-blocking pipe with nothing in it yet
        raise InputError(path, kind, "read", "not ready to read (an empty non-blocking pipe)") from None
    except OSError as exc:
        raise _failed(path, kind, exc, "read") from None
    if total > kind.limit:
        raise too_large(path, kind)
    return b"".join(chunks)


def chunks(path: str, kind: Kind, size: int = MiB) -> Iterator[bytes]:
    """A regular file's bytes in chunks, for a reader that hashes rather than keeps them
    (boot files): to the end, and never past kind.limit or the size fstat gave plus one
    byte; a file whose content is not its size (/proc, /sys, one being written) is an
    InputError once read."""
    fd, st = open_regular(path, kind)
    try:
        total, limit = 0, st.st_size + 1
        while total < limit:
            try:
                chunk = os.read(fd, min(size, limit - total))
            except OSError as exc:
                raise _failed(path, kind, exc, "read") from None
            if not chunk:
                break
            total += len(chunk)
            yield chunk
        if total != st.st_size:
            raise InputError(path, kind, "read", f"{st.st_size} bytes by its size but "
                             f"{'more' if total > st.st_size else total} bytes were read: its "
                             "content is not a fixed file (/proc, /sys, or a file being written)")
    finally:
        os.close(fd)


def text(data: bytes, path: str, kind: Kind) -> str:
    """UTF-8 text, or an InputError at the first bad byte (line and column, 1-based)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(path, kind, "utf-8", f"not UTF-8 text (byte {data[exc.start]:#04x} "
                         f"at line {line}, column {column})", line, column) from None


def read_text(path: str, kind: Kind) -> str:
    return text(read(path, kind), path, kind)


# -- nested content ------------------------------------------------------------------

def load_json(data: bytes, path: str, kind: Kind):
    """JSON of at most kind.depth nested arrays and objects, refused before the parser
    recurses; duplicate keys, NaN and Infinity (not JSON) are refused too."""
    return parse_json(text(data, path, kind), path, kind)


def parse_json(content: str, path: str, kind: Kind):
    """load_json of text already decoded (a line of a JSON Lines file)."""
    import json
    # no deeper than it has brackets, counted at C speed (a manifest: ~30 of them): the
    # tokenizer, which skips those in strings, only when there are more than the bound
    if content.count("[") + content.count("{") > kind.depth:
        depth, line = json_depth(content, kind.depth)
        if depth > kind.depth:
            raise InputError(path, kind, "depth", f"arrays and objects nested more than "
                             f"{kind.depth} deep (at line {line})", line)

    def pairs(items):
        seen = {}
        for key, value in items:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen[key] = value
        return seen

    def constant(name):
        raise ValueError(f"{name} is not a JSON number")
    try:
        return json.loads(content, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise InputError(path, kind, "syntax", f"not JSON: {exc.msg} (line {exc.lineno}, "
                         f"column {exc.colno})", exc.lineno, exc.colno) from None
    except (ValueError, RecursionError) as exc:   # a duplicate key, NaN, a 5000-digit number
        raise InputError(path, kind, "syntax", f"not usable JSON: {exc}") from None


def json_depth(content: str, limit: int) -> Tuple[int, int]:
    """(the deepest nesting of arrays and objects, capped at limit + 1, and the line where
    it passed the limit), counting brackets outside strings, without recursion."""
    import re
    depth = deepest = 0
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', content, re.S):
        token = match.group(0)
        if token in "[{":
            depth += 1
            if depth > limit:
                return depth, content.count("\n", 0, match.start()) + 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth = max(0, depth - 1)
    return deepest, 0


def load_xml(data: bytes, path: str, kind: Kind):
    """An XML document (xml.etree Element) of at most kind.depth nested elements, without
    a DTD: no entity can expand and no external file is fetched. The tree is built while
    parsing, so the bound holds before anything deeper is kept."""
    import xml.etree.ElementTree as ET
    from xml.parsers import expat
    content = text(data, path, kind)
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    depth = [0]

    def refuse_dtd(*_args):
        raise InputError(path, kind, "syntax", "has a DTD (<!DOCTYPE>); none is accepted "
                         f"(line {parser.CurrentLineNumber})", parser.CurrentLineNumber)

    def start(tag, attrs):
        depth[0] += 1
        if depth[0] > kind.depth:
            raise InputError(path, kind, "depth", f"elements nested more than {kind.depth} "
                             f"deep (at line {parser.CurrentLineNumber})",
                             parser.CurrentLineNumber)
        builder.start(tag, attrs)

    def end(tag):
        depth[0] -= 1
        builder.end(tag)

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(content, True)
        return builder.close()
    except expat.ExpatError as exc:
        raise InputError(path, kind, "syntax", f"not XML: {expat.ErrorString(exc.code)} "
                         f"(line {exc.lineno}, column {exc.offset + 1})", exc.lineno,
                         exc.offset + 1) from None
    except RecursionError:
        raise InputError(path, kind, "depth", "nested too deeply") from None

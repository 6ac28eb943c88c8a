"""Stat keys of many files at once, packed: (device, inode, size, mtime in ns, ctime in ns,
mode) of each as "<QQqqqI", 44 bytes, the form the incremental cache's records hash.

packed(dir_fd, paths, nofollow, here=0): the keys of `paths` (a tuple of str) relative to
dir_fd (None: the working directory; the first `here` of them: the working directory
whatever dir_fd is), the first `nofollow` of them not followed if symlinks.
Raises what os.stat raises (OSError naming the path, ValueError for a NUL), and
OverflowError for a time beyond 64-bit nanoseconds. The compiled _stats.c does the same
~40% faster (os.stat builds a result object as costly as the system call) where pip had a
C compiler; this module's Python is the definition both are tested against."""

from __future__ import annotations

import operator
import os
import struct
from typing import Iterator, Optional, Tuple

KEY = struct.Struct("<QQqqqI")
# (device, inode, size, mtime, ctime, mode) of a stat result, at C speed
FIELDS = operator.attrgetter("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns",
                             "st_mode")


def key(st: os.stat_result) -> bytes:
    """The packed key of one stat result."""
    try:
        return KEY.pack(*FIELDS(st))
    except struct.error:   # a time past 2262: as the compiled version says it
        raise OverflowError("a file time beyond 64-bit nanoseconds") from None


def packed_python(dir_fd: Optional[int], paths: Tuple[str, ...], nofollow: int,
                  here: int = 0) -> bytes:
    return b"".join(key(os.stat(path, dir_fd=None if i < here else dir_fd,
                                follow_symlinks=i >= nofollow))
                    for i, path in enumerate(paths))


def unpacked(keys: bytes) -> Iterator[Tuple[int, int, int, int, int, int]]:
    """The (device, inode, size, mtime, ctime, mode) of each key in `keys`."""
    return KEY.iter_unpack(keys)


def mode(keys: bytes, index: int = 0) -> int:
    """The st_mode of key `index`."""
    return int.from_bytes(keys[index * KEY.size + 40:(index + 1) * KEY.size], "little")


try:
    from ._stats import packed as compiled
except ImportError:   # built without a C compiler: the same keys, slower
    compiled = None
packed = compiled or packed_python

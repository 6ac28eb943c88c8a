"""The stat keys of many files at once, for the incremental cache: (device, inode, size,
mtime in ns, ctime in ns, mode) of each as "<QQqqqI", 44 bytes, the form its records
hold and compare.

batch(dir_fd, entries) -> (keys, failed): `entries` is bytes, each entry a flag byte, a
path and a NUL; the flag is 0x40 plus FROM_CWD (the path is relative to the working
directory, not dir_fd), NOFOLLOW (lstat) and NO_LINK (a symlink fails the entry). `keys`
has 44 bytes an entry, zeros for one that failed (no file's key: its mode is never 0);
`failed` the indexes of those, as little-endian uint32. Any error fails an entry (a
missing file, a time beyond 64-bit nanoseconds, an empty path, an unknown flag): it is
reported, never raised (entries that do not end with a NUL, or a dir_fd that is no C
int, raise). The compiled _stats.c does the same where pip had a C compiler, ~2x faster
(os.stat builds a result object as costly as the system call) and without the
interpreter's lock, so that threads stat at once (spread()); this module's Python
is the definition both are tested against."""

from __future__ import annotations

import operator
import os
import stat
import struct
import sys
import threading
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

KEY = struct.Struct("<QQqqqI")
# (device, inode, size, mtime, ctime, mode) of a stat result, at C speed
FIELDS = operator.attrgetter("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns",
                             "st_mode")
FROM_CWD, NOFOLLOW, NO_LINK = 1, 2, 4   # an entry's flag byte is 0x40 plus these
SWITCH = 0.0002   # s: how long a thread keeps the interpreter's lock from the others


def entry(flags: int, path: str) -> str:
    """One entry of batch(), as text (encoded with the others: os.fsencode's way)."""
    return f"{chr(0x40 | flags)}{path}\0"


def batch_python(dir_fd: int, entries: bytes) -> Tuple[bytes, bytes]:
    dir_fd = operator.index(dir_fd)   # (refused as the compiled one's "i" refuses it)
    if not -2**31 <= dir_fd < 2**31:
        raise OverflowError("dir_fd is no C int")
    if not isinstance(entries, bytes):   # (as the compiled one's "O!" refuses it)
        raise TypeError("entries must be bytes")
    if entries and not entries.endswith(b"\0"):
        raise ValueError("entries must end with a NUL")
    keys, failed = [], []
    for i, one in enumerate(entries.split(b"\0")[:-1]):
        flag = one[0] ^ 0x40 if one else 8
        try:
            if len(one) < 2 or flag >= 8:
                raise ValueError("not an entry")
            st = os.stat(os.fsdecode(one[1:]), dir_fd=None if flag & FROM_CWD else dir_fd,
                         follow_symlinks=not flag & NOFOLLOW)
            if flag & NO_LINK and stat.S_ISLNK(st.st_mode):
                raise ValueError("a symlink")
            keys.append(KEY.pack(*FIELDS(st)))
        except (OSError, ValueError, struct.error):   # (struct.error: a time past 2262)
            keys.append(bytes(KEY.size))
            failed.append(i)
    return b"".join(keys), struct.pack(f"<{len(failed)}I", *failed)


def unpacked(keys: bytes) -> Iterator[Tuple[int, int, int, int, int, int]]:
    """The (device, inode, size, mtime, ctime, mode) of each key in `keys`."""
    return KEY.iter_unpack(keys)


try:
    from ._stats import batch as compiled
except ImportError:   # built without a C compiler: the same keys, slower
    compiled = None
batch = compiled or batch_python


def spread(dir_fd: int, blobs: Iterable[bytes], helpers: int, use: Callable,
           meanwhile: Optional[Callable[[], None]] = None) -> None:
    """use(i, batch(dir_fd, blob i)) for each of `blobs` in order, in this thread, while
    `helpers` threads and this one stat them: the threads start on each blob as soon as
    this thread has made it (the iteration of `blobs`); this thread then runs
    `meanwhile()`, and uses each result once it is there, taking blobs itself while some
    are left (the compiled batch holds no lock: the threads run at once; Python's holds
    it, and forked processes take its share instead: _forked()). A batch that raised is
    used as that exception. Every helper has stopped when this returns or raises (the
    caller may close dir_fd, or fork)."""
    if batch is batch_python:
        if helpers and hasattr(os, "fork"):
            return _forked(dir_fd, list(blobs), helpers, use, meanwhile)
        helpers = 0
    made: List[bytes] = []
    results: List[object] = []
    state = {"next": 0, "all made": False, "stop": False}
    ready = threading.Condition()

    def take(wait: bool) -> bool:
        with ready:
            while wait and state["next"] >= len(made) and not (state["all made"]
                                                              or state["stop"]):
                ready.wait()
            i = state["next"]
            if i >= len(made) or state["stop"]:
                return False
            state["next"] = i + 1
        try:
            result = batch(dir_fd, made[i])
        except Exception as exc:   # (MemoryError: the caller makes its records misses)
            result = exc
        results[i] = result
        return True

    def work() -> None:
        while take(True):
            pass
    workers = [threading.Thread(target=work, daemon=True) for _ in range(helpers)]
    interval = sys.getswitchinterval()
    if workers:   # a thread back from a batch waits for the lock this one holds: by
        sys.setswitchinterval(SWITCH)   # default up to 5 ms, longer than a batch takes
    try:
        for worker in workers:
            worker.start()
        for blob in blobs:
            with ready:
                made.append(blob)
                results.append(None)
                ready.notify()
        with ready:
            state["all made"] = True
            ready.notify_all()
        if meanwhile is not None:
            meanwhile()
        for i in range(len(made)):
            while results[i] is None:
                if not take(False):
                    for worker in workers:
                        worker.join()
            result, results[i] = results[i], None
            use(i, result)
    finally:
        with ready:
            state["stop"] = True
            ready.notify_all()
        for worker in workers:
            if worker.ident is not None:
                worker.join()
        sys.setswitchinterval(interval)


def _forked(dir_fd: int, blobs: List[bytes], helpers: int, use: Callable,
            meanwhile: Optional[Callable[[], None]]) -> None:
    """spread() with Python's batch: `helpers` forked processes and this one take the
    blobs from one queue (workers.pulled), this one after `meanwhile()`; all of them
    here if a worker dies."""
    from .workers import WorkerDied, blocks, pulled, worker_init

    def take(chunk) -> list:
        out = []
        for blob in chunk:
            try:
                out.append(batch_python(dir_fd, blob))
            except Exception as exc:   # (as in spread(): used as what it is)
                out.append(exc)
        return out
    chunks = blocks(blobs, 1)
    try:
        results = pulled(take, chunks, helpers + 1, worker_init, meanwhile or (lambda: None))
    except WorkerDied:
        results = [take(chunk) for chunk in chunks]
    for i, result in enumerate(r for chunk in results for r in chunk):
        use(i, result)

"""Each file read once per invocation: however many guests of a fleet name a boot file,
its bytes are read and hashed once, and what depends only on them (a firmware's parsed
tables, the digest of its pages) is computed once.

A file is known by what fstat says of the open descriptor: (device, inode, size,
mtime_ns, ctime_ns). Within one invocation that names its bytes: the first read stands
for every guest, so all of them see the same bytes. (Across invocations a stat key is no
proof of content: a same-size rewrite within one timestamp tick changes neither time;
output/cache.py re-hashes such files.)

Memory: a file is hashed as it streams past, never held, unless its bytes are asked for
(a firmware whose tables and pages are measured). Bytes are held once per file, and for
at most HELD bytes of files together, the least recently used let go first (before the
next file is read): a fleet's few firmware images stay, a 1 GiB one is alone. What is
derived from a file keeps no reference to its bytes; bytes needed again after they were
let go are read again and must hash the same. Forked workers inherit what was read
before the fork.

`open_regular` (the input boundary's rules, core/inputs.py) and `read_into` are where a
file is opened and read.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from . import inputs

Key = Tuple[int, int, int, int, int]   # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns
CHUNK = 1 << 20
SMALL = 1 << 16      # bytes kept with their entry (keys, tiny images): never worth a re-read
HELD = 64 << 20      # bytes of larger files held at once (more only for one larger file)


def stat_key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Unreadable(Exception):
    """The file cannot be measured. `kind`: "open" or "read" (`reason`: the OS's words),
    "type" (not a regular file), "size" (more than the limit: `size`), "length" (its
    content is not its size: `size` by fstat, `got` bytes read), "changed" (read again,
    it hashed differently)."""

    def __init__(self, kind: str, reason: str = "", size: int = 0, got: int = 0):
        super().__init__(kind, reason)
        self.kind, self.reason, self.size, self.got = kind, reason, size, got


class Stopped(Exception):
    """A read given up half-way: the caller of in_thread no longer wants it."""


class Entry:
    """One file as read: its stat key, size, sha256 (and the hash object after its last
    byte, which a digest that starts with the whole file continues), its bytes while held,
    what was derived from them, and when it was read (`since`: the time before it was
    opened; what the bytes are proven by, for output/cache.py's timestamp rule)."""
    __slots__ = ("key", "size", "state", "sha256", "data", "derived", "since")

    def __init__(self, key: Key, state, data=None, since: int = 0):
        self.key, self.size, self.state, self.since = key, key[2], state, since
        self.sha256 = state.hexdigest()
        self.data = data
        self.derived: Dict[Any, Any] = {}


class Read(NamedTuple):
    state: Any            # hashlib.sha256 over every byte read
    data: Any             # the bytes (a bytearray) when asked to keep them, else None
    count: int            # bytes read, up to one past `expected`


def _machine_or(exc: OSError) -> None:
    """Raise the machine's problem (too many open files, no memory) as the input boundary's
    ResourceError: the command stops once with exit 2 instead of blaming the file."""
    problem = inputs.resource_error(exc)
    if problem is not None:
        raise problem from None


def open_regular(path: str, limit: int) -> Tuple[int, os.stat_result]:
    """A read descriptor of a regular file of at most `limit` bytes, and its fstat, opened
    by the input boundary's rules (inputs.open_regular: a device is never opened, the type
    checked again on the descriptor). Raises Unreadable, or ResourceError for the
    machine's problems."""
    kind = inputs.BOOT_FILE if limit == inputs.BOOT_FILE.limit else inputs.BOOT_FILE._replace(
        limit=limit)
    try:
        return inputs.open_regular(path, kind)
    except inputs.InputError as exc:
        if exc.rule == "type":
            raise Unreadable("type") from None
        if exc.rule == "size":
            raise Unreadable("size", size=exc.size) from None
        raise Unreadable("open", exc.detail) from None


def read_into(fd: int, expected: int, keep: bool, stop=None) -> Read:
    """Read to the end, or one chunk at most past the size fstat gave (a file whose content
    outgrows its size, /proc, /sys or one being written, stops the read), hashing as it
    goes; with `keep`, into one buffer of the file's size (the one copy in memory).
    Chunks are never tiny: some /proc files refuse short reads. `stop`: a threading.Event
    that, once set, ends the read at the next chunk (raises Stopped)."""
    digest = hashlib.sha256()
    count = 0
    if keep:
        data = bytearray(expected)
        view = memoryview(data)
        while count < expected:
            if stop is not None and stop.is_set():
                raise Stopped
            n = os.readv(fd, [view[count:count + CHUNK]])
            if not n:
                break
            digest.update(view[count:count + n])
            count += n
        view.release()
        if count == expected:   # nothing more may follow
            count += len(os.read(fd, 1 << 16))
        return Read(digest, data, count)
    buffer = bytearray(min(CHUNK, max(expected + 1, 1 << 16)))
    view = memoryview(buffer)
    while count <= expected:
        if stop is not None and stop.is_set():
            raise Stopped
        n = os.readv(fd, [buffer])
        if not n:
            break
        count += n
        if count <= expected:
            digest.update(view[:n])
    view.release()
    return Read(digest, None, count)


class FileCache:
    """The files of one invocation, by stat key."""

    def __init__(self) -> None:
        self.entries: Dict[Key, Entry] = {}
        self.held: Dict[Key, Entry] = {}   # larger files whose bytes are held, oldest first
        self.held_bytes = 0
        self.paths: set = set()   # the paths read (as given), for unseen()

    def unseen(self, path: str) -> bool:
        """Whether this invocation has not read `path` yet (read() would hash it, unless
        it is another name of a file already read)."""
        return path not in self.paths

    def read(self, path: str, limit: int, keep: bool = False, stop=None) -> Entry:
        """The entry of the file at `path`, read now unless this invocation has read it.
        `keep`: hold its bytes for content() (read whole, in one buffer). Raises Unreadable
        (or Stopped: `stop`, as read_into's)."""
        since = time.time_ns()
        fd, st = open_regular(path, limit)
        self.paths.add(path)
        try:
            key = stat_key(st)
            found = self.entries.get(key)
            if found is not None:
                return found
            if keep:
                self._make_room(st.st_size)
            got = self._read(fd, st.st_size, keep, stop)
            entry = Entry(key, got.state, since=since)
            if keep:
                self._hold(entry, got.data)
            self.entries[key] = entry
            return entry
        finally:
            os.close(fd)

    def content(self, entry: Entry, path: str):
        """The bytes of `entry`: held, or read again from `path` (they must be the same
        file, by stat key, and hash the same). Raises Unreadable."""
        if entry.data is not None:
            if entry.key in self.held:   # the most recently used now
                self.held[entry.key] = self.held.pop(entry.key)
            return entry.data
        self._make_room(entry.size)
        try:
            fd, st = open_regular(path, entry.size)
        except Unreadable as exc:   # grown past the size it had: not the file hashed
            if exc.kind == "size":
                raise Unreadable("changed") from None
            raise
        try:
            if stat_key(st) != entry.key:
                raise Unreadable("changed")
            got = self._read(fd, entry.size, True)
        finally:
            os.close(fd)
        if got.state.digest() != entry.state.digest():
            raise Unreadable("changed")
        self._hold(entry, got.data)
        return got.data

    def derived(self, entry: Entry, path: str, name, compute: Callable[[Any], Any]):
        """compute(bytes of the file), once per file and `name` (which says what is computed,
        with its parameters). An exception is not kept: compute returns expected failures."""
        try:
            return entry.derived[name]
        except KeyError:
            pass
        value = compute(self.content(entry, path))
        entry.derived[name] = value
        return value

    @staticmethod
    def memo(entry: Entry, name, compute: Callable[[], Any]):
        """compute(), once per file and `name`: a value that depends on nothing but what
        is derived from the file and the parameters `name` holds."""
        try:
            return entry.derived[name]
        except KeyError:
            pass
        value = compute()
        entry.derived[name] = value
        return value

    @staticmethod
    def _read(fd: int, size: int, keep: bool, stop=None) -> Read:
        try:
            got = read_into(fd, size, keep, stop)
        except OSError as exc:
            _machine_or(exc)
            raise Unreadable("read", exc.strerror or str(exc)) from None
        if got.count != size:
            raise Unreadable("length", size=size, got=got.count)
        return got

    def _hold(self, entry: Entry, data) -> None:
        entry.data = data
        if entry.size > SMALL:
            self.held[entry.key] = entry
            self.held_bytes += entry.size

    def _make_room(self, size: int) -> None:
        """Let go of the oldest held bytes until `size` more fit in HELD (or none are held):
        before a read, so that the old and the new bytes are never both in memory."""
        if size <= SMALL:
            return
        while self.held and self.held_bytes + size > HELD:
            oldest = self.held.pop(next(iter(self.held)))
            oldest.data = None
            self.held_bytes -= oldest.size


class Background:
    """work(stop) run in a thread of its own (see in_thread)."""

    def __init__(self, work: Callable[[Any], Any]) -> None:
        import threading
        self.work, self.stop, self.outcome = work, threading.Event(), []
        self.thread: Optional[Any] = threading.Thread(target=self._run, daemon=True)
        try:
            self.thread.start()
        except RuntimeError:   # no thread to be had (ulimit -u, a cgroup's pids.max)
            self.thread = None   # result() does the work, in the caller's thread

    def _run(self) -> None:
        try:
            self.outcome.append((True, self.work(self.stop)))
        except BaseException as exc:   # handed to the caller, which raises it
            self.outcome.append((False, exc))

    def result(self):
        """Wait for the work and return its result, or raise what it raised."""
        if self.thread is None:
            return self.work(self.stop)
        self.thread.join()
        done, value = self.outcome[0]
        if not done:
            raise value
        return value

    def cancel(self) -> None:
        """Give the work up (a signal, an error on the caller's side): `stop` is set, and
        this returns once the thread has seen it (at its next chunk) and ended."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


_DESCRIPTORS = re.compile(r"/proc/\d+(/task/\d+)?/fd")


def names_a_descriptor(path: str) -> bool:
    """Whether `path` leads through a /proc/PID/fd directory (/dev/fd/N, /proc/self/fd/N,
    /dev/stdin, or a symlink to one): it opens whatever that process has open as N at
    the moment, which a thread opening files beside this one changes; such a path is
    read in its turn (see in_thread)."""
    for _hop in range(40):   # the kernel's bound on symlinks in one lookup
        parent = os.path.realpath(os.path.dirname(path) or ".")
        if _DESCRIPTORS.fullmatch(parent):
            return True
        try:
            target = os.readlink(path)
        except (OSError, ValueError):   # not a symlink (or no file): nothing more to follow
            return False
        path = os.path.join(parent, target)
    return False


def in_thread(work: Callable[[Any], Any]) -> Background:
    """Start work(stop) in a thread, for reads and hashes (both let go of the GIL) that
    overlap this thread's own work; `stop` is a threading.Event for read_into. The caller
    ends it with result() or cancel() before it forks or returns, whatever happens: no
    thread outlives it. Where no thread can be started, result() does the work."""
    return Background(work)


_SESSION: Optional[FileCache] = None


class session:
    """`with session():` one invocation (a command, a fleet): files read inside it are
    read once. Nested sessions are the outer one; outside any session every caller gets
    a cache of its own (a library caller sees each file as it is now)."""

    def __enter__(self) -> FileCache:
        global _SESSION
        self.outer = _SESSION is not None
        if not self.outer:
            _SESSION = FileCache()
        return _SESSION

    def __exit__(self, *exc_info) -> None:
        global _SESSION
        if not self.outer:
            _SESSION = None


def current() -> FileCache:
    """The invocation's cache, or a new one outside any session."""
    return _SESSION if _SESSION is not None else FileCache()

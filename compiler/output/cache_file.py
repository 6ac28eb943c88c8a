"""The incremental cache's file, OUT/.cgsc/cache.json, and its key, OUT/.cgsc/key: read
(a regular file of bounded size, never through a symlink), checked (a MAC with the key
over the header and the body), written (whole, renamed into place, signals held). The
key is 32 random bytes readable by this user only, bound to its file's identity, so a
copy of the cache and key (committed, copied with the output directory) is foreign."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import stat
import struct
import threading
from typing import Callable, List, Optional, Tuple

from ..core import inputs
from .outdir import PRIVATE, _open_regular

FILE = "cache.json"
KEY = "key"
KEY_SIZE = 32
MAX_BYTES = 256 << 20       # a larger file is no cache cgsc wrote
CACHE = inputs.Kind("incremental cache", MAX_BYTES)
MAX_HEADER = 1 << 20        # its first line (the code hint of ~100 files: 15 KB), parsed
#                             before its MAC is checked: a planted one is never parsed whole
_TEMPORARY = f"{FILE}."      # + pid, random, ".tmp"
IGNORE = "# cgsc's private cache: never commit or deploy it\n*\n"
NAMES = (FILE, KEY, ".gitignore")   # what OUT/.cgsc holds between runs
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def verified(raw: Optional[bytes], key: Optional[bytes]) -> Tuple[Optional[dict], int]:
    """(header, where the body starts in `raw`) of a cache file whose header MAC (over the
    header's other fields and the body's first line, the inputs) is made with `key`;
    (None, 0) for any other bytes. The body's other lines, its sections, each have their
    MAC in the header, checked when a run reads that section (intact()). Nothing is copied:
    a 10,000-guest cache is megabytes, and each copy in a fresh process costs its pages."""
    if raw is None or key is None:
        return None, 0
    end = raw.find(b"\n", 0, MAX_HEADER + 1)
    if end < 0:
        return None, 0
    try:
        header = json.loads(raw[:end])
    except (ValueError, RecursionError):   # nested deeper than Python recurses
        return None, 0
    start = end + 1
    if not isinstance(header, dict) or header.get("length") != len(raw) - start:
        return None, 0
    first = raw.find(b"\n", start)
    first = len(raw) if first < 0 else first
    expected = header.pop("mac", None)
    try:   # (json.dumps recurses deeper than json.loads: a header nested just short of
        fields = signed(header)   # what loads takes is one dumps refuses)
    except RecursionError:
        return None, 0
    if not intact(key, expected, fields, memoryview(raw)[start:first]):
        return None, 0
    return header, start


def intact(key: bytes, expected, *parts) -> bool:
    """Whether `parts` (bytes or memoryviews: a section's line, or the header's fields and
    the inputs) have the MAC `expected` (the header's; a planted one may be any str, and
    compare_digest raises TypeError for one that is not ASCII)."""
    return (isinstance(expected, str) and expected.isascii()
            and hmac.compare_digest(mac(key, *parts), expected))


def checking(key: bytes, expected, data) -> Callable[[], bool]:
    """intact(key, expected, data), worked out by a thread while the caller goes on (the
    hash holds no lock on a large buffer: a 4 MB section is checked while it is parsed);
    the function returned waits for the verdict. Nothing read may be used before it."""
    verdict: List[bool] = []

    def check() -> None:
        verdict.append(intact(key, expected, data))
    thread = threading.Thread(target=check, daemon=True)
    thread.start()

    def result() -> bool:
        thread.join()
        return verdict == [True]
    return result


def signed(header: dict) -> bytes:
    """What the header's MAC covers of the header: its fields but the MAC itself (then the
    body's first line)."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def mac(key: bytes, *parts) -> str:
    h = hashlib.blake2b(digest_size=32, key=key)
    for part in parts:
        h.update(part)
    return h.hexdigest()


def secret(root: str, create: bool = True) -> Optional[bytes]:
    """The cache's key: 32 random bytes in OUT/.cgsc/key, a file of this user that no one
    else can read or write, made on first use (`create`), bound to that file's identity
    (device, inode, change time): a copy of it (committed to a repository with the cache,
    or copied with the output directory) is another key, so a cache from anywhere else
    is never trusted. None when there is none to be had (no cache then)."""
    try:
        private = os.open(os.path.join(root, PRIVATE), _DIR)
    except OSError:
        return None
    try:
        for _attempt in range(2):
            try:
                fd = os.open(KEY, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=private)
            except FileNotFoundError:
                if not create:
                    return None
                _ignored(private)   # never a key that `git add` would take
                _new_key(private)
                continue
            try:
                st = os.fstat(fd)
                if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                        or st.st_mode & 0o077 or st.st_size != KEY_SIZE):
                    return None
                data = os.read(fd, KEY_SIZE + 1)
            finally:
                os.close(fd)
            if len(data) != KEY_SIZE:
                return None
            return hashlib.blake2b(data + struct.pack("<QQq", st.st_dev, st.st_ino,
                                                      st.st_ctime_ns), digest_size=32).digest()
        return None
    except OSError:
        return None
    finally:
        os.close(private)


def _new_key(private: int) -> None:
    """Make the key whole: written under a temporary name (a kill leaves that, which the
    next build removes, never an empty key), then linked into place unless another cgsc
    made one first (a link never replaces)."""
    temporary = f"{_TEMPORARY}{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=private)
    _whole(fd, os.urandom(KEY_SIZE), temporary, private)
    try:
        os.link(temporary, KEY, src_dir_fd=private, dst_dir_fd=private, follow_symlinks=False)
    except FileExistsError:   # another cgsc made it first: that one is read
        pass
    except OSError:   # a file system without hard links: renamed (a key made meanwhile is
        try:          # replaced, and the cache written with it is not trusted once)
            os.rename(temporary, KEY, src_dir_fd=private, dst_dir_fd=private)
            return
        except OSError:
            pass
    os.unlink(temporary, dir_fd=private)


def read(root: str) -> Optional[bytes]:
    """The cache file's bytes, if it is a regular file of at most MAX_BYTES in a private
    directory that is no symlink."""
    try:
        private = os.open(os.path.join(root, PRIVATE), _DIR)
    except OSError:
        return None
    try:
        fd = _open_regular(FILE, private)
    finally:
        os.close(private)
    if fd < 0:
        return None
    try:
        size = os.fstat(fd).st_size
        return None if size > MAX_BYTES else inputs.read_fd(fd, FILE, CACHE, size)
    except (OSError, inputs.InputError):
        return None
    finally:
        os.close(fd)


def temporary(name: str) -> bool:
    """Whether `name` in OUT/.cgsc is a temporary of write() or _new_key() (one a killed
    writer left)."""
    return name.startswith(_TEMPORARY) and name.endswith(".tmp")


def sweep(root: str) -> None:
    """Remove the temporaries killed writers left (a build: the lock held exclusively)."""
    try:
        private = os.open(os.path.join(root, PRIVATE), _DIR)
    except OSError:
        return
    try:
        _sweep(private)
    except OSError:
        pass
    finally:
        os.close(private)


def _sweep(private: int) -> None:
    for name in os.listdir(private):
        if temporary(name):
            os.unlink(name, dir_fd=private)


def write(root: str, data: bytes, exclusive: bool) -> None:
    """Rename a complete new cache into place, SIGINT/SIGTERM/SIGHUP held while it is
    written (a kill leaves the old cache or the new one, and a unique temporary that the
    next build removes)."""
    from .outdir import _hold_signals, _release_signals
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir(PRIVATE, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        private = os.open(PRIVATE, _DIR, dir_fd=root_fd)
    finally:
        os.close(root_fd)
    held = _hold_signals()
    try:
        if exclusive:
            _sweep(private)
        _ignored(private)
        temporary = f"{_TEMPORARY}{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=private)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(temporary, FILE, src_dir_fd=private, dst_dir_fd=private)
        except OSError:
            try:
                os.unlink(temporary, dir_fd=private)
            except OSError:
                pass
            raise
    finally:
        _release_signals(held)
        os.close(private)


def _ignored(private: int) -> None:
    """A .gitignore that keeps the private directory out of the repository that holds
    the output directory (an output directory is committed; its cache never is)."""
    try:
        fd = os.open(".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644, dir_fd=private)
    except FileExistsError:
        return
    _whole(fd, IGNORE.encode(), ".gitignore", private)


def _whole(fd: int, data: bytes, name: str, private: int) -> None:
    """Write `data` to the file `name` just made (`fd`, closed here), or remove it and
    raise OSError: a full disk must not leave an empty key (no cache from then on) or
    .gitignore (never written again)."""
    try:
        try:
            if os.write(fd, data) != len(data):   # one short write of a few bytes: no room
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
    except OSError:
        try:
            os.unlink(name, dir_fd=private)
        except OSError:
            pass
        raise

"""core/filecache.py: one read per file per invocation, bounded held bytes, checked re-reads."""

from __future__ import annotations

import hashlib
import os

import pytest
from cgsc.core import filecache
from cgsc.core.filecache import FileCache, Unreadable, current, session

LIMIT = 1 << 30


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_a_file_is_read_once_and_known_by_its_stat_key(tmp_path, monkeypatch):
    path = _write(tmp_path / "kernel", b"k" * 5000)
    os.link(path, tmp_path / "same")   # another name of the same file (linking changes the ctime)
    reads = []
    real = filecache.read_into
    monkeypatch.setattr(filecache, "read_into",
                        lambda fd, n, keep, *stop: reads.append(n) or real(fd, n, keep, *stop))
    cache = FileCache()
    first = cache.read(path, LIMIT)
    assert cache.read(path, LIMIT) is first and reads == [5000]
    assert first.sha256 == hashlib.sha256(b"k" * 5000).hexdigest() and first.data is None
    assert cache.read(str(tmp_path / "same"), LIMIT) is first and len(reads) == 1
    (tmp_path / "new").write_bytes(b"K" * 5000)
    os.rename(tmp_path / "new", path)   # a new file under the name: read anew
    assert cache.read(path, LIMIT).sha256 == hashlib.sha256(b"K" * 5000).hexdigest()
    assert len(reads) == 2


def test_the_hash_state_continues_the_whole_file(tmp_path):
    data = os.urandom(3 << 20)
    entry = FileCache().read(_write(tmp_path / "fw", data), LIMIT, keep=True)
    h = entry.state.copy()
    h.update(b"more")
    assert h.digest() == hashlib.sha256(data + b"more").digest()
    assert bytes(entry.data) == data


def test_held_bytes_stay_within_the_bound_oldest_let_go_first(tmp_path, monkeypatch):
    monkeypatch.setattr(filecache, "HELD", 3 << 20)
    images = {n: os.urandom(1 << 20) for n in "abcd"}
    paths = {n: _write(tmp_path / n, d) for n, d in images.items()}
    cache = FileCache()
    entries = {n: cache.read(paths[n], LIMIT, keep=True) for n in "abc"}
    assert cache.held_bytes == 3 << 20 and all(e.data is not None for e in entries.values())
    cache.content(entries["a"], paths["a"])           # a is now the most recent
    entries["d"] = cache.read(paths["d"], LIMIT, keep=True)
    assert entries["b"].data is None                  # the oldest went, before d was read
    assert all(entries[n].data is not None for n in "acd") and cache.held_bytes == 3 << 20
    assert bytes(cache.content(entries["b"], paths["b"])) == images["b"]   # read again
    assert entries["c"].data is None and cache.held_bytes == 3 << 20


def test_one_file_larger_than_the_bound_is_held_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(filecache, "HELD", 1 << 20)
    small, big = _write(tmp_path / "s", os.urandom(600 << 10)), _write(tmp_path / "b", os.urandom(2 << 20))
    cache = FileCache()
    s = cache.read(small, LIMIT, keep=True)
    b = cache.read(big, LIMIT, keep=True)
    assert s.data is None and b.data is not None and list(cache.held) == [b.key]


def test_small_files_stay_with_their_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(filecache, "HELD", 1 << 20)
    cache = FileCache()
    key = cache.read(_write(tmp_path / "id.pem", b"-----BEGIN"), LIMIT, keep=True)
    cache.read(_write(tmp_path / "b", os.urandom(2 << 20)), LIMIT, keep=True)
    assert key.data == b"-----BEGIN" and key.key not in cache.held


def test_bytes_read_again_must_hash_the_same(tmp_path):
    path = _write(tmp_path / "fw", b"a" * 100000)
    cache = FileCache()
    entry = cache.read(path, LIMIT)           # hashed only
    st = os.stat(path)
    with open(path, "r+b") as fh:             # rewritten in place, times put back: the same key
        fh.write(b"b" * 100000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # whether or not the ctime moved on (same tick: it did not), the bytes are not taken
    with pytest.raises(Unreadable) as found:
        cache.content(entry, path)
    assert found.value.kind == "changed"
    assert cache.read(path, LIMIT).sha256 == hashlib.sha256(b"b" * 100000).hexdigest() \
        or filecache.stat_key(os.stat(path)) == entry.key


def test_derived_values_are_computed_once_and_failures_are_not_kept(tmp_path):
    path = _write(tmp_path / "fw", b"x" * 70000)
    cache = FileCache()
    entry = cache.read(path, LIMIT, keep=True)
    calls = []
    assert cache.derived(entry, path, "len", lambda d: calls.append(1) or len(d)) == 70000
    assert cache.derived(entry, path, "len", lambda d: calls.append(1) or 0) == 70000
    assert calls == [1]

    def failing(_d):
        calls.append(2)
        raise ValueError("no")
    for _ in range(2):
        with pytest.raises(ValueError):
            cache.derived(entry, path, "fails", failing)
    assert calls == [1, 2, 2]
    assert cache.memo(entry, ("m", 1), lambda: "v") == cache.memo(entry, ("m", 1), lambda: "w") == "v"


@pytest.mark.parametrize("what", ["directory", "fifo", "missing", "nul"])
def test_what_is_no_regular_file_is_refused_without_blocking(tmp_path, what):
    path = str(tmp_path / "f")
    if what == "directory":
        os.mkdir(path)
    elif what == "fifo":
        os.mkfifo(path)
    elif what == "nul":
        path += "\0x"
    with pytest.raises(Unreadable) as found:
        FileCache().read(path, LIMIT)
    assert found.value.kind == {"directory": "type", "fifo": "type"}.get(what, "open")


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge"
    with open(path, "wb") as fh:
        fh.truncate(10 << 30)   # sparse
    with pytest.raises(Unreadable) as found:
        FileCache().read(str(path), LIMIT)
    assert found.value.kind == "size" and found.value.size == 10 << 30


def test_a_session_is_one_cache_and_outside_one_each_caller_has_its_own():
    assert current() is not current()
    with session() as outer:
        assert current() is outer
        with session() as inner:
            assert inner is outer
        assert current() is outer
    assert current() is not outer

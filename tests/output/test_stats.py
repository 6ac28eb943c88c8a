"""cgsc.output.stats: the stat keys the incremental cache records and compares. The
compiled batch (_stats.c) must give byte for byte what the Python one gives, and refuse
what it refuses, for every kind of entry and flag; each key must say what the kernel says
of the file; and spread() must use every result in order, whoever took it."""

from __future__ import annotations

import os
import stat
import struct
import threading
import time

import pytest
from cgsc.output import cache, stats

from writes_helpers import make_fleet

FLAGS = range(8)   # every combination of FROM_CWD, NOFOLLOW and NO_LINK


@pytest.fixture
def compiled():
    if stats.compiled is None:
        if os.environ.get("CI"):   # CI installs a C compiler: the batch must have been built
            pytest.fail("cgsc.output._stats was not built (pip install -e . with gcc and the "
                        "Python headers builds it)")
        pytest.skip("cgsc.output._stats not built: install gcc and python3-dev, then "
                    "pip install -e . again")
    return stats.compiled


@pytest.fixture
def entries(tmp_path, monkeypatch):
    """A directory of every kind of entry, the working directory another one: (the fd of
    the first, the names in it)."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "file").write_bytes(b"12345")
    (d / "empty").write_bytes(b"")
    (d / "sub").mkdir()
    (d / "sub" / "inner").write_bytes(b"x" * 70000)
    os.symlink("file", d / "link")
    os.symlink("missing", d / "dangling")
    os.symlink("loop", d / "loop")
    os.symlink("sub", d / "dirlink")
    os.mkfifo(d / "fifo")
    odd = os.fsdecode(b"odd \xff\n name")   # surrogateescape, a newline
    (d / odd).write_bytes(b"odd")
    old = d / "old"
    old.write_bytes(b"o")
    os.utime(old, ns=(-1_500_000_123, -1_500_000_123))   # before 1970: negative times
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "file").write_bytes(b"x" * 26)   # another "file": FROM_CWD finds this one
    monkeypatch.chdir(elsewhere)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    yield fd, ["file", "empty", "sub", "sub/inner", "link", "dangling", "loop", "dirlink",
               "fifo", odd, "old", "dirlink/inner", ".", "sub/..", "missing", "file/x",
               str(d / "file"), str(d / "link")]
    os.close(fd)


def _blob(*pairs) -> bytes:
    return "".join(stats.entry(flags, path) for flags, path in pairs).encode(
        "utf-8", "surrogateescape")


def _failed(failed: bytes):
    return list(struct.unpack(f"<{len(failed) // 4}I", failed))


def test_each_key_is_what_the_kernel_says(entries):
    fd, names = entries
    for flags in FLAGS:
        keys, failed = stats.batch(fd, _blob(*((flags, n) for n in names)))
        bad = set(_failed(failed))
        for i, (name, fields) in enumerate(zip(names, stats.unpacked(keys))):
            try:
                st = os.stat(name, dir_fd=None if flags & stats.FROM_CWD else fd,
                             follow_symlinks=not flags & stats.NOFOLLOW)
            except OSError:
                assert i in bad and fields == (0,) * 6, (flags, name)
                continue
            if flags & stats.NO_LINK and stat.S_ISLNK(st.st_mode):
                assert i in bad and fields == (0,) * 6, (flags, name)
                continue
            assert i not in bad and fields == (st.st_dev, st.st_ino, st.st_size,
                                               st.st_mtime_ns, st.st_ctime_ns,
                                               st.st_mode), (flags, name)
    (old,) = stats.unpacked(stats.batch(fd, _blob((0, "old")))[0])
    assert old[3] == -1_500_000_123
    (here, there) = stats.unpacked(stats.batch(fd, _blob((stats.FROM_CWD, "file"),
                                                         (0, "file")))[0])
    assert (here[2], there[2]) == (26, 5)


def test_the_compiled_batch_gives_what_python_gives(entries, compiled):
    fd, names = entries
    every = _blob(*((flags, name) for flags in FLAGS for name in names))
    assert compiled(fd, every) == stats.batch_python(fd, every)
    absolute = _blob(*((flags, f"/proc/self/fd/{fd}/{n}") for flags in FLAGS for n in names))
    assert compiled(-1, absolute) == stats.batch_python(-1, absolute)   # (no dir_fd needed)
    assert compiled(fd, b"") == stats.batch_python(fd, b"") == (b"", b"")


@pytest.mark.parametrize("entries_, failed", [
    (b"\0", [0]),                          # no flag, no path
    (b"@\0", [0]),                         # a flag, no path
    (b"Hfile\0@file\0", [0]),              # a flag byte of no known bits
    (b"\x00file\0", [0, 1]),               # (a NUL first: two entries, neither one)
    (b"@file\0@missing\0Gloop\0", [1, 2]),
])
def test_an_entry_that_is_no_file_fails_alone(entries, compiled, entries_, failed):
    fd, _names = entries
    for function in (compiled, stats.batch_python):
        keys, bad = function(fd, entries_)
        assert _failed(bad) == failed and len(keys) == entries_.count(b"\0") * stats.KEY.size
        for i in failed:
            assert keys[i * stats.KEY.size:(i + 1) * stats.KEY.size] == bytes(stats.KEY.size)


@pytest.mark.parametrize("dir_fd, entries_, refused", [
    (3, b"@file", ValueError),             # not NUL-terminated
    (3, "@file\0", TypeError),             # str, not bytes
    (3, bytearray(b"@file\0"), TypeError),  # a buffer another thread could change
    (2**31, b"@file\0", OverflowError),    # no C int
    (None, b"@file\0", TypeError),
])
def test_what_the_compiled_batch_refuses_python_refuses(compiled, dir_fd, entries_, refused):
    for function in (compiled, stats.batch_python):
        with pytest.raises(refused):
            function(dir_fd, entries_)


def test_a_bad_dir_fd_fails_the_relative_entries_only(entries, compiled):
    fd, _names = entries
    blob = _blob((0, "file"), (0, f"/proc/self/fd/{fd}/file"), (stats.FROM_CWD, "file"))
    for dir_fd in (-1, 999_999):
        for function in (compiled, stats.batch_python):
            assert _failed(function(dir_fd, blob)[1]) == [0]


def test_a_time_beyond_64_bit_nanoseconds_fails_in_both(tmp_path, compiled):
    late = tmp_path / "late"
    late.write_bytes(b"")
    year_2300 = 10_413_792_000 * 10**9   # past 2262-04-11, the last int64 nanosecond
    try:
        os.utime(late, ns=(year_2300, year_2300))
    except OSError as exc:
        pytest.skip(f"this file system keeps no such time: {exc}")
    if os.stat(late).st_mtime_ns != year_2300:
        pytest.skip("this file system clamps times before 2300")
    blob = _blob((stats.FROM_CWD, str(late)), (stats.FROM_CWD, str(tmp_path)))
    for function in (compiled, stats.batch_python):
        assert _failed(function(-1, blob)[1]) == [0]


def test_threads_spread_the_work_and_every_result_is_used_in_order(entries, monkeypatch):
    """The threads and this one take blobs from one queue; this one uses the results in
    order, an exception as what it is, and every thread has stopped when it returns."""
    fd, _names = entries
    real = stats.batch
    takers = []

    def batch(dir_fd, blob):
        takers.append(threading.get_ident())
        if blob == b"@boom\0":
            raise MemoryError("boom")
        time.sleep(0.002)
        return real(dir_fd, blob)
    monkeypatch.setattr(stats, "batch", batch)
    blobs = [_blob((0, "file"))] * 30 + [b"@boom\0"] + [_blob((0, "missing"))] * 9
    used = []
    before = threading.active_count()
    stats.spread(fd, iter(blobs), 3, lambda i, result: used.append((i, result)),
                 lambda: time.sleep(0.03))
    assert [i for i, _r in used] == list(range(40))
    assert all(r == real(fd, blobs[i]) for i, r in used if i != 30)
    assert isinstance(used[30][1], MemoryError)
    assert len(set(takers)) > 1 and threading.active_count() == before


def test_spread_stops_every_thread_when_its_user_raises(entries, monkeypatch):
    fd, _names = entries
    before = threading.active_count()

    def use(i, _result):
        if i == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        stats.spread(fd, iter([_blob((0, "file"))] * 200), 2, use)
    assert threading.active_count() == before


def test_without_the_compiled_batch_forked_processes_spread_the_work(entries, tmp_path,
                                                                      monkeypatch):
    """Python's batch holds the interpreter's lock: forked processes take blobs instead of
    threads, this one runs meanwhile() first, and the results are the same, in order."""
    fd, names = entries
    blobs = [_blob(*((flags, name) for name in names)) for flags in FLAGS] * 5
    used, ran = [], []
    takers = tmp_path / "takers"
    real_python = stats.batch_python

    def counted(dir_fd, blob):   # (a forked worker's pid reaches this one in the file)
        with open(takers, "a", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        return real_python(dir_fd, blob)
    monkeypatch.setattr(stats, "batch_python", counted)
    monkeypatch.setattr(stats, "batch", counted)   # (no compiled one)
    stats.spread(fd, iter(blobs), 1, lambda i, result: used.append((i, result)),
                 lambda: ran.append(time.sleep(0.05)))
    assert ran and [i for i, _r in used] == list(range(len(blobs)))
    assert all(r == real_python(fd, blobs[i]) for i, r in used)
    pids = takers.read_text(encoding="ascii").split()
    assert len(pids) == len(blobs) and set(pids) - {str(os.getpid())}   # a worker took some
    before = threading.active_count()
    used.clear()
    stats.spread(fd, iter(blobs), 0, lambda i, result: used.append(i))   # no helper: here
    assert used == list(range(len(blobs))) and threading.active_count() == before


def test_records_made_with_either_batch_hold_with_the_other(tmp_path, compiled, monkeypatch):
    """Records hold the keys: records made with the compiled batch hold when checked with
    the Python one, and the other way round (the two give the same bytes; between
    installations with and without the .so the code digest differs anyway)."""
    from cgsc.pipeline import build
    from helpers import run_cli
    monkeypatch.setattr(cache, "MARGIN_NS", 0)
    specs = make_fleet(tmp_path / "specs", 3)
    out = str(tmp_path / "out")
    assert run_cli("build", *specs, "-o", out, "-j", "1")[0] == 0
    calls = []
    real = build.build_one
    monkeypatch.setattr(build, "build_one", lambda path, *a, **kw: calls.append(path)
                        or real(path, *a, **kw))
    time.sleep(0.01)
    for writer, reader in ((compiled, stats.batch_python), (stats.batch_python, compiled)):
        if os.path.exists(os.path.join(out, ".cgsc", "cache.json")):
            os.unlink(os.path.join(out, ".cgsc", "cache.json"))
        monkeypatch.setattr(stats, "batch", writer)
        assert run_cli("check", *specs, "-o", out, "-j", "1")[0] == 0 and len(calls) == 3
        calls.clear()
        monkeypatch.setattr(stats, "batch", reader)
        assert run_cli("check", *specs, "-o", out, "-j", "1")[0] == 0 and calls == []

"""cgsc.output.stats: the packed stat keys the incremental cache hashes. The compiled loop
(_stats.c) must give byte for byte what the Python one gives, and raise what it raises,
for every kind of entry; and each key must say what the kernel says of the file."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest
from cgsc.output import cache, stats

from writes_helpers import make_fleet


@pytest.fixture
def compiled():
    if stats.compiled is None:
        if os.environ.get("CI"):   # CI installs a C compiler: the loop must have been built
            pytest.fail("cgsc.output._stats was not built (pip install -e . with gcc and the "
                        "Python headers builds it)")
        pytest.skip("cgsc.output._stats not built: install gcc and python3-dev, then "
                    "pip install -e . again")
    return stats.compiled


@pytest.fixture
def entries(tmp_path):
    """A directory of every kind of entry: (its fd, the names in it)."""
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
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    yield fd, ["file", "empty", "sub", "sub/inner", "link", "dangling", "dirlink", "fifo", odd,
               "old", "dirlink/inner", ".", "sub/.."]
    os.close(fd)


def test_each_key_is_what_the_kernel_says(entries):
    fd, names = entries
    for follow in (False, True):
        for name in names:
            if follow and name == "dangling":
                continue
            st = os.stat(name, dir_fd=fd, follow_symlinks=follow)
            (fields,) = stats.unpacked(stats.packed(fd, (name,), 0 if follow else 1))
            assert fields == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                              st.st_mode), name
    (file_key,) = stats.unpacked(stats.packed(fd, ("file",), 0))
    assert file_key[2] == 5 and stat.S_ISREG(file_key[5])
    (old_key,) = stats.unpacked(stats.packed(fd, ("old",), 0))
    assert old_key[3] == -1_500_000_123
    assert stat.S_ISLNK(stats.mode(stats.packed(fd, ("file", "link"), 2), 1))
    assert stat.S_ISREG(stats.mode(stats.packed(fd, ("file", "link"), 1), 1))


def test_the_compiled_loop_packs_what_python_packs(entries, compiled):
    fd, names = entries
    plain = [n for n in names if n != "dangling"]
    for dir_fd, paths in ((fd, tuple(plain)),
                          (None, tuple(f"/proc/self/fd/{fd}/{n}" for n in plain))):
        for nofollow in range(len(paths) + 1):
            assert compiled(dir_fd, paths, nofollow) == stats.packed_python(dir_fd, paths,
                                                                            nofollow)
    assert compiled(fd, ("dangling",), 1) == stats.packed_python(fd, ("dangling",), 1)
    assert compiled(fd, (), 0) == b""


def test_the_first_paths_may_be_relative_to_the_working_directory(entries, tmp_path,
                                                                  monkeypatch):
    """`here`: the first paths from the working directory, the rest from dir_fd (a spec
    and its guest's files in one call)."""
    fd, _names = entries
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_bytes(b"x" * 26)   # d/file has 5 bytes
    for function in filter(None, (stats.packed_python, stats.compiled)):
        for here, sizes in ((0, [5, 5]), (1, [26, 5]), (2, [26, 26]), (5, [26, 26])):
            keys = function(fd, ("file", "file"), 0, here)
            assert [k[2] for k in stats.unpacked(keys)] == sizes, (function, here)
        assert _raised(function, fd, ("sub",), 0, 1)[1] == errno.ENOENT   # no ./sub here


def _raised(function, *args):
    try:
        function(*args)
    except Exception as exc:   # (what is compared: the class, errno and file name)
        return type(exc), getattr(exc, "errno", None), getattr(exc, "filename", None)
    return None


@pytest.mark.parametrize("paths, nofollow", [
    (("file", "missing"), 0),           # ENOENT, the second path named
    (("dangling",), 0),                 # followed: ENOENT
    (("loop",), 0),                     # ELOOP
    (("file/x",), 0),                   # ENOTDIR
    (("fi\0le",), 0),                   # ValueError, as os.stat
    (("",), 0),                         # ENOENT
])
def test_the_compiled_loop_raises_what_python_raises(entries, compiled, paths, nofollow):
    fd, _names = entries
    expected = _raised(stats.packed_python, fd, paths, nofollow)
    assert expected is not None and _raised(compiled, fd, paths, nofollow) == expected
    if expected[0] is not ValueError:
        assert issubclass(expected[0], OSError) and expected[2] == paths[-1]
    assert _raised(stats.packed_python, fd, ("loop",), 0)[1] == errno.ELOOP


@pytest.mark.parametrize("dir_fd", [-1, -100, 2**31, -2**31 - 1, 2**70])
def test_a_dir_fd_os_stat_would_take_or_refuse_is_taken_or_refused_alike(entries, compiled,
                                                                          monkeypatch, dir_fd):
    """dir_fd as os.stat takes it: any C int reaches the kernel (-1: EBADF for a relative
    path, none for an absolute one; -100 is AT_FDCWD on Linux, the working directory), a
    larger one is an OverflowError when a path is looked up from it, after that path is
    converted (a NUL in it: ValueError first), and none at all when no path is."""
    fd, _names = entries
    monkeypatch.chdir(f"/proc/self/fd/{fd}")
    absolute = os.path.realpath("file")
    for paths, here in ((("file",), 0), ((absolute,), 0), (("file", "sub"), 0),
                        (("file", "fi\0le"), 0), (("file",), 1), ((), 0)):
        expected = _raised(stats.packed_python, dir_fd, paths, 0, here)
        assert _raised(compiled, dir_fd, paths, 0, here) == expected, (paths, here)
        if expected is None:
            assert compiled(dir_fd, paths, 0, here) == stats.packed_python(dir_fd, paths, 0,
                                                                           here)


def test_a_time_beyond_64_bit_nanoseconds_is_an_overflow_in_both(tmp_path, compiled):
    late = tmp_path / "late"
    late.write_bytes(b"")
    year_2300 = 10_413_792_000 * 10**9   # past 2262-04-11, the last int64 nanosecond
    try:
        os.utime(late, ns=(year_2300, year_2300))
    except OSError as exc:
        pytest.skip(f"this file system keeps no such time: {exc}")
    if os.stat(late).st_mtime_ns != year_2300:
        pytest.skip("this file system clamps times before 2300")
    for function in (compiled, stats.packed_python):
        assert _raised(function, None, (str(late),), 0)[0] is OverflowError


def test_records_made_with_either_loop_hold_with_the_other(tmp_path, compiled, monkeypatch):
    """The records hash the packed keys: records made with the compiled loop hold when
    checked with the Python one, and the other way round (the two give the same bytes;
    between installations with and without the .so the code digest differs anyway)."""
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
    for writer, reader in ((compiled, stats.packed_python), (stats.packed_python, compiled)):
        if os.path.exists(os.path.join(out, ".cgsc", "cache.json")):
            os.unlink(os.path.join(out, ".cgsc", "cache.json"))
        monkeypatch.setattr(cache, "packed", writer)
        assert run_cli("check", *specs, "-o", out, "-j", "1")[0] == 0 and len(calls) == 3
        calls.clear()
        monkeypatch.setattr(cache, "packed", reader)
        assert run_cli("check", *specs, "-o", out, "-j", "1")[0] == 0 and calls == []

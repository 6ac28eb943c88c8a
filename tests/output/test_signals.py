"""Issue 25: signals and exhausted resources during a build leave the output directory in
its old state or its new one, nothing else; what SIGKILL leaves, `check` reports and the
next build repairs.

The matrix: SIGINT, SIGTERM, SIGHUP and SIGKILL, each at 100 random points (a fixed seed)
spread over the operation's duration, one process and with workers, for a build and for
a build with --prune; descriptor limits of 4 to 16;
a full disk (a small tmpfs, filled at every point of a build); a read-only output directory.
States are compared as whole trees (every file's bytes and mode) with a fresh build of
each state. The signalled builds are forked from this process, which has cgsc loaded, so
the random points fall on the build itself rather than on the interpreter's start (a
subprocess per run spends most of its time importing); the descriptor limits run the real
command line in a subprocess.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Tuple

import pytest
from conftest import missing
from helpers import ROOT
from writes_helpers import cgsc, make_fleet, no_build_state, run_hooked, tree

RUNS = 100          # per signal
SEED = 25


class Fleets(NamedTuple):
    old: List[str]
    new: List[str]


# The operations the matrix interrupts: name -> (the specs the output holds before it,
# the argv of the operation). Prune rebuilds two of the four guests and removes the others.
OPERATIONS: Dict[str, tuple] = {
    "build": (lambda f: f.old, lambda f, out, jobs: ["build", *f.new, "-o", out, "-j", jobs]),
    "prune": (lambda f: f.old,
              lambda f, out, jobs: ["build", "--prune", *f.new[:2], "-o", out, "-j", jobs]),
}


def forked(argv: List[str], errors: str, sig: int = 0, delay: float = 0.0) -> Tuple[int, bool]:
    """cgsc's main(argv) in a forked child of this process (stderr to `errors`); `sig`
    sent to it after `delay` seconds. Its exit status (-N: killed by signal N), and
    whether the signal came too late (the child had ended)."""
    caught = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    held = signal.pthread_sigmask(signal.SIG_BLOCK, caught)
    pid = os.fork()
    if pid == 0:   # the child: cgsc, then out without running this process's exit code
        code = 99
        try:   # a signal before main() acts as on a process that has not started cgsc yet
            for signum in caught:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            err = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(err, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            from cgsc.cli import main
            code = main(argv, restore=False)   # as the console script runs it
            sys.stderr.flush()
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    missed = False
    if sig:
        time.sleep(delay)
        done, status = os.waitpid(pid, os.WNOHANG)
        missed = bool(done)
        if not missed:
            os.kill(pid, sig)
    if not missed:
        _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), missed


class Matrix(NamedTuple):
    fleets: Fleets
    before: dict        # the tree before the operation
    after: dict         # the tree after it, uninterrupted
    fresh: str          # a directory holding the before state, to copy
    argv: Callable      # (out, jobs) -> argv
    duration: float     # seconds an uninterrupted run takes (the longest of three)


@pytest.fixture(scope="module", params=sorted(OPERATIONS))
def matrix(request, tmp_path_factory) -> Matrix:
    base = tmp_path_factory.mktemp(request.param)
    fleets = Fleets(make_fleet(base / "old", 4), make_fleet(base / "new", 4, variant=" v2"))
    specs, argv = OPERATIONS[request.param]
    fresh = str(base / "fresh")
    assert forked(["build", *specs(fleets), "-o", fresh], str(base / "err"))[0] == 0
    times = []
    for round, jobs in enumerate(("1", "2", "1")):
        out = str(base / f"after-{round}-{jobs}")
        shutil.copytree(fresh, out)
        start = time.monotonic()
        assert forked(argv(fleets, out, jobs), str(base / "err"))[0] == 0
        times.append(time.monotonic() - start)
    after = tree(out)
    assert tree(str(base / "after-1-2")) == after != tree(fresh)
    return Matrix(fleets, tree(fresh), after, fresh,
                  lambda out, jobs: argv(fleets, out, jobs), max(times))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_at_any_point_leaves_the_old_or_the_new_state(matrix, sig, tmp_path):
    """The exit status says which: 0 for the new state (a signal after the commit is
    noted, not reported as a failure), 128 + the signal for the old one. SIGKILL may
    leave debris: then `check` reports it (exit 1) and the next build repairs it."""
    rng = random.Random(SEED + sig)
    out, errors = str(tmp_path / "out"), str(tmp_path / "err")
    seen = {"old": 0, "new": 0, "repaired": 0, "missed": 0}
    scale = matrix.duration   # delays spread over a build; kept there as the load changes
    for run in range(RUNS):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(matrix.fresh, out)
        jobs = "2" if run % 2 else "1"
        code, missed = forked(matrix.argv(out, jobs), errors, sig, rng.uniform(0, scale))
        seen["missed"] += missed
        scale *= 0.8 if missed else 1.05
        with open(errors, encoding="utf-8") as fh:
            said = fh.read()
        assert "Traceback" not in said and "internal error" not in said, said
        state = tree(out)
        if sig == signal.SIGKILL and state not in (matrix.before, matrix.after):
            result = cgsc("check", *matrix.fleets.new, "-o", out, cwd=ROOT)
            assert result.returncode == 1, (run, result.stdout, result.stderr)
            said = result.stdout + result.stderr
            assert ("left by an interrupted build" in said   # staging, or a journal
                    or "an interrupted build is not finished" in said), said
            assert forked(matrix.argv(out, "1"), errors)[0] == 0
            assert tree(out) == matrix.after, run
            seen["repaired"] += 1
            continue
        assert no_build_state(out), (run, code, said)
        if state == matrix.after:
            seen["new"] += 1
            assert code in (0, -signal.SIGKILL), (run, code, said)
            if code == 0 and "arrived after the build was installed" in said:
                assert signal.Signals(sig).name in said
        else:
            assert state == matrix.before, (run, code, said)
            seen["old"] += 1
            assert code in (128 + sig, -sig), (run, code, said)
            if code == 128 + sig:
                assert f"interrupted ({signal.Signals(sig).name}); nothing written" in said
    print(f"{signal.Signals(sig).name}: {seen}")
    # Both sides were reached. With cgsc already imported (as in the whole suite) a build
    # reaches its staging within a millisecond, so a SIGKILL almost never lands before it:
    # what it left there (old files and staging) is the "repaired" side.
    assert seen["old"] + seen["repaired"] and seen["new"] + seen["repaired"], seen


# -- the findings, one by one -------------------------------------------------------------

SIGNAL_AT = r"""
import os, signal, sys
target, sig = os.environ["SIGNAL_ON"], int(os.environ["SIGNAL"])
def hook(event, args):
    if event == "os.rename" and str(args[1]).endswith(target) or \
       event == "open" and isinstance(args[0], str) and args[0].endswith(target) and \
       isinstance(args[2], int) and args[2] & os.O_CREAT:
        os.kill(os.getpid(), sig)   # now, wherever the build is
sys.addaudithook(hook)
from cgsc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _signal_on(argv, target: str, sig: int):
    return subprocess.run([sys.executable, "-c", SIGNAL_AT, *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, SIGNAL_ON=target, SIGNAL=str(int(sig))))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_staging_leaves_no_debris_and_says_so(tmp_path, sig):
    """SIGTERM and SIGHUP used to end the build where it stood, leaving
    OUT/.cgsc/staging/ with partial artifacts that `check` did not see."""
    old, new = make_fleet(tmp_path / "old", 2), make_fleet(tmp_path / "new", 2, variant=" v2")
    out = str(tmp_path / "out")
    assert cgsc("build", *old, "-o", out).returncode == 0
    before = tree(out)
    result = _signal_on(["build", *new, "-o", out], "manifest.json", sig)   # the first staged
    assert result.returncode == 128 + sig, result.stderr
    assert f"cgsc: interrupted ({signal.Signals(sig).name}); nothing written" in result.stderr
    assert tree(out) == before and no_build_state(out)
    assert cgsc("check", *old, "-o", out).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_the_commit_reports_the_build_it_installed(tmp_path, sig):
    """A signal that arrives while the commit runs is held off and taken once the build
    is installed: exit 0, with a note, not 130 ("nothing written") after a complete
    install."""
    old, new = make_fleet(tmp_path / "old", 2), make_fleet(tmp_path / "new", 2, variant=" v2")
    out, fresh = str(tmp_path / "out"), str(tmp_path / "fresh")
    assert cgsc("build", *new, "-o", fresh).returncode == 0
    assert cgsc("build", *old, "-o", out).returncode == 0
    result = _signal_on(["build", *new, "-o", out], "journal.json", sig)   # the commit's rename
    name = signal.Signals(sig).name
    assert result.returncode == 0, result.stderr
    assert f"cgsc: {name} arrived after the build was installed in {out}/" in result.stderr
    assert tree(out) == tree(fresh)


def test_check_reports_staging_a_killed_build_left(tmp_path):
    old, new = make_fleet(tmp_path / "old", 2), make_fleet(tmp_path / "new", 2, variant=" v2")
    out = str(tmp_path / "out")
    assert cgsc("build", *old, "-o", out).returncode == 0
    for at in range(1, 40):   # a kill while staging: the output is old, with debris
        result = run_hooked(["build", *new, "-o", out], KILL_AT=at)
        assert result.returncode == -signal.SIGKILL
        staging = os.path.join(out, ".cgsc", "staging")
        if (os.path.isdir(staging) and os.listdir(staging)
                and not os.path.exists(os.path.join(out, ".cgsc", "journal.json"))):
            break
        assert cgsc("build", *old, "-o", out).returncode == 0
    else:
        pytest.fail("no kill left staging behind")
    result = cgsc("check", *old, "-o", out)
    assert result.returncode == 1, result.stdout
    assert "left by an interrupted build" in result.stdout + result.stderr
    assert "[CGS-CHECK-002]" in result.stderr and "up to date" not in result.stderr
    assert cgsc("build", *old, "-o", out).returncode == 0   # which removes it
    assert cgsc("check", *old, "-o", out).returncode == 0
    assert no_build_state(out)


# -- descriptors --------------------------------------------------------------------------

# The limit set as cgsc starts (the interpreter itself needs more to start, whatever runs
# in it); then the real command line.
LIMITED = ("import resource, sys; n = int(sys.argv.pop(1)); "
           "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
           "sys.argv[0] = 'cgsc'; from cgsc.cli import run; run()")


def _limited(n: int, *argv):
    return subprocess.run([sys.executable, "-c", LIMITED, str(n), *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_descriptor_limits_from_4_to_16_give_one_environment_error_and_leave_nothing(tmp_path):
    old, new = make_fleet(tmp_path / "old", 4), make_fleet(tmp_path / "new", 4, variant=" v2")
    fresh_old, fresh_new = str(tmp_path / "fresh-old"), str(tmp_path / "fresh-new")
    assert cgsc("build", *old, "-o", fresh_old).returncode == 0
    assert cgsc("build", *new, "-o", fresh_new).returncode == 0
    outcomes = {}
    for n in range(4, 17):
        for start in ("empty", "old"):
            out = str(tmp_path / f"out-{n}-{start}")
            if start == "old":
                shutil.copytree(fresh_old, out)
            before = tree(out) if start == "old" else None
            for jobs in ("1", "2"):
                result = _limited(n, "build", "-j", jobs, *new, "-o", out)
                said = result.stderr
                assert "Traceback" not in said and "internal error" not in said, (n, said)
                if result.returncode == 0:
                    assert tree(out) == tree(fresh_new), (n, start)
                    shutil.rmtree(out)
                    if start == "old":
                        shutil.copytree(fresh_old, out)
                else:
                    assert result.returncode == 2, (n, said)
                    assert said.count("Too many open files") == 1, (n, said)
                    assert (tree(out) == before) if start == "old" else not os.path.exists(out), (n, said)
                outcomes[n, start, jobs] = result.returncode
            for argv in (["validate", *new], ["check", *old, "-o", fresh_old]):
                result = _limited(n, *argv)
                assert result.returncode in (0, 2), (n, argv[0], result.stderr)
                assert "Traceback" not in result.stderr and "internal error" not in result.stderr
                if result.returncode == 2:
                    assert result.stderr.count("Too many open files") == 1, (n, result.stderr)
    print("descriptor limit -> build exit status:", sorted(outcomes.items()))
    assert outcomes[4, "empty", "1"] == 2 and outcomes[16, "old", "2"] == 0   # both outcomes


def test_a_fleet_under_a_low_descriptor_limit_is_one_error_not_one_per_spec(tmp_path):
    """`ulimit -n 7` once gave one "Too many open files" spec error per spec (exit 1) for
    a fleet large enough for workers; now one environment error, or a build."""
    specs = make_fleet(tmp_path / "specs", 60)
    listing = tmp_path / "fleet.txt"
    listing.write_text("\n".join(specs) + "\n")
    for n in range(4, 13):
        out = str(tmp_path / f"out-{n}")
        for command in (["build", "-o", out], ["validate"], ["check", "-o", out]):
            result = _limited(n, *command, "--specs-from", str(listing))
            said = result.stderr
            assert "[CGS-LOAD-001]" not in said and said.count("Too many open files") <= 1, said
            assert "Traceback" not in said and "internal error" not in said, said
            expected = {"build": (0, 2), "validate": (0, 2), "check": (0, 2) if os.path.exists(out)
                        else (1, 2)}[command[0]]
            assert result.returncode in expected, (n, command[0], said)
            if command[0] == "build" and result.returncode == 2:
                assert not os.path.exists(out)


# -- a full disk, a read-only output directory ----------------------------------------------

@pytest.fixture
def mounted(tmp_path):
    """A fresh tmpfs at tmp_path/mnt (root only); unmounted after the test."""
    point = tmp_path / "mnt"
    point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "cgsc-test",
                                            str(point)], capture_output=True).returncode != 0:
        missing("cannot mount a tmpfs (needs root and mount(8))")
    mounts = [point]
    yield mounts
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _remount(point, options: str) -> None:
    result = subprocess.run(["mount", "-o", f"remount,{options}", str(point)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_a_disk_that_fills_at_any_point_of_a_build_leaves_the_old_state(tmp_path, mounted):
    """The output directory on a tmpfs just large enough for the old state plus a margin
    that grows by a page per run: the disk fills at every point of staging and journal
    writing in turn; each build fails cleanly (exit 2, no space left, old state, nothing
    of .cgsc left) or succeeds; with room again, the next build writes the new state."""
    point = mounted[0]
    old, new = make_fleet(tmp_path / "old", 3), make_fleet(tmp_path / "new", 3, variant=" v2")
    fresh_new = str(tmp_path / "fresh-new")
    assert cgsc("build", *new, "-o", fresh_new).returncode == 0
    out = str(point / "out")
    assert cgsc("build", *old, "-o", out).returncode == 0
    before = tree(out)
    used = int(subprocess.run(["df", "--output=used", "-B1", str(point)], capture_output=True,
                              text=True).stdout.split()[-1])
    page = os.sysconf("SC_PAGE_SIZE")
    failed = 0
    for extra in range(0, 48):
        _remount(point, f"size={used + extra * page}")
        result = cgsc("build", *new, "-o", out)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        if result.returncode == 0:
            assert tree(out) == tree(fresh_new), extra
            break
        failed += 1
        assert result.returncode == 2 and "No space left on device" in result.stderr, result.stderr
        assert tree(out) == before, extra
    else:
        pytest.fail("the build never found room")
    assert failed >= 3
    _remount(point, "size=4m")
    assert cgsc("build", *new, "-o", out).returncode == 0
    assert tree(out) == tree(fresh_new)


def test_a_read_only_output_directory_is_an_environment_error_and_stays_as_it_was(tmp_path, mounted):
    point = mounted[0]
    old, new = make_fleet(tmp_path / "old", 3), make_fleet(tmp_path / "new", 3, variant=" v2")
    out = str(point / "out")
    assert cgsc("build", *old, "-o", out).returncode == 0
    before = tree(out)
    _remount(point, "ro")
    for jobs in ("1", "2"):
        result = cgsc("build", "-j", jobs, *new, "-o", out)
        assert result.returncode == 2, result.stderr
        assert "Read-only file system" in result.stderr and "nothing written" in result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert tree(out) == before
    assert cgsc("check", *old, "-o", out).returncode == 0       # reading needs no writes
    _remount(point, "rw")
    assert cgsc("build", *new, "-o", out).returncode == 0


# -- the incremental cache's file -------------------------------------------------------------

# cgsc with no timestamp margin (its files are milliseconds old), killed (KILL set) as it
# renames a new cache into place (the temporary it wrote stays), or (KILL_KEY set) as it
# draws the bytes of a new key
KILL_AT_CACHE_RENAME = r"""
import os, signal, sys
from cgsc.output import cache
cache.MARGIN_NS = 0
def hook(event, args):
    if event == "os.rename" and args[1] == "cache.json" and os.environ.get("KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
if os.environ.get("KILL_KEY"):
    urandom = os.urandom
    os.urandom = lambda n: os.kill(os.getpid(), signal.SIGKILL) if n == 32 else urandom(n)
from cgsc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cached(out: str, *argv: str, **env) -> subprocess.CompletedProcess:
    """cgsc ARGV -o OUT with no timestamp margin, killed where `env` says (KILL_AT_CACHE_RENAME)."""
    return subprocess.run([sys.executable, "-c", KILL_AT_CACHE_RENAME, *argv, "-o", out],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, **env))


def test_a_check_killed_writing_the_cache_leaves_no_finding_and_a_build_removes_it(tmp_path):
    """A check killed (SIGKILL) while it wrote the cache left cache.json.PID.RANDOM.tmp,
    which every later check reported as an entry "left by an interrupted build" (exit 1),
    and a build that found every guest up to date (no cache to write) left in place."""
    specs, out = make_fleet(tmp_path / "specs", 2), str(tmp_path / "out")
    private = os.path.join(out, ".cgsc")
    assert _cached(out, "build", *specs).returncode == 0
    assert _cached(out, "check", *specs, KILL="1").returncode == -signal.SIGKILL
    assert [n for n in os.listdir(private) if n.endswith(".tmp")]
    for command in ("check", "check", "build"):   # recorded, then every guest up to date
        result = _cached(out, command, *specs)
        assert result.returncode == 0, result.stderr
    assert "2 already up to date" in result.stderr
    assert sorted(os.listdir(private)) == [".gitignore", "cache.json", "key"]


def test_a_full_disk_while_the_cache_is_first_written_leaves_no_empty_key(tmp_path, mounted):
    """The first check to record guests makes OUT/.cgsc/key. On a full disk that left an
    empty key (the 32 bytes failed to write) and no .gitignore: every later run found no
    usable key, and the cache was off for that output directory for good, without a word;
    and `git add -A OUT` took the key. Now a key or .gitignore not written whole is
    removed, and the key is made only once the .gitignore is there."""
    point = mounted[0]
    specs, out = make_fleet(tmp_path / "specs", 2), str(point / "out")
    private = os.path.join(out, ".cgsc")
    assert _cached(out, "build", *specs).returncode == 0
    filler = point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)   # the disk full
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    result = _cached(out, "check", *specs)
    assert result.returncode == 0, result.stderr
    for name in ("key", ".gitignore"):   # none, or whole
        path = os.path.join(private, name)
        assert not os.path.exists(path) or os.path.getsize(path) > 0, name
    os.unlink(filler)
    assert _cached(out, "check", *specs).returncode == 0
    with open(os.path.join(private, ".gitignore")) as fh:
        assert "*" in fh.read().split()
    assert os.path.getsize(os.path.join(private, "key")) == 32
    assert os.path.getsize(os.path.join(private, "cache.json")) > 0


def test_a_check_killed_as_it_makes_the_key_leaves_none_half_made(tmp_path):
    """The key was created, then its 32 bytes written: a kill in between left an empty
    key, and the cache off for good. It is now written whole under a temporary name and
    linked into place."""
    specs, out = make_fleet(tmp_path / "specs", 2), str(tmp_path / "out")
    private = os.path.join(out, ".cgsc")
    assert _cached(out, "build", *specs).returncode == 0
    assert _cached(out, "check", *specs, KILL_KEY="1").returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(private, "key"))
    result = _cached(out, "check", *specs)   # what the killed one left is no finding
    assert result.returncode == 0, result.stderr
    assert os.path.getsize(os.path.join(private, "key")) == 32
    assert os.path.exists(os.path.join(private, "cache.json"))
    assert _cached(out, "build", *specs).returncode == 0
    assert sorted(os.listdir(private)) == [".gitignore", "cache.json", "key"]

"""Crash-safety and concurrency of writes (issue 12): locked, journalled, durable writes
that never go through a symlink and never delete what cgsc did not write."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time

import pytest
from helpers import run_cli
from writes_helpers import (RUNNER, assert_consistent, cgsc, make_fleet, no_build_state,
                           run_hooked, tree)


def _build(specs, out, *extra):
    code, _o, err = run_cli("build", *map(str, specs), "-o", str(out), *extra)
    assert code == 0, err
    return err


def test_a_guest_directory_that_is_a_symlink_is_refused(tmp_path):
    specs = make_fleet(tmp_path / "specs", 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not cgsc's\n")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "node-0001")
    code, _o, err = run_cli("build", *specs, "-o", str(out))
    assert code == 2 and "symlink" in err and "nothing written" in err
    assert sorted(os.listdir(elsewhere)) == ["keep.txt"]
    assert sorted(os.listdir(out)) == ["node-0001"]     # node-0000 not written either


def test_a_planted_manifest_deletes_nothing_cgsc_did_not_write(tmp_path):
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    _build(specs, out)
    guest = out / "node-0000"
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    own = guest / "notes.txt"                 # a user's file inside the guest directory
    own.write_text("mine\n")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    manifest = json.loads((guest / "manifest.json").read_text())
    manifest["artifacts"] += [
        {"file": str(victim), "target": "shell", "mode": "0644", "sha256": digest(victim)},
        {"file": "../../victim.conf", "target": "shell", "mode": "0644", "sha256": digest(victim)},
        {"file": "notes.txt", "target": "shell", "mode": "0644", "sha256": digest(own)},
        {"file": "/etc/hostname", "target": "shell", "mode": "0644", "sha256": "0" * 64}]
    (guest / "manifest.json").write_text(json.dumps(manifest))
    _build(specs, out, "-t", "shell")
    assert victim.read_text() == "precious\n" and own.read_text() == "mine\n"
    # what cgsc's own previous build wrote and this one does not is removed
    assert not (guest / "node-0000.xml").exists() and (guest / "node-0000.sh").exists()


def test_stale_file_with_other_content_is_kept(tmp_path):
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    _build(specs, out)
    xml = out / "node-0000" / "node-0000.xml"
    xml.write_text(xml.read_text() + "<!-- edited by hand -->\n")
    _build(specs, out, "-t", "shell")
    assert xml.exists()   # not what cgsc wrote any more: not cgsc's to delete


def test_a_private_directory_that_is_a_symlink_is_refused(tmp_path):
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "trap").mkdir()
    os.symlink(tmp_path / "trap", out / ".cgsc")
    code, _o, err = run_cli("build", *specs, "-o", str(out))
    assert code == 2 and "symlink" in err
    assert os.listdir(tmp_path / "trap") == []


def test_a_successful_build_leaves_only_guest_directories(tmp_path):
    specs = make_fleet(tmp_path / "specs", 3)
    out = tmp_path / "out"
    _build(specs, out)
    assert sorted(os.listdir(out)) == ["node-0000", "node-0001", "node-0002"]
    assert_consistent(out)


def test_a_build_waits_for_the_lock_and_check_takes_it_shared(tmp_path):
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    _build(specs, out)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    proc = subprocess.Popen([sys.executable, "-m", "cgsc", "build", *specs, "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None          # still waiting: it did not interleave
    finally:
        os.close(fd)
    _o, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "waiting for another cgsc build" in err
    assert_consistent(out)


def test_durable_writes_cost_two_syncs_per_build_whatever_its_size(tmp_path, monkeypatch):
    from cgsc.output import fleet, outdir
    calls = {"fsync": 0, "syncfs": 0}
    real_fsync, real_syncfs = os.fsync, outdir._syncfs

    def fsync(fd):
        calls["fsync"] += 1
        real_fsync(fd)

    def syncfs(fd):
        calls["syncfs"] += 1
        real_syncfs(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(outdir, "_syncfs", syncfs)
    for count in (1, 30):
        calls.update(fsync=0, syncfs=0)
        specs = make_fleet(tmp_path / f"specs-{count}", count)
        fleet.build(specs, (), str(tmp_path / f"out-{count}"), jobs=1)
        assert calls == {"fsync": 0, "syncfs": 2}   # the commit, and before success
        assert len(assert_consistent(tmp_path / f"out-{count}")) == count


def test_check_reports_a_build_interrupted_after_its_commit(tmp_path):
    old = make_fleet(tmp_path / "old", 3)
    new = make_fleet(tmp_path / "new", 3, variant=" v2")
    out = tmp_path / "out"
    _build(old, out)
    count = tmp_path / "count"
    assert run_hooked(["build", *new, "-o", str(out)], COUNT_FILE=count).returncode == 0
    steps = int(count.read_text())
    _build(old, out)
    # the journal is renamed into place, then the guests' files: kill after the journal
    killed = None
    for at in range(steps - 1, 0, -1):
        _build(old, out)
        result = run_hooked(["build", *new, "-o", str(out)], KILL_AT=at)
        assert result.returncode == -signal.SIGKILL
        if os.path.exists(out / ".cgsc" / "journal.json"):
            killed = at
            break
    assert killed is not None
    code, _o, err = run_cli("check", *new, "-o", str(out))
    assert code == 1 and f"{out}/node-0000/ is out of date: an interrupted build is not finished" in err
    _build(new, out)
    assert run_cli("check", *new, "-o", str(out))[0] == 0
    assert_consistent(out)


def test_a_build_killed_at_every_write_step_recovers(tmp_path):
    """Fault injection at each write step: SIGKILL there; the next build (of either state)
    first finishes a committed build or discards an uncommitted one, and ends
    byte-identical to a fresh build of its specs, with no stray file or directory."""
    old = make_fleet(tmp_path / "old", 2)
    new = make_fleet(tmp_path / "new", 2, variant=" v2")
    fresh_old, fresh_new = tmp_path / "fresh-old", tmp_path / "fresh-new"
    _build(old, fresh_old)
    _build(new, fresh_new, "-t", "shell")
    out = tmp_path / "out"
    count = tmp_path / "count"
    _build(old, out)
    assert run_hooked(["build", *new, "-o", str(out), "-t", "shell"],
                      COUNT_FILE=count).returncode == 0
    steps = int(count.read_text())
    assert steps > 10
    outcomes = set()
    for at in range(1, steps):
        _build(old, out)
        result = run_hooked(["build", *new, "-o", str(out), "-t", "shell"], KILL_AT=at)
        assert result.returncode == -signal.SIGKILL, (at, result.stderr)
        committed = os.path.exists(out / ".cgsc" / "journal.json")
        outcomes.add(committed)
        if at % 2:
            _build(old, out)
            assert tree(out) == tree(fresh_old), at
        else:
            _build(new, out, "-t", "shell")
            assert tree(out) == tree(fresh_new), at
    assert outcomes == {True, False}    # kills before and after the commit point


def test_a_first_build_killed_at_every_write_step_recovers(tmp_path):
    """The same for a build into an empty directory, whose commit renames each guest's
    staged directory whole (from memory, not the journal): killed anywhere, the next
    build ends byte-identical to a fresh one, whether it finishes the killed build or
    discards it."""
    specs = make_fleet(tmp_path / "specs", 3)
    fresh = tmp_path / "fresh"
    _build(specs, fresh)
    count = tmp_path / "count"
    assert run_hooked(["build", *specs, "-o", str(tmp_path / "counted")],
                      COUNT_FILE=count).returncode == 0
    steps = int(count.read_text())
    assert steps > 10
    outcomes = set()
    for at in range(1, steps):
        out = tmp_path / f"out-{at}"
        result = run_hooked(["build", *specs, "-o", str(out)], KILL_AT=at)
        assert result.returncode == -signal.SIGKILL, (at, result.stderr)
        outcomes.add(os.path.exists(out / ".cgsc" / "journal.json"))
        _build(specs, out)
        assert tree(out) == tree(fresh), at
    assert outcomes == {True, False}    # kills before and after the commit point


def test_recovery_makes_guest_directories_of_the_usual_mode(tmp_path):
    """A journal left by an older cgsc has staged directories of mode 0700: recovery moves
    their files into guest directories made as a build makes them, never renames such a
    directory into place."""
    specs = make_fleet(tmp_path / "specs", 2)
    fresh = tmp_path / "fresh"
    _build(specs, fresh)
    for at in range(1, 40):
        out = tmp_path / f"out-{at}"
        run_hooked(["build", *specs, "-o", str(out)], KILL_AT=at)
        staging = out / ".cgsc" / "staging"
        slots = ([d for build in staging.iterdir() for d in build.iterdir()]
                 if staging.exists() else [])
        if (out / ".cgsc" / "journal.json").exists() and slots:
            break   # committed, nothing installed yet
    else:
        pytest.fail("no kill left a committed journal with its guests still staged")
    for slot in slots:
        slot.chmod(0o700)   # as cgsc 1.2 staged them
    _build(specs, out)
    assert tree(out) == tree(fresh)
    assert {stat.S_IMODE(d.stat().st_mode) for d in out.iterdir() if d.name != ".cgsc"} == \
        {stat.S_IMODE(d.stat().st_mode) for d in fresh.iterdir()} == {0o755 & ~_umask()}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_builds_killed_after_random_delays_leave_old_or_new_state(tmp_path, sig):
    old = make_fleet(tmp_path / "old", 60)
    new = make_fleet(tmp_path / "new", 60, variant=" v2")
    fresh_old, fresh_new = tmp_path / "fresh-old", tmp_path / "fresh-new"
    _build(old, fresh_old)
    _build(new, fresh_new)
    out = tmp_path / "out"
    rng = random.Random(12)
    for _round in range(6):
        _build(old, out)
        proc = subprocess.Popen([sys.executable, "-m", "cgsc", "build", *new, "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(sig)
        proc.communicate(timeout=120)   # workers die with a killed build (no hang)
        if sig == signal.SIGINT:
            # SIGINT is held off during the commit: old state, or new state, outright
            assert no_build_state(out)
            assert tree(out) in (tree(fresh_old), tree(fresh_new))
        _build(new, out)
        assert tree(out) == tree(fresh_new)


def test_twenty_parallel_builds_into_one_directory_end_consistent(tmp_path):
    variants = [make_fleet(tmp_path / f"v{v}", 4, variant=f" v{v}") for v in range(2)]
    out = tmp_path / "out"
    procs = []
    for i in range(20):
        extra = ["-t", "shell"] if i % 3 == 0 else []
        procs.append(subprocess.Popen([sys.executable, "-m", "cgsc", "build", *variants[i % 2],
                                       "-o", str(out), *extra],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _o, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    manifests = assert_consistent(out)
    assert sorted(manifests) == [f"node-{i:04d}" for i in range(4)]
    # and the tree is exactly what one of the builds alone writes (whichever ran last)
    states = {(i % 2, i % 3 == 0) for i in range(20)}
    passed = [state for state in states
              if cgsc("check", *variants[state[0]], "-o", str(out),
                      *(["-t", "shell"] if state[1] else [])).returncode == 0]
    assert len(passed) == 1


def test_runner_counts_write_steps(tmp_path):
    """The fault injector itself: it sees the build's write steps."""
    count = tmp_path / "count"
    specs = make_fleet(tmp_path / "specs", 1)
    result = run_hooked(["build", *specs, "-o", str(tmp_path / "out")], COUNT_FILE=count)
    assert result.returncode == 0, result.stderr
    # at least: staging mkdir, 4 files opened and chmodded, journal, 4 renames
    assert int(count.read_text()) >= 4 + 4 + 4 + 1
    assert "sys.addaudithook" in RUNNER


def test_temporaries_left_by_an_interrupted_cgsc_1_0_build_are_cleaned(tmp_path):
    """cgsc 1.0 staged ".<file>.<8 random>" beside each file and left them when killed,
    so `check` reported drift forever. They go; look-alikes that are not cgsc's stay."""
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    _build(specs, out)
    guest = out / "node-0000"
    xml = (guest / "node-0000.xml").read_text()
    (guest / ".node-0000.sh.k2j3x9a_").write_text("")                  # killed before writing
    (guest / ".node-0000.xml.0abcdefg").write_text(xml[: len(xml) // 2])  # killed mid-write
    (guest / ".manifest.json.zz00yy11").write_text('{\n  "cgsc": "1.0.0",\n')
    kept = {".notes.txt.abcdefgh": "", ".node-0000.sh.abc": "",       # not ours / not the pattern
            ".node-0000.sh.abcdefgh": "user data\n"}                  # ours by name, not content
    for name, text in kept.items():
        (guest / name).write_text(text)
    assert run_cli("check", *specs, "-o", str(out))[0] == 1
    _build(specs, out)
    assert sorted(p.name for p in guest.iterdir() if p.name.startswith(".")) == sorted(kept)


def test_a_symlink_inside_a_guest_directory_is_replaced_not_followed(tmp_path):
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    _build(specs, out)
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\necho not cgsc's\n")
    script = out / "node-0000" / "node-0000.sh"
    script.unlink()
    os.symlink(outside, script)
    _build(specs, out)
    assert outside.read_text() == "#!/bin/sh\necho not cgsc's\n"
    assert not script.is_symlink()
    assert_consistent(out)


def test_check_does_not_read_through_a_guest_directory_symlink(tmp_path):
    specs = make_fleet(tmp_path / "specs", 1)
    real = tmp_path / "real"
    _build(specs, real)
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(real / "node-0000", out / "node-0000")   # the right files, behind a symlink
    code, _o, err = run_cli("check", *specs, "-o", str(out))
    assert code == 1 and "is out of date: it is a symlink, not cgsc's output" in err


def _fifo_in_place_of(tmp_path, name: str):
    """One guest built, then its file `name` replaced by a FIFO (which a reader opening
    it would wait on until a writer comes): (specs, output directory, the FIFO)."""
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    _build(specs, out)
    fifo = out / "node-0000" / name
    fifo.unlink()
    os.mkfifo(fifo)
    return specs, out, fifo


def test_check_reports_a_fifo_in_place_of_an_artifact_instead_of_waiting_on_it(tmp_path):
    specs, out, fifo = _fifo_in_place_of(tmp_path, "node-0000.sh")
    result = cgsc("check", *specs, "-o", str(out))   # bounded by a timeout
    assert result.returncode == 1 and "node-0000.sh changed (not a regular file)" in result.stderr


def test_a_planted_journal_reaches_nothing_outside_cgsc_s_own_files(tmp_path):
    specs = make_fleet(tmp_path / "specs", 1)
    out = tmp_path / "out"
    _build(specs, out)
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    sha = hashlib.sha256(victim.read_bytes()).hexdigest()
    private = out / ".cgsc"
    private.mkdir()
    # a path where a name must be: refused, nothing touched
    (private / "journal.json").write_text(
        json.dumps({"staging": "x"}) + "\n" + json.dumps(
            {"guest": "..", "slot": "0", "files": [], "leftovers": [],
             "stale": [{"file": str(victim), "sha256": sha}]}) + "\n")
    code, _o, err = run_cli("build", *specs, "-o", str(out))
    assert code == 2 and "not a journal cgsc wrote" in err
    assert victim.read_text() == "precious\n"
    # well-formed, but its files were never staged: an uncommitted build, discarded
    (private / "journal.json").write_text(
        json.dumps({"staging": "x"}) + "\n" + json.dumps(
            {"guest": "node-0000", "slot": "0", "leftovers": [], "stale": [],
             "files": [{"file": "node-0000.sh", "sha256": "0" * 64}]}) + "\n")
    before = tree(out / "node-0000")
    _build(specs, out)
    assert tree(out / "node-0000") == before and no_build_state(out)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027, 0o002])
def test_every_artifact_gets_its_mode_whatever_the_umask(tmp_path, umask):
    """Files are created with their mode and changed only when the umask took bits from
    it: the result is the manifest's mode either way (one process and workers)."""
    specs = make_fleet(tmp_path / "specs", 60)
    for jobs in ("1", "2"):
        out = tmp_path / f"out-{jobs}"
        result = subprocess.run([sys.executable, "-m", "cgsc", "build", "-j", jobs, *specs,
                                 "-o", str(out)], capture_output=True, text=True,
                                preexec_fn=lambda: os.umask(umask), timeout=300)
        assert result.returncode == 0, result.stderr
        modes = {int(a["mode"], 8) for m in assert_consistent(out).values() for a in m["artifacts"]}
        assert modes == {0o644, 0o755}


def test_a_default_acl_on_the_output_directory_does_not_change_modes(tmp_path):
    """Under a default ACL the ACL, not the umask, decides what a new file gets (here no
    access for others): cgsc then sets every mode itself."""
    import errno
    import struct
    out = tmp_path / "out"
    out.mkdir()
    # user::rwx group::r-x other::--- in the kernel's xattr form (version 2 entries)
    entries = [(0x01, 7), (0x04, 5), (0x20, 0)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
                                           for tag, perm in entries)
    try:
        os.setxattr(out, "system.posix_acl_default", blob)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        pytest.skip(f"{tmp_path} is on a file system without POSIX ACLs")
    probe = out / "probe"
    probe.write_text("x")
    assert stat.S_IMODE(probe.stat().st_mode) == 0o640   # the ACL took the others' bits
    probe.unlink()
    _build(make_fleet(tmp_path / "specs", 2), out)
    modes = {int(a["mode"], 8) for m in assert_consistent(out).values() for a in m["artifacts"]}
    assert modes == {0o644, 0o755}


def test_a_fifo_in_place_of_the_previous_manifest_does_not_block_a_build(tmp_path):
    specs, out, _fifo = _fifo_in_place_of(tmp_path, "manifest.json")
    result = cgsc("build", *specs, "-o", str(out))   # bounded by a timeout
    assert result.returncode == 0, result.stderr
    assert_consistent(out)


def test_a_file_system_that_refuses_writes_fails_the_build_cleanly(tmp_path):
    """Staging that the file system refuses (here a file-size limit, as a full disk or a
    quota would) is a write error, exit 2, with nothing written and nothing left behind,
    in one process and with workers; a fleet that also has an invalid spec reports the
    spec error either way, as it would with room to write."""
    import resource
    specs = make_fleet(tmp_path / "specs", 60)
    mixed = make_fleet(tmp_path / "mixed", 60, bad={30})

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))   # an artifact is larger
    reports = {}
    for jobs in ("1", "2"):
        for name, fleet in (("valid", specs), ("mixed", mixed)):
            out = tmp_path / f"out-{name}-{jobs}"
            result = subprocess.run([sys.executable, "-m", "cgsc", "build", "-j", jobs, *fleet,
                                     "-o", str(out)], capture_output=True, text=True,
                                    preexec_fn=limited, timeout=300)
            assert not out.exists(), (name, jobs)
            assert "Traceback" not in result.stderr and "internal error" not in result.stderr
            reports[name, jobs] = (result.returncode, result.stderr.replace(str(out), "OUT"))
    assert reports["valid", "1"] == reports["valid", "2"]
    assert reports["valid", "1"][0] == 2 and "File too large; nothing written" in reports["valid", "1"][1]
    assert reports["mixed", "1"] == reports["mixed", "2"]
    assert reports["mixed", "1"][0] == 1 and "node-0030.toml" in reports["mixed", "1"][1]

"""The incremental cache (output/cache.py): an unchanged guest is taken from it, and every
kind of change to what a guest is built from, or to what is on disk, makes it compiled and
compared again; a cache that is not this user's own and whole is ignored and replaced.

Most tests set MARGIN_NS to 0: the files they write are seconds old at most, and the
cache (rightly) does not trust files changed within 2 s of a record; the tests of that
rule keep a margin."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import threading
import time

import firmware_images as fw
import pytest
from cgsc.output import cache, cache_env, cache_file, stats
from helpers import EXAMPLES, run_cli
from measure_helpers import spec_text
from writes_helpers import make_fleet, tree


@pytest.fixture
def no_margin(monkeypatch):
    monkeypatch.setattr(cache, "MARGIN_NS", 0)


@pytest.fixture
def compiled(monkeypatch):
    """The specs compiled (cgsc.pipeline.build.build_one calls), in this process."""
    from cgsc.pipeline import build
    calls = []
    real = build.build_one

    def counted(path, *args, **kw):
        calls.append(os.path.basename(path))
        return real(path, *args, **kw)
    monkeypatch.setattr(build, "build_one", counted)
    return calls


def _cli(*argv):
    return run_cli(*argv, "-j", "1")   # in this process: build_one is the counted one


def _fleet(tmp_path, count=3):
    specs = make_fleet(tmp_path / "specs", count)
    out = str(tmp_path / "out")
    code, _o, err = _cli("build", *specs, "-o", out)
    assert code == 0, err
    return specs, out


def _recorded(specs, out, compiled):
    """A first check compares every guest and records it; the next one compiles none."""
    compiled.clear()
    code, _o, err = _cli("check", *specs, "-o", out)
    assert code == 0 and len(compiled) == len(specs), err
    compiled.clear()
    code, _o, err = _cli("check", *specs, "-o", out)
    assert code == 0 and compiled == [], err


def _rewrite(path, old: bytes, new: bytes):
    """Change bytes in place, the size and the modification time kept (what a same-tick
    rewrite would look like; the change time moves on, as the kernel makes it)."""
    st = os.stat(path)
    with open(path, "rb") as fh:
        data = fh.read()
    assert old in data and len(old) == len(new)
    with open(path, "r+b") as fh:
        fh.write(data.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


# -- an unchanged fleet -------------------------------------------------------------------

def test_an_unchanged_fleet_is_checked_and_built_without_compiling(tmp_path, no_margin, compiled):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    guest = os.path.join(out, "node-0001", "node-0001.sh")
    before = os.stat(guest)
    code, _o, err = _cli("build", *specs, "-o", out)
    assert code == 0 and compiled == [], err
    assert "3 guests under" in err and "0 written, 3 already up to date" in err
    after = os.stat(guest)   # not written again
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == \
        (before.st_ino, before.st_mtime_ns, before.st_ctime_ns)
    with open(os.path.join(out, ".cgsc", ".gitignore")) as fh:
        assert "*" in fh.read().split()


def test_what_check_reports_is_the_same_with_and_without_the_cache(tmp_path, no_margin, compiled):
    """Warnings (the SEV example has one), the summary line, in every format."""
    specs = [s for s in EXAMPLES if "/fleet/" not in s] + make_fleet(tmp_path / "specs", 2)
    out = str(tmp_path / "out")
    assert _cli("build", *specs, "-o", out)[0] == 0
    assert _cli("check", *specs, "-o", out)[0] == 0
    for fmt in ("text", "json", "sarif"):
        compiled.clear()
        cached = _cli("check", *specs, "-o", out, "--format", fmt)
        assert compiled == []
        assert cached == _cli("check", *specs, "-o", out, "--format", fmt, "--no-cache")
    assert "CGS-SEV-013" in cached[1] + cached[2]


def test_a_tampered_changed_or_planted_artifact_is_found(tmp_path, no_margin, compiled):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    _rewrite(os.path.join(out, "node-0000", "node-0000.sh"), b"exec ", b"exec\t")
    (tmp_path / "out" / "node-0001" / "planted.sh").write_text("#!/bin/sh\n")
    os.chmod(os.path.join(out, "node-0002", "node-0002.xml"), 0o666)
    code, _stdout, err = _cli("check", *specs, "-o", out)
    assert code == 1 and sorted(compiled) == [os.path.basename(s) for s in specs]
    assert "node-0000.sh changed" in err and "planted.sh extra" in err
    assert "node-0002.xml has mode 0666, expected 0644" in err


def test_an_artifact_replaced_by_a_symlink_to_the_same_bytes_is_found_and_rewritten(
        tmp_path, no_margin, compiled):
    """A symlink is not cgsc's output (git commits the link, not the bytes; what it names
    can change with no trace in the output directory). Check followed it and said up to
    date; a build with the cache took the guest as written and left the link."""
    specs, out = _fleet(tmp_path, 2)
    _recorded(specs, out, compiled)
    artifact = os.path.join(out, "node-0001", "node-0001.sh")
    shutil.copy2(artifact, tmp_path / "elsewhere.sh")
    os.unlink(artifact)
    os.symlink(tmp_path / "elsewhere.sh", artifact)
    code, _stdout, err = _cli("check", *specs, "-o", out)
    assert code == 1 and "node-0001.sh" in err and "not a regular file" in err, err
    code, _stdout, err = _cli("build", *specs, "-o", out)
    assert code == 0 and "1 written, 1 already up to date" in err, err
    assert not os.path.islink(artifact) and _cli("check", *specs, "-o", out)[0] == 0


# -- each kind of input ---------------------------------------------------------------------

def test_a_spec_rewritten_with_the_same_size_and_time_is_compiled_again(tmp_path, no_margin,
                                                                       compiled):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    _rewrite(specs[1], b"node 1", b"node X")
    code, _stdout, err = _cli("check", *specs, "-o", out)
    assert code == 1 and compiled == ["node-0001.toml"]
    assert "out/node-0001/ is out of date" in err and "manifest.json changed" in err


def test_a_changed_base_compiles_every_guest_that_extends_it(tmp_path, no_margin, compiled):
    fleet = tmp_path / "fleet"
    shutil.copytree(os.path.dirname([s for s in EXAMPLES if "/fleet/" in s][0]), fleet)
    specs = sorted(str(p) for p in fleet.glob("web-*.toml"))
    out = str(tmp_path / "out")
    assert _cli("build", *specs, "-o", out)[0] == 0
    _recorded(specs, out, compiled)
    _rewrite(fleet / "base.toml", b'vcpus = 2', b'vcpus = 4')
    code, _stdout, _err = _cli("check", *specs, "-o", out)
    assert code == 1 and sorted(compiled) == [os.path.basename(s) for s in specs]
    compiled.clear()   # a base touched but unchanged: hashed again, no guest compiled
    _rewrite(fleet / "base.toml", b'vcpus = 4', b'vcpus = 2')
    assert _cli("check", *specs, "-o", out)[0] == 0   # its own first check compares again
    compiled.clear()
    os.utime(fleet / "base.toml")
    assert _cli("check", *specs, "-o", out)[0] == 0 and compiled == []


def test_a_measured_file_rewritten_with_the_same_size_and_time_is_measured_again(
        tmp_path, no_margin, compiled):
    (tmp_path / "fw.fd").write_bytes(fw.amd_image(hashes_table=True))
    (tmp_path / "vmlinuz").write_bytes(b"kernel A" * 512)
    spec = tmp_path / "m.toml"
    spec.write_text(spec_text("measured", "sev-snp", "fw.fd", cpu="EPYC-v4", kernel="vmlinuz",
                              cmdline="console=ttyS0"))
    out = str(tmp_path / "out")
    assert _cli("build", str(spec), "-o", out)[0] == 0
    _recorded([str(spec)], out, compiled)
    _rewrite(tmp_path / "vmlinuz", b"kernel A", b"kernel B")
    code, stdout, err = _cli("check", str(spec), "-o", out, "--diff")
    assert code == 1 and compiled == ["m.toml"]
    assert "launch measurement changed" in stdout + err and hashlib.sha256(
        (tmp_path / "vmlinuz").read_bytes()).hexdigest() in stdout


def test_a_spec_directory_that_resolves_elsewhere_is_compiled_again(tmp_path, no_margin,
                                                                     compiled, monkeypatch):
    """The specs named through a symlinked directory, hard-linked into a second directory
    before they were recorded (so each spec keeps its inode and change time): once the
    symlink points at the second directory, the specs' stats are the recorded ones, but
    their real paths are not, and every record is a miss."""
    monkeypatch.chdir(tmp_path)
    make_fleet(tmp_path / "a", 2)
    os.mkdir(tmp_path / "b")
    for name in os.listdir(tmp_path / "a"):
        os.link(tmp_path / "a" / name, tmp_path / "b" / name)
    os.symlink("a", "specs")
    specs = [os.path.join("specs", name) for name in sorted(os.listdir("a"))]
    assert _cli("build", *specs, "-o", "out")[0] == 0
    time.sleep(0.01)
    _recorded(specs, "out", compiled)
    os.unlink("specs")
    os.symlink("b", "specs")
    assert _cli("check", *specs, "-o", "out")[0] == 0
    assert sorted(compiled) == ["node-0000.toml", "node-0001.toml"]


def test_a_repository_made_above_the_specs_is_compiled_again(tmp_path, no_margin, compiled):
    """The spec root is where a spec's paths are recorded from: a .git made above the
    specs after they were recorded moves it, and every record is a miss."""
    specs, out = _fleet(tmp_path / "repo", 2)
    _recorded(specs, out, compiled)
    os.mkdir(tmp_path / "repo" / ".git")
    _cli("check", *specs, "-o", out)
    assert sorted(compiled) == ["node-0000.toml", "node-0001.toml"]


def test_a_spec_named_by_a_symlink_is_never_taken_from_the_cache(tmp_path, no_margin,
                                                                 compiled):
    """A spec path that is a symlink is compiled every time (its record would have to
    follow the link); the others are recorded as usual."""
    specs, out = _fleet(tmp_path, 2)
    link = str(tmp_path / "specs" / "link.toml")
    os.rename(specs[1], str(tmp_path / "node-0001.toml"))
    os.symlink(str(tmp_path / "node-0001.toml"), link)
    every = [specs[0], link]
    for _run in range(3):
        compiled.clear()
        assert _cli("check", *every, "-o", out)[0] == 0
    assert compiled == ["link.toml"]


def test_records_made_later_than_now_are_not_trusted(tmp_path, no_margin, compiled):
    """A record made after this run began (the clock stepped back since) holds nothing."""
    specs, out = _fleet(tmp_path, 2)
    _recorded(specs, out, compiled)
    memo = cache.load(out, None)
    suffix = memo.suffix(())
    items = list(enumerate(specs))
    assert cache.valid_indexes(memo, items, suffix, ())[0] == [0, 1]
    memo = cache.load(out, None)
    memo.now = min(memo.records(suffix).made) - 1
    assert cache.valid_indexes(memo, items, suffix, ())[0] == []


def test_another_host_profile_is_another_record(tmp_path, no_margin, compiled):
    specs, out = _fleet(tmp_path, 2)
    profiles = []
    for name in ("lab-a", "lab-b"):
        profile = tmp_path / f"{name}.json"
        profile.write_text(json.dumps({"profile-version": 1, "name": name,
                                       "origin": "hand-written"}))
        profiles.append(str(profile))
    _recorded(specs, out, compiled)   # without a host profile
    for profile in profiles:   # each host: its own records, the others kept
        compiled.clear()
        assert _cli("check", *specs, "-o", out, "--host", profile)[0] == 0
        assert len(compiled) == len(specs)
    for profile in profiles:
        compiled.clear()
        assert _cli("check", *specs, "-o", out, "--host", profile)[0] == 0 and compiled == []
    _rewrite(profiles[0], b'"lab-a"', b'"lab-c"')   # the profile's content is what counts
    assert _cli("check", *specs, "-o", out, "--host", profiles[0])[0] == 0
    assert len(compiled) == len(specs)


@pytest.mark.parametrize("change", ["version", "environment"])
def test_another_cgsc_or_environment_trusts_no_record(tmp_path, no_margin, compiled,
                                                     monkeypatch, change):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    if change == "version":
        import cgsc
        monkeypatch.setattr(cgsc, "__version__", cgsc.__version__ + ".1")
    else:
        monkeypatch.setenv("CGSC_ANY_KNOB", "1")
    assert _cli("check", *specs, "-o", out)[0] == 0
    assert len(compiled) == len(specs)


def test_a_removed_working_directory_is_no_crash(tmp_path, no_margin, compiled, monkeypatch):
    """Records are kept per working directory (specs are keyed by the path given); one
    that was removed (os.getcwd() fails) made every check and build with the cache exit
    3. Only absolute paths work from there: they have a section of their own."""
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    compiled.clear()
    code, _o, err = _cli("check", *specs, "-o", out)
    assert code == 0 and len(compiled) == len(specs), err   # another section
    compiled.clear()
    code, _o, err = _cli("build", *specs, "-o", out)
    assert code == 0 and compiled == [] and "0 written, 3 already up to date" in err, err


def test_a_change_to_cgsc_s_own_code_changes_the_fingerprint(tmp_path, monkeypatch):
    """The code digest covers every module, schema and template file by content: a
    rewrite that keeps size and modification time (and a hint that vouches for the old
    stat) still changes it."""
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text("X = 1\n")
    monkeypatch.setattr(cache_env, "code_files", lambda: {"cgsc/mod.py": str(module)})
    digest, hint = cache_env.code_digest(None, 0)
    assert cache_env.code_digest(hint, 0)[0] == digest
    _rewrite(module, b"X = 1", b"X = 2")
    assert cache_env.code_digest(hint, 0)[0] != digest
    assert cache_env.fingerprint("a") != cache_env.fingerprint("b")
    files = cache_env.code_files()
    assert files == {"cgsc/mod.py": str(module)}
    monkeypatch.undo()
    names = set(cache_env.code_files())
    assert {"cgsc/cli.py", "cgsc/output/cache.py", "cgsc.schema/guest.schema.json",
            "cgsc.targets/templates/launch.sh.j2"} <= names
    from cgsc.output import stats
    if stats.compiled is not None:   # the compiled stat loop is code the records rest on
        import cgsc.output._stats as compiled_loop
        assert os.path.realpath(compiled_loop.__file__) in map(
            os.path.realpath, cache_env.code_files().values())


# -- timestamps too close to a record ---------------------------------------------------------

def test_files_changed_within_the_margin_of_a_record_are_compared_again(tmp_path, compiled,
                                                                        monkeypatch):
    """A build's files are seconds old: a check now records nothing it could not prove
    later (a same-size rewrite within one timestamp tick would keep every time), so the
    next check compares every guest again."""
    monkeypatch.setattr(cache, "MARGIN_NS", 3600 * 10**9)
    specs, out = _fleet(tmp_path)
    for _round in range(2):
        compiled.clear()
        assert _cli("check", *specs, "-o", out)[0] == 0
        assert len(compiled) == len(specs)
    assert not os.path.exists(os.path.join(out, ".cgsc", cache_file.FILE))


def _changed_now(key: bytes) -> bytes:
    """A packed stat key whose change time is now (what a file written in this very tick
    has)."""
    dev, ino, size, mtime, _ctime, mode = stats.KEY.unpack(key)
    return stats.KEY.pack(dev, ino, size, mtime, time.time_ns(), mode)


def test_a_guest_compared_within_the_tick_of_its_files_is_never_recorded(tmp_path, compiled,
                                                                         monkeypatch):
    """An artifact whose times are within the margin of the comparison that found it up to
    date could be rewritten in that same timestamp tick without changing its stat: the
    guest is not recorded (the rule is applied when a record is made; a record is then
    compared for equal stats, so its times stay that old), and the rewrite is found."""
    monkeypatch.setattr(cache, "MARGIN_NS", 0)   # anything older than the check: recorded
    specs, out = _fleet(tmp_path, 1)
    artifact = os.path.join(out, "node-0000", "node-0000.sh")
    name = os.path.join("node-0000", "node-0000.sh")   # (relative to the output directory)
    real_batch = stats.batch
    seen = []

    def this_tick(dir_fd, entries):
        keys, failed = real_batch(dir_fd, entries)
        paths = entries.split(b"\0")[:-1]
        if not any(p.endswith(os.fsencode(name)) for p in paths):
            return keys, failed
        seen.append(paths)
        size = stats.KEY.size
        return b"".join(_changed_now(keys[i * size:(i + 1) * size])
                        if p.endswith(os.fsencode(name)) else keys[i * size:(i + 1) * size]
                        for i, p in enumerate(paths)), failed
    monkeypatch.setattr(stats, "batch", this_tick)
    compiled.clear()
    assert _cli("check", *specs, "-o", out)[0] == 0 and compiled == ["node-0000.toml"]
    assert seen   # (the artifact's key was asked for when the record was made)
    assert cache.load(out, None).records(cache.Cache(out, None, None).suffix(())) == {}
    monkeypatch.setattr(stats, "batch", real_batch)
    _rewrite(artifact, b"#!/bin/sh", b"#!Xbin/sh")
    compiled.clear()
    code, _stdout, err = _cli("check", *specs, "-o", out)
    assert code == 1 and compiled == ["node-0000.toml"] and "node-0000.sh changed" in err


# -- caches that are not to be trusted --------------------------------------------------------

def _cache_file(out):
    return os.path.join(out, ".cgsc", cache_file.FILE)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty", "header-only",
                                    "deep-array", "deep-object", "mac-not-ascii"])
def test_a_damaged_cache_is_ignored_and_replaced(tmp_path, no_margin, compiled, damage):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    with open(_cache_file(out), "rb") as fh:
        data = fh.read()
    damaged = {"garbage": os.urandom(len(data)), "truncated": data[:len(data) // 2],
               "flipped": data[:-10] + bytes([data[-10] ^ 1]) + data[-9:], "empty": b"",
               "header-only": data.partition(b"\n")[0],
               # a planted header that nests deeper than Python's recursion limit
               "deep-array": b"[" * 200_000 + b"\n", "deep-object": b'{"a":' * 200_000,
               # hmac.compare_digest raises TypeError for a str that is not ASCII
               "mac-not-ascii": _header_with(data, mac="\u00e9" * 64)}[damage]
    with open(_cache_file(out), "wb") as fh:
        fh.write(damaged)
    assert _cli("check", *specs, "-o", out)[0] == 0
    assert len(compiled) == len(specs)
    compiled.clear()
    assert _cli("check", *specs, "-o", out)[0] == 0 and compiled == []   # replaced


def _header_with(data: bytes, **fields) -> bytes:
    """A cache file's bytes with fields of its header replaced (its MAC left as it was)."""
    head, sep, body = data.partition(b"\n")
    return json.dumps({**json.loads(head), **fields}).encode("ascii") + sep + body


def test_a_header_nested_as_deep_as_the_parser_takes_is_refused_not_a_crash(tmp_path):
    """The header's fields are serialized again for its MAC (signed()) before the MAC can
    be checked: a planted header nested just less deep than json.loads takes was a
    RecursionError out of json.dumps (exit 3) for every cgsc check of that directory.
    Every depth, up to where the parser itself refuses, is refused as a cache."""
    import sys
    for depth in range(1, sys.getrecursionlimit() + 10):
        planted = b'{"length":0,"a":' + b"[" * depth + b"]" * depth + b"}\n"
        assert cache_file.verified(planted, b"k" * 32) == (None, 0), depth


def test_a_planted_header_longer_than_cgsc_writes_is_not_parsed(tmp_path, no_margin, compiled,
                                                                 monkeypatch):
    """The header is parsed before its MAC can be checked: a planted cache.json of 256 MiB
    of numbers on its first line took 5.6 s and 1.8 GB to be refused. A header longer than
    MAX_HEADER (64 times what cgsc writes) is refused unread."""
    specs, out = _fleet(tmp_path, 1)
    _recorded(specs, out, compiled)
    with open(_cache_file(out), "rb") as fh:
        head, _sep, body = fh.read().partition(b"\n")
    assert 16 * len(head) < cache_file.MAX_HEADER
    parsed = []
    monkeypatch.setattr(cache_file.json, "loads", lambda text, **kw: parsed.append(text))
    secret = cache_file.secret(out, create=False)
    planted = b"[" + b"0," * (cache_file.MAX_HEADER // 2) + b"0]\n" + body
    assert cache_file.verified(planted, secret) == (None, 0) and parsed == []


def test_a_cache_from_anywhere_else_is_foreign(tmp_path, no_margin, compiled):
    """Committed to a repository with its key, copied with the output directory: the key
    is bound to its file's identity, so a copy is another key and nothing is trusted (nor
    can a cache be forged without the key)."""
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    key = os.path.join(out, ".cgsc", cache_file.KEY)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and os.path.getsize(key) == 32
    shutil.copy2(key, key + ".copy")
    os.replace(key + ".copy", key)   # the same 32 bytes, another file
    assert _cli("check", *specs, "-o", out)[0] == 0 and len(compiled) == len(specs)
    compiled.clear()
    assert _cli("check", *specs, "-o", out)[0] == 0 and compiled == []   # replaced
    os.chmod(key, 0o644)   # a key others can read is no key
    assert _cli("check", *specs, "-o", out)[0] == 0 and len(compiled) == len(specs)


def test_records_of_the_wrong_shape_are_misses_not_crashes(tmp_path, no_margin, compiled):
    """Whatever a record holds (a cache written with this user's key, by a cgsc that
    recorded something else), a record is a miss or a guest's exact report."""
    specs, out = _fleet(tmp_path, 2)
    _recorded(specs, out, compiled)
    memo = cache.load(out, None)
    records = memo.records(memo.suffix(()))
    keys = sorted(records)
    bad = ["../../etc", [1], "x"]
    records[keys[0]] = bad + records[keys[0]][3:]
    records[keys[1]] = records[keys[1]][:5] + [[1, 2, 3, 4]]
    memo.dirty = True
    memo.save()
    assert _cli("check", *specs, "-o", out)[0] == 0
    assert sorted(compiled) == [os.path.basename(s) for s in specs]


@pytest.mark.parametrize("summary", [
    ["q35", "not hex!", ""], ["q35", "0" * 15, ""], ["q35", "", "0" * 17],
    ["q35", "g" * 16, ""], ["q35", "00 " + "0" * 13, ""], ["q35", "\u0663" * 16, ""],
    ["q35", 1, ""], ["q35", True, ""], ["q35", "", None], [35, "", ""], ["q35", ""], [],
    None, {"claims": ["", ""]}, {"name": "x", "diagnostics": [], "skipped": [],
                                 "machine": "q35", "claims": ["", "", "extra"]}])
def test_a_record_whose_report_cannot_be_read_is_a_miss(tmp_path, no_margin, compiled,
                                                         summary):
    """A record that holds (its files unchanged) but whose report is not one cgsc writes
    (its claims not the hex of whole 64-bit integers, fields missing) is compiled again,
    never taken in part or a crash."""
    specs, out = _fleet(tmp_path, 1)
    _recorded(specs, out, compiled)
    memo = cache.load(out, None)
    records = memo.records(memo.suffix(()))
    (key,) = records
    records[key] = records[key][:5] + [summary]
    memo.dirty = True
    memo.save()
    assert _cli("check", *specs, "-o", out)[0] == 0 and compiled == ["node-0000.toml"]


@pytest.mark.parametrize("field, value", [
    ("skipped", [1]), ("skipped", "ab"), ("skipped", [["libvirt", "CGS-X-001"]]),
    ("skipped", [["libvirt", 1, "why"]]), ("skipped", None), ("machine", 5),
    ("machine", None), ("machine", ["q35"])])
@pytest.mark.parametrize("command", ["check", "build"])
def test_a_report_field_of_the_wrong_type_is_a_miss_not_a_crash(tmp_path, no_margin, compiled,
                                                                 field, value, command):
    """The report of a record in full (a guest with warnings or skipped targets) has each
    field checked for what cgsc writes there: skipped targets are (target, rule, reason)
    strings, the machine type a string; anything else is compiled again, never a
    traceback where the report is used."""
    specs, out = _fleet(tmp_path, 1)
    _recorded(specs, out, compiled)
    memo = cache.load(out, None)
    records = memo.records(memo.suffix(()))
    (key,) = records
    machine, exclusive, shared = records[key][5]
    summary = {"name": "node-0000", "diagnostics": [], "skipped": [], "machine": machine,
               "claims": [exclusive, shared], field: value}
    records[key] = records[key][:5] + [summary]
    memo.dirty = True
    memo.save()
    code, _o, err = _cli(command, *specs, "-o", out)
    assert code == 0 and compiled == ["node-0000.toml"], err
    # the same report with fields of the right types is taken whole
    memo = cache.load(out, None)
    records = memo.records(memo.suffix(()))
    summary.update(skipped=[["kubevirt", "CGS-TARGET-001", "why"]], machine=machine)
    records[key] = records[key][:5] + [summary]
    memo.dirty = True
    memo.save()
    compiled.clear()
    code, _o, err = _cli(command, *specs, "-o", out)
    assert code == 0 and compiled == [], err


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_cache_that_is_no_regular_file_is_not_read(tmp_path, no_margin, compiled, kind):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    os.replace(_cache_file(out), tmp_path / "elsewhere.json")
    if kind == "symlink":
        os.symlink(tmp_path / "elsewhere.json", _cache_file(out))
    elif kind == "fifo":
        os.mkfifo(_cache_file(out))
    else:
        os.mkdir(_cache_file(out))
    assert _cli("check", *specs, "-o", out)[0] == 0 and len(compiled) == len(specs)


def test_another_user_s_private_directory_does_not_stop_a_check(tmp_path, no_margin, compiled,
                                                                monkeypatch):
    """OUT/.cgsc (mode 0700) now stays between runs, for the cache: another user who can
    read the output directory (a CI account checking what a deploy account built) got
    "check: cannot list OUT/: Permission denied" (exit 2), even with --no-cache, where
    before the cache check worked. What the kernel tells that user, simulated (the tests
    may run as root)."""
    import errno
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    private = os.path.join(out, ".cgsc")
    real_listdir, real_open = os.listdir, os.open

    def denied(real):
        def call(path, *args, **kw):
            if os.fspath(path) == private:
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return real(path, *args, **kw)
        return call
    monkeypatch.setattr(os, "listdir", denied(real_listdir))
    monkeypatch.setattr(os, "open", denied(real_open))
    for flag in ((), ("--no-cache",)):
        compiled.clear()
        code, _o, err = _cli("check", *specs, "-o", out, *flag)
        assert code == 0 and len(compiled) == len(specs), err   # no cache to read


def test_a_check_of_another_user_s_output_directory_writes_nothing_there(tmp_path, no_margin,
                                                                          compiled, monkeypatch):
    """`sudo cgsc check` of a user's output directory made OUT/.cgsc (root's, mode 0700)
    for its cache, after which the owner's builds failed ("cannot write under OUT:
    Permission denied (.cgsc)", exit 2). The cache is the output directory owner's:
    another user's check or build neither makes nor uses one there. (Another user
    simulated: the tests may run as root.)"""
    specs, out = _fleet(tmp_path)
    private = os.path.join(out, ".cgsc")
    assert not os.path.exists(private)
    other = os.geteuid() + 1
    monkeypatch.setattr(os, "geteuid", lambda: other)
    for command in ("check", "check", "build"):
        compiled.clear()
        code, _o, err = _cli(command, *specs, "-o", out)
        assert code == 0 and len(compiled) == len(specs), err
        assert not os.path.exists(private)


def test_no_cache_neither_reads_nor_writes_it(tmp_path, no_margin, compiled):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)
    before = tree(os.path.join(out, ".cgsc")), os.stat(_cache_file(out)).st_mtime_ns
    assert _cli("check", *specs, "-o", out, "--no-cache")[0] == 0
    assert len(compiled) == len(specs)
    compiled.clear()
    code, _o, err = _cli("build", *specs, "-o", out, "--no-cache")
    assert code == 0 and len(compiled) == len(specs) and "3 guests written under" in err
    assert (tree(os.path.join(out, ".cgsc")), os.stat(_cache_file(out)).st_mtime_ns) == before
    fresh = str(tmp_path / "fresh")
    assert _cli("build", *specs, "-o", fresh, "--no-cache")[0] == 0
    assert _cli("check", *specs, "-o", fresh, "--no-cache")[0] == 0
    assert not os.path.exists(os.path.join(fresh, ".cgsc"))


def test_records_of_deleted_specs_are_dropped_when_the_cache_is_written(tmp_path, no_margin,
                                                                        compiled):
    specs, out = _fleet(tmp_path)
    _recorded(specs, out, compiled)

    def recorded_specs():
        memo = cache.load(out, None)
        return sorted(memo.records(memo.suffix(())))
    assert recorded_specs() == sorted(specs)
    os.remove(specs[0])
    with open(specs[1], "a", encoding="utf-8") as fh:
        fh.write("# changed\n")   # rebuilt, then recorded by the next check: a write
    assert _cli("build", *specs[1:], "-o", out)[0] == 0
    code, _o, err = _cli("check", *specs[1:], "-o", out)
    assert code == 0 and compiled[-1] == os.path.basename(specs[1]), err
    assert recorded_specs() == sorted(specs[1:])


def test_a_guest_from_the_cache_still_meets_the_others_claims(tmp_path, no_margin, compiled):
    """A guest taken from the cache keeps its claims on its host (their hashes are the
    same in every run): a new spec that takes its disk conflicts with it."""
    specs, out = _fleet(tmp_path, 2)
    _recorded(specs, out, compiled)
    thief = tmp_path / "specs" / "thief.toml"
    with open(specs[1], encoding="utf-8") as fh:
        text = fh.read()
    thief.write_text(text.replace('"node-0001"', '"thief"').replace(
        "/run/cgsc/node-0001/", "/run/cgsc/thief/"))   # node-0001's disk, its own name
    code, _stdout, err = _cli("check", *specs, str(thief), "-o", out)
    # compiled: the thief, then (their claim hashes being equal) the two for their claims
    assert compiled[0] == "thief.toml" and sorted(compiled[1:]) == ["node-0001.toml",
                                                                     "thief.toml"]
    assert code == 1 and "root.qcow2" in err and "node-0001" in err, err


def test_two_guests_from_the_cache_that_conflict_still_conflict(tmp_path, no_margin, compiled):
    """Two guests built apart (each build alone has no conflict) that take the same disk
    are both up to date on disk, so a check records both, and reports the conflict; the
    next check, with both from the cache, reports it again (their section is not one
    whose claims are known to meet none: conflicts.Registry hashes them all)."""
    specs, out = _fleet(tmp_path, 2)
    thief = tmp_path / "specs" / "thief.toml"
    with open(specs[1], encoding="utf-8") as fh:
        thief.write_text(fh.read().replace('"node-0001"', '"thief"').replace(
            "/run/cgsc/node-0001/", "/run/cgsc/thief/"))   # node-0001's disk, its own name
    assert _cli("build", str(thief), "-o", out)[0] == 0
    every = [*specs, str(thief)]
    for run in range(3):
        compiled.clear()
        code, _stdout, err = _cli("check", *every, "-o", out)
        assert code == 1 and "root.qcow2" in err and "node-0001" in err and "thief" in err, err
        if run:   # from the cache: only the two compiled again for their exact claims
            assert sorted(compiled) == ["node-0001.toml", "thief.toml"], (run, compiled)


def test_a_record_with_claims_that_are_not_hex_leaves_the_others_claims_whole(
        tmp_path, no_margin, compiled):
    """The claims of a block of records are decoded together: one record whose claims
    look like hex and are not is compiled again, and the guests after it keep their own
    claims (a new spec taking the last one's disk still conflicts with it)."""
    specs, out = _fleet(tmp_path, 3)
    _recorded(specs, out, compiled)
    memo = cache.load(out, None)
    records = memo.records(memo.suffix(()))
    first = sorted(records)[0]
    machine, exclusive, shared = records[first][5]
    assert exclusive and not len(exclusive) % 16
    records[first] = records[first][:5] + [[machine, "g" * len(exclusive), shared]]
    memo.dirty = True
    memo.save()
    thief = tmp_path / "specs" / "thief.toml"
    with open(specs[2], encoding="utf-8") as fh:
        text = fh.read()
    thief.write_text(text.replace('"node-0002"', '"thief"').replace(
        "/run/cgsc/node-0002/", "/run/cgsc/thief/"))   # node-0002's disk, its own name
    compiled.clear()
    code, _stdout, err = _cli("check", *specs, str(thief), "-o", out)
    assert compiled[:2] == ["node-0000.toml", "thief.toml"], compiled
    assert code == 1 and "root.qcow2" in err and "node-0002" in err, err


# -- a boot file rewritten within its tick while a fleet runs ---------------------------------

def test_a_boot_file_read_early_in_a_fleet_is_recorded_as_read_then(tmp_path, monkeypatch):
    """Every guest of an invocation measures the bytes its first reader read (filecache). A
    guest compiled seconds later records that file as read at that first read, not at its
    own start: else a same-size rewrite within the file's timestamp tick right after the
    first read (its stat unchanged) would pass as proven by the later guest's record, and
    the next check would call that guest up to date with the new kernel in place."""
    from cgsc.pipeline import build
    margin = 300_000_000
    monkeypatch.setattr(cache, "MARGIN_NS", margin)
    (tmp_path / "fw.fd").write_bytes(fw.amd_image(hashes_table=True))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel A" * 512)
    specs = []
    for name in ("m0", "m1"):
        spec = tmp_path / f"{name}.toml"
        spec.write_text(spec_text(name, "sev-snp", "fw.fd", cpu="EPYC-v4", kernel="vmlinuz",
                                  cmdline="console=ttyS0", launch_dir=f"/var/lib/guests/{name}"))
        specs.append(str(spec))
    out = str(tmp_path / "out")
    assert _cli("build", *specs, "-o", out)[0] == 0
    # m0 out of date (it is not recorded); the kernel written just now, the same bytes
    with open(os.path.join(out, "m0", "m0.sh"), "ab") as fh:
        fh.write(b"# edited\n")
    kernel.write_bytes(b"kernel A" * 512)
    real_build_one, real_stat, real_fstat = build.build_one, os.stat, os.fstat
    seen = {}

    def same_tick(call):   # the rewrite below left every time of the kernel as it was
        def stat(*args, **kw):
            st = call(*args, **kw)
            return seen.get((st.st_dev, st.st_ino), st)
        return stat

    def compile_then_rewrite(path, *args, **kw):
        result = real_build_one(path, *args, **kw)
        if path == specs[0] and not seen:   # the kernel read: rewritten in its tick
            st = real_stat(kernel)
            seen[(st.st_dev, st.st_ino)] = st
            with open(kernel, "r+b") as fh:
                fh.write(b"kernel B")
            import time
            time.sleep(2 * margin / 1e9)   # m1 starts well after the kernel's times
        return result
    monkeypatch.setattr(build, "build_one", compile_then_rewrite)
    monkeypatch.setattr(os, "stat", same_tick(real_stat))
    monkeypatch.setattr(os, "fstat", same_tick(real_fstat))
    code, _o, err = _cli("check", *specs, "-o", out)
    assert code == 1 and "m0.sh changed" in err and "m1" not in err   # m1: the bytes read first
    code, _o, err = _cli("check", *specs, "-o", out)
    assert code == 1 and "out/m1/ is out of date" in err, err   # kernel B: measured again


def test_guests_from_the_cache_in_each_group_of_targets_keep_their_own_claims(tmp_path,
                                                                             no_margin,
                                                                             compiled,
                                                                             monkeypatch):
    """`check --all` checks each guest with the targets its manifest lists, one group of
    guests per set of targets; the claims of the guests taken from the cache are those of
    the right guests in every group (a conflict names the guest that holds the resource)."""
    specs = make_fleet(tmp_path / "specs", 3)
    monkeypatch.chdir(tmp_path / "specs")   # what the manifests' spec paths are relative to
    out = str(tmp_path / "out")
    assert _cli("build", specs[0], "-t", "shell", "-o", out)[0] == 0
    assert _cli("build", *specs[1:], "-o", out)[0] == 0
    compiled.clear()
    assert _cli("check", "--all", "-o", out)[0] == 0 and len(compiled) == 3
    compiled.clear()
    assert _cli("check", "--all", "-o", out)[0] == 0 and compiled == []
    thief = tmp_path / "specs" / "thief.toml"
    with open(specs[2], encoding="utf-8") as fh:
        text = fh.read()
    thief.write_text(text.replace('"node-0002"', '"thief"').replace(
        "/run/cgsc/node-0002/", "/run/cgsc/thief/"))   # node-0002's disk, its own name
    code, _stdout, err = _cli("check", "--all", str(thief), "-o", out)
    assert code == 1 and "node-0002.toml:27: disk[0].path" in err and "'thief'" in err, err
    assert sorted(set(compiled)) == ["node-0002.toml", "thief.toml"]


@pytest.mark.parametrize("helpers", ["threads", "processes"])
def test_records_checked_by_helpers_give_what_one_process_gives(tmp_path, no_margin, compiled,
                                                                monkeypatch, helpers):
    """A large fleet's stats are taken by helpers as well (each takes blocks of records in
    turn: threads with the compiled batch, forked processes with Python's) while this
    process loads what compiling needs: the same guests hit, their claims the same (a
    conflict with a guest a helper statted is found), the changed guest compared."""
    from cgsc.output import fleet, stats
    monkeypatch.setattr(cache, "VALIDATE_PARALLEL", 2)
    monkeypatch.setattr(cache.Cache, "_BLOCK", 1)
    takers = tmp_path / "takers"
    real_batch = stats.batch if helpers == "threads" else stats.batch_python

    def batch(*args):   # (a forked helper's note reaches this process in the file)
        with open(takers, "a", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}-{threading.get_ident()}\n")
        return real_batch(*args)
    monkeypatch.setattr(stats, "batch", batch)
    if helpers == "processes":   # no compiled batch
        monkeypatch.setattr(stats, "batch_python", batch)
    specs, out = _fleet(tmp_path, 6)
    _recorded(specs, out, compiled)
    prepare = fleet._prepare   # this process busy for a while: the worker takes the records
    monkeypatch.setattr(fleet, "_prepare", lambda: time.sleep(0.3) or prepare())
    _rewrite(specs[3], b"node 3", b"node X")
    takers.unlink()
    code, _stdout, err = run_cli("check", *specs, "-o", out, "-j", "2")
    assert code == 1 and "1 guest out of date" in err and "node-0003/" in err, err
    assert compiled == ["node-0003.toml"]
    took = takers.read_text(encoding="ascii").split()
    assert len(took) == 6 and f"{os.getpid()}-{threading.get_ident()}" not in took   # (asleep)
    thief = tmp_path / "specs" / "thief.toml"
    with open(specs[4], encoding="utf-8") as fh:
        thief.write_text(fh.read().replace('"node-0004"', '"thief"').replace(
            "/run/cgsc/node-0004/", "/run/cgsc/thief/"))
    compiled.clear()
    code, _stdout, err = run_cli("check", *specs, str(thief), "-o", out, "-j", "2")
    assert code == 1 and "also opened read-write by guest 'node-0004'" in err, err
    assert sorted(set(compiled)) == ["node-0003.toml", "node-0004.toml", "thief.toml"]


def test_records_of_each_set_of_targets_are_kept_and_read_apart(tmp_path, no_margin,
                                                               compiled, monkeypatch):
    """A cache used with two sets of targets (a hook's `check -t ...`, CI's `check`) holds
    a section for each: a run reads only its own, and writing the cache keeps the other's
    records."""
    specs, out = _fleet(tmp_path, 2)
    _recorded(specs, out, compiled)
    named = ("-t", "shell", "-t", "systemd", "-t", "libvirt")   # the default ones, named
    assert _cli("check", *specs, "-o", out, *named)[0] == 0 and len(compiled) == 2
    compiled.clear()
    from cgsc.output import cache_section
    parsed = []
    real = cache_section._parsed
    monkeypatch.setattr(cache_section, "_parsed", lambda raw: parsed.append(raw) or real(raw))
    for targets in ((), named):
        assert _cli("check", *specs, "-o", out, *targets)[0] == 0 and compiled == []
        assert len(parsed) == 1   # its own section only
        parsed.clear()
    memo = cache.load(out, None)
    assert sorted(memo.records(memo.suffix(()))) == sorted(specs)
    assert sorted(memo.records(memo.suffix(("shell", "systemd", "libvirt")))) == sorted(specs)


def test_records_asked_for_in_another_order_are_compared_each_with_its_own(tmp_path,
                                                                           no_margin, compiled,
                                                                           monkeypatch):
    """The keys of a block are compared with the recorded ones in one comparison only when
    its records are the section's next ones, in order: asked for in another order, each
    record is compared with its own keys (here a stat that answers, whatever it is
    asked, with every record's keys in the section's order: two of them swapped)."""
    from cgsc.output import stats
    specs, out = _fleet(tmp_path, 4)
    _recorded(specs, out, compiled)
    memo = cache.load(out, None)
    suffix = memo.suffix(())
    section = memo.records(suffix)
    assert list(section.where) == specs   # (recorded in the order they were checked)
    monkeypatch.setattr(stats, "batch", lambda _fd, _blob: (section.keys, b""))
    order = [specs[i] for i in (0, 2, 1, 3)]
    found, _claims = cache.valid_indexes(memo, list(enumerate(order)), suffix, ())
    assert found == [0, 3]


def test_a_section_written_and_read_again_holds_the_same_records(tmp_path, no_margin,
                                                                   compiled):
    """A section's line keeps the records read from the columns as they were (runs of
    them around one deleted), adds the rows stored since, and leaves out a row cgsc
    would not write (its keys not for its files)."""
    from cgsc.output.cache_section import Section
    specs, out = _fleet(tmp_path, 4)
    _recorded(specs, out, compiled)
    memo = cache.load(out, None)
    section = memo.records(memo.suffix(()))
    expected = {spec: section[spec] for spec in specs}
    del section[specs[1]], expected[specs[1]]
    moved = list(expected[specs[3]])
    moved[3] = moved[3].replace("manifest.json", "m.json")   # another set of artifact names
    section["elsewhere.toml"] = expected["elsewhere.toml"] = moved
    short = list(expected[specs[0]])
    short[1] = [short[1][0][:-1], short[1][1]]
    section["short.toml"] = short
    again = Section(section.line())
    assert {spec: again[spec] for spec in again} == expected
    assert again.artifact_sets == [section.artifact_sets[0], moved[3]]


def _parts(data: bytes):
    """(header line, inputs line, [each section's line]) of a cache file, where its
    header's table says the sections are (a section's raw numbers may hold a newline)."""
    head, _sep, body = data.partition(b"\n")
    inputs = body[:body.index(b"\n")]
    return head, inputs, [body[offset:offset + length]
                          for offset, length, _mac in json.loads(head)["sections"]]


def _sections(out):
    """(header, inputs line, [[suffix, columns, numbers], ...]) of the cache file."""
    with open(_cache_file(out), "rb") as fh:
        head, inputs, lines = _parts(fh.read())
    sections = []
    for line in lines:
        tab = line.index(b"\t")
        second = line.index(b"\t", tab + 1)
        sections.append([line[:tab], json.loads(line[tab + 1:second]), line[second + 1:]])
    return json.loads(head), inputs, sections


def _rewritten(out, header, inputs, sections):
    """The cache file written again as cgsc writes it, with this user's key (a cache cgsc
    itself could have written: every MAC holds)."""
    secret = cache_file.secret(out, create=False)
    lines, table, offset = [inputs], [], len(inputs) + 1
    for suffix, columns, numbers in sections:
        line = suffix + b"\t" + json.dumps(columns, separators=(",", ":")).encode() + b"\t" + numbers
        table.append([offset, len(line), cache_file.mac(secret, line)])
        offset += len(line) + 1
        lines.append(line)
    body = b"\n".join(lines)
    fields = {k: header[k] for k in ("format", "version", "fingerprint", "code")}
    fields.update(length=len(body), sections=table)
    fields["mac"] = cache_file.mac(secret, cache_file.signed(fields), inputs)
    with open(_cache_file(out), "wb") as fh:
        fh.write(json.dumps(fields, separators=(",", ":")).encode() + b"\n" + body)


# -- the same spec named twice --------------------------------------------------------------

@pytest.mark.parametrize("command", ["check", "build"])
def test_a_spec_named_twice_conflicts_with_itself_with_the_cache_too(tmp_path, no_margin,
                                                                     command):
    """A spec named twice is two guests of one name, disk and sockets: without the cache
    every run says so (CGS-TARGET-002...). With it, both are hits of one record of a
    'clean' section, and Registry._apart() searched only the compiled guests' hashes
    (none) in the cached ones: a conflict that no longer was, and the run passed."""
    specs, out = _fleet(tmp_path, 2)
    twice = [specs[0], specs[1], specs[0]]
    expected = _cli(command, *twice, "-o", out, "--no-cache")
    assert expected[0] == 1 and "CGS-TARGET-002" in expected[2]
    assert _cli("check", *specs, "-o", out)[0] == 0   # both recorded
    for run in range(2):
        got = _cli(command, *twice, "-o", out)
        assert got == expected, (run, got)


# -- a section whose columns cgsc would not write -------------------------------------------

@pytest.mark.parametrize("spec", [None, 0, 1, 1.5, True])
def test_a_spec_column_entry_that_is_no_string_is_no_crash(tmp_path, no_margin, spec):
    """A section's spec column is read as it is (a record of another type is a miss,
    never a crash, says cache_section.py): an entry that is no string (a JSON object's keys,
    format 3's records, always were one) made save() raise TypeError (os.path.isabs):
    exit 3, an internal error, on every run until the cache was removed by hand."""
    specs, out = _fleet(tmp_path)
    assert _cli("check", *specs, "-o", out)[0] == 0   # every guest recorded
    header, inputs, sections = _sections(out)
    (section,) = sections
    section[1]["spec"][0] = spec
    _rewritten(out, header, inputs, sections)
    for _run in range(2):
        code, _o, err = _cli("check", *specs, "-o", out)
        assert code == 0 and "3 guest(s) up to date" in err, err


@pytest.mark.parametrize("name", ["\ud800", "node-\udbff"])
def test_a_name_column_entry_that_is_no_file_name_is_a_miss_not_a_crash(tmp_path, no_margin,
                                                                        name):
    """A record's guest name goes into the stat entries of its block as text encoded with
    surrogateescape; a lone surrogate that is no escaped byte (U+D800..U+DBFF) cannot be
    encoded, and the UnicodeEncodeError ended the run with an internal error (format 3
    caught UnicodeError for its record alone: a miss)."""
    specs, out = _fleet(tmp_path)
    assert _cli("check", *specs, "-o", out)[0] == 0   # every guest recorded
    header, inputs, sections = _sections(out)
    (section,) = sections
    section[1]["name"] = [name, "node-0001", "node-0002"]
    _rewritten(out, header, inputs, sections)
    for _run in range(2):
        code, _o, err = _cli("check", *specs, "-o", out)
        assert code == 0 and "3 guest(s) up to date" in err, err


def test_a_damaged_section_is_not_trusted_and_its_neighbour_still_is(tmp_path, no_margin,
                                                                       compiled):
    """Each section has its own MAC (a run checks only the one it reads): a byte changed
    in one set of targets' records makes that section a miss, and it is replaced; the
    other section's records still hold. Sections moved elsewhere in the file are not
    where the header's table (under its MAC) says: nothing is trusted."""
    specs, out = _fleet(tmp_path, 2)
    _recorded(specs, out, compiled)
    named = ("-t", "shell", "-t", "systemd", "-t", "libvirt")
    assert _cli("check", *specs, "-o", out, *named)[0] == 0 and len(compiled) == 2
    with open(_cache_file(out), "rb") as fh:
        data = fh.read()
    head, inputs, lines = _parts(data)
    assert len(lines) == 2   # a section for each set of targets
    named_at = 0 if b'"\\nshell,systemd,libvirt\\n' in lines[0] else 1
    damaged = list(lines)
    line = damaged[named_at]
    at = line.index(b"node-0001")
    damaged[named_at] = line[:at] + b"node-0002" + line[at + 9:]   # the same length
    with open(_cache_file(out), "wb") as fh:
        fh.write(b"\n".join((head, inputs, *damaged)))
    for targets, expected in (((), 0), (named, 2), (named, 0), ((), 0)):
        compiled.clear()
        assert _cli("check", *specs, "-o", out, *targets)[0] == 0
        assert len(compiled) == expected, targets
    # the two sections swapped: their offsets in the header no longer name them
    with open(_cache_file(out), "rb") as fh:
        head, inputs, (first, second) = _parts(fh.read())
    assert len(first) != len(second)
    with open(_cache_file(out), "wb") as fh:
        fh.write(b"\n".join((head, inputs, second, first)))
    compiled.clear()
    assert _cli("check", *specs, "-o", out)[0] == 0 and len(compiled) == 2


def test_each_working_directory_keeps_its_records(tmp_path, no_margin, compiled, monkeypatch):
    """Specs are keyed by the path given, relative to the working directory: a run from
    another directory (a hook in a subdirectory, CI at the top) has records of its own
    and leaves the others' (a new working directory dropped the whole cache before); a
    deleted spec is dropped from every directory's records when the cache is written."""
    specs, out = _fleet(tmp_path)
    top, below = str(tmp_path), str(tmp_path / "specs")

    def check_from(where, chosen=specs):
        monkeypatch.chdir(where)
        compiled.clear()
        code, _o, err = _cli("check", *[os.path.relpath(s, where) for s in chosen], "-o", out)
        assert code == 0, err
        return len(compiled)
    assert [check_from(top), check_from(below)] == [3, 3]    # each records its own
    assert [check_from(top), check_from(below)] == [0, 0]    # and keeps them
    os.remove(specs[0])
    with open(specs[1], "a", encoding="utf-8") as fh:
        fh.write("# changed\n")
    assert _cli("build", specs[1], "-o", out)[0] == 0
    assert check_from(below, specs[1:]) == 1                 # recorded: the cache is written
    memo = cache.load(out, None)
    for memo.cwd in (top, below):
        kept = sorted(memo.records(memo.suffix(())))
        assert kept == sorted(os.path.relpath(s, memo.cwd) for s in specs[1:]), kept


def test_a_spec_in_the_root_directory_does_not_move_a_spec_of_the_working_directory(tmp_path,
                                                                                    monkeypatch):
    """A record's state holds the spec's real path and root, each spec directory resolved
    once per run: "/x" (directory "/") and "x" (the working directory) both have nothing
    before their last separator, and neither takes the other's directory (else a spec's
    state would name a file it is not, and miss a change of its root: a .git made above)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "g").mkdir(parents=True)
    (tmp_path / "g.toml").write_text("")
    at_root = next(path for path in (os.path.join(os.sep, e) for e in sorted(os.listdir(os.sep)))
                   if not os.path.islink(path))
    out, secret = str(tmp_path / "out"), b"k" * 32

    def place(memo, spec):
        return memo._place(cache._split_spec(spec)[0])[:2]
    here = place(cache.Cache(out, None, secret), "g.toml")
    there = place(cache.Cache(out, None, secret), at_root)
    assert here[1] + "g.toml" == os.path.join(os.path.realpath(tmp_path), "g.toml")
    assert there[1] + os.path.basename(at_root) == at_root
    for first, second, alone in ((at_root, "g.toml", here), ("g.toml", at_root, there)):
        memo = cache.Cache(out, None, secret)
        place(memo, first)
        assert place(memo, second) == alone


# -- a manifest that names a target by no string (check --all) ------------------------------

@pytest.mark.parametrize("target", [5, None, True, 1.5])
def test_a_manifest_target_that_is_no_string_is_reported_as_without_the_cache(
        tmp_path, no_margin, monkeypatch, target):
    """`check --all` checks each guest with the targets its manifest lists; the manifest is
    an artifact under the output directory (anyone who can change out/ can change it), and
    a target there that is no string is a spec error without the cache (CGS-TARGET-001:
    no target named 5). With the cache, Cache.suffix() joined the targets with ",".join
    and raised TypeError: an internal error (exit 3) on every run, for a tampered
    artifact that --no-cache reports."""
    specs = make_fleet(tmp_path / "specs", 2)
    monkeypatch.chdir(tmp_path / "specs")   # what the manifests' spec paths are relative to
    out = str(tmp_path / "out")
    assert _cli("build", *specs, "-o", out)[0] == 0
    assert _cli("check", "--all", "-o", out)[0] == 0   # every guest recorded
    manifest = os.path.join(out, "node-0001", "manifest.json")
    with open(manifest, encoding="utf-8") as fh:
        doc = json.load(fh)
    doc["artifacts"][0]["target"] = target
    with open(manifest, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    expected = _cli("check", "--all", "-o", out, "--no-cache")
    assert expected[0] == 1, expected
    for _run in range(2):
        assert _cli("check", "--all", "-o", out) == expected


# -- a report nested deeper than it is decoded ----------------------------------------------

@pytest.mark.parametrize("field", ["skipped", "diagnostics"])
def test_a_report_nested_deeper_than_it_is_decoded_is_a_miss_not_a_crash(tmp_path, no_margin,
                                                                        compiled, field):
    """A report recorded in full (a dict: cache._summary) is decoded (cache._decode) for
    every hit, two Python frames a level of arrays; the section's parse takes one (C)
    frame a level. An array nested ~600 deep parses, and its decoding raised
    RecursionError out of Cache.summaries(): an internal error (exit 3) on every run
    until the cache was removed by hand (a record of a value cgsc would not write is a
    miss, never a crash: cache_section.py)."""
    specs, out = _fleet(tmp_path)
    assert _cli("check", *specs, "-o", out)[0] == 0   # every guest recorded
    header, inputs, sections = _sections(out)
    (section,) = sections
    machine = section[1]["report"]
    assert machine == "q35"   # (every guest's the usual report: one value)
    nested = []
    for _ in range(3 * sys.getrecursionlimit() // 5):
        nested = [nested]
    report = {"name": "node-0000", "diagnostics": [], "skipped": [], "machine": machine}
    report[field] = nested
    section[1]["report"] = [report, machine, machine]
    _rewritten(out, header, inputs, sections)
    for run in range(2):   # compiled again, then recorded as cgsc writes it
        compiled.clear()
        code, _o, err = _cli("check", *specs, "-o", out)
        assert code == 0 and "3 guest(s) up to date" in err, err
        assert compiled == ([] if run else ["node-0000.toml"]), (run, compiled)


@pytest.mark.parametrize("field, value", [
    ("files", -1), ("files", 99), ("files", "x"), ("files", 1.5), ("files", [0]),
    ("dir", -1), ("dir", 7), ("inputs", "0"), ("name", 5), ("report", None),
    ("spec", "one"), ("artifact_sets", [5]), ("dirs", {}), ("input_sets", None)])
def test_a_column_cgsc_would_not_write_makes_misses_not_crashes(tmp_path, no_margin, compiled,
                                                                field, value):
    """A column of another shape or type than cgsc writes (in a cache with every MAC
    holding) leaves its records misses: every guest is compiled again, and the verdict
    is the one without the cache."""
    specs, out = _fleet(tmp_path)
    assert _cli("check", *specs, "-o", out)[0] == 0   # every guest recorded
    header, inputs, sections = _sections(out)
    (section,) = sections
    section[1][field] = value
    _rewritten(out, header, inputs, sections)
    compiled.clear()
    code, _o, err = _cli("check", *specs, "-o", out)
    assert code == 0 and "3 guest(s) up to date" in err, err
    assert sorted(compiled) == [os.path.basename(s) for s in specs]


def test_a_spec_path_with_the_name_placeholder_is_recorded_as_named(tmp_path, no_margin,
                                                                    compiled):
    """A record's artifact names use "%" for the guest's name; a spec path may hold one
    too (specs/50%.toml), and its record stats that path as named, then holds."""
    specs, out = _fleet(tmp_path, 2)
    odd = str(tmp_path / "specs" / "50%-node.toml")
    os.rename(specs[1], odd)
    assert _cli("build", specs[0], odd, "-o", out)[0] == 0   # (the artifacts name the spec)
    time.sleep(0.01)
    for _run in range(2):   # compared and recorded, then held
        compiled.clear()
        assert _cli("check", specs[0], odd, "-o", out)[0] == 0
    assert compiled == []
    with open(odd, "a", encoding="utf-8") as fh:
        fh.write("# changed\n")
    compiled.clear()
    code, _o, err = _cli("check", specs[0], odd, "-o", out)   # (its manifest names the
    assert code == 1 and "50%-node.toml" in err and compiled == ["50%-node.toml"]   # spec's sha)

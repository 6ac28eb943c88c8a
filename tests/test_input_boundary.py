"""Issue 25 (input side): every file cgsc reads goes through one boundary (core.inputs),
and every input the red-team pass found ends in a clear answer. One test per finding,
each run through the real command line (a subprocess where a hang or a memory blow-up is
what is tested: a timeout and an address-space limit catch either)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, run_cli

SNP = os.path.join(ROOT, "examples", "sev-snp.toml")
CAPS = os.path.join(ROOT, "tests", "data", "hosts", "snp-host.domcapabilities.xml")
PROFILE = os.path.join(ROOT, "tests", "data", "hosts", "amd-lab.json")
MEMORY = 1 << 30   # a cgsc run that reads its inputs by their bounds needs far less


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def cgsc(*argv, cwd=None, env=None):
    """cgsc in a subprocess with 1 GiB of address space and 60 s: a hang or an unbounded
    read fails the test instead of stalling or swapping the machine."""
    return subprocess.run([sys.executable, "-m", "cgsc", *argv], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=env, preexec_fn=_limited)


def _clean(result):
    """No traceback and no internal error, whatever the exit status."""
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr


# -- --specs-from: a NUL byte, /proc/self/environ ------------------------------------------

@pytest.mark.parametrize("command", ["validate", "build", "check"])
def test_a_nul_byte_in_a_list_is_one_located_diagnostic_per_bad_line(tmp_path, command):
    shutil.copyfile(SNP, tmp_path / "ok.toml")
    listing = tmp_path / "fleet.txt"
    listing.write_bytes(b"ok.toml\0evil\n\nok.toml\n" + b"x" * 30 + b"\0\x1b[2J" + b"y" * 5000 + b"\n")
    out = tmp_path / "out"
    extra = ["-o", str(out)] if command != "validate" else []
    result = cgsc(command, "--specs-from", str(listing), *extra, cwd=tmp_path)
    _clean(result)
    assert result.returncode == 1, result.stderr
    lines = [l for l in result.stderr.splitlines() if "[CGS-LOAD-008]" in l]
    assert [l.split(":")[:2] for l in lines] == [[str(listing), "1"], [str(listing), "4"]], lines
    assert 'which starts "ok.toml"' in lines[0]
    assert 'which starts "' + "x" * 16 + '"' in lines[1]     # a short prefix, nothing more
    assert "\x1b" not in result.stderr and "y" * 10 not in result.stderr
    assert not out.exists()


def test_a_list_of_proc_self_environ_does_not_echo_the_environment(tmp_path):
    secret = "cgsc-test-secret-7d1f0c"
    env = dict(os.environ, AAA_FIRST="x" * 40, CGSC_TEST_SECRET=secret,
               MULTI_LINE="line one\nline two " + secret)
    for command in ("validate", "build", "check"):
        result = cgsc(command, "--specs-from", "/proc/self/environ", "-o", str(tmp_path / "o"),
                      env=env) if command != "validate" else \
            cgsc(command, "--specs-from", "/proc/self/environ", env=env)
        _clean(result)
        assert result.returncode in (1, 2), result.stderr
        assert secret not in result.stdout + result.stderr
        assert "[CGS-LOAD-008]" in result.stderr
        assert len(result.stderr) < 2000, result.stderr


def test_a_long_line_in_a_list_is_no_file_name(tmp_path):
    listing = tmp_path / "fleet.txt"
    listing.write_bytes(b"a" * 4097 + b"\n")
    code, _out, err = run_cli("validate", "--specs-from", str(listing))
    assert code == 1 and "the line is 4097 bytes" in err and "a" * 17 not in err, err


# -- special files given where a file is read ----------------------------------------------

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("option", ["--specs-from", "--host", "--from-domcapabilities"])
def test_special_files_are_refused_at_once_with_bounded_memory(tmp_path, fifo, special, option):
    path = fifo if special == "fifo" else special
    argv = (["probe", option, path] if option == "--from-domcapabilities"
            else ["validate", option, path, SNP])
    result = cgsc(*argv, cwd=tmp_path)
    _clean(result)
    assert result.returncode == 2, result.stderr
    kind = "a FIFO" if special == "fifo" else "a character device"
    assert f"{path}: {kind}, not a regular file" in result.stderr, result.stderr


def test_a_list_or_profile_larger_than_its_bound_is_refused_unread(tmp_path):
    listing = tmp_path / "fleet.txt"
    listing.write_bytes(b"ok.toml\n" * ((1 << 20) // 8 + 1))
    code, _o, err = run_cli("validate", "--specs-from", str(listing))
    assert code == 2 and "larger than 1 MiB (the bound for a spec list)" in err, err
    profile = tmp_path / "host.json"
    profile.write_bytes(b"{" + b" " * (4 << 20) + b"}")
    code, _o, err = run_cli("validate", "--host", str(profile), SNP)
    assert code == 2 and "larger than 4 MiB (the bound for a host profile)" in err, err


def test_standard_input_as_a_list_is_bounded_too(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cgsc", "validate", "--specs-from", "-"],
                            stdin=open("/dev/zero", "rb"), capture_output=True, text=True,
                            timeout=60, preexec_fn=_limited)
    _clean(result)
    assert result.returncode == 2 and "the bound for a spec list" in result.stderr


# -- --host: nesting ---------------------------------------------------------------------

def test_a_host_profile_nested_100000_deep_is_refused_before_parsing(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    result = cgsc("validate", "--host", str(deep), SNP)
    _clean(result)
    assert result.returncode == 2
    assert f"host profile {deep}: arrays and objects nested more than 64 deep" in result.stderr


@pytest.mark.parametrize("data, phrase", [
    (b'{"kvm": {"present": NaN}}', "NaN is not a JSON number"),
    (b'{"name": "a", "name": "b"}', "duplicate key 'name'"),
    (b'{"name": "\xff"}', "not UTF-8 text (byte 0xff at line 1, column 11)"),
    (b'{"name": ', "not JSON"),
    (b'["[{", "\\"[" ]', "does not fit"),       # brackets in strings are no nesting
])
def test_a_host_profile_that_is_no_plain_json_is_a_clear_usage_error(tmp_path, data, phrase):
    path = tmp_path / "host.json"
    path.write_bytes(data)
    code, _o, err = run_cli("validate", "--host", str(path), SNP)
    assert code == 2 and phrase in err, err


# -- --from-domcapabilities -----------------------------------------------------------------

def _caps(tmp_path, old, new):
    with open(CAPS, encoding="utf-8") as fh:
        text = fh.read()
    assert old in text
    path = tmp_path / "caps.xml"
    path.write_text(text.replace(old, new))
    return str(path)


@pytest.mark.parametrize("old, new, phrase", [
    ("<cbitpos>51</cbitpos>", "", "<sev supported='yes'> has no <cbitpos>"),
    ("<reducedPhysBits>1</reducedPhysBits>", "", "<sev supported='yes'> has no <reducedPhysBits>"),
    ("<cbitpos>51</cbitpos>", "<cbitpos>fifty-one</cbitpos>",
     "<sev supported='yes'>: <cbitpos> is \"fifty-one\", not a decimal number"),
    ("<cbitpos>51</cbitpos>", "<cbitpos>5_1</cbitpos>", "<cbitpos> is \"5_1\", not a decimal"),
    ("<maxESGuests>1006</maxESGuests>", "<maxESGuests>many</maxESGuests>",
     "<maxESGuests> is \"many\", not a decimal number"),
    ("<domainCapabilities>", "<!DOCTYPE d [<!ENTITY a 'aaaa'>]><domainCapabilities>",
     "has a DTD (<!DOCTYPE>); none is accepted"),
    ("<arch>x86_64</arch>", "<arch>" + "<x>" * 100 + "</x>" * 100 + "</arch>",
     "elements nested more than 64 deep"),
])
def test_domcapabilities_that_libvirt_would_not_write_is_named_with_its_element(tmp_path, old, new, phrase):
    caps = _caps(tmp_path, old, new)
    result = cgsc("probe", "--from-domcapabilities", caps)
    _clean(result)
    assert result.returncode == 2, result.stderr
    assert f"domain capabilities XML {caps}" in result.stderr and phrase in result.stderr, result.stderr


def test_recorded_qemu_output_goes_through_the_boundary(tmp_path, fifo):
    result = cgsc("probe", "--from-domcapabilities", CAPS, "--qemu-version", fifo)
    _clean(result)
    assert result.returncode == 2
    assert f"recorded QEMU output {fifo}: a FIFO, not a regular file" in result.stderr


# -- extends ---------------------------------------------------------------------------------

def test_an_extends_base_that_is_a_fifo_is_said_to_be_one_not_missing(tmp_path):
    (tmp_path / ".git").mkdir()
    os.mkfifo(tmp_path / "base.toml")
    spec = tmp_path / "web.toml"
    spec.write_text('extends = "base.toml"\nspec-version = 1\n')
    result = cgsc("validate", str(spec))
    _clean(result)
    assert result.returncode == 1, result.stderr
    assert (f"{spec}:1: extends: base spec 'base.toml' is a FIFO, not a regular file"
            in result.stderr), result.stderr
    assert "[CGS-LOAD-001]" in result.stderr and "not found" not in result.stderr


# -- the boundary itself ---------------------------------------------------------------------

def test_every_reader_of_files_goes_through_the_boundary():
    """No module outside core/inputs.py opens a file for reading with open() or reads one
    whole, except those that read cgsc's own files (the package; the output directory,
    through directory descriptors that never follow a symlink; the incremental cache's
    file and key there, and cgsc's code it fingerprints). Boot files too go through the
    boundary (core/filecache.py opens them with inputs.open_regular)."""
    import re
    own = {"spec/schema.py", "spec/compiled_check.py", "output/outdir.py", "output/drift.py",
           "output/workers.py", "cli.py", "spec/schema_compiler.py",
           # the incremental cache: its file and key in the output directory, cgsc's code
           "output/cache_file.py", "output/cache_env.py"}
    found = []
    for base, _dirs, files in os.walk(os.path.join(ROOT, "compiler")):
        for name in files:
            rel = os.path.relpath(os.path.join(base, name), os.path.join(ROOT, "compiler"))
            if not name.endswith(".py") or "_generated" in rel or rel in own or rel == "core/inputs.py":
                continue
            with open(os.path.join(base, name), encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    if "read by design" in line or re.search(r"open\([^)]*[\"'][wax]", line):
                        continue   # a device on purpose; a file opened for writing
                    if re.search(r"\bopen\([^)]*(\"r|'r|encoding=)|\bos\.open\(.*O_RDONLY|\.read\(\)", line):
                        found.append(f"{rel}:{number}: {line.strip()}")
    assert found == []


def test_resource_errors_cross_a_pipe_intact():
    import errno
    import pickle

    from cgsc.core import inputs
    exc = inputs.resource_error(OSError(errno.EMFILE, "Too many open files", "x.toml"))
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is inputs.ResourceError and again.errno == errno.EMFILE
    assert str(again) == "Too many open files (raise `ulimit -n`)"


def test_the_json_depth_count_skips_strings_and_escapes():
    from cgsc.core import inputs
    assert inputs.json_depth('["[[[", "\\"[[", {"a": [1]}]', 64) == (3, 0)
    assert inputs.json_depth("[" * 65, 64) == (65, 1)
    assert inputs.json_depth('"unterminated [[[', 64) == (0, 0)


# -- git blobs (`cgsc diff --base`) ----------------------------------------------------------

def _committed(tmp_path, text: bytes):
    """A repository whose HEAD has web.toml = text; the working tree has the example."""
    def git(*argv):
        subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *argv],
                       cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "web.toml").write_bytes(text)
    git("add", "web.toml")
    git("commit", "-qm", "old")
    shutil.copyfile(SNP, tmp_path / "web.toml")
    return str(tmp_path / "web.toml")


def test_a_spec_in_git_nested_too_deeply_is_a_located_error_not_a_crash(tmp_path):
    with open(SNP, "rb") as fh:
        text = fh.read()
    spec = _committed(tmp_path, text + b"x = " + b"[" * 100000 + b"]" * 100000 + b"\n")
    result = cgsc("diff", "--base", "HEAD", spec, cwd=tmp_path)
    _clean(result)
    assert result.returncode == 1 and "HEAD:web.toml:" in result.stderr
    assert "[CGS-LOAD-006]" in result.stderr, result.stderr


def test_a_spec_in_git_larger_than_the_bound_is_refused_as_a_file_would_be(tmp_path):
    """The blob is read from git to the bound and a byte, no further."""
    with open(SNP, "rb") as fh:
        text = fh.read()
    spec = _committed(tmp_path, text + b"# " + b"x" * (2 << 20) + b"\n")
    result = cgsc("diff", "--base", "HEAD", spec, cwd=tmp_path)
    _clean(result)
    assert result.returncode == 1, result.stderr
    assert "HEAD:web.toml: (top level): cannot read the spec: larger than 1048576 bytes" in result.stderr


def test_json_with_few_brackets_skips_the_tokenizer_and_the_bound_still_holds(monkeypatch):
    """parse_json counts brackets first: a text with no more of them than the bound is no
    deeper than it (the tokenizer is not run); more brackets, in strings or not, are
    tokenized, and only real nesting past the bound is refused."""
    from cgsc.core import inputs
    calls = []
    real = inputs.json_depth
    monkeypatch.setattr(inputs, "json_depth", lambda *a: calls.append(a) or real(*a))
    assert inputs.parse_json('{"a": [[1], {"b": []}]}', "m", inputs.MANIFEST) == {
        "a": [[1], {"b": []}]}
    assert calls == []
    assert inputs.parse_json('["' + "[" * 100 + '"]', "m", inputs.MANIFEST) == ["[" * 100]
    assert len(calls) == 1
    with pytest.raises(inputs.InputError, match="nested more than 64 deep"):
        inputs.parse_json("[" * 65 + "]" * 65, "m", inputs.MANIFEST)
    assert inputs.parse_json("[" * 64 + "]" * 64, "m", inputs.MANIFEST) is not None

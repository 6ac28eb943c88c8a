"""[measurement]: launch digests, firmware checks, reference values, explain and check.

Digests are checked against the measurement README's table and against the
`sev-snp-measure` command-line tool run as a separate process. The launch binding is in
tests/targets/test_launch_binding.py, ID blocks in test_id_block.py.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import random
import re
import subprocess
import sys

import firmware_images as fw
import pytest
from helpers import ROOT, compile_plan, run_cli
from measure_helpers import (FIRMWARE, MECH, SUFFIX_VECTORS, errors as _errors, spec_text,
                             tdx_spec_text, toml_str as _toml, write as _write)


@pytest.mark.parametrize("index", range(len(SUFFIX_VECTORS)))
def test_suffix_vector_is_reproduced_through_cgsc_build(index, firmware, tmp_path):
    row = SUFFIX_VECTORS[index]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with_files = row["files"].startswith("/dev/null")
    append = row["append"].strip("`")
    spec = _write(tmp_path / "guest.toml", spec_text(
        "vector", MECH[row["mode"]], firmware[FIRMWARE[row["fw"]]],
        vcpus=int(row["vcpus"]), cpu=None if row["type"] == "–" else row["type"],
        kernel="empty" if with_files else None, initrd="empty" if with_files else None,
        cmdline=None if append in ("empty", "none") else append,
        features=None if row["features"] in ("–", "0x1") else int(row["features"], 16)))
    out = tmp_path / "out"
    code, _stdout, err = run_cli("build", spec, "-o", str(out))
    if row["features"] == "0x21":   # DebugSwap: QEMU never launches an SNP guest with it
        assert code == 1 and (": measurement.guest-features: 0x21 is not a value QEMU "
                              "launches an AMD SEV-SNP guest with: it sets bit 5 (DebugSwap), "
                              "which QEMU never requests without IGVM [CGS-MEASURE-014]") in err
        return
    assert code == 0, err
    manifest = json.loads((out / "vector" / "manifest.json").read_text())
    assert manifest["attestation"]["launch-digest"] == row["digest"]


# -- cross-check with the sev-snp-measure command-line tool ---------------------------------

def _combinations(seed=8, count=60):
    rng = random.Random(seed)
    types = ["EPYC", "EPYC-v4", "EPYC-Rome", "EPYC-Milan", "EPYC-Milan-v2", "EPYC-Genoa",
             "EPYC-Turin"]
    out = []
    for i in range(count):
        mode = ("snp", "seves", "sev")[i % 3]
        firmware = rng.choice(list(FIRMWARE))
        kernel = firmware == "AmdSev" and rng.random() < 0.7
        out.append(dict(
            mode=mode, firmware=firmware, vcpus=rng.randint(1, 16), type=rng.choice(types),
            kernel=kernel, initrd=kernel and rng.random() < 0.6,
            cmdline=rng.choice([None, "", "console=ttyS0", "root=/dev/vda1 ro quiet"])
            if kernel else None,
            features=rng.choice([None, 0x1]) if mode == "snp" else None,
            kernel_bytes=rng.randbytes(rng.randint(0, 3000)),
            initrd_bytes=rng.randbytes(rng.randint(0, 3000))))
    return out


COMBINATIONS = _combinations()


def test_at_least_50_combinations_cover_every_dimension():
    assert len(COMBINATIONS) >= 50
    for key in ("mode", "firmware", "type", "kernel", "initrd", "cmdline", "features"):
        assert len({c[key] for c in COMBINATIONS}) >= 2, key


@pytest.mark.parametrize("case", range(len(COMBINATIONS)))
def test_digest_equals_the_sev_snp_measure_tool(case, firmware, tmp_path, tool):
    c = COMBINATIONS[case]
    exe = tool("sev-snp-measure")
    image = firmware[FIRMWARE[c["firmware"]]]
    (tmp_path / "k").write_bytes(c["kernel_bytes"])
    (tmp_path / "i").write_bytes(c["initrd_bytes"])
    spec = _write(tmp_path / "g.toml", spec_text(
        f"x{case}", MECH[c["mode"]], image, vcpus=c["vcpus"],
        cpu=c["type"] if c["mode"] != "sev" else None,
        kernel="k" if c["kernel"] else None, initrd="i" if c["initrd"] else None,
        cmdline=c["cmdline"], features=c["features"]))
    ours = compile_plan(spec).attestation["launch-digest"]
    argv = [exe, "--mode", c["mode"], "--ovmf", image]
    if c["mode"] != "sev":
        argv += ["--vcpus", str(c["vcpus"]), "--vcpu-type", c["type"]]
    if c["features"] is not None:
        argv += ["--guest-features", hex(c["features"])]
    if c["kernel"]:
        argv += ["--kernel", str(tmp_path / "k")]
        if c["initrd"]:
            argv += ["--initrd", str(tmp_path / "i")]
        if c["cmdline"]:
            argv += ["--append", c["cmdline"]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ours == result.stdout.strip()


# -- firmware checks --------------------------------------------------------------------

def test_ovmfx64_is_refused_with_kernel_hashes(firmware, tmp_path):
    (tmp_path / "k").write_bytes(b"kernel")
    for mode in ("sev-snp", "sev-es", "sev"):
        spec = _write(tmp_path / f"{mode}.toml", spec_text(
            "ovmfx64", mode, firmware[FIRMWARE["OvmfX64"]],
            cpu="EPYC-v4", kernel="k"))
        err = _errors(spec)
        assert "[CGS-MEASURE-012]" in err and "AmdSevX64" in err, err


@pytest.mark.parametrize("mode", ["sev-snp", "sev-es"])
def test_a_firmware_without_sev_metadata_is_refused(mode, tmp_path):
    image = tmp_path / "no-metadata.fd"
    image.write_bytes(fw.amd_image(sections=()))
    err = _errors(_write(tmp_path / "g.toml", spec_text("nometa", mode, str(image), cpu="EPYC-v4")))
    assert "has no SEV metadata" in err and "[CGS-MEASURE-011]" in err
    assert "AmdSevX64" in err and "launch-digest" not in err


def test_plain_sev_measures_an_ovmf_without_sev_metadata(tmp_path):
    """SEV measures only the firmware bytes: such a firmware is fine there."""
    image = tmp_path / "no-metadata.fd"
    image.write_bytes(fw.amd_image(sections=()))
    plan = compile_plan(_write(tmp_path / "g.toml", spec_text("plain", "sev", str(image))))
    assert plan.attestation["launch-digest"] == hashlib.sha256(image.read_bytes()).hexdigest()


def test_a_synthetic_amd_image_with_metadata_passes(tmp_path):
    image = tmp_path / "amd.fd"
    image.write_bytes(fw.amd_image())
    plan = compile_plan(_write(tmp_path / "g.toml", spec_text("synth", "sev-snp", str(image),
                                                              cpu="EPYC-Milan")))
    assert re.fullmatch(r"[0-9a-f]{96}", plan.attestation["launch-digest"])


def test_a_tdvf_image_is_accepted_and_its_td_fields_recorded(tmp_path):
    image = tmp_path / "tdvf.fd"
    image.write_bytes(fw.tdvf_image())
    owner = bytes(range(48))
    plan = compile_plan(_write(tmp_path / "td.toml", tdx_spec_text(
        "td", str(image), extra=f"mrowner = {_toml(base64.b64encode(owner).decode())}")))
    att = plan.attestation
    assert re.fullmatch(r"[0-9a-f]{96}", att["launch-digest"])
    assert att["report"]["mrtd"] == att["launch-digest"]
    assert att["files"][0]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert att["report"]["mrowner"] == owner.hex()
    assert att["report"]["mrconfigid"] == "00" * 48
    assert int(att["report"]["attributes"], 16) == 1 << 28   # sept-ve-disable by default
    assert {"rtmr0", "rtmr1", "rtmr2", "rtmr3"} <= set(att["not-predicted"])
    assert "mrtd" not in att["not-predicted"]
    assert [s["type"] for s in att["inputs"]["tdvf-sections"]] == ["BFV", "TD_HOB", "TempMem"]


def test_committed_support_images_are_the_layout_builders_output():
    for name, make in fw.SUPPORT.items():
        with open(os.path.join(ROOT, "tests", "invalid", "support", name), "rb") as fh:
            assert fh.read() == make(), name


# -- bad input: errors, never tracebacks ---------------------------------------------------

def test_a_missing_default_file_is_located_at_the_key_that_names_it(firmware, tmp_path):
    text = spec_text("nofile", "sev-snp", firmware[FIRMWARE["AmdSev"]],
                     cpu="EPYC-v4").replace("[measurement]\n", "[kernel]\nimage = \"/nonexistent/vmlinuz\"\n[measurement]\n")
    spec = _write(tmp_path / "g.toml", text)
    err = _errors(spec)
    line = text.splitlines().index('image = "/nonexistent/vmlinuz"') + 1
    assert f"{spec}:{line}: kernel.image: /nonexistent/vmlinuz: No such file or directory [CGS-MEASURE-001]" in err


def test_a_directory_is_not_a_file_to_measure(tmp_path):
    (tmp_path / "dir.fd").mkdir()
    err = _errors(_write(tmp_path / "g.toml", spec_text("dir", "sev", "dir.fd")))
    assert "dir.fd is not a regular file [CGS-MEASURE-001]" in err


@pytest.mark.parametrize("name", ["fifo", "/dev/zero", "/proc/self/pagemap", "/proc/self/status"])
def test_a_file_that_is_not_a_fixed_regular_file_is_refused_without_hanging(name, tmp_path):
    """A FIFO blocks an open for reading, /dev/zero never ends, and /proc files say they
    are 0 bytes long (pagemap then reads on for hundreds of GiB). Run as a separate
    process with a deadline, so that a hang fails the test instead of the suite."""
    if name == "fifo":
        os.mkfifo(tmp_path / "fifo")
    spec = _write(tmp_path / "g.toml", spec_text("odd", "sev", name))
    line = 1 + open(spec).read().splitlines().index(f"firmware = {_toml(name)}")
    proc = subprocess.run([sys.executable, "-m", "cgsc", "validate", spec], capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(f"^{re.escape(spec)}:{line}: measurement.firmware: {re.escape(name)} .*"
                     r"\[CGS-MEASURE-001\]$", proc.stderr, re.M), proc.stderr


def test_an_oversized_sparse_file_is_refused_before_it_is_read(tmp_path):
    """A 2 GiB sparse file (a disk image named as the initrd) is refused from its size on
    the open descriptor: nothing is read. A separate process with a deadline, as above."""
    with open(tmp_path / "huge.img", "wb") as fh:
        fh.truncate(2 << 30)
    spec = _write(tmp_path / "g.toml", spec_text("huge", "sev", "huge.img"))
    proc = subprocess.run([sys.executable, "-m", "cgsc", "validate", spec], capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "measurement.firmware: huge.img is 2147483648 bytes; boot files are at most 1 GiB " \
           "[CGS-MEASURE-001]" in proc.stderr, proc.stderr


def _counting_threads(monkeypatch) -> list:
    """The works filecache.in_thread is given (each still runs in its thread)."""
    from cgsc.core import filecache
    started, real = [], filecache.in_thread
    monkeypatch.setattr(filecache, "in_thread", lambda work: started.append(work) or real(work))
    return started


def test_a_problem_on_each_side_of_the_read_ahead_is_reported_in_key_order(tmp_path,
                                                                           monkeypatch):
    """Boot files new to the invocation: the firmware is read here while a thread hashes
    the kernel and initrd. Each one's problem is reported, in the order of the keys."""
    started = _counting_threads(monkeypatch)
    (tmp_path / "dir").mkdir()
    spec = _write(tmp_path / "g.toml", spec_text("both", "sev-snp", "no-such.fd", cpu="EPYC-v4",
                                                 kernel="/proc/self/status", initrd="dir"))
    err = _errors(spec)
    assert [line.split(": ")[1] for line in err.splitlines() if "CGS-MEASURE-001" in line] == [
        "measurement.firmware", "measurement.kernel", "measurement.initrd"], err
    assert "/proc/self/status is 0 bytes by its size but more bytes were read" in err
    assert len(started) == 1


def test_a_machine_problem_while_hashing_ahead_stops_the_command(tmp_path, monkeypatch,
                                                                 firmware):
    """Out of descriptors while the thread hashes the kernel: exit 2, as in this thread."""
    from cgsc.core import filecache
    started = _counting_threads(monkeypatch)
    real = filecache.read_into

    def no_descriptors(fd, expected, keep, *stop):
        if not keep:   # the kernel, hashed in the thread
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real(fd, expected, keep, *stop)
    monkeypatch.setattr(filecache, "read_into", no_descriptors)
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    spec = _write(tmp_path / "g.toml", spec_text("emfile", "sev-snp", firmware[FIRMWARE["AmdSev"]],
                                                 cpu="EPYC-v4", kernel="vmlinuz"))
    code, _out, err = run_cli("validate", spec)
    assert (code, len(started)) == (2, 1) and "Traceback" not in err
    assert "Too many open files (raise `ulimit -n`)" in err, err


def test_the_firmware_work_is_done_ahead_only_while_new_files_are_hashed(tmp_path,
                                                                          monkeypatch, firmware):
    """A fleet sharing its firmware: only the first guest reads it, and only that guest
    has the firmware's work done while a thread hashes its kernel. A later guest's own
    kernel is hashed here: its firmware's work is done already, nothing would overlap."""
    started = _counting_threads(monkeypatch)
    (tmp_path / "vmlinuz").write_bytes(b"kernel" * 1000)
    (tmp_path / "vmlinuz-2").write_bytes(b"kernel" * 1001)
    specs = [_write(tmp_path / f"g{i}.toml", spec_text(
        f"g{i}", "sev-snp", firmware[FIRMWARE["AmdSev"]], cpu="EPYC-v4", kernel=kernel,
        extra=f'[[net]]\nmode = "user"\nmac = "52:54:00:00:00:0{i}"'))
        for i, kernel in enumerate(("vmlinuz", "vmlinuz", "vmlinuz-2"))]
    code, _out, err = run_cli("build", "-j", "1", "-o", str(tmp_path / "out"), *specs)
    assert code == 0, err
    assert len(started) == 1


@pytest.mark.parametrize("role", ["firmware", "kernel"])   # read into memory / streamed
def test_a_file_shorter_than_its_size_is_refused(tmp_path, monkeypatch, role):
    """A file truncated while it is read (fstat said 4096 bytes, 10 arrive) is refused."""
    import cgsc.measure.stage as measure
    (tmp_path / "fw.fd").write_bytes(b"0123456789")
    real_fstat = os.fstat

    def lying_fstat(fd):
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, info.st_ino, info.st_dev, info.st_nlink,
                               info.st_uid, info.st_gid, 4096, 0, 0, 0))
    monkeypatch.setattr(measure.os, "fstat", lying_fstat)
    found, problem = measure._read(role, ("measurement", role), "fw.fd",
                                   str(tmp_path / "fw.fd"), "/x")
    assert found is None and problem.rule == "CGS-MEASURE-001"
    assert "4096" in problem.message and "10" in problem.message


# extra-args that change what was measured, each with the word the error names (written
# from QEMU's documentation of the options, not from cgsc's lists)
OVERRIDING = [
    (["-readconfig", "smp.cfg"], "'-readconfig'"),
    (["-set", "smp-opts.cpus=4"], "'-set'"),
    (["--set", "machine.kernel=/evil"], "'--set'"),
    (["-global", "driver=cfi.pflash01,property=secure,value=on"], "'-global'"),
    (["-global", "EPYC-v4-x86_64-cpu.pmu=on"], "'-global'"),
    (["-L", "/tmp/evil"], "'-L'"),
    (["-bios", "/tmp/evil.fd"], "'-bios'"),
    (["-pflash", "/tmp/evil.fd"], "'-pflash'"),
    (["-drive", "if=pflash,format=raw,file=/tmp/evil.fd"], "'-drive'"),
    (["-accel", "tcg"], "'-accel'"),
    (["-machine", "memory-backend=ram0"], "'-machine'"),
    (["-M", "confidential-guest-support=other"], "'-M'"),
    (["-machine", "pc"], "'-machine'"),
    (["-machine", "dump-guest-core=off,kernel=/tmp/evil"], "'-machine'"),
    (["-machine", "smp.cpus=4"], "'-machine'"),
    (["-device", "loader,file=/tmp/evil.bin,addr=0x100000"], "'-device'"),
    (["-device", "EPYC-v4-x86_64-cpu,socket-id=1,core-id=0,thread-id=0"], "'-device'"),
    (["-device", '{"driver": "loader", "file": "/tmp/evil.bin", "addr": 1048576}'], "'-device'"),
    (["-object", "igvm-cfg,id=igvm0,file=/tmp/evil.igvm"], "'-object'"),
    (["-incoming", "defer"], "'-incoming'"),
    (["-loadvm", "snap1"], "'-loadvm'"),
]


@pytest.mark.parametrize("args,word", OVERRIDING, ids=[" ".join(a)[:30] for a, _w in OVERRIDING])
def test_extra_args_that_override_a_measured_input_are_refused(args, word, tmp_path):
    extra = "[qemu]\nextra-args = " + json.dumps(args)
    spec = _write(tmp_path / "g.toml", spec_text("over", "sev-snp", "fw.fd", cpu="EPYC-v4",
                                                 extra=extra))
    err = _errors(spec)
    assert re.search(r": qemu.extra-args\[0\]: " + re.escape(word) + r".* overrides what "
                     r"\[measurement\] measured .*\[CGS-MEASURE-005\]$", err, re.M), err


@pytest.mark.parametrize("args", [["-machine", "dump-guest-core=off"], ["-M", "hpet=off"],
                                  ["-global", "kvm-pit.lost_tick_policy=discard"],
                                  ["-device", "virtio-rng-pci,iommu_platform=on"],
                                  ["-msg", "timestamp=on"]], ids=lambda a: " ".join(a))
def test_extra_args_that_measure_nothing_pass(args, tmp_path):
    extra = "[qemu]\nextra-args = " + json.dumps(args)
    spec = _write(tmp_path / "g.toml", spec_text("fine", "sev-snp", "fw.fd", cpu="EPYC-v4",
                                                 extra=extra))
    err = _errors(spec)   # the file-free checks passed: the missing firmware is read
    assert "CGS-MEASURE-005" not in err and "fw.fd: No such file" in err, err


def test_the_refused_options_are_options_of_qemu(tool):
    """Each option refused above is one QEMU documents (a misspelt one would never match)."""
    help_text = subprocess.run([tool("qemu-system-x86_64"), "-help"], capture_output=True,
                               text=True, timeout=60).stdout
    for args, _word in OVERRIDING:
        if args[0] == "-M":   # -machine's short alias, not listed by -help
            alias = subprocess.run([tool("qemu-system-x86_64"), "-M", "help"],
                                   capture_output=True, text=True, timeout=60)
            assert alias.returncode == 0 and "Supported machines" in alias.stdout
            continue
        assert re.search(f"^-{re.escape(args[0].lstrip('-'))}\\b", help_text, re.M), args[0]


def test_an_unknown_vcpu_type_lists_the_known_ones(firmware, tmp_path):
    from sevsnpmeasure import vcpu_types
    spec = _write(tmp_path / "g.toml", spec_text(
        "cpu", "sev-snp", firmware[FIRMWARE["AmdSev"]], cpu="qemu64"))
    err = _errors(spec)
    assert "'qemu64' is not a vCPU type sev-snp-measure knows [CGS-MEASURE-013]" in err
    assert "known types: " + ", ".join(sorted(vcpu_types.CPU_SIGS)) in err


def test_vcpu_type_overrides_host_cpu(firmware, tmp_path, tool):
    image = firmware[FIRMWARE["AmdSev"]]
    spec = _write(tmp_path / "g.toml", spec_text("hostcpu", "sev-snp", image, cpu="host",
                                                 measurement='vcpu-type = "EPYC-Genoa"'))
    att = compile_plan(spec).attestation
    expected = subprocess.run([tool("sev-snp-measure"), "--mode", "snp", "--vcpus", "1",
                               "--vcpu-type", "EPYC-Genoa", "--ovmf", image],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert att["launch-digest"] == expected and att["inputs"]["vcpu-type"] == "EPYC-Genoa"


def test_missing_library_is_a_located_error(firmware, tmp_path, monkeypatch):
    import cgsc.measure
    monkeypatch.setitem(sys.modules, "cgsc.measure.amd_digest", None)   # import fails
    monkeypatch.delattr(cgsc.measure, "amd_digest", raising=False)
    spec = _write(tmp_path / "g.toml", spec_text(
        "nolib", "sev-snp", firmware[FIRMWARE["AmdSev"]], cpu="EPYC-v4"))
    err = _errors(spec)
    assert "measurement: sev-snp-measure is not installed" in err and "[CGS-MEASURE-004]" in err


def test_a_plain_build_never_imports_the_measuring_library():
    code = ("import sys; from cgsc.pipeline.build import build; "
            f"build([{os.path.join(ROOT, 'examples', 'sev-snp.toml')!r}]); "
            "print(sorted(m for m in sys.modules if m.startswith(('sevsnpmeasure', 'cryptography', 'cgsc.measure.stage', 'cgsc.measure.amd_digest'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- the manifest's attestation object and its schema --------------------------------------

def test_attestation_is_on_the_plan_and_in_the_manifest_and_fits_its_schema(firmware, tmp_path):
    import jsonschema
    image = firmware[FIRMWARE["AmdSev"]]
    (tmp_path / "k").write_bytes(b"k" * 100)
    host_data = bytes(range(32))
    spec = _write(tmp_path / "g.toml", spec_text(
        "att", "sev-snp", image, vcpus=2, cpu="EPYC-v4", kernel="k", cmdline="quiet",
        extra=f"host-data = {_toml(base64.b64encode(host_data).decode())}"))
    out = tmp_path / "out"
    code, _o, err = run_cli("build", spec, "-o", str(out))
    assert code == 0, err
    manifest = json.loads((out / "att" / "manifest.json").read_text())
    att = manifest["attestation"]
    assert att == compile_plan(spec).attestation
    code, schema_text, err = run_cli("schema", "--attestation")
    assert code == 0, err
    schema = json.loads(schema_text)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(att, schema)
    assert att["report"]["host_data"] == host_data.hex()
    assert att["report"]["policy"] == "0x30000"
    assert att["report"]["measurement"] == att["launch-digest"]
    kernel = next(f for f in att["files"] if f["role"] == "kernel")
    assert kernel == {"role": "kernel", "path": "/var/lib/guests/vmlinuz", "measured-copy": "k",
                      "sha256": hashlib.sha256(b"k" * 100).hexdigest(), "size": 100}
    assert att["inputs"]["cmdline"] == "quiet" and att["inputs"]["vcpus"] == 2
    assert att["inputs"]["measured-by"]["library"] == "sev-snp-measure"


def test_s390_pv_records_the_sealed_image(tmp_path):
    image = tmp_path / "se.img"
    image.write_bytes(b"sealed")
    spec = _write(tmp_path / "pv.toml", "\n".join([
        "[guest]", 'name = "pv"', 'arch = "s390x"', "memory = 1024", "[kernel]",
        'image = "/var/lib/guests/se.img"', "[confidential.s390-pv]", "[measurement]",
        f"kernel = {_toml(str(image))}", ""]))
    att = compile_plan(spec).attestation
    assert att["report"] == {"se-image-sha256": hashlib.sha256(b"sealed").hexdigest()}
    assert att["launch-digest"] is None


# -- determinism ---------------------------------------------------------------------------

def test_same_spec_same_bytes_from_any_working_directory(firmware, tmp_path, tool):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "k").write_bytes(b"kernel")
    image = firmware[FIRMWARE["AmdSev"]]
    spec = _write(spec_dir / "g.toml", spec_text("det", "sev-snp", image, cpu="EPYC-v4",
                                                 kernel="k", cmdline="x"))
    outputs = []
    for cwd in (tmp_path, spec_dir, "/"):
        out = tmp_path / f"out{len(outputs)}"
        result = subprocess.run([tool("cgsc"), "build", spec, "-o", str(out)], cwd=cwd,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        outputs.append({p.name: p.read_bytes() for p in (out / "det").iterdir()})
    assert outputs[0] == outputs[1] == outputs[2]


# -- explain and check ---------------------------------------------------------------------

def _vector_spec(firmware, tmp_path, kernel=b""):
    (tmp_path / "k").write_bytes(kernel)
    (tmp_path / "i").write_bytes(b"")
    return _write(tmp_path / "g.toml", spec_text(
        "vec", "sev-snp", firmware[FIRMWARE["AmdSev"]],
        cpu="EPYC-v4", kernel="k", initrd="i", cmdline="console=ttyS0 loglevel=7"))


def test_explain_shows_digest_inputs_verifier_fields_and_limits(firmware, tmp_path):
    spec = _vector_spec(firmware, tmp_path)
    digest = SUFFIX_VECTORS[0]["digest"]    # the same inputs as the first vector
    code, text, err = run_cli("explain", spec)
    assert code == 0, err
    section = text.split("\nattestation\n")[1].split("\n\n")[0]
    assert f"launch digest (sha384): {digest}" in section
    assert "vcpu-type       EPYC-v4" in section and "kernel-hashes   true" in section
    assert f"measurement = {digest}" in section and "policy = 0x30000" in section
    assert "libvirt cannot check files" in section
    code, js, err = run_cli("explain", "--format", "json", spec)
    assert json.loads(js)["attestation"] == compile_plan(spec).attestation


def test_explain_says_when_nothing_is_predicted():
    code, text, _err = run_cli("explain", os.path.join(ROOT, "examples", "sev-snp.toml"))
    assert code == 0 and "no [measurement]: cgsc predicts nothing" in text


def test_check_names_the_changed_launch_measurement(firmware, tmp_path, tool):
    spec = _vector_spec(firmware, tmp_path)
    out = tmp_path / "out"
    assert run_cli("build", spec, "-o", str(out))[0] == 0
    old = SUFFIX_VECTORS[0]["digest"]
    (tmp_path / "k").write_bytes(b"a new kernel")
    new = subprocess.run([tool("sev-snp-measure"), "--mode", "snp", "--vcpus", "1", "--vcpu-type",
                          "EPYC-v4", "--ovmf", firmware[FIRMWARE["AmdSev"]],
                          "--kernel", str(tmp_path / "k"), "--initrd", str(tmp_path / "i"),
                          "--append", "console=ttyS0 loglevel=7"],
                         capture_output=True, text=True, check=True).stdout.strip()
    code, stdout, _err = run_cli("check", spec, "-o", str(out))
    assert code == 1
    assert f"launch measurement changed: {old} → {new}\n" in stdout
    assert (f"  kernel /var/lib/guests/vmlinuz: sha256 {hashlib.sha256(b'').hexdigest()} → "
            f"{hashlib.sha256(b'a new kernel').hexdigest()}\n") in stdout


def test_relative_paths_are_relative_to_the_file_that_names_them(firmware, tmp_path):
    """A base spec's [measurement] paths resolve from the base's directory, whatever the
    working directory or the child spec's location."""
    (tmp_path / ".git").mkdir()   # one repository: extends may reach ../bases (CGS-LOAD-007)
    base_dir = tmp_path / "bases"
    base_dir.mkdir()
    (base_dir / "fw.bin").write_bytes(
        open(firmware[FIRMWARE["OvmfX64"]], "rb").read())
    base = spec_text("base", "sev-snp", "fw.bin", cpu="EPYC-v4")
    (base_dir / "base.toml").write_text(base)
    child = tmp_path / "child" / "guest.toml"
    child.parent.mkdir()
    child.write_text('extends = "../bases/base.toml"\n[guest]\nname = "child"\n')
    att = compile_plan(str(child)).attestation
    assert att["launch-digest"] == SUFFIX_VECTORS[5]["digest"]   # the OvmfX64 vector
    assert att["files"][0]["measured-copy"] == "fw.bin"


def test_all_file_free_errors_come_with_the_other_cross_field_errors(tmp_path):
    spec = _write(tmp_path / "g.toml", spec_text(
        "many", "sev-snp", "missing.fd", cpu="host",
        extra='id-block = "AAAA"', measurement='id-key = "nokey.pem"'))
    err = _errors(spec)
    for rule in ("CGS-MEASURE-013", "CGS-MEASURE-030", "CGS-SNP-003"):
        assert f"[{rule}]" in err, err
    assert "[CGS-MEASURE-001]" not in err   # files are read only once the spec is consistent


def test_every_mechanisms_attestation_fits_the_published_schema(firmware, tmp_path):
    import jsonschema
    schema = json.loads(run_cli("schema", "--attestation")[1])
    amd_fw = firmware[FIRMWARE["AmdSev"]]
    (tmp_path / "k").write_bytes(b"kernel")
    (tmp_path / "tdvf.fd").write_bytes(fw.tdvf_image())
    (tmp_path / "se.img").write_bytes(b"sealed")
    specs = [spec_text(f"amd-{m}", m, amd_fw, cpu="EPYC-Rome", vcpus=3, kernel="k", cmdline="q")
             for m in ("sev", "sev-es", "sev-snp")]
    specs.append("\n".join(["[guest]", 'name = "td"', "memory = 2048", "[firmware]",
                            'code = "/fw/OVMF.inteltdx.fd"', "[kernel]", 'image = "/k/vmlinuz"',
                            "[confidential.tdx]", "[measurement]", 'firmware = "tdvf.fd"',
                            'kernel = "k"', ""]))
    specs.append("\n".join(["[guest]", 'name = "pv"', 'arch = "s390x"', "memory = 1024",
                            "[kernel]", 'image = "/k/se.img"', "[confidential.s390-pv]",
                            "[measurement]", 'kernel = "se.img"', ""]))
    mechanisms = set()
    for i, text in enumerate(specs):
        att = compile_plan(_write(tmp_path / f"s{i}.toml", text)).attestation
        jsonschema.validate(att, schema)
        mechanisms.add(att["mechanism"])
    assert mechanisms == {"sev", "sev-es", "sev-snp", "tdx", "s390-pv"}


def test_measurement_rules_come_with_schema_errors_too(tmp_path):
    text = spec_text("both", "sev-snp", "fw.fd", cpu="host").replace("memory = 1024", "colour = 1\nmemory = 1024")
    err = _errors(_write(tmp_path / "g.toml", text))
    assert "[CGS-SCHEMA-001]" in err and "[CGS-MEASURE-013]" in err


def test_a_spec_reached_through_a_symlink_then_dotdot_measures_its_own_files(firmware, tmp_path,
                                                                             monkeypatch):
    """`link/../../specs/g.toml`, `link` a symlink to a directory elsewhere: the kernel
    opens the spec where the symlink leads (as `extends` resolves its bases); its relative
    boot files are the ones beside it, never those of the directory the path names
    lexically (a decoy kernel there), so every spelling gives one measurement."""
    real = tmp_path / "real"
    (real / "deep" / "x").mkdir(parents=True)
    (real / "specs").mkdir()
    (real / "specs" / "k").write_bytes(b"the spec's kernel")
    spec = _write(real / "specs" / "g.toml", spec_text(
        "g", "sev-snp", firmware[FIRMWARE["AmdSev"]], cpu="EPYC-v4", kernel="k", cmdline="x"))
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "k").write_bytes(b"a decoy kernel")   # w/link/../../specs, lexically
    (tmp_path / "w").mkdir()
    os.symlink(os.path.join("..", "real", "deep", "x"), tmp_path / "w" / "link")
    monkeypatch.chdir(tmp_path / "w")
    spelled = os.path.join("link", "..", "..", "specs", "g.toml")
    assert os.path.samefile(spelled, spec)
    assert compile_plan(spelled).attestation == compile_plan(spec).attestation

"""A measured fleet gives every guest exactly what measuring it alone gives.

In a fleet each boot file is read once and the work that depends only on a firmware image
is done once (core/filecache.py, measure/amd_digest.py); these tests build mixed fleets
(SEV, SEV-ES, SEV-SNP with and without kernel-hashes and ID blocks, TDX in both page
orders; firmware, kernels and initrds shared and not) in one process and with forked
workers, and compare every byte of every guest's artifacts with the guest built alone,
every AMD digest with sev-snp-measure's calc_launch_digest run on the files (what cgsc
did per guest before) and a sample with the sev-snp-measure command, every MRTD with the
MRTD of the image computed on its own.
"""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest
from attestation_guests import _p384_key, examples
from firmware_data import AMD_SUFFIX, AMDSEV, TDX
from helpers import run_cli
from measure_helpers import toml_str

CPUS = ("EPYC-v4", "EPYC-Milan", "EPYC-Genoa")
KINDS = ("sev", "sev-es", "snp", "snp-unmeasured-kernel", "snp-id", "snp-id-author",
         "tdx-single-pass", "tdx-two-pass")


def _files(directory):
    """{relative path: bytes} of every file under `directory`."""
    out = {}
    for here, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(here, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = fh.read()
    return out


def _mixed_fleet(directory, firmware, count=48, seed=26):
    """(spec paths, {spec: what it measures}) of a fleet of every kind, its boot files
    partly shared (two AMD images, two TDX images, three kernels and two initrds shared,
    the rest each guest's own)."""
    rng = random.Random(seed)
    shared = {}
    for name, size in (("kernel-a", 40000), ("kernel-b", 1 << 20), ("kernel-c", 3),
                       ("initrd-a", 70000), ("initrd-b", 5)):
        shared[name] = os.path.join(directory, name)
        with open(shared[name], "wb") as fh:
            fh.write(rng.randbytes(size))
    for key in ("id.pem", "author.pem"):
        _p384_key(os.path.join(directory, key))
    specs, facts = [], {}
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        name = f"guest-{i:02d}"
        vcpus = rng.randint(1, 6)
        if kind.startswith("tdx"):
            image = firmware[rng.choice((TDX, AMDSEV))]   # OVMF.amdsev.fd has TDVF metadata too
            order = kind[4:]
            text = "\n".join(["[guest]", f"name = {toml_str(name)}", "memory = 2048",
                              f"vcpus = {vcpus}", "[firmware]",
                              'code = "/usr/share/ovmf/OVMF.inteltdx.fd"', "[confidential.tdx]",
                              "[measurement]", f"firmware = {toml_str(image)}",
                              f"tdx-page-order = {toml_str(order)}", ""])
            facts[name] = dict(kind=kind, firmware=image, order=order)
        else:
            mechanism = {"sev": "sev", "sev-es": "sev-es"}.get(kind, "sev-snp")
            hashes = kind != "snp-unmeasured-kernel"
            image = firmware[rng.choice((AMDSEV, AMD_SUFFIX))]
            if rng.random() < 0.6:
                kernel = shared[rng.choice(("kernel-a", "kernel-b", "kernel-c"))]
            else:
                kernel = os.path.join(directory, f"{name}.vmlinuz")
                with open(kernel, "wb") as fh:
                    fh.write(rng.randbytes(rng.randint(0, 50000)))
            initrd = rng.choice((None, shared["initrd-a"], shared["initrd-b"]))
            cmdline = rng.choice((None, "", "console=ttyS0", "root=/dev/vda1 ro quiet"))
            cpu = rng.choice(CPUS)
            lines = ["[guest]", f"name = {toml_str(name)}", "memory = 1024", f"vcpus = {vcpus}",
                     f"cpu = {toml_str(cpu)}", "[firmware]",
                     'code = "/usr/share/ovmf/OVMF.amdsev.fd"', "[kernel]",
                     'image = "/var/lib/guests/vmlinuz"']
            if initrd:
                lines.append('initrd = "/var/lib/guests/initrd.img"')
            if cmdline is not None:
                lines.append(f"cmdline = {toml_str(cmdline)}")
            lines += [f"[confidential.{mechanism}]", "cbitpos = 51", "reduced-phys-bits = 1",
                      f"kernel-hashes = {'true' if hashes else 'false'}"]
            if mechanism == "sev-es":
                lines.append('legacy-vm-type = "off"')
            lines += ["[measurement]", f"firmware = {toml_str(image)}",
                      f"kernel = {toml_str(kernel)}"]
            if initrd:
                lines.append(f"initrd = {toml_str(initrd)}")
            if kind.startswith("snp-id"):
                lines += ['id-key = "id.pem"', f'guest-svn = {i}']
                if kind == "snp-id-author":
                    lines.append('author-key = "author.pem"')
            if not hashes:
                lines += ["[waive]", '"CGS-MEASURE-017" = "a test of the digest alone"']
            text = "\n".join(lines) + "\n"
            facts[name] = dict(kind=kind, mechanism=mechanism, firmware=image, vcpus=vcpus,
                               cpu=cpu, kernel=kernel if hashes else None,
                               initrd=initrd if hashes else None,
                               cmdline=cmdline if hashes else None)
        path = os.path.join(directory, f"{name}.toml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        specs.append(path)
    return specs, facts


def _library_digest(fact) -> str:
    """What cgsc computed per guest before: the library's calc_launch_digest on the files."""
    from sevsnpmeasure import guest, vcpu_types
    from sevsnpmeasure.sev_mode import SevMode
    from sevsnpmeasure.vmm_types import VMMType
    mode = {"sev": SevMode.SEV, "sev-es": SevMode.SEV_ES, "sev-snp": SevMode.SEV_SNP}
    mechanism = fact["mechanism"]
    return guest.calc_launch_digest(
        mode[mechanism], fact["vcpus"], vcpu_types.CPU_SIGS[fact["cpu"]], fact["firmware"],
        fact["kernel"], fact["initrd"], fact["cmdline"], 0x1 if mechanism == "sev-snp" else 0,
        vmm_type=VMMType.QEMU).hex()


def _mrtd(fact) -> str:
    from cgsc.measure import mrtd, tdvf
    with open(fact["firmware"], "rb") as fh:
        image = fh.read()
    return mrtd.mrtd(image, tdvf.parse(image), fact["order"]).hex()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, firmware):
    directory = str(tmp_path_factory.mktemp("mixed"))
    specs, facts = _mixed_fleet(directory, firmware)
    alone = os.path.join(directory, "alone")
    for spec in specs:
        code, _o, err = run_cli("build", spec, "-o", alone)
        assert code == 0, err
    return directory, specs, facts, alone


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_mixed_fleet_builds_every_guest_as_it_builds_alone(mixed, jobs):
    directory, specs, facts, alone = mixed
    fleet = os.path.join(directory, f"fleet-{jobs}")
    code, _o, err = run_cli("build", "-j", jobs, *specs, "-o", fleet)
    assert code == 0, err
    built = _files(fleet)
    assert built == _files(alone)
    assert len({k.split("/")[0] for k in built}) == len(specs)
    kinds = {f["kind"] for f in facts.values()}
    assert kinds == set(KINDS)


def test_every_digest_is_the_librarys_for_the_guest_alone(mixed):
    _directory, _specs, facts, alone = mixed
    checked = 0
    for name, fact in facts.items():
        with open(os.path.join(alone, name, "manifest.json"), encoding="utf-8") as fh:
            att = json.load(fh)["attestation"]
        expected = _mrtd(fact) if fact["kind"].startswith("tdx") else _library_digest(fact)
        assert att["launch-digest"] == expected, name
        checked += 1
    assert checked == len(facts)


def test_a_sample_agrees_with_the_sev_snp_measure_command(mixed, tool):
    exe = tool("sev-snp-measure")
    _directory, _specs, facts, alone = mixed
    sample = [n for n, f in sorted(facts.items()) if "mechanism" in f][:9]
    assert {facts[n]["mechanism"] for n in sample} == {"sev", "sev-es", "sev-snp"}
    for name in sample:
        fact = facts[name]
        argv = [exe, "--mode", {"sev": "sev", "sev-es": "seves", "sev-snp": "snp"}[fact["mechanism"]],
                "--ovmf", fact["firmware"], "--output-format", "hex"]
        if fact["mechanism"] != "sev":
            argv += ["--vcpus", str(fact["vcpus"]), "--vcpu-type", fact["cpu"]]
        if fact["mechanism"] == "sev-snp":
            argv += ["--guest-features", "0x1"]
        if fact["kernel"]:
            argv += ["--kernel", fact["kernel"], "--append", fact["cmdline"] or ""]
            if fact["initrd"]:
                argv += ["--initrd", fact["initrd"]]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        with open(os.path.join(alone, name, "manifest.json"), encoding="utf-8") as fh:
            assert json.load(fh)["attestation"]["launch-digest"] == result.stdout.strip(), name


def test_the_measured_examples_build_alike_in_a_fleet(tmp_path, firmware):
    """The project's SEV-SNP and TDX examples, measured (attestation_guests.examples builds
    each alone), and again all of them as one fleet."""
    built = examples(str(tmp_path), firmware)
    assert built
    copies = sorted({os.path.join(str(tmp_path), os.path.basename(os.path.dirname(e)),
                                  os.path.basename(e)) for e, _out in built})
    code, _o, err = run_cli("build", *copies, "-o", str(tmp_path / "fleet"))
    assert code == 0, err
    for _example, out in built:
        name = os.path.basename(out)
        assert _files(tmp_path / "fleet" / name) == _files(out), name


def test_each_distinct_file_is_read_once_per_build(mixed, monkeypatch):
    """However many guests share a firmware, kernel, initrd or key, the build reads and
    hashes it once (the firmware's pages, its TDVF sections and MRTD per page order are
    computed once too: they need its bytes, which are not read again)."""
    from cgsc.core import filecache
    directory, specs, facts, _alone = mixed
    reads = []
    real = filecache.read_into

    def counted(fd, expected, keep, *stop):
        got = real(fd, expected, keep, *stop)
        reads.append(got.state.hexdigest())
        return got
    monkeypatch.setattr(filecache, "read_into", counted)
    code, _o, err = run_cli("build", "-j", "1", *specs, "-o", os.path.join(directory, "counted"))
    assert code == 0, err
    read_by_guests = set()
    for name in facts:
        with open(os.path.join(directory, "counted", name, "manifest.json"), encoding="utf-8") as fh:
            read_by_guests |= {f["sha256"] for f in json.load(fh)["attestation"]["files"]}
    keys = 2   # id.pem and author.pem (read, never listed)
    assert len(reads) == len(set(reads)) == len(read_by_guests) + keys


@pytest.mark.parametrize("image", [AMDSEV, AMD_SUFFIX])
def test_the_firmware_pages_are_the_librarys_own_ovmf_hash(firmware, image):
    """What every SEV-SNP guest of an image starts from is calc_snp_ovmf_hash's digest of
    it (the seed calc_launch_digest takes as snp_ovmf_hash_str)."""
    from cgsc.measure import amd_digest
    from sevsnpmeasure import guest
    with open(firmware[image], "rb") as fh:
        data = fh.read()
    parsed = amd_digest.firmware(data)
    assert parsed.ovmf is not None and parsed.broken is None
    assert amd_digest.snp_start(parsed.ovmf, data).pages == guest.calc_snp_ovmf_hash(firmware[image])

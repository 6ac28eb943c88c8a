"""QEMU 11.1 (trixie-backports, in the trixie root) runs every command line cgsc writes for
that host (--host debian-13-backports: machine pinned to what 11.1 resolves, monitors as
-object monitor-qmp), exactly as written with `-accel kvm`, and stops only where this
machine, not the command line, is the problem: no SEV, SEV-SNP or TDX in its KVM, no KVM for
ppc64, no s390-pv-guest in an x86 host's s390x binary. Every line QEMU writes to stderr must
be one of those refusals: a parse error or any warning (a deprecated option included) fails.
A misspelled property in the same harness fails differently, so the check can fail.

The release's own facts are read from it too: `qom-list-properties` over QMP (the
properties exist per instance, `-object tdx-guest,help` lists none) and its rendered QAPI
reference and deprecated.rst, from which schema/qemu-since.json is derived."""

from __future__ import annotations

import glob
import json
import os
import re

import pytest
from derive_qemu_since import derive_release, dumps
from helpers import ROOT, VALID_SPECS, rel
from qmp import ask
from test_qemu import materialize
from trixie_root import backports_plan, run_qemu

pytestmark = pytest.mark.stack   # runs programs of the trixie root from outside it

SPECS = VALID_SPECS + sorted(glob.glob(os.path.join(ROOT, "examples", "kubevirt", "*.toml")))

# What QEMU 11.1 says when this machine cannot host the mechanism (an AMD host without SEV in
# KVM, no TDX, x86 only); QEMU sources: target/i386/sev.c, target/i386/kvm/kvm.c
# (vm-type checks), accel/kvm/kvm-all.c.
REFUSALS = {
    "sev": (r"-accel kvm: sev_common_kvm_init: cbitpos check failed, host '\d+' requested '\d+'",
            r"-accel kvm: sev_common_kvm_init: Failed to open /dev/sev '.*'",
            r"-accel kvm: failed to initialize kvm: Operation not permitted"),
    "sev-snp": (r"-accel kvm: vm-type SEV-SNP not supported by KVM",),
    "tdx": (r"-accel kvm: vm-type TDX not supported by KVM",),
    # the ppc64 binary on an x86 host has no KVM: refused after pef-guest was created
    "pef": (r"-accel kvm: invalid accelerator kvm",),
    # s390-pv-guest is built only into an s390x host's QEMU (a KVM-only object)
    "s390-pv": (r"invalid object type: s390-pv-guest",),
}
REFUSALS["sev-es"] = REFUSALS["sev"]
# KVM's advice when the guest has more vCPUs than this machine has CPUs (accel/kvm/kvm-all.c
# kvm_init): about the test machine, not the command line; allowed only when that is so.
CAPACITY = re.compile(r"-accel kvm: warning: Number of (SMP|hotpluggable) cpus requested "
                      r"\((\d+)\) exceeds the recommended cpus supported by KVM \((\d+)\)")


def unexplained(stderr: str, mechanism: str, binary: str, vcpus: int) -> list:
    """The stderr lines that are not this machine's refusal of the mechanism."""
    out = []
    for line in stderr.strip().splitlines():
        text = line[len(binary) + 2:] if line.startswith(binary + ": ") else "(no prefix) " + line
        cap = CAPACITY.fullmatch(text)
        if cap and int(cap.group(2)) == vcpus and int(cap.group(3)) < vcpus:
            continue
        if not any(re.fullmatch(r, text) for r in REFUSALS[mechanism]):
            out.append(line)
    return out


def root_argv(plan) -> list:
    """The argv as written, but for a custom emulator path: the root's binary of that name."""
    return [os.path.basename(plan.emulator)] + plan.argv()[1:]


@pytest.mark.parametrize("spec", SPECS, ids=rel)
def test_qemu_11_1_runs_the_command_line_and_stops_only_at_the_host(spec, trixie, tmp_path):
    plan = backports_plan(spec, str(tmp_path / "r"))
    materialize(plan)
    argv = root_argv(plan)
    assert "-mon" not in argv and "debug-threads=on" not in " ".join(argv), "11.1's forms"
    result = run_qemu(trixie, argv)
    assert result.returncode == 1, result.stderr
    binary = argv[0]
    assert result.stderr.strip(), "QEMU stopped without saying why"
    assert unexplained(result.stderr, plan.confidential.mechanism, binary, plan.vcpus) == [], \
        result.stderr


def test_every_mechanism_and_architecture_is_covered():
    from helpers import compile_plan
    assert {compile_plan(s).confidential.mechanism for s in SPECS} == set(REFUSALS)


def _spec(name):
    return next(s for s in SPECS if s.endswith(name))


def _edit_object(argv, edit):
    i = argv.index("-object") + 1
    if argv[i].startswith("{"):
        obj = json.loads(argv[i])
        obj.update(edit)
        argv[i] = json.dumps(obj)
    else:
        argv[i] += "".join(f",{k}={v}" for k, v in edit.items())
    return argv


@pytest.mark.parametrize("name,edit,error", [
    ("examples/sev-snp.toml", {"secure-tsc": "on"}, "Invalid parameter 'secure-tsc'"),
    ("examples/sev.toml", {"bogus": "1"}, "Invalid parameter 'bogus'"),
    ("examples/tdx.toml", {"mrconfigid": "YWJj"}, None),   # see below
    ("examples/tdx.toml", {"bogus": 1}, "Parameter 'bogus' is unexpected"),
    ("examples/pef.toml", {"bogus": "1"}, "Invalid parameter 'bogus'"),
], ids=["snp-secure-tsc", "sev-bogus", "tdx-short-mrconfigid", "tdx-bogus", "pef-bogus"])
def test_a_wrong_object_property_fails_otherwise(name, edit, error, trixie, tmp_path):
    """Negative control. SNP's secure-tsc is what QEMU 11.1.3 lacks despite the mailing
    lists. A 3-byte mrconfigid parses (QEMU checks the length only when the first vCPU is
    created, under a TDX KVM; cgsc's CGS-TDX-004 refuses it) and fails as a host refusal: the
    harness tells the two kinds apart."""
    plan = backports_plan(_spec(name), str(tmp_path / "r"))
    materialize(plan)
    result = run_qemu(trixie, _edit_object(root_argv(plan), edit))
    assert result.returncode == 1
    left = unexplained(result.stderr, plan.confidential.mechanism, root_argv(plan)[0], plan.vcpus)
    if error is None:
        assert left == [], result.stderr
    else:
        assert any(error in line for line in left), result.stderr


def test_a_misspelled_monitor_property_is_refused(trixie, tmp_path):
    plan = backports_plan(_spec("examples/sev.toml"), str(tmp_path / "r"))
    materialize(plan)
    argv = root_argv(plan)
    i = argv.index("monitor-qmp,id=mon-qmp0,chardev=qmp0")
    argv[i] += ",prety=on"
    result = run_qemu(trixie, argv)
    assert "Invalid parameter 'prety'" in result.stderr
    assert unexplained(result.stderr, "sev", argv[0], plan.vcpus)


def _qom_properties(trixie, binary, types):
    answer = ask(trixie.argv([binary, "-S", "-display", "none", "-nodefaults", "-machine",
                              "none", "-accel", "tcg", "-qmp", "stdio"]),
                 [{"execute": "qom-list-properties", "arguments": {"typename": t}}
                  for t in types])
    assert answer.stderr == "", answer.stderr
    lists = [a["return"] for a in answer.replies if isinstance(a.get("return"), list)]
    assert len(lists) == len(types), answer.said
    return {t: {p["name"] for p in props} - {"type"} for t, props in zip(types, lists)}


def test_qemu_11_1_has_every_property_the_table_lists_and_cgsc_writes(trixie):
    """qom-list-properties of the release itself: the table (derived from its reference)
    names exactly the properties the objects have, and every property any spec writes is
    one of them (SNP has no secure-tsc)."""
    with open(os.path.join(ROOT, "schema", "qemu-since.json"), encoding="utf-8") as fh:
        table = json.load(fh)["objects"]
    x86 = [t for t in table if t not in ("pef-guest", "s390-pv-guest")]
    have = _qom_properties(trixie, "qemu-system-x86_64", x86)
    for qom_type in x86:
        assert have[qom_type] == set(table[qom_type]["properties"]), qom_type
    assert "secure-tsc" not in have["sev-snp-guest"]
    for spec in SPECS:
        obj = backports_plan(spec).confidential.object
        assert {k for k, _v in obj.props} <= have.get(obj.qom_type, set()), rel(spec)


def test_the_since_table_is_what_qemu_11_1_says(trixie):
    """schema/qemu-since.json is derived from the release's rendered QAPI reference and
    deprecated.rst (Debian ships both in qemu-system-common)."""
    doc = os.path.join(trixie.root, "usr/share/doc/qemu-system-common")
    derived = dumps(derive_release(os.path.join(doc, "interop/qemu-qmp-ref.html"),
                                   os.path.join(doc, "about/deprecated.html")))
    with open(os.path.join(ROOT, "schema", "qemu-since.json"), encoding="utf-8") as fh:
        assert fh.read() == derived, "re-derive it (tests/derive_qemu_since.py, docstring)"


def test_the_backports_profile_pins_what_qemu_11_1_resolves(trixie):
    from cgsc.host.profile import load
    profile = load("debian-13-backports")
    for arch, qemu in profile["qemu"].items():
        binary = f"qemu-system-{arch}"
        version = trixie.run([binary, "-version"]).stdout.split()[3]
        assert version == qemu["version"]
        machines = trixie.run([binary, "-machine", "help"]).stdout
        for alias, pinned in qemu["machines"].items():
            assert re.search(rf"^{re.escape(alias)}\s.*\(alias of {re.escape(pinned)}\)$",
                             machines, re.M), (arch, alias)


def test_older_profiles_keep_the_forms_their_qemu_has():
    """-mon and debug-threads stay for QEMU before 11.1 / 11.0 (QEMU 10.0 and 7.2 have no
    monitor-qmp object: tests/targets/test_qemu_10.py runs them), and a build for 11.1
    needs 11.1."""
    from helpers import run_cli
    for host, mon in (("debian-13", True), ("debian-12", True), ("debian-13-backports", False)):
        code, out, _err = run_cli("build", "--host", host, "--stdout", "-t", "shell",
                                  _spec("examples/sev.toml"))
        assert code == 0
        assert ("-mon chardev=stop0,mode=control" in out) == mon, host
        assert ("-object monitor-qmp,id=mon-stop0,chardev=stop0" in out) == (not mon), host
        assert ("debug-threads=on" in out) == mon, host

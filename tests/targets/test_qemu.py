"""QEMU is the consumer: the installed QEMU types every -object property (asked over QMP),
and Debian's real QEMU 7.2 parses every line whose object it has."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import Predates
from helpers import VALID_SPECS, compile_plan, rel, run_qemu_quit
from qemu_schema import introspect

from cgsc.host.compat import qemu_since
from cgsc.lower.lowering import lower
from cgsc.spec.model import normalize
from cgsc.lower.qemu import QemuObject
from cgsc.spec.source import load

CGS_READY_ABORT = "Assertion `machine->cgs->ready' failed"   # 7.2, stage F (qemu.md §10)


def _props(obj: QemuObject):
    return list(obj.props)


@pytest.mark.parametrize("spec", VALID_SPECS, ids=rel)
def test_every_object_property_exists_in_the_installed_qemu_with_its_type(spec, qapi):
    obj = compile_plan(spec).confidential.object
    try:
        members = qapi.object_members(obj.qom_type)
    except Predates as exc:
        pytest.skip(f"{exc}; a newer QEMU checks it (Debian 13 with trixie-backports)")
    if members is None:  # pef-guest, s390-pv-guest: no properties at all
        assert _props(obj) == []
        return
    installed = qapi.schema(obj.qom_type)
    newer = []   # properties the since table (checked against every installed QEMU) dates later
    for key, value in _props(obj):
        since = qemu_since()[obj.qom_type]["properties"].get(key, "0")
        if key not in members and tuple(map(int, since.split("."))) > installed.version:
            newer.append(f"{key} ({since})")
            continue
        assert key in members, f"{obj.qom_type} has no property {key!r} in the installed QEMU"
        assert qapi.accepts(obj.qom_type, members[key], value), \
            f"{key}={value!r} is not a {members[key]}"
    if newer:
        pytest.skip(f"the installed QEMU {installed.version_text} predates {', '.join(newer)}; "
                    "the other properties were checked, a newer QEMU checks these")


def test_the_qapi_check_can_fail(qapi):
    members = qapi.object_members("sev-guest")
    assert "certs-path" not in members            # removed upstream (AMDESE/AMDSEV#229)
    assert members["cbitpos"] == "uint32"
    assert not qapi.accepts("sev-guest", members["cbitpos"], "forty-seven")
    assert not qapi.accepts("sev-guest", members["cbitpos"], 1 << 32)
    assert not qapi.accepts("sev-guest", members["policy"], -1)
    assert qapi.accepts("sev-guest", members["legacy-vm-type"], "auto") if \
        "legacy-vm-type" in members else True
    assert not qapi.accepts("sev-guest", members.get("legacy-vm-type", "bool"), "sometimes")
    schema = qapi.schema("tdx-guest")
    if schema.has("tdx-guest"):
        qgs = schema.object_members("tdx-guest")["quote-generation-socket"]
        assert schema.accepts(qgs, {"type": "vsock", "cid": "2", "port": "4050"})
        assert not schema.accepts(qgs, {"type": "carrier-pigeon"})
        assert not schema.accepts(qgs, {"type": "vsock", "cid": "2"})   # port is required


# -- real QEMU ---------------------------------------------------------------------------

def relocated(spec: str, root: str):
    """The spec's plan with every host path moved under `root` (characters kept), so
    QEMU can open what it opens before board init."""
    source = load(spec)
    g = normalize(source.data)
    move = (lambda p: root + p if p else p)
    g = g._replace( firmware_code=move(g.firmware_code), firmware_vars=move(g.firmware_vars),
        kernel_image=move(g.kernel_image), kernel_initrd=move(g.kernel_initrd),
        disks=tuple(d._replace(path=move(d.path)) for d in g.disks),
        console_path=move(g.console_path), qmp_socket=move(g.qmp_socket),
        runtime_dir=move(g.runtime_dir))
    return lower(g, spec, [])


def materialize(plan) -> None:
    def touch(path, size):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(size)
    for path in (plan.firmware.code, plan.firmware.vars, plan.kernel.image, plan.kernel.initrd):
        if path:
            touch(path, 4 << 20)
    for d in plan.disks:
        touch(d.path, 64 << 20)
        if d.format == "qcow2":
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", d.path, "64M"], check=True)
    for path in (plan.console.path, plan.qmp_socket):
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
    for fifo in plan.stop_fifos():  # what the script and the unit create before QEMU starts
        os.makedirs(os.path.dirname(fifo), exist_ok=True)
        os.mkfifo(fifo, 0o600)


def tcg_argv(plan, find=os.path.basename):
    """The plan's argv for a TCG-only host: Debian's binary instead of a custom emulator path,
    `-accel tcg` for `-accel kvm` (qemu.md §11), and no `-cpu host` where that model only
    exists under KVM (ppc64)."""
    argv = [find(os.path.basename(plan.emulator))] + plan.argv()[1:]
    i = argv.index("-accel")
    argv[i + 1] = "tcg"
    if plan.arch == "ppc64" and plan.cpu == "host":
        i = argv.index("-cpu")
        del argv[i:i + 2]
    return argv


def run_qemu(argv, preconfig: bool) -> subprocess.CompletedProcess:
    return run_qemu_quit(argv, "-preconfig" if preconfig else "-S")


def _binary_has(find, plan) -> bool:
    binary = find(os.path.basename(plan.emulator))
    result = subprocess.run([binary, "-object", "help"], capture_output=True, text=True)
    return plan.confidential.object.qom_type in result.stdout.split()


def _v72_missing(qemu72, plan):
    """Properties this object uses that QEMU 7.2 does not know (version-gated, e.g.
    legacy-vm-type), in QEMU 7.2's own words (its QMP introspection)."""
    obj = plan.confidential.object
    old = introspect(qemu72(os.path.basename(plan.emulator)))
    members = (old.object_members(obj.qom_type) or {}) if old.has(obj.qom_type) else {}
    return [k for k, _ in obj.props if k not in members]


QEMU_SPECS = [s for s in VALID_SPECS if compile_plan(s).confidential.object.qom_type
              in ("sev-guest", "pef-guest", "s390-pv-guest")]


@pytest.mark.parametrize("spec", QEMU_SPECS, ids=rel)
def test_real_qemu_7_2_parses_the_command_line(spec, qemu72, tmp_path):
    plan = relocated(spec, str(tmp_path / "r"))
    materialize(plan)
    argv = tcg_argv(plan, qemu72)
    result = run_qemu(argv, preconfig=True)
    missing = _v72_missing(qemu72, plan)
    if not _binary_has(qemu72, plan):
        # s390-pv-guest is not built into a non-s390 host's binary: everything before
        # object creation parsed, and this is the only complaint (qemu.md §10 stage B).
        assert result.returncode == 1
        assert result.stderr.strip() == f"{os.path.basename(plan.emulator)}: invalid object " \
                                        f"type: {plan.confidential.object.qom_type}"
    elif missing:
        assert result.returncode == 1
        assert f"Invalid parameter '{missing[0]}'" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert '"event": "SHUTDOWN"' in result.stdout


@pytest.mark.parametrize("spec", QEMU_SPECS[:1] + [s for s in QEMU_SPECS if "pef" in s][:1], ids=rel)
def test_a_wrong_object_property_is_rejected(spec, qemu72, tmp_path):
    plan = relocated(spec, str(tmp_path / "r"))
    materialize(plan)
    argv = tcg_argv(plan, qemu72)
    i = argv.index("-object") + 1
    argv[i] += ",bogus=1"
    result = run_qemu(argv, preconfig=True)
    assert result.returncode == 1
    assert f"-object {argv[i]}: Invalid parameter 'bogus'" in result.stderr


FULL_START = [s for s in QEMU_SPECS
              if (lambda p: p.confidential.object.qom_type == "sev-guest" and not p.kernel.image
                  and p.vsock_cid is None and all(n.mode == "user" for n in p.nics))(compile_plan(s))]


@pytest.mark.parametrize("spec", FULL_START, ids=rel)
def test_real_qemu_realizes_every_device_and_stops_only_for_missing_sev(spec, qemu72, tmp_path):
    """Without -preconfig QEMU 7.2 creates firmware, drives, devices, chardevs and the
    monitor; under TCG it then aborts on the unready SEV object (qemu.md §10 stage F)."""
    plan = relocated(spec, str(tmp_path / "r"))
    if _v72_missing(qemu72, plan):
        pytest.skip("uses a property QEMU 7.2 does not have")
    materialize(plan)
    result = run_qemu(tcg_argv(plan, qemu72), preconfig=False)
    assert result.returncode == -6 or result.returncode == 134, result.stderr
    assert CGS_READY_ABORT in result.stderr


def test_the_full_start_check_can_fail(qemu72, tmp_path):
    spec = [s for s in FULL_START if s.endswith("examples/sev.toml")][0]
    plan = relocated(spec, str(tmp_path / "r"))
    materialize(plan)
    argv = tcg_argv(plan, qemu72)
    i = argv.index(next(w for w in argv if w.startswith("virtio-blk-pci,")))
    argv[i] += ",bogus=on"
    result = run_qemu(argv, preconfig=False)
    assert result.returncode == 1
    assert "Property 'virtio-blk-pci.bogus' not found" in result.stderr
    assert CGS_READY_ABORT not in result.stderr


def test_full_start_covers_at_least_two_specs():
    assert len(FULL_START) >= 2, FULL_START


def test_qemu_opens_exactly_the_hostile_disk_path(qemu72, tmp_path):
    """QEMU opens -drive files before -preconfig stops: with the image missing, its error
    names the path it tried, which must be the spec's path to the byte (commas undoubled)."""
    spec = [s for s in VALID_SPECS if s.endswith("hostile-values.toml")][0]
    plan = relocated(spec, str(tmp_path / "r"))
    materialize(plan)
    assert run_qemu(tcg_argv(plan, qemu72), preconfig=True).returncode == 0
    os.unlink(plan.disks[0].path)
    result = run_qemu(tcg_argv(plan, qemu72), preconfig=True)
    assert result.returncode == 1
    assert f"Could not open '{plan.disks[0].path}': No such file or directory" in result.stderr

"""libvirt 12.9 (trixie-backports, in the trixie root) takes every domain cgsc writes for that
host (--host debian-13-backports): its test driver defines each one with validation against
its own schema, and its QEMU driver (a libvirtd started in the root's namespace, probing the
root's QEMU 11.1) translates each into a QEMU command line that gives the guest what the
launch script gives it, fact by fact, but for the differences tests/targets/
test_libvirt_qemu_driver.py keeps (KNOWN_DIFFERENCES, justified there) and what this
machine lacks (HOST_LIMITS: no SEV, SEV-SNP or TDX in its KVM, no KVM for ppc64/s390x).

What libvirt's QEMU driver would give QEMU for <launchSecurity> itself (it refuses to
translate SEV, SEV-SNP and TDX without the hardware, so HOST_LIMITS removes the element here)
is shown by test_libvirt_qemuxmlconfdata.py instead, from libvirt's own expected command
lines (its tests/qemuxmlconfdata pairs, in tests/data/libvirt-qemuxmlconfdata; the README
there says which commits, not proven to be the v12.9.0 tag): the same <launchSecurity> gives
the same sev-guest/sev-snp-guest/tdx-guest properties as the launch script, QEMU 11.1 reads
the same values back from both SEV/SNP objects, and libvirt 12.9 formats the same element."""

from __future__ import annotations

import glob
import os

import pytest
from helpers import ROOT, VALID_SPECS, rel
from test_libvirt_qemu_driver import KNOWN_DIFFERENCES, compare, translate
from trixie_root import backports_plan

from cgsc import targets

pytestmark = pytest.mark.stack   # runs programs of the trixie root from outside it

ALL = VALID_SPECS + sorted(glob.glob(os.path.join(ROOT, "examples", "kubevirt", "*.toml")))
SPECS = [s for s in ALL if targets.get("libvirt").unsupported(backports_plan(s)) is None]
URI = "qemu:///system"   # the libvirtd of the root (fixture virsh129, tests/conftest.py)


def domain_xml(plan) -> str:
    (artifact,) = targets.get("libvirt").render(plan)
    return artifact.content


@pytest.mark.parametrize("spec", SPECS, ids=rel)
def test_libvirt_12_9_defines_the_domain_with_validation(spec, trixie, tmp_path):
    path = tmp_path / "domain.xml"
    path.write_text(domain_xml(backports_plan(spec)))
    result = trixie.run(["virsh", "-c", "test:///default", "define", "--validate", str(path)])
    assert result.returncode == 0, result.stderr


def test_the_validation_can_fail(trixie, tmp_path):
    """Negative control: a topology attribute that is no number is refused."""
    spec = next(s for s in SPECS if s.endswith("examples/tdx.toml"))
    xml = domain_xml(backports_plan(spec)).replace("<topology sockets='1'",
                                                   "<topology sockets='one'", 1)
    assert "sockets='one'" in xml
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    result = trixie.run(["virsh", "-c", "test:///default", "define", "--validate", str(path)])
    assert result.returncode != 0 and "failed to validate" in result.stderr, result.stderr


USED = set()


@pytest.mark.parametrize("spec", SPECS, ids=rel)
def test_libvirt_12_9_translates_the_domain_into_the_scripts_command_line(spec, virsh129,
                                                                           tmp_path):
    plan = backports_plan(spec)
    theirs, changes = translate(URI, domain_xml(plan), tmp_path, virsh=virsh129)
    for what, why in changes:
        print(f"{rel(spec)}: translated a copy, {what} changed: {why}")
    USED.update(compare(spec, plan, theirs, changes))


def test_the_bridge_sandbox_difference_is_met_on_12_9_too(virsh129):
    """Runs after the comparisons: the bridge guests' -sandbox difference (spawn and
    elevateprivileges) is what libvirt 12.9 does too."""
    if not USED:
        pytest.skip("no comparison ran in this session")
    assert {"sandbox.spawn", "sandbox.elevateprivileges"} <= USED <= set(KNOWN_DIFFERENCES)

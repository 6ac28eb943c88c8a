"""One vCPU topology on every target, as QEMU itself lays it out: each target's emulator
command (the launch script's argv; libvirt 12.9's `domxml-to-native` of the domain; the
domain KubeVirt's converter makes of the VirtualMachine's spec.domain.cpu) is run by QEMU
11.1 in the trixie root, and `query-hotpluggable-cpus` must give the same sockets, dies,
cores and threads. The default layout is the one QEMU 11.1 itself gives a bare `-smp N` on
the pinned machine type (one socket of N cores), not a value taken from cgsc."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from helpers import ROOT
from qmp import ask
from test_libvirt_12 import URI, domain_xml
from test_libvirt_qemu_driver import translate
from trixie_root import backports_plan

from cgsc import targets

pytestmark = pytest.mark.stack   # runs programs of the trixie root from outside it

IDS = ("socket-id", "die-id", "core-id", "thread-id")


def layout(trixie, binary, machine, smp):
    """QEMU's own answer: the (socket, die, core, thread) ids of every vCPU slot."""
    # the layout does not depend on the CPU model; TCG's x86 models warn about threads as an
    # AMD family without topoext, or about features TCG lacks, so an Intel qemu64 (x86 only)
    cpu = ["-cpu", "qemu64,vendor=GenuineIntel"] if binary.endswith("x86_64") else []
    answer = ask(trixie.argv([binary, "-S", "-display", "none", "-nodefaults", "-accel", "tcg",
                              "-machine", machine] + cpu + ["-smp", smp, "-qmp", "stdio"]),
                 [{"execute": "query-hotpluggable-cpus"}])
    assert answer.stderr == "", answer.stderr
    slots = answer.replies[0]["return"]
    return sorted(tuple(s["props"].get(k, 0) for k in IDS) for s in slots)


def shape(slots):
    """(sockets, dies per socket, cores per die, threads per core) of a layout."""
    sockets = {s[0] for s in slots}
    dies = {s[:2] for s in slots}
    cores = {s[:3] for s in slots}
    return (len(sockets), len(dies) // len(sockets), len(cores) // len(dies),
            len(slots) // len(cores))


def smp_of(argv):
    return argv[argv.index("-smp") + 1]


def spec_with(tmp_path, base, vcpus, topology):
    text = open(os.path.join(ROOT, base)).read()
    text = re.sub(r"^vcpus = \d+$", f"vcpus = {vcpus}", text, count=1, flags=re.M)
    text += "\n[guest.topology]\n" + "".join(f"{k} = {v}\n" for k, v in topology.items())
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return str(path)


# the KubeVirt examples: specs every target takes (a dies layout: all but KubeVirt)
CASES = {
    "sev-default": ("examples/kubevirt/sev.toml", None),          # 2 vCPUs, no [guest.topology]
    "snp-default": ("examples/kubevirt/sev-snp.toml", None),      # 4 vCPUs
    "s390x-default": ("examples/kubevirt/s390-pv.toml", None),    # 2 vCPUs, s390x
    "sev-2x2x2": ("examples/kubevirt/sev.toml", (8, {"sockets": 2, "cores": 2, "threads": 2})),
    "sev-dies": ("examples/kubevirt/sev.toml", (8, {"sockets": 2, "dies": 2, "threads": 2})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_target_gives_qemu_the_same_layout(case, trixie, virsh129, tmp_path):
    base, custom = CASES[case]
    spec = os.path.join(ROOT, base) if custom is None else spec_with(tmp_path, base, *custom)
    plan = backports_plan(spec)
    binary = os.path.basename(plan.emulator)
    script = layout(trixie, binary, plan.machine, smp_of(plan.argv()))
    if custom is None:   # what QEMU itself makes of a bare -smp N on this machine type
        assert script == layout(trixie, binary, plan.machine, str(plan.vcpus))
        assert shape(script) == (1, 1, plan.vcpus, 1)
    else:
        vcpus, given = custom
        assert len(script) == vcpus
        assert shape(script) == tuple(given.get(k, 1) if k != "cores" else
                                      vcpus // (given.get("sockets", 1) * given.get("dies", 1)
                                                * given.get("threads", 1))
                                      for k in ("sockets", "dies", "cores", "threads"))
    libvirt_argv, _changes = translate(URI, domain_xml(plan), tmp_path, virsh=virsh129)
    assert layout(trixie, binary, plan.machine, smp_of(libvirt_argv)) == script, "libvirt"
    kubevirt = targets.get("kubevirt")
    if plan.topology[1] != 1:
        assert [d.rule for d in kubevirt.unsupported(plan)] == ["CGS-KUBEVIRT-014"]
        return   # KubeVirt has no dies
    (manifest,) = kubevirt.render(plan)
    cpu = yaml.safe_load(manifest.content)["spec"]["template"]["spec"]["domain"]["cpu"]
    # KubeVirt's converter (pkg/virt-launcher/virtwrap/converter, GetCPUTopology): the domain
    # gets <vcpu> sockets*cores*threads and <topology sockets cores threads>, one die each
    xml = re.sub(r"<vcpu placement='static'>\d+</vcpu>",
                 f"<vcpu placement='static'>{cpu['sockets'] * cpu['cores'] * cpu['threads']}"
                 "</vcpu>", domain_xml(plan), count=1)
    xml = re.sub(r"<topology [^>]*/>", f"<topology sockets='{cpu['sockets']}' "
                 f"cores='{cpu['cores']}' threads='{cpu['threads']}'/>", xml, count=1)
    kv_argv, _changes = translate(URI, xml, tmp_path, virsh=virsh129)
    assert layout(trixie, binary, plan.machine, smp_of(kv_argv)) == script, "KubeVirt"


def test_the_layout_check_can_fail(trixie):
    """Negative control: libvirt's layout without <topology> (every vCPU a socket) differs."""
    bare = layout(trixie, "qemu-system-x86_64", "pc-q35-11.1", "4,sockets=4,cores=1,threads=1")
    assert bare != layout(trixie, "qemu-system-x86_64", "pc-q35-11.1",
                          "4,sockets=1,dies=1,cores=4,threads=1")
    assert shape(bare) == (4, 1, 1, 1)

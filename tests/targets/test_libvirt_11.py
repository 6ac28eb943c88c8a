"""libvirt 11.3 (Debian bookworm-backports) is a consumer: every domain cgsc emits for SEV,
SEV-ES, SEV-SNP and s390-pv is defined through the test driver with schema validation,
dumped back, and its launch-security values compared with the QEMU -object of the same
spec (what the launch script runs). TDX arrived in libvirt 11.6: until then its refusal
is asserted exactly."""

from __future__ import annotations

import base64
import subprocess

import pytest
from conftest import missing
from helpers import VALID_SPECS, compile_plan, rel, render

from cgsc import targets

SNP_IN_LIBVIRT = (10, 5, 0)  # formatdomain "launchSecurity": sev-snp since 10.5.0 (libvirt.md §4)
TDX_IN_LIBVIRT = (11, 6, 0)  # libvirt.md §5: tdx merged for 11.6.0


@pytest.fixture(scope="session")
def virsh11(tool):
    virsh = tool("virsh")
    out = subprocess.run([virsh, "--version"], capture_output=True, text=True).stdout.strip()
    version = tuple(int(x) for x in out.split("."))
    if version < (11, 3, 0):
        missing(f"virsh {out} is older than libvirt 11.3 (.ci/run installs it from backports)")
    return virsh, version


def define_and_dump(virsh, xml: str, name: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    # one virsh process: the test driver's state lives only as long as the connection
    return subprocess.run([virsh, "-c", "test:///default",
                           f"define --validate {path}; dumpxml {name}"],
                          capture_output=True, text=True, timeout=60)


def _expressible(spec) -> bool:
    plan = compile_plan(spec)
    return targets.get("libvirt").unsupported(plan) is None


SPECS = [s for s in VALID_SPECS if compile_plan(s).confidential.mechanism
         in ("sev", "sev-es", "sev-snp", "s390-pv") and _expressible(s)]

# QEMU -object property -> where libvirt keeps it (formatdomain "Launch Security")
ELEMENTS = {"cbitpos": "cbitpos", "reduced-phys-bits": "reducedPhysBits", "policy": "policy",
            "host-data": "hostData", "id-block": "idBlock", "id-auth": "idAuth",
            "guest-visible-workarounds": "guestVisibleWorkarounds",
            "dh-cert-file": "dhCert", "session-file": "session"}
ATTRIBUTES = {"kernel-hashes": "kernelHashes", "author-key-enabled": "authorKey"}
LIBVIRT_TYPE = {"sev": "sev", "sev-es": "sev", "sev-snp": "sev-snp", "s390-pv": "s390-pv"}


def _number(text: str) -> int:
    return int(text, 0)


@pytest.mark.parametrize("spec", SPECS, ids=rel)
def test_libvirt_11_defines_dumps_and_keeps_the_launch_security_values(spec, virsh11, tmp_path):
    from lxml import etree
    virsh, _version = virsh11
    plan = compile_plan(spec)
    result = define_and_dump(virsh, render(spec, "libvirt"), plan.name, tmp_path)
    assert result.returncode == 0, result.stderr
    dumped = etree.fromstring(result.stdout.split("\n", 1)[1].encode())  # after "Domain ... defined"
    ls = dumped.find("launchSecurity")
    assert ls is not None and ls.get("type") == LIBVIRT_TYPE[plan.confidential.mechanism]
    props = dict(plan.confidential.object.props)
    seen = {}
    for prop, value in props.items():
        if prop in ELEMENTS:
            text = ls.findtext(ELEMENTS[prop])
            assert text is not None, f"{prop} lost by libvirt"
            if prop in ("cbitpos", "reduced-phys-bits", "policy"):
                assert _number(text) == _number(str(value)), (prop, text, value)
            elif prop in ("host-data", "id-block", "id-auth", "guest-visible-workarounds"):
                assert base64.b64decode(text) == base64.b64decode(value), prop
            else:
                assert text == value, prop
            seen[prop] = text
        elif prop in ATTRIBUTES:
            want = "yes" if value in (True, "on") else "no"
            assert ls.get(ATTRIBUTES[prop], "no") == want, prop
            seen[prop] = want
    # libvirt kept nothing the QEMU line does not have
    assert {c.tag for c in ls if isinstance(c.tag, str)} <= {ELEMENTS[p] for p in props if p in ELEMENTS}
    if plan.confidential.mechanism == "sev-es":
        assert _number(ls.findtext("policy")) & 0x4, "SEV-ES is policy bit 2 in libvirt"


def test_every_libvirt_mechanism_is_covered():
    assert {compile_plan(s).confidential.mechanism for s in SPECS} == {"sev", "sev-es", "sev-snp",
                                                                      "s390-pv"}


def test_libvirt_11_rejects_a_wrong_launch_security(virsh11, tmp_path):
    virsh, _version = virsh11
    spec = [s for s in SPECS if s.endswith("examples/sev-snp.toml")][0]
    xml = render(spec, "libvirt").replace("<reducedPhysBits>", "<bogus/><reducedPhysBits>")
    result = define_and_dump(virsh, xml, compile_plan(spec).name, tmp_path)
    assert result.returncode == 1
    assert "Failed to define domain" in result.stderr and "launchSecurity" in result.stderr


def test_tdx_is_refused_exactly_until_libvirt_11_6(virsh11, tmp_path):
    virsh, version = virsh11
    spec = [s for s in VALID_SPECS if s.endswith("examples/tdx.toml")][0]
    result = define_and_dump(virsh, render(spec, "libvirt"), compile_plan(spec).name, tmp_path)
    if version >= TDX_IN_LIBVIRT:
        assert result.returncode == 0, result.stderr
        assert "<launchSecurity type='tdx'" in result.stdout
        return
    assert result.returncode == 1
    assert "XML document failed to validate against schema" in result.stderr
    assert "Element launchSecurity failed to validate content" in result.stderr

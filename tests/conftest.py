"""Shared fixtures: where the real consumers are.

A missing tool skips with a one-line reason saying what to install on a user's machine
and fails in CI (CI is set), so a green CI run never hides a check that did not happen.
Nothing here reads ../shared: third-party data a test needs is in tests/data/ with its
licence.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = bool(os.environ.get("CI"))


def pytest_collection_modifyitems(config, items):
    """Markers by place and need (pyproject.toml lists them): tests/fuzz/ is `fuzz`,
    tests/stack/ is `stack`, a test that uses QEMU 7.2 or 10.0 (one exact release, whatever
    the system's) is `qemu72` or `qemu10`."""
    for item in items:
        parts = item.nodeid.split("/")
        if parts[:2] == ["tests", "fuzz"]:
            item.add_marker(pytest.mark.fuzz)
        if parts[:2] == ["tests", "stack"]:
            item.add_marker(pytest.mark.stack)
        for release in ("qemu72", "qemu10"):   # a test that needs one exact QEMU release
            if release in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, release))


def missing(what: str):
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} (required in CI)")
    pytest.skip(what)


# what provides each program the tests run (Debian packages; pip for the Python ones)
PROVIDERS = {
    "shellcheck": "apt-get install shellcheck", "systemd-analyze": "apt-get install systemd",
    "virsh": "apt-get install libvirt-clients", "virt-xml-validate": "apt-get install libvirt-clients",
    "xmllint": "apt-get install libxml2-utils", "zsh": "apt-get install zsh",
    "fish": "apt-get install fish", "node": "apt-get install nodejs",
    "kubectl": "apt-get install kubectl (or any kubectl binary on PATH)",
    "git": "apt-get install git", "qemu-img": "apt-get install qemu-utils",
    "pre-commit": "pip install -e '.[test]'", "sev-snp-measure": "pip install -e .",
    "cgsc": "pip install -e .",
}


@pytest.fixture(scope="session")
def sarif_validator():
    """A validator of SARIF 2.1.0 logs: the OASIS schema (Errata 01) of tests/data/sarif."""
    from helpers import data_json
    from jsonschema import Draft4Validator
    schema = data_json("sarif/sarif-schema-2.1.0.json")
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema)


@pytest.fixture(scope="session")
def firmware(tmp_path_factory) -> dict:
    """File name -> path of the firmware images in tests/data/firmware, unpacked once."""
    from firmware_data import unpack
    return unpack(str(tmp_path_factory.mktemp("firmware")))


@pytest.fixture(scope="session")
def tool():
    def find(name: str) -> str:
        found = shutil.which(name)
        if not found:
            how = PROVIDERS.get(name)
            missing(f"{name} is not installed" + (f" ({how})" if how else ""))
        return found
    return find


QEMU_7_2_PREFIX = "/opt/cgsc/qemu-7.2"   # where .ci/run unpacks Debian 12's QEMU 7.2


def qemu72_binary(name: str):
    """Path of Debian 12's QEMU 7.2 `name` (qemu-system-x86_64, ...), or None: the oldest
    QEMU cgsc supports, kept runnable beside the system's newer QEMU (.ci/run unpacks its
    .debs into a prefix; CGSC_QEMU_7_2 overrides the prefix). A 7.2 on PATH also does."""
    import subprocess
    prefix = os.environ.get("CGSC_QEMU_7_2", QEMU_7_2_PREFIX)
    for candidate in (os.path.join(prefix, "usr", "bin", name), shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            out = subprocess.run([candidate, "-version"], capture_output=True, text=True).stdout
            if out.startswith("QEMU emulator version 7.2."):
                return candidate
    return None


@pytest.fixture(scope="session")
def qemu72():
    """name -> path of QEMU 7.2's binary (qemu72_binary), or missing."""
    def find(name: str) -> str:
        found = qemu72_binary(name)
        if found is None:
            arch = name.replace("qemu-system-", "")
            package = QEMU_PACKAGE.get(arch, f"qemu-system-{arch}")
            missing(f"QEMU 7.2 {name} not found under "
                    f"{os.environ.get('CGSC_QEMU_7_2', QEMU_7_2_PREFIX)} or on PATH (Debian 12: "
                    f"apt-get install {package}; elsewhere .ci/run unpacks it, or set CGSC_QEMU_7_2)")
        return found
    return find


LIBVIRT_SCHEMAS = "/usr/share/libvirt/schemas"   # Debian's libvirt-common installs them


class LibvirtSchema:
    """The installed libvirt's RelaxNG domain schema (libvirt-common), compiled once.
    A <launchSecurity> type that this libvirt predates (libvirt 11.3 has no tdx) is taken
    out of a copy of the document before it is validated, and said on stderr: the rest of
    the domain is still checked here, the element itself wherever a newer libvirt is
    installed (the Debian 13 CI run)."""

    def __init__(self, directory: str):
        from lxml import etree
        self.directory = directory
        self.schema = etree.RelaxNG(etree.parse(os.path.join(directory, "domain.rng")))
        with open(os.path.join(directory, "domaincommon.rng"), encoding="utf-8") as fh:
            common = fh.read()
        self.unknown = {t for t in ("sev", "sev-snp", "tdx", "s390-pv")
                        if f"<value>{t}</value>" not in common}
        self.predated = set()   # launch-security types taken out for this libvirt

    @property
    def error_log(self):
        return self.schema.error_log

    def validate(self, doc) -> bool:
        import copy
        sec = doc.find("launchSecurity")
        if sec is not None and sec.get("type") in self.unknown:
            if sec.get("type") not in self.predated:
                self.predated.add(sec.get("type"))
                sys.stderr.write(f"note: {self.directory}'s schema has no <launchSecurity "
                                 f"type='{sec.get('type')}'>: checked without it\n")
            doc = copy.deepcopy(doc)
            doc.remove(doc.find("launchSecurity"))
        return self.schema.validate(doc)


@pytest.fixture(scope="session")
def relaxng():
    """The installed libvirt's domain schema (CGSC_LIBVIRT_SCHEMAS overrides the directory)."""
    try:
        import lxml  # noqa: F401
    except ImportError:
        missing("lxml is not installed (pip install -e '.[test]')")
    directory = os.environ.get("CGSC_LIBVIRT_SCHEMAS", LIBVIRT_SCHEMAS)
    if not os.path.isfile(os.path.join(directory, "domain.rng")):
        missing(f"libvirt's RelaxNG schemas are not in {directory} "
                "(Debian: apt-get install libvirt-common)")
    return LibvirtSchema(directory)


QEMU_ARCH = {"sev-guest": "x86_64", "sev-snp-guest": "x86_64", "tdx-guest": "x86_64",
             "pef-guest": "ppc64", "s390-pv-guest": "s390x"}
QEMU_PACKAGE = {"x86_64": "qemu-system-x86", "ppc64": "qemu-system-ppc",
                "s390x": "qemu-system-s390x"}


class Predates(Exception):
    """The installed QEMU is older than the -object type (no such type to check against)."""


class InstalledQemu:
    """The -object types of the installed qemu-system-* binaries, asked over QMP
    (tests/qemu_schema.py): the QEMU on this machine is the oracle for every property cgsc
    writes. A type newer than that QEMU raises Predates (a test skips and says so)."""

    def schema(self, qom_type: str):
        from qemu_schema import introspect
        arch = QEMU_ARCH[qom_type]
        binary = shutil.which(f"qemu-system-{arch}")
        if binary is None:
            missing(f"qemu-system-{arch} is not installed (Debian: apt-get install "
                    f"{QEMU_PACKAGE[arch]})")
        return introspect(binary)

    def object_members(self, qom_type: str):
        schema = self.schema(qom_type)
        if not schema.has(qom_type):
            raise Predates(f"the installed QEMU {schema.version_text} predates -object {qom_type}")
        return schema.object_members(qom_type)

    def accepts(self, qom_type: str, typ: str, value) -> bool:
        return self.schema(qom_type).accepts(typ, value)


@pytest.fixture(scope="session")
def qapi():
    return InstalledQemu()


@pytest.fixture(scope="session")
def trixie(tmp_path_factory):
    """The trixie root (.ci/trixie-root: QEMU 11.1, libvirt 12.9, systemd 257) mounted in a
    private namespace for the session: tests/trixie_root.py says how programs run in it."""
    from trixie_root import open_namespace
    ns = open_namespace(str(tmp_path_factory.getbasetemp()),
                        str(tmp_path_factory.mktemp("trixie-ns")))
    yield ns
    ns.close()


@pytest.fixture(scope="session")
def virsh129(trixie):
    """virsh of the trixie root, as an argv prefix, talking to a libvirtd (12.9) started in
    the root's namespace, which probes the root's QEMU 11.1 and ends with the namespace."""
    import time
    uri = "qemu:///system"
    started = trixie.run(["libvirtd", "--daemon"])
    assert started.returncode == 0, started.stderr
    for _ in range(180):   # the first start probes each QEMU binary once
        version = trixie.run(["virsh", "-c", uri, "version"])
        if version.returncode == 0:
            break
        time.sleep(1)
    else:
        pytest.fail("libvirtd 12.9 in the trixie root did not answer within 180 s")
    assert "Using library: libvirt 12.9." in version.stdout, version.stdout
    assert "Running hypervisor: QEMU 11.1." in version.stdout, version.stdout
    return trixie.argv(["virsh"])

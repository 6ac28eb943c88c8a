"""Shared fixtures: where the reference material and the real consumers are.

A missing tool or ../shared skips with a reason on a user's machine and fails in CI
(CI is set), so a green CI run never hides a check that did not happen.
"""

from __future__ import annotations

import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = bool(os.environ.get("CI"))


def missing(what: str):
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} (required in CI)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def shared_dir() -> str:
    path = os.environ.get("CGSC_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
    if not os.path.isdir(os.path.join(path, "reference")):
        missing(f"reference material not found at {path} (set CGSC_SHARED)")
    return path


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
            missing(f"{name} is not installed")
        return found
    return find


QEMU_7_2_PREFIX = "/opt/cgsc/qemu-7.2"   # where .ci/run unpacks Debian 12's QEMU 7.2


@pytest.fixture(scope="session")
def qemu72():
    """name -> path of Debian 12's QEMU 7.2 binary: the oldest QEMU cgsc supports, kept
    runnable beside the system's newer QEMU (.ci/run unpacks its .debs into a prefix;
    CGSC_QEMU_7_2 overrides the prefix). A `qemu-system-*` on PATH that is 7.2 also does."""
    import subprocess
    prefix = os.environ.get("CGSC_QEMU_7_2", QEMU_7_2_PREFIX)

    def find(name: str) -> str:
        for candidate in (os.path.join(prefix, "usr", "bin", name), shutil.which(name)):
            if candidate and os.access(candidate, os.X_OK):
                out = subprocess.run([candidate, "-version"], capture_output=True, text=True).stdout
                if out.startswith("QEMU emulator version 7.2."):
                    return candidate
        missing(f"QEMU 7.2 {name} not found under {prefix} or on PATH (run .ci/run or set CGSC_QEMU_7_2)")
    return find


@pytest.fixture(scope="session")
def relaxng(shared_dir):
    """libvirt 12.8's domain schema, compiled once per session."""
    try:
        from lxml import etree
    except ImportError:
        missing("lxml is not installed")
    return etree.RelaxNG(etree.parse(os.path.join(shared_dir, "reference", "libvirt-rng",
                                                  "domain.rng")))


@pytest.fixture(scope="session")
def qapi(shared_dir):
    from helpers import QapiSchema
    return QapiSchema(os.path.join(shared_dir, "reference", "qemu-qapi"))


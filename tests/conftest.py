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
def tool():
    def find(name: str) -> str:
        found = shutil.which(name)
        if not found:
            missing(f"{name} is not installed")
        return found
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

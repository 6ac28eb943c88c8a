"""Derived values (cgsc.spec.units) against the standard library's definitions."""

from __future__ import annotations

import uuid

import pytest

from cgsc.spec.units import derived_uuid


@pytest.mark.parametrize("name", ["web-1", "payments-db", "a", "x" * 63, "node-00007",
                                  "ünïcode-guest", "\U0001f600", ""])
def test_derived_uuid_is_uuid5_of_the_cgsc_namespace(name):
    namespace = uuid.UUID("6c1f0d0e-7a7b-5d55-9c1e-63677363c001")
    assert derived_uuid(name) == str(uuid.uuid5(namespace, f"cgsc/guest/{name}"))

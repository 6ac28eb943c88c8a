"""Warnings about how a guest runs: virtio devices that extra-args add without the
IOMMU setting confidential guests need (CGS-QEMU-004)."""

from __future__ import annotations

import json

import pytest
from helpers import MINIMAL_SNP, run_cli

SPEC = MINIMAL_SNP.format(name="extra") + """[waive]
"CGS-QEMU-001" = "the test adds devices on purpose"
[qemu]
extra-args = {args}
"""


@pytest.mark.parametrize("args, warned", [
    (["-device", "virtio-rng-pci,id=rng0"], True),
    (["-device", "driver=virtio-serial-pci,id=s0"], True),
    (["-device", '{"driver":"vhost-user-fs-pci","chardev":"fs0","tag":"fs"}'], True),
    (["-nic", "user,model=virtio-net-pci"], True),
    (["-device", "virtio-rng-pci,id=rng0,iommu_platform=on"], False),
    (["-device", '{"driver":"virtio-rng-pci","iommu_platform":true}'], False),
    (["-device", "e1000,netdev=n0"], False),
    (["-fw_cfg", "name=opt/x,string=virtio-rng-pci"], False),
])
def test_extra_args_virtio_devices_without_iommu_are_warned(args, warned, tmp_path):
    spec = tmp_path / "extra.toml"
    spec.write_text(SPEC.format(args=json.dumps(args)))
    code, _out, err = run_cli("validate", str(spec))
    assert code == 0, err
    assert ("[CGS-QEMU-004]" in err) == warned, err
    if warned:
        assert "qemu.extra-args[1]" in err


def test_a_device_in_json_nested_past_python_s_parser_is_no_internal_error(tmp_path):
    """Before: a -device value of 1,500 nested arrays (within the schema's length bound)
    was a RecursionError, exit 3."""
    spec = tmp_path / "extra.toml"
    value = '{"driver":"virtio-rng-pci","x":' + "[" * 1500 + "]" * 1500 + "}"
    spec.write_text(SPEC.format(args=json.dumps(["-device", value])))
    code, _out, err = run_cli("validate", str(spec))
    assert code == 0 and "internal error" not in err, err

"""QEMU's option syntax as cgsc reads it (cgsc.lower.qemu opts_parse, global_option), with
the real QEMU as the oracle: for a -global whose driver names no type, QEMU warns "global
DRIVER.PROPERTY has invalid class name", which shows how it split the argument; one it
cannot read stops it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from cgsc.lower.qemu import global_option, opts_parse

READ = [   # -global arguments QEMU reads; every driver names no type
    "nosuch.prop=1",
    "nosuch.prop.sub=1",
    "nosuch.prop=a=b,c",
    "nosuch.prop=1,driver=cpu",
    "driver=nosuch,property=prop,value=1",
    "value=1,property=prop,driver=nosuch",
    "driver=cpu,property=prop,value=1,driver=nosuch",
    "driver=nosuch,property=a,,b,value=1",
    "driver=nosuch,,x,property=p,value=1",
    "driver=nosuch,property=p,value=1,id=x",
    "driver=nosuch,value=2,property=stepping,,driver=cpu",
    "a" * 63 + ".p=1",
    "a" * 64 + ".p=1",
    "nosuch." + "p" * 63 + "=1",
    "nosuch..p=1",
    "nosuch.=x,driver=nosuch2,property=q,value=1",
]


def _run(qemu, args):
    quit_ = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    return subprocess.run([qemu, "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display",
                           "none", "-S", "-qmp", "stdio", *args], input=quit_,
                          capture_output=True, text=True, timeout=120)


def test_cgsc_splits_each_global_as_qemu_does(tool):
    qemu = tool("qemu-system-x86_64")
    for arg in READ:
        result = _run(qemu, ["-global", arg])
        ours = global_option(arg)
        if result.returncode != 0:
            assert ours is None, (arg, result.stderr)
            continue
        found = re.findall(r"global (.*) has invalid class name", result.stderr)
        assert ours is not None and found == [f"{ours[0]}.{ours[1]}"], (arg, ours, result.stderr)


@pytest.mark.parametrize("arg", ["driver=nosuch,property=p", "property=p,value=1", "",
                                 "nosuch", "driver=nosuch,property=p,value=1,bogus=2",
                                 "=x", ".p=1"])
def test_a_global_qemu_refuses_is_none(arg, tool):
    assert global_option(arg) is None
    assert _run(tool("qemu-system-x86_64"), ["-global", arg]).returncode == 1


def test_opts_parse_reads_names_values_flags_and_escapes():
    assert opts_parse("a=1,,2,b,nocd,,x") == [("a", "1,2"), ("b", "on"), ("cd", "off"),
                                              ("", "on"), ("x", "on")]
    assert opts_parse("loader,,x,file=/a,,b", implied="driver") == [("driver", "loader,x"),
                                                                     ("file", "/a,b")]
    assert opts_parse("driver=cpu,x", implied="driver") == [("driver", "cpu"), ("x", "on")]
    assert opts_parse("") == [] and opts_parse("a=") == [("a", "")]


def test_the_device_driver_qemu_reads_is_the_one_cgsc_checks(tool):
    """-device with the driver implied and `,,` inside it: QEMU names the driver it read."""
    qemu = tool("qemu-system-x86_64")
    for arg, driver in (("nosuch,,x,id=d0", "nosuch,x"), ('{"driver": "nosuch2"}', "nosuch2"),
                        ("driver=nosuch3,id=d1", "nosuch3")):
        result = _run(qemu, ["-device", arg])
        assert result.returncode == 1 and f"'{driver}'" in result.stderr, result.stderr
        if not arg.startswith("{"):
            assert dict(opts_parse(arg, implied="driver"))["driver"] == driver
        else:
            assert json.loads(arg)["driver"] == driver

"""Property-based: thousands of mutated and random specs at `cgsc build`. No traceback ever;
every failure is exit 1 with located, rule-ID'd messages and nothing written; every
success yields artifacts that pass the consumers' checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import Predates
from helpers import VALID_SPECS, exec_start, run_cli
from spec_mutations import to_toml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgsc.host.compat import qemu_since

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SEEDS = []
for _path in VALID_SPECS:
    with open(_path, "rb") as _fh:
        _data = tomllib.load(_fh)
    if "extends" not in _data:
        SEEDS.append(_data)

HOSTILE_TEXT = st.sampled_from(["", " ", "a,b", "$HOME", "`id`", "100%", "x;y", "a\nb", "é", "..",
                                "/", "/a b/c,d.qcow2", "'\"", "\\", "\x7f", "\x00", "q35", "host",
                                "EPYC-v4", "pseries", "s390-ccw-virtio", "x86_64", "ppc64", "s390x",
                                "vsock", "unix", "user", "tap", "bridge", "qcow2", "raw", "8GiB",
                                "52:54:00:00:00:01", "AAAA", "A" * 44, "A" * 64])
SCALARS = st.one_of(st.booleans(), st.integers(min_value=-2, max_value=2 ** 64 + 1),
                    st.sampled_from([0, 1, 3, 47, 51, 0x30000, 0x10000000, 0x5, 2 ** 32]),
                    HOSTILE_TEXT, st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["type", "path", "cid", "port", "smt",
                                                                  "debug", "x"]), inner, max_size=3)),
    max_leaves=6)
KEYS = st.sampled_from(["name", "memory", "arch", "machine", "cpu", "vcpus", "policy", "cbitpos",
                        "reduced-phys-bits", "kernel-hashes", "host-data", "id-block", "attributes",
                        "quote-generation-socket", "code", "vars", "image", "initrd", "cmdline",
                        "path", "format", "bus", "mode", "tap", "bridge", "mac", "serial", "cid",
                        "socket", "emulator", "sandbox", "extra-args", "build", "bogus", "waive",
                        "CGS-SNP-010", "CGS-QEMU-001", "CGS-SNP-001", "sev",
                        "sev-es", "sev-snp", "tdx", "pef", "s390-pv"])


# Values that keep a spec valid more often than not, so successes get fuzzed too.
BENIGN = {
    "vcpus": st.integers(min_value=1, max_value=64),
    "memory": st.one_of(st.integers(min_value=64, max_value=1 << 20),
                        st.sampled_from(["512MiB", "8GiB", "1T", "3G"])),
    "description": st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                                   blacklist_characters="\x7f"), max_size=30),
    "cmdline": st.text(max_size=30).filter(lambda t: not any(ord(c) < 9 or 10 < ord(c) < 32 or ord(c) == 127 for c in t)),
    "path": st.sampled_from(["/srv/a b,c/$x%y.qcow2", "/var/lib/g/d.raw", "/x;y/`z`'.img"]),
    "mac": st.sampled_from(["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]),
    "policy": st.one_of(st.sampled_from([0x30000, 0x1, 0x3, 0xb]),
                        st.fixed_dictionaries({}, optional={"debug": st.booleans(), "smt": st.booleans(),
                                                            "single-socket": st.booleans()})),
    "kernel-hashes": st.booleans(),
    "sandbox": st.booleans(),
    "extra-args": st.lists(st.sampled_from(["-msg", "timestamp=on", "a b", "$x"]), max_size=2),
    "cache": st.sampled_from(["none", "writeback", "writethrough"]),
    "readonly": st.booleans(),
    "cid": st.integers(min_value=3, max_value=1000),
    "serial": st.sampled_from(["stdio", "pty", "none"]),
}


def _tables(node):
    yield node
    for v in node.values():
        if isinstance(v, dict):
            yield from _tables(v)
        elif isinstance(v, list):
            for item in v:
                if isinstance(item, dict):
                    yield from _tables(item)


@st.composite
def mutated_specs(draw):
    import copy
    data = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if draw(st.booleans()):  # a benign change anywhere in the spec
            spots = [(node, k) for node in _tables(data) for k in node if k in BENIGN]
            if spots:
                node, key = draw(st.sampled_from(spots))
                node[key] = draw(BENIGN[key])
            continue
        # a hostile change: walk to a random table, then delete, replace or add a key
        node = data
        while True:
            tables = [k for k, v in node.items() if isinstance(v, dict)]
            if not tables or draw(st.booleans()):
                break
            node = node[draw(st.sampled_from(sorted(tables)))]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete" and node:
            del node[draw(st.sampled_from(sorted(node)))]
        elif action == "replace" and node:
            node[draw(st.sampled_from(sorted(node)))] = draw(VALUES)
        else:
            node[draw(KEYS)] = draw(VALUES)
    text = to_toml(data)
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # sometimes break the TOML itself
        pos = draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))
        text = text[:pos] + draw(st.sampled_from(["=", "[", '"', "\n[[", "}", "\x00", "é"])) + text[pos:]
    return text


_LOCATED = re.compile(r"^\S.*?(:\d+(:\d+)?)?: \S+.*: .+ \[CGS-[A-Z0-9]+-\d{3}\]$")
STATS = {"ok": 0, "invalid": 0}


@pytest.fixture(scope="module")
def checks(relaxng, qapi):
    return relaxng, qapi


@settings(max_examples=2200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(text=mutated_specs())
def test_random_specs_never_crash_and_successes_are_sound(text, checks, tmp_path_factory):
    relaxng, qapi = checks
    work = tmp_path_factory.mktemp("fuzz")
    spec = work / "spec.toml"
    spec.write_text(text, encoding="utf-8")
    out = work / "out"
    code, stdout, err = run_cli("build", str(spec), "-o", str(out))
    assert "Traceback" not in err and "internal error" not in err, err
    assert code in (0, 1), err
    if code == 1:
        STATS["invalid"] += 1
        assert not out.exists()
        lines = [l for l in err.splitlines() if not l.startswith(("  hint: ", "cgsc: "))]
        assert lines and all(_LOCATED.match(l) for l in lines), err
        return
    STATS["ok"] += 1
    from lxml import etree
    from cgsc.pipeline.compile import compile_spec
    plan = compile_spec(str(spec)).plan
    (guest_dir,) = out.iterdir()
    for path in guest_dir.iterdir():
        body = path.read_text(encoding="utf-8")
        if path.suffix == ".xml":
            assert relaxng.validate(etree.fromstring(body.encode())), relaxng.error_log
        elif path.suffix == ".service":
            assert exec_start(body) == plan.argv()
        elif path.suffix == ".sh":
            assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
            assert os.access(path, os.X_OK)
    obj = plan.confidential.object
    try:
        members = qapi.object_members(obj.qom_type) or {}
    except Predates:   # tests/targets/test_qemu.py says so, per example
        return
    installed = qapi.schema(obj.qom_type).version
    for key, value in obj.props:
        since = qemu_since()[obj.qom_type]["properties"].get(key, "0")
        if key not in members and tuple(map(int, since.split("."))) > installed:
            continue   # newer than the installed QEMU: test_qemu.py says so per example
        assert key in members and qapi.accepts(obj.qom_type, members[key], value)


def test_the_fuzzer_reached_both_outcomes():
    """Run after the property test (file order): it must have produced real successes and
    real refusals, or it tested nothing of interest."""
    if STATS["ok"] + STATS["invalid"] == 0:
        pytest.skip("run together with the property test")
    print(f"fuzz: {STATS['ok']} built, {STATS['invalid']} refused")
    assert STATS["ok"] >= 200 and STATS["invalid"] >= 200

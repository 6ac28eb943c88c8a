"""Every string field of the schema, fed hostile text: refused with exit 1, or built into
artifacts that every consumer reads back exactly.

The fields are enumerated by walking the bundled schema, so a field added later is
covered without touching this file. Hostile text mixes control characters, Unicode
noncharacters, line separators, trailing newlines and backslashes, `---`, quotes, `%`,
`$`, `,`, `;` and `..` into values that are otherwise valid for the field.
"""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers import VALID_SPECS, exec_start, run_cli, systemd_split
from spec_mutations import to_toml

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgsc.spec.schema import inlined

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def string_fields(node, path=()):
    """(key path, schema) of every node that admits a string; 0 stands for an array item,
    "*" for a key matched by patternProperties."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "string" or (isinstance(kind, list) and "string" in kind) or (
            kind is None and any(isinstance(v, str) for v in node.get("enum", []))):
        yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from string_fields(sub, path + (key,))
    for sub in node.get("patternProperties", {}).values():
        yield from string_fields(sub, path + ("*",))
    if isinstance(node.get("items"), dict):
        yield from string_fields(node["items"], path + (0,))
    for keyword in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(keyword, []):
            yield from string_fields(sub, path)


FIELDS = sorted({p: n for p, n in string_fields(inlined())}.items(), key=lambda x: str(x[0]))

SEEDS = {}
for _path in VALID_SPECS:
    with open(_path, "rb") as _fh:
        _data = tomllib.load(_fh)
    if "extends" not in _data:
        SEEDS[os.path.basename(_path)] = _data


def _get(data, path):
    for key in path:
        if key == "*" and isinstance(data, dict) and data:
            key = sorted(data)[0]
        if isinstance(key, int):
            if not isinstance(data, list) or len(data) <= key:
                return None
        elif not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _seed_for(path):
    """A spec in which the field makes sense: one that sets it, else one with its table
    (the right mechanism for [confidential.*]), else the SEV-SNP example."""
    for depth in range(len(path), 0, -1):
        for name in sorted(SEEDS):
            if _get(SEEDS[name], path[:depth]) is not None:
                return name
    return "sev-snp.toml"


def _set(data, path, value):
    node = data
    for i, key in enumerate(path[:-1]):
        if key == "*":
            key = sorted(node)[0]
        nxt = path[i + 1]
        if isinstance(key, int):
            node = node[key]
            continue
        if key not in node or not isinstance(node[key], (dict, list)):
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    last = path[-1]
    if last == "*":
        last = sorted(node)[0] if node else "CGS-QEMU-001"
    if isinstance(last, int):
        node[:] = [value]
    else:
        node[last] = value


CHUNKS = ["\x00", "\x01", "\x1b[31m", "\t", "\n", "\r", "\x7f", "\x85", "\u2028", "\u202e",
          "\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\U0010ffff", "---", "--", "-", "'", '"',
          "`", "\\", "%", "%n", "%%", "$", "${X}", ",", ";", "..", "/", "/..", " ", "a", "Z9",
          "é", "<!--", "&amp;", "::error::"]
NOISE = st.lists(st.sampled_from(CHUNKS), max_size=5).map("".join)


@st.composite
def field_values(draw, field):
    path, _schema = field
    current = _get(SEEDS[_seed_for(path)], path)
    base = current if isinstance(current, str) else draw(st.sampled_from(["", "x", "/srv/g/x"]))
    how = draw(st.sampled_from(["suffix", "prefix", "insert", "raw", "trailing"]))
    noise = draw(NOISE)
    if how == "suffix":
        return base + noise
    if how == "prefix":
        return noise + base
    if how == "insert":
        at = draw(st.integers(min_value=0, max_value=len(base)))
        return base[:at] + noise + base[at:]
    if how == "trailing":
        return base + draw(st.sampled_from(["\n", "\\", "\\\\", " ", "-", "/", "\r\n"]))
    return noise


class Readers:
    """Artifacts collected for the tools that are too slow to run per example."""
    scripts: list = []
    units: list = []
    refused = 0


def _check_script(path, plan, tmp):
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
    result = subprocess.run([str(path), "--dry-run"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == plan.argv()
    if plan.emulator_default or "/" not in plan.emulator:  # exec it through a stand-in
        bin_dir = tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        stand_in = bin_dir / plan.emulator
        stand_in.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$CGSC_ARGV_LOG\"\n")
        stand_in.chmod(0o755)
        log = tmp / "argv"
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CGSC_SKIP_CHECKS": "1",
               "CGSC_ARGV_LOG": str(log)}
        result = subprocess.run([str(path)], env=env, capture_output=True, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        words = log.read_bytes().split(b"\0")[:-1]
        assert [w.decode("utf-8") for w in words] == plan.argv()[1:]


def unit_lines(text):
    """A unit file as systemd.syntax(7) reads it: (section, key, value) per setting.
    cgsc never writes continuation lines, so a setting line ending in a backslash is an
    error here, not a join."""
    section, out = None, []
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            continue
        assert "=" in line and not line.endswith("\\"), f"not a one-line setting: {line!r}"
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _unpercent(value):
    """The value after systemd's specifier expansion; cgsc only ever writes %%."""
    out, i = "", 0
    while i < len(value):
        if value[i] == "%":
            assert value[i + 1:i + 2] == "%", f"a specifier in {value!r}"
            i += 1
        out += value[i]
        i += 1
    return out


def _check_unit(text, plan, spec_path):
    assert exec_start(text) == plan.argv()
    settings = unit_lines(text)
    values = {}
    for section, key, value in settings:
        values.setdefault((section, key), []).append(value)
        if key in ("ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "BindPaths"):
            assert all(w.startswith("/") for w in systemd_split(value, exec_line=False))
        elif key != "ExecStart":
            _unpercent(value)
    (description,) = values[("Unit", "Description")]
    if plan.description:
        assert _unpercent(description).endswith(": " + plan.description)
    (documentation,) = values[("Unit", "Documentation")]
    assert all(w.startswith("man:") for w in _unpercent(documentation).split())  # no spec path
    env_file = plan.settings["systemd"].environment_file
    if env_file:
        assert [_unpercent(v) for v in values[("Service", "EnvironmentFile")]] == [env_file]


def _check_xml(text, plan, relaxng):
    from lxml import etree
    root = etree.fromstring(text.encode("utf-8"))
    assert relaxng.validate(root), relaxng.error_log
    if plan.description:
        assert root.findtext("description") == plan.description


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: ".".join(map(str, f[0])))
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_every_string_field_is_refused_or_read_back_exactly(field, data, relaxng,
                                                            tmp_path_factory):
    from cgsc.pipeline.compile import compile_spec
    path, _schema = field
    value = data.draw(field_values(field))
    spec = copy.deepcopy(SEEDS[_seed_for(path)])
    _set(spec, path, value)
    work = tmp_path_factory.mktemp("field")
    spec_path = work / "spec.toml"
    spec_path.write_text(to_toml(spec), encoding="utf-8")
    out = work / "out"
    code, stdout, err = run_cli("build", str(spec_path), "-o", str(out))
    assert code in (0, 1) and "internal error" not in err, err
    if code == 1:
        assert not out.exists() and "[CGS-" in err
        Readers.refused += 1
        return
    plan = compile_spec(str(spec_path)).plan
    (guest_dir,) = out.iterdir()
    for artifact in sorted(guest_dir.iterdir()):
        if artifact.suffix == ".sh":
            _check_script(artifact, plan, work)
            Readers.scripts.append(str(artifact))
        elif artifact.suffix == ".service":
            _check_unit(artifact.read_text(encoding="utf-8"), plan, str(spec_path))
            Readers.units.append((plan, artifact.read_text(encoding="utf-8")))
        elif artifact.suffix == ".xml":
            _check_xml(artifact.read_text(encoding="utf-8"), plan, relaxng)


def test_collected_artifacts_pass_shellcheck_and_systemd_analyze(tool, tmp_path):
    """After the property test (file order): the slow consumers, once over what it built."""
    if not Readers.scripts:
        pytest.skip("run together with the property test")
    # hostile values that were accepted must be a real share, or little was read back
    print(f"string fields: {len(Readers.scripts)} built, {Readers.refused} refused")
    assert len(Readers.scripts) >= 100 and Readers.refused >= 100, (len(Readers.scripts),
                                                                    Readers.refused)
    scripts = sorted(set(Readers.scripts))
    result = subprocess.run([tool("shellcheck"), "--shell=sh", "--severity=style", *scripts],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    for units in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isdir(units):
            shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
            break
    distinct = list({text: (plan, text) for plan, text in Readers.units}.values())
    # each verify takes a while: 15 units spread over the fields are plenty
    for plan, text in distinct[::max(1, len(distinct) // 15)]:
        unit_name = plan.settings["systemd"].unit_name or f"{plan.name}.service"
        for command in (plan.emulator, "/bin/sh"):   # ExecStartPre=/ExecStop= run /bin/sh
            stand_in = root / (command.lstrip("/") if command.startswith("/")
                               else f"usr/bin/{command}")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\nexit 0\n")
            stand_in.chmod(0o755)
        unit = root / "etc/systemd/system" / unit_name
        unit.write_text(text)
        result = subprocess.run([tool("systemd-analyze"), "verify", f"--root={root}", str(unit)],
                                capture_output=True, text=True, timeout=120)
        unit.unlink()
        assert result.returncode == 0 and not result.stderr.strip(), (text, result.stderr)

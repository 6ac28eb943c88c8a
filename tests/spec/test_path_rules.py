"""The path rules (spec/path_rules.py) mean one thing everywhere.

Issue 25: `a\\u2028/../b` as a [measurement] path passed the compiled check (whose
ECMA-262 `.` stops at U+2028) while a stock jsonschema (Python's `.` does not) refused it.
Every path kind is now checked, on every Unicode line and paragraph separator and every
C0/C1 control in many positions, by five readers that must agree with each other and with
the rule written out independently below: allowed() (what the loader uses), the compiled
check, cgsc's jsonschema validator, a stock jsonschema (Python `re`) and node (a real
ECMA-262 engine, as editors and other validators read `cgsc schema`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from cgsc.spec.schema import dumps, inlined
from cgsc.spec.validate import quick_check, schema_errors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Unicode's mandatory line breaks (UAX #14 BK, CR, LF, NL) and the paragraph separator
SEPARATORS = ["\n", "\x0b", "\x0c", "\r", "\x85", "\u2028", "\u2029"]
CONTROLS = [chr(c) for c in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0))]
# ECMA-262 WhiteSpace and LineTerminator (ECMA-262 sections 12.2 and 12.3)
ECMA_SPACE = set("\t\n\x0b\x0c\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | {
    chr(c) for c in range(0x2000, 0x200B)}


def _no_control(value):
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


def expected(kind: str, value: str) -> bool:
    """The rules as the schema's descriptions state them, written out without a regex."""
    if not _no_control(value) or not value:
        return False
    if kind == "file":
        return len(value) <= 4096 and ".." not in value.split("/")
    if kind == "extends":
        return len(value) <= 4095 and not value.startswith("/")
    if kind == "device-path" and not value.startswith("/dev/"):
        return False
    parts = value.split("/")
    return (len(value) <= 4095 and value.startswith("/") and value[-1] not in ECMA_SPACE | {"\\"}
            and all(p not in ("", ".", "..") for p in parts[1:]))


def probes(kind):
    out = set()
    head = "/dev" if kind == "device-path" else ("" if kind in ("file", "extends") else "")
    for c in SEPARATORS + CONTROLS + ["\ufeff", "\u3000", "\\", "x"]:
        for template in ("/a{c}/../b", "/a{c}/b", "/a/b{c}", "/{c}", "/..{c}/b", "/{c}../b",
                         "/a/.{c}/b", "/a/{c}", "a{c}/../b", "{c}/../b", "../{c}", "a/..{c}",
                         "{c}", "a{c}b", "/a{c}b", "/a/..{c}", "/a{c}", "{c}/a/b"):
            out.add(head + template.format(c=c))
    out |= {head + p for p in ("/a/b", "/a/../b", "/a/./b", "/a//b", "/a/b/", "a/b", "..",
                               "../a", "a/..", "a/...", "/a/...b")}
    out |= {"", "/", "/dev", "/dev/", "/dev/sev", "/a" * 2048, "a" * 4096, "a" * 4097}
    return sorted(out)


KINDS = ("file", "path", "device-path", "extends")
SPEC = {"file": "sev-snp.toml", "path": "sev-snp.toml", "device-path": "sev.toml",
        "extends": "sev-snp.toml"}


def _spec(kind, value):
    with open(os.path.join(ROOT, "examples", SPEC[kind]), "rb") as fh:
        data = tomllib.load(fh)
    if kind == "file":
        data["measurement"] = {"firmware": value}
    elif kind == "path":
        data["firmware"]["code"] = value
    elif kind == "device-path":
        data["confidential"]["sev"]["sev-device"] = value
    else:
        data["extends"] = value
    return data


@pytest.fixture(scope="module")
def stock():
    """A stock jsonschema validator of the published bundle: Python `re` patterns."""
    from jsonschema import Draft202012Validator
    return Draft202012Validator(inlined())


@pytest.mark.parametrize("kind", KINDS)
def test_every_reader_agrees_with_the_rule_on_separators_and_controls(kind, stock):
    from cgsc.spec import path_rules
    quick = quick_check()
    assert quick is not None, "the compiled check is stale: python -m cgsc.regenerate"
    checked = 0
    for value in probes(kind):
        want = expected(kind, value)
        assert path_rules.allowed(kind, value) == want, (kind, value)
        data = _spec(kind, value)
        assert (not schema_errors(data)) == want, (kind, value)          # cgsc's validator
        assert (not list(stock.iter_errors(data))) == want, (kind, value)  # stock jsonschema
        if not want:
            assert not quick(data), (kind, value)                        # the compiled check
        checked += 1
    assert checked > 1000


def test_a_real_ecma_262_engine_reads_the_published_path_patterns_the_same(tool):
    from cgsc.spec import path_rules
    published = json.loads(dumps())
    nodes = {"file": published["$defs"]["measurement"]["$defs"]["file"],
             "path": published["$defs"]["path"], "device-path": published["$defs"]["device-path"],
             "extends": published["properties"]["extends"]}
    jobs = [[nodes[k]["pattern"], [v for v in probes(k) if len(v) <= nodes[k]["maxLength"]]]
            for k in KINDS]
    program = ("const jobs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
               "console.log(JSON.stringify(jobs.map(([p, ss]) => { const r = new RegExp(p, 'u');"
               " return ss.map(s => r.test(s)); })));")
    result = subprocess.run([tool("node"), "-e", program], input=json.dumps(jobs),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for kind, (pattern, values), verdicts in zip(KINDS, jobs, json.loads(result.stdout)):
        assert pattern == path_rules.pattern(kind)
        for value, verdict in zip(values, verdicts):
            assert verdict == expected(kind, value), (kind, value)


def test_the_u2028_finding_is_refused_by_build(tmp_path):
    """The finding itself, through the command line: a located CGS-SCHEMA-004."""
    from helpers import run_cli
    text = open(os.path.join(ROOT, "examples", "sev-snp.toml"), encoding="utf-8").read()
    spec = tmp_path / "web.toml"
    spec.write_text(text + '\n[measurement]\nfirmware = "a\\u2028/../../etc/shadow"\n')
    code, _out, err = run_cli("validate", str(spec))
    assert code == 1 and "measurement.firmware" in err and "[CGS-SCHEMA-004]" in err, err


def test_the_json_files_leave_the_path_rules_to_path_rules_py():
    """No second copy: the schema files name where the rules are, the bundle has them."""
    for name in ("guest.schema.json", "measurement.schema.json"):
        with open(os.path.join(ROOT, "schema", name), encoding="utf-8") as fh:
            text = fh.read()
        assert "path_rules.py" in text
    from cgsc.spec import path_rules
    from cgsc.spec.schema import bundled
    assert bundled()["$defs"]["path"]["pattern"] == path_rules.pattern("path")
    assert "$comment" not in bundled()["$defs"]["path"]

"""Issue 12 (input side) and issue 9's header item: one regression test per defect.

Each test builds the input that broke cgsc 1.0.0 and checks the outcome with the real
reader (lxml, sh, the systemd splitter, JSON) or the exit status and located message.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import CASES, EXAMPLES, ROOT, exec_start, run_cli, systemd_split

from cgsc.core.escape import comment_lines, hash_comment, shell_word, xml_comment

SNP = """spec-version = 1
[guest]
name = "web"
memory = 2048
cpu = "EPYC-v4"
[firmware]
code = "/usr/share/ovmf/OVMF.amdsev.fd"
[confidential.sev-snp]
cbitpos = 51
reduced-phys-bits = 1
"""
LOCATED = re.compile(r"^\S.*?:\d+(:\d+)?: \S+.*: .+ \[CGS-[A-Z0-9]+-\d{3}\]$")


def _spec(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _refused(tmp_path, text, rule, phrase="", name="spec.toml"):
    """validate exits 1 with a located `rule` diagnostic containing `phrase`."""
    code, _out, err = run_cli("validate", _spec(tmp_path, text, name))
    assert code == 1, err
    lines = [l for l in err.splitlines() if f"[{rule}]" in l]
    assert lines and all(LOCATED.match(l) for l in lines), err
    assert any(phrase in l for l in lines), err
    return lines


def _build(tmp_path, text, name="spec.toml"):
    out = tmp_path / "out"
    code, _out, err = run_cli("build", _spec(tmp_path, text, name), "-o", str(out))
    assert code == 0, err
    (guest,) = out.iterdir()
    return {p.suffix: p.read_text(encoding="utf-8") for p in guest.iterdir()}


# -- Output that a consumer cannot read -------------------------------------------------

@pytest.mark.parametrize("text", ["a--b", "---", "x-", "-", "--->", "<!-- -->", "a\n--\nb",
                                  "\x00\x1b\ufffe", "trailing\\"])
def test_xml_comment_escaper_is_well_formed_and_keeps_the_text_readable(text):
    from lxml import etree
    doc = etree.fromstring(f"<a><!-- {xml_comment(text)} --></a>".encode())
    (node,) = doc
    shown = node.text
    assert "--" not in shown and not shown.endswith("-")
    if text.isprintable():  # what is left is the text, with its dashes spaced apart
        assert shown.replace(" ", "").replace("\\x5c", "\\") == text.replace(" ", "")
    else:  # and controls as visible escapes
        assert shown.isprintable() and "\\x" in shown


def test_hyphens_in_a_waiver_a_socket_and_the_file_name_give_well_formed_xml(tmp_path, relaxng):
    from lxml import etree
    text = SNP.replace("[guest]", "[qmp]\nsocket = \"/run/cgsc/web/qmp---x-.sock\"\n[guest]")
    text += '[waive]\n"CGS-SNP-010" = "lab---only -"\n'
    text = text.replace("cbitpos = 51", "cbitpos = 51\npolicy = { debug = true }")
    xml = _build(tmp_path, text, name="web---1-.toml")[".xml"]
    root = etree.fromstring(xml.encode())
    assert relaxng.validate(root), relaxng.error_log
    comments = [c.text for c in root.iter(etree.Comment)] + [
        c.text for c in root.itersiblings(etree.Comment, preceding=True)]
    assert any("lab- - -only -" in c for c in comments), comments
    assert any("web- - -1-.toml" in c for c in comments), comments


def test_warning_headers_read_as_the_text_does_one_comment_line_per_line(tmp_path):
    """Issue 9: a warning with a hint was one comment line with a literal \\x0a."""
    risky = [c for c in CASES if c.endswith("risky-sev.toml")][0]
    out = tmp_path / "out"
    code, _o, err = run_cli("build", risky, "-o", str(out))
    assert code == 0, err
    warning = next(l for l in err.splitlines() if "[CGS-SEV-010]" in l)
    hint = err.splitlines()[err.splitlines().index(warning) + 1]
    for path in (out / "sev-open").iterdir():
        body = path.read_text()
        assert "\\x0a" not in body
        if path.suffix in (".sh", ".service"):
            lines = body.split("\n")
            # artifacts name the spec relative to the repository, the terminal as typed
            at = lines.index("# " + warning.replace(risky, os.path.relpath(risky, ROOT)))
            assert lines[at + 1] == "# " + hint  # the hint, as the terminal showed it
    assert hash_comment("one\n  two\\") == "# one\n#   two\\x5c"
    assert comment_lines("a\nb\r") == ["a", "b\\x0d"]


@pytest.mark.parametrize("char", ["\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe",
                                  "\U0010ffff"])
@pytest.mark.parametrize("field", ['description = "a{}b"', 'cpu = "EPYC{}"'])
def test_noncharacters_are_refused_in_text_fields(tmp_path, char, field):
    text = SNP.replace('name = "web"', 'name = "web"\n' + field.format(char))
    if field.startswith("cpu"):
        text = text.replace('cpu = "EPYC-v4"\n', "")
    _refused(tmp_path, text, "CGS-SCHEMA-004", "noncharacters")


def test_every_string_node_of_the_published_schema_refuses_noncharacters_and_is_bounded():
    from cgsc.spec.schema import SCALAR_TEXT, bundled, dumps
    strings, arrays = [], []

    def walk(node):
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "string" or (isinstance(kind, list) and "string" in kind):
                strings.append(node)
            if kind == "array":
                arrays.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(bundled())
    assert len(strings) > 15 and arrays
    assert all(isinstance(node.get("maxItems"), int) for node in arrays)
    for node in strings:
        assert isinstance(node.get("maxLength"), int)
        assert {"$ref": "https://cgsc.invalid/schema/v1/guest.schema.json#/$defs/scalar-text"} \
            in node["allOf"]
    published = json.loads(dumps())
    assert published["$defs"]["scalar-text"]["pattern"] == SCALAR_TEXT["pattern"]
    assert all(0xFDD0 > ord(c) or ord(c) > 0xFDEF for c in dumps())  # escaped in the text


def test_a_trailing_newline_does_not_pass_any_pattern(tmp_path):
    """Python's $ matches before a final newline; the schema's patterns are ECMA-262."""
    _refused(tmp_path, SNP.replace('name = "web"', 'name = "web\\n"'), "CGS-SCHEMA-004", "web")
    from cgsc.spec.validate import ecma_to_python
    assert re.search(ecma_to_python("^[a-z]+$"), "web\n") is None
    assert re.search(ecma_to_python("^a.b$"), "a\u2028b") is None
    assert re.search(ecma_to_python("^\\d$"), "\u0663") is None  # Arabic-Indic three
    assert re.search(ecma_to_python("^[\\d$]+$"), "1$") is not None  # $ in a class is literal


def _string_values(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _string_values(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _string_values(v, path + (i,))
    elif isinstance(node, str):
        yield path, node


def test_every_patterned_value_of_the_examples_refuses_a_final_newline_it_refuses_inside():
    """Over every string value of every example: `v + "\\n"` is refused exactly when
    `v[:1] + "\\n" + v[1:]` is, so no pattern treats the end of a value specially."""
    import sys
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from cgsc.spec.validate import schema_errors
    checked = 0
    for spec in EXAMPLES:
        with open(spec, "rb") as fh:
            data = tomllib.load(fh)
        if "extends" in data:
            continue
        for path, value in _string_values(data):
            if not value:
                continue
            for variant in (value + "\n", value[:1] + "\n" + value[1:]):
                node = data
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = variant
                refused = bool(schema_errors(data))
                node[path[-1]] = value
                if variant.endswith("\n"):
                    at_end = refused
                else:
                    assert refused == at_end, (spec, path)
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("field, value", [
    ("guest.description", "ends in a backslash\\\\"),
    ("guest.description", "ends in a space "),
    ("targets.systemd.environment-file", "/etc/cgsc/env\\\\"),
    ("qemu.emulator", "/usr/bin/qemu \\\"x\\\""),
    ("qemu.emulator", "/usr/bin/qemu\\\\x"),
    ("qemu.emulator", "/usr/local/bin/"),
    ("disk[0].path", "/var/lib/guests/"),
    ("disk[0].path", "/var/lib//guests/x.img"),
    ("disk[0].path", "/var/lib/./x.img"),
    ("guest.description", "x" * 1025),
])
def test_values_systemd_would_not_read_back_are_refused(tmp_path, field, value):
    table, key = field.rsplit(".", 1)
    extra = {"guest": "", "targets.systemd": "[targets.systemd]\n", "qemu": "[qemu]\n",
             "disk[0]": "[[disk]]\nformat = \"raw\"\n"}[table]
    text = SNP + extra + f'{key} = "{value}"\n' if table != "guest" else \
        SNP.replace('name = "web"', f'name = "web"\n{key} = "{value}"')
    _refused(tmp_path, text, "CGS-SCHEMA-004")


def test_backslashes_percent_and_quotes_read_back_from_unit_and_script(tmp_path, tool):
    base = tmp_path / "a%41 b%"
    base.mkdir()
    text = SNP.replace('name = "web"', 'name = "web"\ndescription = "50% \\\\ done \\"q\\""')
    text += '[[disk]]\npath = "/srv/a\\\\b\\\\/c%n\\\\"\nformat = "raw"\n'
    text = text.replace('"/srv/a\\\\b\\\\/c%n\\\\"', '"/srv/a\\\\b\\\\/c%n\\\\x"')
    path = base / "spec.toml"
    path.write_text(text)
    out = tmp_path / "out"
    code, _o, err = run_cli("build", str(path), "-o", str(out))
    assert code == 0, err
    unit = (out / "web" / "web.service").read_text()
    settings = {l.split("=", 1)[0]: l.split("=", 1)[1] for l in unit.split("\n") if "=" in l
                and not l.startswith("#")}
    assert settings["Description"].replace("%%", "%").endswith(': 50% \\ done "q"')
    # the spec's directory name (with % in it) reaches the unit only in comments
    assert "a%41" not in "".join(settings.values())
    from cgsc.pipeline.compile import compile_spec
    assert exec_start(unit) == compile_spec(str(path)).plan.argv()
    script = out / "web" / "web.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    result = subprocess.run([tool("systemd-analyze"), "verify", str(out / "web" / "web.service")],
                            capture_output=True, text=True, timeout=120)
    complaints = [l for l in result.stderr.splitlines() if "web.service" in l]
    assert result.returncode == 0 and not complaints, result.stderr  # no "bad specifier"


def test_a_trailing_backslash_is_double_quoted_for_shellcheck(tool, tmp_path):
    words = ["a\\", "\\", "x\\\\", "it's\\", "\\'", "a\\b"]
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\nprintf '%s\\0' " + " ".join(shell_word(w) for w in words) + "\n")
    out = subprocess.run(["sh", str(script)], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [w.encode() for w in words]
    result = subprocess.run([tool("shellcheck"), "--shell=sh", "--severity=style", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout  # SC1003 before the fix


def test_an_argv_over_the_exec_limit_is_refused(tmp_path):
    words = ", ".join(f'"{str(i % 10) * 4000}"' for i in range(40))
    text = SNP + f"[qemu]\nextra-args = [{words}]\n"
    lines = _refused(tmp_path, text, "CGS-LIMIT-001", "would be")
    from cgsc.lower.limits import ARGV_BUDGET
    size = int(re.search(r"would be (\d+) bytes", lines[0]).group(1))
    assert size > ARGV_BUDGET == 120 * 1024


def test_a_hostile_key_cannot_forge_output_in_any_format(tmp_path):
    key = 'x\\n::error file=evil,line=1::forged\\u001b[31mred\\u009b2J'
    spec = _spec(tmp_path, SNP.replace('name = "web"', f'name = "web"\n"{key}" = 1'),
                 name="ev\x1bil\n::error::x.toml")
    code, _o, err = run_cli("validate", spec)
    assert code == 1
    assert "\x1b" not in err and "\x9b" not in err
    assert all(LOCATED.match(l) or l.startswith(("  hint: ", "cgsc: ")) for l in err.splitlines())
    code, out, _e = run_cli("validate", "--format", "github", spec)
    lines = out.splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("::error file=")
    props, message = lines[0][len("::error "):].split("::", 1)
    assert "\x1b" not in out and "\x9b" not in out  # the key is one escaped line
    assert dict(p.split("=", 1) for p in props.split(","))["title"] == "CGS-SCHEMA-001"
    for fmt in ("json", "sarif"):
        code, out, _e = run_cli("validate", "--format", fmt, spec)
        assert code == 1 and json.loads(out)
        assert "\x1b" not in out  # JSON writes it as \u001b


def test_json_diagnostics_are_utf8_for_a_file_name_that_is_not(tmp_path):
    name = os.fsdecode(b"bad\xff.toml")
    spec = _spec(tmp_path, SNP.replace('name = "web"', 'name = "web\\n"'), name=name)
    for fmt in ("json", "sarif", "github", "text"):
        code, out, err = run_cli("validate", "--format", fmt, spec)
        assert code == 1
        (out + err).encode("utf-8")  # no lone surrogate left
        if fmt in ("json", "sarif"):
            out = json.dumps(json.loads(out), ensure_ascii=False).replace("\\\\", "\\")
        assert "bad\\xff.toml" in out + err


# -- Crashes and batches ----------------------------------------------------------------

@pytest.mark.parametrize("value, rule, phrase", [
    ("[" * 2000 + "]" * 2000, "CGS-LOAD-006", "nested"),
    ("{ a = " * 2000 + "1" + " }" * 2000, "CGS-LOAD-006", "nested"),
    ("1" * 4400, "CGS-LOAD-003", "4300 digits"),
    ("0x" + "f" * 5000, "CGS-LOAD-003", "64 bits"),
    ("18446744073709551616", "CGS-LOAD-003", "64 bits"),
])
def test_parser_limits_are_located_errors(tmp_path, value, rule, phrase):
    _refused(tmp_path, SNP.replace("memory = 2048", f"memory = 2048\nvcpus = {value}"), rule,
             phrase)


@pytest.mark.parametrize("old, new", [("memory = 2048", "memory = 8.0"),
                                      ("cbitpos = 51", "cbitpos = 51.0"),
                                      ("memory = 2048", "memory = 2048\nvcpus = 2.0"),
                                      ("cbitpos = 51", "cbitpos = 51\npolicy = 1e3")])
def test_floats_are_never_integers(tmp_path, old, new):
    _refused(tmp_path, SNP.replace(old, new), "CGS-SCHEMA-003", "got the float")


def test_a_syntax_error_at_end_of_file_has_a_line(tmp_path):
    lines = _refused(tmp_path, SNP + "[[disk]]\npath = [\n", "CGS-LOAD-003", "syntax")
    assert lines[0].split(":")[1] == str(SNP.count("\n") + 3)


def test_validate_reports_every_spec_even_when_one_crashes(tmp_path, monkeypatch):
    import cgsc.pipeline.build
    import cgsc.pipeline.compile
    bad1 = _spec(tmp_path, SNP.replace("memory = 2048", "memory = 8.0"), "bad1.toml")
    good = _spec(tmp_path, SNP, "good.toml")
    crash = _spec(tmp_path, SNP, "crash.toml")
    bad2 = _spec(tmp_path, SNP.replace('name = "web"', 'name = "Web"'), "bad2.toml")
    real = cgsc.pipeline.compile.compile_spec

    def flaky(path, *host, **targets):
        if path == crash:
            raise RuntimeError("simulated bug")
        return real(path, *host, **targets)
    monkeypatch.setattr(cgsc.pipeline.compile, "compile_spec", flaky)
    monkeypatch.setattr(cgsc.pipeline.build, "compile_spec", flaky)   # validate goes through build()
    code, _o, err = run_cli("validate", bad1, good, crash, bad2)
    assert code == 3
    assert "bad1.toml:4: guest.memory" in err and "bad2.toml:3: guest.name" in err
    assert f"{crash}: internal error (RuntimeError: simulated bug)" in err
    code, _o, err = run_cli("validate", bad1, good, bad2)
    assert code == 1 and err.count("[CGS-") == 2
    code, _o, err = run_cli("validate", good, crash)
    assert code == 3 and "internal error" in err


def test_non_regular_and_huge_files_are_refused_without_reading_them(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    for path, phrase in (("/dev/zero", "not a regular file"), (str(fifo), "not a regular file"),
                         (str(tmp_path), "a directory"), (str(huge), "larger than 1048576")):
        code, _o, err = run_cli("validate", path)
        assert code == 1 and phrase in err and "[CGS-LOAD-001]" in err, err


def _repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "specs" / "team").mkdir(parents=True)
    (repo / "bases").mkdir()
    (repo / "bases" / "snp.toml").write_text(SNP)
    return repo


def test_extends_may_climb_within_its_repository(tmp_path):
    repo = _repo(tmp_path)
    child = repo / "specs" / "team" / "web.toml"
    child.write_text('extends = "../../bases/snp.toml"\n[guest]\nname = "web2"\n')
    code, _o, err = run_cli("validate", str(child))
    assert code == 0, err


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_extends_never_leaves_the_repository(tmp_path, how):
    repo = _repo(tmp_path)
    outside = tmp_path / "outside.toml"
    outside.write_text(SNP)
    child = repo / "specs" / "web.toml"
    target = {"absolute": str(outside), "dotdot": "../../outside.toml", "symlink": "link.toml"}[how]
    if how == "symlink":
        os.symlink(outside, repo / "specs" / "link.toml")
    child.write_text(f'extends = "{target}"\n[guest]\nname = "web2"\n')
    code, _o, err = run_cli("validate", str(child))
    assert code == 1 and "[CGS-LOAD-007]" in err and "web.toml:1: extends:" in err, err


def test_outside_a_repository_extends_stays_in_the_spec_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "base.toml").write_text(SNP)
    (tmp_path / "d" / "base.toml").write_text(SNP)
    child = tmp_path / "d" / "web.toml"
    child.write_text('extends = "../base.toml"\n')
    assert run_cli("validate", str(child))[0] == 1
    child.write_text('extends = "base.toml"\n')
    assert run_cli("validate", str(child))[0] == 0


def test_the_repository_rule_holds_for_the_corpus_in_this_repository():
    assert os.path.exists(os.path.join(ROOT, ".git"))
    child_base = os.path.join(ROOT, "tests", "invalid", "support", "base-snp.toml")
    assert os.path.isfile(child_base)  # what the corpus extends, inside the repository


def test_systemd_split_sees_one_exec_line_even_with_unicode_line_breaks():
    unit = 'ExecStart="a\u2028b" "c\x85d"\n'
    assert exec_start(unit) == ["a\u2028b", "c\x85d"] == systemd_split(unit[10:-1])


def test_nesting_by_dotted_keys_is_located(tmp_path):
    lines = _refused(tmp_path, SNP + "a" + ".a" * 3000 + " = 1\n", "CGS-LOAD-006", "nested")
    assert lines[0].split(":")[1] == str(SNP.count("\n") + 1)


def _patterns(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties":
                yield from value
                yield from _patterns(list(value.values()))
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


def test_published_patterns_mean_in_ecma_262_what_the_validator_does(tool):
    """Every pattern of `cgsc schema`, compiled by a real ECMA-262 engine (node, with the
    u flag as JSON Schema validators use), accepts exactly the probes our validator does."""
    import sys
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from cgsc.spec.schema import dumps
    from cgsc.spec.validate import ecma_to_python
    patterns = sorted(set(_patterns(json.loads(dumps()))))
    probes = {"", "\n", "a\n", "CGS-SNP-010", "CGS-SNP-010\n", "8 GiB", "8\nGiB", "\u2028"}
    for spec in EXAMPLES + CASES:
        with open(spec, "rb") as fh:
            for _path, value in _string_values(tomllib.load(fh)):
                for variant in (value, value + "\n", value + "\r", "\n" + value, value + "\\",
                                value[:1] + "\n" + value[1:], value + "\ufffe",
                                value + "\U0010ffff", value + "\x85", value + "/",
                                value + "\ufeff", value + "\u3000", value + "\x1c",
                                value + "\u00a0", value + "\u180e", "\ufeff" + value,
                                value + "\u0663"):
                    probes.add(variant)
    probes = sorted(probes)
    program = ("const [ps, ss] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
               "console.log(JSON.stringify(ps.map(p => { const r = new RegExp(p, 'u');"
               " return ss.map(s => r.test(s)); })));")
    result = subprocess.run([tool("node"), "-e", program], input=json.dumps([patterns, probes]),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ecma = json.loads(result.stdout)
    assert len(patterns) > 15 and len(probes) > 500
    for pattern, verdicts in zip(patterns, ecma):
        ours = re.compile(ecma_to_python(pattern))
        for probe, verdict in zip(probes, verdicts):
            assert (ours.search(probe) is not None) == verdict, (pattern, probe)


def test_a_spec_reached_through_a_symlink_extends_its_own_base(tmp_path):
    """`extends` is relative to where the file really is: a symlink to the spec, or to a
    directory above it followed by `..`, finds the same base as the file itself, never a
    decoy beside the link."""
    import shutil
    from helpers import ROOT, run_cli
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "specs" / "sub").mkdir(parents=True)
    shutil.copyfile(os.path.join(ROOT, "examples", "fleet", "base.toml"), repo / "specs" / "base.toml")
    child = open(os.path.join(ROOT, "examples", "fleet", "web-1.toml")).read()
    assert 'extends = "base.toml"' in child
    (repo / "specs" / "web.toml").write_text(child)
    (repo / "specs" / "sub" / "web.toml").write_text(child.replace('"base.toml"', '"../base.toml"'))
    (repo / "links").mkdir()
    (repo / "links" / "web.toml").symlink_to("../specs/web.toml")
    (repo / "links" / "base.toml").write_text("this decoy is no TOML base [\n")
    (repo / "dirlink").symlink_to("specs/sub")
    expected = run_cli("build", "--stdout", "-t", "shell", str(repo / "specs" / "web.toml"))
    assert expected[0] == 0, expected[2]
    for spec in (repo / "links" / "web.toml", repo / "dirlink" / "web.toml"):
        code, out, err = run_cli("build", "--stdout", "-t", "shell", str(spec))
        assert code == 0, err
        assert out.replace("specs/sub/web.toml", "specs/web.toml") == expected[1]


@pytest.mark.parametrize("toml_1_1", [
    'labels = {\n  a = "x",\n}',          # a multi-line inline table, trailing comma
    'note = "\\e[0m"',                    # the \e escape
    'note = "\\x41"',                     # the \xHH escape
    'at = 07:32',                         # a time without seconds
])
def test_toml_1_1_syntax_is_refused_on_every_python(tmp_path, toml_1_1):
    """The spec language is TOML 1.0.0 whichever Python runs cgsc (Python 3.15's tomllib
    reads TOML 1.1.0): what 1.1 added is a located syntax error, never a spec that builds
    on one machine and not another."""
    text = SNP + "[qemu]\n" + toml_1_1 + "\n"
    lines = _refused(tmp_path, text, "CGS-LOAD-003", "TOML syntax error")
    line = text.splitlines().index(toml_1_1.splitlines()[0]) + 1
    assert any(f"spec.toml:{line}:" in l or f"spec.toml:{line + 1}:" in l for l in lines), lines


def test_a_spec_whose_name_is_not_utf8_is_refused_not_a_crash(tmp_path):
    """manifest.json and the artifacts record the spec's path as UTF-8 text: a file name
    that is not UTF-8 is a located error for build, validate and check (it was an
    internal error), and the other specs' results are not lost to a crash."""
    import shutil
    bad = os.path.join(os.fsencode(str(tmp_path)), b"a\xff.toml")
    shutil.copyfile(EXAMPLES[0], bad)
    out = str(tmp_path / "out")
    for argv in (["build", "-o", out], ["validate"], ["check", "-o", out]):
        result = subprocess.run([sys.executable, "-m", "cgsc", *argv, bad], capture_output=True,
                                timeout=120)
        err = result.stderr.decode("utf-8")
        assert result.returncode == 1, (argv, err)
        assert "a\\xff.toml is not UTF-8" in err and "[CGS-LOAD-001]" in err, err
        assert "Traceback" not in err and "internal error" not in err
    assert not os.path.exists(out)
